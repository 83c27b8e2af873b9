//! NIP-45 COUNT over the wire: answered from a fingerprint tree when one
//! serves the filter (the tree's count agrees with what a REQ returns, in
//! every client's view: strangers, parties to restricted kinds, mesh
//! nodes; expired events not yet purged are not counted), walked
//! otherwise, and refused with a reason past `limits.count_budget_ms`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{event_at, eventually_mut, metric, TestRelay};
use echorelay::event::{now, Keys};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_echorelay");

fn count_of(reply: &Value) -> u64 {
    assert_eq!(reply[0], "COUNT", "{reply}");
    reply[2]["count"].as_u64().expect("count")
}

async fn from_tree(relay: &TestRelay) -> u64 {
    metric(relay.addr, "echorelay_counts_from_tree_total").await
}

async fn from_keys(relay: &TestRelay) -> u64 {
    metric(relay.addr, "echorelay_counts_from_keys_total").await
}

/// 12 notes by alice an hour apart, 3 reactions by bob, 2 DMs (kind 4,
/// restricted) from alice to bob, and a note by bob that has expired but
/// that no purge has removed yet. Returns the first note's created_at.
async fn publish_mix(relay: &TestRelay, alice: &Keys, bob: &Keys) -> u64 {
    let base = now() - 100_000;
    let bob_hex = hex::encode(bob.public_key());
    let mut c = relay.client().await;
    for i in 0..12 {
        c.publish_ok(&event_at(
            alice,
            1,
            base + i * 3600,
            vec![],
            &format!("note {i}"),
        ))
        .await;
    }
    for i in 0..3 {
        c.publish_ok(&event_at(bob, 7, base + i, vec![], "+")).await;
    }
    for i in 0..2 {
        let dm = event_at(alice, 4, base + i, vec![vec!["p", &bob_hex]], "secret");
        c.publish_ok(&dm).await;
    }
    let soon = (now() + 1).to_string();
    let fleeting = event_at(bob, 1, now(), vec![vec!["expiration", &soon]], "brief");
    c.publish_ok(&fleeting).await;
    let only_fleeting = json!({"authors": [hex::encode(bob.public_key())], "kinds": [1]});
    eventually_mut("the note to expire", Duration::from_secs(10), &mut c, |c| {
        let filter = only_fleeting.clone();
        Box::pin(async move { c.req("x", &[filter]).await.is_empty().then_some(()) })
    })
    .await;
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_from_a_tree_agrees_with_a_req_in_every_view() {
    let relay = TestRelay::start_with(|c| c.store.purge_interval_secs = 3600).await;
    let (alice, bob, carol) = (Keys::generate(), Keys::generate(), Keys::generate());
    let base = publish_mix(&relay, &alice, &bob).await;

    let mut stranger = relay.client().await;
    let everything = stranger.req("all", &[json!({"limit": 500})]).await;
    assert_eq!(everything.len(), 15, "12 notes and 3 reactions");
    let before = from_tree(&relay).await;
    assert_eq!(count_of(&stranger.ask(json!(["COUNT", "a", {}])).await), 15);
    let window = json!({"since": base + 3 * 3600, "until": base + 7 * 3600});
    assert_eq!(
        count_of(&stranger.ask(json!(["COUNT", "w", window])).await),
        5
    );
    // A limit does not cut a count, and does not keep it from the tree.
    let limited = json!(["COUNT", "l", {"limit": 2}]);
    assert_eq!(count_of(&stranger.ask(limited).await), 15);
    assert_eq!(from_tree(&relay).await, before + 3);

    // A party to the DMs sees them counted too; a stranger signed in does not.
    for (who, seen) in [(&bob, 17), (&alice, 17), (&carol, 15)] {
        let mut c = relay.client().await;
        c.auth(who).await;
        assert_eq!(count_of(&c.ask(json!(["COUNT", "a", {}])).await), seen);
        let dms = json!(["COUNT", "dm", {"kinds": [4]}]);
        assert_eq!(count_of(&c.ask(dms).await), seen - 15);
    }

    // No tree for kinds [1]: counted from the kind index's keys (the
    // expired note taken off), the same as the REQ; so is one author's.
    let before = from_tree(&relay).await;
    let keys_before = from_keys(&relay).await;
    let notes = json!(["COUNT", "n", {"kinds": [1], "limit": 3}]);
    assert_eq!(count_of(&stranger.ask(notes.clone()).await), 12);
    let alices =
        json!(["COUNT", "a", {"kinds": [1, 7], "authors": [hex::encode(alice.public_key())]}]);
    assert_eq!(count_of(&stranger.ask(alices).await), 12);
    assert_eq!(from_keys(&relay).await, keys_before + 2);
    // A restricted kind is walked: each client sees its own view.
    let bobs_dms = json!(["COUNT", "dm", {"kinds": [4, 1]}]);
    let two = json!(["COUNT", "u", {"kinds": [1]}, {"authors": [hex::encode(alice.public_key())]}]);
    assert_eq!(count_of(&stranger.ask(two.clone()).await), 12);
    let mut bobs = relay.client().await;
    bobs.auth(&bob).await;
    assert_eq!(count_of(&bobs.ask(two).await), 14, "the union, DMs once");
    assert_eq!(count_of(&bobs.ask(bobs_dms).await), 14);
    assert_eq!(from_tree(&relay).await, before);
    assert_eq!(
        from_keys(&relay).await,
        keys_before + 2,
        "neither the union nor DMs"
    );

    // Given a tree for it, the same COUNT is answered from the tree.
    let added = Command::new(BIN)
        .args(["negentropy", "add", "{\"kinds\":[1]}", "--data"])
        .arg(relay.dir.path())
        .output()
        .expect("negentropy add");
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(count_of(&stranger.ask(notes).await), 12);
    assert_eq!(from_tree(&relay).await, before + 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_node_counts_the_mesh_events_the_tree_leaves_out() {
    let relay = TestRelay::start().await;
    let node = relay.node_key();
    let mut c = relay.client().await;
    c.auth(&node).await;
    c.publish_ok(&event_at(&node, 1, now(), vec![], "plain"))
        .await;
    let state = event_at(
        &node,
        34072,
        now(),
        vec![
            vec!["d", "node-1"],
            vec!["version", "1"],
            vec!["checksum", "00"],
        ],
        "{}",
    );
    c.publish_ok(&state).await;
    assert_eq!(c.req("all", &[json!({})]).await.len(), 2);
    assert_eq!(count_of(&c.ask(json!(["COUNT", "a", {}])).await), 2);
    let mut stranger = relay.client().await;
    assert_eq!(count_of(&stranger.ask(json!(["COUNT", "a", {}])).await), 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_past_its_budget_is_closed_with_a_reason() {
    let relay = TestRelay::start_with(|c| c.limits.count_budget_ms = 0).await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    for i in 0..3 {
        c.publish_ok(&event_at(&keys, 1, now() - i, vec![], "n"))
            .await;
    }
    // The tree answers without walking, whatever the budget; counting
    // keys and walking events are both bounded by it.
    assert_eq!(count_of(&c.ask(json!(["COUNT", "tree", {}])).await), 3);
    let counted = c.ask(json!(["COUNT", "keys", {"kinds": [1]}])).await;
    assert_eq!(counted[0], "CLOSED", "{counted}");
    let author = json!({"authors": [hex::encode(keys.public_key())]});
    let reply = c.ask(json!(["COUNT", "walk", author])).await;
    assert_eq!(reply[0], "CLOSED", "{reply}");
    assert_eq!(reply[1], "walk");
    let reason = reply[2].as_str().expect("reason");
    assert!(
        reason.starts_with("blocked: counting this would take over 0 ms"),
        "{reason}"
    );
    assert_eq!(
        metric(relay.addr, "echorelay_counts_out_of_time_total").await,
        2
    );
    // The connection goes on.
    assert_eq!(c.req("r", &[json!({"kinds": [1]})]).await.len(), 3);
    relay.stop().await;
}
