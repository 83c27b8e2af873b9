//! Who is calling the HTTP APIs (graph sync, echo sync): a bearer token
//! (`Authorization: Bearer <token>` or `?token=`; tokens are kept as sha256
//! hashes with a user id, from `echorelay token add` or `[[auth.tokens]]`)
//! or NIP-98 HTTP auth (a signed kind-27235 event; the user id is its
//! pubkey). No valid credential is a 401.

mod nip98;
mod tokens;

use axum::http::{HeaderMap, Method};

use crate::store::Store;

pub use nip98::check as check_nip98;
pub use tokens::{hash_token, new_token, TokenUsers};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The token's user id, or the NIP-98 signer's hex pubkey.
    pub id: String,
}

/// Why a request is not authenticated (always answered 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing credentials")]
    Missing,
    #[error("invalid token")]
    BadToken,
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
        let pubkey = nip98::check(
            encoded.trim(),
            request.method.as_str(),
            request.path_and_query,
            configured.public_host(),
        )
        .map_err(AuthError::BadNip98)?;
        let allowed =
            crate::event::decode_hex::<32>(&pubkey).is_some_and(|k| configured.nip98_allowed(&k));
        if !allowed {
            return Err(AuthError::BadNip98("this key may not use the API".into()));
        }
        return Ok(User { id: pubkey });
    }
    let token = match header.and_then(|h| h.strip_prefix("Bearer ")) {
        Some(token) => token.trim(),
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
        Some((user, _)) => Ok(User { id: user }),
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
    };
    authenticate(store, configured, &request)
}

/// `token=...` from a query string.
pub fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}
