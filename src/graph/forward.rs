//! A `tx/batch` on a node that is not the graph's home goes to the home
//! (SPEC §4): `POST /sync/<graph>/tx/batch` on the home's listener (the
//! peer URL configured for the home's key, ws:// read as http://, over a
//! kept-alive connection, 10 s per call), NIP-98
//! signed by this node's key with the body as payload, naming the user and
//! client it acts for. The home's verdict is the answer: `tx/batch/ok` with
//! the new t (its signed tx events come along and are stored here at once,
//! so this node's sockets see `changed` without waiting for sync), `stale`
//! with the home's t, or the home's reject. A home that cannot be reached,
//! or answers with events it did not sign, gets the batch refused with
//! `tx/reject` reason [`HOME_UNREACHABLE`]; nothing is stored. A reset
//! goes to the home the same way (only the home knows the head it is made
//! at), answered 503 `home unreachable` when it cannot be reached.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::log::Origin;
use super::messages::ServerMessage;
use super::Graphs;
use crate::event::Event;
use crate::store::WriteOutcome;

/// The reject reason when the home cannot sequence a batch for us.
pub const HOME_UNREACHABLE: &str = "home unreachable";

/// How long the home has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest reply read from the home (a batch's signed events).
const MAX_REPLY: usize = 256 * 1024 * 1024;

/// The bounded calls a node makes to graph homes.
pub fn home_calls() -> crate::http_client::BoundedCalls {
    crate::http_client::BoundedCalls::new(MAX_REPLY, TIMEOUT)
}

/// Sends `body` to `home` for `origin`'s user and returns the home's verdict.
pub async fn tx_batch(
    graphs: &Arc<Graphs>,
    graph: &str,
    home: &str,
    body: &Value,
    origin: &Origin<'_>,
) -> ServerMessage {
    match ask_home(graphs, graph, home, body, origin).await {
        Ok(reply) => reply,
        Err(why) => {
            tracing::info!(graph, home, error = why, "tx/batch not forwarded");
            ServerMessage::reject(HOME_UNREACHABLE)
        }
    }
}

/// Asks the home to reset the graph's log (keeping its snapshot rows);
/// returns the reset's time (ms).
pub async fn reset(graphs: &Arc<Graphs>, graph: &str, home: &str) -> Result<u64, String> {
    let path = format!("/sync/{graph}/admin/reset?rows=keep");
    let reply = call_home(graphs, home, "DELETE", &path, b"").await?;
    reply["reset-at"]
        .as_u64()
        .ok_or_else(|| format!("the home answered {reply}"))
}

/// One authenticated request to the home's listener; its JSON reply.
async fn call_home(
    graphs: &Arc<Graphs>,
    home: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Value, String> {
    let home_key = crate::event::decode_hex::<32>(home).ok_or("the home is not a node key")?;
    let url = graphs
        .mesh_peers()
        .into_iter()
        .find(|(_, key)| *key == home_key)
        .map(|(url, _)| url)
        .ok_or("no peer is configured with the home's key")?;
    let endpoint = super::fetch::http_endpoint(&url).ok_or("the home's URL is not ws(s)://")?;
    let auth = crate::auth::nip98_header(&graphs.node_key, home, &endpoint.url(path), method, body);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let reply = graphs
        .home_calls
        .request(&endpoint, method, path, &headers, body)
        .await
        .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!("the home answered HTTP {}", reply.status));
    }
    serde_json::from_slice(&reply.body).map_err(|e| format!("the home's reply: {e}"))
}

async fn ask_home(
    graphs: &Arc<Graphs>,
    graph: &str,
    home: &str,
    body: &Value,
    origin: &Origin<'_>,
) -> Result<ServerMessage, String> {
    let mut sent = body.clone();
    sent["author"] = Value::from(origin.user_id);
    sent["client"] = Value::from(origin.client_id);
    let path = format!("/sync/{graph}/tx/batch");
    let sent = sent.to_string().into_bytes();
    let verdict = call_home(graphs, home, "POST", &path, &sent).await?;
    match serde_json::from_value::<ServerMessage>(verdict) {
        Ok(ServerMessage::TxBatchOk { t, events }) => {
            let events = events.ok_or("the home's ok carries no events")?;
            store_home_events(graphs, graph, home, events).await?;
            Ok(ServerMessage::TxBatchOk { t, events: None })
        }
        Ok(verdict @ (ServerMessage::TxReject { .. } | ServerMessage::Error { .. })) => Ok(verdict),
        Ok(other) => Err(format!("the home answered {other:?}")),
        Err(e) => Err(format!("the home's verdict: {e}")),
    }
}

/// Checks that every event is a tx of `graph` signed by `home`, then stores
/// them; an impostor at the home's URL cannot make us acknowledge a batch.
async fn store_home_events(
    graphs: &Arc<Graphs>,
    graph: &str,
    home: &str,
    events: Vec<String>,
) -> Result<(), String> {
    let (graph_id, home_key) = (graph.to_string(), home.to_string());
    let checked = tokio::task::spawn_blocking(move || {
        events
            .iter()
            .map(|json| {
                let event = Event::from_json(json).map_err(|_| "a malformed event")?;
                let ours = hex::encode(event.pubkey) == home_key
                    && crate::store::graph_of(&event) == Some(graph_id.as_str());
                if !ours || event.verify().is_err() {
                    return Err("an event the home did not sign for this graph");
                }
                Ok(event)
            })
            .collect::<Result<Vec<Event>, &str>>()
            .map_err(str::to_string)
    })
    .await
    .map_err(|e| e.to_string())??;
    // The home has committed them: whatever happens here, the batch is
    // accepted (txs not stored now arrive by sync).
    for event in checked {
        match graphs.writer.write(event).await {
            WriteOutcome::Stored { .. } | WriteOutcome::Duplicate => {}
            other => tracing::info!(graph, outcome = ?other, "a forwarded tx waits for sync"),
        }
    }
    Ok(())
}
