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

    #[test]
    fn the_wait_is_the_time_until_the_missing_fraction_of_a_token_refills() {
        let mut limiter = RateLimiter::new(Rate {
            per_second: 2.0,
            burst: 1.0,
        });
        let t0 = Duration::from_secs(100);
        assert_eq!(limiter.take("c", t0), Ok(()));
        // A quarter of a second refills half a token: the other half takes 250 ms.
        assert_eq!(
            limiter.take("c", t0 + Duration::from_millis(250)),
            Err(Duration::from_millis(250))
        );
        assert_eq!(limiter.take("c", t0 + Duration::from_millis(500)), Ok(()));
    }

    #[test]
    fn a_negative_or_infinite_rate_neither_drains_nor_refills_the_bucket() {
        for per_second in [-1.0, f64::NEG_INFINITY, f64::INFINITY] {
            let mut limiter = RateLimiter::new(Rate {
                per_second,
                burst: 2.0,
            });
            let t0 = Duration::from_secs(1);
            assert_eq!(limiter.take("c", t0), Ok(()), "rate {per_second}");
            // Time passing neither takes the second burst token away...
            let later = t0 + Duration::from_secs(10);
            assert_eq!(limiter.take("c", later), Ok(()), "rate {per_second}");
            // ...nor adds any back.
            let much_later = t0 + Duration::from_secs(1_000);
            assert_eq!(
                limiter.take("c", much_later),
                Err(Duration::MAX),
                "rate {per_second}"
            );
        }
    }

    #[test]
    fn at_capacity_a_known_client_keeps_its_bucket() {
        let mut limiter = RateLimiter::new(Rate {
            per_second: 1.0,
            burst: 1.0,
        });
        let t0 = Duration::from_secs(1);
        assert_eq!(limiter.take("flood", t0), Ok(()));
        for i in 1..MAX_CLIENTS {
            assert_eq!(limiter.take(&format!("c{i}"), t0), Ok(()));
        }
        assert_eq!(limiter.buckets.len(), MAX_CLIENTS);
        // Forgetting its empty bucket would hand the flooding client a fresh burst.
        assert!(limiter.take("flood", t0).is_err());
        assert_eq!(limiter.buckets.len(), MAX_CLIENTS);
    }

    #[test]
    fn at_capacity_a_new_client_makes_the_limiter_forget_the_old_buckets() {
        let mut limiter = RateLimiter::new(Rate {
            per_second: 1.0,
            burst: 1.0,
        });
        let t0 = Duration::from_secs(1);
        for i in 0..MAX_CLIENTS {
            assert_eq!(limiter.take(&format!("c{i}"), t0), Ok(()));
        }
        assert_eq!(limiter.take("new", t0), Ok(()));
        assert_eq!(limiter.buckets.len(), 1, "memory stays bounded");
        // A forgotten bucket is a full one: that only ever lets a client through.
        assert_eq!(limiter.take("c0", t0), Ok(()));
    }
}
