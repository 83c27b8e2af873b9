//! One WebSocket connection: a reader loop that parses and dispatches client
//! messages, and a writer task that drains the connection's [`Outbox`]. No
//! handler waits for a write or a query to finish before reading the next
//! message: EVENTs go to the verify pool, queries to the blocking pool, and
//! their answers come back through the outbox.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;

use super::auth::AuthState;
use super::client::Client;
use super::limits::ConnectionSlot;
use super::messages::{self, ClientMessage};
use super::neg_sessions::{self, NegSessions};
use super::outbox::{Frame, Outbox};
use super::subscriptions::Subscription;
use super::Relay;
use crate::event::{now, Event, KindClass};
use crate::filter::{Filter, FilterError};
use crate::store::{Stop, WriteOutcome};
use crate::writer::Committed;

/// Close codes (RFC 6455).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_INVALID_UTF8: u16 = 1007;
const CLOSE_TOO_BIG: u16 = 1009;

/// Per-connection state only the reader loop touches.
struct Local {
    subs: HashSet<String>,
    neg: Arc<NegSessions>,
}

pub async fn run(relay: Arc<Relay>, socket: WebSocket, ip: IpAddr, slot: ConnectionSlot) {
    let (outbox, rx) = Outbox::new(relay.config.limits.max_pending_outbound_bytes);
    let client = Arc::new(Client {
        id: relay.next_client_id.fetch_add(1, Relaxed),
        ip,
        outbox,
        auth: AuthState::new(),
    });
    relay.metrics.connections_open.fetch_add(1, Relaxed);
    relay.metrics.connections_total.fetch_add(1, Relaxed);
    let (sink, mut stream) = socket.split();
    let mut writer = tokio::spawn(write_loop(client.clone(), sink, rx));
    client
        .outbox
        .send(messages::auth_challenge(client.auth.challenge()));

    let mut local = Local {
        subs: HashSet::new(),
        neg: Arc::new(NegSessions::default()),
    };
    relay.neg_directory.register(&client, &local.neg);
    let idle = Duration::from_secs(relay.config.negentropy.idle_timeout_secs.max(1));
    let mut idle_check = tokio::time::interval(idle.min(Duration::from_secs(30)));
    let mut shutdown = relay.shutdown.clone();
    let mut slow = false;
    loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Text(text))) => handle_text(&relay, &client, &mut local, text.as_str()).await,
                Some(Ok(Message::Binary(_))) => {
                    client.outbox.send(messages::notice_msg("invalid: binary messages are not supported"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if let Some(code) = close_code_for(e) {
                        let reason = if code == CLOSE_TOO_BIG { "message too big" } else { "invalid UTF-8" };
                        client.outbox.close(code, reason);
                    }
                    break;
                }
            },
            _ = idle_check.tick() => local.neg.expire_idle(&client, idle),
            _ = client.outbox.overflowed() => {
                slow = true;
                break;
            }
            _ = shutdown.changed() => {
                client.outbox.close(CLOSE_GOING_AWAY, "relay is shutting down");
                break;
            }
        }
    }

    relay.registry.remove_client(client.id);
    relay.neg_directory.unregister(client.id);
    if slow {
        relay.metrics.connections_dropped_slow.fetch_add(1, Relaxed);
        tracing::info!(client = client.id, %ip, "dropped a slow reader over its outbound limit");
        writer.abort();
    } else {
        client.outbox.close(1000, "");
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
    relay.metrics.connections_open.fetch_sub(1, Relaxed);
    drop(slot);
}

/// Maps a socket read error to the close code it deserves, if any.
fn close_code_for(err: axum::Error) -> Option<u16> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = err.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => Some(CLOSE_TOO_BIG),
        Some(WsError::Utf8(_)) => Some(CLOSE_INVALID_UTF8),
        _ => None,
    }
}

/// Frames written before one flush: under load many OKs and EVENTs share a
/// syscall instead of paying one each.
const FRAMES_PER_FLUSH: usize = 64;

async fn write_loop(
    client: Arc<Client>,
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Frame>,
) {
    while let Some(mut frame) = rx.recv().await {
        let mut queued = 0;
        loop {
            match frame {
                Frame::Text(text) => {
                    let len = text.len();
                    if sink.feed(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                    client.outbox.sent(len);
                }
                Frame::Close(code, reason) => {
                    let close = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    let _ = sink.close().await;
                    return;
                }
            }
            queued += 1;
            match rx.try_recv() {
                Ok(next) if queued < FRAMES_PER_FLUSH => frame = next,
                Ok(next) => {
                    if sink.flush().await.is_err() {
                        return;
                    }
                    queued = 0;
                    frame = next;
                }
                Err(_) => break,
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

async fn handle_text(relay: &Arc<Relay>, client: &Arc<Client>, local: &mut Local, text: &str) {
    let max = relay.config.limits.max_message_size;
    if text.len() > max {
        client.outbox.send(messages::notice_msg(&format!(
            "invalid: message too large ({} > {max} bytes)",
            text.len()
        )));
        return;
    }
    match messages::parse_client_message(text, &relay.parse_limits) {
        Err(e) => {
            let reply = match &e.sub_id {
                Some(id) if e.negentropy => neg_sessions::neg_err(id, &e.reason),
                Some(id) => messages::closed(id, &e.reason),
                None => messages::notice_msg(&e.reason),
            };
            client.outbox.send(reply);
        }
        Ok(ClientMessage::Event(raw)) => handle_event(relay, client, raw).await,
        Ok(ClientMessage::Req { sub_id, filters }) => {
            handle_req(relay, client, local, sub_id, filters)
        }
        Ok(ClientMessage::Count { sub_id, filters }) => {
            handle_count(relay, client, sub_id, filters)
        }
        Ok(ClientMessage::Close(sub_id)) => {
            if local.subs.remove(&sub_id) {
                relay.registry.remove(client.id, &sub_id);
            }
        }
        Ok(ClientMessage::Auth(raw)) => handle_auth(relay, client, raw).await,
        Ok(ClientMessage::NegOpen { sub_id, .. })
        | Ok(ClientMessage::NegMsg { sub_id, .. })
        | Ok(ClientMessage::NegClose { sub_id })
            if !relay.config.negentropy.enabled =>
        {
            let reason = "blocked: NIP-77 negentropy is not enabled on this relay";
            client.outbox.send(neg_sessions::neg_err(&sub_id, reason));
        }
        Ok(ClientMessage::NegOpen {
            sub_id,
            filter,
            message,
        }) => neg_sessions::handle_open(relay, client, &local.neg, sub_id, filter, message),
        Ok(ClientMessage::NegMsg { sub_id, message }) => {
            neg_sessions::handle_msg(relay, client, &local.neg, sub_id, message)
        }
        Ok(ClientMessage::NegClose { sub_id }) => {
            local.neg.close(&sub_id);
        }
    }
}

/// Sends an OK false, or a NOTICE when the event id is unknown.
fn refuse_event(relay: &Relay, client: &Client, id: Option<&str>, reason: &str) {
    relay.metrics.reject(reason);
    let reply = match id {
        Some(id) => messages::ok(id, false, reason),
        None => messages::notice_msg(reason),
    };
    client.outbox.send(reply);
}

async fn handle_event(relay: &Arc<Relay>, client: &Arc<Client>, raw: &RawValue) {
    if !relay.event_rate.check(client.ip) {
        let id = messages::salvage_event_id(raw);
        refuse_event(
            relay,
            client,
            id.as_deref(),
            "rate-limited: slow down, too many events",
        );
        return;
    }
    let event = match Event::from_raw(raw) {
        Ok(event) => event,
        Err(e) => {
            let id = messages::salvage_event_id(raw);
            refuse_event(relay, client, id.as_deref(), &e.to_string());
            return;
        }
    };
    let id_hex = event.id_hex();
    if event.kind == super::auth::AUTH_KIND {
        // NIP-42: auth events are never published or relayed.
        refuse_event(
            relay,
            client,
            Some(&id_hex),
            "invalid: kind 22242 is only accepted in an AUTH message",
        );
        return;
    }
    if relay.config.auth.require_for_write && !client.auth.is_authenticated() {
        refuse_event(
            relay,
            client,
            Some(&id_hex),
            "auth-required: this relay only accepts events from authenticated users",
        );
        return;
    }
    if crate::mesh::is_mesh_kind(event.kind) && !relay.read_policy.is_mesh_node(client) {
        let reason = if client.auth.is_authenticated() {
            "restricted: graph and echo events are accepted only from mesh nodes"
        } else {
            "auth-required: graph and echo events are accepted only from mesh nodes"
        };
        refuse_event(relay, client, Some(&id_hex), reason);
        return;
    }
    if let Err(reason) = relay.write_policy.check(&event, raw.get().len(), now()) {
        refuse_event(relay, client, Some(&id_hex), &reason);
        return;
    }
    let job_relay = relay.clone();
    let job_client = client.clone();
    let queued = relay
        .verify
        .run(move || verify_and_write(&job_relay, job_client, event, id_hex))
        .await;
    if !queued {
        client
            .outbox
            .send(messages::notice_msg("error: relay is shutting down"));
    }
}

/// Runs on a verify thread: checks the signature, then hands the event to
/// the writer (or, for ephemeral kinds, straight to the fan-out).
fn verify_and_write(relay: &Arc<Relay>, client: Arc<Client>, event: Event, id_hex: String) {
    if let Err(e) = event.verify() {
        refuse_event(relay, &client, Some(&id_hex), &e.to_string());
        return;
    }
    let json = event.to_json();
    if event.class() == KindClass::Ephemeral {
        relay.metrics.events_ephemeral.fetch_add(1, Relaxed);
        let _ = relay.fanout.send(vec![Arc::new(Committed {
            seq: None,
            event,
            json,
        })]);
        client.outbox.send(messages::ok(&id_hex, true, ""));
        return;
    }
    let metrics = relay.metrics.clone();
    relay.writer.submit(
        event,
        json,
        Box::new(move |outcome| {
            let reply = match outcome {
                WriteOutcome::Stored { .. } => messages::ok(&id_hex, true, ""),
                WriteOutcome::Duplicate => {
                    metrics.reject("duplicate:");
                    messages::ok(&id_hex, true, "duplicate: already have this event")
                }
                WriteOutcome::Refused(reason) => {
                    metrics.reject(reason);
                    messages::ok(&id_hex, false, reason)
                }
                WriteOutcome::Purged { .. } | WriteOutcome::Graph(_) => return,
            };
            client.outbox.send(reply);
        }),
    );
}

async fn handle_auth(relay: &Arc<Relay>, client: &Arc<Client>, raw: &RawValue) {
    let event = match Event::from_raw(raw) {
        Ok(event) => event,
        Err(e) => {
            let id = messages::salvage_event_id(raw);
            let reply = match id {
                Some(id) => messages::ok(&id, false, &e.to_string()),
                None => messages::notice_msg(&e.to_string()),
            };
            client.outbox.send(reply);
            return;
        }
    };
    let job_client = client.clone();
    let relay_url = relay.config.server.relay_url.clone();
    relay
        .verify
        .run(move || {
            let id = event.id_hex();
            let result = event
                .verify()
                .map_err(|e| e.to_string())
                .and_then(|_| job_client.auth.accept(&event, &relay_url));
            let reply = match result {
                Ok(()) => messages::ok(&id, true, ""),
                Err(reason) => messages::ok(&id, false, &reason),
            };
            job_client.outbox.send(reply);
        })
        .await;
}

/// Shared REQ/COUNT admission: rate, filter errors and auth. Returns the
/// filters or sends the CLOSED itself.
fn admit_query(
    relay: &Relay,
    client: &Client,
    sub_id: &str,
    filters: Result<Vec<Filter>, FilterError>,
) -> Option<Vec<Filter>> {
    let refusal = if !relay.req_rate.check(client.ip) {
        Some("rate-limited: slow down, too many requests".to_string())
    } else {
        match &filters {
            Err(e) => Some(e.to_string()),
            Ok(_) if relay.read_policy.require_auth && !client.auth.is_authenticated() => {
                Some("auth-required: this relay only serves authenticated users".into())
            }
            Ok(list)
                if list
                    .iter()
                    .any(|f| relay.read_policy.mesh_refusal(client, f).is_some()) =>
            {
                list.iter()
                    .find_map(|f| relay.read_policy.mesh_refusal(client, f))
                    .map(str::to_string)
            }
            Ok(list)
                if !client.auth.is_authenticated()
                    && list.iter().any(|f| relay.read_policy.needs_auth(f)) =>
            {
                Some("auth-required: these kinds are only served to their parties".into())
            }
            Ok(_) => None,
        }
    };
    match refusal {
        Some(reason) => {
            client.outbox.send(messages::closed(sub_id, &reason));
            None
        }
        None => filters.ok(),
    }
}

fn handle_req(
    relay: &Arc<Relay>,
    client: &Arc<Client>,
    local: &mut Local,
    sub_id: String,
    filters: Result<Vec<Filter>, FilterError>,
) {
    let Some(filters) = admit_query(relay, client, &sub_id, filters) else {
        return;
    };
    if !local.subs.contains(&sub_id) && local.subs.len() >= relay.config.limits.max_subscriptions {
        let reason = format!(
            "blocked: too many subscriptions (max {})",
            relay.config.limits.max_subscriptions
        );
        client.outbox.send(messages::closed(&sub_id, &reason));
        return;
    }
    relay.metrics.reqs_total.fetch_add(1, Relaxed);
    local.subs.insert(sub_id.clone());
    let sub = Arc::new(Subscription::new(client.clone(), sub_id, filters));
    relay.registry.insert(sub.clone());
    let relay = relay.clone();
    tokio::spawn(async move {
        let query_sub = sub.clone();
        let done = on_query_pool(&relay, move |relay| run_req(relay, &query_sub)).await;
        if !matches!(done, Some(Ok(()))) {
            relay.registry.remove(sub.client.id, &sub.id);
            sub.client
                .outbox
                .send(messages::closed(&sub.id, "error: query failed"));
        }
    });
}

/// Runs `work` on the blocking pool once a query slot is free; `None` when
/// the relay is shutting down or the work panicked.
pub(super) async fn on_query_pool<T: Send + 'static>(
    relay: &Arc<Relay>,
    work: impl FnOnce(&Relay) -> T + Send + 'static,
) -> Option<T> {
    let _permit = relay.query_slots.clone().acquire_owned().await.ok()?;
    let relay = relay.clone();
    tokio::task::spawn_blocking(move || work(&relay)).await.ok()
}

/// The stored-events phase of a REQ, on the blocking pool.
fn run_req(relay: &Relay, sub: &Subscription) -> Result<(), crate::store::StoreError> {
    let txn = relay.store.read_txn()?;
    let snapshot = relay.store.last_seq(&txn)?;
    let now = now();
    let max_limit = relay.config.limits.max_limit;
    let mut seen = (sub.filters.len() > 1).then(HashSet::new);
    for filter in &sub.filters {
        let limit = filter.limit.unwrap_or(max_limit).min(max_limit);
        relay.store.query(&txn, filter, limit, now, &mut |found| {
            if sub.is_cancelled() {
                return Err(Stop);
            }
            if !relay
                .read_policy
                .can_see_stored(&sub.client, &found.header, found.json)
            {
                return Ok(false);
            }
            if let Some(seen) = seen.as_mut() {
                if !seen.insert(found.seq) {
                    return Ok(false);
                }
            }
            sub.client.outbox.send(messages::event(&sub.id, found.json));
            Ok(true)
        })?;
    }
    drop(txn);
    sub.finish_query(snapshot);
    Ok(())
}

fn handle_count(
    relay: &Arc<Relay>,
    client: &Arc<Client>,
    sub_id: String,
    filters: Result<Vec<Filter>, FilterError>,
) {
    let Some(filters) = admit_query(relay, client, &sub_id, filters) else {
        return;
    };
    let relay = relay.clone();
    let client = client.clone();
    tokio::spawn(async move {
        let query_client = client.clone();
        let result =
            on_query_pool(&relay, move |relay| count(relay, &query_client, &filters)).await;
        let reply = match result {
            Some(Ok(n)) => messages::count(&sub_id, n),
            _ => messages::closed(&sub_id, "error: count failed"),
        };
        client.outbox.send(reply);
    });
}

fn count(
    relay: &Relay,
    client: &Client,
    filters: &[Filter],
) -> Result<u64, crate::store::StoreError> {
    let txn = relay.store.read_txn()?;
    let now = now();
    let mut seen = (filters.len() > 1).then(HashSet::new);
    let mut total = 0;
    for filter in filters {
        total += relay
            .store
            .query(&txn, filter, u64::MAX, now, &mut |found| {
                if client.outbox.is_overflowed() {
                    return Err(Stop);
                }
                if !relay
                    .read_policy
                    .can_see_stored(client, &found.header, found.json)
                {
                    return Ok(false);
                }
                Ok(seen.as_mut().is_none_or(|s| s.insert(found.seq)))
            })?;
    }
    Ok(total)
}
