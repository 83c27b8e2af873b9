//! Ingest benchmark: pre-signed events published over N WebSocket
//! connections (pipelined, every OK awaited), next to the raw Schnorr
//! verification rate of this machine on all cores, measured in the same run.
//!
//! `cargo bench --bench ingest` (full size) — `cargo test` runs a small smoke
//! pass of the same code. Env: EVENTS (default 100000), CONNS (default 8).

use std::sync::Arc;
use std::time::Instant;

mod common;

use echorelay::config::Config;
use echorelay::event::{now, Event};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Raw verify rate on all cores (events/s): the physical limit for ingest.
fn verify_rate(events: &Arc<Vec<Event>>) -> f64 {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let events = events.clone();
            std::thread::spawn(move || {
                for e in events.iter().skip(t).step_by(threads) {
                    e.verify().expect("valid");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("verifier");
    }
    events.len() as f64 / started.elapsed().as_secs_f64()
}

async fn publish_all(url: &str, events: Arc<Vec<Event>>, conns: usize) -> f64 {
    // The load generator renders its messages before the clock starts.
    let per_conn: Vec<Vec<String>> = (0..conns)
        .map(|c| {
            events
                .iter()
                .skip(c)
                .step_by(conns)
                .map(|e| format!("[\"EVENT\",{}]", e.to_json()))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mine in per_conn {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let (ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
                .await
                .expect("connect");
            let (mut sink, mut stream) = ws.split();
            let total = mine.len();
            let writer = tokio::spawn(async move {
                for text in mine {
                    sink.send(Message::Text(text.into())).await.expect("send");
                }
                sink
            });
            let mut oks = 0;
            while oks < total {
                match stream.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str().starts_with("[\"OK\"") => {
                        assert!(t.as_str().contains(",true,"), "refused: {}", t.as_str());
                        oks += 1;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("connection ended early: {other:?}"),
                }
            }
            let _ = writer.await;
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    events.len() as f64 / started.elapsed().as_secs_f64()
}

/// Prints the writer's batch-size histogram from the relay's /metrics.
async fn print_batch_sizes(ws_url: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = ws_url.trim_start_matches("ws://");
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body).await;
    let lines: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("echorelay_write_batch_size"))
        .collect();
    println!("writer batches: {}", lines.join("; "));
}

/// CPU seconds (user + system) this process used so far, from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full {
        env_or("EVENTS", 100_000)
    } else {
        2_000
    };
    let conns = env_or("CONNS", 8);
    let events = Arc::new(common::sign_all(n, |_| now()));
    let verify = verify_rate(&events);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let run = |trees: bool| {
        runtime.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut config = Config::default();
            config.store.data_dir = dir.path().to_path_buf();
            config.limits.events_per_second = 0;
            config.negentropy.trees = trees;
            let relay = common::start_relay(config).await;
            let url = relay.url.clone();
            let (cpu_before, wall) = (cpu_seconds(), Instant::now());
            let rate = publish_all(&url, events.clone(), conns).await;
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2) as f64;
            println!(
                "CPU busy during ingest (relay + load generator): {:.0} % of {cores} cores",
                100.0 * (cpu_seconds() - cpu_before) / wall.elapsed().as_secs_f64() / cores
            );
            print_batch_sizes(&url).await;
            relay.stop().await;
            rate
        })
    };
    // Fingerprint-tree maintenance cost: the same load with trees off, then on.
    let without_trees = run(false);
    let ingest = run(true);
    println!("events: {n}, connections: {conns}");
    println!("raw signature verify (all cores): {verify:>10.0} events/s");
    println!("ingest, fingerprint trees off:    {without_trees:>10.0} events/s");
    println!(
        "ingest over WebSocket (trees on): {ingest:>10.0} events/s ({:+.1} % vs trees off)",
        100.0 * (ingest / without_trees - 1.0)
    );
    println!(
        "ratio ingest / verify:            {:>10.1} %",
        100.0 * ingest / verify
    );
}
