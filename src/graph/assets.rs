//! Graph assets (seed 004): `GET/PUT/DELETE /assets/:graph-id/:uuid.:ext`.
//! An upload streams to a temporary file while it is hashed, is refused
//! with 413 the moment it crosses the limit (nothing partial is left), and
//! lands content-addressed at `<data>/assets/<sha256>`; a kind-34073 record
//! (`d` = `graph-id/uuid.ext`: sha256, size, type) replicates it through the
//! mesh. A node holding the record but not the blob fetches the blob from a
//! mesh peer when the asset is asked for.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::blobs::{blob_path, receive, AssetRecord, Received};
use super::{Caller, GraphError, Graphs};
use crate::event::Event;
use crate::filter::Filter;
use crate::mesh::GRAPH_ASSET_KIND;

fn error(status: StatusCode, message: &'static str) -> Response {
    GraphError(status, message).into_response()
}

fn invalid_path() -> Response {
    error(StatusCode::BAD_REQUEST, "invalid asset path")
}

/// `uuid.ext` with a safe uuid and extension, or None.
fn valid_name(name: &str) -> Option<(&str, &str)> {
    let (stem, ext) = name.rsplit_once('.')?;
    let safe = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (safe(stem, 128) && safe(ext, 16)).then_some((stem, ext))
}

fn content_type_for(ext: &str, stored: &str) -> String {
    let by_ext = match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        _ => "",
    };
    if !by_ext.is_empty() {
        by_ext.to_string()
    } else if stored.contains('/') {
        stored.to_string()
    } else {
        "application/octet-stream".to_string()
    }
}

/// Media a browser only displays (images other than SVG, which can carry
/// script; audio; video): served inline. Everything else, PDF and HTML
/// included, is an attachment.
fn inline_safe(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let plain = !subtype.is_empty()
        && subtype
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.+".contains(&b));
    plain && (matches!(kind, "audio" | "video") || (kind == "image" && !subtype.starts_with("svg")))
}

/// One handler for every method, so other methods get the seed's 405 body.
pub async fn asset(
    State(graphs): State<Arc<Graphs>>,
    Path((graph, name)): Path<(String, String)>,
    method: Method,
    caller: Result<Caller, GraphError>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !matches!(method, Method::GET | Method::PUT | Method::DELETE) {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let user = match caller {
        Ok(Caller(user)) => user,
        Err(e) => return e.into_response(),
    };
    let Some((_, ext)) = valid_name(&name) else {
        return invalid_path();
    };
    if graph.is_empty() || graph.contains("..") || graph.len() > 128 {
        return invalid_path();
    }
    // Mesh nodes fetching a blob for their users skip the graph's ACL
    // (reading only).
    let is_node = method == Method::GET && user.mesh_node;
    if !is_node {
        if let Err(e) = graphs.graph_for(&graph, &user).await {
            return e.into_response();
        }
    }
    match method {
        Method::PUT => put(&graphs, &graph, &name, &headers, body).await,
        Method::DELETE => delete(&graphs, &graph, &name).await,
        _ => get(&graphs, &graph, &name, ext, !is_node).await,
    }
}

async fn put(
    graphs: &Arc<Graphs>,
    graph: &str,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let dir = graphs.store_dir.join("assets");
    if tokio::fs::create_dir_all(dir.join("tmp")).await.is_err() {
        return super::SERVER_ERROR.into_response();
    }
    let temp = dir
        .join("tmp")
        .join(hex::encode(rand::random::<[u8; 16]>()));
    let received = receive(&temp, body).await;
    let (sha256, size) = match received {
        Ok(done) => done,
        Err(status) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return match status {
                Received::TooLarge => error(StatusCode::PAYLOAD_TOO_LARGE, "asset too large"),
                Received::Broken => error(StatusCode::BAD_REQUEST, "missing body"),
                Received::PayloadMismatch => super::PAYLOAD_MISMATCH.into_response(),
                Received::Io => super::SERVER_ERROR.into_response(),
            };
        }
    };
    let target = blob_path(&graphs.store_dir, &sha256);
    if tokio::fs::rename(&temp, &target).await.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
        return super::SERVER_ERROR.into_response();
    }
    let asset_type = headers
        .get("x-asset-type")
        .or_else(|| headers.get(header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(128)
        .collect();
    let record = AssetRecord {
        graph_id: graph.to_string(),
        name: name.to_string(),
        sha256,
        size,
        asset_type,
        content_encoding: String::new(),
        deleted: false,
        updated_at: crate::event::now_ms(),
    };
    match publish(graphs, &record).await {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn delete(graphs: &Arc<Graphs>, graph: &str, name: &str) -> Response {
    let Some(mut record) = find(graphs, graph, name).await else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    record.deleted = true;
    record.updated_at = crate::event::now_ms().max(record.updated_at + 1000);
    match publish(graphs, &record).await {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn get(
    graphs: &Arc<Graphs>,
    graph: &str,
    name: &str,
    ext: &str,
    may_fetch: bool,
) -> Response {
    let Some(record) = find(graphs, graph, name).await else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let path = blob_path(&graphs.store_dir, &record.sha256);
    if tokio::fs::metadata(&path).await.is_err()
        && !(may_fetch && super::fetch::blob_from_peers(graphs, &record).await)
    {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    let Ok(file) = tokio::fs::File::open(&path).await else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let stream = file_chunks(file);
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    let content_type = content_type_for(ext, &record.asset_type);
    if let Ok(v) = content_type.parse() {
        headers.insert(header::CONTENT_TYPE, v);
    }
    // Uploads are any user's bytes: never sniffed, never run as a page of
    // this origin, and downloaded unless they are plain media.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    let disposition = if inline_safe(&content_type) {
        "inline"
    } else {
        "attachment"
    };
    // `name` is checked to be [A-Za-z0-9_-] with one dot: safe to quote.
    if let Ok(v) = format!("{disposition}; filename=\"{name}\"").parse() {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = record.asset_type.parse() {
        headers.insert("x-asset-type", v);
    }
    if let Ok(v) = record.size.to_string().parse() {
        headers.insert(header::CONTENT_LENGTH, v);
    }
    if !record.content_encoding.is_empty() {
        if let Ok(v) = record.content_encoding.parse() {
            headers.insert(header::CONTENT_ENCODING, v);
        }
    }
    response
}

/// A file as a stream of chunks, read as the client takes them.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

/// The newest live record of an asset.
pub async fn find(graphs: &Arc<Graphs>, graph: &str, name: &str) -> Option<AssetRecord> {
    let address = format!("{graph}/{name}");
    let mut filter = Filter {
        kinds: Some(vec![GRAPH_ASSET_KIND]),
        ..Filter::default()
    };
    filter.tags.insert(b'd', vec![address.clone()]);
    newest_records(graphs, filter)
        .await
        .into_iter()
        .find(|r| format!("{}/{}", r.graph_id, r.name) == address)
}

/// The newest record of each asset address matching `filter`, live ones
/// only, newest first.
pub async fn newest_records(graphs: &Arc<Graphs>, filter: Filter) -> Vec<AssetRecord> {
    let store = graphs.store.clone();
    let parse = |event: &Event| {
        let record = serde_json::from_str::<AssetRecord>(&event.content).ok()?;
        // The sha256 names a file: only 64 hex characters.
        let named = crate::event::decode_hex::<32>(&record.sha256).is_some();
        let address = format!("{}/{}", record.graph_id, record.name);
        (event.kind == GRAPH_ASSET_KIND && named && event.d_tag() == address).then_some(record)
    };
    let found =
        tokio::task::spawn_blocking(move || store.newest_per_d(&filter, parse, |r| r.updated_at))
            .await;
    let mut live: Vec<AssetRecord> = match found {
        Ok(Ok(records)) => records.into_iter().filter(|r| !r.deleted).collect(),
        _ => Vec::new(),
    };
    live.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
    live
}

pub(super) async fn publish(graphs: &Arc<Graphs>, record: &AssetRecord) -> Result<(), GraphError> {
    let content = serde_json::to_string(record).unwrap_or_default();
    let event = graphs.node_key.sign(
        crate::event::now().max(record.updated_at / 1000),
        GRAPH_ASSET_KIND,
        vec![
            vec!["d".into(), format!("{}/{}", record.graph_id, record.name)],
            vec!["g".into(), record.graph_id.clone()],
            vec!["x".into(), record.sha256.clone()],
        ],
        content,
    );
    graphs.store_event(event).await
}

#[cfg(test)]
mod tests {
    use super::inline_safe;

    #[test]
    fn only_plain_media_is_inline() {
        for inline in ["image/png", "IMAGE/JPEG", "video/mp4", "audio/mpeg; x=1"] {
            assert!(inline_safe(inline), "{inline}");
        }
        for attachment in [
            "image/svg+xml",
            "text/html",
            "application/pdf",
            "application/octet-stream",
            "image/",
            "image/png<script>",
            "",
        ] {
            assert!(!inline_safe(attachment), "{attachment}");
        }
    }
}
