//! Relay-to-relay download (issue 4): EVENTS signed events (default 100 000)
//! on a serving relay, synced `--dir down` into an empty local node through
//! `sync_with_peer` (NIP-77, then pipelined REQ-by-ids, every event verified
//! and stored). Baseline in the same run: importing the same events from
//! JSON lines (parse + verify on all cores + batched commits), the local
//! speed limit of getting them into a store.
//!
//! Each run twice through a counting TCP proxy, the client offering
//! permessage-deflate or not (the relay agrees when offered): events/s,
//! rounds, bytes each way; then 40 REQs of 500 events on one socket
//! (events/s, bytes per REQ), compressed and not, in the same run.
//!
//! `cargo bench --bench sync`; `cargo test` runs a small smoke pass.

use std::sync::Arc;
use std::time::Instant;

mod common;
#[path = "../tests/common/wire.rs"]
mod wire;

use echorelay::config::Config;
use echorelay::event::Event;
use echorelay::metrics::Metrics;
use echorelay::store::{BatchItem, Store};
use echorelay::sync::{sync_with_peer, Direction, Local, SyncOptions};
use echorelay::verify::VerifyPool;
use echorelay::writer::{Batching, Writer};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 2_000 });
    let events = common::sign_all(n, |i| 1_700_000_000 + i as u64);
    let lines: Arc<Vec<String>> = Arc::new(events.iter().map(Event::to_json).collect());
    let (baseline, _, _) = common::import_rate(&lines);

    // The peer: a relay serving the n events.
    let peer_dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(peer_dir.path(), &common::store_options()).expect("store");
        store.ensure_default_tree().expect("tree");
        for chunk in events.chunks(10_000) {
            let jsons: Vec<String> = chunk.iter().map(Event::to_json).collect();
            let items: Vec<BatchItem> = chunk
                .iter()
                .zip(&jsons)
                .map(|(event, json)| BatchItem::Insert { event, json })
                .collect();
            store.apply_batch(&items).expect("peer load");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = runtime.block_on(async {
        let mut results = Vec::new();
        // The relay's two deflate modes, each on its own copy of the store.
        // (context takeover, zlib level, smallest compressed message, client
        // offers deflate?): the default first.
        let relays: [(bool, u32, usize, &[bool]); 4] = [
            (false, 6, 1024, &[false, true]),
            (false, 6, 128, &[true]),
            (true, 6, 128, &[true]),
            (true, 1, 128, &[true]),
        ];
        for (takeover, level, min_size, modes) in relays {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::copy(
                peer_dir.path().join("data.mdb"),
                dir.path().join("data.mdb"),
            )
            .expect("copy store");
            let mut config = Config::default();
            config.store.data_dir = dir.path().to_path_buf();
            config.limits.reqs_per_second = 0;
            config.server.deflate_context_takeover = takeover;
            config.server.deflate_level = level;
            config.server.deflate_min_size = min_size;
            let relay = common::start_relay(config).await;
            let target = relay.url.trim_start_matches("ws://").parse().expect("addr");
            for &deflate in modes {
                let label = match (deflate, takeover) {
                    (false, _) => "off".to_string(),
                    (true, false) => format!("on, level {level}, from {min_size} B"),
                    (true, true) => {
                        format!("on, level {level}, from {min_size} B, context takeover")
                    }
                };
                // Through a counting proxy: the bytes are what the wire carries.
                let (via, wire) = wire::proxy(target).await;
                let (rate, report) = download(&format!("ws://{via}"), n, deflate).await;
                let sync_bytes = wire.bytes();
                let (req_rate, req_bytes) = reqs(target, deflate).await;
                results.push((label, rate, report, sync_bytes, req_rate, req_bytes));
            }
            relay.stop().await;
        }
        results
    });
    println!("events: {n}; import of the same events (baseline): {baseline:>10.0} events/s");
    println!("| deflate | sync down events/s | sync / import | rounds | bytes up | bytes down | REQ(500) events/s | bytes per REQ(500) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (label, rate, report, (up, down), req_rate, req_bytes) in results {
        println!(
            "| {label} | {rate:.0} | {:.1} % | {} | {up} | {down} | {req_rate:.0} | {req_bytes} |",
            100.0 * rate / baseline,
            report.rounds,
        );
    }
}

/// `sync --dir down` of the n events into an empty node, offering deflate
/// or not: (events/s, report).
async fn download(url: &str, n: usize, deflate: bool) -> (f64, echorelay::sync::SyncReport) {
    let local_dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(local_dir.path(), &common::store_options()).expect("store"));
    store.ensure_default_tree().expect("tree");
    let writer = Writer::spawn(
        store.clone(),
        Batching::new(&Default::default()),
        Arc::new(Metrics::default()),
        None,
    );
    let verify = VerifyPool::new(0);
    let local = Local {
        store: store.clone(),
        writer: writer.handle(),
        verify: verify.handle(),
        policy: None,
        node_key: None,
        deflate,
    };
    let opts = SyncOptions {
        direction: Direction::Down,
        ..SyncOptions::default()
    };
    let started = Instant::now();
    let report = sync_with_peer(url, &local, &opts, |_| {})
        .await
        .expect("sync");
    let rate = report.fetched as f64 / started.elapsed().as_secs_f64();
    drop(local);
    tokio::task::spawn_blocking(move || {
        verify.shutdown();
        writer.shutdown();
    })
    .await
    .expect("shutdown");
    assert_eq!(
        store.count().expect("count"),
        n as u64,
        "every event arrived"
    );
    (rate, report)
}

/// REQs of 500 stored events, one after another on one socket: (events/s,
/// bytes on the wire per REQ, both ways).
async fn reqs(relay: std::net::SocketAddr, deflate: bool) -> (f64, u64) {
    use futures_util::SinkExt;
    let (proxy, wire) = wire::proxy(relay).await;
    let options = match deflate {
        true => yawc::Options::default().with_compression_level(yawc::CompressionLevel::default()),
        false => yawc::Options::default().without_compression(),
    };
    let url = format!("ws://{proxy}").parse().expect("url");
    let mut ws = yawc::WebSocket::connect(url)
        .with_options(options)
        .await
        .expect("connect");
    let rounds = 40;
    let (before_up, before_down) = wire.bytes();
    let started = Instant::now();
    let mut events = 0usize;
    for round in 0..rounds {
        let req = format!("[\"REQ\",\"q{round}\",{{\"limit\":500}}]");
        ws.send(yawc::Frame::text(req)).await.expect("send");
        loop {
            let frame = ws.next_frame().await.expect("frame");
            let text = frame.payload();
            if text.starts_with(b"[\"EVENT\"") {
                events += 1;
            } else if text.starts_with(b"[\"EOSE\"") {
                break;
            }
        }
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let (up, down) = wire.bytes();
    let per_req = (up - before_up + down - before_down) / rounds;
    (rate, per_req)
}
