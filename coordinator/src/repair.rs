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
//! When a region refuses a proposal naming one of them as holder, it sends
//! that region the release again (forced, as the coordinator's own), once per
//! lock and region, and again after a send that got no answer: the same
//! removal the release itself asked for, completed late. A majority already
//! removed that grant (at its holder's request, or an admin's force-release),
//! so no majority can hold that lock id again (renewal and adoption need one),
//! and removing it changes nothing a holder may rely on (G1, G5 in
//! `docs/safety.md`); it only frees the region sooner than the TTL would. It is
//! a release, not an abort, because an abort leaves a grant that a retry
//! adopted in place.

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
    /// Lock id → the regions already sent a repair for it.
    repaired: HashMap<String, Vec<usize>>,
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
        inner.repaired.insert(lock_id.to_owned(), Vec::new());
        inner.order.push_back(lock_id.to_owned());
    }

    /// `region` reports `lock_id` as the holder: true when a majority released
    /// it and `region` was not yet repaired for it (then it counts as repaired).
    pub(crate) fn needs_repair(&self, lock_id: &str, region: usize) -> bool {
        let mut inner = self.lock();
        match inner.repaired.get_mut(lock_id) {
            Some(done) if !done.contains(&region) => {
                done.push(region);
                true
            }
            _ => false,
        }
    }

    /// The repair of `lock_id` at `region` got no answer: the next refusal
    /// naming it repairs it again.
    fn unanswered(&self, lock_id: &str, region: usize) {
        if let Some(done) = self.lock().repaired.get_mut(lock_id) {
            done.retain(|&r| r != region);
        }
    }
}

/// `response` (region `region`'s answer to a proposal for `resource`) refused
/// it naming a lock released here as its holder: release that lock at `region`
/// again, in the background.
pub(crate) fn repair_if_stale(
    regions: &Arc<Regions>,
    released: &Arc<Released>,
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
    debug!(region = %name, lock_id = %holder.lock_id, "a region kept a released lock; releasing it there");
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
    let (regions, released) = (regions.clone(), released.clone());
    tokio::spawn(async move {
        let lock_id = lock.lock_id.clone();
        if !release_at(&regions, region, lock).await {
            released.unanswered(&lock_id, region);
        }
    });
}

/// Send `lock`'s release to `region` (bounded by the region deadline): whether
/// the agent answered (any answer but a transport failure or a timeout).
async fn release_at(regions: &Regions, region: usize, lock: LockRef) -> bool {
    let answer = regions
        .call_within_deadline(region, lock, |mut c, r| async move { c.release(r).await })
        .await;
    match answer {
        Some(Ok(_)) => true,
        Some(Err(status)) => crate::regions::answered(&status),
        None => false,
    }
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
    fn a_repair_that_got_no_answer_is_sent_again() {
        let released = Released::default();
        released.released("l1");
        assert!(released.needs_repair("l1", 2));
        released.unanswered("l1", 2);
        assert!(released.needs_repair("l1", 2));
        assert!(!released.needs_repair("l1", 2));
        released.unanswered("l2", 0);
        assert!(!released.needs_repair("l2", 0), "never released here");
    }

    #[test]
    fn regions_are_told_apart_however_many_there_are() {
        let released = Released::default();
        released.released("l1");
        assert!(released.needs_repair("l1", 1));
        assert!(released.needs_repair("l1", 65));
        assert!(!released.needs_repair("l1", 65));
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
