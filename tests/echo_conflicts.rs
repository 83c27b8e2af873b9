//! Echo conflicts across mesh nodes (SPEC §5), over real HTTP: the same node
//! id pushed on two partitioned nodes; after the heal both nodes name the
//! same winner and list the same conflict (pull, status, `echorelay
//! echo-sync`), and a push on top of the winner clears it on both.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {ALICE}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, _, reply) = http_request(addr, "POST", path, &headers, &body.to_string()).await;
    (status, serde_json::from_str(&reply).unwrap_or(Value::Null))
}

async fn push(addr: SocketAddr, version: &str, data: Value) -> Value {
    let checksum = hex::encode(Sha256::digest(data.to_string().as_bytes()));
    let body = json!({"node_id": "sensor", "state": {"timestamp": "2026-12-01T00:00:00.000Z",
        "data": data, "metadata": {"version": version, "checksum": checksum, "resonance_level": 0.5}}});
    let (status, reply) = post(addr, "/echo/push", &body).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

/// The node's change as `addr` serves it.
async fn change(addr: SocketAddr) -> Value {
    let (status, pulled) = post(addr, "/echo/pull", &json!({"node_id": "sensor"})).await;
    assert_eq!(status, 200, "{pulled}");
    pulled["changes"][0].clone()
}

/// Waits until both nodes serve a change that satisfies `done`, and the same one.
async fn await_both(a: &TestRelay, b: &TestRelay, done: impl Fn(&Value) -> bool) -> Value {
    let done = &done;
    eventually(
        "both nodes to serve the same change",
        Duration::from_secs(30),
        || async move {
            let (on_a, on_b) = (change(a.addr).await, change(b.addr).await);
            (done(&on_a) && on_a == on_b).then_some(on_a)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_is_shown_on_every_node_until_resolved() {
    let (a, b) = trusting_pair().await;
    live_peer(&a, &b).await;
    live_peer(&b, &a).await;
    push(a.addr, "1", json!({"mood": "calm"})).await;
    await_both(&a, &b, |c| c["metadata"]["version"] == "1").await;

    cut_peer(&a, &b).await;
    cut_peer(&b, &a).await;
    push(a.addr, "2", json!({"mood": "from a"})).await;
    push(b.addr, "2", json!({"mood": "from b"})).await;
    live_peer(&a, &b).await;
    live_peer(&b, &a).await;

    // Same winner everywhere, the other state kept and shown.
    let shown = await_both(&a, &b, |c| c["conflicts"].is_array()).await;
    let conflict = &shown["conflicts"][0];
    assert_eq!(shown["conflicts"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(conflict["version"], "2");
    assert_ne!(conflict["origin"], conflict["winner_origin"]);
    let winner_mood = shown["data"]["mood"].clone();
    let loser_mood = if winner_mood == "from a" {
        "from b"
    } else {
        "from a"
    };
    assert_eq!(
        conflict["fields"],
        json!([
            {"field": "metadata.version", "local_value": "2", "remote_value": "2"},
            {"field": "data.mood", "local_value": winner_mood, "remote_value": loser_mood},
        ])
    );
    for node in [&a, &b] {
        let (status, listed) = post(node.addr, "/echo/status", &json!({"node_id": "sensor"})).await;
        assert_eq!(status, 200);
        assert_eq!(
            listed["conflicts"], shown["conflicts"],
            "status on every node"
        );
    }
    // The CLI shows it too.
    let mut command = std::process::Command::new(BIN);
    command
        .args(["echo-sync", "--node-id", "sensor"])
        .env("ECHO_API_URL", format!("http://{}", b.addr))
        .env("ECHO_TOKEN", ALICE);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("sensor  conflict: version 2 from node"),
        "{printed}"
    );

    // Resolve: a push on top of the winner, on either node, clears it on both.
    push(b.addr, "3", json!({"mood": "merged"})).await;
    let resolved = await_both(&a, &b, |c| c["metadata"]["version"] == "3").await;
    assert!(resolved.get("conflicts").is_none(), "{resolved}");
    assert_eq!(resolved["data"]["mood"], "merged");
    a.stop().await;
    b.stop().await;
}
