//! Per-client token buckets: one client flooding acquires is refused with a retry
//! delay, and other clients are unaffected.

use std::collections::HashMap;
use std::time::Duration;

/// Buckets beyond this many clients are forgotten (a refilled bucket is the same
/// as a new one, so forgetting only ever lets a client through).
const MAX_CLIENTS: usize = 65_536;

/// A rate: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Monotonic time of the last refill.
    at: Duration,
}

/// Token buckets keyed by client identity.
#[derive(Debug)]
pub struct RateLimiter {
    /// The rate every client gets.
    rate: Rate,
    /// Buckets by client.
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    /// A limiter giving every client `rate`.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: HashMap::new(),
        }
    }

    /// Take one token for `client` at monotonic time `now`: `Ok` if allowed,
    /// otherwise how long until a token is available.
    pub fn take(&mut self, client: &str, now: Duration) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_CLIENTS && !self.buckets.contains_key(client) {
            self.buckets.clear();
        }
        let rate = self.rate;
        let bucket = self.buckets.entry(client.to_owned()).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        let elapsed = now.saturating_sub(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate.per_second).min(rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - bucket.tokens;
            Err(Duration::from_secs_f64(
                missing / rate.per_second.max(f64::MIN_POSITIVE),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_client_is_limited_and_others_are_not() {
        let mut limiter = RateLimiter::new(Rate {
            per_second: 10.0,
            burst: 3.0,
        });
        let t0 = Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(limiter.take("flood", t0), Ok(()));
        }
        let wait = limiter.take("flood", t0).expect_err("burst used up");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert_eq!(
            limiter.take("quiet", t0),
            Ok(()),
            "other clients unaffected"
        );
        // A tenth of a second later, one more token.
        assert_eq!(
            limiter.take("flood", t0 + Duration::from_millis(100)),
            Ok(())
        );
        assert!(
            limiter
                .take("flood", t0 + Duration::from_millis(100))
                .is_err()
        );
    }
}
