//! NIP-01 / 09 / 40 / 45 / 11 behaviour through a real socket.

mod common;

use common::*;
use echorelay::event::{now, Keys};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_query_and_live() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut a = relay.client().await;
    let t = now();
    let e1 = event_at(&keys, 1, t - 10, vec![vec!["t", "rust"]], "older");
    let e2 = event_at(&keys, 1, t - 5, vec![vec!["t", "go"]], "newer");
    a.publish_ok(&e1).await;
    a.publish_ok(&e2).await;

    // Newest first, limit honoured, every index path.
    let author = hex::encode(keys.public_key());
    assert_eq!(
        a.req_ids(&[json!({"authors": [author]})]).await,
        vec![id_of(&e2), id_of(&e1)]
    );
    assert_eq!(
        a.req_ids(&[json!({"kinds": [1], "limit": 1})]).await,
        vec![id_of(&e2)]
    );
    assert_eq!(
        a.req_ids(&[json!({"authors": [author], "kinds": [1]})])
            .await
            .len(),
        2
    );
    assert_eq!(
        a.req_ids(&[json!({"#t": ["rust"]})]).await,
        vec![id_of(&e1)]
    );
    assert_eq!(
        a.req_ids(&[json!({"ids": [id_of(&e1)]})]).await,
        vec![id_of(&e1)]
    );
    assert_eq!(
        a.req_ids(&[json!({"since": t - 7})]).await,
        vec![id_of(&e2)]
    );
    assert_eq!(
        a.req_ids(&[json!({"until": t - 7})]).await,
        vec![id_of(&e1)]
    );
    assert!(a.req_ids(&[json!({"kinds": [2]})]).await.is_empty());
    // Several filters: union without repeats.
    let both = a
        .req_ids(&[json!({"#t": ["rust"]}), json!({"kinds": [1]})])
        .await;
    assert_eq!(both.len(), 2);

    // Live: a second client subscribes, the first publishes.
    let mut b = relay.client().await;
    assert_eq!(b.req("live", &[json!({"#t": ["live"]})]).await.len(), 0);
    let e3 = event_at(&keys, 1, now(), vec![vec!["t", "live"]], "fresh");
    a.publish_ok(&e3).await;
    let got = b.recv().await;
    assert_eq!(got[0], "EVENT");
    assert_eq!(got[1], "live");
    assert_eq!(got[2]["id"], id_of(&e3));

    // CLOSE stops delivery; the connection stays usable. (A round trip on
    // b's socket first: its messages are handled in order, so the CLOSE is
    // in effect before a publishes on its own socket.)
    b.send(json!(["CLOSE", "live"])).await;
    let settled = b.ask(json!(["COUNT", "settle", {"#t": ["live"]}])).await;
    assert_eq!(settled, json!(["COUNT", "settle", {"count": 1}]));
    let e4 = event_at(&keys, 1, now(), vec![vec!["t", "live"]], "after close");
    a.publish_ok(&e4).await;
    let count = b.ask(json!(["COUNT", "c", {"#t": ["live"]}])).await;
    assert_eq!(count, json!(["COUNT", "c", {"count": 2}]));

    // Duplicate.
    let dup = a.publish(&e1).await;
    assert_eq!(dup[2], true);
    assert!(dup[3].as_str().unwrap().starts_with("duplicate:"));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaceable_addressable_and_ephemeral() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    let author = hex::encode(keys.public_key());

    let old = event_at(&keys, 0, now() - 100, vec![], "{\"name\":\"old\"}");
    let new = event_at(&keys, 0, now() - 50, vec![], "{\"name\":\"new\"}");
    c.publish_ok(&old).await;
    c.publish_ok(&new).await;
    let older_again = event_at(&keys, 0, now() - 200, vec![], "{\"name\":\"older\"}");
    let refused = c.publish(&older_again).await;
    assert_eq!(refused[2], false);
    assert!(refused[3].as_str().unwrap().starts_with("duplicate:"));
    assert_eq!(
        c.req_ids(&[json!({"authors": [author], "kinds": [0]})])
            .await,
        vec![id_of(&new)]
    );

    let a1 = event_at(&keys, 30023, now() - 10, vec![vec!["d", "post"]], "v1");
    let a2 = event_at(&keys, 30023, now() - 5, vec![vec!["d", "post"]], "v2");
    let other = event_at(&keys, 30023, now() - 5, vec![vec!["d", "other"]], "x");
    for e in [&a1, &a2, &other] {
        c.publish_ok(e).await;
    }
    let mut got = c.req_ids(&[json!({"kinds": [30023]})]).await;
    got.sort();
    let mut want = vec![id_of(&a2), id_of(&other)];
    want.sort();
    assert_eq!(got, want);

    // Ephemeral: delivered live, never stored.
    let mut sub = relay.client().await;
    sub.req("eph", &[json!({"kinds": [20001]})]).await;
    let eph = event_at(&keys, 20001, now(), vec![], "poof");
    c.publish_ok(&eph).await;
    assert_eq!(sub.recv().await[2]["id"], id_of(&eph));
    assert!(c.req_ids(&[json!({"kinds": [20001]})]).await.is_empty());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_by_e_and_a() {
    let relay = TestRelay::start().await;
    let alice = Keys::generate();
    let mallory = Keys::generate();
    let mut c = relay.client().await;
    let note = event_at(&alice, 1, now() - 10, vec![], "to delete");
    let article = event_at(&alice, 30023, now() - 10, vec![vec!["d", "a1"]], "article");
    c.publish_ok(&note).await;
    c.publish_ok(&article).await;

    // Someone else cannot delete Alice's note.
    let fake = event_at(&mallory, 5, now(), vec![vec!["e", &id_of(&note)]], "");
    c.publish_ok(&fake).await;
    assert_eq!(c.req_ids(&[json!({"ids": [id_of(&note)]})]).await.len(), 1);

    let coord = format!("30023:{}:a1", hex::encode(alice.public_key()));
    let del = event_at(
        &alice,
        5,
        now() - 1,
        vec![vec!["e", &id_of(&note)], vec!["a", &coord]],
        "",
    );
    c.publish_ok(&del).await;
    assert!(c
        .req_ids(&[json!({"ids": [id_of(&note), id_of(&article)]})])
        .await
        .is_empty());
    // The deletion itself is kept and served.
    assert_eq!(
        c.req_ids(&[json!({"kinds": [5], "authors": [hex::encode(alice.public_key())]})])
            .await,
        vec![id_of(&del)]
    );

    // A stranger naming the deleted id afterwards does not lift the
    // author's deletion (one record per deleter, not the last one only).
    let after = event_at(&mallory, 5, now(), vec![vec!["e", &id_of(&note)]], "");
    c.publish_ok(&after).await;

    // Re-sending a deleted event is refused, every time (a refusal leaves
    // nothing behind that would turn the next answer into `duplicate:`);
    // so is an older version of the address.
    let stale = event_at(&alice, 30023, now() - 5, vec![vec!["d", "a1"]], "stale");
    for event in [&note, &stale] {
        for _ in 0..2 {
            let reply = c.publish(event).await;
            assert_eq!(reply[2], false, "{reply}");
            assert!(
                reply[3].as_str().unwrap().starts_with("blocked:"),
                "{reply}"
            );
        }
    }
    // A newer version of the address is accepted.
    let fresh = event_at(&alice, 30023, now() + 1, vec![vec!["d", "a1"]], "fresh");
    c.publish_ok(&fresh).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiration_nip40() {
    let relay = TestRelay::start_with(|c| c.store.purge_interval_secs = 1).await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    let expired = event_at(
        &keys,
        1,
        now(),
        vec![vec!["expiration", &(now() - 1).to_string()]],
        "gone",
    );
    let refused = c.publish(&expired).await;
    assert_eq!(refused[2], false);
    assert!(refused[3].as_str().unwrap().starts_with("invalid:"));

    let soon = event_at(
        &keys,
        1,
        now(),
        vec![vec!["expiration", &(now() + 2).to_string()]],
        "soon",
    );
    c.publish_ok(&soon).await;
    assert_eq!(c.req_ids(&[json!({"ids": [id_of(&soon)]})]).await.len(), 1);
    // Never served once expired: poll the relay's own answer, bounded.
    let (url, id) = (relay.url.clone(), id_of(&soon));
    eventually("the expired event to stop being served", WAIT, || {
        let (url, id) = (url.clone(), id.clone());
        async move {
            let mut c = Raw::connect(&url).await;
            c.req_ids(&[json!({"ids": [id]})])
                .await
                .is_empty()
                .then_some(())
        }
    })
    .await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip11_and_metrics() {
    let relay = TestRelay::start().await;
    let (status, headers, body) =
        http_get(relay.addr, "/", &[("Accept", "application/nostr+json")]).await;
    assert_eq!(status, 200);
    assert!(headers.contains("access-control-allow-origin: *"));
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["supported_nips"], json!([1, 9, 11, 40, 42, 45, 77]));
    assert_eq!(doc["limitation"]["max_limit"], 500);
    // Only limits that are enforced: no content cap, no lower created_at
    // bound by default (max_event_size is not a content cap).
    for absent in ["max_content_length", "created_at_lower_limit"] {
        assert!(doc["limitation"].get(absent).is_none(), "{absent}: {doc}");
    }
    assert_eq!(doc["limitation"]["created_at_upper_limit"], 900);

    let keys = Keys::generate();
    let mut c = relay.client().await;
    c.publish_ok(&note(&keys, "counted")).await;
    let bad = keys.sign(now(), 1, vec![], "x".into());
    let mut tampered = bad.clone();
    tampered.content = "y".into();
    c.publish(&tampered).await;
    let (status, _, body) = http_get(relay.addr, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("echorelay_events_stored_total 1"), "{body}");
    assert!(
        body.contains("echorelay_events_rejected_total{reason=\"invalid\"} 1"),
        "{body}"
    );
    assert!(body.contains("echorelay_connections 1"), "{body}");
    assert!(body.contains("echorelay_write_batch_size_count"), "{body}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_map_gives_error_to_writers_and_reads_keep_working() {
    // 1 MiB map that may grow once to 2 MiB, then is full.
    let relay = TestRelay::start_with(|c| {
        c.store.map_size_mb = 1;
        c.store.max_map_size_mb = 2;
        c.policy.max_event_size = 200_000;
    })
    .await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    let payload = "z".repeat(60_000);
    let mut stored = Vec::new();
    let mut full = None;
    for i in 0..200 {
        let ev = keys.sign(now(), 1, vec![], format!("{i}{payload}"));
        let reply = c.publish(&ev).await;
        if reply[2] == true {
            stored.push(id_of(&ev));
        } else {
            full = Some(reply);
            break;
        }
    }
    let full = full.expect("the map never filled");
    assert_eq!(full[3], "error: database is full", "{full}");
    assert!(
        stored.len() > 16,
        "the map should have grown past 1 MiB first: {} stored",
        stored.len()
    );
    // Everything acknowledged is still served.
    let got = c.req_ids(&[json!({"kinds": [1], "limit": 500})]).await;
    assert_eq!(got.len(), stored.len());
    relay.stop().await;
}

/// A REQ that is refused closes an open subscription of the same id: once
/// the client has its CLOSED, nothing more arrives under that id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_req_closes_the_subscription_it_replaces() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    c.req("s", &[json!({"kinds": [1]})]).await;
    c.req("t", &[json!({"kinds": [1]})]).await;
    let reply = c.ask(json!(["REQ", "s", {"kinds": "not a list"}])).await;
    assert_eq!(reply[0], "CLOSED", "{reply}");
    assert_eq!(reply[1], "s");

    let mut other = relay.client().await;
    other.publish_ok(&note(&keys, "after the refusal")).await;
    // "t" gets the event; "s" would have got it in the same fan-out pass.
    let mut seen = Vec::new();
    loop {
        let msg = c.recv().await;
        seen.push(msg.clone());
        if msg[0] == "EVENT" && msg[1] == "t" {
            break;
        }
    }
    let count = c.ask(json!(["COUNT", "c", {"kinds": [1]}])).await;
    seen.push(count);
    assert!(
        !seen.iter().any(|m| m[0] == "EVENT" && m[1] == "s"),
        "an event arrived under the closed id: {seen:?}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_filters_return_every_id_asked_and_bound_the_list() {
    let relay = TestRelay::start_with(|c| c.limits.max_ids_per_filter = 1500).await;
    let mut c = relay.client().await;
    let keys = Keys::generate();
    let events: Vec<_> = (0..1200).map(|i| note(&keys, &format!("n{i}"))).collect();
    for event in &events {
        c.send_text(format!("[\"EVENT\",{}]", event.to_json()))
            .await;
    }
    for _ in &events {
        assert_eq!(c.recv().await[2], true);
    }
    // More than max_limit (500), asked by id as NDK does after a
    // reconciliation: all of them.
    let ids: Vec<String> = events.iter().map(|e| e.id_hex()).collect();
    let got = c.req_ids(&[json!({ "ids": ids })]).await;
    assert_eq!(got.len(), 1200);
    let got = c.req_ids(&[json!({"ids": ids, "limit": 10})]).await;
    assert_eq!(got.len(), 10, "a smaller limit still counts");
    let too_many: Vec<String> = (0..1501u32).map(|n| format!("{n:064x}")).collect();
    let reply = c.ask(json!(["REQ", "big", {"ids": too_many}])).await;
    assert_eq!(reply[0], "CLOSED", "{reply}");
    assert!(
        reply[2].as_str().unwrap().contains("at most 1500 ids"),
        "{reply}"
    );
    let (_, _, info) = http_get(relay.addr, "/", &[("accept", "application/nostr+json")]).await;
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["limitation"]["max_ids_per_filter"], 1500);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip11_shows_the_content_and_age_limits_that_are_set_and_enforced() {
    let relay = TestRelay::start_with(|c| {
        c.policy.max_content_length = 10;
        c.policy.max_past_seconds = 3600;
    })
    .await;
    let (_, _, body) = http_get(relay.addr, "/", &[("Accept", "application/nostr+json")]).await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["limitation"]["max_content_length"], 10);
    assert_eq!(doc["limitation"]["created_at_lower_limit"], 3600);
    let keys = Keys::generate();
    let mut c = relay.client().await;
    // Counted in characters, as NIP-11 says: ten of them in 20 bytes pass.
    c.publish_ok(&note(&keys, &"é".repeat(5).repeat(2))).await;
    let reply = c.publish(&note(&keys, "eleven char")).await;
    assert_eq!(reply[2], false);
    assert_eq!(
        reply[3],
        "invalid: content is too long (11 > 10 characters)"
    );
    let old = event_at(&keys, 1, now() - 7200, vec![], "old");
    let reply = c.publish(&old).await;
    assert!(
        reply[3].as_str().unwrap().contains("too far in the past"),
        "{reply}"
    );
    relay.stop().await;
}
