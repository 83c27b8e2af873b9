//! Counting events without reading them: a fingerprint tree's internal
//! nodes hold the size of everything below them, so the number of events a
//! tree holds between two timestamps is two root-to-leaf descents. The tree
//! still holds events that expired since the last purge (NIP-40); those are
//! few (the purge runs every `store.purge_interval_secs`) and are found
//! through the expiry index and taken off. A filter of kinds only (or of
//! authors and kinds, scanned as pairs) is counted from its index keys
//! without reading an event.

use std::time::Instant;

use heed::RoTxn;

use super::query::{matching_json, Clock, IndexName, Merge, QueryPlan};
use super::schema::{self, Header};
use super::scopes::{scope_filter, TreeWindow};
use super::{Store, StoreError};
use crate::filter::Filter;
use crate::negentropy::{Storage, SubRange};

impl Store {
    /// How many of the events a REQ with `filter` (minus its `limit`) would
    /// return are held by tree `window`, which [`Store::tree_for`] chose
    /// for `filter`: the tree's count inside the window, less the expired
    /// events it holds that match. `OutOfTime` if counting those passes
    /// `deadline`.
    pub fn count_in_tree(
        &self,
        txn: &RoTxn,
        window: TreeWindow,
        filter: &Filter,
        now: u64,
        deadline: Instant,
    ) -> Result<u64, StoreError> {
        let reader = self.tree_reader(txn, window.id)?;
        let held = if window.since.is_none() && window.until.is_none() {
            reader.size()?
        } else {
            SubRange::new(&reader, window.since, window.until)?.size()?
        };
        let scope = scope_filter(filter);
        let in_tree = |kind| self.tree_may_hold(&scope, kind);
        let expired = self.expired_matching(txn, filter, now, deadline, &in_tree)?;
        Ok((held as u64).saturating_sub(expired))
    }

    /// How many events a REQ with `filter` (minus its `limit`) would
    /// return, counted from index keys alone, if its plan's index holds
    /// every condition it has: kinds only, or authors and kinds scanned as
    /// pairs, with since/until inside the keys. `None` for any other
    /// filter. Who may see the kinds is the caller's question.
    pub fn count_from_keys(
        &self,
        txn: &RoTxn,
        filter: &Filter,
        now: u64,
        deadline: Instant,
    ) -> Result<Option<u64>, StoreError> {
        if filter.ids.is_some() || !filter.tags.is_empty() || filter.is_empty_match() {
            return Ok(None);
        }
        let QueryPlan::Scan { index, prefixes } = QueryPlan::for_filter(filter) else {
            return Ok(None);
        };
        if !matches!(index, IndexName::Kind | IndexName::PubkeyKind) {
            return Ok(None);
        }
        let since = filter.since.unwrap_or(0);
        let until = filter.until.unwrap_or(u64::MAX);
        let mut keys = Merge::new(self, txn, index.db(), &prefixes, since, until)?;
        let mut clock = Clock::new(deadline);
        let mut counted = 0u64;
        while keys.next()?.is_some() {
            clock.tick()?;
            counted += 1;
        }
        let expired = self.expired_matching(txn, filter, now, deadline, &|_| true)?;
        Ok(Some(counted.saturating_sub(expired)))
    }

    /// Expired, not yet purged events matching `filter` whose kind `held`
    /// accepts.
    fn expired_matching(
        &self,
        txn: &RoTxn,
        filter: &Filter,
        now: u64,
        deadline: Instant,
        held: &dyn Fn(u16) -> bool,
    ) -> Result<u64, StoreError> {
        let mut clock = Clock::new(deadline);
        let mut expired = 0;
        for entry in self.dbs.by_expiry.iter(txn)? {
            clock.tick()?;
            let (key, _) = entry?;
            let (expiration, seq) =
                schema::time_seq_suffix(key).ok_or(StoreError::Corrupt("expiry key"))?;
            if expiration > now {
                break;
            }
            let value = self
                .dbs
                .events
                .get(txn, &schema::seq_key(seq))?
                .ok_or(StoreError::Corrupt("index points at a missing event"))?;
            let (header, json) =
                Header::decode(value).ok_or(StoreError::Corrupt("event header"))?;
            if held(header.kind) && matching_json(filter, &header, json)?.is_some() {
                expired += 1;
            }
        }
        Ok(expired)
    }
}
