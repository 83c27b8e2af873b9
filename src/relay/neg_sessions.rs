//! NIP-77 on the relay: NEG-OPEN / NEG-MSG / NEG-CLOSE sessions of one
//! connection. A session holds the sorted item set it reconciles against;
//! the v1 responder keeps no other state between messages, so each message
//! is answered from that set on the query pool.
//!
//! Sessions are capped per connection, closed with `closed:` when idle, and
//! never include events the client could not read (NIP-42 rules). The
//! relay-wide [`NegDirectory`] lists every connection's sessions for the
//! control API (ListSessions) and closes them on request (CloseSession).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::value::RawValue;

use super::client::{too_many_queries, Client};
use super::messages::{self, neg_err, neg_msg};
use super::Relay;
use crate::event::now;
use crate::filter::Filter;
use crate::negentropy::{Item, Negentropy, Storage, VectorStorage};
use crate::refusal::Refusal;
use crate::store::{Stop, TreeWindow};

/// What a session reconciles against.
#[derive(Clone)]
enum SessionSet {
    /// A sorted copy built from a query (no tree matches the filter, or the
    /// client may read restricted events, which trees leave out).
    Vector(Arc<VectorStorage>),
    /// A persistent tree, read in a fresh snapshot per message; since/until
    /// select a sub-range. No per-session copy.
    Tree(TreeWindow),
}

struct Session {
    generation: u64,
    /// `None` while the NEG-OPEN query is still running.
    storage: Option<SessionSet>,
    last_activity: Instant,
    /// Unix seconds of the NEG-OPEN.
    created_at: u64,
    /// Messages answered so far (the NEG-OPEN reply is round 1).
    rounds: u32,
    /// A NEG-MSG is being answered: NIP-77 is request / reply, so a second
    /// one before the reply is refused (nor can a client queue many).
    answering: bool,
}

/// One open session as the control API reports it (field names of the
/// seed's `ClientSession`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    pub subscription_id: String,
    pub connection_id: String,
    pub created_at: u64,
    pub last_activity: u64,
    pub round_count: u32,
}

/// A connection and its sessions, as the directory holds them.
type Connection = (Arc<Client>, Arc<NegSessions>);

/// Every connection's sessions, for listing and closing from outside.
#[derive(Default)]
pub struct NegDirectory {
    connections: Mutex<HashMap<u64, Connection>>,
}

impl NegDirectory {
    pub(super) fn register(&self, client: &Arc<Client>, sessions: &Arc<NegSessions>) {
        self.connections
            .lock()
            .insert(client.id, (client.clone(), sessions.clone()));
    }

    pub(super) fn unregister(&self, client_id: u64) {
        self.connections.lock().remove(&client_id);
    }

    /// All open sessions, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let now_unix = now();
        let mut out = Vec::new();
        for (client, sessions) in self.connections.lock().values() {
            for (sub_id, s) in sessions.sessions.lock().iter() {
                out.push(SessionInfo {
                    subscription_id: sub_id.clone(),
                    connection_id: client.id.to_string(),
                    created_at: s.created_at,
                    last_activity: now_unix.saturating_sub(s.last_activity.elapsed().as_secs()),
                    round_count: s.rounds,
                });
            }
        }
        out.sort_by(|a, b| {
            (a.created_at, &a.connection_id, &a.subscription_id).cmp(&(
                b.created_at,
                &b.connection_id,
                &b.subscription_id,
            ))
        });
        out
    }

    /// Closes the sessions named `sub_id` (on one connection, or on all when
    /// `connection_id` is `None`), telling each client with NEG-ERR
    /// `closed:`. Returns how many were closed.
    pub fn close(&self, sub_id: &str, connection_id: Option<&str>) -> usize {
        let mut closed = 0;
        for (client, sessions) in self.connections.lock().values() {
            if connection_id.is_some_and(|id| id != client.id.to_string()) {
                continue;
            }
            if sessions.close(sub_id) {
                let why = Refusal::closed("session closed by the relay operator");
                client.outbox.send(neg_err(sub_id, &why));
                closed += 1;
            }
        }
        closed
    }
}

/// The negentropy sessions of one connection.
#[derive(Default)]
pub struct NegSessions {
    sessions: Mutex<HashMap<String, Session>>,
    generations: AtomicU64,
}

/// Why a NEG-OPEN produced no session.
enum OpenError {
    TooMany(usize),
    Other(Refusal),
}

impl NegSessions {
    /// Removes a session; true if it existed.
    pub fn close(&self, sub_id: &str) -> bool {
        self.sessions.lock().remove(sub_id).is_some()
    }

    /// Closes sessions idle for longer than `idle`, telling the client.
    pub fn expire_idle(&self, client: &Client, idle: Duration) {
        let mut sessions = self.sessions.lock();
        let expired: Vec<String> = sessions
            .iter()
            .filter(|(_, s)| s.last_activity.elapsed() > idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            sessions.remove(&id);
            let why = Refusal::closed("session was idle for too long");
            client.outbox.send(neg_err(&id, &why));
        }
    }

    /// Marks a NEG-MSG of session `sub_id` answered; false if the session
    /// is no longer that one (closed or replaced meanwhile).
    fn answered(&self, sub_id: &str, generation: u64) -> bool {
        match self.sessions.lock().get_mut(sub_id) {
            Some(session) if session.generation == generation => {
                session.answering = false;
                true
            }
            _ => false,
        }
    }
}

/// NEG-OPEN's checks: its filters (an object or an array, identical ones
/// counted once), whether the client may read them, its hex message.
fn admit_open(
    relay: &Relay,
    client: &Client,
    filter: &RawValue,
    message: &str,
) -> Result<(Vec<Filter>, Vec<u8>), Refusal> {
    let parsed = super::messages::neg_open_filters(filter, relay.config.limits.max_filters)?;
    let mut filters: Vec<Filter> = Vec::with_capacity(parsed.len());
    for filter in parsed {
        if !filters.contains(&filter) {
            filters.push(filter);
        }
    }
    if let Some(reason) = super::queries::read_refusal(relay, client, &filters) {
        return Err(reason);
    }
    let initial =
        hex::decode(message).map_err(|_| Refusal::invalid("NEG-OPEN message is not valid hex"))?;
    Ok((filters, initial))
}

pub fn handle_open(
    relay: &Arc<Relay>,
    client: &Arc<Client>,
    sessions: &Arc<NegSessions>,
    sub_id: String,
    filter: &RawValue,
    message: String,
) {
    let cfg = &relay.config.negentropy;
    let (filters, initial) = match admit_open(relay, client, filter, &message) {
        Ok(admitted) => admitted,
        Err(reason) => {
            // NEG-ERR ends the session for the client; it ends here too.
            sessions.close(&sub_id);
            client.outbox.send(neg_err(&sub_id, &reason));
            return;
        }
    };
    let Some(permit) = client.query_permit() else {
        // NEG-ERR ends the session for the client; it ends here too.
        sessions.close(&sub_id);
        client.outbox.send(neg_err(&sub_id, &too_many_queries()));
        return;
    };
    let generation = sessions.generations.fetch_add(1, Relaxed);
    {
        let mut map = sessions.sessions.lock();
        if !map.contains_key(&sub_id) && map.len() >= cfg.max_sessions_per_connection {
            drop(map);
            let reason = Refusal::blocked(format!(
                "too many negentropy sessions (max {})",
                cfg.max_sessions_per_connection
            ));
            client.outbox.send(neg_err(&sub_id, &reason));
            return;
        }
        map.insert(
            sub_id.clone(),
            Session {
                generation,
                storage: None,
                last_activity: Instant::now(),
                created_at: now(),
                rounds: 0,
                answering: false,
            },
        );
    }
    let (relay, client, sessions) = (relay.clone(), client.clone(), sessions.clone());
    tokio::spawn(async move {
        let _permit = permit;
        let cap = relay.config.negentropy.max_sync_events;
        let frame_limit = relay.config.negentropy.frame_size_limit;
        let job_client = client.clone();
        let result = super::queries::on_query_pool(&relay, move |relay| {
            let set = choose_set(relay, &job_client, &filters, cap)?;
            let reply = respond(relay, &set, &initial, frame_limit).map_err(OpenError::Other)?;
            Ok::<_, OpenError>((set, reply))
        })
        .await
        .unwrap_or_else(|| Err(OpenError::Other(Refusal::shutting_down())));
        let mut map = sessions.sessions.lock();
        if map.get(&sub_id).is_none_or(|s| s.generation != generation) {
            return;
        }
        match result {
            Ok((storage, reply)) => {
                if let Some(session) = map.get_mut(&sub_id) {
                    session.storage = Some(storage);
                    session.last_activity = Instant::now();
                    session.rounds += 1;
                }
                client.outbox.send(neg_msg(&sub_id, &reply));
            }
            Err(error) => {
                map.remove(&sub_id);
                let message = match error {
                    OpenError::TooMany(cap) => messages::neg_err_over_cap(&sub_id, cap),
                    OpenError::Other(reason) => neg_err(&sub_id, &reason),
                };
                client.outbox.send(message);
            }
        }
    });
}

/// A tree when a single filter matches one and the client may read exactly
/// what trees hold (no restricted kinds visible to it); else a vector of the
/// union of the filters.
fn choose_set(
    relay: &Relay,
    client: &Client,
    filters: &[Filter],
    cap: usize,
) -> Result<SessionSet, OpenError> {
    let store_error = |e: crate::store::StoreError| OpenError::Other(Refusal::error(e.to_string()));
    let txn = relay.store.read_txn().map_err(store_error)?;
    if let [filter] = filters {
        if let Some(id) = relay.store.tree_for(&txn, filter).map_err(store_error)? {
            let scope = crate::store::scope_filter(filter);
            if relay.read_policy.trees_fit(client, &scope) {
                return Ok(SessionSet::Tree(TreeWindow::new(id, filter)));
            }
        }
    }
    // Unique ids across the filters, the cap counted on them as they come.
    let mut seen = (filters.len() > 1).then(std::collections::HashSet::new);
    let mut items = Vec::new();
    for filter in filters {
        collect_items(relay, &txn, client, filter, cap, &mut seen, &mut items)?;
    }
    let storage = VectorStorage::new(items);
    Ok(SessionSet::Vector(Arc::new(storage)))
}

/// Answers one negentropy message from a session's set.
fn respond(
    relay: &Relay,
    set: &SessionSet,
    query: &[u8],
    frame_limit: usize,
) -> Result<Vec<u8>, Refusal> {
    let invalid = |e: crate::negentropy::NegError| match e {
        crate::negentropy::NegError::Storage(s) => Refusal::error(s),
        other => Refusal::invalid(other.to_string()),
    };
    let answer = |storage: &dyn Storage| Negentropy::new(storage, frame_limit)?.reconcile(query);
    match set {
        SessionSet::Vector(storage) => answer(&**storage),
        SessionSet::Tree(window) => relay.store.with_tree(*window, answer),
    }
    .map_err(invalid)
}

/// Adds the filter's events the client may read to `items` (each id once
/// when `seen` is kept), refused as soon as `items` passes `cap`.
fn collect_items(
    relay: &Relay,
    txn: &heed::RoTxn,
    client: &Client,
    filter: &Filter,
    cap: usize,
    seen: &mut Option<std::collections::HashSet<[u8; 32]>>,
    items: &mut Vec<Item>,
) -> Result<(), OpenError> {
    let limit = filter.limit.unwrap_or(u64::MAX).min(cap as u64 + 1);
    let mut over = false;
    relay
        .store
        .query(txn, filter, limit, now(), &mut |found| {
            if !relay
                .read_policy
                .can_see_stored(client, &found.header, found.json)
            {
                return Ok(false);
            }
            if seen.as_mut().is_some_and(|s| !s.insert(found.header.id)) {
                return Ok(false);
            }
            if items.len() >= cap {
                over = true;
                return Err(Stop);
            }
            items.push(Item::new(found.header.created_at, found.header.id));
            Ok(true)
        })
        .map_err(|e| OpenError::Other(Refusal::error(e.to_string())))?;
    if over {
        return Err(OpenError::TooMany(cap));
    }
    Ok(())
}

pub fn handle_msg(
    relay: &Arc<Relay>,
    client: &Arc<Client>,
    sessions: &Arc<NegSessions>,
    sub_id: String,
    message: String,
) {
    let (storage, generation) = {
        let mut map = sessions.sessions.lock();
        match map.get_mut(&sub_id) {
            Some(Session {
                answering: true, ..
            }) => {
                map.remove(&sub_id);
                drop(map);
                let why = Refusal::invalid("NEG-MSG before the reply to the previous one");
                client.outbox.send(neg_err(&sub_id, &why));
                return;
            }
            Some(Session {
                storage: Some(storage),
                generation,
                last_activity,
                rounds,
                answering,
                ..
            }) => {
                *last_activity = Instant::now();
                *rounds += 1;
                *answering = true;
                (storage.clone(), *generation)
            }
            Some(_) => {
                drop(map);
                let why = Refusal::invalid("NEG-MSG before the NEG-OPEN reply");
                client.outbox.send(neg_err(&sub_id, &why));
                return;
            }
            None => {
                drop(map);
                let why = Refusal::closed("no open negentropy session with this id");
                client.outbox.send(neg_err(&sub_id, &why));
                return;
            }
        }
    };
    let Ok(query) = hex::decode(&message) else {
        sessions.close(&sub_id);
        let why = Refusal::invalid("NEG-MSG message is not valid hex");
        client.outbox.send(neg_err(&sub_id, &why));
        return;
    };
    let Some(permit) = client.query_permit() else {
        // NEG-ERR ends the session for the client; it ends here too.
        sessions.close(&sub_id);
        client.outbox.send(neg_err(&sub_id, &too_many_queries()));
        return;
    };
    let (relay, client, sessions) = (relay.clone(), client.clone(), sessions.clone());
    tokio::spawn(async move {
        let _permit = permit;
        let frame_limit = relay.config.negentropy.frame_size_limit;
        let result = super::queries::on_query_pool(&relay, move |relay| {
            respond(relay, &storage, &query, frame_limit)
        })
        .await;
        if !sessions.answered(&sub_id, generation) {
            return;
        }
        match result {
            Some(Ok(reply)) => {
                client.outbox.send(neg_msg(&sub_id, &reply));
            }
            Some(Err(reason)) => {
                sessions.close(&sub_id);
                client.outbox.send(neg_err(&sub_id, &reason));
            }
            None => {
                sessions.close(&sub_id);
                client
                    .outbox
                    .send(neg_err(&sub_id, &Refusal::shutting_down()));
            }
        }
    });
}
