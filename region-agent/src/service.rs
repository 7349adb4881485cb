//! The agent's gRPC service: checks each request, routes it to its shard's store,
//! and reports the outcome. All decisions about majorities are the coordinator's;
//! the agent answers for its own region only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use globallock_etcd::ShardStore;
use globallock_proto::agent::region_agent_server::RegionAgent;
use globallock_proto::agent::{
    AdoptRequest, AdoptResponse, Call, GrantRequest, GrantResponse, HandOffRequest,
    HandOffResponse, HealthRequest, HealthResponse, Holder, ListRequest, ListResponse, ListedGrant,
    LockRef, PartError, REGION_METADATA, ReadRequest, ReadResponse, RemoveResponse, RenewRequest,
    RenewResponse, ShardHealth, Vote as WireVote,
};
use globallock_protocol::clock::SharedClock;
use globallock_protocol::lock_id::LockId;
use globallock_protocol::request;
use globallock_protocol::ring::HashRing;
use globallock_protocol::store::{
    FaultKind, GrantRecord, Holding, LockStore, Proposal, Removal as StoreRemoval, StoreFault, Vote,
};
use globallock_telemetry::propagation::adopt_grpc_parent;
use tonic::{Request, Response, Status};
use tracing::{Instrument, Span, info_span};

use crate::config::AgentLimits;
use globallock_proto::agent::hand_off_response::{GrantResult, ReleaseResult};
use globallock_protocol::handover::{Admission, Handover};

/// How a grant is removed.
#[derive(Debug, Clone, Copy)]
enum Removal {
    /// The holder gives it up.
    Release,
    /// The coordinator withdraws a proposal that lost (leaves a tombstone).
    Abort,
}

/// One region's agent, over the stores of its shards (etcd in production:
/// [`ShardStore`]; any [`LockStore`] in tests).
#[derive(Debug)]
pub struct AgentService<S = ShardStore> {
    /// This region's name.
    region: Arc<str>,
    /// Shard name → its store.
    shards: Arc<HashMap<String, Arc<S>>>,
    /// The ring over the shard names (to catch coordinators with another shard list).
    ring: Arc<HashRing>,
    /// Longest TTL and highest token lead this region accepts.
    limits: AgentLimits,
    /// This agent's clock (for the token lead).
    clock: SharedClock,
    /// The ring's epoch; proposals of another epoch are refused.
    ring_epoch: u64,
    /// A ring change being handed over (moved resources wait, then need a floor).
    handover: Arc<std::sync::Mutex<Option<Handover>>>,
    /// Where the handover's floor is kept across restarts.
    state_dir: Option<std::path::PathBuf>,
    /// This agent's shutdown: `Exchange` streams end with it (`None`: never).
    shutdown: Option<globallock_runtime::SharedShutdown>,
}

impl<S> Clone for AgentService<S> {
    fn clone(&self) -> Self {
        Self {
            region: self.region.clone(),
            shards: self.shards.clone(),
            ring: self.ring.clone(),
            limits: self.limits,
            clock: self.clock.clone(),
            ring_epoch: self.ring_epoch,
            handover: self.handover.clone(),
            state_dir: self.state_dir.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<S: LockStore> AgentService<S> {
    /// An agent over connected shard stores.
    pub fn new(
        region: &str,
        stores: Vec<Arc<S>>,
        ring: HashRing,
        limits: AgentLimits,
        clock: SharedClock,
    ) -> Self {
        let shards = stores
            .into_iter()
            .map(|s| (s.name().to_owned(), s))
            .collect();
        Self {
            region: region.into(),
            shards: Arc::new(shards),
            ring: Arc::new(ring),
            limits,
            clock,
            ring_epoch: 0,
            handover: Arc::default(),
            state_dir: None,
            shutdown: None,
        }
    }

    /// End `Exchange` streams when `shutdown` completes (after answering the
    /// calls they started), so a graceful shutdown is not held up by them.
    pub fn with_shutdown(mut self, shutdown: globallock_runtime::SharedShutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Completes when this agent shuts down (never without a shutdown).
    pub(crate) fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let signal = self
            .shutdown
            .as_ref()
            .map(globallock_runtime::SharedShutdown::signal);
        async move {
            match signal {
                Some(signal) => signal.await,
                None => std::future::pending().await,
            }
        }
    }

    /// Serve ring epoch `epoch`, handing over `handover` (if the ring changed).
    pub fn with_ring_epoch(
        mut self,
        epoch: u64,
        handover: Option<Handover>,
        state_dir: Option<std::path::PathBuf>,
    ) -> Self {
        self.ring_epoch = epoch;
        self.handover = Arc::new(std::sync::Mutex::new(handover));
        self.state_dir = state_dir;
        self
    }

    /// Refuse a proposal made on another ring.
    fn same_epoch(&self, epoch: u64) -> Result<(), Status> {
        if epoch == self.ring_epoch {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "ring_epoch: the proposal was made on ring epoch {epoch}, region {} serves epoch {}; \
             coordinators and agents must be changed to one ring together",
            self.region, self.ring_epoch
        )))
    }

    /// Whether `shard` may serve `resource` now: a resource that moved onto it
    /// with a ring change waits until every lock of the previous ring expired;
    /// then tokens must be above the returned floor (0: none beyond the shard's).
    fn handed_over(&self, shard: &str, resource: &str) -> Result<u64, Status> {
        let mut handover = self.handover.lock().unwrap_or_else(|e| e.into_inner());
        let Some(h) = handover.as_mut() else {
            return Ok(0);
        };
        match h.admit(resource, shard, self.clock.monotonic()) {
            Admission::Serve { floor } => Ok(floor),
            Admission::NotYet { remaining } => Err(Status::unavailable(format!(
                "region {}: resource moved to shard {shard} with ring epoch {}; it is served in {} ms, \
                 once every lock of the previous ring has expired",
                self.region,
                self.ring_epoch,
                remaining.as_millis()
            ))),
            Admission::NeedsFloor => {
                let floor = h.set_floor(self.clock.unix_micros());
                if let Some(dir) = &self.state_dir
                    && let Err(error) = crate::ring_state::save_floor(dir, floor)
                {
                    tracing::warn!(%error, "cannot keep the ring handover's floor");
                }
                tracing::info!(region = %self.region, floor, "ring handover over: moved resources served above this floor");
                Ok(floor)
            }
        }
    }

    /// A TTL within this region's bounds. The bound keeps every grant shorter than
    /// the quarantine of a shard that forgets it (configuration checks that).
    fn ttl(&self, ttl_ms: u64) -> Result<Duration, Status> {
        let ttl = Duration::from_millis(ttl_ms);
        if ttl.is_zero() || ttl > self.limits.max_ttl {
            return Err(Status::invalid_argument(format!(
                "ttl_ms: {ttl_ms} is out of bounds: region {} accepts 1 to {} \
                 (its quarantine after data loss must outlast every grant)",
                self.region,
                self.limits.max_ttl.as_millis()
            )));
        }
        Ok(ttl)
    }

    /// Refuse a token far above this agent's wall clock: it comes from a
    /// coordinator whose clock ran away, and a shard that later forgets it would
    /// rejoin with a floor (its wall clock) below it.
    fn token(&self, token: u64) -> Result<u64, Status> {
        if token == 0 {
            return Err(Status::invalid_argument("fencing_token: must be above 0"));
        }
        let lead = u64::try_from(self.limits.max_token_lead.as_micros()).unwrap_or(u64::MAX);
        let now = self.clock.unix_micros();
        let highest = now.saturating_add(lead);
        if token > highest {
            return Err(Status::out_of_range(format!(
                "fencing_token: {token} is more than {} ms above region {}'s clock ({now} µs): \
                 the proposing coordinator's clock is wrong",
                self.limits.max_token_lead.as_millis(),
                self.region
            )));
        }
        Ok(token)
    }

    /// Refuse a proposal that arrived after its coordinator stopped waiting for
    /// the answer (`deadline_unix_ms`, stated on this agent's clock as the
    /// coordinator last saw it in a health probe; 0: none). A grant applied then
    /// would hold the resource for nobody until the coordinator's abort (or its
    /// TTL) removes it. Only proposals later than the slack are refused (this
    /// clock may have been stepped since the probe).
    fn in_time(&self, deadline_unix_ms: u64) -> Result<(), Status> {
        if deadline_unix_ms == 0 {
            return Ok(());
        }
        let offset = u64::try_from(self.limits.late_slack.as_millis()).unwrap_or(u64::MAX);
        let now_ms = self.clock.unix_micros() / 1_000;
        let late_by = now_ms.saturating_sub(deadline_unix_ms.saturating_add(offset));
        if late_by > 0 {
            metrics::counter!("globallock_agent_late_proposals_total").increment(1);
            return Err(Status::deadline_exceeded(format!(
                "region {}: the proposal arrived {} ms after its coordinator's deadline \
                 (beyond the {offset} ms slack allowed); not granted",
                self.region,
                late_by + offset
            )));
        }
        Ok(())
    }

    /// The store of the shard the coordinator named, after checking the resource
    /// and that our ring routes it there too.
    fn shard(&self, shard: &str, resource: &str) -> Result<&S, Status> {
        request::resource(resource).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ours = self.ring.shard_for(resource);
        if ours != shard {
            return Err(Status::failed_precondition(format!(
                "region {}: resource routed to shard {shard:?} but this region's ring says {ours:?}; \
                 coordinator and agent shard lists differ",
                self.region
            )));
        }
        self.shards
            .get(shard)
            .map(AsRef::as_ref)
            .ok_or_else(|| Status::failed_precondition(format!("unknown shard {shard:?}")))
    }

    /// Release or abort the grant of exactly `r.lock_id` (in the caller's span).
    async fn remove(&self, r: LockRef, how: Removal) -> Result<Response<RemoveResponse>, Status> {
        record_target(&r.shard, &r.resource, &r.lock_id);
        let store = self.shard(&r.shard, &r.resource)?;
        Self::lock_id(&r.lock_id, &r.resource)?;
        let answer = match how {
            Removal::Release => removal_answer(
                store
                    .release_as(&r.resource, &r.lock_id, acting_as(r.force, &r.principal))
                    .await
                    .map_err(unavailable)?,
            ),
            Removal::Abort => RemoveResponse {
                removed: store
                    .abort(&r.resource, &r.lock_id)
                    .await
                    .map_err(unavailable)?,
                holder: None,
            },
        };
        Span::current().record("removed", answer.removed);
        Ok(Response::new(answer))
    }

    /// Check that `lock_id` is well formed and names `resource`.
    fn lock_id(lock_id: &str, resource: &str) -> Result<(), Status> {
        let parsed: LockId = lock_id
            .parse()
            .map_err(|e: request::InvalidInput| Status::invalid_argument(e.to_string()))?;
        if parsed.resource() != resource {
            return Err(Status::invalid_argument(
                "lock_id: belongs to another resource",
            ));
        }
        Ok(())
    }
}

/// A release's answer: whether it removed a grant, and whose.
fn removal_answer(removal: StoreRemoval) -> RemoveResponse {
    match removal {
        StoreRemoval::Removed(record) => RemoveResponse {
            removed: true,
            holder: record.map(removed_holder),
        },
        StoreRemoval::Nothing => RemoveResponse {
            removed: false,
            holder: None,
        },
    }
}

/// What a checked proposal needs.
enum GrantPlan<'a, S> {
    /// Answered without the store (a token below the ring handover's floor).
    Answered(GrantResponse),
    /// To be put to this store, with this TTL.
    Propose { store: &'a S, ttl: Duration },
}

/// The store's view of a checked proposal.
fn proposal(r: &GrantRequest, ttl: Duration) -> Proposal<'_> {
    Proposal {
        resource: &r.resource,
        lock_id: &r.lock_id,
        owner: &r.owner,
        token: r.fencing_token,
        ttl,
        request_id: &r.request_id,
        principal: &r.principal,
    }
}

/// A grant this region just removed (it has no lifetime left).
fn removed_holder(record: GrantRecord) -> Holder {
    Holder {
        lock_id: record.lock_id,
        owner: record.owner,
        fencing_token: record.token,
        ttl_ms: record.ttl_ms,
        request_id: record.request_id,
        remaining_ms: 0,
        principal: record.principal,
    }
}

fn holder(h: Holding) -> Holder {
    Holder {
        lock_id: h.record.lock_id,
        owner: h.record.owner,
        fencing_token: h.record.token,
        ttl_ms: h.record.ttl_ms,
        request_id: h.record.request_id,
        remaining_ms: u64::try_from(h.remaining.as_millis()).unwrap_or(u64::MAX),
        principal: h.record.principal,
    }
}

/// Count and time one request by operation and outcome (bounded labels only).
fn observe<T>(op: &'static str, started: std::time::Instant, result: &Result<Response<T>, Status>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(status) => match status.code() {
            tonic::Code::InvalidArgument => "invalid",
            tonic::Code::FailedPrecondition => "misrouted",
            tonic::Code::Unavailable => "unavailable",
            tonic::Code::DeadlineExceeded => "late",
            tonic::Code::PermissionDenied => "denied",
            _ => "error",
        },
    };
    metrics::counter!("globallock_agent_requests_total", "op" => op, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("globallock_agent_request_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
}

/// Put the request's target on the current span.
fn record_target(shard: &str, resource: &str, lock_id: &str) {
    Span::current()
        .record("shard", shard)
        .record("resource", resource)
        .record("lock_id", lock_id);
}

/// The one mapping from store failures to gRPC status for this service.
fn unavailable(error: impl StoreFault) -> Status {
    let message = globallock_runtime::error_chain(&error);
    match error.kind() {
        FaultKind::DataLoss => Status::data_loss(message),
        FaultKind::Unavailable => Status::unavailable(message),
        FaultKind::NotOwner => {
            metrics::counter!("globallock_agent_not_owner_total").increment(1);
            Status::permission_denied(message)
        }
    }
}

/// Whose lock a renew or release may touch: the caller's principal's only,
/// unless it is an admin's forced one. The store checks it on the same read
/// it acts on (a lock id's principal never changes, so nothing slips in).
fn acting_as(force: bool, principal: &str) -> Option<&str> {
    (!force).then_some(principal)
}

/// The region's vote as it goes over the wire: the variant, the holder it
/// names, and what a token must exceed (a holder's token is the resource's
/// mark while it holds: only a grant raises a mark).
fn wire_vote(vote: Vote<Holding>) -> (WireVote, Option<Holding>, u64) {
    let mark = match &vote {
        Vote::TokenTooLow { mark } => *mark,
        other => other.holder().map_or(0, |h| h.record.token),
    };
    let kind = match &vote {
        Vote::Granted(_) => WireVote::Granted,
        Vote::Held(_) => WireVote::Held,
        Vote::RequestConflict(_) => WireVote::RequestConflict,
        Vote::TokenTooLow { .. } => WireVote::TokenTooLow,
        Vote::Aborted => WireVote::Aborted,
    };
    let holder = match vote {
        Vote::Granted(h) | Vote::Held(h) | Vote::RequestConflict(h) => Some(h),
        Vote::TokenTooLow { .. } | Vote::Aborted => None,
    };
    (kind, holder, mark)
}

/// The handlers, each run inside the span its trait method made.
impl<S: LockStore> AgentService<S> {
    /// Name this region in the answer's metadata (see `REGION_METADATA`).
    fn stamp<T>(&self, result: Result<Response<T>, Status>) -> Result<Response<T>, Status> {
        let value = tonic::metadata::MetadataValue::try_from(&*self.region);
        result.map(|mut response| {
            if let Ok(value) = value {
                response.metadata_mut().insert(REGION_METADATA, value);
            }
            response
        })
    }

    async fn do_grant(
        &self,
        request: Request<GrantRequest>,
    ) -> Result<Response<GrantResponse>, Status> {
        let r = request.into_inner();
        let answer = match self.check_grant(&r)? {
            GrantPlan::Answered(answer) => answer,
            GrantPlan::Propose { store, ttl } => {
                let vote = store.grant(&proposal(&r, ttl)).await.map_err(unavailable)?;
                self.vote_answer(&r, vote)
            }
        };
        Ok(Response::new(answer))
    }

    /// Every check a proposal passes before the store sees it (in the caller's
    /// span): what to propose, or the answer already.
    fn check_grant(&self, r: &GrantRequest) -> Result<GrantPlan<'_, S>, Status> {
        Span::current()
            .record("shard", &r.shard)
            .record("resource", &r.resource)
            .record("lock_id", &r.lock_id)
            .record("token", r.fencing_token);
        let store = self.shard(&r.shard, &r.resource)?;
        Self::lock_id(&r.lock_id, &r.resource)?;
        self.token(r.fencing_token)?;
        self.same_epoch(r.ring_epoch)?;
        let floor = self.handed_over(&r.shard, &r.resource)?;
        if r.fencing_token <= floor {
            // Tokens of the previous ring are below the floor: re-propose above it.
            return Ok(GrantPlan::Answered(GrantResponse {
                vote: WireVote::TokenTooLow.into(),
                holder: None,
                high_water_mark: floor,
            }));
        }
        request::owner(&r.owner).map_err(|e| Status::invalid_argument(e.to_string()))?;
        request::request_id(&r.request_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ttl = self.ttl(r.ttl_ms)?;
        self.in_time(r.deadline_unix_ms)?;
        Ok(GrantPlan::Propose { store, ttl })
    }

    /// The store's vote on proposal `r`, as answered (and counted).
    fn vote_answer(&self, r: &GrantRequest, vote: Vote<Holding>) -> GrantResponse {
        let (vote, held, mark) = wire_vote(vote);
        Span::current().record("outcome", vote.as_str_name());
        metrics::counter!("globallock_agent_grants_total", "shard" => r.shard.clone(), "outcome" => vote.as_str_name())
            .increment(1);
        GrantResponse {
            vote: vote.into(),
            holder: held.map(holder),
            high_water_mark: mark,
        }
    }

    /// Release, then propose: each part answered as its own call would be.
    /// When both parts pass their checks, the store does them as one hand-off
    /// (one etcd transaction when the release finds the grant).
    async fn do_hand_off(
        &self,
        request: Request<HandOffRequest>,
    ) -> Result<Response<HandOffResponse>, Status> {
        let HandOffRequest {
            release: Some(release),
            grant: Some(grant),
        } = request.into_inner()
        else {
            return Err(Status::invalid_argument(
                "a hand-off needs both its release and its grant",
            ));
        };
        if release.shard != grant.shard || release.resource != grant.resource {
            return Err(Status::invalid_argument(
                "a hand-off's release and grant must name the same shard and resource",
            ));
        }
        let release_checked = self
            .shard(&release.shard, &release.resource)
            .and_then(|_| Self::lock_id(&release.lock_id, &release.resource));
        let plan = self.check_grant(&grant);
        let (released, granted) = match (release_checked, plan) {
            (Ok(()), Ok(GrantPlan::Propose { store, ttl })) => {
                let (released, vote) = store
                    .hand_off(
                        &release.lock_id,
                        acting_as(release.force, &release.principal),
                        &proposal(&grant, ttl),
                    )
                    .await;
                (
                    released.map(removal_answer).map_err(unavailable),
                    vote.map(|v| self.vote_answer(&grant, v))
                        .map_err(unavailable),
                )
            }
            (release_checked, plan) => {
                let released = match release_checked {
                    Ok(()) => self
                        .remove(release, Removal::Release)
                        .await
                        .map(Response::into_inner),
                    Err(refused) => Err(refused),
                };
                let granted = match plan {
                    Ok(GrantPlan::Answered(answer)) => Ok(answer),
                    Ok(GrantPlan::Propose { store, ttl }) => store
                        .grant(&proposal(&grant, ttl))
                        .await
                        .map(|v| self.vote_answer(&grant, v))
                        .map_err(unavailable),
                    Err(refused) => Err(refused),
                };
                (released, granted)
            }
        };
        if let Ok(answer) = &released {
            Span::current().record("removed", answer.removed);
        }
        Ok(Response::new(HandOffResponse {
            release_result: Some(match released {
                Ok(answer) => ReleaseResult::Released(answer),
                Err(status) => ReleaseResult::ReleaseError(PartError::from_status(&status)),
            }),
            grant_result: Some(match granted {
                Ok(answer) => GrantResult::Granted(answer),
                Err(status) => GrantResult::GrantError(PartError::from_status(&status)),
            }),
        }))
    }

    async fn do_abort(
        &self,
        request: Request<LockRef>,
    ) -> Result<Response<RemoveResponse>, Status> {
        self.remove(request.into_inner(), Removal::Abort).await
    }

    async fn do_adopt(
        &self,
        request: Request<AdoptRequest>,
    ) -> Result<Response<AdoptResponse>, Status> {
        let r = request.into_inner();
        record_target(&r.shard, &r.resource, &r.lock_id);
        let store = self.shard(&r.shard, &r.resource)?;
        Self::lock_id(&r.lock_id, &r.resource)?;
        request::request_id(&r.request_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.same_epoch(r.ring_epoch)?;
        self.handed_over(&r.shard, &r.resource)?;
        let adopted = store
            .adopt(&r.resource, &r.lock_id, &r.request_id)
            .await
            .map_err(unavailable)?;
        Span::current().record("adopted", adopted.is_some());
        Ok(Response::new(AdoptResponse {
            adopted: adopted.is_some(),
            holder: adopted.map(holder),
        }))
    }

    async fn do_renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let r = request.into_inner();
        record_target(&r.shard, &r.resource, &r.lock_id);
        let store = self.shard(&r.shard, &r.resource)?;
        Self::lock_id(&r.lock_id, &r.resource)?;
        let new_ttl = if r.ttl_ms == 0 {
            None
        } else {
            Some(self.ttl(r.ttl_ms)?)
        };
        let renewed = store
            .renew_as(
                &r.resource,
                &r.lock_id,
                new_ttl,
                acting_as(r.force, &r.principal),
            )
            .await
            .map_err(unavailable)?;
        Span::current().record("renewed", renewed.is_some());
        Ok(Response::new(RenewResponse {
            renewed: renewed.is_some(),
            holder: renewed.map(holder),
        }))
    }

    async fn do_release(
        &self,
        request: Request<LockRef>,
    ) -> Result<Response<RemoveResponse>, Status> {
        self.remove(request.into_inner(), Removal::Release).await
    }

    async fn do_read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<ReadResponse>, Status> {
        let r = request.into_inner();
        Span::current()
            .record("shard", &r.shard)
            .record("resource", &r.resource);
        let store = self.shard(&r.shard, &r.resource)?;
        // A moved resource's holder is on its old shard during the handover.
        let floor = self.handed_over(&r.shard, &r.resource)?;
        let state = store.read(&r.resource).await.map_err(unavailable)?;
        Ok(Response::new(ReadResponse {
            holder: state.holder.map(holder),
            high_water_mark: state.mark.max(floor),
        }))
    }

    async fn do_list(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<ListResponse>, Status> {
        let r = request.into_inner();
        let span = Span::current();
        span.record("shard", &r.shard).record("prefix", &r.prefix);
        request::prefix(&r.prefix).map_err(|e| Status::invalid_argument(e.to_string()))?;
        request::start_after(&r.start_after)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let limit = usize::try_from(r.limit).unwrap_or(usize::MAX);
        if limit == 0 || limit > request::MAX_PAGE_SIZE {
            return Err(Status::invalid_argument(format!(
                "limit: {} is out of bounds: must be between 1 and {}",
                r.limit,
                request::MAX_PAGE_SIZE
            )));
        }
        let store = self.shards.get(&r.shard).ok_or_else(|| {
            Status::failed_precondition(format!(
                "region {}: unknown shard {:?}; coordinator and agent shard lists differ",
                self.region, r.shard
            ))
        })?;
        // No handover check: a shard lists every grant it holds, also one of a
        // resource that moved away with a ring change (held until it expires).
        let listing = store
            .list(&r.prefix, &r.start_after, limit)
            .await
            .map_err(unavailable)?;
        span.record("grants", listing.grants.len());
        Ok(Response::new(ListResponse {
            grants: listing
                .grants
                .into_iter()
                .map(|g| ListedGrant {
                    resource: g.resource,
                    holder: Some(holder(g.holding)),
                })
                .collect(),
            more: listing.more,
        }))
    }

    async fn do_health(
        &self,
        _: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        let checks = self.shards.values().map(|store| async move {
            let result = store.check_health().await;
            ShardHealth {
                shard: store.name().to_owned(),
                healthy: result.is_ok(),
                detail: result
                    .err()
                    .map(|e| unavailable(e).message().to_owned())
                    .unwrap_or_default(),
            }
        });
        let mut shards = futures::future::join_all(checks).await;
        shards.sort_by(|a, b| a.shard.cmp(&b.shard));
        let healthy = shards.iter().all(|s| s.healthy);
        Span::current().record("healthy", healthy);
        Ok(Response::new(HealthResponse {
            region: self.region.to_string(),
            healthy,
            shards,
            unix_ms: self.clock.unix_micros() / 1_000,
        }))
    }
}

#[tonic::async_trait]
impl<S: LockStore> RegionAgent for AgentService<S> {
    async fn grant(
        &self,
        request: Request<GrantRequest>,
    ) -> Result<Response<GrantResponse>, Status> {
        let span = info_span!("agent.grant", region = %self.region, shard = tracing::field::Empty, resource = tracing::field::Empty, lock_id = tracing::field::Empty, token = tracing::field::Empty, outcome = tracing::field::Empty);
        adopt_grpc_parent(&span, request.metadata());
        let started = std::time::Instant::now();
        let result = self.do_grant(request).instrument(span).await;
        observe("grant", started, &result);
        self.stamp(result)
    }

    async fn abort(&self, request: Request<LockRef>) -> Result<Response<RemoveResponse>, Status> {
        let span = info_span!("agent.abort", region = %self.region, shard = tracing::field::Empty, resource = tracing::field::Empty, lock_id = tracing::field::Empty, removed = tracing::field::Empty);
        adopt_grpc_parent(&span, request.metadata());
        let started = std::time::Instant::now();
        let result = self.do_abort(request).instrument(span).await;
        observe("abort", started, &result);
        self.stamp(result)
    }

    async fn adopt(
        &self,
        request: Request<AdoptRequest>,
    ) -> Result<Response<AdoptResponse>, Status> {
        let span = info_span!("agent.adopt", region = %self.region, shard = tracing::field::Empty, resource = tracing::field::Empty, lock_id = tracing::field::Empty, adopted = tracing::field::Empty);
        adopt_grpc_parent(&span, request.metadata());
        let started = std::time::Instant::now();
        let result = self.do_adopt(request).instrument(span).await;
        observe("adopt", started, &result);
        self.stamp(result)
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let span = info_span!("agent.renew", region = %self.region, shard = tracing::field::Empty, resource = tracing::field::Empty, lock_id = tracing::field::Empty, renewed = tracing::field::Empty);
        adopt_grpc_parent(&span, request.metadata());
        let started = std::time::Instant::now();
        let result = self.do_renew(request).instrument(span).await;
        observe("renew", started, &result);
        self.stamp(result)
    }

    async fn release(&self, request: Request<LockRef>) -> Result<Response<RemoveResponse>, Status> {
        let span = info_span!("agent.release", region = %self.region, shard = tracing::field::Empty, resource = tracing::field::Empty, lock_id = tracing::field::Empty, removed = tracing::field::Empty);
        adopt_grpc_parent(&span, request.metadata());
        let started = std::time::Instant::now();
        let result = self.do_release(request).instrument(span).await;
        observe("release", started, &result);
        self.stamp(result)
    }

    async fn hand_off(
        &self,
        request: Request<HandOffRequest>,
    ) -> Result<Response<HandOffResponse>, Status> {
        let span = info_span!("agent.hand_off", region = %self.region, shard = tracing::field::Empty, resource = tracing::field::Empty, lock_id = tracing::field::Empty, token = tracing::field::Empty, outcome = tracing::field::Empty, removed = tracing::field::Empty);
        adopt_grpc_parent(&span, request.metadata());
        let started = std::time::Instant::now();
        let result = self.do_hand_off(request).instrument(span).await;
        observe("hand_off", started, &result);
        self.stamp(result)
    }

    type ExchangeStream = crate::exchange::AnswerStream;

    async fn exchange(
        &self,
        request: Request<tonic::Streaming<Call>>,
    ) -> Result<Response<Self::ExchangeStream>, Status> {
        metrics::counter!("globallock_agent_exchanges_total").increment(1);
        self.stamp(Ok(Response::new(self.open_exchange(request.into_inner()))))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let span = info_span!("agent.read", region = %self.region, shard = tracing::field::Empty, resource = tracing::field::Empty);
        adopt_grpc_parent(&span, request.metadata());
        let started = std::time::Instant::now();
        let result = self.do_read(request).instrument(span).await;
        observe("read", started, &result);
        self.stamp(result)
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let span = info_span!("agent.list", region = %self.region, shard = tracing::field::Empty, prefix = tracing::field::Empty, grants = tracing::field::Empty);
        adopt_grpc_parent(&span, request.metadata());
        let started = std::time::Instant::now();
        let result = self.do_list(request).instrument(span).await;
        observe("list", started, &result);
        self.stamp(result)
    }

    async fn health(
        &self,
        request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        let span =
            info_span!("agent.health", region = %self.region, healthy = tracing::field::Empty);
        adopt_grpc_parent(&span, request.metadata());
        let started = std::time::Instant::now();
        let result = self.do_health(request).instrument(span).await;
        observe("health", started, &result);
        self.stamp(result)
    }
}
