//! Convergence of a mesh: three relays in one process (separate data dirs,
//! 127.0.0.1 ports) with random writes on each, peers added through the
//! control API, one node restarted mid-way, and a partition that heals with
//! live mode on. Every check ends with d = 0 reconciliations between every
//! pair: one round, nothing to have or need.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use echorelay::event::{now, Keys};
use echorelay::negentropy::{Item, VectorStorage};
use serde_json::json;

fn big_limits(c: &mut echorelay::config::Config) {
    c.limits.max_limit = 100_000;
}

async fn start() -> TestRelay {
    TestRelay::start_with(big_limits).await
}

/// Every stored event of `relay` as negentropy items.
async fn items(relay: &TestRelay) -> Vec<Item> {
    let mut c = relay.client().await;
    c.req("all", &[json!({"limit": 100_000})])
        .await
        .iter()
        .map(|e| {
            let id = echorelay::event::decode_hex::<32>(e["id"].as_str().unwrap()).unwrap();
            Item::new(e["created_at"].as_u64().unwrap(), id)
        })
        .collect()
}

/// Waits (asking again) until every relay holds `expected` events.
async fn wait_for_count(relays: &[&TestRelay], expected: usize) {
    let what = format!("every relay to hold {expected} events");
    eventually(&what, Duration::from_secs(30), || async move {
        let mut counts = Vec::new();
        for r in relays {
            counts.push(items(r).await.len());
        }
        counts.iter().all(|&n| n == expected).then_some(())
    })
    .await;
}

/// d = 0 between every pair: one round and an empty difference.
async fn assert_equal_sets(relays: &[&TestRelay]) {
    for a in relays {
        let mine = VectorStorage::new(items(a).await);
        for b in relays {
            let mut c = b.client().await;
            let (diff, rounds) = reconcile(&mut c, "d0", json!({}), &mine, 0).await;
            assert_eq!((diff.have.len(), diff.need.len(), rounds), (0, 0, 1));
        }
    }
}

async fn write_random(relay: &TestRelay, keys: &Keys, tag: &str, n: usize) {
    let mut c = relay.client().await;
    for i in 0..n {
        // Never inside the last minute: the live checks below ask for that.
        let at = now() - 60 - rand::random_range(0..100_000);
        c.publish_ok(&event_at(keys, 1, at, vec![], &format!("{tag} {i}")))
            .await;
    }
}

async fn add_peer(from: &TestRelay, to_url: &str, extra: serde_json::Value) {
    let mut body = json!({"peer_url": to_url, "dir": "both", "interval_secs": 1});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    from.admin().call("AddPeer", &body).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_converge_through_a_restart() {
    let (a, b, c) = (start().await, start().await, start().await);
    let keys = Keys::generate();
    for (relay, tag) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        write_random(relay, &keys, tag, 40).await;
    }
    // A line A — B — C: C's writes reach A only through B.
    add_peer(&a, &b.url, json!({})).await;
    add_peer(&c, &b.url, json!({})).await;
    wait_for_count(&[&a, &b, &c], 120).await;
    assert_equal_sets(&[&a, &b, &c]).await;

    // B stops; both sides keep writing; B comes back on the same address
    // with its data and peers (added at run time, so kept in LMDB).
    let b_addr = b.addr;
    let b_dir = b.stop().await;
    write_random(&a, &keys, "a2", 15).await;
    write_random(&c, &keys, "c2", 15).await;
    let b = TestRelay::start_in(b_dir, b_addr, big_limits).await;
    write_random(&b, &keys, "b2", 15).await;
    wait_for_count(&[&a, &b, &c], 165).await;
    assert_equal_sets(&[&a, &b, &c]).await;
    for r in [a, b, c] {
        r.stop().await;
    }
}

/// A TCP forwarder that can cut every connection through it and refuse new
/// ones until healed: a network partition between two relays.
struct Partition {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    changed: Arc<tokio::sync::Notify>,
}

impl Partition {
    async fn start(target: SocketAddr) -> Partition {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let changed = Arc::new(tokio::sync::Notify::new());
        let (cut2, changed2) = (cut.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut2.load(Ordering::SeqCst) {
                    continue;
                }
                let changed = changed2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let cut = changed.notified();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut => {}
                    }
                });
            }
        });
        Partition { addr, cut, changed }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mode_propagates_at_once_and_heals_a_partition() {
    let (a, b) = (start().await, start().await);
    let keys = Keys::generate();
    write_random(&a, &keys, "a", 20).await;
    write_random(&b, &keys, "b", 20).await;
    let link = Partition::start(b.addr).await;
    // Reconciliation only hourly: what arrives between runs comes live.
    add_peer(
        &a,
        &format!("ws://{}", link.addr),
        json!({"live": true, "interval_secs": 3600}),
    )
    .await;
    wait_for_count(&[&a, &b], 40).await;

    // A write on either side reaches the other's live subscribers.
    let mut on_a = a.client().await;
    on_a.send(json!(["REQ", "new", {"kinds": [1], "since": now() - 5}]))
        .await;
    assert_eq!(on_a.recv().await, json!(["EOSE", "new"]));
    let mut on_b = b.client().await;
    on_b.send(json!(["REQ", "new", {"kinds": [1], "since": now() - 5}]))
        .await;
    assert_eq!(on_b.recv().await, json!(["EOSE", "new"]));
    let from_b = note(&keys, "written on b");
    b.client().await.publish_ok(&from_b).await;
    let seen = on_a.recv().await;
    assert_eq!(seen[2]["id"], from_b.id_hex(), "{seen}");
    assert_eq!(on_b.recv().await[2]["id"], from_b.id_hex());
    let from_a = note(&keys, "written on a");
    a.client().await.publish_ok(&from_a).await;
    assert_eq!(on_b.recv().await[2]["id"], from_a.id_hex());
    // A burst is committed in few batches and goes out in pieces of the
    // store's feed: every event of it reaches the other side live.
    let burst: Vec<_> = (0..100)
        .map(|i| event_at(&keys, 1, now(), vec![], &format!("burst {i}")))
        .collect();
    let mut writer = a.client().await;
    for event in &burst {
        writer
            .send_text(format!("[\"EVENT\",{}]", event.to_json()))
            .await;
    }
    let mut live: std::collections::HashSet<String> = Default::default();
    while live.len() < burst.len() {
        let seen = on_b.recv().await;
        assert_eq!(seen[0], "EVENT", "{seen}");
        live.insert(seen[2]["id"].as_str().expect("id").to_string());
    }
    assert!(burst.iter().all(|e| live.contains(&e.id_hex())));

    // Partition: writes on both sides stay apart ...
    link.cut();
    write_random(&a, &keys, "a2", 10).await;
    write_random(&b, &keys, "b2", 10).await;
    assert_eq!(items(&a).await.len(), 152);
    assert_eq!(items(&b).await.len(), 152);
    // ... and once it heals, the live link reconnects and reconciles.
    link.heal();
    wait_for_count(&[&a, &b], 162).await;
    assert_equal_sets(&[&a, &b]).await;
    a.stop().await;
    b.stop().await;
}

/// Graph transactions replicate only between mesh nodes: two nodes that
/// know each other's node key exchange them (each graph's own tree); a
/// third relay that is not in the mesh gets none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_events_replicate_between_mesh_nodes_only() {
    // The outsider trusts only an inspector key of ours, so we can look
    // inside it; it does not trust A or B.
    let inspector = Keys::generate();
    let inspector_hex = hex::encode(inspector.public_key());
    let outsider = TestRelay::start_with(|c| {
        big_limits(c);
        c.auth.trusted_nodes = vec![inspector_hex];
    })
    .await;
    let (a, b) = (start().await, start().await);
    let key_of = |r: &TestRelay| echorelay::secrets::node_key(r.dir.path()).unwrap();
    let (ka, kb) = (key_of(&a), key_of(&b));
    let hex_of = |k: &Keys| hex::encode(k.public_key());
    // Each side knows the other's URL and key (B learns A's key by adding
    // A as a peer that it never syncs with on its own).
    add_peer(
        &b,
        &a.url,
        json!({"pubkey": hex_of(&ka), "interval_secs": 3600, "dir": "up"}),
    )
    .await;
    add_peer(&a, &outsider.url, json!({})).await;
    let mut on_a = a.client().await;
    on_a.auth(&ka).await;
    let mut on_b = b.client().await;
    on_b.auth(&kb).await;
    // A graph homed on each node, with five txs it sequenced.
    for (home, graph, socket) in [(&ka, "g1", &mut on_a), (&kb, "g2", &mut on_b)] {
        let txs: Vec<String> = (1..=5).map(|t| format!("{graph} {t}")).collect();
        let txs: Vec<&str> = txs.iter().map(String::as_str).collect();
        let (index, txs) = homed_graph(home, graph, &txs);
        for event in std::iter::once(&index).chain(&txs) {
            socket.publish_ok(event).await;
        }
    }
    on_a.publish_ok(&note(&ka, "public")).await;
    add_peer(&a, &b.url, json!({"pubkey": hex_of(&kb)})).await;

    let (ra, rb) = (&a, &b);
    let (kaa, kbb) = (&ka, &kb);
    eventually(
        "both homes' txs on both nodes",
        Duration::from_secs(30),
        || async move {
            let mut counts = Vec::new();
            for (relay, key) in [(ra, kaa), (rb, kbb)] {
                let mut c = relay.client().await;
                c.auth(key).await;
                counts.push(c.req_ids(&[json!({"kinds": [4071]})]).await.len());
            }
            (counts == [10, 10]).then_some(())
        },
    )
    .await;
    // The outsider got the public note from A's {} sync, and no graph tx.
    wait_for_count(&[&outsider], 1).await;
    let mut inspect = outsider.client().await;
    inspect.auth(&inspector).await;
    assert!(inspect
        .req_ids(&[json!({"kinds": [4071]})])
        .await
        .is_empty());
    let mut outsider_as_a = outsider.client().await;
    outsider_as_a.auth(&ka).await;
    let reply = outsider_as_a
        .ask(json!(["REQ", "g", {"kinds": [4071]}]))
        .await;
    assert_eq!(reply[0], "CLOSED", "{reply}");
    for r in [a, b, outsider] {
        r.stop().await;
    }
}
