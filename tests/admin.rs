//! The control API over real HTTP: bearer auth, bad requests, every method
//! of seed 003 against a relay with real peers and real NIP-77 sessions.

mod common;

use common::*;
use echorelay::admin::client::AdminClientError;
use echorelay::event::{now, Keys};
use serde_json::{json, Value};

const BEARER: &str = "Bearer test-admin-token";

async fn post(relay: &TestRelay, method: &str, body: &str) -> (u16, Value) {
    let path = format!("/api/v1/{method}");
    let headers = [
        ("Authorization", BEARER),
        ("Content-Type", "application/json"),
    ];
    let (status, _, body) = http_request(relay.admin_addr, "POST", &path, &headers, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Waits (by asking again) until `check` holds for the peer's state.
async fn wait_for_state(relay: &TestRelay, url: &str, check: impl Fn(&Value) -> bool) -> Value {
    let admin = relay.admin();
    let (admin, check) = (&admin, &check);
    eventually("the peer state to match", WAIT, || async move {
        let reply = admin
            .call("GetPeerSyncState", &json!({ "peer_url": url }))
            .await
            .unwrap();
        check(&reply).then_some(reply)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_bad_requests_are_refused_clearly() {
    let relay = TestRelay::start().await;
    let addr = relay.admin_addr;
    let (status, head, body) = http_request(addr, "POST", "/api/v1/Ready", &[], "").await;
    assert_eq!(status, 401, "{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(body.contains("admin token"), "{body}");
    let wrong = [("Authorization", "Bearer nope")];
    assert_eq!(
        http_request(addr, "POST", "/api/v1/Ready", &wrong, "")
            .await
            .0,
        401
    );
    let basic = [("Authorization", "Basic dGVzdA==")];
    assert_eq!(
        http_request(addr, "GET", "/api/v1/GetPeers", &basic, "")
            .await
            .0,
        401
    );
    // Unknown paths do not tell strangers what exists.
    assert_eq!(http_request(addr, "GET", "/secret", &[], "").await.0, 401);

    let (status, reply) = post(&relay, "Ready", "").await;
    assert_eq!((status, reply), (200, json!({"ready": true})));
    let ok = [("Authorization", BEARER)];
    let (status, _, body) = http_request(addr, "GET", "/api/v1/GetSyncStatus", &ok, "").await;
    assert_eq!(status, 200, "{body}");
    let (status, reply) = post(&relay, "NoSuchMethod", "{}").await;
    assert_eq!(status, 404);
    assert!(reply["error"]
        .as_str()
        .unwrap()
        .contains("unknown endpoint"));
    assert_eq!(
        http_request(addr, "GET", "/elsewhere", &ok, "").await.0,
        404
    );
    assert_eq!(
        http_request(addr, "GET", "/api/v1/AddPeer", &ok, "")
            .await
            .0,
        405
    );

    for bad in [
        "{",
        "[1,2]",
        "\"text\"",
        "{\"peer_url\": 5}",
        "{\"peer_url\": \"http://x\"}",
    ] {
        let (status, reply) = post(&relay, "AddPeer", bad).await;
        assert_eq!(status, 400, "{bad} -> {reply}");
        assert!(reply["error"].is_string(), "{reply}");
    }
    let huge = r#"{"peer_url":"ws://x:1","interval_secs":18446744073709551615}"#;
    assert_eq!(post(&relay, "AddPeer", huge).await.0, 400);
    let (status, reply) = post(
        &relay,
        "AddPeer",
        r#"{"peer_url":"ws://x:1","filter":{"kinds":"1"}}"#,
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    let (status, _) = post(&relay, "RemovePeer", r#"{"peer_url":"ws://127.0.0.1:1"}"#).await;
    assert_eq!(status, 404);
    let (status, _) = post(&relay, "TriggerSync", r#"{"peer_url":"ws://127.0.0.1:1"}"#).await;
    assert_eq!(status, 404);
    let (status, _) = post(&relay, "CloseSession", "{}").await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &relay,
        "SyncWithPeer",
        r#"{"since": -1, "peer_url": "ws://a:1"}"#,
    )
    .await;
    assert_eq!(status, 400);

    let wait = std::time::Duration::from_secs(30);
    let err = echorelay::admin::client::AdminClient::new(&format!("http://{addr}"), "nope", wait)
        .unwrap()
        .call("Ready", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, AdminClientError::Status(401, _)), "{err}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_status_trigger_and_sync_with_peer() {
    let a = TestRelay::start().await;
    let b = TestRelay::start().await;
    let keys = Keys::generate();
    let mut cb = b.client().await;
    let events: Vec<_> = (0..25)
        .map(|i| event_at(&keys, 1, now() - 100 + i, vec![], &format!("b{i}")))
        .collect();
    for e in &events[..10] {
        cb.publish_ok(e).await;
    }
    let admin = a.admin();

    let mut status = admin.call("GetSyncStatus", &json!({})).await.unwrap();
    let node_pubkey = status["node_pubkey"].take();
    assert_eq!(node_pubkey.as_str().map(str::len), Some(64), "{status}");
    assert_eq!(
        status,
        json!({"active": true, "last_sync": 0, "peer_count": 0, "peer_states": [], "node_pubkey": null})
    );
    admin
        .call(
            "AddPeer",
            &json!({"peer_url": b.url, "dir": "down", "interval_secs": 3600}),
        )
        .await
        .unwrap();
    let err = admin
        .call("AddPeer", &json!({"peer_url": b.url}))
        .await
        .unwrap_err();
    assert!(matches!(err, AdminClientError::Status(409, _)), "{err}");
    let peers = admin.call("GetPeers", &json!({})).await.unwrap();
    assert_eq!(peers["peers"], json!([b.url]));
    assert_eq!(peers["peer_configs"][0]["dir"], "down");

    // The first run starts at once; its state shows up with the seed's fields.
    let state = wait_for_state(&a, &b.url, |r| r["state"]["last_sync"].as_u64() > Some(0)).await;
    assert_eq!(state["found"], true);
    assert_eq!(state["state"]["events_synced"], 10);
    assert_eq!(state["state"]["status"], "idle");
    assert_eq!(state["state"]["consecutive_failures"], 0);
    let missing = admin
        .call("GetPeerSyncState", &json!({"peer_url": "ws://127.0.0.1:9"}))
        .await
        .unwrap();
    assert_eq!(missing, json!({"found": false}));

    // TriggerSync with a filter: only kind 1 from the author, now.
    for e in &events[10..15] {
        cb.publish_ok(e).await;
    }
    let author = hex::encode(keys.public_key());
    admin
        .call(
            "TriggerSync",
            &json!({"peer_url": b.url, "filter": {"authors": [author]}}),
        )
        .await
        .unwrap();
    wait_for_state(&a, &b.url, |r| r["state"]["events_synced"] == 15).await;

    // Stop pauses background runs; Start resumes them.
    admin.call("Stop", &json!({})).await.unwrap();
    assert_eq!(
        admin.call("GetSyncStatus", &json!({})).await.unwrap()["active"],
        false
    );
    admin.call("Start", &json!({})).await.unwrap();
    let status = admin.call("GetSyncStatus", &json!({})).await.unwrap();
    assert_eq!(status["active"], true);
    assert_eq!(status["peer_count"], 1);
    assert!(status["last_sync"].as_u64().unwrap() > 0);

    // SyncWithPeer streams progress records to a final complete one.
    for e in &events[15..] {
        cb.publish_ok(e).await;
    }
    let mut records = Vec::new();
    admin
        .stream("SyncWithPeer", &json!({"peer_url": b.url}), |r| {
            records.push(r.clone())
        })
        .await
        .unwrap();
    let last = records.last().unwrap();
    assert_eq!(last["complete"], true, "{records:?}");
    assert_eq!(last["peer_url"], b.url);
    assert_eq!(
        (last["need_count"].as_u64(), last["fetched_count"].as_u64()),
        (Some(10), Some(10))
    );
    assert!(records.iter().all(|r| r.get("round").is_some()));
    assert_eq!(
        a.client()
            .await
            .req_ids(&[json!({"limit": 100})])
            .await
            .len(),
        25
    );

    // An unreachable peer: the stream ends with the error.
    let mut records = Vec::new();
    admin
        .stream(
            "SyncWithPeer",
            &json!({"peer_url": "ws://127.0.0.1:1"}),
            |r| records.push(r.clone()),
        )
        .await
        .unwrap();
    let last = records.last().unwrap();
    assert_eq!(last["complete"], false);
    assert!(
        last["error"].as_str().unwrap().contains("cannot connect"),
        "{last}"
    );

    admin
        .call("RemovePeer", &json!({"peer_url": b.url}))
        .await
        .unwrap();
    assert_eq!(
        admin.call("GetPeers", &json!({})).await.unwrap()["peers"],
        json!([])
    );
    b.stop().await;
    a.stop().await;
}

/// A peer that accepts TCP and never answers: its sync hangs in the
/// handshake until removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_peer_during_its_sync() {
    let relay = TestRelay::start().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", silent.local_addr().unwrap());
    let admin = relay.admin();
    admin
        .call("AddPeer", &json!({"peer_url": url}))
        .await
        .unwrap();
    let (_held, _) = silent.accept().await.unwrap();
    wait_for_state(&relay, &url, |r| r["state"]["status"] == "syncing").await;
    admin
        .call("RemovePeer", &json!({"peer_url": url}))
        .await
        .unwrap();
    let reply = admin
        .call("GetPeerSyncState", &json!({"peer_url": url}))
        .await
        .unwrap();
    assert_eq!(reply["found"], false);
    assert_eq!(
        admin.call("GetSyncStatus", &json!({})).await.unwrap()["peer_count"],
        0
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_close_negentropy_sessions() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    c.publish_ok(&note(&keys, "one")).await;
    let admin = relay.admin();
    assert_eq!(
        admin.call("ListSessions", &json!({})).await.unwrap(),
        json!({"sessions": []})
    );
    let reply = c.ask(json!(["NEG-OPEN", "neg-1", {}, "6100000200"])).await;
    assert_eq!(reply[0], "NEG-MSG", "{reply}");
    let sessions = admin.call("ListSessions", &json!({})).await.unwrap()["sessions"].clone();
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    let session = &sessions[0];
    assert_eq!(session["subscription_id"], "neg-1");
    assert_eq!(session["round_count"], 1);
    assert!(session["created_at"].as_u64().unwrap() >= now() - 5);
    assert!(session["last_activity"].as_u64().unwrap() >= session["created_at"].as_u64().unwrap());
    let connection = session["connection_id"].as_str().unwrap().to_string();

    let err = admin
        .call(
            "CloseSession",
            &json!({"subscription_id": "neg-1", "connection_id": "999999"}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AdminClientError::Status(404, _)), "{err}");
    let closed = admin
        .call(
            "CloseSession",
            &json!({"subscription_id": "neg-1", "connection_id": connection}),
        )
        .await
        .unwrap();
    assert_eq!(closed["closed"], 1);
    let notice = c.recv().await;
    assert_eq!(notice[0], "NEG-ERR");
    assert_eq!(notice[1], "neg-1");
    assert!(
        notice[2].as_str().unwrap().starts_with("closed:"),
        "{notice}"
    );
    assert_eq!(
        admin.call("ListSessions", &json!({})).await.unwrap(),
        json!({"sessions": []})
    );
    // The session is gone on the relay too.
    let reply = c.ask(json!(["NEG-MSG", "neg-1", "6100000200"])).await;
    assert_eq!(reply[0], "NEG-ERR");
    relay.stop().await;
}
