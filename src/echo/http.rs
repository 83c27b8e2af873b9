//! `POST /echo/push`, `/echo/pull`, `/echo/status` with the request and
//! response fields of seed 000. Every reply carries `status`
//! (success | conflict | error) and, for push and pull, `sync_id`,
//! `timestamp` and `metrics`; errors also get a 4xx code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::conflicts::Resolved;
use super::states::{self, NodeState};
use super::{time, Echo, EchoCaller};
use crate::config::EchoAccess;

/// Largest request body (a state's data lives in one event).
const MAX_BODY: usize = 1024 * 1024;
/// How far ahead of the clock a state's `created_at` may run (each push of
/// a node moves it on by at least a second, so it replaces the last).
const MAX_AHEAD_SECS: u64 = 60;
/// Longest `options.timeout` a push may wait for acknowledgements (s).
const MAX_CONFIRM_SECS: f64 = 300.0;

/// An error reply: the seed's `status: error` with a message.
pub(super) struct EchoError(StatusCode, String);

impl IntoResponse for EchoError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "message": self.1, "timestamp": time::format(crate::event::now_ms())});
        (self.0, Json(body)).into_response()
    }
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> EchoError {
    EchoError(status, message.into())
}

pub(super) fn new_sync_id() -> String {
    crate::ids::new_uuid()
}

/// The body as a JSON object, with the seed's errors.
pub(super) async fn read_body(body: Body) -> Result<Map<String, Value>, EchoError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        use crate::edge::caused_by;
        if caused_by::<crate::auth::PayloadMismatch>(&e) {
            error(StatusCode::UNAUTHORIZED, e.to_string())
        } else if caused_by::<http_body_util::LengthLimitError>(&e) {
            error(StatusCode::PAYLOAD_TOO_LARGE, "request too large")
        } else {
            error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        }
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON: {e}"),
        )),
    }
}

/// The body and its required `node_id`.
pub(super) async fn body_with_node(body: Body) -> Result<(Map<String, Value>, String), EchoError> {
    let body = read_body(body).await?;
    let node = node_id(&body, true)?
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "node_id is required"))?;
    Ok((body, node))
}

/// A node id or subscriber name: 1 to 256 printable ASCII characters.
pub(super) fn is_name(text: &str) -> bool {
    !text.is_empty() && text.len() <= 256 && text.bytes().all(|b| b.is_ascii_graphic())
}

/// The current state of `node_id` for a caller who may read it: `None` for
/// a node nobody stored; 403 for another user's node, 500 when the store
/// cannot be read.
pub(super) async fn readable(
    echo: &Echo,
    user: &crate::auth::User,
    node_id: &str,
) -> Result<Option<Resolved>, EchoError> {
    let Ok(found) = echo.current(Some(node_id)).await else {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stored state cannot be read",
        ));
    };
    let current = found.into_iter().next();
    let owner = current.as_ref().map_or("", |r| r.winner.owner.as_str());
    match echo.grants.access(user, node_id, owner) {
        Some(_) => Ok(current),
        None => Err(error(
            StatusCode::FORBIDDEN,
            format!("node {node_id} belongs to another user"),
        )),
    }
}

pub(super) fn node_id(
    body: &Map<String, Value>,
    required: bool,
) -> Result<Option<String>, EchoError> {
    match body.get("node_id") {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::String(id)) if is_name(id) => Ok(Some(id.clone())),
        Some(Value::String(id)) if id.is_empty() && !required => Ok(None),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "node_id must be a non-empty string",
        )),
    }
}

/// Checks a pushed `state` and builds the node state it describes.
fn parse_state(node_id: &str, body: &Map<String, Value>) -> Result<NodeState, EchoError> {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, m.to_string());
    let state = body
        .get("state")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("state must be an object"))?;
    let timestamp = state
        .get("timestamp")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("state.timestamp must be an ISO 8601 string"))?;
    time::parse(timestamp).ok_or_else(|| bad("state.timestamp must be an ISO 8601 string"))?;
    let data = state
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("state.data must be an object"))?;
    let meta = state
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("state.metadata must be an object"))?;
    let version = meta
        .get("version")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .ok_or_else(|| bad("metadata.version must be a non-empty string"))?;
    let checksum = meta
        .get("checksum")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("metadata.checksum must be a string"))?;
    let resonance = meta
        .get("resonance_level")
        .and_then(Value::as_f64)
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| bad("metadata.resonance_level must be a number from 0 to 1"))?;
    let options = body.get("options").and_then(Value::as_object);
    let priority = match options
        .and_then(|o| o.get("priority"))
        .or_else(|| meta.get("priority"))
    {
        None | Some(Value::Null) => 5,
        Some(p) => {
            p.as_u64()
                .filter(|p| *p <= 10)
                .ok_or_else(|| bad("priority must be an integer from 0 to 10"))? as u8
        }
    };
    let tags = match meta.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tags)) => tags
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("metadata.tags must be strings"))?,
        Some(_) => return Err(bad("metadata.tags must be strings")),
    };
    Ok(NodeState {
        node_id: node_id.to_string(),
        timestamp: timestamp.to_string(),
        data: data.clone(),
        version: version.to_string(),
        checksum: checksum.to_string(),
        resonance_level: resonance,
        priority,
        tags,
        received_ms: crate::event::now_ms(),
        created_at: crate::event::now(),
        owner: String::new(),
        owned_ms: 0,
        base: String::new(),
        origin: String::new(),
        id: String::new(),
        sync_id: String::new(),
    })
}

pub(super) fn elapsed_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

pub async fn push(
    State(echo): State<Arc<Echo>>,
    EchoCaller(user): EchoCaller,
    body: Body,
) -> Response {
    let started = Instant::now();
    let (body, node_id) = match body_with_node(body).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let force = match body.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return error(StatusCode::BAD_REQUEST, "force must be true or false").into_response()
        }
    };
    let mut state = match parse_state(&node_id, &body) {
        Ok(state) => state,
        Err(e) => return e.into_response(),
    };
    let confirm_within = match confirm_timeout(&body) {
        Ok(wait) => wait,
        Err(e) => return e.into_response(),
    };
    let sync_id = new_sync_id();
    state.sync_id = sync_id.clone();
    let data_size = states::canonical(&state.data).len();
    let reply = |status: &str,
                 message: String,
                 conflicts: Vec<Value>,
                 duration_ms: u64,
                 resonance: f64| {
        json!({
            "status": status,
            "message": message,
            "sync_id": sync_id,
            "conflicts": conflicts,
            "timestamp": time::format(crate::event::now_ms()),
            "metrics": {"duration_ms": duration_ms, "data_size": data_size, "resonance_strength": resonance},
        })
    };
    let refused = |duration: u64, status: StatusCode, message: String| {
        (status, Json(reply("error", message, vec![], duration, 0.0))).into_response()
    };
    let one_push_at_a_time = echo.push_lock.lock().await;
    let Ok(found) = echo.current(Some(&node_id)).await else {
        let message = "the stored state cannot be read".to_string();
        return refused(
            elapsed_ms(started),
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
        );
    };
    let stored = found.into_iter().next().map(|resolved| resolved.winner);
    let owner = stored.as_ref().map_or("", |s| s.owner.as_str());
    if echo.grants.access(&user, &node_id, owner) != Some(EchoAccess::Write) {
        // Not the node's operation: a stranger leaves no trace in its status.
        let message = format!("node {node_id} belongs to another user");
        return refused(elapsed_ms(started), StatusCode::FORBIDDEN, message);
    }
    let op = echo.stats.begin(&node_id, "push", &sync_id, started);
    // A refused push: the operation ends as failed, the reply says why.
    let refuse = |op, status: StatusCode, message: String| {
        refused(echo.stats.finish(op, false), status, message)
    };
    if states::checksum(&state.data) != state.checksum {
        let message = "checksum does not match the sha256 of the canonical data";
        return refuse(op, StatusCode::BAD_REQUEST, message.into());
    }
    // The owner and its epoch carry over; a first claim starts both.
    (state.owner, state.owned_ms) = match stored.as_ref().filter(|s| !s.owner.is_empty()) {
        Some(stored) => (stored.owner.clone(), stored.owned_ms),
        None => (user.id.clone(), 0),
    };
    if let (Some(stored), false) = (&stored, force) {
        if states::compare_versions(&state.version, &stored.version).is_le() {
            let conflicts = state.conflicts_with(stored);
            let duration = echo.stats.finish(op, false);
            let message = format!(
                "version {} does not follow the stored version {}",
                state.version, stored.version
            );
            return (
                StatusCode::CONFLICT,
                Json(reply(
                    "conflict",
                    message,
                    conflicts,
                    duration,
                    stored.resonance_level,
                )),
            )
                .into_response();
        }
    }
    if let Some(stored) = &stored {
        // Pushed on the current state: it supersedes it and every state in
        // conflict with it (none has a higher version).
        state.base = stored.version.clone();
        // The new state must win everywhere: newer received time (pulls,
        // peers) and newer created_at (replaces our own previous event).
        state.received_ms = state.received_ms.max(stored.received_ms + 1);
        state.created_at = state.created_at.max(stored.created_at + 1);
    }
    if state.created_at > crate::event::now() + MAX_AHEAD_SECS {
        let message = "too many pushes for this node in the last minute; retry shortly".to_string();
        return refuse(op, StatusCode::TOO_MANY_REQUESTS, message);
    }
    if state.owned_ms == 0 {
        state.owned_ms = state.received_ms;
    }
    let event = state.to_event(&echo.node_key);
    if event.to_json().len() > echo.max_event_size {
        let message = format!(
            "the state is larger than {} bytes as an event",
            echo.max_event_size
        );
        return refuse(op, StatusCode::PAYLOAD_TOO_LARGE, message);
    }
    let stored_ok = echo.store_event(event).await;
    drop(one_push_at_a_time);
    let duration = echo.stats.finish(op, stored_ok);
    if !stored_ok {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(reply(
                "error",
                "the state could not be stored".into(),
                vec![],
                duration,
                0.0,
            )),
        )
            .into_response();
    }
    let mut success = reply(
        "success",
        format!("state {} of {node_id} stored", state.version),
        vec![],
        duration,
        state.resonance_level,
    );
    if let Some(wait) = confirm_within {
        // The subscribers connected when it committed, and only those.
        let deadline = tokio::time::Instant::now() + wait;
        let confirmed = echo.deliveries.confirmation(&sync_id, &user.id, deadline);
        success["confirmed_by"] = json!(confirmed.await);
    }
    Json(success).into_response()
}

/// A push's `options.timeout`: how long it waits for the change's
/// subscribers to acknowledge (`None`: it returns at commit).
fn confirm_timeout(body: &Map<String, Value>) -> Result<Option<Duration>, EchoError> {
    let timeout = body
        .get("options")
        .and_then(Value::as_object)
        .and_then(|o| o.get("timeout"));
    match timeout {
        None | Some(Value::Null) => Ok(None),
        Some(t) => match t.as_f64() {
            Some(secs) if (0.0..=MAX_CONFIRM_SECS).contains(&secs) => {
                Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
            }
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                format!("options.timeout must be a number of seconds from 0 to {MAX_CONFIRM_SECS}"),
            )),
        },
    }
}

pub async fn status(
    State(echo): State<Arc<Echo>>,
    EchoCaller(user): EchoCaller,
    body: Body,
) -> Response {
    let (body, node_id) = match body_with_node(body).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let sync_id = match body.get("sync_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return error(StatusCode::BAD_REQUEST, "sync_id must be a string").into_response()
        }
    };
    // Only a stored node has a status, and only for those who may read it
    // (statistics of refused or unfinished first pushes answer no one).
    let current = match readable(&echo, &user, &node_id).await {
        Ok(Some(current)) => current,
        Ok(None) => {
            return error(StatusCode::NOT_FOUND, format!("unknown node {node_id}")).into_response()
        }
        Err(e) => return e.into_response(),
    };
    let (stats, id, wanted) = (echo.stats.clone(), node_id.clone(), sync_id.clone());
    let mut status = tokio::task::spawn_blocking(move || stats.status(&id, wanted.as_deref()))
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            json!({
                "status": "idle",
                "current_operation": null,
                "metrics": {"last_successful_sync": null, "sync_count_24h": 0, "average_duration_ms": 0, "error_rate": 0.0},
            })
        });
    // A change's notification, once its push is over: progress is the share
    // of notified subscribers that acknowledged.
    let notifying = sync_id
        .as_deref()
        .and_then(|id| echo.deliveries.operation(id, &node_id, &user.id));
    if let Some(operation) = notifying {
        if status["current_operation"].is_null() {
            let open = operation["progress"].as_f64().is_some_and(|p| p < 100.0);
            status["status"] = json!(if open { "active" } else { "idle" });
            status["current_operation"] = operation;
        }
    }
    let conflicts = current.conflicts();
    if !conflicts.is_empty() {
        status["conflicts"] = json!(conflicts);
    }
    Json(status).into_response()
}
