//! Echo sync (seeds 000 and 001): node states pushed, pulled and watched
//! over `POST /echo/push`, `/echo/pull`, `/echo/status`, streamed as they
//! change on `GET /echo/stream` and acknowledged on `POST /echo/ack`. A node state is a
//! signed kind-34072 event (`states.rs`), private to the mesh, so states
//! replicate between nodes by reconciliation like everything else;
//! `stats.rs` keeps the per-node operation history for status;
//! `stream.rs` and `deliveries.rs` notify subscribers of changes and track
//! their acknowledgements (a push may wait for them).

mod access;
pub mod conflicts;
mod deliveries;
mod http;
mod pull;
pub mod sse;
pub mod states;
mod stats;
mod stream;
pub mod time;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::auth::{TokenUsers, User};
use crate::event::{Event, Keys};
use crate::filter::Filter;
use crate::mesh::ECHO_STATE_KIND;
use crate::store::{Store, WriteOutcome};
use crate::writer::WriterHandle;
use states::NodeState;

/// The resolved heads of one node, or of every node (blocking).
fn heads(
    store: &Store,
    node_id: Option<&str>,
) -> Result<Vec<conflicts::Resolved>, crate::store::StoreError> {
    let mut filter = Filter {
        kinds: Some(vec![ECHO_STATE_KIND]),
        ..Filter::default()
    };
    if let Some(id) = node_id {
        filter.tags.insert(b'd', vec![id.to_string()]);
    }
    let states = store.all_per_d(&filter, NodeState::from_event)?;
    Ok(states
        .into_values()
        .filter_map(conflicts::resolve)
        .collect())
}

/// What the echo endpoints share.
pub struct Echo {
    pub store: Arc<Store>,
    pub writer: WriterHandle,
    pub node_key: Arc<Keys>,
    pub tokens: TokenUsers,
    /// `auth.echo_grants`: access to nodes other users own.
    grants: access::Grants,
    stats: Arc<stats::Stats>,
    /// Largest event peers accept (the write policy's): a bigger state
    /// would be stored here and never replicate.
    max_event_size: usize,
    /// Held from reading the stored state to storing the new one, so two
    /// racing pushes cannot both pass the version check.
    push_lock: tokio::sync::Mutex<()>,
    /// Open change streams (`stream.rs`).
    streams: stream::Streams,
    /// Who was notified of each recent change and who acknowledged it.
    deliveries: deliveries::Deliveries,
    metrics: Arc<crate::metrics::Metrics>,
    /// Seals pull cursors that stop at a node the caller may not read
    /// (`pull.rs`), so a cursor never names another user's node.
    cursor_key: [u8; 32],
}

/// The echo routes, to be merged into the relay's router.
pub fn routes(echo: Arc<Echo>) -> Router {
    Router::new()
        .route("/echo/push", post(http::push))
        .route("/echo/pull", post(pull::pull))
        .route("/echo/status", post(http::status))
        .route("/echo/stream", get(stream::stream))
        .route("/echo/ack", post(deliveries::ack))
        .layer(axum::middleware::from_fn(crate::auth::bind_body))
        .with_state(echo)
}

/// An authenticated caller (bearer token or NIP-98), else 401.
pub(crate) struct EchoCaller(pub User);

impl FromRequestParts<Arc<Echo>> for EchoCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, echo: &Arc<Echo>) -> Result<Self, Response> {
        crate::auth::authenticate_parts(&echo.store, &echo.tokens, parts)
            .map(EchoCaller)
            .map_err(|e| {
                let body = json!({"status": "error", "message": e.to_string()});
                (StatusCode::UNAUTHORIZED, Json(body)).into_response()
            })
    }
}

impl Echo {
    pub fn new(
        store: Arc<Store>,
        writer: WriterHandle,
        node_key: Arc<Keys>,
        tokens: TokenUsers,
        grants: &[crate::config::EchoGrant],
        max_event_size: usize,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Echo {
        Echo {
            stats: Arc::new(stats::Stats::new(store.clone(), writer.clone())),
            store,
            writer,
            node_key,
            tokens,
            grants: access::Grants::new(grants),
            max_event_size,
            push_lock: tokio::sync::Mutex::new(()),
            streams: Default::default(),
            deliveries: Default::default(),
            metrics,
            cursor_key: rand::random(),
        }
    }

    /// Starts feeding the change streams from the store's feed of committed
    /// events (until `shutdown`).
    pub fn start_streams(
        self: &Arc<Self>,
        feed: tokio::sync::broadcast::Receiver<crate::writer::CommittedChunk>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        stream::spawn_dispatcher(self.clone(), feed, shutdown);
    }

    /// The current state of one node, or of every node, with the states it
    /// is in conflict with (`conflicts.rs`), whichever mesh nodes signed them.
    /// `Err` when the store cannot be read: callers fail closed (no state
    /// read means no owner known, not "a new node").
    async fn current(&self, node_id: Option<&str>) -> Result<Vec<conflicts::Resolved>, ()> {
        let store = self.store.clone();
        let node_id = node_id.map(str::to_string);
        tokio::task::spawn_blocking(move || heads(&store, node_id.as_deref()).ok())
            .await
            .ok()
            .flatten()
            .ok_or(())
    }

    /// Stores an event this node signed; true once committed.
    async fn store_event(&self, event: Event) -> bool {
        matches!(self.writer.write(event).await, WriteOutcome::Stored { .. })
    }
}
