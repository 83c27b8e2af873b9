//! Fetching a missing asset blob from a mesh peer: `GET /assets/...` to
//! each mesh peer in turn (its relay URL with ws:// read as http:// and
//! wss:// as https://), authorised with NIP-98 signed by the node key,
//! streamed to a temporary file, and kept only if its sha256 is the one
//! the record names.

use std::sync::Arc;
use std::time::Duration;

use super::blobs::{AssetRecord, Received, Spool};
use super::Graphs;
use crate::http_client::{self, Endpoint};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Tries every mesh peer; true once the blob is in place.
pub async fn blob_from_peers(graphs: &Arc<Graphs>, record: &AssetRecord) -> bool {
    for (url, key) in graphs.mesh_peers() {
        let Some(endpoint) = http_endpoint(&url) else {
            continue;
        };
        match tokio::time::timeout(
            TIMEOUT,
            fetch_from(graphs, &endpoint, &hex::encode(key), record),
        )
        .await
        {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => tracing::info!(peer = url, error = e, "asset fetch failed"),
            Err(_) => tracing::info!(peer = url, "asset fetch timed out"),
        }
    }
    false
}

/// A peer's relay URL as the HTTP endpoint of the same host (ws:// read as
/// http://, wss:// as https://).
pub(super) fn http_endpoint(relay_url: &str) -> Option<Endpoint> {
    Endpoint::of_relay(relay_url).map(Endpoint::host_root)
}

async fn fetch_from(
    graphs: &Graphs,
    endpoint: &Endpoint,
    peer: &str,
    record: &AssetRecord,
) -> Result<(), String> {
    let path = format!("/assets/{}/{}", record.graph_id, record.name);
    let auth = crate::auth::nip98_header(&graphs.node_key, peer, &endpoint.url(&path), "GET", b"");
    let reply = http_client::request(
        endpoint,
        "GET",
        &path,
        &[("Authorization", &auth)],
        b"",
        TIMEOUT,
    )
    .await
    .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!("peer answered {}", reply.status));
    }
    let dir = graphs.store_dir.join("assets").join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| e.to_string())?;
    let temp = dir.join(hex::encode(rand::random::<[u8; 16]>()));
    let result = receive(reply, &temp, record).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
        return result;
    }
    let target = graphs.store_dir.join("assets").join(&record.sha256);
    tokio::fs::rename(&temp, &target)
        .await
        .map_err(|e| e.to_string())
}

async fn receive(
    mut body: http_client::Reply,
    temp: &std::path::Path,
    record: &AssetRecord,
) -> Result<(), String> {
    let failed = |why: Received| match why {
        Received::TooLarge => "blob larger than the limit".to_string(),
        Received::Broken | Received::Io | Received::PayloadMismatch => {
            "cannot write the blob".to_string()
        }
    };
    let mut spool = Spool::create(temp).await.map_err(failed)?;
    while let Some(chunk) = body.chunk().await.map_err(|e| e.to_string())? {
        spool.write(&chunk).await.map_err(failed)?;
    }
    let (sha256, _) = spool.finish().await.map_err(failed)?;
    if sha256 != record.sha256 {
        return Err("blob does not match its sha256".into());
    }
    Ok(())
}
