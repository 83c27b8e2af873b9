//! Per-IP governor rate limits for EVENT and REQ/COUNT. A connection over
//! its address's rate is paced, not refused: the reader waits until the
//! limiter allows the message (the socket is not read meanwhile, so TCP
//! backpressure slows the sender and nothing it sent is lost). Only a
//! message that would have to wait longer than `limits.max_pace_ms` (the
//! hard ceiling: an address far over its rate, e.g. many connections
//! sharing it) gets `rate-limited:`. (Connection counts are the HTTP
//! edge's, `edge::slots`.)

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A keyed limiter, or none when the configured rate is 0.
pub struct IpRate(Option<DefaultKeyedRateLimiter<IpAddr>>);

/// Whether a message may go on now.
pub enum Admission {
    Now,
    /// Over the rate: it may go after at least this long.
    After(Duration),
}

impl IpRate {
    pub fn new(per_second: u32, burst: u32) -> IpRate {
        IpRate(NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        }))
    }

    /// Takes one message's share of `ip`'s rate if it is there now.
    pub fn try_now(&self, ip: IpAddr) -> Admission {
        let Some(limiter) = &self.0 else {
            return Admission::Now;
        };
        match limiter.check_key(&ip) {
            Ok(_) => Admission::Now,
            Err(not_until) => Admission::After(not_until.wait_time_from(limiter.clock().now())),
        }
    }

    /// Waits until `ip` may send one more message; false (nothing taken)
    /// when that would take longer than `ceiling`.
    pub async fn pace(&self, ip: IpAddr, ceiling: Duration) -> bool {
        let deadline = Instant::now() + ceiling;
        loop {
            match self.try_now(ip) {
                Admission::Now => return true,
                Admission::After(wait) if Instant::now() + wait > deadline => return false,
                Admission::After(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Forgets idle keys so the map does not grow with every address seen.
    pub fn shrink(&self) {
        if let Some(l) = &self.0 {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_the_rate_waits_and_past_the_ceiling_refuses() {
        // One per second, burst 1 (the burst is never below the rate).
        let rate = IpRate::new(1, 1);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(matches!(rate.try_now(ip), Admission::Now));
        assert!(matches!(rate.try_now(ip), Admission::After(_)));
        // The next cell is ~1 s away: within a 3 s ceiling, not a 1 ms one.
        assert!(!rate.pace(ip, Duration::from_millis(1)).await);
        assert!(rate.pace(ip, Duration::from_secs(3)).await);
        assert!(matches!(IpRate::new(0, 0).try_now(ip), Admission::Now));
    }
}
