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
    call(addr, "POST", path, Some(ALICE), &body.to_string()).await
}

fn push_body(version: &str, data: Value) -> String {
    let checksum = hex::encode(Sha256::digest(data.to_string().as_bytes()));
    json!({"node_id": "sensor", "state": {"timestamp": "2026-12-01T00:00:00.000Z",
        "data": data, "metadata": {"version": version, "checksum": checksum, "resonance_level": 0.5}}})
    .to_string()
}

/// A push as alice that must succeed.
async fn push(addr: SocketAddr, version: &str, data: Value) -> Value {
    let (status, reply) = push_as(addr, ALICE, version, data).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

async fn push_as(addr: SocketAddr, token: &str, version: &str, data: Value) -> (u16, Value) {
    call(
        addr,
        "POST",
        "/echo/push",
        Some(token),
        &push_body(version, data),
    )
    .await
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

/// Ownership across a partition: alice claims "sensor" on a, mallory pushes
/// the same id on the partitioned b. After the heal the node is alice's on
/// both; when alice's next push replaces her first state on a, her claim
/// must still stand (it rides on every state, not on the one that made it),
/// so mallory can neither push nor read the node on either relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_claim_survives_a_partition_and_later_pushes() {
    let (a, b) = trusting_pair_with(with_users).await;
    push(a.addr, "1", json!({"by": "alice"})).await;
    let mallory = push_as(b.addr, MALLORY, "1", json!({"by": "mallory"})).await;
    assert_eq!(
        mallory.0, 200,
        "b has not heard of alice's node: {mallory:?}"
    );
    live_peer(&a, &b).await;
    live_peer(&b, &a).await;
    await_both(&a, &b, |c| c["data"]["by"] == "alice").await;

    push(a.addr, "2", json!({"by": "alice again"})).await;
    await_both(&a, &b, |c| c["metadata"]["version"] == "2").await;
    for node in [&a, &b] {
        let (status, reply) = push_as(node.addr, MALLORY, "3", json!({"by": "mallory"})).await;
        assert_eq!(status, 403, "{reply}");
        let (status, pulled) = call(
            node.addr,
            "POST",
            "/echo/pull",
            Some(MALLORY),
            &json!({"node_id": "sensor"}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{pulled}");
        assert_eq!(pulled["changes"], json!([]), "hidden from mallory");
        let shown = change(node.addr).await;
        assert_eq!(shown["data"]["by"], "alice again");
        assert!(shown.get("conflicts").is_none(), "{shown}");
    }
    a.stop().await;
    b.stop().await;
}
