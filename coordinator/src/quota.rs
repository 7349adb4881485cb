//! Caps per principal: how many locks a principal holds and how many of its
//! acquires wait at once, so that one tenant cannot exhaust a shard or a
//! coordinator. Checked before anything is proposed; an acquire over a cap is
//! refused with `RESOURCE_EXHAUSTED` / HTTP 429 (`quota-exceeded`).
//!
//! What a coordinator counts: the locks it granted (until released through it,
//! or until their validity ends, whichever comes first) and the acquires
//! waiting in it. It is stateless towards other coordinators, so with `N`
//! coordinators a principal holds at most `N × max_locks` locks (a lock
//! released through another coordinator is counted here until it expires,
//! which errs towards refusing). Callers without a principal (access control
//! off) are not capped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The caps, from `[access]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Locks one principal may hold through this coordinator.
    pub max_locks: usize,
    /// Acquires of one principal that may wait at once in this coordinator.
    pub max_waiters: usize,
}

/// Which cap an acquire ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Locks held.
    Locks,
    /// Acquires waiting.
    Waiters,
}

impl Quota {
    /// The cap's name, as errors and metrics say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Locks => "locks held",
            Self::Waiters => "waiting acquires",
        }
    }
}

/// An acquire refused by a cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("principal {principal:?} is at its cap of {limit} {}; release a lock or wait for one to end", quota.as_str())]
pub struct QuotaExceeded {
    /// The principal.
    pub principal: String,
    /// Which cap.
    pub quota: Quota,
    /// The cap.
    pub limit: usize,
}

#[derive(Debug, Default)]
struct State {
    /// principal → lock id → end of its validity.
    held: HashMap<String, HashMap<String, Instant>>,
    /// principal → acquires waiting now.
    waiting: HashMap<String, usize>,
}

/// The counts behind the caps.
#[derive(Debug)]
pub struct Quotas {
    limits: QuotaLimits,
    state: Mutex<State>,
}

/// An admitted acquire; while it lives and [`Admission::waits`], it counts
/// against its principal's waiters.
#[derive(Debug)]
pub struct Admission<'a> {
    quotas: &'a Quotas,
    /// The principal, when the acquire waits and is counted.
    waiting: Option<String>,
}

impl Admission<'_> {
    /// True when this acquire counts as a waiter.
    pub fn waits(&self) -> bool {
        self.waiting.is_some()
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some(principal) = self.waiting.take() {
            metrics::gauge!("globallock_acquires_waiting").decrement(1.0);
            let mut state = self.quotas.lock();
            if let Some(count) = state.waiting.get_mut(&principal) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    state.waiting.remove(&principal);
                }
            }
        }
    }
}

impl Quotas {
    /// Counting against `limits`.
    pub fn new(limits: QuotaLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admit an acquire of `principal` (empty: not capped) that may wait
    /// (`waits`), at `now`; or say which cap it is over.
    pub fn admit(
        &self,
        principal: &str,
        waits: bool,
        now: Instant,
    ) -> Result<Admission<'_>, QuotaExceeded> {
        let mut admission = Admission {
            quotas: self,
            waiting: None,
        };
        if principal.is_empty() {
            return Ok(admission);
        }
        let mut state = self.lock();
        let exceeded = |quota, limit| QuotaExceeded {
            principal: principal.to_owned(),
            quota,
            limit,
        };
        if let Some(locks) = state.held.get_mut(principal)
            && locks.len() >= self.limits.max_locks
        {
            // Expired entries are dropped only here, at the cap: below it
            // they cannot change the answer, and an acquire does not scan
            // every lock its principal holds.
            locks.retain(|_, until| *until > now);
            if locks.len() >= self.limits.max_locks {
                return Err(exceeded(Quota::Locks, self.limits.max_locks));
            }
        }
        if waits {
            let count = state.waiting.entry(principal.to_owned()).or_default();
            if *count >= self.limits.max_waiters {
                return Err(exceeded(Quota::Waiters, self.limits.max_waiters));
            }
            *count += 1;
            admission.waiting = Some(principal.to_owned());
            metrics::gauge!("globallock_acquires_waiting").increment(1.0);
        }
        Ok(admission)
    }

    /// `principal` holds `lock_id` until `now + validity` (a grant, or a renewal
    /// through this coordinator).
    pub fn held(&self, principal: &str, lock_id: &str, now: Instant, validity: Duration) {
        if principal.is_empty() {
            return;
        }
        self.lock()
            .held
            .entry(principal.to_owned())
            .or_default()
            .insert(lock_id.to_owned(), now + validity);
    }

    /// `lock_id` ended (released or found gone), whoever held it.
    pub fn ended(&self, lock_id: &str) {
        let mut state = self.lock();
        state.held.retain(|_, locks| {
            locks.remove(lock_id);
            !locks.is_empty()
        });
    }

    /// Locks counted for `principal` at `now`.
    pub fn locks_of(&self, principal: &str, now: Instant) -> usize {
        self.lock().held.get(principal).map_or(0, |locks| {
            locks.values().filter(|until| **until > now).count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QuotaLimits = QuotaLimits {
        max_locks: 2,
        max_waiters: 1,
    };

    #[test]
    fn a_principal_at_its_lock_cap_is_refused_until_one_ends_or_expires() {
        let quotas = Quotas::new(LIMITS);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        quotas.admit("billing", false, t0).expect("first");
        quotas.held("billing", "l1", t0, ttl);
        quotas.admit("billing", false, t0).expect("second");
        quotas.held("billing", "l2", t0, ttl);
        let refused = quotas.admit("billing", false, t0).unwrap_err();
        assert_eq!(refused.quota, Quota::Locks);
        assert_eq!(refused.limit, 2);
        assert_eq!(
            refused.to_string(),
            "principal \"billing\" is at its cap of 2 locks held; release a lock or wait for one to end"
        );
        // Another principal is not affected.
        quotas.admit("batch", false, t0).expect("another tenant");
        // A renewal of a held lock does not count twice.
        quotas.held("billing", "l2", t0, ttl);
        assert_eq!(quotas.locks_of("billing", t0), 2);
        // A release frees a place.
        quotas.ended("l1");
        quotas.admit("billing", false, t0).expect("after a release");
        quotas.held("billing", "l3", t0, ttl);
        assert!(quotas.admit("billing", false, t0).is_err());
        // Expiry frees places too (a lock released elsewhere is counted until then).
        let later = t0 + ttl + Duration::from_millis(1);
        assert_eq!(quotas.locks_of("billing", later), 0);
        quotas.admit("billing", false, later).expect("after expiry");
    }

    #[test]
    fn waiters_are_counted_while_their_acquire_lives() {
        let quotas = Quotas::new(LIMITS);
        let now = Instant::now();
        let waiting = quotas.admit("billing", true, now).expect("first waiter");
        assert!(waiting.waits());
        let refused = quotas.admit("billing", true, now).unwrap_err();
        assert_eq!(refused.quota, Quota::Waiters);
        // An acquire that does not wait is not a waiter.
        let at_once = quotas.admit("billing", false, now).expect("no wait");
        assert!(!at_once.waits());
        drop(waiting);
        quotas
            .admit("billing", true, now)
            .expect("after the waiter left");
    }

    #[test]
    fn callers_without_a_principal_are_not_capped() {
        let quotas = Quotas::new(QuotaLimits {
            max_locks: 1,
            max_waiters: 1,
        });
        let now = Instant::now();
        quotas.held("", "l1", now, Duration::from_secs(10));
        let _a = quotas.admit("", true, now).expect("uncapped");
        let _b = quotas.admit("", true, now).expect("uncapped");
        assert_eq!(quotas.locks_of("", now), 0);
    }
}
