//! Shared by the bench binaries: signing test events on all cores, the
//! import baseline (parse + verify on all cores, then batched commits), and
//! store options.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Instant;

/// The benches measure the binary as shipped, with its allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use echorelay::event::{Event, Keys};
use echorelay::store::{BatchItem, Store, StoreOptions};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

pub fn store_options() -> StoreOptions {
    StoreOptions {
        map_size_mb: 1024,
        max_map_size_mb: 1 << 20,
        tree_excluded_kinds: vec![4, 1059],
        trees: true,
    }
}

/// `n` kind-1 events signed on all cores by one key per core;
/// `created_at(i)` gives each event's timestamp.
pub fn sign_all(n: usize, created_at: fn(usize) -> u64) -> Vec<Event> {
    let threads = cores();
    let per = n.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let keys = Keys::generate();
                (0..per)
                    .map(|i| {
                        keys.sign(
                            created_at(i),
                            1,
                            vec![vec!["t".into(), "bench".into()]],
                            format!("bench {t} {i}"),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<Event> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("signer"))
        .collect();
    all.truncate(n);
    all
}

/// What `import` does with JSON lines: returns (events/s end to end,
/// events/s of the parse + verify step alone, events/s of the commits alone).
pub fn import_rate(lines: &Arc<Vec<String>>) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), &store_options()).expect("store");
    store.ensure_default_tree().expect("tree");
    let threads = cores();
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let lines = lines.clone();
            std::thread::spawn(move || {
                lines
                    .iter()
                    .skip(t)
                    .step_by(threads)
                    .map(|l| {
                        let e = Event::from_json(l).expect("parse");
                        e.verify().expect("verify");
                        let j = e.to_json();
                        (e, j)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let verified: Vec<(Event, String)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("verify"))
        .collect();
    let verify_secs = started.elapsed().as_secs_f64();
    for chunk in verified.chunks(10_000) {
        let items: Vec<BatchItem> = chunk
            .iter()
            .map(|(event, json)| BatchItem::Insert { event, json })
            .collect();
        store.apply_batch(&items).expect("import batch");
    }
    let total = started.elapsed().as_secs_f64();
    let n = lines.len() as f64;
    (n / total, n / verify_secs, n / (total - verify_secs))
}

/// A relay serving on a free 127.0.0.1 port inside the bench's runtime.
pub struct BenchRelay {
    pub url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    node: tokio::task::JoinHandle<Result<(), echorelay::node::NodeError>>,
}

pub async fn start_relay(config: echorelay::config::Config) -> BenchRelay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    start_relay_on(config, listener)
}

/// Starts a relay on a listener already bound (its URL known in advance).
pub fn start_relay_on(
    mut config: echorelay::config::Config,
    listener: tokio::net::TcpListener,
) -> BenchRelay {
    config.server.admin_listen = String::new();
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(echorelay::node::run(config, listener, async move {
        let _ = stopped.await;
    }));
    BenchRelay { url, stop, node }
}

impl BenchRelay {
    /// Graceful stop: everything acknowledged is committed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.node.await.expect("node").expect("node run");
    }
}

/// EVENT messages of `events`, dealt round-robin to `conns` connections.
pub fn render(events: &[Event], conns: usize) -> Vec<Vec<String>> {
    (0..conns)
        .map(|c| {
            events
                .iter()
                .skip(c)
                .step_by(conns)
                .map(|e| format!("[\"EVENT\",{}]", e.to_json()))
                .collect()
        })
        .collect()
}

/// Resolves once the relay answers a WebSocket handshake (its store is
/// open), so start-up stays out of the measured window.
pub async fn wait_ready(url: &str) {
    loop {
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await {
            let _ = ws.close(None).await;
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Publishes every message and waits for every OK. Each connection writes
/// its frames back to back and flushes once at the end (tungstenite writes
/// its buffer out whenever 128 KiB are waiting), as a bulk uploader does:
/// the load generator shares the relay's cores, so a syscall per event on
/// its side would be counted against the relay.
pub async fn publish_all(url: &str, per_conn: Vec<Vec<String>>) -> f64 {
    let n: usize = per_conn.iter().map(Vec::len).sum();
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
                    sink.feed(Message::Text(text.into())).await.expect("send");
                }
                sink.flush().await.expect("flush");
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
    n as f64 / started.elapsed().as_secs_f64()
}

/// Mean events per LMDB write transaction so far, from the relay's
/// `/metrics` (the relay listener serves it by default).
pub async fn mean_batch(url: &str) -> f64 {
    use echorelay::http_client::{request, Endpoint};
    let endpoint = Endpoint::of_relay(url).expect("relay url");
    let timeout = std::time::Duration::from_secs(30);
    let reply = request(&endpoint, "GET", "/metrics", &[], &[], timeout)
        .await
        .expect("metrics");
    let body = reply.bytes(1 << 20).await.expect("metrics body");
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    value("echorelay_write_batch_size_sum ") / value("echorelay_write_batch_size_count ").max(1.0)
}

/// Stores events `0..n` made by `event` through the store's batch path,
/// 10 000 per commit (unsigned ones are fine: queries never verify).
pub fn load_with(store: &Store, n: u64, event: impl Fn(u64) -> Event) {
    let mut i = 0;
    while i < n {
        let end = (i + 10_000).min(n);
        let events: Vec<(Event, String)> = (i..end)
            .map(|k| {
                let e = event(k);
                let j = e.to_json();
                (e, j)
            })
            .collect();
        let items: Vec<BatchItem> = events
            .iter()
            .map(|(event, json)| BatchItem::Insert { event, json })
            .collect();
        store.apply_batch(&items).expect("load batch");
        i = end;
    }
}
