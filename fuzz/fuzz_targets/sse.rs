//! Server-Sent Events from a node (what `echo-sync --monitor` reads): any
//! bytes, split anywhere, give the same events as read whole, never a panic.
#![no_main]

use echorelay::echo::sse::SseParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let cut = (cut as usize).min(stream.len());
    let (mut whole, mut split) = (Vec::new(), Vec::new());
    SseParser::default().feed(stream, |e| whole.push(e));
    let mut parser = SseParser::default();
    parser.feed(&stream[..cut], |e| split.push(e));
    parser.feed(&stream[cut..], |e| split.push(e));
    assert_eq!(whole, split);
});
