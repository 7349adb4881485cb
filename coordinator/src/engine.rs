//! The coordinator's lock operations: fan a request out to every region in
//! parallel, feed the replies to the protocol's tallies, and act on the first
//! decision. Everything here is orchestration; every rule lives in
//! `globallock_protocol`.
//!
//! After a decision, the calls still in flight are not cancelled: they run to
//! completion in the background (a late grant of a lost proposal is aborted, a
//! late release still removes its grant), off the caller's critical path.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use globallock_proto::agent::{
    Holder, ListRequest, ListResponse, LockRef, REGION_METADATA, ReadRequest, ReadResponse,
    RemoveResponse, RenewRequest, RenewResponse,
};
use globallock_protocol::access::AccessControl;
use globallock_protocol::audit::{AuditEvent, AuditRecord};
use globallock_protocol::backoff::Backoff;
use globallock_protocol::clock::SharedClock;
use globallock_protocol::fence::TokenRatchet;
use globallock_protocol::listing;
use globallock_protocol::lock_id::LockId;
use globallock_protocol::quorum::{
    Grant, ListDecision, ListReply, ListedLock, MajorityGrant, ReadDecision, ReadReply, ReadTally,
    RegionSplit, ReleaseDecision, ReleaseTally, RemoveReply, RenewDecision, RenewReply, RenewTally,
    decide_list,
};
use globallock_protocol::rate::{Rate, RateLimiter};
use globallock_protocol::request::{self, Limits};
use globallock_protocol::ring::HashRing;
use globallock_protocol::validity::DriftAllowance;
use globallock_telemetry::audit::AuditLog;
use globallock_telemetry::propagation::{inject_grpc_from, trace_id};
use tonic::{Response, Status};
use tracing::{Instrument, Span, debug, info_span, instrument, warn};

use crate::access::Caller;
use crate::contention::TopContended;
use crate::error::{LockError, Reachability, RegionFailure};
use crate::regions::Regions;
use crate::status_page::activity::Activity;

/// What an acquire asks for.
#[derive(Debug, Clone)]
pub struct AcquireParams {
    /// The resource.
    pub resource: String,
    /// Who asks.
    pub owner: String,
    /// TTL in ms.
    pub ttl_ms: u64,
    /// How long to keep trying, in ms (0: once).
    pub wait_ms: u64,
    /// Idempotency key (empty: none).
    pub request_id: String,
    /// The caller's principal (empty: access control is off): stored with the
    /// grant, and the acquire rate is counted per principal.
    pub principal: String,
}

/// A granted lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    /// Its id.
    pub lock_id: String,
    /// The resource.
    pub resource: String,
    /// The owner.
    pub owner: String,
    /// Its fencing token.
    pub fencing_token: u64,
    /// The TTL granted.
    pub ttl_ms: u64,
    /// How long the caller may rely on it, from when it sent the request.
    pub validity: Duration,
    /// The regions whose grants formed the majority.
    pub granted_regions: Vec<String>,
}

/// A renewed lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// Its fencing token.
    pub fencing_token: u64,
    /// The TTL applied.
    pub ttl_ms: u64,
    /// How long the caller may rely on it, from when it sent the request.
    pub validity: Duration,
}

/// Who holds a resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description {
    /// The holder, if a majority agrees on one.
    pub holder: Option<HolderView>,
}

/// A holder as described to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderView {
    /// Its lock id.
    pub lock_id: String,
    /// Its owner.
    pub owner: String,
    /// The principal that acquired it (empty: access control was off).
    pub principal: String,
    /// Its token.
    pub fencing_token: u64,
    /// The TTL it was granted with.
    pub ttl_ms: u64,
    /// How long a majority holds it at least.
    pub expires_in: Duration,
    /// The regions that hold it.
    pub regions: Vec<String>,
}

/// A lock as a listing shows it: no lock id (that is its holder's to use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedHolder {
    /// The resource.
    pub resource: String,
    /// Its owner.
    pub owner: String,
    /// Its token.
    pub fencing_token: u64,
    /// How long a majority holds it at least.
    pub expires_in: Duration,
    /// The regions that hold it.
    pub regions: Vec<String>,
}

/// One page of the locks held now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockPage {
    /// The locks, in resource order.
    pub locks: Vec<ListedHolder>,
    /// The token of the next page; empty on the last page.
    pub next_page_token: String,
}

/// The lock service: stateless apart from hints (token marks) and region health.
#[derive(Debug)]
pub struct LockEngine {
    /// The regions.
    pub(crate) regions: Arc<Regions>,
    /// Resource → shard.
    ring: HashRing,
    /// Input bounds.
    limits: Limits,
    /// Clock drift allowance.
    pub(crate) drift: DriftAllowance,
    /// Delays while waiting.
    pub(crate) backoff: Backoff,
    /// Time.
    pub(crate) clock: SharedClock,
    /// Token choice hints.
    pub(crate) ratchet: Arc<Mutex<TokenRatchet>>,
    /// Per-owner acquire rate.
    limiter: Mutex<RateLimiter>,
    /// Locks held and acquires waiting, per principal.
    quotas: crate::quota::Quotas,
    /// Waiting acquires in line, per resource.
    pub(crate) waiters: crate::waiters::WaitLines,
    /// Locks released here lately, to free a region that kept one (crate::repair).
    pub(crate) released: Arc<crate::repair::Released>,
    /// Most contended resources (for the admin endpoint, never for labels).
    pub(crate) contention: TopContended,
    /// Recent acquire latency and rejections (for the status page).
    activity: Activity,
    /// Where audit records go.
    audit: AuditLog,
    /// The ring's epoch, sent with every proposal.
    pub(crate) ring_epoch: u64,
    /// Who may call and do what (`None`: everyone, everything).
    access: Option<AccessControl>,
}

/// Optional behaviour of an engine beyond the protocol.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Input bounds.
    pub limits: Limits,
    /// Clock drift allowance.
    pub drift: DriftAllowance,
    /// Per-owner acquire rate.
    pub acquire_rate: Rate,
    /// Where audit records go.
    pub audit: AuditLog,
    /// The ring's epoch, sent with every proposal.
    pub ring_epoch: u64,
    /// Access control (`None`: open access).
    pub access: Option<AccessControl>,
    /// Caps per principal.
    pub quotas: crate::quota::QuotaLimits,
}

pub(crate) type Replies<T> = FuturesUnordered<BoxFuture<'static, (usize, Result<T, Status>)>>;

impl LockEngine {
    /// An engine over `regions`.
    pub fn new(
        regions: Arc<Regions>,
        ring: HashRing,
        options: EngineOptions,
        clock: SharedClock,
    ) -> Self {
        Self {
            regions,
            ring,
            limits: options.limits,
            drift: options.drift,
            backoff: Backoff::default(),
            clock,
            ratchet: Arc::new(Mutex::new(TokenRatchet::new())),
            limiter: Mutex::new(RateLimiter::new(options.acquire_rate)),
            contention: TopContended::default(),
            activity: Activity::default(),
            audit: options.audit,
            ring_epoch: options.ring_epoch,
            access: options.access,
            quotas: crate::quota::Quotas::new(options.quotas),
            waiters: crate::waiters::WaitLines::default(),
            released: Arc::default(),
        }
    }

    /// Access control, when it is on.
    pub fn access(&self) -> Option<&AccessControl> {
        self.access.as_ref()
    }

    /// The most contended resources seen by this coordinator.
    pub fn contention(&self) -> &TopContended {
        &self.contention
    }

    /// Recent acquire latency and rejections on this coordinator.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Write an audit record for the current request.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn audit(
        &self,
        event: AuditEvent,
        resource: &str,
        owner: &str,
        lock_id: &str,
        token: u64,
        regions: Vec<String>,
        outcome: &str,
    ) {
        self.audit.record(AuditRecord {
            ts_unix_ms: self.clock.unix_micros() / 1_000,
            event,
            source: "coordinator".into(),
            resource: resource.to_owned(),
            owner: owner.to_owned(),
            lock_id: lock_id.to_owned(),
            token,
            regions,
            outcome: outcome.to_owned(),
            trace_id: trace_id(&Span::current()).unwrap_or_default(),
            suppressed: None,
        });
    }

    /// The input bounds this engine enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Acquire a lock: held once a majority of regions granted it.
    pub async fn acquire(&self, p: AcquireParams) -> Result<Acquired, LockError> {
        let started = std::time::Instant::now();
        let result = self.acquire_inner(p).await;
        observe("acquire", started, &result);
        metrics::counter!("globallock_acquire_total", "outcome" => outcome_label(&result))
            .increment(1);
        self.activity.acquire(
            started.elapsed(),
            result.as_ref().err().map(LockError::kind),
        );
        result
    }

    #[instrument(name = "acquire", skip_all, fields(resource = %p.resource, owner = %p.owner, ttl_ms = p.ttl_ms, wait_ms = p.wait_ms, request_id, lock_id, token, outcome))]
    async fn acquire_inner(&self, p: AcquireParams) -> Result<Acquired, LockError> {
        request::resource(&p.resource)?;
        request::owner(&p.owner)?;
        let ttl = self.limits.ttl(p.ttl_ms)?;
        let wait = self.limits.wait(p.wait_ms)?;
        request::request_id(&p.request_id)?;
        let rate = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(rate_key(&p), self.clock.monotonic());
        if let Err(retry_after) = rate {
            return Err(LockError::RateLimited {
                owner: p.owner.clone(),
                retry_after,
            });
        }
        // Held while the acquire runs: a waiting acquire counts as a waiter.
        let _admission =
            self.quotas
                .admit(&p.principal, !wait.is_zero(), std::time::Instant::now())?;
        let request_id = if p.request_id.is_empty() {
            format!("auto-{:032x}", rand::random::<u128>())
        } else {
            p.request_id.clone()
        };
        Span::current().record("request_id", request_id.as_str());
        let shard = self.ring.shard_for(&p.resource).to_owned();
        let result = self.drive_acquire(&p, shard, ttl, wait, request_id).await;
        let span = Span::current();
        match &result {
            Ok(a) => {
                self.quotas.held(
                    &p.principal,
                    &a.lock_id,
                    std::time::Instant::now(),
                    a.validity,
                );
                span.record("lock_id", a.lock_id.as_str())
                    .record("token", a.fencing_token)
                    .record("outcome", "granted");
                self.audit(
                    AuditEvent::Granted,
                    &a.resource,
                    &a.owner,
                    &a.lock_id,
                    a.fencing_token,
                    a.granted_regions.clone(),
                    "granted",
                );
            }
            Err(e) => {
                let kind = e.kind();
                span.record("outcome", kind);
                self.audit(
                    AuditEvent::Rejected,
                    &p.resource,
                    &p.owner,
                    "",
                    0,
                    Vec::new(),
                    kind,
                );
            }
        }
        result
    }

    /// The answer for a lock a majority holds.
    pub(crate) fn acquired(
        &self,
        p: &AcquireParams,
        won: MajorityGrant,
        validity: Duration,
    ) -> Acquired {
        Acquired {
            lock_id: won.grant.lock_id,
            resource: p.resource.clone(),
            owner: won.grant.owner,
            fencing_token: won.grant.token,
            ttl_ms: won.grant.ttl_ms,
            validity,
            granted_regions: self.regions.names(&won.regions),
        }
    }

    /// Extend a lock. Succeeds only while a majority still holds this lock id.
    /// Only the principal that acquired the lock may renew it, or an admin.
    pub async fn renew(
        &self,
        lock_id: &str,
        ttl_ms: u64,
        caller: &Caller,
    ) -> Result<Renewed, LockError> {
        let started = std::time::Instant::now();
        let result = self.renew_inner(lock_id, ttl_ms, caller).await;
        observe("renew", started, &result);
        match &result {
            Ok(renewed) => self.quotas.held(
                &caller.principal,
                lock_id,
                std::time::Instant::now(),
                renewed.validity,
            ),
            Err(LockError::NotFound { .. }) => self.quotas.ended(lock_id),
            Err(_) => {}
        }
        let outcome = match &result {
            Ok(_) => "renewed",
            Err(LockError::NotFound { .. }) => {
                metrics::counter!("globallock_locks_lost_total").increment(1);
                "lost"
            }
            Err(e) => error_label(e),
        };
        metrics::counter!("globallock_renewals_total", "outcome" => outcome).increment(1);
        if let Err(error) = &result {
            self.activity.rejected("renew", error.kind());
        }
        result
    }

    #[instrument(name = "renew", skip_all, fields(lock_id = %lock_id, ttl_ms, resource, outcome))]
    async fn renew_inner(
        &self,
        lock_id: &str,
        ttl_ms: u64,
        caller: &Caller,
    ) -> Result<Renewed, LockError> {
        let id: LockId = lock_id.parse()?;
        let ttl = if ttl_ms == 0 {
            None
        } else {
            Some(self.limits.ttl(ttl_ms)?)
        };
        Span::current().record("resource", id.resource());
        let shard = self.ring.shard_for(id.resource()).to_owned();
        self.regions
            .require_majority(&shard)
            .map_err(LockError::Unavailable)?;
        let request = RenewRequest {
            shard: shard.clone(),
            resource: id.resource().to_owned(),
            lock_id: lock_id.to_owned(),
            ttl_ms,
            principal: caller.principal.clone(),
            force: caller.admin,
        };
        let started = self.clock.monotonic();
        let mut replies = self.fan_out(&shard, "renew", request, |mut c, r| async move {
            c.renew(r).await
        });
        let mut tally = RenewTally::new(self.regions.len());
        let mut not_owner = false;
        let (decision, failures) = self
            .gather(&shard, &mut replies, |i, result| {
                let reply = renewal_reply(result, lock_id, &mut not_owner);
                Some(tally.record(i, reply)).filter(|d| *d != RenewDecision::Pending)
            })
            .await;
        tokio::spawn(replies.collect::<Vec<_>>());
        if not_owner && !matches!(decision, Some(RenewDecision::Renewed(_))) {
            return Err(LockError::NotOwner {
                lock_id: lock_id.to_owned(),
            });
        }
        let elapsed = self.clock.monotonic().saturating_sub(started);
        let outcome = match decision.unwrap_or(RenewDecision::Pending) {
            RenewDecision::Renewed(won) => self.renewed(&id, lock_id, ttl, won, elapsed),
            RenewDecision::Lost => Err(self.renewal_lost(&shard, &id, lock_id)),
            RenewDecision::Unavailable(split) => {
                Err(LockError::Unavailable(self.reachability(&split, &failures)))
            }
            RenewDecision::Pending => Err(LockError::Internal("renewal ended undecided".into())),
        };
        record_outcome(&outcome);
        outcome
    }

    /// A majority extended the lock: what the caller may rely on, from before
    /// the renewal was sent.
    fn renewed(
        &self,
        id: &LockId,
        lock_id: &str,
        ttl: Option<Duration>,
        won: MajorityGrant,
        elapsed: Duration,
    ) -> Result<Renewed, LockError> {
        let applied = ttl.unwrap_or(Duration::from_millis(won.grant.ttl_ms));
        let Some(validity) = self.drift.validity(applied.min(won.held_for), elapsed) else {
            return Err(LockError::TooSlow {
                elapsed,
                ttl: applied,
            });
        };
        self.audit(
            AuditEvent::Renewed,
            id.resource(),
            &won.grant.owner,
            lock_id,
            won.grant.token,
            self.regions.names(&won.regions),
            "renewed",
        );
        Ok(Renewed {
            fencing_token: won.grant.token,
            ttl_ms: millis(applied),
            validity,
        })
    }

    /// A majority no longer holds the lock: remove whatever minority of grants
    /// remains, so it cannot linger, and record the loss.
    fn renewal_lost(&self, shard: &str, id: &LockId, lock_id: &str) -> LockError {
        self.release_in_background(shard, id.resource(), lock_id);
        self.audit(
            AuditEvent::Lost,
            id.resource(),
            "",
            lock_id,
            0,
            Vec::new(),
            "not-found",
        );
        LockError::NotFound {
            lock_id: lock_id.to_owned(),
        }
    }

    fn release_in_background(&self, shard: &str, resource: &str, lock_id: &str) {
        // Only after its own holder's renewal found it gone: forced.
        let request = LockRef {
            shard: shard.to_owned(),
            resource: resource.to_owned(),
            lock_id: lock_id.to_owned(),
            principal: String::new(),
            force: true,
        };
        let replies = self.fan_out(shard, "release", request, |mut c, r| async move {
            c.release(r).await
        });
        tokio::spawn(replies.collect::<Vec<_>>());
    }

    /// Release a lock everywhere; only the grant with this exact id is removed.
    /// Only the principal that acquired the lock may release it, or an admin
    /// (audited as a force-release).
    pub async fn release(&self, lock_id: &str, caller: &Caller) -> Result<Vec<String>, LockError> {
        let started = std::time::Instant::now();
        let result = self.release_inner(lock_id, caller).await;
        observe("release", started, &result);
        let outcome = match &result {
            Ok(_) => "released",
            Err(LockError::NotFound { .. }) => "not_found",
            Err(e) => error_label(e),
        };
        metrics::counter!("globallock_releases_total", "outcome" => outcome).increment(1);
        if let Err(error) = &result {
            self.activity.rejected("release", error.kind());
        }
        result
    }

    #[instrument(name = "release", skip_all, fields(lock_id = %lock_id, resource, outcome))]
    async fn release_inner(
        &self,
        lock_id: &str,
        caller: &Caller,
    ) -> Result<Vec<String>, LockError> {
        let id: LockId = lock_id.parse()?;
        Span::current().record("resource", id.resource());
        let shard = self.ring.shard_for(id.resource()).to_owned();
        self.regions
            .require_majority(&shard)
            .map_err(LockError::Unavailable)?;
        let request = LockRef {
            shard: shard.clone(),
            resource: id.resource().to_owned(),
            lock_id: lock_id.to_owned(),
            principal: caller.principal.clone(),
            force: caller.admin,
        };
        // A plain release, or hand-offs carrying the next waiter's proposals.
        let (mut replies, rode) = self.release_calls(request).await;
        let mut tally = ReleaseTally::new(self.regions.len());
        // Whose lock this was, as the first region that removed it says (for the
        // audit trail: a release names the owner and token that ended).
        let mut ended: Option<Holder> = None;
        let mut not_owner = false;
        let (decision, failures) = self
            .gather(&shard, &mut replies, |i, result| {
                let reply = removal_reply(result, lock_id, &mut ended, &mut not_owner);
                Some(tally.record(i, reply)).filter(|d| *d != ReleaseDecision::Pending)
            })
            .await;
        // The remaining regions still remove their grant, off the critical path.
        tokio::spawn(replies.collect::<Vec<_>>());
        if not_owner && !matches!(decision, Some(ReleaseDecision::Released { .. })) {
            return Err(LockError::NotOwner {
                lock_id: lock_id.to_owned(),
            });
        }
        let outcome = match decision.unwrap_or(ReleaseDecision::Pending) {
            ReleaseDecision::Released { regions } => {
                self.quotas.ended(lock_id);
                self.released.released(lock_id);
                self.waiters.released(id.resource(), lock_id, rode);
                Ok(self.released(&id, lock_id, caller, ended, &regions))
            }
            ReleaseDecision::NotFound => Err(LockError::NotFound {
                lock_id: lock_id.to_owned(),
            }),
            ReleaseDecision::Unavailable(split) => {
                Err(LockError::Unavailable(self.reachability(&split, &failures)))
            }
            ReleaseDecision::Pending => Err(LockError::Internal("release ended undecided".into())),
        };
        record_outcome(&outcome);
        outcome
    }

    /// A majority removed the lock: audit whose lock ended (an admin's release
    /// of another principal's lock is a force-release, and says so), and name
    /// the regions.
    fn released(
        &self,
        id: &LockId,
        lock_id: &str,
        caller: &Caller,
        ended: Option<Holder>,
        regions: &[usize],
    ) -> Vec<String> {
        let regions = self.regions.names(regions);
        let forced = ended
            .as_ref()
            .is_some_and(|h| caller.admin && h.principal != caller.principal);
        let (owner, token) = ended.map_or((String::new(), 0), |h| (h.owner, h.fencing_token));
        let event = if forced {
            AuditEvent::ForceReleased
        } else {
            AuditEvent::Released
        };
        self.audit(
            event,
            id.resource(),
            &owner,
            lock_id,
            token,
            regions.clone(),
            "released",
        );
        regions
    }

    /// Who holds `resource`, as a majority of regions agree.
    pub async fn describe(&self, resource: &str) -> Result<Description, LockError> {
        let started = std::time::Instant::now();
        let result = self.describe_inner(resource).await;
        observe("describe", started, &result);
        result
    }

    #[instrument(name = "describe", skip_all, fields(resource = %resource, held))]
    async fn describe_inner(&self, resource: &str) -> Result<Description, LockError> {
        request::resource(resource)?;
        let shard = self.ring.shard_for(resource).to_owned();
        self.regions
            .require_majority(&shard)
            .map_err(LockError::Unavailable)?;
        let request = ReadRequest {
            shard: shard.clone(),
            resource: resource.to_owned(),
        };
        let started = self.clock.monotonic();
        let mut replies = self.fan_out(&shard, "read", request, |mut c, r| async move {
            c.read(r).await
        });
        let mut tally = ReadTally::new(self.regions.len());
        let (decision, failures) = self
            .gather(&shard, &mut replies, |i, result| {
                let reply = match result {
                    Ok(ReadResponse {
                        holder,
                        high_water_mark,
                    }) => {
                        self.ratchet
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .observe(resource, high_water_mark);
                        holder.map_or(ReadReply::Free, |h| ReadReply::Holding(grant_of(h)))
                    }
                    Err(_) => ReadReply::Failed,
                };
                Some(tally.record(i, reply)).filter(|d| *d != ReadDecision::Pending)
            })
            .await;
        let elapsed = self.clock.monotonic().saturating_sub(started);
        let outcome = match decision.unwrap_or(ReadDecision::Pending) {
            ReadDecision::Held(held) => Ok(Description {
                holder: Some(HolderView {
                    lock_id: held.grant.lock_id,
                    owner: held.grant.owner,
                    principal: held.grant.principal,
                    fencing_token: held.grant.token,
                    ttl_ms: held.grant.ttl_ms,
                    expires_in: held.held_for.saturating_sub(elapsed),
                    regions: self.regions.names(&held.regions),
                }),
            }),
            ReadDecision::Free => Ok(Description::default()),
            ReadDecision::Unavailable(split) => {
                Err(LockError::Unavailable(self.reachability(&split, &failures)))
            }
            ReadDecision::Pending => Err(LockError::Internal("read ended undecided".into())),
        };
        Span::current().record("held", outcome.as_ref().is_ok_and(|d| d.holder.is_some()));
        outcome
    }

    /// Is `token` the token of the lock a majority holds on `resource` right now?
    /// Returns (current, current holder's token or 0).
    pub async fn validate(&self, resource: &str, token: u64) -> Result<(bool, u64), LockError> {
        let description = self.describe(resource).await?;
        let current = description.holder.map_or(0, |h| h.fencing_token);
        Ok((current != 0 && current == token, current))
    }

    /// The locks held now on resources starting with `prefix`, as a majority of
    /// regions agree, one page of at most `page_size` (0: the default) at a
    /// time, after the page of `page_token` (empty: the first page).
    pub async fn list(
        &self,
        prefix: &str,
        page_size: u64,
        page_token: &str,
    ) -> Result<LockPage, LockError> {
        let started = std::time::Instant::now();
        let result = self.list_inner(prefix, page_size, page_token).await;
        observe("list", started, &result);
        result
    }

    #[instrument(name = "list", skip_all, fields(prefix = %prefix, page_size, locks, outcome))]
    async fn list_inner(
        &self,
        prefix: &str,
        page_size: u64,
        page_token: &str,
    ) -> Result<LockPage, LockError> {
        request::prefix(prefix)?;
        let page_size = request::page_size(page_size)?;
        let start_after = listing::start_after(page_token)?;
        Span::current().record("page_size", page_size);
        let started = self.clock.monotonic();
        // Every shard at once; each answers for the resources it covered.
        let shards = self
            .ring
            .shards()
            .iter()
            .map(|shard| self.list_shard(shard, prefix, &start_after, page_size));
        let outcome = futures::future::try_join_all(shards).await.map(|parts| {
            let elapsed = self.clock.monotonic().saturating_sub(started);
            let page = listing::merge(parts, page_size);
            LockPage {
                locks: page
                    .locks
                    .into_iter()
                    .map(|lock| ListedHolder {
                        resource: lock.resource,
                        owner: lock.held.grant.owner,
                        fencing_token: lock.held.grant.token,
                        expires_in: lock.held.held_for.saturating_sub(elapsed),
                        regions: self.regions.names(&lock.held.regions),
                    })
                    .collect(),
                next_page_token: page
                    .next
                    .as_deref()
                    .map(listing::page_token)
                    .unwrap_or_default(),
            }
        });
        if let Ok(page) = &outcome {
            Span::current().record("locks", page.locks.len());
        }
        record_outcome(&outcome);
        outcome
    }

    /// One shard's part of a listing: every region's page of its grants, and
    /// what a majority holds among the resources they all covered.
    async fn list_shard(
        &self,
        shard: &str,
        prefix: &str,
        start_after: &str,
        page_size: usize,
    ) -> Result<(Vec<ListedLock>, Option<String>), LockError> {
        self.regions
            .require_majority(shard)
            .map_err(LockError::Unavailable)?;
        let request = ListRequest {
            shard: shard.to_owned(),
            prefix: prefix.to_owned(),
            start_after: start_after.to_owned(),
            limit: u32::try_from(page_size).unwrap_or(u32::MAX),
        };
        let mut replies =
            self.fan_out(
                shard,
                "list",
                request,
                |mut c, r| async move { c.list(r).await },
            );
        // Every region's page is needed: a grant only a silent region shows
        // could make a majority.
        let mut pages = vec![ListReply::Failed; self.regions.len()];
        let mut waiting = self.regions.len();
        let (_, failures) = self
            .gather(shard, &mut replies, |i, result| {
                if let Some(page) = pages.get_mut(i) {
                    *page = match result {
                        Ok(response) => list_reply(response),
                        Err(_) => ListReply::Failed,
                    };
                }
                waiting = waiting.saturating_sub(1);
                (waiting == 0).then_some(())
            })
            .await;
        match decide_list(&pages) {
            ListDecision::Listed { locks, through } => Ok((locks, through)),
            ListDecision::Unavailable(split) => {
                Err(LockError::Unavailable(self.reachability(&split, &failures)))
            }
        }
    }

    /// Send `message` to every region with `call`, each bounded by the region
    /// deadline (also sent along as the gRPC timeout, so agents can give up too).
    pub(crate) fn fan_out<M, T, F, Fut>(
        &self,
        shard: &str,
        op: &'static str,
        message: M,
        call: F,
    ) -> Replies<T>
    where
        M: Clone,
        T: Send + 'static,
        F: Fn(crate::link::AgentClient, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>> + Send + 'static,
    {
        (0..self.regions.len())
            .map(|i| self.call_region(i, shard, op, message.clone(), &call))
            .collect()
    }

    /// Send `message` to region `i` with `call`, bounded by the region deadline
    /// (also sent as the gRPC timeout, so the agent can give up too), counted and
    /// timed per region; only an answer naming region `i` counts.
    pub(crate) fn call_region<M, T, F, Fut>(
        &self,
        i: usize,
        shard: &str,
        op: &'static str,
        message: M,
        call: F,
    ) -> BoxFuture<'static, (usize, Result<T, Status>)>
    where
        T: Send + 'static,
        F: Fn(crate::link::AgentClient, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>> + Send + 'static,
    {
        let timeout = self.regions.timeout();
        let region = self.regions.get(i);
        let span = info_span!("region_call", region = %region.name, shard, op);
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        inject_grpc_from(&span, request.metadata_mut());
        let call = call(region.client(), request);
        let name = region.name.clone();
        async move {
            let started = std::time::Instant::now();
            let result = match tokio::time::timeout(timeout, call).await {
                Ok(result) => result.and_then(|r| answered_by(&name, r)),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            };
            record_region_call(&name, op, started, &result);
            (i, result)
        }
        .instrument(span)
        .boxed()
    }

    /// Feed replies to `record` as they arrive (updating region health) until it
    /// returns a decision. Also returns each region's failure, for error messages.
    async fn gather<T, D>(
        &self,
        shard: &str,
        replies: &mut Replies<T>,
        mut record: impl FnMut(usize, Result<T, Status>) -> Option<D>,
    ) -> (Option<D>, Vec<Option<Status>>) {
        let mut failures = vec![None; self.regions.len()];
        while let Some((i, result)) = replies.next().await {
            self.regions.observe(i, shard, result.as_ref().map(|_| ()));
            if let Err(status) = &result {
                failures[i] = Some(status.clone());
            }
            if let Some(decision) = record(i, result) {
                return (Some(decision), failures);
            }
        }
        (None, failures)
    }

    pub(crate) fn reachability(
        &self,
        split: &RegionSplit,
        failures: &[Option<Status>],
    ) -> Reachability {
        Reachability {
            reachable: self.regions.names(&split.reachable),
            unreachable: split
                .unreachable
                .iter()
                .map(|&i| RegionFailure {
                    region: self.regions.get(i).name.clone(),
                    status: failures
                        .get(i)
                        .cloned()
                        .flatten()
                        .unwrap_or_else(|| Status::unavailable("no usable answer")),
                })
                .collect(),
        }
    }
}

/// Count and time one call to a region (bounded labels only).
fn record_region_call<T>(
    region: &str,
    op: &'static str,
    started: std::time::Instant,
    result: &Result<T, Status>,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) =>
        {
            "timeout"
        }
        Err(_) => "error",
    };
    metrics::counter!("globallock_region_requests_total", "region" => region.to_owned(), "op" => op, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("globallock_region_request_duration_seconds", "region" => region.to_owned(), "op" => op)
        .record(started.elapsed().as_secs_f64());
    if let Err(status) = result {
        debug!(code = ?status.code(), message = status.message(), "region call failed");
    }
}

/// The reply, if the agent that sent it serves `region`; otherwise a failure, so
/// that one agent listed under two region names never counts twice.
fn answered_by<T>(region: &str, response: Response<T>) -> Result<T, Status> {
    let named = response
        .metadata()
        .get(REGION_METADATA)
        .and_then(|v| v.to_str().ok());
    if named == Some(region) {
        return Ok(response.into_inner());
    }
    warn!(region, answered_as = ?named, "reply from an agent serving another region; not counted");
    Err(Status::failed_precondition(format!(
        "the endpoint configured for region {region:?} is served by region {:?}: \
         is one agent listed under two region names?",
        named.unwrap_or("(unnamed)")
    )))
}

pub(crate) fn grant_of(h: Holder) -> Grant {
    Grant {
        lock_id: h.lock_id,
        owner: h.owner,
        token: h.fencing_token,
        ttl_ms: h.ttl_ms,
        request_id: h.request_id,
        remaining: Duration::from_millis(h.remaining_ms),
        principal: h.principal,
    }
}

/// A region's page of a shard's grants, as the list rule reads it. A page
/// naming a grant without its holder breaks the protocol: no answer.
fn list_reply(response: ListResponse) -> ListReply {
    let grants: Option<Vec<(String, Grant)>> = response
        .grants
        .into_iter()
        .map(|g| Some((g.resource, grant_of(g.holder?))))
        .collect();
    match grants {
        Some(grants) => ListReply::Listed {
            grants,
            more: response.more,
        },
        None => ListReply::Failed,
    }
}

fn record_outcome<T>(outcome: &Result<T, LockError>) {
    let kind = match outcome {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    Span::current().record("outcome", kind);
}

/// Register every counter series at zero, so dashboards and alerts see them (and
/// rates work) before the first event.
pub fn register_metrics() {
    for outcome in [
        "granted",
        "held",
        "contended",
        "no_quorum",
        "invalid",
        "rate_limited",
        "error",
    ] {
        metrics::counter!("globallock_acquire_total", "outcome" => outcome).increment(0);
    }
    for outcome in ["renewed", "lost", "no_quorum", "invalid", "error"] {
        metrics::counter!("globallock_renewals_total", "outcome" => outcome).increment(0);
    }
    for outcome in ["released", "not_found", "no_quorum", "invalid", "error"] {
        metrics::counter!("globallock_releases_total", "outcome" => outcome).increment(0);
    }
    for op in ["acquire", "renew", "release", "describe", "list"] {
        metrics::counter!("globallock_quorum_failures_total", "op" => op).increment(0);
    }
    metrics::counter!("globallock_locks_lost_total").increment(0);
    metrics::counter!("globallock_contention_total").increment(0);
}

/// Record a request's latency, and a quorum failure if that is how it ended.
fn observe<T>(op: &'static str, started: std::time::Instant, result: &Result<T, LockError>) {
    metrics::histogram!("globallock_request_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if matches!(result, Err(LockError::Unavailable(_))) {
        metrics::counter!("globallock_quorum_failures_total", "op" => op).increment(1);
    }
}

/// The bounded `outcome` label of a request.
fn outcome_label<T>(result: &Result<T, LockError>) -> &'static str {
    match result {
        Ok(_) => "granted",
        Err(e) => error_label(e),
    }
}

/// The bounded `outcome` label of an error.
fn error_label(error: &LockError) -> &'static str {
    match error.kind() {
        "held" => "held",
        "contended" => "contended",
        "no-quorum" => "no_quorum",
        "invalid-argument" | "request-id-reused" => "invalid",
        "rate-limited" => "rate_limited",
        "quota-exceeded" => "quota_exceeded",
        "not-found" => "not_found",
        _ => "error",
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whose acquire rate an acquire counts against: its principal (which the
/// caller cannot choose), or without access control its owner label.
fn rate_key(p: &AcquireParams) -> &str {
    if p.principal.is_empty() {
        &p.owner
    } else {
        &p.principal
    }
}

/// One region's answer to a release, as the release rule counts it; notes the
/// first removed grant of `lock_id` (whose lock ended) and whether the region
/// refused because the lock is another principal's.
fn removal_reply(
    result: Result<RemoveResponse, Status>,
    lock_id: &str,
    ended: &mut Option<Holder>,
    not_owner: &mut bool,
) -> RemoveReply {
    match result {
        Ok(RemoveResponse {
            removed: true,
            holder,
        }) => {
            if ended.is_none() {
                *ended = holder.filter(|h| h.lock_id == lock_id);
            }
            RemoveReply::Removed
        }
        Ok(RemoveResponse { removed: false, .. }) => RemoveReply::NotFound,
        Err(status) if status.code() == tonic::Code::PermissionDenied => {
            *not_owner = true;
            RemoveReply::NotFound
        }
        Err(_) => RemoveReply::Failed,
    }
}

/// One region's answer to a renewal, as the renewal rule counts it; notes
/// whether the region refused because the lock is another principal's.
fn renewal_reply(
    result: Result<RenewResponse, Status>,
    lock_id: &str,
    not_owner: &mut bool,
) -> RenewReply {
    match result {
        Ok(RenewResponse {
            renewed: true,
            holder: Some(h),
        }) if h.lock_id == lock_id => RenewReply::Renewed(grant_of(h)),
        Ok(_) => RenewReply::NotFound,
        Err(status) if status.code() == tonic::Code::PermissionDenied => {
            *not_owner = true;
            RenewReply::NotFound
        }
        Err(_) => RenewReply::Failed,
    }
}
