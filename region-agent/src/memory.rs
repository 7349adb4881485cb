//! A shard's store in memory: the [`LockStore`] contract without etcd, for
//! tests of the agent (and of anything above it) that need no real store.
//!
//! It keeps the contract exactly (the same contract tests run against it and
//! against etcd: `region-agent/tests/store_contract.rs`) and answers refused
//! proposals with the same protocol rule as the etcd store
//! ([`globallock_protocol::membership::Refusal`]). What it does not model: data
//! loss and quarantine (it never forgets), shared lease buckets (a grant lives
//! exactly its TTL), and etcd's failures, except a whole-store outage
//! ([`MemoryStore::set_down`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use globallock_protocol::clock::SharedClock;
use globallock_protocol::membership::{
    HeldBy, Refusal, RefusalAnswer, renewal_extends, same_request,
};
use globallock_protocol::store::{
    FaultKind, GrantRecord, Holding, Listed, Listing, LockStore, Proposal, Removal, ResourceState,
    StoreFault, Vote,
};

/// Why a [`MemoryStore`] did not answer.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The store was taken down with [`MemoryStore::set_down`].
    #[error("shard {shard}: store is down")]
    Down {
        /// The shard.
        shard: String,
    },
    /// The grant belongs to another principal.
    #[error("lock {lock_id:?} belongs to another principal")]
    NotOwner {
        /// The lock id.
        lock_id: String,
    },
}

impl StoreFault for MemoryError {
    fn kind(&self) -> FaultKind {
        match self {
            Self::Down { .. } => FaultKind::Unavailable,
            Self::NotOwner { .. } => FaultKind::NotOwner,
        }
    }
}

/// `Err(NotOwner)` when `principal` is given and is not the grant's.
fn not_owner(record: &GrantRecord, principal: Option<&str>) -> Result<(), MemoryError> {
    match principal {
        Some(p) if p != record.principal => Err(MemoryError::NotOwner {
            lock_id: record.lock_id.clone(),
        }),
        _ => Ok(()),
    }
}

/// A grant and when it ends (on the store's monotonic clock).
#[derive(Debug, Clone)]
struct Stored {
    record: GrantRecord,
    ends: Duration,
}

#[derive(Debug, Default)]
struct Shard {
    /// Resource → its grant.
    grants: HashMap<String, Stored>,
    /// Resource → its fencing-token mark.
    marks: HashMap<String, u64>,
    /// Lock id → when its tombstone ends.
    tombstones: HashMap<String, Duration>,
}

/// One shard's grants, marks and tombstones, in memory.
#[derive(Debug)]
pub struct MemoryStore {
    name: String,
    clock: SharedClock,
    tombstone_ttl: Duration,
    down: AtomicBool,
    /// True while grants wait at the door (see [`MemoryStore::hold_grants`]).
    held: tokio::sync::watch::Sender<bool>,
    shard: Mutex<Shard>,
}

impl MemoryStore {
    /// An empty shard named `name`, reading time from `clock`; tombstones of
    /// aborted or released lock ids last `tombstone_ttl`.
    pub fn new(name: &str, clock: SharedClock, tombstone_ttl: Duration) -> Self {
        Self {
            name: name.to_owned(),
            clock,
            tombstone_ttl,
            down: AtomicBool::new(false),
            held: tokio::sync::watch::Sender::new(false),
            shard: Mutex::default(),
        }
    }

    /// Take the store down (every operation fails) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Make grants wait before they look at the shard (`true`) until let
    /// through again (`false`): a grant in progress, for tests of what happens
    /// to a call while its store works (cancelled, timed out, shut down).
    pub fn hold_grants(&self, held: bool) {
        self.held.send_replace(held);
    }

    /// How many grants wait at the door now (see [`MemoryStore::hold_grants`]).
    pub fn grants_waiting(&self) -> usize {
        self.held.receiver_count()
    }

    /// The shard's state with everything that has ended removed, or the outage.
    fn live(&self) -> Result<(std::sync::MutexGuard<'_, Shard>, Duration), MemoryError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(MemoryError::Down {
                shard: self.name.clone(),
            });
        }
        let now = self.clock.monotonic();
        let mut shard = self.shard.lock().unwrap_or_else(|e| e.into_inner());
        shard.grants.retain(|_, g| g.ends > now);
        shard.tombstones.retain(|_, ends| *ends > now);
        Ok((shard, now))
    }

    fn holding(stored: &Stored, now: Duration) -> Holding {
        Holding {
            record: stored.record.clone(),
            remaining: stored.ends.saturating_sub(now),
        }
    }

    fn remove(&self, resource: &str, lock_id: &str, abort: bool) -> Result<Removal, MemoryError> {
        let (mut shard, now) = self.live()?;
        let removed = match shard.grants.get(resource) {
            Some(g) if g.record.lock_id == lock_id => {
                if abort && g.record.adopted {
                    // A retry reported it as its lock: not the aborting round's.
                    return Ok(Removal::Nothing);
                }
                shard.grants.remove(resource).map(|g| g.record)
            }
            _ => None,
        };
        // Refuses a delayed proposal of this lock id afterwards.
        shard
            .tombstones
            .insert(lock_id.to_owned(), now + self.tombstone_ttl);
        Ok(match removed {
            Some(record) => Removal::Removed(Some(record)),
            None => Removal::Nothing,
        })
    }
}

impl LockStore for MemoryStore {
    type Error = MemoryError;

    fn name(&self) -> &str {
        &self.name
    }

    async fn grant(&self, p: &Proposal<'_>) -> Result<Vote<Holding>, MemoryError> {
        let _ = self.held.subscribe().wait_for(|held| !*held).await;
        let (mut shard, now) = self.live()?;
        let mark = shard.marks.get(p.resource).copied().unwrap_or(0);
        let tombstoned = shard.tombstones.contains_key(p.lock_id);
        let held = shard.grants.get(p.resource).map(|g| Self::holding(g, now));
        if !tombstoned && held.is_none() && p.token > mark {
            let record = GrantRecord {
                lock_id: p.lock_id.to_owned(),
                owner: p.owner.to_owned(),
                token: p.token,
                ttl_ms: u64::try_from(p.ttl.as_millis()).unwrap_or(u64::MAX),
                request_id: p.request_id.to_owned(),
                granted_unix_ms: self.clock.unix_micros() / 1_000,
                adopted: false,
                principal: p.principal.to_owned(),
            };
            shard.marks.insert(p.resource.to_owned(), p.token);
            let stored = Stored {
                record,
                ends: now + p.ttl,
            };
            let holding = Self::holding(&stored, now);
            shard.grants.insert(p.resource.to_owned(), stored);
            return Ok(Vote::Granted(holding));
        }
        let refusal = Refusal {
            tombstoned,
            held: held.as_ref().map(|h| HeldBy::of(&h.record, p)),
            mark,
            token: p.token,
        };
        Ok(match (refusal.answer(), held) {
            (RefusalAnswer::Aborted, _) => Vote::Aborted,
            (RefusalAnswer::Held, Some(h)) => Vote::Held(h),
            (RefusalAnswer::Offer, Some(h)) => Vote::Granted(h),
            (RefusalAnswer::RequestConflict, Some(h)) => Vote::RequestConflict(h),
            // Everything is read under one lock, so only the token is left.
            _ => Vote::TokenTooLow { mark },
        })
    }

    async fn adopt(
        &self,
        resource: &str,
        lock_id: &str,
        request_id: &str,
    ) -> Result<Option<Holding>, MemoryError> {
        let (mut shard, now) = self.live()?;
        let tombstoned = shard.tombstones.contains_key(lock_id);
        Ok(match shard.grants.get_mut(resource) {
            Some(g)
                if g.record.lock_id == lock_id
                    && same_request(&g.record.request_id, request_id)
                    && !tombstoned =>
            {
                g.record.adopted = true;
                Some(Self::holding(g, now))
            }
            _ => None,
        })
    }

    async fn renew_as(
        &self,
        resource: &str,
        lock_id: &str,
        ttl: Option<Duration>,
        principal: Option<&str>,
    ) -> Result<Option<Holding>, MemoryError> {
        let (mut shard, now) = self.live()?;
        let Some(g) = shard
            .grants
            .get_mut(resource)
            .filter(|g| g.record.lock_id == lock_id)
        else {
            return Ok(None);
        };
        not_owner(&g.record, principal)?;
        let ttl = ttl.unwrap_or(Duration::from_millis(g.record.ttl_ms));
        if renewal_extends(g.ends.saturating_sub(now), ttl) {
            g.ends = now + ttl;
        }
        Ok(Some(Self::holding(g, now)))
    }

    async fn release_as(
        &self,
        resource: &str,
        lock_id: &str,
        principal: Option<&str>,
    ) -> Result<Removal, MemoryError> {
        if let Some(g) = self
            .live()?
            .0
            .grants
            .get(resource)
            .filter(|g| g.record.lock_id == lock_id)
        {
            not_owner(&g.record, principal)?;
        }
        self.remove(resource, lock_id, false)
    }

    async fn abort(&self, resource: &str, lock_id: &str) -> Result<bool, MemoryError> {
        Ok(self.remove(resource, lock_id, true)?.removed())
    }

    async fn read(&self, resource: &str) -> Result<ResourceState, MemoryError> {
        let (shard, now) = self.live()?;
        Ok(ResourceState {
            holder: shard.grants.get(resource).map(|g| Self::holding(g, now)),
            mark: shard.marks.get(resource).copied().unwrap_or(0),
        })
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Listing, MemoryError> {
        let (shard, now) = self.live()?;
        let mut found: Vec<(&String, &Stored)> = shard
            .grants
            .iter()
            .filter(|(resource, _)| resource.starts_with(prefix) && resource.as_str() > start_after)
            .collect();
        // `str` orders by UTF-8 bytes, as etcd orders the stored keys.
        found.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let more = found.len() > limit;
        Ok(Listing {
            grants: found
                .into_iter()
                .take(limit)
                .map(|(resource, stored)| Listed {
                    resource: resource.clone(),
                    holding: Self::holding(stored, now),
                })
                .collect(),
            more,
        })
    }

    async fn check_health(&self) -> Result<(), MemoryError> {
        self.live().map(|_| ())
    }
}
