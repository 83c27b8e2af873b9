//! Echo API input from the network: ISO 8601 timestamps, versions and
//! stored state events. Any bytes give a value or `None`, never a panic.
#![no_main]

use echorelay::echo::{states, time};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(ms) = time::parse(text) {
        assert!(time::parse(&time::format(ms)).is_some());
    }
    let (a, b) = text.split_at(text.len() / 2);
    let _ = states::compare_versions(a, b);
    if let Ok(event) = echorelay::event::Event::from_json(text) {
        let _ = states::NodeState::from_event(&event);
    }
});
