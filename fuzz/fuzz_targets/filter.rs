//! NIP-01 filter parsing, and the round trip through its canonical form.
#![no_main]

use echorelay::filter::Filter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(filter) = Filter::from_json(text) {
        let again = Filter::from_value(&filter.to_value()).expect("canonical form parses");
        assert_eq!(again, filter);
    }
});
