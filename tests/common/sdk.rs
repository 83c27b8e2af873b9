//! nostr-sdk, the independent Rust client: one holding `events` in its own
//! database (what its `sync` offers up), connected to a relay.

use nostr_sdk::prelude::*;

/// A nostr-sdk client whose database holds `events`, connected to `url`.
pub async fn sdk_client_holding(url: &str, events: &[Event]) -> Client {
    let client = Client::builder()
        .database(nostr_memory::MemoryDatabase::unbounded())
        .build();
    for event in events {
        client.database().save_event(event).await.unwrap();
    }
    client.add_relay(url).await.unwrap();
    client
        .connect()
        .and_wait(std::time::Duration::from_secs(5))
        .await;
    client
}
