//! The mesh handshake and the request origins from the network: a peer's
//! NODE-AUTH proof (any bytes as the event JSON), the relay URL and the
//! forwarding headers a NIP-42 check reads. Any bytes give a verdict or a
//! clear error, never a panic.
#![no_main]

use echorelay::node_auth::{check, is_nonce};
use echorelay::edge::TrustedProxies;
use echorelay::relay::origin::normalize_url;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let nonce = "00".repeat(32);
    assert!(check(text, &[7u8; 32], &nonce, "ws://127.0.0.1:7777").is_err());
    let _ = is_nonce(text);
    if let Some(url) = normalize_url(text) {
        // One spelling: normalising again changes nothing.
        assert_eq!(normalize_url(&url).as_deref(), Some(url.as_str()));
    }
    let list: Vec<String> = text.split(',').map(str::to_string).collect();
    let _ = TrustedProxies::parse(&list);
});
