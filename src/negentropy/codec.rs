//! Negentropy protocol v1 wire format: varints, items and bounds with
//! delta-encoded timestamps, modes, and the fingerprint accumulator. Every
//! read is bounds-checked; nothing allocates from a length the peer claims.

use sha2::{Digest, Sha256};

/// Protocol version byte of negentropy v1.
pub const PROTOCOL_VERSION: u8 = 0x61;
pub const ID_SIZE: usize = 32;
pub const FINGERPRINT_SIZE: usize = 16;

/// Why a peer's message could not be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegError {
    #[error("message is truncated")]
    Truncated,
    #[error("varint is too long")]
    VarintOverflow,
    #[error("invalid protocol version byte {0:#04x}")]
    InvalidVersion(u8),
    #[error("unsupported protocol version {0:#04x}")]
    UnsupportedVersion(u8),
    #[error("bound id prefix longer than 32 bytes")]
    BoundTooLong,
    #[error("unexpected mode {0}")]
    UnexpectedMode(u64),
    #[error("frame size limit must be 0 or at least 4096")]
    FrameLimitTooSmall,
    #[error("{0}")]
    Usage(&'static str),
    #[error("storage: {0}")]
    Storage(String),
}

/// Range modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Skip = 0,
    Fingerprint = 1,
    IdList = 2,
}

/// One element of a reconciled set, ordered by (timestamp, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Item {
    pub timestamp: u64,
    pub id: [u8; ID_SIZE],
}

impl Item {
    pub fn new(timestamp: u64, id: [u8; ID_SIZE]) -> Item {
        Item { timestamp, id }
    }
}

/// A range boundary: a timestamp and an id prefix (`id_len` bytes, the rest
/// zero), compared like an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub item: Item,
    pub id_len: usize,
}

impl Bound {
    pub fn infinity() -> Bound {
        Bound {
            item: Item::new(u64::MAX, [0; ID_SIZE]),
            id_len: 0,
        }
    }

    pub fn from_timestamp(timestamp: u64) -> Bound {
        Bound {
            item: Item::new(timestamp, [0; ID_SIZE]),
            id_len: 0,
        }
    }

    /// The shortest bound that sorts after `prev` and at or before `curr`.
    pub fn minimal(prev: &Item, curr: &Item) -> Bound {
        if curr.timestamp != prev.timestamp {
            return Bound::from_timestamp(curr.timestamp);
        }
        let shared = prev
            .id
            .iter()
            .zip(curr.id.iter())
            .take_while(|(a, b)| a == b)
            .count();
        let id_len = (shared + 1).min(ID_SIZE);
        let mut id = [0u8; ID_SIZE];
        id[..id_len].copy_from_slice(&curr.id[..id_len]);
        Bound {
            item: Item::new(curr.timestamp, id),
            id_len,
        }
    }
}

/// The running sum (mod 2^256, little-endian) of ids, and the fingerprint
/// derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accumulator {
    pub sum: [u8; 32],
}

impl Accumulator {
    pub fn add(&mut self, id: &[u8; 32]) {
        let mut carry = 0u16;
        for (s, b) in self.sum.iter_mut().zip(id.iter()) {
            let v = *s as u16 + *b as u16 + carry;
            *s = v as u8;
            carry = v >> 8;
        }
    }

    pub fn add_acc(&mut self, other: &Accumulator) {
        self.add(&other.sum);
    }

    /// Subtracts (mod 2^256): used by trees to take a prefix difference.
    pub fn sub_acc(&mut self, other: &Accumulator) {
        let mut neg = [0u8; 32];
        for (n, o) in neg.iter_mut().zip(other.sum.iter()) {
            *n = !o;
        }
        let mut one = [0u8; 32];
        one[0] = 1;
        self.add(&neg);
        self.add(&one);
    }

    /// First 16 bytes of sha256(sum ‖ varint(count)).
    pub fn fingerprint(&self, count: u64) -> [u8; FINGERPRINT_SIZE] {
        let mut hasher = Sha256::new();
        hasher.update(self.sum);
        let mut n = Vec::with_capacity(10);
        encode_varint(&mut n, count);
        hasher.update(&n);
        let digest = hasher.finalize();
        let mut out = [0u8; FINGERPRINT_SIZE];
        out.copy_from_slice(&digest[..FINGERPRINT_SIZE]);
        out
    }
}

pub fn encode_varint(out: &mut Vec<u8>, mut n: u64) {
    let mut groups = [0u8; 10];
    let mut len = 0;
    loop {
        groups[len] = (n & 0x7f) as u8;
        len += 1;
        n >>= 7;
        if n == 0 {
            break;
        }
    }
    for i in (0..len).rev() {
        let more = if i > 0 { 0x80 } else { 0 };
        out.push(groups[i] | more);
    }
}

/// A cursor over a received message.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn byte(&mut self) -> Result<u8, NegError> {
        let (first, rest) = self.buf.split_first().ok_or(NegError::Truncated)?;
        self.buf = rest;
        Ok(*first)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], NegError> {
        if self.buf.len() < n {
            return Err(NegError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn varint(&mut self) -> Result<u64, NegError> {
        let mut n: u64 = 0;
        loop {
            let b = self.byte()?;
            if n > (u64::MAX >> 7) {
                return Err(NegError::VarintOverflow);
            }
            n = (n << 7) | (b & 0x7f) as u64;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
    }
}

/// Per-message timestamp delta state (reset at the start of each message).
#[derive(Default)]
pub struct TimestampCodec {
    last_in: u64,
    last_out: u64,
}

impl TimestampCodec {
    pub fn encode(&mut self, out: &mut Vec<u8>, timestamp: u64) {
        if timestamp == u64::MAX {
            self.last_out = u64::MAX;
            encode_varint(out, 0);
            return;
        }
        let delta = timestamp.wrapping_sub(self.last_out);
        self.last_out = timestamp;
        encode_varint(out, delta.wrapping_add(1));
    }

    pub fn decode(&mut self, reader: &mut Reader) -> Result<u64, NegError> {
        let raw = reader.varint()?;
        let ts = if raw == 0 { u64::MAX } else { raw - 1 };
        if self.last_in == u64::MAX || ts == u64::MAX {
            self.last_in = u64::MAX;
            return Ok(u64::MAX);
        }
        let ts = ts.saturating_add(self.last_in);
        self.last_in = ts;
        Ok(ts)
    }

    pub fn encode_bound(&mut self, out: &mut Vec<u8>, bound: &Bound) {
        self.encode(out, bound.item.timestamp);
        encode_varint(out, bound.id_len as u64);
        out.extend_from_slice(&bound.item.id[..bound.id_len]);
    }

    pub fn decode_bound(&mut self, reader: &mut Reader) -> Result<Bound, NegError> {
        let timestamp = self.decode(reader)?;
        let len = reader.varint()?;
        if len > ID_SIZE as u64 {
            return Err(NegError::BoundTooLong);
        }
        let len = len as usize;
        let mut id = [0u8; ID_SIZE];
        id[..len].copy_from_slice(reader.bytes(len)?);
        Ok(Bound {
            item: Item::new(timestamp, id),
            id_len: len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip() {
        for n in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            encode_varint(&mut out, n);
            assert_eq!(Reader::new(&out).varint().unwrap(), n);
        }
        let mut out = Vec::new();
        encode_varint(&mut out, 300);
        assert_eq!(out, vec![0x82, 0x2c]);
        assert_eq!(
            Reader::new(&[0xff; 11]).varint(),
            Err(NegError::VarintOverflow)
        );
        assert_eq!(Reader::new(&[0x80]).varint(), Err(NegError::Truncated));
    }

    #[test]
    fn known_fingerprints() {
        assert_eq!(
            hex::encode(Accumulator::default().fingerprint(0)),
            "7f9c9e31ac8256ca2f258583df262dbc"
        );
        let mut acc = Accumulator::default();
        for b in [1u8, 2, 3] {
            acc.add(&[b; 32]);
        }
        assert_eq!(
            hex::encode(acc.fingerprint(3)),
            "c07a25db62a65dc5477decb10bf5f293"
        );
    }

    #[test]
    fn subtraction_inverts_addition() {
        let mut a = Accumulator::default();
        a.add(&[0xff; 32]);
        a.add(&[7; 32]);
        let mut b = Accumulator::default();
        b.add(&[7; 32]);
        a.sub_acc(&b);
        let mut want = Accumulator::default();
        want.add(&[0xff; 32]);
        assert_eq!(a, want);
    }
}
