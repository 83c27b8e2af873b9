//! Open connections per client IP (`limits.max_connections_per_ip`; an
//! IPv6 client counts as its /64).
//!
//! A slot is taken when a connection is accepted (or, behind a trusted
//! proxy, when a WebSocket upgrade names its client) and given back when the
//! connection ends. At the cap, a new connection takes over the slot of that
//! IP's oldest connection that has not yet sent a whole request — the
//! trickler of a slowloris attack, or an idle pre-connect — which is closed;
//! only when every connection of the IP is serving requests is the new one
//! refused. So a flood of half-open connections can neither exceed the cap
//! nor lock a real client of the same address out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Counts open connections per IP.
pub struct IpSlots {
    by_ip: Mutex<HashMap<IpAddr, Vec<Held>>>,
    max: usize,
    next_id: AtomicU64,
}

/// One open connection as the counter sees it.
struct Held {
    id: u64,
    state: Arc<SlotState>,
}

/// Shared between the counter and the connection holding the slot.
#[derive(Default)]
struct SlotState {
    /// Set once a whole request arrived: the connection is a real client.
    serving: AtomicBool,
    /// Woken when the slot is taken over; the connection then closes.
    evicted: Notify,
}

/// An open connection's place in the count; released when dropped.
pub struct Slot {
    slots: Arc<IpSlots>,
    ip: IpAddr,
    id: u64,
    state: Arc<SlotState>,
}

impl IpSlots {
    pub fn new(max: usize) -> IpSlots {
        IpSlots {
            by_ip: Mutex::new(HashMap::new()),
            max,
            next_id: AtomicU64::new(1),
        }
    }

    /// A slot for a new connection from `ip`, evicting the oldest connection
    /// of `ip` that has not sent a request yet when at the cap; `None` when
    /// all of them are serving.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = bucket(ip);
        let mut by_ip = self.by_ip.lock();
        let held = by_ip.entry(ip).or_default();
        if held.len() >= self.max {
            let waiting = held.iter().position(|h| !h.state.serving.load(Relaxed))?;
            let evicted = held.remove(waiting);
            evicted.state.evicted.notify_one();
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let state = Arc::new(SlotState::default());
        held.push(Held {
            id,
            state: state.clone(),
        });
        Some(Slot {
            slots: self.clone(),
            ip,
            id,
            state,
        })
    }

    /// Open connections of `ip` (for tests and metrics).
    pub fn count(&self, ip: IpAddr) -> usize {
        self.by_ip.lock().get(&bucket(ip)).map_or(0, Vec::len)
    }
}

/// The address a slot is counted under: an IPv6 client is its /64 (one
/// host usually holds a whole /64 and could take a new address per
/// connection).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(octets.into())
        }
        v4 => v4,
    }
}

impl Slot {
    /// The connection delivered a whole request: it may no longer be evicted.
    pub fn mark_serving(&self) {
        self.state.serving.store(true, Relaxed);
    }

    /// Resolves when another connection took this slot over.
    pub fn evicted(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let state = self.state.clone();
        async move { state.evicted.notified().await }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_ip = self.slots.by_ip.lock();
        if let Some(held) = by_ip.get_mut(&self.ip) {
            held.retain(|h| h.id != self.id);
            if held.is_empty() {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// The slot of one HTTP connection, shared with its requests (a request
/// extension) so a WebSocket upgrade can carry it into the socket's task.
#[derive(Clone, Default)]
pub struct SlotCell(Arc<Mutex<Option<Slot>>>);

impl SlotCell {
    pub fn new(slot: Option<Slot>) -> SlotCell {
        SlotCell(Arc::new(Mutex::new(slot)))
    }

    /// Takes the slot (an upgraded connection keeps it for its lifetime).
    pub fn take(&self) -> Option<Slot> {
        self.0.lock().take()
    }

    pub(crate) fn mark_serving(&self) {
        if let Some(slot) = self.0.lock().as_ref() {
            slot.mark_serving();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_connection_takes_over_a_waiting_one_never_a_serving_one() {
        let slots = Arc::new(IpSlots::new(2));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let serving = slots.acquire(ip).unwrap();
        serving.mark_serving();
        let waiting = slots.acquire(ip).unwrap();
        let evicted = waiting.evicted();
        let newcomer = slots.acquire(ip).expect("takes the waiting slot");
        evicted.await;
        assert_eq!(slots.count(ip), 2);
        newcomer.mark_serving();
        assert!(slots.acquire(ip).is_none(), "both serving: refused");
        drop(waiting);
        assert_eq!(slots.count(ip), 2, "an evicted slot is already given back");
        drop(serving);
        assert_eq!(slots.count(ip), 1);
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(slots.acquire(other).is_some(), "counted per address");
        let one_host = Arc::new(IpSlots::new(1));
        let _first = one_host.acquire("2001:db8::1".parse().unwrap()).unwrap();
        _first.mark_serving();
        assert!(
            one_host
                .acquire("2001:db8::ffff".parse().unwrap())
                .is_none(),
            "an IPv6 /64 is one address"
        );
        drop(newcomer);
        assert_eq!(slots.count(ip), 0);
    }
}
