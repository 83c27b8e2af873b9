//! The HTTP API of seed 004: health, the graph index (`/graphs`), and the
//! HTTP mirror of the log (`/sync/:graph-id/...`). Keys out are hyphenated;
//! bodies may use either spelling (`graph-name` / `graph_name`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::index::{self, Access, GraphMeta};
use super::log::{self, Origin};
use super::messages::ServerMessage;
use super::{Caller, GraphCaller, GraphError, Graphs, SERVER_ERROR};

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
    Caller(user): Caller,
) -> Result<Json<Value>, GraphError> {
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
    Caller(user): Caller,
    body: Bytes,
) -> Result<Json<Value>, GraphError> {
    let invalid = GraphError(StatusCode::BAD_REQUEST, "invalid body");
    let body = json_body(&body)?;
    let name = match field(&body, "graph-name").and_then(Value::as_str) {
        Some(name) if !name.trim().is_empty() && name.len() <= 1024 => name.to_string(),
        _ => return Err(invalid),
    };
    let schema_version = match field(&body, "schema-version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 64 => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(invalid),
    };
    let now = crate::event::now_ms();
    let meta = GraphMeta {
        graph_id: crate::ids::new_uuid(),
        graph_name: name,
        schema_version,
        owner: user.id,
        members: Vec::new(),
        created_at: now,
        updated_at: now,
        deleted: false,
        epoch: 0,
        reset_at: 0,
        reset_t: 0,
        homes: vec![crate::store::HomeTerm {
            node: hex::encode(graphs.node_key.public_key()),
            from_t: 1,
        }],
    };
    graphs.publish_meta(&meta).await?;
    Ok(Json(json!({ "graph-id": meta.graph_id })))
}

/// `GET /graphs/:id/access` and `GET /sync/:id/health`: the extractor
/// already answered 401 / 403 / 404.
pub async fn ok(_caller: GraphCaller) -> Json<Value> {
    Json(json!({"ok": true}))
}

pub async fn members(caller: GraphCaller) -> Json<Value> {
    let meta = caller.meta;
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
    Json(json!({ "members": members }))
}

/// Owner or manager, else 403.
pub(super) fn manage(access: Access) -> Result<(), GraphError> {
    match access {
        Access::Owner | Access::Manager => Ok(()),
        _ => Err(super::FORBIDDEN),
    }
}

pub async fn delete_graph(
    State(graphs): State<Arc<Graphs>>,
    caller: GraphCaller,
) -> Result<Json<Value>, GraphError> {
    manage(caller.access)?;
    let mut meta = caller.meta;
    meta.deleted = true;
    meta.touch();
    graphs.publish_meta(&meta).await?;
    Ok(Json(json!({"graph-id": meta.graph_id, "deleted": true})))
}

pub async fn pull(
    State(graphs): State<Arc<Graphs>>,
    caller: GraphCaller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<ServerMessage>, GraphError> {
    let since = query.get("since").map(|s| Value::String(s.clone()));
    let since = super::messages::since(since.as_ref())
        .ok_or(GraphError(StatusCode::BAD_REQUEST, "invalid since"))?;
    log::pull(&graphs, &caller.graph, since)
        .await
        .map(Json)
        .map_err(|_| SERVER_ERROR)
}

pub async fn tx_batch(
    State(graphs): State<Arc<Graphs>>,
    caller: GraphCaller,
    body: Bytes,
) -> Result<Json<ServerMessage>, GraphError> {
    let body = json_body(&body)?;
    // A mesh node forwards its user's batch and names that user and client.
    let forwarded = caller.user.mesh_node;
    let named = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|_| forwarded)
            .map(|v| v.chars().take(256).collect::<String>())
    };
    let (user_id, client_id) = (named("author"), named("client"));
    let origin = Origin {
        user_id: user_id.as_deref().unwrap_or(&caller.user.id),
        client_id: client_id.as_deref().unwrap_or("http"),
        socket: None,
        forwarded,
    };
    Ok(Json(
        log::tx_batch(&graphs, &caller.graph, &body, origin).await,
    ))
}

pub async fn reset(
    State(graphs): State<Arc<Graphs>>,
    caller: GraphCaller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, GraphError> {
    manage(caller.access)?;
    // A mesh node forwarding a reset keeps this node's rows (its own were
    // the ones to clear) and needs the reset's time for its snapshot.
    let forwarded = caller.user.mesh_node && query.get("rows").map(String::as_str) == Some("keep");
    let reset_at = reset_log(&graphs, &caller.graph, !forwarded, forwarded).await?;
    if forwarded {
        return Ok(Json(json!({"ok": true, "reset-at": reset_at})));
    }
    Ok(Json(json!({"ok": true})))
}

/// Drops a graph's snapshot rows (through the writer, like every write).
async fn clear_kv_rows(graphs: &Graphs, graph: &str) -> Result<(), GraphError> {
    let op = crate::store::Bookkeeping::KvRows {
        graph: graph.to_string(),
        rows: Vec::new(),
        clear_first: true,
    };
    match graphs.writer.record(op).await {
        crate::store::WriteOutcome::Recorded => Ok(()),
        _ => Err(SERVER_ERROR),
    }
}

/// Resets a graph's log: a new index event with the next epoch, which
/// removes the older txs here and on every node it reaches.
/// With `clear_rows` the graph's snapshot rows go too (an admin reset; a
/// reset snapshot upload has just replaced them). Snapshots uploaded before
/// the reset are no longer offered for download.
/// `forwarded`: asked by a mesh node that thinks this node is the home; if
/// it is not, the reset is refused rather than sent on again.
pub(super) async fn reset_log(
    graphs: &Arc<Graphs>,
    graph: &str,
    clear_rows: bool,
    forwarded: bool,
) -> Result<u64, GraphError> {
    let place = log::position(graphs, graph)
        .await
        .map_err(|_| SERVER_ERROR)?;
    let me = hex::encode(graphs.node_key.public_key());
    let home = place
        .homes
        .last()
        .map(|h| h.node.clone())
        .unwrap_or_default();
    if home != me && forwarded {
        return Err(super::HOME_UNREACHABLE);
    }
    if home != me {
        // Only the home knows the head a reset is made at (`reset-t`).
        if clear_rows {
            clear_kv_rows(graphs, graph).await?;
        }
        return super::forward::reset(graphs, graph, &home)
            .await
            .map_err(|why| {
                tracing::info!(graph, home, error = why, "reset not forwarded");
                super::HOME_UNREACHABLE
            });
    }
    if clear_rows {
        clear_kv_rows(graphs, graph).await?;
    }
    let store = graphs.store.clone();
    let id = graph.to_string();
    let found = tokio::task::spawn_blocking(move || {
        let metas = index::read(&store, Some(&id))?;
        let txn = store.read_txn()?;
        let state = store.graph_state(&txn, &id)?;
        Ok::<_, crate::store::StoreError>((metas, state, store.graph_t(&txn, &id)?))
    })
    .await;
    let Ok(Ok((metas, state, head))) = found else {
        return Err(SERVER_ERROR);
    };
    let mut meta = metas
        .into_iter()
        .find(|m| m.graph_id == graph && !m.deleted)
        .ok_or(super::NOT_FOUND)?;
    // The graph's own epoch may be ahead of this index event's (a reset
    // signed by another node): start from the higher one.
    meta.epoch = meta.epoch.max(state.epoch) + 1;
    // Positions up to here count as filled everywhere, even on a node that
    // never received some of the txs the reset removes.
    meta.reset_t = meta.reset_t.max(head);
    meta.touch();
    meta.reset_at = meta.updated_at;
    graphs.publish_meta(&meta).await?;
    Ok(meta.reset_at)
}
