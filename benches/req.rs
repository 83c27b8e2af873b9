//! REQ throughput on a realistic mix, the binary as operators run it.
//!
//! STORED events (default 200 000; 5 000 in the smoke pass; unsigned, since
//! queries never verify) by 2 000 authors — a profile each, then notes with
//! `t` and `p` tags, reactions and reposts naming earlier notes — are written
//! through the store's batch path into a data directory. `echorelay serve`
//! of this build answers CONNS connections (default 16), each sending REQS
//! REQs (default 2 000) back to back: REQ, read to EOSE, CLOSE. The filters
//! are what clients send (home feed, replies and reactions to a note,
//! notifications, profiles, a hashtag, the global feed, ids), limits 50–500.
//!
//! `BASELINE_BIN=<echorelay built from an earlier commit>` serves a copy of
//! the same directory under the same load in the same run, and the ratio is
//! printed: `git worktree add /tmp/base <commit> && cargo build --release
//! --manifest-path /tmp/base/Cargo.toml`, then
//! `BASELINE_BIN=/tmp/base/target/release/echorelay cargo bench --bench req`.

use std::process::{Child, Command, Stdio};
use std::time::Instant;

mod common;

use echorelay::event::Event;
use echorelay::store::Store;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_echorelay");
const AUTHORS: u64 = 2_000;
const TOPICS: u64 = 300;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A deterministic 32-byte value from `n` and a domain byte.
fn bytes32(domain: u8, n: u64) -> [u8; 32] {
    let mut out = [domain; 32];
    out[..8].copy_from_slice(&n.to_be_bytes());
    out[8..16].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    out
}

fn author(a: u64) -> [u8; 32] {
    bytes32(1, a)
}

/// Event `i`: the first AUTHORS are profiles, then per ten events six
/// notes, three reactions and a repost; reactions and reposts name an
/// earlier note of the mix (a multiple of ten plus 0..5 past the profiles).
fn event(i: u64) -> Event {
    let pubkey = author(i % AUTHORS);
    let created_at = 1_700_000_000 + i * 7;
    let (kind, tags, content) = if i < AUTHORS {
        (0, vec![], format!("{{\"name\":\"author {i}\"}}"))
    } else {
        let target = noted(i.wrapping_mul(0xD6E8_FEB8_6659_FD93) % (i - AUTHORS + 1));
        let e = vec!["e".to_string(), hex::encode(bytes32(2, target))];
        let p = vec!["p".to_string(), hex::encode(author(target % AUTHORS))];
        match i % 10 {
            0..=5 => (
                1,
                vec![
                    vec!["t".to_string(), format!("topic{}", i % TOPICS)],
                    vec!["p".to_string(), hex::encode(author((i * 31) % AUTHORS))],
                ],
                format!("note {i} with a few words in it, as notes have"),
            ),
            6..=8 => (7, vec![e, p], "+".to_string()),
            _ => (6, vec![e, p], String::new()),
        }
    };
    Event {
        id: bytes32(2, i),
        pubkey,
        created_at,
        kind,
        tags,
        content,
        sig: [7; 64],
    }
}

/// The note at or before `n` (past the profiles): reactions name notes.
fn noted(n: u64) -> u64 {
    let n = n + AUTHORS;
    n - n % 10 + (n % 6)
}

/// The `r`-th filter of a client's mix over a store of `n` events.
fn filter(r: u64, n: u64) -> Value {
    let pick = |salt: u64, m: u64| r.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(salt) % m;
    let some_authors = |k: u64| -> Vec<String> {
        (0..k)
            .map(|j| hex::encode(author(pick(j * 7919, AUTHORS))))
            .collect()
    };
    let a_note = noted(pick(11, n.saturating_sub(AUTHORS).max(1)));
    match r % 10 {
        0..=2 => json!({"authors": some_authors(20), "kinds": [1, 6], "limit": 100}),
        3 => json!({"kinds": [1, 6, 7], "#e": [hex::encode(bytes32(2, a_note))], "limit": 200}),
        4 => {
            json!({"kinds": [1, 6, 7], "#p": [hex::encode(author(pick(3, AUTHORS)))], "limit": 50})
        }
        5 => json!({"kinds": [0], "authors": some_authors(50)}),
        6 => json!({"#t": [format!("topic{}", pick(5, TOPICS))], "kinds": [1], "limit": 200}),
        7 => json!({"kinds": [1], "limit": 500}),
        8 => json!({"authors": some_authors(1), "limit": 50}),
        _ => {
            json!({"ids": (0..20).map(|j| hex::encode(bytes32(2, noted(pick(j, n - AUTHORS))))).collect::<Vec<_>>()})
        }
    }
}

/// One client: `reqs` REQs of the mix back to back; returns events read.
async fn client(url: String, c: u64, reqs: u64, n: u64) -> u64 {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
        .await
        .expect("connect");
    let mut events = 0;
    for k in 0..reqs {
        let req = json!(["REQ", "s", filter(c * 1_000_003 + k, n)]).to_string();
        ws.send(Message::Text(req.into())).await.expect("send");
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().starts_with("[\"EVENT\"") => events += 1,
                Some(Ok(Message::Text(t))) if t.as_str().starts_with("[\"EOSE\"") => break,
                Some(Ok(Message::Text(t))) if t.as_str().starts_with("[\"AUTH\"") => {}
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("unexpected reply: {other:?}"),
            }
        }
        let close = json!(["CLOSE", "s"]).to_string();
        ws.send(Message::Text(close.into())).await.expect("close");
    }
    events
}

/// `echorelay serve` of `bin` on `data`, unlimited REQ rate.
fn serve(bin: &str, data: &std::path::Path, port: u16) -> Child {
    let config = data.join("bench.toml");
    std::fs::write(&config, "[limits]\nreqs_per_second = 0\n").expect("config");
    Command::new(bin)
        .args(["serve", "--quiet", "--admin-listen", "", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(data)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("serve")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// REQs/s and events/s of `bin` serving `data` to `conns` clients.
fn throughput(bin: &str, data: &std::path::Path, conns: u64, reqs: u64, n: u64) -> (f64, f64) {
    let port = free_port();
    let mut child = serve(bin, data, port);
    let url = format!("ws://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (secs, events) = runtime.block_on(async {
        common::wait_ready(&url).await;
        let started = Instant::now();
        let tasks: Vec<_> = (0..conns)
            .map(|c| tokio::spawn(client(url.clone(), c, reqs, n)))
            .collect();
        let mut events = 0;
        for task in tasks {
            events += task.await.expect("client");
        }
        (started.elapsed().as_secs_f64(), events)
    });
    let _ = child.kill();
    let _ = child.wait();
    ((conns * reqs) as f64 / secs, events as f64 / secs)
}

/// A copy of the store directory for another binary to serve.
fn copy_store(from: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("dir");
    for name in ["data.mdb", "node.key", "admin.token"] {
        let source = from.join(name);
        if source.exists() {
            std::fs::copy(&source, to.path().join(name)).expect("copy");
        }
    }
    to
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full {
        env_or("STORED", 200_000)
    } else {
        5_000
    } as u64;
    let conns = if full { env_or("CONNS", 16) } else { 2 } as u64;
    let reqs = if full { env_or("REQS", 2_000) } else { 50 } as u64;
    let data = tempfile::tempdir().expect("dir");
    {
        let store = Store::open(data.path(), &common::store_options()).expect("store");
        store.ensure_default_tree().expect("tree");
        common::load_with(&store, n, event);
    }
    let baseline = std::env::var("BASELINE_BIN").ok().map(|bin| {
        let copy = copy_store(data.path());
        (bin.clone(), throughput(&bin, copy.path(), conns, reqs, n))
    });
    let (rate, events) = throughput(BIN, data.path(), conns, reqs, n);
    println!(
        "{n} events stored, {conns} connections x {reqs} REQs of the mix\n\
         {:<28} {rate:>9.0} REQs/s {events:>10.0} events/s",
        "this build"
    );
    if let Some((bin, (base, base_events))) = baseline {
        println!(
            "{:<28} {base:>9.0} REQs/s {base_events:>10.0} events/s  ({bin})\n\
             this build / baseline: {:.2}x REQs/s",
            "baseline",
            rate / base
        );
    }
}
