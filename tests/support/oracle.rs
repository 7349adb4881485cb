//! A fenced resource: the stand-in for what a lock protects.
//!
//! It accepts a write only with a token at least the highest it has seen, and it
//! records every critical section so a test can prove no two holders overlapped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::history::{Kind, Phase, Recorder};

/// How long a holder stays inside its critical section (across an `.await`), so
/// that a second holder whose hold overlapped the first in time would enter while
/// the first is still inside, and [`Violation::Overlap`] would fire.
pub const CRITICAL_SECTION: Duration = Duration::from_millis(5);

/// What went wrong, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two holders were inside at once.
    Overlap {
        /// The token already inside.
        inside: u64,
        /// The token that entered.
        entering: u64,
    },
    /// A holder entered with a token not above an earlier holder's.
    TokenNotIncreasing {
        /// The highest token seen before.
        previous: u64,
        /// The token presented.
        presented: u64,
    },
}

#[derive(Debug, Default)]
struct State {
    inside: Option<u64>,
    highest: u64,
    writes: u64,
    rejected: u64,
    violations: Vec<Violation>,
}

/// A counter that only fenced writes may change.
#[derive(Debug, Default)]
pub struct FencedCounter {
    state: Mutex<State>,
}

impl FencedCounter {
    /// A new counter.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A holder with `token` enters its critical section.
    pub fn enter(&self, token: u64) {
        let mut s = self.state();
        if let Some(inside) = s.inside {
            s.violations.push(Violation::Overlap {
                inside,
                entering: token,
            });
        }
        if token <= s.highest {
            let previous = s.highest;
            s.violations.push(Violation::TokenNotIncreasing {
                previous,
                presented: token,
            });
        }
        s.highest = s.highest.max(token);
        s.inside = Some(token);
    }

    /// The holder with `token` leaves.
    pub fn leave(&self, token: u64) {
        let mut s = self.state();
        if s.inside == Some(token) {
            s.inside = None;
        }
    }

    /// A fenced write: accepted only if `token` is at least the highest seen.
    pub fn write(&self, token: u64) -> bool {
        let mut s = self.state();
        if token < s.highest {
            s.rejected += 1;
            return false;
        }
        s.highest = token;
        s.writes += 1;
        true
    }

    /// A holder's whole critical section, if its lock can still be relied on:
    /// when `valid_until` (the holder's validity, counted from when it sent its
    /// acquire or renewal) leaves room for it, enter, make one fenced write
    /// recorded in `history` (as `process`'s write with `lock_id` and `token`;
    /// `ok` when the counter accepted it, `fail` when fencing rejected it), stay
    /// inside for [`CRITICAL_SECTION`] across an `.await`, and leave. Returns
    /// whether the write was accepted, or `None` when the validity left no room
    /// (a client honours its validity: it neither enters nor writes).
    pub async fn critical_section(
        &self,
        history: &Recorder,
        process: &str,
        resource: &str,
        lock_id: &str,
        token: u64,
        valid_until: Instant,
    ) -> Option<bool> {
        if Instant::now() + 2 * CRITICAL_SECTION >= valid_until {
            return None;
        }
        self.enter(token);
        let write = history.invoke(process, resource, Kind::Write, lock_id);
        let accepted = self.write(token);
        let phase = if accepted { Phase::Ok } else { Phase::Fail };
        history.complete(&write, phase, lock_id, token, 0);
        tokio::time::sleep(CRITICAL_SECTION).await;
        self.leave(token);
        Some(accepted)
    }

    /// Accepted writes.
    pub fn writes(&self) -> u64 {
        self.state().writes
    }

    /// Rejected (stale) writes.
    pub fn rejected(&self) -> u64 {
        self.state().rejected
    }

    /// Every violation seen.
    pub fn violations(&self) -> Vec<Violation> {
        self.state().violations.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_overlap_and_stale_tokens() {
        let counter = FencedCounter::new();
        counter.enter(5);
        counter.enter(7);
        counter.leave(7);
        counter.enter(6);
        assert_eq!(
            counter.violations(),
            vec![
                Violation::Overlap {
                    inside: 5,
                    entering: 7
                },
                Violation::TokenNotIncreasing {
                    previous: 7,
                    presented: 6
                },
            ]
        );
        assert!(!counter.write(1));
        assert!(counter.write(7));
        assert_eq!((counter.writes(), counter.rejected()), (1, 1));
    }

    #[tokio::test]
    async fn two_critical_sections_that_overlap_in_time_are_seen() {
        let counter = FencedCounter::new();
        let history = Recorder::new();
        let valid_until = Instant::now() + Duration::from_secs(10);
        let (a, b) = tokio::join!(
            counter.critical_section(&history, "p1", "r", "A", 5, valid_until),
            counter.critical_section(&history, "p2", "r", "B", 7, valid_until),
        );
        assert_eq!((a, b), (Some(true), Some(true)));
        assert_eq!(
            counter.violations(),
            vec![Violation::Overlap {
                inside: 5,
                entering: 7
            }]
        );
        // One after the other: nothing.
        let counter = FencedCounter::new();
        counter
            .critical_section(&history, "p1", "r", "A", 5, valid_until)
            .await;
        counter
            .critical_section(&history, "p2", "r", "B", 7, valid_until)
            .await;
        assert_eq!(counter.violations(), vec![]);
        // A lock whose validity already ended is not relied on: no write.
        let ended = counter
            .critical_section(&history, "p3", "r", "C", 9, Instant::now())
            .await;
        assert_eq!(ended, None);
        let writes: Vec<_> = history
            .history()
            .iter()
            .filter(|r| r.kind == Kind::Write && r.phase == Phase::Ok)
            .map(|r| (r.lock_id.clone(), r.token))
            .collect();
        assert_eq!(writes.len(), 4);
        assert_eq!(writes[3], ("B".to_owned(), 7));
    }
}
