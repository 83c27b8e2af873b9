//! Who may act on an echo node: the user who pushed it first owns it (the
//! `owner` tag of its state events, so ownership replicates with them);
//! `auth.echo_grants` give other users read or write access; mesh nodes
//! (NIP-98 with a node key) act for any user. A state without an owner
//! (stored before owners existed) is open until someone pushes it.

use std::collections::HashMap;

use crate::auth::User;
use crate::config::{EchoAccess, EchoGrant};

/// The configured grants, by (node id, user).
#[derive(Debug, Default)]
pub struct Grants(HashMap<(String, String), EchoAccess>);

impl Grants {
    pub fn new(grants: &[EchoGrant]) -> Grants {
        Grants(
            grants
                .iter()
                .map(|g| ((g.node_id.clone(), g.user.clone()), g.access))
                .collect(),
        )
    }

    /// `user`'s access to `node_id`, owned by `owner` ("" when unowned or
    /// new); `None` means the node is not theirs to see.
    pub fn access(&self, user: &User, node_id: &str, owner: &str) -> Option<EchoAccess> {
        if user.mesh_node || owner.is_empty() || owner == user.id {
            return Some(EchoAccess::Write);
        }
        self.0.get(&(node_id.to_string(), user.id.clone())).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, mesh_node: bool) -> User {
        User {
            id: id.into(),
            mesh_node,
        }
    }

    #[test]
    fn owners_grants_and_nodes() {
        let grants = Grants::new(&[EchoGrant {
            node_id: "n1".into(),
            user: "bob".into(),
            access: EchoAccess::Read,
        }]);
        let (alice, bob, carol) = (
            user("alice", false),
            user("bob", false),
            user("carol", false),
        );
        assert_eq!(
            grants.access(&alice, "n1", "alice"),
            Some(EchoAccess::Write)
        );
        assert_eq!(grants.access(&bob, "n1", "alice"), Some(EchoAccess::Read));
        assert_eq!(grants.access(&bob, "n2", "alice"), None);
        assert_eq!(grants.access(&carol, "n1", "alice"), None);
        assert_eq!(grants.access(&carol, "n1", ""), Some(EchoAccess::Write));
        assert_eq!(
            grants.access(&user("ab12", true), "n1", "alice"),
            Some(EchoAccess::Write)
        );
    }
}
