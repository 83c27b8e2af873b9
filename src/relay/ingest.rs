//! The EVENT path of one connection: admission on the connection's task
//! (parse, auth and write policy; the rate is paced before, in
//! `connection.rs`), then id + signature checks on
//! the verify pool, then the writer, then the OKs.
//!
//! EVENTs travel in groups. The reader collects the EVENTs of one read
//! burst (what the socket already holds) into a [`Burst`]; the burst goes to
//! the verify pool in jobs of up to [`JOB_EVENTS`], each job hands its valid
//! events to the writer as one group, and the group's OKs come back to the
//! socket writer in one queue message. Under load this replaces four queue
//! hops and wake-ups per event with four per group; a lone EVENT is a group
//! of one and waits for nothing.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::client::Client;
use super::messages;
use super::Relay;
use crate::event::{now, Event, KindClass};
use crate::refusal::Refusal;
use crate::verify::verify_group;
use crate::writer::Committed;

/// Most events one verify job checks: one read burst's worth. Measured
/// (docs/PERFORMANCE.md): 64 beat 16 and 32 by 6–13 % in throughput; a
/// single connection still spreads over every verify thread, one burst
/// per job.
const JOB_EVENTS: usize = 64;

/// Admitted EVENTs of one read burst, waiting to be verified together.
#[derive(Default)]
pub(super) struct Burst {
    /// Each event with its id in hex (for the OK).
    events: Vec<(Event, String)>,
}

/// The refusal of an event: OK false, or a NOTICE when its id is unknown.
pub(super) fn refusal(relay: &Relay, id: Option<&str>, why: &Refusal) -> String {
    relay.metrics.reject(why.prefix);
    match id {
        Some(id) => messages::refused(id, why),
        None => messages::notice_msg(why),
    }
}

/// Checks what can be checked without the signature and queues the event in
/// `burst`; refusals are answered at once.
pub(super) fn admit(relay: &Relay, client: &Client, burst: &mut Burst, raw: &RawValue) {
    match check(relay, client, raw) {
        Ok(admitted) => burst.events.push(admitted),
        Err(reply) => {
            client.outbox.send(reply);
        }
    }
}

fn check(relay: &Relay, client: &Client, raw: &RawValue) -> Result<(Event, String), String> {
    let event = Event::from_raw(raw).map_err(|e| {
        let id = messages::salvage_event_id(raw);
        refusal(relay, id.as_deref(), &e.refusal())
    })?;
    let id_hex = event.id_hex();
    let refuse = |why: Refusal| refusal(relay, Some(&id_hex), &why);
    if event.kind == super::auth::AUTH_KIND {
        // NIP-42: auth events are never published or relayed.
        return Err(refuse(Refusal::invalid(
            "kind 22242 is only accepted in an AUTH message",
        )));
    }
    if relay.config.auth.require_for_write && !client.auth.is_authenticated() {
        return Err(refuse(Refusal::auth_required(
            "this relay only accepts events from authenticated users",
        )));
    }
    if crate::mesh::is_mesh_kind(event.kind) && !relay.read_policy.is_mesh_node(client) {
        let detail = "graph and echo events are accepted only from mesh nodes";
        return Err(refuse(if client.auth.is_authenticated() {
            Refusal::restricted(detail)
        } else {
            Refusal::auth_required(detail)
        }));
    }
    if let Err(reason) = relay.write_policy.check(&event, raw.get().len(), now()) {
        return Err(refuse(reason));
    }
    Ok((event, id_hex))
}

/// Hands the burst to the verify pool, waiting while the pool is full (the
/// connection stops reading: backpressure to the sender).
pub(super) async fn flush(relay: &Arc<Relay>, client: &Arc<Client>, burst: &mut Burst) {
    while !burst.events.is_empty() {
        if relay.verify.is_closed() {
            // Shutting down: every remaining event gets its OK false.
            let reason = &Refusal::shutting_down();
            let replies = burst
                .events
                .drain(..)
                .map(|(_, id_hex)| refusal(relay, Some(&id_hex), reason))
                .collect();
            client.outbox.send_all(replies);
            return;
        }
        let rest = burst.events.split_off(JOB_EVENTS.min(burst.events.len()));
        let job = std::mem::replace(&mut burst.events, rest);
        let bytes = job
            .iter()
            .map(|(event, _)| crate::budget::footprint(event))
            .sum();
        let queued = match relay.ingest_budget.reserve(bytes).await {
            Some(room) => {
                let (job_relay, job_client) = (relay.clone(), client.clone());
                relay
                    .verify
                    .run(move || verify_and_write(&job_relay, job_client, job, room))
                    .await
            }
            None => false,
        };
        if !queued {
            burst.events.clear();
            client
                .outbox
                .send(messages::notice_msg(&Refusal::shutting_down()));
        }
    }
}

/// Runs on a verify thread: checks each signature, sends ephemeral events
/// straight to the fan-out and the rest to the writer as one group. `room`
/// (the group's share of the ingest budget) is released after the commit.
fn verify_and_write(
    relay: &Arc<Relay>,
    client: Arc<Client>,
    events: Vec<(Event, String)>,
    room: crate::budget::Room,
) {
    let mut replies = Vec::new();
    let (valid, ids) = verify_group(events, |id_hex, e| {
        replies.push(refusal(relay, Some(&id_hex), &e.refusal()));
    });
    let mut ephemeral = Vec::new();
    let mut to_store = Vec::with_capacity(valid.len());
    let mut stored_ids = Vec::with_capacity(valid.len());
    for ((event, json), id_hex) in valid.into_iter().zip(ids) {
        if event.class() == KindClass::Ephemeral {
            relay.metrics.events_ephemeral.fetch_add(1, Relaxed);
            ephemeral.push(Arc::new(Committed {
                seq: None,
                event,
                json,
            }));
            replies.push(messages::accepted(&id_hex));
        } else {
            to_store.push((event, json));
            stored_ids.push(id_hex);
        }
    }
    if !ephemeral.is_empty() {
        let _ = relay.fanout.send(ephemeral);
    }
    client.outbox.send_all(replies);
    if to_store.is_empty() {
        return;
    }
    let ticket = relay.acks.expect(client, stored_ids, room);
    relay.writer.submit_ticketed(to_store, ticket);
}
