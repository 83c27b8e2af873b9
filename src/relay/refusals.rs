//! Every refusal a client is sent (OK false, CLOSED, NEG-ERR, NOTICE), seen
//! where all replies leave: the connection's socket writer. Each one is
//! logged at debug (connection, address, reply type, reason prefix) and
//! counted in /metrics by reply and prefix; a warn summary comes at most
//! once per [`SUMMARY_EVERY`], so a flood of refusals cannot flood the log.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

use crate::metrics::RefusedReply;
use crate::refusal::Refusal;

/// Shortest time between two warn summaries.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// A refusal read back from a reply about to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub reply: RefusedReply,
    pub reason: Refusal,
}

/// The refusal `text` carries, if it is one. Cheap for everything else: a
/// stored or live EVENT, EOSE or OK true is told apart by its first bytes.
pub fn sniff(text: &str) -> Option<Seen> {
    let bytes = text.as_bytes();
    let reply = match bytes.get(2)? {
        b'O' if text.starts_with("[\"OK\",") => {
            // `["OK","<64 hex>",false,...`: anything else is an acceptance.
            if text.get(73..78) != Some("false") {
                return None;
            }
            RefusedReply::Ok
        }
        b'C' if text.starts_with("[\"CLOSED\",") => RefusedReply::Closed,
        b'N' if text.starts_with("[\"NEG-ERR\",") => RefusedReply::NegErr,
        b'N' if text.starts_with("[\"NOTICE\",") => RefusedReply::Notice,
        _ => return None,
    };
    let parts: Vec<Value> = serde_json::from_str(text).ok()?;
    let at = match reply {
        RefusedReply::Notice => 1,
        RefusedReply::Ok => 3,
        RefusedReply::Closed | RefusedReply::NegErr => 2,
    };
    let reason = Refusal::from_wire(parts.get(at)?.as_str()?);
    Some(Seen { reply, reason })
}

/// The relay-wide refusal log.
pub struct RefusalLog {
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Refusals since the last warn summary, and when that was.
    since_summary: AtomicU64,
    last_summary: Mutex<Instant>,
}

impl RefusalLog {
    pub fn new(metrics: std::sync::Arc<crate::metrics::Metrics>) -> RefusalLog {
        RefusalLog {
            metrics,
            since_summary: AtomicU64::new(0),
            last_summary: Mutex::new(Instant::now()),
        }
    }

    /// Logs and counts `text` if it is a refusal to connection `client`.
    pub fn observe(&self, client: u64, ip: IpAddr, text: &str) {
        let Some(seen) = sniff(text) else { return };
        let prefix = seen.reason.prefix.as_str();
        tracing::debug!(
            client,
            %ip,
            reply = seen.reply.name(),
            prefix,
            reason = %seen.reason,
            "refused"
        );
        self.metrics.count_refusal(seen.reply, seen.reason.prefix);
        let pending = self.since_summary.fetch_add(1, Relaxed) + 1;
        let Some(mut last) = self.last_summary.try_lock() else {
            return;
        };
        if last.elapsed() >= SUMMARY_EVERY {
            let window = last.elapsed();
            *last = Instant::now();
            let refused = self.since_summary.swap(0, Relaxed).max(pending);
            tracing::warn!(
                refused,
                seconds = window.as_secs(),
                last_reason = %seen.reason,
                "client messages refused (per-refusal detail at debug level, counts in /metrics)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::messages;

    #[test]
    fn refusals_are_told_from_everything_else() {
        let id = "ab".repeat(32);
        let seen = |text: &str| sniff(text).map(|s| (s.reply, s.reason));
        let bad_sig = Refusal::invalid("bad sig");
        assert_eq!(
            seen(&messages::refused(&id, &bad_sig)),
            Some((RefusedReply::Ok, bad_sig))
        );
        assert_eq!(seen(&messages::accepted(&id)), None);
        let have = Refusal::duplicate("have it");
        assert_eq!(seen(&messages::accepted_noting(&id, &have)), None);
        let slow = Refusal::rate_limited("slow");
        assert_eq!(
            seen(&messages::closed("s", &slow)),
            Some((RefusedReply::Closed, slow))
        );
        let many = Refusal::blocked("too many");
        assert_eq!(
            seen(&messages::neg_err("n", &many)),
            Some((RefusedReply::NegErr, many))
        );
        let not_json = Refusal::invalid("not JSON");
        assert_eq!(
            seen(&messages::notice_msg(&not_json)),
            Some((RefusedReply::Notice, not_json))
        );
        assert_eq!(seen(&messages::EventPrefix::new("s").frame("{}")), None);
        assert_eq!(seen(&messages::eose("s")), None);
        assert_eq!(seen("[\"N"), None);
    }
}
