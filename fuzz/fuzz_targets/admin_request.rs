//! Control API request bodies: any bytes for any method name parse into a
//! typed call or a clear error, never a panic.
#![no_main]

use echorelay::admin::Call;
use libfuzzer_sys::fuzz_target;

const METHODS: &[&str] = &[
    "Ready", "Start", "Stop", "GetSyncStatus", "GetPeers", "AddPeer", "RemovePeer",
    "TriggerSync", "GetPeerSyncState", "ListSessions", "CloseSession", "SyncWithPeer",
    "Unknown",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let method = METHODS[selector as usize % METHODS.len()];
    let _ = Call::parse(method, body);
});
