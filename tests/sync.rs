//! Relay-to-relay sync through real sockets: a local store syncs with a
//! relay in each direction, then a d = 0 reconciliation proves the sets
//! equal; faults (no NIP-77, silence) end in clear errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use echorelay::event::{now, Keys};
use echorelay::metrics::Metrics;
use echorelay::refusal::Prefix;
use echorelay::store::{Store, StoreOptions};
use echorelay::sync::{sync_with_peer, Direction, Local, SyncError, SyncOptions};
use echorelay::verify::VerifyPool;
use echorelay::writer::{Batching, Writer};
use serde_json::json;

struct LocalNode {
    local: Local,
    writer: Writer,
    verify: VerifyPool,
    _dir: tempfile::TempDir,
}

fn local_node() -> LocalNode {
    local_node_with(None)
}

fn local_node_with(policy: Option<echorelay::config::PolicyConfig>) -> LocalNode {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        map_size_mb: 64,
        max_map_size_mb: 1024,
        tree_excluded_kinds: vec![4, 1059],
        trees: true,
    };
    let store = Arc::new(Store::open(dir.path(), &options).unwrap());
    let writer = Writer::spawn(
        store.clone(),
        Batching::new(&Default::default()),
        Arc::new(Metrics::default()),
        None,
    );
    let verify = VerifyPool::new(2);
    let policy = policy.map(|p| Arc::new(echorelay::relay::policy::WritePolicy::new(&p)));
    let local = Local {
        store,
        writer: writer.handle(),
        verify: verify.handle(),
        policy,
        node_key: Some(Arc::new(Keys::generate())),
        deflate: true,
    };
    LocalNode {
        local,
        writer,
        verify,
        _dir: dir,
    }
}

impl LocalNode {
    fn ids(&self) -> Vec<String> {
        let txn = self.local.store.read_txn().unwrap();
        let mut ids = Vec::new();
        self.local
            .store
            .query(&txn, &Default::default(), u64::MAX, now(), &mut |f| {
                ids.push(hex::encode(f.header.id));
                Ok(true)
            })
            .unwrap();
        ids.sort();
        ids
    }

    fn shutdown(self) {
        self.verify.shutdown();
        self.writer.shutdown();
    }
}

/// Stores events in the local node through its writer.
async fn seed(node: &LocalNode, events: &[echorelay::event::Event]) {
    let mut waits = Vec::new();
    for e in events {
        waits.push(
            node.local
                .writer
                .submit_group(vec![(e.clone(), e.to_json())]),
        );
    }
    for w in waits {
        w.await.unwrap();
    }
}

fn opts(direction: Direction) -> SyncOptions {
    SyncOptions {
        direction,
        fetch_batch: 7,
        fetch_in_flight: 3,
        upload_window: 5,
        ..SyncOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_up_both_then_equal() {
    let relay = TestRelay::start().await;
    let node = local_node();
    let keys = Keys::generate();
    let events: Vec<_> = (0..90)
        .map(|i| event_at(&keys, 1, now() - 500 + i, vec![], &format!("s{i}")))
        .collect();
    let mut c = relay.client().await;
    for e in &events[..60] {
        c.publish_ok(e).await;
    }
    seed(&node, &events[30..]).await;

    // Down: we get 0..30; the relay is untouched.
    let mut seen = Vec::new();
    let report = sync_with_peer(&relay.url, &node.local, &opts(Direction::Down), |p| {
        seen.push(p.clone())
    })
    .await
    .unwrap();
    assert_eq!(
        (report.need, report.have, report.fetched, report.sent),
        (30, 30, 30, 0)
    );
    assert!(seen.last().unwrap().complete);
    assert_eq!(node.ids().len(), 90);
    assert_eq!(c.req_ids(&[json!({"limit": 500})]).await.len(), 60);

    // Up: the relay gets 60..90.
    let report = sync_with_peer(&relay.url, &node.local, &opts(Direction::Up), |_| {})
        .await
        .unwrap();
    assert_eq!((report.have, report.need, report.sent), (30, 0, 30));
    assert!(report.refused.is_empty());
    assert_eq!(c.req_ids(&[json!({"limit": 500})]).await.len(), 90);

    // Both ways at once after new writes on each side.
    let more: Vec<_> = (0..20).map(|i| note(&keys, &format!("more {i}"))).collect();
    for e in &more[..10] {
        c.publish_ok(e).await;
    }
    seed(&node, &more[10..]).await;
    let report = sync_with_peer(&relay.url, &node.local, &opts(Direction::Both), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (report.need, report.have, report.fetched, report.sent),
        (10, 10, 10, 10)
    );

    // d = 0: a final reconciliation finds nothing, in one round.
    let report = sync_with_peer(&relay.url, &node.local, &opts(Direction::Both), |_| {})
        .await
        .unwrap();
    assert_eq!((report.need, report.have, report.rounds), (0, 0, 1));
    let mut relay_ids = c.req_ids(&[json!({"limit": 500})]).await;
    relay_ids.sort();
    assert_eq!(relay_ids, node.ids());
    node.shutdown();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_reported_not_fatal() {
    let keys = Keys::generate();
    let banned = Keys::generate();
    let banned_hex = hex::encode(banned.public_key());
    let relay = TestRelay::start_with(move |c| c.policy.pubkey_deny = vec![banned_hex]).await;
    let node = local_node();
    seed(&node, &[note(&keys, "fine"), note(&banned, "refused")]).await;
    let report = sync_with_peer(&relay.url, &node.local, &opts(Direction::Up), |_| {})
        .await
        .unwrap();
    assert_eq!(report.sent, 1);
    assert_eq!(report.refused.len(), 1);
    assert!(
        report.refused[0].1.starts_with("blocked:"),
        "{:?}",
        report.refused
    );
    node.shutdown();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_nip77_or_silent_peer_fails_clearly() {
    let relay = TestRelay::start_with(|c| c.negentropy.enabled = false).await;
    let node = local_node();
    let err = sync_with_peer(&relay.url, &node.local, &opts(Direction::Down), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, SyncError::Refused(ref r) if r.is(Prefix::Blocked)),
        "{err}"
    );

    // A WebSocket server that never answers: a timeout, not a hang.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                use futures_util::StreamExt;
                while ws.next().await.is_some() {}
            });
        }
    });
    let silent = SyncOptions {
        timeout: Duration::from_millis(300),
        ..opts(Direction::Down)
    };
    let err = sync_with_peer(&format!("ws://{addr}"), &node.local, &silent, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::NoNegentropy(_)), "{err}");

    // wss:// is supported: a peer that is not TLS fails the handshake.
    let err = sync_with_peer(&format!("wss://{addr}"), &node.local, &silent, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::Connect(..)), "{err}");
    assert!(!err.to_string().contains("not compiled"), "{err}");

    // Nothing listening at all.
    let err = sync_with_peer("ws://127.0.0.1:1", &node.local, &silent, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::Connect(..)), "{err}");
    node.shutdown();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_our_policy_refuses_do_not_come_back() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    c.publish_ok(&note(&keys, "wanted")).await;
    c.publish_ok(&event_at(&keys, 7, now(), vec![], "+")).await;
    let policy = echorelay::config::PolicyConfig {
        kind_deny: vec![7],
        ..Default::default()
    };
    let node = local_node_with(Some(policy));
    let report = sync_with_peer(&relay.url, &node.local, &opts(Direction::Down), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (report.need, report.fetched, report.fetch_refused),
        (2, 1, 1)
    );
    // The refused event is remembered: the next run does not ask for it.
    let report = sync_with_peer(&relay.url, &node.local, &opts(Direction::Down), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (report.need, report.skipped_refused, report.fetched),
        (0, 1, 0)
    );
    node.shutdown();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_sync_converges_two_relays_and_keeps_state() {
    let a = TestRelay::start().await;
    let a_url = a.url.clone();
    let b = TestRelay::start_with(move |c| {
        c.peers = vec![echorelay::config::PeerConfig {
            url: a_url,
            dir: "both".into(),
            filter: "{}".into(),
            interval_secs: 1,
            live: false,
            pubkey: None,
        }];
    })
    .await;
    let keys = Keys::generate();
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;

    // Written on A, delivered to a live subscriber on B by the next sync.
    let e1 = note(&keys, "from A");
    on_b.req("watch", &[json!({"ids": [e1.id_hex()]})]).await;
    on_a.publish_ok(&e1).await;
    let got = on_b.recv().await;
    assert_eq!(got[2]["id"], e1.id_hex(), "{got}");

    // Written on B, pushed up to A.
    let e2 = note(&keys, "from B");
    on_a.req("watch", &[json!({"ids": [e2.id_hex()]})]).await;
    on_b.publish_ok(&e2).await;
    let got = on_a.recv().await;
    assert_eq!(got[2]["id"], e2.id_hex(), "{got}");

    let b_dir = b.stop().await;
    a.stop().await;
    // The peer state survived in B's data directory.
    let options = StoreOptions {
        map_size_mb: 64,
        max_map_size_mb: 1024,
        tree_excluded_kinds: vec![],
        trees: true,
    };
    let store = Store::open(b_dir.path(), &options).unwrap();
    let states = store
        .peer_records(echorelay::store::PeerRecord::State)
        .unwrap();
    assert_eq!(states.len(), 1);
    let state: echorelay::sync::PeerState = serde_json::from_slice(&states[0].1).unwrap();
    assert!(state.last_sync > 0, "{state:?}");
    assert!(state.events_synced >= 1, "{state:?}");
    assert_eq!(state.consecutive_failures, 0, "{state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_added_triggered_and_removed_at_run_time() {
    use echorelay::sync::SyncService;
    let relay = TestRelay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        map_size_mb: 64,
        max_map_size_mb: 1024,
        tree_excluded_kinds: vec![],
        trees: true,
    };
    let store = Arc::new(Store::open(dir.path(), &options).unwrap());
    // A fan-out channel on the local writer lets the test await each commit.
    let (committed_tx, committed) = flume::unbounded();
    let writer = Writer::spawn(
        store.clone(),
        Batching::new(&Default::default()),
        Arc::new(Metrics::default()),
        Some(committed_tx),
    );
    let verify = VerifyPool::new(2);
    let local = Local {
        store,
        writer: writer.handle(),
        verify: verify.handle(),
        policy: None,
        node_key: None,
        deflate: true,
    };
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let service = SyncService::start(local, &[], stop, None, None);
    let keys = Keys::generate();
    let mut c = relay.client().await;
    let next_commit = || async {
        let batch = tokio::time::timeout(WAIT, committed.recv_async())
            .await
            .expect("no commit")
            .unwrap();
        batch[0].event.id_hex()
    };

    let e1 = note(&keys, "first");
    c.publish_ok(&e1).await;
    let peer = echorelay::config::PeerConfig {
        url: relay.url.clone(),
        dir: "down".into(),
        filter: "{}".into(),
        interval_secs: 3600,
        live: false,
        pubkey: None,
    };
    service.add_peer(&peer).unwrap();
    assert_eq!(next_commit().await, e1.id_hex());
    assert_eq!(service.peer_urls(), vec![relay.url.clone()]);

    // Only a trigger makes it sync again before the hour is up.
    let e2 = note(&keys, "second");
    c.publish_ok(&e2).await;
    assert!(service.trigger(Some(&relay.url), None));
    assert_eq!(next_commit().await, e2.id_hex());

    // Paused: triggered runs still happen.
    service.set_active(false);
    let e3 = note(&keys, "third");
    c.publish_ok(&e3).await;
    assert!(service.trigger(None, None));
    assert_eq!(next_commit().await, e3.id_hex());

    assert!(service.add_peer(&peer).is_err(), "duplicate peer accepted");
    let bad = echorelay::config::PeerConfig {
        url: "http://example.com".into(),
        ..peer.clone()
    };
    assert!(service.add_peer(&bad).is_err());
    assert!(!service.trigger(Some("ws://127.0.0.1:1"), None));
    assert!(service.remove_peer(&relay.url));
    assert!(!service.remove_peer(&relay.url));
    assert!(service.peer_urls().is_empty());
    verify.shutdown();
    writer.shutdown();
    relay.stop().await;
}

/// A relay that requires NIP-42 for reading and writing: the sync client
/// answers its challenge with the node key and then syncs both ways; a
/// client without a key gets the peer's `auth-required:` reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_peers_auth_challenge_with_the_node_key() {
    let relay = TestRelay::start_with(|c| {
        c.auth.require_for_read = true;
        c.auth.require_for_write = true;
    })
    .await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    c.auth(&keys).await;
    let events: Vec<_> = (0..20)
        .map(|i| event_at(&keys, 1, now() - 50 + i, vec![], &format!("a{i}")))
        .collect();
    for e in &events[..10] {
        c.publish_ok(e).await;
    }
    let node = local_node();
    seed(&node, &events[10..]).await;
    let report = sync_with_peer(&relay.url, &node.local, &opts(Direction::Both), |_| {})
        .await
        .unwrap();
    assert_eq!((report.fetched, report.sent), (10, 10));
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(node.ids().len(), 20);
    assert_eq!(c.req_ids(&[json!({"limit": 100})]).await.len(), 20);

    let mut anonymous = local_node();
    anonymous.local.node_key = None;
    let err = sync_with_peer(&relay.url, &anonymous.local, &opts(Direction::Down), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SyncError::Refused(r) if r.is(Prefix::AuthRequired)),
        "{err}"
    );
    anonymous.shutdown();
    node.shutdown();
    relay.stop().await;
}

/// Restricted kinds (DMs) are in neither side's sync set: a peer never
/// shows them to us, so they are neither offered nor fetched, run after run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_kinds_are_not_offered_again_and_again() {
    let relay = TestRelay::start().await;
    let node = local_node();
    let keys = Keys::generate();
    let me = hex::encode(keys.public_key());
    let dm = event_at(&keys, 4, now() - 10, vec![vec!["p", &me]], "x");
    let public = note(&keys, "public");
    seed(&node, &[dm, public.clone()]).await;
    let first = sync_with_peer(&relay.url, &node.local, &opts(Direction::Both), |_| {})
        .await
        .unwrap();
    assert_eq!((first.have, first.sent), (1, 1), "{first:?}");
    let again = sync_with_peer(&relay.url, &node.local, &opts(Direction::Both), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (again.have, again.need, again.rounds),
        (0, 0, 1),
        "{again:?}"
    );
    let mut c = relay.client().await;
    c.auth(&keys).await;
    assert_eq!(
        c.req_ids(&[json!({"kinds": [1, 4]})]).await,
        vec![public.id_hex()]
    );
    node.shutdown();
    relay.stop().await;
}

/// A peer that takes small messages (strfry: 131 072 bytes) gets NEG-MSGs
/// that fit: the client reads its NIP-11 `max_message_length` and cuts its
/// frames to match, where the configured 250 000-byte frames (500 kB of
/// hex) would be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_fit_the_peers_message_limit() {
    let peer = TestRelay::start_with(|c| {
        c.limits.max_message_size = 131_072;
        c.limits.max_negentropy_message_size = 131_072;
    })
    .await;
    let node = local_node();
    let keys = Keys::generate();
    let base = now() - 100_000;
    let ours: Vec<_> = (0..8000)
        .map(|i| event_at(&keys, 1, base + i, vec![], &format!("ours {i}")))
        .collect();
    seed(&node, &ours).await;
    // The peer holds as many others (written by `import`, another process),
    // so the rounds carry long id lists both ways.
    let theirs: Vec<String> = (0..8000)
        .map(|i| event_at(&keys, 1, base + i, vec![], &format!("theirs {i}")).to_json())
        .collect();
    let file = peer.dir.path().join("theirs.jsonl");
    std::fs::write(&file, theirs.join("\n")).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("import")
        .arg(&file)
        .arg("--data")
        .arg(peer.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = sync_with_peer(&peer.url, &node.local, &opts(Direction::Up), |_| {})
        .await
        .expect("the sync fits the peer's limit");
    assert_eq!((report.have, report.need), (8000, 8000), "{report:?}");
    let mut c = peer.client().await;
    let count = c.ask(json!(["COUNT", "n", {"kinds": [1]}])).await;
    assert_eq!(count[2]["count"], 16000);
    node.shutdown();
    peer.stop().await;
}
