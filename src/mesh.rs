//! The mesh: this node and the nodes it trusts. Graph transactions (4071),
//! graph metadata (34071), echo node states (34072) and graph asset records
//! (34073) are private to it:
//! over NIP-01 and NIP-77 they are accepted only from, and shown only to,
//! connections authenticated (NIP-42) as a mesh node, and they live only in
//! fingerprint trees whose scope names nothing but mesh kinds, so a
//! stranger's reconciliation never contains their ids.

use std::collections::HashSet;

use crate::config::Config;
use crate::filter::Filter;

/// A graph transaction (one DB-Sync log entry).
pub const GRAPH_TX_KIND: u16 = 4071;
/// A graph's metadata (addressable, `d` = graph id).
pub const GRAPH_INDEX_KIND: u16 = 34071;
/// An Echo node state (addressable, `d` = node id).
pub const ECHO_STATE_KIND: u16 = 34072;
/// A graph asset record (addressable, `d` = `graph-id/uuid.ext`).
pub const GRAPH_ASSET_KIND: u16 = 34073;

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

/// The node keys of the mesh; peers added at run time may join it.
#[derive(Debug, Default)]
pub struct Mesh {
    members: parking_lot::RwLock<HashSet<[u8; 32]>>,
}

impl Mesh {
    /// This node's key, `auth.trusted_nodes`, and the `pubkey` of every
    /// configured peer.
    pub fn new(node_key: [u8; 32], config: &Config) -> Mesh {
        let mut members: HashSet<[u8; 32]> = config
            .auth
            .trusted_nodes
            .iter()
            .chain(config.peers.iter().filter_map(|p| p.pubkey.as_ref()))
            .filter_map(|k| crate::event::decode_hex::<32>(k))
            .collect();
        members.insert(node_key);
        Mesh {
            members: parking_lot::RwLock::new(members),
        }
    }

    pub fn is_member(&self, pubkey: &[u8; 32]) -> bool {
        self.members.read().contains(pubkey)
    }

    /// A peer added with its node key joins the mesh.
    pub fn add(&self, pubkey: [u8; 32]) {
        self.members.write().insert(pubkey);
    }
}
