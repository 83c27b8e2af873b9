//! The HTTP side: one listener serving the WebSocket relay and NIP-11 on `/`,
//! Prometheus metrics on `/metrics`, and the other APIs' routes (graph
//! sync) merged in.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::{connection, nip11, Relay};
use crate::edge::{Slot, SlotCell};

/// Serves until `shutdown` resolves.
pub async fn serve(
    relay: Arc<Relay>,
    listener: TcpListener,
    other_apis: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let edge = crate::edge::Edge::new(
        &relay.config.server,
        relay.connections.clone(),
        relay.tls.clone(),
    );
    let app = Router::new()
        .route("/", get(root).options(preflight))
        .with_state(relay)
        .merge(other_apis);
    crate::edge::serve(listener, app, edge, shutdown).await
}

async fn root(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    let wants_ws = parts
        .headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if wants_ws {
        // A refused upgrade leaves the connection (and its slot) as it was.
        let upgrade = match yawc::IncomingUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade,
            Err(rejection) => return rejection.into_response(),
        };
        // Deflate is agreed here when the client offered it (socket.rs).
        let (response, socket) = match upgrade.upgrade(relay.socket_options.clone()) {
            Ok(pair) => pair,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        };
        let ip = relay.origins.client_ip(&parts.headers, peer);
        // The connection's own slot, unless it came through a trusted proxy:
        // then the slot is taken here, for the client the proxy names.
        let slot = parts
            .extensions
            .get::<SlotCell>()
            .and_then(SlotCell::take)
            .or_else(|| relay.connections.acquire(ip).inspect(Slot::mark_serving));
        let Some(slot) = slot else {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from this address\n",
            )
                .into_response();
        };
        let secure = parts.extensions.get::<crate::edge::Secure>().is_some();
        let url = relay
            .origins
            .relay_url(&parts.headers, peer, parts.uri.path(), secure);
        let configured = !relay.origins.relay_url.is_empty();
        let auth = super::auth::AuthState::new(url, configured, &relay.node_key.public_key());
        tokio::spawn(async move {
            match socket.await {
                Ok(socket) => connection::run(relay, socket, ip, auth, slot).await,
                Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
            }
        });
        return response.into_response();
    }
    let wants_info = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/nostr+json"));
    if wants_info {
        let body = nip11::document(&relay.config).to_string();
        let mut response = body.into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/nostr+json"),
        );
        cors(h);
        return response;
    }
    format!(
        "{} — a Nostr relay. Connect with a Nostr client over WebSocket.\n",
        relay.config.info.name
    )
    .into_response()
}

fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
}

async fn preflight(method: Method) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if method == Method::OPTIONS {
        cors(response.headers_mut());
    }
    response
}
