//! NIP-77 through the socket: our reconciler and nostr-sdk as clients, and
//! every bad input the negentropy issue names.

mod common;

use common::*;
use echorelay::event::{now, Keys};
use echorelay::negentropy::{Item, VectorStorage};
use serde_json::{json, Value};

fn item_of(e: &echorelay::event::Event) -> Item {
    Item::new(e.created_at, e.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_to_the_right_set() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    let base = now() - 10_000;
    let events: Vec<_> = (0..300)
        .map(|i| event_at(&keys, 1, base + (i / 3), vec![], &format!("n{i}")))
        .collect();
    // The relay gets 0..200, we hold 100..300: they need 200..300, we need 0..100.
    for e in &events[..200] {
        c.publish_ok(e).await;
    }
    let mine = VectorStorage::new(events[100..].iter().map(item_of).collect());
    for frame in [0usize, 4096] {
        let (diff, rounds) = reconcile(&mut c, "sync", json!({"kinds": [1]}), &mine, frame).await;
        let mut want_need: Vec<[u8; 32]> = events[..100].iter().map(|e| e.id).collect();
        want_need.sort();
        let mut want_have: Vec<[u8; 32]> = events[200..].iter().map(|e| e.id).collect();
        want_have.sort();
        assert_eq!(diff.need, want_need, "frame {frame}");
        assert_eq!(diff.have, want_have, "frame {frame}");
        assert!(rounds >= 1);
    }
    // Equal sets finish in one round.
    let same = VectorStorage::new(events[..200].iter().map(item_of).collect());
    let (diff, rounds) = reconcile(&mut c, "eq", json!({}), &same, 0).await;
    assert!(diff.have.is_empty() && diff.need.is_empty());
    assert_eq!(rounds, 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_events_never_appear_for_strangers() {
    let relay = TestRelay::start().await;
    let alice = Keys::generate();
    let bob = Keys::generate();
    let mut c = relay.client().await;
    let dm = event_at(
        &alice,
        4,
        now(),
        vec![vec!["p", &hex::encode(bob.public_key())]],
        "secret",
    );
    let public = note(&alice, "public");
    c.publish_ok(&dm).await;
    c.publish_ok(&public).await;
    let empty = VectorStorage::new(vec![]);
    let (diff, _) = reconcile(&mut c, "s", json!({}), &empty, 0).await;
    assert_eq!(diff.need, vec![public.id]);
    let mut b = relay.client().await;
    b.auth(&bob).await;
    let (diff, _) = reconcile(&mut b, "s", json!({}), &empty, 0).await;
    assert_eq!(diff.need.len(), 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_negentropy_input() {
    let relay = TestRelay::start_with(|c| {
        c.negentropy.max_sync_events = 5;
        c.negentropy.max_sessions_per_connection = 4;
    })
    .await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    for i in 0..3 {
        c.publish_ok(&note(&keys, &format!("e{i}"))).await;
    }
    let reason = |m: &Value| m[2].as_str().unwrap_or("").to_string();

    // Wrong version byte: the single byte 0x61 back, session still usable.
    let reply = c.ask(json!(["NEG-OPEN", "v", {}, "62aabbccddeeff"])).await;
    assert_eq!(reply, json!(["NEG-MSG", "v", "61"]));
    let reply = c.ask(json!(["NEG-MSG", "v", "6100000200"])).await;
    assert_eq!(reply[0], "NEG-MSG", "{reply}");
    // A byte outside 0x60..0x6f is invalid.
    let reply = c.ask(json!(["NEG-OPEN", "x", {}, "10"])).await;
    assert_eq!(reply[0], "NEG-ERR");
    assert!(reason(&reply).starts_with("invalid:"), "{reply}");

    for (sub, msg) in [
        ("trunc", "61000002"),              // truncated IdList
        ("fp", "6100010102"),               // truncated fingerprint
        ("huge", "61000002a08080808000aa"), // IdList claiming 2^40 ids
        ("mode", "61000009"),               // unknown mode
        ("hex", "zz"),                      // bad hex
        ("empty", ""),                      // no version byte
    ] {
        let reply = c.ask(json!(["NEG-OPEN", sub, {}, msg])).await;
        assert_eq!(reply[0], "NEG-ERR", "{sub}: {reply}");
        assert_eq!(reply[1], sub);
        assert!(reason(&reply).starts_with("invalid:"), "{sub}: {reply}");
    }
    // Bounds out of order (same timestamp, then a smaller id prefix): harmless.
    let reply = c
        .ask(json!(["NEG-OPEN", "order", {}, "610a01ff000a0100020000"]))
        .await;
    assert!(reply[0] == "NEG-MSG" || reply[0] == "NEG-ERR", "{reply}");

    // Unknown / closed ids.
    let reply = c.ask(json!(["NEG-MSG", "nope", "6100000200"])).await;
    assert_eq!(reply[0], "NEG-ERR");
    assert!(reason(&reply).starts_with("closed:"));
    c.send(json!(["NEG-CLOSE", "v"])).await;
    let reply = c.ask(json!(["NEG-MSG", "v", "6100000200"])).await;
    assert!(reason(&reply).starts_with("closed:"), "{reply}");

    // A filter array is that filter (tests/interop.rs); wrong arity is not.
    let reply = c.ask(json!(["NEG-OPEN", "arr", [{}], "6100000200"])).await;
    assert_eq!(reply[0], "NEG-MSG", "{reply}");
    let reply = c.ask(json!(["NEG-OPEN", "short", {}])).await;
    assert_eq!(reply[0], "NOTICE");

    // Over max_sync_events: blocked, with the cap as 4th element.
    for i in 0..3 {
        c.publish_ok(&note(&keys, &format!("more{i}"))).await;
    }
    // (`{}` is served from its tree and has no cap; `kinds` needs a query.)
    let reply = c.ask(json!(["NEG-OPEN", "tree", {}, "6100000200"])).await;
    assert_eq!(reply[0], "NEG-MSG", "{reply}");
    let reply = c
        .ask(json!(["NEG-OPEN", "cap", {"kinds": [1]}, "6100000200"]))
        .await;
    assert_eq!(
        reply,
        json!(["NEG-ERR", "cap", "blocked: too many query results", 5])
    );

    // Many sessions on one connection: the cap answers, the rest keep working.
    let mut blocked = 0;
    for i in 0..1000 {
        let reply = c
            .ask(json!(["NEG-OPEN", format!("s{i}"), {"kinds": [1], "limit": 1}, "6100000200"]))
            .await;
        if reply[0] == "NEG-ERR" {
            assert!(reason(&reply).starts_with("blocked:"), "{reply}");
            blocked += 1;
        }
    }
    assert!(blocked >= 996, "sessions were not capped: {blocked}");
    let reply = c.ask(json!(["COUNT", "alive", {}])).await;
    assert_eq!(reply[0], "COUNT");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed() {
    let relay = TestRelay::start_with(|c| c.negentropy.idle_timeout_secs = 1).await;
    let mut c = relay.client().await;
    let reply = c.ask(json!(["NEG-OPEN", "idle", {}, "6100000200"])).await;
    assert_eq!(reply[0], "NEG-MSG");
    // Awaited, not slept: the relay sends NEG-ERR closed: on its own.
    let reply = c.recv().await;
    assert_eq!(reply[0], "NEG-ERR");
    assert_eq!(reply[1], "idle");
    assert!(reply[2].as_str().unwrap().starts_with("closed:"), "{reply}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_sync_down() {
    use nostr_sdk::prelude::*;
    let relay = TestRelay::start().await;
    let keys = echorelay::event::Keys::generate();
    let mut c = relay.client().await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let e = note(&keys, &format!("sync {i}"));
        c.publish_ok(&e).await;
        ids.push(e.id_hex());
    }
    let client = Client::default();
    client.add_relay(relay.url.as_str()).await.unwrap();
    client
        .connect()
        .and_wait(std::time::Duration::from_secs(5))
        .await;
    let output = client
        .sync(Filter::new().kind(Kind::TextNote))
        .await
        .unwrap();
    let received: Vec<String> = output.value.received.keys().map(|id| id.to_hex()).collect();
    assert_eq!(received.len(), 50, "{:?}", output.failed);
    for id in &ids {
        assert!(received.contains(id));
    }
    client.shutdown().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_sessions_follow_writes_and_time_windows() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    let base = now() - 100_000;
    let mut live: Vec<echorelay::event::Event> = Vec::new();
    for i in 0..400u64 {
        let e = event_at(&keys, 1, base + i * 10, vec![], &format!("t{i}"));
        c.publish_ok(&e).await;
        live.push(e);
    }
    // Replace and delete some: the {} tree must follow.
    let p1 = event_at(&keys, 0, base, vec![], "{}");
    let p2 = event_at(&keys, 0, base + 5, vec![], "{\"name\":\"x\"}");
    c.publish_ok(&p1).await;
    c.publish_ok(&p2).await;
    let doomed: Vec<String> = live.iter().step_by(7).map(|e| e.id_hex()).collect();
    let tags: Vec<Vec<&str>> = doomed.iter().map(|id| vec!["e", id.as_str()]).collect();
    let deletion = event_at(&keys, 5, base + 5000, tags, "");
    c.publish_ok(&deletion).await;
    live.retain(|e| !doomed.contains(&e.id_hex()));
    let mut expected: Vec<Item> = live.iter().map(item_of).collect();
    expected.push(item_of(&p2));
    expected.push(item_of(&deletion));

    // An empty client needs exactly the live set, served from the tree.
    let empty = VectorStorage::new(vec![]);
    for frame in [0usize, 4096] {
        let (diff, _) = reconcile(&mut c, "all", json!({}), &empty, frame).await;
        let mut want: Vec<[u8; 32]> = expected.iter().map(|i| i.id).collect();
        want.sort();
        assert_eq!(diff.need, want, "frame {frame}");
    }
    // A client holding the same set is done in one round.
    let same = VectorStorage::new(expected.clone());
    let (diff, rounds) = reconcile(&mut c, "same", json!({}), &same, 0).await;
    assert!(diff.need.is_empty() && diff.have.is_empty());
    assert_eq!(rounds, 1);

    // since/until select a sub-range of the tree.
    let (since, until) = (base + 1000, base + 2000);
    let window: Vec<Item> = expected
        .iter()
        .filter(|i| i.timestamp >= since && i.timestamp <= until)
        .copied()
        .collect();
    let (diff, _) = reconcile(
        &mut c,
        "win",
        json!({"since": since, "until": until}),
        &empty,
        0,
    )
    .await;
    let mut want: Vec<[u8; 32]> = window.iter().map(|i| i.id).collect();
    want.sort();
    assert_eq!(diff.need, want);
    let mine = VectorStorage::new(window);
    let (diff, rounds) = reconcile(
        &mut c,
        "win2",
        json!({"since": since, "until": until}),
        &mine,
        0,
    )
    .await;
    assert!(diff.need.is_empty() && diff.have.is_empty());
    assert_eq!(rounds, 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_graph_gets_its_own_tree() {
    // A cap of 1 makes query-built sets fail: only tree-served scopes answer.
    let keys = Keys::generate();
    let node = hex::encode(keys.public_key());
    let relay = TestRelay::start_with(|c| {
        c.negentropy.max_sync_events = 1;
        c.auth.trusted_nodes = vec![node];
    })
    .await;
    let mut c = relay.client().await;
    c.auth(&keys).await;
    let mut alpha = Vec::new();
    let (index, txs) = homed_graph(&keys, "alpha", &["tx0", "tx1", "tx2"]);
    c.publish_ok(&index).await;
    for e in txs {
        c.publish_ok(&e).await;
        alpha.push(e.id);
    }
    let (index, txs) = homed_graph(&keys, "beta", &["b0", "b1"]);
    for e in std::iter::once(index).chain(txs) {
        c.publish_ok(&e).await;
    }
    let empty = VectorStorage::new(vec![]);
    let (diff, _) = reconcile(
        &mut c,
        "alpha",
        json!({"kinds": [4071], "#g": ["alpha"]}),
        &empty,
        0,
    )
    .await;
    alpha.sort();
    assert_eq!(diff.need, alpha);
    let (diff, _) = reconcile(
        &mut c,
        "beta",
        json!({"#g": ["beta"], "kinds": [4071]}),
        &empty,
        0,
    )
    .await;
    assert_eq!(diff.need.len(), 2);
    // No tree covers all graph txs at once: that set is built from a query.
    let reply = c
        .ask(json!(["NEG-OPEN", "all", {"kinds": [4071]}, "6100000200"]))
        .await;
    assert_eq!(reply[0], "NEG-ERR", "{reply}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_sync_up_and_both() {
    use nostr_sdk::prelude::*;
    let relay = TestRelay::start().await;
    let ours = echorelay::event::Keys::generate();
    let mut raw = relay.client().await;
    let mut relay_only = Vec::new();
    for i in 0..30 {
        let e = note(&ours, &format!("relay {i}"));
        raw.publish_ok(&e).await;
        relay_only.push(e.id_hex());
    }
    let keys = nostr_sdk::prelude::Keys::generate();
    let events: Vec<Event> = (0..20)
        .map(|i| {
            EventBuilder::new(Kind::TextNote, format!("client {i}"))
                .finalize(&keys)
                .unwrap()
        })
        .collect();
    let client_only: Vec<String> = events.iter().map(|e| e.id.to_hex()).collect();
    let client = common::sdk::sdk_client_holding(relay.url.as_str(), &events).await;

    // Up: the relay receives the client's 20, sends nothing down.
    let up = SyncOptions::default().direction(SyncDirection::Up);
    let output = client
        .sync(Filter::new().kind(Kind::TextNote))
        .opts(up)
        .await
        .unwrap();
    assert_eq!(output.value.sent.len(), 20, "{:?}", output.failed);
    assert!(output.value.received.is_empty());
    let stored = raw.req_ids(&[json!({"kinds": [1], "limit": 500})]).await;
    assert_eq!(stored.len(), 50);
    for id in &client_only {
        assert!(stored.contains(id));
    }

    // Both: the client gets the relay's 30; nothing left to send.
    let both = SyncOptions::default().direction(SyncDirection::Both);
    let output = client
        .sync(Filter::new().kind(Kind::TextNote))
        .opts(both)
        .await
        .unwrap();
    let received: Vec<String> = output.value.received.keys().map(|id| id.to_hex()).collect();
    assert_eq!(received.len(), 30);
    for id in &relay_only {
        assert!(received.contains(id));
    }
    assert!(output.value.sent.is_empty());
    // A final reconciliation finds nothing to do.
    let output = client
        .sync(Filter::new().kind(Kind::TextNote))
        .opts(SyncOptions::default().direction(SyncDirection::Both))
        .await
        .unwrap();
    assert!(output.value.received.is_empty() && output.value.sent.is_empty());
    client.shutdown().await;
    relay.stop().await;
}

/// Graph events are private to the mesh: a stranger can neither publish nor
/// read them, and their ids never appear in a reconciliation it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_events_stay_inside_the_mesh() {
    let node = Keys::generate();
    let node_hex = hex::encode(node.public_key());
    let relay = TestRelay::start_with(|c| c.auth.trusted_nodes = vec![node_hex]).await;
    let mut member = relay.client().await;
    member.auth(&node).await;
    let (index, mut txs) = homed_graph(&node, "secret", &["tx"]);
    member.publish_ok(&index).await;
    let tx = txs.remove(0);
    member.publish_ok(&tx).await;
    let public = note(&node, "public");
    member.publish_ok(&public).await;

    let stranger_keys = Keys::generate();
    let mut stranger = relay.client().await;
    let forged = event_at(&stranger_keys, 4071, now(), vec![vec!["g", "secret"]], "x");
    let reply = stranger.publish(&forged).await;
    assert!(
        reply[3].as_str().unwrap().starts_with("auth-required:"),
        "{reply}"
    );
    let reply = stranger.ask(json!(["REQ", "r", {"kinds": [4071]}])).await;
    assert_eq!(reply[0], "CLOSED", "{reply}");
    assert!(stranger.req_ids(&[json!({"limit": 100})]).await == vec![public.id_hex()]);
    let reply = stranger
        .ask(json!(["NEG-OPEN", "g", {"kinds": [4071], "#g": ["secret"]}, "6100000200"]))
        .await;
    assert!(
        reply[2].as_str().unwrap().starts_with("auth-required:"),
        "{reply}"
    );
    let empty = VectorStorage::new(vec![]);
    let (diff, _) = reconcile(&mut stranger, "all", json!({}), &empty, 0).await;
    assert_eq!(diff.need, vec![public.id]);

    // Authenticated but not a mesh node: refused with restricted:, still
    // nothing to see.
    stranger.auth(&stranger_keys).await;
    let reply = stranger.publish(&forged).await;
    assert!(
        reply[3].as_str().unwrap().starts_with("restricted:"),
        "{reply}"
    );
    let reply = stranger
        .ask(json!(["NEG-OPEN", "g2", {"kinds": [4071], "#g": ["secret"]}, "6100000200"]))
        .await;
    assert!(
        reply[2].as_str().unwrap().starts_with("restricted:"),
        "{reply}"
    );
    let reply = stranger.ask(json!(["REQ", "r2", {"kinds": [4071]}])).await;
    assert!(
        reply[2].as_str().unwrap().starts_with("restricted:"),
        "{reply}"
    );
    // The mesh node sees it all.
    let (diff, _) = reconcile(
        &mut member,
        "g3",
        json!({"kinds": [4071], "#g": ["secret"]}),
        &empty,
        0,
    )
    .await;
    assert_eq!(diff.need, vec![tx.id]);
    relay.stop().await;
}

/// NIP-77 is request / reply: a NEG-MSG sent before the previous one was
/// answered ends the session (a client cannot queue many large messages),
/// and NEG-OPEN meets the same read checks as REQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_neg_msg_in_flight_and_req_checks_on_neg_open() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let relay = TestRelay::start_with(|c| c.limits.max_ids_per_filter = 3).await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    for i in 0..50 {
        c.publish_ok(&note(&keys, &format!("n{i}"))).await;
    }
    let mine = VectorStorage::new(Vec::new());
    let mut neg = echorelay::negentropy::Negentropy::new(&mine, 0).unwrap();
    let first = hex::encode(neg.initiate().unwrap());
    let reply = c.ask(json!(["NEG-OPEN", "s", {"kinds": [1]}, first])).await;
    assert_eq!(reply[0], "NEG-MSG", "{reply}");
    // Two NEG-MSGs in one write: the second arrives while the first is
    // being answered.
    let msg = json!(["NEG-MSG", "s", first]).to_string();
    c.ws.feed(Message::Text(msg.clone().into())).await.unwrap();
    c.ws.feed(Message::Text(msg.into())).await.unwrap();
    c.ws.flush().await.unwrap();
    let reply = loop {
        let reply = c.recv().await;
        if reply[0] == "NEG-ERR" {
            break reply;
        }
    };
    assert_eq!(
        reply,
        json!([
            "NEG-ERR",
            "s",
            "invalid: NEG-MSG before the reply to the previous one"
        ])
    );
    let reply = c.ask(json!(["NEG-MSG", "s", "6100000200"])).await;
    assert!(
        reply[2].as_str().unwrap_or("").starts_with("closed:"),
        "{reply}"
    );

    // The ids cap and the restricted-kinds rule, as for REQ.
    let ids: Vec<String> = (0..4u32).map(|n| format!("{n:064x}")).collect();
    let reply = c
        .ask(json!(["NEG-OPEN", "i", {"ids": ids}, "6100000200"]))
        .await;
    assert_eq!(
        reply,
        json!(["NEG-ERR", "i", "invalid: a filter may list at most 3 ids"])
    );
    let reply = c
        .ask(json!(["NEG-OPEN", "r", [{"kinds": [4]}], "6100000200"]))
        .await;
    assert!(
        reply[2]
            .as_str()
            .unwrap_or("")
            .starts_with("auth-required:"),
        "{reply}"
    );
    relay.stop().await;
}
