//! The HTTP edge: the accept loop both listeners (relay and control API) run,
//! so that every connection is bounded before a handler sees it.
//!
//! - each request's headers must arrive within `server.header_timeout_secs`
//!   (hyper closes the connection otherwise; an idle keep-alive connection
//!   waiting for its next request is closed the same way);
//! - a request body may pause at most `server.body_timeout_secs` between
//!   chunks (the handler sees an error, the connection is closed);
//! - every connection holds a per-IP slot ([`slots`]), so the cap covers
//!   plain HTTP as well as WebSocket upgrades, and half-open connections
//!   are the first to go when an address is at its cap.
//!
//! A connection from a trusted proxy (when `server.real_ip_header` is set)
//! is not capped here: its client is only known from the headers, and the
//! WebSocket upgrade takes a slot for that client.

mod proxies;
mod slots;

pub use proxies::{canonical, IpRange, TrustedProxies};
pub use slots::{IpSlots, Slot, SlotCell};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// How long open HTTP exchanges may finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(5);

/// The answer to a connection over its address's cap.
const OVER_CAP: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\n\
content-length: 39\r\nconnection: close\r\n\r\ntoo many connections from this address\n";

/// The bounds every connection of one listener lives within.
pub struct Edge {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub slots: Arc<IpSlots>,
    /// Peers not capped at accept: the trusted proxies, when their clients'
    /// addresses are read from a header. Empty otherwise.
    pub uncapped: TrustedProxies,
    /// Native TLS: every connection's handshake first, within the header
    /// timeout. `None`: plain HTTP.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

/// Marks a request that arrived over this listener's own TLS (its URLs are
/// https:// and wss://).
#[derive(Debug, Clone, Copy)]
pub struct Secure;

impl Edge {
    /// The bounds of `server` with `slots` as the per-IP count, over `tls`
    /// when set.
    pub fn new(
        server: &crate::config::ServerConfig,
        slots: Arc<IpSlots>,
        tls: Option<Arc<crate::tls::ServerTls>>,
    ) -> Edge {
        let uncapped = if server.real_ip_header.is_empty() {
            TrustedProxies::default()
        } else {
            TrustedProxies::parse(&server.trusted_proxies).unwrap_or_default()
        };
        Edge {
            header_timeout: Duration::from_secs(server.header_timeout_secs.max(1)),
            body_timeout: Duration::from_secs(server.body_timeout_secs.max(1)),
            slots,
            uncapped,
            tls,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open
/// exchanges finish for a few seconds.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    edge: Edge,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let edge = Arc::new(edge);
    // Every connection task holds a receiver: `closed()` is "all drained".
    let (stopping, _) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => accept(&edge, &app, stopping.subscribe(), stream, peer),
            Err(e) => accept_error(e).await,
        }
    }
    drop(listener);
    let _ = stopping.send(true);
    let _ = tokio::time::timeout(DRAIN, stopping.closed()).await;
    Ok(())
}

/// Starts serving one accepted connection, or refuses it (429) when its
/// address is at the cap with every connection busy.
fn accept(
    edge: &Arc<Edge>,
    app: &Router,
    stopping: watch::Receiver<bool>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    // Small frames (OK, EOSE) must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let ip = canonical(peer.ip());
    let slot = if edge.uncapped.contains(ip) {
        None
    } else {
        match edge.slots.acquire(ip) {
            Some(slot) => Some(slot),
            None => {
                tokio::spawn(refuse(stream));
                return;
            }
        }
    };
    let evicted = slot.as_ref().map(Slot::evicted);
    let cell = SlotCell::new(slot);
    let secure = edge.tls.is_some();
    let (app, body_timeout) = (app.clone(), edge.body_timeout);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        cell.mark_serving();
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(cell.clone());
        if secure {
            request.extensions_mut().insert(Secure);
        }
        let request =
            request.map(|body| axum::body::Body::new(TimeoutBody::new(body_timeout, body)));
        let (method, path) = (request.method().clone(), request.uri().path().to_string());
        app.clone().oneshot(request).map(move |served| {
            if let Ok(response) = &served {
                if response.status().is_client_error() {
                    // Refusals are logged, at debug: an operator debugging
                    // a client can see them, a flood cannot fill the log.
                    let status = response.status().as_u16();
                    tracing::debug!(%peer, %method, path, status, "HTTP request refused");
                }
            }
            served
        })
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(edge.header_timeout);
    let Some(tls) = &edge.tls else {
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::spawn(run_connection(connection, evicted, stopping, peer));
        return;
    };
    let (acceptor, handshake_timeout) = (tls.acceptor(), edge.header_timeout);
    tokio::spawn(async move {
        // A handshake is bounded like a request head: a silent client
        // cannot hold the slot.
        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let connection = http
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                run_connection(connection, evicted, stopping, peer).await;
            }
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    });
}

/// Drives one connection to its end: closed by either side, replaced at the
/// cap (dropped at once), or finishing its exchange once shutdown begins.
async fn run_connection<C>(
    connection: C,
    evicted: Option<impl Future<Output = ()>>,
    mut stopping: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    C: Future + GracefulShutdown,
{
    tokio::pin!(connection);
    let evicted = async move {
        match evicted {
            Some(evicted) => evicted.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = connection.as_mut() => return,
        () = evicted => {
            tracing::debug!(%peer, "half-open connection replaced at the cap");
            return;
        }
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().begin_shutdown();
    let _ = connection.await;
}

/// A hyper connection that can stop taking requests after the current one.
trait GracefulShutdown {
    fn begin_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulShutdown for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn begin_shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Whether `error` or anything in its chain of sources is a `T`: how a
/// handler tells a body cut by the edge (timeout, NIP-98 payload mismatch,
/// size limit) from other failures.
pub fn caused_by<T: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<T>() {
            return true;
        }
        cause = e.source();
    }
    false
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(OVER_CAP).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Errors of one connection (reset before accept) are skipped; others (out
/// of file descriptors) pause accepting briefly instead of spinning.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept failed; pausing");
    tokio::time::sleep(Duration::from_millis(200)).await;
}
