//! NIP-42 authentication: the per-connection challenge, checking AUTH
//! events, and the set of pubkeys a connection has proven.

use parking_lot::RwLock;

use crate::event::{now, Event};

/// Kind of the NIP-42 auth event.
pub const AUTH_KIND: u16 = 22242;

/// How far an AUTH event's created_at may be from now, in seconds.
const AUTH_WINDOW: u64 = 600;

pub struct AuthState {
    challenge: String,
    pubkeys: RwLock<Vec<[u8; 32]>>,
}

impl AuthState {
    pub fn new() -> AuthState {
        let bytes: [u8; 16] = rand::random();
        AuthState {
            challenge: hex::encode(bytes),
            pubkeys: RwLock::new(Vec::new()),
        }
    }

    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    pub fn is_authenticated(&self) -> bool {
        !self.pubkeys.read().is_empty()
    }

    pub fn has(&self, pubkey: &[u8; 32]) -> bool {
        self.pubkeys.read().contains(pubkey)
    }

    /// Any of the connection's proven pubkeys satisfies `pred`.
    pub fn any(&self, pred: impl FnMut(&[u8; 32]) -> bool) -> bool {
        self.pubkeys.read().iter().any(pred)
    }

    /// Checks a signature-verified AUTH event against the challenge and, when
    /// configured, the relay URL; records the pubkey on success.
    pub fn accept(&self, event: &Event, relay_url: &str) -> Result<(), String> {
        if event.kind != AUTH_KIND {
            return Err(format!("invalid: AUTH event must be kind {AUTH_KIND}"));
        }
        if event.tag_values("challenge").next() != Some(self.challenge.as_str()) {
            return Err("invalid: AUTH challenge does not match".into());
        }
        if now().abs_diff(event.created_at) > AUTH_WINDOW {
            return Err("invalid: AUTH event created_at is too far from now".into());
        }
        if !relay_url.is_empty() {
            let given = event.tag_values("relay").next().unwrap_or("");
            if normalize_url(given) != normalize_url(relay_url) {
                return Err("invalid: AUTH relay tag does not name this relay".into());
            }
        }
        let mut keys = self.pubkeys.write();
        if !keys.contains(&event.pubkey) {
            keys.push(event.pubkey);
        }
        Ok(())
    }
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState::new()
    }
}

/// Compares relay URLs loosely: case, scheme and trailing slash ignored.
fn normalize_url(url: &str) -> String {
    let lower = url.trim().to_ascii_lowercase();
    let no_scheme = lower
        .split_once("://")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or(lower);
    no_scheme.trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Keys;

    #[test]
    fn accepts_matching_challenge_only() {
        let state = AuthState::new();
        let keys = Keys::generate();
        let tags = |c: &str| {
            vec![
                vec!["relay".into(), "wss://relay.example.com/".into()],
                vec!["challenge".into(), c.into()],
            ]
        };
        let bad = keys.sign(now(), AUTH_KIND, tags("nope"), String::new());
        assert!(state.accept(&bad, "").is_err());
        let good = keys.sign(now(), AUTH_KIND, tags(state.challenge()), String::new());
        assert!(state.accept(&good, "ws://other.example.com").is_err());
        state.accept(&good, "wss://Relay.example.com").unwrap();
        assert!(state.has(&keys.public_key()));
    }
}
