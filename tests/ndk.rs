//! Interoperability with NDK's NIP-77 sync (@nostr-dev-kit/ndk 3 with
//! @nostr-dev-kit/sync 1: `tests/js/ndk.mjs`, run with Node). NDK builds
//! its negentropy storage from its cache (here an in-memory one seeded with
//! the events given), sends `["NEG-OPEN", id, [filter, …], msg]` with the
//! filters in an array, then fetches what it needs by id. The script fails
//! if NDK fell back to a plain REQ, got a NEG-ERR or timed out. The test
//! installs the npm packages itself (`npm ci` in tests/js) when missing.

mod common;

use common::*;
use echorelay::event::{now, Event, Keys};
use serde_json::{json, Value};

/// NDK syncs `filter` (one filter or an array of them) with the relay at
/// `url`, its cache holding `cached`: what tests/js/ndk.mjs printed.
async fn ndk_sync(url: &str, filter: Value, cached: &[Event]) -> Value {
    let events: Vec<Value> = cached
        .iter()
        .map(|e| serde_json::from_str(&e.to_json()).expect("event JSON"))
        .collect();
    let args = vec![url.to_string(), filter.to_string()];
    let stdin = Value::Array(events).to_string();
    tokio::task::spawn_blocking(move || run_node_json("ndk.mjs", &args, &stdin))
        .await
        .expect("ndk.mjs runner")
}

fn sorted_ids(events: &[Event]) -> Value {
    let mut ids: Vec<String> = events.iter().map(Event::id_hex).collect();
    ids.sort();
    json!(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndk_sync_reaches_the_right_set() {
    ensure_node_modules();
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    let base = now() - 1000;
    let events: Vec<Event> = (0..120)
        .map(|i| event_at(&keys, 1, base + i, vec![], &format!("ndk {i}")))
        .collect();
    for e in &events[..80] {
        c.publish_ok(e).await;
    }
    // NDK's cache holds 40..120: it needs 0..40 and has 80..120.
    let result = ndk_sync(&relay.url, json!({"kinds": [1]}), &events[40..]).await;
    assert_eq!(result["negentropy"], true, "{result}");
    assert_eq!(result["neg_open"], json!([[{"kinds": [1]}]]), "{result}");
    assert_eq!(result["need"], sorted_ids(&events[..40]));
    assert_eq!(result["have"], sorted_ids(&events[80..]));
    // It fetched what it needed, and only that, into its cache.
    assert_eq!(result["fetched"], sorted_ids(&events[..40]));
    assert_eq!(result["cached"], 120);
    relay.stop().await;
}

/// Two overlapping filters in one NEG-OPEN: the relay reconciles over their
/// union, each event once, and leaves out what matches neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndk_sync_with_two_filters_reaches_their_union() {
    ensure_node_modules();
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    let base = now() - 1000;
    // Even i: kind 1, odd i: kind 7.
    let events: Vec<Event> = (0..120u64)
        .map(|i| {
            let kind = if i % 2 == 0 { 1 } else { 7 };
            event_at(&keys, kind, base + i, vec![], &format!("ndk {i}"))
        })
        .collect();
    let filters = json!([{"kinds": [1]}, {"kinds": [1, 7], "since": base + 60}]);
    let in_union = |i: usize| i.is_multiple_of(2) || i >= 60;
    // Kind 9 matches neither filter: 10 on the relay only, 10 in the cache only.
    let noise: Vec<Event> = (0..20)
        .map(|i| event_at(&keys, 9, base + i, vec![], &format!("noise {i}")))
        .collect();
    for e in events[..80].iter().chain(&noise[..10]) {
        c.publish_ok(e).await;
    }
    let cached: Vec<Event> = events[40..].iter().chain(&noise[10..]).cloned().collect();
    let result = ndk_sync(&relay.url, filters.clone(), &cached).await;
    assert_eq!(result["negentropy"], true, "{result}");
    assert_eq!(result["neg_open"], json!([filters]), "{result}");
    let need: Vec<Event> = events[..40]
        .iter()
        .enumerate()
        .filter(|(i, _)| in_union(*i))
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(need.len(), 20);
    assert_eq!(result["need"], sorted_ids(&need));
    assert_eq!(result["have"], sorted_ids(&events[80..]));
    assert_eq!(result["fetched"], sorted_ids(&need));
    relay.stop().await;
}
