//! Negentropy benchmarks (issue 3), each next to a baseline from the same run:
//!
//! 1. First reply to a NEG-OPEN over n = 10 k, 100 k, 1 M items, answered
//!    from the persistent LMDB tree, next to what a relay without a tree
//!    pays: building a sorted vector of the n items, then replying.
//! 2. Full reconciliation at n = 1 M with d = 0, 100, 10 000 differences,
//!    frame limits none / 60 kB (client) + 500 kB (server): rounds, bytes
//!    each way, milliseconds; our tree-backed responder and vector
//!    initiator next to the `negentropy` crate with sorted vectors.
//! 3. Tree insert throughput (ids/s) in batches of 10 000.
//! 4. Server frame limit (issue 14): rounds and bytes for the `negentropy`
//!    crate as initiator with 60 kB frames (nostr-sdk's default) against our
//!    tree responder at 250 kB (the old default) and 500 kB (strfry's, the
//!    new default), at n = 100 k and 1 M with d = 2 000.
//!
//! `cargo bench --bench negentropy` (N=1000000 by default); `cargo test`
//! runs a small smoke pass.

use std::time::Instant;

use echorelay::negentropy::{Diff, Item, Negentropy, StandaloneTree, VectorStorage};
use negentropy::{Id, Negentropy as Oracle, NegentropyStorageVector};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn item(&mut self) -> Item {
        let mut id = [0u8; 32];
        for chunk in id.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        Item::new(1_600_000_000 + self.next() % 100_000_000, id)
    }
}

fn items(n: usize, seed: u64) -> Vec<Item> {
    let mut rng = Rng(seed | 1);
    let mut v: Vec<Item> = (0..n).map(|_| rng.item()).collect();
    v.sort_unstable();
    v
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn first_reply(n: usize) {
    let server_items = items(n, 7);
    let dir = tempfile::tempdir().expect("tempdir");
    let built = Instant::now();
    let tree = StandaloneTree::create(dir.path(), server_items.iter().copied()).expect("tree");
    let insert_rate = n as f64 / built.elapsed().as_secs_f64();
    // A client holding a slightly different set sends its initial message.
    let mut client_items = server_items.clone();
    client_items.truncate(n - n / 100);
    let client = VectorStorage::new(client_items);
    let initial = Negentropy::new(&client, 0)
        .expect("client")
        .initiate()
        .expect("initiate");

    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        tree.with_reader(|r| {
            Negentropy::new(r, 500_000)
                .expect("server")
                .reconcile(&initial)
                .expect("reply")
        })
        .expect("reader");
    }
    let tree_ms = ms(started) / rounds as f64;
    let started = Instant::now();
    let reps = if n >= 1_000_000 { 3 } else { 10 };
    for _ in 0..reps {
        let vector = VectorStorage::new(server_items.clone());
        Negentropy::new(&vector, 500_000)
            .expect("server")
            .reconcile(&initial)
            .expect("reply");
    }
    let vector_ms = ms(started) / reps as f64;
    println!(
        "| {n:>9} | {tree_ms:>10.3} ms | {vector_ms:>12.1} ms | {:>7.0}x | {insert_rate:>10.0} |",
        vector_ms / tree_ms
    );
}

/// Runs a reconciliation, returning (rounds, bytes up, bytes down, ms, have, need).
fn run_ours(
    client: &VectorStorage,
    tree: &StandaloneTree,
    client_frame: usize,
    server_frame: usize,
) -> (usize, usize, usize, f64, usize, usize) {
    let started = Instant::now();
    let mut neg = Negentropy::new(client, client_frame).expect("client");
    let mut msg = neg.initiate().expect("initiate");
    let (mut up, mut down, mut rounds) = (msg.len(), 0, 0);
    let mut diff = Diff::default();
    loop {
        let reply = tree
            .with_reader(|r| {
                Negentropy::new(r, server_frame)
                    .expect("server")
                    .reconcile(&msg)
                    .expect("reply")
            })
            .expect("reader");
        rounds += 1;
        down += reply.len();
        match neg
            .reconcile_initiator(&reply, &mut diff)
            .expect("client round")
        {
            Some(next) => {
                up += next.len();
                msg = next;
            }
            None => break,
        }
    }
    diff.have.sort_unstable();
    diff.have.dedup();
    diff.need.sort_unstable();
    diff.need.dedup();
    (
        rounds,
        up,
        down,
        ms(started),
        diff.have.len(),
        diff.need.len(),
    )
}

fn oracle_storage(items: &[Item]) -> NegentropyStorageVector {
    let mut s = NegentropyStorageVector::with_capacity(items.len());
    for i in items {
        s.insert(i.timestamp, Id::from_byte_array(i.id))
            .expect("insert");
    }
    s.seal().expect("seal");
    s
}

/// The `negentropy` crate as initiator over `client`, each message answered
/// by `respond`: (rounds, bytes up, bytes down, ms, have, need).
fn crate_initiator(
    client: &[Item],
    client_frame: usize,
    mut respond: impl FnMut(&[u8]) -> Vec<u8>,
) -> (usize, usize, usize, f64, usize, usize) {
    let cs = oracle_storage(client);
    let started = Instant::now();
    let mut c = Oracle::borrowed(&cs, client_frame as u64).expect("client");
    let mut msg = c.initiate().expect("initiate");
    let (mut up, mut down, mut rounds) = (msg.len(), 0, 0);
    let (mut have, mut need) = (Vec::new(), Vec::new());
    loop {
        let reply = respond(&msg);
        rounds += 1;
        down += reply.len();
        match c
            .reconcile_with_ids(&reply, &mut have, &mut need)
            .expect("client round")
        {
            Some(next) => {
                up += next.len();
                msg = next;
            }
            None => break,
        }
    }
    have.sort_unstable();
    have.dedup();
    need.sort_unstable();
    need.dedup();
    (rounds, up, down, ms(started), have.len(), need.len())
}

/// The crate on both sides, with sorted in-memory vectors.
fn run_oracle(
    client: &[Item],
    server: &[Item],
    client_frame: usize,
    server_frame: usize,
) -> (usize, usize, usize, f64, usize, usize) {
    let ss = oracle_storage(server);
    let mut s = Oracle::borrowed(&ss, server_frame as u64).expect("server");
    crate_initiator(client, client_frame, |msg| s.reconcile(msg).expect("reply"))
}

/// The crate as initiator against our tree as responder.
fn run_crate_client(
    client: &[Item],
    tree: &StandaloneTree,
    client_frame: usize,
    server_frame: usize,
) -> (usize, usize, usize, f64, usize, usize) {
    crate_initiator(client, client_frame, |msg| {
        tree.with_reader(|r| {
            Negentropy::new(r, server_frame)
                .expect("server")
                .reconcile(msg)
                .expect("reply")
        })
        .expect("reader")
    })
}

/// `base` on both sides plus `d` differences, half only on the server and
/// half only on the client: (client, server), sorted.
fn diverged(base: &[Item], d: usize, seed: u64) -> (Vec<Item>, Vec<Item>) {
    let mut rng = Rng(seed);
    let (mut client, mut server) = (base.to_vec(), base.to_vec());
    for _ in 0..d / 2 {
        server.push(rng.item());
        client.push(rng.item());
    }
    client.sort_unstable();
    server.sort_unstable();
    (client, server)
}

fn server_frame_limits(sizes: &[usize]) {
    for &n in sizes {
        let (client, server) = diverged(&items(n, 21), 2000, 7);
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = StandaloneTree::create(dir.path(), server.iter().copied()).expect("tree");
        for server_frame in [250_000usize, 500_000] {
            let (rounds, up, down, ms, have, need) =
                run_crate_client(&client, &tree, 60_000, server_frame);
            let found = have + need;
            println!(
                "| {n:>9} | {server_frame:>7} | {rounds:>3} | {up:>9} | {down:>9} | {ms:>8.1} | {found} |"
            );
        }
    }
}

fn reconciliation(n: usize) {
    let base = items(n, 11);
    for d in [0usize, 100, 10_000] {
        let (client, server) = diverged(&base, d, 99);
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = StandaloneTree::create(dir.path(), server.iter().copied()).expect("tree");
        let client_vec = VectorStorage::new(client.clone());
        for (label, cf, sf) in [("none", 0usize, 0usize), ("60k/500k", 60_000, 500_000)] {
            let ours = run_ours(&client_vec, &tree, cf, sf);
            let theirs = run_oracle(&client, &server, cf, sf);
            println!(
                "| {d:>6} | {label:>8} | {:>3} / {:>3} | {:>9} / {:>9} | {:>9} / {:>9} | {:>8.1} / {:>8.1} | {}/{} |",
                ours.0, theirs.0, ours.1, theirs.1, ours.2, theirs.2, ours.3, theirs.3, ours.4 + ours.5, theirs.4 + theirs.5
            );
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 5_000 });
    println!("NEG-OPEN first reply (server frame 500 kB; client lacks 1 %)");
    println!("| n | tree reply | vector build + reply | ratio | tree inserts/s |");
    println!("|---|---|---|---|---|");
    let sizes: Vec<usize> = if full {
        vec![10_000, 100_000, n]
    } else {
        vec![n]
    };
    for size in sizes {
        first_reply(size);
    }
    println!();
    println!("Full reconciliation at n = {n}: ours (tree responder, vector initiator) / negentropy crate (vectors)");
    println!("| d | frames | rounds | bytes up | bytes down | ms | have+need |");
    println!("|---|---|---|---|---|---|---|");
    reconciliation(n);
    println!();
    println!("Server frame limit: negentropy crate initiator, 60 kB frames, d = 2 000");
    println!("| n | server frame | rounds | bytes up | bytes down | ms | have+need |");
    println!("|---|---|---|---|---|---|---|");
    let sizes: Vec<usize> = if full { vec![100_000, n] } else { vec![n] };
    server_frame_limits(&sizes);
}
