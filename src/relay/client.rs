//! What the rest of the relay knows about one connected client: its id,
//! address, outbound queue and NIP-42 state. Shared by the connection task,
//! running queries and the fan-out thread.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::AuthState;
use super::outbox::Outbox;

pub struct Client {
    pub id: u64,
    pub ip: IpAddr,
    pub outbox: Outbox,
    pub auth: AuthState,
    /// Queries (REQ, COUNT, NEG-OPEN, NEG-MSG) queued or running for this
    /// client: each waits for a query-pool slot as a task, and a client
    /// that sends them faster than they run must not grow that queue
    /// without bound.
    pub queries: Arc<Semaphore>,
}

/// The refusal when a client has too many queries in flight.
pub fn too_many_queries() -> crate::refusal::Refusal {
    crate::refusal::Refusal::rate_limited("too many queries in flight on this connection")
}

impl Client {
    /// A slot for one more query, held until it is answered; `None` when
    /// the client already has its limit in flight.
    pub fn query_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.queries.clone().try_acquire_owned().ok()
    }
}
