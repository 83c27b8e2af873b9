//! The control API (SPEC §3, the methods of seed 003): JSON over HTTP on
//! `server.admin_listen`, every request carrying `Authorization: Bearer
//! <admin token>`. One endpoint per method, `POST /api/v1/<Method>` (GET
//! also works for the methods without arguments); `SyncWithPeer` streams its
//! progress records as NDJSON. `methods.rs` implements the methods,
//! `client.rs` is the small HTTP client the CLI uses to call them.

pub mod address;
pub mod client;
mod graphs;
mod methods;

pub use methods::Call;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::relay::Relay;
use crate::sync::SyncService;

/// Where the API's endpoints live.
pub const API_PREFIX: &str = "/api/v1/";

/// What the methods act on.
pub struct Admin {
    pub sync: Arc<SyncService>,
    pub relay: Arc<Relay>,
    /// This node's key (hex), reported by GetSyncStatus.
    pub node_pubkey: String,
    /// sha256 of the token: compared in constant time, never kept in clear.
    token_hash: [u8; 32],
}

impl Admin {
    pub fn new(
        sync: Arc<SyncService>,
        relay: Arc<Relay>,
        node_pubkey: String,
        token: &str,
    ) -> Admin {
        Admin {
            sync,
            relay,
            node_pubkey,
            token_hash: Sha256::digest(token.as_bytes()).into(),
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        given
            .iter()
            .zip(self.token_hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// An error answered as `{"error": "..."}` with a status code.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub(crate) fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, reason.into())
    }

    pub(crate) fn not_found(reason: impl Into<String>) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, reason.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

/// Serves the control API until `shutdown` resolves.
pub async fn serve(
    admin: Arc<Admin>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = &admin.relay.config;
    let slots = Arc::new(crate::edge::IpSlots::new(
        config.limits.max_connections_per_ip,
    ));
    // On loopback the control API stays plain (the local CLI dials
    // 127.0.0.1, a name no public certificate carries); elsewhere the
    // token never crosses the network in clear when TLS is configured.
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let tls = admin.relay.tls.clone().filter(|_| !loopback);
    let edge = crate::edge::Edge::new(&config.server, slots, tls);
    let mut app = Router::new().route("/api/v1/{method}", any(call));
    if config.server.metrics_on == "admin" {
        app = app.route("/metrics", axum::routing::get(metrics));
    }
    let app = app.fallback(unknown).with_state(admin);
    crate::edge::serve(listener, app, edge, shutdown).await
}

/// `GET /metrics` on the control listener (`server.metrics_on = "admin"`).
async fn metrics(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if !admin.authorized(&headers) {
        return unauthorized();
    }
    let scrape = crate::scrape::Scrape {
        relay: admin.relay.clone(),
        sync: admin.sync.clone(),
    };
    crate::scrape::reply(crate::scrape::render(&scrape).await)
}

async fn call(
    State(admin): State<Arc<Admin>>,
    Path(method): Path<String>,
    http_method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !admin.authorized(&headers) {
        return unauthorized();
    }
    let Some(spec) = methods::find(&method) else {
        return ApiError::not_found(format!("unknown endpoint: {method}")).into_response();
    };
    let allowed = http_method == Method::POST || (http_method == Method::GET && spec.read_only);
    if !allowed {
        return ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} takes POST"),
        )
        .into_response();
    }
    match methods::Call::parse(spec.name, &body) {
        Ok(call) => methods::dispatch(&admin, call).await,
        Err(e) => e.into_response(),
    }
}

/// The request body as a JSON object; an empty body is `{}`.
fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("malformed JSON: {e}"))),
    }
}

async fn unknown(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if !admin.authorized(&headers) {
        return unauthorized();
    }
    ApiError::not_found(format!(
        "unknown endpoint; the methods live under {API_PREFIX}"
    ))
    .into_response()
}

fn unauthorized() -> Response {
    let mut response = ApiError(
        StatusCode::UNAUTHORIZED,
        "missing or wrong admin token".into(),
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}
