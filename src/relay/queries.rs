//! REQ on one connection: admission (filter errors, id caps, auth and mesh
//! rules; shared with COUNT in `count.rs` and NEG-OPEN), the stored-events
//! phase on the query pool, and the connection's set of open
//! subscriptions. The rate limit is paced before these run, in
//! `dispatch.rs`.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::client::{too_many_queries, Client};
use super::messages;
use super::subscriptions::Subscription;
use super::Relay;
use crate::event::now;
use crate::filter::{Filter, FilterError};
use crate::refusal::Refusal;
use crate::store::Stop;

/// The subscription ids open on one connection.
#[derive(Default)]
pub(super) struct OpenSubs(HashSet<String>);

impl OpenSubs {
    /// Ends subscription `sub_id` if it is open (CLOSE, or a refusal the
    /// client was told about under that id).
    pub(super) fn end(&mut self, relay: &Relay, client: &Client, sub_id: &str) {
        if self.0.remove(sub_id) {
            relay.registry.remove(client.id, sub_id);
        }
    }
}

/// Why `client` may not read with `filters`, if it may not: the ids cap,
/// auth, mesh and restricted kinds. Shared by REQ, COUNT and NEG-OPEN.
pub(super) fn read_refusal(relay: &Relay, client: &Client, filters: &[Filter]) -> Option<Refusal> {
    let max_ids = relay.config.limits.max_ids_per_filter;
    let policy = &relay.read_policy;
    if filters
        .iter()
        .any(|f| f.ids.as_ref().is_some_and(|ids| ids.len() > max_ids))
    {
        return Some(Refusal::invalid(format!(
            "a filter may list at most {max_ids} ids"
        )));
    }
    if policy.require_auth && !client.auth.is_authenticated() {
        return Some(Refusal::auth_required(
            "this relay only serves authenticated users",
        ));
    }
    if let Some(reason) = filters.iter().find_map(|f| policy.mesh_refusal(client, f)) {
        return Some(reason);
    }
    if !client.auth.is_authenticated() && filters.iter().any(|f| policy.needs_auth(f)) {
        return Some(Refusal::auth_required(
            "these kinds are only served to their parties",
        ));
    }
    None
}

/// Shared REQ/COUNT admission: filter errors and auth. Returns the
/// filters or sends the CLOSED itself.
pub(super) fn admit_query(
    relay: &Relay,
    client: &Client,
    sub_id: &str,
    filters: Result<Vec<Filter>, FilterError>,
) -> Option<Vec<Filter>> {
    let refusal = match &filters {
        Err(e) => Some(e.refusal()),
        Ok(list) => read_refusal(relay, client, list),
    };
    match refusal {
        Some(reason) => {
            client.outbox.send(messages::closed(sub_id, &reason));
            None
        }
        None => filters.ok(),
    }
}

pub(super) fn handle_req(
    relay: &Arc<Relay>,
    client: &Arc<Client>,
    subs: &mut OpenSubs,
    sub_id: String,
    filters: Result<Vec<Filter>, FilterError>,
) {
    // A refused REQ closes an open subscription of the same id: the client
    // was told CLOSED, so nothing more may arrive under it.
    let Some(filters) = admit_query(relay, client, &sub_id, filters) else {
        subs.end(relay, client, &sub_id);
        return;
    };
    let Some(permit) = client.query_permit() else {
        client
            .outbox
            .send(messages::closed(&sub_id, &too_many_queries()));
        subs.end(relay, client, &sub_id);
        return;
    };
    if !subs.0.contains(&sub_id) && subs.0.len() >= relay.config.limits.max_subscriptions {
        let reason = Refusal::blocked(format!(
            "too many subscriptions (max {})",
            relay.config.limits.max_subscriptions
        ));
        client.outbox.send(messages::closed(&sub_id, &reason));
        return;
    }
    relay.metrics.reqs_total.fetch_add(1, Relaxed);
    subs.0.insert(sub_id.clone());
    let sub = Arc::new(Subscription::new(client.clone(), sub_id, filters));
    relay.registry.insert(sub.clone());
    let relay = relay.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let query_sub = sub.clone();
        let done = on_query_pool(&relay, move |relay| run_req(relay, &query_sub)).await;
        if !matches!(done, Some(Ok(()))) {
            relay.registry.remove(sub.client.id, &sub.id);
            sub.client
                .outbox
                .send(messages::closed(&sub.id, &Refusal::error("query failed")));
        }
    });
}

/// Runs `work` on the blocking pool once a query slot is free; `None` when
/// the relay is shutting down or the work panicked.
pub(super) async fn on_query_pool<T: Send + 'static>(
    relay: &Arc<Relay>,
    work: impl FnOnce(&Relay) -> T + Send + 'static,
) -> Option<T> {
    let _permit = relay.query_slots.clone().acquire_owned().await.ok()?;
    let relay = relay.clone();
    tokio::task::spawn_blocking(move || work(&relay)).await.ok()
}

/// The stored-events phase of a REQ, on the blocking pool.
fn run_req(relay: &Relay, sub: &Subscription) -> Result<(), crate::store::StoreError> {
    let txn = relay.store.read_txn()?;
    let snapshot = relay.store.last_seq(&txn)?;
    let now = now();
    let max_limit = relay.config.limits.max_limit;
    let mut seen = (sub.filters.len() > 1).then(HashSet::new);
    let mut frames = Frames::new(sub);
    for filter in &sub.filters {
        // Asked by id: every one of them (NDK fetches what reconciliation
        // said it needs in one REQ); a smaller `limit` still counts.
        let limit = match &filter.ids {
            Some(ids) => filter.limit.unwrap_or(u64::MAX).min(ids.len() as u64),
            None => filter.limit.unwrap_or(max_limit).min(max_limit),
        };
        relay.store.query(&txn, filter, limit, now, &mut |found| {
            if sub.is_cancelled() {
                return Err(Stop);
            }
            if !relay
                .read_policy
                .can_see_stored(&sub.client, &found.header, found.json)
            {
                return Ok(false);
            }
            if let Some(seen) = seen.as_mut() {
                if !seen.insert(found.seq) {
                    return Ok(false);
                }
            }
            frames.push(sub.events.frame(found.json));
            Ok(true)
        })?;
    }
    frames.send();
    drop(txn);
    sub.finish_query(snapshot);
    Ok(())
}

/// EVENT messages of one subscription's stored phase, queued on its
/// outbox in groups: one channel send and one wake-up of the socket writer
/// per group instead of per event. The first event goes alone (a sparse
/// scan still shows its first result at once); a group ends at
/// [`FRAMES_PER_SEND`] events or [`BYTES_PER_SEND`] bytes, so its bytes
/// are counted against the connection's budget as they grow; a group
/// still held when the subscription is cancelled (CLOSE, a replacing REQ)
/// is dropped, so nothing of it arrives under a reused id.
struct Frames<'a> {
    sub: &'a Subscription,
    texts: Vec<String>,
    bytes: usize,
    sent_any: bool,
}

/// As many as the socket writer writes before one flush.
const FRAMES_PER_SEND: usize = 64;

/// Bytes held before a group is queued.
const BYTES_PER_SEND: usize = 256 * 1024;

impl<'a> Frames<'a> {
    fn new(sub: &'a Subscription) -> Frames<'a> {
        Frames {
            sub,
            texts: Vec::with_capacity(FRAMES_PER_SEND),
            bytes: 0,
            sent_any: false,
        }
    }

    fn push(&mut self, text: String) {
        self.bytes += text.len();
        self.texts.push(text);
        if !self.sent_any || self.texts.len() >= FRAMES_PER_SEND || self.bytes >= BYTES_PER_SEND {
            self.send();
        }
    }

    fn send(&mut self) {
        let group = std::mem::replace(&mut self.texts, Vec::with_capacity(FRAMES_PER_SEND));
        self.bytes = 0;
        self.sent_any = true;
        if !self.sub.is_cancelled() {
            self.sub.client.outbox.send_all(group);
        }
    }
}
