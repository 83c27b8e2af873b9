//! Interoperability with an independent client: rust-nostr's nostr-sdk
//! publishes, queries and subscribes against our relay.

mod common;

use std::time::Duration;

use common::*;
use nostr_sdk::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_publish_fetch_and_subscribe() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let client = Client::new();
    client.add_relay(relay.url.as_str()).await.unwrap();
    client.connect().and_wait(Duration::from_secs(5)).await;

    let mut sent = Vec::new();
    for i in 0..5u64 {
        let event = EventBuilder::new(Kind::TextNote, format!("hello {i}"))
            .tag(Tag::hashtag("echorelay"))
            .custom_created_at(Timestamp::from(Timestamp::now().as_secs() - 10 + i))
            .finalize(&keys)
            .unwrap();
        let out = client.send_event(&event).await.unwrap();
        assert_eq!(out.success.len(), 1, "relay refused: {:?}", out.failed);
        sent.push(event.id);
    }
    // A replaceable event and an update to it.
    let meta1 = EventBuilder::new(Kind::Metadata, "{\"name\":\"a\"}")
        .custom_created_at(Timestamp::from(Timestamp::now().as_secs() - 5))
        .finalize(&keys)
        .unwrap();
    let meta2 = EventBuilder::new(Kind::Metadata, "{\"name\":\"b\"}")
        .finalize(&keys)
        .unwrap();
    client.send_event(&meta1).await.unwrap();
    client.send_event(&meta2).await.unwrap();

    let notes = client
        .fetch_events(
            Filter::new()
                .author(keys.public_key())
                .kind(Kind::TextNote)
                .hashtag("echorelay"),
        )
        .timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(notes.len(), 5);
    for id in &sent {
        assert!(notes.iter().any(|e| e.id == *id));
    }
    let limited = client
        .fetch_events(Filter::new().kind(Kind::TextNote).limit(2))
        .timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);
    let profile = client
        .fetch_events(Filter::new().author(keys.public_key()).kind(Kind::Metadata))
        .timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(profile.len(), 1);
    assert_eq!(profile.first().unwrap().id, meta2.id);

    // Live: nostr-sdk subscribes, our raw client publishes.
    let mut notifications = client.notifications();
    client
        .subscribe(Filter::new().kind(Kind::Custom(7777)))
        .await
        .unwrap();
    let other = echorelay::event::Keys::generate();
    let mut raw = relay.client().await;
    let live = event_at(&other, 7777, echorelay::event::now(), vec![], "live");
    raw.publish_ok(&live).await;
    let got = tokio::time::timeout(WAIT, async {
        while let Some(n) = notifications.next().await {
            if let ClientNotification::Event { event, .. } = n {
                return event.id.to_hex();
            }
        }
        String::new()
    })
    .await
    .expect("live event not delivered to nostr-sdk");
    assert_eq!(got, live.id_hex());

    // Our signatures verify in nostr-sdk, and theirs in ours (both directions).
    let parsed = Event::from_json(live.to_json()).unwrap();
    parsed.verify().unwrap();
    let theirs = echorelay::event::Event::from_json(&meta2.as_json()).unwrap();
    theirs.verify().unwrap();
    client.shutdown().await;
    relay.stop().await;
}

/// Our id check serialises the canonical array itself: events that another
/// implementation signed over awkward strings (control characters, quotes,
/// backslashes, non-ASCII, U+2028) must be accepted and come back equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_events_with_awkward_strings_are_accepted() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let client = Client::new();
    client.add_relay(relay.url.as_str()).await.unwrap();
    client.connect().and_wait(Duration::from_secs(5)).await;
    let awkward = [
        "\u{1}\u{1f}\u{7f} ctrl",
        "quote \" backslash \\ slash /",
        "nl \n cr \r tab \t bs \u{8} ff \u{c}",
        "é ✓ 🎉 \u{2028}\u{2029}",
        "",
    ];
    let mut sent = Vec::new();
    for (i, text) in awkward.iter().enumerate() {
        let event = EventBuilder::new(Kind::TextNote, *text)
            .tag(Tag::hashtag("awkward"))
            .tag(Tag::parse(["x", text, ""]).unwrap())
            .custom_created_at(Timestamp::from(Timestamp::now().as_secs() - 10 + i as u64))
            .finalize(&keys)
            .unwrap();
        let out = client.send_event(&event).await.unwrap();
        assert_eq!(out.success.len(), 1, "refused {text:?}: {:?}", out.failed);
        sent.push(event);
    }
    let back = client
        .fetch_events(Filter::new().author(keys.public_key()).hashtag("awkward"))
        .timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(back.len(), sent.len());
    for event in &sent {
        let got = back.iter().find(|e| e.id == event.id).expect("stored");
        assert_eq!(got.content, event.content);
        assert_eq!(got.tags, event.tags);
        got.verify().expect("served events still verify");
    }
}
