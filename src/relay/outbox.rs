//! A connection's outbound queue with a byte budget. Everything sent to a
//! client (replies, stored events, live events) goes through it; a reader
//! that falls more than `max_pending_outbound_bytes` behind is cut off
//! instead of growing our memory, and nobody else ever waits for it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::{mpsc, Notify};

/// What the socket writer task is asked to do.
pub enum Frame {
    Text(String),
    /// Several text frames queued at once (the OKs of one write group).
    Texts(Vec<String>),
    /// Send a close frame with this code and reason, then stop.
    Close(u16, &'static str),
    /// End the connection: send the close frame the socket owes (an echo,
    /// or its answer to a bad frame), else a normal one, then stop.
    Finish,
}

pub struct Outbox {
    tx: mpsc::UnboundedSender<Frame>,
    pending: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
    overflow: Notify,
    /// The socket sent (or is sending) its close: no frame may follow it.
    closing: AtomicBool,
}

impl Outbox {
    pub fn new(limit: usize) -> (Outbox, mpsc::UnboundedReceiver<Frame>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox {
            tx,
            pending: AtomicUsize::new(0),
            limit,
            overflowed: AtomicBool::new(false),
            overflow: Notify::new(),
            closing: AtomicBool::new(false),
        };
        (outbox, rx)
    }

    /// Queues a text frame. Returns false once the connection is over its
    /// budget (it is then being dropped) or gone.
    pub fn send(&self, text: String) -> bool {
        self.reserve(text.len()) && self.tx.send(Frame::Text(text)).is_ok()
    }

    /// Queues several text frames with one wake-up of the socket writer.
    pub fn send_all(&self, texts: Vec<String>) -> bool {
        let len = texts.iter().map(String::len).sum();
        match texts.len() {
            0 => true,
            _ => self.reserve(len) && self.tx.send(Frame::Texts(texts)).is_ok(),
        }
    }

    /// Counts `len` bytes against the budget; false (and the connection
    /// marked for dropping) when they do not fit.
    fn reserve(&self, len: usize) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        let before = self.pending.fetch_add(len, Ordering::Relaxed);
        if before + len > self.limit {
            self.pending.fetch_sub(len, Ordering::Relaxed);
            self.overflowed.store(true, Ordering::Relaxed);
            self.overflow.notify_one();
            return false;
        }
        true
    }

    /// Asks the writer task to close the socket after what is queued.
    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.tx.send(Frame::Close(code, reason));
    }

    /// Marks the connection as closing: the writer sends nothing more.
    pub fn begin_closing(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Asks the writer task to end the connection after what is queued.
    pub fn finish(&self) {
        let _ = self.tx.send(Frame::Finish);
    }

    /// Called by the socket writer once a frame left the process.
    pub fn sent(&self, len: usize) {
        self.pending.fetch_sub(len, Ordering::Relaxed);
    }

    pub fn is_overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Resolves when the budget was exceeded.
    pub async fn overflowed(&self) {
        if self.is_overflowed() {
            return;
        }
        self.overflow.notified().await;
    }
}
