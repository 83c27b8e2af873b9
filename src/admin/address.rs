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
/// file from an earlier run is removed). Written under a temporary name and
/// renamed, so a reader never sees half a line.
pub fn publish(dir: &Path, bound: Option<SocketAddr>) -> std::io::Result<()> {
    let path = url_file(dir);
    let Some(addr) = bound else {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    };
    std::fs::create_dir_all(dir)?;
    let temp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(format!("{}\n", local_url(addr)).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, &path)
}

/// The URL a running (or last run) node wrote, if any.
pub fn published(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(url_file(dir)).ok()?;
    let url = text.lines().next()?.trim();
    url.starts_with("http://").then(|| url.to_string())
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
