//! A sync peer: its `[[peers]]` entry (or one added through the control
//! API) as written ([`PeerConfig`], kept and shown as is), and the same
//! entry parsed once into types ([`PeerSpec`]) for everything that acts on
//! it: the scheduler, the mesh set, graph forwarding and asset fetches.
//! Below config and sync both, so neither imports the other for it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::filter::Filter;

/// One peer of the background sync service.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// ws:// or wss:// URL of the peer relay.
    pub url: String,
    /// "down", "up" or "both".
    #[serde(default = "default_peer_dir")]
    pub dir: String,
    /// NIP-01 filter (JSON) limiting what is synced; "{}" for everything.
    #[serde(default = "default_peer_filter")]
    pub filter: String,
    /// Seconds between reconciliations (jittered by ±10 %).
    #[serde(default = "default_peer_interval")]
    pub interval_secs: u64,
    /// Keep a standing subscription to the peer (and push our new events to
    /// it) so writes arrive within about a second between reconciliations.
    #[serde(default)]
    pub live: bool,
    /// The peer's node key (hex). Set, the peer is part of the mesh: graph
    /// and echo events replicate with it, and it may read and write them here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubkey: Option<String>,
}

impl Default for PeerConfig {
    fn default() -> PeerConfig {
        PeerConfig {
            url: String::new(),
            dir: default_peer_dir(),
            filter: default_peer_filter(),
            interval_secs: default_peer_interval(),
            live: false,
            pubkey: None,
        }
    }
}

/// Longest sync interval accepted (a week).
pub const MAX_PEER_INTERVAL_SECS: u64 = 7 * 24 * 3600;

fn default_peer_dir() -> String {
    "both".into()
}

fn default_peer_filter() -> String {
    "{}".into()
}

fn default_peer_interval() -> u64 {
    300
}

/// Which way events flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Fetch what we lack.
    Down,
    /// Send what the peer lacks.
    Up,
    Both,
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Direction, String> {
        match s {
            "down" => Ok(Direction::Down),
            "up" => Ok(Direction::Up),
            "both" => Ok(Direction::Both),
            other => Err(format!("direction must be down, up or both, not {other:?}")),
        }
    }
}

/// A peer entry, checked and parsed.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    pub url: String,
    pub direction: Direction,
    pub filter: Filter,
    pub interval: Duration,
    pub live: bool,
    /// The peer's node key: set, the peer is part of the mesh.
    pub pubkey: Option<[u8; 32]>,
}

impl PeerSpec {
    /// Parses an entry; `Err` says which field is wrong, naming the peer.
    pub fn parse(cfg: &PeerConfig) -> Result<PeerSpec, String> {
        if !(cfg.url.starts_with("ws://") || cfg.url.starts_with("wss://")) {
            return Err(format!("peer url must be ws:// or wss://: {}", cfg.url));
        }
        let direction = cfg.dir.parse::<Direction>()?;
        let filter =
            Filter::from_json(&cfg.filter).map_err(|e| format!("peer {} filter: {e}", cfg.url))?;
        let pubkey = match &cfg.pubkey {
            Some(key) => Some(
                crate::event::decode_hex::<32>(key)
                    .ok_or_else(|| format!("peer {} pubkey must be 64 hex characters", cfg.url))?,
            ),
            None => None,
        };
        if !(1..=MAX_PEER_INTERVAL_SECS).contains(&cfg.interval_secs) {
            return Err(format!(
                "peer {} interval_secs must be 1..={MAX_PEER_INTERVAL_SECS}",
                cfg.url
            ));
        }
        Ok(PeerSpec {
            url: cfg.url.clone(),
            direction,
            filter,
            interval: Duration::from_secs(cfg.interval_secs),
            live: cfg.live,
            pubkey,
        })
    }
}
