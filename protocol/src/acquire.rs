//! The acquire as a state machine: events in, commands out, no I/O.
//!
//! One acquire is a sequence of *attempts* (the wait loop), each a sequence of
//! *rounds* (a re-proposal above the regions' marks after "token too low"). A
//! round proposes one lock id and one token to every region. The machine decides,
//! from the regions' replies and the time, what happens next: which regions to
//! abort, when to re-propose, how long to wait, and what to answer. The
//! coordinator's engine only carries the commands out (minting a lock id and a
//! token, sending, aborting, sleeping) and feeds back what happened.
//!
//! The rules, each pinned by a test below:
//! - A round is won when a majority grants one lock id ([`AcquireRound`]). The
//!   lock lives at least `relied = min(ttl, held_for)` from when the round's lock
//!   id was minted (before it was sent), `held_for` being what a majority of the
//!   winning grants still has (an idempotent retry wins an earlier lock with what
//!   that lock has left). The answer's validity counts from the acquire's start
//!   (callers count it from when they sent the request, earlier still):
//!   `waited + relied − drift(waited + relied)`, where `waited` is the time before
//!   the winning round. A round whose `relied − elapsed − drift` is already gone
//!   is withdrawn instead.
//! - Won with this round's own lock id: nothing is aborted, late grants
//!   included, so the lock keeps its tolerance to one region failing.
//! - Won with an earlier lock id of the same request (an idempotent retry): this
//!   round's own grants outside the majority are aborted, and so are its late
//!   grants. The agents only answer with an earlier lock after marking it
//!   adopted, so no other round's abort can remove it afterwards.
//! - Won too late to rely on (no validity left): the own lock id is aborted
//!   everywhere and the caller is told so.
//! - Lost: every region that may hold this round's grant (it granted it, or
//!   gave no usable answer) gets an abort, and so does any late grant.
//! - Lost because the token was too low: the aborts are awaited, then the same
//!   attempt re-proposes above the marks, up to [`TOKEN_ROUNDS`] rounds.
//! - Lost to an unavailable majority: the remaining replies are awaited (so the
//!   answer names reachable and unreachable regions truthfully), then answered.
//!   A request-id conflict is answered at once. Neither waits.
//! - Lost to a holder or a split vote: with no wait, answered at once; with a
//!   wait, the attempt is repeated after a backoff until the wait runs out.

use std::collections::HashMap;
use std::time::Duration;

use crate::quorum::{AcquireDecision, AcquireRound, Loss, MajorityGrant, Reply, Vote};
use crate::validity::DriftAllowance;

/// How many rounds one attempt makes when regions say the token was too low.
pub const TOKEN_ROUNDS: u32 = 3;

/// What one acquire asks for, as the machine needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct AcquireConfig {
    /// How many regions every proposal goes to.
    pub regions: usize,
    /// The TTL asked for.
    pub ttl: Duration,
    /// How long to keep trying while the resource is held (zero: once).
    pub wait: Duration,
    /// Clock drift allowance for the validity.
    pub drift: DriftAllowance,
}

/// A round's number within one acquire (0, 1, 2, ...).
pub type RoundId = u32;

/// What happened, fed to [`AcquireMachine::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The lock id and token of round `round` were minted at monotonic time `now`
    /// (after a [`Command::Mint`]).
    Minted {
        /// The round.
        round: RoundId,
        /// Its lock id.
        lock_id: String,
        /// Its fencing token.
        token: u64,
        /// Monotonic time, before anything was sent.
        now: Duration,
    },
    /// Minting failed (no majority of regions healthy, or tokens exhausted): the
    /// engine answers with its own error, and the machine stops.
    MintFailed {
        /// The round.
        round: RoundId,
    },
    /// Region `region` answered round `round` (a failure or timeout is
    /// [`Reply::Failed`]).
    Reply {
        /// The round.
        round: RoundId,
        /// The region.
        region: usize,
        /// Its answer.
        reply: Reply,
        /// Monotonic time of the answer.
        now: Duration,
    },
    /// An abort of round `round`'s lock id at `region` finished (either way).
    Aborted {
        /// The round.
        round: RoundId,
        /// The region.
        region: usize,
    },
    /// A region answered a [`Command::Adopt`] of round `round`.
    Adopted {
        /// The round.
        round: RoundId,
        /// The region.
        region: usize,
        /// Whether the region marked the earlier grant adopted.
        adopted: bool,
        /// Monotonic time of the answer.
        now: Duration,
    },
    /// The backoff after a refused attempt is over.
    Woke {
        /// Monotonic time.
        now: Duration,
    },
}

/// What to do, returned by the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Check that a majority of regions is healthy, mint a lock id and a token for
    /// round `round`, and report [`Event::Minted`] (or [`Event::MintFailed`]).
    Mint {
        /// The round.
        round: RoundId,
    },
    /// Send round `round`'s proposal to `region`; report [`Event::Reply`].
    Send {
        /// The round.
        round: RoundId,
        /// The region.
        region: usize,
    },
    /// Abort round `round`'s lock id at `region`; report [`Event::Aborted`].
    Abort {
        /// The round.
        round: RoundId,
        /// The region.
        region: usize,
    },
    /// Ask `region` to confirm that this acquire takes over the earlier grant
    /// `lock_id` of its request (a compare-and-swap that fails if that grant was
    /// aborted meanwhile); report [`Event::Adopted`].
    Adopt {
        /// The round.
        round: RoundId,
        /// The region.
        region: usize,
        /// The earlier lock id a majority answered with.
        lock_id: String,
    },
    /// The attempt was refused (held or contended): count it as contention.
    Contended,
    /// Sleep for a backoff delay of attempt `attempt` (at most `left`), then
    /// report [`Event::Woke`].
    Backoff {
        /// The attempt that was refused (0-based).
        attempt: u32,
        /// The holder's remaining time, when known.
        holder_left: Option<Duration>,
        /// The most the sleep may take (what is left of the wait).
        left: Duration,
    },
    /// Answer the caller. Emitted exactly once per acquire.
    Answer(Answer),
}

/// The answer to an acquire.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A majority holds the lock.
    Won {
        /// The round that won.
        round: RoundId,
        /// The majority's grant (its lock id may be an earlier one of the same
        /// request).
        won: MajorityGrant,
        /// How long the caller may rely on it, from before the proposal was sent.
        validity: Duration,
    },
    /// Won, but nothing was left to rely on by the time the majority answered.
    TooSlow {
        /// How long the round took.
        elapsed: Duration,
        /// What the lock could be relied on for at most.
        relied: Duration,
    },
    /// Not acquired.
    Lost {
        /// The last round.
        round: RoundId,
        /// Why.
        loss: Loss,
    },
    /// Still held or contended when the wait ran out.
    WaitExpired {
        /// How long the acquire waited.
        waited: Duration,
        /// The last holder seen (owner, remaining time).
        holder: Option<(String, Duration)>,
    },
    /// Minting failed; the engine answers with its own error.
    MintFailed,
}

/// One round: one lock id and token proposed to every region.
#[derive(Debug, Clone)]
struct Round {
    /// Its lock id.
    lock_id: String,
    /// When it was minted (monotonic).
    started: Duration,
    /// The tally of replies.
    tally: AcquireRound,
    /// Regions that may hold this round's own grant: granted it, or no usable
    /// answer (yet).
    maybe_ours: Vec<bool>,
    /// Replies still expected.
    pending: usize,
    /// Once decided: whether a late grant of this round's lock id is aborted.
    abort_late: Option<bool>,
    /// Lost with an unavailable majority: answer once every reply is in.
    answer_when_complete: bool,
    /// Won with an earlier lock id: its adoption, being confirmed.
    adopting: Option<Adoption>,
}

/// The adoption of an earlier lock of the same request, being confirmed.
#[derive(Debug, Clone)]
struct Adoption {
    /// The lock a majority offered.
    won: MajorityGrant,
    /// Each region's confirmation (`None` until it answered; regions not asked
    /// count as `Some(false)`).
    confirmed: Vec<Option<bool>>,
    /// The outcome was acted on (answered, or counted as contended).
    settled: bool,
}

/// The acquire state machine. See the module documentation for the rules.
#[derive(Debug)]
pub struct AcquireMachine {
    /// What was asked.
    config: AcquireConfig,
    /// When the acquire started (monotonic), for the wait.
    started: Duration,
    /// The current attempt (0-based).
    attempt: u32,
    /// Rounds made in the current attempt.
    rounds_in_attempt: u32,
    /// Every round so far, by id.
    rounds: HashMap<RoundId, Round>,
    /// The next round id.
    next_round: RoundId,
    /// Aborts in flight, per round; and the round whose aborts gate a re-proposal.
    aborts_in_flight: HashMap<RoundId, usize>,
    /// A re-proposal waits for these aborts.
    reproposal_after: Option<RoundId>,
    /// A backoff sleep is in flight.
    sleeping: bool,
    /// A mint is in flight.
    minting: bool,
    /// The caller was answered.
    answered: bool,
    /// The last holder seen (owner, remaining), for "wait expired".
    last_holder: Option<(String, Duration)>,
}

impl AcquireMachine {
    /// A machine for one acquire starting at monotonic time `now`, and its first
    /// commands.
    pub fn start(config: AcquireConfig, now: Duration) -> (Self, Vec<Command>) {
        let mut machine = Self {
            config,
            started: now,
            attempt: 0,
            rounds_in_attempt: 0,
            rounds: HashMap::new(),
            next_round: 0,
            aborts_in_flight: HashMap::new(),
            reproposal_after: None,
            sleeping: false,
            minting: false,
            answered: false,
            last_holder: None,
        };
        let commands = vec![machine.mint()];
        (machine, commands)
    }

    /// True once the caller was answered and nothing is in flight any more (every
    /// reply arrived, every abort finished): the engine may drop the machine.
    pub fn is_done(&self) -> bool {
        self.answered
            && !self.minting
            && !self.sleeping
            && self.rounds.values().all(|r| r.pending == 0)
            && self.aborts_in_flight.values().all(|&n| n == 0)
            && self.rounds.values().all(|r| {
                r.adopting
                    .as_ref()
                    .is_none_or(|a| a.confirmed.iter().all(Option::is_some))
            })
    }

    /// The lock id of round `round`, once minted.
    pub fn lock_id(&self, round: RoundId) -> Option<&str> {
        self.rounds.get(&round).map(|r| r.lock_id.as_str())
    }

    /// Feed one event; returns the commands it leads to, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        match event {
            Event::Minted {
                round,
                lock_id,
                token: _,
                now,
            } => self.minted(round, lock_id, now),
            Event::MintFailed { .. } => {
                self.minting = false;
                self.answer(Answer::MintFailed)
            }
            Event::Reply {
                round,
                region,
                reply,
                now,
            } => self.reply(round, region, reply, now),
            Event::Aborted { round, region: _ } => self.aborted(round),
            Event::Adopted {
                round,
                region,
                adopted,
                now,
            } => self.adopted(round, region, adopted, now),
            Event::Woke { .. } => {
                self.sleeping = false;
                if self.answered {
                    return Vec::new();
                }
                self.attempt += 1;
                self.rounds_in_attempt = 0;
                vec![self.mint()]
            }
        }
    }

    fn mint(&mut self) -> Command {
        let round = self.next_round;
        self.next_round += 1;
        self.rounds_in_attempt += 1;
        self.minting = true;
        Command::Mint { round }
    }

    fn minted(&mut self, round: RoundId, lock_id: String, now: Duration) -> Vec<Command> {
        self.minting = false;
        let n = self.config.regions;
        self.rounds.insert(
            round,
            Round {
                lock_id,
                started: now,
                tally: AcquireRound::new(n),
                maybe_ours: vec![true; n],
                pending: n,
                abort_late: None,
                answer_when_complete: false,
                adopting: None,
            },
        );
        (0..n)
            .map(|region| Command::Send { round, region })
            .collect()
    }

    fn reply(
        &mut self,
        round_id: RoundId,
        region: usize,
        reply: Reply,
        now: Duration,
    ) -> Vec<Command> {
        let Some(round) = self.rounds.get_mut(&round_id) else {
            return Vec::new();
        };
        if region >= round.maybe_ours.len() || round.tally.has_replied(region) {
            return Vec::new();
        }
        round.pending -= 1;
        let own_grant =
            matches!(&reply, Reply::Voted(Vote::Granted(g)) if g.lock_id == round.lock_id);
        round.maybe_ours[region] = own_grant || reply == Reply::Failed;
        if let Reply::Voted(Vote::Held(g)) = &reply {
            self.last_holder = Some((g.owner.clone(), g.remaining));
        }
        let decision = round.tally.record(region, reply);
        match round.abort_late {
            // Decided before: only a late grant of our own lock id matters.
            Some(abort_late) => {
                let mut commands = Vec::new();
                if abort_late && own_grant {
                    commands.push(self.abort(round_id, region));
                }
                if let Some(round) = self.rounds.get_mut(&round_id)
                    && round.answer_when_complete
                    && round.pending == 0
                {
                    round.answer_when_complete = false;
                    if let AcquireDecision::Lost(loss) = round.tally.decide() {
                        commands.extend(self.answer(Answer::Lost {
                            round: round_id,
                            loss,
                        }));
                    }
                }
                commands
            }
            None => match decision {
                AcquireDecision::Pending => Vec::new(),
                AcquireDecision::Won(won) => self.won(round_id, won, now),
                AcquireDecision::Lost(loss) => self.lost(round_id, loss, now),
            },
        }
    }

    fn won(&mut self, round_id: RoundId, won: MajorityGrant, now: Duration) -> Vec<Command> {
        let round = self.rounds.get_mut(&round_id).expect("round exists");
        let ours = won.grant.lock_id == round.lock_id;
        let elapsed = now.saturating_sub(round.started);
        let relied = self.config.ttl.min(won.held_for);
        // Anything left as of now? Otherwise the lock is withdrawn (too slow).
        let in_time = self.config.drift.validity(relied, elapsed);
        // The lock lives at least until the round's start plus `relied`. Callers
        // count the validity from when they sent the request, which is before
        // this acquire started, so it is reported from the acquire's start: the
        // time spent waiting before the winning round counts too (before, a long
        // wait made the lock look expired on arrival).
        let validity = in_time.map(|_| {
            let span = relied + round.started.saturating_sub(self.started);
            span.saturating_sub(self.config.drift.for_ttl(span))
        });
        let mut commands = Vec::new();
        let abort_at: Vec<usize> = match (ours, validity) {
            // Our lock, in time: keep every grant, late ones included.
            (true, Some(_)) => {
                round.abort_late = Some(false);
                Vec::new()
            }
            // Our lock, too late to rely on: withdraw it everywhere.
            (true, None) => {
                round.abort_late = Some(true);
                (0..round.maybe_ours.len()).collect()
            }
            // An earlier lock of the same request won (adopted by the regions):
            // our own proposal's grants outside that majority are withdrawn.
            (false, _) => {
                round.abort_late = Some(true);
                (0..round.maybe_ours.len())
                    .filter(|&i| round.maybe_ours[i] && !won.regions.contains(&i))
                    .collect()
            }
        };
        for region in abort_at {
            commands.push(self.abort(round_id, region));
        }
        if !ours && validity.is_some() {
            // An earlier lock is ours only once a majority confirmed its adoption.
            let round = self.rounds.get_mut(&round_id).expect("round exists");
            let mut confirmed = vec![Some(false); round.maybe_ours.len()];
            for &region in &won.regions {
                confirmed[region] = None;
                commands.push(Command::Adopt {
                    round: round_id,
                    region,
                    lock_id: won.grant.lock_id.clone(),
                });
            }
            round.adopting = Some(Adoption {
                won,
                confirmed,
                settled: false,
            });
            return commands;
        }
        let answer = match validity {
            Some(validity) => Answer::Won {
                round: round_id,
                won,
                validity,
            },
            None => Answer::TooSlow { elapsed, relied },
        };
        commands.extend(self.answer(answer));
        commands
    }

    fn lost(&mut self, round_id: RoundId, loss: Loss, now: Duration) -> Vec<Command> {
        let round = self.rounds.get_mut(&round_id).expect("round exists");
        round.abort_late = Some(true);
        let abort_at: Vec<usize> = (0..round.maybe_ours.len())
            .filter(|&i| round.maybe_ours[i])
            .collect();
        let mut commands: Vec<Command> = abort_at
            .into_iter()
            .map(|region| self.abort(round_id, region))
            .collect();
        match loss {
            Loss::TokenTooLow { .. } if self.rounds_in_attempt < TOKEN_ROUNDS => {
                // Re-propose above the marks once these regions are free of this
                // round's proposal.
                if self.aborts_in_flight.get(&round_id).copied().unwrap_or(0) == 0 {
                    commands.push(self.mint());
                } else {
                    self.reproposal_after = Some(round_id);
                }
            }
            Loss::Unavailable(_) => {
                let round = self.rounds.get_mut(&round_id).expect("round exists");
                if round.pending == 0 {
                    commands.extend(self.answer(Answer::Lost {
                        round: round_id,
                        loss,
                    }));
                } else {
                    round.answer_when_complete = true;
                }
            }
            Loss::RequestConflict(_) => {
                commands.extend(self.answer(Answer::Lost {
                    round: round_id,
                    loss,
                }));
            }
            Loss::Held(_) | Loss::Split | Loss::TokenTooLow { .. } => {
                commands.push(Command::Contended);
                commands.extend(self.refused(round_id, loss, now));
            }
        }
        commands
    }

    /// An attempt was refused (held, split, or the token rounds ran out): answer,
    /// or back off and try again while the wait lasts.
    fn refused(&mut self, round_id: RoundId, loss: Loss, now: Duration) -> Vec<Command> {
        if self.config.wait.is_zero() {
            return self.answer(Answer::Lost {
                round: round_id,
                loss,
            });
        }
        let waited = now.saturating_sub(self.started);
        match self
            .config
            .wait
            .checked_sub(waited)
            .filter(|l| !l.is_zero())
        {
            None => self.answer(Answer::WaitExpired {
                waited,
                holder: self.last_holder.clone(),
            }),
            Some(left) => {
                self.sleeping = true;
                let holder_left = match &loss {
                    Loss::Held(g) => Some(g.remaining),
                    _ => None,
                };
                vec![Command::Backoff {
                    attempt: self.attempt,
                    holder_left,
                    left,
                }]
            }
        }
    }

    /// A region confirmed (or refused) the adoption of an earlier lock: answer
    /// once a majority confirmed, or count the attempt as contended once a
    /// majority can no longer confirm (the earlier lock was aborted meanwhile).
    fn adopted(
        &mut self,
        round_id: RoundId,
        region: usize,
        adopted: bool,
        now: Duration,
    ) -> Vec<Command> {
        let majority = crate::quorum::majority(self.config.regions);
        let Some(round) = self.rounds.get_mut(&round_id) else {
            return Vec::new();
        };
        let Some(adoption) = round.adopting.as_mut() else {
            return Vec::new();
        };
        match adoption.confirmed.get_mut(region) {
            Some(slot @ None) => *slot = Some(adopted),
            _ => return Vec::new(),
        }
        if adoption.settled {
            return Vec::new();
        }
        let yes = adoption
            .confirmed
            .iter()
            .filter(|c| **c == Some(true))
            .count();
        let open = adoption.confirmed.iter().filter(|c| c.is_none()).count();
        if yes >= majority {
            adoption.settled = true;
            let won = adoption.won.clone();
            let elapsed = now.saturating_sub(round.started);
            let relied = self.config.ttl.min(won.held_for);
            let waited = round.started.saturating_sub(self.started);
            if self.config.drift.validity(relied, elapsed).is_none() {
                return self.answer(Answer::TooSlow { elapsed, relied });
            }
            let span = relied + waited;
            let validity = span.saturating_sub(self.config.drift.for_ttl(span));
            return self.answer(Answer::Won {
                round: round_id,
                won,
                validity,
            });
        }
        if yes + open < majority {
            adoption.settled = true;
            let mut commands = vec![Command::Contended];
            commands.extend(self.refused(round_id, Loss::Split, now));
            return commands;
        }
        Vec::new()
    }

    fn abort(&mut self, round: RoundId, region: usize) -> Command {
        *self.aborts_in_flight.entry(round).or_insert(0) += 1;
        Command::Abort { round, region }
    }

    fn aborted(&mut self, round: RoundId) -> Vec<Command> {
        let left = self.aborts_in_flight.entry(round).or_insert(0);
        *left = left.saturating_sub(1);
        if *left == 0 && self.reproposal_after == Some(round) {
            self.reproposal_after = None;
            if !self.answered {
                return vec![self.mint()];
            }
        }
        Vec::new()
    }

    fn answer(&mut self, answer: Answer) -> Vec<Command> {
        if self.answered {
            return Vec::new();
        }
        self.answered = true;
        vec![Command::Answer(answer)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::{Grant, RegionSplit};

    const TTL: Duration = Duration::from_secs(10);

    fn config(wait: Duration) -> AcquireConfig {
        AcquireConfig {
            regions: 3,
            ttl: TTL,
            wait,
            drift: DriftAllowance {
                rate: 0.01,
                margin: Duration::from_millis(10),
            },
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Every grant here belongs to one request: lock ids differ, request ids not.
    fn grant(lock_id: &str, remaining: Duration) -> Grant {
        Grant {
            lock_id: lock_id.into(),
            owner: "owner".into(),
            token: 7,
            ttl_ms: 10_000,
            request_id: "request-1".into(),
            remaining,
            principal: String::new(),
        }
    }

    fn granted(lock_id: &str) -> Reply {
        Reply::Voted(Vote::Granted(grant(lock_id, TTL)))
    }

    fn reply(round: RoundId, region: usize, reply: Reply, now: Duration) -> Event {
        Event::Reply {
            round,
            region,
            reply,
            now,
        }
    }

    /// A machine whose round 0 was minted as lock `L0` at time 0 and sent.
    fn sent(wait: Duration) -> AcquireMachine {
        let (mut m, first) = AcquireMachine::start(config(wait), ms(0));
        assert_eq!(first, vec![Command::Mint { round: 0 }]);
        let sends = m.handle(minted(0, ms(0)));
        assert_eq!(
            sends,
            (0..3)
                .map(|region| Command::Send { round: 0, region })
                .collect::<Vec<_>>()
        );
        m
    }

    fn minted(round: RoundId, now: Duration) -> Event {
        Event::Minted {
            round,
            lock_id: format!("L{round}"),
            token: 100 + u64::from(round),
            now,
        }
    }

    /// The validity answered for a lock relied on for `relied` from a round that
    /// started `waited` after the acquire.
    fn validity(relied: Duration, waited: Duration) -> Duration {
        let span = relied + waited;
        span - config(Duration::ZERO).drift.for_ttl(span)
    }

    #[test]
    fn wins_at_the_nearest_majority_and_keeps_every_grant_late_ones_included() {
        // M3b: a late grant of a won round must not be aborted.
        let mut m = sent(Duration::ZERO);
        assert_eq!(m.handle(reply(0, 0, granted("L0"), ms(3))), vec![]);
        let won = m.handle(reply(0, 2, granted("L0"), ms(5)));
        let [
            Command::Answer(Answer::Won {
                round,
                won,
                validity: v,
            }),
        ] = won.as_slice()
        else {
            panic!("{won:?}");
        };
        assert_eq!((*round, won.grant.lock_id.as_str()), (0, "L0"));
        assert_eq!(won.regions, vec![0, 2]);
        assert_eq!(*v, validity(TTL, ms(0)));
        assert!(!m.is_done(), "region 1 has not answered yet");
        assert_eq!(m.handle(reply(0, 1, granted("L0"), ms(900))), vec![]);
        assert!(m.is_done());
    }

    #[test]
    fn an_idempotent_retry_wins_the_adopted_earlier_lock_with_what_it_has_left() {
        // Hole 1 and M2: regions 0 and 2 offer the earlier lock E of the same
        // request; region 1 granted this round's own L0, which is withdrawn. E is
        // answered only once a majority confirmed adopting it, and its validity
        // counts from E's remaining time, not the TTL.
        let mut m = sent(Duration::ZERO);
        let e_left = ms(2_000);
        let e = |left| Reply::Voted(Vote::Granted(grant("E", left)));
        assert_eq!(m.handle(reply(0, 0, e(e_left), ms(2))), vec![]);
        assert_eq!(m.handle(reply(0, 1, granted("L0"), ms(3))), vec![]);
        let adopt = |region| Command::Adopt {
            round: 0,
            region,
            lock_id: "E".into(),
        };
        assert_eq!(
            m.handle(reply(0, 2, e(ms(2_500)), ms(4))),
            vec![
                Command::Abort {
                    round: 0,
                    region: 1
                },
                adopt(0),
                adopt(2)
            ]
        );
        let confirmed = |region, adopted, now| Event::Adopted {
            round: 0,
            region,
            adopted,
            now,
        };
        assert_eq!(m.handle(confirmed(2, true, ms(5))), vec![]);
        let out = m.handle(confirmed(0, true, ms(6)));
        let [
            Command::Answer(Answer::Won {
                won, validity: v, ..
            }),
        ] = out.as_slice()
        else {
            panic!("{out:?}");
        };
        assert_eq!(won.grant.lock_id, "E");
        assert_eq!(won.held_for, e_left);
        assert_eq!(*v, validity(e_left, ms(0)));
        assert!(*v < ms(2_000));
        assert!(!m.is_done(), "the abort is in flight");
        assert_eq!(
            m.handle(Event::Aborted {
                round: 0,
                region: 1
            }),
            vec![]
        );
        assert!(m.is_done());
    }

    #[test]
    fn an_earlier_lock_aborted_before_its_adoption_is_not_won_and_the_attempt_is_contended() {
        // Hole 1: the round that created E aborts it in the background. Where
        // the abort lands first, the adoption fails; with a majority unable to
        // confirm, E is not reported won (it is being removed).
        let mut m = sent(Duration::from_secs(5));
        let e = Reply::Voted(Vote::Granted(grant("E", ms(4_000))));
        m.handle(reply(0, 0, e.clone(), ms(1)));
        let out = m.handle(reply(0, 1, e, ms(2)));
        assert_eq!(
            out.iter()
                .filter(|c| matches!(c, Command::Adopt { .. }))
                .count(),
            2
        );
        let refused = |region| Event::Adopted {
            round: 0,
            region,
            adopted: false,
            now: ms(3),
        };
        assert_eq!(
            m.handle(refused(0)),
            vec![
                Command::Contended,
                Command::Backoff {
                    attempt: 0,
                    holder_left: None,
                    left: ms(5_000) - ms(3)
                }
            ]
        );
        assert_eq!(m.handle(refused(1)), vec![]);
        assert_eq!(
            m.handle(Event::Woke { now: ms(50) }),
            vec![Command::Mint { round: 1 }]
        );
    }

    #[test]
    fn an_adopted_win_after_waiting_counts_the_wait_in_the_validity() {
        let mut m = sent(Duration::from_secs(10));
        let holder = grant("H", ms(100));
        m.handle(reply(0, 0, Reply::Voted(Vote::Held(holder.clone())), ms(1)));
        m.handle(reply(0, 1, Reply::Voted(Vote::Held(holder)), ms(2)));
        m.handle(Event::Woke { now: ms(2_000) });
        m.handle(minted(1, ms(2_000)));
        let e_left = ms(4_000);
        m.handle(reply(
            1,
            0,
            Reply::Voted(Vote::Granted(grant("E", e_left))),
            ms(2_001),
        ));
        m.handle(reply(
            1,
            1,
            Reply::Voted(Vote::Granted(grant("E", e_left))),
            ms(2_002),
        ));
        for region in [0, 1] {
            let out = m.handle(Event::Adopted {
                round: 1,
                region,
                adopted: true,
                now: ms(2_003),
            });
            if region == 1 {
                let [Command::Answer(Answer::Won { validity: v, .. })] = out.as_slice() else {
                    panic!("{out:?}");
                };
                assert_eq!(*v, validity(e_left, ms(2_000)));
            }
        }
    }

    #[test]
    fn concurrent_duplicates_offered_different_locks_free_their_own_grants() {
        // Three duplicates of one request: each region offers a different one's
        // lock. Nothing is adopted without a majority, so each duplicate's abort
        // of its own grant goes through and the next attempt finds the regions
        // free (before, every region had adopted a different lock and all of
        // them stayed "contended" until those grants expired).
        let mut m = sent(Duration::ZERO);
        m.handle(reply(0, 0, granted("L0"), ms(1)));
        m.handle(reply(
            0,
            1,
            Reply::Voted(Vote::Granted(grant("D2", TTL))),
            ms(2),
        ));
        let out = m.handle(reply(
            0,
            2,
            Reply::Voted(Vote::Granted(grant("D3", TTL))),
            ms(3),
        ));
        assert_eq!(
            out,
            vec![
                Command::Abort {
                    round: 0,
                    region: 0
                },
                Command::Contended,
                Command::Answer(Answer::Lost {
                    round: 0,
                    loss: Loss::Split
                })
            ]
        );
    }

    #[test]
    fn a_late_own_grant_after_an_adopted_win_is_withdrawn() {
        let mut m = sent(Duration::ZERO);
        let e = Reply::Voted(Vote::Granted(grant("E", ms(5_000))));
        m.handle(reply(0, 0, e.clone(), ms(1)));
        let out = m.handle(reply(0, 1, e, ms(2)));
        // Region 2 has not answered: it may still grant L0, so it is aborted now,
        // and its late grant is aborted again when it arrives.
        assert_eq!(
            out[0],
            Command::Abort {
                round: 0,
                region: 2
            }
        );
        for region in [0, 1] {
            m.handle(Event::Adopted {
                round: 0,
                region,
                adopted: true,
                now: ms(3),
            });
        }
        assert_eq!(
            m.handle(reply(0, 2, granted("L0"), ms(50))),
            vec![Command::Abort {
                round: 0,
                region: 2
            }]
        );
    }

    #[test]
    fn a_win_with_nothing_left_to_rely_on_is_withdrawn_everywhere() {
        let mut m = sent(Duration::ZERO);
        m.handle(reply(0, 0, granted("L0"), TTL));
        let out = m.handle(reply(0, 1, granted("L0"), TTL + ms(1)));
        assert_eq!(
            out,
            vec![
                Command::Abort {
                    round: 0,
                    region: 0
                },
                Command::Abort {
                    round: 0,
                    region: 1
                },
                Command::Abort {
                    round: 0,
                    region: 2
                },
                Command::Answer(Answer::TooSlow {
                    elapsed: TTL + ms(1),
                    relied: TTL
                }),
            ]
        );
        // A late grant of the withdrawn lock is aborted too.
        assert_eq!(
            m.handle(reply(0, 2, granted("L0"), TTL + ms(2))),
            vec![Command::Abort {
                round: 0,
                region: 2
            }]
        );
    }

    #[test]
    fn held_without_wait_aborts_what_may_be_ours_and_answers_at_once() {
        let mut m = sent(Duration::ZERO);
        let holder = grant("H", ms(4_000));
        assert_eq!(m.handle(reply(0, 0, granted("L0"), ms(1))), vec![]);
        assert_eq!(
            m.handle(reply(0, 1, Reply::Voted(Vote::Held(holder.clone())), ms(2))),
            vec![]
        );
        let out = m.handle(reply(0, 2, Reply::Voted(Vote::Held(holder.clone())), ms(3)));
        assert_eq!(
            out,
            vec![
                Command::Abort {
                    round: 0,
                    region: 0
                },
                Command::Contended,
                Command::Answer(Answer::Lost {
                    round: 0,
                    loss: Loss::Held(holder)
                }),
            ]
        );
        // The abort finishing leads nowhere: no re-proposal after an answer.
        assert_eq!(
            m.handle(Event::Aborted {
                round: 0,
                region: 0
            }),
            vec![]
        );
        assert!(m.is_done());
    }

    #[test]
    fn token_too_low_aborts_the_low_grant_then_re_proposes_in_the_same_call() {
        // M4: regions with different marks. Region 0 granted the low token; 1 and
        // 2 refused it. The re-proposal waits until region 0 is free of it.
        let mut m = sent(Duration::ZERO);
        assert_eq!(m.handle(reply(0, 0, granted("L0"), ms(1))), vec![]);
        assert_eq!(
            m.handle(reply(
                0,
                1,
                Reply::Voted(Vote::TokenTooLow { mark: 500 }),
                ms(2)
            )),
            vec![]
        );
        assert_eq!(
            m.handle(reply(
                0,
                2,
                Reply::Voted(Vote::TokenTooLow { mark: 900 }),
                ms(3)
            )),
            vec![Command::Abort {
                round: 0,
                region: 0
            }]
        );
        assert_eq!(
            m.handle(Event::Aborted {
                round: 0,
                region: 0
            }),
            vec![Command::Mint { round: 1 }]
        );
        assert_eq!(m.handle(minted(1, ms(5))).len(), 3);
        m.handle(reply(1, 0, granted("L1"), ms(6)));
        let out = m.handle(reply(1, 1, granted("L1"), ms(7)));
        let [
            Command::Answer(Answer::Won {
                round: 1,
                won,
                validity: v,
            }),
        ] = out.as_slice()
        else {
            panic!("{out:?}");
        };
        assert_eq!(won.grant.lock_id, "L1");
        // The winning round started 5 ms into the acquire: that counts too.
        assert_eq!(*v, validity(TTL, ms(5)));
    }

    #[test]
    fn token_too_low_with_nothing_to_abort_re_proposes_at_once() {
        // Region 0 answered with another lock of the same request (not ours to
        // abort); 1 and 2 refused the token. Nothing holds our proposal.
        let mut m = sent(Duration::ZERO);
        m.handle(reply(
            0,
            0,
            Reply::Voted(Vote::Granted(grant("X", TTL))),
            ms(1),
        ));
        m.handle(reply(
            0,
            1,
            Reply::Voted(Vote::TokenTooLow { mark: 5 }),
            ms(2),
        ));
        assert_eq!(
            m.handle(reply(
                0,
                2,
                Reply::Voted(Vote::TokenTooLow { mark: 5 }),
                ms(3)
            )),
            vec![Command::Mint { round: 1 }]
        );
    }

    #[test]
    fn the_token_rounds_run_out_as_contention() {
        let mut m = sent(Duration::ZERO);
        for round in 0..TOKEN_ROUNDS {
            if round > 0 {
                m.handle(minted(round, ms(1)));
            }
            let too_low = Reply::Voted(Vote::TokenTooLow { mark: 5 });
            m.handle(reply(round, 0, too_low.clone(), ms(1)));
            let out = m.handle(reply(round, 1, too_low, ms(1)));
            // Region 2 has not answered and may hold the low grant: withdrawn.
            let abort = Command::Abort { round, region: 2 };
            if round + 1 < TOKEN_ROUNDS {
                assert_eq!(out, vec![abort]);
                assert_eq!(
                    m.handle(Event::Aborted { round, region: 2 }),
                    vec![Command::Mint { round: round + 1 }]
                );
            } else {
                assert_eq!(
                    out,
                    vec![
                        abort,
                        Command::Contended,
                        Command::Answer(Answer::Lost {
                            round,
                            loss: Loss::TokenTooLow { mark: 5 }
                        })
                    ]
                );
            }
        }
    }

    #[test]
    fn no_majority_waits_for_the_last_reply_to_name_regions_then_answers() {
        let mut m = sent(Duration::from_secs(5));
        assert_eq!(m.handle(reply(0, 0, Reply::Failed, ms(1))), vec![]);
        // Two failures: no majority can form. Everything that may hold our grant
        // is withdrawn, but the answer waits for region 2.
        assert_eq!(
            m.handle(reply(0, 1, Reply::Failed, ms(2))),
            vec![
                Command::Abort {
                    round: 0,
                    region: 0
                },
                Command::Abort {
                    round: 0,
                    region: 1
                },
                Command::Abort {
                    round: 0,
                    region: 2
                },
            ]
        );
        let holder = grant("H", ms(1_000));
        assert_eq!(
            m.handle(reply(0, 2, Reply::Voted(Vote::Held(holder)), ms(3))),
            vec![Command::Answer(Answer::Lost {
                round: 0,
                loss: Loss::Unavailable(RegionSplit {
                    reachable: vec![2],
                    unreachable: vec![0, 1]
                })
            })]
        );
    }

    #[test]
    fn a_request_id_conflict_is_answered_at_once_without_waiting() {
        let mut m = sent(Duration::from_secs(5));
        let other = grant("E", ms(1_000));
        m.handle(reply(
            0,
            0,
            Reply::Voted(Vote::RequestConflict(other.clone())),
            ms(1),
        ));
        let out = m.handle(reply(
            0,
            1,
            Reply::Voted(Vote::RequestConflict(other.clone())),
            ms(2),
        ));
        assert_eq!(
            out,
            vec![
                Command::Abort {
                    round: 0,
                    region: 2
                },
                Command::Answer(Answer::Lost {
                    round: 0,
                    loss: Loss::RequestConflict(other)
                })
            ]
        );
    }

    #[test]
    fn waiting_backs_off_retries_and_gives_up_when_the_wait_runs_out() {
        let wait = Duration::from_secs(5);
        let mut m = sent(wait);
        let holder = grant("H", ms(300));
        m.handle(reply(0, 0, Reply::Voted(Vote::Held(holder.clone())), ms(1)));
        let out = m.handle(reply(0, 1, Reply::Voted(Vote::Held(holder.clone())), ms(2)));
        assert_eq!(
            out,
            vec![
                Command::Abort {
                    round: 0,
                    region: 2
                },
                Command::Contended,
                Command::Backoff {
                    attempt: 0,
                    holder_left: Some(ms(300)),
                    left: wait - ms(2)
                }
            ]
        );
        // The abort of round 0 finishing while backing off starts nothing: only
        // the wake-up does.
        assert_eq!(
            m.handle(Event::Aborted {
                round: 0,
                region: 2
            }),
            vec![]
        );
        assert_eq!(
            m.handle(Event::Woke { now: ms(200) }),
            vec![Command::Mint { round: 1 }]
        );
        m.handle(minted(1, ms(200)));
        m.handle(reply(
            1,
            0,
            Reply::Voted(Vote::Held(holder.clone())),
            ms(201),
        ));
        // The second refusal backs off as attempt 1 (a longer delay).
        let second = m.handle(reply(
            1,
            1,
            Reply::Voted(Vote::Held(holder.clone())),
            ms(202),
        ));
        assert_eq!(
            second.last(),
            Some(&Command::Backoff {
                attempt: 1,
                holder_left: Some(ms(300)),
                left: wait - ms(202)
            })
        );
        assert_eq!(
            m.handle(Event::Woke { now: ms(400) }),
            vec![Command::Mint { round: 2 }]
        );
        m.handle(minted(2, ms(400)));
        m.handle(reply(
            2,
            0,
            Reply::Voted(Vote::Held(holder.clone())),
            ms(4_990),
        ));
        let out = m.handle(reply(2, 2, Reply::Voted(Vote::Held(holder.clone())), wait));
        assert_eq!(
            out,
            vec![
                Command::Abort {
                    round: 2,
                    region: 1
                },
                Command::Contended,
                Command::Answer(Answer::WaitExpired {
                    waited: wait,
                    holder: Some(("owner".into(), ms(300)))
                })
            ]
        );
    }

    #[test]
    fn an_adopted_win_withdraws_nothing_from_regions_that_never_held_our_proposal() {
        // Region 2 refused our token (it holds nothing of ours): only grants of
        // our own lock id outside the majority are withdrawn, here none.
        let mut m = sent(Duration::ZERO);
        let e = Reply::Voted(Vote::Granted(grant("E", ms(5_000))));
        m.handle(reply(0, 0, e.clone(), ms(1)));
        m.handle(reply(
            0,
            2,
            Reply::Voted(Vote::TokenTooLow { mark: 9 }),
            ms(2),
        ));
        let out = m.handle(reply(0, 1, e, ms(3)));
        assert!(
            out.iter().all(|c| matches!(c, Command::Adopt { .. })),
            "{out:?}"
        );
    }

    #[test]
    fn a_win_after_waiting_counts_the_wait_in_the_validity() {
        // Callers count validity from when they sent the request: a lock won
        // after 3 s of waiting is valid for about 3 s + TTL from then, never
        // "expired on arrival".
        let mut m = sent(Duration::from_secs(10));
        let holder = grant("H", ms(100));
        m.handle(reply(0, 0, Reply::Voted(Vote::Held(holder.clone())), ms(1)));
        m.handle(reply(0, 1, Reply::Voted(Vote::Held(holder)), ms(2)));
        m.handle(Event::Woke { now: ms(3_000) });
        m.handle(minted(1, ms(3_000)));
        m.handle(reply(1, 0, granted("L1"), ms(3_004)));
        let out = m.handle(reply(1, 1, granted("L1"), ms(3_008)));
        let [Command::Answer(Answer::Won { validity: v, .. })] = out.as_slice() else {
            panic!("{out:?}");
        };
        assert_eq!(*v, validity(TTL, ms(3_000)));
        assert!(*v > TTL);
    }

    #[test]
    fn a_split_vote_waits_without_a_holder_hint() {
        let mut m = sent(Duration::from_secs(1));
        m.handle(reply(0, 0, granted("L0"), ms(1)));
        m.handle(reply(
            0,
            1,
            Reply::Voted(Vote::Granted(grant("X", TTL))),
            ms(1),
        ));
        let out = m.handle(reply(0, 2, Reply::Voted(Vote::Aborted), ms(1)));
        assert_eq!(
            out,
            vec![
                Command::Abort {
                    round: 0,
                    region: 0
                },
                Command::Contended,
                Command::Backoff {
                    attempt: 0,
                    holder_left: None,
                    left: Duration::from_secs(1) - ms(1)
                }
            ]
        );
    }

    #[test]
    fn a_late_grant_of_a_lost_round_is_withdrawn_and_duplicates_count_once() {
        let mut m = sent(Duration::ZERO);
        let holder = grant("H", ms(1_000));
        m.handle(reply(0, 0, Reply::Voted(Vote::Held(holder.clone())), ms(1)));
        let out = m.handle(reply(0, 1, Reply::Voted(Vote::Held(holder)), ms(2)));
        assert_eq!(
            out[0],
            Command::Abort {
                round: 0,
                region: 2
            }
        );
        assert_eq!(
            m.handle(reply(0, 2, granted("L0"), ms(3))),
            vec![Command::Abort {
                round: 0,
                region: 2
            }]
        );
        assert_eq!(m.handle(reply(0, 2, granted("L0"), ms(4))), vec![]);
        assert_eq!(m.handle(reply(9, 0, granted("L9"), ms(4))), vec![]);
        assert_eq!(m.handle(reply(0, 7, granted("L0"), ms(4))), vec![]);
    }

    #[test]
    fn a_failed_mint_answers_once_and_stops() {
        let (mut m, _) = AcquireMachine::start(config(Duration::ZERO), ms(0));
        assert_eq!(
            m.handle(Event::MintFailed { round: 0 }),
            vec![Command::Answer(Answer::MintFailed)]
        );
        assert!(m.is_done());
        assert_eq!(m.lock_id(0), None);
    }

    #[test]
    fn the_machine_is_done_only_when_nothing_is_in_flight() {
        let mut m = sent(Duration::ZERO);
        assert_eq!(m.lock_id(0), Some("L0"));
        m.handle(reply(0, 0, granted("L0"), ms(1)));
        m.handle(reply(0, 1, granted("L0"), ms(1)));
        assert!(!m.is_done());
        m.handle(reply(0, 2, Reply::Failed, ms(1)));
        assert!(m.is_done());
    }
}
