//! Live mode with one peer: a standing connection that subscribes to the
//! peer's new events matching the filter (down) and pushes every event we
//! store to it (up), so writes cross within about a second. It reconnects
//! with backoff after any failure and asks for a reconciliation each time
//! it (re)connects, which repairs whatever went by while it was away.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, watch, Notify};

use super::from_relay::FromRelay;
use super::ingest::{ingest_group, Done, Ingested};
use super::peer::PeerSocket;
use super::types::{Direction, Local, SyncError};
use crate::event::{now, Event};
use crate::filter::Filter;
use crate::refusal::Prefix;
use crate::writer::CommittedChunk;

/// No message (not even a pong) for this long means the link is dead.
const IDLE: Duration = Duration::from_secs(90);
const PING_EVERY: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// A session that lasted this long resets the reconnect backoff.
const HEALTHY: Duration = Duration::from_secs(60);
/// Ids received from the peer that we do not push back to it.
const ECHO_MEMORY: usize = 4096;

/// What a live link needs.
pub struct LiveLink {
    pub url: String,
    pub local: Local,
    pub filter: Filter,
    pub direction: Direction,
    /// Our stored events, for pushing.
    pub feed: broadcast::Sender<CommittedChunk>,
    /// Wakes the peer's reconciliation task.
    pub reconcile: Arc<Notify>,
    /// The node key configured for the peer: when it proves it holds it,
    /// graph and echo events flow on the link too.
    pub peer_key: Option<[u8; 32]>,
}

/// Keeps the link up until `stop` flips.
pub async fn run(link: LiveLink, mut stop: watch::Receiver<bool>) {
    let mut retry = FIRST_RETRY;
    loop {
        let started = tokio::time::Instant::now();
        match session(&link, &mut stop).await {
            Ok(()) => return,
            Err(e) => tracing::info!(peer = link.url, error = %e, "live link down; reconnecting"),
        }
        // A link that was up for a while starts its backoff afresh.
        if started.elapsed() > HEALTHY {
            retry = FIRST_RETRY;
        }
        let wait = retry.mul_f64(0.8 + rand::random::<f64>() * 0.4);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// One connection's lifetime; returns `Ok` only when asked to stop.
async fn session(link: &LiveLink, stop: &mut watch::Receiver<bool>) -> Result<(), SyncError> {
    let mut peer = PeerSocket::connect(
        &link.url,
        CONNECT_TIMEOUT,
        link.local.node_key.clone(),
        link.peer_key,
        link.local.deflate,
    )
    .await?;
    let mesh = peer.is_proven_node();
    let down = link.direction != Direction::Up;
    let up = link.direction != Direction::Down;
    let mut feed = up.then(|| link.feed.subscribe());
    if down {
        subscribe(&mut peer, &link.filter).await?;
    }
    // Anything missed while disconnected comes back through reconciliation.
    link.reconcile.notify_one();
    tracing::info!(peer = link.url, "live link up");
    let mut from_peer = RecentIds::default();
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut resubscribed = false;
    loop {
        let mut push: Option<CommittedChunk> = None;
        let mut send_ping = false;
        tokio::select! {
            msg = peer.recv_within(IDLE) => {
                match msg? {
                    FromRelay::Event { event, .. } => receive(link, mesh, &event, &mut from_peer).await,
                    FromRelay::Closed { why, .. } => {
                        // Refused until we authenticate: answer and ask again
                        // (once; a second refusal ends the session).
                        if why.is(Prefix::AuthRequired)
                            && !resubscribed
                            && peer.await_auth().await?
                        {
                            resubscribed = true;
                            subscribe(&mut peer, &link.filter).await?;
                        } else {
                            return Err(SyncError::Refused(why));
                        }
                    }
                    FromRelay::Ok { accepted: false, note, .. } => {
                        tracing::debug!(peer = link.url, reason = note, "peer refused a pushed event");
                    }
                    _ => {}
                }
            }
            committed = recv_feed(&mut feed) => match committed {
                Ok(committed) => push = Some(committed),
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::info!(peer = link.url, skipped, "live push fell behind; reconciling");
                    link.reconcile.notify_one();
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = ping.tick() => send_ping = true,
            _ = stop.changed() => return Ok(()),
        }
        for committed in push.iter().flat_map(|piece| piece.iter()) {
            let event = &committed.event;
            if link.filter.matches(event)
                && !from_peer.contains(&event.id)
                && !link.local.store.is_tree_excluded(event.kind)
                && (mesh || !crate::mesh::is_mesh_kind(event.kind))
            {
                peer.send_text(format!("[\"EVENT\",{}]", committed.json))
                    .await?;
            }
        }
        if send_ping {
            // Pongs and messages both count; silence past IDLE is a dead link.
            if peer.silent_for() > IDLE {
                return Err(SyncError::Timeout(IDLE));
            }
            peer.ping().await?;
        }
    }
}

async fn subscribe(peer: &mut PeerSocket, filter: &Filter) -> Result<(), SyncError> {
    let mut live = filter.to_value();
    // Only what is new; reconciliation covers the past.
    live["since"] = json!(now().saturating_sub(10).max(filter.since.unwrap_or(0)));
    live["limit"] = json!(0);
    peer.send(json!(["REQ", "live", live])).await
}

async fn recv_feed(
    feed: &mut Option<broadcast::Receiver<CommittedChunk>>,
) -> Result<CommittedChunk, broadcast::error::RecvError> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

/// Stores an event the peer pushed on our subscription.
/// Mesh events only from a peer that proved it is a mesh node.
async fn receive(link: &LiveLink, mesh: bool, raw: &Value, from_peer: &mut RecentIds) {
    let text = raw.to_string();
    let event = match Event::from_json(&text) {
        Ok(event) if link.filter.matches(&event) => event,
        _ => return,
    };
    if !mesh && crate::mesh::is_mesh_kind(event.kind) {
        tracing::debug!(
            peer = link.url,
            id = event.id_hex(),
            "mesh event from an unproven peer refused"
        );
        return;
    }
    from_peer.insert(event.id);
    let url = link.url.clone();
    let done: Done = Arc::new(move |id, outcome| {
        if let Ingested::Refused { reason, .. } = outcome {
            tracing::debug!(
                peer = url,
                id = hex::encode(id),
                %reason,
                "live event refused"
            );
        }
    });
    // Live events arrive one at a time; nothing waits for their commit.
    drop(ingest_group(&link.local, vec![(event, text.len())], done).await);
}

/// A bounded memory of ids, oldest forgotten first.
#[derive(Default)]
struct RecentIds {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl RecentIds {
    fn insert(&mut self, id: [u8; 32]) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > ECHO_MEMORY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, id: &[u8; 32]) -> bool {
        self.set.contains(id)
    }
}
