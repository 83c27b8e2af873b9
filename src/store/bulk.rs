//! Bulk loading: how `echorelay import` fills a store that holds no
//! events. Regular events (not replaceable, addressable, ephemeral, a
//! deletion or mesh state — those take the writer's path afterwards, so
//! every replacement and deletion rule applies as usual) are written in
//! three passes instead of one random B-tree insert per index key:
//!
//! 1. each event's row goes at the end of `events` (sequence order, the
//!    order they arrive) and its index keys into sorted runs
//!    (`bulk_runs.rs`, spilled under the data directory in bounded memory);
//! 2. the runs are merged and every index — `ids` first, where a repeated
//!    id marks the later copy a duplicate — is written in key order with
//!    `MDB_APPEND`; duplicates' rows go;
//! 3. the same merge ends with each fingerprint tree's items, recorded in
//!    pass 1 for the trees whose scope covers the event, in tree order, so
//!    every insert lands at the tree's right edge.
//!
//! Safety: the load holds `bulk.lock` in the data directory and records
//! the sequence numbers it wrote in `meta` (`bulk_load`) with every commit.
//! A load killed at any point leaves that record behind; the next
//! `Store::open` that can take the lock removes those events (rows, index
//! keys, tree items) in the writer's usual way, so the store holds only
//! whole events and a re-run completes the import. Another process
//! writing during the load is noticed at the load's next commit (the
//! store's commit count moved: every writer batch counts itself) and ends the load with an error (its events are rolled
//! back the same way).

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;

use super::bulk_runs::Runs;
use super::schema;
use super::scopes::{Scope, Trees};
use super::write::{header_of, index_keys, NEXT_SEQ};
use super::{IndexDb, Store, StoreError};
use crate::event::{Event, KindClass};
use crate::negentropy::{Item, TreeWriter};

/// `meta` key of an unfinished load: first ‖ last sequence number written.
const MARKER: &[u8] = b"bulk_load";
const LOCK_FILE: &str = "bulk.lock";
const RUNS_DIR: &str = "bulk-runs";
/// Event rows per commit in pass 1, index records per commit in pass 2,
/// events per commit when rolling back.
const ROWS_PER_COMMIT: usize = 20_000;
const RECORDS_PER_COMMIT: usize = 500_000;
const EVENTS_PER_COMMIT: usize = 50_000;
/// Run tag of `ids` records (`id ‖ seq`); the indexes follow in this order.
const IDS: u8 = 0;
const INDEXES: [IndexDb; 6] = [
    IndexDb::Time,
    IndexDb::Kind,
    IndexDb::Pubkey,
    IndexDb::PubkeyKind,
    IndexDb::Tag,
    IndexDb::Expiry,
];
/// Run tag of tree items (`tree id ‖ created_at ‖ id`), merged last.
const TREE: u8 = 1 + INDEXES.len() as u8;

/// Can `event` be bulk loaded? Only kinds no rule replaces, deletes or
/// places: everything else goes through the writer after the load.
pub fn is_bulk_kind(event: &Event) -> bool {
    event.class() == KindClass::Regular && event.kind != 5 && !crate::mesh::is_mesh_kind(event.kind)
}

fn bulk_error(what: impl std::fmt::Display) -> StoreError {
    StoreError::Bulk(what.to_string())
}

fn foreign_write() -> StoreError {
    bulk_error("another process wrote to the store during the load (stop the relay, or import with --no-bulk)")
}

fn tag_of(index: IndexDb) -> u8 {
    1 + INDEXES.iter().position(|i| *i == index).unwrap_or(0) as u8
}

/// The seq at the end of an index key or an `ids` record.
fn seq_suffix(record: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(*record.last_chunk::<8>()?))
}

/// What a finished load stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkOutcome {
    pub stored: u64,
    pub duplicates: u64,
}

/// A load in progress (see the module doc).
pub struct BulkLoad<'s> {
    store: &'s Store,
    /// Taken by `finish` for pass 2.
    runs: Option<Runs>,
    /// The trees, read when the load began (the store holds no event, so
    /// every one is empty).
    scopes: Vec<Scope>,
    rows: Vec<(u64, Vec<u8>)>,
    first_seq: u64,
    next_seq: u64,
    /// The store's commit count after the load's last commit: any other
    /// commit (a relay's store, purge or deletion) moves it.
    commits: std::cell::Cell<u64>,
    _lock: File,
}

impl Store {
    fn data_dir(&self) -> PathBuf {
        self.env.path().to_path_buf()
    }

    /// May an import bulk load this store? Only when it holds no event
    /// and no deletion record (the load checks neither as it goes).
    pub fn can_bulk_load(&self) -> Result<bool, StoreError> {
        let txn = self.read_txn()?;
        let d = &self.dbs;
        Ok(d.events.first(&txn)?.is_none()
            && d.deleted_ids.first(&txn)?.is_none()
            && d.deleted_coords.first(&txn)?.is_none())
    }

    /// Starts a bulk load; refused unless the store holds no events and no
    /// other load runs.
    pub fn bulk_load(&self) -> Result<BulkLoad<'_>, StoreError> {
        let lock = File::create(self.data_dir().join(LOCK_FILE)).map_err(bulk_error)?;
        lock.try_lock()
            .map_err(|_| bulk_error("another bulk import is running on this data directory"))?;
        if !self.can_bulk_load()? {
            return Err(bulk_error("the store already holds events or deletions"));
        }
        let (first_seq, commits) = self.write_retrying(|txn| {
            let first_seq = self.last_seq(txn)? + 1;
            self.dbs
                .meta
                .put(txn, MARKER, &marker(first_seq, first_seq - 1))?;
            Ok((first_seq, self.count_commit(txn)?))
        })?;
        let scopes = {
            let txn = self.read_txn()?;
            if self.trees_enabled {
                self.scopes(&txn)?
            } else {
                Vec::new()
            }
        };
        Ok(BulkLoad {
            store: self,
            scopes,
            runs: Some(Runs::new(&self.data_dir().join(RUNS_DIR)).map_err(bulk_error)?),
            rows: Vec::with_capacity(ROWS_PER_COMMIT),
            first_seq,
            next_seq: first_seq,
            commits: std::cell::Cell::new(commits),
            _lock: lock,
        })
    }

    /// Removes what an interrupted or failed load wrote (at open, and by
    /// the import whose load failed; a load still running holds the lock
    /// and is left alone).
    pub fn roll_back_bulk_load(&self) -> Result<(), StoreError> {
        let Some((first, last)) = self.bulk_marker()? else {
            return Ok(());
        };
        let Ok(lock) = File::create(self.data_dir().join(LOCK_FILE)) else {
            return Ok(());
        };
        if lock.try_lock().is_err() {
            return Ok(());
        }
        let mut from = first;
        while from <= last {
            let to = last.min(from + EVENTS_PER_COMMIT as u64 - 1);
            self.write_retrying(|txn| {
                let mut trees = self.trees_for_batch(txn)?;
                for seq in from..=to {
                    self.remove(txn, &mut trees, seq)?;
                }
                trees.flush(self, txn)
            })?;
            from = to + 1;
        }
        self.write_retrying(|txn| Ok(self.dbs.meta.delete(txn, MARKER).map(drop)?))?;
        let _ = std::fs::remove_dir_all(self.data_dir().join(RUNS_DIR));
        tracing::warn!(
            events = last + 1 - first,
            "removed the events of an interrupted bulk import; run the import again"
        );
        Ok(())
    }

    fn bulk_marker(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let txn = self.read_txn()?;
        let Some(value) = self.dbs.meta.get(&txn, MARKER)? else {
            return Ok(None);
        };
        let first = value.first_chunk::<8>().map(|b| u64::from_be_bytes(*b));
        let last = value.last_chunk::<8>().map(|b| u64::from_be_bytes(*b));
        match (first, last, value.len()) {
            (Some(first), Some(last), 16) => Ok(Some((first, last))),
            _ => Err(StoreError::Corrupt("bulk load marker")),
        }
    }
}

fn marker(first: u64, last: u64) -> Vec<u8> {
    [first.to_be_bytes(), last.to_be_bytes()].concat()
}

impl BulkLoad<'_> {
    /// Adds one verified regular event (see [`is_bulk_kind`]).
    pub fn add(&mut self, event: &Event, json: &str) -> Result<(), StoreError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let header = header_of(event);
        self.rows.push((seq, header.encode(json.as_bytes())));
        let runs = self
            .runs
            .as_mut()
            .ok_or_else(|| bulk_error("the load has finished"))?;
        let id_record = [&event.id[..], &seq.to_be_bytes()].concat();
        runs.push(IDS, &id_record).map_err(bulk_error)?;
        for (index, key) in index_keys(&header, &event.tags, seq) {
            runs.push(tag_of(index), &key).map_err(bulk_error)?;
        }
        for scope in &self.scopes {
            if Trees::covers(self.store, scope, event) {
                let item = [
                    &scope.id.to_be_bytes()[..],
                    &event.created_at.to_be_bytes(),
                    &event.id,
                ]
                .concat();
                runs.push(TREE, &item).map_err(bulk_error)?;
            }
        }
        if self.rows.len() >= ROWS_PER_COMMIT {
            self.commit_rows()?;
        }
        Ok(())
    }

    /// Pass 1's commit: rows at the end of `events`, the marker extended.
    fn commit_rows(&mut self) -> Result<(), StoreError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let store = self.store;
        let (first, next) = (self.first_seq, self.next_seq);
        self.commit(|txn| {
            for (seq, row) in &self.rows {
                let key = schema::seq_key(*seq);
                store
                    .dbs
                    .events
                    .put_with_flags(txn, heed::PutFlags::APPEND, &key, row)?;
            }
            store.dbs.meta.put(txn, NEXT_SEQ, &next.to_be_bytes())?;
            store.dbs.meta.put(txn, MARKER, &marker(first, next - 1))?;
            Ok(())
        })?;
        self.rows.clear();
        Ok(())
    }

    /// Passes 2 and 3; `phase` hears when each begins.
    pub fn finish(mut self, mut phase: impl FnMut(&str)) -> Result<BulkOutcome, StoreError> {
        self.commit_rows()?;
        let written = self.next_seq - self.first_seq;
        phase("indexing");
        let runs = self
            .runs
            .take()
            .ok_or_else(|| bulk_error("the load has finished"))?;
        let duplicates = self.write_indexes(runs)?;
        let store = self.store;
        store.write_retrying(|txn| Ok(store.dbs.meta.delete(txn, MARKER).map(drop)?))?;
        Ok(BulkOutcome {
            stored: written - duplicates,
            duplicates,
        })
    }

    /// Passes 2 and 3: every index and tree from the merged runs; returns
    /// the duplicates.
    fn write_indexes(&self, runs: Runs) -> Result<u64, StoreError> {
        let mut merged = runs.merge().map_err(bulk_error)?;
        let mut dropped: HashSet<u64> = HashSet::new();
        let mut last_id: Option<[u8; 32]> = None;
        let mut chunk = Vec::with_capacity(RECORDS_PER_COMMIT);
        loop {
            let record = merged.next_record().map_err(bulk_error)?;
            let Some(record) = record else {
                self.write_records(&chunk)?;
                break;
            };
            let seq = seq_suffix(&record).ok_or_else(|| bulk_error("short run record"))?;
            match record[0] {
                IDS => {
                    let id: [u8; 32] = record
                        .get(1..33)
                        .and_then(|id| id.try_into().ok())
                        .ok_or_else(|| bulk_error("short id record"))?;
                    if last_id == Some(id) {
                        dropped.insert(seq);
                        continue;
                    }
                    last_id = Some(id);
                }
                // A duplicate's tree item is its original's: inserted once.
                TREE => {}
                _ if dropped.contains(&seq) => continue,
                _ => {}
            }
            chunk.push(record);
            if chunk.len() >= RECORDS_PER_COMMIT {
                self.write_records(&chunk)?;
                chunk.clear();
            }
        }
        let store = self.store;
        self.commit(|txn| {
            for seq in &dropped {
                store.dbs.events.delete(txn, &schema::seq_key(*seq))?;
            }
            Ok(())
        })?;
        Ok(dropped.len() as u64)
    }

    /// Checks that nothing else committed since the load's last commit and
    /// counts this one; the caller keeps the count once it committed.
    fn own_commit(&self, txn: &mut heed::RwTxn) -> Result<u64, StoreError> {
        if self.store.commits(txn)? != self.commits.get() {
            return Err(foreign_write());
        }
        self.store.count_commit(txn)
    }

    /// Runs one commit of the load (`write` after the foreign-commit check).
    fn commit(
        &self,
        mut write: impl FnMut(&mut heed::RwTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let counted = self.store.write_retrying(|txn| {
            let counted = self.own_commit(txn)?;
            write(txn)?;
            Ok(counted)
        })?;
        self.commits.set(counted);
        Ok(())
    }

    /// One commit of passes 2 and 3: records in key order, appended to
    /// the indexes, inserted at the trees' right edges.
    fn write_records(&self, records: &[Vec<u8>]) -> Result<(), StoreError> {
        let store = self.store;
        let append = heed::PutFlags::APPEND;
        self.commit(|txn| {
            let mut tree: Option<(u32, TreeWriter)> = None;
            for record in records {
                let (tag, key) = (record[0], &record[1..]);
                match tag {
                    IDS => {
                        let (id, seq) = key.split_at(32);
                        store.dbs.ids.put_with_flags(txn, append, id, seq)?;
                    }
                    TREE => {
                        let (scope, item) = tree_item(key)?;
                        if tree.as_ref().is_none_or(|(id, _)| *id != scope) {
                            if let Some((_, mut done)) = tree.take() {
                                done.flush(txn)?;
                            }
                            tree = Some((scope, TreeWriter::new(store.dbs.neg_nodes, scope)));
                        }
                        if let Some((_, writer)) = tree.as_mut() {
                            writer.insert(txn, item)?;
                        }
                    }
                    _ => {
                        let index = INDEXES
                            .get(usize::from(tag) - 1)
                            .ok_or_else(|| bulk_error("unknown run tag"))?;
                        store.index(*index).put_with_flags(txn, append, key, &[])?;
                    }
                }
            }
            if let Some((_, mut writer)) = tree {
                writer.flush(txn)?;
            }
            Ok(())
        })
    }
}

/// A tree record's tree id and item.
fn tree_item(record: &[u8]) -> Result<(u32, Item), StoreError> {
    let short = || bulk_error("short tree record");
    let scope = u32::from_be_bytes(*record.first_chunk::<4>().ok_or_else(short)?);
    let created_at = u64::from_be_bytes(
        *record
            .get(4..12)
            .and_then(|b| b.first_chunk::<8>())
            .ok_or_else(short)?,
    );
    let id = *record
        .get(12..)
        .and_then(|b| b.first_chunk::<32>())
        .ok_or_else(short)?;
    Ok((scope, Item::new(created_at, id)))
}
