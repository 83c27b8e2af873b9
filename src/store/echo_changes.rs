//! The echo change index: for every echo node id, when it last changed —
//! the newest `received` (ms) of any state stored for it — kept in the
//! writer's transaction as `echo_changes` (changed ms ‖ node id → –) and
//! `echo_changed` (node id → changed ms). An echo pull pages through it from
//! its `last_sync` or cursor, so a page costs the page, not every node the
//! store holds. A conflicting state that arrives later moves its node to
//! the end (it changed again); the index never moves a node back.

use std::ops::Bound;

use heed::{RoTxn, RwTxn};

use super::{Store, StoreError};
use crate::event::Event;
use crate::mesh::ECHO_STATE_KIND;

/// Set in `meta` once the index holds every stored state.
const BUILT: &[u8] = b"echo_changes_built";

/// A position in the change index: (changed ms, node id).
pub type ChangePosition = (u64, String);

fn change_key(ms: u64, node: &str) -> Vec<u8> {
    let mut key = ms.to_be_bytes().to_vec();
    key.extend_from_slice(node.as_bytes());
    key
}

fn received_ms(event: &Event) -> Option<u64> {
    event.tag_values("received").next()?.parse().ok()
}

impl Store {
    /// Records that `event`'s node changed, if it is an echo state.
    pub(super) fn note_echo_change(
        &self,
        txn: &mut RwTxn,
        event: &Event,
    ) -> Result<(), StoreError> {
        match received_ms(event) {
            Some(received) if event.kind == ECHO_STATE_KIND => {
                self.note_changed(txn, event.d_tag(), received)
            }
            _ => Ok(()),
        }
    }

    fn note_changed(&self, txn: &mut RwTxn, node: &str, received: u64) -> Result<(), StoreError> {
        let old = match self.dbs.echo_changed.get(txn, node.as_bytes())? {
            Some(bytes) => Some(super::write::be_u64(bytes)?),
            None => None,
        };
        if old.is_some_and(|old| old >= received) {
            return Ok(());
        }
        if let Some(old) = old {
            self.dbs.echo_changes.delete(txn, &change_key(old, node))?;
        }
        self.dbs
            .echo_changes
            .put(txn, &change_key(received, node), &[])?;
        self.dbs
            .echo_changed
            .put(txn, node.as_bytes(), &received.to_be_bytes())?;
        Ok(())
    }

    /// Up to `max` nodes that changed after `after`, in change order: with
    /// `Bound::Excluded((ms, node))` the ones after that position, with
    /// `Bound::Included((ms, ""))` every one that changed at `ms` or later.
    pub fn echo_changes_from(
        &self,
        txn: &RoTxn,
        from: Bound<&ChangePosition>,
        max: usize,
    ) -> Result<Vec<ChangePosition>, StoreError> {
        let start = match from {
            Bound::Included((ms, node)) => Bound::Included(change_key(*ms, node)),
            Bound::Excluded((ms, node)) => Bound::Excluded(change_key(*ms, node)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let range = (start.as_ref().map(Vec::as_slice), Bound::Unbounded);
        let mut found = Vec::with_capacity(max.min(1024));
        for entry in self.dbs.echo_changes.range(txn, &range)?.take(max) {
            let (key, _) = entry?;
            let (ms, node) = key
                .split_first_chunk::<8>()
                .ok_or(StoreError::Corrupt("echo change key"))?;
            let node =
                std::str::from_utf8(node).map_err(|_| StoreError::Corrupt("echo node id"))?;
            found.push((u64::from_be_bytes(*ms), node.to_string()));
        }
        Ok(found)
    }

    /// Fills the index from the stored states, once (stores from before
    /// it); `Store::open` runs it before the writer exists.
    pub(super) fn fill_echo_changes(&self, txn: &mut RwTxn) -> Result<(), StoreError> {
        if self.dbs.meta.get(txn, BUILT)?.is_some() {
            return Ok(());
        }
        let mut changed = Vec::new();
        let kind = crate::filter::Filter {
            kinds: Some(vec![ECHO_STATE_KIND]),
            ..Default::default()
        };
        self.query(txn, &kind, u64::MAX, 0, &mut |found| {
            let event = Event::from_json(found.json).ok();
            if let Some((event, received)) = event.as_ref().and_then(|e| Some((e, received_ms(e)?)))
            {
                changed.push((event.d_tag().to_string(), received));
            }
            Ok(true)
        })?;
        for (node, received) in &changed {
            self.note_changed(txn, node, *received)?;
        }
        self.dbs.meta.put(txn, BUILT, &[1])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Keys;
    use crate::store::{BatchItem, StoreOptions};

    fn state(key: &Keys, node: &str, received: u64) -> Event {
        let tags = vec![
            vec!["d".into(), node.into()],
            vec!["received".into(), received.to_string()],
        ];
        key.sign(received / 1000, ECHO_STATE_KIND, tags, "{}".into())
    }

    fn listed(store: &Store) -> Vec<ChangePosition> {
        let txn = store.read_txn().unwrap();
        store
            .echo_changes_from(&txn, Bound::Unbounded, 100)
            .unwrap()
    }

    #[test]
    fn a_store_from_before_the_index_is_indexed_when_opened() {
        let node = Keys::generate();
        let (dir, store) = crate::store::mesh_store(&node, &[]);
        let states = [state(&node, "n1", 5_000), state(&node, "n2", 3_000)];
        let items: Vec<(Event, String)> = states.iter().map(|e| (e.clone(), e.to_json())).collect();
        let batch: Vec<BatchItem> = items
            .iter()
            .map(|(event, json)| BatchItem::Insert { event, json })
            .collect();
        store.apply_batch(&batch).unwrap();
        let expected = vec![(3_000, "n2".to_string()), (5_000, "n1".to_string())];
        assert_eq!(listed(&store), expected);
        // As a store written before the index existed looks.
        store
            .write_retrying(|txn| {
                store.dbs.echo_changes.clear(txn)?;
                store.dbs.echo_changed.clear(txn)?;
                store.dbs.meta.delete(txn, BUILT)?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let options = StoreOptions::from_config(&crate::config::Config::default());
        let reopened = Store::open(dir.path(), &options).unwrap();
        assert_eq!(listed(&reopened), expected);
        let txn = reopened.read_txn().unwrap();
        let after_first = Bound::Excluded(&expected[0]);
        assert_eq!(
            reopened.echo_changes_from(&txn, after_first, 100).unwrap(),
            expected[1..]
        );
    }
}
