//! A graph's log as the protocol sees it: `pull` and `tx/batch`, shared by
//! the WebSocket and the HTTP mirror. Only the graph's home sequences: on
//! any other node a batch is forwarded to the home (`forward.rs`). On the
//! home a batch is checked in the seed's order — invalid t-before, stale,
//! empty tx data, invalid tx — then each tx becomes a kind-4071 event signed
//! by the node key carrying its `t` and the home's `term`, and the writer
//! appends them in one transaction only if the log is still at `t-before`.

use std::sync::Arc;

use serde_json::Value;

use super::messages::{PulledTx, ServerMessage};
use super::Graphs;
use crate::event::Event;
use crate::mesh::GRAPH_TX_KIND;
use crate::store::{GraphBatchOutcome, WriteOutcome};

/// Most txs (and tx bytes) in one pull reply; the reply's `t` then says
/// where it stopped.
const PULL_MAX: usize = 10_000;
const PULL_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Most txs in one batch.
const BATCH_MAX: usize = 10_000;

/// The `pull/ok` reply for txs after `since`.
pub async fn pull(graphs: &Arc<Graphs>, graph: &str, since: u64) -> Result<ServerMessage, String> {
    let (store, graph) = (graphs.store.clone(), graph.to_string());
    tokio::task::spawn_blocking(move || {
        let txn = store.read_txn()?;
        let current = store.graph_t(&txn, &graph)?;
        let txs = store.graph_pull(&txn, &graph, since, PULL_MAX, PULL_MAX_BYTES)?;
        let bytes: usize = txs.iter().map(|tx| tx.tx.len()).sum();
        let t = if txs.len() >= PULL_MAX || bytes >= PULL_MAX_BYTES {
            txs.last().map_or(current, |tx| tx.t)
        } else {
            current
        };
        let txs = txs
            .into_iter()
            .map(|tx| PulledTx { t: tx.t, tx: tx.tx })
            .collect();
        Ok::<_, crate::store::StoreError>(ServerMessage::PullOk { t, txs })
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// A graph's place as one snapshot sees it.
pub struct Position {
    /// The log head.
    pub t: u64,
    /// The reset epoch.
    pub epoch: u64,
    /// The home of every term; the last sequences now.
    pub homes: Vec<crate::store::HomeTerm>,
}

/// The graph's current head, reset epoch and homes, from one snapshot.
pub async fn position(graphs: &Arc<Graphs>, graph: &str) -> Result<Position, String> {
    let (store, graph) = (graphs.store.clone(), graph.to_string());
    tokio::task::spawn_blocking(move || {
        let txn = store.read_txn()?;
        Ok::<_, crate::store::StoreError>(Position {
            t: store.graph_t(&txn, &graph)?,
            epoch: store.graph_state(&txn, &graph)?.epoch,
            homes: store.graph_homes(&txn, &graph)?,
        })
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// Who sends a batch.
pub struct Origin<'a> {
    pub user_id: &'a str,
    pub client_id: &'a str,
    /// The hub id of the sending socket (None over HTTP).
    pub socket: Option<u64>,
    /// Sent on by a mesh node for its user: the reply carries the signed
    /// tx events.
    pub forwarded: bool,
}

/// Where a batch goes in the log: its first t, the home's term, and the
/// graph's reset epoch.
struct Sequence {
    first_t: u64,
    term: u64,
    epoch: u64,
}

/// A parsed `tx/batch`: `t-before` is valid; the txs' own problems are
/// reported only after the stale check, as the seed orders them.
#[derive(Debug, PartialEq, Eq)]
pub struct BatchRequest {
    pub t_before: u64,
    pub txs: Result<Vec<String>, &'static str>,
}

impl BatchRequest {
    /// Parses a batch body; `Err` is the reject reason for t-before.
    pub fn parse(body: &Value, max_tx_size: usize) -> Result<BatchRequest, &'static str> {
        let t_before = body
            .get("t-before")
            .or_else(|| body.get("t_before"))
            .and_then(Value::as_u64)
            .ok_or("invalid t-before")?;
        let txs = match body.get("txs") {
            Some(Value::Array(txs)) if !txs.is_empty() => {
                let valid = txs.len() <= BATCH_MAX
                    && txs.iter().all(|tx| {
                        tx.as_str()
                            .is_some_and(|s| !s.is_empty() && s.len() <= max_tx_size)
                    });
                if valid {
                    Ok(txs
                        .iter()
                        .filter_map(|tx| tx.as_str().map(str::to_string))
                        .collect())
                } else {
                    Err("invalid tx")
                }
            }
            Some(Value::Array(_)) | None | Some(Value::Null) => Err("empty tx data"),
            Some(_) => Err("invalid tx"),
        };
        Ok(BatchRequest { t_before, txs })
    }
}

/// Applies a `tx/batch` message (or HTTP body) and returns the reply.
pub async fn tx_batch(
    graphs: &Arc<Graphs>,
    graph: &str,
    body: &Value,
    origin: Origin<'_>,
) -> ServerMessage {
    let reject = ServerMessage::reject;
    let server_error = ServerMessage::server_error;
    let request = match BatchRequest::parse(body, graphs.max_tx_size) {
        Ok(request) => request,
        Err(reason) => return reject(reason),
    };
    let Ok(place) = position(graphs, graph).await else {
        return server_error();
    };
    let me = hex::encode(graphs.node_key.public_key());
    match place.homes.last() {
        Some(home) if home.node == me => {}
        // Sent on by a node that thinks we are the home: never on again
        // (two nodes that disagree about a move would pass it back and forth).
        Some(_) if origin.forwarded => return reject(super::forward::HOME_UNREACHABLE),
        Some(home) => {
            return super::forward::tx_batch(graphs, graph, &home.node, body, &origin).await
        }
        None => return reject(super::forward::HOME_UNREACHABLE),
    }
    let t_before = request.t_before;
    if t_before != place.t {
        return ServerMessage::stale(place.t);
    }
    let txs = match request.txs {
        Ok(txs) => txs,
        Err(reason) => return reject(reason),
    };
    let sequence = Sequence {
        first_t: t_before + 1,
        term: place.homes.len() as u64 - 1,
        epoch: place.epoch,
    };
    let Some(events) = sign_txs(graphs, graph, txs, &origin, sequence).await else {
        return server_error();
    };
    // Peers apply the same event size limit: a bigger tx would be stored
    // here and never replicate.
    if events
        .iter()
        .any(|(_, json)| json.len() > graphs.max_tx_size)
    {
        return reject("invalid tx");
    }
    let ids: Vec<[u8; 32]> = events.iter().map(|(e, _)| e.id).collect();
    let events_json: Vec<String> = if origin.forwarded {
        events.iter().map(|(_, json)| json.clone()).collect()
    } else {
        Vec::new()
    };
    if origin.socket.is_some() {
        graphs.hub.mark_local(ids.iter().copied());
    }
    let outcome = graphs
        .writer
        .write_graph_batch(graph.to_string(), t_before, events)
        .await;
    match outcome {
        WriteOutcome::Graph(GraphBatchOutcome::Appended { t, .. }) => {
            if let Some(socket) = origin.socket {
                graphs.hub.changed(graph, t, Some(socket));
            }
            // The forwarding node stores them at once (they are mesh
            // events: only a mesh caller gets them).
            let events = origin.forwarded.then_some(events_json);
            ServerMessage::TxBatchOk { t, events }
        }
        WriteOutcome::Graph(GraphBatchOutcome::Stale { t }) => {
            graphs.hub.unmark_local(ids);
            ServerMessage::stale(t)
        }
        other => {
            graphs.hub.unmark_local(ids);
            tracing::warn!(graph, outcome = ?other, "graph batch not stored");
            server_error()
        }
    }
}

/// Turns tx strings into signed events, on the blocking pool.
async fn sign_txs(
    graphs: &Arc<Graphs>,
    graph: &str,
    txs: Vec<String>,
    origin: &Origin<'_>,
    sequence: Sequence,
) -> Option<Vec<(Event, String)>> {
    let key = graphs.node_key.clone();
    let tags = vec![
        vec!["g".to_string(), graph.to_string()],
        vec!["author".to_string(), origin.user_id.to_string()],
        vec!["client".to_string(), origin.client_id.to_string()],
        vec!["epoch".to_string(), sequence.epoch.to_string()],
        vec!["term".to_string(), sequence.term.to_string()],
    ];
    tokio::task::spawn_blocking(move || {
        let now = crate::event::now();
        txs.into_iter()
            .zip(sequence.first_t..)
            .map(|(tx, t)| {
                let mut tags = tags.clone();
                tags.push(vec!["t".to_string(), t.to_string()]);
                let event = key.sign(now, GRAPH_TX_KIND, tags, tx);
                let json = event.to_json();
                (event, json)
            })
            .collect()
    })
    .await
    .ok()
}
