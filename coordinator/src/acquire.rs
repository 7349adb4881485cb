//! Carries out the acquire state machine's commands
//! (`globallock_protocol::acquire`): mints lock ids and tokens, sends proposals,
//! aborts, sleeps, and feeds back what happened. Every decision is the
//! machine's; nothing here decides which region to abort or when to answer.
//!
//! The driver runs on the caller's task until the machine answers, then hands
//! the machine and whatever is still in flight (late replies, aborts) to a
//! background task, off the caller's critical path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use globallock_proto::agent::{
    AdoptRequest, GrantRequest, GrantResponse, LockRef, Vote as WireVote,
};
use globallock_protocol::acquire::{
    AcquireConfig, AcquireMachine, Answer, Command, Event, RoundId,
};
use globallock_protocol::fence::TokenRatchet;
use globallock_protocol::lock_id::LockId;
use globallock_protocol::quorum::{Grant, Loss, Reply, Vote};
use tonic::Status;
use tracing::{Instrument, Span, debug, info_span, warn};

use crate::engine::{AcquireParams, Acquired, LockEngine, grant_of};
use crate::error::LockError;
use crate::regions::Regions;

/// Events still to come, each from one in-flight call, sleep or abort.
type InFlight = FuturesUnordered<BoxFuture<'static, Event>>;

/// One acquire being carried out.
struct Drive<'a> {
    engine: &'a LockEngine,
    p: &'a AcquireParams,
    /// This acquire's place in the resource's line, while it waits.
    place: Option<&'a crate::waiters::Place<'a>>,
    /// A release's offer to carry the next proposals (crate::waiters::Ride),
    /// taken by the next commands carried out.
    ride: Arc<Mutex<Option<crate::waiters::Ride>>>,
    /// Rung when the resource is released through this coordinator (a waiting
    /// acquire then stops its backoff and tries at once).
    released: Option<Arc<tokio::sync::Notify>>,
    shard: String,
    request_id: String,
    /// Each round's lock id and token, once minted.
    minted: HashMap<RoundId, (String, u64)>,
    /// Why minting failed, if it did (the engine's own error for the caller).
    mint_error: Option<LockError>,
    /// Each region's failure in each round (for UNAVAILABLE's message).
    failures: Arc<Mutex<HashMap<(RoundId, usize), Status>>>,
}

impl LockEngine {
    /// Acquire through the state machine: run it to its answer, then let what is
    /// still in flight finish in the background.
    pub(crate) async fn drive_acquire(
        &self,
        p: &AcquireParams,
        shard: String,
        ttl: Duration,
        wait: Duration,
        request_id: String,
    ) -> Result<Acquired, LockError> {
        // A waiting acquire takes its turn in this coordinator's line for the
        // resource (crate::waiters); its wait counts the time in line.
        let place = (!wait.is_zero()).then(|| self.waiters.join(&p.resource));
        let ride = Arc::new(Mutex::new(None));
        let wait = match &place {
            Some(place) => {
                let queued = std::time::Instant::now();
                place.first_in_line(wait).await;
                // First, while a lock granted here holds the resource: a
                // proposal now would only find it held. Wait (as a backoff
                // would) for its release here to carry this acquire's proposals.
                if let Some(left) = place.held_here() {
                    let delay = self
                        .backoff
                        .delay(1, rand::random::<f64>(), Some(left))
                        .min(wait.saturating_sub(queued.elapsed()));
                    let offered = crate::waiters::sleep_released_or_ride(
                        Some(place.release_signal()),
                        Some(place.ready_for_ride()),
                        delay,
                    )
                    .await;
                    *ride.lock().unwrap_or_else(|e| e.into_inner()) = offered;
                }
                wait.saturating_sub(queued.elapsed())
            }
            None => wait,
        };
        let config = AcquireConfig {
            regions: self.regions.len(),
            ttl,
            wait,
            drift: self.drift,
        };
        let (mut machine, first) = AcquireMachine::start(config, self.clock.monotonic());
        let mut drive = Drive {
            engine: self,
            p,
            place: place.as_ref(),
            ride,
            released: place.as_ref().map(crate::waiters::Place::release_signal),
            shard,
            request_id,
            minted: HashMap::new(),
            mint_error: None,
            failures: Arc::default(),
        };
        let mut in_flight = InFlight::new();
        let mut commands = first;
        let answer = loop {
            if let Some(answer) = drive.execute(&mut machine, commands, &mut in_flight) {
                break answer;
            }
            let Some(event) = in_flight.next().await else {
                break Answer::MintFailed;
            };
            commands = machine.handle(event);
        };
        drive.finish_in_background(machine, in_flight);
        let result = drive.result(answer, ttl);
        // Leaving the line lets the next waiter go.
        drop(drive);
        drop(place);
        result
    }
}

impl Drive<'_> {
    /// Carry out `commands` (and those that synchronous events lead to); the
    /// answer, when one is among them.
    fn execute(
        &mut self,
        machine: &mut AcquireMachine,
        commands: Vec<Command>,
        in_flight: &mut InFlight,
    ) -> Option<Answer> {
        let mut queue = std::collections::VecDeque::from(commands);
        let mut answer = None;
        // A ride is for the proposals of a round that starts now (not, say, for
        // the commands after a late reply of an earlier round).
        let starts_round = queue
            .iter()
            .any(|c| matches!(c, Command::Mint { .. } | Command::Send { .. }));
        let ride = starts_round
            .then(|| self.ride.lock().unwrap_or_else(|e| e.into_inner()).take())
            .flatten();
        let (offer, mut answers) = match ride {
            Some(ride) => (
                Some(ride.proposals),
                ride.answers.into_iter().map(Some).collect(),
            ),
            None => (None, Vec::new()),
        };
        let mut carried: Vec<Option<GrantRequest>> = vec![None; self.engine.regions.len()];
        while let Some(command) = queue.pop_front() {
            match command {
                Command::Mint { round } => queue.extend(machine.handle(self.mint(round))),
                Command::Send { round, region } => {
                    let request = self.grant_request(round, region);
                    // Carried by the release that offered the ride, if any.
                    let answer = answers.get_mut(region).and_then(Option::take);
                    if answer.is_some() {
                        carried[region] = Some(request.clone());
                    }
                    in_flight.push(self.send(round, region, request, answer));
                }
                Command::Abort { round, region } => in_flight.push(self.abort(round, region)),
                Command::Adopt {
                    round,
                    region,
                    lock_id,
                } => in_flight.push(self.adopt(round, region, lock_id)),
                Command::Contended => {
                    // Every refused attempt is contention, including while waiting.
                    metrics::counter!("globallock_contention_total").increment(1);
                    self.engine.contention.record(&self.p.resource);
                }
                Command::Backoff {
                    attempt,
                    holder_left,
                    left,
                } => in_flight.push(self.backoff(attempt, holder_left, left)),
                Command::Answer(a) => answer = Some(a),
            }
        }
        if let Some(offer) = offer {
            // The release carries these (it sends every region's alone if this
            // offer is dropped or all are `None`).
            let _ = offer.send(carried);
        }
        answer
    }

    /// Check for a healthy majority and mint round `round`'s lock id and token.
    fn mint(&mut self, round: RoundId) -> Event {
        let engine = self.engine;
        let token = engine
            .regions
            .require_majority(&self.shard)
            .map_err(LockError::Unavailable)
            .and_then(|()| {
                let now = engine.clock.unix_micros();
                let mut ratchet = engine.ratchet.lock().unwrap_or_else(|e| e.into_inner());
                Ok(ratchet.propose(&self.p.resource, now)?)
            });
        match token {
            Ok(token) => {
                let lock_id =
                    LockId::new(rand::random::<u128>(), self.p.resource.clone()).to_string();
                debug!(round, %lock_id, token, "proposing");
                self.minted.insert(round, (lock_id.clone(), token));
                Event::Minted {
                    round,
                    lock_id,
                    token,
                    now: engine.clock.monotonic(),
                }
            }
            Err(error) => {
                self.mint_error = Some(error);
                Event::MintFailed { round }
            }
        }
    }

    /// Round `round`'s proposal to `region`.
    fn grant_request(&self, round: RoundId, region: usize) -> GrantRequest {
        let (lock_id, token) = self.minted[&round].clone();
        GrantRequest {
            shard: self.shard.clone(),
            resource: self.p.resource.clone(),
            lock_id: lock_id.clone(),
            owner: self.p.owner.clone(),
            fencing_token: token,
            ttl_ms: self.p.ttl_ms,
            request_id: self.request_id.clone(),
            ring_epoch: self.engine.ring_epoch,
            principal: self.p.principal.clone(),
            // When this coordinator stops waiting (the call's own timeout), on
            // the agent's clock: it refuses the proposal if it arrives later.
            deadline_unix_ms: self
                .engine
                .regions
                .get(region)
                .agent_time_in(self.engine.regions.timeout()),
        }
    }

    /// `request` (round `round`'s proposal to `region`), as a future of its
    /// reply event: sent now, or carried by a release (`carried`: its answer;
    /// sent now after all if the release did not carry it).
    fn send(
        &self,
        round: RoundId,
        region: usize,
        request: GrantRequest,
        carried: Option<tokio::sync::oneshot::Receiver<Result<GrantResponse, Status>>>,
    ) -> BoxFuture<'static, Event> {
        let span = info_span!("propose", round, lock_id = %request.lock_id, token = request.fencing_token, carried = carried.is_some());
        let direct = self.engine.call_region(
            region,
            &self.shard,
            "grant",
            request,
            |mut c, r| async move { c.grant(r).await },
        );
        let call = async move {
            if let Some(carried) = carried
                && let Ok(answer) = carried.await
            {
                return (region, answer);
            }
            direct.await
        };
        let regions = self.engine.regions.clone();
        let shard = self.shard.clone();
        let expect = Expected {
            resource: self.p.resource.clone(),
            request_id: self.request_id.clone(),
            owner: self.p.owner.clone(),
            ttl_ms: self.p.ttl_ms,
            ratchet: self.engine.ratchet.clone(),
        };
        let failures = self.failures.clone();
        let clock = self.engine.clock.clone();
        let released = self.engine.released.clone();
        async move {
            let (region, result) = call.await;
            regions.observe(region, &shard, result.as_ref().map(|_| ()));
            if let Ok(response) = &result {
                crate::repair::repair_if_stale(
                    &regions,
                    &released,
                    region,
                    &shard,
                    &expect.resource,
                    response,
                );
            }
            if let Err(status) = &result {
                failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((round, region), status.clone());
            }
            Event::Reply {
                round,
                region,
                reply: expect.classify(result),
                now: clock.monotonic(),
            }
        }
        .instrument(span)
        .boxed()
    }

    /// Abort round `round`'s lock id at `region`, as a future of its event.
    fn abort(&self, round: RoundId, region: usize) -> BoxFuture<'static, Event> {
        let lock = LockRef {
            shard: self.shard.clone(),
            resource: self.p.resource.clone(),
            lock_id: self.minted[&round].0.clone(),
            // This coordinator's own round: not a release on anyone's behalf.
            principal: String::new(),
            force: true,
        };
        abort_event(self.engine.regions.clone(), round, region, lock)
    }

    /// Ask `region` to adopt the earlier lock `lock_id` of this request, as a
    /// future of its confirmation (a failure is no confirmation).
    fn adopt(&self, round: RoundId, region: usize, lock_id: String) -> BoxFuture<'static, Event> {
        let request = AdoptRequest {
            shard: self.shard.clone(),
            resource: self.p.resource.clone(),
            lock_id: lock_id.clone(),
            request_id: self.request_id.clone(),
            ring_epoch: self.engine.ring_epoch,
        };
        let call = self.engine.call_region(
            region,
            &self.shard,
            "adopt",
            request,
            |mut c, r| async move { c.adopt(r).await },
        );
        let clock = self.engine.clock.clone();
        async move {
            let (region, result) = call.await;
            let adopted =
                result.is_ok_and(|r| r.adopted && r.holder.is_some_and(|h| h.lock_id == lock_id));
            Event::Adopted {
                round,
                region,
                adopted,
                now: clock.monotonic(),
            }
        }
        .boxed()
    }

    /// Sleep a jittered backoff (at most `left`), as a future of the wake-up
    /// (cut short by a release here, which may offer a ride).
    fn backoff(
        &self,
        attempt: u32,
        holder_left: Option<Duration>,
        left: Duration,
    ) -> BoxFuture<'static, Event> {
        let delay = self
            .engine
            .backoff
            .delay(attempt, rand::random::<f64>(), holder_left)
            .min(left);
        debug!(?delay, attempt, "resource busy; waiting");
        let clock = self.engine.clock.clone();
        let released = self.released.clone();
        let offer = self.place.map(crate::waiters::Place::ready_for_ride);
        let ride = self.ride.clone();
        async move {
            // Woken early by a release of the resource through this coordinator.
            let offered = crate::waiters::sleep_released_or_ride(released, offer, delay).await;
            *ride.lock().unwrap_or_else(|e| e.into_inner()) = offered;
            Event::Woke {
                now: clock.monotonic(),
            }
        }
        .boxed()
    }

    /// Late replies and aborts still in flight run to completion off the caller's
    /// path; the machine decides which late grants to abort.
    fn finish_in_background(&self, mut machine: AcquireMachine, mut in_flight: InFlight) {
        if machine.is_done() {
            return;
        }
        let regions = self.engine.regions.clone();
        let shard = self.shard.clone();
        let resource = self.p.resource.clone();
        let minted = self.minted.clone();
        tokio::spawn(
            async move {
                while let Some(event) = in_flight.next().await {
                    for command in machine.handle(event) {
                        if let Command::Abort { round, region } = command {
                            let lock = LockRef {
                                shard: shard.clone(),
                                resource: resource.clone(),
                                lock_id: minted[&round].0.clone(),
                                // This coordinator's own round: not a release on anyone's behalf.
                                principal: String::new(),
                                force: true,
                            };
                            in_flight.push(abort_event(regions.clone(), round, region, lock));
                        }
                    }
                    if machine.is_done() {
                        break;
                    }
                }
            }
            .instrument(Span::current()),
        );
    }

    /// The machine's answer as the caller sees it.
    fn result(&mut self, answer: Answer, ttl: Duration) -> Result<Acquired, LockError> {
        let resource = self.p.resource.clone();
        match answer {
            Answer::Won { won, validity, .. } => {
                // Its waiters can expect its release here (crate::waiters).
                let acquired = self.engine.acquired(self.p, won, validity);
                self.engine
                    .waiters
                    .granted(&resource, &acquired.lock_id, validity);
                Ok(acquired)
            }
            Answer::TooSlow { elapsed, .. } => Err(LockError::TooSlow { elapsed, ttl }),
            Answer::WaitExpired { waited, holder } => Err(LockError::WaitExpired {
                resource,
                waited,
                holder,
            }),
            Answer::MintFailed => Err(self
                .mint_error
                .take()
                .unwrap_or_else(|| LockError::Internal("acquire ended without an answer".into()))),
            Answer::Lost { round, loss } => Err(self.loss(round, loss)),
        }
    }

    fn loss(&self, round: RoundId, loss: Loss) -> LockError {
        match loss {
            Loss::Unavailable(split) => {
                let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
                let of_round: Vec<Option<Status>> = (0..self.engine.regions.len())
                    .map(|i| failures.get(&(round, i)).cloned())
                    .collect();
                LockError::Unavailable(self.engine.reachability(&split, &of_round))
            }
            Loss::RequestConflict(_) => LockError::RequestIdReused {
                request_id: self.request_id.clone(),
            },
            Loss::Held(g) => LockError::Held {
                resource: self.p.resource.clone(),
                owner: g.owner,
                remaining: g.remaining,
            },
            Loss::Split | Loss::TokenTooLow { .. } => LockError::Contended {
                resource: self.p.resource.clone(),
            },
        }
    }
}

/// What a grant reply must match to count for this acquire.
struct Expected {
    resource: String,
    request_id: String,
    owner: String,
    ttl_ms: u64,
    ratchet: Arc<Mutex<TokenRatchet>>,
}

impl Expected {
    /// A region's answer as the quorum rule sees it; also feeds the token ratchet.
    fn classify(&self, result: Result<GrantResponse, Status>) -> Reply {
        let Ok(response) = result else {
            return Reply::Failed;
        };
        self.ratchet
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(&self.resource, response.high_water_mark);
        match vote_of(response) {
            Some(Vote::Granted(g)) if !g.answers(&self.request_id, &self.owner, self.ttl_ms) => {
                warn!(lock_id = %g.lock_id, granted_request = %g.request_id, "a grant for another request or owner; counting it as no vote");
                Reply::Failed
            }
            Some(vote) => Reply::Voted(vote),
            None => Reply::Failed,
        }
    }
}

/// A region's vote as it came over the wire; `None` (and a warning) when the
/// answer is malformed (an unknown vote, or a holder missing).
fn vote_of(response: GrantResponse) -> Option<Vote<Grant>> {
    let holder = response.holder.map(grant_of);
    let vote = match (WireVote::try_from(response.vote), holder) {
        (Ok(WireVote::Granted), Some(g)) => Vote::Granted(g),
        (Ok(WireVote::Held), Some(g)) => Vote::Held(g),
        (Ok(WireVote::RequestConflict), Some(g)) => Vote::RequestConflict(g),
        (Ok(WireVote::TokenTooLow), _) => Vote::TokenTooLow {
            mark: response.high_water_mark,
        },
        (Ok(WireVote::Aborted), _) => Vote::Aborted,
        (vote, _) => {
            warn!(?vote, "malformed grant reply; counting it as no vote");
            return None;
        }
    };
    Some(vote)
}

/// Abort `lock` at `region`, as a future of the machine's event.
fn abort_event(
    regions: Arc<Regions>,
    round: RoundId,
    region: usize,
    lock: LockRef,
) -> BoxFuture<'static, Event> {
    abort_at(regions, region, lock)
        .map(move |()| Event::Aborted { round, region })
        .boxed()
}

/// Abort `lock.lock_id` at `region` (bounded by the region deadline; a failed
/// abort leaves the grant to expire with its TTL).
async fn abort_at(regions: Arc<Regions>, region: usize, lock: LockRef) {
    let answer = regions
        .call_within_deadline(region, lock, |mut c, r| async move { c.abort(r).await })
        .await;
    if let Some(Err(status)) = answer {
        debug!(region, code = ?status.code(), "abort failed");
    }
}
