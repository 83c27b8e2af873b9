//! Graph sync (DB-Sync): every socket message and its bad inputs, and the
//! HTTP mirror of the log.

mod common;

use common::graph_api::*;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_protocol_and_http_mirror() {
    let relay = TestRelay::start_with(with_users).await;
    let addr = relay.addr;
    let graph = create_graph(addr, ALICE, "g").await;
    // Refused before the upgrade.
    let url = format!("ws://{addr}/sync/{graph}?token={BOB}");
    assert!(tokio_tungstenite::connect_async(url).await.is_err());

    let mut a = GraphSocket::open(addr, &graph, ALICE).await;
    let online = a.next("online-users").await;
    assert_eq!(online["online-users"][0]["user-id"], "alice");
    assert_eq!(
        a.ask(json!({"type": "hello", "client": "repo-1"}), "hello")
            .await,
        json!({"type": "hello", "t": 0})
    );
    let mut b = GraphSocket::open(addr, &graph, ALICE).await;
    b.send(json!({"type": "hello", "client": "repo-2"})).await;
    b.next("hello").await;
    b.send(json!({"type": "presence", "editing-block-uuid": "block-1"}))
        .await;
    loop {
        let online = a.next("online-users").await;
        let users = online["online-users"].as_array().unwrap();
        if users.iter().any(|u| u["editing-block-uuid"] == "block-1") {
            break;
        }
    }

    // A flood of presence changes reaches the others coalesced, ending on
    // the last state.
    for i in 0..100 {
        b.send(json!({"type": "presence", "editing-block-uuid": format!("spam-{i}")}))
            .await;
    }
    let mut seen = 0;
    loop {
        let online = a.next("online-users").await;
        seen += 1;
        let users = online["online-users"].as_array().unwrap();
        if users.iter().any(|u| u["editing-block-uuid"] == "spam-99") {
            break;
        }
    }
    assert!(
        seen <= 10,
        "{seen} online-users messages for 100 presence changes"
    );

    let ok = a
        .ask(
            json!({"type": "tx/batch", "t-before": 0, "txs": ["[tx 1]", "[tx 2]"]}),
            "tx/batch/ok",
        )
        .await;
    assert_eq!(ok["t"], 2);
    assert_eq!(b.next("changed").await, json!({"type": "changed", "t": 2}));

    // Every bad batch, in the seed's order of checks.
    let cases = [
        (
            json!({"type": "tx/batch", "txs": ["x"]}),
            json!({"type": "tx/reject", "reason": "invalid t-before"}),
        ),
        (
            json!({"type": "tx/batch", "t-before": "2", "txs": ["x"]}),
            json!({"type": "tx/reject", "reason": "invalid t-before"}),
        ),
        (
            json!({"type": "tx/batch", "t-before": -1, "txs": ["x"]}),
            json!({"type": "tx/reject", "reason": "invalid t-before"}),
        ),
        (
            json!({"type": "tx/batch", "t-before": 0, "txs": ["x"]}),
            json!({"type": "tx/reject", "reason": "stale", "t": 2}),
        ),
        (
            json!({"type": "tx/batch", "t-before": 9, "txs": []}),
            json!({"type": "tx/reject", "reason": "stale", "t": 2}),
        ),
        (
            json!({"type": "tx/batch", "t-before": 2, "txs": []}),
            json!({"type": "tx/reject", "reason": "empty tx data"}),
        ),
        (
            json!({"type": "tx/batch", "t_before": 2}),
            json!({"type": "tx/reject", "reason": "empty tx data"}),
        ),
        (
            json!({"type": "tx/batch", "t-before": 2, "txs": [1]}),
            json!({"type": "tx/reject", "reason": "invalid tx"}),
        ),
        (
            json!({"type": "tx/batch", "t-before": 2, "txs": "x"}),
            json!({"type": "tx/reject", "reason": "invalid tx"}),
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(
            a.ask(message.clone(), "tx/reject").await,
            expected,
            "{message}"
        );
    }
    a.send_text("{not json").await;
    assert_eq!(a.next("error").await["message"], "invalid request");
    a.send(json!({"no": "type"})).await;
    assert_eq!(a.next("error").await["message"], "invalid request");
    a.send(json!({"type": "frobnicate"})).await;
    assert_eq!(a.next("error").await["message"], "unknown type");
    a.send(json!({"type": "pull", "since": "soon"})).await;
    assert_eq!(a.next("error").await["message"], "invalid since");
    assert_eq!(
        a.ask(json!({"type": "ping"}), "pong").await,
        json!({"type": "pong"})
    );

    let pulled = a.ask(json!({"type": "pull", "since": 0}), "pull/ok").await;
    assert_eq!(
        pulled,
        json!({"type": "pull/ok", "t": 2, "txs": [{"t": 1, "tx": "[tx 1]"}, {"t": 2, "tx": "[tx 2]"}]})
    );
    assert_eq!(
        a.ask(json!({"type": "pull", "since": 1}), "pull/ok").await["txs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The HTTP mirror; its batches reach both sockets as `changed`.
    let sync = format!("/sync/{graph}");
    assert_eq!(
        call(addr, "GET", &format!("{sync}/health"), Some(ALICE), "").await,
        (200, json!({"ok": true}))
    );
    assert_eq!(
        call(addr, "GET", &format!("{sync}/health"), Some(BOB), "")
            .await
            .0,
        403
    );
    let (status, reply) = call(
        addr,
        "GET",
        &format!("{sync}/pull?since=1"),
        Some(ALICE),
        "",
    )
    .await;
    assert_eq!(
        (status, reply),
        (
            200,
            json!({"type": "pull/ok", "t": 2, "txs": [{"t": 2, "tx": "[tx 2]"}]})
        )
    );
    let (status, reply) = call(
        addr,
        "GET",
        &format!("{sync}/pull?since=x"),
        Some(ALICE),
        "",
    )
    .await;
    assert_eq!((status, reply), (400, json!({"error": "invalid since"})));
    let batch = format!("{sync}/tx/batch");
    let (status, reply) = call(
        addr,
        "POST",
        &batch,
        Some(ALICE),
        r#"{"t_before": 2, "txs": ["[tx 3]"]}"#,
    )
    .await;
    assert_eq!(
        (status, reply),
        (200, json!({"type": "tx/batch/ok", "t": 3}))
    );
    assert_eq!(a.next("changed").await["t"], 3);
    assert_eq!(b.next("changed").await["t"], 3);
    let (status, reply) = call(
        addr,
        "POST",
        &batch,
        Some(ALICE),
        r#"{"t-before": 0, "txs": ["y"]}"#,
    )
    .await;
    assert_eq!(
        (status, reply),
        (200, json!({"type": "tx/reject", "reason": "stale", "t": 3}))
    );
    assert_eq!(
        call(addr, "POST", &batch, Some(ALICE), "").await,
        (400, json!({"error": "missing body"}))
    );
    assert_eq!(
        call(addr, "POST", &batch, Some(ALICE), "nope").await,
        (400, json!({"error": "invalid body"}))
    );
    assert_eq!(call(addr, "POST", &batch, None, "{}").await.0, 401);

    // Identical txs are separate log entries.
    let same = a
        .ask(
            json!({"type": "tx/batch", "t-before": 3, "txs": ["same", "same"]}),
            "tx/batch/ok",
        )
        .await;
    assert_eq!(same["t"], 5);
    let pulled = a.ask(json!({"type": "pull", "since": 3}), "pull/ok").await;
    assert_eq!(
        pulled["txs"],
        json!([{"t": 4, "tx": "same"}, {"t": 5, "tx": "same"}])
    );

    // Graph txs are not visible to plain Nostr clients.
    let mut nostr = relay.client().await;
    let reply = nostr.ask(json!(["REQ", "g", {"kinds": [4071]}])).await;
    assert_eq!(reply[0], "CLOSED");

    // Deleting the graph ends its open sockets.
    let deleted = call(addr, "DELETE", &format!("/graphs/{graph}"), Some(ALICE), "").await;
    assert_eq!(deleted.0, 200);
    assert_eq!(a.next("error").await["message"], "forbidden");
    relay.stop().await;
}
