//! Graph assets over real HTTP: upload, download, delete, limits, and
//! blobs fetched by other nodes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::graph_api::*;
use common::*;
use serde_json::json;

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
    for (from, to, key) in [(&a, &b, b.node_pubkey()), (&b, &a, a.node_pubkey())] {
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
    let (at_b, path, auth) = (b.addr, &path, &auth);
    let (head, got) = eventually(
        "B to serve the asset",
        Duration::from_secs(30),
        || async move {
            let (status, head, got) =
                http_request(at_b, "GET", path, &[("Authorization", auth)], "").await;
            (status == 200).then_some((head, got))
        },
    )
    .await;
    assert_eq!(got, body);
    assert!(head.contains("content-type: text/plain"), "{head}");
    a.stop().await;
    b.stop().await;
}
