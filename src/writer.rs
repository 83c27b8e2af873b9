//! The single writer: one thread owns every LMDB write. It takes everything
//! waiting in its inbox (up to `max_batch`), applies it in one write
//! transaction, commits, and only then answers each request and hands the
//! newly stored events to the fan-out. Under load (the previous batch was
//! big) it first lingers up to `commit_linger_ms` for more: a durable
//! commit costs per page written, and bigger batches share their pages.
//! Nothing else in this process writes the store; another process on the
//! same data dir (`echorelay sync`, `import`) may, and the writer notices
//! the sequence numbers it did not allocate and fans those events out too,
//! so live subscribers see them.

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::event::Event;
use crate::metrics::Metrics;
use crate::store::{BatchItem, GraphBatchOutcome, Store, StoreError, WriteOutcome};

/// Called with the outcome of a write, after commit.
pub type Reply = Box<dyn FnOnce(&WriteOutcome) + Send>;

/// Called after commit with one outcome per event of a group, in order.
pub type GroupReply = Box<dyn FnOnce(&[WriteOutcome]) + Send>;

/// An event that is now durable (or ephemeral), on its way to subscribers.
#[derive(Debug)]
pub struct Committed {
    /// Store sequence number; `None` for ephemeral events.
    pub seq: Option<u64>,
    pub event: Event,
    pub json: String,
}

/// Receives committed events in commit order.
pub type FanoutSender = flume::Sender<Vec<Arc<Committed>>>;

enum Request {
    /// Verified events with their JSON, answered together: a connection's
    /// burst of EVENTs costs one queue hop and one wake-up, not one each.
    Events {
        events: Vec<(Event, String)>,
        reply: GroupReply,
    },
    Purge {
        reply: Reply,
    },
    GraphBatch {
        graph: String,
        t_before: u64,
        events: Vec<(Event, String)>,
        reply: Reply,
    },
    UpgradeGraphLogs {
        key: Arc<crate::event::Keys>,
        reply: Reply,
    },
    IfHead {
        event: Event,
        json: String,
        graph: String,
        head: u64,
        reply: Reply,
    },
    /// A write that is not an event (refused ids, peer records, echo
    /// statistics, snapshot rows): in the same batches, so there is one
    /// writer.
    Bookkeeping {
        op: crate::store::Bookkeeping,
        reply: Reply,
    },
    Shutdown,
}

/// A cloneable way to submit writes.
#[derive(Clone)]
pub struct WriterHandle {
    tx: flume::Sender<Request>,
}

/// The writer thread; [`Writer::shutdown`] drains the inbox and commits.
pub struct Writer {
    handle: WriterHandle,
    thread: Option<JoinHandle<()>>,
}

/// Requests queued before submitters wait: backpressure to the verify pool.
const INBOX: usize = 32 * 1024;

/// A batch at least this big (a full read burst of one connection) means
/// events queue faster than commits drain them, so the next batch may
/// linger. Measured: at 256 the writer fell back into small batches about
/// half the time under the ingest bench's load; at 64 it stayed out.
const BUSY_BATCH: usize = 64;

/// How big write transactions get: the writer's share of the store config.
#[derive(Clone)]
pub struct Batching {
    /// Most items (events) committed in one transaction.
    pub max_batch: usize,
    /// How long a busy writer waits for more before committing.
    pub linger: std::time::Duration,
    /// The relay's ingest budget: no lingering once the batch holds half of
    /// it, since the events the writer would wait for may need that room.
    pub budget: Option<Arc<crate::budget::IngestBudget>>,
}

impl Batching {
    pub fn new(store: &crate::config::StoreConfig) -> Batching {
        Batching {
            max_batch: store.max_batch.max(1),
            linger: std::time::Duration::from_millis(store.commit_linger_ms),
            budget: None,
        }
    }
}

/// How often an idle writer looks for events written by another process.
const FOREIGN_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Foreign events read per catch-up step.
const CATCH_UP_CHUNK: usize = 4096;

impl Writer {
    pub fn spawn(
        store: Arc<Store>,
        batching: Batching,
        metrics: Arc<Metrics>,
        fanout: Option<FanoutSender>,
    ) -> Writer {
        let (tx, rx) = flume::bounded(INBOX);
        let thread = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || run(&store, &rx, &batching, &metrics, fanout.as_ref()))
            .ok();
        Writer {
            handle: WriterHandle { tx },
            thread,
        }
    }

    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Commits everything submitted so far and stops the thread.
    pub fn shutdown(mut self) {
        let _ = self.handle.tx.send(Request::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl WriterHandle {
    /// Queues a verified event; blocks while the inbox is full. `reply` is
    /// called after commit (or with an error outcome if the writer is gone).
    pub fn submit(&self, event: Event, json: String, reply: Reply) {
        self.submit_group(
            vec![(event, json)],
            Box::new(move |outcomes| reply(outcomes.first().unwrap_or(&gone()))),
        );
    }

    /// Queues verified events to be stored in one transaction with the rest
    /// of the writer's batch; `reply` gets their outcomes in order.
    pub fn submit_group(&self, events: Vec<(Event, String)>, reply: GroupReply) {
        if events.is_empty() {
            reply(&[]);
            return;
        }
        self.send(Request::Events { events, reply });
    }

    /// Queues a request; if the writer is gone, answers it at once.
    fn send(&self, request: Request) {
        if let Err(flume::SendError(request)) = self.tx.send(request) {
            request.fail(&gone());
        }
    }

    /// Queues a DB-Sync tx/batch: `events` (signed tx events with their
    /// JSON) are appended to `graph` only if its log is at `t_before`.
    /// `reply` gets a [`WriteOutcome::Graph`] after commit.
    pub fn submit_graph_batch(
        &self,
        graph: String,
        t_before: u64,
        events: Vec<(Event, String)>,
        reply: Reply,
    ) {
        self.send(Request::GraphBatch {
            graph,
            t_before,
            events,
            reply,
        });
    }

    /// Stores an event this node created and waits for the outcome (for
    /// async callers that answer only after commit).
    pub async fn write(&self, event: Event) -> WriteOutcome {
        let json = event.to_json();
        self.ask(|reply| self.submit(event, json, reply)).await
    }

    /// [`WriterHandle::submit_graph_batch`], waiting for the outcome.
    pub async fn write_graph_batch(
        &self,
        graph: String,
        t_before: u64,
        events: Vec<(Event, String)>,
    ) -> WriteOutcome {
        self.ask(|reply| self.submit_graph_batch(graph, t_before, events, reply))
            .await
    }

    /// Stores `event` only if `graph`'s head is still `head` when its write
    /// transaction runs ([`WriteOutcome::HeadMoved`] otherwise).
    pub async fn write_if_head(&self, event: Event, graph: String, head: u64) -> WriteOutcome {
        let json = event.to_json();
        self.ask(|reply| {
            self.send(Request::IfHead {
                event,
                json,
                graph,
                head,
                reply,
            })
        })
        .await
    }

    /// Upgrades graph logs from before homes (once; see
    /// `store/graph_upgrade.rs`) and waits for it.
    pub async fn upgrade_graph_logs(&self, key: Arc<crate::event::Keys>) -> WriteOutcome {
        self.ask(|reply| self.send(Request::UpgradeGraphLogs { key, reply }))
            .await
    }

    /// Submits through `submit` with a reply that resolves the returned
    /// future (or "shutting down" if the writer drops it unanswered).
    /// Makes a bookkeeping write; `Recorded` once committed.
    pub async fn record(&self, op: crate::store::Bookkeeping) -> WriteOutcome {
        self.record_now(op).await
    }

    /// Queues a bookkeeping write now (in call order with every other
    /// write) and returns the wait for its outcome.
    pub fn record_now(
        &self,
        op: crate::store::Bookkeeping,
    ) -> impl std::future::Future<Output = WriteOutcome> + Send + 'static {
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.send(Request::Bookkeeping {
            op,
            reply: Box::new(move |o: &WriteOutcome| {
                let _ = done.send(o.clone());
            }),
        });
        async move { outcome.await.unwrap_or_else(|_| gone()) }
    }

    /// Queues a bookkeeping write whose failure only loses bookkeeping: it
    /// is logged (`what` names it), nobody waits. Needs a tokio runtime.
    pub fn record_detached(&self, op: crate::store::Bookkeeping, what: &'static str) {
        let outcome = self.record_now(op);
        tokio::spawn(async move {
            let outcome = outcome.await;
            if outcome != WriteOutcome::Recorded {
                tracing::warn!(?outcome, "cannot save {what}");
            }
        });
    }

    async fn ask(&self, submit: impl FnOnce(Reply)) -> WriteOutcome {
        let (done, outcome) = tokio::sync::oneshot::channel();
        submit(Box::new(move |o: &WriteOutcome| {
            let _ = done.send(o.clone());
        }));
        outcome.await.unwrap_or_else(|_| gone())
    }

    /// Asks for a purge of expired events; skipped when the inbox is full
    /// (the next tick will ask again).
    pub fn purge_expired(&self, reply: Reply) {
        let _ = self.tx.try_send(Request::Purge { reply });
    }
}

/// The outcome when the writer dropped a request unanswered (it stopped).
fn gone() -> WriteOutcome {
    WriteOutcome::Refused(crate::refusal::Refusal::shutting_down())
}

impl Request {
    /// Answers every write of this request with `outcome`.
    fn fail(self, outcome: &WriteOutcome) {
        match self {
            Request::Events { events, reply } => reply(&vec![outcome.clone(); events.len()]),
            Request::GraphBatch { reply, .. }
            | Request::Purge { reply }
            | Request::UpgradeGraphLogs { reply, .. }
            | Request::IfHead { reply, .. }
            | Request::Bookkeeping { reply, .. } => reply(outcome),
            Request::Shutdown => {}
        }
    }

    /// How many batch items this request contributes.
    fn items(&self) -> usize {
        match self {
            Request::Events { events, .. } => events.len(),
            _ => 1,
        }
    }
}

fn run(
    store: &Store,
    rx: &flume::Receiver<Request>,
    batching: &Batching,
    metrics: &Metrics,
    fanout: Option<&FanoutSender>,
) {
    if let Err(e) = store.recompute_graph_states() {
        tracing::error!(error = %e, "cannot recompute graph states");
    }
    let mut batch: Vec<Request> = Vec::new();
    let mut seen = fanout.map(|_| Seen::start(store));
    let mut busy = false;
    loop {
        let first = match rx.recv_timeout(FOREIGN_POLL) {
            Ok(req) => req,
            Err(flume::RecvTimeoutError::Timeout) => {
                if let (Some(seen), Some(fanout)) = (seen.as_mut(), fanout) {
                    seen.catch_up(store, u64::MAX, fanout);
                }
                continue;
            }
            Err(flume::RecvTimeoutError::Disconnected) => return,
        };
        let items = collect(rx, first, &mut batch, batching, busy);
        busy = items >= BUSY_BATCH;
        let stop = batch.iter().any(|r| matches!(r, Request::Shutdown));
        commit_batch(
            store,
            std::mem::take(&mut batch),
            metrics,
            fanout,
            &mut seen,
        );
        // A busy writer whose batches store nothing new (duplicates,
        // refusals) still looks for foreign events on the same clock.
        if let (Some(seen), Some(fanout)) = (seen.as_mut(), fanout) {
            if seen.checked.elapsed() >= FOREIGN_POLL {
                seen.catch_up(store, u64::MAX, fanout);
            }
        }
        if stop {
            // Commit whatever raced in behind the shutdown request too.
            let rest: Vec<Request> = rx.drain().collect();
            if !rest.is_empty() {
                commit_batch(store, rest, metrics, fanout, &mut seen);
            }
            return;
        }
    }
}

/// Fills `batch` with `first` and what follows it: everything already
/// waiting, and when `busy`, what arrives within the linger. A shutdown
/// request ends the batch at once. Returns the number of items.
fn collect(
    rx: &flume::Receiver<Request>,
    first: Request,
    batch: &mut Vec<Request>,
    batching: &Batching,
    busy: bool,
) -> usize {
    let mut deadline =
        (busy && !batching.linger.is_zero()).then(|| std::time::Instant::now() + batching.linger);
    let mut next = Some(first);
    let (mut items, mut held) = (0, 0);
    while let Some(req) = next.take() {
        let stop = matches!(req, Request::Shutdown);
        items += req.items();
        // Only a lingering batch needs to know what it holds.
        if let (Request::Events { events, .. }, Some(budget), Some(_)) =
            (&req, &batching.budget, deadline)
        {
            held += events
                .iter()
                .map(|(e, _)| crate::budget::footprint(e))
                .sum::<usize>();
            if budget.is_mostly(held) {
                deadline = None;
            }
        }
        batch.push(req);
        if stop || items >= batching.max_batch {
            break;
        }
        next = match (rx.try_recv(), deadline) {
            (Ok(req), _) => Some(req),
            (Err(_), Some(deadline)) => rx.recv_deadline(deadline).ok(),
            (Err(_), None) => None,
        };
    }
    items
}

fn commit_batch(
    store: &Store,
    batch: Vec<Request>,
    metrics: &Metrics,
    fanout: Option<&FanoutSender>,
    seen: &mut Option<Seen>,
) {
    let now = crate::event::now();
    let mut items: Vec<BatchItem> = Vec::with_capacity(batch.len());
    for request in &batch {
        match request {
            Request::Events { events, .. } => items.extend(
                events
                    .iter()
                    .map(|(event, json)| BatchItem::Insert { event, json }),
            ),
            Request::Purge { .. } => items.push(BatchItem::PurgeExpired { now }),
            Request::UpgradeGraphLogs { key, .. } => {
                items.push(BatchItem::UpgradeGraphLogs { key })
            }
            Request::IfHead {
                event,
                json,
                graph,
                head,
                ..
            } => items.push(BatchItem::InsertIfHead {
                event,
                json,
                graph,
                head: *head,
            }),
            Request::GraphBatch {
                graph,
                t_before,
                events,
                ..
            } => items.push(BatchItem::GraphBatch {
                graph,
                t_before: *t_before,
                events,
            }),
            Request::Bookkeeping { op, .. } => items.push(BatchItem::Bookkeeping(op)),
            Request::Shutdown => {}
        }
    }
    if items.is_empty() {
        return;
    }
    let result = store.apply_batch(&items);
    drop(items);
    let outcomes = match result {
        Ok(outcomes) => outcomes,
        Err(e) => {
            let reason = match e {
                StoreError::Full => crate::refusal::Refusal::error("database is full"),
                other => {
                    tracing::error!(error = %other, "write batch failed");
                    crate::refusal::Refusal::error("could not store event")
                }
            };
            let failed = WriteOutcome::Refused(reason);
            for req in batch {
                req.fail(&failed);
            }
            return;
        }
    };
    metrics.record_batch(outcomes.len());
    let mut committed = Vec::new();
    let mut outcomes = outcomes.into_iter();
    for req in batch {
        match req {
            Request::Events { events, reply } => {
                let mine: Vec<WriteOutcome> = outcomes.by_ref().take(events.len()).collect();
                reply(&mine);
                metrics.count_mesh_author_refusals(&mine);
                for ((event, json), outcome) in events.into_iter().zip(mine) {
                    if let WriteOutcome::Stored { seq } = outcome {
                        metrics
                            .events_stored
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        committed.push(Arc::new(Committed {
                            seq: Some(seq),
                            event,
                            json,
                        }));
                    }
                }
            }
            Request::UpgradeGraphLogs { reply, .. } | Request::Bookkeeping { reply, .. } => {
                let Some(outcome) = outcomes.next() else {
                    break;
                };
                reply(&outcome);
            }
            Request::IfHead {
                event, json, reply, ..
            } => {
                let Some(outcome) = outcomes.next() else {
                    break;
                };
                reply(&outcome);
                if let WriteOutcome::Stored { seq } = outcome {
                    committed.push(Arc::new(Committed {
                        seq: Some(seq),
                        event,
                        json,
                    }));
                }
            }
            Request::Purge { reply } => {
                let Some(outcome) = outcomes.next() else {
                    break;
                };
                if let WriteOutcome::Purged { count } = outcome {
                    metrics
                        .events_purged
                        .fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
                }
                reply(&outcome);
            }
            Request::GraphBatch { events, reply, .. } => {
                let Some(outcome) = outcomes.next() else {
                    break;
                };
                reply(&outcome);
                if let WriteOutcome::Graph(GraphBatchOutcome::Appended { seqs, .. }) = outcome {
                    metrics
                        .events_stored
                        .fetch_add(seqs.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    for ((event, json), seq) in events.into_iter().zip(seqs) {
                        committed.push(Arc::new(Committed {
                            seq: Some(seq),
                            event,
                            json,
                        }));
                    }
                }
            }
            Request::Shutdown => {}
        }
    }
    let Some(fanout) = fanout else { return };
    if let (Some(seen), Some(first)) = (seen.as_mut(), committed.first().and_then(|c| c.seq)) {
        // Anything between what we last saw and our own first seq was
        // written by another process in the meantime: it goes out first.
        seen.catch_up(store, first - 1, fanout);
        seen.last = committed
            .iter()
            .filter_map(|c| c.seq)
            .max()
            .unwrap_or(seen.last);
    }
    if !committed.is_empty() {
        let _ = fanout.send(committed);
    }
}

/// The highest sequence number whose event has been handed to the fan-out.
struct Seen {
    last: u64,
    /// When foreign events were last looked for.
    checked: std::time::Instant,
}

impl Seen {
    fn start(store: &Store) -> Seen {
        let last = store
            .read_txn()
            .and_then(|txn| store.last_seq(&txn))
            .unwrap_or(0);
        Seen {
            last,
            checked: std::time::Instant::now(),
        }
    }

    /// Fans out events other processes committed with seqs in
    /// `(last, upto]`, oldest first.
    fn catch_up(&mut self, store: &Store, upto: u64, fanout: &FanoutSender) {
        self.checked = std::time::Instant::now();
        loop {
            let found = store.read_txn().and_then(|txn| {
                let upto = upto.min(store.last_seq(&txn)?);
                if upto <= self.last {
                    return Ok((upto, Vec::new()));
                }
                Ok((
                    upto,
                    store.events_after(&txn, self.last, upto, CATCH_UP_CHUNK)?,
                ))
            });
            let (upto, events) = match found {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read events written by another process");
                    return;
                }
            };
            let full = events.len() >= CATCH_UP_CHUNK;
            let reached = match events.last() {
                Some((seq, _)) if full => *seq,
                _ => self.last.max(upto),
            };
            let committed: Vec<Arc<Committed>> = events
                .into_iter()
                .filter_map(|(seq, json)| {
                    let event = Event::from_json(&json).ok()?;
                    Some(Arc::new(Committed {
                        seq: Some(seq),
                        event,
                        json,
                    }))
                })
                .collect();
            self.last = reached;
            if !committed.is_empty() {
                let _ = fanout.send(committed);
            }
            if !full {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn purge() -> Request {
        Request::Purge {
            reply: Box::new(|_| {}),
        }
    }

    /// Runs `collect` on its own thread; its item count arrives on the
    /// returned channel.
    fn collect_in_background(
        rx: flume::Receiver<Request>,
        max_batch: usize,
        busy: bool,
    ) -> flume::Receiver<usize> {
        let batching = Batching {
            max_batch,
            linger: Duration::from_secs(3600),
            budget: None,
        };
        collect_from(purge(), rx, batching, busy)
    }

    fn collect_from(
        first: Request,
        rx: flume::Receiver<Request>,
        batching: Batching,
        busy: bool,
    ) -> flume::Receiver<usize> {
        let (done_tx, done) = flume::bounded(1);
        std::thread::spawn(move || {
            let mut batch = Vec::new();
            let _ = done_tx.send(collect(&rx, first, &mut batch, &batching, busy));
        });
        done
    }

    #[test]
    fn an_idle_writer_takes_what_is_waiting_and_does_not_linger() {
        let (tx, rx) = flume::unbounded();
        tx.send(purge()).unwrap();
        let done = collect_in_background(rx, 100, false);
        // The sender stays open, so a lingering collect would not return.
        assert_eq!(done.recv_timeout(Duration::from_secs(30)), Ok(2));
        drop(tx);
    }

    #[test]
    fn a_busy_writer_lingers_for_late_requests_until_the_batch_is_full() {
        let (tx, rx) = flume::unbounded();
        let done = collect_in_background(rx, 3, true);
        assert!(
            done.recv_timeout(Duration::from_millis(100)).is_err(),
            "a busy writer committed without waiting"
        );
        tx.send(purge()).unwrap();
        tx.send(purge()).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(30)), Ok(3));
    }

    #[test]
    fn a_busy_writer_stops_lingering_once_its_batch_holds_half_the_budget() {
        let event = crate::event::Keys::generate().sign(1, 1, vec![], "x".repeat(100));
        let json = event.to_json();
        let first = Request::Events {
            events: vec![(event, json)],
            reply: Box::new(|_| {}),
        };
        let batching = Batching {
            max_batch: 100,
            linger: Duration::from_secs(3600),
            budget: Some(crate::budget::IngestBudget::new(1000)),
        };
        let (tx, rx) = flume::unbounded();
        let done = collect_from(first, rx, batching, true);
        // The sender stays open, so a lingering collect would not return.
        assert_eq!(
            done.recv_timeout(Duration::from_secs(30)),
            Ok(1),
            "a writer lingered holding most of the ingest budget"
        );
        drop(tx);
    }

    #[test]
    fn shutdown_ends_the_linger() {
        let (tx, rx) = flume::unbounded();
        let done = collect_in_background(rx, 100, true);
        tx.send(Request::Shutdown).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(30)), Ok(2));
        drop(tx);
    }
}
