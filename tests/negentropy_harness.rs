//! The example README and PROTOCOL.md point to: `negentropy_harness`, the
//! reference driver's line protocol. A client and a server side (vector and
//! tree) reconcile two sets to `done` over socket pairs and report exactly the
//! difference, and each side replays the reference traces of
//! tests/data/negentropy (from shared/negentropy-vectors) line for line.
//! The example's own source is compiled in here: `cargo test --all-targets`
//! builds examples only as test targets, which have no `main` to run as a
//! process; deleting or breaking the example fails this test's build.

mod common;

use common::vectors::load;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

#[allow(dead_code)]
#[path = "../examples/negentropy_harness.rs"]
mod harness;

/// One side of the harness on its own thread, fed and read through a
/// socket pair (the stand-in for its stdin and stdout).
fn side(tree: bool, frame_limit: usize) -> (UnixStream, std::io::Lines<BufReader<UnixStream>>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let output = theirs.try_clone().unwrap();
    std::thread::spawn(move || harness::run(BufReader::new(theirs), output, tree, frame_limit));
    let replies = BufReader::new(ours.try_clone().unwrap()).lines();
    (ours, replies)
}

fn run_pair(tree: bool) {
    let (mut cin, mut cout) = side(tree, 0);
    let (mut sin, mut sout) = side(tree, 0);
    let id = |n: u32| format!("{n:064x}");
    for n in 0..50 {
        writeln!(cin, "item,{},{}", 1000 + n, id(n)).unwrap();
    }
    for n in 10..60 {
        writeln!(sin, "item,{},{}", 1000 + n, id(n)).unwrap();
    }
    writeln!(cin, "seal\ninitiate").unwrap();
    writeln!(sin, "seal").unwrap();
    let (mut have, mut need) = (Vec::new(), Vec::new());
    loop {
        let line = cout.next().expect("client line").unwrap();
        if line == "done" {
            break;
        }
        if let Some(found) = line.strip_prefix("have,") {
            have.push(found.to_string());
        } else if let Some(found) = line.strip_prefix("need,") {
            need.push(found.to_string());
        } else {
            assert!(line.starts_with("msg,"), "{line}");
            writeln!(sin, "{line}").unwrap();
            let reply = sout.next().expect("server line").unwrap();
            assert!(reply.starts_with("msg,"), "{reply}");
            writeln!(cin, "{reply}").unwrap();
        }
    }
    have.sort();
    need.sort();
    assert_eq!(have, (0..10).map(id).collect::<Vec<_>>());
    assert_eq!(need, (50..60).map(id).collect::<Vec<_>>());
}

#[test]
fn the_harness_reconciles_on_the_vector_and_the_tree() {
    run_pair(false);
    run_pair(true);
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Feeds a side its items and seals it.
fn seal(input: &mut UnixStream, items: &serde_json::Value) {
    for pair in items.as_array().expect("items") {
        writeln!(input, "item,{},{}", pair[0], pair[1].as_str().unwrap()).unwrap();
    }
    writeln!(input, "seal").unwrap();
}

/// One reference trace through the harness, as responder and as initiator.
fn replay(name: &str, tree: bool) {
    let v = load(name);
    let limit = |key: &str| v[key].as_u64().unwrap_or(0) as usize;
    let trace: Vec<String> = v["trace"]
        .as_array()
        .expect("trace")
        .iter()
        .map(|m| format!("msg,{}", m["msg"].as_str().unwrap()))
        .collect();

    let (mut sin, mut sout) = side(tree, limit("server_frame_size_limit"));
    seal(&mut sin, &v["server_items"]);
    for pair in trace.chunks(2) {
        writeln!(sin, "{}", pair[0]).unwrap();
        let reply = sout.next().expect("server line").unwrap();
        assert_eq!(reply, pair[1], "{name} (tree {tree}): server reply");
    }

    let (mut cin, mut cout) = side(tree, limit("client_frame_size_limit"));
    seal(&mut cin, &v["client_items"]);
    writeln!(cin, "initiate").unwrap();
    assert_eq!(cout.next().unwrap().unwrap(), trace[0], "{name}: initial");
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut at = 1;
    loop {
        writeln!(cin, "{}", trace[at]).unwrap();
        let line = loop {
            let line = cout.next().expect("client line").unwrap();
            if let Some(id) = line.strip_prefix("have,") {
                have.push(id.to_string());
            } else if let Some(id) = line.strip_prefix("need,") {
                need.push(id.to_string());
            } else {
                break line;
            }
        };
        if line == "done" {
            assert_eq!(at + 1, trace.len(), "{name} (tree {tree}): done early");
            break;
        }
        assert_eq!(line, trace[at + 1], "{name} (tree {tree}): client message");
        at += 2;
    }
    have.sort();
    have.dedup();
    need.sort();
    need.dedup();
    assert_eq!(have, strings(&v["have"]), "{name} (tree {tree}): have");
    assert_eq!(need, strings(&v["need"]), "{name} (tree {tree}): need");
}

#[test]
fn the_harness_replays_every_reference_trace_in_both_storages() {
    let dir = format!("{}/tests/data/negentropy", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json.gz") && !n.starts_with("00-"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for name in &names {
        replay(name, false);
        replay(name, true);
    }
    // Version fallback: an unsupported version gets the single byte 0x61.
    let v = load("00-version-fallback.json.gz");
    for tree in [false, true] {
        let (mut sin, mut sout) = side(tree, 0);
        seal(&mut sin, &v["server_items"]);
        for exchange in v["exchanges"].as_array().unwrap() {
            writeln!(sin, "msg,{}", exchange["client"].as_str().unwrap()).unwrap();
            let reply = sout.next().unwrap().unwrap();
            assert_eq!(
                reply,
                format!("msg,{}", exchange["server"].as_str().unwrap())
            );
        }
    }
}
