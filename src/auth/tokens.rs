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

/// Tokens from the config file, by hash: (user, expires_at).
#[derive(Debug, Default, Clone)]
pub struct TokenUsers {
    by_hash: HashMap<[u8; 32], (String, u64)>,
}

impl TokenUsers {
    /// From the config's tokens; ones with a bad hash are skipped (config
    /// validation reports them).
    pub fn new(tokens: &[crate::config::TokenConfig]) -> TokenUsers {
        let by_hash = tokens
            .iter()
            .filter_map(|t| {
                let hash = crate::event::decode_hex::<32>(&t.sha256)?;
                Some((hash, (t.user.clone(), t.expires_at)))
            })
            .collect();
        TokenUsers { by_hash }
    }

    pub fn user_of(&self, hash: &[u8; 32]) -> Option<(String, u64)> {
        self.by_hash.get(hash).cloned()
    }
}
