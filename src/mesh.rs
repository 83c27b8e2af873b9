//! The mesh: this node and the nodes it trusts. Graph transactions (4071),
//! graph metadata (34071), echo node states (34072) and graph asset records
//! (34073) are private to it:
//! over NIP-01 and NIP-77 they are accepted only from, and shown only to,
//! connections authenticated (NIP-42) as a mesh node, and they live only in
//! fingerprint trees whose scope names nothing but mesh kinds, so a
//! stranger's reconciliation never contains their ids.

use std::collections::{HashMap, HashSet};

use crate::config::{Config, PeerConfig};
use crate::filter::Filter;
use crate::refusal::{Prefix, Refusal};

/// A graph transaction (one DB-Sync log entry).
pub const GRAPH_TX_KIND: u16 = 4071;
/// A graph's metadata (addressable, `d` = graph id).
pub const GRAPH_INDEX_KIND: u16 = 34071;
/// An Echo node state (addressable, `d` = node id).
pub const ECHO_STATE_KIND: u16 = 34072;
/// A graph asset record (addressable, `d` = `graph-id/uuid.ext`).
pub const GRAPH_ASSET_KIND: u16 = 34073;

/// Every kind private to the mesh.
pub const MESH_KINDS: [u16; 4] = [
    GRAPH_TX_KIND,
    GRAPH_INDEX_KIND,
    ECHO_STATE_KIND,
    GRAPH_ASSET_KIND,
];

/// Is `kind` private to the mesh?
pub fn is_mesh_kind(kind: u16) -> bool {
    matches!(
        kind,
        GRAPH_TX_KIND | GRAPH_INDEX_KIND | ECHO_STATE_KIND | GRAPH_ASSET_KIND
    )
}

/// Does a tree with this scope hold mesh events (and no others)? Only such
/// trees may hold them.
pub fn is_mesh_scope(filter: &Filter) -> bool {
    filter
        .kinds
        .as_ref()
        .is_some_and(|kinds| !kinds.is_empty() && kinds.iter().all(|k| is_mesh_kind(*k)))
}

/// Can a tree with `scope` hold an event of `kind`? Mesh kinds go only into
/// mesh scopes, other kinds only elsewhere (restricted kinds are checked by
/// the store).
pub fn scope_may_hold(scope: &Filter, kind: u16) -> bool {
    is_mesh_kind(kind) == is_mesh_scope(scope)
}

/// Why a mesh-kind event whose author is not in the mesh set is refused.
const AUTHOR_REFUSAL: &str = "graph and echo events must be signed by a mesh node";

/// The refusal of a mesh-kind event whose author is not in the mesh set,
/// on every path that stores events (client, sync, live link, import).
pub fn author_refusal() -> Refusal {
    Refusal::restricted(AUTHOR_REFUSAL)
}

/// Is `refusal` [`author_refusal`]? (Such events are asked for again when
/// their author joins the mesh.)
pub fn is_author_refusal(refusal: &Refusal) -> bool {
    refusal.is(Prefix::Restricted) && refusal.detail == AUTHOR_REFUSAL
}

/// The mesh set: this node's key, `auth.trusted_nodes`, and the node key of
/// every configured or added peer. The one place that answers "is this key
/// in the mesh"; it starts empty (every mesh event refused) until a node
/// or a CLI command fills it from its config.
#[derive(Debug, Default)]
pub struct Mesh {
    /// This node and `auth.trusted_nodes`: fixed for the process.
    fixed: parking_lot::RwLock<HashSet<[u8; 32]>>,
    /// Peers' node keys by URL (configured and added at run time).
    peers: parking_lot::RwLock<HashMap<String, [u8; 32]>>,
}

impl Mesh {
    /// Fills the set from the node key, the config and the peers added
    /// through the control API (`added`, as kept in the store).
    pub fn admit(&self, node_key: [u8; 32], config: &Config, added: &[PeerConfig]) {
        let mut fixed = self.fixed.write();
        fixed.insert(node_key);
        fixed.extend(
            config
                .auth
                .trusted_nodes
                .iter()
                .filter_map(|k| crate::event::decode_hex::<32>(k)),
        );
        drop(fixed);
        for peer in config.peers.iter().chain(added) {
            if let Some(key) = crate::peers::PeerSpec::parse(peer)
                .ok()
                .and_then(|p| p.pubkey)
            {
                self.add_peer(&peer.url, key);
            }
        }
    }

    pub fn is_member(&self, pubkey: &[u8; 32]) -> bool {
        self.fixed.read().contains(pubkey) || self.peers.read().values().any(|k| k == pubkey)
    }

    /// A peer configured with its node key joins the mesh.
    pub fn add_peer(&self, url: &str, pubkey: [u8; 32]) {
        self.peers.write().insert(url.to_string(), pubkey);
    }

    /// A removed peer's key leaves the mesh (unless it is also trusted by
    /// config or named by another peer).
    pub fn remove_peer(&self, url: &str) {
        self.peers.write().remove(url);
    }

    /// The node key configured for the peer at `url`: the key that peer
    /// must prove it holds before mesh-private events flow.
    pub fn key_of_peer(&self, url: &str) -> Option<[u8; 32]> {
        self.peers.read().get(url).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_is_the_node_trusted_keys_and_peer_keys() {
        let mut config = Config::default();
        config.auth.trusted_nodes = vec![hex::encode([2u8; 32])];
        config.peers.push(PeerConfig {
            url: "ws://b".into(),
            pubkey: Some(hex::encode([3u8; 32])),
            ..PeerConfig::default()
        });
        let mesh = Mesh::default();
        assert!(!mesh.is_member(&[1u8; 32]), "an empty set trusts nobody");
        let added = [PeerConfig {
            url: "ws://c".into(),
            pubkey: Some(hex::encode([4u8; 32])),
            ..PeerConfig::default()
        }];
        mesh.admit([1u8; 32], &config, &added);
        for key in [[1u8; 32], [2u8; 32], [3u8; 32], [4u8; 32]] {
            assert!(mesh.is_member(&key));
        }
        assert!(!mesh.is_member(&[5u8; 32]));
        assert_eq!(mesh.key_of_peer("ws://c"), Some([4u8; 32]));
        mesh.remove_peer("ws://c");
        assert!(!mesh.is_member(&[4u8; 32]));
        assert!(mesh.is_member(&[3u8; 32]));
    }
}
