//! The HTTP APIs' test users and the calls tests make as them, shared by the
//! graph, echo, trust and admin suites: one token per user, hashed into the
//! config the way an operator writes it, and a JSON call over real HTTP.

use std::net::SocketAddr;

use echorelay::config::{Config, TokenConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::http_request;

pub const ALICE: &str = "alice-secret-token";
pub const BOB: &str = "bob-secret-token";
pub const CAROL: &str = "carol-secret-token";
pub const MALLORY: &str = "mallory-secret-token";

/// Replaces the config's tokens with `(user, token, expires_at)` entries
/// (`expires_at` 0: never; 1: long expired).
pub fn with_tokens(c: &mut Config, users: &[(&str, &str, u64)]) {
    c.auth.tokens = users
        .iter()
        .map(|(user, token, expires_at)| TokenConfig {
            user: user.to_string(),
            sha256: hex::encode(Sha256::digest(token.as_bytes())),
            expires_at: *expires_at,
        })
        .collect();
}

/// One user, alice, with the token [`ALICE`].
pub fn with_alice(c: &mut Config) {
    with_tokens(c, &[("alice", ALICE, 0)]);
}

/// alice, bob, carol and mallory, each with the token named after them.
pub fn with_users(c: &mut Config) {
    with_tokens(
        c,
        &[
            ("alice", ALICE, 0),
            ("bob", BOB, 0),
            ("carol", CAROL, 0),
            ("mallory", MALLORY, 0),
        ],
    );
}

/// A JSON call with `Authorization: Bearer <token>` (none without a token):
/// the status and the body as JSON (`Null` when it is not JSON).
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let (status, _, reply) = call_authorized(addr, method, path, auth.as_deref(), body).await;
    (status, reply)
}

/// A JSON call with any `Authorization` value (or none): the status, the
/// response head and the body as JSON (the raw text as a JSON string when
/// it is not JSON).
pub async fn call_authorized(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, String, Value) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = authorization {
        headers.push(("Authorization", auth));
    }
    let (status, head, body) = http_request(addr, method, path, &headers, body).await;
    let reply = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, head, reply)
}
