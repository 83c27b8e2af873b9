//! The HTTP API of seed 004: health, the graph index (`/graphs`), and the
//! HTTP mirror of the log (`/sync/:graph-id/...`). Keys out are hyphenated;
//! bodies may use either spelling (`graph-name` / `graph_name`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::index::{self, Access, GraphMeta};
use super::log::{self, Origin};
use super::{GraphError, Graphs, SERVER_ERROR};

fn bad_request(message: &'static str) -> Response {
    GraphError(StatusCode::BAD_REQUEST, message).into_response()
}

/// The body as a JSON object, or the seed's `missing body` / `invalid body`.
fn json_body(body: &[u8]) -> Result<Value, GraphError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GraphError(StatusCode::BAD_REQUEST, "missing body"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(GraphError(StatusCode::BAD_REQUEST, "invalid body")),
    }
}

/// A string field under either spelling.
fn field<'a>(body: &'a Value, hyphen: &str) -> Option<&'a Value> {
    body.get(hyphen)
        .or_else(|| body.get(hyphen.replace('-', "_").as_str()))
}

pub async fn health() -> Json<Value> {
    Json(json!({"ok": true}))
}

pub async fn list_graphs(
    State(graphs): State<Arc<Graphs>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, GraphError> {
    let user = graphs.user(&method, &uri, &headers)?;
    let store = graphs.store.clone();
    let all = tokio::task::spawn_blocking(move || index::read(&store, None))
        .await
        .map_err(|_| SERVER_ERROR)?
        .map_err(|_| SERVER_ERROR)?;
    let mine: Vec<Value> = all
        .iter()
        .filter(|g| !g.deleted && g.access(&user.id) == Access::Owner)
        .map(summary)
        .collect();
    Ok(Json(json!({ "graphs": mine })))
}

fn summary(meta: &GraphMeta) -> Value {
    let mut out = json!({
        "graph-id": meta.graph_id,
        "graph-name": meta.graph_name,
        "created-at": meta.created_at,
        "updated-at": meta.updated_at,
    });
    if let Some(version) = &meta.schema_version {
        out["schema-version"] = json!(version);
    }
    out
}

pub async fn create_graph(
    State(graphs): State<Arc<Graphs>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = match graphs.user(&method, &uri, &headers) {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let body = match json_body(&body) {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let name = match field(&body, "graph-name").and_then(Value::as_str) {
        Some(name) if !name.trim().is_empty() && name.len() <= 1024 => name.to_string(),
        _ => return bad_request("invalid body"),
    };
    let schema_version = match field(&body, "schema-version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 64 => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return bad_request("invalid body"),
    };
    let now = index::now_ms();
    let meta = GraphMeta {
        graph_id: index::new_graph_id(),
        graph_name: name,
        schema_version,
        owner: user.id,
        members: Vec::new(),
        created_at: now,
        updated_at: now,
        deleted: false,
        epoch: 0,
    };
    match graphs.publish_meta(&meta).await {
        Ok(()) => Json(json!({ "graph-id": meta.graph_id })).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn access(
    State(graphs): State<Arc<Graphs>>,
    Path(graph): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, GraphError> {
    let user = graphs.user(&method, &uri, &headers)?;
    graphs.graph_for(&graph, &user).await?;
    Ok(Json(json!({"ok": true})))
}

pub async fn members(
    State(graphs): State<Arc<Graphs>>,
    Path(graph): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, GraphError> {
    let user = graphs.user(&method, &uri, &headers)?;
    let (meta, _) = graphs.graph_for(&graph, &user).await?;
    let mut members = vec![json!({
        "user-id": meta.owner,
        "graph-id": meta.graph_id,
        "role": "manager",
        "invited-by": Value::Null,
        "created-at": meta.created_at,
    })];
    members.extend(meta.members.iter().map(|m| {
        json!({
            "user-id": m.user_id,
            "graph-id": meta.graph_id,
            "role": m.role,
            "invited-by": m.invited_by,
            "created-at": m.created_at,
        })
    }));
    Ok(Json(json!({ "members": members })))
}

pub async fn delete_graph(
    State(graphs): State<Arc<Graphs>>,
    Path(graph): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, GraphError> {
    let user = graphs.user(&method, &uri, &headers)?;
    let (mut meta, access) = graphs.graph_for(&graph, &user).await?;
    if !matches!(access, Access::Owner | Access::Manager) {
        return Err(super::FORBIDDEN);
    }
    meta.deleted = true;
    meta.touch();
    graphs.publish_meta(&meta).await?;
    Ok(Json(json!({"graph-id": meta.graph_id, "deleted": true})))
}

pub async fn sync_health(
    State(graphs): State<Arc<Graphs>>,
    Path(graph): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, GraphError> {
    let user = graphs.user(&method, &uri, &headers)?;
    graphs.graph_for(&graph, &user).await?;
    Ok(Json(json!({"ok": true})))
}

pub async fn pull(
    State(graphs): State<Arc<Graphs>>,
    Path(graph): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let user = match graphs.user(&method, &uri, &headers) {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = graphs.graph_for(&graph, &user).await {
        return e.into_response();
    }
    let since = query.get("since").map(|s| Value::String(s.clone()));
    let Ok(since) = log::parse_since(since.as_ref()) else {
        return bad_request("invalid since");
    };
    match log::pull(&graphs, &graph, since).await {
        Ok(reply) => Json(reply).into_response(),
        Err(_) => SERVER_ERROR.into_response(),
    }
}

pub async fn tx_batch(
    State(graphs): State<Arc<Graphs>>,
    Path(graph): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = match graphs.user(&method, &uri, &headers) {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = graphs.graph_for(&graph, &user).await {
        return e.into_response();
    }
    let body = match json_body(&body) {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let origin = Origin {
        user_id: &user.id,
        client_id: "http",
        socket: None,
    };
    Json(log::tx_batch(&graphs, &graph, &body, origin).await).into_response()
}

pub async fn reset(
    State(graphs): State<Arc<Graphs>>,
    Path(graph): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let user = match graphs.user(&method, &uri, &headers) {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    match graphs.graph_for(&graph, &user).await {
        Ok((_, Access::Owner | Access::Manager)) => {}
        Ok(_) => return super::FORBIDDEN.into_response(),
        Err(e) => return e.into_response(),
    };
    match reset_log(&graphs, &graph).await {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Resets a graph's log: a new index event with the next epoch, which
/// removes the older txs here and on every node it reaches.
pub(super) async fn reset_log(graphs: &Arc<Graphs>, graph: &str) -> Result<(), GraphError> {
    let store = graphs.store.clone();
    let id = graph.to_string();
    let found = tokio::task::spawn_blocking(move || {
        let metas = index::read(&store, Some(&id))?;
        let txn = store.read_txn()?;
        Ok::<_, crate::store::StoreError>((metas, store.graph_state(&txn, &id)?))
    })
    .await;
    let Ok(Ok((metas, state))) = found else {
        return Err(SERVER_ERROR);
    };
    let mut meta = metas
        .into_iter()
        .find(|m| m.graph_id == graph && !m.deleted)
        .ok_or(super::NOT_FOUND)?;
    // The graph's own epoch may be ahead of this index event's (a reset
    // signed by another node): start from the higher one.
    meta.epoch = meta.epoch.max(state.epoch) + 1;
    meta.touch();
    graphs.publish_meta(&meta).await
}
