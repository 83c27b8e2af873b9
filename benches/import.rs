//! `echorelay import` at scale, the binary as operators run it: IMPORT
//! signed events (default 100 000; 2 000 in the smoke pass) in a
//! relaybench-style mix — AUTHORS keys (default 20 000), kinds 1 / 7 / 6
//! with `e`, `p` and `t` tags, created_at spread over two years — written
//! to a file, then
//! - the verify-bound rate: parse + id + signature on all cores, no store;
//! - the bulk load into an empty data directory (the default);
//! - the writer's path into an empty data directory (`--no-bulk`; skipped
//!   with NO_BULK_BASELINE=0, it takes long at 10 M).
//!
//! Then `INGEST` new events (default 50 000) are published over eight
//! WebSockets into the bulk-loaded store: live ingest at that store size.
//!
//! Each prints events/s and the ratio to the verify-bound rate measured
//! in the same run.
//!
//! `IMPORT=10000000 cargo bench --bench import` for the 10 M row
//! (docs/PERFORMANCE.md); `cargo test` runs the smoke pass.
//!
//! `KEEP_STORE=<dir>` bulk-loads into `<dir>` and keeps it; a later run
//! with the same `KEEP_STORE` (and `IMPORT`) finds the store there and only
//! measures live ingest into it, so ingest at 10 M can be measured again
//! without the 10 M import (each run adds its `INGEST` events).

use std::process::Command;
use std::time::Instant;

use echorelay::event::{Event, Keys};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_echorelay");
const TWO_YEARS: u64 = 2 * 365 * 86_400;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// When event `i` was made: spread over two years, as an archive holds.
fn archived_at(i: u64) -> u64 {
    1_700_000_000 + i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % TWO_YEARS
}

/// Event `i` of the mix, signed by `keys` (deterministic content).
fn mixed(keys: &Keys, i: u64, others: &[[u8; 32]]) -> Event {
    mixed_at(keys, i, others, archived_at(i))
}

/// Event `i` of the mix made at `created_at`.
fn mixed_at(keys: &Keys, i: u64, others: &[[u8; 32]], created_at: u64) -> Event {
    let other = hex::encode(others[(i as usize * 31) % others.len()]);
    let target = hex::encode(
        i.wrapping_mul(0xD6E8_FEB8_6659_FD93)
            .to_be_bytes()
            .repeat(4),
    );
    let (kind, tags, content) = match i % 10 {
        0..=5 => (
            1,
            vec![vec!["t".into(), format!("topic{}", i % 500)]],
            format!("note {i} with some words in it"),
        ),
        6..=8 => (
            7,
            vec![vec!["e".into(), target], vec!["p".into(), other]],
            "+".into(),
        ),
        _ => (
            6,
            vec![vec!["e".into(), target], vec!["p".into(), other]],
            String::new(),
        ),
    };
    keys.sign(created_at, kind, tags, content)
}

/// The input file's lines, signed on all cores.
fn write_input(path: &std::path::Path, n: usize, authors: usize) {
    let threads = common::cores();
    let keys: Vec<Keys> = (0..authors).map(|_| Keys::generate()).collect();
    let pubkeys: Vec<[u8; 32]> = keys.iter().map(|k| k.public_key()).collect();
    let parts: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (keys, pubkeys) = (&keys, &pubkeys);
                s.spawn(move || {
                    let mut out = String::new();
                    for i in (t..n).step_by(threads) {
                        let event = mixed(&keys[i % keys.len()], i as u64, pubkeys);
                        out.push_str(&event.to_json());
                        out.push('\n');
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("signer"))
            .collect()
    });
    std::fs::write(path, parts.concat()).expect("write input");
}

/// Parse + verify of every line on all cores: the rate no import beats.
fn verify_rate(path: &std::path::Path) -> f64 {
    let text = std::fs::read_to_string(path).expect("read input");
    let lines: Vec<&str> = text.lines().collect();
    let threads = common::cores();
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let lines = &lines;
            s.spawn(move || {
                for line in lines.iter().skip(t).step_by(threads) {
                    let event = Event::from_json(line).expect("parse");
                    event.verified_json().expect("verify");
                }
            });
        }
    });
    lines.len() as f64 / started.elapsed().as_secs_f64()
}

/// `echorelay import` of the file into `data`; events/s.
fn import_rate(path: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> f64 {
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg("import")
        .arg(path)
        .args(["--quiet", "--json", "--data"])
        .arg(data)
        .args(extra)
        .output()
        .expect("import");
    let secs = started.elapsed().as_secs_f64();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    summary["stored"].as_f64().expect("stored") / secs
}

/// Where the bulk load goes: a kept directory or a fresh temporary one.
enum Loaded {
    Kept(std::path::PathBuf),
    Temporary(tempfile::TempDir),
}

impl Loaded {
    fn path(&self) -> &std::path::Path {
        match self {
            Loaded::Kept(path) => path,
            Loaded::Temporary(dir) => dir.path(),
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full {
        env_or("IMPORT", 100_000)
    } else {
        2_000
    };
    let authors = if full { env_or("AUTHORS", 20_000) } else { 100 };
    let more = if full { env_or("INGEST", 50_000) } else { 500 };
    let loaded = match std::env::var_os("KEEP_STORE") {
        Some(dir) => Loaded::Kept(dir.into()),
        None => Loaded::Temporary(tempfile::tempdir().expect("data dir")),
    };
    if !loaded.path().join("data.mdb").exists() {
        import_all(n, authors, &loaded);
    }
    for (label, made) in [
        ("live ingest, created_at now", Made::Now),
        ("live ingest, archived created_at", Made::Archived),
    ] {
        let (rate, written, batch) = ingest_into(loaded.path(), n, more, made);
        println!(
            "{label:<34} {rate:>10.0} events/s  {written:>6.1} KB written/event  \
             {batch:>6.0} events/commit  ({more} new events, 8 connections, {n} stored)",
        );
    }
}

/// The created_at of the events a live ingest publishes.
#[derive(Clone, Copy)]
enum Made {
    /// Within the last minute, as a live relay receives them.
    Now,
    /// Spread over the archive's two years, as a sync backfill sends them.
    Archived,
}

/// Signs the input, measures the verify-bound rate, bulk-loads it into
/// `loaded` and (unless NO_BULK_BASELINE=0) imports it `--no-bulk` too.
fn import_all(n: usize, authors: usize, loaded: &Loaded) {
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("events.jsonl");
    let signed = Instant::now();
    write_input(&input, n, authors);
    println!(
        "{n} events by {authors} authors, signed in {:.1} s",
        signed.elapsed().as_secs_f64()
    );
    let verify = verify_rate(&input);
    println!(
        "{:<34} {:>10.0} events/s",
        "parse + verify (all cores)", verify
    );
    let bulk = import_rate(&input, loaded.path(), &[]);
    println!(
        "{:<34} {:>10.0} events/s  {:>5.1} % of verify",
        "import, bulk load",
        bulk,
        100.0 * bulk / verify
    );
    if env_or("NO_BULK_BASELINE", 1) == 1 {
        let fresh = tempfile::tempdir().expect("data dir");
        let plain = import_rate(&input, fresh.path(), &["--no-bulk"]);
        println!(
            "{:<34} {:>10.0} events/s  {:>5.1} % of verify (bulk = {:.2}x)",
            "import --no-bulk (the writer)",
            plain,
            100.0 * plain / verify,
            bulk / plain
        );
    }
}

/// Live ingest over WebSockets into the store `data` holds: `more` new
/// events of the mix by 1 000 new authors, every OK awaited. Returns
/// events/s, the KB this process wrote to storage per event and the mean
/// events per commit.
fn ingest_into(data: &std::path::Path, stored: usize, more: usize, made: Made) -> (f64, f64, f64) {
    let keys: Vec<Keys> = (0..1000).map(|_| Keys::generate()).collect();
    let pubkeys: Vec<[u8; 32]> = keys.iter().map(|k| k.public_key()).collect();
    let now = echorelay::event::now();
    let events: Vec<Event> = (stored..stored + more)
        .map(|i| {
            let created_at = match made {
                Made::Now => now - (i as u64 % 60),
                Made::Archived => archived_at(i as u64),
            };
            mixed_at(&keys[i % keys.len()], i as u64, &pubkeys, created_at)
        })
        .collect();
    let messages = common::render(&events, 8);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut config = echorelay::config::Config::default();
        config.store.data_dir = data.to_path_buf();
        config.limits.events_per_second = 0;
        let relay = common::start_relay(config).await;
        common::wait_ready(&relay.url).await;
        let before = written_bytes();
        let rate = common::publish_all(&relay.url, messages).await;
        let written = (written_bytes() - before) as f64 / 1024.0 / more as f64;
        let batch = common::mean_batch(&relay.url).await;
        relay.stop().await;
        (rate, written, batch)
    })
}

/// Bytes this process has caused to be written to storage (Linux
/// `/proc/self/io` write_bytes; 0 where it cannot be read).
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes: ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}
