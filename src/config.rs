//! Configuration: a TOML file whose every key has an embedded default, so the
//! relay runs with no file at all. `config.example.toml` documents each key;
//! the `example_config_parses` test keeps the two in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub info: InfoConfig,
    pub limits: LimitsConfig,
    pub policy: PolicyConfig,
    pub auth: AuthConfig,
    pub negentropy: NegentropyConfig,
    /// Relays this node keeps in sync with (`[[peers]]` tables).
    pub peers: Vec<PeerConfig>,
}

pub use crate::peers::{PeerConfig, MAX_PEER_INTERVAL_SECS};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the WebSocket / HTTP listener.
    pub listen: SocketAddr,
    /// The relay's public URL; when set, NIP-42 AUTH events must name it
    /// (otherwise they must name the URL the client connected to).
    pub relay_url: String,
    /// PEM certificate chain (leaf first) served on both listeners; with
    /// `tls_key`, the relay speaks wss:// and https:// itself. Empty: plain
    /// (put a TLS proxy in front). Reloaded on SIGHUP.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// PEM certificates trusted, besides the web PKI roots, when this node
    /// dials peers (wss://) and fetches from them (https://): a private CA
    /// or a peer's self-signed certificate.
    pub tls_roots: String,
    /// Header carrying the client address when behind a reverse proxy
    /// (e.g. "x-forwarded-for"); empty means use the socket peer address.
    /// Believed only from `trusted_proxies`.
    pub real_ip_header: String,
    /// Addresses (IPs or CIDR blocks) of the reverse proxies whose
    /// `real_ip_header`, `X-Forwarded-Proto` and `X-Forwarded-Host` are
    /// believed.
    pub trusted_proxies: Vec<String>,
    /// Signature-verify threads; 0 means one per core.
    pub verify_threads: usize,
    /// Concurrent REQ/COUNT queries on the blocking pool; 0 means 2 per core.
    pub query_threads: usize,
    /// Address of the control API (JSON over HTTP): HOST:PORT, `auto`
    /// (relay port + 1, see [`ServerConfig::admin_addr`]) or empty (off).
    pub admin_listen: String,
    /// Bearer token of the control API; empty means a random one generated
    /// into `<data_dir>/admin.token` (mode 0600) at first start.
    pub admin_token: String,
    /// Seconds a connection has to send each request's headers (both
    /// listeners); slower and idle connections are closed.
    pub header_timeout_secs: u64,
    /// Seconds a request body may pause between chunks before the request
    /// fails and the connection is closed.
    pub body_timeout_secs: u64,
    /// Where `GET /metrics` is served: "relay" (the relay listener, no
    /// credentials) or "admin" (only the control listener, behind the
    /// admin token).
    pub metrics_on: String,
    /// Negotiate WebSocket permessage-deflate (RFC 7692) with relay clients
    /// that offer it, and offer it to peers in the sync client.
    pub permessage_deflate: bool,
    /// Let deflate keep its window between messages (~2× better on events,
    /// ~350 KiB per connection). Off: the relay imposes no context takeover
    /// both ways and shares deflate state in a pool (a few KiB per idle
    /// connection).
    pub deflate_context_takeover: bool,
    /// zlib level of the relay's compression, 1 (fast) to 9. Without
    /// context takeover only high levels gain anything.
    pub deflate_level: u32,
    /// Messages shorter than this many bytes are sent uncompressed. Without
    /// context takeover a small event gains little and costs a deflate
    /// reset, so by default only large frames (NEG-MSG, long content, big
    /// REQ results) are compressed.
    pub deflate_min_size: usize,
}

/// `server.admin_listen`'s default: the control API follows the relay port.
pub const ADMIN_LISTEN_AUTO: &str = "auto";

impl ServerConfig {
    /// The certificate and key the listeners serve, when TLS is on.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        let (cert, key) = (self.tls_cert.trim(), self.tls_key.trim());
        (!cert.is_empty() && !key.is_empty()).then(|| (Path::new(cert), Path::new(key)))
    }

    /// The control API's address, `None` when disabled (`""`). `auto`
    /// (the default) is the relay's port + 1 on loopback (on the relay's
    /// own address when that is a loopback one), so nodes started with
    /// different `--listen` never collide; port 0 stays 0 (any free port).
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.admin_listen.as_str() {
            "" => Ok(None),
            ADMIN_LISTEN_AUTO => {
                let port = match self.listen.port() {
                    0 => 0,
                    port => port.checked_add(1).ok_or_else(|| {
                        ConfigError::Invalid(format!(
                            "server.admin_listen = \"auto\" needs a relay port below 65535 \
                             (server.listen is {}); set server.admin_listen",
                            self.listen
                        ))
                    })?,
                };
                let ip = if self.listen.ip().is_loopback() {
                    self.listen.ip()
                } else {
                    std::net::Ipv4Addr::LOCALHOST.into()
                };
                Ok(Some(SocketAddr::new(ip, port)))
            }
            text => text.parse().map(Some).map_err(|_| {
                ConfigError::Invalid(format!(
                    "server.admin_listen must be HOST:PORT, \"auto\" or empty, got {text:?}"
                ))
            }),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7777)),
            relay_url: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_roots: String::new(),
            real_ip_header: String::new(),
            trusted_proxies: vec!["127.0.0.1".into(), "::1".into()],
            verify_threads: 0,
            query_threads: 0,
            admin_listen: ADMIN_LISTEN_AUTO.into(),
            admin_token: String::new(),
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            metrics_on: "relay".into(),
            permessage_deflate: true,
            deflate_context_takeover: false,
            deflate_level: 6,
            deflate_min_size: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory holding the LMDB files.
    pub data_dir: PathBuf,
    /// Initial LMDB map size in MiB.
    pub map_size_mb: u64,
    /// The map doubles when full, up to this many MiB; past it writers get
    /// `error: database is full`.
    pub max_map_size_mb: u64,
    /// Most events committed in one write transaction.
    pub max_batch: usize,
    /// Milliseconds a busy writer (its previous batch was big) waits for
    /// more events before committing; 0 commits at once.
    pub commit_linger_ms: u64,
    /// Seconds between purges of expired (NIP-40) events.
    pub purge_interval_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("./data"),
            map_size_mb: 1024,
            max_map_size_mb: 1024 * 1024,
            max_batch: 10_000,
            commit_linger_ms: 10,
            purge_interval_secs: 60,
        }
    }
}

/// The NIP-11 relay information document.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfoConfig {
    pub name: String,
    pub description: String,
    /// Operator's hex pubkey.
    pub pubkey: String,
    pub contact: String,
    pub icon: String,
}

impl Default for InfoConfig {
    fn default() -> Self {
        InfoConfig {
            name: "echorelay".into(),
            description: "A set-reconciliation Nostr relay".into(),
            pubkey: String::new(),
            contact: String::new(),
            icon: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest client message answered normally; a bigger one is refused in
    /// the form its sender waits for (OK false, CLOSED, NEG-ERR). WebSocket
    /// messages over 4× this (or over `max_negentropy_message_size`, if
    /// larger) close the connection with code 1009.
    pub max_message_size: usize,
    /// Largest NEG-OPEN / NEG-MSG: a client without a frame size limit
    /// sends messages of several MB in a big reconciliation.
    pub max_negentropy_message_size: usize,
    pub max_subscriptions: usize,
    pub max_filters: usize,
    /// Largest `limit` honoured; also used when a filter has none. Filters
    /// with `ids` are not cut by it: every requested stored id is returned.
    pub max_limit: u64,
    /// Most ids one filter may list (CLOSED `invalid:` past it).
    pub max_ids_per_filter: usize,
    pub max_subid_length: usize,
    /// Bytes queued to one connection before it is dropped as a slow reader.
    pub max_pending_outbound_bytes: usize,
    /// Bytes of EVENTs (relay-wide) read but not yet committed; past it,
    /// connections stop reading until commits catch up.
    pub max_ingest_bytes: usize,
    pub max_connections_per_ip: usize,
    /// EVENT messages per second per IP (0: unlimited), and the burst.
    pub events_per_second: u32,
    pub events_burst: u32,
    /// REQ and COUNT messages per second per IP (0: unlimited), and the burst.
    pub reqs_per_second: u32,
    pub reqs_burst: u32,
    /// The hard ceiling of the rate limits: a connection over its rate is
    /// paused (not read) until the limiter allows its next message; one
    /// that would wait longer than this many milliseconds gets
    /// `rate-limited:` instead. 0: refuse at once, never pause.
    pub max_pace_ms: u64,
    /// Milliseconds a COUNT may walk the indexes (one that a fingerprint
    /// tree answers takes microseconds); past it the client gets CLOSED.
    pub count_budget_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_size: 512 * 1024,
            max_negentropy_message_size: 8 * 1024 * 1024,
            max_subscriptions: 200,
            max_filters: 32,
            max_limit: 500,
            max_ids_per_filter: 5000,
            max_subid_length: 64,
            max_pending_outbound_bytes: 32 * 1024 * 1024,
            max_ingest_bytes: 64 * 1024 * 1024,
            max_connections_per_ip: 200,
            events_per_second: 500,
            events_burst: 2000,
            reqs_per_second: 100,
            reqs_burst: 400,
            max_pace_ms: 5000,
            count_budget_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Largest accepted event, in bytes of its JSON.
    pub max_event_size: usize,
    /// Longest accepted `content`, in characters (0: bounded only by
    /// `max_event_size`). NIP-11 shows it only when set.
    pub max_content_length: usize,
    pub max_tags: usize,
    /// How far in the future created_at may be, in seconds.
    pub max_future_seconds: u64,
    /// How far in the past created_at may be, in seconds (0: no limit).
    pub max_past_seconds: u64,
    /// When non-empty, only these hex pubkeys may publish.
    pub pubkey_allow: Vec<String>,
    pub pubkey_deny: Vec<String>,
    /// When non-empty, only these kinds are accepted.
    pub kind_allow: Vec<u16>,
    pub kind_deny: Vec<u16>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            max_event_size: 64 * 1024,
            max_content_length: 0,
            max_tags: 2000,
            max_future_seconds: 900,
            max_past_seconds: 0,
            pubkey_allow: Vec::new(),
            pubkey_deny: Vec::new(),
            kind_allow: Vec::new(),
            kind_deny: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// EVENT needs a NIP-42 authenticated connection.
    pub require_for_write: bool,
    /// REQ / COUNT need a NIP-42 authenticated connection.
    pub require_for_read: bool,
    /// Kinds served only to their author or a `p`-tagged recipient.
    pub restricted_kinds: Vec<u16>,
    /// Node keys (hex pubkeys) of the mesh: connections authenticated as one
    /// of them, or as this node, may read and write graph and echo events.
    pub trusted_nodes: Vec<String>,
    /// Bearer tokens of the HTTP APIs, as `{ user = "...", sha256 = "..." }`
    /// (`echorelay token add` keeps tokens in the data dir instead).
    pub tokens: Vec<TokenConfig>,
    /// Pubkeys (hex) that may use the HTTP APIs with NIP-98; mesh nodes
    /// always may.
    pub nip98_pubkeys: Vec<String>,
    /// Users' access to echo nodes that another user created.
    pub echo_grants: Vec<EchoGrant>,
}

/// One user's access to an echo node another user pushed first.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EchoGrant {
    pub node_id: String,
    pub user: String,
    #[serde(default)]
    pub access: EchoAccess,
}

/// What a grant allows: `read` (pull, status) or `write` (push too).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum EchoAccess {
    #[default]
    Read,
    Write,
}

/// One configured bearer token: only its sha256 is written down.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub user: String,
    /// sha256 of the token, 64 hex characters.
    pub sha256: String,
    /// Unix seconds after which the token is refused (0: never).
    #[serde(default)]
    pub expires_at: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            require_for_write: false,
            require_for_read: false,
            restricted_kinds: vec![4, 1059],
            trusted_nodes: Vec::new(),
            tokens: Vec::new(),
            nip98_pubkeys: Vec::new(),
            echo_grants: Vec::new(),
        }
    }
}

/// NIP-77 negentropy on the relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NegentropyConfig {
    /// Serve NEG-OPEN / NEG-MSG / NEG-CLOSE (and list NIP-77 in NIP-11).
    pub enabled: bool,
    /// Largest reply frame in bytes (0: none, else at least 4096). Every cut
    /// costs a pass over the rest of the set, so keep it well above 60 kB.
    /// The default is strfry's 500 kB: its hex NEG-MSG (~1 000 030 bytes)
    /// still fits a client whose WebSocket cap is 1 MiB.
    pub frame_size_limit: usize,
    /// Most events a session built from a query may hold; above it the
    /// client gets `blocked: too many query results`.
    pub max_sync_events: usize,
    pub max_sessions_per_connection: usize,
    /// Sessions without a message for this long are closed (`closed:`).
    pub idle_timeout_secs: u64,
    /// Maintain fingerprint trees ({} and added scopes) in every write
    /// batch. Off: every NEG-OPEN builds a vector from a query.
    pub trees: bool,
}

impl Default for NegentropyConfig {
    fn default() -> Self {
        NegentropyConfig {
            enabled: true,
            frame_size_limit: 500_000,
            max_sync_events: 1_000_000,
            max_sessions_per_connection: 8,
            idle_timeout_secs: 300,
            trees: true,
        }
    }
}

impl Config {
    /// Loads `path` over the embedded defaults, or just the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                })?
            }
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.server.admin_addr()?;
        if !matches!(self.server.metrics_on.as_str(), "relay" | "admin") {
            return Err(ConfigError::Invalid(format!(
                "server.metrics_on must be \"relay\" or \"admin\", not {:?}",
                self.server.metrics_on
            )));
        }
        if self.server.tls_cert.trim().is_empty() != self.server.tls_key.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "server.tls_cert and server.tls_key are set together (or neither)".into(),
            ));
        }
        crate::relay::origin::Origins::new(&self.server).map_err(ConfigError::Invalid)?;
        for peer in &self.peers {
            crate::peers::PeerSpec::parse(peer).map_err(ConfigError::Invalid)?;
        }
        let hex_ok = |k: &String| crate::event::decode_hex::<32>(k).is_some();
        for token in &self.auth.tokens {
            if !hex_ok(&token.sha256) || token.user.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "auth.tokens: each needs a user and a 64-character hex sha256 (user {:?})",
                    token.user
                )));
            }
        }
        for key in self
            .policy
            .pubkey_allow
            .iter()
            .chain(&self.policy.pubkey_deny)
            .chain(&self.auth.trusted_nodes)
            .chain(&self.auth.nip98_pubkeys)
        {
            if !hex_ok(key) {
                return Err(ConfigError::Invalid(format!(
                    "policy pubkey lists and auth.trusted_nodes need 64-character lowercase hex keys, got {key:?}"
                )));
            }
        }
        if self.store.map_size_mb == 0 || self.store.max_map_size_mb < self.store.map_size_mb {
            return Err(ConfigError::Invalid(
                "store.map_size_mb must be > 0 and <= store.max_map_size_mb".into(),
            ));
        }
        if self.limits.max_pace_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "limits.max_pace_ms must be at most 60000 (a minute)".into(),
            ));
        }
        if !(1..=9).contains(&self.server.deflate_level) {
            return Err(ConfigError::Invalid(
                "server.deflate_level must be 1 to 9".into(),
            ));
        }
        let frame = self.negentropy.frame_size_limit;
        if frame != 0 && frame < 4096 {
            return Err(ConfigError::Invalid(
                "negentropy.frame_size_limit must be 0 or at least 4096".into(),
            ));
        }
        if self.limits.max_message_size < 1024 {
            return Err(ConfigError::Invalid(
                "limits.max_message_size must be >= 1024".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.server.listen, ServerConfig::default().listen);
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<Config>("[server]\nlistn = \"x\"").is_err());
    }
}
