//! Fetching a missing asset blob from a mesh peer: an HTTP/1.0 `GET
//! /assets/...` to each mesh peer in turn (its relay URL with ws:// read as
//! http:// and wss:// as https://, rustls with the webpki roots),
//! authorised with NIP-98 signed by the node key, streamed to a temporary
//! file, and kept only if its sha256 is the one the record names.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::assets::{AssetRecord, MAX_ASSET_BYTES};
use super::Graphs;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Tries every mesh peer; true once the blob is in place.
pub async fn blob_from_peers(graphs: &Arc<Graphs>, record: &AssetRecord) -> bool {
    for url in graphs.mesh_peer_urls() {
        let (tls, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => continue,
        };
        let host = rest.split('/').next().unwrap_or(rest);
        match tokio::time::timeout(TIMEOUT, fetch_from(graphs, host, tls, record)).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => tracing::info!(peer = url, error = e, "asset fetch failed"),
            Err(_) => tracing::info!(peer = url, "asset fetch timed out"),
        }
    }
    false
}

async fn fetch_from(
    graphs: &Graphs,
    host: &str,
    tls: bool,
    record: &AssetRecord,
) -> Result<(), String> {
    let address = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:{}", if tls { 443 } else { 80 })
    };
    let tcp = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| e.to_string())?;
    if !tls {
        return fetch_over(graphs, tcp, "http", host, record).await;
    }
    let name = host.split(':').next().unwrap_or(host).to_string();
    let server = rustls::pki_types::ServerName::try_from(name).map_err(|e| e.to_string())?;
    let stream = tls_connector()?
        .connect(server, tcp)
        .await
        .map_err(|e| e.to_string())?;
    fetch_over(graphs, stream, "https", host, record).await
}

/// A TLS client trusting the webpki roots (built once).
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    static CONFIG: std::sync::OnceLock<Option<Arc<rustls::ClientConfig>>> =
        std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
    });
    config
        .clone()
        .map(tokio_rustls::TlsConnector::from)
        .ok_or_else(|| "TLS is not available".to_string())
}

async fn fetch_over<S>(
    graphs: &Graphs,
    mut stream: S,
    scheme: &str,
    host: &str,
    record: &AssetRecord,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let path = format!("/assets/{}/{}", record.graph_id, record.name);
    let auth = graphs.node_key.sign(
        crate::event::now(),
        27235,
        vec![
            vec!["u".into(), format!("{scheme}://{host}{path}")],
            vec!["method".into(), "GET".into()],
        ],
        String::new(),
    );
    let auth = base64::engine::general_purpose::STANDARD.encode(auth.to_json());
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Nostr {auth}\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    if line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("peer answered {}", line.trim()));
    }
    loop {
        line.clear();
        if reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?
            == 0
            || line.trim().is_empty()
        {
            break;
        }
    }
    let dir = graphs.store_dir.join("assets").join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| e.to_string())?;
    let temp = dir.join(hex::encode(rand::random::<[u8; 16]>()));
    let result = receive(&mut reader, &temp, record).await;
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
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
    temp: &std::path::Path,
    record: &AssetRecord,
) -> Result<(), String> {
    let mut file = tokio::fs::File::create(temp)
        .await
        .map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > MAX_ASSET_BYTES {
            return Err("blob larger than the limit".into());
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
    }
    file.sync_all().await.map_err(|e| e.to_string())?;
    if hex::encode(hasher.finalize()) != record.sha256 {
        return Err("blob does not match its sha256".into());
    }
    Ok(())
}
