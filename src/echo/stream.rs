//! `GET /echo/stream`: every accepted echo state change, pushed on this
//! node or arriving from the mesh, as Server-Sent Events as soon as it
//! commits (CouchDB's `_changes` feed is the model).
//!
//! One dispatcher task reads the store's feed of committed events, keeps
//! the echo states, and offers each to the open streams whose caller may
//! read that node (`access.rs`) and whose `node_id` / `filter` match; the
//! subscribers it reached are the change's notified set (`deliveries.rs`).
//! Each event's `id:` is the state's store sequence number, so a reconnect
//! with `Last-Event-ID` (or `since`) is answered first from the store with
//! what it missed, then live, with nothing repeated. A stream whose reader
//! falls [`MAX_QUEUED_BYTES`] behind is dropped (it resumes by cursor); an
//! idle one gets a comment every [`HEARTBEAT`] so proxies keep it open.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use super::deliveries::Subscriber;
use super::http::{error, is_name, EchoError};
use super::states::NodeState;
use super::{time, Echo, EchoCaller};
use crate::auth::User;
use crate::filter::Filter;
use crate::mesh::ECHO_STATE_KIND;
use crate::writer::{Committed, CommittedChunk};

/// How often an idle stream gets a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Bytes a stream may have queued for its reader before it is dropped.
pub const MAX_QUEUED_BYTES: usize = 1024 * 1024;
/// Longest filter (node ids and subscriber names: `http::is_name`).
const MAX_FILTER: usize = 256;
/// Open streams per user, and on the node.
const MAX_STREAMS_PER_USER: usize = 16;
const MAX_STREAMS: usize = 1024;
/// Catch-ups read from the store at once (each reads every echo state).
const CATCH_UPS_AT_ONCE: usize = 4;

/// A change ready to send: its cursor and its SSE event.
struct Frame {
    seq: u64,
    bytes: Bytes,
}

/// The SSE event of one state change (`replayed`: sent from the store on a
/// resume, not notified live, so not for acknowledging).
fn frame(seq: u64, state: &NodeState, replayed: bool) -> Frame {
    let mut change = json!({
        "sync_id": state.sync_id,
        "node_id": state.node_id,
        "cursor": seq.to_string(),
        "origin": state.origin,
        "received": time::format(state.received_ms),
        "state": state.to_json(),
    });
    if replayed {
        change["replayed"] = json!(true);
    }
    // Compact JSON has no newline, so one `data:` line carries it.
    let text = format!("id: {seq}\nevent: change\ndata: {change}\n\n");
    Frame {
        seq,
        bytes: Bytes::from(text),
    }
}

/// Which node ids a stream asked for.
#[derive(Clone)]
struct Wants {
    node_id: Option<String>,
    glob: Option<globset::GlobMatcher>,
}

impl Wants {
    fn matches(&self, node_id: &str) -> bool {
        self.node_id.as_deref().is_none_or(|id| id == node_id)
            && self.glob.as_ref().is_none_or(|g| g.is_match(node_id))
    }
}

/// One open stream.
struct Listener {
    user: User,
    subscriber: Subscriber,
    wants: Wants,
    tx: mpsc::UnboundedSender<Frame>,
    /// Bytes sent to `tx` and not yet taken by the reader.
    queued: Arc<AtomicUsize>,
}

/// The open streams.
pub struct Streams {
    open: Mutex<HashMap<u64, Listener>>,
    next_id: AtomicU64,
    catch_ups: tokio::sync::Semaphore,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            catch_ups: tokio::sync::Semaphore::new(CATCH_UPS_AT_ONCE),
        }
    }
}

impl Streams {
    fn is_empty(&self) -> bool {
        self.open.lock().is_empty()
    }

    /// Offers a change to every stream that may see it; the subscribers it
    /// reached. A stream too far behind is dropped instead.
    fn offer(
        &self,
        echo: &Echo,
        node_id: &str,
        owner: &str,
        frame: &Frame,
    ) -> BTreeSet<Subscriber> {
        let mut notified = BTreeSet::new();
        let mut open = self.open.lock();
        open.retain(|_, listener| {
            if !listener.wants.matches(node_id)
                || echo.grants.access(&listener.user, node_id, owner).is_none()
            {
                return true;
            }
            let len = frame.bytes.len();
            if listener.queued.load(Relaxed) + len > MAX_QUEUED_BYTES {
                // Dropping the sender ends the stream after what is queued.
                echo.metrics.echo_streams_dropped_slow.fetch_add(1, Relaxed);
                return false;
            }
            listener.queued.fetch_add(len, Relaxed);
            let sent = Frame {
                seq: frame.seq,
                bytes: frame.bytes.clone(),
            };
            if listener.tx.send(sent).is_err() {
                return false;
            }
            notified.insert(listener.subscriber.clone());
            true
        });
        echo.metrics.echo_streams.store(open.len() as u64, Relaxed);
        notified
    }

    fn close_all(&self, echo: &Echo) {
        self.open.lock().clear();
        echo.metrics.echo_streams.store(0, Relaxed);
    }
}

/// Removes its stream from [`Streams`] when the response body is dropped
/// (the client went away, or the stream ended).
struct Registration {
    echo: Arc<Echo>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.echo.streams.open.lock();
        open.remove(&self.id);
        self.echo
            .metrics
            .echo_streams
            .store(open.len() as u64, Relaxed);
    }
}

/// Starts the dispatcher: echo states from the store's feed of committed
/// events to the open streams, until shutdown.
pub fn spawn_dispatcher(
    echo: Arc<Echo>,
    mut feed: broadcast::Receiver<CommittedChunk>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            let committed = tokio::select! {
                _ = shutdown.changed() => break,
                committed = feed.recv() => committed,
            };
            match committed {
                Ok(piece) => {
                    for committed in piece.iter() {
                        dispatch(&echo, committed).await;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    // Changes were missed: every stream resumes by cursor.
                    tracing::warn!(skipped, "echo streams fell behind the store; closing them");
                    echo.streams.close_all(&echo);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        echo.streams.close_all(&echo);
    });
}

/// Offers one committed event to the streams, if it is an echo state, and
/// records who was notified of it.
async fn dispatch(echo: &Arc<Echo>, committed: &Committed) {
    let event = &committed.event;
    let Some(seq) = committed.seq else { return };
    if event.kind != ECHO_STATE_KIND || !echo.store.is_trusted_author(event.kind, &event.pubkey) {
        return;
    }
    let Some(state) = NodeState::from_event(event) else {
        return;
    };
    let mut notified = BTreeSet::new();
    if !echo.streams.is_empty() {
        // Access follows the node's owner as resolved over all its states.
        let owner = match echo.current(Some(&state.node_id)).await {
            Ok(found) => found.first().map(|r| r.winner.owner.clone()),
            Err(()) => None,
        }
        .unwrap_or_else(|| state.owner.clone());
        let frame = frame(seq, &state, false);
        notified = echo.streams.offer(echo, &state.node_id, &owner, &frame);
    }
    echo.deliveries
        .record(&state.sync_id, &state.node_id, notified);
}

/// A stream request's query, checked.
struct StreamRequest {
    wants: Wants,
    subscriber: String,
    /// Resume after this cursor (`Last-Event-ID`, else `since`).
    since: Option<u64>,
}

impl StreamRequest {
    fn parse(
        user: &User,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Result<StreamRequest, EchoError> {
        let bad = |m: &str| error(StatusCode::BAD_REQUEST, m);
        let node_id = match query.get("node_id").map(String::as_str) {
            None | Some("") => None,
            Some(id) if is_name(id) => Some(id.to_string()),
            Some(_) => return Err(bad("node_id must be a non-empty string")),
        };
        let glob = match query.get("filter").map(String::as_str) {
            None | Some("") => None,
            Some(pattern) if pattern.len() > MAX_FILTER => {
                return Err(bad("filter must be at most 256 characters"))
            }
            Some(pattern) => Some(
                globset::Glob::new(pattern)
                    .map_err(|e| bad(&format!("filter is not a glob: {e}")))?
                    .compile_matcher(),
            ),
        };
        let subscriber = match query.get("subscriber").map(String::as_str) {
            None | Some("") => user.id.clone(),
            Some(name) if is_name(name) => name.to_string(),
            Some(_) => return Err(bad("subscriber must be a short printable name")),
        };
        let cursor = |text: &str| text.trim().parse::<u64>().ok();
        let since = match headers.get("last-event-id") {
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(cursor)
                    .ok_or_else(|| bad("Last-Event-ID is not a cursor this node gave out"))?,
            ),
            None => match query.get("since") {
                None => None,
                Some(text) => Some(
                    cursor(text).ok_or_else(|| bad("since is not a cursor this node gave out"))?,
                ),
            },
        };
        Ok(StreamRequest {
            wants: Wants { node_id, glob },
            subscriber,
            since,
        })
    }
}

pub async fn stream(
    State(echo): State<Arc<Echo>>,
    EchoCaller(user): EchoCaller,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let request = match StreamRequest::parse(&user, &query, &headers) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    // A named node the caller may not read: 403 now, not a silent stream.
    if let Some(node_id) = &request.wants.node_id {
        if let Err(e) = super::http::readable(&echo, &user, node_id).await {
            return e.into_response();
        }
    }
    // Registered before the store is read: a change committed from here on
    // arrives live, one committed before is in the catch-up (both: once).
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let id = echo.streams.next_id.fetch_add(1, Relaxed);
    {
        let mut open = echo.streams.open.lock();
        let mine = open.values().filter(|l| l.user.id == user.id).count();
        if mine >= MAX_STREAMS_PER_USER || open.len() >= MAX_STREAMS {
            drop(open);
            let message = format!(
                "too many open change streams (at most {MAX_STREAMS_PER_USER} per user); close one"
            );
            return error(StatusCode::TOO_MANY_REQUESTS, message).into_response();
        }
        open.insert(
            id,
            Listener {
                user: user.clone(),
                subscriber: Subscriber {
                    user: user.id.clone(),
                    name: request.subscriber.clone(),
                },
                wants: request.wants.clone(),
                tx,
                queued: queued.clone(),
            },
        );
        echo.metrics.echo_streams.store(open.len() as u64, Relaxed);
    }
    let registration = Registration {
        echo: echo.clone(),
        id,
    };
    let mut catch_up = VecDeque::from([Bytes::from_static(
        b"retry: 2000\n: echorelay change stream\n\n",
    )]);
    let (mut skip_upto, mut live) = (0, true);
    if let Some(since) = request.since {
        let missed = match missed(&echo, &user, &request.wants, since).await {
            Ok(missed) => missed,
            Err(e) => return e.into_response(),
        };
        skip_upto = missed.frames.last().map_or(since, |f| f.seq);
        // More than one bound's worth: this connection sends that much and
        // ends; the client resumes from its last id for the rest.
        live = !missed.truncated;
        catch_up.extend(missed.frames.into_iter().map(|f| f.bytes));
    }
    let reader = Reader {
        catch_up,
        live,
        skip_upto,
        rx,
        queued,
        heartbeat: tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT),
        _registration: registration,
    };
    let body = futures_util::stream::unfold(reader, |mut reader| async move {
        let bytes = reader.next().await?;
        Some((Ok::<_, Infallible>(bytes), reader))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        // nginx buffers responses unless told not to.
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// What a resumed stream missed: its first [`MAX_QUEUED_BYTES`] of
/// changes, and whether there were more.
struct Missed {
    frames: Vec<Frame>,
    truncated: bool,
}

/// The stored changes after `since` that `user` may read and asked for.
async fn missed(
    echo: &Arc<Echo>,
    user: &User,
    wants: &Wants,
    since: u64,
) -> Result<Missed, EchoError> {
    let unreadable = || {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stored states cannot be read",
        )
    };
    // Each catch-up reads every echo state: a few at a time.
    let _turn = echo
        .streams
        .catch_ups
        .acquire()
        .await
        .map_err(|_| unreadable())?;
    let mut filter = Filter {
        kinds: Some(vec![ECHO_STATE_KIND]),
        ..Filter::default()
    };
    if let Some(id) = &wants.node_id {
        filter.tags.insert(b'd', vec![id.clone()]);
    }
    let store = echo.store.clone();
    let read = tokio::task::spawn_blocking(move || {
        let txn = store.read_txn()?;
        let last = store.last_seq(&txn)?;
        drop(txn);
        Ok::<_, crate::store::StoreError>((last, store.matching_after(&filter, since)?))
    });
    let (last, events) = read
        .await
        .map_err(|_| unreadable())?
        .map_err(|_| unreadable())?;
    if since > last {
        // A cursor of another node, or of this node's store before a restore.
        let message =
            format!("cursor {since} is ahead of this node's changes (cursors are per node)");
        return Err(error(StatusCode::BAD_REQUEST, message));
    }
    let mut missed = Missed {
        frames: Vec::new(),
        truncated: false,
    };
    if events.is_empty() {
        return Ok(missed);
    }
    let owners: HashMap<String, String> = echo
        .current(wants.node_id.as_deref())
        .await
        .map_err(|()| unreadable())?
        .into_iter()
        .map(|r| (r.winner.node_id, r.winner.owner))
        .collect();
    let mut bytes = 0;
    for (seq, event) in &events {
        let Some(state) = NodeState::from_event(event) else {
            continue;
        };
        let owner = owners.get(&state.node_id).unwrap_or(&state.owner);
        if !wants.matches(&state.node_id)
            || echo.grants.access(user, &state.node_id, owner).is_none()
        {
            continue;
        }
        let frame = frame(*seq, &state, true);
        bytes += frame.bytes.len();
        if bytes > MAX_QUEUED_BYTES && !missed.frames.is_empty() {
            missed.truncated = true;
            break;
        }
        missed.frames.push(frame);
    }
    Ok(missed)
}

/// The response body's state: catch-up first, then live changes and
/// heartbeats until the stream is dropped or the node shuts down.
struct Reader {
    catch_up: VecDeque<Bytes>,
    /// Whether live changes follow the catch-up (not after a truncated one).
    live: bool,
    /// Live changes up to this cursor were in the catch-up.
    skip_upto: u64,
    rx: mpsc::UnboundedReceiver<Frame>,
    queued: Arc<AtomicUsize>,
    heartbeat: tokio::time::Interval,
    _registration: Registration,
}

impl Reader {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(bytes) = self.catch_up.pop_front() {
            return Some(bytes);
        }
        if !self.live {
            return None;
        }
        loop {
            tokio::select! {
                frame = self.rx.recv() => {
                    let frame = frame?;
                    self.queued.fetch_sub(frame.bytes.len(), Relaxed);
                    if frame.seq > self.skip_upto {
                        return Some(frame.bytes);
                    }
                }
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(b": heartbeat\n\n")),
            }
        }
    }
}
