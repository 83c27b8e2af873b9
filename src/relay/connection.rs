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

use super::auth::AuthState;
use super::client::Client;
use super::ingest;
use super::messages;
use super::neg_sessions::NegSessions;
use super::outbox::{Frame, Outbox};
use super::queries::OpenSubs;
use super::socket::{Frames, Socket};
use super::Relay;
use crate::edge::Slot;

/// Close codes (RFC 6455).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_INVALID_UTF8: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;

/// Pings a client may send: a burst, then this many per second. The socket
/// answers each with a pong it queues until it writes, so a flood would
/// queue without bound (tungstenite kept only the latest).
const PING_BURST: f64 = 20.0;
const PINGS_PER_SECOND: f64 = 10.0;

/// A token bucket for one connection's pings.
struct PingBudget {
    tokens: f64,
    refilled: std::time::Instant,
}

impl PingBudget {
    fn new() -> PingBudget {
        PingBudget {
            tokens: PING_BURST,
            refilled: std::time::Instant::now(),
        }
    }

    /// Takes one ping's token; false when the client is over its budget.
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * PINGS_PER_SECOND;
        self.tokens = (self.tokens + earned).min(PING_BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Per-connection state only the reader loop touches.
pub(super) struct Local {
    pub(super) subs: OpenSubs,
    pub(super) neg: Arc<NegSessions>,
    pub(super) burst: ingest::Burst,
    pings: PingBudget,
}

/// How long the socket may take to send the close frame it owes.
const FLUSH_OWED: Duration = Duration::from_secs(1);

/// Most messages read in one burst before the burst's EVENTs are handed on.
const READ_BURST: usize = 64;

/// Whether the reader loop goes on after a message.
enum Flow {
    Continue,
    /// The connection ends; any close frame is ours to send.
    Stop,
    /// The connection ends and the socket owes the close frame (the echo
    /// of the client's close, or its own after a bad frame).
    StopOwed,
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
        pings: PingBudget::new(),
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
                match flow {
                    Flow::Continue => {}
                    Flow::Stop => break,
                    Flow::StopOwed => {
                        // Nothing more goes out before the close the socket
                        // owes; one more read sends it (a closed socket
                        // answers at once, FLUSH_OWED bounds the rest).
                        client.outbox.begin_closing();
                        let _ = tokio::time::timeout(FLUSH_OWED, stream.next()).await;
                        break;
                    }
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

/// Handles one read from the socket. After a bad frame (too large, a
/// protocol error) the socket has queued the close it deserves (1009,
/// 1002); text is checked for UTF-8 here (1007 is ours to send).
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
            return Flow::StopOwed;
        }
    };
    match frame.opcode() {
        OpCode::Text => match std::str::from_utf8(frame.payload()) {
            Ok(text) => super::dispatch::handle_text(relay, client, local, text).await,
            Err(_) => {
                client.outbox.close(CLOSE_INVALID_UTF8, "invalid UTF-8");
                return Flow::Stop;
            }
        },
        OpCode::Binary => {
            let why = crate::refusal::Refusal::invalid("binary messages are not supported");
            client.outbox.send(messages::notice_msg(&why));
        }
        OpCode::Close => return Flow::StopOwed,
        OpCode::Ping if !local.pings.take() => {
            client.outbox.close(CLOSE_POLICY, "too many pings");
            return Flow::Stop;
        }
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
                let len = text.len();
                if client.outbox.is_closing() {
                    // A close went out: what is left is only discarded.
                    client.outbox.sent(len);
                    continue;
                }
                relay.refusals.observe(client.id, client.ip, &text);
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
