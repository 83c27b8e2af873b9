//! WebSocket permessage-deflate (RFC 7692) on the relay socket: agreed when
//! the client offers it (and only then), frames compressed both ways,
//! switched off by `server.permessage_deflate = false`; the bytes on the
//! wire are counted by a TCP proxy between client and relay.

mod common;

use std::net::SocketAddr;

use common::wire::proxy;
use common::*;
use echorelay::event::Keys;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The response head to a WebSocket upgrade offering `extensions` (none
/// when empty), lowercased.
async fn upgrade_head(addr: SocketAddr, extensions: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !extensions.is_empty() {
        request.push_str(&format!("Sec-WebSocket-Extensions: {extensions}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("upgrade reply")
            .unwrap();
        assert_eq!(read, 1, "closed before the head ended");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

/// A yawc client, offering deflate or not.
async fn yawc_client(addr: SocketAddr, deflate: bool) -> yawc::TcpWebSocket {
    let options = match deflate {
        true => yawc::Options::default().with_compression_level(yawc::CompressionLevel::default()),
        false => yawc::Options::default().without_compression(),
    };
    let url = format!("ws://{addr}").parse().unwrap();
    yawc::WebSocket::connect(url)
        .with_options(options.with_utf8())
        .await
        .expect("connect")
}

/// The next JSON message whose first element is `kind`.
async fn next_of(ws: &mut yawc::TcpWebSocket, kind: &str) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next_frame())
            .await
            .expect("a reply within the wait")
            .expect("socket open");
        if frame.opcode() != yawc::OpCode::Text {
            continue;
        }
        let value: Value = serde_json::from_slice(frame.payload()).unwrap();
        if value[0] == kind {
            return value;
        }
    }
}

/// Publishes a compressible 40 kB note and reads it back; returns the
/// bytes of both messages (what they cost uncompressed).
async fn round_trip(ws: &mut yawc::TcpWebSocket, keys: &Keys) -> u64 {
    let content = "the same sentence, over and over again. ".repeat(1000);
    let event = note(keys, &content);
    let publish = format!("[\"EVENT\",{}]", event.to_json());
    ws.send(yawc::Frame::text(publish.clone())).await.unwrap();
    let ok = next_of(ws, "OK").await;
    assert_eq!(ok[2], true, "{ok}");
    let req = json!(["REQ", "back", {"ids": [event.id_hex()]}]).to_string();
    ws.send(yawc::Frame::text(req)).await.unwrap();
    let back = next_of(ws, "EVENT").await;
    assert_eq!(back[2]["content"], content);
    next_of(ws, "EOSE").await;
    (publish.len() * 2) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_is_agreed_when_offered_and_compresses_both_ways() {
    let relay = TestRelay::start().await;
    // Offered: agreed, with the relay's no-context-takeover terms.
    let head = upgrade_head(relay.addr, "permessage-deflate; client_max_window_bits").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let agreed = head
        .lines()
        .find_map(|l| l.strip_prefix("sec-websocket-extensions:"))
        .unwrap_or_else(|| panic!("no extension agreed: {head}"));
    assert!(agreed.contains("permessage-deflate"), "{agreed}");
    assert!(agreed.contains("server_no_context_takeover"), "{agreed}");
    // Not offered: none.
    let head = upgrade_head(relay.addr, "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");

    // Compressed frames both ways: the wire carries a fraction of the text.
    let keys = Keys::generate();
    let (via, wire) = proxy(relay.addr).await;
    let mut compressed = yawc_client(via, true).await;
    let text = round_trip(&mut compressed, &keys).await;
    let (up, down) = wire.bytes();
    assert!(
        up * 5 < text / 2,
        "client → relay: {up} bytes for {} of text",
        text / 2
    );
    assert!(
        down * 5 < text / 2,
        "relay → client: {down} bytes for {} of text",
        text / 2
    );

    // A client that does not offer it gets plain frames (and still works).
    let (via, wire) = proxy(relay.addr).await;
    let mut plain = yawc_client(via, false).await;
    let text = round_trip(&mut plain, &keys).await;
    let (up, down) = wire.bytes();
    assert!(up > text / 2 && down > text / 2, "{up} / {down}");
    let mut tungstenite = relay.client().await;
    tungstenite
        .publish_ok(&note(&keys, "uncompressed client"))
        .await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_turns_deflate_off() {
    let relay = TestRelay::start_with(|c| c.server.permessage_deflate = false).await;
    let head = upgrade_head(relay.addr, "permessage-deflate").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    let (via, wire) = proxy(relay.addr).await;
    let mut offered = yawc_client(via, true).await;
    let text = round_trip(&mut offered, &Keys::generate()).await;
    assert!(wire.bytes().1 > text / 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_context_takeover_the_window_carries_over() {
    let relay = TestRelay::start_with(|c| c.server.deflate_context_takeover = true).await;
    let head = upgrade_head(relay.addr, "permessage-deflate").await;
    let agreed = head
        .lines()
        .find_map(|l| l.strip_prefix("sec-websocket-extensions:"))
        .unwrap_or_else(|| panic!("no extension agreed: {head}"));
    assert!(!agreed.contains("no_context_takeover"), "{agreed}");
    let mut ws = yawc_client(relay.addr, true).await;
    round_trip(&mut ws, &Keys::generate()).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deflate_bomb_stops_at_the_socket_limit() {
    // 1 MiB negentropy and 256 KiB message limits: the socket reads at most
    // 1 MiB of decompressed text, whatever the compressed size.
    let relay = TestRelay::start_with(|c| {
        c.limits.max_message_size = 256 * 1024;
        c.limits.max_negentropy_message_size = 1 << 20;
    })
    .await;
    let mut ws = yawc_client(relay.addr, true).await;
    let bomb = format!("[\"REQ\",\"x\",{{\"#t\":[\"{}\"]}}]", "a".repeat(4 << 20));
    let _ = ws.send(yawc::Frame::text(bomb)).await;
    let code = loop {
        let frame = tokio::time::timeout(WAIT, ws.next_frame())
            .await
            .expect("close");
        match frame {
            Ok(f) if f.opcode() == yawc::OpCode::Close => break f.close_code().map(u16::from),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    assert_eq!(code, Some(1009));
    // The relay goes on serving.
    let mut c = relay.client().await;
    c.publish_ok(&note(&Keys::generate(), "after the bomb"))
        .await;
    relay.stop().await;
}
