//! The signed Nostr event: parsing from untrusted JSON, id and signature
//! checks, the canonical serialisation we store and serve, and signing with a
//! node key.
//!
//! We parse events ourselves (rather than through the `nostr` crate) so that
//! every refusal carries a precise `invalid:` reason, so that the JSON we store
//! is exactly the JSON we serve (no re-serialisation on the REQ path), and so
//! that the fuzz targets exercise the code that really faces the network.

use std::sync::LazyLock;

use secp256k1::{schnorr, Keypair, Secp256k1, SecretKey, XOnlyPublicKey};
use serde_json::value::RawValue;

mod wire;
use sha2::{Digest, Sha256};

static SECP: LazyLock<Secp256k1<secp256k1::All>> = LazyLock::new(Secp256k1::new);

/// Why an event was refused before it reached the store: always an
/// `invalid:` refusal ([`EventError::refusal`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("{0}")]
    Malformed(String),
    #[error("event id does not match its content")]
    BadId,
    #[error("bad signature")]
    BadSignature,
}

impl EventError {
    pub fn refusal(&self) -> crate::refusal::Refusal {
        crate::refusal::Refusal::invalid(self.to_string())
    }
}

/// How a kind is stored (NIP-01 "kinds" section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindClass {
    Regular,
    /// 0, 3, 10000–19999: one per (pubkey, kind).
    Replaceable,
    /// 20000–29999: fanned out, never stored.
    Ephemeral,
    /// 30000–39999: one per (pubkey, kind, d-tag).
    Addressable,
}

impl KindClass {
    pub fn of(kind: u16) -> KindClass {
        match kind {
            0 | 3 | 10000..=19999 => KindClass::Replaceable,
            20000..=29999 => KindClass::Ephemeral,
            30000..=39999 => KindClass::Addressable,
            _ => KindClass::Regular,
        }
    }
}

/// A Nostr event with its binary fields decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: [u8; 32],
    pub pubkey: [u8; 32],
    pub created_at: u64,
    pub kind: u16,
    pub tags: Vec<Vec<String>>,
    pub content: String,
    pub sig: [u8; 64],
}

/// Decodes exactly `N` bytes of lowercase hex (NIP-01 requires lowercase).
pub fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    crate::hex_codec::decode(text)
}

impl Event {
    /// Parses an event object from untrusted JSON. Checks shape and encodings
    /// only; call [`Event::verify`] before trusting it.
    pub fn from_json(json: &str) -> Result<Event, EventError> {
        wire::parse(json)
    }

    /// Parses an event from an already-split raw JSON value.
    pub fn from_raw(raw: &RawValue) -> Result<Event, EventError> {
        Self::from_json(raw.get())
    }

    /// The NIP-01 id: sha256 of `[0, pubkey, created_at, kind, tags, content]`,
    /// serialised straight into the hash (no intermediate buffer).
    pub fn compute_id(&self) -> [u8; 32] {
        let mut hash = HashWriter(Sha256::new());
        hash.0.update(b"[0,\"");
        hash.0
            .update(crate::hex_codec::encode_into(&self.pubkey, &mut [0; 64]));
        hash.0.update(b"\",");
        hash.0.update(self.created_at.to_string());
        hash.0.update(b",");
        hash.0.update(self.kind.to_string());
        hash.0.update(b",");
        // Serialising strings and vectors of strings into a hash cannot fail.
        let _ = serde_json::to_writer(&mut hash, &self.tags);
        hash.0.update(b",");
        let _ = serde_json::to_writer(&mut hash, &self.content);
        hash.0.update(b"]");
        hash.0.finalize().into()
    }

    /// Checks the id and the Schnorr signature. CPU heavy (~30 µs): run it on
    /// the verify pool, never on the async executor.
    pub fn verify(&self) -> Result<(), EventError> {
        if self.compute_id() != self.id {
            return Err(EventError::BadId);
        }
        self.check_signature()
    }

    /// [`Event::verify`] and [`Event::to_json`] in one: the id is hashed from
    /// the pieces of the JSON being built, so tags and content are
    /// serialised once (the ingest path does both for every event).
    pub fn verified_json(&self) -> Result<String, EventError> {
        let (json, at) = self.render();
        let piece = |range: &std::ops::Range<usize>| json.as_bytes().get(range.clone());
        let mut hash = Sha256::new();
        hash.update(b"[0,");
        for (i, range) in [&at.pubkey, &at.created_at, &at.kind, &at.tags, &at.content]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                hash.update(b",");
            }
            hash.update(piece(range).ok_or(EventError::BadId)?);
        }
        hash.update(b"]");
        if <[u8; 32]>::from(hash.finalize()) != self.id {
            return Err(EventError::BadId);
        }
        self.check_signature()?;
        Ok(json)
    }

    fn check_signature(&self) -> Result<(), EventError> {
        let key = parsed_pubkey(&self.pubkey).ok_or(EventError::BadSignature)?;
        let sig = schnorr::Signature::from_byte_array(self.sig);
        SECP.verify_schnorr(&sig, &self.id, &key)
            .map_err(|_| EventError::BadSignature)
    }

    /// The JSON we store and serve, fields in NIP-01 order.
    pub fn to_json(&self) -> String {
        self.render().0
    }

    /// Renders the JSON and notes where the values the id covers lie in it.
    fn render(&self) -> (String, Rendered) {
        let mut out = String::with_capacity(320 + self.content.len());
        let mut hex = [0u8; 128];
        let push = |out: &mut String, text: &str| {
            let start = out.len();
            out.push_str(text);
            start..out.len()
        };
        push(&mut out, "{\"id\":\"");
        push(&mut out, crate::hex_codec::encode_into(&self.id, &mut hex));
        push(&mut out, "\",\"pubkey\":");
        let pubkey_start = out.len();
        push(&mut out, "\"");
        push(
            &mut out,
            crate::hex_codec::encode_into(&self.pubkey, &mut hex),
        );
        push(&mut out, "\"");
        let pubkey = pubkey_start..out.len();
        push(&mut out, ",\"created_at\":");
        let created_at = push(&mut out, &self.created_at.to_string());
        push(&mut out, ",\"kind\":");
        let kind = push(&mut out, &self.kind.to_string());
        push(&mut out, ",\"tags\":");
        // Strings and vectors of strings always serialise.
        let tags = push(
            &mut out,
            &serde_json::to_string(&self.tags).unwrap_or_default(),
        );
        push(&mut out, ",\"content\":");
        let content = push(
            &mut out,
            &serde_json::to_string(&self.content).unwrap_or_default(),
        );
        push(&mut out, ",\"sig\":\"");
        push(&mut out, crate::hex_codec::encode_into(&self.sig, &mut hex));
        push(&mut out, "\"}");
        (
            out,
            Rendered {
                pubkey,
                created_at,
                kind,
                tags,
                content,
            },
        )
    }

    pub fn id_hex(&self) -> String {
        crate::hex_codec::encode(&self.id)
    }

    pub fn class(&self) -> KindClass {
        KindClass::of(self.kind)
    }

    /// Values of every tag named `name` (second element of the tag).
    pub fn tag_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.tags
            .iter()
            .filter(move |t| t.first().map(String::as_str) == Some(name))
            .filter_map(|t| t.get(1).map(String::as_str))
    }

    /// The `d` tag of an addressable event ("" when absent, as NIP-01 says).
    pub fn d_tag(&self) -> &str {
        self.tag_values("d").next().unwrap_or("")
    }

    /// NIP-40 expiration timestamp, if the event carries a well-formed one.
    pub fn expiration(&self) -> Option<u64> {
        self.tag_values("expiration")
            .next()
            .and_then(|v| v.parse().ok())
    }

    /// The replaceable coordinate (kind, pubkey, d) or `None` for kinds that
    /// are not replaced.
    pub fn coordinate(&self) -> Option<Coordinate> {
        let d = match self.class() {
            KindClass::Replaceable => String::new(),
            KindClass::Addressable => self.d_tag().to_string(),
            _ => return None,
        };
        Some(Coordinate {
            kind: self.kind,
            pubkey: self.pubkey,
            d,
        })
    }
}

/// Where the values covered by the id lie in an event's rendered JSON.
struct Rendered {
    /// The pubkey with its quotes.
    pubkey: std::ops::Range<usize>,
    created_at: std::ops::Range<usize>,
    kind: std::ops::Range<usize>,
    tags: std::ops::Range<usize>,
    content: std::ops::Range<usize>,
}

/// Feeds serde_json's output straight into a hash.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `kind:pubkey:d`, the address of a replaceable or addressable event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinate {
    pub kind: u16,
    pub pubkey: [u8; 32],
    pub d: String,
}

impl Coordinate {
    /// Parses the value of an `a` tag (`kind:hexpubkey:d`).
    pub fn parse(text: &str) -> Option<Coordinate> {
        let mut parts = text.splitn(3, ':');
        let kind = parts.next()?.parse().ok()?;
        let pubkey = decode_hex::<32>(parts.next()?)?;
        let d = parts.next().unwrap_or("").to_string();
        Some(Coordinate { kind, pubkey, d })
    }
}

/// Most pubkeys remembered per verify thread.
const PUBKEY_CACHE: usize = 4096;

thread_local! {
    static PUBKEYS: std::cell::RefCell<std::collections::HashMap<[u8; 32], XOnlyPublicKey>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Parsing an x-only key costs a field square root (~6 % of a verify); busy
/// authors publish many events, so each verify thread keeps recent keys.
fn parsed_pubkey(bytes: &[u8; 32]) -> Option<XOnlyPublicKey> {
    PUBKEYS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(key) = cache.get(bytes) {
            return Some(*key);
        }
        let key = XOnlyPublicKey::from_byte_array(bytes).ok()?;
        if cache.len() >= PUBKEY_CACHE {
            cache.clear();
        }
        cache.insert(*bytes, key);
        Some(key)
    })
}

/// A secp256k1 key that signs events: the node key, and test clients.
#[derive(Clone)]
pub struct Keys {
    keypair: Keypair,
}

impl Keys {
    pub fn generate() -> Keys {
        loop {
            let bytes: [u8; 32] = rand::random();
            if let Some(keys) = Keys::from_secret(&bytes) {
                return keys;
            }
        }
    }

    pub fn from_secret(secret: &[u8; 32]) -> Option<Keys> {
        let sk = SecretKey::from_byte_array(secret).ok()?;
        Some(Keys {
            keypair: Keypair::from_secret_key(&SECP, &sk),
        })
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.keypair.secret_bytes()
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.keypair.x_only_public_key().0.serialize()
    }

    /// Builds and signs an event.
    pub fn sign(
        &self,
        created_at: u64,
        kind: u16,
        tags: Vec<Vec<String>>,
        content: String,
    ) -> Event {
        let mut event = Event {
            id: [0; 32],
            pubkey: self.public_key(),
            created_at,
            kind,
            tags,
            content,
            sig: [0; 64],
        };
        event.id = event.compute_id();
        let aux: [u8; 32] = rand::random();
        event.sig = SECP
            .sign_schnorr_with_aux_rand(&event.id, &self.keypair, &aux)
            .to_byte_array();
        event
    }
}

/// Milliseconds since the Unix epoch (graph and echo timestamps).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_roundtrip_and_tamper() {
        let keys = Keys::generate();
        let ev = keys.sign(
            1_700_000_000,
            1,
            vec![vec!["t".into(), "x".into()]],
            "hi \u{1} \"q\"".into(),
        );
        ev.verify().unwrap();
        let parsed = Event::from_json(&ev.to_json()).unwrap();
        assert_eq!(parsed, ev);
        let mut bad = ev.clone();
        bad.content.push('!');
        assert_eq!(bad.verify(), Err(EventError::BadId));
        let mut bad = ev.clone();
        bad.sig[5] ^= 1;
        assert_eq!(bad.verify(), Err(EventError::BadSignature));
    }

    #[test]
    fn verified_json_agrees_with_verify_and_to_json() {
        let keys = Keys::generate();
        let contents = [
            "",
            "plain",
            "quote \" slash \\ nl \n tab \t",
            "\u{1}\u{1f}\u{7f}",
            "é ✓ 🎉",
        ];
        for (i, content) in contents.iter().enumerate() {
            let tags = vec![
                vec!["e".into(), "a".repeat(i)],
                vec!["t".into(), content.to_string(), String::new()],
            ];
            let ev = keys.sign(
                1_700_000_000 + i as u64,
                30_000 + i as u16,
                tags,
                content.to_string(),
            );
            assert_eq!(ev.verified_json(), Ok(ev.to_json()));
            assert_eq!(ev.verify(), Ok(()));
            let mut bad = ev.clone();
            bad.tags[0][1].push('x');
            assert_eq!(bad.verified_json(), Err(EventError::BadId));
            assert_eq!(bad.verify(), Err(EventError::BadId));
            let mut bad = ev.clone();
            bad.sig[0] ^= 1;
            assert_eq!(bad.verified_json(), Err(EventError::BadSignature));
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let keys = Keys::generate();
        let good = keys.sign(10, 1, vec![], String::new()).to_json();
        for (from, to) in [
            ("\"created_at\":10", "\"created_at\":-10"),
            ("\"created_at\":10", "\"created_at\":1e+10"),
            ("\"created_at\":10", "\"created_at\":\"10\""),
            ("\"kind\":1", "\"kind\":70000"),
            ("\"tags\":[]", "\"tags\":[[],[]]"),
            ("\"tags\":[]", "\"tags\":[[1]]"),
            ("\"content\":\"\"", "\"content\":5"),
        ] {
            let text = good.replace(from, to);
            assert!(Event::from_json(&text).is_err(), "{text}");
        }
        let upper = good.replacen("\"id\":\"", "\"id\":\"A", 1);
        assert!(Event::from_json(&upper).is_err());
    }
}
