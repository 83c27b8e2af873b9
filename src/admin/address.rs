//! Where a node's control API is, for the client subcommands on the same
//! machine. `serve` binds the API before the relay port and writes the bound
//! address to `<data_dir>/admin.url`, so `echorelay status --data DIR` finds
//! a node started with any `--listen` (its `admin_listen = "auto"` port
//! follows the relay's) the moment its relay port accepts.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// File in the data directory naming the bound control API.
pub const ADMIN_URL_FILE: &str = "admin.url";

fn url_file(dir: &Path) -> PathBuf {
    dir.join(ADMIN_URL_FILE)
}

/// The URL a local client dials for an API bound at `addr` (an unspecified
/// address is reached on loopback).
pub fn local_url(mut addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

/// Records the bound API (`Some`) or that there is none (`None`: a stale
/// file from an earlier run is removed); returns the URL written. Written
/// under a fresh temporary name (never through an existing file or link)
/// and renamed, so a reader never sees half a line.
pub fn publish(dir: &Path, bound: Option<SocketAddr>) -> std::io::Result<Option<String>> {
    let path = url_file(dir);
    let Some(addr) = bound else {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(None),
        };
    };
    let url = local_url(addr);
    std::fs::create_dir_all(dir)?;
    let temp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)?;
    file.write_all(format!("{url}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, &path)?;
    Ok(Some(url))
}

/// Removes the file if it still names `url` (a node started later on the
/// same data dir may have replaced it): a stopped node's address must not
/// send a client's token to whoever listens there next.
pub fn withdraw(dir: &Path, url: &str) {
    if published(dir).as_deref() == Some(url) {
        let _ = std::fs::remove_file(url_file(dir));
    }
}

/// The URL a running node wrote, if any: only a loopback `http://IP:PORT`
/// is believed, since the client sends the admin token to it.
pub fn published(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(url_file(dir)).ok()?;
    let url = text.lines().next()?.trim();
    let addr: SocketAddr = url.strip_prefix("http://")?.parse().ok()?;
    addr.ip().is_loopback().then(|| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_url_round_trips_and_is_removed_when_off() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(published(dir.path()), None);
        publish(dir.path(), Some("0.0.0.0:7801".parse().unwrap())).unwrap();
        assert_eq!(
            published(dir.path()).as_deref(),
            Some("http://127.0.0.1:7801")
        );
        publish(dir.path(), None).unwrap();
        assert_eq!(published(dir.path()), None);
        publish(dir.path(), None).unwrap();
    }
}
