//! Applying a batch of writes in one LMDB write transaction: insert (with
//! replaceable / addressable replacement), NIP-09 deletion, NIP-40 purge.
//! Only the writer thread calls [`Store::apply_batch`].

use heed::{RoTxn, RwTxn};

use super::graph_order::Placement;
use super::graphs::GraphBatchOutcome;
use super::schema::{self, Header};
use super::scopes::Trees;
use super::{IndexDb, Store, StoreError};
use crate::event::{Coordinate, Event, KindClass};
use crate::refusal::Refusal;

pub(super) const NEXT_SEQ: &[u8] = b"next_seq";

/// Most expired events removed by one purge request.
const PURGE_CHUNK: usize = 10_000;

/// Why an event whose author deleted it (NIP-09) is not stored.
pub const DELETED_BY_AUTHOR: &str = "this event was deleted by its author";

/// One request inside a write batch.
pub enum BatchItem<'a> {
    /// A verified event and its canonical JSON.
    Insert { event: &'a Event, json: &'a str },
    /// Remove events whose NIP-40 expiration is at or before `now`.
    PurgeExpired { now: u64 },
    /// A client's DB-Sync tx/batch: signed kind-4071 events appended to
    /// `graph` only if its log is still at `t_before`.
    GraphBatch {
        graph: &'a str,
        t_before: u64,
        events: &'a [(Event, String)],
    },
    /// Once, before serving: graph logs from before homes take the home's
    /// order (`graph_upgrade.rs`); `key` is this node's.
    UpgradeGraphLogs { key: &'a crate::event::Keys },
    /// An event stored only while `graph`'s head is still `head` (a home
    /// move names the head it hands over from).
    InsertIfHead {
        event: &'a Event,
        json: &'a str,
        graph: &'a str,
        head: u64,
    },
    /// A write that is not an event (`bookkeeping.rs`).
    Bookkeeping(&'a super::Bookkeeping),
}

/// What happened to one batch item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Stored {
        seq: u64,
    },
    Duplicate,
    Refused(Refusal),
    /// An [`BatchItem::InsertIfHead`] whose graph moved on meanwhile.
    HeadMoved,
    Purged {
        count: usize,
    },
    Graph(GraphBatchOutcome),
    /// A bookkeeping write was made.
    Recorded,
}

impl Store {
    /// Applies `items` in one write transaction and commits. Grows the map
    /// and retries when it is full; `StoreError::Full` once it cannot grow.
    pub fn apply_batch(&self, items: &[BatchItem]) -> Result<Vec<WriteOutcome>, StoreError> {
        self.write_retrying(|txn| self.apply_in(txn, items))
    }

    fn apply_in(
        &self,
        txn: &mut RwTxn,
        items: &[BatchItem],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut next_seq = self.last_seq(txn)? + 1;
        let mut trees = self.trees_for_batch(txn)?;
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let outcome = match item {
                BatchItem::Insert { event, json } => {
                    self.insert(txn, &mut trees, event, json, &mut next_seq)?
                }
                BatchItem::PurgeExpired { now } => self.purge_expired(txn, &mut trees, *now)?,
                BatchItem::GraphBatch {
                    graph,
                    t_before,
                    events,
                } => self.apply_graph_batch(
                    txn,
                    &mut trees,
                    graph,
                    *t_before,
                    events,
                    &mut next_seq,
                )?,
                BatchItem::UpgradeGraphLogs { key } => {
                    self.upgrade_graph_logs(txn, &mut trees, key, &mut next_seq)?
                }
                BatchItem::InsertIfHead {
                    event,
                    json,
                    graph,
                    head,
                } => {
                    if self.graph_t(txn, graph)? == *head {
                        self.insert(txn, &mut trees, event, json, &mut next_seq)?
                    } else {
                        WriteOutcome::HeadMoved
                    }
                }
                BatchItem::Bookkeeping(op) => {
                    self.apply_bookkeeping(txn, op)?;
                    WriteOutcome::Recorded
                }
            };
            outcomes.push(outcome);
        }
        trees.flush(self, txn)?;
        self.dbs.meta.put(txn, NEXT_SEQ, &next_seq.to_be_bytes())?;
        self.count_commit(txn)?;
        Ok(outcomes)
    }

    pub(super) fn insert(
        &self,
        txn: &mut RwTxn,
        trees: &mut Trees,
        event: &Event,
        json: &str,
        next_seq: &mut u64,
    ) -> Result<WriteOutcome, StoreError> {
        if !self.is_trusted_author(event.kind, &event.pubkey) {
            return Ok(WriteOutcome::Refused(crate::mesh::author_refusal()));
        }
        let seq = *next_seq;
        let seq_bytes = schema::seq_key(seq);
        // Claiming the id is the duplicate check: one B-tree descent
        // instead of a lookup and then an insert.
        match self
            .dbs
            .ids
            .put_with_flags(txn, heed::PutFlags::NO_OVERWRITE, &event.id, &seq_bytes)
        {
            Err(heed::Error::Mdb(heed::MdbError::KeyExist)) => return Ok(WriteOutcome::Duplicate),
            other => other?,
        }
        if let Some(reason) = self.refusal(txn, trees, event)? {
            self.dbs.ids.delete(txn, &event.id)?;
            return Ok(WriteOutcome::Refused(reason));
        }
        let log_position = match self.place_graph_tx(txn, event)? {
            Placement::NotATx => None,
            Placement::At { graph, t } => Some((graph, t)),
            Placement::Refused(reason) => {
                self.dbs.ids.delete(txn, &event.id)?;
                return Ok(WriteOutcome::Refused(reason));
            }
        };
        if event.kind == 5 {
            self.apply_deletion(txn, trees, event)?;
        }
        *next_seq += 1;
        self.put_event(txn, seq, event, json)?;
        trees.insert(self, txn, event)?;
        if let Some((graph, t)) = log_position {
            self.put_in_log(txn, &graph, t, seq)?;
        }
        self.apply_graph_index(txn, trees, event)?;
        self.note_echo_change(txn, event)?;
        Ok(WriteOutcome::Stored { seq })
    }

    /// Stores a graph tx the way versions before homes did (at the graph's
    /// next local position, no `t` tag checked), for the upgrade's tests.
    #[cfg(test)]
    pub(super) fn put_legacy_tx(&self, event: &Event) -> Result<(), StoreError> {
        let mut txn = self.env().write_txn()?;
        let mut trees = self.trees_for_batch(&txn)?;
        let seq = self.last_seq(&txn)? + 1;
        self.dbs
            .ids
            .put(&mut txn, &event.id, &schema::seq_key(seq))?;
        self.put_event(&mut txn, seq, event, &event.to_json())?;
        trees.insert(self, &txn, event)?;
        let graph = super::graphs::graph_of(event).ok_or(StoreError::Corrupt("no g tag"))?;
        let t = self.graph_t(&txn, graph)? + 1;
        self.dbs.graph_log.put(
            &mut txn,
            &super::graph_order::log_key(graph, t),
            &schema::seq_key(seq),
        )?;
        self.dbs
            .graph_t
            .put(&mut txn, &super::graphs::graph_key(graph), &t.to_be_bytes())?;
        trees.flush(self, &mut txn)?;
        self.dbs
            .meta
            .put(&mut txn, NEXT_SEQ, &(seq + 1).to_be_bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// Why a new event (its id already claimed) may not be stored, if it
    /// may not; an older version of its address is removed on the way.
    fn refusal(
        &self,
        txn: &mut RwTxn,
        trees: &mut Trees,
        event: &Event,
    ) -> Result<Option<Refusal>, StoreError> {
        let d = &self.dbs;
        if d.deleted_ids
            .get(txn, &deleted_key(&event.id, &event.pubkey))?
            .is_some()
        {
            return Ok(Some(Refusal::blocked(DELETED_BY_AUTHOR)));
        }
        if let Some(coord) = event.coordinate() {
            let key = schema::coord_key(coord.kind, &coord.pubkey, &coord.d);
            if let Some(cutoff) = d.deleted_coords.get(txn, &key)? {
                if event.created_at <= be_u64(cutoff)? {
                    return Ok(Some(Refusal::blocked(
                        "this address was deleted by its author",
                    )));
                }
            }
            if let Some(old_seq) = d.by_coord.get(txn, &key)? {
                let old_seq = be_u64(old_seq)?;
                let old = self.header_of(txn, old_seq)?;
                // NIP-01: the newest wins; on a tie, the lowest id.
                if (old.created_at, std::cmp::Reverse(old.id))
                    > (event.created_at, std::cmp::Reverse(event.id))
                {
                    return Ok(Some(Refusal::duplicate(
                        "have a newer event for this address",
                    )));
                }
                self.remove(txn, trees, old_seq)?;
            }
        }
        self.graph_refusal(txn, event)
    }

    fn put_event(
        &self,
        txn: &mut RwTxn,
        seq: u64,
        event: &Event,
        json: &str,
    ) -> Result<(), StoreError> {
        let d = &self.dbs;
        let header = header_of(event);
        let seq_bytes = schema::seq_key(seq);
        // Sequence numbers only grow, so every event goes at the end:
        // LMDB skips the search and fills pages completely.
        d.events.put_with_flags(
            txn,
            heed::PutFlags::APPEND,
            &seq_bytes,
            &header.encode(json.as_bytes()),
        )?;
        for (db, key) in index_keys(&header, &event.tags, seq) {
            self.index(db).put(txn, &key, &[])?;
        }
        if let Some(coord) = event.coordinate() {
            d.by_coord.put(
                txn,
                &schema::coord_key(coord.kind, &coord.pubkey, &coord.d),
                &seq_bytes,
            )?;
        }
        Ok(())
    }

    /// Removes one stored event and every index entry pointing at it. Its
    /// id entry and tree items go only if the id is this row's: a bulk
    /// load's duplicate row, or its copy of an event another writer stored,
    /// shares them with the row that keeps them.
    pub(super) fn remove(
        &self,
        txn: &mut RwTxn,
        trees: &mut Trees,
        seq: u64,
    ) -> Result<(), StoreError> {
        let d = &self.dbs;
        let seq_bytes = schema::seq_key(seq);
        let Some(value) = d.events.get(txn, &seq_bytes)? else {
            return Ok(());
        };
        let (header, json) = Header::decode(value).ok_or(StoreError::Corrupt("event header"))?;
        let event = std::str::from_utf8(json)
            .ok()
            .and_then(|j| Event::from_json(j).ok())
            .ok_or(StoreError::Corrupt("stored event JSON"))?;
        d.events.delete(txn, &seq_bytes)?;
        if d.ids.get(txn, &header.id)? == Some(&seq_bytes[..]) {
            d.ids.delete(txn, &header.id)?;
            trees.remove(self, txn, &event)?;
        }
        for (db, key) in index_keys(&header, &event.tags, seq) {
            self.index(db).delete(txn, &key)?;
        }
        if let Some(coord) = event.coordinate() {
            let key = schema::coord_key(coord.kind, &coord.pubkey, &coord.d);
            if d.by_coord.get(txn, &key)? == Some(&seq_bytes[..]) {
                d.by_coord.delete(txn, &key)?;
            }
        }
        Ok(())
    }

    /// NIP-09: removes the author's own events named by `e` and `a` tags and
    /// remembers the deletion so the events cannot come back.
    fn apply_deletion(
        &self,
        txn: &mut RwTxn,
        trees: &mut Trees,
        deletion: &Event,
    ) -> Result<(), StoreError> {
        let d = &self.dbs;
        for value in deletion.tag_values("e") {
            let Some(id) = crate::event::decode_hex::<32>(value) else {
                continue;
            };
            if let Some(seq) = d.ids.get(txn, &id)? {
                let seq = be_u64(seq)?;
                let target = self.header_of(txn, seq)?;
                if target.pubkey == deletion.pubkey && target.kind != 5 {
                    self.remove(txn, trees, seq)?;
                }
            }
            // One record per (id, deleter): anyone may name an id, and
            // only its author's record may keep it out, so a stranger's
            // deletion must not replace the author's.
            d.deleted_ids
                .put(txn, &deleted_key(&id, &deletion.pubkey), &[])?;
        }
        for value in deletion.tag_values("a") {
            let Some(coord) = Coordinate::parse(value) else {
                continue;
            };
            if coord.pubkey != deletion.pubkey || KindClass::of(coord.kind) == KindClass::Regular {
                continue;
            }
            let key = schema::coord_key(coord.kind, &coord.pubkey, &coord.d);
            if let Some(seq) = d.by_coord.get(txn, &key)? {
                let seq = be_u64(seq)?;
                if self.header_of(txn, seq)?.created_at <= deletion.created_at {
                    self.remove(txn, trees, seq)?;
                }
            }
            let previous = match d.deleted_coords.get(txn, &key)? {
                Some(v) => be_u64(v)?,
                None => 0,
            };
            let cutoff = previous.max(deletion.created_at);
            d.deleted_coords.put(txn, &key, &cutoff.to_be_bytes())?;
        }
        Ok(())
    }

    fn purge_expired(
        &self,
        txn: &mut RwTxn,
        trees: &mut Trees,
        now: u64,
    ) -> Result<WriteOutcome, StoreError> {
        let mut doomed = Vec::new();
        for entry in self.dbs.by_expiry.iter(txn)? {
            let (key, _) = entry?;
            let (expiration, seq) =
                schema::time_seq_suffix(key).ok_or(StoreError::Corrupt("expiry key"))?;
            if expiration > now || doomed.len() >= PURGE_CHUNK {
                break;
            }
            doomed.push(seq);
        }
        for seq in &doomed {
            self.remove(txn, trees, *seq)?;
        }
        Ok(WriteOutcome::Purged {
            count: doomed.len(),
        })
    }

    fn header_of(&self, txn: &RwTxn, seq: u64) -> Result<Header, StoreError> {
        let value = self
            .dbs
            .events
            .get(txn, &schema::seq_key(seq))?
            .ok_or(StoreError::Corrupt("index points at a missing event"))?;
        Ok(Header::decode(value)
            .ok_or(StoreError::Corrupt("event header"))?
            .0)
    }
}

/// `meta` key of the number of writer batches (and bulk commits) so far:
/// a bulk load notices any other commit by it, not only one that stored.
const COMMITS: &[u8] = b"commits";

impl Store {
    /// Writer batches and bulk commits so far.
    pub(super) fn commits(&self, txn: &RoTxn) -> Result<u64, StoreError> {
        match self.dbs.meta.get(txn, COMMITS)? {
            Some(v) => be_u64(v),
            None => Ok(0),
        }
    }

    /// Counts the commit `txn` is about to make.
    pub(super) fn count_commit(&self, txn: &mut RwTxn) -> Result<u64, StoreError> {
        let next = self.commits(txn)? + 1;
        self.dbs.meta.put(txn, COMMITS, &next.to_be_bytes())?;
        Ok(next)
    }
}

/// The `deleted_ids` key of a deletion of `id` signed by `deleter`.
pub(super) fn deleted_key(id: &[u8; 32], deleter: &[u8; 32]) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(id);
    key[32..].copy_from_slice(deleter);
    key
}

/// The fixed fields stored before an event's JSON.
pub(super) fn header_of(event: &Event) -> Header {
    Header {
        id: event.id,
        pubkey: event.pubkey,
        created_at: event.created_at,
        kind: event.kind,
        expiration: event.expiration().unwrap_or(0),
    }
}

/// Every `(index, key)` pair of one event; insert and remove share it so the
/// two can never disagree.
pub(super) fn index_keys(
    header: &Header,
    tags: &[Vec<String>],
    seq: u64,
) -> Vec<(IndexDb, Vec<u8>)> {
    let ts = header.created_at;
    let mut keys = vec![
        (IndexDb::Time, schema::index_key(&[], ts, seq)),
        (
            IndexDb::Kind,
            schema::index_key(&schema::kind_prefix(header.kind), ts, seq),
        ),
        (IndexDb::Pubkey, schema::index_key(&header.pubkey, ts, seq)),
        (
            IndexDb::PubkeyKind,
            schema::index_key(
                &schema::pubkey_kind_prefix(&header.pubkey, header.kind),
                ts,
                seq,
            ),
        ),
    ];
    let mut tag_prefixes: Vec<Vec<u8>> = schema::indexed_tags(tags)
        .map(|(letter, value)| schema::tag_prefix(letter, value))
        .collect();
    tag_prefixes.sort_unstable();
    tag_prefixes.dedup();
    keys.extend(
        tag_prefixes
            .into_iter()
            .map(|p| (IndexDb::Tag, schema::index_key(&p, ts, seq))),
    );
    if header.expiration != 0 {
        keys.push((
            IndexDb::Expiry,
            schema::index_key(&[], header.expiration, seq),
        ));
    }
    keys
}

pub(super) fn be_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(
        bytes
            .try_into()
            .map_err(|_| StoreError::Corrupt("u64 value"))?,
    ))
}

/// Set in `meta` once `deleted_ids` is keyed by id ‖ deleter.
const DELETIONS_BY_DELETER: &[u8] = b"deleted_ids_by_deleter";

impl Store {
    /// Stores written before `deleted_ids` was keyed by id ‖ deleter kept
    /// one deleter per id (the last); each becomes its own key, once.
    pub(super) fn key_deletions_by_deleter(&self, txn: &mut RwTxn) -> Result<(), StoreError> {
        if self.dbs.meta.get(txn, DELETIONS_BY_DELETER)?.is_some() {
            return Ok(());
        }
        let mut old = Vec::new();
        for entry in self.dbs.deleted_ids.iter(txn)? {
            let (key, value) = entry?;
            if let (Ok(id), Ok(deleter)) = (<[u8; 32]>::try_from(key), <[u8; 32]>::try_from(value))
            {
                old.push((id, deleter));
            }
        }
        for (id, deleter) in &old {
            self.dbs.deleted_ids.delete(txn, id)?;
            let key = deleted_key(id, deleter);
            self.dbs.deleted_ids.put(txn, &key, &[])?;
        }
        self.dbs.meta.put(txn, DELETIONS_BY_DELETER, &[1])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_stores_deletion_records_are_rekeyed_by_deleter_once() {
        let node = crate::event::Keys::generate();
        let (dir, store) = crate::store::mesh_store(&node, &[]);
        let (id, deleter) = ([7u8; 32], [9u8; 32]);
        // As a store from before: id → the (last) deleter's pubkey.
        store
            .write_retrying(|txn| {
                store.dbs.deleted_ids.put(txn, &id, &deleter)?;
                store.dbs.meta.delete(txn, DELETIONS_BY_DELETER)?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let options = crate::store::StoreOptions::from_config(&crate::config::Config::default());
        let reopened = Store::open(dir.path(), &options).unwrap();
        let txn = reopened.read_txn().unwrap();
        let keys: Vec<Vec<u8>> = reopened
            .dbs
            .deleted_ids
            .iter(&txn)
            .unwrap()
            .map(|e| e.unwrap().0.to_vec())
            .collect();
        assert_eq!(keys, vec![deleted_key(&id, &deleter).to_vec()]);
    }
}
