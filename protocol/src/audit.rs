//! Audit records, and answering "who held this resource, when" from them.

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A lock was granted by a majority.
    Granted,
    /// An acquire was refused (held, no quorum, invalid, rate limited...).
    Rejected,
    /// A lock was renewed.
    Renewed,
    /// A renewal found the lock gone: its holder lost it.
    Lost,
    /// A lock was released by its holder.
    Released,
    /// A region saw a grant disappear without a release: its lease expired.
    Expired,
    /// An admin released another principal's lock.
    ForceReleased,
    /// A caller was refused by access control (unidentified, or not allowed).
    Denied,
}

/// One audit record (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub ts_unix_ms: u64,
    /// What happened.
    pub event: AuditEvent,
    /// Who wrote it: `coordinator` or `agent <region>`.
    pub source: String,
    /// The resource.
    pub resource: String,
    /// The owner, when known.
    #[serde(default)]
    pub owner: String,
    /// The lock id, when there is one.
    #[serde(default)]
    pub lock_id: String,
    /// The fencing token, when there is one.
    #[serde(default)]
    pub token: u64,
    /// Regions involved (granting, holding or removing).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Outcome slug (`granted`, `held`, `no-quorum`, ...).
    pub outcome: String,
    /// The W3C trace id of the request, when traced.
    #[serde(default)]
    pub trace_id: String,
    /// Only on a rejection summary (outcome `suppressed`): how many rejections of
    /// this owner (owner `""`: of other owners together) were counted instead of
    /// written since the previous summary. Rejections are rate-limited in the
    /// trail; see `globallock_telemetry::audit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
}

/// One holder's tenure, reconstructed from audit records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenure {
    /// The lock id.
    pub lock_id: String,
    /// The holder.
    pub owner: String,
    /// The token.
    pub token: u64,
    /// When it was granted (ms since epoch).
    pub from_unix_ms: u64,
    /// When it ended, if an end was recorded.
    pub until_unix_ms: Option<u64>,
    /// How it ended (`released`, `expired`, `lost`), if recorded.
    pub ended_by: Option<AuditEvent>,
}

/// Every tenure of `resource`, in grant order. The first end recorded for a lock id
/// (release, expiry noticed by any region, or loss) closes its tenure.
pub fn tenures<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    resource: &str,
) -> Vec<Tenure> {
    let mut records: Vec<&AuditRecord> = records
        .into_iter()
        .filter(|r| r.resource == resource)
        .collect();
    records.sort_by_key(|r| r.ts_unix_ms);
    let mut out: Vec<Tenure> = Vec::new();
    for r in records {
        match r.event {
            AuditEvent::Granted if !out.iter().any(|t| t.lock_id == r.lock_id) => {
                out.push(Tenure {
                    lock_id: r.lock_id.clone(),
                    owner: r.owner.clone(),
                    token: r.token,
                    from_unix_ms: r.ts_unix_ms,
                    until_unix_ms: None,
                    ended_by: None,
                })
            }
            AuditEvent::Released
            | AuditEvent::ForceReleased
            | AuditEvent::Expired
            | AuditEvent::Lost => {
                if let Some(t) = out
                    .iter_mut()
                    .find(|t| t.lock_id == r.lock_id && t.until_unix_ms.is_none())
                {
                    t.until_unix_ms = Some(r.ts_unix_ms);
                    t.ended_by = Some(r.event);
                }
            }
            _ => {}
        }
    }
    out
}

/// The tenure covering `at_unix_ms`, if any.
pub fn holder_at(tenures: &[Tenure], at_unix_ms: u64) -> Option<&Tenure> {
    tenures.iter().rev().find(|t| {
        t.from_unix_ms <= at_unix_ms && t.until_unix_ms.is_none_or(|end| at_unix_ms < end)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts: u64, event: AuditEvent, lock_id: &str, token: u64) -> AuditRecord {
        AuditRecord {
            ts_unix_ms: ts,
            event,
            source: "coordinator".into(),
            resource: "r".into(),
            owner: format!("owner-{lock_id}"),
            lock_id: lock_id.into(),
            token,
            regions: vec![],
            outcome: "x".into(),
            trace_id: String::new(),
            suppressed: None,
        }
    }

    #[test]
    fn reconstructs_who_held_when() {
        let records = vec![
            record(100, AuditEvent::Granted, "A", 1),
            record(150, AuditEvent::Renewed, "A", 1),
            record(200, AuditEvent::Released, "A", 1),
            record(210, AuditEvent::Granted, "B", 2),
            record(400, AuditEvent::Expired, "B", 2),
            // A second region noticing the same expiry does not move the end.
            record(401, AuditEvent::Expired, "B", 2),
            record(500, AuditEvent::Granted, "C", 3),
        ];
        let t = tenures(&records, "r");
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t[1].from_unix_ms, t[1].until_unix_ms, t[1].ended_by),
            (210, Some(400), Some(AuditEvent::Expired))
        );
        assert_eq!(holder_at(&t, 120).map(|t| t.lock_id.as_str()), Some("A"));
        assert_eq!(holder_at(&t, 205), None);
        assert_eq!(
            holder_at(&t, 300).map(|t| t.owner.as_str()),
            Some("owner-B")
        );
        assert_eq!(holder_at(&t, 10_000).map(|t| t.token), Some(3));
        assert!(tenures(&records, "other").is_empty());
    }

    #[test]
    fn a_force_release_ends_a_tenure_and_a_denial_does_not() {
        let records = vec![
            record(100, AuditEvent::Granted, "A", 1),
            record(150, AuditEvent::Denied, "A", 1),
            record(200, AuditEvent::ForceReleased, "A", 1),
        ];
        let t = tenures(&records, "r");
        assert_eq!(
            (t[0].until_unix_ms, t[0].ended_by),
            (Some(200), Some(AuditEvent::ForceReleased))
        );
    }

    #[test]
    fn a_lock_granted_twice_has_one_tenure_from_the_first_grant() {
        let records = vec![
            record(100, AuditEvent::Granted, "A", 1),
            // The same grant logged again (an idempotent retry answered with it).
            record(130, AuditEvent::Granted, "A", 1),
            record(200, AuditEvent::Released, "A", 1),
        ];
        let t = tenures(&records, "r");
        assert_eq!(
            t,
            vec![Tenure {
                lock_id: "A".into(),
                owner: "owner-A".into(),
                token: 1,
                from_unix_ms: 100,
                until_unix_ms: Some(200),
                ended_by: Some(AuditEvent::Released),
            }]
        );
    }

    #[test]
    fn a_tenure_covers_its_start_but_not_its_end() {
        let records = vec![
            record(100, AuditEvent::Granted, "A", 1),
            record(200, AuditEvent::Released, "A", 1),
        ];
        let t = tenures(&records, "r");
        assert_eq!(holder_at(&t, 99), None);
        assert_eq!(holder_at(&t, 100).map(|t| t.token), Some(1));
        assert_eq!(holder_at(&t, 199).map(|t| t.token), Some(1));
        assert_eq!(holder_at(&t, 200), None, "released at 200: not held at 200");
    }
}
