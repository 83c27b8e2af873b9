//! Ingest benchmark: pre-signed events published over N WebSocket
//! connections (pipelined, every OK awaited), next to the raw Schnorr
//! verification rate of this machine on all cores, measured in the same run.
//!
//! `cargo bench --bench ingest` (full size) — `cargo test` runs a small smoke
//! pass of the same code. Env: EVENTS (default 100000), CONNS (default 8),
//! RUNS (ingest runs with fingerprint trees on, default 3; the median counts),
//! STORE_ONLY (print only the store-alone rows: the writer's cost without
//! sockets, for quick comparisons), LONE (events published one at a time,
//! each OK awaited, for the lone-publisher latency rows; default 500).
//!
//! Besides the rates it prints where the CPU time of an event goes, per
//! thread role (verify pool, writer, relay sockets, load generator), read
//! from /proc for the ingest window only.

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

/// The EVENT messages of each connection, rendered before any clock starts.
/// OK latency of events published one at a time (each OK awaited before
/// the next EVENT): what a lone publisher sees, commit and fsync included.
/// Returns (p50, p99) in milliseconds.
async fn one_at_a_time(url: &str, messages: &[String]) -> (f64, f64) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let mut latencies = Vec::with_capacity(messages.len());
    for text in messages {
        let sent = Instant::now();
        ws.send(Message::Text(text.clone().into()))
            .await
            .expect("send");
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().starts_with("[\"OK\"") => {
                    assert!(t.as_str().contains(",true,"), "refused: {}", t.as_str());
                    break;
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended early: {other:?}"),
            }
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
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

/// CPU seconds (user + system) used so far by each thread role of this
/// process, read from /proc: where an event's CPU time goes.
fn cpu_by_role() -> std::collections::BTreeMap<&'static str, f64> {
    let mut roles = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return roles;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((name, secs)) = stat_cpu(&stat) else {
            continue;
        };
        let role = match name {
            n if n.starts_with("verify") => "verify pool",
            "writer" => "writer",
            "fanout" => "fan-out",
            "relay-rt" => "relay sockets (tokio)",
            "loadgen" => "load generator",
            _ => "other",
        };
        *roles.entry(role).or_insert(0.0) += secs;
    }
    roles
}

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    stat_cpu(&stat).map_or(0.0, |(_, secs)| secs)
}

/// A thread's name and CPU seconds (user + system) from its /proc stat line.
fn stat_cpu(stat: &str) -> Option<(&str, f64)> {
    let (head, tail) = stat.rsplit_once(')')?;
    let name = head.split_once('(').map_or("", |(_, n)| n);
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some((name, (ticks(11) + ticks(12)) / 100.0))
}

/// The writer's share alone: the same events committed straight into a
/// store in batches of `batch` (what the writer thread does under load),
/// as CPU µs per event of the committing thread, fsync included.
fn store_cpu_per_event(events: &[Event], batch: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = echorelay::store::Store::open(dir.path(), &common::store_options()).expect("store");
    store.ensure_default_tree().expect("tree");
    let verified: Vec<(&Event, String)> = events.iter().map(|e| (e, e.to_json())).collect();
    let before = thread_cpu_seconds();
    for chunk in verified.chunks(batch) {
        let items: Vec<echorelay::store::BatchItem> = chunk
            .iter()
            .map(|(event, json)| echorelay::store::BatchItem::Insert { event, json })
            .collect();
        store.apply_batch(&items).expect("batch");
    }
    (thread_cpu_seconds() - before) * 1e6 / events.len() as f64
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full {
        env_or("EVENTS", 100_000)
    } else {
        2_000
    };
    let conns = env_or("CONNS", 8);
    let runs = if full { env_or("RUNS", 3).max(1) } else { 1 };
    let events = Arc::new(common::sign_all(n, |_| now()));
    // This machine's speed drifts by ±15 % within minutes, so the baseline
    // is measured before and after every ingest run and the best of them
    // counts: the ratio is never flattered by a slow baseline moment.
    let mut baselines = vec![verify_rate(&events)];
    for batch in [128, 512, 2048, 8192] {
        println!(
            "store alone, batches of {batch:>4}: {:>6.1} µs CPU per event",
            store_cpu_per_event(&events, batch)
        );
    }
    if std::env::var("STORE_ONLY").is_ok() {
        return;
    }
    // The relay and the load generator run on separate runtimes so that the
    // CPU time of each can be told apart; they share the machine's cores.
    let runtime = |name: &'static str| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let (relay_rt, loadgen) = (runtime("relay-rt"), runtime("loadgen"));
    let messages = common::render(&events, conns);
    let mut run = |trees: bool| {
        println!("fingerprint trees {}:", if trees { "on" } else { "off" });
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.store.data_dir = dir.path().to_path_buf();
        config.limits.events_per_second = 0;
        config.negentropy.trees = trees;
        let relay = relay_rt.block_on(common::start_relay(config));
        let url = relay.url.clone();
        loadgen.block_on(common::wait_ready(&url));
        let per_conn = messages.clone();
        let (before, wall) = (cpu_by_role(), Instant::now());
        let rate = loadgen.block_on(common::publish_all(&url, per_conn));
        let elapsed = wall.elapsed().as_secs_f64();
        let after = cpu_by_role();
        let mut busy = 0.0;
        for (role, secs) in &after {
            let used = secs - before.get(role).copied().unwrap_or(0.0);
            busy += used;
            if used > 0.0 {
                println!(
                    "  {role:<24} {:>6.1} µs CPU per event",
                    used * 1e6 / n as f64
                );
            }
        }
        println!(
            "  CPU busy during ingest: {:.0} % of {} cores",
            100.0 * busy / elapsed / common::cores() as f64,
            common::cores()
        );
        loadgen.block_on(print_batch_sizes(&url));
        relay_rt.block_on(relay.stop());
        println!("  ingest: {rate:.0} events/s");
        baselines.push(verify_rate(&events));
        rate
    };
    // Fingerprint-tree maintenance cost: the same load with trees off, then on.
    // A lone publisher with the writer's linger on (the default) and off:
    // the linger only applies under load, so the two should agree.
    let lone = env_or("LONE", if full { 500 } else { 20 }).min(messages[0].len());
    for linger_ms in [Config::default().store.commit_linger_ms, 0] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.store.data_dir = dir.path().to_path_buf();
        config.store.commit_linger_ms = linger_ms;
        let relay = relay_rt.block_on(common::start_relay(config));
        loadgen.block_on(common::wait_ready(&relay.url));
        let (p50, p99) = loadgen.block_on(one_at_a_time(&relay.url, &messages[0][..lone]));
        relay_rt.block_on(relay.stop());
        println!(
            "one at a time ({lone} events, commit_linger_ms {linger_ms}): OK latency p50 {p50:.2} ms, p99 {p99:.2} ms"
        );
    }
    let without_trees = run(false);
    let mut ingest: Vec<f64> = (0..runs).map(|_| run(true)).collect();
    ingest.sort_by(f64::total_cmp);
    let median = ingest[ingest.len() / 2];
    let verify = baselines.iter().copied().fold(0.0, f64::max);
    let slowest = baselines.iter().copied().fold(f64::MAX, f64::min);
    println!("events: {n}, connections: {conns}, runs with trees on: {runs}");
    println!(
        "raw signature verify (all cores):  {verify:>8.0} events/s (best of {}; slowest {slowest:.0})",
        baselines.len()
    );
    println!("ingest, fingerprint trees off:     {without_trees:>8.0} events/s");
    let each: Vec<String> = ingest.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "ingest over WebSocket (trees on):  {median:>8.0} events/s median (runs: {}; {:+.1} % vs trees off)",
        each.join(", "),
        100.0 * (median / without_trees - 1.0)
    );
    println!(
        "ratio median ingest / best verify: {:>8.1} %",
        100.0 * median / verify
    );
}
