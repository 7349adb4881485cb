//! Lock histories: a recorder for client operations (JSON lines, monotonic times)
//! and a checker in the style of Jepsen's and Hazelcast's `FencedMutex` models.
//!
//! Every invocation gets an operation id (`op`, unique in its recorder) that its
//! completion carries, and the checker pairs completions with invocations by it
//! (clones of one recorded client share a process name, so concurrent operations
//! cannot be paired by process). Records without an id (`op` 0, histories written
//! before ids existed) are paired first-in first-out by (process, kind).
//!
//! An `ok` acquire opens a hold `[t_ok, t_invoke + validity)` (validity counts from
//! when the request was sent). An `ok` renew, or an `ok` idempotent retry of the
//! acquire (one that returns an already known lock id), moves its end to
//! `t_invoke + validity`, from its own `t_ok` on. Invoking a release ends the hold,
//! whatever the release's outcome: the holder stopped relying on the lock then.
//! `fail` and `info` operations open nothing. The checker verifies:
//! - holds of different locks on a resource never overlap;
//! - a hold that starts later has a larger token (equal tokens are a violation);
//! - a renewal keeps the lock's token, and an idempotent retry returns the token
//!   of the lock's first grant;
//! - only a known lock is renewed: an `ok` renew needs an earlier `ok` acquire
//!   that returned its lock id;
//! - nothing resurrects a lock: no renew or acquire of a lock succeeds after that
//!   lock's release was invoked;
//! - every accepted (`ok`) write was invoked inside its writer's hold: not before
//!   the acquire's `ok`, not after the validity the writer knew of then (grants
//!   whose `ok` came later do not count), not after the release was invoked; a
//!   write with no hold at all is a violation too. Rejected (`fail`) writes are
//!   fencing at work, and `info` writes are unknown: neither is judged;
//! - the fenced oracle never accepted a write with a token below one it accepted
//!   before;
//! - optionally, after healing plus the maximum TTL, the resource was acquired
//!   again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What a client did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Acquire.
    Acquire,
    /// Renew.
    Renew,
    /// Release.
    Release,
    /// A write to the fenced resource with the holder's token.
    Write,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Acquire => "acquire",
            Self::Renew => "renew",
            Self::Release => "release",
            Self::Write => "write",
        })
    }
}

/// Which part of an operation a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Sent.
    Invoke,
    /// Succeeded.
    Ok,
    /// Definitely did not happen.
    Fail,
    /// Unknown outcome.
    Info,
}

/// One record (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Index in the history.
    pub index: usize,
    /// The operation: an invocation and its completion carry the same id, unique
    /// in the recorder (from 1). 0 when unknown (histories recorded before ids):
    /// such records are paired first-in first-out by (process, kind).
    #[serde(default)]
    pub op: u64,
    /// Which client process.
    pub process: String,
    /// The resource.
    pub resource: String,
    /// What.
    pub kind: Kind,
    /// Which part.
    pub phase: Phase,
    /// Monotonic time, microseconds since the recorder started.
    pub time_us: u64,
    /// The lock id (acquire ok, renew, release, write).
    #[serde(default)]
    pub lock_id: String,
    /// The fencing token (acquire ok, renew ok, write).
    #[serde(default)]
    pub token: u64,
    /// Validity in microseconds (acquire ok, renew ok).
    #[serde(default)]
    pub validity_us: u64,
}

/// Records operations from any number of tasks.
#[derive(Debug)]
pub struct Recorder {
    /// Time zero.
    start: Instant,
    /// Everything recorded, in order.
    records: Mutex<Vec<Record>>,
    /// The next operation id.
    next_op: AtomicU64,
}

/// A pending operation: complete it with [`Recorder::complete`].
#[derive(Debug, Clone)]
pub struct Invocation {
    op: u64,
    process: String,
    resource: String,
    kind: Kind,
    lock_id: String,
}

impl Invocation {
    /// The operation id its invocation record carries (and its completion will).
    pub fn op(&self) -> u64 {
        self.op
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose time zero is now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            records: Mutex::new(Vec::new()),
            next_op: AtomicU64::new(1),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn push(&self, mut record: Record) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        record.index = records.len();
        records.push(record);
    }

    /// Record the start of an operation.
    pub fn invoke(&self, process: &str, resource: &str, kind: Kind, lock_id: &str) -> Invocation {
        let op = self.next_op.fetch_add(1, Ordering::Relaxed);
        self.push(Record {
            index: 0,
            op,
            process: process.into(),
            resource: resource.into(),
            kind,
            phase: Phase::Invoke,
            time_us: self.now_us(),
            lock_id: lock_id.into(),
            token: 0,
            validity_us: 0,
        });
        Invocation {
            op,
            process: process.into(),
            resource: resource.into(),
            kind,
            lock_id: lock_id.into(),
        }
    }

    /// Record how an operation ended.
    pub fn complete(
        &self,
        invocation: &Invocation,
        phase: Phase,
        lock_id: &str,
        token: u64,
        validity_us: u64,
    ) {
        let lock_id = if lock_id.is_empty() {
            invocation.lock_id.clone()
        } else {
            lock_id.to_owned()
        };
        self.push(Record {
            index: 0,
            op: invocation.op,
            process: invocation.process.clone(),
            resource: invocation.resource.clone(),
            kind: invocation.kind,
            phase,
            time_us: self.now_us(),
            lock_id,
            token,
            validity_us,
        });
    }

    /// Everything recorded so far.
    pub fn history(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current monotonic time in the history's units.
    pub fn time_us(&self) -> u64 {
        self.now_us()
    }

    /// The history as JSON lines.
    pub fn to_json_lines(&self) -> String {
        self.history()
            .iter()
            .filter_map(|r| serde_json::to_string(r).ok())
            .map(|l| l + "\n")
            .collect()
    }
}

/// A broken guarantee, naming the records involved (by their `index`). Times are
/// the history's, in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two different locks' holds overlapped.
    Overlap {
        /// The resource.
        resource: String,
        /// The acquire records (ok) of the two holds.
        first: usize,
        /// The later one.
        second: usize,
    },
    /// A hold that started later did not have a larger token.
    TokenNotIncreasing {
        /// The resource.
        resource: String,
        /// The earlier hold's acquire record.
        earlier: usize,
        /// The later hold's acquire record.
        later: usize,
    },
    /// A renewal reported another token than the lock's.
    RenewChangedToken {
        /// The renew record.
        renew: usize,
    },
    /// An idempotent retry (an ok acquire returning an already known lock id)
    /// reported another token than the lock's first grant.
    RetryChangedToken {
        /// The resource.
        resource: String,
        /// The lock.
        lock_id: String,
        /// The lock's first ok acquire record.
        first: usize,
        /// Its token.
        first_token: u64,
        /// The retry's ok record.
        retry: usize,
        /// The token the retry returned.
        retry_token: u64,
    },
    /// A renewal succeeded for a lock no ok acquire had returned.
    RenewWithoutHold {
        /// The resource.
        resource: String,
        /// The renewed lock.
        lock_id: String,
        /// The renew record (ok).
        renew: usize,
        /// The token it reported.
        token: u64,
        /// When it succeeded.
        succeeded_at_us: u64,
    },
    /// A renew, or an acquire returning the lock, succeeded after the lock's
    /// release was invoked: the released lock was resurrected.
    ResurrectedAfterRelease {
        /// The resource.
        resource: String,
        /// The lock.
        lock_id: String,
        /// Renew or acquire.
        kind: Kind,
        /// Its ok record.
        op: usize,
        /// The token it reported.
        token: u64,
        /// When it succeeded.
        succeeded_at_us: u64,
        /// The lock's first release invocation record.
        release: usize,
        /// When that release was invoked.
        released_at_us: u64,
    },
    /// The fenced resource accepted a write that was invoked outside its writer's
    /// hold: after the hold's end (its validity as known then, or its release), before
    /// the hold began, or with no hold at all.
    WriteOutsideHold {
        /// The resource.
        resource: String,
        /// The writer's lock.
        lock_id: String,
        /// The write's ok record.
        write: usize,
        /// The token it carried.
        token: u64,
        /// When the write was invoked.
        invoked_at_us: u64,
        /// The writer's hold, `(start, end)`, its end as known when the write was
        /// invoked (or when the hold began, for a write invoked before that);
        /// `None` when the lock had no hold at all.
        hold: Option<(u64, u64)>,
    },
    /// The oracle accepted a write with a token below one it accepted before.
    StaleWriteAccepted {
        /// The resource.
        resource: String,
        /// The accepted stale write.
        write: usize,
        /// The earlier write with the higher token.
        after: usize,
    },
    /// The resource was never acquired again after healing plus the maximum TTL.
    NeverFreed {
        /// The resource.
        resource: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overlap {
                resource,
                first,
                second,
            } => write!(
                f,
                "{resource}: the holds of two locks overlap (acquires #{first} and #{second})"
            ),
            Self::TokenNotIncreasing {
                resource,
                earlier,
                later,
            } => write!(
                f,
                "{resource}: the hold acquired in #{later} started later than the one acquired \
                 in #{earlier} without a larger token"
            ),
            Self::RenewChangedToken { renew } => {
                write!(f, "renew #{renew} reported another token than its lock's")
            }
            Self::RetryChangedToken {
                resource,
                lock_id,
                first,
                first_token,
                retry,
                retry_token,
            } => write!(
                f,
                "{resource}: retried acquire #{retry} returned lock {lock_id} with token \
                 {retry_token}, but its first grant #{first} had token {first_token}"
            ),
            Self::RenewWithoutHold {
                resource,
                lock_id,
                renew,
                token,
                succeeded_at_us,
            } => write!(
                f,
                "{resource}: renew #{renew} of lock {lock_id} (token {token}) succeeded at \
                 {succeeded_at_us} µs, but no acquire had returned that lock"
            ),
            Self::ResurrectedAfterRelease {
                resource,
                lock_id,
                kind,
                op,
                token,
                succeeded_at_us,
                release,
                released_at_us,
            } => write!(
                f,
                "{resource}: {kind} #{op} of lock {lock_id} (token {token}) succeeded at \
                 {succeeded_at_us} µs, after its release #{release} was invoked at \
                 {released_at_us} µs"
            ),
            Self::WriteOutsideHold {
                resource,
                lock_id,
                write,
                token,
                invoked_at_us,
                hold: Some((start, end)),
            } => write!(
                f,
                "{resource}: write #{write} with lock {lock_id} (token {token}) invoked at \
                 {invoked_at_us} µs was accepted outside its hold [{start}, {end}) µs"
            ),
            Self::WriteOutsideHold {
                resource,
                lock_id,
                write,
                token,
                invoked_at_us,
                hold: None,
            } => write!(
                f,
                "{resource}: write #{write} with lock {lock_id:?} (token {token}) invoked at \
                 {invoked_at_us} µs was accepted, but that lock was never held"
            ),
            Self::StaleWriteAccepted {
                resource,
                write,
                after,
            } => write!(
                f,
                "{resource}: the oracle accepted write #{write} after write #{after}, which had \
                 a higher token"
            ),
            Self::NeverFreed { resource } => write!(
                f,
                "{resource}: never acquired again after healing plus the maximum TTL"
            ),
        }
    }
}

/// One lock's hold.
#[derive(Debug, Clone)]
struct Hold {
    /// The first ok acquire record.
    acquire: usize,
    resource: String,
    lock_id: String,
    /// The first grant's token.
    token: u64,
    /// The first acquire's ok.
    start: u64,
    /// Every grant (acquire, retry or renew): `(known from, valid until)`, that is
    /// `(t_ok, t_invoke + validity)`.
    grants: Vec<(u64, u64)>,
    /// When the lock's release was first invoked.
    released_at: Option<u64>,
}

impl Hold {
    /// The hold's end as known at `at`: the latest validity of the grants whose ok
    /// came by then, cut at the release's invocation.
    fn end_at(&self, at: u64) -> u64 {
        let granted = self
            .grants
            .iter()
            .filter(|&&(known, _)| known <= at)
            .map(|&(_, until)| until)
            .max()
            .unwrap_or(self.start);
        match self.released_at {
            Some(released) => granted.min(released.max(self.start)),
            None => granted,
        }
    }

    /// The hold's end, all grants known.
    fn end(&self) -> u64 {
        self.end_at(u64::MAX)
    }
}

/// For each record, its invocation when it is a completion: by op id, or first-in
/// first-out by (process, kind) for records without one.
fn invocations(history: &[Record]) -> Vec<Option<&Record>> {
    let mut by_op: HashMap<u64, &Record> = HashMap::new();
    let mut unnumbered: HashMap<(&str, Kind), VecDeque<&Record>> = HashMap::new();
    history
        .iter()
        .map(|r| match (r.phase, r.op) {
            (Phase::Invoke, 0) => {
                unnumbered
                    .entry((r.process.as_str(), r.kind))
                    .or_default()
                    .push_back(r);
                None
            }
            (Phase::Invoke, op) => {
                by_op.insert(op, r);
                None
            }
            (_, 0) => unnumbered
                .get_mut(&(r.process.as_str(), r.kind))
                .and_then(VecDeque::pop_front),
            (_, op) => by_op.get(&op).copied(),
        })
        .collect()
}

/// Check `history`. With `liveness = Some((healed_at_us, max_ttl_us))`, every
/// resource must also have an `ok` acquire invoked after `healed_at + max_ttl`.
pub fn check(history: &[Record], liveness: Option<(u64, u64)>) -> Vec<Violation> {
    let mut violations = Vec::new();
    let invoked = invocations(history);
    let t_invoke = |i: usize| invoked[i].map_or(history[i].time_us, |v| v.time_us);

    // A release ends a hold even when its reply was lost: the holder stopped
    // relying on it when it invoked the release. The first one counts.
    let mut releases: HashMap<&str, &Record> = HashMap::new();
    for r in history
        .iter()
        .filter(|r| r.kind == Kind::Release && r.phase == Phase::Invoke)
    {
        releases
            .entry(r.lock_id.as_str())
            .and_modify(|first| {
                if r.time_us < first.time_us {
                    *first = r;
                }
            })
            .or_insert(r);
    }

    let mut holds: Vec<Hold> = Vec::new();
    let mut hold_of: HashMap<&str, usize> = HashMap::new();
    for (i, r) in history.iter().enumerate() {
        if r.phase != Phase::Ok || !matches!(r.kind, Kind::Acquire | Kind::Renew) {
            continue;
        }
        let grant = (r.time_us, t_invoke(i).saturating_add(r.validity_us));
        let known = hold_of.get(r.lock_id.as_str()).copied();
        match (r.kind, known) {
            (Kind::Acquire, None) => {
                hold_of.insert(&r.lock_id, holds.len());
                holds.push(Hold {
                    acquire: r.index,
                    resource: r.resource.clone(),
                    lock_id: r.lock_id.clone(),
                    token: r.token,
                    start: r.time_us,
                    grants: vec![grant],
                    released_at: releases.get(r.lock_id.as_str()).map(|rel| rel.time_us),
                });
            }
            (Kind::Acquire, Some(h)) => {
                // An idempotent retry returns the same lock: one hold, one token.
                let hold = &mut holds[h];
                if r.token != hold.token {
                    violations.push(Violation::RetryChangedToken {
                        resource: hold.resource.clone(),
                        lock_id: r.lock_id.clone(),
                        first: hold.acquire,
                        first_token: hold.token,
                        retry: r.index,
                        retry_token: r.token,
                    });
                }
                hold.grants.push(grant);
            }
            (_, None) => violations.push(Violation::RenewWithoutHold {
                resource: r.resource.clone(),
                lock_id: r.lock_id.clone(),
                renew: r.index,
                token: r.token,
                succeeded_at_us: r.time_us,
            }),
            (_, Some(h)) => {
                let hold = &mut holds[h];
                if r.token != 0 && r.token != hold.token {
                    violations.push(Violation::RenewChangedToken { renew: r.index });
                }
                hold.grants.push(grant);
            }
        }
        // Renew never resurrects, and neither does a retried acquire.
        if let Some(release) = releases.get(r.lock_id.as_str())
            && r.time_us > release.time_us
        {
            violations.push(Violation::ResurrectedAfterRelease {
                resource: r.resource.clone(),
                lock_id: r.lock_id.clone(),
                kind: r.kind,
                op: r.index,
                token: r.token,
                succeeded_at_us: r.time_us,
                release: release.index,
                released_at_us: release.time_us,
            });
        }
    }

    let mut by_resource: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    for hold in &holds {
        by_resource.entry(&hold.resource).or_default().push(hold);
    }
    for (resource, list) in &mut by_resource {
        list.sort_by_key(|h| (h.start, h.acquire));
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.lock_id != b.lock_id && b.start < a.end() && a.start < b.end() {
                    violations.push(Violation::Overlap {
                        resource: (*resource).to_owned(),
                        first: a.acquire,
                        second: b.acquire,
                    });
                }
                if b.token <= a.token {
                    violations.push(Violation::TokenNotIncreasing {
                        resource: (*resource).to_owned(),
                        earlier: a.acquire,
                        later: b.acquire,
                    });
                }
            }
        }
    }

    // Accepted writes: each inside its writer's hold, and (the oracle) never with
    // a token below one accepted before.
    let mut accepted_writes: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for (i, w) in history.iter().enumerate() {
        if w.kind != Kind::Write || w.phase != Phase::Ok {
            continue;
        }
        accepted_writes.entry(&w.resource).or_default().push(w);
        let at = t_invoke(i);
        let hold = if w.lock_id.is_empty() {
            holds
                .iter()
                .find(|h| h.resource == w.resource && h.token == w.token)
        } else {
            hold_of.get(w.lock_id.as_str()).map(|&h| &holds[h])
        };
        let span = hold.map(|h| (h.start, h.end_at(at.max(h.start))));
        if !span.is_some_and(|(start, end)| start <= at && at < end) {
            violations.push(Violation::WriteOutsideHold {
                resource: w.resource.clone(),
                lock_id: w.lock_id.clone(),
                write: w.index,
                token: w.token,
                invoked_at_us: at,
                hold: span,
            });
        }
    }
    for (resource, writes) in &accepted_writes {
        let mut highest: Option<&Record> = None;
        for w in writes {
            match highest {
                Some(h) if w.token < h.token => violations.push(Violation::StaleWriteAccepted {
                    resource: (*resource).to_owned(),
                    write: w.index,
                    after: h.index,
                }),
                Some(h) if w.token <= h.token => {}
                _ => highest = Some(w),
            }
        }
    }
    if let Some((healed_at, max_ttl)) = liveness {
        let resources: std::collections::BTreeSet<&String> =
            history.iter().map(|r| &r.resource).collect();
        for resource in resources {
            let freed = by_resource
                .get(resource.as_str())
                .is_some_and(|l| l.iter().any(|h| h.start >= healed_at + max_ttl));
            if !freed {
                violations.push(Violation::NeverFreed {
                    resource: resource.clone(),
                });
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny DSL: (process, kind, phase, time, lock, token, validity). Operation
    /// ids are given out like a sequential client would: an invocation gets a new
    /// one, a completion the oldest open one of its (process, kind).
    fn history(ops: &[(&str, Kind, Phase, u64, &str, u64, u64)]) -> Vec<Record> {
        let mut open: HashMap<(&str, Kind), VecDeque<u64>> = HashMap::new();
        let mut next = 0;
        let numbered: Vec<_> = ops
            .iter()
            .map(
                |&(process, kind, phase, time_us, lock_id, token, validity_us)| {
                    let queue = open.entry((process, kind)).or_default();
                    let op = if phase == Phase::Invoke {
                        next += 1;
                        queue.push_back(next);
                        next
                    } else {
                        queue.pop_front().unwrap_or(0)
                    };
                    (
                        op,
                        process,
                        kind,
                        phase,
                        time_us,
                        lock_id,
                        token,
                        validity_us,
                    )
                },
            )
            .collect();
        numbered_history(&numbered)
    }

    /// The DSL with explicit operation ids: (op, process, kind, phase, time, lock,
    /// token, validity).
    #[allow(clippy::type_complexity)]
    fn numbered_history(ops: &[(u64, &str, Kind, Phase, u64, &str, u64, u64)]) -> Vec<Record> {
        ops.iter()
            .enumerate()
            .map(
                |(index, &(op, process, kind, phase, time_us, lock_id, token, validity_us))| {
                    Record {
                        index,
                        op,
                        process: process.into(),
                        resource: "r".into(),
                        kind,
                        phase,
                        time_us,
                        lock_id: lock_id.into(),
                        token,
                        validity_us,
                    }
                },
            )
            .collect()
    }

    use Kind::*;
    use Phase::*;

    #[test]
    fn a_clean_history_passes() {
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 5, 1_000),
            ("p1", Write, Invoke, 20, "A", 5, 0),
            ("p1", Write, Ok, 30, "A", 5, 0),
            ("p1", Renew, Invoke, 500, "A", 0, 0),
            ("p1", Renew, Ok, 510, "A", 5, 1_000),
            ("p1", Release, Invoke, 900, "A", 0, 0),
            ("p1", Release, Ok, 910, "A", 0, 0),
            ("p2", Acquire, Invoke, 100, "", 0, 0),
            ("p2", Acquire, Ok, 950, "B", 9, 1_000),
            ("p2", Write, Invoke, 960, "B", 9, 0),
            ("p2", Write, Ok, 970, "B", 9, 0),
        ]);
        assert_eq!(check(&h, None), vec![]);
    }

    #[test]
    fn planted_overlap_is_found_and_names_both_acquires() {
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 5, 1_000),
            ("p2", Acquire, Invoke, 20, "", 0, 0),
            ("p2", Acquire, Ok, 30, "B", 9, 1_000),
        ]);
        assert!(check(&h, None).contains(&Violation::Overlap {
            resource: "r".into(),
            first: 1,
            second: 3
        }));
    }

    #[test]
    fn planted_equal_and_decreasing_tokens_are_found() {
        let equal = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 5, 100),
            ("p2", Acquire, Invoke, 200, "", 0, 0),
            ("p2", Acquire, Ok, 210, "B", 5, 100),
        ]);
        assert_eq!(
            check(&equal, None),
            vec![Violation::TokenNotIncreasing {
                resource: "r".into(),
                earlier: 1,
                later: 3
            }]
        );
        let decreasing = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 7, 100),
            ("p2", Acquire, Invoke, 200, "", 0, 0),
            ("p2", Acquire, Ok, 210, "B", 3, 100),
        ]);
        assert_eq!(
            check(&decreasing, None),
            vec![Violation::TokenNotIncreasing {
                resource: "r".into(),
                earlier: 1,
                later: 3
            }]
        );
    }

    #[test]
    fn planted_stale_write_accepted_is_found() {
        // p1's write is invoked inside its hold but only accepted after p2's write
        // with a higher token: every write is inside its writer's hold, and the
        // oracle still must not have taken the stale one.
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 5, 100),
            ("p1", Write, Invoke, 50, "A", 5, 0),
            ("p1", Release, Invoke, 90, "A", 0, 0),
            ("p1", Release, Ok, 95, "A", 0, 0),
            ("p2", Acquire, Invoke, 100, "", 0, 0),
            ("p2", Acquire, Ok, 110, "B", 9, 1_000),
            ("p2", Write, Invoke, 120, "B", 9, 0),
            ("p2", Write, Ok, 130, "B", 9, 0),
            ("p1", Write, Ok, 140, "A", 5, 0),
        ]);
        assert_eq!(
            check(&h, None),
            vec![Violation::StaleWriteAccepted {
                resource: "r".into(),
                write: 9,
                after: 8
            }]
        );
    }

    #[test]
    fn planted_renew_changing_the_token_is_found() {
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 5, 100),
            ("p1", Renew, Invoke, 50, "A", 0, 0),
            ("p1", Renew, Ok, 60, "A", 6, 100),
        ]);
        assert_eq!(
            check(&h, None),
            vec![Violation::RenewChangedToken { renew: 3 }]
        );
    }

    #[test]
    fn planted_lock_never_freed_is_found() {
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 5, 100),
            ("p2", Acquire, Invoke, 5_000, "", 0, 0),
            ("p2", Acquire, Fail, 5_010, "", 0, 0),
        ]);
        assert_eq!(
            check(&h, Some((1_000, 2_000))),
            vec![Violation::NeverFreed {
                resource: "r".into()
            }]
        );
    }

    #[test]
    fn fail_and_info_open_nothing_and_a_lost_release_reply_still_ends_the_hold() {
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Info, 10, "", 0, 0),
            ("p1", Acquire, Invoke, 20, "", 0, 0),
            ("p1", Acquire, Ok, 30, "A", 5, 10_000),
            ("p1", Release, Invoke, 100, "A", 0, 0),
            ("p1", Release, Info, 110, "A", 0, 0),
            ("p2", Acquire, Invoke, 120, "", 0, 0),
            ("p2", Acquire, Ok, 130, "B", 9, 10_000),
        ]);
        assert_eq!(check(&h, None), vec![]);
    }

    #[test]
    fn planted_renew_after_release_is_found() {
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 5, 10_000),
            ("p1", Release, Invoke, 100, "A", 0, 0),
            ("p1", Release, Ok, 110, "A", 0, 0),
            ("p1", Renew, Invoke, 120, "A", 0, 0),
            ("p1", Renew, Ok, 130, "A", 5, 10_000),
        ]);
        let found = check(&h, None);
        assert_eq!(
            found,
            vec![Violation::ResurrectedAfterRelease {
                resource: "r".into(),
                lock_id: "A".into(),
                kind: Renew,
                op: 5,
                token: 5,
                succeeded_at_us: 130,
                release: 2,
                released_at_us: 100,
            }]
        );
        assert_eq!(
            found[0].to_string(),
            "r: renew #5 of lock A (token 5) succeeded at 130 µs, after its release #2 was \
             invoked at 100 µs"
        );
    }

    #[test]
    fn planted_idempotent_acquire_after_release_is_found() {
        // The retry returns the same lock and token, but after the release.
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 5, 10_000),
            ("p1", Release, Invoke, 100, "A", 0, 0),
            ("p1", Release, Info, 110, "A", 0, 0),
            ("p1", Acquire, Invoke, 120, "", 0, 0),
            ("p1", Acquire, Ok, 130, "A", 5, 10_000),
        ]);
        assert_eq!(
            check(&h, None),
            vec![Violation::ResurrectedAfterRelease {
                resource: "r".into(),
                lock_id: "A".into(),
                kind: Acquire,
                op: 5,
                token: 5,
                succeeded_at_us: 130,
                release: 2,
                released_at_us: 100,
            }]
        );
    }

    #[test]
    fn planted_renew_of_a_lock_never_acquired_is_found() {
        let h = history(&[
            ("p1", Renew, Invoke, 100, "Z", 0, 0),
            ("p1", Renew, Ok, 110, "Z", 4, 1_000),
        ]);
        let found = check(&h, None);
        assert_eq!(
            found,
            vec![Violation::RenewWithoutHold {
                resource: "r".into(),
                lock_id: "Z".into(),
                renew: 1,
                token: 4,
                succeeded_at_us: 110,
            }]
        );
        assert!(found[0].to_string().contains("no acquire had returned"));
    }

    #[test]
    fn planted_idempotent_retry_with_another_token_is_found() {
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Info, 10, "", 0, 0),
            ("p1", Acquire, Invoke, 20, "", 0, 0),
            ("p1", Acquire, Ok, 30, "A", 5, 1_000),
            ("p1", Acquire, Invoke, 40, "", 0, 0),
            ("p1", Acquire, Ok, 50, "A", 6, 1_000),
        ]);
        let found = check(&h, None);
        assert_eq!(
            found,
            vec![Violation::RetryChangedToken {
                resource: "r".into(),
                lock_id: "A".into(),
                first: 3,
                first_token: 5,
                retry: 5,
                retry_token: 6,
            }]
        );
        assert_eq!(
            found[0].to_string(),
            "r: retried acquire #5 returned lock A with token 6, but its first grant #3 had \
             token 5"
        );
    }

    #[test]
    fn an_idempotent_retry_with_the_same_token_is_one_hold() {
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 5, 1_000),
            ("p1", Acquire, Invoke, 20, "", 0, 0),
            ("p1", Acquire, Ok, 30, "A", 5, 1_000),
            ("p1", Release, Invoke, 40, "A", 0, 0),
            ("p1", Release, Ok, 50, "A", 0, 0),
            ("p2", Acquire, Invoke, 60, "", 0, 0),
            ("p2", Acquire, Ok, 70, "B", 9, 1_000),
        ]);
        assert_eq!(check(&h, None), vec![]);
    }

    #[test]
    fn planted_concurrent_renewals_of_one_process_are_paired_by_op_id() {
        // Two clones of one recorded client renew at once; the later renewal
        // answers first. Its validity counts from its own invocation (200), so the
        // hold lasts until 1_200 and the rival's grant at 1_150 overlaps it.
        let ops = [
            (1, "client", Acquire, Invoke, 0, "", 0, 0),
            (1, "client", Acquire, Ok, 10, "A", 5, 1_000),
            (2, "client", Renew, Invoke, 100, "A", 0, 0),
            (3, "client", Renew, Invoke, 200, "A", 0, 0),
            (3, "client", Renew, Ok, 210, "A", 5, 1_000),
            (4, "rival", Acquire, Invoke, 1_100, "", 0, 0),
            (4, "rival", Acquire, Ok, 1_150, "B", 9, 1_000),
            (2, "client", Renew, Info, 5_000, "A", 0, 0),
        ];
        let overlap = Violation::Overlap {
            resource: "r".into(),
            first: 1,
            second: 6,
        };
        assert_eq!(check(&numbered_history(&ops), None), vec![overlap]);
        // Paired first-in first-out by (process, kind), as histories without op
        // ids are, the renewal would count from 100 and hide the overlap.
        let unnumbered = ops.map(|(_, process, kind, phase, time, lock, token, validity)| {
            (0, process, kind, phase, time, lock, token, validity)
        });
        assert_eq!(check(&numbered_history(&unnumbered), None), vec![]);
    }

    #[test]
    fn the_recorder_gives_each_operation_its_own_id() {
        let recorder = Recorder::new();
        let a = recorder.invoke("client", "r", Renew, "A");
        let b = recorder.invoke("client", "r", Renew, "A");
        assert_ne!(a.op(), b.op());
        recorder.complete(&b, Ok, "", 5, 1_000);
        recorder.complete(&a, Info, "", 0, 0);
        let h = recorder.history();
        assert_eq!(
            h.iter().map(|r| (r.op, r.phase)).collect::<Vec<_>>(),
            vec![
                (a.op(), Invoke),
                (b.op(), Invoke),
                (b.op(), Ok),
                (a.op(), Info)
            ]
        );
        assert_eq!(
            h[2].lock_id, "A",
            "a completion carries its invocation's lock"
        );
        // JSON lines round-trip, and lines written before op ids still parse.
        let parsed: Vec<Record> = recorder
            .to_json_lines()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a recorded line parses"))
            .collect();
        assert_eq!(parsed, h);
        let old: Record = serde_json::from_str(
            r#"{"index":0,"process":"p","resource":"r","kind":"acquire","phase":"invoke","time_us":1}"#,
        )
        .expect("an old line parses");
        assert_eq!(old.op, 0);
    }

    #[test]
    fn planted_write_after_release_is_found() {
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 5, 1_000),
            ("p1", Release, Invoke, 100, "A", 0, 0),
            ("p1", Release, Ok, 110, "A", 0, 0),
            ("p1", Write, Invoke, 150, "A", 5, 0),
            ("p1", Write, Ok, 160, "A", 5, 0),
        ]);
        let found = check(&h, None);
        assert_eq!(
            found,
            vec![Violation::WriteOutsideHold {
                resource: "r".into(),
                lock_id: "A".into(),
                write: 5,
                token: 5,
                invoked_at_us: 150,
                hold: Some((10, 100)),
            }]
        );
        assert_eq!(
            found[0].to_string(),
            "r: write #5 with lock A (token 5) invoked at 150 µs was accepted outside its \
             hold [10, 100) µs"
        );
    }

    #[test]
    fn planted_write_after_the_validity_ran_out_is_found() {
        // The write comes after the hold's validity (0 + 100) and before a late
        // renewal's ok: a grant the writer did not know of yet does not cover it.
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 5, 100),
            ("p1", Renew, Invoke, 120, "A", 0, 0),
            ("p1", Write, Invoke, 150, "A", 5, 0),
            ("p1", Write, Ok, 160, "A", 5, 0),
            ("p1", Renew, Ok, 170, "A", 5, 1_000),
            ("p1", Write, Invoke, 180, "A", 5, 0),
            ("p1", Write, Ok, 190, "A", 5, 0),
        ]);
        assert_eq!(
            check(&h, None),
            vec![Violation::WriteOutsideHold {
                resource: "r".into(),
                lock_id: "A".into(),
                write: 4,
                token: 5,
                invoked_at_us: 150,
                hold: Some((10, 100)),
            }]
        );
    }

    #[test]
    fn planted_write_without_a_hold_is_found() {
        let h = history(&[
            ("p1", Write, Invoke, 20, "Z", 3, 0),
            ("p1", Write, Ok, 30, "Z", 3, 0),
            // Before its acquire's ok, a writer has no hold either.
            ("p2", Acquire, Invoke, 40, "", 0, 0),
            ("p2", Write, Invoke, 45, "B", 9, 0),
            ("p2", Write, Ok, 48, "B", 9, 0),
            ("p2", Acquire, Ok, 50, "B", 9, 1_000),
        ]);
        let found = check(&h, None);
        assert_eq!(
            found,
            vec![
                Violation::WriteOutsideHold {
                    resource: "r".into(),
                    lock_id: "Z".into(),
                    write: 1,
                    token: 3,
                    invoked_at_us: 20,
                    hold: None,
                },
                Violation::WriteOutsideHold {
                    resource: "r".into(),
                    lock_id: "B".into(),
                    write: 4,
                    token: 9,
                    invoked_at_us: 45,
                    hold: Some((50, 1_040)),
                },
            ]
        );
        assert!(found[0].to_string().contains("never held"));
    }

    #[test]
    fn a_rejected_or_unknown_write_after_the_hold_is_fencing_at_work() {
        let h = history(&[
            ("p1", Acquire, Invoke, 0, "", 0, 0),
            ("p1", Acquire, Ok, 10, "A", 5, 100),
            ("p1", Write, Invoke, 150, "A", 5, 0),
            ("p1", Write, Fail, 160, "A", 5, 0),
            ("p1", Write, Invoke, 170, "A", 5, 0),
            ("p1", Write, Info, 180, "A", 5, 0),
        ]);
        assert_eq!(check(&h, None), vec![]);
    }
}

/// A gRPC lock client that records every call in a history (same calls as the
/// generated client, so a test only swaps the type).
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The real client.
    client: globallock_proto::v1::lock_service_client::LockServiceClient<tonic::transport::Channel>,
    /// Where calls are recorded.
    history: std::sync::Arc<Recorder>,
    /// The process name in the history.
    process: String,
}

fn phase_of(status: &tonic::Status) -> Phase {
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::Unknown => Phase::Info,
        _ => Phase::Fail,
    }
}

impl Recorded {
    /// Record `client`'s calls in `history` as `process`.
    pub fn new(
        client: globallock_proto::v1::lock_service_client::LockServiceClient<
            tonic::transport::Channel,
        >,
        history: std::sync::Arc<Recorder>,
        process: &str,
    ) -> Self {
        Self {
            client,
            history,
            process: process.into(),
        }
    }

    /// Acquire, recorded.
    pub async fn acquire(
        &mut self,
        request: globallock_proto::v1::AcquireRequest,
    ) -> Result<tonic::Response<globallock_proto::v1::AcquireResponse>, tonic::Status> {
        let op = self
            .history
            .invoke(&self.process, &request.resource, Kind::Acquire, "");
        let result = self.client.acquire(request).await;
        match &result {
            Ok(r) => {
                let r = r.get_ref();
                self.history.complete(
                    &op,
                    Phase::Ok,
                    &r.lock_id,
                    r.fencing_token,
                    r.validity_ms * 1_000,
                );
            }
            Err(status) => self.history.complete(&op, phase_of(status), "", 0, 0),
        }
        result
    }

    /// Renew, recorded.
    pub async fn renew(
        &mut self,
        request: globallock_proto::v1::RenewRequest,
    ) -> Result<tonic::Response<globallock_proto::v1::RenewResponse>, tonic::Status> {
        let resource = resource_of(&request.lock_id);
        let op = self
            .history
            .invoke(&self.process, &resource, Kind::Renew, &request.lock_id);
        let lock_id = request.lock_id.clone();
        let result = self.client.renew(request).await;
        match &result {
            Ok(r) => {
                let r = r.get_ref();
                self.history.complete(
                    &op,
                    Phase::Ok,
                    &lock_id,
                    r.fencing_token,
                    r.validity_ms * 1_000,
                );
            }
            Err(status) => self.history.complete(&op, phase_of(status), &lock_id, 0, 0),
        }
        result
    }

    /// Release, recorded.
    pub async fn release(
        &mut self,
        request: globallock_proto::v1::ReleaseRequest,
    ) -> Result<tonic::Response<globallock_proto::v1::ReleaseResponse>, tonic::Status> {
        let resource = resource_of(&request.lock_id);
        let op = self
            .history
            .invoke(&self.process, &resource, Kind::Release, &request.lock_id);
        let lock_id = request.lock_id.clone();
        let result = self.client.release(request).await;
        let phase = match &result {
            Ok(_) => Phase::Ok,
            Err(status) => phase_of(status),
        };
        self.history.complete(&op, phase, &lock_id, 0, 0);
        result
    }

    /// Describe (not recorded: it changes nothing).
    pub async fn describe(
        &mut self,
        request: globallock_proto::v1::DescribeRequest,
    ) -> Result<tonic::Response<globallock_proto::v1::DescribeResponse>, tonic::Status> {
        self.client.describe(request).await
    }
}

/// Acquire through `client`, recording the call in `history` as `process`: `Ok`
/// when granted, `Info` when the outcome is unknown (no quorum, timeout), `Fail`
/// otherwise.
pub async fn record_acquire(
    history: &Recorder,
    client: &mut globallock_proto::v1::lock_service_client::LockServiceClient<
        tonic::transport::Channel,
    >,
    process: &str,
    request: globallock_proto::v1::AcquireRequest,
) -> Result<globallock_proto::v1::AcquireResponse, tonic::Status> {
    let op = history.invoke(process, &request.resource, Kind::Acquire, "");
    match client.acquire(request).await {
        Ok(r) => {
            let r = r.into_inner();
            history.complete(
                &op,
                Phase::Ok,
                &r.lock_id,
                r.fencing_token,
                r.validity_ms * 1_000,
            );
            Ok(r)
        }
        Err(status) => {
            history.complete(&op, phase_of(&status), "", 0, 0);
            Err(status)
        }
    }
}

fn resource_of(lock_id: &str) -> String {
    lock_id
        .parse::<globallock_protocol::lock_id::LockId>()
        .map(|id| id.resource().to_owned())
        .unwrap_or_default()
}
