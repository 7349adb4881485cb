//! Lock histories: a recorder for client operations (JSON lines, monotonic times)
//! and a checker in the style of Jepsen's and Hazelcast's `FencedMutex` models.
//!
//! An `ok` acquire opens a hold `[t_ok, t_invoke + validity]` (validity counts from
//! when the request was sent); an `ok` renew moves its end to `t_invoke + validity`;
//! invoking a release ends it. `fail` and `info` operations open nothing. Per
//! resource the checker verifies:
//! - holds of different locks never overlap;
//! - a hold that starts later has a larger token (equal tokens are a violation);
//! - a renewal keeps the lock's token;
//! - the fenced oracle never accepted a write with a token below one it accepted
//!   before;
//! - optionally, after healing plus the maximum TTL, the resource was acquired
//!   again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
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
}

/// A pending operation: complete it with [`Recorder::complete`].
#[derive(Debug, Clone)]
pub struct Invocation {
    process: String,
    resource: String,
    kind: Kind,
    lock_id: String,
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
        self.push(Record {
            index: 0,
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

/// A broken guarantee, naming the records involved.
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

#[derive(Debug, Clone)]
struct Hold {
    acquire: usize,
    lock_id: String,
    token: u64,
    start: u64,
    end: u64,
}

/// Check `history`. With `liveness = Some((healed_at_us, max_ttl_us))`, every
/// resource must also have an `ok` acquire invoked after `healed_at + max_ttl`.
pub fn check(history: &[Record], liveness: Option<(u64, u64)>) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut invoked: HashMap<(String, Kind), Vec<&Record>> = HashMap::new();
    let mut holds: BTreeMap<String, Vec<Hold>> = BTreeMap::new();
    let mut accepted_writes: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in history {
        let key = (r.process.clone(), r.kind);
        match r.phase {
            Phase::Invoke => invoked.entry(key).or_default().push(r),
            Phase::Ok | Phase::Fail | Phase::Info => {
                let invocation = invoked
                    .get_mut(&key)
                    .and_then(|v| (!v.is_empty()).then(|| v.remove(0)));
                let t_invoke = invocation.map_or(r.time_us, |i| i.time_us);
                if r.phase != Phase::Ok {
                    continue;
                }
                let list = holds.entry(r.resource.clone()).or_default();
                match r.kind {
                    Kind::Acquire => {
                        // An idempotent retry returns the same lock: one hold.
                        if let Some(h) = list.iter_mut().find(|h| h.lock_id == r.lock_id) {
                            h.end = h.end.max(t_invoke + r.validity_us);
                        } else {
                            list.push(Hold {
                                acquire: r.index,
                                lock_id: r.lock_id.clone(),
                                token: r.token,
                                start: r.time_us,
                                end: t_invoke + r.validity_us,
                            });
                        }
                    }
                    Kind::Renew => {
                        if let Some(h) = list.iter_mut().find(|h| h.lock_id == r.lock_id) {
                            if r.token != 0 && r.token != h.token {
                                violations.push(Violation::RenewChangedToken { renew: r.index });
                            }
                            h.end = h.end.max(t_invoke + r.validity_us);
                        }
                    }
                    Kind::Release => {
                        if let Some(h) = list.iter_mut().find(|h| h.lock_id == r.lock_id) {
                            h.end = h.end.min(t_invoke);
                        }
                    }
                    Kind::Write => accepted_writes
                        .entry(r.resource.clone())
                        .or_default()
                        .push(r),
                }
            }
        }
    }
    // A release ends a hold even when its reply was lost: the holder stopped
    // relying on it when it invoked the release.
    for r in history
        .iter()
        .filter(|r| r.kind == Kind::Release && r.phase == Phase::Invoke)
    {
        if let Some(h) = holds
            .get_mut(&r.resource)
            .and_then(|l| l.iter_mut().find(|h| h.lock_id == r.lock_id))
        {
            h.end = h.end.min(r.time_us.max(h.start));
        }
    }
    for (resource, list) in &mut holds {
        list.sort_by_key(|h| (h.start, h.acquire));
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.lock_id != b.lock_id && b.start < a.end && a.start < b.end {
                    violations.push(Violation::Overlap {
                        resource: resource.clone(),
                        first: a.acquire,
                        second: b.acquire,
                    });
                }
                if b.token <= a.token {
                    violations.push(Violation::TokenNotIncreasing {
                        resource: resource.clone(),
                        earlier: a.acquire,
                        later: b.acquire,
                    });
                }
            }
        }
    }
    for (resource, writes) in &accepted_writes {
        let mut highest: Option<&Record> = None;
        for w in writes {
            match highest {
                Some(h) if w.token < h.token => violations.push(Violation::StaleWriteAccepted {
                    resource: resource.clone(),
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
            let freed = holds
                .get(resource)
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

    /// A tiny DSL: (process, kind, phase, time, lock, token, validity).
    fn history(ops: &[(&str, Kind, Phase, u64, &str, u64, u64)]) -> Vec<Record> {
        ops.iter()
            .enumerate()
            .map(
                |(index, &(process, kind, phase, time_us, lock_id, token, validity_us))| Record {
                    index,
                    process: process.into(),
                    resource: "r".into(),
                    kind,
                    phase,
                    time_us,
                    lock_id: lock_id.into(),
                    token,
                    validity_us,
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
        let h = history(&[
            ("p2", Write, Invoke, 0, "B", 9, 0),
            ("p2", Write, Ok, 10, "B", 9, 0),
            ("p1", Write, Invoke, 20, "A", 5, 0),
            ("p1", Write, Ok, 30, "A", 5, 0),
        ]);
        assert_eq!(
            check(&h, None),
            vec![Violation::StaleWriteAccepted {
                resource: "r".into(),
                write: 3,
                after: 1
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
