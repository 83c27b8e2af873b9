//! What the sync files share, below all of them: the options and report of
//! a run, its progress records, its errors, and the local side a run reads
//! from and writes to. (Kept apart so client, reconcile, ingest, peer and
//! live depend on these types instead of on each other.)

use std::sync::Arc;
use std::time::Duration;

use crate::event::Keys;
use crate::filter::Filter;
use crate::relay::policy::WritePolicy;
use crate::store::Store;
use crate::verify::VerifyHandle;
use crate::writer::WriterHandle;

pub use crate::peers::Direction;

/// How one run behaves.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub direction: Direction,
    pub filter: Filter,
    /// Our frame limit (0: none, else at least 4096).
    pub frame_size_limit: usize,
    /// Longest wait for connecting and for any single reply.
    pub timeout: Duration,
    /// Ids per fetch REQ.
    pub fetch_batch: usize,
    /// Fetch REQs in flight at once.
    pub fetch_in_flight: usize,
    /// EVENTs sent and not yet acknowledged.
    pub upload_window: usize,
    /// The node key configured for the peer. When the peer proves it holds
    /// it (NODE-AUTH), it is a mesh node for this run: graph and echo events
    /// are part of the sets. Otherwise, or without a key, only public
    /// events flow.
    pub peer_key: Option<[u8; 32]>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            direction: Direction::Down,
            filter: Filter::default(),
            frame_size_limit: 250_000,
            timeout: Duration::from_secs(30),
            fetch_batch: 250,
            fetch_in_flight: 8,
            upload_window: 500,
            peer_key: None,
        }
    }
}

/// Progress of a run, reported as it goes (the control API streams these;
/// field names are those of the seed's `SyncProgress`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Progress {
    pub peer_url: String,
    pub round: u64,
    pub have_count: u64,
    pub need_count: u64,
    pub fetched_count: u64,
    pub sent_count: u64,
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a finished run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub rounds: u64,
    pub have: u64,
    pub need: u64,
    /// Fetched events stored (or already present).
    pub fetched: u64,
    /// Fetched events refused locally (bad signature, not asked for, policy).
    pub fetch_refused: u64,
    /// The fetched ids refused locally with a reason (at most
    /// [`MAX_LISTED_REFUSALS`]), hex.
    pub fetch_refusals: Vec<(String, String)>,
    /// Needed ids skipped because an earlier run's copy was refused by our
    /// write policy or a deletion.
    pub skipped_refused: u64,
    /// Sent events the peer accepted (duplicates included).
    pub sent: u64,
    /// Sent events the peer refused, with its reason.
    pub refused: Vec<(String, String)>,
    /// The peer proved it is the configured mesh node: graph and echo
    /// events were part of the run.
    pub mesh: bool,
    /// Why a peer configured with a node key was treated as a public relay.
    pub unproven: Option<String>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("timed out after {0:?} waiting for the peer")]
    Timeout(Duration),
    #[error("the peer closed the connection")]
    Closed,
    #[error("the peer does not support NIP-77: {0}")]
    NoNegentropy(String),
    #[error("the peer refused: {0}")]
    Refused(crate::refusal::Refusal),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("local store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The local side: where our set comes from and where fetched events go.
#[derive(Clone)]
pub struct Local {
    pub store: Arc<Store>,
    pub writer: WriterHandle,
    pub verify: VerifyHandle,
    /// Our write policy, applied to fetched events like to client EVENTs.
    pub policy: Option<Arc<WritePolicy>>,
    /// Answers peers' NIP-42 challenges, so they can tell us from a stranger.
    pub node_key: Option<Arc<Keys>>,
    /// Offer permessage-deflate to peers (`server.permessage_deflate`).
    pub deflate: bool,
}
