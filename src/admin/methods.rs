//! The methods of the control API, named and shaped as in seed 003's
//! `NegentropyService` (field names in snake_case as in its messages).
//! Replies that the seed leaves empty are `{}`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{Admin, ApiError};
use crate::config::{PeerConfig, MAX_PEER_INTERVAL_SECS};
use crate::filter::Filter;
use crate::sync::{Direction, Progress, SyncRequest};

/// One method: its name in the path and whether GET may call it.
pub(super) struct MethodSpec {
    pub name: &'static str,
    pub read_only: bool,
}

const METHODS: &[MethodSpec] = &[
    MethodSpec {
        name: "Ready",
        read_only: true,
    },
    MethodSpec {
        name: "Start",
        read_only: false,
    },
    MethodSpec {
        name: "Stop",
        read_only: false,
    },
    MethodSpec {
        name: "GetSyncStatus",
        read_only: true,
    },
    MethodSpec {
        name: "GetPeers",
        read_only: true,
    },
    MethodSpec {
        name: "AddPeer",
        read_only: false,
    },
    MethodSpec {
        name: "RemovePeer",
        read_only: false,
    },
    MethodSpec {
        name: "TriggerSync",
        read_only: false,
    },
    MethodSpec {
        name: "GetPeerSyncState",
        read_only: false,
    },
    MethodSpec {
        name: "ListSessions",
        read_only: true,
    },
    MethodSpec {
        name: "CloseSession",
        read_only: false,
    },
    MethodSpec {
        name: "SyncWithPeer",
        read_only: false,
    },
    MethodSpec {
        name: "ListGraphs",
        read_only: true,
    },
    MethodSpec {
        name: "MoveGraph",
        read_only: false,
    },
    MethodSpec {
        name: "GetGraphConflicts",
        read_only: false,
    },
];

pub(super) fn find(name: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|m| m.name == name)
}

/// A request, checked and typed before anything acts on it.
#[derive(Debug)]
pub enum Call {
    Ready,
    Start,
    Stop,
    GetSyncStatus,
    GetPeers,
    AddPeer(PeerConfig),
    RemovePeer(String),
    TriggerSync {
        peer_url: Option<String>,
        filter: Option<Filter>,
    },
    GetPeerSyncState(String),
    ListSessions,
    CloseSession {
        subscription_id: String,
        connection_id: Option<String>,
    },
    SyncWithPeer(String, SyncRequest),
    ListGraphs,
    MoveGraph {
        graph_id: String,
        to: String,
        force: bool,
    },
    GetGraphConflicts(String),
}

impl Call {
    /// Parses a request body (a JSON object; empty means `{}`) for `method`.
    pub fn parse(method: &str, body: &[u8]) -> Result<Call, ApiError> {
        let args = &super::parse_body(body)?;
        Ok(match method {
            "Ready" => Call::Ready,
            "Start" => Call::Start,
            "Stop" => Call::Stop,
            "GetSyncStatus" => Call::GetSyncStatus,
            "GetPeers" => Call::GetPeers,
            "AddPeer" => Call::AddPeer(peer_config(args)?),
            "RemovePeer" => Call::RemovePeer(peer_url(args)?.to_string()),
            "TriggerSync" => Call::TriggerSync {
                peer_url: optional_str(args, "peer_url")?
                    .filter(|u| !u.is_empty())
                    .map(str::to_string),
                filter: optional_filter(args)?,
            },
            "GetPeerSyncState" => Call::GetPeerSyncState(peer_url(args)?.to_string()),
            "ListSessions" => Call::ListSessions,
            "CloseSession" => Call::CloseSession {
                subscription_id: optional_str(args, "subscription_id")?
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| ApiError::bad_request("subscription_id is required"))?
                    .to_string(),
                connection_id: optional_str(args, "connection_id")?
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            },
            "SyncWithPeer" => Call::SyncWithPeer(peer_url(args)?.to_string(), sync_request(args)?),
            "ListGraphs" => Call::ListGraphs,
            "MoveGraph" => Call::MoveGraph {
                graph_id: required_str(args, "graph_id")?,
                to: required_str(args, "to")?,
                force: match args.get("force") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(ApiError::bad_request("force must be true or false")),
                },
            },
            "GetGraphConflicts" => Call::GetGraphConflicts(required_str(args, "graph_id")?),
            other => return Err(ApiError::not_found(format!("unknown endpoint: {other}"))),
        })
    }
}

pub(super) async fn dispatch(admin: &Arc<Admin>, call: Call) -> Response {
    let result = match call {
        Call::Ready => Ok(json!({ "ready": true })),
        Call::Start => {
            admin.sync.set_active(true);
            Ok(json!({}))
        }
        Call::Stop => {
            admin.sync.set_active(false);
            Ok(json!({}))
        }
        Call::GetSyncStatus => Ok(sync_status(admin)),
        Call::GetPeers => Ok(json!({
            "peers": admin.sync.peer_urls(),
            "peer_configs": admin.sync.peer_configs(),
        })),
        Call::AddPeer(config) => add_peer(admin, &config),
        Call::RemovePeer(url) => remove_peer(admin, &url),
        Call::TriggerSync { peer_url, filter } => trigger_sync(admin, peer_url.as_deref(), filter),
        Call::GetPeerSyncState(url) => Ok(peer_sync_state(admin, &url)),
        Call::ListSessions => Ok(json!({ "sessions": admin.relay.neg_directory.list() })),
        Call::CloseSession {
            subscription_id,
            connection_id,
        } => close_session(admin, &subscription_id, connection_id.as_deref()),
        Call::SyncWithPeer(url, request) => return sync_with_peer(admin, url, request),
        Call::ListGraphs => super::graphs::list(admin).await,
        Call::MoveGraph {
            graph_id,
            to,
            force,
        } => super::graphs::move_home(admin, &graph_id, &to, force).await,
        Call::GetGraphConflicts(graph_id) => super::graphs::conflicts(admin, &graph_id).await,
    };
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => e.into_response(),
    }
}

fn sync_status(admin: &Admin) -> Value {
    let states = admin.sync.states();
    json!({
        "active": admin.sync.is_active(),
        "last_sync": states.iter().map(|s| s.last_sync).max().unwrap_or(0),
        "peer_count": states.len(),
        "peer_states": states,
        "node_pubkey": admin.node_pubkey,
    })
}

fn peer_config(args: &Value) -> Result<PeerConfig, ApiError> {
    let url = peer_url(args)?;
    let defaults: PeerConfig = serde_json::from_value(json!({ "url": url }))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let dir = optional_str(args, "dir")?.unwrap_or(&defaults.dir);
    dir.parse::<Direction>().map_err(ApiError::bad_request)?;
    Ok(PeerConfig {
        dir: dir.to_string(),
        filter: match optional_filter(args)? {
            Some(filter) => filter.to_value().to_string(),
            None => defaults.filter.clone(),
        },
        interval_secs: match args.get("interval_secs") {
            None | Some(Value::Null) => defaults.interval_secs,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=MAX_PEER_INTERVAL_SECS).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "interval_secs must be an integer in 1..={MAX_PEER_INTERVAL_SECS}"
                    ))
                })?,
        },
        live: match args.get("live") {
            None | Some(Value::Null) => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| ApiError::bad_request("live must be true or false"))?,
        },
        pubkey: match optional_str(args, "pubkey")? {
            None | Some("") => None,
            Some(key) if crate::event::decode_hex::<32>(key).is_some() => Some(key.to_string()),
            Some(_) => return Err(ApiError::bad_request("pubkey must be 64 hex characters")),
        },
        url: url.to_string(),
    })
}

fn add_peer(admin: &Arc<Admin>, config: &PeerConfig) -> Result<Value, ApiError> {
    if admin.sync.peer_urls().contains(&config.url) {
        return Err(ApiError(
            axum::http::StatusCode::CONFLICT,
            format!("peer {} is already configured", config.url),
        ));
    }
    admin.sync.add_peer(config).map_err(ApiError::bad_request)?;
    Ok(json!({}))
}

fn remove_peer(admin: &Admin, url: &str) -> Result<Value, ApiError> {
    if !admin.sync.remove_peer(url) {
        return Err(ApiError::not_found(format!("unknown peer: {url}")));
    }
    Ok(json!({}))
}

fn trigger_sync(
    admin: &Admin,
    url: Option<&str>,
    filter: Option<Filter>,
) -> Result<Value, ApiError> {
    if !admin.sync.trigger(url, filter) {
        return Err(ApiError::not_found(format!(
            "unknown peer: {}",
            url.unwrap_or_default()
        )));
    }
    Ok(json!({}))
}

fn peer_sync_state(admin: &Admin, url: &str) -> Value {
    match admin.sync.states().into_iter().find(|s| s.peer_url == url) {
        Some(state) => json!({ "state": state, "found": true }),
        None => json!({ "found": false }),
    }
}

fn close_session(admin: &Admin, sub_id: &str, connection: Option<&str>) -> Result<Value, ApiError> {
    match admin.relay.neg_directory.close(sub_id, connection) {
        0 => Err(ApiError::not_found(format!("no open session {sub_id}"))),
        closed => Ok(json!({ "closed": closed })),
    }
}

fn sync_request(args: &Value) -> Result<SyncRequest, ApiError> {
    let since = match args.get("since") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(0) => None,
            Some(n) => Some(n),
            None => return Err(ApiError::bad_request("since must be a unix timestamp")),
        },
    };
    let direction = optional_str(args, "dir")?
        .map(str::parse::<Direction>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    Ok(SyncRequest {
        filter: optional_filter(args)?,
        since,
        direction,
    })
}

/// Runs a sync now and streams its progress records, one JSON object per
/// line; the last one has `complete: true` or an `error`.
fn sync_with_peer(admin: &Arc<Admin>, url: String, request: SyncRequest) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let sync = admin.sync.clone();
    tokio::spawn(async move {
        let mut last = Progress {
            peer_url: url.clone(),
            ..Progress::default()
        };
        let result = sync
            .sync_now(&url, request, |p| {
                last = p.clone();
                let _ = tx.send(progress_line(p));
            })
            .await;
        if let Err(e) = result {
            last.complete = false;
            last.error = Some(e.to_string());
            let _ = tx.send(progress_line(&last));
        }
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        Some((Ok::<_, Infallible>(Bytes::from(line)), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

fn progress_line(progress: &Progress) -> String {
    let mut line = serde_json::to_string(progress).unwrap_or_default();
    line.push('\n');
    line
}

fn peer_url(args: &Value) -> Result<&str, ApiError> {
    let url = optional_str(args, "peer_url")?
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::bad_request("peer_url is required"))?;
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(ApiError::bad_request(format!(
            "peer_url must be ws:// or wss://, got {url:?}"
        )));
    }
    Ok(url)
}

fn required_str(args: &Value, name: &str) -> Result<String, ApiError> {
    optional_str(args, name)?
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))
}

fn optional_str<'a>(args: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

/// `filter` as a NIP-01 filter object, or a string holding one.
fn optional_filter(args: &Value) -> Result<Option<Filter>, ApiError> {
    let parsed = match args.get("filter") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => Filter::from_json(s),
        Some(value @ Value::Object(_)) => Filter::from_value(value),
        Some(_) => return Err(ApiError::bad_request("filter must be a JSON object")),
    };
    parsed
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("filter: {e}")))
}
