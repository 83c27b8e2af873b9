//! Client → relay message parsing: any bytes from a socket. Also what reads
//! a message too large to parse normally (its type and id) and NEG-OPEN's
//! filter (an object or an array of filters).
#![no_main]

use echorelay::relay::messages::{
    addressee, message_type, neg_open_filters, parse_client_message, ClientMessage,
    ParseLimits,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = message_type(text);
    let _ = addressee(text);
    let limits = ParseLimits { max_filters: 32, max_subid_length: 64 };
    match parse_client_message(text, &limits) {
        Ok(ClientMessage::Event(raw)) => {
            if let Ok(event) = echorelay::event::Event::from_raw(raw) {
                let _ = event.verify();
            }
        }
        Ok(ClientMessage::NegOpen { filter, .. }) => {
            let _ = neg_open_filters(filter, 32);
        }
        _ => {}
    }
});
