//! The verify pool: a fixed set of threads (one per core by default) for the
//! CPU-heavy id and Schnorr checks, fed through a bounded queue so that a
//! flood of EVENTs slows the senders down instead of growing memory, and so
//! that no signature is ever checked on the async executor.

use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// `None` tells one thread to stop once everything queued before it ran.
type Slot = Option<Job>;

pub struct VerifyPool {
    tx: flume::Sender<Slot>,
    /// Kept to run what was queued behind the stop markers at shutdown.
    rx: flume::Receiver<Slot>,
    threads: Vec<JoinHandle<()>>,
}

/// Submits jobs; cheap to clone.
#[derive(Clone)]
pub struct VerifyHandle {
    tx: flume::Sender<Slot>,
}

/// Jobs waiting per thread before submitters wait.
const QUEUE_PER_THREAD: usize = 1024;

impl VerifyPool {
    /// `threads == 0` means one per available core.
    pub fn new(threads: usize) -> VerifyPool {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            threads
        };
        let (tx, rx) = flume::bounded::<Slot>(threads * QUEUE_PER_THREAD);
        let threads = (0..threads)
            .filter_map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("verify-{i}"))
                    .spawn(move || {
                        while let Ok(Some(job)) = rx.recv() {
                            job();
                        }
                    })
                    .ok()
            })
            .collect();
        VerifyPool { tx, rx, threads }
    }

    pub fn handle(&self) -> VerifyHandle {
        VerifyHandle {
            tx: self.tx.clone(),
        }
    }

    /// Runs every job queued so far, then stops the threads. Jobs queued
    /// behind the stop markers run here, so an accepted job is never
    /// dropped unrun; once this returns, submitters are told the pool is
    /// closed.
    pub fn shutdown(self) {
        for _ in &self.threads {
            let _ = self.tx.send(None);
        }
        for t in self.threads {
            let _ = t.join();
        }
        while let Ok(slot) = self.rx.try_recv() {
            if let Some(job) = slot {
                job();
            }
        }
    }
}

impl VerifyHandle {
    /// Queues a job, waiting (asynchronously) while the queue is full.
    /// Returns false when the pool is shut down.
    pub async fn run(&self, job: impl FnOnce() + Send + 'static) -> bool {
        self.tx.send_async(Some(Box::new(job))).await.is_ok()
    }

    /// True once the pool has stopped taking jobs (shutdown).
    pub fn is_closed(&self) -> bool {
        self.tx.is_disconnected()
    }

    /// Blocking variant for threads outside the executor (import).
    pub fn run_blocking(&self, job: impl FnOnce() + Send + 'static) -> bool {
        self.tx.send(Some(Box::new(job))).is_ok()
    }
}

/// Checks every event of a group (on a verify thread): returns the valid
/// ones with their stored JSON, and each one's tag `T` in the same order;
/// `refused` gets the tag and the reason of each invalid one. The relay's
/// ingest, sync downloads and `import` all hand groups to the writer so.
pub fn verify_group<T>(
    group: Vec<(crate::event::Event, T)>,
    mut refused: impl FnMut(T, crate::event::EventError),
) -> (Vec<(crate::event::Event, String)>, Vec<T>) {
    let mut valid = Vec::with_capacity(group.len());
    let mut tags = Vec::with_capacity(group.len());
    for (event, tag) in group {
        match event.verified_json() {
            Ok(json) => {
                valid.push((event, json));
                tags.push(tag);
            }
            Err(e) => refused(tag, e),
        }
    }
    (valid, tags)
}
