//! Filter → index plan → newest-first iterator. Each plan is a set of index
//! prefixes scanned in reverse between `since` and `until` and merged by
//! `(created_at, seq)`, so `limit` stops the work after `limit` matches and
//! no filter reads the whole store unless it asks for everything.

use std::collections::BinaryHeap;
use std::ops::Bound;
use std::time::Instant;

use heed::types::Bytes;
use heed::{RoRevRange, RoTxn};

use super::schema::{self, Header};
use super::{IndexDb, Store, StoreError};
use crate::event::Event;
use crate::filter::Filter;

/// Above this many (author, kind) pairs the author index alone is used.
const MAX_PAIR_SCANS: usize = 1024;

/// A stored event handed to a query's consumer.
pub struct Found<'t> {
    pub seq: u64,
    pub header: Header,
    pub json: &'t str,
}

/// Which index a filter is answered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryPlan {
    Ids(Vec<[u8; 32]>),
    Scan {
        index: IndexName,
        prefixes: Vec<Vec<u8>>,
    },
}

/// Index names, public for `explain`-style logging and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexName {
    Time,
    Kind,
    Pubkey,
    PubkeyKind,
    Tag,
}

impl QueryPlan {
    /// Picks the most selective index the filter allows.
    pub fn for_filter(filter: &Filter) -> QueryPlan {
        if let Some(ids) = &filter.ids {
            return QueryPlan::Ids(ids.clone());
        }
        if let (Some(authors), Some(kinds)) = (&filter.authors, &filter.kinds) {
            if authors.len() * kinds.len() <= MAX_PAIR_SCANS {
                let prefixes = authors
                    .iter()
                    .flat_map(|a| kinds.iter().map(move |k| schema::pubkey_kind_prefix(a, *k)))
                    .collect();
                return QueryPlan::Scan {
                    index: IndexName::PubkeyKind,
                    prefixes,
                };
            }
        }
        if let Some((letter, values)) = filter.tags.iter().min_by_key(|(_, v)| v.len()) {
            let prefixes = values
                .iter()
                .map(|v| schema::tag_prefix(*letter, v))
                .collect();
            return QueryPlan::Scan {
                index: IndexName::Tag,
                prefixes,
            };
        }
        if let Some(authors) = &filter.authors {
            let prefixes = authors.iter().map(|a| a.to_vec()).collect();
            return QueryPlan::Scan {
                index: IndexName::Pubkey,
                prefixes,
            };
        }
        if let Some(kinds) = &filter.kinds {
            let prefixes = kinds.iter().map(|k| schema::kind_prefix(*k)).collect();
            return QueryPlan::Scan {
                index: IndexName::Kind,
                prefixes,
            };
        }
        QueryPlan::Scan {
            index: IndexName::Time,
            prefixes: vec![Vec::new()],
        }
    }
}

impl IndexName {
    pub(super) fn db(self) -> IndexDb {
        match self {
            IndexName::Time => IndexDb::Time,
            IndexName::Kind => IndexDb::Kind,
            IndexName::Pubkey => IndexDb::Pubkey,
            IndexName::PubkeyKind => IndexDb::PubkeyKind,
            IndexName::Tag => IndexDb::Tag,
        }
    }
}

impl Store {
    /// Streams the events matching `filter`, newest first, skipping expired
    /// ones, until `limit` events were accepted. `consume` returns whether it
    /// accepted the event (a caller hiding restricted events returns false)
    /// and may stop the query by returning `Err(Stop)`.
    pub fn query(
        &self,
        txn: &RoTxn,
        filter: &Filter,
        limit: u64,
        now: u64,
        consume: &mut dyn FnMut(Found<'_>) -> Result<bool, Stop>,
    ) -> Result<u64, StoreError> {
        self.walk(txn, filter, limit, now, None, consume)
    }

    /// [`Store::query`] that gives up with [`StoreError::OutOfTime`] once
    /// `deadline` passes, however few events matched: a COUNT must not hold
    /// a query thread for as long as the store is big.
    pub fn query_until(
        &self,
        txn: &RoTxn,
        filter: &Filter,
        deadline: Instant,
        now: u64,
        consume: &mut dyn FnMut(Found<'_>) -> Result<bool, Stop>,
    ) -> Result<u64, StoreError> {
        self.walk(txn, filter, u64::MAX, now, Some(deadline), consume)
    }

    fn walk(
        &self,
        txn: &RoTxn,
        filter: &Filter,
        limit: u64,
        now: u64,
        deadline: Option<Instant>,
        consume: &mut dyn FnMut(Found<'_>) -> Result<bool, Stop>,
    ) -> Result<u64, StoreError> {
        if limit == 0 || filter.is_empty_match() {
            return Ok(0);
        }
        let mut accepted = 0u64;
        let mut clock = deadline.map(Clock::new);
        let plan = QueryPlan::for_filter(filter);
        // A scan of the one tag the filter names only meets events that
        // carry it: parsing each event to check again is waste.
        let tags_by_index = filter.tags.len() == 1
            && matches!(
                plan,
                QueryPlan::Scan {
                    index: IndexName::Tag,
                    ..
                }
            );
        let mut offer = |seq: u64, value: &[u8]| -> Result<bool, StoreError> {
            if let Some(clock) = clock.as_mut() {
                clock.tick()?;
            }
            let (header, json) =
                Header::decode(value).ok_or(StoreError::Corrupt("event header"))?;
            if header.is_expired(now) {
                return Ok(true);
            }
            let Some(json) = matching(filter, &header, json, tags_by_index)? else {
                return Ok(true);
            };
            match consume(Found { seq, header, json }) {
                Ok(true) => accepted += 1,
                Ok(false) => {}
                Err(Stop) => return Ok(false),
            }
            Ok(accepted < limit)
        };
        match plan {
            QueryPlan::Ids(ids) => {
                let mut hits = Vec::with_capacity(ids.len());
                for id in &ids {
                    if let Some(seq) = self.dbs.ids.get(txn, id)? {
                        let seq_num = u64::from_be_bytes(
                            seq.try_into().map_err(|_| StoreError::Corrupt("seq"))?,
                        );
                        if let Some(value) = self.dbs.events.get(txn, seq)? {
                            let created_at = Header::decode(value)
                                .map(|(h, _)| h.created_at)
                                .unwrap_or(0);
                            hits.push((created_at, seq_num, value));
                        }
                    }
                }
                hits.sort_unstable_by_key(|h| std::cmp::Reverse((h.0, h.1)));
                for (_, seq, value) in hits {
                    if !offer(seq, value)? {
                        break;
                    }
                }
            }
            QueryPlan::Scan { index, prefixes } => {
                let since = filter.since.unwrap_or(0);
                let until = filter.until.unwrap_or(u64::MAX);
                let mut merge = Merge::new(self, txn, index.db(), &prefixes, since, until)?;
                while let Some(seq) = merge.next()? {
                    let Some(value) = self.dbs.events.get(txn, &schema::seq_key(seq))? else {
                        return Err(StoreError::Corrupt("index points at a missing event"));
                    };
                    if !offer(seq, value)? {
                        break;
                    }
                }
            }
        }
        Ok(accepted)
    }

    /// Every stored event matching `filter` by a mesh author (for mesh
    /// kinds; any author otherwise) that `parse` accepts, grouped by `d`:
    /// one per signer for an addressable kind.
    pub fn all_per_d<T>(
        &self,
        filter: &Filter,
        parse: impl Fn(&Event) -> Option<T>,
    ) -> Result<std::collections::HashMap<String, Vec<T>>, StoreError> {
        let txn = self.read_txn()?;
        let mut found_per_d: std::collections::HashMap<String, Vec<T>> = Default::default();
        self.query(&txn, filter, u64::MAX, crate::event::now(), &mut |found| {
            let Ok(event) = Event::from_json(found.json) else {
                return Ok(true);
            };
            // Stored before the author check existed, or by a node since
            // removed from the mesh: inert.
            if !self.is_trusted_author(event.kind, &event.pubkey) {
                return Ok(true);
            }
            if let Some(item) = parse(&event) {
                found_per_d
                    .entry(event.d_tag().to_string())
                    .or_default()
                    .push(item);
            }
            Ok(true)
        })?;
        Ok(found_per_d)
    }

    /// The stored events matching `filter` (by a mesh author, for mesh
    /// kinds) committed after sequence number `after`, oldest first, with
    /// their sequence numbers: what a change stream resumed from `after`
    /// missed.
    pub fn matching_after(
        &self,
        filter: &Filter,
        after: u64,
    ) -> Result<Vec<(u64, Event)>, StoreError> {
        let txn = self.read_txn()?;
        let mut found_after = Vec::new();
        self.query(&txn, filter, u64::MAX, crate::event::now(), &mut |found| {
            if found.seq <= after {
                return Ok(true);
            }
            let Ok(event) = Event::from_json(found.json) else {
                return Ok(true);
            };
            if self.is_trusted_author(event.kind, &event.pubkey) {
                found_after.push((found.seq, event));
            }
            Ok(true)
        })?;
        found_after.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(found_after)
    }

    /// Of the addressable events matching `filter`, whichever mesh node
    /// signed them, one item per `d` tag: the highest `rank` of
    /// [`Store::all_per_d`].
    pub fn newest_per_d<T, R: Ord>(
        &self,
        filter: &Filter,
        parse: impl Fn(&Event) -> Option<T>,
        rank: impl Fn(&T) -> R,
    ) -> Result<Vec<T>, StoreError> {
        Ok(self
            .all_per_d(filter, parse)?
            .into_values()
            // On a tie the first found (the newest `created_at`) stays.
            .filter_map(|items| {
                items.into_iter().reduce(|best, item| {
                    if rank(&item) > rank(&best) {
                        item
                    } else {
                        best
                    }
                })
            })
            .collect())
    }

    /// Streams every stored event in insertion order (for `export`).
    pub fn scan_all(
        &self,
        txn: &RoTxn,
        consume: &mut dyn FnMut(&str) -> Result<(), Stop>,
    ) -> Result<(), StoreError> {
        for entry in self.dbs.events.iter(txn)? {
            let (_, value) = entry?;
            let (_, json) = Header::decode(value).ok_or(StoreError::Corrupt("event header"))?;
            let json = std::str::from_utf8(json).map_err(|_| StoreError::Corrupt("event JSON"))?;
            if consume(json).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// The stored JSON of an event if it matches `filter` (its header, then its
/// tags, parsed only when the filter names tags); expiry is not looked at.
pub(super) fn matching_json<'v>(
    filter: &Filter,
    header: &Header,
    json: &'v [u8],
) -> Result<Option<&'v str>, StoreError> {
    matching(filter, header, json, false)
}

/// [`matching_json`], the tag conditions taken as met when
/// `tags_by_index` (the scan read them off the index).
fn matching<'v>(
    filter: &Filter,
    header: &Header,
    json: &'v [u8],
    tags_by_index: bool,
) -> Result<Option<&'v str>, StoreError> {
    if !filter.matches_header(&header.id, &header.pubkey, header.kind, header.created_at) {
        return Ok(None);
    }
    let json = std::str::from_utf8(json).map_err(|_| StoreError::Corrupt("event JSON"))?;
    if !filter.tags.is_empty() && !tags_by_index {
        let event = Event::from_json(json).map_err(|_| StoreError::Corrupt("event JSON"))?;
        if !filter.matches_tags(&event.tags) {
            return Ok(None);
        }
    }
    Ok(Some(json))
}

/// Events a budgeted walk looks at between two readings of the clock.
const CLOCK_EVERY: u32 = 1024;

/// A deadline read at the first event looked at and every
/// [`CLOCK_EVERY`] after.
pub(super) struct Clock {
    deadline: Instant,
    looked: u32,
}

impl Clock {
    pub(super) fn new(deadline: Instant) -> Clock {
        Clock {
            deadline,
            looked: 0,
        }
    }

    /// Counts one event looked at; `OutOfTime` once the deadline passed.
    pub(super) fn tick(&mut self) -> Result<(), StoreError> {
        let read = self.looked.is_multiple_of(CLOCK_EVERY);
        self.looked = self.looked.wrapping_add(1);
        if read && Instant::now() >= self.deadline {
            return Err(StoreError::OutOfTime);
        }
        Ok(())
    }
}

/// Returned by a query consumer to end the query early.
#[derive(Debug)]
pub struct Stop;

type Cursor<'t> = RoRevRange<'t, Bytes, Bytes>;

/// K-way merge of reverse index cursors by `(created_at, seq)`, dropping
/// repeats (an event with two matching tag values appears twice).
pub(super) struct Merge<'t> {
    cursors: Vec<Cursor<'t>>,
    heap: BinaryHeap<(u64, u64, usize)>,
    last: Option<u64>,
}

impl<'t> Merge<'t> {
    pub(super) fn new(
        store: &Store,
        txn: &'t RoTxn,
        index: IndexDb,
        prefixes: &[Vec<u8>],
        since: u64,
        until: u64,
    ) -> Result<Merge<'t>, StoreError> {
        let db = store.index(index);
        let mut merge = Merge {
            cursors: Vec::with_capacity(prefixes.len()),
            heap: BinaryHeap::new(),
            last: None,
        };
        for prefix in prefixes {
            let low = schema::index_key(prefix, since, 0);
            let high = schema::index_key(prefix, until, u64::MAX);
            let bounds = (Bound::Included(&low[..]), Bound::Included(&high[..]));
            let cursor = db.rev_range(txn, &bounds)?;
            merge.cursors.push(cursor);
            let i = merge.cursors.len() - 1;
            merge.advance(i)?;
        }
        Ok(merge)
    }

    fn advance(&mut self, i: usize) -> Result<(), StoreError> {
        if let Some(entry) = self.cursors[i].next() {
            let (key, _) = entry?;
            let (ts, seq) = schema::time_seq_suffix(key).ok_or(StoreError::Corrupt("index key"))?;
            self.heap.push((ts, seq, i));
        }
        Ok(())
    }

    pub(super) fn next(&mut self) -> Result<Option<u64>, StoreError> {
        while let Some((_, seq, i)) = self.heap.pop() {
            self.advance(i)?;
            if self.last != Some(seq) {
                self.last = Some(seq);
                return Ok(Some(seq));
            }
        }
        Ok(None)
    }
}
