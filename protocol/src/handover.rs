//! A ring change, as one region agent handles it (hole 3 in `docs/safety.md`).
//!
//! Changing the shard list or the points per shard moves resources onto shards
//! that hold neither their grants nor their fencing marks, while the locks granted
//! under the old ring stay valid on the old shards for up to the longest TTL. A
//! shard that newly owns a resource therefore does not grant it until every lock
//! granted under the old ring has expired, and then only above a token floor that
//! every token of the old ring is below:
//!
//! - The ring carries an epoch. Coordinators send theirs with every proposal and
//!   agents refuse proposals of another epoch, so a lock is only ever granted by a
//!   majority of agents on one ring.
//! - When an agent starts on a new epoch, it waits `window` (its quarantine, at
//!   least the longest TTL × (1 + drift) + a lease granularity) before serving a
//!   resource that moved onto one of its shards. An old lock was granted by a
//!   majority that shares an agent with any new majority; that agent granted it
//!   before switching, so it expired there before the window ends.
//! - At the end of the window, the agent takes its wall clock as the floor for
//!   moved resources. The old lock's token was at most the granting agent's clock
//!   plus `max_token_lead` at the time, and the window is longer than that lead,
//!   so the floor is above it (the same argument as for an amnesiac shard).
//!
//! Resources that did not move are served as before; their grants and marks are
//! where they were.

use std::time::Duration;

use crate::ring::HashRing;

/// A ring change seen by one agent.
#[derive(Debug, Clone)]
pub struct Handover {
    /// The ring before the change.
    previous: HashRing,
    /// Moved resources are not served before this monotonic instant.
    until: Duration,
    /// Once the window is over: moved resources take only tokens above this.
    floor: Option<u64>,
}

/// Whether a shard may serve a resource now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It did not move, or it moved and the window is over with this floor known.
    Serve {
        /// Tokens must be above this (0: no floor beyond the shard's own).
        floor: u64,
    },
    /// It moved here and locks of the old ring may still be valid.
    NotYet {
        /// How long until it is served.
        remaining: Duration,
    },
    /// It moved here and the window is over, but the floor is not set yet: the
    /// caller sets it (its wall clock now) with [`Handover::set_floor`].
    NeedsFloor,
}

impl Handover {
    /// A change from `previous`, seen at monotonic time `now`: moved resources
    /// wait `window`. `floor` is the floor of a window that already ended (kept
    /// across restarts); with it, nothing waits.
    pub fn new(previous: HashRing, now: Duration, window: Duration, floor: Option<u64>) -> Self {
        Self {
            previous,
            until: if floor.is_some() { now } else { now + window },
            floor,
        }
    }

    /// Whether `shard` (on the new ring) may serve `resource` at monotonic `now`.
    pub fn admit(&self, resource: &str, shard: &str, now: Duration) -> Admission {
        if self.previous.shard_for(resource) == shard {
            return Admission::Serve { floor: 0 };
        }
        match self.floor {
            Some(floor) => Admission::Serve { floor },
            None if now < self.until => Admission::NotYet {
                remaining: self.until - now,
            },
            None => Admission::NeedsFloor,
        }
    }

    /// Set the floor for moved resources (the agent's wall clock in µs, taken
    /// once the window is over). A floor already set is kept.
    pub fn set_floor(&mut self, floor: u64) -> u64 {
        *self.floor.get_or_insert(floor)
    }

    /// The floor, once set.
    pub fn floor(&self) -> Option<u64> {
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(shards: &[&str]) -> HashRing {
        let names: Vec<String> = shards.iter().map(|s| (*s).to_owned()).collect();
        HashRing::new(&names, 16).expect("ring")
    }

    /// A resource that moves from the old ring to `to` on the new one, and one
    /// that stays where it was.
    fn moved_and_stayed(old: &HashRing, new: &HashRing) -> (String, String) {
        let mut moved = None;
        let mut stayed = None;
        for i in 0..10_000 {
            let r = format!("r{i}");
            if old.shard_for(&r) == new.shard_for(&r) {
                stayed.get_or_insert(r);
            } else {
                moved.get_or_insert(r);
            }
        }
        (moved.expect("some move"), stayed.expect("some stay"))
    }

    #[test]
    fn a_moved_resource_waits_the_window_then_needs_a_floor_then_serves_above_it() {
        let old = ring(&["a", "b"]);
        let new = ring(&["a", "b", "c"]);
        let (moved, stayed) = moved_and_stayed(&old, &new);
        let window = Duration::from_secs(330);
        let t0 = Duration::from_secs(1_000);
        let mut h = Handover::new(old, t0, window, None);
        let to = new.shard_for(&moved);
        assert_eq!(
            h.admit(&moved, to, t0 + Duration::from_secs(30)),
            Admission::NotYet {
                remaining: Duration::from_secs(300)
            }
        );
        assert_eq!(
            h.admit(&stayed, new.shard_for(&stayed), t0),
            Admission::Serve { floor: 0 }
        );
        assert_eq!(h.admit(&moved, to, t0 + window), Admission::NeedsFloor);
        assert_eq!(h.set_floor(777), 777);
        assert_eq!(h.set_floor(999), 777, "a floor, once set, stays");
        assert_eq!(
            h.admit(&moved, to, t0 + window),
            Admission::Serve { floor: 777 }
        );
        assert_eq!(h.floor(), Some(777));
    }

    #[test]
    fn a_handover_whose_window_ended_before_a_restart_serves_at_once_above_its_floor() {
        let old = ring(&["a", "b", "c"]);
        let new = ring(&["a", "b"]);
        let (moved, _) = moved_and_stayed(&old, &new);
        let h = Handover::new(old, Duration::ZERO, Duration::from_secs(330), Some(42));
        assert_eq!(
            h.admit(&moved, new.shard_for(&moved), Duration::ZERO),
            Admission::Serve { floor: 42 }
        );
    }
}
