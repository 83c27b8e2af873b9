//! Relay-to-relay sync: a run reconciles with a peer over NIP-77 and then
//! transfers the difference in either direction (see `client.rs`).

mod client;

pub use client::{sync_with_peer, Direction, Local, Progress, SyncError, SyncOptions, SyncReport};
