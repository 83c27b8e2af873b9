//! The control API's graph methods: `ListGraphs`, `MoveGraph` and
//! `GetGraphConflicts`, over `graph::home`.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::{Admin, ApiError};
use crate::graph::home::{self, MoveError};

/// Runs a read on the blocking pool, mapping store errors to 500.
async fn read<T: Send + 'static>(
    admin: &Admin,
    work: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = admin.relay.store.clone();
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub(super) async fn list(admin: &Arc<Admin>) -> Result<Value, ApiError> {
    Ok(json!({ "graphs": read(admin, home::list).await? }))
}

pub(super) async fn conflicts(admin: &Arc<Admin>, graph: &str) -> Result<Value, ApiError> {
    let id = graph.to_string();
    let found = read(admin, move |store| home::conflicts(store, &id)).await?;
    Ok(json!({ "graph-id": graph, "conflicts": found }))
}

pub(super) async fn move_home(
    admin: &Arc<Admin>,
    graph: &str,
    to: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let relay = &admin.relay;
    home::move_home(
        &relay.store,
        &relay.writer,
        &relay.node_key,
        graph,
        to,
        force,
    )
    .await
    .map_err(|e| {
        let status = match e {
            MoveError::NotFound => StatusCode::NOT_FOUND,
            MoveError::NotMesh(_) | MoveError::AlreadyHome(_) => StatusCode::BAD_REQUEST,
            MoveError::NotHome(_) => StatusCode::CONFLICT,
            MoveError::NotStored(_) | MoveError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    })
}
