//! The graph and echo HTTP APIs under attack, over real HTTP: replayed and
//! re-bodied NIP-98 headers, NIP-98 made for another host, `?token=` next to
//! a header, uploads that would run as pages of this origin, and one user
//! pushing to another user's echo node.

mod common;

use std::net::SocketAddr;

use base64::Engine;
use common::*;
use echorelay::config::{EchoAccess, EchoGrant};
use echorelay::event::Keys;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `Authorization: Nostr ...` for one request; `payload` is the body hashed.
fn nip98(keys: &Keys, url: &str, method: &str, payload: Option<&str>) -> String {
    nip98_naming(keys, url, method, payload, None)
}

/// [`nip98`] naming the node it is made for in a `p` tag, as nodes sign.
fn nip98_naming(
    keys: &Keys,
    url: &str,
    method: &str,
    payload: Option<&str>,
    node: Option<&Keys>,
) -> String {
    let mut tags = vec![
        vec!["u".to_string(), url.to_string()],
        vec!["method".to_string(), method.to_string()],
    ];
    if let Some(node) = node {
        tags.push(vec!["p".into(), hex::encode(node.public_key())]);
    }
    if let Some(body) = payload {
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        tags.push(vec!["payload".into(), hash]);
    }
    let event = keys.sign(echorelay::event::now(), 27235, tags, String::new());
    format!(
        "Nostr {}",
        base64::engine::general_purpose::STANDARD.encode(event.to_json())
    )
}

/// A relay with the three users and a key allowed to use NIP-98.
async fn nip98_relay() -> (Keys, TestRelay) {
    let keys = Keys::generate();
    let allowed = hex::encode(keys.public_key());
    let relay = TestRelay::start_with(|c| {
        with_users(c);
        c.auth.nip98_pubkeys = vec![allowed];
    })
    .await;
    (keys, relay)
}

async fn graph_names(addr: SocketAddr) -> Vec<String> {
    let (status, _, listed) =
        call_authorized(addr, "GET", "/graphs", Some(&format!("Bearer {ALICE}")), "").await;
    assert_eq!(status, 200);
    listed["graphs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["graph-name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip98_headers_are_single_use_bound_to_the_body_and_the_host() {
    let (keys, relay) = nip98_relay().await;
    let addr = relay.addr;
    let url = format!("http://{addr}/graphs");

    // A replay: the same header twice.
    let header = nip98(&keys, &url, "GET", None);
    assert_eq!(
        call_authorized(addr, "GET", "/graphs", Some(&header), "")
            .await
            .0,
        200
    );
    let (status, _, reply) = call_authorized(addr, "GET", "/graphs", Some(&header), "").await;
    assert_eq!(status, 401, "a replayed header: {reply}");

    // Made for another host: the request's Host is this relay's.
    let elsewhere = nip98(&keys, "http://elsewhere.example/graphs", "GET", None);
    assert_eq!(
        call_authorized(addr, "GET", "/graphs", Some(&elsewhere), "")
            .await
            .0,
        401
    );

    // A body the event does not name: refused, nothing created.
    let signed_for = json!({"graph-name": "meant"}).to_string();
    let sent = json!({"graph-name": "injected"}).to_string();
    let header = nip98(&keys, &url, "POST", Some(&signed_for));
    let (status, _, reply) = call_authorized(addr, "POST", "/graphs", Some(&header), &sent).await;
    assert!(status == 401 || status == 400, "{status} {reply}");
    let unbound = nip98(&keys, &url, "POST", None);
    let (status, _, reply) = call_authorized(addr, "POST", "/graphs", Some(&unbound), &sent).await;
    assert_eq!(status, 401, "a body without a payload tag: {reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("payload"),
        "{reply}"
    );
    assert!(graph_names(addr).await.is_empty());
    // The body it names: created.
    let header = nip98(&keys, &url, "POST", Some(&signed_for));
    let (status, _, reply) =
        call_authorized(addr, "POST", "/graphs", Some(&header), &signed_for).await;
    assert_eq!(status, 200, "{reply}");

    // `?token=` does not stand in for a header that fails.
    let path = format!("/graphs?token={ALICE}");
    assert_eq!(
        call_authorized(addr, "GET", &path, Some("Basic YWxpY2U6eA=="), "")
            .await
            .0,
        401
    );
    assert_eq!(
        call_authorized(addr, "GET", &path, Some("Bearer wrong"), "")
            .await
            .0,
        401
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_never_run_as_pages_and_rebodied_uploads_are_refused() {
    let (keys, relay) = nip98_relay().await;
    let addr = relay.addr;
    let auth = format!("Bearer {ALICE}");
    let (_, _, created) = call_authorized(
        addr,
        "POST",
        "/graphs",
        Some(&auth),
        r#"{"graph-name":"f"}"#,
    )
    .await;
    let graph = created["graph-id"].as_str().unwrap().to_string();
    let script = "<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>";
    for (name, declared, inline) in [
        ("a1.svg", "image/svg+xml", false),
        ("a2.html", "text/html", false),
        ("a3.bin", "text/html", false),
        ("a4.pdf", "application/pdf", false),
        ("a5.png", "image/png", true),
    ] {
        let path = format!("/assets/{graph}/{name}");
        let headers = [("Authorization", auth.as_str()), ("Content-Type", declared)];
        let (status, _, _) = http_request(addr, "PUT", &path, &headers, script).await;
        assert_eq!(status, 200, "{name}");
        let (status, head, body) = http_request(addr, "GET", &path, &headers[..1], "").await;
        assert_eq!((status, body.as_str()), (200, script), "{name}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(head.contains("content-security-policy: sandbox"), "{head}");
        let disposition = if inline { "inline" } else { "attachment" };
        assert!(
            head.contains(&format!(
                "content-disposition: {disposition}; filename=\"{name}\""
            )),
            "{name}: {head}"
        );
    }
    #[cfg(unix)]
    for blob in std::fs::read_dir(relay.dir.path().join("assets")).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let meta = blob.unwrap().metadata().unwrap();
        if meta.is_file() {
            assert_eq!(meta.permissions().mode() & 0o077, 0, "blobs are 0600");
        }
    }

    // A NIP-98 upload whose body is not the one signed for: not stored.
    let graphs_url = format!("http://{addr}/graphs");
    let body = r#"{"graph-name":"mine"}"#;
    let header = nip98(&keys, &graphs_url, "POST", Some(body));
    let (_, _, created) = call_authorized(addr, "POST", "/graphs", Some(&header), body).await;
    let graph = created["graph-id"].as_str().unwrap().to_string();
    let path = format!("/assets/{graph}/b1.png");
    let url = format!("http://{addr}{path}");
    let header = nip98(&keys, &url, "PUT", Some("the signed bytes"));
    let (status, _, reply) =
        call_authorized(addr, "PUT", &path, Some(&header), "other bytes").await;
    assert_eq!(status, 401, "{reply}");
    let header = nip98(&keys, &url, "GET", None);
    assert_eq!(
        call_authorized(addr, "GET", &path, Some(&header), "")
            .await
            .0,
        404
    );
    let header = nip98(&keys, &url, "PUT", Some("the signed bytes"));
    let (status, _, reply) =
        call_authorized(addr, "PUT", &path, Some(&header), "the signed bytes").await;
    assert_eq!(status, 200, "the body it names: {reply}");
    relay.stop().await;
}

fn push_body(node: &str, version: &str, data: Value) -> String {
    let checksum = hex::encode(Sha256::digest(data.to_string().as_bytes()));
    json!({
        "node_id": node,
        "state": {
            "timestamp": "2026-11-22T10:00:00.000Z",
            "data": data,
            "metadata": {"version": version, "checksum": checksum, "resonance_level": 0.5},
        },
    })
    .to_string()
}

async fn pulled_nodes(addr: SocketAddr, token: &str) -> Vec<String> {
    let (status, _, pulled) = call_authorized(
        addr,
        "POST",
        "/echo/pull",
        Some(&format!("Bearer {token}")),
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{pulled}");
    pulled["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["node_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_node_belongs_to_its_first_pusher() {
    let relay = TestRelay::start_with(|c| {
        with_users(c);
        c.auth.echo_grants = vec![EchoGrant {
            node_id: "n1".into(),
            user: "carol".into(),
            access: EchoAccess::Read,
        }];
    })
    .await;
    let addr = relay.addr;
    let bearer = |t: &str| format!("Bearer {t}");
    let push = |token: &'static str, version: &'static str| async move {
        let body = push_body("n1", version, json!({"by": token}));
        call_authorized(addr, "POST", "/echo/push", Some(&bearer(token)), &body).await
    };
    assert_eq!(push(ALICE, "1").await.0, 200);
    let (status, _, reply) = push(BOB, "2").await;
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["status"], "error");
    assert_eq!(push(CAROL, "2").await.0, 403, "read grant only");
    assert_eq!(pulled_nodes(addr, ALICE).await, ["n1"]);
    assert!(pulled_nodes(addr, BOB).await.is_empty(), "hidden from bob");
    assert_eq!(pulled_nodes(addr, CAROL).await, ["n1"], "granted read");
    let status_of = |token: &'static str| async move {
        let body = json!({"node_id": "n1"}).to_string();
        call_authorized(addr, "POST", "/echo/status", Some(&bearer(token)), &body)
            .await
            .0
    };
    assert_eq!(status_of(BOB).await, 403);
    assert_eq!(status_of(CAROL).await, 200);

    // Bob's refused pushes and pulls are not operations of alice's node:
    // its statistics stay as they were.
    let metrics = || async move {
        let body = json!({"node_id": "n1"}).to_string();
        let (_, _, reply) =
            call_authorized(addr, "POST", "/echo/status", Some(&bearer(ALICE)), &body).await;
        reply["metrics"].clone()
    };
    let before = metrics().await;
    assert_eq!(before["sync_count_24h"], 1, "{before}");
    for _ in 0..3 {
        assert_eq!(push(BOB, "9").await.0, 403);
        let body = json!({"node_id": "n1"}).to_string();
        call_authorized(addr, "POST", "/echo/pull", Some(&bearer(BOB)), &body).await;
    }
    assert_eq!(metrics().await, before, "bob left no trace");
    // Nor does anyone leave statistics for a node that does not exist.
    let mut bad = serde_json::from_str::<Value>(&push_body("ghost", "1", json!({}))).unwrap();
    bad["state"]["metadata"]["checksum"] = json!("0".repeat(64));
    let (status, _, _) = call_authorized(
        addr,
        "POST",
        "/echo/push",
        Some(&bearer(BOB)),
        &bad.to_string(),
    )
    .await;
    assert_eq!(status, 400);
    let ghost = json!({"node_id": "ghost"}).to_string();
    call_authorized(addr, "POST", "/echo/pull", Some(&bearer(BOB)), &ghost).await;
    let (status, _, _) =
        call_authorized(addr, "POST", "/echo/status", Some(&bearer(BOB)), &ghost).await;
    assert_eq!(status, 404, "no statistics for a node no one stored");

    // A mesh node acts for any user; the node stays alice's.
    let node = relay.node_key();
    let body = push_body("n1", "3", json!({"by": "node"}));
    let header = nip98_naming(
        &node,
        &format!("http://{addr}/echo/push"),
        "POST",
        Some(&body),
        Some(&node),
    );
    let (status, _, reply) =
        call_authorized(addr, "POST", "/echo/push", Some(&header), &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(push(ALICE, "4").await.0, 200);
    assert_eq!(push(BOB, "5").await.0, 403);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_mesh_node_may_name_the_author_or_keep_rows() {
    let relay = TestRelay::start_with(with_users).await;
    let addr = relay.addr;
    let auth = format!("Bearer {ALICE}");
    let (_, _, created) = call_authorized(
        addr,
        "POST",
        "/graphs",
        Some(&auth),
        r#"{"graph-name":"g"}"#,
    )
    .await;
    let graph = created["graph-id"].as_str().unwrap().to_string();
    // A user claims to forward for bob: the tx is still alice's.
    let path = format!("/sync/{graph}/tx/batch");
    let body = json!({"t-before": 0, "txs": ["x"], "author": "bob", "client": "forged"});
    let (status, _, reply) =
        call_authorized(addr, "POST", &path, Some(&auth), &body.to_string()).await;
    assert_eq!(
        (status, reply["type"].clone()),
        (200, json!("tx/batch/ok")),
        "{reply}"
    );
    assert!(
        reply.get("events").is_none(),
        "signed txs go to mesh nodes only"
    );
    let mut node = relay.client().await;
    node.auth(&relay.node_key()).await;
    let stored = node.req("tx", &[json!({"kinds": [4071]})]).await;
    let tags = stored[0]["tags"].as_array().unwrap();
    assert!(tags.contains(&json!(["author", "alice"])), "{tags:?}");
    assert!(tags.contains(&json!(["client", "http"])), "{tags:?}");
    // `rows=keep` from a user is an ordinary reset (no mesh-only reply).
    let reset = format!("/sync/{graph}/admin/reset?rows=keep");
    let (status, _, reply) = call_authorized(addr, "DELETE", &reset, Some(&auth), "").await;
    assert_eq!((status, reply), (200, json!({"ok": true})));
    relay.stop().await;
}

/// A node's NIP-98 header opens only the node it was made for. Node x signs
/// a push for peer c; c (or anyone on the path) replays it at relay b,
/// which trusts x and has no `server.relay_url`, with c's Host so the host
/// check passes. b refuses it, and a header that names no node at all;
/// the one x makes for b (naming b's key) acts as a mesh node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_header_opens_only_the_node_it_names() {
    let (x, c) = (Keys::generate(), Keys::generate());
    let trusted = hex::encode(x.public_key());
    let b = TestRelay::start_with(|cfg| {
        with_users(cfg);
        cfg.auth.trusted_nodes = vec![trusted];
    })
    .await;
    let body = push_body("n1", "1", json!({"by": "x"}));
    let replay_at_b = |header: String, host: String| {
        let body = body.clone();
        async move {
            let headers = [
                ("Host", host.as_str()),
                ("Authorization", header.as_str()),
                ("Content-Type", "application/json"),
            ];
            let (status, _, reply) =
                http_request(b.addr, "POST", "/echo/push", &headers, &body).await;
            (status, reply)
        }
    };
    let for_c = nip98_naming(
        &x,
        "http://c.example/echo/push",
        "POST",
        Some(&body),
        Some(&c),
    );
    let (status, reply) = replay_at_b(for_c, "c.example".into()).await;
    assert_eq!(status, 401, "a header made for c: {reply}");
    assert!(reply.contains("p tag"), "{reply}");
    let naming_no_node = nip98(&x, "http://c.example/echo/push", "POST", Some(&body));
    let (status, reply) = replay_at_b(naming_no_node, "c.example".into()).await;
    assert_eq!(status, 401, "a header naming no node: {reply}");
    let (status, pulled) = call(b.addr, "POST", "/echo/pull", Some(ALICE), "{}").await;
    assert_eq!(
        (status, pulled["changes"].clone()),
        (200, json!([])),
        "nothing stored"
    );

    let url = format!("http://{}/echo/push", b.addr);
    let for_b = nip98_naming(&x, &url, "POST", Some(&body), Some(&b.node_key()));
    let (status, reply) = replay_at_b(for_b, b.addr.to_string()).await;
    assert_eq!(status, 200, "made for b: {reply}");
    b.stop().await;
}
