//! The reference negentropy line harness, so our reconciler can be driven by
//! hoytech/negentropy's test driver. One process per side; hex everywhere.
//!
//! stdin: `item,<created_at>,<64-hex id>` lines, `seal`, `initiate` (client
//! only), then `msg,<hex>` for each peer message. stdout: the server answers
//! every `msg` with one `msg,<hex>`; the client prints `have,<id>` /
//! `need,<id>` lines, then `msg,<hex>`, or `done` when reconciliation is
//! complete. `FRAMESIZELIMIT` sets the frame limit (unset or 0: none).
//! With `--tree` the items live in the persistent LMDB fingerprint tree
//! instead of the in-memory vector.
//!
//! `cargo run --example negentropy_harness [-- --tree]`

use std::io::{BufRead, Write};

use echorelay::negentropy::{Diff, Item, Negentropy, StandaloneTree, Storage, VectorStorage};

/// The sealed item set, in memory or in an LMDB tree.
enum Backing {
    Vector(VectorStorage),
    /// The directory lives as long as the tree.
    Tree {
        tree: StandaloneTree,
        _dir: tempfile::TempDir,
    },
}

impl Backing {
    fn seal(items: Vec<Item>, tree: bool) -> Backing {
        if !tree {
            return Backing::Vector(VectorStorage::new(items));
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&e.to_string()));
        let mut items = items;
        items.sort_unstable();
        let stored =
            StandaloneTree::create(dir.path(), items).unwrap_or_else(|e| fail(&e.to_string()));
        Backing::Tree {
            tree: stored,
            _dir: dir,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&dyn Storage) -> T) -> T {
        match self {
            Backing::Vector(v) => f(v),
            Backing::Tree { tree: t, .. } => t
                .with_reader(|r| f(r))
                .unwrap_or_else(|e| fail(&e.to_string())),
        }
    }
}

fn main() {
    let frame_limit: usize = std::env::var("FRAMESIZELIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let use_tree = std::env::args().any(|a| a == "--tree");
    run(
        std::io::stdin().lock(),
        std::io::stdout().lock(),
        use_tree,
        frame_limit,
    );
}

/// Runs one side of the line protocol until `input` ends. A function of its
/// streams so tests/negentropy_harness.rs can run two sides over pipes.
pub fn run(input: impl BufRead, mut out: impl Write, use_tree: bool, frame_limit: usize) {
    let mut items = Vec::new();
    let mut storage: Option<Backing> = None;
    let mut initiator = false;
    for line in input.lines() {
        let Ok(line) = line else { break };
        let parts: Vec<&str> = line.trim().split(',').collect();
        let replies: Vec<String> = match parts.as_slice() {
            ["item", ts, id] => {
                items.push(parse_item(ts, id));
                Vec::new()
            }
            ["seal"] => {
                storage = Some(Backing::seal(std::mem::take(&mut items), use_tree));
                Vec::new()
            }
            ["initiate"] => {
                let Some(store) = storage.as_ref() else {
                    fail("initiate before seal")
                };
                initiator = true;
                store.with(|s| {
                    let mut neg =
                        Negentropy::new(s, frame_limit).unwrap_or_else(|e| fail(&e.to_string()));
                    let msg = neg.initiate().unwrap_or_else(|e| fail(&e.to_string()));
                    check_frame(&msg, frame_limit);
                    vec![format!("msg,{}", hex::encode(&msg))]
                })
            }
            ["msg", hex_msg] => {
                let Some(store) = storage.as_ref() else {
                    fail("msg before seal")
                };
                let Ok(query) = hex::decode(hex_msg) else {
                    fail("bad hex")
                };
                store.with(|s| respond(s, frame_limit, initiator, &query))
            }
            [""] => Vec::new(),
            _ => fail(&format!("unknown line: {line}")),
        };
        for reply in replies {
            let _ = writeln!(out, "{reply}");
        }
        let _ = out.flush();
    }
}

fn parse_item(ts: &str, id: &str) -> Item {
    let (Ok(ts), Ok(bytes)) = (ts.parse::<u64>(), hex::decode(id)) else {
        fail("bad item line")
    };
    let Ok(id) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        fail("id must be 32 bytes")
    };
    Item::new(ts, id)
}

/// One `msg` line: the responder's reply, or the initiator's findings and
/// next message (or `done`).
fn respond(
    storage: &dyn Storage,
    frame_limit: usize,
    initiator: bool,
    query: &[u8],
) -> Vec<String> {
    let mut neg = Negentropy::new(storage, frame_limit).unwrap_or_else(|e| fail(&e.to_string()));
    if !initiator {
        let reply = neg
            .reconcile(query)
            .unwrap_or_else(|e| fail(&e.to_string()));
        check_frame(&reply, frame_limit);
        return vec![format!("msg,{}", hex::encode(&reply))];
    }
    // The v1 initiator keeps no state between rounds either.
    neg.set_initiator();
    let mut diff = Diff::default();
    let next = neg
        .reconcile_initiator(query, &mut diff)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let mut lines: Vec<String> = diff
        .have
        .iter()
        .map(|id| format!("have,{}", hex::encode(id)))
        .collect();
    lines.extend(
        diff.need
            .iter()
            .map(|id| format!("need,{}", hex::encode(id))),
    );
    match next {
        Some(next) => {
            check_frame(&next, frame_limit);
            lines.push(format!("msg,{}", hex::encode(&next)));
        }
        None => lines.push("done".into()),
    }
    lines
}

fn check_frame(msg: &[u8], limit: usize) {
    if limit != 0 && msg.len() > limit {
        fail(&format!(
            "frame of {} bytes exceeds the limit {limit}",
            msg.len()
        ));
    }
}

fn fail(reason: &str) -> ! {
    eprintln!("negentropy_harness: {reason}");
    std::process::exit(1)
}
