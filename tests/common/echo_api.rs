//! Echo API calls the echo tests share: a push body whose checksum is
//! computed here, independently of the relay, and a push that must succeed.

use std::net::SocketAddr;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::users::call;

/// A push of `data` to `node` at `version`.
pub fn echo_push_body(node: &str, version: &str, data: Value) -> Value {
    let checksum = hex::encode(Sha256::digest(data.to_string().as_bytes()));
    json!({
        "node_id": node,
        "state": {
            "timestamp": "2026-12-02T10:00:00.000Z",
            "data": data,
            "metadata": {"version": version, "checksum": checksum, "resonance_level": 0.5},
        },
    })
}

/// Pushes `{"v": version}` to `node` as the holder of `token`; the reply.
pub async fn echo_push(addr: SocketAddr, token: &str, node: &str, version: &str) -> Value {
    let body = echo_push_body(node, version, json!({ "v": version }));
    let (status, reply) = call(addr, "POST", "/echo/push", Some(token), &body.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    reply
}
