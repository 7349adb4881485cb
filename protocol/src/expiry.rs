//! Shared lease buckets: how a region maps a grant's TTL onto an etcd lease.
//!
//! etcd suffers with one lease per lock (keep-alive storms, expiry storms, slow
//! leader promotion), so a region attaches every grant to a lease *bucket*: a lease
//! that expires at a deadline on a fixed grid of `granularity`. A grant of `ttl`
//! made at `now` goes to the first bucket whose deadline is at or after
//! `now + ttl`, so grants never expire early and linger at most one granularity.
//!
//! etcd leases are whole seconds, start when the leader applies the grant (after we
//! asked), and expire late, never early. Asking for `ceil((deadline − asked_at)
//! / 1 s)` seconds therefore outlives the deadline.

use std::time::Duration;

/// The grid of bucket deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketGrid {
    /// Distance between bucket deadlines.
    pub granularity: Duration,
}

/// A bucket, identified by its deadline on the agent's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket {
    /// The lease in this bucket outlives this monotonic instant.
    pub deadline: Duration,
}

impl BucketGrid {
    /// The bucket for a grant of `ttl` made at monotonic time `now`.
    pub fn bucket_for(&self, now: Duration, ttl: Duration) -> Bucket {
        let grain = self.granularity.as_nanos().max(1);
        let wanted = (now + ttl).as_nanos();
        let deadline = wanted.div_ceil(grain) * grain;
        Bucket {
            deadline: Duration::from_nanos(u64::try_from(deadline).unwrap_or(u64::MAX)),
        }
    }

    /// Whole seconds of lease TTL to ask etcd for, when asking at `asked_at`, so the
    /// lease outlives `bucket.deadline`.
    pub fn lease_seconds(&self, bucket: Bucket, asked_at: Duration) -> i64 {
        let left = bucket.deadline.saturating_sub(asked_at);
        let secs = left.as_nanos().div_ceil(1_000_000_000);
        i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRID: BucketGrid = BucketGrid {
        granularity: Duration::from_secs(1),
    };

    #[test]
    fn rounds_up_never_down() {
        let b = GRID.bucket_for(Duration::from_millis(10_300), Duration::from_millis(5_000));
        assert_eq!(b.deadline, Duration::from_secs(16));
        let exact = GRID.bucket_for(Duration::from_secs(10), Duration::from_secs(5));
        assert_eq!(exact.deadline, Duration::from_secs(15));
    }

    #[test]
    fn grants_close_in_time_share_a_bucket() {
        let a = GRID.bucket_for(Duration::from_millis(10_100), Duration::from_secs(5));
        let b = GRID.bucket_for(Duration::from_millis(10_900), Duration::from_secs(5));
        assert_eq!(a, b);
    }

    #[test]
    fn lease_outlives_the_deadline() {
        let bucket = Bucket {
            deadline: Duration::from_secs(16),
        };
        assert_eq!(GRID.lease_seconds(bucket, Duration::from_millis(10_300)), 6);
        assert_eq!(GRID.lease_seconds(bucket, Duration::from_secs(11)), 5);
        // Already past: still at least one second, never zero or negative.
        assert_eq!(GRID.lease_seconds(bucket, Duration::from_secs(20)), 1);
    }
}
