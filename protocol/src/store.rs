//! What a region agent needs from a shard's store, and the one vocabulary of a
//! grant and its outcome.
//!
//! The agent sees a shard only through [`LockStore`]. The production store is
//! etcd (`globallock-etcd`, the only crate that talks to etcd); an in-memory
//! store (`region_agent::memory::MemoryStore`) keeps the same contract so the
//! agent can be tested without etcd. Both run the same contract tests
//! (`region-agent/tests/store_contract.rs`).
//!
//! # One vocabulary
//! A region's answer to a proposal is a [`Vote`], from the store, over the
//! wire (`globallock.agent.v1.Vote`, the same variants), to the coordinator's
//! tally ([`crate::quorum::Reply`]: a vote, or no answer). A round that does not
//! win says why with [`crate::quorum::Loss`]; the caller sees a `LockError`.

use std::future::Future;
use std::time::Duration;

pub use crate::record::GrantRecord;

/// A region's answer to one grant proposal. `H` is how the answer names a
/// holder: the store's [`Holding`], or the coordinator's `quorum::Grant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote<H> {
    /// Written now, or held already for the same request id with the same body
    /// (then the holder may carry an earlier lock id: an offer to adopt).
    Granted(H),
    /// Held by another lock.
    Held(H),
    /// Free, but the proposed token is not above the resource's mark.
    TokenTooLow {
        /// What a token must exceed here.
        mark: u64,
    },
    /// This lock id was aborted in this region earlier.
    Aborted,
    /// Held for the same request id but with another owner or TTL.
    RequestConflict(H),
}

impl<H> Vote<H> {
    /// The holder the vote names, if any.
    pub fn holder(&self) -> Option<&H> {
        match self {
            Self::Granted(h) | Self::Held(h) | Self::RequestConflict(h) => Some(h),
            Self::TokenTooLow { .. } | Self::Aborted => None,
        }
    }
}

/// A proposal to grant a lock, as a region received it.
#[derive(Debug, Clone)]
pub struct Proposal<'a> {
    /// The resource.
    pub resource: &'a str,
    /// The proposal's lock id.
    pub lock_id: &'a str,
    /// Who asks.
    pub owner: &'a str,
    /// The proposed fencing token.
    pub token: u64,
    /// The lock's TTL.
    pub ttl: Duration,
    /// The acquire's idempotency key.
    pub request_id: &'a str,
    /// The principal acquiring (empty: access control is off).
    pub principal: &'a str,
}

/// A grant that holds a resource in one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The stored record.
    pub record: GrantRecord,
    /// How long it lives at least, from now.
    pub remaining: Duration,
}

/// What a release or abort did in one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// No grant of that lock id was removed here (none held, another lock's, or
    /// for an abort, a grant a retry adopted).
    Nothing,
    /// The grant was removed: its record as this call read it before removing it
    /// (`None` only if no attempt of this call read it, which does not happen).
    Removed(Option<GrantRecord>),
}

impl Removal {
    /// True when a grant was removed.
    pub fn removed(&self) -> bool {
        matches!(self, Self::Removed(_))
    }
}

/// What a shard knows about a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceState {
    /// The grant holding it, if any.
    pub holder: Option<Holding>,
    /// Its high-water mark (0 if it was never granted).
    pub mark: u64,
}

/// A grant found by [`LockStore::list`]: the resource it holds, and the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The resource.
    pub resource: String,
    /// The grant holding it, as [`LockStore::read`] would report it.
    pub holding: Holding,
}

/// One page of a shard's grants, from [`LockStore::list`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    /// The grants, in resource order (by the names' UTF-8 bytes).
    pub grants: Vec<Listed>,
    /// True when the page stopped at its limit and the shard may hold more
    /// grants after the last one listed.
    pub more: bool,
}

/// What a [`LockStore::hand_off`] answers: the release part, as
/// [`LockStore::release_as`] would, and the grant part, as [`LockStore::grant`]
/// would.
pub type HandOff<E> = (Result<Removal, E>, Result<Vote<Holding>, E>);

/// How a store operation failed, as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The store could not answer now (timeout, connection, contention,
    /// quarantine): the region has no vote on this request.
    Unavailable,
    /// Stored data could not be decoded: an operator must look.
    DataLoss,
    /// The grant belongs to another principal than the one acting on it:
    /// nothing was changed.
    NotOwner,
}

/// An error of a [`LockStore`]: any error with its causes, that says which kind
/// of fault it is.
pub trait StoreFault: std::error::Error + Send + Sync + 'static {
    /// Which kind of fault this is.
    fn kind(&self) -> FaultKind;
}

/// One shard's store of grants, marks and tombstones in one region.
///
/// The contract (each rule has a test in `region-agent/tests/store_contract.rs`
/// run against every implementation):
/// - **grant** writes the grant and raises the resource's mark to the token only
///   if the resource is free, the lock id was never aborted here, and the token
///   is above the mark (or above the shard's floor when it has no mark). A
///   repeat of the same request with the same owner and TTL answers `Granted`
///   with the existing grant (an *offer*: the coordinator adopts it); with
///   another owner or TTL, `RequestConflict`.
/// - **adopt** marks a grant of that lock id and request id as adopted, and
///   fails if it was aborted. An **abort** removes only a grant that is not
///   adopted, and always leaves a tombstone that refuses the lock id later.
/// - **renew** extends only the grant of exactly that lock id, never creates
///   one and never shortens one. **release** removes only that lock id's grant.
/// - A grant lives at least its TTL from the grant or last renewal, and ends
///   by itself afterwards.
/// - **list** shows the grants that [`LockStore::read`] would show, for every
///   resource starting with a prefix and sorting after a bound, in resource
///   order, a page at a time; an ended or removed grant is not listed.
pub trait LockStore: Send + Sync + 'static {
    /// How an operation fails.
    type Error: StoreFault;

    /// The shard's name.
    fn name(&self) -> &str;

    /// Propose a grant.
    fn grant(
        &self,
        proposal: &Proposal<'_>,
    ) -> impl Future<Output = Result<Vote<Holding>, Self::Error>> + Send;

    /// Let an idempotent retry take over the earlier grant `lock_id` of its
    /// request. `None` when this shard does not hold that grant for that
    /// request (any more), or it was aborted.
    fn adopt(
        &self,
        resource: &str,
        lock_id: &str,
        request_id: &str,
    ) -> impl Future<Output = Result<Option<Holding>, Self::Error>> + Send;

    /// Extend the grant of exactly `lock_id` to live at least `ttl` from now
    /// (`None`: the TTL it was granted with). `None` when that lock id does not
    /// hold the resource here. With `principal`, only a grant stored with that
    /// principal is extended (another's: an error of kind
    /// [`FaultKind::NotOwner`], nothing changed), checked on the same read
    /// the renewal acts on; `None` acts whoever holds it (an admin).
    fn renew_as(
        &self,
        resource: &str,
        lock_id: &str,
        ttl: Option<Duration>,
        principal: Option<&str>,
    ) -> impl Future<Output = Result<Option<Holding>, Self::Error>> + Send;

    /// [`LockStore::renew_as`] whoever holds the grant.
    fn renew(
        &self,
        resource: &str,
        lock_id: &str,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<Option<Holding>, Self::Error>> + Send {
        self.renew_as(resource, lock_id, ttl, None)
    }

    /// Remove the grant of exactly `lock_id`, answering with what was removed.
    /// With `principal`, only a grant stored with that principal is removed
    /// (another's: an error of kind [`FaultKind::NotOwner`], nothing changed).
    fn release_as(
        &self,
        resource: &str,
        lock_id: &str,
        principal: Option<&str>,
    ) -> impl Future<Output = Result<Removal, Self::Error>> + Send;

    /// [`LockStore::release_as`] whoever holds the grant.
    fn release_grant(
        &self,
        resource: &str,
        lock_id: &str,
    ) -> impl Future<Output = Result<Removal, Self::Error>> + Send {
        self.release_as(resource, lock_id, None)
    }

    /// A hand-off: [`LockStore::release_as`] of `lock_id` on `next.resource`,
    /// then [`LockStore::grant`] of `next`, each answered as that call would
    /// answer it had it been made on its own, one after the other. A store may
    /// do both in one write when the release finds the grant (the resource then
    /// goes from one holder to the next with nothing in between, and the token
    /// rules of a grant still apply).
    fn hand_off(
        &self,
        lock_id: &str,
        principal: Option<&str>,
        next: &Proposal<'_>,
    ) -> impl Future<Output = HandOff<Self::Error>> + Send {
        async move {
            let released = self.release_as(next.resource, lock_id, principal).await;
            let vote = self.grant(next).await;
            (released, vote)
        }
    }

    /// Remove the grant of exactly `lock_id` unless a retry adopted it, and
    /// tombstone the lock id. True when a grant was removed.
    fn abort(
        &self,
        resource: &str,
        lock_id: &str,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// The resource's holder and mark.
    fn read(
        &self,
        resource: &str,
    ) -> impl Future<Output = Result<ResourceState, Self::Error>> + Send;

    /// The grants holding resources that start with `prefix` (`""`: every
    /// resource) and sort after `start_after` (`""`: from the first), in
    /// resource order (by UTF-8 bytes), at most `limit` of them, read at one
    /// moment. `more` says whether the page stopped at `limit`.
    fn list(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Listing, Self::Error>> + Send;

    /// `Ok` when the shard serves: reachable, and not quarantined.
    fn check_health(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> GrantRecord {
        GrantRecord {
            lock_id: "L".into(),
            owner: "o".into(),
            token: 7,
            ttl_ms: 1_000,
            request_id: "r".into(),
            granted_unix_ms: 0,
            adopted: false,
            principal: String::new(),
        }
    }

    #[test]
    fn a_vote_names_its_holder_only_when_it_has_one() {
        assert_eq!(Vote::Granted(1).holder(), Some(&1));
        assert_eq!(Vote::Held(2).holder(), Some(&2));
        assert_eq!(Vote::RequestConflict(3).holder(), Some(&3));
        assert_eq!(Vote::<u8>::TokenTooLow { mark: 9 }.holder(), None);
        assert_eq!(Vote::<u8>::Aborted.holder(), None);
    }

    #[test]
    fn a_removal_says_whether_a_grant_was_removed() {
        assert!(Removal::Removed(Some(record())).removed());
        assert!(Removal::Removed(None).removed());
        assert!(!Removal::Nothing.removed());
    }
}
