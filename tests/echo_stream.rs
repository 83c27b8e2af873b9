//! The echo change stream over real HTTP (seed 000's first diagram): a
//! push is streamed to the subscribers connected when it commits, they
//! acknowledge, the pusher with `options.timeout` is told who confirmed,
//! and status reports the change's progress. Reconnects resume by cursor;
//! changes from a mesh peer are streamed too; slow readers are dropped;
//! strangers are refused.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A push body for `node` at `version` (checksum computed here), with an
/// optional `options.timeout`.
fn push_body(node: &str, version: &str, data: Value, timeout: Option<f64>) -> String {
    let checksum = hex::encode(Sha256::digest(data.to_string().as_bytes()));
    let mut body = json!({
        "node_id": node,
        "state": {
            "timestamp": "2026-12-02T10:00:00.000Z",
            "data": data,
            "metadata": {"version": version, "checksum": checksum, "resonance_level": 0.5},
        },
    });
    if let Some(timeout) = timeout {
        body["options"] = json!({ "timeout": timeout });
    }
    body.to_string()
}

async fn push(addr: SocketAddr, token: &str, node: &str, version: &str) -> Value {
    let body = push_body(node, version, json!({"v": version}), None);
    let (status, reply) = call(addr, "POST", "/echo/push", Some(token), &body).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

async fn post(addr: SocketAddr, token: &str, path: &str, body: Value) -> (u16, Value) {
    call(addr, "POST", path, Some(token), &body.to_string()).await
}

/// `/echo/status` of `node` for the change `sync_id`.
async fn status_of(addr: SocketAddr, token: &str, node: &str, sync_id: &Value) -> (u16, Value) {
    let body = json!({"node_id": node, "sync_id": sync_id});
    post(addr, token, "/echo/status", body).await
}

/// The next change of a stream, within `wait`.
async fn change(stream: &mut Sse, wait: Duration) -> SseEvent {
    let event = stream.next(wait).await.expect("a change on the stream");
    assert_eq!(event.event, "change", "{event:?}");
    assert_eq!(
        event.data["cursor"],
        json!(event.id),
        "the cursor is the event id"
    );
    event
}

async fn open(addr: SocketAddr, query: &str, token: &str) -> Sse {
    let (status, stream) = open_stream(addr, query, Some(token), None).await;
    assert_eq!(status, 200);
    stream.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_hears_a_push_acknowledges_and_the_pusher_is_confirmed() {
    let relay = TestRelay::start_with(with_users).await;
    let addr = relay.addr;
    push(addr, ALICE, "n1", "1").await;
    let mut stream = open(addr, "node_id=n1&subscriber=node-b", ALICE).await;

    let pushing = tokio::spawn(async move {
        let body = push_body("n1", "2", json!({"v": 2}), Some(20.0));
        call(addr, "POST", "/echo/push", Some(ALICE), &body).await
    });
    let heard = change(&mut stream, Duration::from_secs(1)).await;
    let (sync_id, data) = (heard.data["sync_id"].clone(), &heard.data);
    assert_eq!(data["node_id"], "n1");
    assert_eq!(data["state"]["metadata"]["version"], "2");
    assert_eq!(data["state"]["data"], json!({"v": 2}));
    assert!(!pushing.is_finished(), "the push waits for the subscriber");

    // Others cannot acknowledge for alice's subscriber, nor for her node.
    let ack = json!({"sync_id": sync_id, "node_id": "n1", "subscriber": "node-b"});
    assert_eq!(post(addr, MALLORY, "/echo/ack", ack.clone()).await.0, 403);
    let (status, reply) = call(addr, "POST", "/echo/ack", None, &ack.to_string()).await;
    assert_eq!(status, 401, "{reply}");
    let stranger = json!({"sync_id": sync_id, "node_id": "n1", "subscriber": "node-z"});
    assert_eq!(post(addr, ALICE, "/echo/ack", stranger).await.0, 409);
    let (status, reply) = status_of(addr, ALICE, "n1", &sync_id).await;
    assert_eq!(status, 200);
    assert_eq!(
        reply["current_operation"]["progress"],
        json!(0.0),
        "{reply}"
    );
    assert_eq!(reply["status"], "active");

    let (status, acked) = post(addr, ALICE, "/echo/ack", ack).await;
    assert_eq!(
        (status, acked["progress"].clone()),
        (200, json!(100.0)),
        "{acked}"
    );
    let (status, pushed) = pushing.await.unwrap();
    assert_eq!(status, 200, "{pushed}");
    assert_eq!(
        pushed["sync_id"], sync_id,
        "the stream names the push's change"
    );
    assert_eq!(pushed["confirmed_by"], json!(["node-b"]));
    assert!(pushed["metrics"]["duration_ms"].is_u64());

    let (status, reply) = status_of(addr, ALICE, "n1", &sync_id).await;
    assert_eq!(status, 200);
    let operation = &reply["current_operation"];
    assert_eq!(operation["sync_id"], sync_id);
    assert_eq!(operation["progress"], json!(100.0), "{reply}");
    assert_eq!(operation["acknowledged_by"], json!(["node-b"]));
    assert_eq!(operation["notified"], json!(["node-b"]));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_never_waits_on_a_subscriber_that_is_not_there() {
    let relay = TestRelay::start_with(with_users).await;
    let addr = relay.addr;
    // A subscriber of another node is not one of this node's.
    let _elsewhere = open(addr, "node_id=other&subscriber=b", ALICE).await;
    let started = Instant::now();
    let body = push_body("lonely", "1", json!({"v": 1}), Some(60.0));
    let (status, reply) = call(addr, "POST", "/echo/push", Some(ALICE), &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["confirmed_by"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it returned at commit"
    );
    // Without a timeout the reply has no confirmation; a bad one is refused.
    let reply = push(addr, ALICE, "lonely", "2").await;
    assert!(reply.get("confirmed_by").is_none(), "{reply}");
    for bad in [json!(-1), json!("soon"), json!(100_000)] {
        let mut body: Value =
            serde_json::from_str(&push_body("lonely", "3", json!({}), None)).unwrap();
        body["options"] = json!({ "timeout": bad });
        let (status, reply) = post(addr, ALICE, "/echo/push", body).await;
        assert_eq!(status, 400, "{reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains("options.timeout"),
            "{reply}"
        );
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_its_cursor_gets_exactly_what_it_missed() {
    let relay = TestRelay::start_with(with_users).await;
    let addr = relay.addr;
    let mut stream = open(addr, "subscriber=watcher", ALICE).await;
    push(addr, ALICE, "r1", "1").await;
    let first = change(&mut stream, Duration::from_secs(5)).await;
    drop(stream);

    // Missed while away: a new node, a new version of r1, another node.
    let missed = [("r2", "1"), ("r1", "2"), ("r3", "1")];
    for (node, version) in missed {
        push(addr, ALICE, node, version).await;
    }
    let expect_missed = |got: &[SseEvent]| {
        let seen: Vec<(String, String)> = got
            .iter()
            .map(|e| {
                let version = e.data["state"]["metadata"]["version"].as_str().unwrap();
                (
                    e.data["node_id"].as_str().unwrap().to_string(),
                    version.to_string(),
                )
            })
            .collect();
        let wanted: Vec<(String, String)> = missed
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(seen, wanted);
    };
    // By the header an EventSource sends, or by `since`.
    let mut resumed = Vec::new();
    for (query, last_id) in [
        ("subscriber=watcher".to_string(), Some(first.id.as_str())),
        (format!("subscriber=watcher&since={}", first.id), None),
    ] {
        let (status, stream) = open_stream(addr, &query, Some(ALICE), last_id).await;
        assert_eq!(status, 200);
        let mut stream = stream.unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(change(&mut stream, Duration::from_secs(5)).await);
        }
        expect_missed(&got);
        assert!(
            stream.next(Duration::from_millis(300)).await.is_none(),
            "nothing repeated"
        );
        resumed.push((stream, got[2].id.parse::<u64>().unwrap()));
    }
    // And live from there, once.
    push(addr, ALICE, "r4", "1").await;
    for (mut stream, last) in resumed {
        let live = change(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(live.data["node_id"], "r4");
        assert!(live.id.parse::<u64>().unwrap() > last);
        assert!(
            stream.next(Duration::from_millis(300)).await.is_none(),
            "once"
        );
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_from_a_mesh_peer_is_streamed_on_the_receiving_node() {
    let (a, b) = trusting_pair_with(with_users).await;
    live_peer(&a, &b).await;
    live_peer(&b, &a).await;
    let mut on_b = open(b.addr, "node_id=meshed&subscriber=sensor", ALICE).await;
    let pushed = push(a.addr, ALICE, "meshed", "1").await;
    let heard = change(&mut on_b, Duration::from_secs(30)).await;
    assert_eq!(
        heard.data["sync_id"], pushed["sync_id"],
        "the same change on both nodes"
    );
    assert_eq!(heard.data["origin"], json!(a.node_pubkey()));
    // B's subscriber acknowledges on B: B's status shows it.
    let sync_id = pushed["sync_id"].clone();
    let ack = json!({"sync_id": sync_id, "node_id": "meshed", "subscriber": "sensor"});
    assert_eq!(post(b.addr, ALICE, "/echo/ack", ack).await.0, 200);
    let (_, status) = status_of(b.addr, ALICE, "meshed", &sync_id).await;
    assert_eq!(
        status["current_operation"]["progress"],
        json!(100.0),
        "{status}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_other_users_nodes_are_refused() {
    let relay = TestRelay::start_with(with_users).await;
    let addr = relay.addr;
    push(addr, ALICE, "alices", "1").await;
    assert_eq!(open_stream(addr, "", None, None).await.0, 401);
    assert_eq!(
        open_stream(addr, "", Some("wrong-token"), None).await.0,
        401
    );
    assert_eq!(
        open_stream(addr, "node_id=alices", Some(MALLORY), None)
            .await
            .0,
        403
    );
    for bad in ["filter=%5B", "since=soon", "subscriber=%20"] {
        assert_eq!(
            open_stream(addr, bad, Some(ALICE), None).await.0,
            400,
            "{bad}"
        );
    }
    assert_eq!(open_stream(addr, "", Some(ALICE), Some("x")).await.0, 400);
    // A stream of every node shows mallory her own changes and not alice's.
    let mut mallorys = open(addr, "filter=*", MALLORY).await;
    push(addr, ALICE, "alices", "2").await;
    push(addr, MALLORY, "mallorys", "1").await;
    let heard = change(&mut mallorys, Duration::from_secs(5)).await;
    assert_eq!(heard.data["node_id"], "mallorys");
    // Nor from the store, on a resume from the start.
    let (_, resumed) = open_stream(addr, "since=0", Some(MALLORY), None).await;
    let mut resumed = resumed.unwrap();
    let first = change(&mut resumed, Duration::from_secs(5)).await;
    assert_eq!(first.data["node_id"], "mallorys");
    assert!(resumed.next(Duration::from_millis(300)).await.is_none());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_dropped() {
    use tokio::io::AsyncWriteExt;
    let relay = TestRelay::start_with(with_users).await;
    let addr = relay.addr;
    // A reader with a small receive window that sends its request and then
    // reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /echo/stream?subscriber=stuck HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ALICE}\r\n\r\n"
    );
    stuck.write_all(request.as_bytes()).await.unwrap();
    eventually("the stream is open", WAIT, || async move {
        (metric(addr, "echorelay_echo_streams").await == 1).then_some(())
    })
    .await;
    let big = "x".repeat(50 * 1024);
    let mut pushes = 0;
    while metric(addr, "echorelay_echo_streams_dropped_slow_total").await == 0 {
        pushes += 1;
        assert!(pushes < 2000, "never dropped");
        let body = push_body(
            &format!("flood-{pushes}"),
            "1",
            json!({ "blob": big }),
            None,
        );
        let (status, reply) = call(addr, "POST", "/echo/push", Some(ALICE), &body).await;
        assert_eq!(status, 200, "{reply}");
    }
    assert_eq!(metric(addr, "echorelay_echo_streams").await, 0);
    // The node goes on: a reader that reads still gets changes.
    let mut reader = open(addr, "node_id=after", ALICE).await;
    push(addr, ALICE, "after", "1").await;
    assert_eq!(
        change(&mut reader, Duration::from_secs(5)).await.data["node_id"],
        "after"
    );
    drop(stuck);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grantees_confirmation_names_its_user_and_resumes_are_marked() {
    let relay = TestRelay::start_with(|c| {
        with_users(c);
        c.auth.echo_grants = vec![echorelay::config::EchoGrant {
            node_id: "shared".into(),
            user: "bob".into(),
            access: echorelay::config::EchoAccess::Read,
        }];
    })
    .await;
    let addr = relay.addr;
    let first = push(addr, ALICE, "shared", "1").await;
    // Bob may read alice's node; his subscriber cannot pass for hers.
    let mut bobs = open(addr, "node_id=shared&subscriber=node-b", BOB).await;
    let pushing = tokio::spawn(async move {
        let body = push_body("shared", "2", json!({"v": 2}), Some(20.0));
        call(addr, "POST", "/echo/push", Some(ALICE), &body).await
    });
    let heard = change(&mut bobs, Duration::from_secs(5)).await;
    assert!(heard.data.get("replayed").is_none(), "a live change");
    let ack =
        json!({"sync_id": heard.data["sync_id"], "node_id": "shared", "subscriber": "node-b"});
    assert_eq!(post(addr, BOB, "/echo/ack", ack).await.0, 200);
    let (_, pushed) = pushing.await.unwrap();
    assert_eq!(pushed["confirmed_by"], json!(["bob/node-b"]), "{pushed}");
    // Carol has no grant: she may not even stream the node.
    assert_eq!(
        open_stream(addr, "node_id=shared", Some(CAROL), None)
            .await
            .0,
        403
    );

    // A resume replays from the store, marked so; it is not acknowledged.
    let (_, resumed) = open_stream(addr, "node_id=shared&since=0", Some(BOB), None).await;
    let replayed = change(&mut resumed.unwrap(), Duration::from_secs(5)).await;
    assert_eq!(replayed.data["replayed"], json!(true));
    assert_eq!(replayed.data["state"]["metadata"]["version"], "2");
    assert_ne!(
        replayed.data["sync_id"], first["sync_id"],
        "the latest state only"
    );
    // A cursor this node never gave out is refused, not silently skipped.
    let (status, _) = open_stream(addr, "since=99999999", Some(BOB), None).await;
    assert_eq!(status, 400);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_open_streams_without_end() {
    let relay = TestRelay::start_with(with_users).await;
    let mut held = Vec::new();
    for i in 0..16 {
        held.push(open(relay.addr, &format!("subscriber=s{i}"), MALLORY).await);
    }
    let (status, _) = open_stream(relay.addr, "subscriber=one-more", Some(MALLORY), None).await;
    assert_eq!(status, 429);
    // Others are not locked out, and a closed stream frees its place.
    let _alices = open(relay.addr, "", ALICE).await;
    drop(held.pop());
    eventually("a place is free again", WAIT, || async {
        let (status, stream) =
            open_stream(relay.addr, "subscriber=again", Some(MALLORY), None).await;
        (status == 200).then_some(stream)
    })
    .await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_catch_up_comes_in_pieces_and_misses_nothing() {
    let relay = TestRelay::start_with(with_users).await;
    let addr = relay.addr;
    let big = "y".repeat(50 * 1024);
    let nodes: Vec<String> = (0..30).map(|i| format!("big-{i:02}")).collect();
    for node in &nodes {
        let body = push_body(node, "1", json!({ "blob": big }), None);
        assert_eq!(
            call(addr, "POST", "/echo/push", Some(ALICE), &body).await.0,
            200
        );
    }
    // More than a stream's byte bound was missed: each connection sends a
    // piece and ends, and the next resumes from the last id it got.
    let (mut seen, mut last, mut connections) = (Vec::new(), "0".to_string(), 0);
    while seen.len() < nodes.len() {
        connections += 1;
        assert!(
            connections <= 10,
            "the catch-up never ended: {}",
            seen.len()
        );
        let (status, stream) = open_stream(addr, "", Some(ALICE), Some(&last)).await;
        assert_eq!(status, 200);
        let mut stream = stream.unwrap();
        while seen.len() < nodes.len() {
            let Some(event) = stream.next(Duration::from_secs(5)).await else {
                break;
            };
            seen.push(event.data["node_id"].as_str().unwrap().to_string());
            last = event.id;
        }
    }
    assert!(connections > 1, "the catch-up was one piece");
    assert_eq!(seen, nodes, "every missed change once, in commit order");
    relay.stop().await;
}
