//! Bearer tokens: random 32-byte hex strings given out once; only their
//! sha256 is kept (LMDB `tokens`, or `[[auth.tokens]]` in the config).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// sha256 of a token, as stored.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token (64 hex characters).
pub fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Who the config lets in: tokens by hash (user, expires_at), and the
/// pubkeys allowed to use NIP-98 (`auth.nip98_pubkeys`, plus mesh nodes).
#[derive(Debug, Default, Clone)]
pub struct TokenUsers {
    by_hash: HashMap<[u8; 32], (String, u64)>,
    nip98: std::collections::HashSet<[u8; 32]>,
    mesh: Option<std::sync::Arc<crate::mesh::Mesh>>,
    /// This node's key: a node's NIP-98 event that names it (`p` tag) was
    /// made for this node and no other.
    node: Option<[u8; 32]>,
    /// The host of `server.relay_url`: NIP-98 events must name it.
    public_host: Option<String>,
    /// Whose `X-Forwarded-Host` names the host a request was sent to.
    proxies: crate::edge::TrustedProxies,
    /// NIP-98 events already used; shared by every clone.
    pub(crate) replays: std::sync::Arc<super::Replays>,
}

impl TokenUsers {
    /// From the config's tokens; ones with a bad hash are skipped (config
    /// validation reports them). `mesh` is the mesh set and this node's key.
    pub fn new(
        config: &crate::config::Config,
        mesh: Option<(std::sync::Arc<crate::mesh::Mesh>, [u8; 32])>,
    ) -> TokenUsers {
        let (mesh, node) = mesh.map_or((None, None), |(mesh, node)| (Some(mesh), Some(node)));
        let auth = &config.auth;
        let by_hash = auth
            .tokens
            .iter()
            .filter_map(|t| {
                let hash = crate::event::decode_hex::<32>(&t.sha256)?;
                Some((hash, (t.user.clone(), t.expires_at)))
            })
            .collect();
        let nip98 = auth
            .nip98_pubkeys
            .iter()
            .filter_map(|k| crate::event::decode_hex::<32>(k))
            .collect();
        let public_host = url::Url::parse(config.server.relay_url.trim())
            .ok()
            .and_then(|url| {
                let host = url.host_str()?.to_string();
                Some(match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                })
            });
        TokenUsers {
            by_hash,
            nip98,
            mesh,
            node,
            public_host,
            proxies: crate::edge::TrustedProxies::parse(&config.server.trusted_proxies)
                .unwrap_or_default(),
            replays: Default::default(),
        }
    }

    /// The proxies whose `X-Forwarded-Host` is believed.
    pub fn proxies(&self) -> &crate::edge::TrustedProxies {
        &self.proxies
    }

    /// The host NIP-98 events must name, when the public URL is configured.
    pub fn public_host(&self) -> Option<&str> {
        self.public_host.as_deref()
    }

    /// May this key authenticate with NIP-98?
    pub fn nip98_allowed(&self, pubkey: &[u8; 32]) -> bool {
        self.nip98.contains(pubkey) || self.is_mesh_key(pubkey)
    }

    /// Is `pubkey` listed in `auth.nip98_pubkeys` (a user, not only a node)?
    pub fn nip98_user(&self, pubkey: &[u8; 32]) -> bool {
        self.nip98.contains(pubkey)
    }

    /// Was a NIP-98 event made for this node and no other? Its host was
    /// checked against `server.relay_url` when that is configured, or it
    /// names this node's key in a `p` tag. A host read from the request is
    /// the caller's own word: a header a node signed for another peer could
    /// be replayed here with that peer's Host.
    pub fn bound_to_node(&self, event: &crate::event::Event) -> bool {
        self.public_host.is_some()
            || self.node.is_some_and(|node| {
                let node = hex::encode(node);
                event.tag_values("p").any(|p| p.eq_ignore_ascii_case(&node))
            })
    }

    /// Is `pubkey` in the mesh set?
    pub fn is_mesh_key(&self, pubkey: &[u8; 32]) -> bool {
        self.mesh.as_ref().is_some_and(|m| m.is_member(pubkey))
    }

    pub fn user_of(&self, hash: &[u8; 32]) -> Option<(String, u64)> {
        self.by_hash.get(hash).cloned()
    }
}
