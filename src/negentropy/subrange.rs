//! A `since`/`until` window onto another storage: a NEG-OPEN whose filter
//! differs from a tree's only by since/until is served from that tree,
//! shifted, with no copy.

use super::codec::{Bound, Item, NegError, FINGERPRINT_SIZE};
use super::reconcile::Storage;

pub struct SubRange<'a, S: Storage + ?Sized> {
    inner: &'a S,
    begin: usize,
    end: usize,
}

impl<'a, S: Storage + ?Sized> SubRange<'a, S> {
    /// Items with `since <= created_at <= until`.
    pub fn new(inner: &'a S, since: Option<u64>, until: Option<u64>) -> Result<Self, NegError> {
        let size = inner.size()?;
        let begin = match since {
            Some(s) => inner.find_lower_bound(0, size, &Bound::from_timestamp(s))?,
            None => 0,
        };
        let end = match until {
            Some(u) if u < u64::MAX - 1 => {
                inner.find_lower_bound(0, size, &Bound::from_timestamp(u + 1))?
            }
            _ => size,
        };
        Ok(SubRange {
            inner,
            begin,
            end: end.max(begin),
        })
    }
}

impl<S: Storage + ?Sized> Storage for SubRange<'_, S> {
    fn size(&self) -> Result<usize, NegError> {
        Ok(self.end - self.begin)
    }

    fn iterate(
        &self,
        begin: usize,
        end: usize,
        f: &mut dyn FnMut(&Item, usize) -> bool,
    ) -> Result<(), NegError> {
        let offset = self.begin;
        let end = (end + offset).min(self.end);
        self.inner.iterate(begin + offset, end, &mut |item, index| {
            f(item, index - offset)
        })
    }

    fn find_lower_bound(&self, begin: usize, end: usize, bound: &Bound) -> Result<usize, NegError> {
        let end = (end + self.begin).min(self.end);
        Ok(self
            .inner
            .find_lower_bound(begin + self.begin, end, bound)?
            - self.begin)
    }

    fn fingerprint(&self, begin: usize, end: usize) -> Result<[u8; FINGERPRINT_SIZE], NegError> {
        let end = (end + self.begin).min(self.end);
        self.inner.fingerprint(begin + self.begin, end)
    }
}
