//! One order per graph (SPEC §4). A graph's log positions `t` are assigned
//! by one node at a time, its *home*. The graph's index event names the home
//! of every term (`homes`: term k's node key and the first t it sequences);
//! each tx event carries `["t", n]` and `["term", k]` and is signed by that
//! term's home. The store keeps the homes of the best index event it has
//! seen (more terms wins; on a tie, the larger last entry), places each tx
//! at its own t, and serves a log only up to its first gap: `graph_t` is
//! the contiguous head, so every node serves the same txs in the same order.
//!
//! A tx signed by a home after its term ended (an old home that kept
//! accepting while a forced handover happened) is refused and kept in
//! `graph_conflicts`, where `echorelay graph conflicts` lists it for the
//! operator to replay.

use heed::{RoTxn, RwTxn};

use super::{Store, StoreError};
use crate::event::Event;
use crate::refusal::Refusal;

/// Term k's home and the first t it sequences.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HomeTerm {
    /// The home's node key (hex).
    pub node: String,
    pub from_t: u64,
}

/// Where a new tx goes, or why it does not.
pub(super) enum Placement {
    /// Not a graph tx.
    NotATx,
    At {
        graph: String,
        t: u64,
    },
    Refused(Refusal),
}

/// A tx whose graph's index event has not arrived: not remembered by sync,
/// since the index event may arrive in the same run.
pub fn index_unknown() -> Refusal {
    Refusal::error("the graph's index event has not arrived yet")
}

fn tag_u64(event: &Event, name: &str) -> Option<u64> {
    event.tag_values(name).next().and_then(|v| v.parse().ok())
}

/// The log position a tx event names.
pub fn t_of(event: &Event) -> Option<u64> {
    tag_u64(event, "t")
}

/// The home term a tx event names (0 when absent).
pub fn term_of(event: &Event) -> u64 {
    tag_u64(event, "term").unwrap_or(0)
}

/// Which of two home lists describes the later state of the graph: more
/// terms, then (a total order, so every node keeps the same one) the larger
/// list, entry by entry from the last.
pub fn later_homes(a: &[HomeTerm], b: &[HomeTerm]) -> bool {
    let key = |h: &[HomeTerm]| -> (usize, Vec<(u64, String)>) {
        (
            h.len(),
            h.iter().rev().map(|x| (x.from_t, x.node.clone())).collect(),
        )
    };
    key(a) > key(b)
}

impl Store {
    /// The graph's homes, term by term (empty: no index event yet).
    pub fn graph_homes(&self, txn: &RoTxn, graph: &str) -> Result<Vec<HomeTerm>, StoreError> {
        match self
            .dbs
            .graph_homes
            .get(txn, &super::graphs::graph_key(graph))?
        {
            Some(bytes) => {
                serde_json::from_slice(bytes).map_err(|_| StoreError::Corrupt("graph homes"))
            }
            None => Ok(Vec::new()),
        }
    }

    /// Checks a new tx event against the graph's homes and its log.
    pub(super) fn place_graph_tx(
        &self,
        txn: &mut RwTxn,
        event: &Event,
    ) -> Result<Placement, StoreError> {
        let Some(graph) = super::graphs::graph_of(event) else {
            return Ok(Placement::NotATx);
        };
        let Some(t) = t_of(event).filter(|t| *t > 0) else {
            return Ok(Placement::Refused(Refusal::invalid(
                "a graph tx needs a [\"t\", n] tag",
            )));
        };
        let homes = self.graph_homes(txn, graph)?;
        if homes.is_empty() {
            return Ok(Placement::Refused(index_unknown()));
        }
        let term = term_of(event) as usize;
        let signer = hex::encode(event.pubkey);
        let Some(home) = homes.get(term).filter(|h| h.node == signer) else {
            return Ok(Placement::Refused(Refusal::restricted(
                "not signed by the graph's home for its term",
            )));
        };
        if t < home.from_t {
            return Ok(Placement::Refused(Refusal::invalid(
                "t before its term began",
            )));
        }
        if homes.get(term + 1).is_some_and(|next| t >= next.from_t) {
            self.keep_conflict(txn, graph, t, event)?;
            return Ok(Placement::Refused(Refusal::blocked(
                "sequenced by a former home after the graph moved",
            )));
        }
        if self.dbs.graph_log.get(txn, &log_key(graph, t))?.is_some() {
            return Ok(Placement::Refused(Refusal::invalid("t already taken")));
        }
        Ok(Placement::At {
            graph: graph.to_string(),
            t,
        })
    }

    /// Records a tx refused as a former home's, for the operator.
    fn keep_conflict(
        &self,
        txn: &mut RwTxn,
        graph: &str,
        t: u64,
        event: &Event,
    ) -> Result<(), StoreError> {
        let mut key = log_key(graph, t);
        key.extend_from_slice(&event.id);
        self.dbs
            .graph_conflicts
            .put(txn, &key, event.to_json().as_bytes())?;
        Ok(())
    }

    /// Txs refused because a former home sequenced them, by t.
    pub fn graph_conflicts(&self, txn: &RoTxn, graph: &str) -> Result<Vec<Event>, StoreError> {
        let prefix = super::graphs::graph_key(graph);
        let mut out = Vec::new();
        for entry in self.dbs.graph_conflicts.prefix_iter(txn, &prefix)? {
            let (_, json) = entry?;
            let event = std::str::from_utf8(json)
                .ok()
                .and_then(|j| Event::from_json(j).ok())
                .ok_or(StoreError::Corrupt("graph conflict"))?;
            out.push(event);
        }
        Ok(out)
    }

    /// Puts a placed tx in the log and moves the head over what is now
    /// contiguous.
    pub(super) fn put_in_log(
        &self,
        txn: &mut RwTxn,
        graph: &str,
        t: u64,
        seq: u64,
    ) -> Result<(), StoreError> {
        self.dbs
            .graph_log
            .put(txn, &log_key(graph, t), &super::schema::seq_key(seq))?;
        self.advance_head(txn, graph, 0)
    }

    /// Moves the head to at least `floor`, then over every filled position.
    pub(super) fn advance_head(
        &self,
        txn: &mut RwTxn,
        graph: &str,
        floor: u64,
    ) -> Result<(), StoreError> {
        let mut head = self.graph_t(txn, graph)?.max(floor);
        while self
            .dbs
            .graph_log
            .get(txn, &log_key(graph, head + 1))?
            .is_some()
        {
            head += 1;
        }
        self.dbs
            .graph_t
            .put(txn, &super::graphs::graph_key(graph), &head.to_be_bytes())?;
        Ok(())
    }

    /// Takes the homes of an index event if they describe a later state;
    /// txs a former home placed after its term ended leave the log for
    /// `graph_conflicts`, and the head falls back before them.
    pub(super) fn adopt_homes(
        &self,
        txn: &mut RwTxn,
        trees: &mut super::scopes::Trees,
        graph: &str,
        homes: Vec<HomeTerm>,
    ) -> Result<(), StoreError> {
        let held = self.graph_homes(txn, graph)?;
        if homes.is_empty() || !later_homes(&homes, &held) {
            return Ok(());
        }
        let key = super::graphs::graph_key(graph);
        let encoded = serde_json::to_vec(&homes).map_err(|_| StoreError::Corrupt("graph homes"))?;
        self.dbs.graph_homes.put(txn, &key, &encoded)?;
        // Only positions from the first changed term on can be affected:
        // from where either list's version of that term begins.
        let first_changed = homes
            .iter()
            .zip(held.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(held.len().min(homes.len()));
        let start_of = |list: &[HomeTerm]| list.get(first_changed).map_or(u64::MAX, |h| h.from_t);
        let from_t = start_of(&homes).min(start_of(&held));
        // Txs refused under the old homes may fit the new ones.
        self.dbs.sync_refused.clear(txn)?;
        let mut misplaced = Vec::new();
        let end = log_key(graph, u64::MAX);
        let start = log_key(graph, from_t);
        let bounds = (
            std::ops::Bound::Included(&start[..]),
            std::ops::Bound::Included(&end[..]),
        );
        for entry in self.dbs.graph_log.range(txn, &bounds)? {
            let (key, seq) = entry?;
            misplaced.push((key.to_vec(), super::write::be_u64(seq)?));
        }
        let mut lowest = None;
        for (key, seq) in misplaced {
            let Some(event) = self.event_at(txn, seq)? else {
                continue;
            };
            // A tx from before homes is the upgrade's (`graph_upgrade.rs`).
            let Some(t) = t_of(&event) else {
                continue;
            };
            let term = term_of(&event) as usize;
            let fits = homes.get(term).is_some_and(|h| {
                h.node == hex::encode(event.pubkey)
                    && t >= h.from_t
                    && homes.get(term + 1).is_none_or(|next| t < next.from_t)
            });
            if !fits {
                self.keep_conflict(txn, graph, t, &event)?;
                self.remove(txn, trees, seq)?;
                self.dbs.graph_log.delete(txn, &key)?;
                lowest = Some(lowest.map_or(t, |l: u64| l.min(t)));
            }
        }
        if let Some(t) = lowest {
            let head = self.graph_t(txn, graph)?.min(t.saturating_sub(1));
            self.dbs.graph_t.put(txn, &key, &head.to_be_bytes())?;
        }
        Ok(())
    }

    /// At writer start: every graph's homes from the index events of mesh
    /// authors (graphs created before homes existed get theirs here).
    pub(super) fn recompute_graph_homes(
        &self,
        homes: std::collections::BTreeMap<Vec<u8>, Vec<HomeTerm>>,
    ) -> Result<(), StoreError> {
        let txn = self.read_txn()?;
        let mut changed = Vec::new();
        for (key, best) in homes {
            let held = match self.dbs.graph_homes.get(&txn, &key)? {
                Some(bytes) => serde_json::from_slice::<Vec<HomeTerm>>(bytes).ok(),
                None => None,
            };
            if held.as_ref() != Some(&best) {
                changed.push((key, best));
            }
        }
        drop(txn);
        if changed.is_empty() {
            return Ok(());
        }
        let mut wtxn = self.env().write_txn()?;
        for (key, best) in changed {
            let encoded =
                serde_json::to_vec(&best).map_err(|_| StoreError::Corrupt("graph homes"))?;
            self.dbs.graph_homes.put(&mut wtxn, &key, &encoded)?;
        }
        wtxn.commit()?;
        Ok(())
    }

    pub(super) fn event_at(&self, txn: &RoTxn, seq: u64) -> Result<Option<Event>, StoreError> {
        let Some(value) = self.dbs.events.get(txn, &super::schema::seq_key(seq))? else {
            return Ok(None);
        };
        let (_, json) =
            super::schema::Header::decode(value).ok_or(StoreError::Corrupt("event header"))?;
        std::str::from_utf8(json)
            .ok()
            .and_then(|j| Event::from_json(j).ok())
            .map(Some)
            .ok_or(StoreError::Corrupt("stored event JSON"))
    }
}

/// `graph_log` key of position `t`.
pub(super) fn log_key(graph: &str, t: u64) -> Vec<u8> {
    let mut key = super::graphs::graph_key(graph);
    key.extend_from_slice(&t.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Keys;
    use crate::store::{BatchItem, GraphBatchOutcome, WriteOutcome};

    fn index(signer: &Keys, homes: &[(&Keys, u64)], at: u64) -> Event {
        let homes: Vec<_> = homes
            .iter()
            .map(|(k, from)| serde_json::json!({"node": hex::encode(k.public_key()), "from-t": from}))
            .collect();
        let content = serde_json::json!({"graph-id": "g1", "graph-name": "g", "owner": "alice",
            "created-at": 1, "updated-at": at, "homes": homes});
        signer.sign(
            at,
            crate::mesh::GRAPH_INDEX_KIND,
            vec![vec!["d".into(), "g1".into()]],
            content.to_string(),
        )
    }

    fn tx(home: &Keys, t: Option<u64>, term: u64, body: &str) -> (Event, String) {
        let mut tags = vec![
            vec!["g".into(), "g1".into()],
            vec!["term".into(), term.to_string()],
        ];
        if let Some(t) = t {
            tags.push(vec!["t".into(), t.to_string()]);
        }
        let event = home.sign(1, crate::mesh::GRAPH_TX_KIND, tags, body.into());
        let json = event.to_json();
        (event, json)
    }

    fn insert(store: &Store, item: &(Event, String)) -> WriteOutcome {
        store
            .apply_batch(&[BatchItem::Insert {
                event: &item.0,
                json: &item.1,
            }])
            .unwrap()
            .remove(0)
    }

    fn log(store: &Store) -> (u64, Vec<(u64, String)>) {
        let txn = store.read_txn().unwrap();
        let pulled = store.graph_pull(&txn, "g1", 0, 100, 1 << 20).unwrap();
        let head = store.graph_t(&txn, "g1").unwrap();
        (head, pulled.into_iter().map(|p| (p.t, p.tx)).collect())
    }

    fn refused(outcome: WriteOutcome) -> String {
        match outcome {
            WriteOutcome::Refused(reason) => reason.to_string(),
            other => panic!("stored: {other:?}"),
        }
    }

    #[test]
    fn only_the_home_sequences_and_the_log_is_served_up_to_its_first_gap() {
        let (home, other) = (Keys::generate(), Keys::generate());
        let (_dir, store) = crate::store::mesh_store(&home, &[&other]);
        let early = tx(&home, Some(1), 0, "a");
        assert_eq!(refused(insert(&store, &early)), index_unknown().to_string());
        let idx = index(&home, &[(&home, 1)], 10);
        assert!(matches!(
            insert(&store, &(idx.clone(), idx.to_json())),
            WriteOutcome::Stored { .. }
        ));

        let batch = vec![early.clone(), tx(&home, Some(2), 0, "b")];
        let outcome = store
            .apply_batch(&[BatchItem::GraphBatch {
                graph: "g1",
                t_before: 0,
                events: &batch,
            }])
            .unwrap();
        assert!(matches!(
            &outcome[0],
            WriteOutcome::Graph(GraphBatchOutcome::Appended { t: 2, .. })
        ));
        let stale = vec![tx(&home, Some(2), 0, "c")];
        let outcome = store
            .apply_batch(&[BatchItem::GraphBatch {
                graph: "g1",
                t_before: 1,
                events: &stale,
            }])
            .unwrap();
        assert_eq!(
            outcome[0],
            WriteOutcome::Graph(GraphBatchOutcome::Stale { t: 2 })
        );

        // Out of order (reconciliation): t=4 waits for t=3.
        assert!(matches!(
            insert(&store, &tx(&home, Some(4), 0, "d")),
            WriteOutcome::Stored { .. }
        ));
        assert_eq!(log(&store).0, 2);
        assert!(matches!(
            insert(&store, &tx(&home, Some(3), 0, "c")),
            WriteOutcome::Stored { .. }
        ));
        let (head, txs) = log(&store);
        assert_eq!(head, 4);
        let order: Vec<&str> = txs.iter().map(|(_, tx)| tx.as_str()).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);

        // Bad input.
        assert!(refused(insert(&store, &tx(&home, None, 0, "x"))).starts_with("invalid:"));
        assert!(refused(insert(&store, &tx(&home, Some(3), 0, "x"))).contains("already taken"));
        assert!(refused(insert(&store, &tx(&other, Some(5), 0, "x"))).starts_with("restricted:"));
        assert!(refused(insert(&store, &tx(&home, Some(5), 1, "x"))).starts_with("restricted:"));
    }

    #[test]
    fn a_forced_move_turns_the_old_homes_later_txs_into_conflicts() {
        let (a, b) = (Keys::generate(), Keys::generate());
        let (_dir, store) = crate::store::mesh_store(&a, &[&b]);
        let idx = index(&a, &[(&a, 1)], 10);
        insert(&store, &(idx.clone(), idx.to_json()));
        for t in 1..=4 {
            insert(&store, &tx(&a, Some(t), 0, &format!("a{t}")));
        }
        // B took over from t=3 while A, cut off, went on to t=4.
        let moved = index(&b, &[(&a, 1), (&b, 3)], 20);
        insert(&store, &(moved.clone(), moved.to_json()));
        assert_eq!(log(&store).0, 2);
        let txn = store.read_txn().unwrap();
        let conflicts: Vec<String> = store
            .graph_conflicts(&txn, "g1")
            .unwrap()
            .into_iter()
            .map(|e| e.content)
            .collect();
        assert_eq!(conflicts, ["a3", "a4"]);
        drop(txn);
        assert!(refused(insert(&store, &tx(&a, Some(5), 0, "a5"))).starts_with("blocked:"));
        assert!(matches!(
            insert(&store, &tx(&b, Some(3), 1, "b3")),
            WriteOutcome::Stored { .. }
        ));
        let order: Vec<String> = log(&store).1.into_iter().map(|(_, tx)| tx).collect();
        assert_eq!(order, ["a1", "a2", "b3"]);
        // An index from before the move (fewer terms) does not undo it.
        let stale = index(&a, &[(&a, 1)], 30);
        insert(&store, &(stale.clone(), stale.to_json()));
        let txn = store.read_txn().unwrap();
        assert_eq!(store.graph_homes(&txn, "g1").unwrap().len(), 2);
    }
}
