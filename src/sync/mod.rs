//! Relay-to-relay sync: a run reconciles with a peer over NIP-77 and then
//! transfers the difference in either direction (`client.rs`; the NIP-77
//! rounds are `reconcile.rs`); `serve` runs
//! runs on a schedule for every configured peer (`scheduler.rs`) and keeps
//! live links to peers configured with `live` (`live.rs`); `ingest.rs` stores
//! what peers send, in groups; `peer.rs` is the WebSocket to a peer, NIP-42
//! included.

mod client;
mod from_relay;
mod ingest;
mod live;
mod peer;
mod reconcile;
mod scheduler;
mod types;

pub use client::sync_with_peer;
pub use scheduler::{PeerState, SyncRequest, SyncService};
pub use types::{Direction, Local, Progress, SyncError, SyncOptions, SyncReport};
