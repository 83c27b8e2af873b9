//! The example README and PROTOCOL.md point to: `negentropy_harness`, the
//! reference driver's line protocol. A client and a server process (vector
//! and `--tree`) reconcile two sets to `done` and report exactly the
//! difference.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn harness() -> std::path::PathBuf {
    // target/debug/deps/<test> → target/debug/examples/negentropy_harness
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    path.pop();
    path.push("examples");
    path.push("negentropy_harness");
    path
}

fn run_pair(tree: bool) {
    let spawn = || {
        let mut command = Command::new(harness());
        if tree {
            command.arg("--tree");
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the harness (built by cargo test --all-targets)")
    };
    let (mut client, mut server) = (spawn(), spawn());
    let id = |n: u32| format!("{n:064x}");
    let mut cin = client.stdin.take().unwrap();
    let mut sin = server.stdin.take().unwrap();
    for n in 0..50 {
        writeln!(cin, "item,{},{}", 1000 + n, id(n)).unwrap();
    }
    for n in 10..60 {
        writeln!(sin, "item,{},{}", 1000 + n, id(n)).unwrap();
    }
    writeln!(cin, "seal\ninitiate").unwrap();
    writeln!(sin, "seal").unwrap();
    let mut cout = BufReader::new(client.stdout.take().unwrap()).lines();
    let mut sout = BufReader::new(server.stdout.take().unwrap()).lines();
    let (mut have, mut need) = (0, 0);
    loop {
        let line = cout.next().expect("client line").unwrap();
        if line == "done" {
            break;
        }
        if line.starts_with("have,") {
            have += 1;
        } else if line.starts_with("need,") {
            need += 1;
        } else {
            assert!(line.starts_with("msg,"), "{line}");
            writeln!(sin, "{line}").unwrap();
            let reply = sout.next().expect("server line").unwrap();
            assert!(reply.starts_with("msg,"), "{reply}");
            writeln!(cin, "{reply}").unwrap();
        }
    }
    assert_eq!((have, need), (10, 10));
    drop((cin, sin));
    let _ = (client.wait(), server.wait());
}

#[test]
fn the_harness_reconciles_on_the_vector_and_the_tree() {
    run_pair(false);
    run_pair(true);
}
