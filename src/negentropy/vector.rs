//! In-memory storage: a sorted vector of items with prefix sums, so every
//! fingerprint is O(1) after an O(n) build. Used for ad-hoc filters (no
//! matching tree), for the sync client's side, and for tests.

use super::codec::{Accumulator, Bound, Item, NegError, FINGERPRINT_SIZE};
use super::reconcile::Storage;

#[derive(Default)]
pub struct VectorStorage {
    items: Vec<Item>,
    /// `prefix[i]` is the sum of the first `i` ids.
    prefix: Vec<Accumulator>,
}

impl VectorStorage {
    /// Builds from items in any order; duplicates are removed.
    pub fn new(mut items: Vec<Item>) -> VectorStorage {
        items.sort_unstable();
        items.dedup();
        let mut prefix = Vec::with_capacity(items.len() + 1);
        let mut acc = Accumulator::default();
        prefix.push(acc);
        for item in &items {
            acc.add(&item.id);
            prefix.push(acc);
        }
        VectorStorage { items, prefix }
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }
}

impl Storage for VectorStorage {
    fn size(&self) -> Result<usize, NegError> {
        Ok(self.items.len())
    }

    fn iterate(
        &self,
        begin: usize,
        end: usize,
        f: &mut dyn FnMut(&Item, usize) -> bool,
    ) -> Result<(), NegError> {
        let end = end.min(self.items.len());
        for index in begin..end {
            if !f(&self.items[index], index) {
                break;
            }
        }
        Ok(())
    }

    fn find_lower_bound(&self, begin: usize, end: usize, bound: &Bound) -> Result<usize, NegError> {
        let end = end.min(self.items.len());
        let begin = begin.min(end);
        Ok(begin + self.items[begin..end].partition_point(|item| *item < bound.item))
    }

    fn fingerprint(&self, begin: usize, end: usize) -> Result<[u8; FINGERPRINT_SIZE], NegError> {
        let end = end.min(self.items.len());
        let begin = begin.min(end);
        let mut acc = self.prefix[end];
        acc.sub_acc(&self.prefix[begin]);
        Ok(acc.fingerprint((end - begin) as u64))
    }
}
