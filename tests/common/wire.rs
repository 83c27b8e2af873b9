//! Bytes on the wire: a TCP proxy in front of a relay that counts what
//! passes each way (WebSocket frames after compression, TLS-free). Shared
//! with benches/ (included there by path).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes counted by a [`proxy`]: client → relay and relay → client.
#[derive(Default)]
pub struct Wire {
    pub up: AtomicU64,
    pub down: AtomicU64,
}

impl Wire {
    /// (up, down) so far.
    pub fn bytes(&self) -> (u64, u64) {
        (self.up.load(Relaxed), self.down.load(Relaxed))
    }
}

/// Copies one direction, counting into `count`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<Wire>,
    up: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        let counter = if up { &count.up } else { &count.down };
        counter.fetch_add(n as u64, Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A proxy on a free 127.0.0.1 port forwarding every connection to
/// `target`; its address and the shared counters.
pub async fn proxy(target: SocketAddr) -> (SocketAddr, Arc<Wire>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let wire = Arc::new(Wire::default());
    let counts = wire.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(relay) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = relay.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (relay_read, relay_write) = relay.into_split();
            tokio::spawn(pump(client_read, relay_write, counts.clone(), true));
            tokio::spawn(pump(relay_read, client_write, counts.clone(), false));
        }
    });
    (addr, wire)
}
