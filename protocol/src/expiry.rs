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
    /// The clock-rate bound (assumption A1) in parts per million: how much faster
    /// the etcd leader's clock may run than the agent's.
    pub drift_ppm: u32,
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
    /// lease outlives `bucket.deadline` even on an etcd leader whose clock runs
    /// `drift_ppm` fast.
    ///
    /// The padding is on the whole lease, not on each grant: a lease is shared by
    /// every later grant of its bucket, and a grant made just before the deadline
    /// relies on a lease that has already run almost all of its TTL on the
    /// leader's clock. A 300 s lease on a 1 % fast leader ends about 3 s early in
    /// the agent's time, far more than a 5 s grant's own drift allowance (hole 2 in
    /// `docs/safety.md`). Asked for `left × (1 + drift)`, it ends no earlier than
    /// `deadline`, whoever reuses it.
    pub fn lease_seconds(&self, bucket: Bucket, asked_at: Duration) -> i64 {
        let left = bucket.deadline.saturating_sub(asked_at).as_nanos();
        let padded = left + (left * u128::from(self.drift_ppm)).div_ceil(1_000_000);
        let secs = padded.div_ceil(1_000_000_000);
        i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRID: BucketGrid = BucketGrid {
        granularity: Duration::from_secs(1),
        drift_ppm: 0,
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

    #[test]
    fn regression_hole2_a_shared_lease_is_padded_for_a_fast_leader_clock() {
        // A 300 s bucket: on a leader 1 % fast, a lease of 300 s ends ~3 s early in
        // the agent's time, and a 5 s grant that reused it at 295 s would end at
        // ~297 s. Asked for 303 s, the lease ends at 300 s of agent time at the
        // earliest, whoever reuses it.
        let grid = BucketGrid {
            granularity: Duration::from_secs(1),
            drift_ppm: 10_000,
        };
        let bucket = Bucket {
            deadline: Duration::from_secs(300),
        };
        let seconds = grid.lease_seconds(bucket, Duration::ZERO);
        assert_eq!(seconds, 303);
        let leader_lifetime = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
        let in_agent_time = leader_lifetime.div_f64(1.01);
        assert!(in_agent_time >= bucket.deadline, "{in_agent_time:?}");
        // Rounds up, never down: 10.3 s left at 1 % is 10.403 s, so 11.
        assert_eq!(
            grid.lease_seconds(
                Bucket {
                    deadline: Duration::from_millis(20_300)
                },
                Duration::from_secs(10)
            ),
            11
        );
    }
}
