//! The one-time upgrade of graph logs written before homes existed, when
//! each node numbered txs in its own arrival order. On the home (the node
//! that signed the graph's index event) every such tx is signed again with
//! `t` = 1, 2, … in its local order — the home's order becomes the graph's
//! order — and the old event goes. On every other node the old txs go: the home's
//! re-signed ones arrive by sync and are placed at their `t`. Runs once,
//! through the writer, before the node serves; marked done in `meta`.

use heed::RwTxn;

use super::graph_order::{log_key, t_of};
use super::graphs::graph_of;
use super::scopes::Trees;
use super::{Store, StoreError, WriteOutcome};
use crate::event::{Event, Keys};

/// Set in `meta` once the upgrade ran.
const UPGRADED: &[u8] = b"graph_logs_have_t";

impl Store {
    /// Upgrades every legacy tx (see the module doc); `Purged { count }`
    /// counts the txs re-signed or dropped.
    pub(super) fn upgrade_graph_logs(
        &self,
        txn: &mut RwTxn,
        trees: &mut Trees,
        key: &Keys,
        next_seq: &mut u64,
    ) -> Result<WriteOutcome, StoreError> {
        if self.dbs.meta.get(txn, UPGRADED)?.is_some() {
            return Ok(WriteOutcome::Purged { count: 0 });
        }
        let mut legacy = Vec::new();
        for entry in self.dbs.graph_log.iter(txn)? {
            let (log_entry, seq) = entry?;
            let seq = super::write::be_u64(seq)?;
            let position = log_entry
                .last_chunk::<8>()
                .map(|t| u64::from_be_bytes(*t))
                .ok_or(StoreError::Corrupt("graph log key"))?;
            legacy.push((seq, position));
        }
        let me = hex::encode(key.public_key());
        let mut count = 0;
        // Per graph, in its old order: the home numbers them again from 1
        // (a reset before the upgrade left its old numbering with a hole at
        // the start, which other nodes would wait on for ever).
        let mut next_t: std::collections::BTreeMap<String, u64> = Default::default();
        for (seq, position) in legacy {
            let Some(old) = self.event_at(txn, seq)? else {
                continue;
            };
            let Some(graph) = graph_of(&old).map(str::to_string) else {
                continue;
            };
            if t_of(&old).is_some() {
                continue;
            }
            if !next_t.contains_key(&graph) {
                next_t.insert(graph.clone(), 1);
                let head = super::graphs::graph_key(&graph);
                self.dbs.graph_t.put(txn, &head, &0u64.to_be_bytes())?;
            }
            self.remove(txn, trees, seq)?;
            self.dbs.graph_log.delete(txn, &log_key(&graph, position))?;
            count += 1;
            let homes = self.graph_homes(txn, &graph)?;
            if homes.len() == 1 && homes[0].node == me {
                let t = next_t.get_mut(&graph).ok_or(StoreError::Corrupt("graph"))?;
                let new = resigned(key, &old, *t);
                *t += 1;
                let json = new.to_json();
                self.insert(txn, trees, &new, &json, next_seq)?;
            }
        }
        self.dbs.meta.put(txn, UPGRADED, &[1])?;
        if count > 0 {
            tracing::info!(txs = count, "graph logs upgraded to the home's order");
        }
        Ok(WriteOutcome::Purged { count })
    }
}

/// `old` signed again by the home, at `t`, in term 0 (its nonce dropped:
/// the `t` keeps ids apart).
fn resigned(key: &Keys, old: &Event, t: u64) -> Event {
    let mut tags: Vec<Vec<String>> = old
        .tags
        .iter()
        .filter(|tag| {
            !matches!(
                tag.first().map(String::as_str),
                Some("nonce" | "t" | "term")
            )
        })
        .cloned()
        .collect();
    tags.push(vec!["t".into(), t.to_string()]);
    tags.push(vec!["term".into(), "0".into()]);
    key.sign(old.created_at, old.kind, tags, old.content.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BatchItem;

    /// A graph as a version before homes wrote it: an index without
    /// `homes` signed by `home`, and txs numbered locally.
    fn legacy_graph(store: &Store, home: &Keys, txs: &[&str]) {
        let index = home.sign(
            5,
            crate::mesh::GRAPH_INDEX_KIND,
            vec![vec!["d".into(), "g1".into()]],
            r#"{"graph-id":"g1","graph-name":"g","owner":"alice","created-at":1,"updated-at":1}"#
                .into(),
        );
        let json = index.to_json();
        store
            .apply_batch(&[BatchItem::Insert {
                event: &index,
                json: &json,
            }])
            .unwrap();
        for tx in txs {
            let tags = vec![
                vec!["g".into(), "g1".into()],
                vec!["nonce".into(), tx.to_string()],
            ];
            let event = home.sign(6, crate::mesh::GRAPH_TX_KIND, tags, tx.to_string());
            store.put_legacy_tx(&event).unwrap();
        }
    }

    fn upgrade(store: &Store, key: &Keys) -> WriteOutcome {
        store
            .apply_batch(&[BatchItem::UpgradeGraphLogs { key }])
            .unwrap()
            .remove(0)
    }

    fn served(store: &Store) -> (u64, Vec<(u64, String)>) {
        let txn = store.read_txn().unwrap();
        let txs = store.graph_pull(&txn, "g1", 0, 100, 1 << 20).unwrap();
        let head = store.graph_t(&txn, "g1").unwrap();
        (head, txs.into_iter().map(|p| (p.t, p.tx)).collect())
    }

    #[test]
    fn the_home_resigns_its_order_and_others_wait_for_it() {
        let (home, other) = (Keys::generate(), Keys::generate());
        let (_h, on_home) = crate::store::mesh_store(&home, &[&other]);
        legacy_graph(&on_home, &home, &["gone", "a", "b", "c"]);
        // A reset before the upgrade removed the first one (its position 1
        // stays empty in the old numbering).
        let mut txn = on_home.env().write_txn().unwrap();
        on_home
            .dbs
            .graph_log
            .delete(&mut txn, &log_key("g1", 1))
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(upgrade(&on_home, &home), WriteOutcome::Purged { count: 3 });
        let (head, txs) = served(&on_home);
        assert_eq!(head, 3);
        assert_eq!(
            txs,
            [(1, "a".to_string()), (2, "b".into()), (3, "c".into())]
        );
        assert_eq!(
            upgrade(&on_home, &home),
            WriteOutcome::Purged { count: 0 },
            "once"
        );

        // Another node had them in another order: it drops its numbering,
        // then takes the home's re-signed txs at their t.
        let (_o, on_other) = crate::store::mesh_store(&other, &[&home]);
        legacy_graph(&on_other, &home, &["c", "a", "b"]);
        assert_eq!(
            upgrade(&on_other, &other),
            WriteOutcome::Purged { count: 3 }
        );
        assert_eq!(served(&on_other), (0, vec![]));
        let txn = on_home.read_txn().unwrap();
        let mut resigned = Vec::new();
        let filter = crate::filter::Filter {
            kinds: Some(vec![crate::mesh::GRAPH_TX_KIND]),
            ..Default::default()
        };
        on_home
            .query(&txn, &filter, 100, crate::event::now(), &mut |found| {
                resigned.push(Event::from_json(found.json).unwrap());
                Ok(true)
            })
            .unwrap();
        drop(txn);
        for event in resigned {
            let json = event.to_json();
            on_other
                .apply_batch(&[BatchItem::Insert {
                    event: &event,
                    json: &json,
                }])
                .unwrap();
        }
        assert_eq!(served(&on_other), served(&on_home));
    }
}
