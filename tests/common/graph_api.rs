//! The graph API's calls shared by the tests/graph_*.rs files, and carol
//! with an expired token next to the users of `users.rs`.

use std::net::SocketAddr;

use echorelay::config::Config;
use serde_json::json;

use super::{call, with_tokens, ALICE, BOB};

pub const CAROL_EXPIRED: &str = "carol-expired-token";

/// alice and bob, and carol whose token has expired.
pub fn with_graph_users(c: &mut Config) {
    with_tokens(
        c,
        &[
            ("alice", ALICE, 0),
            ("bob", BOB, 0),
            ("carol", CAROL_EXPIRED, 1),
        ],
    );
}

pub async fn create_graph(addr: SocketAddr, token: &str, name: &str) -> String {
    let body = json!({"graph-name": name}).to_string();
    let (status, reply) = call(addr, "POST", "/graphs", Some(token), &body).await;
    assert_eq!(status, 200, "{reply}");
    reply["graph-id"].as_str().unwrap().to_string()
}
