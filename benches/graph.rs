//! Graph sync benchmark: tx/batch throughput over the socket with 1 and 8
//! clients (8 graphs, so no client waits on another's t), next to this
//! machine's rate of signing tx events on all cores (each tx becomes one
//! signed event); pull latency at 100 k txs next to the socket's ping
//! round trip; asset upload / download MB/s next to a plain file copy of
//! the same size; tx/batch through a node that forwards to the graph's home
//! next to the same client on the home (throughput, and p50/p99 latency of
//! one-tx batches). All in one run.
//!
//! `cargo bench --bench graph` (full size); `cargo test` runs a small pass.
//! Env: TXS (default 100000), BATCH (default 100), ASSET_MB (default 64).

use std::net::SocketAddr;
use std::time::Instant;

mod common;

use echorelay::config::{Config, TokenConfig};
use echorelay::event::Keys;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "bench-token";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    let status = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, raw[split + 4..].to_vec())
}

async fn create_graph(addr: SocketAddr) -> String {
    let (_, body) = http(addr, "POST", "/graphs", br#"{"graph-name":"bench"}"#).await;
    let reply: Value = serde_json::from_slice(&body).expect("json");
    reply["graph-id"].as_str().expect("graph id").to_string()
}

async fn open(addr: SocketAddr, graph: &str) -> Socket {
    let url = format!("ws://{addr}/sync/{graph}?token={TOKEN}");
    tokio_tungstenite::connect_async(url).await.expect("ws").0
}

/// Sends and waits for the first reply of one of `kinds`.
async fn ask(ws: &mut Socket, message: &Value, kinds: &[&str]) -> Value {
    ws.send(Message::Text(message.to_string().into()))
        .await
        .expect("send");
    loop {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            panic!("socket closed");
        };
        let value: Value = serde_json::from_str(text.as_str()).expect("json");
        if kinds.iter().any(|kind| value["type"] == *kind) {
            return value;
        }
    }
}

/// One client writing `txs` txs in batches to its own graph.
async fn write_txs(addr: SocketAddr, graph: String, txs: usize, batch: usize) {
    let mut ws = open(addr, &graph).await;
    let mut t = ask(
        &mut ws,
        &json!({"type": "hello", "client": "bench"}),
        &["hello"],
    )
    .await["t"]
        .as_u64()
        .expect("t");
    let body = "[:db/add 1 :block/title \"a benchmark transaction of typical size\"]";
    let mut sent = 0;
    while sent < txs {
        let n = batch.min(txs - sent);
        let message = json!({"type": "tx/batch", "t-before": t, "txs": vec![body; n]});
        let reply = ask_batch(&mut ws, &message).await;
        t = reply["t"].as_u64().expect("t");
        // A node that forwards may be behind its home: stale, re-based.
        if reply["type"] == "tx/batch/ok" {
            sent += n;
        }
    }
}

/// Sends a batch and waits for its verdict (ok, or stale with the t).
async fn ask_batch(ws: &mut Socket, message: &Value) -> Value {
    let verdict = ask(ws, message, &["tx/batch/ok", "tx/reject", "error"]).await;
    if verdict["type"] != "tx/batch/ok" && verdict["reason"] != "stale" {
        panic!("batch refused: {verdict}");
    }
    verdict
}

/// A node in `dir` without rate limits, with the bench user's token.
fn bench_config(dir: &tempfile::TempDir) -> Config {
    let mut config = Config::default();
    config.store.data_dir = dir.path().to_path_buf();
    config.limits.events_per_second = 0;
    config.limits.reqs_per_second = 0;
    config.auth.tokens = vec![TokenConfig {
        user: "bench".into(),
        sha256: hex::encode(Sha256::digest(TOKEN.as_bytes())),
        expires_at: 0,
    }];
    config
}

fn sign_rate(n: usize) -> f64 {
    let threads = common::cores();
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let keys = Keys::generate();
                for i in 0..n / threads {
                    let event = keys.sign(
                        0,
                        4071,
                        vec![vec!["g".into(), "x".into()]],
                        format!("tx {i}"),
                    );
                    std::hint::black_box(event.to_json());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("signer");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let txs = if full { env_or("TXS", 100_000) } else { 2_000 };
    let batch = env_or("BATCH", 100);
    let asset_mb = if full { env_or("ASSET_MB", 64) } else { 2 };
    let snapshot_mb = if full { env_or("SNAPSHOT_MB", 100) } else { 4 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let baseline = sign_rate(txs.min(50_000));
    println!("signing tx events on all cores (baseline): {baseline:>9.0} txs/s");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let relay = common::start_relay(bench_config(&dir)).await;
        let addr: SocketAddr = relay.url.trim_start_matches("ws://").parse().expect("addr");

        for clients in [1usize, 8] {
            let mut graphs = Vec::new();
            for _ in 0..clients {
                graphs.push(create_graph(addr).await);
            }
            let per = txs / clients;
            let started = Instant::now();
            let tasks: Vec<_> = graphs
                .into_iter()
                .map(|g| tokio::spawn(write_txs(addr, g, per, batch)))
                .collect();
            for t in tasks {
                t.await.expect("client");
            }
            let rate = (per * clients) as f64 / started.elapsed().as_secs_f64();
            println!(
                "tx/batch, {clients} client(s), batches of {batch}: {rate:>9.0} txs/s ({:.1} % of signing)",
                100.0 * rate / baseline
            );
        }

        // Pull latency on a graph holding `txs` txs.
        let graph = create_graph(addr).await;
        write_txs(addr, graph.clone(), txs, 1000).await;
        let mut ws = open(addr, &graph).await;
        let t = ask(&mut ws, &json!({"type": "hello"}), &["hello"]).await["t"]
            .as_u64()
            .expect("t");
        let mut rows = Vec::new();
        for (label, message, kind) in [
            ("ping round trip (floor)", json!({"type": "ping"}), "pong"),
            ("pull of the last 10 txs", json!({"type": "pull", "since": t - 10}), "pull/ok"),
            ("pull of the last 1000 txs", json!({"type": "pull", "since": t - 1000}), "pull/ok"),
        ] {
            let mut times = Vec::new();
            for _ in 0..200 {
                let started = Instant::now();
                ask(&mut ws, &message, &[kind]).await;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            rows.push((label, percentile(&times, 0.5), percentile(&times, 0.99)));
        }
        let floor = rows[0].1;
        println!("pull latency at {txs} txs in the graph (200 each):");
        for (label, p50, p99) in rows {
            println!(
                "  {label:<28} p50 {p50:>7.3} ms  p99 {p99:>7.3} ms  ({:.1}x floor)",
                p50 / floor
            );
        }

        // Assets next to a plain file copy of the same bytes.
        let bytes: Vec<u8> = (0..asset_mb * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let file = dir.path().join("plain.bin");
        std::fs::write(&file, &bytes).expect("write");
        let started = Instant::now();
        std::fs::copy(&file, dir.path().join("copy.bin")).expect("copy");
        let copy_rate = asset_mb as f64 / started.elapsed().as_secs_f64();
        let path = format!("/assets/{graph}/55555555-5555-4555-8555-555555555555.bin");
        let started = Instant::now();
        let (status, _) = http(addr, "PUT", &path, &bytes).await;
        assert_eq!(status, 200);
        let up = asset_mb as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        let (status, body) = http(addr, "GET", &path, b"").await;
        assert_eq!((status, body.len()), (200, bytes.len()));
        let down = asset_mb as f64 / started.elapsed().as_secs_f64();
        println!("plain file copy of {asset_mb} MiB (baseline): {copy_rate:>8.0} MiB/s");
        println!("asset upload:   {up:>8.0} MiB/s ({:.1} % of copy)", 100.0 * up / copy_rate);
        println!("asset download: {down:>8.0} MiB/s ({:.1} % of copy)", 100.0 * down / copy_rate);
        commit_latency_during_import(addr, &graph, snapshot_mb).await;
        relay.stop().await;
        forwarding(txs.min(20_000), batch).await;
    });
}

/// EVENTs published one at a time (each OK awaited) while nothing else
/// runs, then while a `snapshot_mb` MiB snapshot imports: the import goes
/// through the writer in chunks, so commits interleave with it.
async fn commit_latency_during_import(addr: SocketAddr, graph: &str, snapshot_mb: usize) {
    let mut stream = Vec::new();
    let mut addr_n = 0u64;
    // Just under the size limit of one upload (100 MiB, uncompressed here).
    while stream.len() + 100_000 < snapshot_mb * 1024 * 1024 {
        let rows: Vec<Value> = (0..1000)
            .map(|_| {
                addr_n += 1;
                json!([
                    addr_n,
                    format!("row {addr_n} of a benchmark snapshot, typical block text"),
                    null
                ])
            })
            .collect();
        let body = Value::Array(rows).to_string().into_bytes();
        stream.extend((body.len() as u32).to_be_bytes());
        stream.extend(body);
    }
    let keys = echorelay::event::Keys::generate();
    let url = format!("ws://{addr}");
    let measure = |count: usize| {
        let (url, keys) = (url.clone(), keys.clone());
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
            let mut times = Vec::new();
            for i in 0..count {
                let event = keys.sign(
                    echorelay::event::now(),
                    1,
                    vec![],
                    format!("latency {i} {}", rand_suffix()),
                );
                let started = Instant::now();
                ws.send(Message::Text(
                    format!("[\"EVENT\",{}]", event.to_json()).into(),
                ))
                .await
                .expect("send");
                loop {
                    let Some(Ok(Message::Text(text))) = ws.next().await else {
                        panic!("socket closed");
                    };
                    if text.as_str().starts_with("[\"OK\"") {
                        break;
                    }
                }
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            (
                percentile(&times, 0.5),
                percentile(&times, 0.99),
                times.len(),
            )
        }
    };
    let idle = measure(300).await;
    let path = format!("/sync/{graph}/snapshot/upload?reset=true");
    let upload = {
        let stream = stream.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (status, body) = http(addr, "POST", &path, &stream).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            started.elapsed().as_secs_f64()
        })
    };
    let mut during = Vec::new();
    while !upload.is_finished() {
        let (p50, p99, n) = measure(50).await;
        during.push((p50, p99, n));
    }
    let seconds = upload.await.expect("upload");
    let worst_p99 = during.iter().map(|d| d.1).fold(0.0, f64::max);
    let median_p50 = {
        let mut p50s: Vec<f64> = during.iter().map(|d| d.0).collect();
        p50s.sort_by(f64::total_cmp);
        p50s.get(p50s.len() / 2).copied().unwrap_or(0.0)
    };
    let events: usize = during.iter().map(|d| d.2).sum();
    println!(
        "EVENT OK latency, idle (baseline): p50 {:.3} ms, p99 {:.3} ms ({} events)",
        idle.0, idle.1, idle.2
    );
    println!(
        "EVENT OK latency while a {snapshot_mb} MiB snapshot uploads and imports ({seconds:.1} s, {} rows): median p50 {median_p50:.3} ms, worst p99 of 50 {worst_p99:.3} ms ({events} events)",
        addr_n
    );
}

fn rand_suffix() -> u64 {
    rand::random()
}

/// Two mesh nodes, the graph homed on the first: the same client work on
/// the home and through the second node, which forwards every batch.
async fn forwarding(txs: usize, batch: usize) {
    let (dir_home, dir_other) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let key_hex = |dir: &tempfile::TempDir| {
        hex::encode(
            echorelay::secrets::node_key(dir.path())
                .expect("key")
                .public_key(),
        )
    };
    let (home_key, other_key) = (key_hex(&dir_home), key_hex(&dir_other));
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let (home_listener, other_listener) =
        (bind().await.expect("bind"), bind().await.expect("bind"));
    let url_of = |l: &tokio::net::TcpListener| format!("ws://{}", l.local_addr().expect("addr"));
    let (home_url, other_url) = (url_of(&home_listener), url_of(&other_listener));
    let config = |dir: &tempfile::TempDir, peer_url: &str, peer_key: &str| {
        let mut config = bench_config(dir);
        config.peers = vec![
            serde_json::from_value(json!({"url": peer_url, "pubkey": peer_key,
            "live": true, "interval_secs": 3600}))
            .expect("peer"),
        ];
        config
    };
    let home = common::start_relay_on(config(&dir_home, &other_url, &other_key), home_listener);
    let other = common::start_relay_on(config(&dir_other, &home_url, &home_key), other_listener);
    let addr = |url: &str| -> SocketAddr { url.trim_start_matches("ws://").parse().expect("addr") };
    let (home_addr, other_addr) = (addr(&home_url), addr(&other_url));
    let graph = create_graph(home_addr).await;
    // The index reaches the other node by its live link.
    while http(other_addr, "GET", &format!("/graphs/{graph}/access"), b"")
        .await
        .0
        != 200
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut rates = Vec::new();
    for (label, addr) in [
        ("on the home", home_addr),
        ("through a forwarding node", other_addr),
    ] {
        let started = Instant::now();
        write_txs(addr, graph.clone(), txs / 2, batch).await;
        let rate = (txs / 2) as f64 / started.elapsed().as_secs_f64();
        rates.push(rate);
        println!("tx/batch {label}, batches of {batch}: {rate:>9.0} txs/s");
    }
    println!(
        "forwarding keeps {:.1} % of the home's rate",
        100.0 * rates[1] / rates[0]
    );
    let mut p50s = Vec::new();
    for (label, addr) in [
        ("on the home", home_addr),
        ("through a forwarding node", other_addr),
    ] {
        let mut ws = open(addr, &graph).await;
        let mut t = ask(&mut ws, &json!({"type": "hello"}), &["hello"]).await["t"].clone();
        let mut times = Vec::new();
        while times.len() < 200 {
            let message = json!({"type": "tx/batch", "t-before": t, "txs": ["[:db/add 1 :x 1]"]});
            let started = Instant::now();
            let reply = ask_batch(&mut ws, &message).await;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            if reply["type"] == "tx/batch/ok" {
                times.push(elapsed);
            }
            t = reply["t"].clone();
        }
        times.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        p50s.push((p50, p99));
        println!("one-tx batch {label}: p50 {p50:.3} ms  p99 {p99:.3} ms");
    }
    println!(
        "added by forwarding: p50 {:+.3} ms  p99 {:+.3} ms",
        p50s[1].0 - p50s[0].0,
        p50s[1].1 - p50s[0].1
    );
    home.stop().await;
    other.stop().await;
}
