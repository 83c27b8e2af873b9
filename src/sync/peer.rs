//! The WebSocket to a peer relay, shared by sync runs and live mode:
//! connect (ws:// or wss:// with rustls) with a timeout, send JSON, and
//! receive the next message with a timeout. Authentication is handled
//! here, both ways. For a peer configured with a node key, the peer first
//! proves it holds that key (NODE-AUTH, `node_auth.rs`); only then is it
//! treated as a mesh node. NIP-42: an `["AUTH", challenge]` from the peer
//! is answered with the node key, the `relay` tag naming the URL we
//! dialled (so the answer is useless to anyone who relayed the challenge)
//! and, once the peer proved its key, a `p` tag naming it (which binds the
//! answer to that node). The peer's OK for that answer is consumed, so
//! callers only see their own traffic.

use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::Value;
use yawc::{Frame, OpCode};

use super::from_relay::FromRelay;
use super::types::SyncError;
use crate::event::{now, Keys};

/// yawc, so permessage-deflate (RFC 7692) can be offered to the peer.
type Socket = yawc::TcpWebSocket;

/// The largest message taken from a peer: a NEG-MSG of a peer without a
/// frame limit can be several MB (the relay side takes 8 MiB by default);
/// the same bound applies to a message assembled from fragments.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Pings a peer may send per connection before it is dropped: each is
/// answered with a pong the socket queues until it writes.
const MAX_PINGS_PER_MINUTE: u32 = 120;

/// Options of a connection to a peer: deflate (zlib level 6, context
/// takeover: one socket per peer, and the peer decides what it agrees to)
/// when `deflate`; small frames leave at once.
fn socket_options(deflate: bool) -> yawc::Options {
    let base = yawc::Options::default()
        .with_no_delay()
        .with_limits(MAX_MESSAGE, MAX_MESSAGE);
    match deflate {
        true => crate::relay::socket::client_deflate(base),
        false => base.without_compression(),
    }
}

/// Where our NIP-42 authentication with the peer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStatus {
    /// No challenge seen (or no node key to answer with).
    None,
    /// Answer sent; waiting for the peer's OK.
    Sent(String),
    Accepted,
    Rejected(String),
}

/// Whether the peer proved it holds the node key configured for its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerProof {
    /// No key configured for the peer: it is a public relay to us.
    NotExpected,
    /// Asked with this nonce; no answer yet.
    Asked(String),
    Proven,
    Failed(String),
}

/// One open connection to a peer.
pub struct PeerSocket {
    ws: Socket,
    url: String,
    pub timeout: Duration,
    key: Option<Arc<Keys>>,
    pub auth: AuthStatus,
    /// The node key configured for the peer, if any.
    expected: Option<[u8; 32]>,
    pub proof: PeerProof,
    /// A NIP-42 challenge held until the peer's proof is settled (the
    /// answer names the peer's key only once it is proven).
    held_challenge: Option<String>,
    /// When the peer last sent anything (pongs included).
    last_heard: tokio::time::Instant,
    /// Pings the peer sent in the current minute, and when it began.
    pings: (u32, tokio::time::Instant),
}

impl PeerSocket {
    /// Connects to `url`, giving up after `timeout`. With `expected` (the
    /// peer's configured node key) and our own key, the peer is asked to
    /// prove its key before anything else: see [`PeerSocket::proof`].
    /// With `deflate`, permessage-deflate is offered.
    pub async fn connect(
        url: &str,
        timeout: Duration,
        key: Option<Arc<Keys>>,
        expected: Option<[u8; 32]>,
        deflate: bool,
    ) -> Result<PeerSocket, SyncError> {
        let failed = |e: String| SyncError::Connect(url.to_string(), e);
        let parsed = url::Url::parse(url).map_err(|e| failed(e.to_string()))?;
        let tls = crate::tls::client_connector().map_err(failed)?;
        let connect = yawc::WebSocket::connect(parsed)
            .with_connector(tls)
            .with_options(socket_options(deflate));
        let ws = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| SyncError::Timeout(timeout))?
            .map_err(|e| failed(e.to_string()))?;
        let mut socket = PeerSocket {
            ws,
            url: url.to_string(),
            timeout,
            key,
            auth: AuthStatus::None,
            expected,
            proof: PeerProof::NotExpected,
            held_challenge: None,
            last_heard: tokio::time::Instant::now(),
            pings: (0, tokio::time::Instant::now()),
        };
        if socket.expected.is_some() && socket.key.is_some() {
            socket.ask_proof().await?;
        }
        Ok(socket)
    }

    /// Did the peer prove it is the mesh node configured for its URL?
    pub fn is_proven_node(&self) -> bool {
        self.proof == PeerProof::Proven
    }

    /// Sends our nonce and waits (up to the timeout) for the peer's
    /// proof, a NOTICE (a relay that does not know NODE-AUTH) or nothing;
    /// then answers any NIP-42 challenge that came meanwhile.
    async fn ask_proof(&mut self) -> Result<(), SyncError> {
        let nonce = crate::node_auth::new_nonce();
        self.send(serde_json::json!([crate::node_auth::MESSAGE, nonce]))
            .await?;
        self.proof = PeerProof::Asked(nonce);
        let deadline = tokio::time::Instant::now() + self.timeout;
        while matches!(self.proof, PeerProof::Asked(_)) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_message(left).await {
                Ok(FromRelay::Notice(notice)) => {
                    self.proof = PeerProof::Failed(format!("the peer answered: {notice}"));
                }
                Ok(message) => {
                    self.handle_auth(&message).await?;
                }
                Err(SyncError::Timeout(_)) => {
                    self.proof = PeerProof::Failed("the peer sent no NODE-AUTH proof".into());
                }
                Err(e) => return Err(e),
            }
        }
        if let PeerProof::Failed(reason) = &self.proof {
            tracing::warn!(
                peer = self.url,
                reason,
                "peer did not prove its node key; no mesh events with it"
            );
        }
        if let Some(challenge) = self.held_challenge.take() {
            self.answer_challenge(&challenge).await?;
        }
        Ok(())
    }

    pub async fn send(&mut self, value: Value) -> Result<(), SyncError> {
        self.send_text(value.to_string()).await
    }

    pub async fn send_text(&mut self, text: String) -> Result<(), SyncError> {
        let timeout = self.timeout;
        bounded(timeout, self.ws.send(Frame::text(text))).await
    }

    /// A WebSocket ping; the pong (or any message) proves the link alive.
    pub async fn ping(&mut self) -> Result<(), SyncError> {
        let timeout = self.timeout;
        bounded(timeout, self.ws.send(Frame::ping(Vec::new()))).await
    }

    /// Queues a text frame without flushing (see [`PeerSocket::flush`]).
    pub async fn feed(&mut self, text: String) -> Result<(), SyncError> {
        let timeout = self.timeout;
        bounded(timeout, self.ws.feed(Frame::text(text))).await
    }

    pub async fn flush(&mut self) -> Result<(), SyncError> {
        let timeout = self.timeout;
        bounded(timeout, self.ws.flush()).await
    }

    pub async fn close(mut self) {
        let timeout = self.timeout;
        let _ = bounded(timeout, self.ws.close()).await;
    }

    /// Next message from the peer, skipping what is not a JSON array and
    /// the NIP-42 and NODE-AUTH exchanges. Times out after `self.timeout`.
    pub async fn recv(&mut self) -> Result<FromRelay, SyncError> {
        self.recv_within(self.timeout).await
    }

    /// [`PeerSocket::recv`] with another limit (live mode waits longer).
    pub async fn recv_within(&mut self, wait: Duration) -> Result<FromRelay, SyncError> {
        loop {
            let message = self.next_message(wait).await?;
            if !self.handle_auth(&message).await? {
                return Ok(message);
            }
        }
    }

    /// The next message, whatever it is, within `wait` in all (a peer
    /// sending only pings or other frames cannot hold the call open).
    async fn next_message(&mut self, wait: Duration) -> Result<FromRelay, SyncError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next_frame())
                .await
                .map_err(|_| SyncError::Timeout(wait))?
                .map_err(|_| SyncError::Closed)?;
            self.last_heard = tokio::time::Instant::now();
            match frame.opcode() {
                OpCode::Close => return Err(SyncError::Closed),
                OpCode::Text => {
                    if let Ok(Value::Array(parts)) =
                        serde_json::from_slice::<Value>(frame.payload())
                    {
                        return Ok(FromRelay::parse(parts));
                    }
                }
                OpCode::Ping => self.count_ping()?,
                _ => {}
            }
        }
    }

    /// A peer pinging faster than [`MAX_PINGS_PER_MINUTE`] is dropped.
    fn count_ping(&mut self) -> Result<(), SyncError> {
        let (count, since) = &mut self.pings;
        if since.elapsed() >= Duration::from_secs(60) {
            *count = 0;
            *since = tokio::time::Instant::now();
        }
        *count += 1;
        match *count > MAX_PINGS_PER_MINUTE {
            true => Err(SyncError::Closed),
            false => Ok(()),
        }
    }

    /// How long the peer has been silent (no frame at all, pongs included).
    pub fn silent_for(&self) -> Duration {
        self.last_heard.elapsed()
    }

    /// Answers an AUTH challenge, takes the peer's NODE-AUTH proof, or
    /// records the OK to our answer; true when the message was part of
    /// one of those exchanges.
    async fn handle_auth(&mut self, message: &FromRelay) -> Result<bool, SyncError> {
        match (message, &self.auth) {
            (FromRelay::Auth { challenge }, _) => {
                if matches!(self.proof, PeerProof::Asked(_)) {
                    self.held_challenge = Some(challenge.clone());
                } else {
                    self.answer_challenge(challenge).await?;
                }
                Ok(true)
            }
            (FromRelay::NodeAuth(proof), _) => {
                self.take_proof(proof);
                Ok(true)
            }
            (FromRelay::Ok { id, accepted, note }, AuthStatus::Sent(sent)) if id == sent => {
                self.auth = match accepted {
                    true => AuthStatus::Accepted,
                    false => AuthStatus::Rejected(note.clone()),
                };
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Checks the peer's answer to our nonce (only while one is asked).
    fn take_proof(&mut self, event: &Value) {
        let (PeerProof::Asked(nonce), Some(expected)) = (&self.proof, &self.expected) else {
            return;
        };
        let json = event.to_string();
        self.proof = match crate::node_auth::check(&json, expected, nonce, &self.url) {
            Ok(()) => PeerProof::Proven,
            Err(e) => PeerProof::Failed(e.to_string()),
        };
    }

    /// Signs the peer's NIP-42 challenge with the node key, naming the URL
    /// we dialled and, when proven, the peer's node key.
    async fn answer_challenge(&mut self, challenge: &str) -> Result<(), SyncError> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let mut tags = vec![
            vec!["relay".into(), self.url.clone()],
            vec!["challenge".into(), challenge.to_string()],
        ];
        if let (PeerProof::Proven, Some(expected)) = (&self.proof, &self.expected) {
            tags.push(vec!["p".into(), hex::encode(expected)]);
        }
        let event = key.sign(now(), 22242, tags, String::new());
        self.auth = AuthStatus::Sent(event.id_hex());
        self.send_text(format!("[\"AUTH\",{}]", event.to_json()))
            .await
    }

    /// After an `auth-required:` refusal: waits for our answer to the
    /// peer's challenge to be accepted. True when it was, so the refused
    /// request can be sent again.
    pub async fn await_auth(&mut self) -> Result<bool, SyncError> {
        if self.key.is_none() {
            return Ok(false);
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match &self.auth {
                AuthStatus::Accepted => return Ok(true),
                AuthStatus::Rejected(_) => return Ok(false),
                AuthStatus::None | AuthStatus::Sent(_) => {}
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            match self.next_message(left).await {
                Ok(message) => {
                    self.handle_auth(&message).await?;
                }
                Err(SyncError::Timeout(_)) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
}

/// A write to the peer that gives up after `timeout`: a peer that stops
/// reading must not hold a sync (and its peer's run lock) forever.
async fn bounded<E>(
    timeout: Duration,
    write: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), SyncError> {
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SyncError::Closed),
        Err(_) => Err(SyncError::Timeout(timeout)),
    }
}
