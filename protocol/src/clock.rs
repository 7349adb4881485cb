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
