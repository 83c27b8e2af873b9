//! Storing events a peer sent us, the way the relay stores a client's: write
//! policy, then id and signature on the verify pool, then the writer. Events
//! go in groups (one verify job, one writer request per group), as a
//! client's EVENT burst does (`relay/ingest.rs`): a download of a million
//! events would otherwise pay a queue hop and a wake-up per event twice.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::types::Local;
use crate::event::{now, Event};
use crate::refusal::{Prefix, Refusal};
use crate::store::WriteOutcome;
use crate::verify::verify_group;

/// Most events fetched from a peer that are verified as one job.
pub(super) const GROUP: usize = 16;

/// What became of an event a peer sent us.
pub(super) enum Ingested {
    /// Stored now or already present.
    Stored,
    /// Refused; `remember` when the same event would be refused again (our
    /// policy, a deletion, a newer version), so later runs skip it.
    Refused { reason: Refusal, remember: bool },
}

/// Called once per event with its outcome (after commit when stored).
pub(super) type Done = Arc<dyn Fn([u8; 32], Ingested) + Send + Sync>;

/// Takes `events` (each with the length of its JSON as received) and
/// returns a receiver that resolves once every one of them has an outcome.
pub(super) async fn ingest_group(
    local: &Local,
    events: Vec<(Event, usize)>,
    done: Done,
) -> oneshot::Receiver<()> {
    let (finished, all_done) = oneshot::channel();
    let now = now();
    let mut admitted = Vec::with_capacity(events.len());
    for (event, json_len) in events {
        match local
            .policy
            .as_ref()
            .map(|p| p.check(&event, json_len, now))
        {
            Some(Err(reason)) => done(
                event.id,
                Ingested::Refused {
                    reason,
                    remember: true,
                },
            ),
            _ => admitted.push(event),
        }
    }
    if admitted.is_empty() {
        let _ = finished.send(());
        return all_done;
    }
    let writer = local.writer.clone();
    let job_done = done.clone();
    let runtime = tokio::runtime::Handle::current();
    let queued = local
        .verify
        .run(move || verify_and_write(&writer, admitted, job_done, finished, runtime))
        .await;
    if !queued {
        // The pool is gone (shutting down): `finished` was dropped with the
        // job, so the receiver resolves at once.
        tracing::debug!("verify pool stopped; fetched events dropped");
    }
    all_done
}

/// Runs on a verify thread.
fn verify_and_write(
    writer: &crate::writer::WriterHandle,
    events: Vec<Event>,
    done: Done,
    finished: oneshot::Sender<()>,
    runtime: tokio::runtime::Handle,
) {
    let group = events.into_iter().map(|e| {
        let id = e.id;
        (e, id)
    });
    let (to_store, ids) = verify_group(group.collect(), |id, e| {
        let reason = e.refusal();
        done(
            id,
            Ingested::Refused {
                reason,
                remember: false,
            },
        )
    });
    if to_store.is_empty() {
        let _ = finished.send(());
        return;
    }
    let answer = writer.submit_group(to_store);
    // Outcomes are told off the writer thread, once it answers.
    runtime.spawn(async move {
        let outcomes = answer.await.unwrap_or_default();
        for (id, outcome) in ids.into_iter().zip(&outcomes) {
            done(id, ingested(outcome));
        }
        let _ = finished.send(());
    });
}

fn ingested(outcome: &WriteOutcome) -> Ingested {
    match outcome {
        WriteOutcome::Refused(reason) => Ingested::Refused {
            reason: reason.clone(),
            // Deleted here, or an older version of an address we hold: the
            // peer would offer it on every run.
            // A mesh event by an author outside the mesh set: refused until
            // that author joins (which forgets these refusals).
            remember: matches!(reason.prefix, Prefix::Blocked | Prefix::Duplicate)
                || crate::mesh::is_author_refusal(reason),
        },
        WriteOutcome::Stored { .. }
        | WriteOutcome::Duplicate
        | WriteOutcome::HeadMoved
        | WriteOutcome::Purged { .. }
        | WriteOutcome::Graph(_)
        | WriteOutcome::Recorded => Ingested::Stored,
    }
}
