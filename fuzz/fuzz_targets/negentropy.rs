//! Negentropy messages from a peer, in both roles, against a small set.
#![no_main]

use echorelay::negentropy::{Diff, Item, Negentropy, VectorStorage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let items = (0u8..40).map(|i| Item::new(1_000 + (i / 3) as u64, [i; 32])).collect();
    let storage = VectorStorage::new(items);
    if let Ok(mut responder) = Negentropy::new(&storage, 4096) {
        let _ = responder.reconcile(data);
    }
    if let Ok(mut initiator) = Negentropy::new(&storage, 0) {
        let _ = initiator.initiate();
        let mut diff = Diff::default();
        let _ = initiator.reconcile_initiator(data, &mut diff);
    }
});
