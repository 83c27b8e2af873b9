//! One WebSocket connection: a reader loop that parses and dispatches client
//! messages, and a writer task that drains the connection's [`Outbox`]. No
//! handler waits for a write or a query to finish before reading the next
//! message: EVENTs go to the verify pool, queries (`queries.rs`) to the
//! blocking pool, and their answers come back through the outbox.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::value::RawValue;

use super::auth::AuthState;
use super::client::Client;
use super::ingest;
use super::limits::{Admission, IpRate};
use super::messages::{self, ClientMessage, Oversized};
use super::neg_sessions::{self, NegSessions};
use super::outbox::{Frame, Outbox};
use super::queries::{self, OpenSubs};
use super::socket::{Frames, Socket};
use super::Relay;
use crate::edge::Slot;
use crate::event::Event;

/// Close codes (RFC 6455).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_INVALID_UTF8: u16 = 1007;

/// Per-connection state only the reader loop touches.
struct Local {
    subs: OpenSubs,
    neg: Arc<NegSessions>,
    burst: ingest::Burst,
}

/// How long the socket may take to send the close frame it owes.
const FLUSH_OWED: Duration = Duration::from_secs(1);

/// Most messages read in one burst before the burst's EVENTs are handed on.
const READ_BURST: usize = 64;

/// Whether the reader loop goes on after a message.
enum Flow {
    Continue,
    Stop,
}

/// Serves one upgraded connection; `auth` holds its NIP-42 challenge and
/// the relay URL its AUTH events must name.
pub async fn run(relay: Arc<Relay>, socket: Socket, ip: IpAddr, auth: AuthState, slot: Slot) {
    let (outbox, rx) = Outbox::new(relay.config.limits.max_pending_outbound_bytes);
    let client = Arc::new(Client {
        id: relay.next_client_id.fetch_add(1, Relaxed),
        ip,
        outbox,
        auth,
        // As many queries in flight as subscriptions may be open.
        queries: Arc::new(tokio::sync::Semaphore::new(
            relay.config.limits.max_subscriptions.max(1),
        )),
    });
    relay.metrics.connections_open.fetch_add(1, Relaxed);
    relay.metrics.connections_total.fetch_add(1, Relaxed);
    let (sink, mut stream) = Frames(socket).split();
    let mut writer = tokio::spawn(write_loop(relay.clone(), client.clone(), sink, rx));
    client
        .outbox
        .send(messages::auth_challenge(client.auth.challenge()));

    let mut local = Local {
        subs: OpenSubs::default(),
        neg: Arc::new(NegSessions::default()),
        burst: ingest::Burst::default(),
    };
    relay.neg_directory.register(&client, &local.neg);
    let idle = Duration::from_secs(relay.config.negentropy.idle_timeout_secs.max(1));
    let mut idle_check = tokio::time::interval(idle.min(Duration::from_secs(30)));
    let mut shutdown = relay.shutdown.clone();
    let mut slow = false;
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let mut flow = on_message(&relay, &client, &mut local, incoming).await;
                // Whatever the socket already holds joins this burst.
                for _ in 1..READ_BURST {
                    let Flow::Continue = flow else { break };
                    let Some(incoming) = stream.next().now_or_never() else { break };
                    flow = on_message(&relay, &client, &mut local, incoming).await;
                }
                ingest::flush(&relay, &client, &mut local.burst).await;
                if let Flow::Stop = flow {
                    // One more read lets the socket send what it owes: the
                    // echo of the client's close, or its own close after a
                    // bad frame (1009, 1007, 1002). It returns at once.
                    let _ = tokio::time::timeout(FLUSH_OWED, stream.next()).await;
                    break;
                }
            }
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
        client.outbox.finish();
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

/// Handles one read from the socket. On a read error the socket has
/// already queued the close frame it deserves (1009 oversized, 1007 invalid
/// UTF-8, 1002 protocol error); the writer's `finish` sends it.
async fn on_message(
    relay: &Arc<Relay>,
    client: &Arc<Client>,
    local: &mut Local,
    incoming: Option<yawc::Result<yawc::Frame>>,
) -> Flow {
    use yawc::OpCode;
    let frame = match incoming {
        None => return Flow::Stop,
        Some(Ok(frame)) => frame,
        Some(Err(e)) => {
            tracing::debug!(client = client.id, ip = %client.ip, error = %e, "socket closed on a bad frame");
            // Errors found above the frame layer leave the close to us.
            use yawc::WebSocketError as E;
            match e {
                E::InvalidUTF8 => client.outbox.close(CLOSE_INVALID_UTF8, "invalid UTF-8"),
                E::InvalidFragment | E::InvalidContinuationFrame | E::FragmentTimeout => client
                    .outbox
                    .close(CLOSE_PROTOCOL_ERROR, "invalid fragment"),
                _ => {}
            }
            return Flow::Stop;
        }
    };
    match frame.opcode() {
        OpCode::Text => match std::str::from_utf8(frame.payload()) {
            Ok(text) => handle_text(relay, client, local, text).await,
            Err(_) => {
                client.outbox.close(CLOSE_INVALID_UTF8, "invalid UTF-8");
                return Flow::Stop;
            }
        },
        OpCode::Binary => {
            client.outbox.send(messages::notice_msg(
                "invalid: binary messages are not supported",
            ));
        }
        OpCode::Close => return Flow::Stop,
        // Pings are answered by the socket; fragments arrive reassembled.
        OpCode::Ping | OpCode::Pong | OpCode::Continuation => {}
    }
    Flow::Continue
}

/// Frames written before one flush: under load many OKs and EVENTs share a
/// syscall instead of paying one each.
const FRAMES_PER_FLUSH: usize = 64;

async fn write_loop(
    relay: Arc<Relay>,
    client: Arc<Client>,
    mut sink: futures_util::stream::SplitSink<Frames, yawc::Frame>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Frame>,
) {
    while let Some(frame) = rx.recv().await {
        let mut next = Some(frame);
        let mut queued = 0;
        while let Some(frame) = next.take() {
            // A single frame goes without a Vec: this is every REQ result's path.
            let (single, texts) = match frame {
                Frame::Text(text) => (Some(text), Vec::new()),
                Frame::Texts(texts) => (None, texts),
                Frame::Close(code, reason) => {
                    let close = yawc::Frame::close(code.into(), reason);
                    let _ = sink.send(close).await;
                    // A close frame went out: close() adds none.
                    let _ = sink.close().await;
                    return;
                }
                Frame::Finish => {
                    // A normal close, unless the socket already sent one.
                    let _ = sink.close().await;
                    return;
                }
            };
            for text in single.into_iter().chain(texts) {
                relay.refusals.observe(client.id, client.ip, &text);
                let len = text.len();
                if sink.feed(yawc::Frame::text(text)).await.is_err() {
                    return;
                }
                client.outbox.sent(len);
                queued += 1;
            }
            if queued >= FRAMES_PER_FLUSH {
                if sink.flush().await.is_err() {
                    return;
                }
                queued = 0;
            }
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

async fn handle_text(relay: &Arc<Relay>, client: &Arc<Client>, local: &mut Local, text: &str) {
    let limits = &relay.config.limits;
    if text.len() > limits.max_message_size {
        let negentropy = matches!(messages::message_type(text), Some("NEG-OPEN" | "NEG-MSG"));
        let limit = match negentropy {
            true => limits.max_negentropy_message_size,
            false => limits.max_message_size,
        };
        if text.len() > limit {
            refuse_oversized(relay, client, local, text, limit);
            return;
        }
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
        Ok(ClientMessage::Event(raw)) => {
            match paced(relay, client, &mut local.burst, &relay.event_rate).await {
                true => ingest::admit(relay, client, &mut local.burst, raw),
                false => ingest::refuse_over_rate(relay, client, raw),
            }
        }
        Ok(ClientMessage::Req { sub_id, filters }) => {
            match paced(relay, client, &mut local.burst, &relay.req_rate).await {
                true => queries::handle_req(relay, client, &mut local.subs, sub_id, filters),
                false => queries::refuse_over_rate(relay, client, &mut local.subs, &sub_id),
            }
        }
        Ok(ClientMessage::Count { sub_id, filters }) => {
            match paced(relay, client, &mut local.burst, &relay.req_rate).await {
                true => queries::handle_count(relay, client, sub_id, filters),
                false => queries::refuse_over_rate(relay, client, &mut local.subs, &sub_id),
            }
        }
        Ok(ClientMessage::Close(sub_id)) => local.subs.end(relay, client, &sub_id),
        Ok(ClientMessage::Auth(raw)) => handle_auth(relay, client, raw).await,
        Ok(ClientMessage::NodeAuth(nonce)) => handle_node_auth(relay, client, nonce).await,
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

/// Refuses a message over its size limit in the form its sender waits for:
/// OK false, CLOSED or NEG-ERR (which also end the subscription or session
/// of that id), NOTICE only when neither type nor id can be read.
fn refuse_oversized(relay: &Relay, client: &Client, local: &mut Local, text: &str, limit: usize) {
    let reason = format!(
        "invalid: message too large ({} > {limit} bytes)",
        text.len()
    );
    let reply = match messages::classify_oversized(text) {
        Oversized::Event(id) => {
            relay.metrics.reject(&reason);
            messages::ok(&id, false, &reason)
        }
        Oversized::Query(sub_id) => {
            local.subs.end(relay, client, &sub_id);
            messages::closed(&sub_id, &reason)
        }
        Oversized::Negentropy(sub_id) => {
            local.neg.close(&sub_id);
            neg_sessions::neg_err(&sub_id, &reason)
        }
        Oversized::Unknown => messages::notice_msg(&reason),
    };
    client.outbox.send(reply);
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
    relay
        .verify
        .run(move || {
            let id = event.id_hex();
            let result = event
                .verify()
                .map_err(|e| e.to_string())
                .and_then(|_| job_client.auth.accept(&event));
            let reply = match result {
                Ok(()) => messages::ok(&id, true, ""),
                Err(reason) => messages::ok(&id, false, &reason),
            };
            job_client.outbox.send(reply);
        })
        .await;
}

/// Signs a dialling node's nonce with the node key, once per connection
/// (a signature costs CPU; one proof is all a node needs).
async fn handle_node_auth(relay: &Arc<Relay>, client: &Arc<Client>, nonce: String) {
    if !client.auth.take_node_proof() {
        let reason = "invalid: NODE-AUTH is answered once per connection";
        client.outbox.send(messages::notice_msg(reason));
        return;
    }
    let (key, job_client) = (relay.node_key.clone(), client.clone());
    relay
        .verify
        .run(move || {
            let proof = crate::node_auth::proof(&key, &nonce, job_client.auth.relay_url());
            job_client
                .outbox
                .send(messages::node_proof(&proof.to_json()));
        })
        .await;
}

/// Waits until `rate` allows one more message from `client`: its socket is
/// not read meanwhile, so TCP paces the sender. The EVENTs read so far go on
/// first, so the wait holds nothing up. False past the hard ceiling
/// (`limits.max_pace_ms`): the message is to be refused.
async fn paced(
    relay: &Arc<Relay>,
    client: &Arc<Client>,
    burst: &mut ingest::Burst,
    rate: &IpRate,
) -> bool {
    if let Admission::Now = rate.try_now(client.ip) {
        return true;
    }
    ingest::flush(relay, client, burst).await;
    relay.metrics.messages_paced.fetch_add(1, Relaxed);
    let ceiling = Duration::from_millis(relay.config.limits.max_pace_ms);
    rate.pace(client.ip, ceiling).await
}
