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
        // A negative or non-finite rate refills nothing (NaN would refill all).
        let per_second = if rate.per_second.is_finite() && rate.per_second > 0.0 {
            rate.per_second
        } else {
            0.0
        };
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - bucket.tokens;
            // A zero, tiny or non-finite rate never refills: the wait is "forever",
            // never a panic (regression: `Duration::from_secs_f64` overflowed).
            Err(Duration::try_from_secs_f64(missing / per_second).unwrap_or(Duration::MAX))
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

    #[test]
    fn regression_a_zero_or_non_finite_rate_refuses_without_panicking() {
        for per_second in [0.0, f64::MIN_POSITIVE, -1.0, f64::NAN] {
            let mut limiter = RateLimiter::new(Rate {
                per_second,
                burst: 1.0,
            });
            let t0 = Duration::from_secs(1);
            assert_eq!(limiter.take("one", t0), Ok(()), "the burst is still there");
            let wait = limiter.take("one", t0).expect_err("never refills");
            assert_eq!(wait, Duration::MAX, "rate {per_second}");
        }
    }
}
