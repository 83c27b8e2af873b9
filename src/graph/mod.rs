//! Graph sync: the DB-Sync protocol (seeds 002 and 004) served from the
//! event store. The graph index lives in kind-34071 events (`index.rs`),
//! each graph's transaction log in kind-4071 events with a per-node
//! position `t` (`store/graphs.rs`, `log.rs`); `ws.rs` is the WebSocket
//! `/sync/:graph-id`, `http.rs` the HTTP API, `hub.rs` presence and
//! `changed`. Every event is signed with the node key and private to the
//! mesh, so graphs replicate between nodes by reconciliation.

mod assets;
mod blobs;
mod fetch;
mod forward;
mod gaps;
pub use forward::home_calls;
pub use gaps::spawn_watcher as spawn_gap_watcher;
pub mod home;
mod http;
mod hub;
pub mod index;
pub mod log;
pub mod messages;
pub mod snapshot;
mod ws;

use std::sync::Arc;

use std::collections::HashMap;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::auth::{TokenUsers, User};
use crate::event::Keys;
use crate::store::Store;
use crate::writer::WriterHandle;

pub use hub::Hub;
use index::{Access, GraphMeta};

/// What the graph endpoints share.
pub struct Graphs {
    pub store: Arc<Store>,
    pub writer: WriterHandle,
    /// Signs every tx and index event this node creates.
    pub node_key: Arc<Keys>,
    pub tokens: TokenUsers,
    pub hub: Arc<Hub>,
    /// Largest tx string accepted (the write policy's event size).
    pub max_tx_size: usize,
    /// The data directory (asset blobs live under `assets/`).
    pub store_dir: std::path::PathBuf,
    /// The sync service, for the mesh peers to fetch blobs from.
    pub sync: Arc<crate::sync::SyncService>,
    /// Calls to graph homes (forwarded batches, resets), bounded in number
    /// and reply size.
    pub home_calls: crate::http_client::BoundedCalls,
    /// Turns true when the node stops: graph sockets close then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// `server.relay_url` as http(s):// (`None` when not configured): the
    /// origin of the URLs replies give out.
    pub public_origin: Option<crate::http_client::Endpoint>,
}

impl Graphs {
    /// The absolute URL of `path` on this node as the client reached it:
    /// `server.relay_url` when configured, else https when the request came
    /// over this listener's TLS or a trusted proxy says so
    /// (`X-Forwarded-Proto`), with the request's host (a trusted proxy's
    /// `X-Forwarded-Host`, else `Host`).
    fn url_for(&self, request: &axum::http::request::Parts, path: &str) -> String {
        if let Some(origin) = &self.public_origin {
            return origin.url(path);
        }
        let peer = request
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        let forwarded = |name: &str| {
            peer.and_then(|ip| self.tokens.proxies().forwarded(&request.headers, ip, name))
        };
        let secure = request.extensions.get::<crate::edge::Secure>().is_some()
            || forwarded("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"));
        let host = forwarded("x-forwarded-host")
            .or_else(|| request.headers.get("host").and_then(|v| v.to_str().ok()))
            .unwrap_or("localhost");
        let scheme = if secure { "https" } else { "http" };
        format!("{scheme}://{host}{path}")
    }
}

/// Resolves once the node stops (or its stop signal is gone).
pub(crate) async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// The graph routes, to be merged into the relay's router.
pub fn routes(graphs: Arc<Graphs>) -> Router {
    Router::new()
        .route("/health", get(http::health))
        .route("/graphs", get(http::list_graphs).post(http::create_graph))
        .route("/graphs/{graph}", delete(http::delete_graph))
        .route("/graphs/{graph}/access", get(http::ok))
        .route("/graphs/{graph}/members", get(http::members))
        .route("/sync/{graph}", get(ws::upgrade))
        .route("/sync/{graph}/health", get(http::ok))
        .route("/sync/{graph}/pull", get(http::pull))
        .route("/sync/{graph}/tx/batch", post(http::tx_batch))
        .route("/sync/{graph}/admin/reset", delete(http::reset))
        .route("/sync/{graph}/snapshot/upload", post(snapshot::upload))
        .route("/sync/{graph}/snapshot/download", get(snapshot::download))
        .route("/sync/{graph}/snapshot/rows", get(snapshot::rows))
        .route("/sync/{graph}/snapshot/import", post(snapshot::import))
        .route("/assets/{graph}/{name}", any(assets::asset))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn(crate::auth::bind_body))
        .with_state(graphs)
}

/// Largest JSON body (a big tx/batch); assets stream past it.
const MAX_JSON_BODY: usize = 32 * 1024 * 1024;

/// An error answered as `{"error": "..."}`.
pub(crate) struct GraphError(StatusCode, &'static str);

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

const UNAUTHORIZED: GraphError = GraphError(StatusCode::UNAUTHORIZED, "unauthorized");
const FORBIDDEN: GraphError = GraphError(StatusCode::FORBIDDEN, "forbidden");
const NOT_FOUND: GraphError = GraphError(StatusCode::NOT_FOUND, "not found");
const PAYLOAD_MISMATCH: GraphError = GraphError(
    StatusCode::UNAUTHORIZED,
    "invalid NIP-98 authorization: the body's sha256 is not the payload tag",
);
const HOME_UNREACHABLE: GraphError =
    GraphError(StatusCode::SERVICE_UNAVAILABLE, forward::HOME_UNREACHABLE);
const SERVER_ERROR: GraphError = GraphError(StatusCode::INTERNAL_SERVER_ERROR, "server error");

/// An authenticated caller of the graph API (401 otherwise).
pub(crate) struct Caller(pub User);

impl FromRequestParts<Arc<Graphs>> for Caller {
    type Rejection = GraphError;

    async fn from_request_parts(
        parts: &mut Parts,
        graphs: &Arc<Graphs>,
    ) -> Result<Self, GraphError> {
        crate::auth::authenticate_parts(&graphs.store, &graphs.tokens, parts)
            .map(Caller)
            .map_err(|e| {
                tracing::debug!(error = %e, "graph API: not authenticated");
                UNAUTHORIZED
            })
    }
}

/// An authenticated caller with access to the graph named by the route's
/// `{graph}`: 401, 404 (unknown or deleted) or 403 otherwise.
pub(crate) struct GraphCaller {
    pub graph: String,
    pub user: User,
    pub meta: GraphMeta,
    pub access: Access,
}

impl FromRequestParts<Arc<Graphs>> for GraphCaller {
    type Rejection = GraphError;

    async fn from_request_parts(
        parts: &mut Parts,
        graphs: &Arc<Graphs>,
    ) -> Result<Self, GraphError> {
        let Caller(user) = Caller::from_request_parts(parts, graphs).await?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, graphs)
            .await
            .map_err(|_| NOT_FOUND)?;
        let graph = params.get("graph").cloned().ok_or(NOT_FOUND)?;
        let (meta, access) = graphs.graph_for(&graph, &user).await?;
        Ok(GraphCaller {
            graph,
            user,
            meta,
            access,
        })
    }
}

impl Graphs {
    /// The graph's metadata if `user` may use it: 404 unknown or deleted,
    /// 403 no access.
    async fn graph_for(&self, graph: &str, user: &User) -> Result<(GraphMeta, Access), GraphError> {
        let store = self.store.clone();
        let id = graph.to_string();
        let found = tokio::task::spawn_blocking(move || index::read(&store, Some(&id)))
            .await
            .map_err(|_| SERVER_ERROR)?
            .map_err(|_| SERVER_ERROR)?;
        let meta = found
            .into_iter()
            .find(|m| m.graph_id == graph && !m.deleted)
            .ok_or(NOT_FOUND)?;
        // A mesh node acts for its users (a forwarded batch, a reset).
        if user.mesh_node {
            return Ok((meta, Access::Manager));
        }
        match meta.access(&user.id) {
            Access::None => Err(FORBIDDEN),
            access => Ok((meta, access)),
        }
    }

    /// The peers that are mesh nodes: URL and node key.
    fn mesh_peers(&self) -> Vec<(String, [u8; 32])> {
        self.sync.mesh_peers()
    }

    /// Stores a signed index event through the writer.
    async fn publish_meta(&self, meta: &GraphMeta) -> Result<(), GraphError> {
        self.store_event(meta.to_event(&self.node_key)).await
    }

    /// Stores an event this node signed, through the writer.
    async fn store_event(&self, event: crate::event::Event) -> Result<(), GraphError> {
        match self.writer.write(event).await {
            crate::store::WriteOutcome::Stored { .. } => Ok(()),
            other => {
                tracing::warn!(outcome = ?other, "graph index event not stored");
                Err(SERVER_ERROR)
            }
        }
    }
}
