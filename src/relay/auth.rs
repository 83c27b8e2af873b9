//! NIP-42 authentication: the per-connection challenge, checking AUTH
//! events, and the set of pubkeys a connection has proven.

use parking_lot::RwLock;

use super::origin::normalize_url;
use crate::event::{now, Event};
use crate::refusal::Refusal;

/// Kind of the NIP-42 auth event.
pub const AUTH_KIND: u16 = 22242;

/// How far an AUTH event's created_at may be from now, in seconds.
const AUTH_WINDOW: u64 = 600;

pub struct AuthState {
    challenge: String,
    /// The URL (normalised) an AUTH event's `relay` tag must name: the
    /// configured `server.relay_url`, else the URL of the upgrade request.
    relay_url: String,
    /// Whether `relay_url` is the configured one. A URL read from the
    /// request is the client's own word (it sent the Host header), so a
    /// proof bound only to it could have been relayed from elsewhere.
    url_configured: bool,
    /// This node's key, hex: an AUTH event that names it (`["p", key]`) was
    /// made for this node and no other.
    node: String,
    proven: RwLock<Vec<Proven>>,
    /// Whether this node already signed a NODE-AUTH nonce here.
    node_proof_given: std::sync::atomic::AtomicBool,
}

/// A pubkey the connection proved, and whether the proof is bound to this
/// node (configured URL, or the event names this node's key).
struct Proven {
    pubkey: [u8; 32],
    bound_to_node: bool,
}

impl AuthState {
    pub fn new(relay_url: String, url_configured: bool, node: &[u8; 32]) -> AuthState {
        let bytes: [u8; 16] = rand::random();
        AuthState {
            challenge: hex::encode(bytes),
            relay_url,
            url_configured,
            node: hex::encode(node),
            proven: RwLock::new(Vec::new()),
            node_proof_given: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// True the first time only: this connection may have one NODE-AUTH
    /// proof.
    pub fn take_node_proof(&self) -> bool {
        !self
            .node_proof_given
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// The URL this connection's AUTH events must name.
    pub fn relay_url(&self) -> &str {
        &self.relay_url
    }

    pub fn is_authenticated(&self) -> bool {
        !self.proven.read().is_empty()
    }

    pub fn has(&self, pubkey: &[u8; 32]) -> bool {
        self.proven.read().iter().any(|p| p.pubkey == *pubkey)
    }

    /// Any of the connection's proven pubkeys satisfies `pred`.
    pub fn any(&self, mut pred: impl FnMut(&[u8; 32]) -> bool) -> bool {
        self.proven.read().iter().any(|p| pred(&p.pubkey))
    }

    /// Any pubkey proven with a proof bound to this node satisfies `pred`:
    /// what mesh access requires, so a proof relayed from another
    /// connection grants none.
    pub fn any_bound(&self, mut pred: impl FnMut(&[u8; 32]) -> bool) -> bool {
        self.proven
            .read()
            .iter()
            .any(|p| p.bound_to_node && pred(&p.pubkey))
    }

    /// Checks a signature-verified AUTH event against the challenge and the
    /// relay URL; records the pubkey on success.
    pub fn accept(&self, event: &Event) -> Result<(), Refusal> {
        if event.kind != AUTH_KIND {
            return Err(Refusal::invalid(format!(
                "AUTH event must be kind {AUTH_KIND}"
            )));
        }
        if event.tag_values("challenge").next() != Some(self.challenge.as_str()) {
            return Err(Refusal::invalid("AUTH challenge does not match"));
        }
        if now().abs_diff(event.created_at) > AUTH_WINDOW {
            return Err(Refusal::invalid(
                "AUTH event created_at is too far from now",
            ));
        }
        let named = event.tag_values("relay").next().and_then(normalize_url);
        if named.as_deref() != Some(self.relay_url.as_str()) {
            return Err(Refusal::invalid(format!(
                "AUTH relay tag does not name this relay ({})",
                self.relay_url
            )));
        }
        let bound_to_node = self.url_configured || event.tag_values("p").any(|p| p == self.node);
        let mut proven = self.proven.write();
        match proven.iter_mut().find(|p| p.pubkey == event.pubkey) {
            Some(held) => held.bound_to_node |= bound_to_node,
            None => proven.push(Proven {
                pubkey: event.pubkey,
                bound_to_node,
            }),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Keys;

    fn auth_event(keys: &Keys, relay: &str, challenge: &str, p: Option<&str>) -> Event {
        let mut tags = vec![
            vec!["relay".into(), relay.into()],
            vec!["challenge".into(), challenge.into()],
        ];
        if let Some(p) = p {
            tags.push(vec!["p".into(), p.into()]);
        }
        keys.sign(now(), AUTH_KIND, tags, String::new())
    }

    #[test]
    fn accepts_matching_challenge_and_relay_only() {
        let node = [7u8; 32];
        let state = AuthState::new("wss://relay.example.com".into(), false, &node);
        let keys = Keys::generate();
        let url = "wss://Relay.example.com:443/";
        assert!(state.accept(&auth_event(&keys, url, "nope", None)).is_err());
        let c = state.challenge().to_string();
        for wrong in ["ws://relay.example.com", "wss://other.example.com", "", "x"] {
            let err = state
                .accept(&auth_event(&keys, wrong, &c, None))
                .unwrap_err();
            assert!(err.is(crate::refusal::Prefix::Invalid), "{err:?}");
            assert!(err.detail.starts_with("AUTH relay tag"), "{err:?}");
        }
        assert!(!state.is_authenticated());
        state.accept(&auth_event(&keys, url, &c, None)).unwrap();
        assert!(state.has(&keys.public_key()));
        // Bound to the request's URL only: no mesh-grade proof yet.
        assert!(!state.any_bound(|_| true));
        let names_node = auth_event(&keys, url, &c, Some(&hex::encode(node)));
        state.accept(&names_node).unwrap();
        assert!(state.any_bound(|pk| *pk == keys.public_key()));
    }

    #[test]
    fn a_configured_url_binds_every_proof() {
        let state = AuthState::new("wss://relay.example.com".into(), true, &[7u8; 32]);
        let keys = Keys::generate();
        let c = state.challenge().to_string();
        state
            .accept(&auth_event(&keys, "wss://relay.example.com", &c, None))
            .unwrap();
        assert!(state.any_bound(|_| true));
    }
}
