//! What the client libraries people use send, through the real socket at
//! the default limits: NDK's array NEG-OPEN (one filter and several), a
//! one-socket burst and a nostr-sdk `sync` up that the rate limit paces
//! instead of refusing, the hard ceiling past which it refuses, and every
//! refusal counted in /metrics.

mod common;

use common::*;
use echorelay::config::LimitsConfig;
use echorelay::event::{now, Keys};
use echorelay::negentropy::{Item, VectorStorage};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A relay with the shipped limits (rate limits on), not the tests' zeros.
async fn default_limits_relay() -> TestRelay {
    TestRelay::start_with(|c| c.limits = LimitsConfig::default()).await
}

fn sorted(mut ids: Vec<[u8; 32]>) -> Vec<[u8; 32]> {
    ids.sort();
    ids.dedup();
    ids
}

/// The value of one sample line of the relay's /metrics.
async fn metric(relay: &TestRelay, sample: &str) -> u64 {
    let (status, _, body) = http_get(relay.addr, "/metrics", &[]).await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndk_style_array_neg_open_reconciles_one_filter_and_a_union() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    let base = now() - 5_000;
    let notes: Vec<_> = (0..60)
        .map(|i| event_at(&keys, 1, base + i, vec![], &format!("note {i}")))
        .collect();
    let reactions: Vec<_> = (0..40)
        .map(|i| event_at(&keys, 7, base + i, vec![], "+"))
        .collect();
    let others: Vec<_> = (0..10)
        .map(|i| event_at(&keys, 30, base + i, vec![], "other"))
        .collect();
    // The relay holds notes 0..40, reactions 0..30 and the kind-30 events.
    for e in notes[..40].iter().chain(&reactions[..30]).chain(&others) {
        c.publish_ok(e).await;
    }
    let item = |e: &echorelay::event::Event| Item::new(e.created_at, e.id);
    let ids = |list: &[echorelay::event::Event]| list.iter().map(|e| e.id).collect::<Vec<_>>();

    // One filter in an array (what NDK sends): served as that filter.
    let mine = VectorStorage::new(notes[20..].iter().map(item).collect());
    for filter in [json!([{"kinds": [1]}]), json!({"kinds": [1]})] {
        let (diff, _) = reconcile(&mut c, "one", filter.clone(), &mine, 60_000).await;
        assert_eq!(diff.need, sorted(ids(&notes[..20])), "{filter}");
        assert_eq!(diff.have, sorted(ids(&notes[40..])), "{filter}");
    }
    // `[{}]` is the whole store, from its tree.
    let (diff, _) = reconcile(&mut c, "all", json!([{}]), &mine, 0).await;
    assert_eq!(diff.need.len(), 20 + 30 + 10);

    // Two filters: the union of notes and reactions, never the kind-30s.
    let mine = VectorStorage::new(
        notes[20..]
            .iter()
            .chain(&reactions[10..])
            .map(item)
            .collect(),
    );
    let union = json!([{"kinds": [1]}, {"kinds": [7]}]);
    let (diff, _) = reconcile(&mut c, "two", union, &mine, 4096).await;
    let mut need = ids(&notes[..20]);
    need.extend(ids(&reactions[..10]));
    let mut have = ids(&notes[40..]);
    have.extend(ids(&reactions[30..]));
    assert_eq!(diff.need, sorted(need));
    assert_eq!(diff.have, sorted(have));

    // Overlapping filters count each event once.
    let mine = VectorStorage::new(Vec::new());
    let overlap = json!([{"kinds": [1]}, {"kinds": [1, 7]}]);
    let (diff, _) = reconcile(&mut c, "overlap", overlap, &mine, 0).await;
    assert_eq!(diff.need.len(), 40 + 30);

    // Bad arrays are refused as NEG-ERR, and the connection stays usable.
    for (filter, words) in [
        (json!([]), "empty"),
        (json!([1]), "objects"),
        (json!([{"kinds": "x"}]), "invalid:"),
        (json!("kinds"), "filter object or an array"),
    ] {
        let reply = c.ask(json!(["NEG-OPEN", "bad", filter, "6100"])).await;
        assert_eq!(reply[0], "NEG-ERR", "{filter}: {reply}");
        let reason = reply[2].as_str().unwrap();
        assert!(
            reason.starts_with("invalid:") && reason.contains(words),
            "{reply}"
        );
    }
    let too_many: Vec<Value> = (0..33).map(|k| json!({"kinds": [k]})).collect();
    let reply = c.ask(json!(["NEG-OPEN", "bad", too_many, "6100"])).await;
    assert!(
        reply[2].as_str().unwrap().contains("too many filters"),
        "{reply}"
    );
    // Over max_sync_events after the union: blocked, with the cap.
    drop(c);
    relay.stop().await;
    let relay = TestRelay::start_with(|c| {
        c.negentropy.max_sync_events = 5;
    })
    .await;
    let mut c = relay.client().await;
    for e in notes[..3].iter().chain(&reactions[..3]) {
        c.publish_ok(e).await;
    }
    let msg = hex::encode(
        echorelay::negentropy::Negentropy::new(&VectorStorage::new(Vec::new()), 0)
            .unwrap()
            .initiate()
            .unwrap(),
    );
    let reply = c
        .ask(json!(["NEG-OPEN", "cap", [{"kinds": [1]}, {"kinds": [7]}], msg]))
        .await;
    assert_eq!(
        reply,
        json!(["NEG-ERR", "cap", "blocked: too many query results", 5])
    );
    relay.stop().await;
}

const N_BURST: u64 = 5000;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5000_event_burst_on_one_socket_is_paced_not_refused() {
    let relay = default_limits_relay().await;
    let keys = Keys::generate();
    let base = now() - 10_000;
    let events: Vec<_> = (0..N_BURST)
        .map(|i| event_at(&keys, 1, base + i / 10, vec![], &format!("burst {i}")))
        .collect();
    let c = relay.client().await;
    let (mut sink, mut stream) = c.ws.split();
    let frames: Vec<String> = events
        .iter()
        .map(|e| format!("[\"EVENT\",{}]", e.to_json()))
        .collect();
    let writer = tokio::spawn(async move {
        for frame in frames {
            sink.feed(Message::Text(frame.into())).await.unwrap();
        }
        sink.flush().await.unwrap();
        sink
    });
    let mut accepted = std::collections::HashSet::new();
    while accepted.len() < events.len() {
        let message = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no OK within the wait after {}", accepted.len()))
            .expect("socket open")
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let reply: Value = serde_json::from_str(&text).unwrap();
        if reply[0] != "OK" {
            continue;
        }
        assert_eq!(reply[2], true, "refused: {reply}");
        accepted.insert(reply[1].as_str().unwrap().to_string());
    }
    let _sink = writer.await.unwrap();
    // The limiter did act (the burst allowance is 2 000), by pausing.
    assert!(metric(&relay, "echorelay_messages_paced_total").await > 0);
    let refused = "echorelay_refusals_total{reply=\"OK\",reason=\"rate-limited\"}";
    assert_eq!(metric(&relay, refused).await, 0);
    let mut check = relay.client().await;
    let count = check.ask(json!(["COUNT", "n", {"kinds": [1]}])).await;
    assert_eq!(count[2]["count"], N_BURST);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_sync_up_of_3000_stores_all_at_the_default_config() {
    use nostr_sdk::prelude::*;
    let relay = default_limits_relay().await;
    let keys = nostr_sdk::prelude::Keys::generate();
    let base = Timestamp::now().as_secs() - 100_000;
    let events: Vec<Event> = (0..3000u64)
        .map(|i| {
            EventBuilder::new(Kind::TextNote, format!("up {i}"))
                .custom_created_at(Timestamp::from_secs(base + i))
                .finalize(&keys)
                .unwrap()
        })
        .collect();
    let client = common::sdk::sdk_client_holding(relay.url.as_str(), &events).await;
    let up = SyncOptions::default().direction(SyncDirection::Up);
    let output = client
        .sync(Filter::new().kind(Kind::TextNote))
        .opts(up)
        .await
        .unwrap();
    assert!(output.failed.is_empty(), "{:?}", output.failed);
    assert_eq!(output.value.sent.len(), 3000);
    let mut c = relay.client().await;
    let count = c.ask(json!(["COUNT", "n", {"kinds": [1]}])).await;
    assert_eq!(count[2]["count"], 3000);
    client.shutdown().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_hard_ceiling_the_rate_limit_refuses_and_says_so() {
    let relay = TestRelay::start_with(|c| {
        c.limits.events_per_second = 1;
        c.limits.events_burst = 1;
        c.limits.reqs_per_second = 1;
        c.limits.reqs_burst = 1;
        c.limits.max_pace_ms = 0;
    })
    .await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    c.publish_ok(&note(&keys, "first")).await;
    let second = note(&keys, "second");
    let reply = c.publish(&second).await;
    assert_eq!(
        reply,
        json!([
            "OK",
            second.id_hex(),
            false,
            "rate-limited: slow down, too many events"
        ])
    );
    assert!(c.req("a", &[json!({"kinds": [1]})]).await.len() <= 1);
    let reply = c.ask(json!(["REQ", "b", {"kinds": [1]}])).await;
    assert_eq!(
        reply,
        json!(["CLOSED", "b", "rate-limited: slow down, too many requests"])
    );
    // Every refusal is counted by reply type and reason prefix.
    let ok_refused = "echorelay_refusals_total{reply=\"OK\",reason=\"rate-limited\"}";
    let closed = "echorelay_refusals_total{reply=\"CLOSED\",reason=\"rate-limited\"}";
    assert_eq!(metric(&relay, ok_refused).await, 1);
    assert_eq!(metric(&relay, closed).await, 1);
    relay.stop().await;

    // With a ceiling, the same client is slowed down to the rate instead.
    let relay = TestRelay::start_with(|c| {
        c.limits.events_per_second = 5;
        c.limits.events_burst = 1;
    })
    .await;
    let mut c = relay.client().await;
    // The burst is at least the rate (5): the sixth to eighth wait.
    for i in 0..8 {
        c.publish_ok(&note(&keys, &format!("paced {i}"))).await;
    }
    assert!(metric(&relay, "echorelay_messages_paced_total").await >= 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_every_kind_are_counted() {
    let relay = TestRelay::start().await;
    let mut c = relay.client().await;
    let keys = Keys::generate();
    let mut forged = note(&keys, "forged");
    forged.content = "changed".into();
    let reply = c.publish(&forged).await;
    assert_eq!(reply[2], false);
    let reply = c.ask_text("not json").await;
    assert_eq!(reply[0], "NOTICE");
    let reply = c.ask(json!(["NEG-MSG", "nobody", "61"])).await;
    assert_eq!(reply[0], "NEG-ERR");
    let reply = c.ask(json!(["REQ", "x", {"kinds": [-1]}])).await;
    assert_eq!(reply[0], "CLOSED");
    for (reply, reason, at_least) in [
        ("OK", "invalid", 1),
        ("NOTICE", "invalid", 1),
        ("NEG-ERR", "closed", 1),
        ("CLOSED", "invalid", 1),
        ("OK", "duplicate", 0),
    ] {
        let sample = format!("echorelay_refusals_total{{reply=\"{reply}\",reason=\"{reason}\"}}");
        let seen = metric(&relay, &sample).await;
        assert!(seen >= at_least, "{sample} = {seen}");
        if at_least == 0 {
            assert_eq!(seen, 0, "{sample}");
        }
    }
    relay.stop().await;
}

/// Two free ports P and P + 1 (the relay and its `auto` control API).
fn free_port_pair() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < 65535 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// Waits until something accepts on `port`.
async fn accepting(port: u16) {
    eventually("the port to accept", WAIT, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(drop)
    })
    .await;
}

/// `echorelay status --data DIR` in `cwd`: (exit status, stdout, stderr).
fn status_of(cwd: &std::path::Path, data: &std::path::Path) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .current_dir(cwd)
        .args(["status", "--json", "--data"])
        .arg(data)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_host_differ_only_in_listen_and_data() {
    let cwd = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let port = free_port_pair();
        let guard = serve_node(cwd.path(), port, name, &[]);
        // Right after the relay port opens, the token, the node key and the
        // control API (on port + 1) are there.
        accepting(port).await;
        let data = cwd.path().join(name);
        let (ok, stdout, stderr) =
            tokio::task::spawn_blocking(move || status_of(&cwd_path(&data), &data))
                .await
                .unwrap();
        assert!(ok, "status of node {name}: {stderr}");
        let status: Value = serde_json::from_str(stdout.trim()).expect("status JSON");
        assert!(status.is_object(), "{status}");
        let url = std::fs::read_to_string(cwd.path().join(name).join("admin.url")).unwrap();
        assert_eq!(url.trim(), format!("http://127.0.0.1:{}", port + 1));
        nodes.push((guard, port));
    }
    // Each status reached its own node: the node keys differ.
    let key_of =
        |name: &str| std::fs::read_to_string(cwd.path().join(name).join("node.key")).unwrap();
    assert_ne!(key_of("a"), key_of("b"));

    // A taken control API port names the key and the flag that move it.
    let taken = nodes[0].1;
    let out = std::process::Command::new(BIN)
        .current_dir(cwd.path())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", taken - 1),
            "--data",
            "c",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.admin_listen") && stderr.contains("--admin-listen"),
        "{stderr}"
    );
    // --admin-listen moves it.
    let port = free_port_pair();
    let admin = free_port_pair();
    let admin_listen = format!("127.0.0.1:{admin}");
    let mut d = serve_node(cwd.path(), port, "d", &["--admin-listen", &admin_listen]);
    accepting(port).await;
    accepting(admin).await;
    let data = cwd.path().join("d");
    let (ok, _, stderr) = status_of(cwd.path(), &data);
    assert!(ok, "{stderr}");
    // A node that stops takes its address back: no client sends the token
    // to whoever listens on that port next.
    assert!(data.join("admin.url").exists());
    let pid = d.0.id().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(term.unwrap().success());
    let exited = tokio::task::spawn_blocking(move || d.0.wait().unwrap())
        .await
        .unwrap();
    assert!(exited.success(), "{exited:?}");
    assert!(!data.join("admin.url").exists());
}

/// `echorelay serve` in `cwd` on 127.0.0.1:`port` with data dir `data`.
fn serve_node(cwd: &std::path::Path, port: u16, data: &str, extra: &[&str]) -> KillOnDrop {
    let listen = format!("127.0.0.1:{port}");
    let child = std::process::Command::new(BIN)
        .current_dir(cwd)
        .args(["serve", "--listen", &listen, "--data", data])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

fn cwd_path(data: &std::path::Path) -> std::path::PathBuf {
    data.parent().unwrap().to_path_buf()
}

/// A child process killed when the test ends, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// OPERATIONS.md's recipe: with `RUST_LOG=info,echorelay=debug` every
/// refusal shows in the log with connection, address, reply and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_at_debug() {
    use std::io::{BufRead, BufReader};
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let mut child = std::process::Command::new(BIN)
        .current_dir(cwd.path())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
            "n",
        ])
        .env("RUST_LOG", "info,echorelay=debug")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _guard = KillOnDrop(child);
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    accepting(port).await;
    let mut c = Raw::connect(&format!("ws://127.0.0.1:{port}")).await;
    let reply = c.ask(json!(["REQ", "bad", {"kinds": "x"}])).await;
    assert_eq!(reply[0], "CLOSED");
    let logged = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        while let Ok(line) =
            lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            if line.contains("refused") && line.contains("CLOSED") {
                return Some(line);
            }
        }
        None
    })
    .await
    .unwrap()
    .expect("a debug line for the refusal");
    assert!(logged.contains("DEBUG"), "{logged}");
    assert!(logged.contains("127.0.0.1"), "{logged}");
    assert!(logged.contains("invalid"), "{logged}");
}
