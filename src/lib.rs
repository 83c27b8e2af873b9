//! echorelay: a set-reconciliation Nostr relay node.
//!
//! The data path, top to bottom (see docs/ARCHITECTURE.md):
//!
//! ```text
//! socket (relay::socket, yawc + deflate) ─▶ relay::connection (read bursts)
//!        ─▶ relay::dispatch (size gate, rate pacing, parse) ─▶ relay::ingest (policy, groups)
//!        ─▶ verify (id + signature, bounded pool) ─▶ writer (one LMDB write txn per batch)
//!        ─▶ store ─▶ oneshot answer ─▶ OKs (relay::messages) + relay::subscriptions fan-out
//! REQ    ─▶ relay::queries ─▶ store::query (index plan, newest first, limit), blocking pool
//! NEG-*  ─▶ relay::neg_sessions ─▶ a fingerprint tree or a vector ─▶ negentropy
//! sync   ─▶ sync::peer (frames read as sync::from_relay::FromRelay)
//!        ─▶ sync::reconcile (NIP-77 initiator) ─▶ sync::client fetch / upload
//!        ─▶ sync::ingest ─▶ verify ─▶ writer
//! graph  ─▶ graph::{ws, http} (graph::messages) ─▶ graph::log ─▶ writer,
//!           or graph::forward to the home node
//! echo   ─▶ echo::http ─▶ echo::{access, conflicts} ─▶ writer
//! ```
//!
//! Refusals travel as [`refusal::Refusal`] from where they are decided to
//! where they are sent; only `relay::messages` turns them into text.

/// The control API (seed 003) and the client the CLI calls it with.
pub mod admin;
/// Who calls the HTTP APIs: bearer tokens and NIP-98.
pub mod auth;
/// Bytes of EVENTs allowed between the socket and their commit.
pub mod budget;
/// Command line: one file per subcommand.
pub mod cli;
/// Configuration file and embedded defaults.
pub mod config;
/// Echo sync: node states pushed and pulled as events.
pub mod echo;
/// The HTTP edge: accept loop, timeouts and per-IP connection slots.
pub mod edge;
/// Signed events: parsing, id and signature checks, signing.
pub mod event;
/// NIP-01 filters: parsing and matching.
pub mod filter;
/// Graph sync: the DB-Sync protocol on top of events.
pub mod graph;
/// Lowercase hex on the ingest path (ids, pubkeys, signatures).
pub mod hex_codec;
/// Outgoing HTTP on one reqwest client (CLI calls, NIP-11, asset blobs,
/// graph forwarding), every call bounded in time and size.
pub mod http_client;
/// Random identifiers (UUID v4).
pub mod ids;
/// The mesh: trusted node keys and the kinds private to them.
pub mod mesh;
/// Process-wide counters for `/metrics`.
pub mod metrics;
/// Negentropy v1 set reconciliation (NIP-77): codec, reconciler, storages.
pub mod negentropy;
/// Wiring and orderly shutdown of a running node.
pub mod node;
/// NODE-AUTH: a dialled peer proves it holds its configured node key.
pub mod node_auth;
/// A sync peer's entry, as written and parsed once.
pub mod peers;
/// Why something is refused: NIP-01's prefix as a type, and the detail.
pub mod refusal;
/// Nostr over WebSocket: server, connections, subscriptions, policy.
pub mod relay;
/// `GET /metrics`: every series, on the relay or the control listener.
pub mod scrape;
/// The node key and the generated admin token in the data directory.
pub mod secrets;
/// The LMDB event store and its indexes.
pub mod store;
/// Relay-to-relay sync: reconcile with a peer, then fetch and send.
pub mod sync;
/// TLS: the listeners' certificate (reloadable) and the dialling trust roots.
pub mod tls;
/// The bounded signature-verification pool.
pub mod verify;
/// The single writer thread.
pub mod writer;
