//! The sockets of every graph: who is online (presence, online-users) and
//! who must hear `changed` when a graph's `t` advances. A batch from one of
//! our sockets is announced by its handler to the graph's *other* sockets;
//! txs that arrive any other way (HTTP, a peer's sync or live push) are
//! seen on the store's event feed and announced to every socket.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};

use super::messages::{OnlineUser, ServerMessage};
use crate::store::{graph_of, Store};
use crate::writer::{Committed, CommittedChunk};

/// Messages queued to one socket before it counts as too slow and is shut.
const SOCKET_QUEUE: usize = 1024;

struct Socket {
    user_id: String,
    editing: Option<String>,
    tx: mpsc::Sender<String>,
}

/// Every graph socket, by graph.
#[derive(Default)]
pub struct Hub {
    graphs: Mutex<HashMap<String, HashMap<u64, Socket>>>,
    next_id: AtomicU64,
    /// Ids of txs committed by a socket's own batch (announced by it).
    local: Mutex<HashSet<[u8; 32]>>,
    /// When each graph last sent `online-users` for a presence change.
    presence: Mutex<HashMap<String, PresenceClock>>,
}

struct PresenceClock {
    last: std::time::Instant,
    /// A coalesced broadcast is scheduled.
    pending: bool,
}

/// Least time between presence-driven `online-users` of one graph.
const PRESENCE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

impl Hub {
    /// Registers a socket; returns its id and the queue of its messages.
    pub fn join(&self, graph: &str, user_id: &str) -> (u64, mpsc::Receiver<String>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        self.graphs
            .lock()
            .entry(graph.to_string())
            .or_default()
            .insert(
                id,
                Socket {
                    user_id: user_id.to_string(),
                    editing: None,
                    tx,
                },
            );
        self.broadcast_online(graph);
        (id, rx)
    }

    pub fn leave(&self, graph: &str, id: u64) {
        {
            let mut graphs = self.graphs.lock();
            if let Some(sockets) = graphs.get_mut(graph) {
                sockets.remove(&id);
                if sockets.is_empty() {
                    graphs.remove(graph);
                    self.presence.lock().remove(graph);
                }
            }
        }
        self.broadcast_online(graph);
    }

    /// Records which block a socket's user is editing (None clears it).
    /// `online-users` goes out at most every [`PRESENCE_EVERY`] per graph:
    /// changes in between are coalesced into one later message, so a chatty
    /// client cannot flood the other sockets.
    pub fn set_presence(self: &Arc<Self>, graph: &str, id: u64, editing: Option<String>) {
        if let Some(socket) = self
            .graphs
            .lock()
            .get_mut(graph)
            .and_then(|s| s.get_mut(&id))
        {
            socket.editing = editing;
        }
        let wait = {
            let mut clocks = self.presence.lock();
            let clock = clocks.entry(graph.to_string()).or_insert(PresenceClock {
                last: std::time::Instant::now()
                    .checked_sub(PRESENCE_EVERY)
                    .unwrap_or_else(std::time::Instant::now),
                pending: false,
            });
            if clock.pending {
                return;
            }
            let since = clock.last.elapsed();
            if since >= PRESENCE_EVERY {
                clock.last = std::time::Instant::now();
                None
            } else {
                clock.pending = true;
                Some(PRESENCE_EVERY - since)
            }
        };
        match wait {
            None => self.broadcast_online(graph),
            Some(wait) => {
                let (hub, graph) = (self.clone(), graph.to_string());
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Some(clock) = hub.presence.lock().get_mut(&graph) {
                        clock.pending = false;
                        clock.last = std::time::Instant::now();
                    }
                    hub.broadcast_online(&graph);
                });
            }
        }
    }

    /// Tells the graph's sockets (but `except`) that `t` advanced.
    pub fn changed(&self, graph: &str, t: u64, except: Option<u64>) {
        let message = ServerMessage::Changed { t }.to_text();
        self.send_all(graph, &message, except);
    }

    /// Marks txs a socket is about to commit, so the feed does not announce
    /// them a second time.
    pub fn mark_local(&self, ids: impl IntoIterator<Item = [u8; 32]>) {
        self.local.lock().extend(ids);
    }

    /// Forgets marks of a batch that was not committed.
    pub fn unmark_local(&self, ids: impl IntoIterator<Item = [u8; 32]>) {
        let mut local = self.local.lock();
        for id in ids {
            local.remove(&id);
        }
    }

    fn broadcast_online(&self, graph: &str) {
        let online_users = match self.graphs.lock().get(graph) {
            Some(sockets) => sockets
                .values()
                .map(|s| OnlineUser {
                    user_id: s.user_id.clone(),
                    editing: s.editing.clone(),
                })
                .collect(),
            None => return,
        };
        let message = ServerMessage::OnlineUsers { online_users }.to_text();
        self.send_all(graph, &message, None);
    }

    fn send_all(&self, graph: &str, message: &str, except: Option<u64>) {
        let mut graphs = self.graphs.lock();
        let Some(sockets) = graphs.get_mut(graph) else {
            return;
        };
        // A socket whose queue is full is dropped from the hub; its handler
        // sees the closed queue and ends the connection.
        sockets.retain(|id, socket| {
            Some(*id) == except || socket.tx.try_send(message.to_string()).is_ok()
        });
    }

    /// Announces txs committed by anyone but our sockets (HTTP batches,
    /// peers) to the graph's sockets, with the graph's current `t`.
    pub fn spawn_feed_listener(
        self: &Arc<Self>,
        store: Arc<Store>,
        mut feed: broadcast::Receiver<CommittedChunk>,
    ) {
        let hub = self.clone();
        tokio::spawn(async move {
            // A tx stored beyond a gap does not move the head: only a head
            // that moved is announced.
            let mut announced: std::collections::HashMap<String, u64> = Default::default();
            loop {
                let mut touched: HashSet<String> = HashSet::new();
                match feed.recv().await {
                    Ok(first) => {
                        first.iter().for_each(|c| hub.note(c, &mut touched));
                        while let Ok(more) = feed.try_recv() {
                            more.iter().for_each(|c| hub.note(c, &mut touched));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Marks of the skipped events would never be cleared.
                        hub.local.lock().clear();
                        touched.extend(hub.graphs.lock().keys().cloned());
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                if touched.is_empty() {
                    continue;
                }
                let store = store.clone();
                let ts = tokio::task::spawn_blocking(move || {
                    let txn = store.read_txn().ok()?;
                    let ts: Vec<(String, u64)> = touched
                        .into_iter()
                        .filter_map(|g| Some((g.clone(), store.graph_t(&txn, &g).ok()?)))
                        .collect();
                    Some(ts)
                })
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
                for (graph, t) in ts {
                    let last = announced.entry(graph.clone()).or_default();
                    if t != *last {
                        *last = t;
                        hub.changed(&graph, t, None);
                    }
                }
            }
        });
    }

    fn note(&self, committed: &Committed, touched: &mut HashSet<String>) {
        let Some(graph) = graph_of(&committed.event) else {
            return;
        };
        if self.local.lock().remove(&committed.event.id) {
            return;
        }
        if self.graphs.lock().contains_key(graph) {
            touched.insert(graph.to_string());
        }
    }
}
