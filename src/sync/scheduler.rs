//! The background sync service inside `serve`: one task per peer that
//! reconciles every interval (±10 % jitter), backs off exponentially after
//! failures, never runs two syncs with the same peer at once, and keeps the
//! per-peer state (last_sync, events_synced, status, last_error,
//! consecutive_failures) in LMDB so it survives restarts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::client::{sync_with_peer, Direction, Local, SyncOptions};
use crate::config::PeerConfig;
use crate::event::now;
use crate::filter::Filter;

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
    options: SyncOptions,
    interval: Duration,
    state: Mutex<PeerState>,
    /// Held for the duration of a run: one sync per peer at a time.
    running: tokio::sync::Mutex<()>,
    /// Wakes the peer's task for a sync now (TriggerSync).
    wake: tokio::sync::Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The running service; cheap to share.
pub struct SyncService {
    local: Local,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
    /// Background runs happen only while active (Start / Stop).
    active: std::sync::atomic::AtomicBool,
    stop: watch::Receiver<bool>,
    saved: HashMap<String, PeerState>,
}

impl SyncService {
    /// Starts one task per configured peer; they stop when `stop` flips.
    pub fn start(
        local: Local,
        peers: &[PeerConfig],
        stop: watch::Receiver<bool>,
    ) -> Arc<SyncService> {
        let saved: HashMap<String, PeerState> = local
            .store
            .peer_states()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(url, json)| Some((url, serde_json::from_slice(&json).ok()?)))
            .collect();
        let service = Arc::new(SyncService {
            local,
            peers: Mutex::new(HashMap::new()),
            active: std::sync::atomic::AtomicBool::new(true),
            stop,
            saved,
        });
        for cfg in peers {
            if let Err(e) = service.add_peer(cfg) {
                tracing::warn!(peer = cfg.url, error = e, "peer not added");
            }
        }
        service
    }

    /// Adds a peer at run time and starts its task.
    pub fn add_peer(self: &Arc<Self>, cfg: &PeerConfig) -> Result<(), String> {
        if !(cfg.url.starts_with("ws://") || cfg.url.starts_with("wss://")) {
            return Err(format!("peer url must be ws:// or wss://: {}", cfg.url));
        }
        let direction = cfg.dir.parse::<Direction>()?;
        let filter = Filter::from_json(&cfg.filter).map_err(|e| e.to_string())?;
        let mut peers = self.peers.lock();
        if peers.contains_key(&cfg.url) {
            return Err(format!("peer {} is already configured", cfg.url));
        }
        let mut state = self.saved.get(&cfg.url).cloned().unwrap_or_default();
        state.peer_url = cfg.url.clone();
        state.status = "idle".into();
        let peer = Arc::new(Peer {
            options: SyncOptions {
                direction,
                filter,
                ..SyncOptions::default()
            },
            interval: Duration::from_secs(cfg.interval_secs.max(1)),
            state: Mutex::new(state),
            running: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run_peer(
            self.clone(),
            cfg.url.clone(),
            peer.clone(),
            self.stop.clone(),
        ));
        *peer.task.lock() = Some(task);
        peers.insert(cfg.url.clone(), peer);
        Ok(())
    }

    /// Removes a peer; a sync in progress with it is cancelled. False if unknown.
    pub fn remove_peer(&self, url: &str) -> bool {
        let Some(peer) = self.peers.lock().remove(url) else {
            return false;
        };
        if let Some(task) = peer.task.lock().take() {
            task.abort();
        }
        true
    }

    /// Asks for a sync now with `url`, or with every peer. False if unknown.
    pub fn trigger(&self, url: Option<&str>) -> bool {
        let peers = self.peers.lock();
        match url {
            Some(url) => match peers.get(url) {
                Some(peer) => {
                    peer.wake.notify_one();
                    true
                }
                None => false,
            },
            None => {
                for peer in peers.values() {
                    peer.wake.notify_one();
                }
                true
            }
        }
    }

    /// Pauses or resumes background runs (triggered runs still happen).
    pub fn set_active(&self, active: bool) {
        self.active
            .store(active, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
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
    async fn sync_once(&self, url: &str, peer: &Peer) {
        let _running = peer.running.lock().await;
        self.update(peer, |s| s.status = "syncing".into());
        let result = sync_with_peer(url, &self.local, &peer.options, |_| {}).await;
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
        match result {
            Ok(report) => tracing::info!(
                peer = url,
                fetched = report.fetched,
                sent = report.sent,
                "synced"
            ),
            Err(e) => tracing::warn!(peer = url, error = %e, "sync failed"),
        }
    }

    fn update(&self, peer: &Peer, change: impl FnOnce(&mut PeerState)) {
        let snapshot = {
            let mut state = peer.state.lock();
            change(&mut state);
            state.clone()
        };
        if let Ok(json) = serde_json::to_vec(&snapshot) {
            let store = self.local.store.clone();
            // Small bookkeeping write; a failure only loses the statistic.
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.put_peer_state(&snapshot.peer_url, &json) {
                    tracing::warn!(error = %e, "cannot save peer state");
                }
            });
        }
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
            service.sync_once(&url, &peer).await;
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
