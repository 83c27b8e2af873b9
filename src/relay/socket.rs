//! The relay's WebSocket layer: yawc, for RFC 6455 plus RFC 7692
//! permessage-deflate (tungstenite, under axum's `ws`, has no compression).
//! Deflate is negotiated when the client offers it and
//! `server.permessage_deflate` is on. By default the relay imposes no
//! context takeover in both directions and takes deflate state from one
//! shared pool for the message being (de)compressed, so an idle connection
//! costs a few KiB instead of ~350 KiB (`server.deflate_context_takeover`
//! trades that memory for ~2× better compression); `server.deflate_level`
//! trades CPU for ratio (docs/PERFORMANCE.md has both measured). Message limits apply to
//! the decompressed size, so a deflate bomb stops at the socket limit.
//!
//! [`Frames`] is the socket as a `Stream` of results and a `Sink` of frames:
//! yawc's own `Stream` ends silently on an error, and the reader must tell
//! an oversized message from a clean end.

use std::pin::Pin;
use std::task::{Context, Poll};

use yawc::{CompressionLevel, DeflatePool, Frame, Options, WebSocketError};

use crate::config::Config;

/// The upgraded connection.
pub type Socket = yawc::HttpWebSocket;

/// The WebSocket layer refuses (close 1009) messages over this multiple of
/// `max_message_size` (or over `max_negentropy_message_size`, if larger);
/// below that, an oversized message is refused in its own form and the
/// connection stays.
const HARD_LIMIT_FACTOR: usize = 4;

/// The sync client compresses messages from this size (an OK or a REQ
/// gains nothing and costs a deflate call).
const CLIENT_COMPRESSION_THRESHOLD: usize = 128;

/// The largest message a connection reads before closing with 1009.
fn hard_limit(config: &Config) -> usize {
    let limits = &config.limits;
    limits
        .max_message_size
        .saturating_mul(HARD_LIMIT_FACTOR)
        .max(limits.max_negentropy_message_size)
}

/// The options every relay connection is upgraded with (one pool shared by
/// all of them: clones of the options share it).
pub fn options(config: &Config) -> Options {
    // yawc's limits are exclusive and bound the decompressed size. The
    // second bounds a message assembled from fragments, which the socket
    // holds until its last fragment: no more than 4 × max_message_size, so
    // a few compressed bytes cannot pin max_negentropy_message_size each.
    // (UTF-8 is checked by the reader, which owns the 1007 close.)
    let limit = hard_limit(config).saturating_add(1);
    let fragmented = config
        .limits
        .max_message_size
        .saturating_mul(HARD_LIMIT_FACTOR)
        .saturating_add(1);
    let base = Options::default().with_limits(limit, fragmented);
    let server = &config.server;
    if !server.permessage_deflate {
        return base.without_compression();
    }
    let compressed = with_deflate(base, server.deflate_level, server.deflate_min_size);
    if server.deflate_context_takeover {
        return compressed;
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    compressed
        .server_no_context_takeover()
        .client_no_context_takeover()
        .with_deflate_pool(DeflatePool::new(threads * 2))
}

/// `options` with permessage-deflate at zlib `level`, messages under
/// `min_size` bytes sent as they are.
pub(crate) fn with_deflate(options: Options, level: u32, min_size: usize) -> Options {
    options
        .with_compression_level(CompressionLevel::new(level))
        .with_compression_threshold(min_size)
}

/// The sync client's deflate: level 6 with context takeover (one socket
/// per peer; the peer decides what it agrees to).
pub(crate) fn client_deflate(options: Options) -> Options {
    with_deflate(options, 6, CLIENT_COMPRESSION_THRESHOLD)
}

/// A socket whose stream yields errors instead of ending at them.
pub struct Frames(pub Socket);

impl futures_util::Stream for Frames {
    type Item = yawc::Result<Frame>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match std::task::ready!(self.0.poll_next_frame(cx)) {
            Err(WebSocketError::ConnectionClosed) => Poll::Ready(None),
            other => Poll::Ready(Some(other)),
        }
    }
}

impl futures_util::Sink<Frame> for Frames {
    type Error = WebSocketError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<yawc::Result<()>> {
        Pin::new(&mut self.0).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Frame) -> yawc::Result<()> {
        Pin::new(&mut self.0).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<yawc::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<yawc::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
