//! Interoperability with a second independent client: nostr-tools' NIP-77
//! (`tests/js/nip77.mjs`, run with Node). The test installs the npm packages
//! itself (`npm ci` in tests/js) when they are missing.

mod common;

use common::*;
use echorelay::event::{now, Keys};
use serde_json::{json, Value};

fn nostr_tools_sync(url: &str, filter: Value, local: &[(u64, String)]) -> Value {
    let items: Vec<Value> = local.iter().map(|(ts, id)| json!([ts, id])).collect();
    run_node_json(
        "nip77.mjs",
        &[url.to_string(), filter.to_string()],
        &Value::Array(items).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_tools_nip77_reaches_the_right_set() {
    ensure_node_modules();
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    // One base time: a `since` computed later could pass a second boundary
    // and cut off the oldest event.
    let base = now() - 1000;
    let events: Vec<_> = (0..120)
        .map(|i| event_at(&keys, 1, base + i, vec![], &format!("js {i}")))
        .collect();
    for e in &events[..80] {
        c.publish_ok(e).await;
    }
    // nostr-tools holds 40..120: it needs 0..40 and has 80..120.
    let local: Vec<(u64, String)> = events[40..]
        .iter()
        .map(|e| (e.created_at, e.id_hex()))
        .collect();
    let url = relay.url.clone();
    for filter in [
        json!({}),
        json!({"kinds": [1]}),
        json!({"kinds": [1], "since": base}),
    ] {
        let (url, local, filter) = (url.clone(), local.clone(), filter.clone());
        let result = tokio::task::spawn_blocking(move || nostr_tools_sync(&url, filter, &local))
            .await
            .unwrap();
        let mut need: Vec<String> = events[..40].iter().map(|e| e.id_hex()).collect();
        need.sort();
        let mut have: Vec<String> = events[80..].iter().map(|e| e.id_hex()).collect();
        have.sort();
        assert_eq!(result["need"], json!(need));
        assert_eq!(result["have"], json!(have));
    }
    relay.stop().await;
}
