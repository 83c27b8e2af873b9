//! The graph API's test users and calls, shared by the tests/graph_*.rs
//! files: bob, carol (expired) next to alice ([`super::ALICE`]).

use std::net::SocketAddr;

use echorelay::config::{Config, TokenConfig};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{http_request, ALICE};

pub const BOB: &str = "bob-secret-token";
pub const CAROL_EXPIRED: &str = "carol-expired-token";

pub fn with_users(c: &mut Config) {
    c.auth.tokens = [
        ("alice", ALICE, 0),
        ("bob", BOB, 0),
        ("carol", CAROL_EXPIRED, 1),
    ]
    .iter()
    .map(|(user, token, expires_at)| TokenConfig {
        user: user.to_string(),
        sha256: hex::encode(Sha256::digest(token.as_bytes())),
        expires_at: *expires_at,
    })
    .collect();
}

pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let (status, _, body) = http_request(addr, method, path, &headers, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

pub async fn create_graph(addr: SocketAddr, token: &str, name: &str) -> String {
    let body = json!({"graph-name": name}).to_string();
    let (status, reply) = call(addr, "POST", "/graphs", Some(token), &body).await;
    assert_eq!(status, 200, "{reply}");
    reply["graph-id"].as_str().unwrap().to_string()
}
