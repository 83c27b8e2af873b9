//! Test support: a relay started in-process on a free 127.0.0.1 port with a
//! temporary data directory, and a raw WebSocket client that awaits replies
//! (never sleeps) with a timeout so a missing reply fails instead of hanging.
#![allow(dead_code)]

mod echo_api;
pub mod graph_api;
mod graph_socket;
mod js;
pub mod sdk;
mod serve;
mod sse;
mod users;
pub mod vectors;
pub mod wire;
#[allow(unused_imports)]
pub use echo_api::*;
#[allow(unused_imports)]
pub use graph_socket::GraphSocket;
#[allow(unused_imports)]
pub use js::*;
#[allow(unused_imports)]
pub use serve::*;
#[allow(unused_imports)]
pub use sse::*;
#[allow(unused_imports)]
pub use users::*;

use std::net::SocketAddr;
use std::time::Duration;

use echorelay::config::Config;
use echorelay::event::{Event, Keys};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

/// How often [`eventually`] asks again.
const POLL: Duration = Duration::from_millis(20);

/// Awaits a condition another task, process or node brings about: `check`
/// is asked again every few milliseconds until it returns `Some`; after
/// `within` the test fails, naming `what`. (The wait ends as soon as the
/// condition holds: nothing is timed.)
pub async fn eventually<T, Fut>(what: &str, within: Duration, mut check: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(done) = check().await {
            return done;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A checked future borrowing the state [`eventually_mut`] lends it.
pub type Check<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Option<T>> + Send + 'a>>;

/// [`eventually`] for a check that needs `state` mutably (a socket it asks
/// on): `check` gets the state on every attempt.
pub async fn eventually_mut<S, T>(
    what: &str,
    within: Duration,
    state: &mut S,
    mut check: impl for<'a> FnMut(&'a mut S) -> Check<'a, T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(done) = check(state).await {
            return done;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The control API token of every [`TestRelay`].
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub struct TestRelay {
    pub addr: SocketAddr,
    /// The control API's address.
    pub admin_addr: SocketAddr,
    pub url: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A config for tests: no rate limits unless a test sets them.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.limits.events_per_second = 0;
    config.limits.reqs_per_second = 0;
    config.server.verify_threads = 2;
    config.server.admin_listen = String::new();
    config
}

impl TestRelay {
    pub async fn start() -> TestRelay {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestRelay {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, "127.0.0.1:0".parse().expect("addr"), tweak).await
    }

    /// Starts on `addr` with an existing data dir: a restart after
    /// [`TestRelay::stop`] at the same URL.
    pub async fn start_in(
        dir: tempfile::TempDir,
        addr: SocketAddr,
        tweak: impl FnOnce(&mut Config),
    ) -> TestRelay {
        let mut config = test_config();
        config.store.data_dir = dir.path().to_path_buf();
        config.server.admin_token = ADMIN_TOKEN.into();
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin_addr = admin.local_addr().expect("addr");
        // The key exists before the node starts, so a test reading it
        // (`node_key`) never races the node creating it.
        echorelay::secrets::node_key(&config.store.data_dir).expect("node key");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            echorelay::node::run_with_admin(config, listener, Some(admin), async move {
                let _ = stopped.await;
            })
            .await
            .expect("relay run");
        });
        TestRelay {
            addr,
            admin_addr,
            url: format!("ws://{addr}"),
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client of this relay's control API.
    pub fn admin(&self) -> echorelay::admin::client::AdminClient {
        echorelay::admin::client::AdminClient::new(
            &format!("http://{}", self.admin_addr),
            ADMIN_TOKEN,
            std::time::Duration::from_secs(30),
        )
        .expect("admin url")
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Graceful stop; waits until every queued write is committed.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("relay task");
        }
        self.dir
    }

    pub async fn client(&self) -> Raw {
        let mut raw = Raw::connect(&self.url).await;
        raw.node = Some(hex::encode(self.node_key().public_key()));
        raw
    }

    /// This relay's node key.
    pub fn node_key(&self) -> Keys {
        echorelay::secrets::node_key(self.dir.path()).expect("node key")
    }

    /// This relay's node key, as the hex a peer config names.
    pub fn node_pubkey(&self) -> String {
        hex::encode(self.node_key().public_key())
    }
}

/// A raw NIP-01 client over tokio-tungstenite.
pub struct Raw {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub challenge: Option<String>,
    /// The URL dialled: what AUTH events name in their `relay` tag.
    pub url: String,
    /// The relay's node key (hex), when known: AUTH events name it (`p`),
    /// which binds the proof to that node and so grants mesh access.
    pub node: Option<String>,
}

impl Raw {
    pub async fn connect(url: &str) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .expect("connect");
        let mut raw = Raw {
            ws,
            challenge: None,
            url: url.to_string(),
            node: None,
        };
        let first = raw.recv().await;
        assert_eq!(
            first[0], "AUTH",
            "first message is the NIP-42 challenge: {first}"
        );
        raw.challenge = first[1].as_str().map(str::to_string);
        raw
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .expect("send");
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// Next text message as JSON; panics after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        self.try_recv(WAIT)
            .await
            .expect("timed out waiting for a relay message")
    }

    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(wait, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(text) => {
                    return Some(serde_json::from_str(text.as_str()).expect("relay sent JSON"))
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Waits for the close frame and returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.ok()?? {
                Ok(Message::Close(frame)) => return frame.map(|f| f.code.into()),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Publishes and returns the OK message.
    pub async fn publish(&mut self, event: &Event) -> Value {
        self.send_text(format!("[\"EVENT\",{}]", event.to_json()))
            .await;
        loop {
            let msg = self.recv().await;
            if msg[0] == "OK" && msg[1] == event.id_hex() {
                return msg;
            }
        }
    }

    pub async fn publish_ok(&mut self, event: &Event) {
        let ok = self.publish(event).await;
        assert_eq!(ok[2], true, "event refused: {ok}");
    }

    /// REQ and collect the stored events until EOSE.
    pub async fn req(&mut self, sub: &str, filters: &[Value]) -> Vec<Value> {
        let mut msg = vec![json!("REQ"), json!(sub)];
        msg.extend(filters.iter().cloned());
        self.send(Value::Array(msg)).await;
        let mut events = Vec::new();
        loop {
            let m = self.recv().await;
            match m[0].as_str() {
                Some("EVENT") if m[1] == sub => events.push(m[2].clone()),
                Some("EOSE") if m[1] == sub => return events,
                Some("CLOSED") if m[1] == sub => panic!("subscription closed: {m}"),
                _ => {}
            }
        }
    }

    /// Ids (hex) of a REQ's stored events, in the order received.
    /// A one-off query: the subscription is closed after EOSE so no live
    /// event of it can leak into a later query.
    pub async fn req_ids(&mut self, filters: &[Value]) -> Vec<String> {
        let events = self.req("ids", filters).await;
        self.send(json!(["CLOSE", "ids"])).await;
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Sends a message and returns the next reply.
    pub async fn ask(&mut self, value: Value) -> Value {
        self.send(value).await;
        self.recv().await
    }

    pub async fn ask_text(&mut self, text: impl Into<String>) -> Value {
        self.send_text(text).await;
        self.recv().await
    }

    /// NIP-42 authenticate as `keys`.
    pub async fn auth(&mut self, keys: &Keys) -> Value {
        let challenge = self.challenge.clone().expect("challenge");
        let mut tags = vec![
            vec!["relay".into(), self.url.clone()],
            vec!["challenge".into(), challenge],
        ];
        if let Some(node) = &self.node {
            tags.push(vec!["p".into(), node.clone()]);
        }
        let event = keys.sign(echorelay::event::now(), 22242, tags, String::new());
        self.send(json!([
            "AUTH",
            serde_json::from_str::<Value>(&event.to_json()).expect("json")
        ]))
        .await;
        self.recv().await
    }
}

/// Two relays (with [`with_alice`]) that trust each other's node key
/// whatever their peer lists say, so links can be cut and healed.
pub async fn trusting_pair() -> (TestRelay, TestRelay) {
    trusting_pair_with(with_alice).await
}

/// [`trusting_pair`] with `configure` applied to both relays.
pub async fn trusting_pair_with(configure: fn(&mut Config)) -> (TestRelay, TestRelay) {
    let a = TestRelay::start_with(configure).await;
    let ka = hex::encode(a.node_key().public_key());
    let b = TestRelay::start_with(|c| {
        configure(c);
        c.auth.trusted_nodes = vec![ka];
    })
    .await;
    let kb = hex::encode(b.node_key().public_key());
    let addr = a.addr;
    let a = TestRelay::start_in(a.stop().await, addr, |c| {
        configure(c);
        c.auth.trusted_nodes = vec![kb];
    })
    .await;
    (a, b)
}

/// `from` syncs live with `to`, knowing its key.
pub async fn live_peer(from: &TestRelay, to: &TestRelay) {
    let body = json!({"peer_url": to.url, "pubkey": hex::encode(to.node_key().public_key()),
                      "dir": "both", "interval_secs": 1, "live": true});
    from.admin().call("AddPeer", &body).await.unwrap();
}

/// `from` drops its link to `to` (the key stays trusted if configured).
pub async fn cut_peer(from: &TestRelay, to: &TestRelay) {
    let body = json!({ "peer_url": to.url });
    from.admin().call("RemovePeer", &body).await.unwrap();
}

/// A graph homed at `home` (SPEC §4): its index event, then one tx event
/// per entry of `txs` at t = 1, 2, …, all signed by the home.
pub fn homed_graph(home: &Keys, graph: &str, txs: &[&str]) -> (Event, Vec<Event>) {
    let homes = json!([{"node": hex::encode(home.public_key()), "from-t": 1}]);
    let meta = json!({"graph-id": graph, "graph-name": graph, "owner": "alice",
                      "created-at": 1, "updated-at": 1, "homes": homes});
    let at = echorelay::event::now();
    let index = event_at(home, 34071, at, vec![vec!["d", graph]], &meta.to_string());
    let txs = txs
        .iter()
        .zip(1u64..)
        .map(|(tx, t)| {
            let t = t.to_string();
            event_at(home, 4071, at, vec![vec!["g", graph], vec!["t", &t]], tx)
        })
        .collect();
    (index, txs)
}

pub fn note(keys: &Keys, content: &str) -> Event {
    keys.sign(echorelay::event::now(), 1, vec![], content.into())
}

pub fn event_at(
    keys: &Keys,
    kind: u16,
    created_at: u64,
    tags: Vec<Vec<&str>>,
    content: &str,
) -> Event {
    let tags = tags
        .into_iter()
        .map(|t| t.into_iter().map(str::to_string).collect())
        .collect();
    keys.sign(created_at, kind, tags, content.into())
}

pub fn id_of(event: &Event) -> String {
    event.id_hex()
}

/// Minimal HTTP/1.1 GET over a fresh TCP connection: (status, headers, body).
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    http_request(addr, "GET", path, headers, "").await
}

/// One HTTP/1.1 request with `Connection: close`: (status, lowercased head, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
    // A Host among `headers` replaces the one naming `addr`.
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    // A server may answer (413) and close before reading everything: the
    // write can fail and the reply is still there to read.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("http timeout");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Runs a full reconciliation as initiator over the socket.
pub async fn reconcile(
    c: &mut Raw,
    sub: &str,
    filter: Value,
    mine: &echorelay::negentropy::VectorStorage,
    frame: usize,
) -> (echorelay::negentropy::Diff, usize) {
    let mut neg = echorelay::negentropy::Negentropy::new(mine, frame).unwrap();
    let first = neg.initiate().unwrap();
    c.send(json!(["NEG-OPEN", sub, filter, hex::encode(first)]))
        .await;
    let mut diff = echorelay::negentropy::Diff::default();
    let mut rounds = 0;
    loop {
        let reply = c.recv().await;
        assert_eq!(reply[0], "NEG-MSG", "{reply}");
        assert_eq!(reply[1], sub);
        rounds += 1;
        let msg = hex::decode(reply[2].as_str().unwrap()).unwrap();
        match neg.reconcile_initiator(&msg, &mut diff).unwrap() {
            Some(next) => c.send(json!(["NEG-MSG", sub, hex::encode(next)])).await,
            None => break,
        }
    }
    c.send(json!(["NEG-CLOSE", sub])).await;
    diff.have.sort();
    diff.have.dedup();
    diff.need.sort();
    diff.need.dedup();
    (diff, rounds)
}

/// The value of an unlabelled series in `addr`'s `/metrics`.
pub async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (_, _, scrape) = http_get(addr, "/metrics", &[]).await;
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {scrape}"))
}
