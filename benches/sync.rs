//! Relay-to-relay download (issue 4): EVENTS signed events (default 100 000)
//! on a serving relay, synced `--dir down` into an empty local node through
//! `sync_with_peer` (NIP-77, then pipelined REQ-by-ids, every event verified
//! and stored). Baseline in the same run: importing the same events from
//! JSON lines (parse + verify on all cores + batched commits), the local
//! speed limit of getting them into a store.
//!
//! `cargo bench --bench sync`; `cargo test` runs a small smoke pass.

use std::sync::Arc;
use std::time::Instant;

mod common;

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
    let (rate, report) = runtime.block_on(async {
        let mut config = Config::default();
        config.store.data_dir = peer_dir.path().to_path_buf();
        config.limits.reqs_per_second = 0;
        let relay = common::start_relay(config).await;
        let url = relay.url.clone();

        let local_dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(Store::open(local_dir.path(), &common::store_options()).expect("store"));
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
            deflate: true,
        };
        let opts = SyncOptions {
            direction: Direction::Down,
            ..SyncOptions::default()
        };
        let started = Instant::now();
        let report = sync_with_peer(&url, &local, &opts, |_| {})
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
        relay.stop().await;
        (rate, report)
    });
    println!(
        "events: {n}; rounds {}; fetched {}",
        report.rounds, report.fetched
    );
    println!("import of the same events (baseline): {baseline:>10.0} events/s");
    println!("sync --dir down into an empty node:   {rate:>10.0} events/s");
    println!(
        "ratio sync / import:                  {:>10.1} %",
        100.0 * rate / baseline
    );
}
