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
}

/// The running service; cheap to share.
pub struct SyncService {
    local: Local,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
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
        });
        for cfg in peers {
            let (Ok(direction), Ok(filter)) =
                (cfg.dir.parse::<Direction>(), Filter::from_json(&cfg.filter))
            else {
                continue;
            };
            let mut state = saved.get(&cfg.url).cloned().unwrap_or_default();
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
            });
            service.peers.lock().insert(cfg.url.clone(), peer.clone());
            tokio::spawn(run_peer(
                service.clone(),
                cfg.url.clone(),
                peer,
                stop.clone(),
            ));
        }
        service
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
    loop {
        service.sync_once(&url, &peer).await;
        let failures = peer.state.lock().consecutive_failures;
        tokio::select! {
            _ = tokio::time::sleep(next_delay(peer.interval, failures)) => {}
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
