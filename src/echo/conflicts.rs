//! Concurrent states of one node id, the CouchDB way (SPEC §5). Every mesh
//! node signs the states it accepts, so the store holds at most one state of
//! a node id per accepting node. A state names the version it was pushed on
//! (`base`); it *supersedes* every earlier state whose version is not above
//! its base. The states no other state supersedes are the heads: one head is
//! the current state, several are a conflict. Every node picks the same
//! winner — highest version, then the later `received`, then the larger
//! event id — keeps the others and shows them (`conflicts` in pull and
//! status) until a push on top of the winner, whose base is the winner's
//! version and so supersedes them all, resolves it.

use serde_json::{json, Value};

use super::states::{compare_versions, NodeState};

/// A node id's current state and the heads that lost to it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub winner: NodeState,
    pub losers: Vec<NodeState>,
}

/// `newer` was pushed on `older` (or on something after it): its base is
/// not below `older`'s version, and it was accepted later (a push's
/// `received` is always past the state it was pushed on, so a forced push
/// of an older version still supersedes what it replaced).
fn supersedes(newer: &NodeState, older: &NodeState) -> bool {
    newer.id != older.id
        && !newer.base.is_empty()
        && newer.received_ms > older.received_ms
        && compare_versions(&newer.base, &older.version).is_ge()
}

/// Picks the winner among one node id's states (any order); `None` when
/// there are none. The node belongs to the user with the earliest claim:
/// the lowest owner epoch (`owned`) any state carries, so the claim holds
/// after the state that made it has been replaced by a later one. States
/// another user pushed elsewhere before that claim reached them are not
/// part of the node (they can neither win nor be shown).
pub fn resolve(states: Vec<NodeState>) -> Option<Resolved> {
    let owner = states
        .iter()
        .filter(|s| !s.owner.is_empty())
        .min_by(|a, b| (a.owned_ms, &a.id).cmp(&(b.owned_ms, &b.id)))
        .map(|s| (s.owner.clone(), s.owned_ms));
    let states: Vec<NodeState> = match &owner {
        Some((owner, _)) => states
            .into_iter()
            .filter(|s| s.owner.is_empty() || &s.owner == owner)
            .collect(),
        None => states,
    };
    let superseded: Vec<bool> = states
        .iter()
        .map(|s| states.iter().any(|t| supersedes(t, s)))
        .collect();
    // Forced pushes can supersede each other in a ring: then all compete.
    let any_head = superseded.iter().any(|s| !s);
    let mut heads: Vec<NodeState> = states
        .into_iter()
        .zip(superseded)
        .filter(|(_, gone)| !any_head || !gone)
        .map(|(s, _)| s)
        .collect();
    heads.sort_by(|a, b| {
        compare_versions(&b.version, &a.version)
            .then(b.received_ms.cmp(&a.received_ms))
            .then(b.id.cmp(&a.id))
    });
    let mut heads = heads.into_iter();
    let mut winner = heads.next()?;
    if let Some((owner, owned_ms)) = owner {
        winner.owner = owner;
        winner.owned_ms = owned_ms;
    }
    Some(Resolved {
        winner,
        losers: heads.collect(),
    })
}

impl Resolved {
    /// Seed 000's `conflicts`, one entry per losing state: its version and
    /// origin node next to the winner's, and the fields where they differ.
    pub fn conflicts(&self) -> Vec<Value> {
        self.losers
            .iter()
            .map(|loser| {
                json!({
                    "node_id": self.winner.node_id,
                    "version": loser.version,
                    "origin": loser.origin,
                    "winner_version": self.winner.version,
                    "winner_origin": self.winner.origin,
                    "fields": self.winner.conflicts_with(loser),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(version: &str, base: &str, origin: &str, received_ms: u64) -> NodeState {
        NodeState {
            node_id: "n".into(),
            timestamp: String::new(),
            data: Default::default(),
            version: version.into(),
            checksum: String::new(),
            resonance_level: 0.5,
            priority: 5,
            tags: vec![],
            received_ms,
            created_at: 1,
            owner: String::new(),
            owned_ms: received_ms,
            base: base.into(),
            origin: origin.into(),
            id: format!("{origin}{version}"),
            sync_id: String::new(),
        }
    }

    #[test]
    fn concurrent_states_conflict_until_a_push_on_the_winner() {
        let a = state("2", "1", "a", 10);
        let b = state("2", "1", "b", 20);
        let old = state("1", "", "c", 1);
        let resolved = resolve(vec![old.clone(), a.clone(), b.clone()]).unwrap();
        assert_eq!(resolved.winner.origin, "b", "same version: the later one");
        assert_eq!(resolved.losers.len(), 1);
        assert_eq!(resolved.losers[0].origin, "a");
        // Every order of arrival gives the same answer.
        let again = resolve(vec![b.clone(), old.clone(), a.clone()]).unwrap();
        assert_eq!(again.winner.id, resolved.winner.id);
        let fix = state("3", "2", "a", 30);
        let resolved = resolve(vec![old, a, b, fix]).unwrap();
        assert_eq!(
            (resolved.winner.version.as_str(), resolved.losers.len()),
            ("3", 0)
        );
        assert!(resolve(vec![]).is_none());
    }

    #[test]
    fn the_first_owner_keeps_the_node_whatever_version_others_push() {
        let mut alice = state("1", "", "a", 10);
        alice.owner = "alice".into();
        let mut mallory = state("999999", "", "b", 20);
        mallory.owner = "mallory".into();
        let resolved = resolve(vec![mallory, alice]).unwrap();
        assert_eq!(
            (
                resolved.winner.owner.as_str(),
                resolved.winner.version.as_str()
            ),
            ("alice", "1")
        );
        assert!(resolved.losers.is_empty(), "mallory's state is not shown");
    }

    #[test]
    fn the_owners_claim_outlives_the_state_that_made_it() {
        // alice claimed at 10 on node a; mallory pushed at 20 on partitioned
        // node b; alice's later push on a replaces her first state but
        // carries its epoch, so the claim at 10 still decides.
        let mut alice = state("2", "1", "a", 30);
        (alice.owner, alice.owned_ms) = ("alice".into(), 10);
        let mut mallory = state("1", "", "b", 20);
        mallory.owner = "mallory".into();
        let resolved = resolve(vec![mallory, alice]).unwrap();
        assert_eq!(
            (resolved.winner.owner.as_str(), resolved.winner.owned_ms),
            ("alice", 10)
        );
        assert!(resolved.losers.is_empty());
    }

    #[test]
    fn a_forced_older_version_supersedes_what_it_was_pushed_on() {
        let stored = state("5", "4", "a", 10);
        let forced = state("1", "5", "b", 20);
        let resolved = resolve(vec![stored, forced]).unwrap();
        assert_eq!(
            (resolved.winner.version.as_str(), resolved.losers.len()),
            ("1", 0)
        );
    }
}
