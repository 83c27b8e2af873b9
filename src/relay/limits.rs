//! Per-IP governor rate limits for EVENT and REQ/COUNT: exceeding a rate gets
//! `rate-limited:`. (Connection counts are the HTTP edge's, `edge::slots`.)

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

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
