//! Live subscriptions and fan-out. The writer hands each committed batch to
//! the fan-out thread, which matches it against every open subscription and
//! queues the events on the subscribers' outboxes: delivery happens straight
//! after commit, and a slow subscriber only fills its own budget.
//!
//! A new subscription starts *pending*: while its stored-events query runs,
//! live events are buffered. When the query ends at store sequence `S` (its
//! read snapshot), the buffer is flushed without the events the query already
//! saw (`seq <= S`) and the subscription goes live. Nothing is missed and
//! nothing is sent twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::client::Client;
use super::messages;
use super::policy::ReadPolicy;
use crate::filter::Filter;
use crate::writer::{Committed, CommittedChunk, FanoutSender};

/// Live events buffered for a pending subscription before it is cut off.
const MAX_PENDING_EVENTS: usize = 10_000;

enum State {
    Pending(Vec<Arc<Committed>>),
    Live { after_seq: u64 },
}

pub struct Subscription {
    pub client: Arc<Client>,
    pub id: String,
    pub filters: Vec<Filter>,
    /// `["EVENT","<id>",`, the start of every event this subscription sends.
    pub events: messages::EventPrefix,
    state: Mutex<State>,
    cancelled: AtomicBool,
}

impl Subscription {
    pub fn new(client: Arc<Client>, id: String, filters: Vec<Filter>) -> Subscription {
        Subscription {
            client,
            events: messages::EventPrefix::new(&id),
            id,
            filters,
            state: Mutex::new(State::Pending(Vec::new())),
            cancelled: AtomicBool::new(false),
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.client.outbox.is_overflowed()
    }

    /// Ends the stored-events phase: sends EOSE, then the buffered live
    /// events newer than the query's snapshot, and goes live.
    pub fn finish_query(&self, snapshot_seq: u64) {
        let mut state = self.state.lock();
        if self.is_cancelled() {
            return;
        }
        self.client.outbox.send(messages::eose(&self.id));
        if let State::Pending(buffer) = std::mem::replace(
            &mut *state,
            State::Live {
                after_seq: snapshot_seq,
            },
        ) {
            for c in buffer {
                if c.seq.is_none_or(|s| s > snapshot_seq) {
                    self.client.outbox.send(self.events.frame(&c.json));
                }
            }
        }
    }

    /// Offers the matching events of one commit: buffered while the stored
    /// phase runs, else sent with one wake-up of the connection's writer.
    fn offer(&self, matching: &[&Arc<Committed>]) {
        let mut state = self.state.lock();
        match &mut *state {
            State::Pending(buffer) => {
                if buffer.len() + matching.len() <= MAX_PENDING_EVENTS {
                    buffer.extend(matching.iter().map(|c| Arc::clone(c)));
                } else {
                    self.cancelled.store(true, Ordering::Relaxed);
                    let why =
                        crate::refusal::Refusal::error("too many live events while the query ran");
                    self.client.outbox.send(messages::closed(&self.id, &why));
                }
            }
            State::Live { after_seq } => {
                let texts = matching
                    .iter()
                    .filter(|c| c.seq.is_none_or(|s| s > *after_seq))
                    .map(|c| self.events.frame(&c.json))
                    .collect();
                self.client.outbox.send_all(texts);
            }
        }
    }
}

/// Every open subscription, by (client id, subscription id), plus the feed
/// of stored events that live sync pushes to peers.
pub struct Registry {
    subs: RwLock<HashMap<(u64, String), Arc<Subscription>>>,
    stored: tokio::sync::broadcast::Sender<CommittedChunk>,
    /// Events offered to matching live subscriptions since start.
    delivered: std::sync::atomic::AtomicU64,
}

/// Pieces of commits buffered per slow feed reader before it lags (and
/// the next reconciliation repairs what it skipped), and the most events
/// in one piece. The channel keeps its last FEED_CAPACITY pieces whether
/// or not anyone lags (at most 32 768 events under load). Commits waiting
/// together share pieces, so a burst of one-event commits fills them too;
/// a reader lags after 1 024 commits it did not read at the least.
const FEED_CAPACITY: usize = 1024;
const FEED_CHUNK: usize = 32;

impl Default for Registry {
    fn default() -> Self {
        Registry {
            subs: RwLock::default(),
            stored: tokio::sync::broadcast::channel(FEED_CAPACITY).0,
            delivered: Default::default(),
        }
    }
}

impl Registry {
    /// The feed of stored events in commit order; live sync subscribes to
    /// it on every (re)connect.
    pub fn stored_feed(&self) -> tokio::sync::broadcast::Sender<CommittedChunk> {
        self.stored.clone()
    }

    /// Adds (or replaces, cancelling the old one) a subscription.
    pub fn insert(&self, sub: Arc<Subscription>) {
        let old = self
            .subs
            .write()
            .insert((sub.client.id, sub.id.clone()), sub);
        if let Some(old) = old {
            old.cancelled.store(true, Ordering::Relaxed);
        }
    }

    pub fn remove(&self, client: u64, id: &str) -> bool {
        match self.subs.write().remove(&(client, id.to_string())) {
            Some(sub) => {
                sub.cancelled.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Drops all of a client's subscriptions; returns how many.
    pub fn remove_client(&self, client: u64) -> usize {
        let mut subs = self.subs.write();
        let before = subs.len();
        subs.retain(|(c, _), sub| {
            let keep = *c != client;
            if !keep {
                sub.cancelled.store(true, Ordering::Relaxed);
            }
            keep
        });
        before - subs.len()
    }

    pub fn len(&self) -> usize {
        self.subs.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.read().is_empty()
    }

    /// Events offered to matching live subscriptions since start (the
    /// fan-out's work: one per event and subscription).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    fn deliver(&self, batch: &[Arc<Committed>], read: &ReadPolicy) {
        let subs = self.subs.read();
        let mut offered = 0u64;
        let mut matching = Vec::new();
        for sub in subs.values() {
            if sub.is_cancelled() {
                continue;
            }
            matching.clear();
            matching.extend(batch.iter().filter(|c| {
                sub.filters.iter().any(|f| f.matches(&c.event))
                    && read.can_see(&sub.client, &c.event)
            }));
            if !matching.is_empty() {
                sub.offer(&matching);
                offered += matching.len() as u64;
            }
        }
        self.delivered.fetch_add(offered, Ordering::Relaxed);
    }
}

/// Starts the fan-out thread; it ends when every sender is dropped.
pub fn spawn_fanout(
    registry: Arc<Registry>,
    read: Arc<ReadPolicy>,
) -> std::io::Result<FanoutSender> {
    let (tx, rx) = flume::unbounded::<Vec<Arc<Committed>>>();
    std::thread::Builder::new()
        .name("fanout".into())
        .spawn(move || {
            while let Ok(batch) = rx.recv() {
                registry.deliver(&batch, &read);
                if registry.stored.receiver_count() == 0 {
                    continue;
                }
                let mut stored: Vec<Arc<Committed>> =
                    batch.into_iter().filter(|c| c.seq.is_some()).collect();
                // Commits already waiting share pieces (delivered to live
                // subscriptions one by one, in order, first).
                while stored.len() < FEED_CHUNK {
                    let Ok(next) = rx.try_recv() else { break };
                    registry.deliver(&next, &read);
                    stored.extend(next.into_iter().filter(|c| c.seq.is_some()));
                }
                for piece in stored.chunks(FEED_CHUNK) {
                    let _ = registry.stored.send(piece.into());
                }
            }
        })?;
    Ok(tx)
}
