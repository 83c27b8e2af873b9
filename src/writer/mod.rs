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

mod batch;
mod foreign;

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::event::Event;
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use crate::store::{Store, WriteOutcome};

/// Where the writer answers one request, after commit: the submitter holds
/// the other end. The writer thread only sends; what the answer means is
/// the submitter's business, on its own thread.
pub type Reply = oneshot::Sender<WriteOutcome>;

/// Where the answer to a group of events goes: one outcome per event, in
/// order.
pub enum GroupReply {
    /// One submitter waits for this group alone.
    Oneshot(oneshot::Sender<Vec<WriteOutcome>>),
    /// A ticket of the node's acknowledger ([`Batching::acks`]): every
    /// ticketed group of one commit is answered in one message, so a busy
    /// relay pays one hand-off per commit, not one per group.
    Ticket(u64),
}

/// The submitter's end of a [`GroupReply::Oneshot`].
pub type GroupAnswer = oneshot::Receiver<Vec<WriteOutcome>>;

/// The outcomes of one ticketed group.
#[derive(Debug)]
pub struct Acked {
    pub ticket: u64,
    pub outcomes: Vec<WriteOutcome>,
}

/// Receives the ticketed answers of each commit.
pub type AckSender = flume::Sender<Vec<Acked>>;

impl GroupReply {
    /// Answers now (ticketed answers go out alone: only when the writer
    /// is gone or a group is empty).
    fn answer(self, outcomes: Vec<WriteOutcome>, acks: Option<&AckSender>) {
        match self {
            GroupReply::Oneshot(reply) => {
                let _ = reply.send(outcomes);
            }
            GroupReply::Ticket(ticket) => {
                if let Some(acks) = acks {
                    let _ = acks.send(vec![Acked { ticket, outcomes }]);
                }
            }
        }
    }
}

/// An event that is now durable (or ephemeral), on its way to subscribers.
#[derive(Debug)]
pub struct Committed {
    /// Store sequence number; `None` for ephemeral events.
    pub seq: Option<u64>,
    pub event: Event,
    pub json: String,
}

/// Stored events as the store's feed carries them: a few of one commit at a
/// time (one broadcast send and one wake-up per piece, not per event).
pub type CommittedChunk = Arc<[Arc<Committed>]>;

/// Receives committed events in commit order.
pub type FanoutSender = flume::Sender<Vec<Arc<Committed>>>;

enum Request {
    /// Verified events with their JSON, answered together: a connection's
    /// burst of EVENTs costs one queue hop and one wake-up, not one each.
    Events {
        events: Vec<(Event, String)>,
        reply: GroupReply,
    },
    /// Remove expired events (nobody waits; the count goes to metrics).
    Purge,
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
    /// Where ticketed answers go (also when the writer is gone).
    acks: Option<AckSender>,
}

/// The writer thread; [`Writer::shutdown`] drains the inbox and commits.
pub struct Writer {
    handle: WriterHandle,
    thread: Option<JoinHandle<()>>,
}

/// Requests queued before submitters wait: backpressure to the verify pool.
const INBOX: usize = 32 * 1024;

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
    /// Where ticketed groups are answered, once per commit (the relay's
    /// acknowledger, `relay/acks.rs`).
    pub acks: Option<AckSender>,
}

impl Batching {
    pub fn new(store: &crate::config::StoreConfig) -> Batching {
        Batching {
            max_batch: store.max_batch.max(1),
            linger: std::time::Duration::from_millis(store.commit_linger_ms),
            budget: None,
            acks: None,
        }
    }
}

impl Writer {
    pub fn spawn(
        store: Arc<Store>,
        batching: Batching,
        metrics: Arc<Metrics>,
        fanout: Option<FanoutSender>,
    ) -> Writer {
        let (tx, rx) = flume::bounded(INBOX);
        let acks = batching.acks.clone();
        let thread = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || batch::run(&store, &rx, &batching, &metrics, fanout.as_ref()))
            .ok();
        Writer {
            handle: WriterHandle { tx, acks },
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
    /// Queues verified events to be stored in one transaction with the rest
    /// of the writer's batch (blocks while the inbox is full); the answer
    /// holds their outcomes in order, after commit.
    pub fn submit_group(&self, events: Vec<(Event, String)>) -> GroupAnswer {
        let (reply, answer) = oneshot::channel();
        self.submit_replying(events, GroupReply::Oneshot(reply));
        answer
    }

    /// [`WriterHandle::submit_group`] answered to the acknowledger under
    /// `ticket` (see [`Batching::acks`]).
    pub fn submit_ticketed(&self, events: Vec<(Event, String)>, ticket: u64) {
        self.submit_replying(events, GroupReply::Ticket(ticket));
    }

    fn submit_replying(&self, events: Vec<(Event, String)>, reply: GroupReply) {
        if events.is_empty() {
            reply.answer(Vec::new(), self.acks.as_ref());
        } else {
            self.send(Request::Events { events, reply });
        }
    }

    /// Queues a request; if the writer is gone, answers it at once.
    fn send(&self, request: Request) {
        if let Err(flume::SendError(request)) = self.tx.send(request) {
            request.fail(&gone(), self.acks.as_ref());
        }
    }

    /// Queues a request answered by one outcome and waits for it.
    async fn ask(&self, request: impl FnOnce(Reply) -> Request) -> WriteOutcome {
        let (reply, outcome) = oneshot::channel();
        self.send(request(reply));
        outcome.await.unwrap_or_else(|_| gone())
    }

    /// Stores an event this node created and waits for the outcome (for
    /// async callers that answer only after commit).
    pub async fn write(&self, event: Event) -> WriteOutcome {
        let json = event.to_json();
        let outcomes = self.submit_group(vec![(event, json)]).await;
        outcomes
            .ok()
            .and_then(|o| o.into_iter().next())
            .unwrap_or_else(gone)
    }

    /// Appends a DB-Sync tx/batch: `events` (signed tx events with their
    /// JSON) go to `graph` only if its log is at `t_before`; the outcome is
    /// a [`WriteOutcome::Graph`].
    pub async fn write_graph_batch(
        &self,
        graph: String,
        t_before: u64,
        events: Vec<(Event, String)>,
    ) -> WriteOutcome {
        self.ask(|reply| Request::GraphBatch {
            graph,
            t_before,
            events,
            reply,
        })
        .await
    }

    /// Stores `event` only if `graph`'s head is still `head` when its write
    /// transaction runs ([`WriteOutcome::HeadMoved`] otherwise).
    pub async fn write_if_head(&self, event: Event, graph: String, head: u64) -> WriteOutcome {
        let json = event.to_json();
        self.ask(|reply| Request::IfHead {
            event,
            json,
            graph,
            head,
            reply,
        })
        .await
    }

    /// Upgrades graph logs from before homes (once; see
    /// `store/graph_upgrade.rs`) and waits for it.
    pub async fn upgrade_graph_logs(&self, key: Arc<crate::event::Keys>) -> WriteOutcome {
        self.ask(|reply| Request::UpgradeGraphLogs { key, reply })
            .await
    }

    /// Queues a bookkeeping write now (in call order with every other
    /// write) and returns the wait for its outcome: `Recorded` once
    /// committed.
    pub fn record(
        &self,
        op: crate::store::Bookkeeping,
    ) -> impl std::future::Future<Output = WriteOutcome> + Send + 'static {
        let (reply, outcome) = oneshot::channel();
        self.send(Request::Bookkeeping { op, reply });
        async move { outcome.await.unwrap_or_else(|_| gone()) }
    }

    /// Queues a bookkeeping write whose failure only loses bookkeeping: it
    /// is logged (`what` names it), nobody waits. Needs a tokio runtime.
    pub fn record_detached(&self, op: crate::store::Bookkeeping, what: &'static str) {
        let outcome = self.record(op);
        tokio::spawn(async move {
            let outcome = outcome.await;
            if outcome != WriteOutcome::Recorded {
                tracing::warn!(?outcome, "cannot save {what}");
            }
        });
    }

    /// Asks for a purge of expired events; skipped when the inbox is full
    /// (the next tick will ask again).
    pub fn purge_expired(&self) {
        let _ = self.tx.try_send(Request::Purge);
    }
}

/// The outcome when the writer dropped a request unanswered (it stopped).
fn gone() -> WriteOutcome {
    WriteOutcome::Refused(Refusal::shutting_down())
}

impl Request {
    /// Answers every write of this request with `outcome`.
    fn fail(self, outcome: &WriteOutcome, acks: Option<&AckSender>) {
        match self {
            Request::Events { events, reply } => {
                reply.answer(vec![outcome.clone(); events.len()], acks);
            }
            Request::GraphBatch { reply, .. }
            | Request::UpgradeGraphLogs { reply, .. }
            | Request::IfHead { reply, .. }
            | Request::Bookkeeping { reply, .. } => {
                let _ = reply.send(outcome.clone());
            }
            Request::Purge | Request::Shutdown => {}
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
