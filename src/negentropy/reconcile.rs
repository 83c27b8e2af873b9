//! The negentropy v1 reconciler, both roles, over any [`Storage`]. It follows
//! the reference implementation's choices exactly (bucket split, minimal
//! bounds, the frame-limit cut that sends the rest of the range as one
//! fingerprint), so its messages are byte-identical to hoytech's C++ and JS.

use std::collections::HashSet;

use super::codec::{
    encode_varint, Bound, Item, Mode, NegError, Reader, TimestampCodec, FINGERPRINT_SIZE, ID_SIZE,
    PROTOCOL_VERSION,
};

/// A sorted set of items that can answer positional questions. The vector
/// storage does them in O(1)/O(log n) over memory; the LMDB tree answers
/// fingerprints in O(log n) without touching the items.
pub trait Storage {
    fn size(&self) -> Result<usize, NegError>;
    /// Calls `f(item, index)` for `begin..end` until it returns false.
    fn iterate(
        &self,
        begin: usize,
        end: usize,
        f: &mut dyn FnMut(&Item, usize) -> bool,
    ) -> Result<(), NegError>;
    /// First index in `begin..end` whose item is not below `bound` (`end` if none).
    fn find_lower_bound(&self, begin: usize, end: usize, bound: &Bound) -> Result<usize, NegError>;
    fn fingerprint(&self, begin: usize, end: usize) -> Result<[u8; FINGERPRINT_SIZE], NegError>;
}

/// Ranges of fewer than twice this many items are sent as id lists.
const BUCKETS: usize = 16;
/// Room kept under the frame limit for the closing fingerprint.
const FRAME_RESERVE: usize = 200;

/// One side of a reconciliation.
pub struct Negentropy<'s, S: Storage + ?Sized> {
    storage: &'s S,
    frame_size_limit: usize,
    is_initiator: bool,
}

/// Ids learned by the initiator in one round.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Ids we have that the peer lacks.
    pub have: Vec<[u8; ID_SIZE]>,
    /// Ids the peer has that we lack.
    pub need: Vec<[u8; ID_SIZE]>,
}

impl<'s, S: Storage + ?Sized> Negentropy<'s, S> {
    /// `frame_size_limit`: 0 for none, otherwise at least 4096 bytes.
    pub fn new(storage: &'s S, frame_size_limit: usize) -> Result<Self, NegError> {
        if frame_size_limit != 0 && frame_size_limit < 4096 {
            return Err(NegError::FrameLimitTooSmall);
        }
        Ok(Negentropy {
            storage,
            frame_size_limit,
            is_initiator: false,
        })
    }

    /// The initiator's first message.
    pub fn initiate(&mut self) -> Result<Vec<u8>, NegError> {
        if self.is_initiator {
            return Err(NegError::Usage("already initiated"));
        }
        self.is_initiator = true;
        let mut out = vec![PROTOCOL_VERSION];
        let mut ts = TimestampCodec::default();
        let size = self.storage.size()?;
        self.split_range(&mut ts, &mut out, 0, size, &Bound::infinity())?;
        Ok(out)
    }

    /// Takes the initiator role without producing a first message: the v1
    /// initiator keeps no state between rounds, so a stateless driver (the
    /// line harness, a resumed sync) can answer later rounds this way.
    pub fn set_initiator(&mut self) {
        self.is_initiator = true;
    }

    /// Responder: the reply to `query`. A query with another 0x6X version gets
    /// the single byte 0x61 (version negotiation).
    pub fn reconcile(&mut self, query: &[u8]) -> Result<Vec<u8>, NegError> {
        if self.is_initiator {
            return Err(NegError::Usage("initiator must use reconcile_initiator"));
        }
        let mut diff = Diff::default();
        self.reconcile_aux(query, &mut diff)
    }

    /// Initiator: processes the responder's message, adding to `diff`.
    /// Returns the next message, or `None` when reconciliation is complete.
    pub fn reconcile_initiator(
        &mut self,
        query: &[u8],
        diff: &mut Diff,
    ) -> Result<Option<Vec<u8>>, NegError> {
        if !self.is_initiator {
            return Err(NegError::Usage("not the initiator"));
        }
        let out = self.reconcile_aux(query, diff)?;
        Ok(if out.len() == 1 { None } else { Some(out) })
    }

    fn exceeded(&self, len: usize) -> bool {
        self.frame_size_limit != 0 && len > self.frame_size_limit - FRAME_RESERVE
    }

    fn reconcile_aux(&mut self, query: &[u8], diff: &mut Diff) -> Result<Vec<u8>, NegError> {
        let mut reader = Reader::new(query);
        let mut ts = TimestampCodec::default();
        let mut full = vec![PROTOCOL_VERSION];
        let version = reader.byte()?;
        if !(0x60..=0x6f).contains(&version) {
            return Err(NegError::InvalidVersion(version));
        }
        if version != PROTOCOL_VERSION {
            if self.is_initiator {
                return Err(NegError::UnsupportedVersion(version));
            }
            return Ok(full);
        }
        let storage_size = self.storage.size()?;
        let mut prev_bound = Bound::from_timestamp(0);
        let mut prev_index = 0usize;
        let mut skip = false;

        while !reader.is_empty() {
            let mut o = Vec::new();
            let curr_bound = ts.decode_bound(&mut reader)?;
            let mode = reader.varint()?;
            let lower = prev_index;
            let mut upper = self
                .storage
                .find_lower_bound(prev_index, storage_size, &curr_bound)?;

            match mode {
                m if m == Mode::Skip as u64 => skip = true,
                m if m == Mode::Fingerprint as u64 => {
                    let theirs = reader.bytes(FINGERPRINT_SIZE)?;
                    let ours = self.storage.fingerprint(lower, upper)?;
                    if theirs != ours {
                        flush_skip(&mut ts, &mut o, &mut skip, &prev_bound);
                        self.split_range(&mut ts, &mut o, lower, upper, &curr_bound)?;
                    } else {
                        skip = true;
                    }
                }
                m if m == Mode::IdList as u64 => {
                    let claimed = reader.varint()?;
                    // Read ids while they last; never trust the count for memory.
                    let mut theirs: HashSet<[u8; ID_SIZE]> = HashSet::new();
                    for _ in 0..claimed {
                        let mut id = [0u8; ID_SIZE];
                        id.copy_from_slice(reader.bytes(ID_SIZE)?);
                        theirs.insert(id);
                    }
                    let is_initiator = self.is_initiator;
                    self.storage.iterate(lower, upper, &mut |item, _| {
                        if !theirs.remove(&item.id) && is_initiator {
                            diff.have.push(item.id);
                        }
                        true
                    })?;
                    if self.is_initiator {
                        skip = true;
                        let mut rest: Vec<_> = theirs.into_iter().collect();
                        rest.sort_unstable();
                        diff.need.extend(rest);
                    } else {
                        flush_skip(&mut ts, &mut o, &mut skip, &prev_bound);
                        let mut ids = Vec::new();
                        let mut count = 0u64;
                        let mut end_bound = curr_bound;
                        let mut cut = None;
                        let used = full.len();
                        let frame_limited = |len: usize| self.exceeded(len);
                        self.storage.iterate(lower, upper, &mut |item, index| {
                            if frame_limited(used + ids.len()) {
                                end_bound = Bound {
                                    item: *item,
                                    id_len: ID_SIZE,
                                };
                                cut = Some(index);
                                return false;
                            }
                            ids.extend_from_slice(&item.id);
                            count += 1;
                            true
                        })?;
                        if let Some(index) = cut {
                            upper = index;
                        }
                        ts.encode_bound(&mut o, &end_bound);
                        encode_varint(&mut o, Mode::IdList as u64);
                        encode_varint(&mut o, count);
                        o.extend_from_slice(&ids);
                        full.extend_from_slice(&o);
                        o.clear();
                    }
                }
                other => return Err(NegError::UnexpectedMode(other)),
            }

            if self.exceeded(full.len() + o.len()) {
                let remaining = self.storage.fingerprint(upper, storage_size)?;
                ts.encode_bound(&mut full, &Bound::infinity());
                encode_varint(&mut full, Mode::Fingerprint as u64);
                full.extend_from_slice(&remaining);
                break;
            }
            full.extend_from_slice(&o);
            prev_index = upper;
            prev_bound = curr_bound;
        }
        Ok(full)
    }

    fn split_range(
        &self,
        ts: &mut TimestampCodec,
        out: &mut Vec<u8>,
        lower: usize,
        upper: usize,
        upper_bound: &Bound,
    ) -> Result<(), NegError> {
        let count = upper - lower;
        if count < BUCKETS * 2 {
            ts.encode_bound(out, upper_bound);
            encode_varint(out, Mode::IdList as u64);
            encode_varint(out, count as u64);
            self.storage.iterate(lower, upper, &mut |item, _| {
                out.extend_from_slice(&item.id);
                true
            })?;
            return Ok(());
        }
        let per_bucket = count / BUCKETS;
        let with_extra = count % BUCKETS;
        let mut curr = lower;
        for i in 0..BUCKETS {
            let size = per_bucket + usize::from(i < with_extra);
            let fingerprint = self.storage.fingerprint(curr, curr + size)?;
            curr += size;
            let next_bound = if curr == upper {
                *upper_bound
            } else {
                let mut prev = None;
                let mut next = None;
                self.storage
                    .iterate(curr - 1, curr + 1, &mut |item, index| {
                        if index == curr - 1 {
                            prev = Some(*item);
                        } else {
                            next = Some(*item);
                        }
                        true
                    })?;
                match (prev, next) {
                    (Some(p), Some(n)) => Bound::minimal(&p, &n),
                    _ => {
                        return Err(NegError::Storage(
                            "storage returned fewer items than its size".into(),
                        ))
                    }
                }
            };
            ts.encode_bound(out, &next_bound);
            encode_varint(out, Mode::Fingerprint as u64);
            out.extend_from_slice(&fingerprint);
        }
        Ok(())
    }
}

/// Emits a pending Skip range ending at `prev_bound`.
fn flush_skip(ts: &mut TimestampCodec, out: &mut Vec<u8>, skip: &mut bool, prev_bound: &Bound) {
    if *skip {
        *skip = false;
        ts.encode_bound(out, prev_bound);
        encode_varint(out, Mode::Skip as u64);
    }
}
