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

    /// The same vote with its holder translated (e.g. from the wire).
    pub fn map<T>(self, f: impl FnOnce(H) -> T) -> Vote<T> {
        match self {
            Self::Granted(h) => Vote::Granted(f(h)),
            Self::Held(h) => Vote::Held(f(h)),
            Self::RequestConflict(h) => Vote::RequestConflict(f(h)),
            Self::TokenTooLow { mark } => Vote::TokenTooLow { mark },
            Self::Aborted => Vote::Aborted,
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

/// How a store operation failed, as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The store could not answer now (timeout, connection, contention,
    /// quarantine): the region has no vote on this request.
    Unavailable,
    /// Stored data could not be decoded: an operator must look.
    DataLoss,
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
    /// hold the resource here.
    fn renew(
        &self,
        resource: &str,
        lock_id: &str,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<Option<Holding>, Self::Error>> + Send;

    /// Remove the grant of exactly `lock_id`, answering with what was removed.
    fn release_grant(
        &self,
        resource: &str,
        lock_id: &str,
    ) -> impl Future<Output = Result<Removal, Self::Error>> + Send;

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

    /// `Ok` when the shard serves: reachable, and not quarantined.
    fn check_health(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
