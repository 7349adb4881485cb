//! Repairing a region that kept a grant the others already removed.
//!
//! A release is decided by a majority; the rest of the regions are told in
//! the background, and a region that fell behind can miss that (its call ran
//! past the region deadline, or the region was briefly unreachable). It then
//! keeps the released lock's grant until its TTL ends, refusing every later
//! proposal for the resource (`HELD`, naming the released lock), and the
//! resource has one region fewer to make its majorities with: on a hot
//! resource, the next holders need the two other regions every time.
//!
//! The coordinator remembers the lock ids whose release it decided recently.
//! When a region refuses a proposal naming one of them as holder, it aborts
//! that lock id at that region, once per lock and region: the same removal
//! the release itself asked for, completed late. This only removes a grant
//! of a lock that a majority no longer holds and whose holder has already been
//! told it is released, so it changes nothing a holder relies on (G1, G5 in
//! `docs/safety.md`); it only frees the region sooner than the TTL would.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use globallock_proto::agent::{GrantResponse, LockRef, Vote};
use tracing::debug;

use crate::regions::Regions;

/// How many recently released lock ids a coordinator remembers.
const REMEMBERED: usize = 4096;

/// Recently released lock ids, and which regions were already repaired for each.
#[derive(Debug)]
pub(crate) struct Released {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Lock id → bit set of the regions already sent a repair for it.
    repaired: HashMap<String, u64>,
    /// Lock ids in the order they were released (the oldest is forgotten first).
    order: VecDeque<String>,
}

impl Default for Released {
    fn default() -> Self {
        Self::with_capacity(REMEMBERED)
    }
}

impl Released {
    /// Remembering at most `capacity` lock ids.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A majority released `lock_id`.
    pub(crate) fn released(&self, lock_id: &str) {
        let mut inner = self.lock();
        if inner.repaired.contains_key(lock_id) {
            return;
        }
        if inner.order.len() >= self.capacity
            && let Some(oldest) = inner.order.pop_front()
        {
            inner.repaired.remove(&oldest);
        }
        inner.repaired.insert(lock_id.to_owned(), 0);
        inner.order.push_back(lock_id.to_owned());
    }

    /// `region` reports `lock_id` as the holder: true when a majority released
    /// it and `region` was not yet repaired for it (then it counts as repaired).
    pub(crate) fn needs_repair(&self, lock_id: &str, region: usize) -> bool {
        let bit = 1u64 << (region % 64);
        let mut inner = self.lock();
        match inner.repaired.get_mut(lock_id) {
            Some(done) if *done & bit == 0 => {
                *done |= bit;
                true
            }
            _ => false,
        }
    }
}

/// `response` (region `region`'s answer to a proposal for `resource`) refused
/// it naming a lock released here as its holder: abort that lock at `region`,
/// in the background.
pub(crate) fn repair_if_stale(
    regions: &Arc<Regions>,
    released: &Released,
    region: usize,
    shard: &str,
    resource: &str,
    response: &GrantResponse,
) {
    if response.vote != Vote::Held as i32 {
        return;
    }
    let Some(holder) = &response.holder else {
        return;
    };
    if !released.needs_repair(&holder.lock_id, region) {
        return;
    }
    let name = &regions.get(region).name;
    debug!(region = %name, lock_id = %holder.lock_id, "a region kept a released lock; aborting it there");
    metrics::counter!("globallock_stale_grants_repaired_total", "region" => name.clone())
        .increment(1);
    let lock = LockRef {
        shard: shard.to_owned(),
        resource: resource.to_owned(),
        lock_id: holder.lock_id.clone(),
        // Completing a release a majority already made: not on anyone's behalf.
        principal: String::new(),
        force: true,
    };
    tokio::spawn(crate::acquire::abort_at(regions.clone(), region, lock));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_released_locks_are_repaired_and_once_per_region() {
        let released = Released::default();
        assert!(!released.needs_repair("l1", 0), "never released here");
        released.released("l1");
        assert!(released.needs_repair("l1", 2));
        assert!(!released.needs_repair("l1", 2), "once per region");
        assert!(released.needs_repair("l1", 0), "another region");
        assert!(!released.needs_repair("l2", 2));
    }

    #[test]
    fn releasing_again_does_not_forget_which_regions_were_repaired() {
        let released = Released::default();
        released.released("l1");
        assert!(released.needs_repair("l1", 1));
        released.released("l1");
        assert!(!released.needs_repair("l1", 1));
    }

    #[test]
    fn the_oldest_lock_ids_are_forgotten_first() {
        let released = Released::with_capacity(2);
        released.released("l1");
        released.released("l2");
        released.released("l3");
        assert!(!released.needs_repair("l1", 0), "forgotten");
        assert!(released.needs_repair("l2", 0));
        assert!(released.needs_repair("l3", 0));
    }
}
