//! Process-wide counters, rendered in the Prometheus text format on
//! `/metrics`. Plain atomics: every hot path touches them.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::refusal::Prefix;

/// One counter per refusal prefix.
const PREFIXES: usize = Prefix::ALL.len();

/// The reply a refusal was sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedReply {
    Ok,
    Closed,
    NegErr,
    Notice,
}

const REFUSED_REPLIES: [RefusedReply; 4] = [
    RefusedReply::Ok,
    RefusedReply::Closed,
    RefusedReply::NegErr,
    RefusedReply::Notice,
];

impl RefusedReply {
    pub fn name(self) -> &'static str {
        match self {
            RefusedReply::Ok => "OK",
            RefusedReply::Closed => "CLOSED",
            RefusedReply::NegErr => "NEG-ERR",
            RefusedReply::Notice => "NOTICE",
        }
    }
}

/// Upper bounds of the write-batch-size histogram buckets.
const BATCH_BUCKETS: [u64; 8] = [1, 4, 16, 64, 256, 1024, 4096, 16384];

#[derive(Default)]
pub struct Metrics {
    pub events_stored: AtomicU64,
    pub events_ephemeral: AtomicU64,
    rejected: [AtomicU64; PREFIXES],
    /// Refusals sent to clients, by reply and reason prefix.
    refusals: [[AtomicU64; PREFIXES]; 4],
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_dropped_slow: AtomicU64,
    pub reqs_total: AtomicU64,
    /// Messages whose connection was paused for the rate limit.
    pub messages_paced: AtomicU64,
    pub events_purged: AtomicU64,
    /// COUNTs answered from a fingerprint tree, and COUNTs refused for
    /// passing `limits.count_budget_ms`.
    pub counts_from_tree: AtomicU64,
    /// COUNTs answered from index keys alone (a filter of kinds and authors).
    pub counts_from_keys: AtomicU64,
    pub counts_out_of_time: AtomicU64,
    /// Mesh-kind events refused because their author is not in the mesh
    /// set, whatever path brought them (client, sync, live link, import).
    pub mesh_author_refused: AtomicU64,
    /// Open echo change streams, and those dropped for reading too slowly.
    pub echo_streams: AtomicU64,
    pub echo_streams_dropped_slow: AtomicU64,
    batch_count: AtomicU64,
    batch_sum: AtomicU64,
    batch_buckets: [AtomicU64; 8],
}

impl Metrics {
    /// An event refused (or a duplicate), by prefix.
    pub fn reject(&self, why: Prefix) {
        self.rejected[why.index()].fetch_add(1, Relaxed);
    }

    pub fn count_refusal(&self, reply: RefusedReply, why: Prefix) {
        let r = REFUSED_REPLIES
            .iter()
            .position(|x| *x == reply)
            .unwrap_or(0);
        self.refusals[r][why.index()].fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, which: Prefix) -> u64 {
        self.rejected[which.index()].load(Relaxed)
    }

    pub fn count_mesh_author_refusals(&self, outcomes: &[crate::store::WriteOutcome]) {
        let refused = outcomes
            .iter()
            .filter(|o| {
                matches!(o, crate::store::WriteOutcome::Refused(r) if crate::mesh::is_author_refusal(r))
            })
            .count();
        if refused > 0 {
            self.mesh_author_refused.fetch_add(refused as u64, Relaxed);
        }
    }

    pub fn record_batch(&self, size: usize) {
        let size = size as u64;
        self.batch_count.fetch_add(1, Relaxed);
        self.batch_sum.fetch_add(size, Relaxed);
        for (i, bound) in BATCH_BUCKETS.iter().enumerate() {
            if size <= *bound {
                self.batch_buckets[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self, stored_total: u64) -> String {
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        counter(
            "echorelay_events_in_store",
            "Events currently stored.",
            "gauge",
            stored_total,
        );
        counter(
            "echorelay_events_stored_total",
            "Events stored since start.",
            "counter",
            self.events_stored.load(Relaxed),
        );
        counter(
            "echorelay_events_ephemeral_total",
            "Ephemeral events fanned out.",
            "counter",
            self.events_ephemeral.load(Relaxed),
        );
        counter(
            "echorelay_events_purged_total",
            "Expired events purged.",
            "counter",
            self.events_purged.load(Relaxed),
        );
        counter(
            "echorelay_counts_from_tree_total",
            "COUNTs answered from a fingerprint tree's node counts.",
            "counter",
            self.counts_from_tree.load(Relaxed),
        );
        counter(
            "echorelay_counts_from_keys_total",
            "COUNTs of kinds (and authors) answered from index keys without reading events.",
            "counter",
            self.counts_from_keys.load(Relaxed),
        );
        counter(
            "echorelay_counts_out_of_time_total",
            "COUNTs refused for taking longer than limits.count_budget_ms.",
            "counter",
            self.counts_out_of_time.load(Relaxed),
        );
        counter(
            "echorelay_connections",
            "Open WebSocket connections.",
            "gauge",
            self.connections_open.load(Relaxed),
        );
        counter(
            "echorelay_connections_total",
            "WebSocket connections accepted.",
            "counter",
            self.connections_total.load(Relaxed),
        );
        counter(
            "echorelay_connections_dropped_slow_total",
            "Connections dropped for exceeding their outbound limit.",
            "counter",
            self.connections_dropped_slow.load(Relaxed),
        );
        counter(
            "echorelay_mesh_author_refused_total",
            "Graph and echo events refused because their author is not in the mesh set.",
            "counter",
            self.mesh_author_refused.load(Relaxed),
        );
        counter(
            "echorelay_echo_streams",
            "Open echo change streams (GET /echo/stream).",
            "gauge",
            self.echo_streams.load(Relaxed),
        );
        counter(
            "echorelay_echo_streams_dropped_slow_total",
            "Echo change streams dropped because their reader fell too far behind.",
            "counter",
            self.echo_streams_dropped_slow.load(Relaxed),
        );
        counter(
            "echorelay_reqs_total",
            "REQ messages served.",
            "counter",
            self.reqs_total.load(Relaxed),
        );
        counter(
            "echorelay_messages_paced_total",
            "EVENT/REQ/COUNT messages whose connection was paused (not read) for the rate limit.",
            "counter",
            self.messages_paced.load(Relaxed),
        );
        let _ = writeln!(out, "# HELP echorelay_events_rejected_total Events refused, by reason.\n# TYPE echorelay_events_rejected_total counter");
        for prefix in Prefix::ALL {
            let _ = writeln!(
                out,
                "echorelay_events_rejected_total{{reason=\"{}\"}} {}",
                prefix.as_str(),
                self.rejected(prefix)
            );
        }
        let _ = writeln!(out, "# HELP echorelay_refusals_total Refusals sent to clients (OK false, CLOSED, NEG-ERR, NOTICE), by reply and reason prefix.\n# TYPE echorelay_refusals_total counter");
        for (r, reply) in REFUSED_REPLIES.iter().enumerate() {
            for prefix in Prefix::ALL {
                let _ = writeln!(
                    out,
                    "echorelay_refusals_total{{reply=\"{}\",reason=\"{}\"}} {}",
                    reply.name(),
                    prefix.as_str(),
                    self.refusals[r][prefix.index()].load(Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# HELP echorelay_write_batch_size Events per LMDB write transaction.\n# TYPE echorelay_write_batch_size histogram");
        for (i, bound) in BATCH_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "echorelay_write_batch_size_bucket{{le=\"{bound}\"}} {}",
                self.batch_buckets[i].load(Relaxed)
            );
        }
        let count = self.batch_count.load(Relaxed);
        let _ = writeln!(
            out,
            "echorelay_write_batch_size_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "echorelay_write_batch_size_sum {}",
            self.batch_sum.load(Relaxed)
        );
        let _ = writeln!(out, "echorelay_write_batch_size_count {count}");
        out
    }
}
