//! Per-IP limits: connection counts and governor rate limits for EVENT and
//! REQ/COUNT. Exceeding a rate gets `rate-limited:`; exceeding the connection
//! count gets HTTP 429 before the upgrade.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

/// A keyed limiter, or none when the configured rate is 0.
pub struct IpRate(Option<DefaultKeyedRateLimiter<IpAddr>>);

impl IpRate {
    pub fn new(per_second: u32, burst: u32) -> IpRate {
        IpRate(NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        }))
    }

    /// True when `ip` may proceed.
    pub fn check(&self, ip: IpAddr) -> bool {
        self.0.as_ref().is_none_or(|l| l.check_key(&ip).is_ok())
    }

    /// Forgets idle keys so the map does not grow with every address seen.
    pub fn shrink(&self) {
        if let Some(l) = &self.0 {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Counts open connections per IP.
pub struct ConnectionCounter {
    counts: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

/// Releases its slot when dropped.
pub struct ConnectionSlot {
    counter: Arc<ConnectionCounter>,
    ip: IpAddr,
}

impl ConnectionCounter {
    pub fn new(max: usize) -> ConnectionCounter {
        ConnectionCounter {
            counts: Mutex::new(HashMap::new()),
            max,
        }
    }

    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut counts = self.counts.lock();
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            counter: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.counter.counts.lock();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}
