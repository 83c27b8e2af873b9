//! Counting events without reading them: a fingerprint tree's internal
//! nodes hold the size of everything below them, so the number of events a
//! tree holds between two timestamps is two root-to-leaf descents. The tree
//! still holds events that expired since the last purge (NIP-40); those are
//! few (the purge runs every `store.purge_interval_secs`) and are found
//! through the expiry index and taken off.

use std::time::Instant;

use heed::RoTxn;

use super::query::{matching_json, Clock};
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
        let expired = self.expired_in_tree(txn, filter, now, deadline)?;
        Ok((held as u64).saturating_sub(expired))
    }

    /// Expired, not yet purged events matching `filter` that a tree with
    /// its scope holds.
    fn expired_in_tree(
        &self,
        txn: &RoTxn,
        filter: &Filter,
        now: u64,
        deadline: Instant,
    ) -> Result<u64, StoreError> {
        let scope = scope_filter(filter);
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
            if self.tree_may_hold(&scope, header.kind)
                && matching_json(filter, &header, json)?.is_some()
            {
                expired += 1;
            }
        }
        Ok(expired)
    }
}
