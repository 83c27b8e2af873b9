//! Graph snapshots over real HTTP: upload, download, rows, import.

mod common;

use std::net::SocketAddr;

use common::graph_api::*;
use common::*;
use serde_json::{json, Value};

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
