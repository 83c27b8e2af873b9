//! Graph snapshots. The framed stream of seed 004 — frames of a 4-byte
//! big-endian length and a JSON array of `[addr, content, addresses]` rows,
//! gzip when `content-encoding: gzip` — is spooled to disk as it arrives,
//! checked frame by frame (bounded decompression, bounded frames), and only
//! then imported into the graph's row store in chunks, so a broken upload
//! changes nothing. The upload itself is kept as an asset (record + blob),
//! which replicates to mesh peers; `download` points at the newest one.
//! Seed 002's `snapshot/rows` and `snapshot/import` read and write the same
//! rows as JSON.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::assets;
use super::blobs::{self, AssetRecord, Received};
use super::{GraphCaller, GraphError, Graphs, SERVER_ERROR};
use crate::filter::Filter;
use crate::mesh::GRAPH_ASSET_KIND;
use crate::store::{Bookkeeping, KvRow, WriteOutcome};

/// Largest decompressed snapshot (gzip bombs stop here).
const MAX_SNAPSHOT_BYTES: u64 = 1024 * 1024 * 1024;
/// Largest single frame (parsed rows take several times its size).
const MAX_FRAME: usize = 8 * 1024 * 1024;
/// Rows per import transaction.
const IMPORT_CHUNK: usize = 10_000;
/// Rows per `snapshot/rows` page by default, and at most.
const ROWS_DEFAULT: usize = 1000;
const ROWS_MAX: usize = 10_000;

fn bad(message: &'static str) -> Response {
    GraphError(StatusCode::BAD_REQUEST, message).into_response()
}

/// Parses one row `[addr, content, addresses]`.
fn row(value: &Value) -> Option<KvRow> {
    let parts = value.as_array()?;
    if parts.len() != 3 {
        return None;
    }
    Some(KvRow {
        addr: parts[0].as_u64()?,
        content: parts[1].as_str()?.to_string(),
        addresses: parts[2].clone(),
    })
}

/// Reads a framed stream, handing each frame's rows to `each`; errors name
/// what is wrong. Never reads more than `max_bytes` of (decompressed) input.
pub fn read_frames(
    input: impl Read,
    max_bytes: u64,
    mut each: impl FnMut(Vec<KvRow>) -> Result<(), String>,
) -> Result<u64, String> {
    let mut input = input.take(max_bytes);
    let mut count = 0u64;
    let mut frame = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match read_full(&mut input, &mut len)? {
            0 => return Ok(count),
            4 => {}
            _ => return Err("truncated frame length".into()),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err("frame too large".into());
        }
        frame.resize(len, 0);
        if read_full(&mut input, &mut frame)? != len {
            return Err(if input.limit() == 0 {
                "snapshot too large".into()
            } else {
                "truncated frame".into()
            });
        }
        let rows: Vec<Value> =
            serde_json::from_slice(&frame).map_err(|_| "frame is not a JSON array".to_string())?;
        let rows: Option<Vec<KvRow>> = rows.iter().map(row).collect();
        let rows = rows.ok_or("a row is not [addr, content, addresses]")?;
        count += rows.len() as u64;
        each(rows)?;
    }
}

/// Fills `buf` unless the input ends first; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, String> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err("corrupt compressed data".into()),
        }
    }
    Ok(filled)
}

/// Opens a spooled upload, decompressing when it is gzip.
fn open_stream(path: &std::path::Path, gzip: bool) -> std::io::Result<Box<dyn Read>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    Ok(if gzip {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

pub(super) async fn upload(
    State(graphs): State<Arc<Graphs>>,
    caller: GraphCaller,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let reset = match query.get("reset").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return bad("invalid body"),
    };
    if reset {
        if let Err(e) = super::http::manage(caller.access) {
            return e.into_response();
        }
    }
    let graph = caller.graph;
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let dir = graphs.store_dir.join("assets").join("tmp");
    if tokio::fs::create_dir_all(&dir).await.is_err() {
        return SERVER_ERROR.into_response();
    }
    let temp = dir.join(hex::encode(rand::random::<[u8; 16]>()));
    let (sha256, size) = match blobs::receive(&temp, body).await {
        Ok(done) => done,
        Err(why) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return match why {
                Received::TooLarge => {
                    GraphError(StatusCode::PAYLOAD_TOO_LARGE, "asset too large").into_response()
                }
                Received::Broken => bad("missing body"),
                Received::PayloadMismatch => super::PAYLOAD_MISMATCH.into_response(),
                Received::Io => SERVER_ERROR.into_response(),
            };
        }
    };
    if size == 0 {
        let _ = tokio::fs::remove_file(&temp).await;
        return bad("missing body");
    }
    let (writer, id, spooled) = (graphs.writer.clone(), graph.clone(), temp.clone());
    let runtime = tokio::runtime::Handle::current();
    let imported = tokio::task::spawn_blocking(move || {
        // Pass 1 checks everything; pass 2 imports: a bad upload changes nothing.
        let check = open_stream(&spooled, gzip).map_err(|e| e.to_string())?;
        read_frames(check, MAX_SNAPSHOT_BYTES, |_| Ok(()))?;
        let mut first = true;
        let mut pending: Vec<KvRow> = Vec::new();
        // Each chunk is one writer request: events commit between chunks.
        let flush = |rows: &mut Vec<KvRow>, clear: bool| {
            let op = Bookkeeping::KvRows {
                graph: id.clone(),
                rows: std::mem::take(rows),
                clear_first: clear,
            };
            match runtime.block_on(writer.record(op)) {
                WriteOutcome::Recorded => Ok(()),
                other => Err(format!("snapshot rows not stored: {other:?}")),
            }
        };
        let input = open_stream(&spooled, gzip).map_err(|e| e.to_string())?;
        let count = read_frames(input, MAX_SNAPSHOT_BYTES, |rows| {
            pending.extend(rows);
            if pending.len() >= IMPORT_CHUNK {
                flush(&mut pending, reset && first)?;
                first = false;
            }
            Ok(())
        })?;
        flush(&mut pending, reset && first)?;
        Ok::<u64, String>(count)
    })
    .await;
    let count = match imported {
        Ok(Ok(count)) => count,
        Ok(Err(reason)) => {
            let _ = tokio::fs::remove_file(&temp).await;
            tracing::info!(graph, reason, "snapshot upload refused");
            return bad("invalid body");
        }
        Err(_) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return SERVER_ERROR.into_response();
        }
    };
    if tokio::fs::rename(&temp, blobs::blob_path(&graphs.store_dir, &sha256))
        .await
        .is_err()
    {
        return SERVER_ERROR.into_response();
    }
    // A reset comes first, so this snapshot is the one offered after it.
    let mut reset_at = 0;
    if reset {
        match super::http::reset_log(&graphs, &graph, false, false).await {
            Ok(at) => reset_at = at,
            Err(e) => return e.into_response(),
        }
    }
    let name = format!("{}.snapshot", crate::ids::new_uuid());
    let record = AssetRecord {
        graph_id: graph.clone(),
        name: name.clone(),
        sha256,
        size,
        asset_type: "application/transit+json".into(),
        content_encoding: if gzip { "gzip".into() } else { String::new() },
        deleted: false,
        updated_at: crate::event::now_ms().max(reset_at + 1),
    };
    if let Err(e) = assets::publish(&graphs, &record).await {
        return e.into_response();
    }
    Json(json!({"ok": true, "count": count, "key": format!("{graph}/{name}")})).into_response()
}

pub(super) async fn download(
    State(graphs): State<Arc<Graphs>>,
    caller: GraphCaller,
    request: axum::http::request::Parts,
) -> Response {
    let graph = caller.graph;
    let mut filter = Filter {
        kinds: Some(vec![GRAPH_ASSET_KIND]),
        ..Filter::default()
    };
    filter.tags.insert(b'g', vec![graph.clone()]);
    let reset_at = caller.meta.reset_at;
    let newest = assets::newest_records(&graphs, filter)
        .await
        .into_iter()
        .find(|r| r.name.ends_with(".snapshot") && r.updated_at > reset_at);
    let Some(record) = newest else {
        return GraphError(StatusCode::NOT_FOUND, "not found").into_response();
    };
    let path = format!("/assets/{graph}/{}", record.name);
    let mut reply = json!({
        "ok": true,
        "key": format!("{graph}/{}", record.name),
        "url": graphs.url_for(&request, &path),
    });
    if !record.content_encoding.is_empty() {
        reply["content-encoding"] = json!(record.content_encoding);
    }
    Json(reply).into_response()
}

pub(super) async fn rows(
    State(graphs): State<Arc<Graphs>>,
    caller: GraphCaller,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let graph = caller.graph;
    let after = match query.get("after").filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => match a.parse::<u64>() {
            Ok(a) => Some(a),
            Err(_) => return bad("invalid after"),
        },
    };
    let limit = match query.get("limit") {
        None => ROWS_DEFAULT,
        Some(l) => match l.parse::<usize>() {
            Ok(l) if l > 0 => l.min(ROWS_MAX),
            _ => return bad("invalid limit"),
        },
    };
    let store = graphs.store.clone();
    let found = tokio::task::spawn_blocking(move || store.kv_rows(&graph, after, limit)).await;
    let Ok(Ok(found)) = found else {
        return SERVER_ERROR.into_response();
    };
    let done = found.len() < limit;
    let last_addr = found.last().map(|r| r.addr).or(after);
    let rows: Vec<Value> = found
        .into_iter()
        .map(|r| json!({"addr": r.addr, "content": r.content, "addresses": r.addresses}))
        .collect();
    // Seed 002's own spelling: this endpoint exists only there.
    Json(json!({"rows": rows, "last_addr": last_addr, "done": done})).into_response()
}

pub(super) async fn import(
    State(graphs): State<Arc<Graphs>>,
    caller: GraphCaller,
    body: Bytes,
) -> Response {
    let graph = caller.graph;
    if body.iter().all(u8::is_ascii_whitespace) {
        return bad("missing body");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad("invalid body");
    };
    let reset = match body.get("reset") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return bad("invalid body"),
    };
    if reset {
        if let Err(e) = super::http::manage(caller.access) {
            return e.into_response();
        }
    }
    let rows: Option<Vec<KvRow>> = match body.get("rows") {
        Some(Value::Array(rows)) => rows.iter().map(row).collect(),
        _ => None,
    };
    let Some(rows) = rows else {
        return bad("invalid body");
    };
    let count = rows.len();
    let op = Bookkeeping::KvRows {
        graph,
        rows,
        clear_first: reset,
    };
    match graphs.writer.record(op).await {
        WriteOutcome::Recorded => Json(json!({"ok": true, "count": count})).into_response(),
        _ => SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(rows: &Value) -> Vec<u8> {
        let body = rows.to_string().into_bytes();
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    #[test]
    fn frames_are_checked_and_bounded() {
        let mut stream = frame(&json!([[1, "a", null], [2, "b", "x"]]));
        stream.extend(frame(&json!([[3, "c", [1, 2]]])));
        let mut seen = Vec::new();
        let count = read_frames(&stream[..], 1 << 20, |rows| {
            seen.extend(rows.into_iter().map(|r| r.addr));
            Ok(())
        });
        assert_eq!(count, Ok(3));
        assert_eq!(seen, vec![1, 2, 3]);
        let ignore = |_: Vec<KvRow>| Ok(());
        assert_eq!(
            read_frames(&stream[..stream.len() - 1], 1 << 20, ignore),
            Err("truncated frame".into())
        );
        assert_eq!(
            read_frames(&stream[..2], 1 << 20, ignore),
            Err("truncated frame length".into())
        );
        assert_eq!(
            read_frames(&stream[..], 10, ignore),
            Err("snapshot too large".into())
        );
        let huge = u32::MAX.to_be_bytes();
        assert_eq!(
            read_frames(&huge[..], 1 << 20, ignore),
            Err("frame too large".into())
        );
        let bad_row = frame(&json!([["one", "a", null]]));
        assert!(read_frames(&bad_row[..], 1 << 20, ignore).is_err());
        let not_json = [0, 0, 0, 3, b'x', b'y', b'z'];
        assert!(read_frames(&not_json[..], 1 << 20, ignore).is_err());
        assert_eq!(read_frames(&[][..], 1 << 20, ignore), Ok(0));
    }
}
