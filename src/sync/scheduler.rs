//! The background sync service inside `serve`: one task per peer that
//! reconciles every interval (±10 % jitter), backs off exponentially after
//! failures, never runs two syncs with the same peer at once, and keeps the
//! per-peer state (last_sync, events_synced, status, last_error,
//! consecutive_failures) in LMDB so it survives restarts. Peers come from the
//! config and from the control API (those are kept in LMDB too and restored
//! at the next start).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::client::{sync_with_peer, SyncSession};
use super::live::{self, LiveLink};
use super::types::{Direction, Local, Progress, SyncError, SyncOptions, SyncReport};
use crate::config::PeerConfig;
use crate::event::now;
use crate::filter::Filter;
use crate::mesh::Mesh;
use crate::peers::PeerSpec;
use crate::store::{Bookkeeping, PeerRecord, ScopeStatus};
use crate::writer::CommittedChunk;

/// Longest wait after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// First wait after a failure.
const BASE_BACKOFF: Duration = Duration::from_secs(5);

/// What the service knows about one peer (persisted as JSON; field names
/// are those of the seed's `PeerSyncState`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    pub peer_url: String,
    /// Unix seconds of the last successful sync (0: never).
    pub last_sync: u64,
    /// Events fetched plus sent, over all runs.
    pub events_synced: u64,
    /// idle | syncing | error
    pub status: String,
    pub last_error: String,
    pub consecutive_failures: u32,
}

struct Peer {
    config: PeerConfig,
    options: SyncOptions,
    interval: Duration,
    state: Mutex<PeerState>,
    /// Held for the duration of a run: one sync per peer at a time.
    running: tokio::sync::Mutex<()>,
    /// Wakes the peer's task for a sync now (TriggerSync, live reconnects).
    wake: Arc<tokio::sync::Notify>,
    /// A filter for the next triggered run only.
    next_filter: Mutex<Option<Filter>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The live link, when the peer is configured with `live = true`.
    live: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The running service; cheap to share.
pub struct SyncService {
    local: Local,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
    /// Background runs happen only while active (Start / Stop).
    active: std::sync::atomic::AtomicBool,
    stop: watch::Receiver<bool>,
    saved: HashMap<String, PeerState>,
    /// Our stored events, pushed to live peers (`None`: no live mode).
    feed: Option<broadcast::Sender<CommittedChunk>>,
    /// Serialises peer-state saves (read the state, then write it).
    state_writes: Arc<Mutex<()>>,
    /// Peers configured with a node key join the relay's mesh.
    mesh: Option<Arc<Mesh>>,
}

impl SyncService {
    /// Starts one task per configured peer; they stop when `stop` flips.
    pub fn start(
        local: Local,
        peers: &[PeerConfig],
        stop: watch::Receiver<bool>,
        feed: Option<broadcast::Sender<CommittedChunk>>,
        mesh: Option<Arc<Mesh>>,
    ) -> Arc<SyncService> {
        let saved: HashMap<String, PeerState> = local
            .store
            .peer_records(PeerRecord::State)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(url, json)| Some((url, serde_json::from_slice(&json).ok()?)))
            .collect();
        let added = local.store.added_peers().unwrap_or_default();
        let service = Arc::new(SyncService {
            local,
            peers: Mutex::new(HashMap::new()),
            active: std::sync::atomic::AtomicBool::new(true),
            stop,
            saved,
            feed,
            state_writes: Arc::default(),
            mesh,
        });
        for cfg in peers.iter().chain(added.iter()) {
            if service.has_peer(&cfg.url) {
                continue;
            }
            if let Err(e) = service.insert_peer(cfg) {
                tracing::warn!(peer = cfg.url, error = e, "peer not added");
            }
        }
        service
    }

    /// Adds a peer at run time, starts its task, and keeps it for the next
    /// start.
    pub fn add_peer(self: &Arc<Self>, cfg: &PeerConfig) -> Result<(), String> {
        self.insert_peer(cfg)?;
        let json = serde_json::to_vec(cfg).map_err(|e| e.to_string())?;
        let op = Bookkeeping::PeerRecord {
            kind: PeerRecord::AddedPeer,
            url: cfg.url.clone(),
            value: Some(json),
        };
        self.local.writer.record_detached(op, "the added peer");
        Ok(())
    }

    fn has_peer(&self, url: &str) -> bool {
        self.peers.lock().contains_key(url)
    }

    fn insert_peer(self: &Arc<Self>, cfg: &PeerConfig) -> Result<(), String> {
        let spec = PeerSpec::parse(cfg)?;
        let pubkey = spec.pubkey;
        let mut peers = self.peers.lock();
        if peers.contains_key(&cfg.url) {
            return Err(format!("peer {} is already configured", cfg.url));
        }
        let mut state = self.saved.get(&cfg.url).cloned().unwrap_or_default();
        state.peer_url = cfg.url.clone();
        state.status = "idle".into();
        let peer = Arc::new(Peer {
            config: cfg.clone(),
            options: SyncOptions {
                direction: spec.direction,
                filter: spec.filter.clone(),
                peer_key: pubkey,
                ..SyncOptions::default()
            },
            interval: spec.interval,
            state: Mutex::new(state),
            running: tokio::sync::Mutex::new(()),
            wake: Arc::new(tokio::sync::Notify::new()),
            next_filter: Mutex::new(None),
            task: Mutex::new(None),
            live: Mutex::new(None),
        });
        if let (true, Some(feed)) = (spec.live, &self.feed) {
            let link = LiveLink {
                url: cfg.url.clone(),
                local: self.local.clone(),
                filter: peer.options.filter.clone(),
                direction: peer.options.direction,
                feed: feed.clone(),
                reconcile: peer.wake.clone(),
                peer_key: peer.options.peer_key,
            };
            *peer.live.lock() = Some(tokio::spawn(live::run(link, self.stop.clone())));
        }
        let task = tokio::spawn(run_peer(
            self.clone(),
            cfg.url.clone(),
            peer.clone(),
            self.stop.clone(),
        ));
        *peer.task.lock() = Some(task);
        peers.insert(cfg.url.clone(), peer);
        drop(peers);
        if let (Some(pubkey), Some(mesh)) = (pubkey, &self.mesh) {
            let joins = !mesh.is_member(&pubkey);
            mesh.add_peer(&cfg.url, pubkey);
            // Its events were refused while it was outside the mesh.
            if joins {
                let op = Bookkeeping::ForgetRefusals(crate::mesh::author_refusal());
                self.local
                    .writer
                    .record_detached(op, "the forgetting of a new mesh node's refusals");
            }
        }
        Ok(())
    }

    /// Removes a peer (until the next start if it comes from the config);
    /// a sync in progress with it is cancelled. False if unknown.
    pub fn remove_peer(&self, url: &str) -> bool {
        let Some(peer) = self.peers.lock().remove(url) else {
            return false;
        };
        if let Some(mesh) = &self.mesh {
            mesh.remove_peer(url);
        }
        for task in [peer.task.lock().take(), peer.live.lock().take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        let op = Bookkeeping::PeerRecord {
            kind: PeerRecord::AddedPeer,
            url: url.to_string(),
            value: None,
        };
        self.local
            .writer
            .record_detached(op, "the removal of a peer");
        self.update(&peer, |s| {
            if s.status == "syncing" {
                s.status = "idle".into();
            }
        });
        true
    }

    /// Asks for a sync now with `url`, or with every peer, optionally with
    /// another filter for that run. False if `url` is unknown.
    pub fn trigger(&self, url: Option<&str>, filter: Option<Filter>) -> bool {
        let peers = self.peers.lock();
        let wake = |peer: &Peer| {
            *peer.next_filter.lock() = filter.clone();
            peer.wake.notify_one();
        };
        match url {
            Some(url) => match peers.get(url) {
                Some(peer) => {
                    wake(peer);
                    true
                }
                None => false,
            },
            None => {
                peers.values().for_each(|p| wake(p));
                true
            }
        }
    }

    /// Runs one sync with `url` now and reports progress as it goes. A
    /// configured peer keeps its direction and state, and waits for a run
    /// already in progress; any other URL is synced both ways once.
    pub async fn sync_now(
        &self,
        url: &str,
        request: SyncRequest,
        progress: impl FnMut(&Progress),
    ) -> Result<SyncReport, SyncError> {
        let peer = self.peers.lock().get(url).cloned();
        let Some(peer) = peer else {
            let options = request.apply(SyncOptions {
                direction: Direction::Both,
                ..SyncOptions::default()
            });
            return sync_with_peer(url, &self.local, &options, progress).await;
        };
        self.sync_once(url, &peer, request, progress).await
    }

    /// Pauses or resumes background runs (triggered runs still happen).
    pub fn set_active(&self, active: bool) {
        self.active
            .store(active, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The configuration of every peer.
    /// The peers that are mesh nodes: URL and node key.
    pub fn mesh_peers(&self) -> Vec<(String, [u8; 32])> {
        let mut out: Vec<(String, [u8; 32])> = self
            .peers
            .lock()
            .values()
            .filter_map(|p| Some((p.config.url.clone(), p.options.peer_key?)))
            .collect();
        out.sort();
        out
    }

    pub fn peer_configs(&self) -> Vec<PeerConfig> {
        let mut out: Vec<PeerConfig> = self
            .peers
            .lock()
            .values()
            .map(|p| p.config.clone())
            .collect();
        out.sort_by(|a, b| a.url.cmp(&b.url));
        out
    }

    /// URLs of the configured peers.
    pub fn peer_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self.peers.lock().keys().cloned().collect();
        urls.sort();
        urls
    }

    /// The current state of every peer.
    pub fn states(&self) -> Vec<PeerState> {
        let mut out: Vec<PeerState> = self
            .peers
            .lock()
            .values()
            .map(|p| p.state.lock().clone())
            .collect();
        out.sort_by(|a, b| a.peer_url.cmp(&b.peer_url));
        out
    }

    /// Runs one sync with `url` now (waiting if one is already running).
    async fn sync_once(
        &self,
        url: &str,
        peer: &Arc<Peer>,
        request: SyncRequest,
        progress: impl FnMut(&Progress),
    ) -> Result<SyncReport, SyncError> {
        let _running = peer.running.lock().await;
        self.update(peer, |s| s.status = "syncing".into());
        let options = request.apply(peer.options.clone());
        let result = self.run_on_one_connection(url, &options, progress).await;
        self.update(peer, |s| match &result {
            Ok(report) => {
                s.status = "idle".into();
                s.last_sync = now();
                s.events_synced += report.fetched + report.sent;
                s.last_error.clear();
                s.consecutive_failures = 0;
            }
            Err(e) => {
                s.status = "error".into();
                s.last_error = e.to_string();
                s.consecutive_failures += 1;
            }
        });
        match &result {
            Ok(report) => tracing::info!(
                peer = url,
                fetched = report.fetched,
                sent = report.sent,
                "synced"
            ),
            Err(e) => tracing::warn!(peer = url, error = %e, "sync failed"),
        }
        result
    }

    /// One run over one connection: `options.filter`, then, with a peer
    /// that proved it is a mesh node, every mesh tree.
    async fn run_on_one_connection(
        &self,
        url: &str,
        options: &SyncOptions,
        progress: impl FnMut(&Progress),
    ) -> Result<SyncReport, SyncError> {
        let mut session = SyncSession::open(url, &self.local, options).await?;
        let mut result = session.run(&self.local, options, progress).await;
        if let Some(report) = result.as_mut().ok().filter(|r| r.mesh) {
            if let Err(e) = self.sync_mesh_scopes(&mut session, options, report).await {
                result = Err(e);
            }
        }
        session.close().await;
        result
    }

    /// With a mesh peer, each graph's (and any other mesh scope's) tree is
    /// reconciled too: the `{}` tree leaves mesh events out.
    async fn sync_mesh_scopes(
        &self,
        session: &mut SyncSession,
        options: &SyncOptions,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        // Graph index events first: a graph's txs are stored only once its
        // index (and so its home) is known, and a newly learned graph's tree
        // appears with its index, so the scopes are listed again after it.
        let mut done: Vec<crate::filter::Filter> = Vec::new();
        for index_first in [true, false] {
            for scope in self.mesh_scopes().await? {
                let holds_index = scope
                    .filter
                    .kinds
                    .as_ref()
                    .is_some_and(|k| k.contains(&crate::mesh::GRAPH_INDEX_KIND));
                if holds_index != index_first || done.contains(&scope.filter) {
                    continue;
                }
                done.push(scope.filter.clone());
                let scoped = SyncOptions {
                    filter: scope.filter,
                    ..options.clone()
                };
                let part = session.run(&self.local, &scoped, |_| {}).await?;
                report.fetched += part.fetched;
                report.sent += part.sent;
                report.have += part.have;
                report.need += part.need;
            }
        }
        Ok(())
    }

    /// The ready trees of mesh kinds.
    async fn mesh_scopes(&self) -> Result<Vec<crate::store::Scope>, SyncError> {
        let store = self.local.store.clone();
        let scopes = tokio::task::spawn_blocking(move || {
            let txn = store.read_txn()?;
            store.scopes(&txn)
        })
        .await
        .map_err(|e| SyncError::Protocol(e.to_string()))??;
        Ok(scopes
            .into_iter()
            .filter(|s| s.status == ScopeStatus::Ready && crate::mesh::is_mesh_scope(&s.filter))
            .collect())
    }

    fn update(&self, peer: &Arc<Peer>, change: impl FnOnce(&mut PeerState)) {
        change(&mut peer.state.lock());
        // Small bookkeeping write; a failure only loses the statistic. The
        // state is read and queued under one lock, so the writer saves the
        // states in the order they were made.
        let _one_at_a_time = self.state_writes.lock();
        let snapshot = peer.state.lock().clone();
        let Ok(json) = serde_json::to_vec(&snapshot) else {
            return;
        };
        let op = Bookkeeping::PeerRecord {
            kind: PeerRecord::State,
            url: snapshot.peer_url,
            value: Some(json),
        };
        self.local.writer.record_detached(op, "peer state");
    }
}

/// Overrides for one run (TriggerSync, SyncWithPeer).
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub filter: Option<Filter>,
    /// Only events created at or after this time.
    pub since: Option<u64>,
    pub direction: Option<Direction>,
}

impl SyncRequest {
    fn apply(self, mut options: SyncOptions) -> SyncOptions {
        if let Some(filter) = self.filter {
            options.filter = filter;
        }
        if let Some(since) = self.since {
            options.filter.since = Some(options.filter.since.map_or(since, |s| s.max(since)));
        }
        if let Some(direction) = self.direction {
            options.direction = direction;
        }
        options
    }
}

/// The wait before the next run: the interval ±10 %, or the backoff.
fn next_delay(interval: Duration, failures: u32) -> Duration {
    let base = if failures == 0 {
        interval
    } else {
        BASE_BACKOFF
            .saturating_mul(1u32 << failures.min(16))
            .min(MAX_BACKOFF)
            .min(interval.max(BASE_BACKOFF))
    };
    let jitter = 0.9 + rand::random::<f64>() * 0.2;
    base.mul_f64(jitter)
}

async fn run_peer(
    service: Arc<SyncService>,
    url: String,
    peer: Arc<Peer>,
    mut stop: watch::Receiver<bool>,
) {
    let mut triggered = false;
    loop {
        if triggered || service.is_active() {
            let request = SyncRequest {
                filter: peer.next_filter.lock().take(),
                ..SyncRequest::default()
            };
            let _ = service.sync_once(&url, &peer, request, |_| {}).await;
        }
        let failures = peer.state.lock().consecutive_failures;
        tokio::select! {
            _ = tokio::time::sleep(next_delay(peer.interval, failures)) => triggered = false,
            _ = peer.wake.notified() => triggered = true,
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_jitter_and_back_off() {
        let hour = Duration::from_secs(3600);
        for _ in 0..100 {
            let d = next_delay(Duration::from_secs(100), 0);
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
        let first = next_delay(hour, 1);
        assert!(
            first >= Duration::from_secs(9) && first <= Duration::from_secs(11),
            "{first:?}"
        );
        assert!(next_delay(hour, 30) <= hour.mul_f64(1.1));
        // Backoff never waits longer than the normal interval.
        assert!(next_delay(Duration::from_secs(60), 10) <= Duration::from_secs(66));
    }
}
