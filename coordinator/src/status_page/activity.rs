//! Recent activity of this coordinator, in bounded memory, for the status page:
//! acquire latency per second (a small log-scale histogram per second, so the
//! chart costs the same at any request rate), rejections by reason, and each
//! region's health-probe round trips.
//!
//! Times are this process's monotonic clock; nothing here is shared with other
//! coordinators or survives a restart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Seconds of acquire history kept: the latency chart's width.
pub const HISTORY_SECONDS: u64 = 120;
/// The window of the rejection counts.
pub const REJECTION_WINDOW_SECONDS: u64 = 300;
/// Rejections listed one by one (the most recent).
const RECENT_REJECTIONS: usize = 6;
/// Probe round trips kept per region.
const PROBE_SAMPLES: usize = 128;
/// Probe round trips older than this are not shown.
pub const PROBE_WINDOW: Duration = Duration::from_secs(15);
/// Histogram buckets per power of two (each about 19 % wide).
const SUB: u32 = 4;
/// Buckets: microseconds up to 2^40 (12 days).
const BUCKETS: usize = 40 * SUB as usize;

/// The histogram bucket of a latency.
fn bucket(latency: Duration) -> usize {
    let us = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let octave = 63 - us.leading_zeros();
    // The two bits below the leading one.
    let sub = if octave >= 2 {
        (us >> (octave - 2)) & 3
    } else {
        (us << (2 - octave)) & 3
    };
    let index =
        usize::try_from(octave * SUB).unwrap_or(BUCKETS) + usize::try_from(sub).unwrap_or(0);
    index.min(BUCKETS - 1)
}

/// The middle of bucket `b`, in milliseconds.
fn bucket_ms(b: usize) -> f64 {
    let sub_count = f64::from(SUB);
    let octave = i32::try_from(b / SUB as usize).unwrap_or(i32::MAX);
    let sub = (b % SUB as usize) as f64;
    2f64.powi(octave) * (1.0 + (sub + 0.5) / sub_count) / 1_000.0
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// A latency histogram.
#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u32>,
    total: u64,
    max: Duration,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: Duration::ZERO,
        }
    }
}

impl Histogram {
    fn record(&mut self, latency: Duration) {
        let b = bucket(latency);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.total += 1;
        self.max = self.max.max(latency);
    }

    fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The `q` quantile (0..=1) in ms, to within a bucket; `None` when empty.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        // The rank of the sample sought, 1-based.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (b, count) in self.counts.iter().enumerate() {
            seen += u64::from(*count);
            if seen >= rank {
                // Never above the largest sample seen.
                return Some(bucket_ms(b).min(millis(self.max)));
            }
        }
        Some(millis(self.max))
    }
}

/// One second of acquires.
#[derive(Debug, Clone, Default)]
struct Second {
    /// Seconds since the history started.
    at: u64,
    latency: Histogram,
    refused: u64,
}

/// One second of acquires as the status page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecondView {
    /// How many seconds ago (0: the current second).
    pub ago_s: u64,
    /// Acquires answered in that second (granted or refused).
    pub acquires: u64,
    /// Of those, refused.
    pub refused: u64,
    /// Median latency, ms (to within a histogram bucket, about 10 %).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, ms (likewise).
    pub p99_ms: Option<f64>,
    /// Slowest, ms (exact).
    pub max_ms: Option<f64>,
}

/// Acquire latency over the last [`HISTORY_SECONDS`], per second and in total.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AcquireView {
    /// The window, seconds.
    pub window_s: u64,
    /// Acquires answered in the window.
    pub acquires: u64,
    /// Of those, refused.
    pub refused: u64,
    /// Median over the window, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile over the window, ms.
    pub p99_ms: Option<f64>,
    /// Slowest in the window, ms.
    pub max_ms: Option<f64>,
    /// Seconds with at least one acquire, oldest first.
    pub seconds: Vec<SecondView>,
}

/// One reason's rejections.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReasonView {
    /// The error kind (`held`, `no-quorum`, `permission-denied`, ...).
    pub reason: &'static str,
    /// Rejections in the last [`REJECTION_WINDOW_SECONDS`].
    pub recent: u64,
    /// Rejections since this coordinator started.
    pub total: u64,
}

/// One rejection.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RejectionView {
    /// How long ago, ms.
    pub ago_ms: u64,
    /// What was refused: `acquire`, `renew`, `release`, or the verb an access
    /// check refused (`describe`, `admin`, ...).
    pub op: &'static str,
    /// Why (the error kind).
    pub reason: &'static str,
}

/// Rejections by reason.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RejectionsView {
    /// The window of `recent`, seconds.
    pub window_s: u64,
    /// Every reason seen since start, most frequent in the window first.
    pub by_reason: Vec<ReasonView>,
    /// The last few, newest first.
    pub latest: Vec<RejectionView>,
}

#[derive(Debug)]
struct Acquires {
    start: Instant,
    seconds: VecDeque<Second>,
}

#[derive(Debug)]
struct Rejections {
    start: Instant,
    /// Per second (since `start`) with any: counts by reason.
    seconds: VecDeque<(u64, BTreeMap<&'static str, u64>)>,
    totals: BTreeMap<&'static str, u64>,
    latest: VecDeque<(Instant, &'static str, &'static str)>,
}

/// What this coordinator did recently (see the module documentation).
#[derive(Debug)]
pub struct Activity {
    acquires: Mutex<Acquires>,
    rejections: Mutex<Rejections>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl Activity {
    fn new(start: Instant) -> Self {
        Self {
            acquires: Mutex::new(Acquires {
                start,
                seconds: VecDeque::new(),
            }),
            rejections: Mutex::new(Rejections {
                start,
                seconds: VecDeque::new(),
                totals: BTreeMap::new(),
                latest: VecDeque::new(),
            }),
        }
    }

    /// An acquire was answered after `latency`: granted (`None`), or refused
    /// for `refused` (an error kind), which also counts as a rejection.
    pub fn acquire(&self, latency: Duration, refused: Option<&'static str>) {
        self.acquire_at(Instant::now(), latency, refused);
    }

    /// `op` was refused for `reason` (an error kind).
    pub fn rejected(&self, op: &'static str, reason: &'static str) {
        self.rejected_at(Instant::now(), op, reason);
    }

    fn acquire_at(&self, now: Instant, latency: Duration, refused: Option<&'static str>) {
        {
            let mut acquires = self.acquires.lock().unwrap_or_else(|e| e.into_inner());
            let at = now.saturating_duration_since(acquires.start).as_secs();
            if acquires.seconds.back().is_none_or(|s| s.at != at) {
                acquires.seconds.push_back(Second {
                    at,
                    ..Second::default()
                });
            }
            while acquires
                .seconds
                .front()
                .is_some_and(|s| s.at + HISTORY_SECONDS <= at)
            {
                acquires.seconds.pop_front();
            }
            if let Some(second) = acquires.seconds.back_mut() {
                second.latency.record(latency);
                if refused.is_some() {
                    second.refused += 1;
                }
            }
        }
        if let Some(reason) = refused {
            self.rejected_at(now, "acquire", reason);
        }
    }

    fn rejected_at(&self, now: Instant, op: &'static str, reason: &'static str) {
        let mut r = self.rejections.lock().unwrap_or_else(|e| e.into_inner());
        let at = now.saturating_duration_since(r.start).as_secs();
        if r.seconds.back().is_none_or(|(s, _)| *s != at) {
            r.seconds.push_back((at, BTreeMap::new()));
        }
        while r
            .seconds
            .front()
            .is_some_and(|(s, _)| s + REJECTION_WINDOW_SECONDS <= at)
        {
            r.seconds.pop_front();
        }
        if let Some((_, counts)) = r.seconds.back_mut() {
            *counts.entry(reason).or_default() += 1;
        }
        *r.totals.entry(reason).or_default() += 1;
        r.latest.push_front((now, op, reason));
        r.latest.truncate(RECENT_REJECTIONS);
    }

    /// Acquire latency over the last [`HISTORY_SECONDS`].
    pub fn acquires(&self) -> AcquireView {
        self.acquires_at(Instant::now())
    }

    fn acquires_at(&self, now: Instant) -> AcquireView {
        let acquires = self.acquires.lock().unwrap_or_else(|e| e.into_inner());
        let current = now.saturating_duration_since(acquires.start).as_secs();
        let mut all = Histogram::default();
        let mut refused = 0;
        let mut seconds = Vec::new();
        for second in acquires
            .seconds
            .iter()
            .filter(|s| s.at + HISTORY_SECONDS > current)
        {
            all.merge(&second.latency);
            refused += second.refused;
            seconds.push(SecondView {
                ago_s: current - second.at.min(current),
                acquires: second.latency.total,
                refused: second.refused,
                p50_ms: second.latency.quantile_ms(0.5),
                p99_ms: second.latency.quantile_ms(0.99),
                max_ms: Some(millis(second.latency.max)),
            });
        }
        AcquireView {
            window_s: HISTORY_SECONDS,
            acquires: all.total,
            refused,
            p50_ms: all.quantile_ms(0.5),
            p99_ms: all.quantile_ms(0.99),
            max_ms: (all.total > 0).then(|| millis(all.max)),
            seconds,
        }
    }

    /// Rejections by reason.
    pub fn rejections(&self) -> RejectionsView {
        self.rejections_at(Instant::now())
    }

    fn rejections_at(&self, now: Instant) -> RejectionsView {
        let r = self.rejections.lock().unwrap_or_else(|e| e.into_inner());
        let current = now.saturating_duration_since(r.start).as_secs();
        let mut recent: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (_, counts) in r
            .seconds
            .iter()
            .filter(|(s, _)| s + REJECTION_WINDOW_SECONDS > current)
        {
            for (reason, count) in counts {
                *recent.entry(reason).or_default() += count;
            }
        }
        let mut by_reason: Vec<ReasonView> = r
            .totals
            .iter()
            .map(|(reason, total)| ReasonView {
                reason,
                recent: recent.get(reason).copied().unwrap_or(0),
                total: *total,
            })
            .collect();
        by_reason.sort_by(|a, b| {
            (b.recent, b.total)
                .cmp(&(a.recent, a.total))
                .then(a.reason.cmp(b.reason))
        });
        RejectionsView {
            window_s: REJECTION_WINDOW_SECONDS,
            by_reason,
            latest: r
                .latest
                .iter()
                .map(|(at, op, reason)| RejectionView {
                    ago_ms: u64::try_from(now.saturating_duration_since(*at).as_millis())
                        .unwrap_or(u64::MAX),
                    op,
                    reason,
                })
                .collect(),
        }
    }
}

/// A region's recent health-probe round trips, and since when its probes go
/// unanswered.
#[derive(Debug, Default)]
pub struct ProbeRtt {
    state: Mutex<ProbeState>,
}

#[derive(Debug, Default)]
struct ProbeState {
    samples: VecDeque<(Instant, Duration)>,
    /// The first probe of the current run of unanswered ones.
    unanswered_since: Option<Instant>,
}

/// A region's probe round trips over the last [`PROBE_WINDOW`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeView {
    /// The latest answered probe's round trip, ms.
    pub last_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Answered probes in the window.
    pub samples: usize,
    /// How long ago the latest answered probe was sent, ms.
    pub age_ms: u64,
}

impl ProbeRtt {
    /// A probe answered after `rtt`.
    pub fn record(&self, rtt: Duration) {
        self.record_at(Instant::now(), rtt);
    }

    /// A probe went unanswered (failed, timed out, or answered for another
    /// region).
    pub fn unanswered(&self) {
        self.unanswered_at(Instant::now());
    }

    fn record_at(&self, now: Instant, rtt: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.samples.len() == PROBE_SAMPLES {
            state.samples.pop_front();
        }
        state.samples.push_back((now, rtt));
        state.unanswered_since = None;
    }

    fn unanswered_at(&self, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.unanswered_since.get_or_insert(now);
    }

    /// How long probes have gone unanswered (`None`: the latest was answered,
    /// or none was sent yet).
    pub fn unanswered_for(&self) -> Option<Duration> {
        self.unanswered_for_at(Instant::now())
    }

    fn unanswered_for_at(&self, now: Instant) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .unanswered_since
            .map(|since| now.saturating_duration_since(since))
    }

    /// The probes answered in the last [`PROBE_WINDOW`] (`None`: none was).
    pub fn view(&self) -> Option<ProbeView> {
        self.view_at(Instant::now())
    }

    fn view_at(&self, now: Instant) -> Option<ProbeView> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let recent: Vec<(Instant, Duration)> = state
            .samples
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= PROBE_WINDOW)
            .copied()
            .collect();
        let &(last_at, last) = recent.last()?;
        let mut rtts: Vec<Duration> = recent.iter().map(|(_, rtt)| *rtt).collect();
        rtts.sort();
        Some(ProbeView {
            last_ms: millis(last),
            p50_ms: millis(rtts[(rtts.len() - 1) / 2]),
            max_ms: millis(rtts[rtts.len() - 1]),
            samples: rtts.len(),
            age_ms: u64::try_from(now.saturating_duration_since(last_at).as_millis())
                .unwrap_or(u64::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn buckets_are_ordered_and_about_a_fifth_wide() {
        let mut last = 0;
        for us in 1..200_000u64 {
            let b = bucket(Duration::from_micros(us));
            assert!(b >= last, "{us}");
            last = b;
        }
        for ms in [0.5, 3.0, 42.0, 1_000.0, 60_000.0] {
            let d = Duration::from_secs_f64(ms / 1_000.0);
            let mid = bucket_ms(bucket(d));
            assert!((mid / ms - 1.0).abs() < 0.15, "{ms} ms -> {mid}");
        }
        assert_eq!(bucket(Duration::from_secs(u64::MAX / 4)), BUCKETS - 1);
    }

    #[test]
    fn acquire_latency_is_kept_per_second_for_the_window_only() {
        let start = Instant::now();
        let activity = Activity::new(start);
        for i in 1..=99u64 {
            activity.acquire_at(start, MS * u32::try_from(i).unwrap(), None);
        }
        activity.acquire_at(start, MS * 1_000, Some("held"));
        let later = start + Duration::from_secs(3);
        activity.acquire_at(later, MS * 5, None);

        let view = activity.acquires_at(later);
        assert_eq!(view.acquires, 101);
        assert_eq!(view.refused, 1);
        assert_eq!(view.seconds.len(), 2);
        assert_eq!(view.seconds[0].ago_s, 3);
        assert_eq!(view.seconds[0].acquires, 100);
        let p50 = view.seconds[0].p50_ms.unwrap();
        assert!((45.0..56.0).contains(&p50), "{p50}");
        assert_eq!(view.seconds[0].max_ms, Some(1_000.0));
        assert_eq!(view.seconds[1].ago_s, 0);
        assert!(view.seconds[1].p99_ms.unwrap() <= 5.0);
        assert_eq!(view.max_ms, Some(1_000.0));

        // A refused acquire is a rejection too.
        let rejections = activity.rejections_at(later);
        assert_eq!(rejections.by_reason[0].reason, "held");
        assert_eq!(rejections.latest[0].op, "acquire");

        // Past the window, the first second is gone.
        let much_later = start + Duration::from_secs(HISTORY_SECONDS + 1);
        let view = activity.acquires_at(much_later);
        assert_eq!(view.acquires, 1);
        activity.acquire_at(much_later, MS, None);
        assert_eq!(activity.acquires.lock().unwrap().seconds.len(), 2);
        // Nothing at all: no quantiles.
        let idle = activity.acquires_at(start + Duration::from_secs(10 * HISTORY_SECONDS));
        assert_eq!((idle.acquires, idle.p50_ms, idle.max_ms), (0, None, None));
    }

    #[test]
    fn rejections_are_counted_by_reason_in_the_window_and_since_start() {
        let start = Instant::now();
        let activity = Activity::new(start);
        for _ in 0..3 {
            activity.rejected_at(start, "acquire", "held");
        }
        let later = start + Duration::from_secs(REJECTION_WINDOW_SECONDS + 5);
        activity.rejected_at(later, "renew", "not-found");
        activity.rejected_at(later, "admin", "unauthenticated");
        let view = activity.rejections_at(later);
        let counts: Vec<(&str, u64, u64)> = view
            .by_reason
            .iter()
            .map(|r| (r.reason, r.recent, r.total))
            .collect();
        assert_eq!(
            counts,
            vec![
                ("not-found", 1, 1),
                ("unauthenticated", 1, 1),
                ("held", 0, 3)
            ]
        );
        assert_eq!(view.latest[0].op, "admin");
        assert_eq!(view.latest.len(), 5);
        for _ in 0..50 {
            activity.rejected_at(later, "acquire", "contended");
        }
        assert_eq!(
            activity.rejections_at(later).latest.len(),
            RECENT_REJECTIONS
        );
    }

    #[test]
    fn probe_round_trips_show_only_the_recent_window() {
        let start = Instant::now();
        let rtt = ProbeRtt::default();
        assert_eq!(rtt.view_at(start), None);
        for ms in [3, 1, 2, 9] {
            rtt.record_at(start, MS * ms);
        }
        let view = rtt.view_at(start + MS * 100).unwrap();
        assert_eq!(
            (
                view.last_ms,
                view.p50_ms,
                view.max_ms,
                view.samples,
                view.age_ms
            ),
            (9.0, 2.0, 9.0, 4, 100)
        );
        assert_eq!(rtt.view_at(start + PROBE_WINDOW + MS), None);
        for _ in 0..(2 * PROBE_SAMPLES) {
            rtt.record_at(start, MS);
        }
        assert_eq!(rtt.state.lock().unwrap().samples.len(), PROBE_SAMPLES);
    }

    #[test]
    fn unanswered_probes_are_timed_from_the_first_of_the_run() {
        let start = Instant::now();
        let rtt = ProbeRtt::default();
        assert_eq!(rtt.unanswered_for_at(start), None);
        rtt.record_at(start, MS);
        rtt.unanswered_at(start + MS * 100);
        rtt.unanswered_at(start + MS * 300);
        assert_eq!(rtt.unanswered_for_at(start + MS * 400), Some(MS * 300));
        // Answered again: the run ends, the round trips so far stay.
        rtt.record_at(start + MS * 500, MS * 2);
        assert_eq!(rtt.unanswered_for_at(start + MS * 600), None);
        assert_eq!(rtt.view_at(start + MS * 600).unwrap().samples, 2);
    }
}
