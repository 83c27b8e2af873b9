//! REQ latency and import speed.
//!
//! Loads STORED events (default 1 000 000; unsigned ids, written straight
//! through the store's batch path since queries never check signatures),
//! then measures REQ round trips over a WebSocket (p50 / p99) for by-id,
//! by-author+kind, by-tag and kind+limit filters, and a full `limit` scan
//! baseline; then COUNT from the `{}` fingerprint tree and from index
//! keys against the same events counted by walking them (the budget is
//! lifted for the walk). Import speed is measured on IMPORT (default 100 000) signed
//! events through `Store::apply_batch` after verification on all cores, the
//! same path `echorelay import` takes.
//!
//! `cargo bench --bench query`; `cargo test` runs a small smoke pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use echorelay::config::Config;
use echorelay::event::{Event, Keys};
use echorelay::store::Store;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const AUTHORS: usize = 1000;
const TAGS: usize = 5000;

/// A deterministic synthetic event (not signed: queries never verify).
fn synthetic(i: usize) -> Event {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    id[8..16].copy_from_slice(&(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    let mut pubkey = [0u8; 32];
    pubkey[..8].copy_from_slice(&((i % AUTHORS) as u64).to_be_bytes());
    Event {
        id,
        pubkey,
        created_at: 1_600_000_000 + i as u64,
        kind: [1u16, 7, 6, 30023][i % 4],
        tags: vec![
            vec!["t".into(), format!("topic{}", i % TAGS)],
            vec!["d".into(), format!("d{i}")],
        ],
        content: format!("synthetic event {i}"),
        sig: [7; 64],
    }
}

async fn round_trips(url: &str, filters: &[Value], rounds: usize) -> (Duration, Duration, usize) {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .expect("connect");
    let _challenge = ws.next().await;
    let mut times = Vec::with_capacity(rounds);
    let mut returned = 0;
    for r in 0..rounds {
        let filter = &filters[r % filters.len()];
        let started = Instant::now();
        ws.send(Message::Text(
            json!(["REQ", "q", filter]).to_string().into(),
        ))
        .await
        .expect("send");
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                panic!("socket ended")
            };
            let t = t.as_str();
            if t.starts_with("[\"EOSE\"") {
                break;
            }
            if t.starts_with("[\"EVENT\"") {
                returned += 1;
            } else {
                panic!("unexpected reply {t}");
            }
        }
        times.push(started.elapsed());
        ws.send(Message::Text(json!(["CLOSE", "q"]).to_string().into()))
            .await
            .expect("close");
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (p(0.50), p(0.99), returned / rounds.max(1))
}

/// COUNT round trips (p50 / p99) and the last answer: the count, or the
/// CLOSED reason.
async fn count_trips(url: &str, filter: &Value, rounds: usize) -> (Duration, Duration, String) {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .expect("connect");
    let _challenge = ws.next().await;
    let mut times = Vec::with_capacity(rounds);
    let mut answer = String::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let ask = json!(["COUNT", "c", filter]).to_string();
        ws.send(Message::Text(ask.into())).await.expect("send");
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("socket ended")
        };
        times.push(started.elapsed());
        let reply: Value = serde_json::from_str(t.as_str()).expect("reply");
        answer = match reply[0].as_str() {
            Some("COUNT") => reply[2]["count"].to_string(),
            _ => format!("CLOSED {}", reply[2]),
        };
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (p(0.50), p(0.99), answer)
}

fn import_rate(n: usize) -> f64 {
    let keys = Keys::generate();
    let lines: Vec<String> = (0..n)
        .map(|i| {
            keys.sign(1_700_000_000 + i as u64, 1, vec![], format!("import {i}"))
                .to_json()
        })
        .collect();
    let (total, verify, commit) = common::import_rate(&Arc::new(lines));
    println!("  of which parse + verify on all cores: {verify:.0} events/s; commit: {commit:.0} events/s");
    total
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full {
        env_or("STORED", 1_000_000)
    } else {
        5_000
    };
    let rounds = if full { 2000 } else { 20 };
    let dir = tempfile::tempdir().expect("tempdir");
    let loaded = Instant::now();
    {
        let store = Store::open(dir.path(), &common::store_options()).expect("store");
        common::load_with(&store, n as u64, |k| synthetic(k as usize));
    }
    let load_secs = loaded.elapsed().as_secs_f64();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut config = Config::default();
        config.store.data_dir = dir.path().to_path_buf();
        config.limits.reqs_per_second = 0;
        // The walks are the baseline here: let them finish.
        config.limits.count_budget_ms = 600_000;
        let relay = common::start_relay(config).await;
        let url = relay.url.clone();
        let ids: Vec<Value> = (0..200).map(|k| json!({"ids": [hex::encode(synthetic(k * (n / 200).max(1)).id)]})).collect();
        let author_kind: Vec<Value> = (0..200)
            .map(|k| json!({"authors": [hex::encode(synthetic(k).pubkey)], "kinds": [1], "limit": 20}))
            .collect();
        let by_tag: Vec<Value> = (0..200).map(|k| json!({"#t": [format!("topic{}", k * 7 % TAGS)], "limit": 20})).collect();
        let kind_limit = vec![json!({"kinds": [7], "limit": 100})];
        let scan = vec![json!({"limit": 500})];
        let nothing = vec![json!({"ids": [hex::encode([0xffu8; 32])]})];
        println!("stored events: {n} (loaded in {load_secs:.1} s, {:.0} events/s)", n as f64 / load_secs);
        println!("{:<28} {:>10} {:>10} {:>8}", "REQ", "p50", "p99", "events");
        for (name, filters) in [
            ("no match (round-trip floor)", &nothing),
            ("by id", &ids),
            ("by author+kind, limit 20", &author_kind),
            ("by tag, limit 20", &by_tag),
            ("kind, limit 100", &kind_limit),
            ("everything, limit 500", &scan),
        ] {
            let (p50, p99, per) = round_trips(&url, filters, rounds).await;
            println!("{name:<28} {:>8.3}ms {:>8.3}ms {per:>8}", p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3);
        }
        // COUNT: from the {} tree (and a one-day window of it), from index
        // keys (kinds), against the same events counted by walking them
        // (every author listed: neither a tree nor one index's keys serve that).
        let middle = 1_600_000_000 + n as u64 / 2;
        let every_author: Vec<String> = (0..AUTHORS).map(|k| hex::encode(synthetic(k).pubkey)).collect();
        let counts = [
            ("{} (tree)", json!({}), rounds),
            ("one day of {} (tree window)", json!({"since": middle, "until": middle + 86_400}), rounds),
            ("kinds 1 (index keys)", json!({"kinds": [1], "limit": 10}), 5),
            ("every kind listed (keys)", json!({"kinds": [1, 6, 7, 30023]}), 5),
            ("every author listed (walk)", json!({"authors": every_author}), 5),
        ];
        println!("{:<28} {:>10} {:>10} {:>8}", "COUNT", "p50", "p99", "answer");
        for (name, filter, rounds) in counts {
            let (p50, p99, answer) = count_trips(&url, &filter, rounds).await;
            println!("{name:<28} {:>8.3}ms {:>8.3}ms {answer:>8}", p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3);
        }
        relay.stop().await;
    });
    let import_n = if full {
        env_or("IMPORT", 100_000)
    } else {
        1_000
    };
    println!(
        "import (verify on all cores + batched commits): {:.0} events/s over {import_n} events",
        import_rate(import_n)
    );
}
