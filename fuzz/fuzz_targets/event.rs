//! Event parsing: a parsed event re-serialises to JSON that parses to itself.
#![no_main]

use echorelay::event::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(event) = Event::from_json(text) {
        let again = Event::from_json(&event.to_json()).expect("our JSON parses");
        assert_eq!(again, event);
        let _ = event.verify();
    }
});
