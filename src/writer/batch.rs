//! The writer thread's loop: collect a batch from the inbox (lingering
//! when busy), apply it in one write transaction, then answer each request
//! and hand what was stored to the fan-out.

use std::sync::Arc;

use super::foreign::Seen;
use super::{AckSender, Acked, Batching, Committed, FanoutSender, GroupReply, Request};
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use crate::store::{BatchItem, GraphBatchOutcome, Store, StoreError, WriteOutcome};

/// A batch at least this big (a full read burst of one connection) means
/// events queue faster than commits drain them, so the next batch may
/// linger. Measured: at 256 the writer fell back into small batches about
/// half the time under the ingest bench's load; at 64 it stayed out.
const BUSY_BATCH: usize = 64;

/// How often an idle writer looks for events written by another process.
pub(super) const FOREIGN_POLL: std::time::Duration = std::time::Duration::from_millis(200);

pub(super) fn run(
    store: &Store,
    rx: &flume::Receiver<Request>,
    batching: &Batching,
    metrics: &Metrics,
    fanout: Option<&FanoutSender>,
) {
    if let Err(e) = store.recompute_graph_states() {
        tracing::error!(error = %e, "cannot recompute graph states");
    }
    let mut batch: Vec<Request> = Vec::new();
    let mut seen = fanout.map(|_| Seen::start(store));
    let mut busy = false;
    loop {
        let first = match rx.recv_timeout(FOREIGN_POLL) {
            Ok(req) => req,
            Err(flume::RecvTimeoutError::Timeout) => {
                if let (Some(seen), Some(fanout)) = (seen.as_mut(), fanout) {
                    seen.catch_up(store, u64::MAX, fanout);
                }
                continue;
            }
            Err(flume::RecvTimeoutError::Disconnected) => return,
        };
        let items = collect(rx, first, &mut batch, batching, busy);
        busy = items >= BUSY_BATCH;
        let stop = batch.iter().any(|r| matches!(r, Request::Shutdown));
        commit_batch(
            store,
            std::mem::take(&mut batch),
            batching.acks.as_ref(),
            metrics,
            fanout,
            &mut seen,
        );
        // A busy writer whose batches store nothing new (duplicates,
        // refusals) still looks for foreign events on the same clock.
        if let (Some(seen), Some(fanout)) = (seen.as_mut(), fanout) {
            if seen.checked.elapsed() >= FOREIGN_POLL {
                seen.catch_up(store, u64::MAX, fanout);
            }
        }
        if stop {
            // Commit whatever raced in behind the shutdown request too.
            let rest: Vec<Request> = rx.drain().collect();
            if !rest.is_empty() {
                commit_batch(
                    store,
                    rest,
                    batching.acks.as_ref(),
                    metrics,
                    fanout,
                    &mut seen,
                );
            }
            return;
        }
    }
}

/// Fills `batch` with `first` and what follows it: everything already
/// waiting, and when `busy`, what arrives within the linger. A shutdown
/// request ends the batch at once. Returns the number of items.
fn collect(
    rx: &flume::Receiver<Request>,
    first: Request,
    batch: &mut Vec<Request>,
    batching: &Batching,
    busy: bool,
) -> usize {
    let mut deadline =
        (busy && !batching.linger.is_zero()).then(|| std::time::Instant::now() + batching.linger);
    let mut next = Some(first);
    let (mut items, mut held) = (0, 0);
    while let Some(req) = next.take() {
        let stop = matches!(req, Request::Shutdown);
        items += req.items();
        // Only a lingering batch needs to know what it holds.
        if let (Request::Events { events, .. }, Some(budget), Some(_)) =
            (&req, &batching.budget, deadline)
        {
            held += events
                .iter()
                .map(|(e, _)| crate::budget::footprint(e))
                .sum::<usize>();
            if budget.is_mostly(held) {
                deadline = None;
            }
        }
        batch.push(req);
        if stop || items >= batching.max_batch {
            break;
        }
        next = match (rx.try_recv(), deadline) {
            (Ok(req), _) => Some(req),
            (Err(_), Some(deadline)) => rx.recv_deadline(deadline).ok(),
            (Err(_), None) => None,
        };
    }
    items
}

fn commit_batch(
    store: &Store,
    batch: Vec<Request>,
    acks: Option<&AckSender>,
    metrics: &Metrics,
    fanout: Option<&FanoutSender>,
    seen: &mut Option<Seen>,
) {
    let now = crate::event::now();
    let mut items: Vec<BatchItem> = Vec::with_capacity(batch.len());
    for request in &batch {
        match request {
            Request::Events { events, .. } => items.extend(
                events
                    .iter()
                    .map(|(event, json)| BatchItem::Insert { event, json }),
            ),
            Request::Purge => items.push(BatchItem::PurgeExpired { now }),
            Request::UpgradeGraphLogs { key, .. } => {
                items.push(BatchItem::UpgradeGraphLogs { key })
            }
            Request::IfHead {
                event,
                json,
                graph,
                head,
                ..
            } => items.push(BatchItem::InsertIfHead {
                event,
                json,
                graph,
                head: *head,
            }),
            Request::GraphBatch {
                graph,
                t_before,
                events,
                ..
            } => items.push(BatchItem::GraphBatch {
                graph,
                t_before: *t_before,
                events,
            }),
            Request::Bookkeeping { op, .. } => items.push(BatchItem::Bookkeeping(op)),
            Request::Shutdown => {}
        }
    }
    if items.is_empty() {
        return;
    }
    let result = store.apply_batch(&items);
    drop(items);
    let outcomes = match result {
        Ok(outcomes) => outcomes,
        Err(e) => {
            let reason = match e {
                StoreError::Full => Refusal::error("database is full"),
                other => {
                    tracing::error!(error = %other, "write batch failed");
                    Refusal::error("could not store event")
                }
            };
            let failed = WriteOutcome::Refused(reason);
            for req in batch {
                req.fail(&failed, acks);
            }
            return;
        }
    };
    metrics.record_batch(outcomes.len());
    let mut committed = Vec::new();
    let mut acked = Vec::new();
    let mut outcomes = outcomes.into_iter();
    for req in batch {
        match req {
            Request::Events { events, reply } => {
                let mine: Vec<WriteOutcome> = outcomes.by_ref().take(events.len()).collect();
                metrics.count_mesh_author_refusals(&mine);
                for ((event, json), outcome) in events.into_iter().zip(&mine) {
                    if let WriteOutcome::Stored { seq } = *outcome {
                        events_stored(metrics, 1);
                        committed.push(Arc::new(Committed {
                            seq: Some(seq),
                            event,
                            json,
                        }));
                    }
                }
                match reply {
                    GroupReply::Oneshot(reply) => {
                        let _ = reply.send(mine);
                    }
                    GroupReply::Ticket(ticket) => acked.push(Acked {
                        ticket,
                        outcomes: mine,
                    }),
                }
            }
            Request::UpgradeGraphLogs { reply, .. } | Request::Bookkeeping { reply, .. } => {
                let Some(outcome) = outcomes.next() else {
                    break;
                };
                let _ = reply.send(outcome);
            }
            Request::IfHead {
                event, json, reply, ..
            } => {
                let Some(outcome) = outcomes.next() else {
                    break;
                };
                if let WriteOutcome::Stored { seq } = outcome {
                    events_stored(metrics, 1);
                    committed.push(Arc::new(Committed {
                        seq: Some(seq),
                        event,
                        json,
                    }));
                }
                let _ = reply.send(outcome);
            }
            Request::Purge => {
                let Some(outcome) = outcomes.next() else {
                    break;
                };
                if let WriteOutcome::Purged { count } = outcome {
                    metrics
                        .events_purged
                        .fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Request::GraphBatch { events, reply, .. } => {
                let Some(outcome) = outcomes.next() else {
                    break;
                };
                if let WriteOutcome::Graph(GraphBatchOutcome::Appended { seqs, .. }) = &outcome {
                    events_stored(metrics, seqs.len());
                    for ((event, json), seq) in events.into_iter().zip(seqs.iter().copied()) {
                        committed.push(Arc::new(Committed {
                            seq: Some(seq),
                            event,
                            json,
                        }));
                    }
                }
                let _ = reply.send(outcome);
            }
            Request::Shutdown => {}
        }
    }
    // Every ticketed group of this commit in one message, before the
    // fan-out, so a publisher hears OK before its event goes live.
    if let (Some(acks), false) = (acks, acked.is_empty()) {
        let _ = acks.send(acked);
    }
    let Some(fanout) = fanout else { return };
    if let (Some(seen), Some(first)) = (seen.as_mut(), committed.first().and_then(|c| c.seq)) {
        // Anything between what we last saw and our own first seq was
        // written by another process in the meantime: it goes out first.
        seen.catch_up(store, first - 1, fanout);
        seen.last = committed
            .iter()
            .filter_map(|c| c.seq)
            .max()
            .unwrap_or(seen.last);
    }
    if !committed.is_empty() {
        let _ = fanout.send(committed);
    }
}

fn events_stored(metrics: &Metrics, count: usize) {
    metrics
        .events_stored
        .fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn purge() -> Request {
        Request::Purge
    }

    /// Runs `collect` on its own thread; its item count arrives on the
    /// returned channel.
    fn collect_in_background(
        rx: flume::Receiver<Request>,
        max_batch: usize,
        busy: bool,
    ) -> flume::Receiver<usize> {
        let batching = Batching {
            max_batch,
            linger: Duration::from_secs(3600),
            budget: None,
            acks: None,
        };
        collect_from(purge(), rx, batching, busy)
    }

    fn collect_from(
        first: Request,
        rx: flume::Receiver<Request>,
        batching: Batching,
        busy: bool,
    ) -> flume::Receiver<usize> {
        let (done_tx, done) = flume::bounded(1);
        std::thread::spawn(move || {
            let mut batch = Vec::new();
            let _ = done_tx.send(collect(&rx, first, &mut batch, &batching, busy));
        });
        done
    }

    #[test]
    fn an_idle_writer_takes_what_is_waiting_and_does_not_linger() {
        let (tx, rx) = flume::unbounded();
        tx.send(purge()).unwrap();
        let done = collect_in_background(rx, 100, false);
        // The sender stays open, so a lingering collect would not return.
        assert_eq!(done.recv_timeout(Duration::from_secs(30)), Ok(2));
        drop(tx);
    }

    #[test]
    fn a_busy_writer_lingers_for_late_requests_until_the_batch_is_full() {
        let (tx, rx) = flume::unbounded();
        let done = collect_in_background(rx, 3, true);
        assert!(
            done.recv_timeout(Duration::from_millis(100)).is_err(),
            "a busy writer committed without waiting"
        );
        tx.send(purge()).unwrap();
        tx.send(purge()).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(30)), Ok(3));
    }

    #[test]
    fn a_busy_writer_stops_lingering_once_its_batch_holds_half_the_budget() {
        let event = crate::event::Keys::generate().sign(1, 1, vec![], "x".repeat(100));
        let json = event.to_json();
        let first = Request::Events {
            events: vec![(event, json)],
            reply: GroupReply::Ticket(0),
        };
        let batching = Batching {
            max_batch: 100,
            linger: Duration::from_secs(3600),
            budget: Some(crate::budget::IngestBudget::new(1000)),
            acks: None,
        };
        let (tx, rx) = flume::unbounded();
        let done = collect_from(first, rx, batching, true);
        // The sender stays open, so a lingering collect would not return.
        assert_eq!(
            done.recv_timeout(Duration::from_secs(30)),
            Ok(1),
            "a writer lingered holding most of the ingest budget"
        );
        drop(tx);
    }

    #[test]
    fn shutdown_ends_the_linger() {
        let (tx, rx) = flume::unbounded();
        let done = collect_in_background(rx, 100, true);
        tx.send(Request::Shutdown).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(30)), Ok(2));
        drop(tx);
    }
}
