//! Blobs on disk, shared by uploads (`assets.rs`, `snapshot.rs`) and by
//! fetches from peers (`fetch.rs`): the asset record a kind-34073 event
//! carries, where a blob lives (`<data>/assets/<sha256>`), and the spool a
//! blob is written through while it is hashed and measured.

use std::path::{Path as FsPath, PathBuf};

use axum::body::Body;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Largest asset accepted.
pub const MAX_ASSET_BYTES: u64 = 100 * 1024 * 1024;

/// The record of one asset, the content of its 34073 event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AssetRecord {
    pub graph_id: String,
    /// `uuid.ext`
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// The uploader's `x-asset-type` (or content-type).
    #[serde(default)]
    pub asset_type: String,
    /// "gzip" when the blob is stored compressed (snapshots).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content_encoding: String,
    #[serde(default)]
    pub deleted: bool,
    /// Milliseconds; the newest record of an address wins.
    pub updated_at: u64,
}

/// Where blobs live: `<data>/assets/<sha256>`.
pub(super) fn blob_path(dir: &FsPath, sha256: &str) -> PathBuf {
    dir.join("assets").join(sha256)
}

pub(super) enum Received {
    TooLarge,
    Broken,
    /// The body is not the one its NIP-98 auth event names.
    PayloadMismatch,
    Io,
}

/// Streams the body to `temp`, hashing it; refuses past the limit.
pub(super) async fn receive(temp: &FsPath, body: Body) -> Result<(String, u64), Received> {
    let mut spool = Spool::create(temp).await?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if crate::edge::caused_by::<crate::auth::PayloadMismatch>(&e) {
                Received::PayloadMismatch
            } else {
                Received::Broken
            }
        })?;
        spool.write(&chunk).await?;
    }
    spool.finish().await
}

/// A blob being written to a temporary file while it is hashed and
/// measured against [`MAX_ASSET_BYTES`]: uploads and fetches from peers.
pub(super) struct Spool {
    file: tokio::fs::File,
    hasher: Sha256,
    size: u64,
}

impl Spool {
    pub(super) async fn create(temp: &FsPath) -> Result<Spool, Received> {
        // Blobs are users' data: readable by this node's user only.
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(0o600);
        let file = options.open(temp).await.map_err(|_| Received::Io)?;
        Ok(Spool {
            file,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    pub(super) async fn write(&mut self, chunk: &[u8]) -> Result<(), Received> {
        self.size += chunk.len() as u64;
        if self.size > MAX_ASSET_BYTES {
            return Err(Received::TooLarge);
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).await.map_err(|_| Received::Io)
    }

    /// Flushes to disk; returns the sha256 (hex) and size.
    pub(super) async fn finish(self) -> Result<(String, u64), Received> {
        self.file.sync_all().await.map_err(|_| Received::Io)?;
        Ok((hex::encode(self.hasher.finalize()), self.size))
    }
}
