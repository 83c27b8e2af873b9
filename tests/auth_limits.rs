//! NIP-42 authentication, restricted kinds, and the per-connection and
//! per-IP limits (subscriptions, rate limits, connections, slow readers).

mod common;

use common::*;
use echorelay::event::{now, Keys};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_kinds_only_reach_their_parties() {
    let relay = TestRelay::start().await;
    let alice = Keys::generate();
    let bob = Keys::generate();
    let eve = Keys::generate();
    let bob_hex = hex::encode(bob.public_key());
    let dm = event_at(&alice, 4, now(), vec![vec!["p", &bob_hex]], "secret");
    let public = note(&alice, "public");
    let mut writer = relay.client().await;
    writer.publish_ok(&dm).await;
    writer.publish_ok(&public).await;

    // Unauthenticated: asking for kind 4 is refused; a broad filter hides it.
    let mut anon = relay.client().await;
    let reply = anon.ask(json!(["REQ", "dm", {"kinds": [4]}])).await;
    assert_eq!(reply[0], "CLOSED");
    assert!(reply[2].as_str().unwrap().starts_with("auth-required:"));
    assert_eq!(anon.req_ids(&[json!({})]).await, vec![id_of(&public)]);

    // A stranger authenticated as Eve still cannot see it.
    let mut stranger = relay.client().await;
    assert_eq!(stranger.auth(&eve).await[2], true);
    assert!(stranger.req_ids(&[json!({"kinds": [4]})]).await.is_empty());

    // Bob (tagged) and Alice (author) can, stored and live.
    let mut b = relay.client().await;
    let ok = b.auth(&bob).await;
    assert_eq!(ok[0], "OK");
    assert_eq!(ok[2], true, "{ok}");
    let stored = b.req("dm", &[json!({"kinds": [4]})]).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], id_of(&dm));
    let dm2 = event_at(&alice, 4, now(), vec![vec!["p", &bob_hex]], "second");
    writer.publish_ok(&dm2).await;
    assert_eq!(b.recv().await[2]["id"], id_of(&dm2));
    let mut a = relay.client().await;
    a.auth(&alice).await;
    assert_eq!(a.req_ids(&[json!({"kinds": [4]})]).await.len(), 2);
    // The stranger's broad live subscription never saw them.
    assert!(stranger.req_ids(&[json!({"kinds": [4]})]).await.is_empty());

    // An auth event published as EVENT is refused, never relayed.
    let challenge = b.challenge.clone().unwrap();
    let leaked = bob.sign(
        now(),
        22242,
        vec![vec!["challenge".into(), challenge]],
        String::new(),
    );
    let reply = writer.publish(&leaked).await;
    assert_eq!(reply[2], false, "{reply}");
    assert!(reply[3].as_str().unwrap().starts_with("invalid:"));

    // A bad AUTH (wrong challenge) is refused.
    let mut c = relay.client().await;
    c.challenge = Some("wrong".into());
    let reply = c.auth(&eve).await;
    assert_eq!(reply[2], false);
    assert!(reply[3].as_str().unwrap().starts_with("invalid:"));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_required_for_write_and_read() {
    let relay = TestRelay::start_with(|c| {
        c.auth.require_for_write = true;
        c.auth.require_for_read = true;
    })
    .await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    let ev = note(&keys, "hello");
    let reply = c.publish(&ev).await;
    assert_eq!(reply[2], false);
    assert!(reply[3].as_str().unwrap().starts_with("auth-required:"));
    let reply = c.ask(json!(["REQ", "r", {}])).await;
    assert_eq!(reply[0], "CLOSED");
    assert!(reply[2].as_str().unwrap().starts_with("auth-required:"));
    c.auth(&keys).await;
    c.publish_ok(&ev).await;
    assert_eq!(c.req_ids(&[json!({})]).await, vec![id_of(&ev)]);
    let (_, _, body) = http_get(relay.addr, "/", &[("Accept", "application/nostr+json")]).await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["limitation"]["auth_required"], true);
    assert_eq!(doc["limitation"]["restricted_writes"], true);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_policy_lists_and_limits() {
    let allowed = Keys::generate();
    let other = Keys::generate();
    let allowed_hex = hex::encode(allowed.public_key());
    let relay = TestRelay::start_with(move |c| {
        c.policy.pubkey_allow = vec![allowed_hex];
        c.policy.kind_deny = vec![7];
        c.policy.max_tags = 3;
        c.policy.max_past_seconds = 3600;
    })
    .await;
    let mut c = relay.client().await;
    let reply = c.publish(&note(&other, "nope")).await;
    assert!(
        reply[3].as_str().unwrap().starts_with("blocked:"),
        "{reply}"
    );
    let reply = c.publish(&event_at(&allowed, 7, now(), vec![], "+")).await;
    assert!(
        reply[3].as_str().unwrap().starts_with("blocked:"),
        "{reply}"
    );
    let tags = vec![
        vec!["t", "a"],
        vec!["t", "b"],
        vec!["t", "c"],
        vec!["t", "d"],
    ];
    let reply = c.publish(&event_at(&allowed, 1, now(), tags, "")).await;
    assert!(
        reply[3]
            .as_str()
            .unwrap()
            .starts_with("invalid: too many tags"),
        "{reply}"
    );
    let reply = c
        .publish(&event_at(&allowed, 1, now() - 7200, vec![], "old"))
        .await;
    assert!(reply[3].as_str().unwrap().contains("past"), "{reply}");
    c.publish_ok(&note(&allowed, "fine")).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_and_rate_limits() {
    let relay = TestRelay::start_with(|c| {
        c.limits.max_subscriptions = 3;
        c.limits.events_per_second = 1;
        c.limits.events_burst = 2;
        c.limits.reqs_per_second = 1;
        c.limits.reqs_burst = 5;
        // Refuse at once instead of pacing (tests/interop.rs tests pacing).
        c.limits.max_pace_ms = 0;
    })
    .await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    for i in 0..3 {
        c.req(&format!("s{i}"), &[json!({"kinds": [1]})]).await;
    }
    let reply = c.ask(json!(["REQ", "s3", {"kinds": [1]}])).await;
    assert_eq!(reply[0], "CLOSED");
    assert!(
        reply[2].as_str().unwrap().starts_with("blocked:"),
        "{reply}"
    );
    // Re-using an open id replaces it rather than counting twice.
    c.req("s0", &[json!({"kinds": [2]})]).await;
    // The sixth REQ within the burst window is rate limited.
    let reply = c.ask(json!(["REQ", "s1", {"kinds": [1]}])).await;
    assert_eq!(reply[0], "CLOSED", "{reply}");
    assert!(
        reply[2].as_str().unwrap().starts_with("rate-limited:"),
        "{reply}"
    );

    let mut limited = 0;
    for i in 0..5 {
        let reply = c.publish(&note(&keys, &format!("n{i}"))).await;
        if reply[2] == false {
            assert!(
                reply[3].as_str().unwrap().starts_with("rate-limited:"),
                "{reply}"
            );
            limited += 1;
        }
    }
    assert!(
        limited >= 2,
        "burst of 2 then 1/s: at least 2 of 5 refused, got {limited}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip() {
    let relay = TestRelay::start_with(|c| c.limits.max_connections_per_ip = 2).await;
    let _a = relay.client().await;
    let _b = relay.client().await;
    let third = tokio_tungstenite::connect_async(relay.url.as_str()).await;
    match third {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!(
            "third connection should get 429, got {:?}",
            other.map(|_| ())
        ),
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_dropped_others_unaffected() {
    let relay = TestRelay::start_with(|c| c.limits.max_pending_outbound_bytes = 256 * 1024).await;
    let keys = Keys::generate();
    let mut writer = relay.client().await;
    // A reader that subscribes and then never reads.
    let mut slow = relay.client().await;
    slow.req("all", &[json!({"kinds": [1]})]).await;
    let mut healthy = relay.client().await;
    healthy.req("all", &[json!({"kinds": [1]})]).await;
    let (status, _, body) = http_get(relay.addr, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("echorelay_connections_dropped_slow_total 0"));

    let payload = "x".repeat(30_000);
    let mut dropped = false;
    for i in 0..400 {
        writer
            .publish_ok(&keys.sign(now(), 1, vec![], format!("{i}{payload}")))
            .await;
        let got = healthy.recv().await;
        assert_eq!(got[0], "EVENT");
        if i % 20 == 19 {
            let (_, _, body) = http_get(relay.addr, "/metrics", &[]).await;
            if body.contains("echorelay_connections_dropped_slow_total 1") {
                dropped = true;
                break;
            }
        }
    }
    assert!(dropped, "the slow reader was never dropped");
    relay.stop().await;
}

/// A client that pipelines queries faster than they run gets refusals, not
/// an ever-growing queue: every COUNT is answered exactly once, some with
/// `rate-limited:`, and the connection keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_in_flight_are_bounded_per_connection() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let relay = TestRelay::start_with(|c| {
        c.limits.max_subscriptions = 2;
        c.limits.reqs_per_second = 0;
        c.server.query_threads = 1;
    })
    .await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    for i in 0..20 {
        c.publish_ok(&note(&keys, &format!("n{i}"))).await;
    }
    const SENT: usize = 50;
    for i in 0..SENT {
        let count = json!(["COUNT", format!("c{i}"), {"kinds": [1]}]).to_string();
        c.ws.feed(Message::Text(count.into())).await.unwrap();
    }
    c.ws.flush().await.unwrap();
    let (mut answered, mut counted, mut refused) = (std::collections::HashSet::new(), 0, 0);
    for _ in 0..SENT {
        let reply = c.recv().await;
        let id = reply[1].as_str().unwrap().to_string();
        assert!(answered.insert(id), "answered twice: {reply}");
        match reply[0].as_str() {
            Some("COUNT") => {
                assert_eq!(reply[2]["count"], 20, "{reply}");
                counted += 1;
            }
            Some("CLOSED") => {
                assert_eq!(
                    reply[2],
                    "rate-limited: too many queries in flight on this connection"
                );
                refused += 1;
            }
            _ => panic!("unexpected {reply}"),
        }
    }
    // Every COUNT sent got its own answer: none lost, none for another id.
    let sent: std::collections::HashSet<String> = (0..SENT).map(|i| format!("c{i}")).collect();
    assert_eq!(answered, sent);
    assert!(refused > 0, "50 pipelined COUNTs with 2 allowed in flight");
    assert!(counted > 0);
    // Nothing further is pending, and the connection still answers.
    let reply = c.ask(json!(["COUNT", "after", {"kinds": [1]}])).await;
    assert_eq!(reply, json!(["COUNT", "after", {"count": 20}]));
    relay.stop().await;
}

/// `limits.max_ingest_bytes` smaller than one event: every verify job takes
/// the whole budget, so EVENTs from three pipelining connections go through
/// one job at a time, and every one of them is still stored and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_ingest_budget_serialises_events_without_losing_any() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let relay = TestRelay::start_with(|c| {
        c.limits.max_ingest_bytes = 1;
        c.limits.events_per_second = 0;
    })
    .await;
    const PER_CONNECTION: usize = 100;
    let mut clients = Vec::new();
    let mut sent = std::collections::HashSet::new();
    for c in 0..3 {
        let keys = Keys::generate();
        let mut client = relay.client().await;
        for i in 0..PER_CONNECTION {
            let event = note(&keys, &format!("budget {c} {i}"));
            sent.insert(id_of(&event));
            let text = format!("[\"EVENT\",{}]", event.to_json());
            client.ws.feed(Message::Text(text.into())).await.unwrap();
        }
        client.ws.flush().await.unwrap();
        clients.push(client);
    }
    let mut acknowledged = std::collections::HashSet::new();
    for client in &mut clients {
        for _ in 0..PER_CONNECTION {
            let reply = client.recv().await;
            assert_eq!(reply[0], "OK", "{reply}");
            assert_eq!(reply[2], true, "{reply}");
            acknowledged.insert(reply[1].as_str().unwrap().to_string());
        }
    }
    assert_eq!(acknowledged, sent);
    let mut reader = relay.client().await;
    let stored = reader.req_ids(&[json!({"kinds": [1], "limit": 500})]).await;
    assert_eq!(stored.len(), 3 * PER_CONNECTION);
    relay.stop().await;
}
