//! Echo node states as events: one addressable kind-34072 event per node
//! (`d` = node id), the state's `data` as canonical JSON content (keys
//! sorted, no spaces), and the metadata as tags: `version`, `checksum`
//! (sha256 of that canonical JSON), `resonance`, `priority`, `timestamp`
//! (the client's ISO 8601), `received` (when this node accepted it, ms),
//! `owner` (the user who pushed the node first, `echo/access.rs`), `owned`
//! (when that first push was accepted, ms: the owner's epoch, carried by
//! every later state so ownership never rests on which states survive), `base`
//! (the version it was pushed on, `echo/conflicts.rs`), `sync` (the push's
//! sync id, `echo/stream.rs`) and one `t` per tag. Signed by the node key, so states replicate in the mesh.
//!
//! Versions are dotted numbers (`3`, `1.2.10`) compared part by part, or
//! any other string compared as text; a push must carry a version greater
//! than the stored one, else it is a conflict (unless forced).

use std::cmp::Ordering;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::event::{Event, Keys};
use crate::mesh::ECHO_STATE_KIND;

/// A node state as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub node_id: String,
    /// ISO 8601, as the client sent it.
    pub timestamp: String,
    pub data: Map<String, Value>,
    pub version: String,
    pub checksum: String,
    pub resonance_level: f64,
    pub priority: u8,
    pub tags: Vec<String>,
    /// When a node accepted it (ms since the epoch); orders pulls.
    pub received_ms: u64,
    /// The event's `created_at`: a new state of the same node signed by the
    /// same key must have a later one to replace it.
    pub created_at: u64,
    /// The user who pushed the node first ("" on states from before owners).
    pub owner: String,
    /// When the owner's first state was accepted (ms): every later state
    /// carries it, so the earliest claim stays visible after the state
    /// that made it is replaced. States from before epochs read their
    /// `received` here.
    pub owned_ms: u64,
    /// The version this state was pushed on ("" for a node's first state,
    /// or a state from before bases): see `conflicts.rs`.
    pub base: String,
    /// The node that accepted it (the signer's key, hex).
    pub origin: String,
    /// Its event id (hex): the last tie-break between concurrent states.
    pub id: String,
    /// The push that made it (its `sync_id`, the `sync` tag), so every
    /// node's change stream and acknowledgements name the same change.
    pub sync_id: String,
}

/// The canonical JSON of `data`: what the checksum covers.
pub fn canonical(data: &Map<String, Value>) -> String {
    // serde_json's map keeps keys sorted; compact output has no spaces.
    Value::Object(data.clone()).to_string()
}

pub fn checksum(data: &Map<String, Value>) -> String {
    hex::encode(Sha256::digest(canonical(data).as_bytes()))
}

/// Orders versions: dotted numbers numerically, anything else as text, and
/// dotted numbers before text (so the order is total: `1a` vs `10` and `2`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let numeric = |v: &str| -> Option<Vec<u64>> { v.split('.').map(|p| p.parse().ok()).collect() };
    match (numeric(a), numeric(b)) {
        (Some(x), Some(y)) => {
            let len = x.len().max(y.len());
            let pad = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
            (0..len)
                .map(|i| pad(&x, i).cmp(&pad(&y, i)))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        }
        // A total order: every numeric version before every text one.
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

impl NodeState {
    /// The signed event for this state.
    pub fn to_event(&self, key: &Keys) -> Event {
        let mut tags = vec![
            vec!["d".into(), self.node_id.clone()],
            vec!["version".into(), self.version.clone()],
            vec!["checksum".into(), self.checksum.clone()],
            vec!["resonance".into(), self.resonance_level.to_string()],
            vec!["priority".into(), self.priority.to_string()],
            vec!["timestamp".into(), self.timestamp.clone()],
            vec!["received".into(), self.received_ms.to_string()],
            vec!["owner".into(), self.owner.clone()],
            vec!["owned".into(), self.owned_ms.to_string()],
            vec!["base".into(), self.base.clone()],
            vec!["sync".into(), self.sync_id.clone()],
        ];
        tags.extend(self.tags.iter().map(|t| vec!["t".into(), t.clone()]));
        key.sign(
            self.created_at,
            ECHO_STATE_KIND,
            tags,
            canonical(&self.data),
        )
    }

    /// Reads a stored state event; `None` if it is not a well-formed one.
    pub fn from_event(event: &Event) -> Option<NodeState> {
        if event.kind != ECHO_STATE_KIND {
            return None;
        }
        let tag = |name: &str| event.tag_values(name).next().map(str::to_string);
        let data = match serde_json::from_str::<Value>(&event.content).ok()? {
            Value::Object(map) => map,
            _ => return None,
        };
        let received_ms = tag("received")?.parse().ok()?;
        let owned_ms = match tag("owned") {
            Some(owned) => owned.parse().ok()?,
            None => received_ms,
        };
        Some(NodeState {
            node_id: event.d_tag().to_string(),
            timestamp: tag("timestamp").unwrap_or_default(),
            data,
            version: tag("version")?,
            checksum: tag("checksum")?,
            resonance_level: tag("resonance")?.parse().ok()?,
            priority: tag("priority").and_then(|p| p.parse().ok()).unwrap_or(5),
            tags: event.tag_values("t").map(str::to_string).collect(),
            received_ms,
            created_at: event.created_at,
            owner: tag("owner").unwrap_or_default(),
            owned_ms,
            base: tag("base").unwrap_or_default(),
            origin: hex::encode(event.pubkey),
            id: event.id_hex(),
            // States from before sync tags: the event id names the change.
            sync_id: tag("sync").unwrap_or_else(|| event.id_hex()),
        })
    }

    /// The seed's shape of a state (a pull change).
    pub fn to_json(&self) -> Value {
        json!({
            "node_id": self.node_id,
            "timestamp": self.timestamp,
            "data": self.data,
            "metadata": {
                "version": self.version,
                "checksum": self.checksum,
                "resonance_level": self.resonance_level,
                "priority": self.priority,
                "tags": self.tags,
            },
        })
    }

    /// The fields where `self` (pushed) and `stored` disagree, as conflicts.
    pub fn conflicts_with(&self, stored: &NodeState) -> Vec<Value> {
        let mut out = vec![json!({
            "field": "metadata.version",
            "local_value": self.version,
            "remote_value": stored.version,
        })];
        let keys: std::collections::BTreeSet<&String> =
            self.data.keys().chain(stored.data.keys()).collect();
        for key in keys {
            let (mine, theirs) = (self.data.get(key), stored.data.get(key));
            if mine != theirs {
                out.push(json!({
                    "field": format!("data.{key}"),
                    "local_value": mine,
                    "remote_value": theirs,
                }));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically_then_as_text() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("2", "2.0"), Ordering::Equal);
        assert_eq!(compare_versions("3", "10"), Ordering::Less);
        assert_eq!(compare_versions("b", "a"), Ordering::Greater);
        // Total: no cycle between numbers and text.
        assert_eq!(compare_versions("10", "1a"), Ordering::Less);
        assert_eq!(compare_versions("2", "1a"), Ordering::Less);
    }

    #[test]
    fn checksum_is_of_the_canonical_json() {
        let data: Map<String, Value> =
            serde_json::from_str(r#"{"b": 1, "a": [true, null]}"#).unwrap();
        assert_eq!(canonical(&data), r#"{"a":[true,null],"b":1}"#);
        assert_eq!(
            checksum(&data),
            hex::encode(Sha256::digest(br#"{"a":[true,null],"b":1}"#))
        );
        let keys = Keys::generate();
        let state = NodeState {
            node_id: "n1".into(),
            timestamp: "2026-11-22T00:00:00.000Z".into(),
            data,
            version: "1".into(),
            checksum: "x".into(),
            resonance_level: 0.5,
            priority: 7,
            tags: vec!["alpha".into()],
            received_ms: 1_000,
            created_at: 1,
            owner: "alice".into(),
            owned_ms: 900,
            base: "0".into(),
            origin: hex::encode(keys.public_key()),
            id: String::new(),
            sync_id: "push-1".into(),
        };
        let event = state.to_event(&keys);
        let read = NodeState::from_event(&event).unwrap();
        assert_eq!(read.id, event.id_hex());
        assert_eq!(
            NodeState {
                id: String::new(),
                ..read
            },
            state
        );
    }
}
