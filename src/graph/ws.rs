//! The WebSocket `/sync/:graph-id` of the DB-Sync protocol. Credentials
//! (`?token=`, `Authorization`) and access are checked before the upgrade
//! (401 / 403 / 404). Client messages: hello, presence, pull, tx/batch,
//! ping; anything else is answered with `error` and the socket stays open.

use std::sync::Arc;

use super::log::{self, Origin};
use super::messages::{self, ClientMessage, ServerMessage};
use super::{GraphCaller, Graphs};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};

/// Largest client message (a big tx/batch).
const MAX_MESSAGE: usize = 32 * 1024 * 1024;
/// How often an open socket's access to its graph is checked again.
const ACCESS_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn upgrade(
    State(graphs): State<Arc<Graphs>>,
    caller: GraphCaller,
    slot: Option<axum::Extension<crate::edge::SlotCell>>,
    ws: WebSocketUpgrade,
) -> Response {
    let (graph, user) = (caller.graph, caller.user);
    // The socket keeps its connection's per-IP slot for its lifetime.
    let slot = slot.and_then(|cell| cell.take());
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            run(graphs, graph, user, socket).await;
            drop(slot);
        })
}

fn error(message: &str) -> String {
    ServerMessage::error(message).to_text()
}

async fn run(graphs: Arc<Graphs>, graph: String, user: crate::auth::User, socket: WebSocket) {
    let user_id = user.id.clone();
    let (mut sink, mut stream) = socket.split();
    let (id, mut outgoing) = graphs.hub.join(&graph, &user_id);
    let mut client_id = String::new();
    let mut recheck = tokio::time::interval(ACCESS_RECHECK);
    recheck.tick().await;
    let stopped = super::stopped(graphs.shutdown.clone());
    tokio::pin!(stopped);
    loop {
        let reply = tokio::select! {
            () = &mut stopped => break,
            _ = recheck.tick() => {
                // Deleted, or the user removed: the socket ends.
                match graphs.graph_for(&graph, &user).await {
                    Ok(_) => None,
                    Err(_) => {
                        let _ = sink.send(Message::Text(error("forbidden").into())).await;
                        break;
                    }
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    handle(&graphs, &graph, &user_id, &mut client_id, id, text.as_str()).await
                }
                Some(Ok(Message::Binary(_))) => Some(error("invalid request")),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => None,
            },
            queued = outgoing.recv() => match queued {
                Some(message) => Some(message),
                // Dropped by the hub as too slow.
                None => break,
            },
        };
        if let Some(reply) = reply {
            if sink.send(Message::Text(reply.into())).await.is_err() {
                break;
            }
        }
    }
    graphs.hub.leave(&graph, id);
    let _ = sink.close().await;
}

/// Answers one client message (None: nothing to send back).
async fn handle(
    graphs: &Arc<Graphs>,
    graph: &str,
    user_id: &str,
    client_id: &mut String,
    socket: u64,
    text: &str,
) -> Option<String> {
    let message = match messages::parse(text) {
        Ok(message) => message,
        Err(unreadable) => return Some(unreadable.reply().to_text()),
    };
    let reply = match message {
        ClientMessage::Hello { client } => {
            if let Some(client) = client {
                *client_id = client;
            }
            match log::position(graphs, graph).await {
                Ok(place) => ServerMessage::Hello { t: place.t },
                Err(_) => ServerMessage::server_error(),
            }
        }
        ClientMessage::Presence { editing } => {
            graphs.hub.set_presence(graph, socket, editing);
            return None;
        }
        ClientMessage::Pull { since: Some(since) } => log::pull(graphs, graph, since)
            .await
            .unwrap_or_else(|_| ServerMessage::server_error()),
        ClientMessage::Pull { since: None } => ServerMessage::error("invalid since"),
        ClientMessage::TxBatch(body) => {
            let origin = Origin {
                user_id,
                client_id,
                socket: Some(socket),
                forwarded: false,
            };
            log::tx_batch(graphs, graph, &body, origin).await
        }
        ClientMessage::Ping => ServerMessage::Pong,
    };
    Some(reply.to_text())
}
