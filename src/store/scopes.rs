//! Fingerprint-tree scopes: which trees exist, which events each covers, and
//! keeping them in step with the events in the same write transaction.
//!
//! A scope is a NIP-01 filter without since/until/limit. Scope 0 is `{}`
//! (everything) and always exists. Kinds the relay restricts (NIP-42) are in
//! no tree, so a tree can be served to any client without leaking them.
//! Records live in the `neg_scopes` database (`id → status ‖ filter JSON`)
//! and are re-read by every write batch, so a scope added by
//! `echorelay negentropy add` in another process is maintained at once.

use heed::{RoTxn, RwTxn};

use super::schema::Header;
use super::{Store, StoreError};
use crate::event::Event;
use crate::filter::Filter;
use crate::negentropy::{Item, NegError, Storage, SubRange, TreeReader, TreeWriter};

/// Events per write transaction while building a tree.
const BUILD_CHUNK: usize = 10_000;

/// Scope status: still being filled, or complete and servable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeStatus {
    Building,
    Ready,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub id: u32,
    pub status: ScopeStatus,
    pub filter: Filter,
}

/// A tree and the since/until window of a filter it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeWindow {
    pub id: u32,
    pub since: Option<u64>,
    pub until: Option<u64>,
}

impl TreeWindow {
    pub fn new(id: u32, filter: &Filter) -> TreeWindow {
        TreeWindow {
            id,
            since: filter.since,
            until: filter.until,
        }
    }
}

/// Why a scope operation was refused.
fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Scope(msg.into())
}

impl From<NegError> for StoreError {
    fn from(e: NegError) -> StoreError {
        StoreError::Scope(e.to_string())
    }
}

/// Kind of a graph transaction (DB-Sync log entry): every graph gets its
/// own tree, scope `{"kinds":[4071],"#g":[graph id]}`.
pub use crate::mesh::GRAPH_TX_KIND;

/// The scope of one graph's transaction log.
pub fn graph_scope(graph: &str) -> Filter {
    let mut filter = Filter {
        kinds: Some(vec![GRAPH_TX_KIND]),
        ..Filter::default()
    };
    filter.tags.insert(b'g', vec![graph.to_string()]);
    filter
}

/// The tree writers of one write batch.
pub(crate) struct Trees {
    writers: Vec<(Scope, TreeWriter)>,
    /// Scopes created by this batch (a graph's first event), recorded at flush.
    created: Vec<Scope>,
    next_id: u32,
    enabled: bool,
}

impl Trees {
    pub(super) fn covers(store: &Store, scope: &Scope, event: &Event) -> bool {
        store.tree_may_hold(&scope.filter, event.kind) && scope.filter.matches(event)
    }

    pub(crate) fn insert(
        &mut self,
        store: &Store,
        txn: &RwTxn,
        event: &Event,
    ) -> Result<(), StoreError> {
        // A graph's tree exists from its index event on, so a node that has
        // just learned of a graph reconciles its txs in the same sync.
        let graph = match event.kind {
            GRAPH_TX_KIND => event.tag_values("g").next(),
            crate::mesh::GRAPH_INDEX_KIND => Some(event.d_tag()).filter(|d| !d.is_empty()),
            _ => None,
        };
        if let (Some(graph), true) = (graph, self.enabled) {
            self.ensure_graph_scope(store, graph);
        }
        for (scope, writer) in &mut self.writers {
            if Self::covers(store, scope, event) {
                writer.insert(txn, Item::new(event.created_at, event.id))?;
            }
        }
        Ok(())
    }

    /// A graph's first event creates its tree (empty until now, so it is
    /// ready at once).
    fn ensure_graph_scope(&mut self, store: &Store, graph: &str) {
        let filter = graph_scope(graph);
        if self.writers.iter().any(|(s, _)| s.filter == filter) {
            return;
        }
        let scope = Scope {
            id: self.next_id,
            status: ScopeStatus::Ready,
            filter,
        };
        self.next_id += 1;
        self.created.push(scope.clone());
        self.writers.push((
            scope.clone(),
            TreeWriter::new(store.dbs.neg_nodes, scope.id),
        ));
    }

    pub(crate) fn remove(
        &mut self,
        store: &Store,
        txn: &RwTxn,
        event: &Event,
    ) -> Result<(), StoreError> {
        for (scope, writer) in &mut self.writers {
            if Self::covers(store, scope, event) {
                writer.remove(txn, Item::new(event.created_at, event.id))?;
            }
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self, store: &Store, txn: &mut RwTxn) -> Result<(), StoreError> {
        for scope in self.created.drain(..) {
            let record = encode_scope(scope.status, &scope.filter);
            store
                .dbs
                .neg_scopes
                .put(txn, &scope.id.to_be_bytes(), &record)?;
        }
        for (_, writer) in &mut self.writers {
            writer.flush(txn)?;
        }
        Ok(())
    }
}

fn encode_scope(status: ScopeStatus, filter: &Filter) -> Vec<u8> {
    let mut out = vec![if status == ScopeStatus::Ready { 1 } else { 0 }];
    out.extend_from_slice(filter.to_value().to_string().as_bytes());
    out
}

fn decode_scope(key: &[u8], value: &[u8]) -> Option<Scope> {
    let id = u32::from_be_bytes(key.try_into().ok()?);
    let status = match value.first()? {
        1 => ScopeStatus::Ready,
        _ => ScopeStatus::Building,
    };
    let filter = Filter::from_json(std::str::from_utf8(value.get(1..)?).ok()?).ok()?;
    Some(Scope { id, status, filter })
}

/// A scope's filter: a tree covers a filter's events regardless of time.
pub fn scope_filter(filter: &Filter) -> Filter {
    Filter {
        since: None,
        until: None,
        limit: None,
        ..filter.clone()
    }
}

impl Store {
    pub fn scopes(&self, txn: &RoTxn) -> Result<Vec<Scope>, StoreError> {
        let mut out = Vec::new();
        for entry in self.dbs.neg_scopes.iter(txn)? {
            let (key, value) = entry?;
            out.push(decode_scope(key, value).ok_or(StoreError::Corrupt("scope record"))?);
        }
        Ok(out)
    }

    pub(crate) fn trees_for_batch(&self, txn: &RoTxn) -> Result<Trees, StoreError> {
        if !self.trees_enabled {
            return Ok(Trees {
                writers: Vec::new(),
                created: Vec::new(),
                next_id: 0,
                enabled: false,
            });
        }
        let scopes = self.scopes(txn)?;
        let next_id = scopes.iter().map(|s| s.id + 1).max().unwrap_or(1).max(1);
        let writers = scopes
            .into_iter()
            .map(|scope| {
                let writer = TreeWriter::new(self.dbs.neg_nodes, scope.id);
                (scope, writer)
            })
            .collect();
        Ok(Trees {
            writers,
            created: Vec::new(),
            next_id,
            enabled: true,
        })
    }

    /// The ready tree that serves `filter` (since/until become a sub-range),
    /// if any. A filter with a `limit` is never served from a tree.
    pub fn tree_for(&self, txn: &RoTxn, filter: &Filter) -> Result<Option<u32>, StoreError> {
        if filter.limit.is_some() || !self.trees_enabled {
            return Ok(None);
        }
        let wanted = scope_filter(filter);
        Ok(self
            .scopes(txn)?
            .into_iter()
            .find(|s| s.status == ScopeStatus::Ready && s.filter == wanted)
            .map(|s| s.id))
    }

    /// Read access to a tree inside `txn`.
    /// Runs `f` over a tree (or its since/until window) in a fresh read
    /// snapshot: how the relay's responder and the sync client's initiator
    /// reconcile against a tree without holding a snapshot across the
    /// network round trip.
    pub fn with_tree<T>(
        &self,
        window: TreeWindow,
        f: impl FnOnce(&dyn Storage) -> Result<T, NegError>,
    ) -> Result<T, NegError> {
        let store_error = |e: StoreError| NegError::Storage(e.to_string());
        let txn = self.read_txn().map_err(store_error)?;
        let reader = self.tree_reader(&txn, window.id).map_err(store_error)?;
        if window.since.is_none() && window.until.is_none() {
            return f(&reader);
        }
        f(&SubRange::new(&reader, window.since, window.until)?)
    }

    pub fn tree_reader<'t>(
        &self,
        txn: &'t RoTxn<'t>,
        id: u32,
    ) -> Result<TreeReader<'t>, StoreError> {
        Ok(TreeReader::open(self.dbs.neg_nodes, txn, id)?)
    }

    /// Registers a scope (status building) and returns its id; an existing
    /// scope with the same filter is returned as is.
    pub fn add_scope(&self, filter: &Filter) -> Result<u32, StoreError> {
        if filter.since.is_some() || filter.until.is_some() || filter.limit.is_some() {
            return Err(invalid("a tree filter cannot have since, until or limit"));
        }
        self.write_retrying(|txn| {
            let scopes = self.scopes(txn)?;
            if let Some(existing) = scopes.iter().find(|s| &s.filter == filter) {
                return Ok(existing.id);
            }
            let id = if filter == &Filter::default() {
                0
            } else {
                scopes.iter().map(|s| s.id + 1).max().unwrap_or(1).max(1)
            };
            self.dbs.neg_scopes.put(
                txn,
                &id.to_be_bytes(),
                &encode_scope(ScopeStatus::Building, filter),
            )?;
            Ok(id)
        })
    }

    /// (Re)fills a tree from the stored events in chunks, so the relay keeps
    /// writing meanwhile (its batches maintain the tree too; inserts are
    /// idempotent), then marks it ready.
    pub fn build_scope(&self, id: u32) -> Result<u64, StoreError> {
        self.build_scope_with(id, |_| {})
    }

    /// [`Store::build_scope`], telling `reached` the last sequence number
    /// read after each chunk (progress against `last_seq`).
    pub fn build_scope_with(
        &self,
        id: u32,
        mut reached: impl FnMut(u64),
    ) -> Result<u64, StoreError> {
        let scope = self.write_retrying(|txn| {
            let scope = self
                .scopes(txn)?
                .into_iter()
                .find(|s| s.id == id)
                .ok_or_else(|| invalid(format!("no tree with id {id}")))?;
            TreeWriter::clear(&self.dbs.neg_nodes, txn, id)?;
            self.dbs.neg_scopes.put(
                txn,
                &id.to_be_bytes(),
                &encode_scope(ScopeStatus::Building, &scope.filter),
            )?;
            Ok(scope)
        })?;
        let mut after = 0u64;
        let mut added = 0u64;
        loop {
            let (done, last, chunk_added) =
                self.write_retrying(|txn| self.build_chunk(txn, &scope, after))?;
            added += chunk_added;
            if let Some(seq) = last {
                reached(seq);
            }
            match last {
                Some(seq) if !done => after = seq,
                _ => return Ok(added),
            }
        }
    }

    /// One chunk of a build: the tree entries of up to [`BUILD_CHUNK`]
    /// events after seq `after` (done when fewer remain, and the tree
    /// marked ready); returns (done, last seq read, entries added).
    fn build_chunk(
        &self,
        txn: &mut heed::RwTxn,
        scope: &Scope,
        after: u64,
    ) -> Result<(bool, Option<u64>, u64), StoreError> {
        let id = scope.id;
        let mut added = 0u64;
        let mut writer = TreeWriter::new(self.dbs.neg_nodes, id);
        let mut seen = 0;
        let mut last = None;
        let start = super::schema::seq_key(after);
        let range = (
            std::ops::Bound::Excluded(&start[..]),
            std::ops::Bound::Unbounded,
        );
        for entry in self.dbs.events.range(txn, &range)? {
            let (key, value) = entry?;
            let (header, json) =
                Header::decode(value).ok_or(StoreError::Corrupt("event header"))?;
            last = Some(u64::from_be_bytes(
                key.try_into().map_err(|_| StoreError::Corrupt("seq"))?,
            ));
            seen += 1;
            if self.tree_may_hold(&scope.filter, header.kind) {
                let event = std::str::from_utf8(json)
                    .ok()
                    .and_then(|j| Event::from_json(j).ok())
                    .ok_or(StoreError::Corrupt("stored event JSON"))?;
                if scope.filter.matches(&event)
                    && writer.insert(txn, Item::new(header.created_at, header.id))?
                {
                    added += 1;
                }
            }
            if seen >= BUILD_CHUNK {
                break;
            }
        }
        writer.flush(txn)?;
        let done = seen < BUILD_CHUNK;
        if done {
            self.dbs.neg_scopes.put(
                txn,
                &id.to_be_bytes(),
                &encode_scope(ScopeStatus::Ready, &scope.filter),
            )?;
        }
        Ok((done, last, added))
    }

    /// Deletes a tree. The `{}` tree cannot be removed.
    pub fn remove_scope(&self, id: u32) -> Result<(), StoreError> {
        if id == 0 {
            return Err(invalid("the {} tree always exists"));
        }
        self.write_retrying(|txn| {
            if !self.dbs.neg_scopes.delete(txn, &id.to_be_bytes())? {
                return Err(invalid(format!("no tree with id {id}")));
            }
            TreeWriter::clear(&self.dbs.neg_nodes, txn, id)?;
            Ok(())
        })
    }

    /// Makes sure the `{}` tree and the mesh index tree (graph metadata,
    /// echo states, asset records: `{"kinds":[34071,34072,34073]}`) exist
    /// and are built.
    pub fn ensure_default_tree(&self) -> Result<(), StoreError> {
        if !self.trees_enabled {
            return Ok(());
        }
        let mesh_index = Filter {
            kinds: Some(vec![
                crate::mesh::GRAPH_INDEX_KIND,
                crate::mesh::ECHO_STATE_KIND,
                crate::mesh::GRAPH_ASSET_KIND,
            ]),
            ..Filter::default()
        };
        for filter in [Filter::default(), mesh_index] {
            let ready = {
                let txn = self.read_txn()?;
                self.scopes(&txn)?
                    .iter()
                    .any(|s| s.filter == filter && s.status == ScopeStatus::Ready)
            };
            if !ready {
                let id = self.add_scope(&filter)?;
                let added = self.build_scope(id)?;
                tracing::info!(events = added, scope = %filter.to_value(), "built a fingerprint tree");
            }
        }
        Ok(())
    }
}
