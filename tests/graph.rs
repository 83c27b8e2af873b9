//! Graph sync (DB-Sync) over real HTTP and WebSocket: auth (tokens,
//! NIP-98), the graph index, every socket message and its bad inputs, the
//! HTTP mirror, and two mesh nodes converging on one graph.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use common::*;
use echorelay::config::{Config, TokenConfig};
use echorelay::event::Keys;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ALICE: &str = "alice-secret-token";
const BOB: &str = "bob-secret-token";
const CAROL_EXPIRED: &str = "carol-expired-token";

fn with_users(c: &mut Config) {
    c.auth.tokens = [
        ("alice", ALICE, 0),
        ("bob", BOB, 0),
        ("carol", CAROL_EXPIRED, 1),
    ]
    .iter()
    .map(|(user, token, expires_at)| TokenConfig {
        user: user.to_string(),
        sha256: hex::encode(Sha256::digest(token.as_bytes())),
        expires_at: *expires_at,
    })
    .collect();
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let (status, _, body) = http_request(addr, method, path, &headers, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn create_graph(addr: SocketAddr, token: &str, name: &str) -> String {
    let body = json!({"graph-name": name}).to_string();
    let (status, reply) = call(addr, "POST", "/graphs", Some(token), &body).await;
    assert_eq!(status, 200, "{reply}");
    reply["graph-id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_index_and_auth() {
    let keys = Keys::generate();
    let allowed = hex::encode(keys.public_key());
    let relay = TestRelay::start_with(|c| {
        with_users(c);
        c.auth.nip98_pubkeys = vec![allowed];
        // The public URL NIP-98 events must name (behind a proxy, say).
        c.server.relay_url = "wss://node.test".into();
    })
    .await;
    let addr = relay.addr;
    assert_eq!(
        call(addr, "GET", "/health", None, "").await,
        (200, json!({"ok": true}))
    );
    assert_eq!(call(addr, "GET", "/graphs", None, "").await.0, 401);
    assert_eq!(call(addr, "GET", "/graphs", Some("wrong"), "").await.0, 401);
    assert_eq!(
        call(addr, "GET", "/graphs", Some(CAROL_EXPIRED), "")
            .await
            .0,
        401
    );
    let (status, _) = call(addr, "GET", "/graphs?token=wrong", None, "").await;
    assert_eq!(status, 401);

    let graph = create_graph(addr, ALICE, "notes").await;
    let (status, listed) = call(addr, "GET", &format!("/graphs?token={ALICE}"), None, "").await;
    assert_eq!(status, 200);
    assert_eq!(listed["graphs"][0]["graph-id"], graph.as_str());
    assert_eq!(listed["graphs"][0]["graph-name"], "notes");
    assert!(listed["graphs"][0]["created-at"].as_u64().unwrap() > 0);
    assert_eq!(
        call(addr, "GET", "/graphs", Some(BOB), "").await,
        (200, json!({"graphs": []}))
    );
    let access = format!("/graphs/{graph}/access");
    assert_eq!(
        call(addr, "GET", &access, Some(ALICE), "").await,
        (200, json!({"ok": true}))
    );
    assert_eq!(call(addr, "GET", &access, Some(BOB), "").await.0, 403);
    assert_eq!(call(addr, "GET", &access, None, "").await.0, 401);
    assert_eq!(
        call(addr, "GET", "/graphs/nope/access", Some(ALICE), "")
            .await
            .0,
        404
    );
    let (status, members) = call(
        addr,
        "GET",
        &format!("/graphs/{graph}/members"),
        Some(ALICE),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(members["members"][0]["user-id"], "alice");
    assert_eq!(members["members"][0]["role"], "manager");

    for bad in [
        "",
        "{",
        "[]",
        r#"{"graph-name": 5}"#,
        r#"{"graph-name": ""}"#,
    ] {
        let (status, reply) = call(addr, "POST", "/graphs", Some(ALICE), bad).await;
        assert_eq!(status, 400, "{bad} -> {reply}");
        assert!(reply["error"].is_string());
    }
    // The underscore spelling of seed 002.
    let (status, _) = call(addr, "POST", "/graphs", Some(BOB), r#"{"graph_name": "b"}"#).await;
    assert_eq!(status, 200);

    // NIP-98: the user id is the signer's pubkey; only listed keys.
    let nip98 = |keys: &Keys, url: &str| {
        let event = keys.sign(
            echorelay::event::now(),
            27235,
            vec![
                vec!["u".into(), url.into()],
                vec!["method".into(), "GET".into()],
            ],
            String::new(),
        );
        format!(
            "Nostr {}",
            base64::engine::general_purpose::STANDARD.encode(event.to_json())
        )
    };
    let here = "https://node.test/graphs";
    let stranger = nip98(&Keys::generate(), here);
    let (status, _, _) = http_get(addr, "/graphs", &[("Authorization", &stranger)]).await;
    assert_eq!(status, 401, "an unlisted key");
    let header = nip98(&keys, here);
    let (status, _, body) = http_get(addr, "/graphs", &[("Authorization", &header)]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"graphs":[]}"#));
    let (status, _, _) =
        http_request(addr, "POST", "/graphs", &[("Authorization", &header)], "{}").await;
    assert_eq!(
        status, 401,
        "a NIP-98 event for GET does not authorise a POST"
    );
    // Made for another server: refused, whatever host the sender claims.
    let elsewhere = nip98(&keys, "https://elsewhere.example/graphs");
    let headers = [
        ("Authorization", elsewhere.as_str()),
        ("X-Forwarded-Host", "elsewhere.example"),
    ];
    let (status, _, body) = http_get(addr, "/graphs", &headers).await;
    assert_eq!(status, 401, "an auth event made for another host: {body}");

    // Deletion: only the owner's side; afterwards the graph is gone.
    let path = format!("/graphs/{graph}");
    assert_eq!(call(addr, "DELETE", &path, Some(BOB), "").await.0, 403);
    let (status, reply) = call(addr, "DELETE", &path, Some(ALICE), "").await;
    assert_eq!(
        (status, reply),
        (200, json!({"graph-id": graph, "deleted": true}))
    );
    assert_eq!(call(addr, "GET", &access, Some(ALICE), "").await.0, 404);
    relay.stop().await;
}

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

/// Two mesh nodes, one graph: clients write on each, the nodes sync, and a
/// client on each node pulls the same txs (each node in its own t order);
/// a socket on B hears `changed` for A's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_converge_on_one_graph() {
    let a = TestRelay::start_with(with_users).await;
    let b = TestRelay::start_with(with_users).await;
    let key_of = |r: &TestRelay| {
        hex::encode(
            echorelay::secrets::node_key(r.dir.path())
                .unwrap()
                .public_key(),
        )
    };
    let (ka, kb) = (key_of(&a), key_of(&b));
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for socket in [&mut on_a, &mut on_b] {
        loop {
            let pulled = socket
                .ask(json!({"type": "pull", "since": 0}), "pull/ok")
                .await;
            let txs = pulled["txs"].as_array().unwrap();
            let ts: Vec<u64> = txs.iter().map(|x| x["t"].as_u64().unwrap()).collect();
            assert!(
                ts.windows(2).all(|w| w[0] < w[1]),
                "t only advances: {ts:?}"
            );
            let mut got: Vec<&str> = txs.iter().map(|x| x["tx"].as_str().unwrap()).collect();
            got.sort();
            if got == want {
                assert_eq!(pulled["t"], txs.len());
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no convergence: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pulled = on_b
            .ask(json!({"type": "pull", "since": 0}), "pull/ok")
            .await;
        if only_new(&pulled) == ["after reset"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "B kept {pulled}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// Sends a PUT with a declared length and streams `send` bytes of it, then
/// reads whatever status the server answers (it may answer early).
async fn put_streaming(addr: SocketAddr, path: &str, declared: usize, send: usize) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ALICE}\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![7u8; 1024 * 1024];
    let mut sent = 0;
    while sent < send {
        let n = chunk.len().min(send - sent);
        if stream.write_all(&chunk[..n]).await.is_err() {
            break;
        }
        sent += n;
    }
    if send < declared {
        return None; // hang up mid-upload
    }
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
}

fn leftovers(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("assets").join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_upload_download_delete_and_limits() {
    let relay = TestRelay::start_with(with_users).await;
    let addr = relay.addr;
    let graph = create_graph(addr, ALICE, "files").await;
    let path = format!("/assets/{graph}/0b5c6a44-1b1e-4e0f-9c55-2f5c7d1e9a10.png");
    let body = "\u{1}png bytes\u{2}".repeat(1000);
    let auth = format!("Bearer {ALICE}");
    let headers = [("Authorization", auth.as_str()), ("x-asset-type", "image")];
    let (status, _, reply) = http_request(addr, "PUT", &path, &headers, &body).await;
    assert_eq!((status, reply.as_str()), (200, r#"{"ok":true}"#));
    let (status, head, got) = http_request(addr, "GET", &path, &headers[..1], "").await;
    assert_eq!(status, 200);
    assert_eq!(got, body);
    assert!(head.contains("content-type: image/png"), "{head}");
    assert!(head.contains("x-asset-type: image"), "{head}");
    assert_eq!(call(addr, "GET", &path, Some(BOB), "").await.0, 403);
    assert_eq!(call(addr, "GET", &path, None, "").await.0, 401);
    assert_eq!(
        call(addr, "POST", &path, Some(ALICE), "x").await,
        (405, json!({"error": "method not allowed"}))
    );
    for bad in [
        "..%2F..%2Fsecret.png",
        "noext",
        "a.b%2Fc",
        "x.toolongextension123",
    ] {
        let (status, reply) = call(
            addr,
            "GET",
            &format!("/assets/{graph}/{bad}"),
            Some(ALICE),
            "",
        )
        .await;
        assert_eq!(
            (status, reply),
            (400, json!({"error": "invalid asset path"})),
            "{bad}"
        );
    }
    let missing = format!("/assets/{graph}/00000000-0000-4000-8000-000000000000.png");
    assert_eq!(
        call(addr, "GET", &missing, Some(ALICE), "").await,
        (404, json!({"error": "not found"}))
    );

    // Bigger than a JSON body may be, well under the asset limit.
    let medium = format!("/assets/{graph}/44444444-4444-4444-8444-444444444444.bin");
    let size = 40 * 1024 * 1024;
    assert_eq!(put_streaming(addr, &medium, size, size).await, Some(200));
    // 200 MiB: refused with 413 once the limit is crossed, nothing left.
    let big = format!("/assets/{graph}/11111111-1111-4111-8111-111111111111.bin");
    let size = 200 * 1024 * 1024;
    assert_eq!(put_streaming(addr, &big, size, size).await, Some(413));
    assert_eq!(call(addr, "GET", &big, Some(ALICE), "").await.0, 404);
    // A client that hangs up mid-upload leaves nothing visible either.
    let cut = format!("/assets/{graph}/22222222-2222-4222-8222-222222222222.bin");
    assert_eq!(
        put_streaming(addr, &cut, 8 * 1024 * 1024, 1024 * 1024).await,
        None
    );
    let data = relay.dir.path();
    eventually("the temporary upload to be removed", WAIT, || async move {
        (leftovers(data) == 0).then_some(())
    })
    .await;
    assert_eq!(call(addr, "GET", &cut, Some(ALICE), "").await.0, 404);

    assert_eq!(
        call(addr, "DELETE", &path, Some(ALICE), "").await,
        (200, json!({"ok": true}))
    );
    assert_eq!(call(addr, "GET", &path, Some(ALICE), "").await.0, 404);
    assert_eq!(call(addr, "DELETE", &path, Some(ALICE), "").await.0, 404);
    relay.stop().await;
}

/// An asset uploaded on A is served on B: its record replicates, and B
/// fetches the blob from A (NIP-98 with its node key) when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_reach_other_nodes() {
    let a = TestRelay::start_with(with_users).await;
    let b = TestRelay::start_with(with_users).await;
    let key_of = |r: &TestRelay| {
        hex::encode(
            echorelay::secrets::node_key(r.dir.path())
                .unwrap()
                .public_key(),
        )
    };
    for (from, to, key) in [(&a, &b, key_of(&b)), (&b, &a, key_of(&a))] {
        let body = json!({"peer_url": to.url, "pubkey": key, "interval_secs": 1, "live": true});
        from.admin().call("AddPeer", &body).await.unwrap();
    }
    let graph = create_graph(a.addr, ALICE, "shared files").await;
    let path = format!("/assets/{graph}/33333333-3333-4333-8333-333333333333.txt");
    let body = "replicated asset ".repeat(5000);
    let auth = format!("Bearer {ALICE}");
    let (status, _, _) =
        http_request(a.addr, "PUT", &path, &[("Authorization", &auth)], &body).await;
    assert_eq!(status, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, head, got) =
            http_request(b.addr, "GET", &path, &[("Authorization", &auth)], "").await;
        if status == 200 {
            assert_eq!(got, body);
            assert!(head.contains("content-type: text/plain"), "{head}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "asset never served by B: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}

fn frame(rows: &Value) -> Vec<u8> {
    let body = rows.to_string().into_bytes();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// One HTTP request with a binary body: (status, lowercased head, body).
async fn http_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_upload_download_rows_and_import() {
    let relay = TestRelay::start_with(with_users).await;
    let addr = relay.addr;
    let graph = create_graph(addr, ALICE, "snap").await;
    let auth = format!("Bearer {ALICE}");
    let sync = format!("/sync/{graph}");
    // Some txs first: a reset upload removes them.
    let batch = format!("{sync}/tx/batch");
    call(
        addr,
        "POST",
        &batch,
        Some(ALICE),
        r#"{"t-before": 0, "txs": ["old"]}"#,
    )
    .await;

    let mut stream = Vec::new();
    for chunk in 0..3u64 {
        let rows: Vec<Value> = (chunk * 1000 + 1..=((chunk + 1) * 1000).min(2500))
            .map(|a| {
                json!([
                    a,
                    format!("content {a}"),
                    if a % 2 == 0 {
                        json!(null)
                    } else {
                        json!("[1 2]")
                    }
                ])
            })
            .collect();
        stream.extend(frame(&json!(rows)));
    }
    let compressed = gzip(&stream);
    let gz = [
        ("Authorization", auth.as_str()),
        ("Content-Encoding", "gzip"),
    ];
    let upload = format!("{sync}/snapshot/upload?reset=true");
    let (status, _, reply) = http_bytes(addr, "POST", &upload, &gz, &compressed).await;
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(
        (status, reply["ok"].clone(), reply["count"].clone()),
        (200, json!(true), json!(2500)),
        "{reply}"
    );
    let key = reply["key"].as_str().unwrap().to_string();
    assert!(key.starts_with(&format!("{graph}/")) && key.ends_with(".snapshot"));
    let pulled = call(
        addr,
        "GET",
        &format!("{sync}/pull?since=0"),
        Some(ALICE),
        "",
    )
    .await
    .1;
    assert_eq!(pulled["txs"], json!([]), "a reset upload drops the old txs");

    let (status, page) = call(
        addr,
        "GET",
        &format!("{sync}/snapshot/rows?limit=1000"),
        Some(ALICE),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["rows"].as_array().unwrap().len(), 1000);
    assert_eq!(
        (page["done"].clone(), page["last_addr"].clone()),
        (json!(false), json!(1000))
    );
    assert_eq!(
        page["rows"][0],
        json!({"addr": 1, "content": "content 1", "addresses": "[1 2]"})
    );
    let (_, last) = call(
        addr,
        "GET",
        &format!("{sync}/snapshot/rows?after=2000&limit=1000"),
        Some(ALICE),
        "",
    )
    .await;
    assert_eq!(last["rows"].as_array().unwrap().len(), 500);
    assert_eq!(last["done"], true);
    assert_eq!(
        call(
            addr,
            "GET",
            &format!("{sync}/snapshot/rows?after=x"),
            Some(ALICE),
            ""
        )
        .await
        .0,
        400
    );

    // Download: the seed's reply, and its URL serves the upload as stored.
    let (status, reply) = call(
        addr,
        "GET",
        &format!("{sync}/snapshot/download"),
        Some(ALICE),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (reply["ok"].clone(), reply["key"].clone()),
        (json!(true), json!(key))
    );
    assert_eq!(reply["content-encoding"], "gzip");
    let url = reply["url"].as_str().unwrap();
    let path = &url[url.find("/assets/").unwrap()..];
    let (status, head, body) = http_bytes(addr, "GET", path, &gz[..1], b"").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert_eq!(body, compressed);

    // Without reset: rows are added (plain, uncompressed stream).
    let more = frame(&json!([[5000, "late", null]]));
    let plain = [("Authorization", auth.as_str())];
    let (status, _, _) = http_bytes(
        addr,
        "POST",
        &format!("{sync}/snapshot/upload"),
        &plain,
        &more,
    )
    .await;
    assert_eq!(status, 200);
    let (_, all) = call(
        addr,
        "GET",
        &format!("{sync}/snapshot/rows?after=2499"),
        Some(ALICE),
        "",
    )
    .await;
    assert_eq!(all["rows"].as_array().unwrap().len(), 2);

    // Broken uploads change nothing.
    let truncated = &stream[..stream.len() - 3];
    let broken_gzip = &compressed[..compressed.len() / 2];
    let big_frame = u32::MAX.to_be_bytes();
    for (body, encoding) in [
        (truncated, false),
        (broken_gzip, true),
        (&big_frame[..], false),
        (&b"{}"[..], false),
    ] {
        let headers: &[(&str, &str)] = if encoding { &gz } else { &plain };
        let upload = format!("{sync}/snapshot/upload?reset=true");
        let (status, _, reply) = http_bytes(addr, "POST", &upload, headers, body).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&reply));
    }
    let (status, _, reply) = http_bytes(
        addr,
        "POST",
        &format!("{sync}/snapshot/upload"),
        &plain,
        b"",
    )
    .await;
    assert_eq!(
        (status, String::from_utf8_lossy(&reply).to_string()),
        (400, r#"{"error":"missing body"}"#.to_string())
    );
    let (status, _, _) = http_bytes(
        addr,
        "POST",
        &format!("{sync}/snapshot/upload?reset=maybe"),
        &plain,
        &more,
    )
    .await;
    assert_eq!(status, 400);
    let (_, still) = call(
        addr,
        "GET",
        &format!("{sync}/snapshot/rows?limit=10000"),
        Some(ALICE),
        "",
    )
    .await;
    assert_eq!(still["rows"].as_array().unwrap().len(), 2501);

    // Seed 002's JSON import.
    let import = format!("{sync}/snapshot/import");
    let (status, reply) = call(
        addr,
        "POST",
        &import,
        Some(ALICE),
        r#"{"reset": true, "rows": [[7, "only", null]]}"#,
    )
    .await;
    assert_eq!((status, reply), (200, json!({"ok": true, "count": 1})));
    let (_, only) = call(
        addr,
        "GET",
        &format!("{sync}/snapshot/rows"),
        Some(ALICE),
        "",
    )
    .await;
    assert_eq!(
        only["rows"],
        json!([{"addr": 7, "content": "only", "addresses": null}])
    );
    for bad in [
        "",
        "[]",
        r#"{"rows": [[1]]}"#,
        r#"{"rows": "x"}"#,
        r#"{"reset": 1, "rows": []}"#,
    ] {
        let (status, _) = call(addr, "POST", &import, Some(ALICE), bad).await;
        assert_eq!(status, 400, "{bad}");
    }
    assert_eq!(
        call(addr, "GET", &format!("{sync}/snapshot/rows"), Some(BOB), "")
            .await
            .0,
        403
    );
    relay.stop().await;
}
