//! Time, read through a trait so tests can jump or stop it.
//!
//! Validity and lease arithmetic use only [`Clock::monotonic`]; wall-clock time
//! ([`Clock::unix_micros`]) is used only as a hint when choosing a fencing token,
//! where a wrong clock costs a retry, never safety.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A source of time for one process.
pub trait Clock: Send + Sync + Debug {
    /// Time elapsed since an arbitrary fixed origin; never goes backwards.
    fn monotonic(&self) -> Duration;
    /// Microseconds since the Unix epoch (may jump; only a hint).
    fn unix_micros(&self) -> u64;
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The real clock of this machine.
#[derive(Debug, Clone)]
pub struct SystemClock {
    /// Origin of the monotonic readings.
    origin: Instant,
}

impl SystemClock {
    /// A system clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// A shared handle to a new system clock.
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    #[allow(clippy::disallowed_methods)] // this is the one place allowed to read wall time
    fn unix_micros(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to (for tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    /// Monotonic reading in nanoseconds.
    mono_nanos: AtomicU64,
    /// Wall-clock reading in microseconds.
    unix_micros: AtomicU64,
}

impl ManualClock {
    /// A manual clock at monotonic zero and the given wall time.
    pub fn new(unix_micros: u64) -> Arc<Self> {
        Arc::new(Self {
            mono_nanos: AtomicU64::new(0),
            unix_micros: AtomicU64::new(unix_micros),
        })
    }

    /// Move both readings forward.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.mono_nanos.fetch_add(nanos, Ordering::SeqCst);
        self.unix_micros.fetch_add(nanos / 1000, Ordering::SeqCst);
    }

    /// Set the wall clock (a jump); the monotonic reading is unaffected.
    pub fn set_unix_micros(&self, micros: u64) {
        self.unix_micros.store(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.mono_nanos.load(Ordering::SeqCst))
    }

    fn unix_micros(&self) -> u64 {
        self.unix_micros.load(Ordering::SeqCst)
    }
}

/// The system clock with injectable faults (for fault tests): a wall-clock offset
/// that can jump either way, forward jumps of the monotonic clock (which, by
/// contract, never goes backwards), and a monotonic clock that runs fast or slow.
#[derive(Debug)]
pub struct SkewedClock {
    /// The real clock underneath.
    system: SystemClock,
    /// Added to the wall clock, in microseconds (may be negative).
    wall_offset_us: std::sync::atomic::AtomicI64,
    /// The monotonic reading is `value + (system − since) × rate`.
    mono: std::sync::Mutex<Rated>,
}

#[derive(Debug, Clone, Copy)]
struct Rated {
    /// System monotonic time when the rate last changed.
    since: Duration,
    /// Our reading at that moment.
    value: Duration,
    /// How fast we run relative to the system clock.
    rate: f64,
}

impl Default for SkewedClock {
    fn default() -> Self {
        let system = SystemClock::new();
        let now = system.monotonic();
        Self {
            system,
            wall_offset_us: std::sync::atomic::AtomicI64::new(0),
            mono: std::sync::Mutex::new(Rated {
                since: now,
                value: now,
                rate: 1.0,
            }),
        }
    }
}

impl SkewedClock {
    /// A clock without faults yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Jump the wall clock by `by_us` microseconds (either way).
    pub fn jump_wall(&self, by_us: i64) {
        self.wall_offset_us.fetch_add(by_us, Ordering::SeqCst);
    }

    /// Jump the monotonic clock forward.
    pub fn jump_monotonic(&self, by: Duration) {
        self.rebase(|r| r.value += by);
    }

    /// Run the monotonic clock at `rate` × real time from now on (1.0: normal).
    pub fn set_rate(&self, rate: f64) {
        self.rebase(|r| r.rate = rate.max(0.0));
    }

    fn rebase(&self, change: impl FnOnce(&mut Rated)) {
        let mut mono = self.mono.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.system.monotonic();
        let advanced = now.saturating_sub(mono.since).mul_f64(mono.rate);
        mono.value += advanced;
        mono.since = now;
        change(&mut mono);
    }
}

impl Clock for SkewedClock {
    fn monotonic(&self) -> Duration {
        let mono = *self.mono.lock().unwrap_or_else(|e| e.into_inner());
        mono.value
            + self
                .system
                .monotonic()
                .saturating_sub(mono.since)
                .mul_f64(mono.rate)
    }

    fn unix_micros(&self) -> u64 {
        let offset = self.wall_offset_us.load(Ordering::SeqCst);
        self.system.unix_micros().saturating_add_signed(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2020-01-01T00:00:00Z in microseconds since the Unix epoch.
    const START_OF_2020_US: u64 = 1_577_836_800_000_000;
    const ONE_HOUR_US: i64 = 3_600_000_000;

    #[test]
    fn system_clock_unix_time_is_after_2020() {
        assert!(SystemClock::new().unix_micros() > START_OF_2020_US);
    }

    #[test]
    fn system_clock_monotonic_time_advances_with_real_time() {
        let clock = SystemClock::new();
        let before = clock.monotonic();
        std::thread::sleep(Duration::from_millis(5));
        let after = clock.monotonic();
        assert!(
            after >= before + Duration::from_millis(5),
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn manual_clock_starts_at_monotonic_zero_and_the_given_wall_time() {
        let clock = ManualClock::new(START_OF_2020_US);
        assert_eq!(clock.monotonic(), Duration::ZERO);
        assert_eq!(clock.unix_micros(), START_OF_2020_US);
    }

    #[test]
    fn manual_clock_advance_moves_both_monotonic_and_unix_time_by_the_same_amount() {
        let clock = ManualClock::new(START_OF_2020_US);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
        assert_eq!(clock.unix_micros(), START_OF_2020_US + 1_500_000);
        clock.advance(Duration::from_micros(7));
        assert_eq!(clock.monotonic(), Duration::from_micros(1_500_007));
        assert_eq!(clock.unix_micros(), START_OF_2020_US + 1_500_007);
    }

    #[test]
    fn manual_clock_set_unix_micros_jumps_the_wall_clock_either_way_but_not_monotonic_time() {
        let clock = ManualClock::new(START_OF_2020_US);
        clock.advance(Duration::from_secs(3));
        clock.set_unix_micros(42);
        assert_eq!(clock.unix_micros(), 42);
        assert_eq!(clock.monotonic(), Duration::from_secs(3));
        clock.set_unix_micros(START_OF_2020_US * 2);
        assert_eq!(clock.unix_micros(), START_OF_2020_US * 2);
        assert_eq!(clock.monotonic(), Duration::from_secs(3));
    }

    #[test]
    fn skewed_clock_without_faults_follows_the_system_clock() {
        let clock = SkewedClock::new();
        let system = SystemClock::new();
        let (skewed_us, system_us) = (clock.unix_micros(), system.unix_micros());
        assert!(skewed_us > START_OF_2020_US);
        assert!(
            skewed_us.abs_diff(system_us) < 60_000_000,
            "{skewed_us} vs {system_us}"
        );
        let before = clock.monotonic();
        std::thread::sleep(Duration::from_millis(5));
        let after = clock.monotonic();
        assert!(
            after >= before + Duration::from_millis(5),
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn skewed_clock_jump_wall_shifts_unix_time_forward_and_back() {
        let clock = SkewedClock::new();
        let system = SystemClock::new();
        // Generous slack: the two clocks are read a few instructions apart.
        let slack = 60_000_000;
        clock.jump_wall(ONE_HOUR_US);
        let (skewed, real) = (clock.unix_micros(), system.unix_micros());
        assert!(
            skewed.abs_diff(real + ONE_HOUR_US as u64) < slack,
            "{skewed} vs {real}"
        );
        clock.jump_wall(-3 * ONE_HOUR_US);
        let (skewed, real) = (clock.unix_micros(), system.unix_micros());
        assert!(
            skewed.abs_diff(real - 2 * ONE_HOUR_US as u64) < slack,
            "{skewed} vs {real}"
        );
    }

    #[test]
    fn skewed_clock_jump_monotonic_moves_monotonic_time_forward_and_it_keeps_running() {
        let clock = SkewedClock::new();
        let before = clock.monotonic();
        clock.jump_monotonic(Duration::from_secs(3_600));
        let jumped = clock.monotonic();
        assert!(
            jumped >= before + Duration::from_secs(3_600),
            "{before:?} -> {jumped:?}"
        );
        assert!(
            jumped < before + Duration::from_secs(3_660),
            "{before:?} -> {jumped:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
        let later = clock.monotonic();
        assert!(
            later >= jumped + Duration::from_millis(5),
            "{jumped:?} -> {later:?}"
        );
    }

    #[test]
    fn skewed_clock_set_rate_zero_stops_monotonic_time_and_keeps_what_had_elapsed() {
        let clock = SkewedClock::new();
        let start = clock.monotonic();
        std::thread::sleep(Duration::from_millis(10));
        clock.set_rate(0.0);
        let stopped = clock.monotonic();
        assert!(
            stopped >= start + Duration::from_millis(10),
            "{start:?} -> {stopped:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(clock.monotonic(), stopped, "a stopped clock does not move");
        // A negative rate is treated as stopped too, never as running backwards.
        clock.set_rate(-5.0);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.monotonic(), stopped);
    }

    #[test]
    fn skewed_clock_set_rate_runs_monotonic_time_fast_from_then_on() {
        let clock = SkewedClock::new();
        clock.set_rate(0.0);
        let stopped = clock.monotonic();
        clock.set_rate(1_000.0);
        std::thread::sleep(Duration::from_millis(10));
        let fast = clock.monotonic();
        // 10 ms of real time at 1000x is at least 10 s.
        assert!(
            fast >= stopped + Duration::from_secs(10),
            "{stopped:?} -> {fast:?}"
        );
        // Back to normal speed: the time gained is kept, and it runs on at 1x.
        clock.set_rate(1.0);
        let normal = clock.monotonic();
        assert!(normal >= fast, "{fast:?} -> {normal:?}");
        std::thread::sleep(Duration::from_millis(5));
        let later = clock.monotonic();
        assert!(
            later >= normal + Duration::from_millis(5),
            "{normal:?} -> {later:?}"
        );
        assert!(
            later < normal + Duration::from_secs(5),
            "{normal:?} -> {later:?}"
        );
    }
}
