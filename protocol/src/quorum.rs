//! The majority rule: a lock is held when a majority of regions hold a grant for
//! the same lock id.
//!
//! Each operation the coordinator fans out to every region has a tally here. The
//! coordinator records each region's reply as it arrives (or a failure when the
//! region cannot be reached in time) and acts on the first decision that is not
//! `Pending`. A tally decides as soon as the outcome is certain, so a caller waits
//! for the nearest majority, never for the slowest region.
//!
//! Nothing here can turn a minority into success: every success path checks a
//! count of agreeing regions against [`majority`].

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::store::Vote;

/// How many regions make a majority of `regions`.
pub const fn majority(regions: usize) -> usize {
    regions / 2 + 1
}

/// A grant as one region reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The lock this grant belongs to.
    pub lock_id: String,
    /// Who asked for it.
    pub owner: String,
    /// Its fencing token (the same in every region for one lock id).
    pub token: u64,
    /// The TTL it was granted (or last renewed) with.
    pub ttl_ms: u64,
    /// The idempotency key of the acquire that created it.
    pub request_id: String,
    /// How long it lives at least in that region, as of the reply.
    pub remaining: Duration,
    /// The principal that acquired it (empty: access control was off).
    pub principal: String,
}

impl Grant {
    /// Whether this grant can be the answer to an acquire with this request id,
    /// owner and TTL. A region's "granted" that names another request, owner or
    /// TTL is not a vote for this acquire, whatever its outcome code says.
    pub fn answers(&self, request_id: &str, owner: &str, ttl_ms: u64) -> bool {
        self.request_id == request_id && self.owner == owner && self.ttl_ms == ttl_ms
    }
}

/// Regions that answered with something other than success: by index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionSplit {
    /// Regions that answered.
    pub reachable: Vec<usize>,
    /// Regions that failed or did not answer in time.
    pub unreachable: Vec<usize>,
}

/// The kth largest remaining time among grants: how long a majority still holds.
fn majority_remaining(mut remaining: Vec<Duration>, majority: usize) -> Duration {
    remaining.sort_unstable_by(|a, b| b.cmp(a));
    remaining
        .get(majority.saturating_sub(1))
        .copied()
        .unwrap_or(Duration::ZERO)
}

/// Grants grouped by lock id, with the regions holding each.
fn group_grants<'a>(
    grants: impl Iterator<Item = (usize, &'a Grant)>,
) -> Vec<(&'a Grant, Vec<usize>)> {
    let mut groups: BTreeMap<(&str, u64), (&Grant, Vec<usize>)> = BTreeMap::new();
    for (region, grant) in grants {
        groups
            .entry((grant.lock_id.as_str(), grant.token))
            .or_insert_with(|| (grant, Vec::new()))
            .1
            .push(region);
    }
    groups.into_values().collect()
}

/// A lock that a majority agrees on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MajorityGrant {
    /// The grant (lock id, owner, token, ttl) the majority holds.
    pub grant: Grant,
    /// The regions that hold it, in index order.
    pub regions: Vec<usize>,
    /// How long a majority of them hold it at least, as of their replies.
    pub held_for: Duration,
}

fn majority_grant(
    group: (&Grant, Vec<usize>),
    remaining: Vec<Duration>,
    majority: usize,
) -> MajorityGrant {
    let (grant, regions) = group;
    MajorityGrant {
        grant: grant.clone(),
        regions,
        held_for: majority_remaining(remaining, majority),
    }
}

// ---------------------------------------------------------------------------
// Acquire
// ---------------------------------------------------------------------------

/// One region's answer to a grant proposal, as the tally sees it: the region's
/// [`Vote`], or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The region voted (see [`Vote`]; a granted vote may carry an earlier lock
    /// id of the same request: an offer to adopt).
    Voted(Vote<Grant>),
    /// No answer: unreachable, timed out, or an error.
    Failed,
}

/// Why an acquire round did not win.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// Too many regions failed for any majority to form.
    Unavailable(RegionSplit),
    /// The request id was used before with a different owner or TTL.
    RequestConflict(Grant),
    /// Another lock holds the resource.
    Held(Grant),
    /// Our token was too low; propose again above `mark`.
    TokenTooLow {
        /// The highest mark any region reported.
        mark: u64,
    },
    /// Votes split with no single reason (e.g. racing proposals): retry later.
    Split,
}

/// What to do after a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireDecision {
    /// Not certain yet: wait for more replies.
    Pending,
    /// A majority granted one lock id.
    Won(MajorityGrant),
    /// No majority can form any more.
    Lost(Loss),
}

/// Tally of one round of grant proposals (one lock id, one token).
#[derive(Debug, Clone)]
pub struct AcquireRound {
    /// One slot per region; `None` until it replied.
    replies: Vec<Option<Reply>>,
}

impl AcquireRound {
    /// A round over `regions` regions.
    pub fn new(regions: usize) -> Self {
        Self {
            replies: vec![None; regions],
        }
    }

    /// Record region `region`'s reply and decide. A second reply from the same
    /// region (a duplicate) replaces nothing: the first answer stands.
    pub fn record(&mut self, region: usize, reply: Reply) -> AcquireDecision {
        if let Some(slot @ None) = self.replies.get_mut(region) {
            *slot = Some(reply);
        }
        self.decide()
    }

    /// Whether region `region` already replied in this round.
    pub fn has_replied(&self, region: usize) -> bool {
        self.replies.get(region).is_some_and(Option::is_some)
    }

    /// The decision given the replies so far.
    pub fn decide(&self) -> AcquireDecision {
        let n = self.replies.len();
        let majority = majority(n);
        let granted = self
            .replies
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Some(Reply::Voted(Vote::Granted(g))) => Some((i, g)),
                _ => None,
            });
        let groups = group_grants(granted);
        let pending = self.replies.iter().filter(|r| r.is_none()).count();

        if let Some(index) = groups
            .iter()
            .position(|(_, regions)| regions.len() >= majority)
        {
            let group = groups.into_iter().nth(index).expect("index from position");
            let remaining = group
                .1
                .iter()
                .filter_map(|&i| match &self.replies[i] {
                    Some(Reply::Voted(Vote::Granted(g))) => Some(g.remaining),
                    _ => None,
                })
                .collect();
            return AcquireDecision::Won(majority_grant(group, remaining, majority));
        }
        let can_still_win =
            pending >= majority || groups.iter().any(|(_, r)| r.len() + pending >= majority);
        if can_still_win {
            return AcquireDecision::Pending;
        }
        AcquireDecision::Lost(self.loss(majority, pending))
    }

    fn loss(&self, majority: usize, pending: usize) -> Loss {
        let n = self.replies.len();
        // Only regions that actually failed count as unreachable; a region that has
        // not answered yet may still answer (regression: an early loss once counted
        // it as failed and reported UNAVAILABLE instead of "held").
        let failed = self
            .replies
            .iter()
            .filter(|r| matches!(r, Some(Reply::Failed)))
            .count();
        if n - failed < majority {
            return Loss::Unavailable(split(&self.replies, |r| matches!(r, Reply::Failed)));
        }
        let replies = || self.replies.iter().flatten();
        if let Some(grant) = replies().find_map(|r| match r {
            Reply::Voted(Vote::RequestConflict(g)) => Some(g.clone()),
            _ => None,
        }) {
            return Loss::RequestConflict(grant);
        }
        // Regions that said "token too low" are free: when they (with those yet
        // to answer) can make a majority, a re-proposal above their marks may win
        // whatever a minority holds (regression: a stray grant in one region,
        // e.g. one that landed after its release, made the whole round "held",
        // also when the loss was decided before the last region answered).
        let too_low = replies()
            .filter(|r| matches!(r, Reply::Voted(Vote::TokenTooLow { .. })))
            .count();
        let highest_mark = replies()
            .filter_map(|r| match r {
                Reply::Voted(Vote::TokenTooLow { mark }) => Some(*mark),
                _ => None,
            })
            .max();
        if too_low + pending >= majority
            && let Some(mark) = highest_mark
        {
            return Loss::TokenTooLow { mark };
        }
        if let Some(grant) = replies()
            .filter_map(|r| match r {
                Reply::Voted(Vote::Held(g)) => Some(g),
                _ => None,
            })
            .max_by_key(|g| g.remaining)
        {
            return Loss::Held(grant.clone());
        }
        if let Some(mark) = highest_mark {
            return Loss::TokenTooLow { mark };
        }
        Loss::Split
    }
}

// ---------------------------------------------------------------------------
// Renew
// ---------------------------------------------------------------------------

/// One region's answer to a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewReply {
    /// The grant for this lock id was extended.
    Renewed(Grant),
    /// No grant for this lock id in that region.
    NotFound,
    /// No answer.
    Failed,
}

/// What a renewal comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewDecision {
    /// Not certain yet.
    Pending,
    /// A majority extended the lock.
    Renewed(MajorityGrant),
    /// A majority does not hold this lock id: it is gone.
    Lost,
    /// Too few regions answered to tell.
    Unavailable(RegionSplit),
}

/// Tally of one renewal.
#[derive(Debug, Clone)]
pub struct RenewTally {
    /// One slot per region; `None` until it replied.
    replies: Vec<Option<RenewReply>>,
}

impl RenewTally {
    /// A tally over `regions` regions.
    pub fn new(regions: usize) -> Self {
        Self {
            replies: vec![None; regions],
        }
    }

    /// Record a reply (the first from each region stands) and decide.
    pub fn record(&mut self, region: usize, reply: RenewReply) -> RenewDecision {
        if let Some(slot @ None) = self.replies.get_mut(region) {
            *slot = Some(reply);
        }
        let n = self.replies.len();
        let majority = majority(n);
        let renewed = self
            .replies
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Some(RenewReply::Renewed(g)) => Some((i, g)),
                _ => None,
            });
        let groups = group_grants(renewed);
        if let Some(index) = groups.iter().position(|(_, r)| r.len() >= majority) {
            let group = groups.into_iter().nth(index).expect("index from position");
            let remaining = group
                .1
                .iter()
                .filter_map(|&i| match &self.replies[i] {
                    Some(RenewReply::Renewed(g)) => Some(g.remaining),
                    _ => None,
                })
                .collect();
            return RenewDecision::Renewed(majority_grant(group, remaining, majority));
        }
        let count =
            |want: fn(&Option<RenewReply>) -> bool| self.replies.iter().filter(|r| want(r)).count();
        let not_found = count(|r| matches!(r, Some(RenewReply::NotFound)));
        if not_found >= majority {
            return RenewDecision::Lost;
        }
        if count(Option::is_none) > 0 {
            return RenewDecision::Pending;
        }
        RenewDecision::Unavailable(split(&self.replies, |r| matches!(r, RenewReply::Failed)))
    }
}

fn split<T>(replies: &[Option<T>], failed: impl Fn(&T) -> bool) -> RegionSplit {
    let mut out = RegionSplit::default();
    for (i, reply) in replies.iter().enumerate() {
        match reply {
            Some(r) if !failed(r) => out.reachable.push(i),
            _ => out.unreachable.push(i),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Release
// ---------------------------------------------------------------------------

/// One region's answer to a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReply {
    /// The grant for this lock id existed and was removed.
    Removed,
    /// No grant for this lock id in that region.
    NotFound,
    /// No answer.
    Failed,
}

/// What a release comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseDecision {
    /// Not certain yet.
    Pending,
    /// A majority held this lock id and removed it: the lock was held and is now
    /// released.
    Released {
        /// Regions that removed a grant.
        regions: Vec<usize>,
    },
    /// No majority held this lock id: it had expired, been released, or been
    /// superseded (any stray minority grant of it is removed all the same).
    NotFound,
    /// Too few regions answered to tell.
    Unavailable(RegionSplit),
}

/// Tally of one release.
#[derive(Debug, Clone)]
pub struct ReleaseTally {
    /// One slot per region; `None` until it replied.
    replies: Vec<Option<RemoveReply>>,
}

impl ReleaseTally {
    /// A tally over `regions` regions.
    pub fn new(regions: usize) -> Self {
        Self {
            replies: vec![None; regions],
        }
    }

    /// Record a reply (the first from each region stands) and decide.
    pub fn record(&mut self, region: usize, reply: RemoveReply) -> ReleaseDecision {
        if let Some(slot @ None) = self.replies.get_mut(region) {
            *slot = Some(reply);
        }
        let majority = majority(self.replies.len());
        let of = |want: RemoveReply| self.replies.iter().filter(|r| **r == Some(want)).count();
        let (removed, not_found) = (of(RemoveReply::Removed), of(RemoveReply::NotFound));
        if removed >= majority {
            let regions = (0..self.replies.len())
                .filter(|&i| self.replies[i] == Some(RemoveReply::Removed))
                .collect();
            return ReleaseDecision::Released { regions };
        }
        if self.replies.len() - not_found < majority {
            return ReleaseDecision::NotFound;
        }
        if self.replies.iter().any(Option::is_none) {
            return ReleaseDecision::Pending;
        }
        ReleaseDecision::Unavailable(split(&self.replies, |r| *r == RemoveReply::Failed))
    }
}

// ---------------------------------------------------------------------------
// Read (Describe and Validate)
// ---------------------------------------------------------------------------

/// One region's view of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadReply {
    /// Nobody holds it there.
    Free,
    /// This grant holds it there.
    Holding(Grant),
    /// No answer.
    Failed,
}

/// Who holds a resource, as far as a majority can show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadDecision {
    /// Not certain yet.
    Pending,
    /// A majority holds one lock.
    Held(MajorityGrant),
    /// No lock is held by a majority, and none could be among the silent regions.
    Free,
    /// The regions that did not answer could change the answer.
    Unavailable(RegionSplit),
}

/// Tally of one read.
#[derive(Debug, Clone)]
pub struct ReadTally {
    /// One slot per region; `None` until it replied.
    replies: Vec<Option<ReadReply>>,
}

impl ReadTally {
    /// A tally over `regions` regions.
    pub fn new(regions: usize) -> Self {
        Self {
            replies: vec![None; regions],
        }
    }

    /// Record a reply (the first from each region stands) and decide.
    pub fn record(&mut self, region: usize, reply: ReadReply) -> ReadDecision {
        if let Some(slot @ None) = self.replies.get_mut(region) {
            *slot = Some(reply);
        }
        let majority = majority(self.replies.len());
        let holding = self
            .replies
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Some(ReadReply::Holding(g)) => Some((i, g)),
                _ => None,
            });
        let groups = group_grants(holding);
        if let Some(index) = groups.iter().position(|(_, r)| r.len() >= majority) {
            let group = groups.into_iter().nth(index).expect("index from position");
            let remaining = group
                .1
                .iter()
                .filter_map(|&i| match &self.replies[i] {
                    Some(ReadReply::Holding(g)) => Some(g.remaining),
                    _ => None,
                })
                .collect();
            return ReadDecision::Held(majority_grant(group, remaining, majority));
        }
        let free = self
            .replies
            .iter()
            .filter(|r| **r == Some(ReadReply::Free))
            .count();
        if free >= majority {
            return ReadDecision::Free;
        }
        let unknown = self
            .replies
            .iter()
            .filter(|r| matches!(r, None | Some(ReadReply::Failed)))
            .count();
        if groups.iter().any(|(_, r)| r.len() + unknown >= majority) || unknown >= majority {
            if self.replies.iter().any(Option::is_none) {
                return ReadDecision::Pending;
            }
            return ReadDecision::Unavailable(split(&self.replies, |r| *r == ReadReply::Failed));
        }
        ReadDecision::Free
    }
}

// ---------------------------------------------------------------------------
// List
// ---------------------------------------------------------------------------

/// One region's page of one shard's grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListReply {
    /// The grants it holds, by resource, in resource order.
    Listed {
        /// (resource, grant) pairs.
        grants: Vec<(String, Grant)>,
        /// True when the region stopped at the page's limit: it may hold more
        /// grants after the last one listed.
        more: bool,
    },
    /// No answer.
    Failed,
}

impl ListReply {
    /// The last resource this page speaks for, when it stopped at its limit
    /// (`None`: it speaks for every resource after the start).
    fn horizon(&self) -> Option<&str> {
        match self {
            Self::Listed { grants, more: true } => grants.iter().map(|(r, _)| r.as_str()).max(),
            _ => None,
        }
    }

    /// Whether this is an answer: a page that stopped at its limit without
    /// listing anything breaks the protocol and is no answer.
    fn answered(&self) -> bool {
        match self {
            Self::Listed { grants, more } => !(*more && grants.is_empty()),
            Self::Failed => false,
        }
    }
}

/// A lock that a majority of regions holds, found by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedLock {
    /// The resource.
    pub resource: String,
    /// The lock, its regions, and how long a majority holds it.
    pub held: MajorityGrant,
}

/// What one shard's listing comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListDecision {
    /// The locks a majority holds, in resource order, among the resources up
    /// to `through` (included): every answering region spoke for those. `None`:
    /// they spoke for every resource after the start.
    Listed {
        /// The locks.
        locks: Vec<ListedLock>,
        /// The last resource covered, when a region's page stopped at its limit.
        through: Option<String>,
    },
    /// Fewer than a majority of regions answered.
    Unavailable(RegionSplit),
}

/// The locks a majority holds in one shard, from every region's page (one
/// reply per region, by index). The same rule as a read: a resource is listed
/// only when a majority of all regions report a grant of the same lock id (a
/// minority's grant, e.g. one still in flight or left over, is not); fewer than
/// a majority of answers is unavailable. A region's page covers the resources
/// up to its last one when it stopped at its limit, so only resources that
/// every answering region covered are decided; the rest is the next page's.
pub fn decide_list(replies: &[ListReply]) -> ListDecision {
    let majority = majority(replies.len());
    let answered: Vec<usize> = (0..replies.len())
        .filter(|&i| replies[i].answered())
        .collect();
    if answered.len() < majority {
        return ListDecision::Unavailable(RegionSplit {
            unreachable: (0..replies.len())
                .filter(|i| !answered.contains(i))
                .collect(),
            reachable: answered,
        });
    }
    let through = answered.iter().filter_map(|&i| replies[i].horizon()).min();
    // Resource → the regions holding a grant on it (one per region).
    let mut holders: BTreeMap<&str, Vec<(usize, &Grant)>> = BTreeMap::new();
    for &i in &answered {
        let ListReply::Listed { grants, .. } = &replies[i] else {
            continue;
        };
        for (resource, grant) in grants {
            if through.is_some_and(|last| resource.as_str() > last) {
                continue;
            }
            let held = holders.entry(resource.as_str()).or_default();
            if held.iter().all(|(region, _)| *region != i) {
                held.push((i, grant));
            }
        }
    }
    let locks = holders
        .into_iter()
        .filter_map(|(resource, held)| {
            let group = group_grants(held.iter().copied())
                .into_iter()
                .find(|(_, regions)| regions.len() >= majority)?;
            let remaining = held
                .iter()
                .filter(|(region, _)| group.1.contains(region))
                .map(|(_, grant)| grant.remaining)
                .collect();
            Some(ListedLock {
                resource: resource.to_owned(),
                held: majority_grant(group, remaining, majority),
            })
        })
        .collect();
    ListDecision::Listed {
        locks,
        through: through.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every grant in these tests carries the same request id and owner: the
    /// idempotent-retry cases (an earlier lock E and a new proposal L of one
    /// request) are then real retries, and a tally that grouped replies by request
    /// id instead of lock id would count E and L as one lock (planted bug M1b).
    fn grant(lock_id: &str, token: u64, remaining_ms: u64) -> Grant {
        Grant {
            lock_id: lock_id.into(),
            owner: "owner".into(),
            token,
            ttl_ms: 10_000,
            request_id: "request-1".into(),
            remaining: Duration::from_millis(remaining_ms),
            principal: String::new(),
        }
    }

    fn granted(lock_id: &str, token: u64) -> Reply {
        Reply::Voted(Vote::Granted(grant(lock_id, token, 10_000)))
    }

    #[test]
    fn majority_of_three_is_two() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn one_grant_is_never_a_majority() {
        let mut round = AcquireRound::new(3);
        assert_eq!(round.record(0, granted("L", 7)), AcquireDecision::Pending);
        let lost = round.record(1, Reply::Failed);
        assert_eq!(lost, AcquireDecision::Pending);
        match round.record(2, Reply::Failed) {
            AcquireDecision::Lost(Loss::Unavailable(split)) => {
                assert_eq!(split.reachable, vec![0]);
                assert_eq!(split.unreachable, vec![1, 2]);
            }
            other => panic!("a single grant must not win: {other:?}"),
        }
    }

    #[test]
    fn wins_at_the_nearest_majority_without_waiting_for_the_third() {
        let mut round = AcquireRound::new(3);
        assert_eq!(round.record(2, granted("L", 7)), AcquireDecision::Pending);
        match round.record(0, granted("L", 7)) {
            AcquireDecision::Won(won) => {
                assert_eq!(won.grant.lock_id, "L");
                assert_eq!(won.regions, vec![0, 2]);
                assert_eq!(won.held_for, Duration::from_millis(10_000));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_duplicate_reply_from_one_region_counts_once() {
        let mut round = AcquireRound::new(3);
        round.record(1, granted("L", 7));
        assert_eq!(round.record(1, granted("L", 7)), AcquireDecision::Pending);
        // And a later different reply from the same region does not overwrite it.
        assert_eq!(round.record(1, Reply::Failed), AcquireDecision::Pending);
    }

    #[test]
    fn two_refusals_lose_early_naming_the_holder() {
        let mut round = AcquireRound::new(3);
        round.record(0, Reply::Voted(Vote::Held(grant("H", 5, 3_000))));
        match round.record(1, Reply::Voted(Vote::Held(grant("H", 5, 2_000)))) {
            AcquireDecision::Lost(Loss::Held(holder)) => {
                assert_eq!(holder.lock_id, "H");
                assert_eq!(holder.remaining, Duration::from_millis(3_000));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_many_failures_is_unavailable_even_if_one_region_says_held() {
        let mut round = AcquireRound::new(3);
        round.record(0, Reply::Voted(Vote::Held(grant("H", 5, 3_000))));
        round.record(1, Reply::Failed);
        assert!(matches!(
            round.record(2, Reply::Failed),
            AcquireDecision::Lost(Loss::Unavailable(_))
        ));
    }

    #[test]
    fn regression_held_plus_one_failure_with_one_pending_is_held_not_unavailable() {
        let mut round = AcquireRound::new(3);
        assert_eq!(round.record(2, Reply::Failed), AcquireDecision::Pending);
        match round.record(0, Reply::Voted(Vote::Held(grant("H", 5, 3_000)))) {
            AcquireDecision::Lost(Loss::Held(holder)) => assert_eq!(holder.lock_id, "H"),
            other => panic!("expected Held, got {other:?}"),
        }
    }

    #[test]
    fn two_failures_decide_unavailable_without_waiting_for_the_third() {
        let mut round = AcquireRound::new(3);
        round.record(1, Reply::Failed);
        match round.record(2, Reply::Failed) {
            AcquireDecision::Lost(Loss::Unavailable(split)) => {
                // Region 0 has not answered: it is not claimed reachable.
                assert_eq!(split.reachable, Vec::<usize>::new());
                assert_eq!(split.unreachable, vec![0, 1, 2]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_too_low_reports_the_highest_mark() {
        let mut round = AcquireRound::new(3);
        round.record(0, Reply::Voted(Vote::TokenTooLow { mark: 40 }));
        round.record(1, granted("L", 7));
        assert_eq!(
            round.record(2, Reply::Voted(Vote::TokenTooLow { mark: 90 })),
            AcquireDecision::Lost(Loss::TokenTooLow { mark: 90 })
        );
    }

    #[test]
    fn held_outranks_token_too_low() {
        let mut round = AcquireRound::new(3);
        round.record(0, Reply::Voted(Vote::TokenTooLow { mark: 40 }));
        round.record(1, granted("L", 7));
        assert!(matches!(
            round.record(2, Reply::Voted(Vote::Held(grant("H", 5, 1)))),
            AcquireDecision::Lost(Loss::Held(_))
        ));
    }

    #[test]
    fn regression_token_too_low_at_a_majority_outranks_a_minority_holder() {
        // Two free regions refused only the token; one still holds a stray grant.
        // Re-proposing above the marks wins: the answer is not "held".
        let mut round = AcquireRound::new(3);
        round.record(0, Reply::Voted(Vote::TokenTooLow { mark: 40 }));
        round.record(1, Reply::Voted(Vote::Held(grant("H", 5, 1))));
        assert_eq!(
            round.record(2, Reply::Voted(Vote::TokenTooLow { mark: 45 })),
            AcquireDecision::Lost(Loss::TokenTooLow { mark: 45 })
        );
    }

    #[test]
    fn regression_token_too_low_with_a_reply_pending_re_proposes_rather_than_report_a_minority_holder()
     {
        // Decided after two replies: a stray holder and one free region. The
        // third (pending) region may be free too: re-propose above the mark.
        let mut round = AcquireRound::new(3);
        round.record(0, Reply::Voted(Vote::Held(grant("H", 5, 1))));
        assert_eq!(
            round.record(1, Reply::Voted(Vote::TokenTooLow { mark: 40 })),
            AcquireDecision::Lost(Loss::TokenTooLow { mark: 40 })
        );
        // With every region answered and only one free, the holder is reported.
        round.record(2, Reply::Voted(Vote::Held(grant("H", 5, 1))));
        assert!(matches!(
            round.decide(),
            AcquireDecision::Lost(Loss::Held(_))
        ));
    }

    #[test]
    fn request_conflict_is_reported() {
        let mut round = AcquireRound::new(3);
        round.record(0, Reply::Voted(Vote::RequestConflict(grant("E", 3, 1))));
        assert!(matches!(
            round.record(1, Reply::Voted(Vote::RequestConflict(grant("E", 3, 1)))),
            AcquireDecision::Lost(Loss::RequestConflict(_))
        ));
    }

    #[test]
    fn grants_for_different_lock_ids_do_not_add_up() {
        // An idempotent retry: one region still holds the earlier attempt E, another
        // grants the new proposal L. Neither is a majority.
        let mut round = AcquireRound::new(3);
        round.record(0, granted("E", 3));
        round.record(1, granted("L", 9));
        assert_eq!(
            round.record(2, Reply::Voted(Vote::Aborted)),
            AcquireDecision::Lost(Loss::Split)
        );
    }

    #[test]
    fn an_earlier_grant_for_the_same_request_wins_with_its_own_remaining_time() {
        let mut round = AcquireRound::new(3);
        round.record(0, Reply::Voted(Vote::Granted(grant("E", 3, 4_000))));
        round.record(1, granted("L", 9));
        match round.record(2, Reply::Voted(Vote::Granted(grant("E", 3, 2_500)))) {
            AcquireDecision::Won(won) => {
                assert_eq!(won.grant.lock_id, "E");
                assert_eq!(won.regions, vec![0, 2]);
                // The lock is held while a majority holds it: the smaller of the two.
                assert_eq!(won.held_for, Duration::from_millis(2_500));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn held_for_is_the_majority_th_largest_remaining() {
        assert_eq!(
            majority_remaining(
                vec![
                    Duration::from_millis(5),
                    Duration::from_millis(9),
                    Duration::from_millis(7)
                ],
                2
            ),
            Duration::from_millis(7)
        );
    }

    #[test]
    fn renew_needs_a_majority_and_never_counts_a_lone_region() {
        let mut tally = RenewTally::new(3);
        assert_eq!(
            tally.record(0, RenewReply::Renewed(grant("L", 7, 9_000))),
            RenewDecision::Pending
        );
        assert_eq!(
            tally.record(1, RenewReply::NotFound),
            RenewDecision::Pending
        );
        assert!(matches!(
            tally.record(2, RenewReply::Failed),
            RenewDecision::Unavailable(_)
        ));

        let mut tally = RenewTally::new(3);
        tally.record(0, RenewReply::NotFound);
        assert_eq!(tally.record(2, RenewReply::NotFound), RenewDecision::Lost);

        let mut tally = RenewTally::new(3);
        tally.record(0, RenewReply::Renewed(grant("L", 7, 9_000)));
        assert!(matches!(
            tally.record(1, RenewReply::Renewed(grant("L", 7, 8_000))),
            RenewDecision::Renewed(MajorityGrant { held_for, .. }) if held_for == Duration::from_millis(8_000)
        ));
    }

    #[test]
    fn release_rules() {
        let mut tally = ReleaseTally::new(3);
        assert_eq!(
            tally.record(0, RemoveReply::Removed),
            ReleaseDecision::Pending
        );
        assert_eq!(
            tally.record(1, RemoveReply::Removed),
            ReleaseDecision::Released {
                regions: vec![0, 1]
            }
        );

        let mut tally = ReleaseTally::new(3);
        tally.record(0, RemoveReply::NotFound);
        assert_eq!(
            tally.record(1, RemoveReply::NotFound),
            ReleaseDecision::NotFound
        );

        // Regression (t20 expiry test): a superseded lock with one stray grant left
        // in one region is NOT_FOUND, though that stray grant is removed.
        let mut tally = ReleaseTally::new(3);
        tally.record(2, RemoveReply::Removed);
        tally.record(1, RemoveReply::NotFound);
        assert_eq!(
            tally.record(0, RemoveReply::NotFound),
            ReleaseDecision::NotFound
        );

        // One removed, one silent: the silent region decides whether it was held.
        let mut tally = ReleaseTally::new(3);
        tally.record(0, RemoveReply::Removed);
        tally.record(1, RemoveReply::NotFound);
        assert!(matches!(
            tally.record(2, RemoveReply::Failed),
            ReleaseDecision::Unavailable(_)
        ));

        let mut tally = ReleaseTally::new(3);
        tally.record(0, RemoveReply::Failed);
        tally.record(1, RemoveReply::Failed);
        assert!(matches!(
            tally.record(2, RemoveReply::NotFound),
            ReleaseDecision::Unavailable(_)
        ));
    }

    #[test]
    fn read_rules() {
        let mut tally = ReadTally::new(3);
        tally.record(0, ReadReply::Holding(grant("L", 7, 5_000)));
        assert!(matches!(
            tally.record(1, ReadReply::Holding(grant("L", 7, 4_000))),
            ReadDecision::Held(_)
        ));

        let mut tally = ReadTally::new(3);
        tally.record(0, ReadReply::Free);
        assert_eq!(tally.record(1, ReadReply::Free), ReadDecision::Free);

        // One holder, one free, one silent: the silent one decides, so we cannot tell.
        let mut tally = ReadTally::new(3);
        tally.record(0, ReadReply::Holding(grant("L", 7, 5_000)));
        tally.record(1, ReadReply::Free);
        assert_eq!(tally.record(1, ReadReply::Free), ReadDecision::Pending);
        assert!(matches!(
            tally.record(2, ReadReply::Failed),
            ReadDecision::Unavailable(_)
        ));

        // Split between two lock ids and a free region: nobody holds a majority.
        let mut tally = ReadTally::new(3);
        tally.record(0, ReadReply::Holding(grant("L", 7, 5_000)));
        tally.record(1, ReadReply::Holding(grant("M", 8, 5_000)));
        assert_eq!(tally.record(2, ReadReply::Free), ReadDecision::Free);
    }

    #[test]
    fn a_grant_answers_only_its_own_request_owner_and_ttl() {
        let g = grant("E", 3, 1_000);
        assert!(g.answers("request-1", "owner", 10_000));
        assert!(!g.answers("request-2", "owner", 10_000));
        assert!(!g.answers("request-1", "mallory", 10_000));
        assert!(!g.answers("request-1", "owner", 9_999));
    }

    #[test]
    fn an_unavailable_release_names_the_failed_regions_as_unreachable() {
        let mut tally = ReleaseTally::new(3);
        tally.record(0, RemoveReply::Removed);
        tally.record(1, RemoveReply::NotFound);
        assert_eq!(
            tally.record(2, RemoveReply::Failed),
            ReleaseDecision::Unavailable(RegionSplit {
                reachable: vec![0, 1],
                unreachable: vec![2],
            })
        );
    }

    #[test]
    fn a_read_held_by_a_majority_reports_its_regions_and_the_majority_th_largest_remaining() {
        let mut tally = ReadTally::new(3);
        tally.record(2, ReadReply::Holding(grant("L", 7, 5_000)));
        tally.record(1, ReadReply::Free);
        match tally.record(0, ReadReply::Holding(grant("L", 7, 4_000))) {
            ReadDecision::Held(held) => {
                assert_eq!((held.grant.lock_id.as_str(), held.grant.token), ("L", 7));
                assert_eq!(held.regions, vec![0, 2]);
                // Held while a majority (both holders) holds it: the smaller remaining.
                assert_eq!(held.held_for, Duration::from_millis(4_000));
            }
            other => panic!("expected Held, got {other:?}"),
        }
    }

    #[test]
    fn an_unavailable_read_names_the_failed_regions_as_unreachable() {
        let mut tally = ReadTally::new(3);
        tally.record(0, ReadReply::Holding(grant("L", 7, 5_000)));
        tally.record(1, ReadReply::Free);
        assert_eq!(
            tally.record(2, ReadReply::Failed),
            ReadDecision::Unavailable(RegionSplit {
                reachable: vec![0, 1],
                unreachable: vec![2],
            })
        );
    }

    fn page(grants: &[(&str, &str, u64, u64)], more: bool) -> ListReply {
        ListReply::Listed {
            grants: grants
                .iter()
                .map(|&(resource, lock_id, token, remaining_ms)| {
                    (resource.to_owned(), grant(lock_id, token, remaining_ms))
                })
                .collect(),
            more,
        }
    }

    fn listed(decision: &ListDecision) -> Vec<(&str, &str, Vec<usize>, u64)> {
        match decision {
            ListDecision::Listed { locks, .. } => locks
                .iter()
                .map(|l| {
                    (
                        l.resource.as_str(),
                        l.held.grant.lock_id.as_str(),
                        l.held.regions.clone(),
                        u64::try_from(l.held.held_for.as_millis()).unwrap(),
                    )
                })
                .collect(),
            other => panic!("expected a listing, got {other:?}"),
        }
    }

    fn through(decision: &ListDecision) -> Option<&str> {
        match decision {
            ListDecision::Listed { through, .. } => through.as_deref(),
            other => panic!("expected a listing, got {other:?}"),
        }
    }

    #[test]
    fn a_listing_shows_only_locks_a_majority_holds_with_the_same_lock_id() {
        let decision = decide_list(&[
            page(
                &[
                    ("a", "A", 1, 5_000),
                    ("b", "B", 2, 5_000),
                    ("d", "D", 4, 3_000),
                ],
                false,
            ),
            page(
                &[
                    ("a", "A", 1, 4_000),
                    ("c", "C", 3, 5_000),
                    ("d", "D", 4, 6_000),
                ],
                false,
            ),
            page(&[("b", "X", 9, 5_000), ("d", "D", 4, 1_000)], false),
        ]);
        assert_eq!(
            listed(&decision),
            vec![
                // Two of three: held; the majority-th largest remaining.
                ("a", "A", vec![0, 1], 4_000),
                // "b": one region each for two lock ids; "c": one region only.
                ("d", "D", vec![0, 1, 2], 3_000),
            ]
        );
        assert_eq!(through(&decision), None);
    }

    #[test]
    fn a_listing_needs_answers_from_a_majority_and_names_who_failed() {
        let free = || page(&[], false);
        assert_eq!(
            decide_list(&[free(), ListReply::Failed, ListReply::Failed]),
            ListDecision::Unavailable(RegionSplit {
                reachable: vec![0],
                unreachable: vec![1, 2],
            })
        );
        // Two answers are enough; the silent region's grants cannot be known, so
        // only what the two agree on is listed.
        let decision = decide_list(&[
            ListReply::Failed,
            page(&[("a", "A", 1, 5_000), ("b", "B", 2, 5_000)], false),
            page(&[("a", "A", 1, 5_000)], false),
        ]);
        assert_eq!(listed(&decision), vec![("a", "A", vec![1, 2], 5_000)]);
        // A page that stopped at its limit without listing anything is no answer.
        assert!(matches!(
            decide_list(&[page(&[], true), ListReply::Failed, free()]),
            ListDecision::Unavailable(RegionSplit { ref reachable, .. }) if *reachable == [2]
        ));
    }

    #[test]
    fn a_listing_decides_only_the_resources_every_answering_region_covered() {
        // Region 0 stopped at "b", region 1 at "c": "c" and "d" are the next page's.
        let decision = decide_list(&[
            page(&[("a", "A", 1, 5_000), ("b", "B", 2, 5_000)], true),
            page(
                &[
                    ("a", "A", 1, 5_000),
                    ("b", "B", 2, 5_000),
                    ("c", "C", 3, 5_000),
                ],
                true,
            ),
            page(&[("c", "C", 3, 5_000), ("d", "D", 4, 5_000)], false),
        ]);
        assert_eq!(
            listed(&decision),
            vec![("a", "A", vec![0, 1], 5_000), ("b", "B", vec![0, 1], 5_000)]
        );
        assert_eq!(through(&decision), Some("b"));
        // A failed region's page bounds nothing.
        let decision = decide_list(&[
            page(&[("a", "A", 1, 5_000)], false),
            ListReply::Failed,
            page(&[("a", "A", 1, 5_000), ("c", "C", 3, 5_000)], true),
        ]);
        assert_eq!(through(&decision), Some("c"));
        assert_eq!(listed(&decision), vec![("a", "A", vec![0, 2], 5_000)]);
    }

    #[test]
    fn a_region_counts_once_per_resource_in_a_listing() {
        let decision = decide_list(&[
            page(&[("a", "A", 1, 5_000), ("a", "A", 1, 5_000)], false),
            page(&[], false),
            page(&[], false),
        ]);
        assert_eq!(listed(&decision), vec![]);
    }
}
