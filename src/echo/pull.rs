//! `POST /echo/pull`: the states that changed since the caller's
//! `last_sync` (or after its cursor), in change order, a page at a time.
//! A pull of one node reads that node's heads; a pull of every node pages
//! through the store's change index (`store/echo_changes.rs`) and stops
//! after the page or after [`SCAN_MAX`] nodes looked at, whichever comes
//! first, so its cost is the page and never the number of nodes the store
//! holds (a short page with `has_more` and a cursor means: go on).

use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::conflicts::Resolved;
use super::http::{elapsed_ms, error, new_sync_id, node_id, read_body, EchoError};
use super::states;
use super::{time, Echo, EchoCaller};
use crate::auth::User;
use crate::store::ChangePosition;

/// Pull page size: default and most.
const PULL_DEFAULT: usize = 100;
const PULL_MAX: usize = 1000;
/// Most nodes one pull of every node looks at (the caller may read few).
const SCAN_MAX: usize = 10 * PULL_MAX;

/// A pull request's fields (seed 000).
struct PullQuery {
    node_id: Option<String>,
    /// Changes after this (ms); 0: all.
    since: u64,
    batch: usize,
    types: Option<Vec<String>>,
    min_priority: u8,
    cursor: Option<PullCursor>,
}

/// Where a page resumes: after a node the caller was shown, or after a
/// position sealed for this caller (the scan stopped at a node it may not
/// read: `ms:#tag`, the tag a keyed hash of the user and the node).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PullCursor {
    After(ChangePosition),
    Sealed(u64, String),
}

impl PullCursor {
    fn parse(text: &str) -> Option<PullCursor> {
        let (ms, rest) = text.split_once(':')?;
        let ms = ms.parse::<u64>().ok()?;
        Some(match rest.strip_prefix('#') {
            Some(tag) => PullCursor::Sealed(ms, tag.to_string()),
            None => PullCursor::After((ms, rest.to_string())),
        })
    }

    fn render(&self) -> String {
        match self {
            PullCursor::After((ms, node)) => format!("{ms}:{node}"),
            PullCursor::Sealed(ms, tag) => format!("{ms}:#{tag}"),
        }
    }
}

/// The tag of a sealed cursor at `node` for `user` (valid while this
/// process runs; after a restart the page repeats that millisecond).
fn seal(echo: &Echo, user: &User, node: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(echo.cursor_key);
    hash.update(user.id.as_bytes());
    hash.update([0]);
    hash.update(node.as_bytes());
    hex::encode(&hash.finalize()[..8])
}

impl PullQuery {
    fn parse(body: &Map<String, Value>) -> Result<PullQuery, EchoError> {
        let bad = |m: &str| error(StatusCode::BAD_REQUEST, m);
        let node_id = node_id(body, false)?;
        let since = match body.get("last_sync") {
            None | Some(Value::Null) => 0,
            Some(Value::String(s)) if s.is_empty() => 0,
            Some(Value::String(s)) => {
                time::parse(s).ok_or_else(|| bad("last_sync must be an ISO 8601 timestamp"))?
            }
            Some(_) => return Err(bad("last_sync must be an ISO 8601 timestamp")),
        };
        let options = body.get("options").and_then(Value::as_object);
        let batch = match options.and_then(|o| o.get("batch_size")) {
            None | Some(Value::Null) => PULL_DEFAULT,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => (n as usize).min(PULL_MAX),
                _ => return Err(bad("batch_size must be a positive integer")),
            },
        };
        let filter = options.and_then(|o| o.get("filter"));
        let types = match filter.and_then(|f| f.get("types")) {
            None | Some(Value::Null) => None,
            Some(Value::Array(t)) => Some(
                t.iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| bad("filter.types must be strings"))?,
            ),
            Some(_) => return Err(bad("filter.types must be strings")),
        };
        let min_priority = match filter.and_then(|f| f.get("priority")) {
            None | Some(Value::Null) => 0,
            Some(p) => p
                .as_u64()
                .filter(|p| *p <= 10)
                .ok_or_else(|| bad("filter.priority must be an integer from 0 to 10"))?
                as u8,
        };
        let cursor = match body.get("cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(c)) => Some(
                PullCursor::parse(c).ok_or_else(|| bad("cursor is not one this node gave out"))?,
            ),
            Some(_) => return Err(bad("cursor is not one this node gave out")),
        };
        Ok(PullQuery {
            node_id,
            since,
            batch,
            types,
            min_priority,
            cursor,
        })
    }

    /// Does the caller see `r`, and do the filters keep it?
    fn keeps(&self, echo: &Echo, user: &User, r: &Resolved) -> bool {
        let s = &r.winner;
        echo.grants.access(user, &s.node_id, &s.owner).is_some()
            && s.priority >= self.min_priority
            && self
                .types
                .as_ref()
                .is_none_or(|t| s.tags.iter().any(|tag| t.contains(tag)))
    }

    /// Where the page starts in change order (a sealed cursor: at its
    /// millisecond; `resumed` finds the node in it).
    fn start(&self) -> Bound<ChangePosition> {
        match &self.cursor {
            Some(PullCursor::After(at)) => Bound::Excluded(at.clone()),
            Some(PullCursor::Sealed(ms, _)) => Bound::Included((*ms, String::new())),
            None => Bound::Included((self.since.saturating_add(1), String::new())),
        }
    }

    /// [`PullQuery::start`] with a sealed cursor resolved: after the node
    /// at its millisecond whose seal it carries (if none does, the whole
    /// millisecond again: a repeat, never a gap).
    fn resumed(
        &self,
        echo: &Echo,
        user: &User,
    ) -> Result<Bound<ChangePosition>, crate::store::StoreError> {
        let Some(PullCursor::Sealed(ms, tag)) = &self.cursor else {
            return Ok(self.start());
        };
        let txn = echo.store.read_txn()?;
        let from = (*ms, String::new());
        let same_ms = echo
            .store
            .echo_changes_from(&txn, Bound::Included(&from), SCAN_MAX)?;
        Ok(same_ms
            .into_iter()
            .take_while(|(at, _)| at == ms)
            .find(|(_, node)| seal(echo, user, node) == *tag)
            .map_or(Bound::Included(from), Bound::Excluded))
    }
}

/// One page: the changes in order with their positions, and where the next
/// page starts if there is one.
struct Page {
    changes: Vec<(ChangePosition, Resolved)>,
    next: Option<PullCursor>,
}

/// A node changes when any of its heads does (a conflicting state that
/// arrives later lists the node again).
fn changed_ms(r: &Resolved) -> u64 {
    r.losers
        .iter()
        .fold(r.winner.received_ms, |m, s| m.max(s.received_ms))
}

fn after_start(start: &Bound<ChangePosition>, at: &ChangePosition) -> bool {
    match start {
        Bound::Included(from) => at >= from,
        Bound::Excluded(from) => at > from,
        Bound::Unbounded => true,
    }
}

/// The page of a pull of one node: its state, if it changed after the start.
fn one_node_page(
    query: &PullQuery,
    found: Vec<Resolved>,
    keep: impl Fn(&Resolved) -> bool,
) -> Page {
    let start = query.start();
    let changes = found
        .into_iter()
        .map(|r| ((changed_ms(&r), r.winner.node_id.clone()), r))
        .filter(|(at, r)| keep(r) && after_start(&start, at))
        .take(query.batch)
        .collect();
    Page {
        changes,
        next: None,
    }
}

/// The page of a pull of every node, from the change index (blocking).
fn all_nodes_page(
    echo: &Echo,
    query: &PullQuery,
    user: &User,
) -> Result<Page, crate::store::StoreError> {
    let mut from = query.resumed(echo, user)?;
    let mut changes = Vec::new();
    let mut looked = 0;
    while looked < SCAN_MAX {
        let chunk = (query.batch + 1).min(SCAN_MAX - looked);
        // Read and let go before the heads are read: a snapshot held
        // while another is opened on this thread could wait on a map
        // resize for ever.
        let positions = {
            let txn = echo.store.read_txn()?;
            echo.store.echo_changes_from(&txn, from.as_ref(), chunk)?
        };
        let Some(last) = positions.last().cloned() else {
            return Ok(Page {
                changes,
                next: None,
            });
        };
        looked += positions.len();
        for at in positions {
            let Some(resolved) = super::heads(&echo.store, Some(&at.1))?.pop() else {
                continue;
            };
            if !query.keeps(echo, user, &resolved) {
                continue;
            }
            if changes.len() == query.batch {
                // One more than the page: there is more, from the last shown.
                let next = changes
                    .last()
                    .map(|(at, _): &(ChangePosition, _)| PullCursor::After(at.clone()));
                return Ok(Page { changes, next });
            }
            changes.push((at, resolved));
        }
        from = Bound::Excluded(last);
    }
    // Stopped by the scan bound, maybe at a node the caller may not see.
    let next = match from {
        Bound::Excluded((ms, node)) => Some(PullCursor::Sealed(ms, seal(echo, user, &node))),
        _ => None,
    };
    Ok(Page { changes, next })
}

pub async fn pull(
    State(echo): State<Arc<Echo>>,
    EchoCaller(user): EchoCaller,
    body: Body,
) -> Response {
    let started = Instant::now();
    let query = match read_body(body).await.and_then(|b| PullQuery::parse(&b)) {
        Ok(query) => query,
        Err(e) => return e.into_response(),
    };
    let sync_id = new_sync_id();
    let unreadable = || {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stored states cannot be read",
        )
        .into_response()
    };
    let (page, op) = match query.node_id.clone() {
        Some(id) => {
            let Ok(found) = echo.current(Some(&id)).await else {
                return unreadable();
            };
            let keep = |r: &Resolved| query.keeps(&echo, &user, r);
            // A pull of one node the caller may read is an operation of
            // that node (its status shows it).
            let op = found
                .iter()
                .any(|r| {
                    r.winner.node_id == id
                        && echo.grants.access(&user, &id, &r.winner.owner).is_some()
                })
                .then(|| echo.stats.begin(&id, "pull", &sync_id, started));
            (one_node_page(&query, found, keep), op)
        }
        None => {
            let paging = echo.clone();
            let page =
                tokio::task::spawn_blocking(move || all_nodes_page(&paging, &query, &user).ok())
                    .await;
            match page {
                Ok(Some(page)) => (page, None),
                _ => return unreadable(),
            }
        }
    };
    let duration = match op {
        Some(op) => echo.stats.finish(op, true),
        None => elapsed_ms(started),
    };
    Json(render(page, sync_id, duration)).into_response()
}

fn render(page: Page, sync_id: String, duration: u64) -> Value {
    let data_size: usize = page
        .changes
        .iter()
        .map(|(_, r)| states::canonical(&r.winner.data).len())
        .sum();
    let shown: Vec<Value> = page
        .changes
        .iter()
        .map(|(_, r)| {
            let mut change = r.winner.to_json();
            if !r.losers.is_empty() {
                change["conflicts"] = json!(r.conflicts());
            }
            change
        })
        .collect();
    let mut reply = json!({
        "status": "success",
        "changes": shown,
        "sync_id": sync_id,
        "timestamp": time::format(crate::event::now_ms()),
        "metrics": {"duration_ms": duration, "data_size": data_size, "change_count": page.changes.len()},
        "has_more": page.next.is_some(),
    });
    if let Some(next) = page.next {
        reply["cursor"] = json!(next.render());
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_as_written_and_hostile_ones_are_refused() {
        for cursor in [
            PullCursor::After((17, "node-a".into())),
            PullCursor::Sealed(18, "00ff".into()),
        ] {
            assert_eq!(PullCursor::parse(&cursor.render()), Some(cursor));
        }
        for hostile in ["", "x", "12", ":node", "-1:n", "99999999999999999999999:n"] {
            assert_eq!(PullCursor::parse(hostile), None, "{hostile}");
        }
    }
}
