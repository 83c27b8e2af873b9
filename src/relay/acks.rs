//! The OKs of stored events, written off the writer thread. A verify job
//! registers its group here (the connection, the event ids, the group's
//! share of the ingest budget) and submits it to the writer under the
//! ticket it got; the writer answers every ticketed group of one commit in
//! one message, and the `acks` thread turns those outcomes into OK frames
//! on each group's connection. One hand-off per commit, not one per group:
//! measured, a task per group cost the relay's sockets about 1.5 µs of CPU
//! per event (docs/PERFORMANCE.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

use super::client::Client;
use super::messages;
use crate::metrics::Metrics;
use crate::refusal::{Prefix, Refusal};
use crate::store::WriteOutcome;
use crate::writer::{AckSender, Acked};

/// A group waiting for its commit.
struct Pending {
    client: Arc<Client>,
    ids: Vec<String>,
    /// Released once the group is answered.
    _room: crate::budget::Room,
}

/// Groups of EVENTs waiting for their OKs, by ticket.
pub struct Acks {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
}

impl Acks {
    /// The acknowledger and the sender its writer answers on; the `acks`
    /// thread runs until every sender is gone.
    pub fn start(metrics: Arc<Metrics>) -> std::io::Result<(Arc<Acks>, AckSender)> {
        let acks = Arc::new(Acks {
            next: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = flume::unbounded::<Vec<Acked>>();
        let thread_acks = acks.clone();
        std::thread::Builder::new()
            .name("acks".into())
            .spawn(move || {
                for commit in rx.iter() {
                    thread_acks.answer(&metrics, commit);
                }
            })?;
        Ok((acks, tx))
    }

    /// Registers a group of `client`'s events (ids in hex, in order); the
    /// returned ticket goes with the group to the writer.
    pub fn expect(&self, client: Arc<Client>, ids: Vec<String>, room: crate::budget::Room) -> u64 {
        let ticket = self.next.fetch_add(1, Relaxed);
        let pending = Pending {
            client,
            ids,
            _room: room,
        };
        self.pending.lock().insert(ticket, pending);
        ticket
    }

    fn answer(&self, metrics: &Metrics, commit: Vec<Acked>) {
        for acked in commit {
            let Some(group) = self.pending.lock().remove(&acked.ticket) else {
                continue;
            };
            let replies = group
                .ids
                .iter()
                .zip(&acked.outcomes)
                .filter_map(|(id_hex, outcome)| ok_for(metrics, id_hex, outcome))
                .collect();
            group.client.outbox.send_all(replies);
        }
    }
}

/// The OK for a stored event's outcome (and its count in metrics).
fn ok_for(metrics: &Metrics, id_hex: &str, outcome: &WriteOutcome) -> Option<String> {
    match outcome {
        WriteOutcome::Stored { .. } => Some(messages::accepted(id_hex)),
        WriteOutcome::Duplicate => {
            metrics.reject(Prefix::Duplicate);
            let have = Refusal::duplicate("already have this event");
            Some(messages::accepted_noting(id_hex, &have))
        }
        WriteOutcome::Refused(why) => {
            metrics.reject(why.prefix);
            Some(messages::refused(id_hex, why))
        }
        WriteOutcome::HeadMoved
        | WriteOutcome::Purged { .. }
        | WriteOutcome::Graph(_)
        | WriteOutcome::Recorded => None,
    }
}
