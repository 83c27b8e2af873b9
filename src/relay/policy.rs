//! Who may write what, and who may read what: the configured write policy
//! (size, created_at window, tag count, pubkey and kind lists, NIP-40) and the
//! read rules for restricted kinds (served only to their parties) and mesh
//! kinds (served only to mesh nodes, see `mesh.rs`).

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{AuthConfig, PolicyConfig};
use crate::event::{decode_hex, Event};
use crate::filter::Filter;
use crate::mesh::Mesh;
use crate::refusal::Refusal;
use crate::store::Header;

use super::client::Client;

pub struct WritePolicy {
    max_event_size: usize,
    max_content_length: usize,
    max_tags: usize,
    max_future: u64,
    max_past: u64,
    pubkey_allow: HashSet<[u8; 32]>,
    pubkey_deny: HashSet<[u8; 32]>,
    kind_allow: HashSet<u16>,
    kind_deny: HashSet<u16>,
}

fn keys(list: &[String]) -> HashSet<[u8; 32]> {
    list.iter().filter_map(|k| decode_hex::<32>(k)).collect()
}

impl WritePolicy {
    pub fn new(cfg: &PolicyConfig) -> WritePolicy {
        WritePolicy {
            max_event_size: cfg.max_event_size,
            max_content_length: cfg.max_content_length,
            max_tags: cfg.max_tags,
            max_future: cfg.max_future_seconds,
            max_past: cfg.max_past_seconds,
            pubkey_allow: keys(&cfg.pubkey_allow),
            pubkey_deny: keys(&cfg.pubkey_deny),
            kind_allow: cfg.kind_allow.iter().copied().collect(),
            kind_deny: cfg.kind_deny.iter().copied().collect(),
        }
    }

    /// The cheap checks, run before the signature is verified.
    pub fn check(&self, event: &Event, json_len: usize, now: u64) -> Result<(), Refusal> {
        if json_len > self.max_event_size {
            return Err(Refusal::invalid(format!(
                "event is too large ({json_len} > {} bytes)",
                self.max_event_size
            )));
        }
        if self.max_content_length > 0 {
            // NIP-11 counts content in characters, not bytes.
            let chars = event.content.chars().count();
            if chars > self.max_content_length {
                return Err(Refusal::invalid(format!(
                    "content is too long ({chars} > {} characters)",
                    self.max_content_length
                )));
            }
        }
        if event.tags.len() > self.max_tags {
            return Err(Refusal::invalid(format!(
                "too many tags ({} > {})",
                event.tags.len(),
                self.max_tags
            )));
        }
        if event.created_at > now.saturating_add(self.max_future) {
            return Err(Refusal::invalid("created_at is too far in the future"));
        }
        if self.max_past > 0 && event.created_at < now.saturating_sub(self.max_past) {
            return Err(Refusal::invalid("created_at is too far in the past"));
        }
        if self.pubkey_deny.contains(&event.pubkey)
            || (!self.pubkey_allow.is_empty() && !self.pubkey_allow.contains(&event.pubkey))
        {
            return Err(Refusal::blocked("this pubkey may not publish here"));
        }
        if self.kind_deny.contains(&event.kind)
            || (!self.kind_allow.is_empty() && !self.kind_allow.contains(&event.kind))
        {
            return Err(Refusal::blocked(format!(
                "kind {} is not accepted here",
                event.kind
            )));
        }
        if event.expiration().is_some_and(|exp| exp <= now) {
            return Err(Refusal::invalid("event has expired"));
        }
        Ok(())
    }
}

/// Kinds only their author and `p`-tagged recipients may read (NIP-42),
/// and kinds only mesh nodes may read.
pub struct ReadPolicy {
    restricted: HashSet<u16>,
    pub require_auth: bool,
    pub mesh: Arc<Mesh>,
}

impl ReadPolicy {
    pub fn new(cfg: &AuthConfig, mesh: Arc<Mesh>) -> ReadPolicy {
        ReadPolicy {
            restricted: cfg.restricted_kinds.iter().copied().collect(),
            require_auth: cfg.require_for_read,
            mesh,
        }
    }

    pub fn is_restricted(&self, kind: u16) -> bool {
        self.restricted.contains(&kind)
    }

    /// Is the client authenticated as a node of the mesh, with a proof
    /// bound to this node (see `AuthState::any_bound`)?
    pub fn is_mesh_node(&self, client: &Client) -> bool {
        client.auth.any_bound(|pk| self.mesh.is_member(pk))
    }

    /// Does a tree with `scope` give `client` exactly its view? Mesh trees
    /// only to mesh nodes; other trees leave restricted kinds out, which is
    /// the view of anyone who is not a party to them (mesh nodes are taken
    /// to be none).
    pub fn trees_fit(&self, client: &Client, scope: &Filter) -> bool {
        if crate::mesh::is_mesh_scope(scope) {
            return self.is_mesh_node(client);
        }
        self.restricted.is_empty() || !client.auth.is_authenticated() || self.is_mesh_node(client)
    }

    /// The kinds a tree with `scope` leaves out of which `client` may see
    /// some events: restricted kinds once it is authenticated (it may be a
    /// party to them), and mesh kinds for a mesh node when `scope` is not a
    /// mesh scope. A count from the tree adds these by walking them.
    pub fn kept_from_tree(&self, client: &Client, scope: &Filter) -> Vec<u16> {
        let mut kinds = Vec::new();
        if client.auth.is_authenticated() {
            kinds.extend(self.restricted.iter().copied());
        }
        if !crate::mesh::is_mesh_scope(scope) && self.is_mesh_node(client) {
            kinds.extend(crate::mesh::MESH_KINDS);
        }
        kinds.sort_unstable();
        kinds.dedup();
        kinds
    }

    /// The refusal for a filter that names a mesh kind, asked by a client
    /// that is not a mesh node.
    pub fn mesh_refusal(&self, client: &Client, filter: &Filter) -> Option<Refusal> {
        let names_mesh_kind = filter
            .kinds
            .as_ref()
            .is_some_and(|kinds| kinds.iter().any(|k| crate::mesh::is_mesh_kind(*k)));
        if !names_mesh_kind || self.is_mesh_node(client) {
            return None;
        }
        let detail = "graph and echo events are served only to mesh nodes";
        Some(if client.auth.is_authenticated() {
            Refusal::restricted(detail)
        } else {
            Refusal::auth_required(detail)
        })
    }

    /// A filter that names a restricted or mesh kind needs an
    /// authenticated client.
    pub fn needs_auth(&self, filter: &Filter) -> bool {
        filter.kinds.as_ref().is_some_and(|kinds| {
            kinds
                .iter()
                .any(|k| self.is_restricted(*k) || crate::mesh::is_mesh_kind(*k))
        })
    }

    /// May `client` see this stored event? Parses the JSON only for
    /// restricted kinds.
    pub fn can_see_stored(&self, client: &Client, header: &Header, json: &str) -> bool {
        if crate::mesh::is_mesh_kind(header.kind) {
            return self.is_mesh_node(client);
        }
        if !self.is_restricted(header.kind) {
            return true;
        }
        match Event::from_json(json) {
            Ok(event) => self.can_see(client, &event),
            Err(_) => false,
        }
    }

    pub fn can_see(&self, client: &Client, event: &Event) -> bool {
        if crate::mesh::is_mesh_kind(event.kind) {
            return self.is_mesh_node(client);
        }
        if !self.is_restricted(event.kind) {
            return true;
        }
        client.auth.any(|pk| {
            *pk == event.pubkey
                || event
                    .tag_values("p")
                    .any(|p| decode_hex::<32>(p).as_ref() == Some(pk))
        })
    }
}
