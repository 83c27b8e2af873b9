//! NIP-01 filters: parsing from untrusted JSON and matching. One matcher serves
//! store queries, live subscriptions and (later) fingerprint-tree scopes, so
//! "what a filter means" is decided in exactly one place.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::event::{decode_hex, Event};

/// Why a filter was refused (an `invalid:` refusal, [`FilterError::refusal`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter: {0}")]
pub struct FilterError(pub String);

impl FilterError {
    pub fn refusal(&self) -> crate::refusal::Refusal {
        crate::refusal::Refusal::invalid(self.0.clone())
    }
}

/// A parsed NIP-01 filter. `None` means "no constraint"; an empty list
/// matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub ids: Option<Vec<[u8; 32]>>,
    pub authors: Option<Vec<[u8; 32]>>,
    pub kinds: Option<Vec<u16>>,
    /// Single-letter tag constraints (`#e`, `#p`, `#t` …), values sorted.
    pub tags: BTreeMap<u8, Vec<String>>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub limit: Option<u64>,
}

fn err(msg: impl Into<String>) -> FilterError {
    FilterError(msg.into())
}

fn hex_list(value: &Value, name: &str) -> Result<Vec<[u8; 32]>, FilterError> {
    let items = value
        .as_array()
        .ok_or_else(|| err(format!("{name} must be an array")))?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let text = item
            .as_str()
            .ok_or_else(|| err(format!("{name} must contain strings")))?;
        out.push(
            decode_hex::<32>(text)
                .ok_or_else(|| err(format!("{name} must contain 64-character lowercase hex")))?,
        );
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn timestamp(value: &Value, name: &str) -> Result<u64, FilterError> {
    value
        .as_u64()
        .ok_or_else(|| err(format!("{name} must be a non-negative integer")))
}

impl Filter {
    /// Parses one filter object.
    pub fn from_value(value: &Value) -> Result<Filter, FilterError> {
        let obj = value
            .as_object()
            .ok_or_else(|| err("a filter must be a JSON object"))?;
        Self::from_map(obj)
    }

    pub fn from_json(text: &str) -> Result<Filter, FilterError> {
        let value: Value =
            serde_json::from_str(text).map_err(|_| err("filter is not valid JSON"))?;
        Self::from_value(&value)
    }

    fn from_map(obj: &Map<String, Value>) -> Result<Filter, FilterError> {
        let mut filter = Filter::default();
        for (key, value) in obj {
            match key.as_str() {
                "ids" => filter.ids = Some(hex_list(value, "ids")?),
                "authors" => filter.authors = Some(hex_list(value, "authors")?),
                "kinds" => {
                    let items = value
                        .as_array()
                        .ok_or_else(|| err("kinds must be an array"))?;
                    let mut kinds = Vec::with_capacity(items.len());
                    for item in items {
                        let kind = item
                            .as_u64()
                            .filter(|k| *k <= u16::MAX as u64)
                            .ok_or_else(|| err("kinds must contain integers from 0 to 65535"))?;
                        kinds.push(kind as u16);
                    }
                    kinds.sort_unstable();
                    kinds.dedup();
                    filter.kinds = Some(kinds);
                }
                "since" => filter.since = Some(timestamp(value, "since")?),
                "until" => filter.until = Some(timestamp(value, "until")?),
                "limit" => filter.limit = Some(timestamp(value, "limit")?),
                "search" => return Err(err("search (NIP-50) is not supported")),
                tag if tag.starts_with('#') => {
                    let name = tag.as_bytes();
                    if name.len() != 2 || !name[1].is_ascii_alphabetic() {
                        return Err(err(format!("tag filter {tag} is not a single-letter tag")));
                    }
                    let items = value
                        .as_array()
                        .ok_or_else(|| err(format!("{tag} must be an array")))?;
                    let mut values = Vec::with_capacity(items.len());
                    for item in items {
                        let text = item
                            .as_str()
                            .ok_or_else(|| err(format!("{tag} must contain strings")))?;
                        values.push(text.to_string());
                    }
                    values.sort_unstable();
                    values.dedup();
                    filter.tags.insert(name[1], values);
                }
                // Unknown keys are ignored, as most relays do, so newer
                // clients keep working.
                _ => {}
            }
        }
        Ok(filter)
    }

    /// Serialises back to NIP-01 JSON (canonical: sorted lists, fixed key order).
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        if let Some(ids) = &self.ids {
            obj.insert("ids".into(), ids.iter().map(hex::encode).collect());
        }
        if let Some(authors) = &self.authors {
            obj.insert("authors".into(), authors.iter().map(hex::encode).collect());
        }
        if let Some(kinds) = &self.kinds {
            obj.insert("kinds".into(), kinds.iter().copied().collect());
        }
        for (name, values) in &self.tags {
            obj.insert(
                format!("#{}", *name as char),
                values.iter().cloned().collect(),
            );
        }
        if let Some(since) = self.since {
            obj.insert("since".into(), since.into());
        }
        if let Some(until) = self.until {
            obj.insert("until".into(), until.into());
        }
        if let Some(limit) = self.limit {
            obj.insert("limit".into(), limit.into());
        }
        Value::Object(obj)
    }

    /// True when some list constraint is empty: nothing can match.
    pub fn is_empty_match(&self) -> bool {
        self.ids.as_ref().is_some_and(Vec::is_empty)
            || self.authors.as_ref().is_some_and(Vec::is_empty)
            || self.kinds.as_ref().is_some_and(Vec::is_empty)
            || self.tags.values().any(Vec::is_empty)
            || matches!((self.since, self.until), (Some(s), Some(u)) if s > u)
    }

    /// Checks the fixed-size fields (everything but tags).
    pub fn matches_header(
        &self,
        id: &[u8; 32],
        pubkey: &[u8; 32],
        kind: u16,
        created_at: u64,
    ) -> bool {
        if let Some(ids) = &self.ids {
            if ids.binary_search(id).is_err() {
                return false;
            }
        }
        if let Some(authors) = &self.authors {
            if authors.binary_search(pubkey).is_err() {
                return false;
            }
        }
        if let Some(kinds) = &self.kinds {
            if kinds.binary_search(&kind).is_err() {
                return false;
            }
        }
        if self.since.is_some_and(|s| created_at < s) || self.until.is_some_and(|u| created_at > u)
        {
            return false;
        }
        true
    }

    /// Checks the tag constraints: every named tag needs one matching value.
    pub fn matches_tags(&self, tags: &[Vec<String>]) -> bool {
        self.tags.iter().all(|(name, values)| {
            tags.iter().any(|tag| {
                tag.len() >= 2
                    && tag[0].as_bytes() == [*name]
                    && values.binary_search(&tag[1]).is_ok()
            })
        })
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.matches_header(&event.id, &event.pubkey, event.kind, event.created_at)
            && self.matches_tags(&event.tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Keys;

    #[test]
    fn parse_and_match() {
        let keys = Keys::generate();
        let ev = keys.sign(100, 7, vec![vec!["t".into(), "rust".into()]], String::new());
        let f = Filter::from_json(&format!(
            r##"{{"authors":["{}"],"kinds":[7,1],"#t":["rust"],"since":50,"until":100}}"##,
            hex::encode(keys.public_key())
        ))
        .unwrap();
        assert!(f.matches(&ev));
        let f2 = Filter::from_json(r##"{"#t":["go"]}"##).unwrap();
        assert!(!f2.matches(&ev));
        assert_eq!(Filter::from_value(&f.to_value()).unwrap(), f);
    }

    #[test]
    fn rejects_bad_filters() {
        for text in [
            r#"[]"#,
            r#"{"ids":"x"}"#,
            r#"{"ids":["zz"]}"#,
            r#"{"kinds":[-1]}"#,
            r#"{"kinds":[70000]}"#,
            r#"{"since":-5}"#,
            r#"{"limit":1.5}"#,
            r##"{"#tt":["a"]}"##,
            r##"{"#t":[1]}"##,
            r#"{"search":"x"}"#,
        ] {
            assert!(Filter::from_json(text).is_err(), "{text}");
        }
    }
}
