//! The example README and PROTOCOL.md point to: `negentropy_harness`, the
//! reference driver's line protocol. A client and a server side (vector and
//! tree) reconcile two sets to `done` over socket pairs and report exactly the
//! difference. The example's own source is compiled in here: `cargo test
//! --all-targets` builds examples only as test targets, which have no `main`
//! to run as a process.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

#[allow(dead_code)]
#[path = "../examples/negentropy_harness.rs"]
mod harness;

/// One side of the harness on its own thread, fed and read through a
/// socket pair (the stand-in for its stdin and stdout).
fn side(tree: bool) -> (UnixStream, std::io::Lines<BufReader<UnixStream>>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let output = theirs.try_clone().unwrap();
    std::thread::spawn(move || harness::run(BufReader::new(theirs), output, tree, 0));
    let replies = BufReader::new(ours.try_clone().unwrap()).lines();
    (ours, replies)
}

fn run_pair(tree: bool) {
    let (mut cin, mut cout) = side(tree);
    let (mut sin, mut sout) = side(tree);
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
