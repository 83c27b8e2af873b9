//! NODE-AUTH: the half of mesh authentication NIP-42 lacks. NIP-42 lets a
//! relay learn who its client is; before a node sends mesh-private events
//! to a peer it dialled, or accepts mesh events from it, it must also know
//! the peer is the node configured for that URL and not an impostor
//! listening there. The dialling node sends `["NODE-AUTH", <nonce>]` (32
//! random bytes, hex); the peer answers `["NODE-AUTH", <event>]`, an event
//! of kind [`NODE_PROOF_KIND`] signed by its node key with the tags
//! `["challenge", <nonce>]` and `["relay", <its URL as the request named
//! it>]`. The dialler checks the signature, the key, the nonce, the URL
//! and the time (docs/PROTOCOL.md). The kind is not 22242, so a proof can
//! never pass as a NIP-42 AUTH event anywhere.

use crate::event::{now, Event, Keys};
use crate::relay::origin::normalize_url;

/// The kind of a node's proof (ephemeral range: never stored).
pub const NODE_PROOF_KIND: u16 = 24071;

/// The message name, both ways.
pub const MESSAGE: &str = "NODE-AUTH";

/// How far a proof's created_at may be from now, in seconds.
const WINDOW_SECS: u64 = 600;

/// Longest proof accepted, in bytes of JSON.
pub const MAX_PROOF_BYTES: usize = 4096;

/// Why a peer's proof was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the proof is not a valid event: {0}")]
    Malformed(String),
    #[error("the proof is too large")]
    TooLarge,
    #[error("the proof is of kind {0}, not {NODE_PROOF_KIND}")]
    WrongKind(u16),
    #[error("the proof is signed by {0}, not by the key configured for this peer")]
    WrongKey(String),
    #[error("the proof answers another nonce")]
    WrongNonce,
    #[error("the proof names another URL ({0})")]
    WrongUrl(String),
    #[error("the proof's created_at is too far from now")]
    Stale,
}

/// A fresh nonce for one connection.
pub fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Is `text` a nonce this node signs? 64 lowercase hex characters: a peer
/// cannot make the node sign arbitrary text.
pub fn is_nonce(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The node's answer to `nonce` on a connection to `relay_url`.
pub fn proof(key: &Keys, nonce: &str, relay_url: &str) -> Event {
    key.sign(
        now(),
        NODE_PROOF_KIND,
        vec![
            vec!["challenge".into(), nonce.into()],
            vec!["relay".into(), relay_url.into()],
        ],
        String::new(),
    )
}

/// Checks a peer's proof (its JSON as received) for the connection we
/// dialled to `url`, expecting `expected` to have signed `nonce`.
pub fn check(json: &str, expected: &[u8; 32], nonce: &str, url: &str) -> Result<(), ProofError> {
    if json.len() > MAX_PROOF_BYTES {
        return Err(ProofError::TooLarge);
    }
    let event = Event::from_json(json).map_err(|e| ProofError::Malformed(e.to_string()))?;
    if event.kind != NODE_PROOF_KIND {
        return Err(ProofError::WrongKind(event.kind));
    }
    if event.pubkey != *expected {
        return Err(ProofError::WrongKey(hex::encode(event.pubkey)));
    }
    event
        .verify()
        .map_err(|e| ProofError::Malformed(e.to_string()))?;
    if event.tag_values("challenge").next() != Some(nonce) {
        return Err(ProofError::WrongNonce);
    }
    let named = event.tag_values("relay").next().unwrap_or("");
    let named_url = normalize_url(named);
    if named_url.is_none() || named_url != normalize_url(url) {
        return Err(ProofError::WrongUrl(named.to_string()));
    }
    if event.created_at.abs_diff(now()) > WINDOW_SECS {
        return Err(ProofError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_key_nonce_and_url_pass() {
        let (node, impostor) = (Keys::generate(), Keys::generate());
        let nonce = new_nonce();
        assert!(is_nonce(&nonce));
        let url = "ws://127.0.0.1:7777";
        let key = node.public_key();
        let good = proof(&node, &nonce, "ws://127.0.0.1:7777/").to_json();
        assert_eq!(check(&good, &key, &nonce, url), Ok(()));
        let theirs = proof(&impostor, &nonce, url).to_json();
        assert!(matches!(
            check(&theirs, &key, &nonce, url),
            Err(ProofError::WrongKey(_))
        ));
        let other_nonce = proof(&node, &new_nonce(), url).to_json();
        assert_eq!(
            check(&other_nonce, &key, &nonce, url),
            Err(ProofError::WrongNonce)
        );
        let elsewhere = proof(&node, &nonce, "ws://10.0.0.9:7777").to_json();
        assert!(matches!(
            check(&elsewhere, &key, &nonce, url),
            Err(ProofError::WrongUrl(_))
        ));
        let auth = node.sign(now(), 22242, vec![], String::new()).to_json();
        assert_eq!(
            check(&auth, &key, &nonce, url),
            Err(ProofError::WrongKind(22242))
        );
        let mut tampered: serde_json::Value = serde_json::from_str(&good).unwrap();
        tampered["created_at"] = serde_json::json!(1);
        assert!(matches!(
            check(&tampered.to_string(), &key, &nonce, url),
            Err(ProofError::Malformed(_))
        ));
        assert!(!is_nonce("zz"));
        assert!(!is_nonce(&"A".repeat(64)));
    }
}
