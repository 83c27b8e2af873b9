//! Echo sync over real HTTP: push / pull / status with every field of seed
//! 000, conflicts and force, bad input, and two mesh relays converging on a
//! node's state through the conflict-resolution flow.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use echorelay::config::Config;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const TOKEN: &str = "echo-token";
const OLD: &str = "expired-echo-token";

/// An edit that breaks a good request.
type Change = Box<dyn Fn(&mut Value)>;

fn with_token(c: &mut Config) {
    with_tokens(c, &[("echo", TOKEN, 0), ("echo", OLD, 1)]);
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    post_as(addr, path, Some(TOKEN), &body.to_string()).await
}

async fn post_as(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    call(addr, "POST", path, token, body).await
}

/// A push request whose checksum is computed here, independently.
fn push_body(node: &str, version: &str, data: Value, tags: &[&str]) -> Value {
    let checksum = hex::encode(Sha256::digest(data.to_string().as_bytes()));
    json!({
        "node_id": node,
        "state": {
            "timestamp": "2026-11-22T10:00:00.000Z",
            "data": data,
            "metadata": {"version": version, "checksum": checksum, "resonance_level": 0.75, "tags": tags},
        },
        "force": false,
        "options": {"priority": 7, "timeout": 30, "retry_count": 1, "batch_size": 10, "filter": "node-*"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_status_conflict_and_force() {
    let relay = TestRelay::start_with(with_token).await;
    let addr = relay.addr;
    let (status, reply) = post(
        addr,
        "/echo/push",
        &push_body("node-a", "1", json!({"b": 2, "a": [1, "x"]}), &["core"]),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], "success");
    assert!(reply["message"].is_string());
    assert_eq!(reply["sync_id"].as_str().unwrap().len(), 36);
    assert_eq!(reply["conflicts"], json!([]));
    assert!(reply["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(reply["metrics"]["duration_ms"].is_u64());
    assert_eq!(
        reply["metrics"]["data_size"],
        r#"{"a":[1,"x"],"b":2}"#.len()
    );
    assert_eq!(reply["metrics"]["resonance_strength"], 0.75);

    // The same version again: a conflict naming the fields that differ.
    let (status, reply) = post(
        addr,
        "/echo/push",
        &push_body("node-a", "1", json!({"a": [1, "x"], "b": 3}), &[]),
    )
    .await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["status"], "conflict");
    let fields: Vec<&str> = reply["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["metadata.version", "data.b"]);
    assert_eq!(reply["conflicts"][1]["remote_value"], 2);
    // Older versions conflict too; force overrides.
    let mut forced = push_body("node-a", "0.9", json!({"forced": true}), &[]);
    assert_eq!(post(addr, "/echo/push", &forced).await.0, 409);
    forced["force"] = json!(true);
    assert_eq!(
        post(addr, "/echo/push", &forced).await.1["status"],
        "success"
    );
    let (status, _) = post(
        addr,
        "/echo/push",
        &push_body("node-b", "1.2.10", json!({"k": "v"}), &["edge"]),
    )
    .await;
    assert_eq!(status, 200);

    // Pull: every node's current state in the seed's shape, oldest first.
    let (status, pulled) = post(addr, "/echo/pull", &json!({})).await;
    assert_eq!(status, 200, "{pulled}");
    assert_eq!(pulled["status"], "success");
    let changes = pulled["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["node_id"], "node-a");
    assert_eq!(changes[0]["data"], json!({"forced": true}));
    assert_eq!(changes[0]["metadata"]["version"], "0.9");
    assert_eq!(changes[0]["metadata"]["resonance_level"], 0.75);
    assert_eq!(changes[0]["timestamp"], "2026-11-22T10:00:00.000Z");
    assert_eq!(changes[1]["metadata"]["tags"], json!(["edge"]));
    assert_eq!(pulled["metrics"]["change_count"], 2);
    assert!(pulled["metrics"]["data_size"].as_u64().unwrap() > 0);
    assert!(pulled["sync_id"].is_string() && pulled["timestamp"].is_string());
    // Filters, last_sync and paging.
    let only_edge = json!({"options": {"filter": {"types": ["edge"]}}});
    assert_eq!(
        post(addr, "/echo/pull", &only_edge).await.1["changes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let high = json!({"options": {"filter": {"priority": 8}}});
    assert_eq!(
        post(addr, "/echo/pull", &high).await.1["changes"],
        json!([])
    );
    let one = json!({"node_id": "node-b"});
    assert_eq!(
        post(addr, "/echo/pull", &one).await.1["changes"][0]["node_id"],
        "node-b"
    );
    let future = json!({"last_sync": "2999-01-01T00:00:00Z"});
    assert_eq!(
        post(addr, "/echo/pull", &future).await.1["changes"],
        json!([])
    );
    let page = post(addr, "/echo/pull", &json!({"options": {"batch_size": 1}}))
        .await
        .1;
    assert_eq!(
        (
            page["changes"].as_array().unwrap().len(),
            page["has_more"].clone()
        ),
        (1, json!(true))
    );
    let rest = post(
        addr,
        "/echo/pull",
        &json!({"options": {"batch_size": 1}, "cursor": page["cursor"]}),
    )
    .await
    .1;
    assert_eq!(rest["changes"][0]["node_id"], "node-b");
    assert_eq!(rest["has_more"], false);

    // Status: idle after the operations, with 24 h metrics.
    let (status, state) = post(addr, "/echo/status", &json!({"node_id": "node-a"})).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["status"], "idle");
    assert_eq!(state["current_operation"], Value::Null);
    assert_eq!(state["metrics"]["sync_count_24h"], 4);
    assert_eq!(state["metrics"]["error_rate"], 0.5);
    assert!(state["metrics"]["last_successful_sync"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(state["metrics"]["average_duration_ms"].is_u64());
    let (status, unknown) = post(addr, "/echo/status", &json!({"node_id": "nobody"})).await;
    assert_eq!((status, unknown["status"].clone()), (404, json!("error")));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_echo_input_is_refused_clearly() {
    let relay = TestRelay::start_with(with_token).await;
    let addr = relay.addr;
    let good = push_body("n", "1", json!({"x": 1}), &[]);
    assert_eq!(
        post_as(addr, "/echo/push", None, &good.to_string()).await.0,
        401
    );
    assert_eq!(
        post_as(addr, "/echo/push", Some(OLD), &good.to_string())
            .await
            .0,
        401
    );
    assert_eq!(post_as(addr, "/echo/pull", Some("nope"), "{}").await.0, 401);
    let cases: Vec<(&str, Change)> = vec![
        (
            "missing node_id",
            Box::new(|b| {
                b.as_object_mut().unwrap().remove("node_id");
            }),
        ),
        (
            "node_id not a string",
            Box::new(|b| b["node_id"] = json!(5)),
        ),
        (
            "missing state",
            Box::new(|b| {
                b.as_object_mut().unwrap().remove("state");
            }),
        ),
        (
            "data not an object",
            Box::new(|b| b["state"]["data"] = json!([1])),
        ),
        (
            "bad timestamp",
            Box::new(|b| b["state"]["timestamp"] = json!("yesterday")),
        ),
        (
            "version missing",
            Box::new(|b| {
                b["state"]["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("version");
            }),
        ),
        (
            "priority 11",
            Box::new(|b| b["options"]["priority"] = json!(11)),
        ),
        (
            "resonance 1.5",
            Box::new(|b| b["state"]["metadata"]["resonance_level"] = json!(1.5)),
        ),
        (
            "resonance a string",
            Box::new(|b| b["state"]["metadata"]["resonance_level"] = json!("high")),
        ),
        (
            "checksum mismatch",
            Box::new(|b| b["state"]["metadata"]["checksum"] = json!("00".repeat(32))),
        ),
        ("force not a bool", Box::new(|b| b["force"] = json!("yes"))),
    ];
    for (name, change) in cases {
        let mut body = good.clone();
        change(&mut body);
        let (status, reply) = post(addr, "/echo/push", &body).await;
        assert_eq!(status, 400, "{name}: {reply}");
        assert_eq!(reply["status"], "error", "{name}");
        assert!(reply["message"].as_str().unwrap().len() > 5, "{name}");
    }
    for body in ["", "[]", "{not json"] {
        assert_eq!(
            post_as(addr, "/echo/push", Some(TOKEN), body).await.0,
            400,
            "{body:?}"
        );
    }
    // A 10 MB data blob: 413.
    let blob = "x".repeat(10 * 1024 * 1024);
    let (status, reply) = post(
        addr,
        "/echo/push",
        &push_body("n", "1", json!({"blob": blob}), &[]),
    )
    .await;
    assert_eq!((status, reply["status"].clone()), (413, json!("error")));
    for bad in [
        json!({"last_sync": "soon"}),
        json!({"options": {"batch_size": 0}}),
        json!({"options": {"filter": {"priority": 11}}}),
        json!({"cursor": "x"}),
    ] {
        assert_eq!(post(addr, "/echo/pull", &bad).await.0, 400, "{bad}");
    }
    assert_eq!(post(addr, "/echo/status", &json!({})).await.0, 400);
    relay.stop().await;
}

/// The seed's conflict diagram across two mesh relays: node A pushes on
/// relay 1; node B, on relay 2, pushes a stale version and gets a conflict,
/// pulls the server state, resolves and pushes; relay 1 then has the
/// resolution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_resolution_reaches_the_other_relay() {
    let r1 = TestRelay::start_with(with_token).await;
    let r2 = TestRelay::start_with(with_token).await;
    for (from, to, key) in [(&r1, &r2, r2.node_pubkey()), (&r2, &r1, r1.node_pubkey())] {
        let body = json!({"peer_url": to.url, "pubkey": key, "interval_secs": 1, "live": true});
        from.admin().call("AddPeer", &body).await.unwrap();
    }
    assert_eq!(
        post(
            r1.addr,
            "/echo/push",
            &push_body("shared", "1", json!({"mood": "calm"}), &[])
        )
        .await
        .0,
        200
    );
    let at_r2 = r2.addr;
    eventually(
        "the state to reach relay 2",
        Duration::from_secs(30),
        || async move {
            let pulled = post(at_r2, "/echo/pull", &json!({"node_id": "shared"}))
                .await
                .1;
            pulled["changes"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
                .then_some(())
        },
    )
    .await;
    let (status, reply) = post(
        r2.addr,
        "/echo/push",
        &push_body("shared", "1", json!({"mood": "busy"}), &[]),
    )
    .await;
    assert_eq!((status, reply["status"].clone()), (409, json!("conflict")));
    let server = post(r2.addr, "/echo/pull", &json!({"node_id": "shared"}))
        .await
        .1;
    let theirs = &server["changes"][0];
    let resolved =
        json!({"mood": format!("{} and busy", theirs["data"]["mood"].as_str().unwrap())});
    let next = format!(
        "{}",
        theirs["metadata"]["version"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            + 1
    );
    assert_eq!(
        post(
            r2.addr,
            "/echo/push",
            &push_body("shared", &next, resolved.clone(), &[])
        )
        .await
        .1["status"],
        "success"
    );
    let (at_r1, resolved) = (r1.addr, &resolved);
    let pulled = eventually(
        "the resolution to reach relay 1",
        Duration::from_secs(30),
        || async move {
            let pulled = post(at_r1, "/echo/pull", &json!({"node_id": "shared"}))
                .await
                .1;
            (pulled["changes"][0]["data"] == *resolved).then_some(pulled)
        },
    )
    .await;
    assert_eq!(pulled["changes"][0]["metadata"]["version"], "2");
    r1.stop().await;
    r2.stop().await;
}
