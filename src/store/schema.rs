//! The LMDB layout: database names and key encodings.
//!
//! Every event gets a sequence number (`seq`, u64, only grows). The event
//! itself lives under its seq; every index key ends in `created_at ‖ seq`
//! (big-endian), so a reverse cursor over one index prefix yields events
//! newest first and a `limit` stops the scan early.
//!
//! | database        | key                                         | value          |
//! |-----------------|---------------------------------------------|----------------|
//! | `events`        | seq                                         | header ‖ JSON  |
//! | `ids`           | id                                          | seq            |
//! | `by_time`       | created_at ‖ seq                            | –              |
//! | `by_kind`       | kind ‖ created_at ‖ seq                     | –              |
//! | `by_pubkey`     | pubkey ‖ created_at ‖ seq                   | –              |
//! | `by_pubkey_kind`| pubkey ‖ kind ‖ created_at ‖ seq            | –              |
//! | `by_tag`        | letter ‖ tagvalue ‖ created_at ‖ seq        | –              |
//! | `by_coord`      | kind ‖ pubkey ‖ tagvalue(d)                 | seq            |
//! | `by_expiry`     | expiration ‖ seq                            | –              |
//! | `deleted_ids`   | id ‖ deleter pubkey                         | –              |
//! | `deleted_coords`| kind ‖ pubkey ‖ tagvalue(d)                 | created_at     |
//! | `meta`          | name                                        | bytes          |
//! | `sync_refused`  | id                                          | reason         |
//! | `peer_state`    | peer URL                                    | state JSON     |
//! | `added_peers`   | peer URL                                    | peer JSON      |
//! | `graph_log`     | tagvalue(graph) ‖ t (the tx's own `t` tag)  | seq            |
//! | `graph_t`       | tagvalue(graph)                             | contiguous head t |
//! | `graph_homes`   | tagvalue(graph)                             | JSON [{node, from-t}] |
//! | `graph_conflicts`| tagvalue(graph) ‖ t ‖ id                   | event JSON     |
//! | `tokens`        | sha256(token)                               | expiry ‖ user id |
//! | `graph_state`   | tagvalue(graph)                             | epoch ‖ deleted|
//! | `graph_kvs`     | tagvalue(graph) ‖ addr                      | JSON [content, addresses] |
//! | `echo_stats`    | node id                                     | stats JSON     |
//! | `echo_changes`  | changed ms ‖ node id                        | –              |
//! | `echo_changed`  | node id                                     | changed ms     |
//!
//! `tagvalue` is a length byte and the raw value for values up to
//! [`INLINE_TAG_MAX`] bytes, else `0xFF ‖ sha256(value)`: keys stay under
//! LMDB's 511-byte limit and a prefix names exactly one value.

use sha2::{Digest, Sha256};

/// Longest tag value stored inline in index keys.
pub const INLINE_TAG_MAX: usize = 200;

/// Size of the fixed header stored before each event's JSON.
pub const HEADER_LEN: usize = 32 + 32 + 8 + 2 + 8;

/// The fixed fields of a stored event, readable without parsing its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: [u8; 32],
    pub pubkey: [u8; 32],
    pub created_at: u64,
    pub kind: u16,
    /// NIP-40 expiration, 0 when none.
    pub expiration: u64,
}

impl Header {
    pub fn encode(&self, json: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + json.len());
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.pubkey);
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.kind.to_be_bytes());
        out.extend_from_slice(&self.expiration.to_be_bytes());
        out.extend_from_slice(json);
        out
    }

    /// Splits a stored value into header and JSON. `None` only if the
    /// database is corrupt.
    pub fn decode(value: &[u8]) -> Option<(Header, &[u8])> {
        if value.len() < HEADER_LEN {
            return None;
        }
        let (head, json) = value.split_at(HEADER_LEN);
        Some((
            Header {
                id: head[0..32].try_into().ok()?,
                pubkey: head[32..64].try_into().ok()?,
                created_at: u64::from_be_bytes(head[64..72].try_into().ok()?),
                kind: u16::from_be_bytes(head[72..74].try_into().ok()?),
                expiration: u64::from_be_bytes(head[74..82].try_into().ok()?),
            },
            json,
        ))
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expiration != 0 && self.expiration <= now
    }
}

/// Appends the index encoding of a tag value.
pub fn push_tag_value(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    if bytes.len() <= INLINE_TAG_MAX {
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    } else {
        out.push(0xFF);
        out.extend_from_slice(&Sha256::digest(bytes));
    }
}

pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Reads the trailing `created_at ‖ seq` of an index key.
pub fn time_seq_suffix(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() < 16 {
        return None;
    }
    let tail = &key[key.len() - 16..];
    Some((
        u64::from_be_bytes(tail[..8].try_into().ok()?),
        u64::from_be_bytes(tail[8..].try_into().ok()?),
    ))
}

/// `prefix ‖ created_at ‖ seq`
pub fn index_key(prefix: &[u8], created_at: u64, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 16);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&created_at.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn kind_prefix(kind: u16) -> Vec<u8> {
    kind.to_be_bytes().to_vec()
}

pub fn pubkey_kind_prefix(pubkey: &[u8; 32], kind: u16) -> Vec<u8> {
    let mut p = pubkey.to_vec();
    p.extend_from_slice(&kind.to_be_bytes());
    p
}

pub fn tag_prefix(letter: u8, value: &str) -> Vec<u8> {
    let mut p = vec![letter];
    push_tag_value(&mut p, value);
    p
}

/// Key of a replaceable coordinate (`by_coord`, `deleted_coords`).
pub fn coord_key(kind: u16, pubkey: &[u8; 32], d: &str) -> Vec<u8> {
    let mut k = kind.to_be_bytes().to_vec();
    k.extend_from_slice(pubkey);
    push_tag_value(&mut k, d);
    k
}

/// A tag is indexed when its name is one ASCII letter and it has a value.
pub fn indexed_tags(tags: &[Vec<String>]) -> impl Iterator<Item = (u8, &str)> {
    tags.iter().filter_map(|t| {
        let name = t.first()?.as_bytes();
        if name.len() == 1 && name[0].is_ascii_alphabetic() {
            Some((name[0], t.get(1)?.as_str()))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let h = Header {
            id: [1; 32],
            pubkey: [2; 32],
            created_at: 77,
            kind: 30023,
            expiration: 99,
        };
        let v = h.encode(b"{}");
        assert_eq!(Header::decode(&v), Some((h, &b"{}"[..])));
        assert_eq!(Header::decode(&v[..10]), None);
    }

    #[test]
    fn long_tag_values_are_hashed() {
        let long = "x".repeat(1000);
        assert_eq!(tag_prefix(b'e', &long).len(), 1 + 1 + 32);
        assert_ne!(tag_prefix(b'e', "a"), tag_prefix(b'e', "b"));
    }
}
