//! One order per graph across mesh nodes (SPEC §4), over real sockets: the
//! graph's home sequences every tx, other nodes forward to it, and every
//! node serves the same txs in the same order with the same t. The home
//! going away refuses writes elsewhere (`home unreachable`), never forks.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

async fn create_graph(addr: SocketAddr) -> String {
    let auth = format!("Bearer {ALICE}");
    let headers = [("Authorization", auth.as_str())];
    let body = json!({"graph-name": "shared"}).to_string();
    let (status, _, reply) = http_request(addr, "POST", "/graphs", &headers, &body).await;
    assert_eq!(status, 200, "{reply}");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    reply["graph-id"].as_str().unwrap().to_string()
}

/// Waits until `relay` knows the graph (its index event arrived).
async fn await_graph(relay: &TestRelay, graph: &str) {
    let auth = format!("Bearer {ALICE}");
    let path = format!("/graphs/{graph}/access");
    let (addr, path, auth) = (relay.addr, &path, &auth);
    eventually(
        "the graph to arrive",
        Duration::from_secs(30),
        || async move {
            let status = http_get(addr, path, &[("Authorization", auth)]).await.0;
            (status == 200).then_some(())
        },
    )
    .await;
}

/// The whole log as one node serves it: (t, [(t, tx)]).
async fn log_of(relay: &TestRelay, graph: &str) -> (u64, Vec<(u64, String)>) {
    let auth = format!("Bearer {ALICE}");
    let path = format!("/sync/{graph}/pull?since=0");
    let (status, _, body) = http_get(relay.addr, &path, &[("Authorization", &auth)]).await;
    assert_eq!(status, 200, "{body}");
    let pulled: Value = serde_json::from_str(&body).unwrap();
    let txs = pulled["txs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["t"].as_u64().unwrap(),
                x["tx"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (pulled["t"].as_u64().unwrap(), txs)
}

/// Waits until every relay serves `count` txs, then asserts they serve the
/// same log, gap-free from t=1.
async fn await_one_log(relays: &[&TestRelay], graph: &str, count: usize) -> Vec<String> {
    let logs = eventually(
        "every node to serve one log",
        Duration::from_secs(60),
        || async move {
            let mut logs = Vec::new();
            for relay in relays {
                logs.push(log_of(relay, graph).await);
            }
            // (Counts can match before they agree: a node that has not yet
            // heard of a move still serves its former home's tx.)
            let same = logs.windows(2).all(|w| w[0] == w[1]);
            (same && logs.iter().all(|(_, txs)| txs.len() == count)).then_some(logs)
        },
    )
    .await;
    for (head, txs) in &logs {
        assert_eq!(*head, count as u64);
        let ts: Vec<u64> = txs.iter().map(|(t, _)| *t).collect();
        assert_eq!(ts, (1..=count as u64).collect::<Vec<_>>(), "gap-free");
    }
    logs[0].1.iter().map(|(_, tx)| tx.clone()).collect()
}

/// Sends a batch of one tx and returns the reply.
async fn batch(socket: &mut GraphSocket, t_before: u64, tx: &str) -> Value {
    socket
        .send(json!({"type": "tx/batch", "t-before": t_before, "txs": [tx]}))
        .await;
    socket.next_of(&["tx/batch/ok", "tx/reject", "error"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_on_two_nodes_end_in_one_order() {
    let a = TestRelay::start_with(with_alice).await;
    let b = TestRelay::start_with(with_alice).await;
    live_peer(&a, &b).await;
    live_peer(&b, &a).await;
    let graph = create_graph(a.addr).await;
    await_graph(&b, &graph).await;
    let mut on_a = GraphSocket::open(a.addr, &graph, ALICE).await;
    let mut on_b = GraphSocket::open(b.addr, &graph, ALICE).await;
    assert_eq!(batch(&mut on_a, 0, "base").await["t"], 1);
    await_one_log(&[&a, &b], &graph, 1).await;

    // Both clients write on t-before 1: B's goes to the home (A) and wins,
    // A's is stale there, with the home's t.
    let from_b = batch(&mut on_b, 1, "from B").await;
    assert_eq!(from_b, json!({"type": "tx/batch/ok", "t": 2}));
    let from_a = batch(&mut on_a, 1, "from A").await;
    assert_eq!(
        from_a,
        json!({"type": "tx/reject", "reason": "stale", "t": 2})
    );
    // B stored the home's signed tx with the reply: its own pull has it.
    let (head, txs) = log_of(&b, &graph).await;
    assert_eq!((head, txs.last().unwrap().1.as_str()), (2, "from B"));
    assert_eq!(batch(&mut on_a, 2, "from A").await["t"], 3);
    let order = await_one_log(&[&a, &b], &graph, 3).await;
    assert_eq!(order, ["base", "from B", "from A"]);

    // The home goes away: B refuses writes and still serves its log.
    let addr = a.addr;
    let dir = a.stop().await;
    let cut_off = batch(&mut on_b, 3, "while A is down").await;
    assert_eq!(
        cut_off,
        json!({"type": "tx/reject", "reason": "home unreachable"})
    );
    assert_eq!(log_of(&b, &graph).await.0, 3, "nothing stored, pulls work");
    // The home comes back at its URL: writes through B resume.
    let a = TestRelay::start_in(dir, addr, with_alice).await;
    let resumed = batch(&mut on_b, 3, "after A is back").await;
    assert_eq!(resumed["t"], 4, "{resumed}");
    let order = await_one_log(&[&a, &b], &graph, 4).await;
    assert_eq!(order.last().unwrap(), "after A is back");

    // A reset asked of B is made by the home, at the home's head: both
    // nodes drop the old txs and go on from t=5 with no gap.
    let auth = format!("Bearer {ALICE}");
    let reset = format!("/sync/{graph}/admin/reset");
    let (status, _, body) =
        http_request(b.addr, "DELETE", &reset, &[("Authorization", &auth)], "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    let (ra, rb, g) = (&a, &b, &graph);
    eventually("the old txs to go", Duration::from_secs(30), || async move {
        (log_of(ra, g).await.1.len() + log_of(rb, g).await.1.len() == 0).then_some(())
    })
    .await;
    assert_eq!(batch(&mut on_b, 4, "after reset").await["t"], 5);
    for node in [&a, &b] {
        let g = &graph;
        eventually(
            "the log after the reset",
            Duration::from_secs(30),
            || async move {
                (log_of(node, g).await == (5, vec![(5, "after reset".to_string())])).then_some(())
            },
        )
        .await;
    }
    a.stop().await;
    b.stop().await;
}

/// A client that writes `n` txs through `relay`, re-basing on every stale.
async fn writer(addr: SocketAddr, graph: String, name: &'static str, n: usize) {
    let mut socket = GraphSocket::open(addr, &graph, ALICE).await;
    let mut t = socket.ask(json!({"type": "hello"}), "hello").await["t"]
        .as_u64()
        .unwrap();
    for i in 0..n {
        loop {
            let reply = batch(&mut socket, t, &format!("{name}{i}")).await;
            t = reply["t"].as_u64().unwrap_or_else(|| panic!("{reply}"));
            if reply["type"] == "tx/batch/ok" {
                break;
            }
            assert_eq!(reply["reason"], "stale", "{reply}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_the_home_in_the_middle_keep_one_gap_free_log() {
    let (a, b, c) = (
        TestRelay::start_with(with_alice).await,
        TestRelay::start_with(with_alice).await,
        TestRelay::start_with(with_alice).await,
    );
    for (from, to) in [(&a, &b), (&b, &a), (&b, &c), (&c, &b), (&a, &c), (&c, &a)] {
        live_peer(from, to).await;
    }
    let graph = create_graph(b.addr).await;
    await_graph(&a, &graph).await;
    await_graph(&c, &graph).await;
    const EACH: usize = 70;
    let writers = [(&a, "a"), (&b, "b"), (&c, "c")]
        .map(|(relay, name)| tokio::spawn(writer(relay.addr, graph.clone(), name, EACH)));
    for w in writers {
        w.await.unwrap();
    }
    let order = await_one_log(&[&a, &b, &c], &graph, 3 * EACH).await;
    for name in ["a", "b", "c"] {
        // Each client's own txs keep the order it wrote them in.
        let mine: Vec<&String> = order.iter().filter(|tx| tx.starts_with(name)).collect();
        let want: Vec<String> = (0..EACH).map(|i| format!("{name}{i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }
    for r in [a, b, c] {
        r.stop().await;
    }
}

/// Runs `echorelay graph ARGS --json` against `relay`'s control API.
async fn graph_cli(relay: &TestRelay, args: &[&str]) -> (bool, Value, String) {
    let mut command = std::process::Command::new(BIN);
    command
        .arg("graph")
        .args(args)
        .args(["--json", "--url", &format!("http://{}", relay.admin_addr)])
        .args(["--token", ADMIN_TOKEN]);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let reply = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.success(), reply, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_moves_home_and_a_forced_move_makes_the_old_homes_txs_conflicts() {
    let (a, b) = trusting_pair().await;
    live_peer(&a, &b).await;
    live_peer(&b, &a).await;
    let graph = create_graph(a.addr).await;
    await_graph(&b, &graph).await;
    let mut on_a = GraphSocket::open(a.addr, &graph, ALICE).await;
    assert_eq!(batch(&mut on_a, 0, "a1").await["t"], 1);
    await_one_log(&[&a, &b], &graph, 1).await;

    // Bad input: a key outside the mesh; a plain move from a non-home.
    let stranger = hex::encode(echorelay::event::Keys::generate().public_key());
    let (ok, _, err) = graph_cli(&a, &["move", &graph, "--to", &stranger]).await;
    assert!(!ok && err.contains("not a node key of the mesh"), "{err}");
    let (ok, _, err) = graph_cli(&b, &["move", &graph, "--to", &b.node_pubkey()]).await;
    assert!(!ok && err.contains("not the graph's home"), "{err}");

    // Partition: the links go, the keys stay trusted.
    cut_peer(&a, &b).await;
    cut_peer(&b, &a).await;
    // B declares A lost and takes the graph from t=2; A, cut off, goes on.
    let (ok, moved, err) =
        graph_cli(&b, &["move", &graph, "--to", &b.node_pubkey(), "--force"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        (moved["term"].clone(), moved["from-t"].clone()),
        (json!(1), json!(2))
    );
    let mut on_b = GraphSocket::open(b.addr, &graph, ALICE).await;
    assert_eq!(batch(&mut on_a, 1, "a2 (old home)").await["t"], 2);
    assert_eq!(batch(&mut on_b, 1, "b2 (new home)").await["t"], 2);

    // Healed: both serve B's order; A's post-move tx is a listed conflict.
    live_peer(&a, &b).await;
    live_peer(&b, &a).await;
    let order = await_one_log(&[&a, &b], &graph, 2).await;
    assert_eq!(order, ["a1", "b2 (new home)"]);
    // Listed where it was accepted (and on any node it reached before the
    // move did): here the old home.
    let (ra, g) = (&a, &graph);
    let listed = eventually(
        "the old home's tx listed as a conflict",
        Duration::from_secs(30),
        || async move {
            let (ok, listed, err) = graph_cli(ra, &["conflicts", g]).await;
            assert!(ok, "{err}");
            let txs: Vec<&str> = listed["conflicts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["tx"].as_str().unwrap())
                .collect();
            (txs == ["a2 (old home)"]).then_some(listed)
        },
    )
    .await;
    assert_eq!(listed["conflicts"][0]["t"], 2);
    // A now forwards to B; the list shows the new home everywhere.
    assert_eq!(batch(&mut on_a, 2, "a3 via B").await["t"], 3);
    let (_, listed, _) = graph_cli(&a, &["list"]).await;
    let entry = &listed["graphs"][0];
    assert_eq!(
        (entry["home"].as_str().unwrap(), &entry["term"]),
        (b.node_pubkey().as_str(), &json!(1))
    );

    // A plain move on the home hands it on: B gives it back to A.
    let (ok, moved, err) = graph_cli(&b, &["move", &graph, "--to", &a.node_pubkey()]).await;
    assert!(ok, "{err}");
    assert_eq!(moved["from-t"], 4);
    await_home(&a, &graph, &a.node_pubkey()).await;
    assert_eq!(batch(&mut on_b, 3, "b4 via A").await["t"], 4);
    let order = await_one_log(&[&a, &b], &graph, 4).await;
    assert_eq!(order[2..], ["a3 via B", "b4 via A"]);
    a.stop().await;
    b.stop().await;
}

/// Waits until `relay` names `home` as the graph's home.
async fn await_home(relay: &TestRelay, graph: &str, home: &str) {
    eventually(
        "the graph's new home listed",
        Duration::from_secs(30),
        || async move {
            let (_, listed, _) = graph_cli(relay, &["list"]).await;
            listed["graphs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|g| g["graph-id"] == graph && g["home"] == home)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_txs_out_of_order_are_refused_over_nip01() {
    let other = echorelay::event::Keys::generate();
    let relay = TestRelay::start_with(|c| {
        c.auth.trusted_nodes = vec![hex::encode(other.public_key())];
    })
    .await;
    let home = relay.node_key();
    let mut c = relay.client().await;
    c.auth(&home).await;
    let (index, txs) = homed_graph(&home, "g", &["first"]);
    let ok = |reply: &Value| reply[2] == json!(true);
    let reason = |reply: Value| reply[3].as_str().unwrap_or("").to_string();
    let early = c.publish(&txs[0]).await;
    assert!(reason(early).starts_with("error:"), "a tx before its index");
    assert!(ok(&c.publish(&index).await));
    assert!(ok(&c.publish(&txs[0]).await));
    let tx = |keys: &echorelay::event::Keys, tags: Vec<Vec<&str>>| {
        event_at(keys, 4071, echorelay::event::now(), tags, "x")
    };
    let cases = [
        (tx(&home, vec![vec!["g", "g"]]), "invalid: a graph tx needs"),
        (
            tx(&home, vec![vec!["g", "g"], vec!["t", "1"]]),
            "invalid: t already taken",
        ),
        (
            tx(&other, vec![vec!["g", "g"], vec!["t", "2"]]),
            "restricted: not signed by the graph's home",
        ),
        (
            tx(
                &home,
                vec![vec!["g", "g"], vec!["t", "2"], vec!["term", "1"]],
            ),
            "restricted:",
        ),
    ];
    for (event, want) in cases {
        let reply = c.publish(&event).await;
        assert!(reason(reply.clone()).starts_with(want), "{want}: {reply}");
    }
    // Nothing of it is stored.
    let mut check = relay.client().await;
    check.auth(&home).await;
    let ids = check.req_ids(&[json!({"kinds": [4071]})]).await;
    assert_eq!(ids, vec![txs[0].id_hex()]);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_run_reconciles_every_graph_over_one_connection() {
    let (a, b) = trusting_pair().await;
    let mut graphs = Vec::new();
    for i in 0..2 {
        graphs.push(create_graph(a.addr).await);
        let mut socket = GraphSocket::open(a.addr, &graphs[i], ALICE).await;
        assert_eq!(
            batch(&mut socket, 0, &format!("[:early {i}]")).await["type"],
            "tx/batch/ok"
        );
    }
    let peer =
        json!({"peer_url": a.url, "pubkey": a.node_pubkey(), "dir": "down", "interval_secs": 3600});
    b.admin().call("AddPeer", &peer).await.expect("add peer");
    let admin = b.admin();
    let (admin_ref, url) = (&admin, a.url.as_str());
    eventually("the first run", WAIT, || async move {
        let state = admin_ref
            .call("GetPeerSyncState", &json!({ "peer_url": url }))
            .await
            .ok()?;
        (state["state"]["last_sync"].as_u64() > Some(0)).then_some(())
    })
    .await;
    for graph in &graphs {
        await_graph(&b, graph).await;
    }

    // Three graphs more, each with a tx: the next run brings all of them
    // (index events first, then each graph's tree) on one connection.
    for i in 0..3 {
        let graph = create_graph(a.addr).await;
        let mut socket = GraphSocket::open(a.addr, &graph, ALICE).await;
        assert_eq!(
            batch(&mut socket, 0, &format!("[:late {i}]")).await["type"],
            "tx/batch/ok"
        );
        graphs.push(graph);
    }
    let before = metric(a.addr, "echorelay_connections_total").await;
    let mut records = Vec::new();
    let sync = json!({ "peer_url": a.url });
    admin
        .stream("SyncWithPeer", &sync, |r| records.push(r.clone()))
        .await
        .expect("sync");
    assert_eq!(
        records.last().map(|r| r["complete"].clone()),
        Some(json!(true)),
        "{records:?}"
    );
    let after = metric(a.addr, "echorelay_connections_total").await;
    assert_eq!(after, before + 1, "one connection for the whole run");
    for graph in &graphs {
        assert_eq!(log_of(&b, graph).await, log_of(&a, graph).await);
        assert_eq!(log_of(&b, graph).await.0, 1);
    }
    a.stop().await;
    b.stop().await;
}
