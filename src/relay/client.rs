//! What the rest of the relay knows about one connected client: its id,
//! address, outbound queue and NIP-42 state. Shared by the connection task,
//! running queries and the fan-out thread.

use std::net::IpAddr;

use super::auth::AuthState;
use super::outbox::Outbox;

pub struct Client {
    pub id: u64,
    pub ip: IpAddr,
    pub outbox: Outbox,
    pub auth: AuthState,
}
