//! The ingest budget: bytes of EVENTs between the socket and their commit,
//! relay-wide (`limits.max_ingest_bytes`). Readers reserve room before they
//! queue a verify job and the room comes back after the commit, so a flood
//! waits in TCP buffers instead of memory. The writer looks at it too: it
//! does not linger for more events once its own batch holds half the
//! budget, because what it would wait for may need that room.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::event::Event;

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

    /// True when `held` bytes (a writer's batch) are half the budget or more.
    pub fn is_mostly(&self, held: usize) -> bool {
        held >= self.total / 2
    }
}

/// Roughly the memory an admitted event holds until its commit: what the
/// budget counts (parsed strings and their JSON twice, plus fixed parts).
pub fn footprint(event: &Event) -> usize {
    const FIXED: usize = 512;
    const PER_STRING: usize = 32;
    let tags: usize = event
        .tags
        .iter()
        .flatten()
        .map(|s| s.len() + PER_STRING)
        .sum();
    FIXED + 2 * event.content.len() + 2 * tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_comes_back_when_dropped_and_oversized_jobs_take_it_all() {
        let budget = IngestBudget::new(100);
        let big = budget.reserve(1_000_000).await.expect("room");
        assert_eq!(budget.room.available_permits(), 0);
        drop(big);
        let small = budget.reserve(40).await.expect("room");
        assert_eq!(budget.room.available_permits(), 60);
        drop(small);
        assert_eq!(budget.room.available_permits(), 100);
        assert!(!budget.is_mostly(49) && budget.is_mostly(50));
    }
}
