//! NIP-45 COUNT. A single filter that a fingerprint tree serves (the same
//! filter minus since/until/limit) is answered from the tree's node counts
//! in O(log n), plus a walk over the few kinds the tree leaves out that
//! this client may still see; a single filter of kinds (or authors and
//! kinds) that names no restricted kind is counted from its index keys
//! without reading an event. Anything else walks the indexes, as a REQ
//! without a limit would, under `limits.count_budget_ms`: past it the
//! client gets CLOSED with a reason instead of a query thread held for as
//! long as the store is big. A count is what a REQ without `limit` would
//! return; `limit` is not applied.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heed::RoTxn;

use super::client::{too_many_queries, Client};
use super::messages;
use super::queries::{admit_query, on_query_pool};
use super::Relay;
use crate::event::now;
use crate::filter::{Filter, FilterError};
use crate::refusal::Refusal;
use crate::store::{scope_filter, Stop, StoreError, TreeWindow};

pub(super) fn handle_count(
    relay: &Arc<Relay>,
    client: &Arc<Client>,
    sub_id: String,
    filters: Result<Vec<Filter>, FilterError>,
) {
    let Some(filters) = admit_query(relay, client, &sub_id, filters) else {
        return;
    };
    let Some(permit) = client.query_permit() else {
        client
            .outbox
            .send(messages::closed(&sub_id, &too_many_queries()));
        return;
    };
    let relay = relay.clone();
    let client = client.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let query_client = client.clone();
        let result =
            on_query_pool(&relay, move |relay| count(relay, &query_client, &filters)).await;
        let budget = relay.config.limits.count_budget_ms;
        let reply = match result {
            Some(Ok(n)) => messages::count(&sub_id, n),
            Some(Err(StoreError::OutOfTime)) => {
                relay.metrics.counts_out_of_time.fetch_add(1, Relaxed);
                messages::closed(&sub_id, &out_of_time(budget))
            }
            _ => messages::closed(&sub_id, &Refusal::error("count failed")),
        };
        client.outbox.send(reply);
    });
}

/// The refusal of a COUNT that would take longer than the budget.
fn out_of_time(budget_ms: u64) -> Refusal {
    Refusal::blocked(format!(
        "counting this would take over {budget_ms} ms; narrow the filter, or ask the \
         operator for a fingerprint tree with it (echorelay negentropy add)"
    ))
}

fn count(relay: &Relay, client: &Client, filters: &[Filter]) -> Result<u64, StoreError> {
    let txn = relay.store.read_txn()?;
    let counting = Counting {
        relay,
        client,
        txn: &txn,
        now: now(),
        deadline: Instant::now() + Duration::from_millis(relay.config.limits.count_budget_ms),
    };
    if let [filter] = filters {
        if let Some(counted) = counting.in_tree(filter)? {
            return Ok(counted);
        }
        if let Some(counted) = counting.by_keys(filter)? {
            return Ok(counted);
        }
    }
    let mut seen = (filters.len() > 1).then(HashSet::new);
    let mut total = 0;
    for filter in filters {
        total += counting.walk(filter, &mut |seq| {
            seen.as_mut().is_none_or(|s| s.insert(seq))
        })?;
    }
    Ok(total)
}

/// One COUNT's view: who asks, in which snapshot, until when.
struct Counting<'a> {
    relay: &'a Relay,
    client: &'a Client,
    txn: &'a RoTxn<'a>,
    now: u64,
    deadline: Instant,
}

impl Counting<'_> {
    /// The count of `filter` from the tree that serves it, if one does.
    fn in_tree(&self, filter: &Filter) -> Result<Option<u64>, StoreError> {
        let unlimited = Filter {
            limit: None,
            ..filter.clone()
        };
        let store = &self.relay.store;
        let Some(id) = store.tree_for(self.txn, &unlimited)? else {
            return Ok(None);
        };
        self.relay.metrics.counts_from_tree.fetch_add(1, Relaxed);
        let window = TreeWindow::new(id, &unlimited);
        let held = store.count_in_tree(self.txn, window, &unlimited, self.now, self.deadline)?;
        let scope = scope_filter(&unlimited);
        let kept_out = self.relay.read_policy.kept_from_tree(self.client, &scope);
        let Some(rest) = narrowed_to(&unlimited, &kept_out) else {
            return Ok(Some(held));
        };
        Ok(Some(held + self.walk(&rest, &mut |_| true)?))
    }

    /// The count of a filter of kinds (and authors) from its index keys,
    /// when every kind it names is one any client that got this far sees
    /// whole: not a restricted kind (mesh kinds passed admission only for
    /// a mesh node, which sees them all).
    fn by_keys(&self, filter: &Filter) -> Result<Option<u64>, StoreError> {
        let policy = &self.relay.read_policy;
        let kinds = filter.kinds.as_deref().unwrap_or_default();
        if kinds.iter().any(|k| policy.is_restricted(*k)) {
            return Ok(None);
        }
        let counted =
            self.relay
                .store
                .count_from_keys(self.txn, filter, self.now, self.deadline)?;
        if counted.is_some() {
            self.relay.metrics.counts_from_keys.fetch_add(1, Relaxed);
        }
        Ok(counted)
    }

    /// Counts the stored events matching `filter` that the client may see
    /// and `first` accepts (one filter of several: not seen under another).
    fn walk(&self, filter: &Filter, first: &mut dyn FnMut(u64) -> bool) -> Result<u64, StoreError> {
        let (relay, client) = (self.relay, self.client);
        relay
            .store
            .query_until(self.txn, filter, self.deadline, self.now, &mut |found| {
                if client.outbox.is_overflowed() {
                    return Err(Stop);
                }
                if !relay
                    .read_policy
                    .can_see_stored(client, &found.header, found.json)
                {
                    return Ok(false);
                }
                Ok(first(found.seq))
            })
    }
}

/// `filter` narrowed to `kinds`; `None` when nothing is left.
fn narrowed_to(filter: &Filter, kinds: &[u16]) -> Option<Filter> {
    let kinds: Vec<u16> = match &filter.kinds {
        Some(asked) => asked
            .iter()
            .filter(|k| kinds.contains(k))
            .copied()
            .collect(),
        None => kinds.to_vec(),
    };
    (!kinds.is_empty()).then(|| Filter {
        kinds: Some(kinds),
        ..filter.clone()
    })
}
