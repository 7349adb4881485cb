//! Whether one region's shard may vote, and how a region answers a proposal it
//! refused: the rules the etcd adapter applies, without I/O.
//!
//! A shard *serves* above a token floor, or is *quarantined* until an instant:
//! at start until its incarnation marker was checked, and for a whole quarantine
//! after it lost its data (marker missing, wiped or rewritten under a running
//! agent, or etcd's history went back). A quarantine that has run its course
//! ends with a new marker whose floor is the agent's wall clock: every token the
//! shard forgot was minted at least a quarantine earlier, so it is below.

use std::time::Duration;

/// Whether a shard may vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Voting; tokens must be above `floor`.
    Serving {
        /// The token floor of this incarnation.
        floor: u64,
    },
    /// Silent until `until` (monotonic).
    Quarantined {
        /// When the quarantine ends.
        until: Duration,
    },
}

/// What a request may do with a shard now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Serve, with tokens above this floor.
    Serve {
        /// The floor.
        floor: u64,
    },
    /// Quarantined for this much longer.
    Wait {
        /// How long.
        remaining: Duration,
    },
    /// The quarantine has run its course: write a new marker (floor = the wall
    /// clock now) and serve above it.
    Rejoin,
}

impl Membership {
    /// Before the marker was checked: silent.
    pub const UNCHECKED: Self = Self::Quarantined {
        until: Duration::MAX,
    };

    /// A quarantine of `length` starting at monotonic `now`.
    pub fn quarantine(now: Duration, length: Duration) -> Self {
        Self::Quarantined {
            until: now.saturating_add(length),
        }
    }

    /// What a request arriving at monotonic `now` may do.
    pub fn admit(self, now: Duration) -> Admission {
        match self {
            Self::Serving { floor } => Admission::Serve { floor },
            Self::Quarantined { until } if now < until => Admission::Wait {
                remaining: until - now,
            },
            Self::Quarantined { .. } => Admission::Rejoin,
        }
    }
}

/// What a region found when a proposal's guarded transaction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The proposal's lock id was aborted here (its tombstone exists).
    pub tombstoned: bool,
    /// Another grant holds the resource: whether it was made for the same request
    /// id, and with the same owner and TTL.
    pub held: Option<HeldBy>,
    /// What the token had to exceed: the resource's mark, or without one the
    /// shard's mark floor.
    pub mark: u64,
    /// The proposed token.
    pub token: u64,
}

/// The grant holding a resource, as it bears on a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldBy {
    /// A grant of another request.
    Other,
    /// An earlier grant of the same request with the same owner and TTL: it is
    /// offered to the retry (which adopts it only with a majority).
    SameRequest,
    /// The same request id with another owner or TTL.
    ConflictingRequest,
}

impl HeldBy {
    /// How the grant `held` relates to the proposal `p` it refuses.
    pub fn of(held: &crate::record::GrantRecord, p: &crate::store::Proposal<'_>) -> Self {
        if !same_request(&held.request_id, p.request_id) {
            Self::Other
        } else if held.owner == p.owner
            && u128::from(held.ttl_ms) == p.ttl.as_millis()
            && held.principal == p.principal
        {
            Self::SameRequest
        } else {
            Self::ConflictingRequest
        }
    }
}

/// How a region answers a refused proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalAnswer {
    /// The lock id was aborted.
    Aborted,
    /// Held by another lock.
    Held,
    /// Offer the earlier grant of the same request.
    Offer,
    /// The request id was used with another body.
    RequestConflict,
    /// Free, but the token is not above the mark.
    TokenTooLow,
    /// Nothing explains the failure: the resource changed between the guard and
    /// the read; try again with what is now known.
    Retry,
}

impl Refusal {
    /// The answer, in order of precedence: an aborted lock id, then a holder, then
    /// the token.
    pub fn answer(&self) -> RefusalAnswer {
        if self.tombstoned {
            return RefusalAnswer::Aborted;
        }
        match self.held {
            Some(HeldBy::Other) => RefusalAnswer::Held,
            Some(HeldBy::SameRequest) => RefusalAnswer::Offer,
            Some(HeldBy::ConflictingRequest) => RefusalAnswer::RequestConflict,
            None if self.mark >= self.token => RefusalAnswer::TokenTooLow,
            None => RefusalAnswer::Retry,
        }
    }
}

/// Whether a grant of the same request is the same acquire: an empty request id
/// never matches (each such acquire is its own).
pub fn same_request(stored: &str, proposed: &str) -> bool {
    !proposed.is_empty() && stored == proposed
}

/// Whether a renewal extends a grant: only when the new deadline is later than
/// what the grant already has. Renewal never shortens a grant.
pub fn renewal_extends(remaining: Duration, extended: Duration) -> bool {
    extended > remaining
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_the_same_request_only_with_its_id_owner_ttl_and_principal() {
        let held = crate::record::GrantRecord {
            lock_id: "L1".into(),
            owner: "alice".into(),
            token: 7,
            ttl_ms: 30_000,
            request_id: "req".into(),
            granted_unix_ms: 0,
            adopted: false,
            principal: "tenant".into(),
        };
        let same = crate::store::Proposal {
            resource: "r",
            lock_id: "L2",
            owner: "alice",
            token: 8,
            ttl: Duration::from_secs(30),
            request_id: "req",
            principal: "tenant",
        };
        assert_eq!(HeldBy::of(&held, &same), HeldBy::SameRequest);
        let cases = [
            (
                crate::store::Proposal {
                    request_id: "other",
                    ..same
                },
                HeldBy::Other,
            ),
            (
                crate::store::Proposal {
                    request_id: "",
                    ..same
                },
                HeldBy::Other,
            ),
            (
                crate::store::Proposal {
                    owner: "bob",
                    ..same
                },
                HeldBy::ConflictingRequest,
            ),
            (
                crate::store::Proposal {
                    ttl: Duration::from_secs(31),
                    ..same
                },
                HeldBy::ConflictingRequest,
            ),
            (
                crate::store::Proposal {
                    principal: "x",
                    ..same
                },
                HeldBy::ConflictingRequest,
            ),
        ];
        for (proposal, expected) in cases {
            assert_eq!(HeldBy::of(&held, &proposal), expected, "{proposal:?}");
        }
        let unnamed = crate::record::GrantRecord {
            request_id: String::new(),
            ..held
        };
        assert_eq!(
            HeldBy::of(
                &unnamed,
                &crate::store::Proposal {
                    request_id: "",
                    ..same
                }
            ),
            HeldBy::Other
        );
    }

    #[test]
    fn a_shard_is_silent_until_checked_waits_out_a_quarantine_then_rejoins() {
        let t = Duration::from_secs(100);
        assert_eq!(
            Membership::UNCHECKED.admit(t),
            Admission::Wait {
                remaining: Duration::MAX - t
            }
        );
        let q = Membership::quarantine(t, Duration::from_secs(330));
        assert_eq!(
            q.admit(t + Duration::from_secs(30)),
            Admission::Wait {
                remaining: Duration::from_secs(300)
            }
        );
        assert_eq!(q.admit(t + Duration::from_secs(330)), Admission::Rejoin);
        assert_eq!(
            Membership::Serving { floor: 9 }.admit(t),
            Admission::Serve { floor: 9 }
        );
    }

    #[test]
    fn a_refusal_names_the_tombstone_first_then_the_holder_then_the_token() {
        let base = Refusal {
            tombstoned: false,
            held: None,
            mark: 10,
            token: 10,
        };
        assert_eq!(base.answer(), RefusalAnswer::TokenTooLow);
        assert_eq!(
            Refusal { token: 11, ..base }.answer(),
            RefusalAnswer::Retry,
            "free and above the mark: the guard failed on a change, look again"
        );
        assert_eq!(
            Refusal {
                held: Some(HeldBy::Other),
                ..base
            }
            .answer(),
            RefusalAnswer::Held
        );
        assert_eq!(
            Refusal {
                held: Some(HeldBy::SameRequest),
                ..base
            }
            .answer(),
            RefusalAnswer::Offer
        );
        assert_eq!(
            Refusal {
                held: Some(HeldBy::ConflictingRequest),
                ..base
            }
            .answer(),
            RefusalAnswer::RequestConflict
        );
        assert_eq!(
            Refusal {
                tombstoned: true,
                held: Some(HeldBy::SameRequest),
                ..base
            }
            .answer(),
            RefusalAnswer::Aborted
        );
    }

    #[test]
    fn an_empty_request_id_never_matches_and_renewal_never_shortens() {
        assert!(same_request("r1", "r1"));
        assert!(!same_request("r1", "r2"));
        assert!(!same_request("", ""));
        let s = Duration::from_secs;
        assert!(renewal_extends(s(5), s(6)));
        assert!(!renewal_extends(s(6), s(6)));
        assert!(!renewal_extends(s(9), s(6)));
    }
}
