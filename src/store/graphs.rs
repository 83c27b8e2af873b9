//! The graph transaction logs of the DB-Sync protocol. Every stored
//! kind-4071 event with a `g` tag gets its graph's next log position `t` in
//! the same write transaction that stores it, whether a client's tx/batch
//! or a peer's reconciliation brought it, so `t` only advances and a pull
//! never misses a committed tx. A client batch is accepted only when its
//! `t-before` equals the graph's current `t`, checked inside that
//! transaction: of two racing batches, exactly one wins.
//!
//! Reset and deletion converge through the graph's index events (34071):
//! each tx carries the graph's `epoch` when it was written; storing an index
//! event with a higher epoch (a reset) or `deleted` removes the graph's
//! older txs in the same transaction, and such txs are refused from then on,
//! so a peer that has not heard of the reset cannot bring them back.

use heed::{RoTxn, RwTxn};

use super::schema;
use super::scopes::{Trees, GRAPH_TX_KIND};
use super::{Store, StoreError, WriteOutcome};
use crate::event::Event;
use crate::mesh::GRAPH_INDEX_KIND;
use crate::refusal::Refusal;

/// One entry of a graph's log, as pull returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphTx {
    pub t: u64,
    /// The tx string exactly as the client sent it.
    pub tx: String,
}

/// What became of a client's tx/batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphBatchOutcome {
    /// Appended; `t` is the graph's position after the batch.
    Appended { t: u64, seqs: Vec<u64> },
    /// `t-before` was not the current `t` (given here); nothing written.
    Stale { t: u64 },
}

/// The epoch a tx event was written in (`["epoch", n]`, 0 when absent).
pub fn epoch_of(event: &Event) -> u64 {
    event
        .tag_values("epoch")
        .next()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0)
}

/// What the store keeps of a graph's index: enough to refuse and purge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphState {
    /// Highest epoch any index event announced (resets raise it).
    pub epoch: u64,
    /// Deleted by any index event (deletion is final).
    pub deleted: bool,
}

impl GraphState {
    fn decode(bytes: &[u8]) -> Option<GraphState> {
        let epoch = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        Some(GraphState {
            epoch,
            deleted: bytes.get(8) == Some(&1),
        })
    }

    fn encode(&self) -> [u8; 9] {
        let mut out = [0u8; 9];
        out[..8].copy_from_slice(&self.epoch.to_be_bytes());
        out[8] = u8::from(self.deleted);
        out
    }

    /// Why a tx of `epoch` may not be stored, if it may not.
    pub fn refusal(&self, epoch: u64) -> Option<Refusal> {
        if self.deleted {
            Some(Refusal::blocked("this graph was deleted"))
        } else if epoch < self.epoch {
            Some(Refusal::blocked(
                "this graph was reset after this transaction",
            ))
        } else {
            None
        }
    }
}

/// The fields of an index event's content the store acts on.
#[derive(serde::Deserialize)]
struct IndexFields {
    #[serde(rename = "graph-id")]
    graph_id: String,
    #[serde(default)]
    epoch: u64,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    homes: Vec<super::graph_order::HomeTerm>,
    /// The head when a reset raised the epoch: positions up to it count as
    /// filled (their txs are gone with the old epoch).
    #[serde(default, rename = "reset-t")]
    reset_t: u64,
}

/// The fields of an index event that names its own graph (`d`). An index
/// event from before homes existed names its signer as the only home.
fn index_fields(event: &Event) -> Option<IndexFields> {
    let mut fields = serde_json::from_str::<IndexFields>(&event.content).ok()?;
    if fields.homes.is_empty() {
        fields.homes = vec![super::graph_order::HomeTerm {
            node: hex::encode(event.pubkey),
            from_t: 1,
        }];
    }
    (fields.graph_id == event.d_tag()).then_some(fields)
}

/// The graph a tx event belongs to: its first `g` tag.
pub fn graph_of(event: &Event) -> Option<&str> {
    if event.kind != GRAPH_TX_KIND {
        return None;
    }
    event.tag_values("g").next()
}

/// Key prefix of one graph in `graph_log` (and its key in `graph_t`).
pub(super) fn graph_key(graph: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(graph.len() + 1);
    schema::push_tag_value(&mut key, graph);
    key
}

impl Store {
    /// The graph's reset epoch and deletion mark.
    pub fn graph_state(&self, txn: &RoTxn, graph: &str) -> Result<GraphState, StoreError> {
        Ok(match self.dbs.graph_state.get(txn, &graph_key(graph))? {
            Some(v) => GraphState::decode(v).ok_or(StoreError::Corrupt("graph state"))?,
            None => GraphState::default(),
        })
    }

    /// Refuses a tx of a deleted graph or from before the graph's reset.
    pub(super) fn graph_refusal(
        &self,
        txn: &RoTxn,
        event: &Event,
    ) -> Result<Option<Refusal>, StoreError> {
        let Some(graph) = graph_of(event) else {
            return Ok(None);
        };
        Ok(self.graph_state(txn, graph)?.refusal(epoch_of(event)))
    }

    /// Recomputes every graph's epoch and deletion mark from the index
    /// events of mesh authors only, at writer start: an index event stored
    /// before the author check (a stranger's "deleted", say) stops acting.
    /// When a mark is lifted, the remembered sync refusals are forgotten,
    /// so the txs it had refused can come back from peers.
    pub fn recompute_graph_states(&self) -> Result<(), StoreError> {
        let txn = self.read_txn()?;
        let filter = crate::filter::Filter {
            kinds: Some(vec![GRAPH_INDEX_KIND]),
            ..Default::default()
        };
        let mut states: std::collections::BTreeMap<Vec<u8>, GraphState> = Default::default();
        let mut homes: std::collections::BTreeMap<Vec<u8>, Vec<super::graph_order::HomeTerm>> =
            Default::default();
        self.query(&txn, &filter, u64::MAX, crate::event::now(), &mut |found| {
            let Some(fields) = Event::from_json(found.json)
                .ok()
                .filter(|e| self.is_trusted_author(e.kind, &e.pubkey))
                .and_then(|e| index_fields(&e))
            else {
                return Ok(true);
            };
            let key = graph_key(&fields.graph_id);
            let best = homes.entry(key.clone()).or_default();
            if super::graph_order::later_homes(&fields.homes, best) {
                *best = fields.homes.clone();
            }
            let state = states.entry(key).or_default();
            state.epoch = state.epoch.max(fields.epoch);
            state.deleted |= fields.deleted;
            Ok(true)
        })?;
        let mut stale = Vec::new();
        for entry in self.dbs.graph_state.iter(&txn)? {
            let (key, value) = entry?;
            let held = GraphState::decode(value).ok_or(StoreError::Corrupt("graph state"))?;
            if states.get(key).copied().unwrap_or_default() != held {
                stale.push(key.to_vec());
            }
        }
        drop(txn);
        self.recompute_graph_homes(homes)?;
        if stale.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            graphs = stale.len(),
            "graph states set by index events outside the mesh are undone"
        );
        let mut wtxn = self.env().write_txn()?;
        for key in stale {
            match states.get(&key) {
                Some(state) => self.dbs.graph_state.put(&mut wtxn, &key, &state.encode())?,
                None => {
                    self.dbs.graph_state.delete(&mut wtxn, &key)?;
                }
            }
        }
        self.dbs.sync_refused.clear(&mut wtxn)?;
        wtxn.commit()?;
        Ok(())
    }

    /// After an index event is stored: raises the graph's epoch or marks it
    /// deleted, and removes the txs that this makes obsolete.
    pub(super) fn apply_graph_index(
        &self,
        txn: &mut RwTxn,
        trees: &mut Trees,
        event: &Event,
    ) -> Result<(), StoreError> {
        if event.kind != GRAPH_INDEX_KIND {
            return Ok(());
        }
        let Some(fields) = index_fields(event) else {
            return Ok(());
        };
        let graph = fields.graph_id.as_str();
        self.adopt_homes(txn, trees, graph, fields.homes.clone())?;
        let old = self.graph_state(txn, graph)?;
        let new = GraphState {
            epoch: old.epoch.max(fields.epoch),
            deleted: old.deleted || fields.deleted,
        };
        if new == old {
            return Ok(());
        }
        if new.epoch > old.epoch {
            self.advance_head(txn, graph, fields.reset_t)?;
        }
        let prefix = graph_key(graph);
        self.dbs.graph_state.put(txn, &prefix, &new.encode())?;
        let mut doomed = Vec::new();
        {
            let mut high = prefix.clone();
            high.extend_from_slice(&u64::MAX.to_be_bytes());
            let bounds = (
                std::ops::Bound::Included(&prefix[..]),
                std::ops::Bound::Included(&high[..]),
            );
            for entry in self.dbs.graph_log.range(txn, &bounds)? {
                let (key, seq) = entry?;
                doomed.push((key.to_vec(), seq.to_vec()));
            }
        }
        for (key, seq) in doomed {
            let seq = super::write::be_u64(&seq)?;
            let obsolete = match self.event_at(txn, seq)? {
                Some(tx) => new.refusal(epoch_of(&tx)).is_some(),
                None => true,
            };
            if obsolete {
                self.remove(txn, trees, seq)?;
                self.dbs.graph_log.delete(txn, &key)?;
            }
        }
        Ok(())
    }

    /// The graph's current log position (0: empty).
    pub fn graph_t(&self, txn: &RoTxn, graph: &str) -> Result<u64, StoreError> {
        match self.dbs.graph_t.get(txn, &graph_key(graph))? {
            Some(v) => Ok(u64::from_be_bytes(
                v.try_into().map_err(|_| StoreError::Corrupt("graph t"))?,
            )),
            None => Ok(0),
        }
    }

    /// Log entries after `since`, oldest first, at most `max` of them and
    /// stopping once `max_bytes` of tx text are reached. Entries whose event
    /// is gone (reset, deletion) are skipped.
    pub fn graph_pull(
        &self,
        txn: &RoTxn,
        graph: &str,
        since: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<GraphTx>, StoreError> {
        let mut bytes = 0usize;
        let prefix = graph_key(graph);
        let mut low = prefix.clone();
        low.extend_from_slice(&since.saturating_add(1).to_be_bytes());
        let mut high = prefix.clone();
        // Served up to the head only: beyond it, a gap is still being filled.
        high.extend_from_slice(&self.graph_t(txn, graph)?.to_be_bytes());
        let bounds = (
            std::ops::Bound::Included(&low[..]),
            std::ops::Bound::Included(&high[..]),
        );
        let mut out = Vec::new();
        for entry in self.dbs.graph_log.range(txn, &bounds)? {
            let (key, seq) = entry?;
            let t = u64::from_be_bytes(
                key[prefix.len()..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("graph log key"))?,
            );
            let Some(value) = self.dbs.events.get(txn, seq)? else {
                continue;
            };
            let (header, json) =
                schema::Header::decode(value).ok_or(StoreError::Corrupt("event header"))?;
            // A tx stored before the author check, or by a node since
            // removed from the mesh, is not part of the graph.
            if !self.is_trusted_author(header.kind, &header.pubkey) {
                continue;
            }
            let event = std::str::from_utf8(json)
                .ok()
                .and_then(|j| Event::from_json(j).ok())
                .ok_or(StoreError::Corrupt("stored event JSON"))?;
            bytes += event.content.len();
            out.push(GraphTx {
                t,
                tx: event.content,
            });
            if out.len() >= max || bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Applies a client's batch if `t_before` is current.
    pub(super) fn apply_graph_batch(
        &self,
        txn: &mut RwTxn,
        trees: &mut Trees,
        graph: &str,
        t_before: u64,
        events: &[(Event, String)],
        next_seq: &mut u64,
    ) -> Result<WriteOutcome, StoreError> {
        let t = self.graph_t(txn, graph)?;
        let homes = self.graph_homes(txn, graph)?;
        // Signed before a reset, or by a home the graph has just moved away
        // from: the client re-bases (and reaches the new home).
        let outdated = match events.first() {
            Some((event, _)) => {
                let current_term = homes.len().checked_sub(1);
                let still_home = homes.last().map(|h| h.node.as_str())
                    == Some(hex::encode(event.pubkey).as_str());
                self.graph_refusal(txn, event)?.is_some()
                    || current_term != Some(super::graph_order::term_of(event) as usize)
                    || !still_home
            }
            None => false,
        };
        if t != t_before || outdated {
            return Ok(WriteOutcome::Graph(GraphBatchOutcome::Stale { t }));
        }
        let mut seqs = Vec::with_capacity(events.len());
        for (event, json) in events {
            if let WriteOutcome::Stored { seq } = self.insert(txn, trees, event, json, next_seq)? {
                seqs.push(seq);
            }
        }
        let t = self.graph_t(txn, graph)?;
        Ok(WriteOutcome::Graph(GraphBatchOutcome::Appended { t, seqs }))
    }
}

/// One row of a graph's snapshot store (the client's kvs table).
#[derive(Debug, Clone, PartialEq)]
pub struct KvRow {
    pub addr: u64,
    pub content: String,
    /// Kept as the client sent it (JSON).
    pub addresses: serde_json::Value,
}

impl Store {
    /// Rows with `addr > after`, in address order, at most `limit`.
    pub fn kv_rows(
        &self,
        graph: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<KvRow>, StoreError> {
        let prefix = graph_key(graph);
        let mut low = prefix.clone();
        match after {
            Some(after) if after == u64::MAX => return Ok(Vec::new()),
            Some(after) => low.extend_from_slice(&(after + 1).to_be_bytes()),
            None => low.extend_from_slice(&0u64.to_be_bytes()),
        }
        let mut high = prefix.clone();
        high.extend_from_slice(&u64::MAX.to_be_bytes());
        let bounds = (
            std::ops::Bound::Included(&low[..]),
            std::ops::Bound::Included(&high[..]),
        );
        let txn = self.read_txn()?;
        let mut out = Vec::new();
        for entry in self.dbs.graph_kvs.range(&txn, &bounds)? {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let addr = u64::from_be_bytes(
                key[prefix.len()..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("kv key"))?,
            );
            let (content, addresses): (String, serde_json::Value) =
                serde_json::from_slice(value).map_err(|_| StoreError::Corrupt("kv row"))?;
            out.push(KvRow {
                addr,
                content,
                addresses,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Keys;
    use crate::store::{BatchItem, StoreOptions};

    fn tx(keys: &Keys, graph: &str, body: &str) -> (Event, String) {
        let event = keys.sign(
            crate::event::now(),
            GRAPH_TX_KIND,
            vec![vec!["g".into(), graph.into()]],
            body.into(),
        );
        let json = event.to_json();
        (event, json)
    }

    #[cfg(unix)]
    #[test]
    fn a_new_data_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("fresh").join("data");
        let options = StoreOptions::from_config(&crate::config::Config::default());
        Store::open(&data, &options).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_tx_by_an_author_outside_the_mesh_is_refused_and_not_pulled() {
        let (node, stranger) = (Keys::generate(), Keys::generate());
        let (_dir, store) = crate::store::mesh_store(&node, &[]);
        let (forged, json) = tx(&stranger, "g1", "forged");
        let outcome = store
            .apply_batch(&[BatchItem::Insert {
                event: &forged,
                json: &json,
            }])
            .unwrap();
        assert_eq!(
            outcome[0],
            WriteOutcome::Refused(crate::mesh::author_refusal())
        );
        let txn = store.read_txn().unwrap();
        assert_eq!(store.graph_t(&txn, "g1").unwrap(), 0);
    }
}
