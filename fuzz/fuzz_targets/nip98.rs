//! NIP-98 `Authorization: Nostr ...` headers from the network: any bytes as
//! the header value, and any bytes as the event JSON inside valid base64.
//! Every input gives a clear error (nothing here is signed by a key the
//! target holds), never a panic; a decoded event's payload tag is either a
//! sha256 or an error.
#![no_main]

use base64::Engine;
use echorelay::auth::{check_nip98, decode_nip98, nip98_payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    for header in [std::str::from_utf8(data).ok(), Some(encoded.as_str())]
        .into_iter()
        .flatten()
    {
        assert!(check_nip98(header, "POST", "/echo/push", "127.0.0.1:7777").is_err());
        if let Ok(event) = decode_nip98(header) {
            let _ = nip98_payload(&event);
        }
    }
});
