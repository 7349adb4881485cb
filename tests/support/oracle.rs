//! A fenced resource: the stand-in for what a lock protects.
//!
//! It accepts a write only with a token at least the highest it has seen, and it
//! records every critical section so a test can prove no two holders overlapped.

use std::sync::Mutex;

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
}
