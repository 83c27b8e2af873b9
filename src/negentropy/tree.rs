//! The persistent fingerprint tree: a B+tree stored in LMDB whose internal
//! entries carry the count and the id sum (mod 2^256) of everything below
//! them, so positions, range fingerprints and lower bounds are O(log n) and a
//! NEG-OPEN needs no copy of the set.
//!
//! Nodes live in one LMDB database under `tree id ‖ node id`. A leaf holds up
//! to [`LEAF_MAX`] items; an internal node up to [`FANOUT_MAX`] children,
//! each `(node, count, sum, first item)`. Writes go through [`TreeWriter`],
//! which keeps the nodes a batch touches in memory and writes each once when
//! the batch's transaction commits (every insert would otherwise rewrite its
//! whole root-to-leaf path).

use std::collections::{HashMap, HashSet};

use heed::types::Bytes;
use heed::{Database, RoTxn, RwTxn};

use super::codec::{Accumulator, Bound, Item, NegError, FINGERPRINT_SIZE, ID_SIZE};
use super::reconcile::Storage;

/// A node's encoding stays under LMDB's largest in-page value (about 2 KB
/// with 4 KiB pages: 3 + 48 × 40 and 3 + 20 × 88 bytes). A larger node is
/// an overflow value: every rewrite allocates a run of pages, which makes
/// LMDB pull its whole free list into memory and write it back on every
/// commit (measured: 150–210 KB written per ingested event at 10 M events
/// with 100-item leaves). Nodes of older stores may be larger; they are
/// split into pieces this size when next written.
pub const LEAF_MAX: usize = 48;
pub const FANOUT_MAX: usize = 20;

const LEAF: u8 = 0;
const INTERNAL: u8 = 1;
const ITEM_LEN: usize = 8 + ID_SIZE;
const CHILD_LEN: usize = 8 + 8 + 32 + ITEM_LEN;

/// One child of an internal node, with the summary of its subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Child {
    node: u64,
    count: u64,
    sum: Accumulator,
    first: Item,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Leaf(Vec<Item>),
    Internal(Vec<Child>),
}

fn put_item(out: &mut Vec<u8>, item: &Item) {
    out.extend_from_slice(&item.timestamp.to_be_bytes());
    out.extend_from_slice(&item.id);
}

fn get_item(bytes: &[u8]) -> Option<Item> {
    let ts = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let id: [u8; ID_SIZE] = bytes.get(8..ITEM_LEN)?.try_into().ok()?;
    Some(Item::new(ts, id))
}

impl Node {
    fn encode(&self) -> Vec<u8> {
        match self {
            Node::Leaf(items) => {
                let mut out = Vec::with_capacity(3 + items.len() * ITEM_LEN);
                out.push(LEAF);
                out.extend_from_slice(&(items.len() as u16).to_be_bytes());
                for item in items {
                    put_item(&mut out, item);
                }
                out
            }
            Node::Internal(children) => {
                let mut out = Vec::with_capacity(3 + children.len() * CHILD_LEN);
                out.push(INTERNAL);
                out.extend_from_slice(&(children.len() as u16).to_be_bytes());
                for c in children {
                    out.extend_from_slice(&c.node.to_be_bytes());
                    out.extend_from_slice(&c.count.to_be_bytes());
                    out.extend_from_slice(&c.sum.sum);
                    put_item(&mut out, &c.first);
                }
                out
            }
        }
    }

    fn decode(bytes: &[u8]) -> Option<Node> {
        let kind = *bytes.first()?;
        let n = u16::from_be_bytes(bytes.get(1..3)?.try_into().ok()?) as usize;
        let body = bytes.get(3..)?;
        match kind {
            LEAF => {
                let items = (0..n)
                    .map(|i| get_item(body.get(i * ITEM_LEN..(i + 1) * ITEM_LEN)?))
                    .collect::<Option<Vec<_>>>()?;
                Some(Node::Leaf(items))
            }
            INTERNAL => {
                let children = (0..n)
                    .map(|i| {
                        let c = body.get(i * CHILD_LEN..(i + 1) * CHILD_LEN)?;
                        Some(Child {
                            node: u64::from_be_bytes(c[0..8].try_into().ok()?),
                            count: u64::from_be_bytes(c[8..16].try_into().ok()?),
                            sum: Accumulator {
                                sum: c[16..48].try_into().ok()?,
                            },
                            first: get_item(&c[48..])?,
                        })
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(Node::Internal(children))
            }
            _ => None,
        }
    }

    /// The entry describing this node in its parent.
    fn summary(&self, node: u64) -> Option<Child> {
        let mut sum = Accumulator::default();
        let (count, first) = match self {
            Node::Leaf(items) => {
                for item in items {
                    sum.add(&item.id);
                }
                (items.len() as u64, *items.first()?)
            }
            Node::Internal(children) => {
                for c in children {
                    sum.add_acc(&c.sum);
                }
                (
                    children.iter().map(|c| c.count).sum(),
                    children.first()?.first,
                )
            }
        };
        Some(Child {
            node,
            count,
            sum,
            first,
        })
    }
}

/// The child whose range holds `item`: the last one starting at or before
/// it (the first child when `item` sorts before everything).
fn child_for(children: &[Child], item: &Item) -> usize {
    children
        .partition_point(|c| c.first <= *item)
        .saturating_sub(1)
}

/// Leaves `list` as the first of as few equal pieces of at most `max` as
/// hold it, and returns the others in order (none when it fits).
fn split_off_pieces<T>(list: &mut Vec<T>, max: usize) -> Vec<Vec<T>> {
    if list.len() <= max {
        return Vec::new();
    }
    let size = list.len().div_ceil(list.len().div_ceil(max));
    let mut rest = list.split_off(size);
    let mut pieces = Vec::new();
    while rest.len() > size {
        let tail = rest.split_off(size);
        pieces.push(std::mem::replace(&mut rest, tail));
    }
    pieces.push(rest);
    pieces
}

fn node_key(tree: u32, node: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&tree.to_be_bytes());
    key[4..].copy_from_slice(&node.to_be_bytes());
    key
}

/// Node 0 of every tree holds its header: root node id and next free id.
const HEADER_NODE: u64 = 0;

fn corrupt(what: &str) -> NegError {
    NegError::Storage(format!("fingerprint tree is corrupt: {what}"))
}

fn lmdb(e: heed::Error) -> NegError {
    NegError::Storage(e.to_string())
}

fn read_header(
    db: &Database<Bytes, Bytes>,
    txn: &RoTxn,
    tree: u32,
) -> Result<Option<(u64, u64)>, NegError> {
    let Some(bytes) = db.get(txn, &node_key(tree, HEADER_NODE)).map_err(lmdb)? else {
        return Ok(None);
    };
    let root = u64::from_be_bytes(
        bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("header"))?,
    );
    let next = u64::from_be_bytes(
        bytes
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("header"))?,
    );
    Ok(Some((root, next)))
}

fn load(db: &Database<Bytes, Bytes>, txn: &RoTxn, tree: u32, node: u64) -> Result<Node, NegError> {
    let bytes = db
        .get(txn, &node_key(tree, node))
        .map_err(lmdb)?
        .ok_or_else(|| corrupt("missing node"))?;
    Node::decode(bytes).ok_or_else(|| corrupt("undecodable node"))
}

/// Read access to one tree inside a read (or write) transaction. Decoded
/// nodes are kept for the reader's life: one reconciliation message walks
/// the same upper nodes dozens of times.
pub struct TreeReader<'t> {
    db: Database<Bytes, Bytes>,
    txn: &'t RoTxn<'t>,
    tree: u32,
    root: Option<u64>,
    cache: std::cell::RefCell<HashMap<u64, std::rc::Rc<Node>>>,
}

impl<'t> TreeReader<'t> {
    pub fn open(
        db: Database<Bytes, Bytes>,
        txn: &'t RoTxn<'t>,
        tree: u32,
    ) -> Result<TreeReader<'t>, NegError> {
        let root = read_header(&db, txn, tree)?
            .map(|(root, _)| root)
            .filter(|root| *root != HEADER_NODE);
        Ok(TreeReader {
            db,
            txn,
            tree,
            root,
            cache: Default::default(),
        })
    }

    fn node(&self, id: u64) -> Result<std::rc::Rc<Node>, NegError> {
        if let Some(node) = self.cache.borrow().get(&id) {
            return Ok(node.clone());
        }
        let node = std::rc::Rc::new(load(&self.db, self.txn, self.tree, id)?);
        self.cache.borrow_mut().insert(id, node.clone());
        Ok(node)
    }

    /// Walks down to position `pos`, calling `skipped` for every whole
    /// subtree left of it; returns the leaf reached and the offset of `pos`
    /// in it (the offset may equal the leaf's length at the very end).
    fn descend(
        &self,
        mut pos: u64,
        skipped: &mut dyn FnMut(&Child),
    ) -> Result<Option<(std::rc::Rc<Node>, usize)>, NegError> {
        let Some(mut id) = self.root else {
            return Ok(None);
        };
        loop {
            let node = self.node(id)?;
            match &*node {
                Node::Internal(children) => {
                    let mut next = None;
                    for c in children {
                        if pos >= c.count {
                            skipped(c);
                            pos -= c.count;
                        } else {
                            next = Some(c.node);
                            break;
                        }
                    }
                    match next {
                        Some(n) => id = n,
                        None => return Ok(None),
                    }
                }
                Node::Leaf(items) => {
                    let offset = pos as usize;
                    return Ok((offset <= items.len()).then_some((node.clone(), offset)));
                }
            }
        }
    }

    /// Sum and count of the first `pos` items.
    fn prefix(&self, pos: u64) -> Result<(Accumulator, u64), NegError> {
        let mut acc = Accumulator::default();
        let mut counted = 0;
        let leaf = self.descend(pos, &mut |c| {
            acc.add_acc(&c.sum);
            counted += c.count;
        })?;
        if let Some((node, offset)) = leaf {
            if let Node::Leaf(items) = &*node {
                for item in &items[..offset] {
                    acc.add(&item.id);
                    counted += 1;
                }
            }
        }
        Ok((acc, counted))
    }

    fn total(&self) -> Result<usize, NegError> {
        let Some(root) = self.root else { return Ok(0) };
        Ok(self
            .node(root)?
            .summary(root)
            .map(|c| c.count as usize)
            .unwrap_or(0))
    }

    /// Global position of the first item not below `bound`.
    fn lower_bound(&self, bound: &Bound) -> Result<usize, NegError> {
        let Some(mut id) = self.root else {
            return Ok(0);
        };
        let mut pos = 0u64;
        loop {
            match &*self.node(id)? {
                Node::Internal(children) => {
                    let i = children
                        .partition_point(|c| c.first < bound.item)
                        .saturating_sub(1);
                    pos += children[..i].iter().map(|c| c.count).sum::<u64>();
                    match children.get(i) {
                        Some(c) => id = c.node,
                        None => return Ok(pos as usize),
                    }
                }
                Node::Leaf(items) => {
                    return Ok(pos as usize + items.partition_point(|item| *item < bound.item));
                }
            }
        }
    }
}

impl Storage for TreeReader<'_> {
    fn size(&self) -> Result<usize, NegError> {
        self.total()
    }

    fn iterate(
        &self,
        begin: usize,
        end: usize,
        f: &mut dyn FnMut(&Item, usize) -> bool,
    ) -> Result<(), NegError> {
        let mut pos = begin;
        while pos < end {
            let Some((node, offset)) = self.descend(pos as u64, &mut |_| {})? else {
                return Ok(());
            };
            let Node::Leaf(items) = &*node else {
                return Ok(());
            };
            if offset >= items.len() {
                return Ok(());
            }
            for item in &items[offset..] {
                if pos >= end || !f(item, pos) {
                    return Ok(());
                }
                pos += 1;
            }
        }
        Ok(())
    }

    fn find_lower_bound(&self, begin: usize, end: usize, bound: &Bound) -> Result<usize, NegError> {
        Ok(self.lower_bound(bound)?.clamp(begin, end.max(begin)))
    }

    fn fingerprint(&self, begin: usize, end: usize) -> Result<[u8; FINGERPRINT_SIZE], NegError> {
        let (mut hi, hi_n) = self.prefix(end as u64)?;
        let (lo, lo_n) = self.prefix(begin as u64)?;
        hi.sub_acc(&lo);
        Ok(hi.fingerprint(hi_n.saturating_sub(lo_n)))
    }
}

/// Buffered writes to one tree during one write transaction.
pub struct TreeWriter {
    db: Database<Bytes, Bytes>,
    tree: u32,
    root: Option<u64>,
    next: u64,
    dirty: HashMap<u64, Node>,
    freed: HashSet<u64>,
    loaded: bool,
}

impl TreeWriter {
    pub fn new(db: Database<Bytes, Bytes>, tree: u32) -> TreeWriter {
        TreeWriter {
            db,
            tree,
            root: None,
            next: 1,
            dirty: HashMap::new(),
            freed: HashSet::new(),
            loaded: false,
        }
    }

    fn ensure_loaded(&mut self, txn: &RwTxn) -> Result<(), NegError> {
        if !self.loaded {
            if let Some((root, next)) = read_header(&self.db, txn, self.tree)? {
                self.root = (root != HEADER_NODE).then_some(root);
                self.next = next;
            }
            self.loaded = true;
        }
        Ok(())
    }

    fn node(&mut self, txn: &RwTxn, id: u64) -> Result<Node, NegError> {
        match self.dirty.get(&id) {
            Some(node) => Ok(node.clone()),
            None => load(&self.db, txn, self.tree, id),
        }
    }

    /// The node to change, owned (moved out of the dirty set, or loaded):
    /// no copy of a 4 KB node per level per insert. The caller puts it back
    /// with [`TreeWriter::put_back`] if it turns out unchanged.
    fn take(&mut self, txn: &RwTxn, id: u64) -> Result<(Node, bool), NegError> {
        match self.dirty.remove(&id) {
            Some(node) => Ok((node, true)),
            None => Ok((load(&self.db, txn, self.tree, id)?, false)),
        }
    }

    /// Returns an unchanged node taken with [`TreeWriter::take`].
    fn put_back(&mut self, id: u64, node: Node, was_dirty: bool) {
        if was_dirty {
            self.dirty.insert(id, node);
        }
    }

    /// The parent's entry for `child` after it changed.
    fn summary_of(&self, child: u64) -> Result<Child, NegError> {
        self.dirty
            .get(&child)
            .and_then(|n| n.summary(child))
            .ok_or_else(|| corrupt("child"))
    }

    fn alloc(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    /// Adds an item; false if it was already present.
    pub fn insert(&mut self, txn: &RwTxn, item: Item) -> Result<bool, NegError> {
        self.ensure_loaded(txn)?;
        let Some(root) = self.root else {
            let id = self.alloc();
            self.dirty.insert(id, Node::Leaf(vec![item]));
            self.root = Some(id);
            return Ok(true);
        };
        let (inserted, split) = self.insert_rec(txn, root, item)?;
        if !split.is_empty() {
            let left = self
                .dirty
                .get(&root)
                .and_then(|n| n.summary(root))
                .ok_or_else(|| corrupt("root"))?;
            let mut children = vec![left];
            children.extend(split);
            self.grow_root(children);
        }
        Ok(inserted)
    }

    /// A new root over `children`, and more levels while they are too
    /// many for one node (only a root split from an older store's larger
    /// nodes can have that many).
    fn grow_root(&mut self, mut children: Vec<Child>) {
        loop {
            let mut parts = split_off_pieces(&mut children, FANOUT_MAX);
            if parts.is_empty() {
                let id = self.alloc();
                self.dirty.insert(id, Node::Internal(children));
                self.root = Some(id);
                return;
            }
            parts.insert(0, std::mem::take(&mut children));
            children = parts
                .into_iter()
                .filter_map(|part| self.place(Node::Internal(part)))
                .collect();
        }
    }

    /// Inserts under `id`; returns whether it was new and, if `id` split,
    /// the entries of its new right siblings in order.
    fn insert_rec(
        &mut self,
        txn: &RwTxn,
        id: u64,
        item: Item,
    ) -> Result<(bool, Vec<Child>), NegError> {
        match self.take(txn, id)? {
            (Node::Leaf(mut items), was_dirty) => {
                let at = match items.binary_search(&item) {
                    Ok(_) => {
                        self.put_back(id, Node::Leaf(items), was_dirty);
                        return Ok((false, Vec::new()));
                    }
                    Err(at) => at,
                };
                items.insert(at, item);
                let split = split_off_pieces(&mut items, LEAF_MAX);
                self.dirty.insert(id, Node::Leaf(items));
                let siblings = split.into_iter().map(Node::Leaf);
                Ok((true, siblings.filter_map(|n| self.place(n)).collect()))
            }
            (Node::Internal(mut children), was_dirty) => {
                let i = child_for(&children, &item);
                let child = children[i].node;
                let (inserted, split) = self.insert_rec(txn, child, item)?;
                if !inserted {
                    self.put_back(id, Node::Internal(children), was_dirty);
                    return Ok((false, Vec::new()));
                }
                if split.is_empty() {
                    // One more item below: the entry changes by exactly it.
                    let entry = &mut children[i];
                    entry.count += 1;
                    entry.sum.add(&item.id);
                    entry.first = entry.first.min(item);
                } else {
                    children[i] = self.summary_of(child)?;
                    children.splice(i + 1..i + 1, split);
                }
                let split = split_off_pieces(&mut children, FANOUT_MAX);
                self.dirty.insert(id, Node::Internal(children));
                let siblings = split.into_iter().map(Node::Internal);
                Ok((true, siblings.filter_map(|n| self.place(n)).collect()))
            }
        }
    }

    /// Stores a new node; its entry for the parent.
    fn place(&mut self, node: Node) -> Option<Child> {
        let id = self.alloc();
        let summary = node.summary(id);
        self.dirty.insert(id, node);
        summary
    }

    /// Removes an item; false if it was not present.
    pub fn remove(&mut self, txn: &RwTxn, item: Item) -> Result<bool, NegError> {
        self.ensure_loaded(txn)?;
        let Some(root) = self.root else {
            return Ok(false);
        };
        let (removed, _) = self.remove_rec(txn, root, item)?;
        // Collapse: an empty root goes away, a root with one child is replaced by it.
        while let Some(root) = self.root {
            match self.node(txn, root)? {
                Node::Leaf(items) if items.is_empty() => {
                    self.free(root);
                    self.root = None;
                }
                Node::Internal(children) if children.len() <= 1 => {
                    self.free(root);
                    self.root = children.first().map(|c| c.node);
                }
                _ => break,
            }
        }
        Ok(removed)
    }

    /// Removes under `id`; returns whether it was found and whether `id` is
    /// now empty (and was freed).
    fn remove_rec(&mut self, txn: &RwTxn, id: u64, item: Item) -> Result<(bool, bool), NegError> {
        match self.take(txn, id)? {
            (Node::Leaf(mut items), was_dirty) => {
                let Ok(at) = items.binary_search(&item) else {
                    self.put_back(id, Node::Leaf(items), was_dirty);
                    return Ok((false, false));
                };
                items.remove(at);
                let empty = items.is_empty();
                self.dirty.insert(id, Node::Leaf(items));
                Ok((true, empty))
            }
            (Node::Internal(mut children), was_dirty) => {
                let i = child_for(&children, &item);
                let child = children[i].node;
                let (removed, empty) = self.remove_rec(txn, child, item)?;
                if !removed {
                    self.put_back(id, Node::Internal(children), was_dirty);
                    return Ok((false, false));
                }
                if empty {
                    self.free(child);
                    children.remove(i);
                } else {
                    children[i] = self.summary_of(child)?;
                }
                let now_empty = children.is_empty();
                self.dirty.insert(id, Node::Internal(children));
                Ok((true, now_empty))
            }
        }
    }

    fn free(&mut self, id: u64) {
        self.dirty.remove(&id);
        self.freed.insert(id);
    }

    /// Writes the touched nodes and the header.
    pub fn flush(&mut self, txn: &mut RwTxn) -> Result<(), heed::Error> {
        if !self.loaded {
            return Ok(());
        }
        for id in self.freed.drain() {
            self.db.delete(txn, &node_key(self.tree, id))?;
        }
        for (id, node) in self.dirty.drain() {
            self.db.put(txn, &node_key(self.tree, id), &node.encode())?;
        }
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(&self.root.unwrap_or(HEADER_NODE).to_be_bytes());
        header.extend_from_slice(&self.next.to_be_bytes());
        self.db
            .put(txn, &node_key(self.tree, HEADER_NODE), &header)?;
        self.loaded = false;
        Ok(())
    }

    /// Deletes every node of the tree.
    pub fn clear(
        db: &Database<Bytes, Bytes>,
        txn: &mut RwTxn,
        tree: u32,
    ) -> Result<(), heed::Error> {
        let start = node_key(tree, 0);
        let end = node_key(tree, u64::MAX);
        let range = (
            std::ops::Bound::Included(&start[..]),
            std::ops::Bound::Included(&end[..]),
        );
        db.delete_range(txn, &range)?;
        Ok(())
    }
}

/// A tree in an LMDB environment of its own, for the line harness, tests
/// and benchmarks that need a tree without an event store.
pub struct StandaloneTree {
    env: heed::Env,
    db: Database<Bytes, Bytes>,
}

impl StandaloneTree {
    /// Creates the environment in `dir` and inserts `items` in batches.
    pub fn create(
        dir: &std::path::Path,
        items: impl IntoIterator<Item = Item>,
    ) -> Result<StandaloneTree, NegError> {
        // SAFETY: a fresh directory owned by the caller, opened once.
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .map_size(64 << 30)
                .max_dbs(1)
                .open(dir)
        }
        .map_err(lmdb)?;
        let mut wtxn = env.write_txn().map_err(lmdb)?;
        let db: Database<Bytes, Bytes> =
            env.create_database(&mut wtxn, Some("tree")).map_err(lmdb)?;
        wtxn.commit().map_err(lmdb)?;
        let tree = StandaloneTree { env, db };
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let mut wtxn = tree.env.write_txn().map_err(lmdb)?;
            let mut writer = TreeWriter::new(tree.db, 0);
            for item in items.by_ref().take(100_000) {
                writer.insert(&wtxn, item)?;
            }
            writer.flush(&mut wtxn).map_err(lmdb)?;
            wtxn.commit().map_err(lmdb)?;
        }
        Ok(tree)
    }

    /// Runs `f` with a reader over a fresh snapshot.
    pub fn with_reader<T>(&self, f: impl FnOnce(&TreeReader) -> T) -> Result<T, NegError> {
        let rtxn = self.env.read_txn().map_err(lmdb)?;
        let reader = TreeReader::open(self.db, &rtxn, 0)?;
        Ok(f(&reader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::negentropy::{Negentropy, VectorStorage};
    use heed::EnvOpenOptions;

    fn item(n: u64) -> Item {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        id[31] = n as u8;
        Item::new(1000 + n % 37, id)
    }

    fn compare(reader: &TreeReader, set: &std::collections::BTreeSet<Item>) {
        let vector = VectorStorage::new(set.iter().copied().collect());
        let n = vector.size().unwrap();
        assert_eq!(reader.size().unwrap(), n);
        let mut all = Vec::new();
        reader
            .iterate(0, n, &mut |item, _| {
                all.push(*item);
                true
            })
            .unwrap();
        assert_eq!(all, vector.items());
        for (b, e) in [(0, n), (0, n / 2), (n / 3, n), (n / 4, n / 4 + 7), (n, n)] {
            assert_eq!(
                reader.fingerprint(b, e).unwrap(),
                vector.fingerprint(b, e).unwrap(),
                "{b}..{e}"
            );
        }
        for probe in [0u64, 5, 17, 36, 99] {
            let bound = Bound::from_timestamp(1000 + probe);
            assert_eq!(
                reader.find_lower_bound(0, n, &bound).unwrap(),
                vector.find_lower_bound(0, n, &bound).unwrap()
            );
            let bound = Bound::minimal(&item(probe), &item(probe + 1));
            assert_eq!(
                reader.find_lower_bound(n / 5, n, &bound).unwrap(),
                vector.find_lower_bound(n / 5, n, &bound).unwrap()
            );
        }
        // The reconciler produces the same first message from either storage.
        let a = Negentropy::new(reader, 0).unwrap().initiate().unwrap();
        let b = Negentropy::new(&vector, 0).unwrap().initiate().unwrap();
        assert_eq!(a, b);
    }

    /// A fresh environment with one tree database.
    fn tree_env() -> (tempfile::TempDir, heed::Env, Database<Bytes, Bytes>) {
        let dir = tempfile::tempdir().unwrap();
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(256 << 20)
                .max_dbs(2)
                .open(dir.path())
                .unwrap()
        };
        let mut wtxn = env.write_txn().unwrap();
        let db: Database<Bytes, Bytes> = env.create_database(&mut wtxn, Some("t")).unwrap();
        wtxn.commit().unwrap();
        (dir, env, db)
    }

    #[test]
    fn tree_matches_vector_through_inserts_and_removes() {
        let (_dir, env, db) = tree_env();
        let mut set = std::collections::BTreeSet::new();
        let mut n = 0u64;
        for round in 0..6 {
            let mut wtxn = env.write_txn().unwrap();
            let mut writer = TreeWriter::new(db, 7);
            for _ in 0..2500 {
                let it = item(n);
                n += 1;
                assert_eq!(writer.insert(&wtxn, it).unwrap(), set.insert(it));
            }
            // Re-inserting is a no-op; remove a spread of items.
            let present = *set.iter().next().unwrap();
            assert!(!writer.insert(&wtxn, present).unwrap());
            let victims: Vec<Item> = set.iter().step_by(3 + round).copied().collect();
            for it in victims {
                assert!(writer.remove(&wtxn, it).unwrap());
                set.remove(&it);
            }
            assert!(!writer.remove(&wtxn, item(u64::MAX - 1)).unwrap());
            writer.flush(&mut wtxn).unwrap();
            wtxn.commit().unwrap();
            let rtxn = env.read_txn().unwrap();
            let reader = TreeReader::open(db, &rtxn, 7).unwrap();
            compare(&reader, &set);
        }
        // Remove everything: the tree is empty again.
        let mut wtxn = env.write_txn().unwrap();
        let mut writer = TreeWriter::new(db, 7);
        for it in std::mem::take(&mut set) {
            assert!(writer.remove(&wtxn, it).unwrap());
        }
        writer.flush(&mut wtxn).unwrap();
        wtxn.commit().unwrap();
        let rtxn = env.read_txn().unwrap();
        let reader = TreeReader::open(db, &rtxn, 7).unwrap();
        assert_eq!(reader.size().unwrap(), 0);
        compare(&reader, &set);
    }

    #[test]
    fn an_older_stores_larger_nodes_are_split_to_fit_a_page() {
        let (_dir, env, db) = tree_env();
        let mut wtxn = env.write_txn().unwrap();
        // The shape versions with 100-item leaves and 46 children wrote.
        let mut set: std::collections::BTreeSet<Item> = (0..4600).map(item).collect();
        let sorted: Vec<Item> = set.iter().copied().collect();
        let mut writer = TreeWriter::new(db, 7);
        writer.ensure_loaded(&wtxn).unwrap();
        let leaves: Vec<Child> = sorted
            .chunks(100)
            .filter_map(|chunk| writer.place(Node::Leaf(chunk.to_vec())))
            .collect();
        assert_eq!(leaves.len(), 46);
        writer.root = writer.place(Node::Internal(leaves)).map(|c| c.node);
        writer.flush(&mut wtxn).unwrap();
        wtxn.commit().unwrap();

        let mut wtxn = env.write_txn().unwrap();
        let mut writer = TreeWriter::new(db, 7);
        for n in 4600..9200 {
            assert!(writer.insert(&wtxn, item(n)).unwrap());
            set.insert(item(n));
        }
        writer.flush(&mut wtxn).unwrap();
        wtxn.commit().unwrap();
        let rtxn = env.read_txn().unwrap();
        compare(&TreeReader::open(db, &rtxn, 7).unwrap(), &set);
        // LMDB keeps a value of up to about 2 KB in its page.
        for entry in db.iter(&rtxn).unwrap() {
            let (_, node) = entry.unwrap();
            assert!(node.len() <= 2018, "a node of {} bytes", node.len());
        }
    }
}
