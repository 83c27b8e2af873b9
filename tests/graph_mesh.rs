//! Graph sync (DB-Sync) across the mesh: two nodes converge on one graph.

mod common;

use std::time::Duration;

use common::graph_api::*;
use common::*;
use serde_json::{json, Value};

/// Two mesh nodes, one graph: clients write on each, the nodes sync, and a
/// client on each node pulls the same txs (each node in its own t order);
/// a socket on B hears `changed` for A's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_converge_on_one_graph() {
    let a = TestRelay::start_with(with_users).await;
    let b = TestRelay::start_with(with_users).await;
    let (ka, kb) = (a.node_pubkey(), b.node_pubkey());
    let live = json!({"dir": "both", "interval_secs": 1, "live": true});
    let add = |from: &TestRelay, url: &str, key: &str| {
        let mut body = live.clone();
        body["peer_url"] = json!(url);
        body["pubkey"] = json!(key);
        let admin = from.admin();
        async move { admin.call("AddPeer", &body).await.unwrap() }
    };
    add(&a, &b.url, &kb).await;
    add(&b, &a.url, &ka).await;

    let graph = create_graph(a.addr, ALICE, "shared").await;
    // The index event reaches B; then alice may use the graph there.
    let access = format!("/graphs/{graph}/access");
    let (at_b, access_path) = (b.addr, &access);
    eventually("the graph to reach B", Duration::from_secs(30), || async move {
        (call(at_b, "GET", access_path, Some(ALICE), "").await.0 == 200).then_some(())
    })
    .await;
    let mut on_a = GraphSocket::open(a.addr, &graph, ALICE).await;
    let mut on_b = GraphSocket::open(b.addr, &graph, ALICE).await;
    let t = on_a
        .ask(json!({"type": "hello", "client": "a"}), "hello")
        .await["t"]
        .as_u64()
        .unwrap();
    on_a.ask(
        json!({"type": "tx/batch", "t-before": t, "txs": ["a1", "a2"]}),
        "tx/batch/ok",
    )
    .await;
    // A's writes arrive on B and B's socket is told.
    let changed = on_b.next("changed").await;
    assert!(changed["t"].as_u64().unwrap() >= 1);
    let mut t_b = on_b
        .ask(json!({"type": "hello", "client": "b"}), "hello")
        .await["t"]
        .as_u64()
        .unwrap();
    loop {
        on_b.send(json!({"type": "tx/batch", "t-before": t_b, "txs": ["b1"]}))
            .await;
        let reply = on_b.next_of(&["tx/batch/ok", "tx/reject"]).await;
        if reply["type"] == "tx/batch/ok" {
            break;
        }
        t_b = reply["t"].as_u64().unwrap();
    }

    let mut want = vec!["a1", "a2", "b1"];
    want.sort();
    for socket in [&mut on_a, &mut on_b] {
        let want = want.clone();
        let pulled = eventually_mut(
            "one log on both nodes",
            Duration::from_secs(30),
            socket,
            move |socket| {
                let want = want.clone();
                Box::pin(async move {
                    let pulled = socket
                        .ask(json!({"type": "pull", "since": 0}), "pull/ok")
                        .await;
                    let txs = pulled["txs"].as_array().unwrap();
                    let ts: Vec<u64> = txs.iter().map(|x| x["t"].as_u64().unwrap()).collect();
                    assert!(
                        ts.windows(2).all(|w| w[0] < w[1]),
                        "t only advances: {ts:?}"
                    );
                    let mut got: Vec<&str> =
                        txs.iter().map(|x| x["tx"].as_str().unwrap()).collect();
                    got.sort();
                    (got == want).then_some(pulled)
                })
            },
        )
        .await;
        assert_eq!(pulled["t"], pulled["txs"].as_array().unwrap().len());
    }

    // Reset on A: both nodes drop the old txs, and a full sync between
    // them does not bring them back.
    let reset = format!("/sync/{graph}/admin/reset");
    assert_eq!(call(b.addr, "DELETE", &reset, Some(BOB), "").await.0, 403);
    assert_eq!(
        call(a.addr, "DELETE", &reset, Some(ALICE), "").await,
        (200, json!({"ok": true}))
    );
    let t = on_a.ask(json!({"type": "hello"}), "hello").await["t"]
        .as_u64()
        .unwrap();
    let ok = on_a
        .ask(
            json!({"type": "tx/batch", "t-before": t, "txs": ["after reset"]}),
            "tx/batch/ok",
        )
        .await;
    assert_eq!(ok["t"], t + 1, "t keeps advancing across a reset");
    let only_new = |pulled: &Value| -> Vec<String> {
        pulled["txs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["tx"].as_str().unwrap().to_string())
            .collect()
    };
    eventually_mut(
        "B to drop the old txs",
        Duration::from_secs(30),
        &mut on_b,
        move |on_b| {
            Box::pin(async move {
                let pulled = on_b
                    .ask(json!({"type": "pull", "since": 0}), "pull/ok")
                    .await;
                (only_new(&pulled) == ["after reset"]).then_some(())
            })
        },
    )
    .await;
    let mut records = Vec::new();
    b.admin()
        .stream("SyncWithPeer", &json!({"peer_url": a.url}), |r| {
            records.push(r.clone())
        })
        .await
        .unwrap();
    assert_eq!(records.last().unwrap()["complete"], true, "{records:?}");
    let pulled = on_a
        .ask(json!({"type": "pull", "since": 0}), "pull/ok")
        .await;
    assert_eq!(only_new(&pulled), ["after reset"]);

    // Deleting on B removes the graph on A too.
    assert_eq!(
        call(
            b.addr,
            "DELETE",
            &format!("/graphs/{graph}"),
            Some(ALICE),
            ""
        )
        .await
        .0,
        200
    );
    let (at_a, access_path) = (a.addr, &access);
    eventually("the deletion to reach A", Duration::from_secs(30), || async move {
        (call(at_a, "GET", access_path, Some(ALICE), "").await.0 == 404).then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
}
