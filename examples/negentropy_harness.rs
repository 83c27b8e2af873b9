//! The reference negentropy line harness, so our reconciler can be driven by
//! hoytech/negentropy's test driver. One process per side; hex everywhere.
//!
//! stdin: `item,<created_at>,<64-hex id>` lines, `seal`, `initiate` (client
//! only), then `msg,<hex>` for each peer message. stdout: the server answers
//! every `msg` with one `msg,<hex>`; the client prints `have,<id>` /
//! `need,<id>` lines, then `msg,<hex>`, or `done` when reconciliation is
//! complete. `FRAMESIZELIMIT` sets the frame limit (unset or 0: none).
//!
//! `cargo run --example negentropy_harness`

use std::io::{BufRead, Write};

use echorelay::negentropy::{Diff, Item, Negentropy, VectorStorage};

fn main() {
    let frame_limit: usize = std::env::var("FRAMESIZELIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut items = Vec::new();
    let mut storage: Option<VectorStorage> = None;
    let mut initiator = false;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let parts: Vec<&str> = line.trim().split(',').collect();
        match parts.as_slice() {
            ["item", ts, id] => {
                let (Ok(ts), Ok(bytes)) = (ts.parse::<u64>(), hex::decode(id)) else {
                    fail("bad item line")
                };
                let Ok(id) = <[u8; 32]>::try_from(bytes.as_slice()) else {
                    fail("id must be 32 bytes")
                };
                items.push(Item::new(ts, id));
            }
            ["seal"] => storage = Some(VectorStorage::new(std::mem::take(&mut items))),
            ["initiate"] => {
                let Some(store) = storage.as_ref() else {
                    fail("initiate before seal")
                };
                let mut neg =
                    Negentropy::new(store, frame_limit).unwrap_or_else(|e| fail(&e.to_string()));
                let msg = neg.initiate().unwrap_or_else(|e| fail(&e.to_string()));
                check_frame(&msg, frame_limit);
                initiator = true;
                let _ = writeln!(out, "msg,{}", hex::encode(&msg));
            }
            ["msg", hex_msg] => {
                let Some(store) = storage.as_ref() else {
                    fail("msg before seal")
                };
                let Ok(query) = hex::decode(hex_msg) else {
                    fail("bad hex")
                };
                let mut neg =
                    Negentropy::new(store, frame_limit).unwrap_or_else(|e| fail(&e.to_string()));
                if initiator {
                    // The v1 initiator keeps no state between rounds either.
                    neg.set_initiator();
                    let mut diff = Diff::default();
                    let next = neg
                        .reconcile_initiator(&query, &mut diff)
                        .unwrap_or_else(|e| fail(&e.to_string()));
                    for id in &diff.have {
                        let _ = writeln!(out, "have,{}", hex::encode(id));
                    }
                    for id in &diff.need {
                        let _ = writeln!(out, "need,{}", hex::encode(id));
                    }
                    match next {
                        Some(next) => {
                            check_frame(&next, frame_limit);
                            let _ = writeln!(out, "msg,{}", hex::encode(&next));
                        }
                        None => {
                            let _ = writeln!(out, "done");
                        }
                    }
                } else {
                    let reply = neg
                        .reconcile(&query)
                        .unwrap_or_else(|e| fail(&e.to_string()));
                    check_frame(&reply, frame_limit);
                    let _ = writeln!(out, "msg,{}", hex::encode(&reply));
                }
            }
            [""] => {}
            _ => fail(&format!("unknown line: {line}")),
        }
        let _ = out.flush();
    }
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
