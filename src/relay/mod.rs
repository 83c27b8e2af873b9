//! Nostr over WebSocket: the server, one task per connection, and the shared
//! state they use. The data path for an EVENT reads top to bottom:
//! `connection` (read bursts, parse, limits) → `ingest` (policy, then the
//! `verify` pool for id + signature, in groups) →
//! `writer` (one LMDB write transaction per batch) → OK + `subscriptions`
//! fan-out.

mod auth;
mod client;
mod connection;
mod ingest;
mod limits;
pub mod messages;
mod neg_sessions;
mod nip11;
mod outbox;
pub mod policy;
mod server;
pub mod subscriptions;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::verify::VerifyHandle;
use crate::writer::{FanoutSender, WriterHandle};

pub use neg_sessions::{NegDirectory, SessionInfo};
pub use server::serve;

use limits::{ConnectionCounter, IpRate};
use messages::ParseLimits;
use policy::{ReadPolicy, WritePolicy};
use subscriptions::Registry;

/// Everything a connection needs, shared by all of them.
pub struct Relay {
    pub config: Config,
    pub store: Arc<Store>,
    pub writer: WriterHandle,
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
    connections: Arc<ConnectionCounter>,
    query_slots: Arc<Semaphore>,
    /// `limits.max_ingest_bytes`: EVENT bytes between the socket and the
    /// commit, so that a flood waits in TCP buffers and not in memory.
    ingest_bytes: Arc<Semaphore>,
    next_client_id: AtomicU64,
    parse_limits: ParseLimits,
    shutdown: watch::Receiver<bool>,
}

/// The pieces [`Relay::new`] needs that outlive it (threads, channels).
pub struct RelayParts {
    pub store: Arc<Store>,
    pub writer: WriterHandle,
    pub verify: VerifyHandle,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
    pub registry: Arc<Registry>,
    pub read_policy: Arc<ReadPolicy>,
    pub fanout: FanoutSender,
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
            connections: Arc::new(ConnectionCounter::new(limits.max_connections_per_ip)),
            query_slots: Arc::new(Semaphore::new(query_threads)),
            ingest_bytes: Arc::new(Semaphore::new(ingest_budget(limits.max_ingest_bytes))),
            next_client_id: AtomicU64::new(1),
            parse_limits: ParseLimits {
                max_filters: limits.max_filters,
                max_subid_length: limits.max_subid_length,
            },
            store: parts.store,
            writer: parts.writer,
            verify: parts.verify,
            metrics: parts.metrics,
            shutdown: parts.shutdown,
            fanout: parts.fanout,
            registry: parts.registry,
            neg_directory: NegDirectory::default(),
            config,
        }
    }

    /// The write policy, shared with the sync service so peers' events meet
    /// the same rules as clients'.
    pub fn write_policy(&self) -> Arc<WritePolicy> {
        self.write_policy.clone()
    }

    /// Reserves room for `bytes` of EVENTs until the returned permit drops
    /// (after their commit); waits while the relay holds too many. A job
    /// bigger than the whole budget takes all of it. `None` only if the
    /// budget's semaphore is closed, which the relay never does.
    pub(crate) async fn reserve_ingest(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let total = ingest_budget(self.config.limits.max_ingest_bytes);
        let wanted = bytes.clamp(1, total) as u32;
        self.ingest_bytes
            .clone()
            .acquire_many_owned(wanted)
            .await
            .ok()
    }

    /// Drops idle rate-limiter state; called periodically.
    pub fn shrink_rate_limiters(&self) {
        self.event_rate.shrink();
        self.req_rate.shrink();
    }
}

/// The ingest budget in semaphore permits (bytes, at least 1, at most
/// what one semaphore acquire can take).
fn ingest_budget(configured: usize) -> usize {
    configured.clamp(1, u32::MAX as usize)
}
