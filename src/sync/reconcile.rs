//! The NIP-77 half of a sync run: our set for the filter (a tree when one
//! serves it exactly, else a sorted vector from a query) and the rounds
//! with the peer as initiator, every reconciler step on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::from_relay::FromRelay;
use super::peer::PeerSocket;
use super::types::{Local, Progress, SyncError, SyncOptions};
use crate::event::now;
use crate::filter::Filter;
use crate::negentropy::{Diff, Item, NegError, Negentropy, Storage, VectorStorage};
use crate::store::TreeWindow;

/// Our side of the reconciliation.
pub(super) enum OurSet {
    /// The tree serving exactly the filter: no copy, a fresh snapshot per
    /// round. Restricted kinds are in neither set: a peer does not show them
    /// to us, so offering them would resend them on every run.
    Tree(TreeWindow),
    /// A sorted set from a query, for filters no tree serves.
    Vector(VectorStorage),
}

/// Picks our set for the filter, on the blocking pool.
pub(super) async fn our_set(
    local: &Local,
    filter: &Filter,
    private: bool,
) -> Result<Arc<OurSet>, SyncError> {
    let store = local.store.clone();
    let filter = filter.clone();
    tokio::task::spawn_blocking(move || {
        let txn = store.read_txn()?;
        // A mesh tree is offered only to a proven mesh node.
        if private || !crate::mesh::is_mesh_scope(&filter) {
            if let Some(id) = store.tree_for(&txn, &filter)? {
                return Ok(Arc::new(OurSet::Tree(TreeWindow::new(id, &filter))));
            }
        }
        let mut items = Vec::new();
        store.query(&txn, &filter, u64::MAX, now(), &mut |found| {
            let kind = found.header.kind;
            if !store.is_tree_excluded(kind) && (private || !crate::mesh::is_mesh_kind(kind)) {
                items.push(Item::new(found.header.created_at, found.header.id));
            }
            Ok(true)
        })?;
        Ok(Arc::new(OurSet::Vector(VectorStorage::new(items))))
    })
    .await
    .map_err(|e| SyncError::Protocol(e.to_string()))?
}

/// Runs one reconciler step over our set on the blocking pool.
async fn neg_step<T: Send + 'static>(
    local: &Local,
    ours: &Arc<OurSet>,
    frame_size_limit: usize,
    step: impl for<'a> FnOnce(&mut Negentropy<'a, dyn Storage + 'a>) -> Result<T, NegError>
        + Send
        + 'static,
) -> Result<T, SyncError> {
    let (store, ours) = (local.store.clone(), ours.clone());
    tokio::task::spawn_blocking(move || {
        let run = |storage: &dyn Storage| step(&mut Negentropy::new(storage, frame_size_limit)?);
        match &*ours {
            OurSet::Vector(vector) => run(vector),
            OurSet::Tree(window) => store.with_tree(*window, run),
        }
    })
    .await
    .map_err(|e| SyncError::Protocol(e.to_string()))?
    .map_err(|e| SyncError::Protocol(e.to_string()))
}

/// Our frame limit against the peer at `url`: the configured one, but small
/// enough that a hex NEG-MSG fits the peer's NIP-11 `max_message_length`
/// (strfry takes at most 131 072 bytes and drops a connection that sends
/// more). A peer without a readable NIP-11 keeps the configured limit.
pub(super) async fn frame_limit_for(url: &str, configured: usize, timeout: Duration) -> usize {
    let Some(endpoint) = crate::http_client::Endpoint::of_relay(url) else {
        return configured;
    };
    let accept = [("Accept", "application/nostr+json")];
    let wait = timeout.min(Duration::from_secs(5));
    let document = async {
        let reply = crate::http_client::request(&endpoint, "GET", "", &accept, b"", wait)
            .await
            .ok()?;
        let body = reply.bytes(64 * 1024).await.ok()?;
        serde_json::from_slice::<Value>(&body).ok()
    };
    let Some(max) = document
        .await
        .and_then(|d| d["limitation"]["max_message_length"].as_u64())
    else {
        return configured;
    };
    // Hex doubles the message; the JSON around it and the sub id take the rest.
    let fits = (max as usize).saturating_sub(256) / 2;
    match configured {
        0 => fits.max(4096),
        limit => limit.min(fits).max(4096),
    }
}

/// The NIP-77 rounds with the peer, as initiator: the ids we have that
/// it lacks and the reverse.
pub(super) async fn reconcile(
    peer: &mut PeerSocket,
    local: &Local,
    ours: &Arc<OurSet>,
    opts: &SyncOptions,
    state: &mut Progress,
    progress: &mut impl FnMut(&Progress),
) -> Result<Diff, SyncError> {
    let sub = format!("sync-{}", hex::encode(rand::random::<[u8; 6]>()));
    let frame = opts.frame_size_limit;
    let first = neg_step(local, ours, frame, |neg| neg.initiate()).await?;
    peer.send(json!([
        "NEG-OPEN",
        sub,
        opts.filter.to_value(),
        hex::encode(first)
    ]))
    .await?;
    let mut diff = Diff::default();
    loop {
        let msg = match peer.recv().await {
            Err(SyncError::Timeout(t)) if state.round == 0 => {
                return Err(SyncError::NoNegentropy(format!(
                    "no answer to NEG-OPEN within {t:?}"
                )))
            }
            other => other?,
        };
        match msg {
            FromRelay::NegMsg { sub: of, message } if of == sub => {
                state.round += 1;
                let bytes = hex::decode(message)
                    .map_err(|_| SyncError::Protocol("NEG-MSG is not hex".into()))?;
                let (next, found) = neg_step(local, ours, frame, move |neg| {
                    neg.set_initiator();
                    let mut found = Diff::default();
                    let next = neg.reconcile_initiator(&bytes, &mut found)?;
                    Ok((next, found))
                })
                .await?;
                diff.have.extend(found.have);
                diff.need.extend(found.need);
                dedup(&mut diff);
                state.have_count = diff.have.len() as u64;
                state.need_count = diff.need.len() as u64;
                progress(state);
                match next {
                    Some(next) => {
                        peer.send(json!(["NEG-MSG", sub, hex::encode(next)]))
                            .await?
                    }
                    None => {
                        peer.send(json!(["NEG-CLOSE", sub])).await?;
                        return Ok(diff);
                    }
                }
            }
            // Only this session's: one connection carries a run's every
            // reconciliation, and a late NEG-ERR of an earlier one (an idle
            // close racing our NEG-CLOSE) must not end this one.
            FromRelay::NegErr { sub: of, why } if of == sub => return Err(SyncError::Refused(why)),
            FromRelay::Notice(reason) if state.round == 0 => {
                return Err(SyncError::NoNegentropy(reason));
            }
            _ => {}
        }
    }
}

fn dedup(diff: &mut Diff) {
    diff.have.sort_unstable();
    diff.have.dedup();
    diff.need.sort_unstable();
    diff.need.dedup();
}
