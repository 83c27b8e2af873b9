//! Graph sync input from the network: socket messages and HTTP bodies
//! (tx/batch, since), NIP-98 authorization headers and snapshot frame
//! streams (plain and gzip). Any bytes give a parsed request or a clear
//! reason, never a panic.
#![no_main]

use echorelay::graph::log::BatchRequest;
use echorelay::graph::messages;
use echorelay::graph::snapshot::read_frames;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_frames(data, 1 << 24, |_| Ok(()));
    let _ = read_frames(flate2::read::GzDecoder::new(data), 1 << 24, |_| Ok(()));
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = messages::parse(text);
    let _ = serde_json::from_str::<messages::ServerMessage>(text);
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = messages::since(value.get("since"));
        if let Ok(batch) = BatchRequest::parse(&value, 512 * 1024) {
            if let Ok(txs) = batch.txs {
                assert!(!txs.is_empty());
            }
        }
    }
    let _ = echorelay::auth::check_nip98(text, "GET", "/graphs", "node.example");
});
