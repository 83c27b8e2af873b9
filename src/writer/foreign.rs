//! Events another process (CLI `import`, `sync`) committed to the same
//! store: the writer notices the sequence numbers it did not allocate and
//! fans those events out too, so live subscribers see them.

use std::sync::Arc;

use super::{Committed, FanoutSender};
use crate::event::Event;
use crate::store::Store;

/// Foreign events read per catch-up step.
const CATCH_UP_CHUNK: usize = 4096;

/// The highest sequence number whose event has been handed to the fan-out.
pub(super) struct Seen {
    pub(super) last: u64,
    /// When foreign events were last looked for.
    pub(super) checked: std::time::Instant,
}

impl Seen {
    pub(super) fn start(store: &Store) -> Seen {
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
    pub(super) fn catch_up(&mut self, store: &Store, upto: u64, fanout: &FanoutSender) {
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
