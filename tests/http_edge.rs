//! The HTTP edge under attack, against the `serve` binary: slowloris on the
//! relay and control listeners, the per-IP cap on plain HTTP connections, a
//! spoofed X-Forwarded-For, and a request body that stops mid-way.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TRICKLERS: usize = 500;
/// `server.header_timeout_secs` of these tests.
const HEADER_TIMEOUT: Duration = Duration::from_secs(4);

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("ws://")
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

/// A connection that sends a request head a byte at a time and never ends it.
async fn trickler(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        .await
        .unwrap();
    stream
}

/// Keeps every trickler sending until the server closes it; returns how many
/// were closed by the deadline.
async fn trickle_until_closed(streams: Vec<TcpStream>, deadline: tokio::time::Instant) -> usize {
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                loop {
                    let read = tokio::time::timeout_at(
                        deadline.min(tokio::time::Instant::now() + Duration::from_millis(500)),
                        stream.read(&mut buf),
                    )
                    .await;
                    match read {
                        Ok(Ok(0)) | Ok(Err(_)) => return true,
                        // hyper may answer 408 before closing.
                        Ok(Ok(_)) => continue,
                        Err(_) if tokio::time::Instant::now() >= deadline => return false,
                        Err(_) => {
                            if stream.write_all(b"a").await.is_err() {
                                return true;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let mut closed = 0;
    for task in tasks {
        closed += usize::from(task.await.unwrap());
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_neither_blocks_a_request_nor_outlives_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, url) = spawn_serve_with(dir.path(), "header_timeout_secs = 4", "");
    let relay = addr_of(&url);
    let admin = addr_of(&serve.admin);
    for (listener, path, headers) in [
        (relay, "/", vec![("accept", "application/nostr+json")]),
        (
            admin,
            "/api/v1/GetSyncStatus",
            vec![("authorization", "Bearer wrong")],
        ),
    ] {
        let opened = tokio::time::Instant::now();
        let mut streams = Vec::new();
        for _ in 0..TRICKLERS {
            streams.push(trickler(listener).await);
        }
        // A normal request is answered long before the tricklers time out.
        let (status, _, _) =
            tokio::time::timeout(HEADER_TIMEOUT / 2, http_get(listener, path, &headers))
                .await
                .expect("a normal request answered while 500 connections trickle");
        assert!(status == 200 || status == 401, "{listener}: {status}");
        let deadline = opened + HEADER_TIMEOUT + Duration::from_secs(3);
        let closed = trickle_until_closed(streams, deadline).await;
        assert_eq!(closed, TRICKLERS, "{listener}: tricklers closed in time");
    }
    // The relay still serves WebSocket clients.
    let mut c = Raw::connect(&url).await;
    let keys = echorelay::event::Keys::generate();
    c.publish_ok(&note(&keys, "after the storm")).await;
    drop(serve);
}

/// A request with `X-Forwarded-For`, kept open: (stream, status).
async fn keep_alive_request(addr: SocketAddr, forwarded: &str) -> (TcpStream, u16) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nAccept: application/nostr+json\r\nX-Forwarded-For: {forwarded}\r\n\r\n"
    );
    let _ = stream.write_all(request.as_bytes()).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (stream, status)
}

/// A WebSocket upgrade carrying `X-Forwarded-For`: its HTTP status.
async fn upgrade_status(url: &str, forwarded: &str) -> u16 {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", forwarded.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            std::mem::forget(socket); // held open for the rest of the test
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_covers_plain_http_and_a_client_cannot_pick_its_address() {
    // 127.0.0.1 is not a trusted proxy here: its header is not believed.
    let relay = TestRelay::start_with(|c| {
        c.limits.max_connections_per_ip = 3;
        c.server.real_ip_header = "x-forwarded-for".into();
        c.server.trusted_proxies = vec![];
    })
    .await;
    let mut open = Vec::new();
    for i in 0..3 {
        let (stream, status) = keep_alive_request(relay.addr, &format!("10.0.0.{i}")).await;
        assert_eq!(status, 200);
        open.push(stream);
    }
    let (_, status) = keep_alive_request(relay.addr, "10.9.9.9").await;
    assert_eq!(
        status, 429,
        "plain HTTP connections count; the header moved nothing"
    );
    assert_eq!(upgrade_status(&relay.url, "10.9.9.8").await, 429);
    drop(open.pop());
    // The slot comes back once the server sees the close.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _, _) = http_get(relay.addr, "/", &[]).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never released"
        );
        tokio::task::yield_now().await;
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client() {
    let relay = TestRelay::start_with(|c| {
        c.limits.max_connections_per_ip = 2;
        c.server.real_ip_header = "x-forwarded-for".into();
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    // The proxy appends the address it saw (1.2.3.4); the client wrote the
    // rest, differently each time, to look like someone else.
    assert_eq!(upgrade_status(&relay.url, "6.6.6.1, 1.2.3.4").await, 101);
    assert_eq!(upgrade_status(&relay.url, "6.6.6.2, 1.2.3.4").await, 101);
    assert_eq!(upgrade_status(&relay.url, "6.6.6.3, 1.2.3.4").await, 429);
    assert_eq!(upgrade_status(&relay.url, "1.2.3.4, 1.2.3.5").await, 101);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_fails_and_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, _url) = spawn_serve_with(dir.path(), "body_timeout_secs = 2", "");
    let admin = addr_of(&serve.admin);
    let token = std::fs::read_to_string(dir.path().join("db").join("admin.token")).unwrap();
    let mut stream = TcpStream::connect(admin).await.unwrap();
    let head = format!(
        "POST /api/v1/GetSyncStatus HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"a\":",
        token.trim()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("closed after the body timeout")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_keeps_its_connection_counted() {
    let relay = TestRelay::start_with(|c| c.limits.max_connections_per_ip = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(relay.addr).await.unwrap();
        // Upgrade asked for without `Connection: upgrade`: refused, kept alive.
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 4"));
        held.push(stream);
    }
    let (status, _, _) = http_get(relay.addr, "/", &[]).await;
    assert_eq!(status, 429, "both refused upgrades still hold their slots");
    drop(held);
    relay.stop().await;
}
