//! Differential tests against the `negentropy` crate (0.5.3) as an oracle:
//! random sets with overlaps and clustered timestamps, both roles, frame
//! limits 0 / 4096 / 60 000, on the vector and on the LMDB tree. Without a frame limit the messages must be
//! identical; with one, the crate's cut differs from the reference (see
//! shared/FINDINGS.md), so we require the same have/need sets and
//! convergence.

use echorelay::negentropy::{Diff, Item, Negentropy, StandaloneTree, VectorStorage};
use negentropy::{Id, Negentropy as Oracle, NegentropyStorageVector};
use proptest::prelude::*;

fn oracle_storage(items: &[Item]) -> NegentropyStorageVector {
    let mut s = NegentropyStorageVector::new();
    for item in items {
        s.insert(item.timestamp, Id::from_byte_array(item.id))
            .unwrap();
    }
    s.seal().unwrap();
    s
}

/// Items: `shared` in both sets, `only_a` / `only_b` on one side; few
/// distinct timestamps when `clustered`.
fn sets(
    seed: u64,
    shared: usize,
    only_a: usize,
    only_b: usize,
    clustered: bool,
) -> (Vec<Item>, Vec<Item>) {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let item = |next: &mut dyn FnMut() -> u64| {
        let mut id = [0u8; 32];
        for chunk in id.chunks_mut(8) {
            chunk.copy_from_slice(&next().to_le_bytes());
        }
        let ts = if clustered {
            1_700_000_000 + next() % 5
        } else {
            1_700_000_000 + next() % 1_000_000
        };
        Item::new(ts, id)
    };
    let common: Vec<Item> = (0..shared).map(|_| item(&mut next)).collect();
    let mut a = common.clone();
    let mut b = common;
    a.extend((0..only_a).map(|_| item(&mut next)));
    b.extend((0..only_b).map(|_| item(&mut next)));
    (a, b)
}

fn sorted(mut v: Vec<[u8; 32]>) -> Vec<[u8; 32]> {
    v.sort();
    v.dedup();
    v
}

/// Our initiator against the oracle responder.
fn ours_vs_oracle(a: &[Item], b: &[Item], frame: usize) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    let mine = VectorStorage::new(a.to_vec());
    let mut client = Negentropy::new(&mine, frame).unwrap();
    let mut server = Oracle::owned(oracle_storage(b), frame as u64).unwrap();
    let mut msg = client.initiate().unwrap();
    let mut diff = Diff::default();
    for _ in 0..10_000 {
        let reply = server.reconcile(&msg).unwrap();
        match client.reconcile_initiator(&reply, &mut diff).unwrap() {
            Some(next) => msg = next,
            None => return (sorted(diff.have), sorted(diff.need)),
        }
    }
    panic!("no convergence");
}

/// The oracle as initiator against `respond`; returns its have/need.
fn oracle_initiator(
    a: &[Item],
    frame: usize,
    mut respond: impl FnMut(&[u8]) -> Vec<u8>,
) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    let mut client = Oracle::owned(oracle_storage(a), frame as u64).unwrap();
    let mut msg = client.initiate().unwrap();
    let (mut have, mut need) = (Vec::new(), Vec::new());
    for _ in 0..10_000 {
        let reply = respond(&msg);
        match client
            .reconcile_with_ids(&reply, &mut have, &mut need)
            .unwrap()
        {
            Some(next) => msg = next,
            None => {
                let have = have.iter().map(|id| *id.as_bytes()).collect();
                let need = need.iter().map(|id| *id.as_bytes()).collect();
                return (sorted(have), sorted(need));
            }
        }
    }
    panic!("no convergence");
}

/// The oracle initiator against our vector responder; without a frame limit
/// our replies must equal the oracle responder's.
fn oracle_vs_ours(a: &[Item], b: &[Item], frame: usize) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    let theirs = VectorStorage::new(b.to_vec());
    let mut server = Negentropy::new(&theirs, frame).unwrap();
    let mut twin = Oracle::owned(oracle_storage(b), frame as u64).unwrap();
    oracle_initiator(a, frame, |msg| {
        let reply = server.reconcile(msg).unwrap();
        if frame == 0 {
            assert_eq!(
                reply,
                twin.reconcile(msg).unwrap(),
                "responder output differs from the oracle"
            );
        }
        reply
    })
}

/// The oracle initiator against our LMDB-tree responder.
fn oracle_vs_tree(a: &[Item], b: &[Item], frame: usize) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    let dir = tempfile::tempdir().unwrap();
    let tree = StandaloneTree::create(dir.path(), b.iter().copied()).unwrap();
    oracle_initiator(a, frame, |msg| {
        tree.with_reader(|r| Negentropy::new(r, frame).unwrap().reconcile(msg).unwrap())
            .unwrap()
    })
}

fn expected(a: &[Item], b: &[Item]) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    let ids_a: std::collections::HashSet<_> = a.iter().map(|i| i.id).collect();
    let ids_b: std::collections::HashSet<_> = b.iter().map(|i| i.id).collect();
    (
        sorted(ids_a.difference(&ids_b).copied().collect()),
        sorted(ids_b.difference(&ids_a).copied().collect()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn both_roles_reach_the_true_difference(seed in any::<u64>(), shared in 0usize..3000, only_a in 0usize..300,
                                              only_b in 0usize..300, clustered in any::<bool>(), frame_pick in 0usize..3) {
        let frame = [0usize, 4096, 60_000][frame_pick];
        let (a, b) = sets(seed, shared, only_a, only_b, clustered);
        let want = expected(&a, &b);
        prop_assert_eq!(ours_vs_oracle(&a, &b, frame), want.clone());
        prop_assert_eq!(oracle_vs_ours(&a, &b, frame), want.clone());
        prop_assert_eq!(oracle_vs_tree(&a, &b, frame), want);
    }
}

#[test]
fn large_sets_with_frame_limits() {
    for frame in [0usize, 4096, 60_000] {
        let (a, b) = sets(42, 20_000, 1_000, 1_500, false);
        let want = expected(&a, &b);
        assert_eq!(ours_vs_oracle(&a, &b, frame), want, "frame {frame}");
        assert_eq!(oracle_vs_ours(&a, &b, frame), want, "frame {frame}");
        assert_eq!(oracle_vs_tree(&a, &b, frame), want, "tree, frame {frame}");
    }
}
