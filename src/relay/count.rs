//! NIP-45 COUNT. A single filter that a fingerprint tree serves (the same
//! filter minus since/until/limit) is answered from the tree's node counts
//! in O(log n), plus a walk over the few kinds the tree leaves out that
//! this client may still see. Anything else walks the indexes, as a REQ
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
    let deadline = Instant::now() + Duration::from_millis(relay.config.limits.count_budget_ms);
    let txn = relay.store.read_txn()?;
    let now = now();
    if let [filter] = filters {
        if let Some(counted) = count_from_tree(relay, client, &txn, filter, now, deadline)? {
            return Ok(counted);
        }
    }
    let mut seen = (filters.len() > 1).then(HashSet::new);
    let mut total = 0;
    for filter in filters {
        total += walk(relay, client, &txn, filter, now, deadline, &mut |seq| {
            seen.as_mut().is_none_or(|s| s.insert(seq))
        })?;
    }
    Ok(total)
}

/// The count of `filter` from the tree that serves it, if one does.
fn count_from_tree(
    relay: &Relay,
    client: &Client,
    txn: &RoTxn,
    filter: &Filter,
    now: u64,
    deadline: Instant,
) -> Result<Option<u64>, StoreError> {
    let unlimited = Filter {
        limit: None,
        ..filter.clone()
    };
    let Some(id) = relay.store.tree_for(txn, &unlimited)? else {
        return Ok(None);
    };
    let window = TreeWindow::new(id, &unlimited);
    relay.metrics.counts_from_tree.fetch_add(1, Relaxed);
    let held = relay
        .store
        .count_in_tree(txn, window, &unlimited, now, deadline)?;
    let scope = scope_filter(&unlimited);
    let kept_out = relay.read_policy.kept_from_tree(client, &scope);
    let Some(rest) = narrowed_to(&unlimited, &kept_out) else {
        return Ok(Some(held));
    };
    let seen_too = walk(relay, client, txn, &rest, now, deadline, &mut |_| true)?;
    Ok(Some(held + seen_too))
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

/// Counts the stored events matching `filter` that `client` may see and
/// `first` accepts (one filter of several: not seen under another).
fn walk(
    relay: &Relay,
    client: &Client,
    txn: &RoTxn,
    filter: &Filter,
    now: u64,
    deadline: Instant,
    first: &mut dyn FnMut(u64) -> bool,
) -> Result<u64, StoreError> {
    relay
        .store
        .query_until(txn, filter, deadline, now, &mut |found| {
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
