//! Who is calling the HTTP APIs (graph sync, echo sync): a bearer token
//! (`Authorization: Bearer <token>`, or `?token=` on a request without an
//! Authorization header, as seed 002's clients and browsers' `<img>` and
//! WebSocket need; tokens are kept as sha256
//! hashes with a user id, from `echorelay token add` or `[[auth.tokens]]`)
//! or NIP-98 HTTP auth (a signed kind-27235 event; the user id is its
//! pubkey). No valid credential is a 401.

mod nip98;
mod payload;
mod tokens;

use axum::http::{HeaderMap, Method};

use crate::store::Store;

pub use nip98::{
    check as check_nip98, decode as decode_nip98, header as nip98_header, payload as nip98_payload,
    Replays,
};
pub use payload::{bind_body, PayloadMismatch};
pub use tokens::{hash_token, new_token, TokenUsers};

/// Why a node's NIP-98 event is refused when it is not bound to this node.
const UNBOUND_NODE_PROOF: &str =
    "a node's event must name this node's key in a p tag (or set server.relay_url)";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The token's user id, or the NIP-98 signer's hex pubkey.
    pub id: String,
    /// Signed in with NIP-98 by a mesh node's key: acts for any user. (A
    /// token's user id that happens to spell a node key is not one.)
    pub mesh_node: bool,
}

/// Why a request is not authenticated (always answered 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing credentials")]
    Missing,
    #[error("invalid token")]
    BadToken,
    #[error("the Authorization header must be Bearer or Nostr (NIP-98)")]
    Scheme,
    #[error("expired token")]
    Expired,
    #[error("invalid NIP-98 authorization: {0}")]
    BadNip98(String),
    #[error("cannot check credentials: {0}")]
    Store(String),
}

/// The request facts credentials are checked against.
pub struct RequestInfo<'a> {
    pub method: &'a Method,
    /// Path and query as received, e.g. `/graphs?x=1`.
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    /// `?token=` from the query string, if any.
    pub query_token: Option<&'a str>,
    /// The host the request was sent to (`Host`, or `X-Forwarded-Host`
    /// from a trusted proxy); NIP-98 events must name it when no public URL
    /// is configured.
    pub host: Option<&'a str>,
}

/// Checks the request's credentials.
pub fn authenticate(
    store: &Store,
    configured: &TokenUsers,
    request: &RequestInfo,
) -> Result<User, AuthError> {
    let header = request
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if let Some(encoded) = header.and_then(|h| h.strip_prefix("Nostr ")) {
        let host = configured
            .public_host()
            .or(request.host)
            .ok_or_else(|| AuthError::BadNip98("the request names no host".into()))?;
        // The key is checked before the signature: a stranger's header
        // costs no Schnorr verification.
        let claimed = nip98::decode(encoded.trim()).map_err(AuthError::BadNip98)?;
        if !configured.nip98_allowed(&claimed.pubkey) {
            return Err(AuthError::BadNip98("this key may not use the API".into()));
        }
        let event = nip98::check_event(
            claimed,
            request.method.as_str(),
            request.path_and_query,
            host,
        )
        .map_err(AuthError::BadNip98)?;
        // A node acts for every user, so its proof must be made for this
        // node; a key that is also a listed user is that user otherwise.
        let mesh_node = configured.is_mesh_key(&event.pubkey) && configured.bound_to_node(&event);
        if !mesh_node && !configured.nip98_user(&event.pubkey) {
            return Err(AuthError::BadNip98(UNBOUND_NODE_PROOF.into()));
        }
        configured
            .replays
            .first_use(&event)
            .map_err(AuthError::BadNip98)?;
        return Ok(User {
            id: hex::encode(event.pubkey),
            mesh_node,
        });
    }
    // `?token=` only when the request has no Authorization header: a header
    // is never overridden or completed by the URL.
    let token = match header {
        Some(h) => h.strip_prefix("Bearer ").ok_or(AuthError::Scheme)?.trim(),
        None => request.query_token.ok_or(AuthError::Missing)?,
    };
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    let hash = hash_token(token);
    let found = match configured.user_of(&hash) {
        Some(found) => Some(found),
        None => store
            .token_user(&hash)
            .map_err(|e| AuthError::Store(e.to_string()))?,
    };
    match found {
        Some((_, expires_at)) if expires_at != 0 && expires_at <= crate::event::now() => {
            Err(AuthError::Expired)
        }
        Some((user, _)) => Ok(User {
            id: user,
            mesh_node: false,
        }),
        None => Err(AuthError::BadToken),
    }
}

/// Checks the credentials of a request's head.
pub fn authenticate_parts(
    store: &Store,
    configured: &TokenUsers,
    parts: &axum::http::request::Parts,
) -> Result<User, AuthError> {
    let uri = &parts.uri;
    let request = RequestInfo {
        method: &parts.method,
        path_and_query: uri.path_and_query().map_or(uri.path(), |p| p.as_str()),
        headers: &parts.headers,
        query_token: query_token(uri.query()),
        host: request_host(configured, parts),
    };
    authenticate(store, configured, &request)
}

/// The host a request was sent to: `X-Forwarded-Host` when a trusted proxy
/// forwarded it, else `Host` (or the authority of an absolute URI).
fn request_host<'a>(
    configured: &TokenUsers,
    parts: &'a axum::http::request::Parts,
) -> Option<&'a str> {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    peer.and_then(|ip| {
        configured
            .proxies()
            .forwarded(&parts.headers, ip, "x-forwarded-host")
    })
    .or_else(|| parts.headers.get("host").and_then(|v| v.to_str().ok()))
    .or_else(|| parts.uri.authority().map(|a| a.as_str()))
}

/// `token=...` from a query string.
pub fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}
