//! Writes that are not events but live in the same LMDB environment: ids a
//! sync refused, peer records, echo statistics, graph snapshot rows. They
//! reach the store only as [`Bookkeeping`] items of the writer's batches
//! (`BatchItem::Bookkeeping`), so a running node has one writer; the
//! functions here run inside the batch's write transaction.

use heed::RwTxn;

use super::graphs::{graph_key, KvRow};
use super::{PeerRecord, Store, StoreError};
use crate::refusal::Refusal;

/// One bookkeeping write.
#[derive(Debug, Clone, PartialEq)]
pub enum Bookkeeping {
    /// Events a sync fetched and we refused (policy, deletion), so later
    /// runs do not ask for them again.
    RememberRefused(Vec<([u8; 32], Refusal)>),
    /// Forget the refusals given for this reason (a node that joined the
    /// mesh makes its events storable).
    ForgetRefusals(Refusal),
    /// A peer's record set (`Some`) or removed (`None`).
    PeerRecord {
        kind: PeerRecord,
        url: String,
        value: Option<Vec<u8>>,
    },
    /// One node's echo sync statistics (opaque JSON owned by `echo/`).
    EchoStats { node: String, stats: Vec<u8> },
    /// Snapshot rows of a graph (a bounded chunk: ingest interleaves
    /// between chunks), optionally after dropping the graph's rows.
    KvRows {
        graph: String,
        rows: Vec<KvRow>,
        clear_first: bool,
    },
}

impl Store {
    pub(super) fn apply_bookkeeping(
        &self,
        txn: &mut RwTxn,
        op: &Bookkeeping,
    ) -> Result<(), StoreError> {
        match op {
            Bookkeeping::RememberRefused(refused) => {
                for (id, reason) in refused {
                    let text = reason.to_string();
                    self.dbs.sync_refused.put(txn, id, text.as_bytes())?;
                }
            }
            Bookkeeping::ForgetRefusals(reason) => {
                let reason = reason.to_string();
                let mut doomed = Vec::new();
                for entry in self.dbs.sync_refused.iter(txn)? {
                    let (id, held) = entry?;
                    if held == reason.as_bytes() {
                        doomed.push(id.to_vec());
                    }
                }
                for id in doomed {
                    self.dbs.sync_refused.delete(txn, &id)?;
                }
            }
            Bookkeeping::PeerRecord { kind, url, value } => {
                let db = self.peer_db(*kind);
                match value {
                    Some(value) => db.put(txn, url.as_bytes(), value)?,
                    None => {
                        db.delete(txn, url.as_bytes())?;
                    }
                }
            }
            Bookkeeping::EchoStats { node, stats } => {
                self.dbs.echo_stats.put(txn, node.as_bytes(), stats)?;
            }
            Bookkeeping::KvRows {
                graph,
                rows,
                clear_first,
            } => self.put_kv_rows(txn, graph, rows, *clear_first)?,
        }
        Ok(())
    }

    fn put_kv_rows(
        &self,
        txn: &mut RwTxn,
        graph: &str,
        rows: &[KvRow],
        clear_first: bool,
    ) -> Result<(), StoreError> {
        let prefix = graph_key(graph);
        if clear_first {
            let mut high = prefix.clone();
            high.extend_from_slice(&u64::MAX.to_be_bytes());
            let bounds = (
                std::ops::Bound::Included(&prefix[..]),
                std::ops::Bound::Included(&high[..]),
            );
            self.dbs.graph_kvs.delete_range(txn, &bounds)?;
        }
        for row in rows {
            let mut key = prefix.clone();
            key.extend_from_slice(&row.addr.to_be_bytes());
            let value = serde_json::json!([row.content, row.addresses]).to_string();
            self.dbs.graph_kvs.put(txn, &key, value.as_bytes())?;
        }
        Ok(())
    }
}
