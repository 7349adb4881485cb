//! Delays between attempts while an acquire waits for a held resource.

use std::time::Duration;

/// Jittered exponential backoff, capped, that wakes early when the holder's time
/// is known to run out sooner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(25),
            max: Duration::from_millis(1_000),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0-based, after a refusal).
    ///
    /// `jitter` is a uniform random number in `[0, 1)`; the delay is drawn from
    /// `[base/2, base)` ("equal jitter"), so contenders spread out but none starves.
    /// `holder_left` is the holder's remaining time, when known: there is no point
    /// sleeping much past it.
    pub fn delay(&self, attempt: u32, jitter: f64, holder_left: Option<Duration>) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        let delay = base / 2 + (base / 2).mul_f64(jitter);
        match holder_left {
            Some(left) => delay.min(left + Duration::from_millis(5)),
            None => delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0.0, None), Duration::from_micros(12_500));
        assert_eq!(b.delay(2, 0.0, None), Duration::from_millis(50));
        assert_eq!(b.delay(30, 0.999_999, None).as_millis(), 999);
    }

    #[test]
    fn wakes_when_the_holder_runs_out() {
        let b = Backoff::default();
        assert_eq!(
            b.delay(10, 0.5, Some(Duration::from_millis(20))),
            Duration::from_millis(25)
        );
    }
}
