//! One sync run with a peer relay: NIP-77 as initiator over a WebSocket, then
//! the transfer — *need* ids fetched with pipelined `REQ {"ids": [...]}`
//! batches (several in flight), every event checked against the ids asked
//! for, verified on the verify pool and stored through the writer; *have*
//! ids read from LMDB and sent as EVENTs with a bounded window, every OK
//! read. Every wait has a timeout, so a peer that goes silent or does not
//! speak NIP-77 ends the run with an error instead of a hang.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde_json::json;

use super::from_relay::FromRelay;
use super::ingest::{ingest_group, Done, Ingested, GROUP};
use super::peer::PeerSocket;
use super::reconcile::reconcile;
use super::types::{Direction, Local, Progress, SyncError, SyncOptions, SyncReport};
use crate::event::Event;
use crate::refusal::{Prefix, Refusal};

/// Fetched ids refused locally, with the reason, to remember after the run.
type RefusedList = Vec<([u8; 32], Refusal)>;

/// The refusal of a mesh event fetched from a peer that did not prove it
/// is a mesh node.
fn unproven_peer() -> Refusal {
    Refusal::restricted(
        "graph and echo events are taken only from a peer that proved it is a mesh node",
    )
}

/// Most locally refused ids a report lists (the count has them all).
pub const MAX_LISTED_REFUSALS: usize = 1000;

/// Runs one sync with the relay at `url` (ws:// or wss://).
pub async fn sync_with_peer(
    url: &str,
    local: &Local,
    opts: &SyncOptions,
    progress: impl FnMut(&Progress),
) -> Result<SyncReport, SyncError> {
    let mut session = SyncSession::open(url, local, opts).await?;
    let report = session.run(local, opts, progress).await;
    session.close().await;
    report
}

/// One connection to a peer, over which a sync run reconciles any number
/// of filters one after another (the `{}` tree, then every mesh tree): one
/// handshake, one node-key proof and one NIP-11 read per run, however many
/// graphs the mesh holds.
pub struct SyncSession {
    peer: PeerSocket,
    url: String,
    /// Our NEG frame limit against this peer (its NIP-11 read once).
    frame_size_limit: usize,
}

impl SyncSession {
    pub async fn open(
        url: &str,
        local: &Local,
        opts: &SyncOptions,
    ) -> Result<SyncSession, SyncError> {
        let peer = PeerSocket::connect(
            url,
            opts.timeout,
            local.node_key.clone(),
            opts.peer_key,
            local.deflate,
        )
        .await?;
        let frame_size_limit =
            super::reconcile::frame_limit_for(url, opts.frame_size_limit, opts.timeout).await;
        Ok(SyncSession {
            peer,
            url: url.to_string(),
            frame_size_limit,
        })
    }

    /// Reconciles `opts.filter` and transfers the difference.
    pub async fn run(
        &mut self,
        local: &Local,
        opts: &SyncOptions,
        mut progress: impl FnMut(&Progress),
    ) -> Result<SyncReport, SyncError> {
        let peer = &mut self.peer;
        let mut state = Progress {
            peer_url: self.url.clone(),
            ..Progress::default()
        };
        let private = peer.is_proven_node();
        let opts = &SyncOptions {
            frame_size_limit: self.frame_size_limit,
            ..opts.clone()
        };
        let ours = super::reconcile::our_set(local, &opts.filter, private).await?;
        let mut diff = match reconcile(peer, local, &ours, opts, &mut state, &mut progress).await {
            // The peer wants to know who we are first: answer with the node
            // key (the challenge came with the connection) and ask again.
            Err(SyncError::Refused(reason))
                if reason.is(Prefix::AuthRequired) && peer.await_auth().await? =>
            {
                reconcile(peer, local, &ours, opts, &mut state, &mut progress).await?
            }
            other => other?,
        };
        let store = local.store.clone();
        let mut need = std::mem::take(&mut diff.need);
        let (need, skipped) = tokio::task::spawn_blocking(move || {
            store.drop_known_refused(&mut need).map(|n| (need, n))
        })
        .await
        .map_err(|e| SyncError::Protocol(e.to_string()))??;
        diff.need = need;
        let mut report = SyncReport {
            rounds: state.round,
            have: diff.have.len() as u64,
            need: diff.need.len() as u64,
            skipped_refused: skipped as u64,
            mesh: private,
            unproven: match &peer.proof {
                super::peer::PeerProof::Failed(reason) => Some(reason.clone()),
                _ => None,
            },
            ..SyncReport::default()
        };
        if opts.direction != Direction::Up && !diff.need.is_empty() {
            let need = &diff.need;
            fetch(
                peer,
                local,
                need,
                opts,
                &mut report,
                &mut state,
                &mut progress,
            )
            .await?;
        }
        if opts.direction != Direction::Down && !diff.have.is_empty() {
            let have = &diff.have;
            upload(
                peer,
                local,
                have,
                opts,
                &mut report,
                &mut state,
                &mut progress,
            )
            .await?;
        }
        state.complete = true;
        progress(&state);
        Ok(report)
    }

    pub async fn close(self) {
        self.peer.close().await;
    }
}

/// Fetches `need` and stores what arrives. A graph tx that came before its
/// graph's index event is asked for once more at the end, when the index
/// has been stored.
async fn fetch(
    peer: &mut PeerSocket,
    local: &Local,
    need: &[[u8; 32]],
    opts: &SyncOptions,
    report: &mut SyncReport,
    state: &mut Progress,
    progress: &mut impl FnMut(&Progress),
) -> Result<(), SyncError> {
    let deferred = fetch_round(peer, local, need, opts, report, state, progress, true).await?;
    if deferred.is_empty() {
        return Ok(());
    }
    fetch_round(peer, local, &deferred, opts, report, state, progress, false)
        .await
        .map(drop)
}

/// One pass of pipelined REQ batches; returns the ids deferred (refused
/// only because their graph's index had not arrived) when `defer`.
#[allow(clippy::too_many_arguments)]
async fn fetch_round(
    peer: &mut PeerSocket,
    local: &Local,
    need: &[[u8; 32]],
    opts: &SyncOptions,
    report: &mut SyncReport,
    state: &mut Progress,
    progress: &mut impl FnMut(&Progress),
    defer: bool,
) -> Result<Vec<[u8; 32]>, SyncError> {
    let private = peer.is_proven_node();
    let mut batches: VecDeque<&[[u8; 32]]> = need.chunks(opts.fetch_batch.max(1)).collect();
    let mut in_flight: HashMap<String, HashSet<[u8; 32]>> = HashMap::new();
    let stored = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let remembered: Arc<parking_lot::Mutex<RefusedList>> = Default::default();
    let listed: Arc<parking_lot::Mutex<Vec<(String, String)>>> = Default::default();
    let deferred: Arc<parking_lot::Mutex<Vec<[u8; 32]>>> = Default::default();
    let done: Done = {
        let (stored, refused) = (stored.clone(), refused.clone());
        let (remembered, listed) = (remembered.clone(), listed.clone());
        let later = deferred.clone();
        Arc::new(move |id, outcome| match outcome {
            Ingested::Stored => {
                stored.fetch_add(1, Relaxed);
            }
            Ingested::Refused { reason, .. }
                if defer && reason == crate::store::index_unknown() =>
            {
                later.lock().push(id);
            }
            Ingested::Refused { reason, remember } => {
                refused.fetch_add(1, Relaxed);
                let mut listed = listed.lock();
                if listed.len() < MAX_LISTED_REFUSALS {
                    listed.push((hex::encode(id), reason.to_string()));
                }
                if remember {
                    remembered.lock().push((id, reason));
                }
            }
        })
    };
    let mut group: Vec<(Event, usize)> = Vec::with_capacity(GROUP);
    let mut pending_writes = Vec::new();
    let mut next_sub = 0u64;
    // Events received before a failure are stored all the same: the loop's
    // error is returned only after the last group went to the writer.
    let received: Result<(), SyncError> = async {
        loop {
            while in_flight.len() < opts.fetch_in_flight.max(1) {
                let Some(batch) = batches.pop_front() else {
                    break;
                };
                next_sub += 1;
                let sub = format!("fetch-{next_sub}");
                let ids: Vec<String> = batch.iter().map(hex::encode).collect();
                peer.send(json!(["REQ", sub, {"ids": ids}])).await?;
                in_flight.insert(sub, batch.iter().copied().collect());
            }
            if in_flight.is_empty() {
                break;
            }
            match peer.recv().await? {
                FromRelay::Event { sub, event } => {
                    let Some(asked) = in_flight.get_mut(&sub) else {
                        continue;
                    };
                    let text = event.to_string();
                    match Event::from_json(&text) {
                        // Mesh events come only from a peer that proved it
                        // is a mesh node, whoever signed them.
                        Ok(event)
                            if !private
                                && crate::mesh::is_mesh_kind(event.kind)
                                && asked.remove(&event.id) =>
                        {
                            // A stranger's is refused for good; a mesh
                            // node's may come from a proven peer later.
                            let forged = !local.store.is_trusted_author(event.kind, &event.pubkey);
                            let reason = if forged {
                                crate::mesh::author_refusal()
                            } else {
                                unproven_peer()
                            };
                            let refusal = Ingested::Refused {
                                reason,
                                remember: forged,
                            };
                            done(event.id, refusal);
                        }
                        Ok(event) if asked.remove(&event.id) => {
                            group.push((event, text.len()));
                            if group.len() >= GROUP {
                                let full = std::mem::replace(&mut group, Vec::with_capacity(GROUP));
                                pending_writes.push(ingest_group(local, full, done.clone()).await);
                            }
                        }
                        _ => {
                            refused.fetch_add(1, Relaxed);
                        }
                    }
                }
                end @ (FromRelay::Eose { .. } | FromRelay::Closed { .. }) => {
                    let (sub, eose) = match end {
                        FromRelay::Eose { sub } => (sub, true),
                        FromRelay::Closed { sub, .. } => (sub, false),
                        _ => continue,
                    };
                    if in_flight.remove(&sub).is_some() && eose {
                        peer.send(json!(["CLOSE", sub])).await?;
                    }
                    if !group.is_empty() {
                        let part = std::mem::take(&mut group);
                        pending_writes.push(ingest_group(local, part, done.clone()).await);
                    }
                    state.fetched_count = report.fetched + stored.load(Relaxed);
                    progress(state);
                }
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    if !group.is_empty() {
        pending_writes.push(ingest_group(local, group, done.clone()).await);
    }
    for written in pending_writes {
        let _ = written.await;
    }
    let refused_ids = std::mem::take(&mut *remembered.lock());
    if !refused_ids.is_empty() {
        let op = crate::store::Bookkeeping::RememberRefused(refused_ids);
        match local.writer.record(op).await {
            crate::store::WriteOutcome::Recorded => {}
            other => {
                return Err(SyncError::Protocol(format!(
                    "cannot remember refusals: {other:?}"
                )))
            }
        }
    }
    report.fetched += stored.load(Relaxed);
    report.fetch_refused += refused.load(Relaxed);
    let room = MAX_LISTED_REFUSALS.saturating_sub(report.fetch_refusals.len());
    let listed = std::mem::take(&mut *listed.lock());
    report.fetch_refusals.extend(listed.into_iter().take(room));
    state.fetched_count = report.fetched;
    progress(state);
    received.map(|()| std::mem::take(&mut *deferred.lock()))
}

/// Sends `have` as EVENTs with a bounded window, reading every OK.
async fn upload(
    peer: &mut PeerSocket,
    local: &Local,
    have: &[[u8; 32]],
    opts: &SyncOptions,
    report: &mut SyncReport,
    state: &mut Progress,
    progress: &mut impl FnMut(&Progress),
) -> Result<(), SyncError> {
    let mut queue: VecDeque<[u8; 32]> = have.iter().copied().collect();
    let mut waiting: HashSet<String> = HashSet::new();
    let mut requeued: HashSet<String> = HashSet::new();
    loop {
        let room = opts.upload_window.max(1).saturating_sub(waiting.len());
        let ids: Vec<[u8; 32]> = (0..room).map_while(|_| queue.pop_front()).collect();
        if !ids.is_empty() {
            let store = local.store.clone();
            let jsons = tokio::task::spawn_blocking(move || {
                let txn = store.read_txn()?;
                ids.iter()
                    .map(|id| Ok((*id, store.get_json(&txn, id)?)))
                    .collect::<Result<Vec<_>, crate::store::StoreError>>()
            })
            .await
            .map_err(|e| SyncError::Protocol(e.to_string()))??;
            for (id, json) in jsons {
                // Gone since reconciliation (deleted, expired): nothing to send.
                let Some(json) = json else { continue };
                peer.feed(format!("[\"EVENT\",{json}]")).await?;
                waiting.insert(hex::encode(id));
            }
            peer.flush().await?;
        }
        if waiting.is_empty() {
            break;
        }
        let FromRelay::Ok { id, accepted, note } = peer.recv().await? else {
            continue;
        };
        if !waiting.remove(&id) {
            continue;
        }
        let reason = Refusal::from_wire(&note);
        if accepted || reason.is(Prefix::Duplicate) {
            report.sent += 1;
        } else if reason == crate::store::index_unknown() && requeued.insert(id.clone()) {
            // A graph tx ahead of its index event: once more, at the end.
            if let Some(raw) = crate::event::decode_hex::<32>(&id) {
                queue.push_back(raw);
            }
        } else {
            report.refused.push((id, note));
        }
        state.sent_count = report.sent;
        if report.sent.is_multiple_of(100) {
            progress(state);
        }
    }
    state.sent_count = report.sent;
    progress(state);
    Ok(())
}
