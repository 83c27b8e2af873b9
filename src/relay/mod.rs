//! Nostr over WebSocket: the server, one task per connection, and the shared
//! state they use. The data path for an EVENT reads top to bottom:
//! `connection` (read bursts, parse, limits) → `ingest` (policy, then the
//! `verify` pool for id + signature, in groups) →
//! `writer` (one LMDB write transaction per batch) → OK + `subscriptions`
//! fan-out.

mod acks;
mod auth;
mod client;
mod connection;
mod count;
mod dispatch;
mod ingest;
mod limits;
pub mod messages;
mod neg_sessions;
mod nip11;
pub mod origin;
mod outbox;
pub mod policy;
mod queries;
mod refusals;
mod server;
pub(crate) mod socket;
pub mod subscriptions;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use crate::budget::IngestBudget;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::verify::VerifyHandle;
use crate::writer::{FanoutSender, WriterHandle};

pub use acks::Acks;
pub use neg_sessions::{NegDirectory, SessionInfo};
pub use server::serve;

use limits::IpRate;
use messages::ParseLimits;
use policy::{ReadPolicy, WritePolicy};
use subscriptions::Registry;

/// Everything a connection needs, shared by all of them.
pub struct Relay {
    pub config: Config,
    pub store: Arc<Store>,
    pub writer: WriterHandle,
    /// Where the OKs of stored events are written (`acks.rs`).
    acks: Arc<acks::Acks>,
    /// The listeners' certificate when TLS is on (`server.tls_cert`).
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    pub verify: VerifyHandle,
    pub fanout: FanoutSender,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Every connection's NIP-77 sessions (ListSessions / CloseSession).
    pub neg_directory: NegDirectory,
    write_policy: Arc<WritePolicy>,
    read_policy: Arc<ReadPolicy>,
    event_rate: IpRate,
    req_rate: IpRate,
    /// Open connections per client IP, shared with the relay listener's edge.
    pub(crate) connections: Arc<crate::edge::IpSlots>,
    query_slots: Arc<Semaphore>,
    /// `limits.max_ingest_bytes`: EVENT bytes between the socket and the
    /// commit, so that a flood waits in TCP buffers and not in memory.
    pub(crate) ingest_budget: Arc<IngestBudget>,
    next_client_id: AtomicU64,
    parse_limits: ParseLimits,
    shutdown: watch::Receiver<bool>,
    /// How client IPs and the relay URL are read from requests.
    pub(crate) origins: origin::Origins,
    /// This node's key: named by mesh-grade NIP-42 proofs, and signing the
    /// node's half of the mesh handshake (NODE-AUTH).
    pub(crate) node_key: Arc<crate::event::Keys>,
    /// Logs and counts every refusal sent to a client.
    refusals: refusals::RefusalLog,
    /// How relay sockets are upgraded (limits, deflate and its shared pool).
    socket_options: yawc::Options,
}

/// The pieces [`Relay::new`] needs that outlive it (threads, channels).
pub struct RelayParts {
    pub store: Arc<Store>,
    /// Shared with the writer, which does not linger while it is tight.
    pub ingest_budget: Arc<IngestBudget>,
    pub writer: WriterHandle,
    /// The acknowledger whose sender the writer answers on.
    pub acks: Arc<acks::Acks>,
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    pub verify: VerifyHandle,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
    pub registry: Arc<Registry>,
    pub read_policy: Arc<ReadPolicy>,
    pub fanout: FanoutSender,
    pub node_key: Arc<crate::event::Keys>,
}

impl Relay {
    pub fn new(config: Config, parts: RelayParts) -> Relay {
        let limits = &config.limits;
        let query_threads = match config.server.query_threads {
            0 => {
                2 * std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            }
            n => n,
        };
        Relay {
            write_policy: Arc::new(WritePolicy::new(&config.policy)),
            read_policy: parts.read_policy,
            event_rate: IpRate::new(limits.events_per_second, limits.events_burst),
            req_rate: IpRate::new(limits.reqs_per_second, limits.reqs_burst),
            connections: Arc::new(crate::edge::IpSlots::new(limits.max_connections_per_ip)),
            query_slots: Arc::new(Semaphore::new(query_threads)),
            next_client_id: AtomicU64::new(1),
            parse_limits: ParseLimits {
                max_filters: limits.max_filters,
                max_subid_length: limits.max_subid_length,
            },
            ingest_budget: parts.ingest_budget,
            store: parts.store,
            writer: parts.writer,
            acks: parts.acks,
            tls: parts.tls,
            verify: parts.verify,
            refusals: refusals::RefusalLog::new(parts.metrics.clone()),
            socket_options: socket::options(&config),
            metrics: parts.metrics,
            shutdown: parts.shutdown,
            fanout: parts.fanout,
            registry: parts.registry,
            neg_directory: NegDirectory::default(),
            origins: origin::Origins::new(&config.server).unwrap_or_else(|e| {
                tracing::error!(error = e, "server origins misconfigured; none trusted");
                origin::Origins::default()
            }),
            node_key: parts.node_key,
            config,
        }
    }

    /// The write policy, shared with the sync service so peers' events meet
    /// the same rules as clients'.
    pub fn write_policy(&self) -> Arc<WritePolicy> {
        self.write_policy.clone()
    }

    /// Drops idle rate-limiter state; called periodically.
    pub fn shrink_rate_limiters(&self) {
        self.event_rate.shrink();
        self.req_rate.shrink();
    }
}
