//! Per-node sync statistics for `/echo/status`: the operation in progress
//! (push or pull, sync id, start, progress) and the last 24 hours of
//! finished ones, kept in memory and saved to LMDB (`echo_stats`) after
//! each operation so they survive restarts.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::time;
use crate::store::Store;

const DAY_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Finished {
    end_ms: u64,
    duration_ms: u64,
    ok: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Current {
    kind: String,
    sync_id: String,
    start_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct NodeStats {
    finished: Vec<Finished>,
    last_success_ms: u64,
    #[serde(skip)]
    current: Option<Current>,
}

/// Statistics of every node seen.
pub struct Stats {
    store: Arc<Store>,
    /// Saves the statistics (bookkeeping through the node's one writer).
    writer: crate::writer::WriterHandle,
    nodes: Mutex<HashMap<String, NodeStats>>,
}

/// An operation in progress; [`Stats::finish`] ends it.
pub struct Operation {
    node_id: String,
    started: std::time::Instant,
}

impl Stats {
    pub fn new(store: Arc<Store>, writer: crate::writer::WriterHandle) -> Stats {
        Stats {
            store,
            writer,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    fn load(&self, node_id: &str) -> Option<NodeStats> {
        let bytes = self.store.echo_stats(node_id).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Starts a push or pull for `node_id`, whose request arrived at `started`.
    pub fn begin(
        &self,
        node_id: &str,
        kind: &str,
        sync_id: &str,
        started: std::time::Instant,
    ) -> Operation {
        let loaded = self.load(node_id);
        let mut nodes = self.nodes.lock();
        let stats = nodes
            .entry(node_id.to_string())
            .or_insert_with(|| loaded.unwrap_or_default());
        stats.current = Some(Current {
            kind: kind.to_string(),
            sync_id: sync_id.to_string(),
            start_ms: crate::event::now_ms(),
        });
        Operation {
            node_id: node_id.to_string(),
            started,
        }
    }

    /// Ends an operation and saves the node's statistics.
    pub fn finish(&self, op: Operation, ok: bool) -> u64 {
        let duration_ms = op.started.elapsed().as_millis() as u64;
        let now = crate::event::now_ms();
        let saved = {
            let mut nodes = self.nodes.lock();
            let stats = nodes.entry(op.node_id.clone()).or_default();
            stats.current = None;
            stats.finished.retain(|f| f.end_ms + DAY_MS > now);
            stats.finished.push(Finished {
                end_ms: now,
                duration_ms,
                ok,
            });
            if ok {
                stats.last_success_ms = now;
            }
            serde_json::to_vec(stats).unwrap_or_default()
        };
        let save = crate::store::Bookkeeping::EchoStats {
            node: op.node_id,
            stats: saved,
        };
        self.writer.record_detached(save, "echo statistics");
        duration_ms
    }

    /// The seed's status reply for a node; `None` if it was never seen.
    pub fn status(&self, node_id: &str, sync_id: Option<&str>) -> Option<Value> {
        let loaded = self.load(node_id);
        let mut nodes = self.nodes.lock();
        if !nodes.contains_key(node_id) {
            nodes.insert(node_id.to_string(), loaded?);
        }
        let stats = nodes.get(node_id)?;
        let now = crate::event::now_ms();
        let recent: Vec<&Finished> = stats
            .finished
            .iter()
            .filter(|f| f.end_ms + DAY_MS > now)
            .collect();
        let count = recent.len() as u64;
        let failures = recent.iter().filter(|f| !f.ok).count() as f64;
        let current = stats
            .current
            .as_ref()
            .filter(|c| sync_id.is_none_or(|id| id == c.sync_id));
        let status = match (current, recent.last()) {
            (Some(_), _) => "active",
            (None, Some(last)) if !last.ok => "error",
            _ => "idle",
        };
        Some(json!({
            "status": status,
            "current_operation": current.map(|c| json!({
                "type": c.kind,
                "sync_id": c.sync_id,
                "start_time": time::format(c.start_ms),
                "progress": 0.0,
            })),
            "metrics": {
                "last_successful_sync": (stats.last_success_ms > 0).then(|| time::format(stats.last_success_ms)),
                "sync_count_24h": count,
                "average_duration_ms": recent.iter().map(|f| f.duration_ms).sum::<u64>().checked_div(count).unwrap_or(0),
                "error_rate": if count == 0 { 0.0 } else { failures / count as f64 },
            },
        }))
    }
}
