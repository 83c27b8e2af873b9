//! The event store: LMDB through heed. Reads happen anywhere through
//! [`Store::read_txn`]; writes happen only in the writer thread through
//! [`Store::apply_batch`] (see `writer.rs`), so there is a single place where
//! events, indexes and deletion records change.

mod bookkeeping;
mod bulk;
mod bulk_runs;
mod count;
mod echo_changes;
mod graph_order;
mod graph_upgrade;
mod graphs;
mod query;
pub mod schema;
mod scopes;
mod write;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions, RoTxn, WithoutTls};
use parking_lot::{RwLock, RwLockReadGuard};

pub use bookkeeping::Bookkeeping;
pub use bulk::{is_bulk_kind, BulkLoad, BulkOutcome};
pub use echo_changes::ChangePosition;
pub use graph_order::{index_unknown, later_homes, t_of, term_of, HomeTerm};
pub use graphs::{epoch_of, graph_of, GraphBatchOutcome, GraphState, GraphTx, KvRow};
pub use query::{Found, IndexName, QueryPlan, Stop};
pub use schema::Header;
pub use scopes::{graph_scope, scope_filter, Scope, ScopeStatus, TreeWindow, GRAPH_TX_KIND};
pub use write::{BatchItem, WriteOutcome, DELETED_BY_AUTHOR};

type Db = Database<Bytes, Bytes>;

/// Store failures. `Full` is the one a client may see (as `error:`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Lmdb(#[from] heed::Error),
    #[error("cannot create data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("database is full")]
    Full,
    #[error("database is corrupt: {0}")]
    Corrupt(&'static str),
    #[error("fingerprint tree: {0}")]
    Scope(String),
    #[error("bulk import: {0}")]
    Bulk(String),
    /// A budgeted walk ([`Store::query_until`]) reached its deadline.
    #[error("the walk ran out of time")]
    OutOfTime,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub map_size_mb: u64,
    pub max_map_size_mb: u64,
    /// Kinds kept out of every fingerprint tree (the restricted kinds).
    pub tree_excluded_kinds: Vec<u16>,
    /// Maintain and serve fingerprint trees.
    pub trees: bool,
}

impl StoreOptions {
    pub fn from_config(config: &crate::config::Config) -> StoreOptions {
        StoreOptions {
            map_size_mb: config.store.map_size_mb,
            max_map_size_mb: config.store.max_map_size_mb,
            tree_excluded_kinds: config.auth.restricted_kinds.clone(),
            trees: config.negentropy.trees,
        }
    }
}

pub(crate) struct Dbs {
    pub events: Db,
    pub ids: Db,
    pub by_time: Db,
    pub by_kind: Db,
    pub by_pubkey: Db,
    pub by_pubkey_kind: Db,
    pub by_tag: Db,
    pub by_coord: Db,
    pub by_expiry: Db,
    pub deleted_ids: Db,
    pub deleted_coords: Db,
    pub meta: Db,
    pub neg_nodes: Db,
    pub neg_scopes: Db,
    pub sync_refused: Db,
    pub peer_state: Db,
    pub added_peers: Db,
    pub graph_log: Db,
    pub graph_t: Db,
    pub tokens: Db,
    pub graph_state: Db,
    pub graph_kvs: Db,
    pub graph_homes: Db,
    pub graph_conflicts: Db,
    pub echo_stats: Db,
    pub echo_changes: Db,
    pub echo_changed: Db,
}

/// A stored token value: expiry (u64 BE) then the user id.
fn decode_token(value: &[u8]) -> Result<(String, u64), StoreError> {
    let (expiry, user) = value
        .split_first_chunk::<8>()
        .ok_or(StoreError::Corrupt("token value"))?;
    Ok((
        String::from_utf8_lossy(user).into_owned(),
        u64::from_be_bytes(*expiry),
    ))
}

/// What is kept per peer URL outside the event data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRecord {
    /// Sync state (last_sync, events_synced, ...), survives restarts.
    State,
    /// A peer added through the control API, restored at the next start.
    AddedPeer,
}

/// An open event store.
pub struct Store {
    env: Env<WithoutTls>,
    pub(crate) dbs: Dbs,
    /// Readers hold it shared; growing the map takes it exclusively, since
    /// LMDB may only resize with no transaction open in the process.
    gate: RwLock<()>,
    map_size: AtomicU64,
    max_map_size: u64,
    tree_excluded: std::collections::HashSet<u16>,
    trees_enabled: bool,
    /// Who may author mesh-kind events: checked on every insert and by
    /// every reader of graph and echo state.
    mesh: std::sync::Arc<crate::mesh::Mesh>,
}

/// A read snapshot. Short-lived: hold one per query, never across an await
/// that waits on the network.
pub struct ReadTxn<'s> {
    txn: RoTxn<'s, WithoutTls>,
    _gate: RwLockReadGuard<'s, ()>,
}

impl<'s> std::ops::Deref for ReadTxn<'s> {
    type Target = RoTxn<'s>;
    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}

const MIB: u64 = 1024 * 1024;

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let (map_size_mb, max_map_size_mb) = (options.map_size_mb, options.max_map_size_mb);
        // A new data dir is the node's alone (mode 0700): it holds the node
        // key, the admin token and every event.
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .map_err(|e| StoreError::DataDir(dir.display().to_string(), e))?;
        let page = 4096u64;
        let map_size = (map_size_mb * MIB).div_ceil(page) * page;
        // SAFETY: the environment is opened once per process per directory
        // (heed refuses a second open), and LMDB's own locking protects the
        // files against other processes such as `echorelay import`.
        let env = unsafe {
            EnvOpenOptions::new()
                .read_txn_without_tls()
                .map_size(map_size as usize)
                .max_dbs(32)
                .max_readers(1024)
                .open(dir)?
        };
        let mut wtxn = env.write_txn()?;
        let mut create = |name: &str| env.create_database::<Bytes, Bytes>(&mut wtxn, Some(name));
        let dbs = Dbs {
            events: create("events")?,
            ids: create("ids")?,
            by_time: create("by_time")?,
            by_kind: create("by_kind")?,
            by_pubkey: create("by_pubkey")?,
            by_pubkey_kind: create("by_pubkey_kind")?,
            by_tag: create("by_tag")?,
            by_coord: create("by_coord")?,
            by_expiry: create("by_expiry")?,
            deleted_ids: create("deleted_ids")?,
            deleted_coords: create("deleted_coords")?,
            meta: create("meta")?,
            neg_nodes: create("neg_nodes")?,
            neg_scopes: create("neg_scopes")?,
            sync_refused: create("sync_refused")?,
            peer_state: create("peer_state")?,
            added_peers: create("added_peers")?,
            graph_log: create("graph_log")?,
            graph_t: create("graph_t")?,
            tokens: create("tokens")?,
            graph_state: create("graph_state")?,
            graph_kvs: create("graph_kvs")?,
            graph_homes: create("graph_homes")?,
            graph_conflicts: create("graph_conflicts")?,
            echo_stats: create("echo_stats")?,
            echo_changes: create("echo_changes")?,
            echo_changed: create("echo_changed")?,
        };
        wtxn.commit()?;
        let current = env.info().map_size as u64;
        let store = Store {
            env,
            dbs,
            gate: RwLock::new(()),
            map_size: AtomicU64::new(current.max(map_size)),
            max_map_size: (max_map_size_mb * MIB).max(map_size),
            tree_excluded: options.tree_excluded_kinds.iter().copied().collect(),
            trees_enabled: options.trees,
            mesh: std::sync::Arc::default(),
        };
        // Indexes and keys added since the store was written, filled once
        // (one start-up transaction; a no-op once their markers are set).
        store.write_retrying(|txn| {
            store.fill_echo_changes(txn)?;
            store.key_deletions_by_deleter(txn)
        })?;
        store.roll_back_bulk_load()?;
        Ok(store)
    }

    /// The mesh set this store checks authors against (empty, so refusing
    /// every mesh event, until the opener admits its node and peers).
    pub fn mesh(&self) -> &std::sync::Arc<crate::mesh::Mesh> {
        &self.mesh
    }

    /// May an event of `kind` by `pubkey` act on graph or echo state? Mesh
    /// kinds only by mesh members; every other kind is not mesh state.
    pub fn is_trusted_author(&self, kind: u16, pubkey: &[u8; 32]) -> bool {
        !crate::mesh::is_mesh_kind(kind) || self.mesh.is_member(pubkey)
    }

    pub fn read_txn(&self) -> Result<ReadTxn<'_>, StoreError> {
        loop {
            let gate = self.gate.read();
            match self.env.read_txn() {
                Ok(txn) => return Ok(ReadTxn { txn, _gate: gate }),
                Err(e) if is_map_resized(&e) => {
                    drop(gate);
                    self.adopt_map_size()?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Number of stored events.
    pub fn count(&self) -> Result<u64, StoreError> {
        let txn = self.read_txn()?;
        Ok(self.dbs.events.len(&txn)?)
    }

    /// Highest sequence number committed as seen by `txn` (0 when empty).
    pub fn last_seq(&self, txn: &RoTxn) -> Result<u64, StoreError> {
        match self.dbs.meta.get(txn, write::NEXT_SEQ)? {
            Some(v) => Ok(u64::from_be_bytes(
                v.try_into().map_err(|_| StoreError::Corrupt("next_seq"))?,
            )
            .saturating_sub(1)),
            None => Ok(0),
        }
    }

    /// Events committed with a sequence number in `(after, upto]`, oldest
    /// first, at most `max` of them. The writer uses it to find what another
    /// process (`echorelay sync`, `import`) wrote into this data dir.
    pub fn events_after(
        &self,
        txn: &RoTxn,
        after: u64,
        upto: u64,
        max: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let mut out = Vec::new();
        let (low, high) = (
            schema::seq_key(after.saturating_add(1)),
            schema::seq_key(upto),
        );
        let bounds = (
            std::ops::Bound::Included(&low[..]),
            std::ops::Bound::Included(&high[..]),
        );
        for item in self.dbs.events.range(txn, &bounds)? {
            let (key, value) = item?;
            let seq = u64::from_be_bytes(key.try_into().map_err(|_| StoreError::Corrupt("seq"))?);
            let (_, json) = Header::decode(value).ok_or(StoreError::Corrupt("event header"))?;
            out.push((seq, String::from_utf8_lossy(json).into_owned()));
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// The stored JSON of one event, if present and not expired.
    pub fn get_json(&self, txn: &RoTxn, id: &[u8; 32]) -> Result<Option<String>, StoreError> {
        let Some(seq) = self.dbs.ids.get(txn, id)? else {
            return Ok(None);
        };
        let Some(value) = self.dbs.events.get(txn, seq)? else {
            return Ok(None);
        };
        let (header, json) = Header::decode(value).ok_or(StoreError::Corrupt("event header"))?;
        if header.is_expired(crate::event::now()) {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(json).into_owned()))
    }

    /// Drops from `ids` (a peer's offer) those we hold already or refused
    /// before; returns how many of them had been refused.
    pub fn drop_known_refused(&self, ids: &mut Vec<[u8; 32]>) -> Result<usize, StoreError> {
        let txn = self.read_txn()?;
        let mut refused = 0;
        let mut keep = Vec::with_capacity(ids.len());
        for id in ids.drain(..) {
            if self.dbs.sync_refused.get(&txn, &id)?.is_some() {
                refused += 1;
            } else if self.dbs.ids.get(&txn, &id)?.is_none() {
                keep.push(id);
            }
        }
        *ids = keep;
        Ok(refused)
    }

    /// Restricted kinds (NIP-42) stay out of fingerprint trees and out of
    /// relay-to-relay sync: a peer would not show them to us either.
    pub fn is_tree_excluded(&self, kind: u16) -> bool {
        self.tree_excluded.contains(&kind)
    }

    /// May a tree with this scope hold events of `kind`? Never restricted
    /// kinds; mesh kinds only in mesh scopes (see `mesh.rs`).
    pub fn tree_may_hold(&self, scope: &crate::filter::Filter, kind: u16) -> bool {
        !self.tree_excluded.contains(&kind) && crate::mesh::scope_may_hold(scope, kind)
    }

    /// Every saved record of one kind, by peer URL.
    pub fn peer_records(&self, kind: PeerRecord) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.read_txn()?;
        let mut out = Vec::new();
        for entry in self.peer_db(kind).iter(&txn)? {
            let (key, value) = entry?;
            out.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
        }
        Ok(out)
    }

    /// The peers added through the control API, as they were added.
    pub fn added_peers(&self) -> Result<Vec<crate::config::PeerConfig>, StoreError> {
        Ok(self
            .peer_records(PeerRecord::AddedPeer)?
            .into_iter()
            .filter_map(|(_, json)| serde_json::from_slice(&json).ok())
            .collect())
    }

    pub(super) fn peer_db(&self, kind: PeerRecord) -> &Db {
        match kind {
            PeerRecord::State => &self.dbs.peer_state,
            PeerRecord::AddedPeer => &self.dbs.added_peers,
        }
    }

    /// Keeps a bearer token's hash for `user` (`echorelay token add`),
    /// valid until `expires_at` (unix seconds, 0: never).
    pub fn put_token(
        &self,
        hash: &[u8; 32],
        user: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let mut value = expires_at.to_be_bytes().to_vec();
        value.extend_from_slice(user.as_bytes());
        self.write_retrying(|txn| Ok(self.dbs.tokens.put(txn, hash, &value)?))
    }

    /// The user a token hash belongs to, and when it expires (0: never).
    pub fn token_user(&self, hash: &[u8; 32]) -> Result<Option<(String, u64)>, StoreError> {
        let txn = self.read_txn()?;
        self.dbs
            .tokens
            .get(&txn, hash)?
            .map(decode_token)
            .transpose()
    }

    /// Every stored token as (hash, user, expires_at).
    pub fn token_users(&self) -> Result<Vec<([u8; 32], String, u64)>, StoreError> {
        let txn = self.read_txn()?;
        let mut out = Vec::new();
        for entry in self.dbs.tokens.iter(&txn)? {
            let (hash, value) = entry?;
            let hash = hash
                .try_into()
                .map_err(|_| StoreError::Corrupt("token hash"))?;
            let (user, expires_at) = decode_token(value)?;
            out.push((hash, user, expires_at));
        }
        Ok(out)
    }

    /// Forgets every token of `user`; returns how many.
    pub fn remove_tokens_of(&self, user: &str) -> Result<usize, StoreError> {
        let doomed: Vec<[u8; 32]> = self
            .token_users()?
            .into_iter()
            .filter(|(_, u, _)| u == user)
            .map(|(hash, _, _)| hash)
            .collect();
        self.write_retrying(|txn| {
            for hash in &doomed {
                self.dbs.tokens.delete(txn, hash)?;
            }
            Ok(doomed.len())
        })
    }

    /// One node's saved echo sync statistics.
    pub fn echo_stats(&self, node_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read_txn()?;
        Ok(self
            .dbs
            .echo_stats
            .get(&txn, node_id.as_bytes())?
            .map(<[u8]>::to_vec))
    }

    /// Doubles the map (up to the configured maximum). Called by the writer
    /// after a MDB_MAP_FULL, with no write transaction open.
    pub(crate) fn grow(&self) -> Result<(), StoreError> {
        let current = self.map_size.load(Ordering::Relaxed);
        if current >= self.max_map_size {
            return Err(StoreError::Full);
        }
        let next = (current * 2).min(self.max_map_size);
        let _exclusive = self.gate.write();
        // SAFETY: the exclusive gate guarantees no read transaction is open
        // in this process, and the caller (the only writer) holds none.
        unsafe { self.env.resize(next as usize)? };
        self.map_size.store(next, Ordering::Relaxed);
        tracing::info!(map_size_mb = next / MIB, "grew the LMDB map");
        Ok(())
    }

    /// One write transaction, committed: the writer's batches, the default
    /// trees built at start, and commands run as their own process
    /// (`echorelay token`, `negentropy add|build|remove`), which LMDB
    /// serialises with a running node's writer. A full map grows (callers
    /// hold no other transaction) and a map another process grew is
    /// adopted; then `write` runs again in a fresh transaction.
    pub(crate) fn write_retrying<T>(
        &self,
        mut write: impl FnMut(&mut heed::RwTxn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        loop {
            let attempt = self
                .env
                .write_txn()
                .map_err(StoreError::from)
                .and_then(|mut txn| {
                    let out = write(&mut txn)?;
                    txn.commit()?;
                    Ok(out)
                });
            match attempt {
                Err(StoreError::Lmdb(e)) if is_map_full(&e) => self.grow()?,
                Err(StoreError::Lmdb(e)) if is_map_resized(&e) => self.adopt_map_size()?,
                other => return other,
            }
        }
    }

    /// Another process (`echorelay import`, `sync`, `token`, `negentropy`
    /// into this data dir) grew the map past ours: LMDB refuses our next
    /// transaction with MDB_MAP_RESIZED until we adopt its size.
    pub(crate) fn adopt_map_size(&self) -> Result<(), StoreError> {
        let _exclusive = self.gate.write();
        // SAFETY: the exclusive gate guarantees no read transaction is open
        // in this process; callers hold no write transaction (the writer
        // adopts between its transactions).
        unsafe { self.env.resize(0)? };
        let adopted = self.env.info().map_size as u64;
        let previous = self.map_size.swap(adopted, Ordering::Relaxed);
        if adopted != previous {
            tracing::info!(
                map_size_mb = adopted / MIB,
                "adopted the LMDB map size another process set"
            );
        }
        Ok(())
    }

    /// Flushes the environment to disk (graceful shutdown, end of import).
    pub fn sync(&self) {
        if let Err(e) = self.env.force_sync() {
            tracing::error!(error = %e, "LMDB sync failed");
        }
    }

    pub(crate) fn env(&self) -> &Env<WithoutTls> {
        &self.env
    }
}

/// The secondary indexes whose keys end in `created_at ‖ seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexDb {
    Time,
    Kind,
    Pubkey,
    PubkeyKind,
    Tag,
    Expiry,
}

impl Store {
    pub(crate) fn index(&self, which: IndexDb) -> &Db {
        let d = &self.dbs;
        match which {
            IndexDb::Time => &d.by_time,
            IndexDb::Kind => &d.by_kind,
            IndexDb::Pubkey => &d.by_pubkey,
            IndexDb::PubkeyKind => &d.by_pubkey_kind,
            IndexDb::Tag => &d.by_tag,
            IndexDb::Expiry => &d.by_expiry,
        }
    }
}

/// True for the LMDB error that means "map full".
pub(crate) fn is_map_full(err: &heed::Error) -> bool {
    matches!(err, heed::Error::Mdb(heed::MdbError::MapFull))
}

pub(crate) fn is_map_resized(err: &heed::Error) -> bool {
    matches!(err, heed::Error::Mdb(heed::MdbError::MapResized))
}

/// A store in a temporary directory whose mesh is `node` and `trusted`
/// (for the store's own tests).
#[cfg(test)]
pub(crate) fn mesh_store(
    node: &crate::event::Keys,
    trusted: &[&crate::event::Keys],
) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::from_config(&crate::config::Config::default());
    let store = Store::open(dir.path(), &options).unwrap();
    let mut config = crate::config::Config::default();
    config.auth.trusted_nodes = trusted
        .iter()
        .map(|k| hex::encode(k.public_key()))
        .collect();
    store.mesh().admit(node.public_key(), &config, &[]);
    (dir, store)
}
