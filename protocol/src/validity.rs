//! How long a caller may rely on a lock.
//!
//! A region's grant lives at least `ttl` from the moment the region wrote it, which
//! is after the coordinator sent the proposal. So, measured on the coordinator's
//! monotonic clock from just before the first proposal was sent, the lock lasts at
//! least `ttl`, give or take the difference in clock *rates* between the machines.
//! We report `ttl − elapsed − drift`, where `drift` bounds that rate difference,
//! and the caller counts it from when it sent its request (earlier still).

use std::time::Duration;

/// How much clocks may disagree, from configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftAllowance {
    /// Maximum relative rate difference between any two clocks (0.01 = 1%).
    pub rate: f64,
    /// A fixed margin on top, for scheduling noise.
    pub margin: Duration,
}

impl Default for DriftAllowance {
    fn default() -> Self {
        Self {
            rate: 0.01,
            margin: Duration::from_millis(10),
        }
    }
}

impl DriftAllowance {
    /// The drift allowance for a lock with this TTL.
    pub fn for_ttl(&self, ttl: Duration) -> Duration {
        ttl.mul_f64(self.rate) + self.margin
    }

    /// The validity to report for a grant of `ttl` that took `elapsed` (measured from
    /// before the first proposal was sent). `None` when nothing is left to rely on.
    pub fn validity(&self, ttl: Duration, elapsed: Duration) -> Option<Duration> {
        ttl.checked_sub(elapsed)?
            .checked_sub(self.for_ttl(ttl))
            .filter(|left| !left.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracts_elapsed_and_drift() {
        let drift = DriftAllowance::default();
        // 10 s ttl: drift = 100 ms + 10 ms.
        assert_eq!(
            drift.validity(Duration::from_secs(10), Duration::from_millis(90)),
            Some(Duration::from_millis(9_800))
        );
    }

    #[test]
    fn nothing_left_is_none_not_zero_or_negative() {
        let drift = DriftAllowance::default();
        assert_eq!(
            drift.validity(Duration::from_secs(1), Duration::from_secs(2)),
            None
        );
        assert_eq!(
            drift.validity(Duration::from_millis(1_000), Duration::from_millis(980)),
            None
        );
    }

    #[test]
    fn is_never_more_than_ttl() {
        let drift = DriftAllowance {
            rate: 0.0,
            margin: Duration::ZERO,
        };
        let ttl = Duration::from_millis(1_500);
        assert_eq!(drift.validity(ttl, Duration::ZERO), Some(ttl));
    }
}
