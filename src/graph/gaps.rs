//! Gaps in a graph's log are fetched, not waited for: when a tx is stored
//! beyond the first gap (it came by a live link or reconciliation ahead of
//! an earlier one), this node asks its peers for a sync at once instead of
//! waiting for the next scheduled run. At most one such request per
//! [`PAUSE`], whatever the number of graphs or txs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::Graphs;
use crate::writer::CommittedChunk;

/// Least time between two syncs asked for because of gaps.
const PAUSE: Duration = Duration::from_secs(2);

/// Watches stored txs for ones placed beyond their graph's head.
pub fn spawn_watcher(graphs: Arc<Graphs>, mut feed: broadcast::Receiver<CommittedChunk>) {
    tokio::spawn(async move {
        let mut last_ask: Option<tokio::time::Instant> = None;
        let mut highest: std::collections::HashMap<String, u64> = Default::default();
        // It holds the graphs (and through them the store): it must end with
        // the node, not only with the feed.
        let stopped = super::stopped(graphs.shutdown.clone());
        tokio::pin!(stopped);
        loop {
            let next = tokio::select! {
                () = &mut stopped => return,
                next = feed.recv() => next,
            };
            let piece = match next {
                Ok(piece) => piece,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            for committed in piece.iter() {
                let event = &committed.event;
                let (Some(graph), Some(t)) =
                    (crate::store::graph_of(event), crate::store::t_of(event))
                else {
                    continue;
                };
                // Txs mostly arrive in order: the store is asked only about a tx
                // that is not the next one this watcher saw for its graph.
                let seen = highest.entry(graph.to_string()).or_insert(0);
                let in_order = *seen != 0 && t == *seen + 1;
                *seen = (*seen).max(t);
                if in_order || last_ask.is_some_and(|at| at.elapsed() < PAUSE) {
                    continue;
                }
                let (store, graph) = (graphs.store.clone(), graph.to_string());
                let head = tokio::task::spawn_blocking(move || {
                    let txn = store.read_txn().ok()?;
                    store.graph_t(&txn, &graph).ok()
                })
                .await
                .ok()
                .flatten();
                if head.is_some_and(|head| t > head + 1) {
                    tracing::debug!(t, ?head, "a gap in a graph log: syncing with peers now");
                    graphs.sync.trigger(None, None);
                    last_ask = Some(tokio::time::Instant::now());
                }
            }
        }
    });
}
