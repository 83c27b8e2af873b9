//! The ingest budget: bytes of EVENTs between the socket and their commit,
//! relay-wide (`limits.max_ingest_bytes`). Readers reserve room before they
//! queue a verify job and the room comes back after the commit, so a flood
//! waits in TCP buffers instead of memory. The writer looks at it too: it
//! does not linger for more events while the budget is tight, because what
//! it would wait for may be the room its own batch holds.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Room for some EVENT bytes; released when dropped (after the commit).
pub type Room = OwnedSemaphorePermit;

pub struct IngestBudget {
    room: Arc<Semaphore>,
    total: usize,
}

impl IngestBudget {
    /// `bytes` is clamped to what one semaphore acquire can take (and ≥ 1).
    pub fn new(bytes: usize) -> Arc<IngestBudget> {
        let total = bytes.clamp(1, u32::MAX as usize);
        Arc::new(IngestBudget {
            room: Arc::new(Semaphore::new(total)),
            total,
        })
    }

    /// Waits for room for `bytes`; a job bigger than the whole budget takes
    /// all of it. `None` only if the semaphore is closed, which nothing does.
    pub async fn reserve(&self, bytes: usize) -> Option<Room> {
        let wanted = bytes.clamp(1, self.total) as u32;
        self.room.clone().acquire_many_owned(wanted).await.ok()
    }

    /// Less than half the budget is free.
    pub fn is_tight(&self) -> bool {
        self.room.available_permits() < self.total / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_comes_back_when_dropped_and_oversized_jobs_take_it_all() {
        let budget = IngestBudget::new(100);
        assert!(!budget.is_tight());
        let big = budget.reserve(1_000_000).await.expect("room");
        assert!(budget.is_tight());
        drop(big);
        let small = budget.reserve(40).await.expect("room");
        assert!(!budget.is_tight());
        let more = budget.reserve(20).await.expect("room");
        assert!(budget.is_tight());
        drop((small, more));
        assert!(!budget.is_tight());
    }
}
