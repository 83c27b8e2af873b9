//! Client → relay message parsing: any bytes from a socket.
#![no_main]

use echorelay::relay::messages::{parse_client_message, ClientMessage, ParseLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let limits = ParseLimits { max_filters: 32, max_subid_length: 64 };
    if let Ok(ClientMessage::Event(raw)) = parse_client_message(text, &limits) {
        if let Ok(event) = echorelay::event::Event::from_raw(raw) {
            let _ = event.verify();
        }
    }
});
