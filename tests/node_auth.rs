//! The NODE-AUTH exchange of docs/PROTOCOL.md as another implementation
//! would speak it, over a real socket: a nonce in, a proof out that names
//! the nonce and this relay's URL and is signed by its node key; one proof
//! per connection; a malformed nonce is refused.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_proves_its_node_key_once_per_connection() {
    let relay = TestRelay::start().await;
    let node = relay.node_key().public_key();
    let mut c = Raw::connect(&relay.url).await;
    let nonce = "5a".repeat(32);
    let reply = c.ask(json!(["NODE-AUTH", nonce])).await;
    assert_eq!(reply[0], "NODE-AUTH", "{reply}");
    let proof = reply[1].to_string();
    assert_eq!(
        echorelay::node_auth::check(&proof, &node, &nonce, &relay.url),
        Ok(())
    );
    // The proof is bound: to this nonce, this URL and this key.
    let other_nonce = "00".repeat(32);
    assert!(echorelay::node_auth::check(&proof, &node, &other_nonce, &relay.url).is_err());
    assert!(echorelay::node_auth::check(&proof, &node, &nonce, "ws://elsewhere:1").is_err());
    assert!(echorelay::node_auth::check(&proof, &[9; 32], &nonce, &relay.url).is_err());

    let again = c.ask(json!(["NODE-AUTH", "6b".repeat(32)])).await;
    assert_eq!(again[0], "NOTICE", "{again}");
    assert!(again[1].as_str().unwrap().contains("once per connection"));

    let mut fresh = Raw::connect(&relay.url).await;
    for bad in [
        json!(["NODE-AUTH", "short"]),
        json!(["NODE-AUTH", 7]),
        json!(["NODE-AUTH"]),
    ] {
        let reply: Value = fresh.ask(bad.clone()).await;
        assert_eq!(reply[0], "NOTICE", "{bad} -> {reply}");
    }
    relay.stop().await;
}
