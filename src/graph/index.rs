//! The graph index as events: one addressable kind-34071 event per graph
//! (`d` = graph id), signed by the node that last changed it, its content
//! the graph's metadata. Every mesh node may write one for the same graph,
//! so a graph's metadata is the newest such event by `updated-at`, whoever
//! signed it; the events replicate like any other mesh event.

use serde::{Deserialize, Serialize};

use crate::event::{Event, Keys};
use crate::filter::Filter;
use crate::mesh::GRAPH_INDEX_KIND;
use crate::store::{Store, StoreError};

/// A member of a graph and their role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Member {
    pub user_id: String,
    /// manager | member
    pub role: String,
    #[serde(default)]
    pub invited_by: String,
    #[serde(default)]
    pub created_at: u64,
}

/// A graph's metadata (times in milliseconds, as the seed's clients expect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GraphMeta {
    pub graph_id: String,
    pub graph_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    pub owner: String,
    #[serde(default)]
    pub members: Vec<Member>,
    pub created_at: u64,
    pub updated_at: u64,
    /// A deleted graph keeps its index event (so the deletion replicates).
    #[serde(default)]
    pub deleted: bool,
    /// Raised by every reset; txs of older epochs are removed everywhere.
    #[serde(default)]
    pub epoch: u64,
    /// When the last reset happened (ms): older snapshots are not offered.
    #[serde(default)]
    pub reset_at: u64,
    /// The log head when the last reset happened: positions up to it count
    /// as filled (their txs went with the old epoch).
    #[serde(default)]
    pub reset_t: u64,
    /// The graph's home node of every term (SPEC §4, `store/graph_order.rs`);
    /// the last one sequences the log now. Read from the store, which holds
    /// the homes of the best index event it has seen.
    #[serde(default)]
    pub homes: Vec<crate::store::HomeTerm>,
}

/// What a user may do with a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Owner,
    Manager,
    Member,
    None,
}

impl GraphMeta {
    pub fn access(&self, user: &str) -> Access {
        if self.owner == user {
            return Access::Owner;
        }
        match self.members.iter().find(|m| m.user_id == user) {
            Some(m) if m.role == "manager" => Access::Manager,
            Some(_) => Access::Member,
            None => Access::None,
        }
    }

    /// The node that sequences the graph's log now (hex key).
    pub fn home(&self) -> Option<&str> {
        self.homes.last().map(|h| h.node.as_str())
    }

    /// Marks a change: `updated-at` moves at least a second on, so the new
    /// index event replaces the old one (same address, newer `created_at`).
    pub fn touch(&mut self) {
        self.updated_at = crate::event::now_ms().max(self.updated_at + 1000);
    }

    /// The signed index event for this metadata.
    pub fn to_event(&self, key: &Keys) -> Event {
        let content = serde_json::to_string(self).unwrap_or_default();
        key.sign(
            crate::event::now().max(self.updated_at / 1000),
            GRAPH_INDEX_KIND,
            vec![vec!["d".into(), self.graph_id.clone()]],
            content,
        )
    }
}

/// Every graph's newest metadata, or one graph's when `graph` is given.
pub fn read(store: &Store, graph: Option<&str>) -> Result<Vec<GraphMeta>, StoreError> {
    let mut filter = Filter {
        kinds: Some(vec![GRAPH_INDEX_KIND]),
        ..Filter::default()
    };
    if let Some(graph) = graph {
        filter.tags.insert(b'd', vec![graph.to_string()]);
    }
    let parse = |event: &Event| {
        serde_json::from_str::<GraphMeta>(&event.content)
            .ok()
            .filter(|meta| event.d_tag() == meta.graph_id)
    };
    // Deletion is final: a deleted index event wins over any other; then the
    // one that knows more home terms (a handover is not undone by a rename
    // written where it was not yet known).
    let mut out =
        store.newest_per_d(&filter, parse, |m| (m.deleted, m.homes.len(), m.updated_at))?;
    let txn = store.read_txn()?;
    for meta in &mut out {
        let homes = store.graph_homes(&txn, &meta.graph_id)?;
        if !homes.is_empty() {
            meta.homes = homes;
        }
    }
    out.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then(a.graph_id.cmp(&b.graph_id))
    });
    Ok(out)
}
