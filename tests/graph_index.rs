//! Graph sync (DB-Sync) over real HTTP: who may call it (tokens, NIP-98)
//! and the graph index.

mod common;

use base64::Engine;
use common::graph_api::*;
use common::*;
use echorelay::event::Keys;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_index_and_auth() {
    let keys = Keys::generate();
    let allowed = hex::encode(keys.public_key());
    let relay = TestRelay::start_with(|c| {
        with_graph_users(c);
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
