//! Who sequences a graph, as the operator sees and changes it (`echorelay
//! graph list|move|conflicts`, control API `ListGraphs`, `MoveGraph`,
//! `GetGraphConflicts`).
//!
//! A move appends a term to the graph's `homes`: the new home sequences
//! from this node's head + 1 on. On the home itself that is the whole log,
//! so the new home continues at the next t. With `force`, any mesh node may
//! move a graph whose home is lost; txs the old home sequenced after that
//! point (it may still be accepting, cut off) are then refused on every node
//! that knows the new term and listed as conflicts, for the operator to
//! replay. The term plays the role of an epoch for the home: a returning old
//! home cannot fork the log.

use serde_json::{json, Value};

use super::index::{self, GraphMeta};
use crate::event::Keys;
use crate::store::{HomeTerm, Store, StoreError, WriteOutcome};
use crate::writer::WriterHandle;

/// How often a move is tried while batches keep moving the head.
const MOVE_ATTEMPTS: usize = 20;

/// Why a move was refused.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("unknown or deleted graph")]
    NotFound,
    #[error("{0} is not a node key of the mesh")]
    NotMesh(String),
    #[error("this node is not the graph's home ({0}); use --force if that node is lost")]
    NotHome(String),
    #[error("{0} is already the graph's home")]
    AlreadyHome(String),
    #[error("the new index event was not stored: {0}")]
    NotStored(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// One graph as `graph list` shows it.
fn summary(meta: &GraphMeta, t: u64) -> Value {
    json!({
        "graph-id": meta.graph_id,
        "graph-name": meta.graph_name,
        "home": meta.home(),
        "term": meta.homes.len().saturating_sub(1),
        "t": t,
        "epoch": meta.epoch,
        "deleted": meta.deleted,
    })
}

/// Every graph with its home, term, head and reset epoch.
pub fn list(store: &Store) -> Result<Vec<Value>, StoreError> {
    let metas = index::read(store, None)?;
    let txn = store.read_txn()?;
    metas
        .iter()
        .map(|meta| Ok(summary(meta, store.graph_t(&txn, &meta.graph_id)?)))
        .collect()
}

/// Txs refused because a former home sequenced them after the graph moved.
pub fn conflicts(store: &Store, graph: &str) -> Result<Vec<Value>, StoreError> {
    let txn = store.read_txn()?;
    Ok(store
        .graph_conflicts(&txn, graph)?
        .iter()
        .map(|event| {
            let tag = |name: &str| event.tag_values(name).next().unwrap_or("").to_string();
            json!({
                "id": event.id_hex(),
                "t": crate::store::t_of(event),
                "term": crate::store::term_of(event),
                "home": hex::encode(event.pubkey),
                "author": tag("author"),
                "client": tag("client"),
                "tx": event.content,
            })
        })
        .collect())
}

/// Hands `graph` to the node `to` (hex key); see the module doc.
pub async fn move_home(
    store: &std::sync::Arc<Store>,
    writer: &WriterHandle,
    node_key: &Keys,
    graph: &str,
    to: &str,
    force: bool,
) -> Result<Value, MoveError> {
    let to_key = crate::event::decode_hex::<32>(to)
        .filter(|key| store.mesh().is_member(key))
        .ok_or_else(|| MoveError::NotMesh(to.to_string()))?;
    // The head handed over is the head when the move is stored: a batch
    // committed in between makes the writer refuse it, and it is tried again.
    for _ in 0..MOVE_ATTEMPTS {
        let (reader, id) = (store.clone(), graph.to_string());
        let (meta, head) = tokio::task::spawn_blocking(move || {
            let meta = index::read(&reader, Some(&id))?
                .into_iter()
                .find(|m| m.graph_id == id && !m.deleted);
            let txn = reader.read_txn()?;
            Ok::<_, StoreError>((meta, reader.graph_t(&txn, &id)?))
        })
        .await
        .map_err(|e| MoveError::NotStored(e.to_string()))??;
        let mut meta = meta.ok_or(MoveError::NotFound)?;
        let current = meta.home().unwrap_or_default().to_string();
        if current == hex::encode(to_key) {
            return Err(MoveError::AlreadyHome(current));
        }
        if !force && current != hex::encode(node_key.public_key()) {
            return Err(MoveError::NotHome(current));
        }
        meta.homes.push(HomeTerm {
            node: hex::encode(to_key),
            from_t: head + 1,
        });
        meta.touch();
        let event = meta.to_event(node_key);
        match writer.write_if_head(event, graph.to_string(), head).await {
            WriteOutcome::Stored { .. } => {
                return Ok(json!({
                    "graph-id": meta.graph_id,
                    "home": meta.home(),
                    "term": meta.homes.len() - 1,
                    "from-t": head + 1,
                }))
            }
            WriteOutcome::HeadMoved => continue,
            other => return Err(MoveError::NotStored(format!("{other:?}"))),
        }
    }
    Err(MoveError::NotStored(
        "the log kept moving; try again".into(),
    ))
}
