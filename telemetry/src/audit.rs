//! The audit sink: an append-only JSON-lines file, written by a thread of its own
//! so a slow disk never delays a lock request.
//!
//! Grants, renewals, releases, losses and expiries are always written. Rejected
//! acquires are rate-limited, so a client hammering a held resource cannot grow
//! the file without bound: per second (of the records' own time) at most
//! [`REJECTIONS_PER_OWNER_PER_SECOND`] rejection records per owner and
//! [`REJECTIONS_PER_SECOND`] in all are written. The others are counted
//! (`globallock_audit_suppressed_total`) and, about once a second, summarised:
//! one record per owner (`event` `rejected`, `outcome` `suppressed`, `suppressed`:
//! how many, `ts_unix_ms`: the last one's time), for the [`SUMMARY_OWNERS`] owners
//! with the most, and one with owner `""` for all others together. Every
//! rejection is thus either written or counted in a summary.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use globallock_protocol::audit::{AuditEvent, AuditRecord};

/// Records queued at most; beyond that records are dropped (and counted).
const QUEUE: usize = 65_536;

/// Rejection records written per owner per second at most.
pub const REJECTIONS_PER_OWNER_PER_SECOND: u32 = 5;
/// Rejection records written per second at most, all owners together.
pub const REJECTIONS_PER_SECOND: u32 = 100;
/// Owners named in one round of summaries; the others share one record.
pub const SUMMARY_OWNERS: usize = 20;
/// How often suppressed rejections are summarised.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);
/// Owners whose suppressed rejections are counted apart between summaries;
/// more than that are counted with the others (owner `""`), so memory is bounded.
const TRACKED_OWNERS: usize = 1_024;

/// Where audit records go.
#[derive(Debug, Clone)]
pub struct AuditLog {
    /// To the writer thread (`None`: auditing is off).
    sender: Option<SyncSender<AuditRecord>>,
}

impl AuditLog {
    /// No auditing.
    pub fn disabled() -> Self {
        Self { sender: None }
    }

    /// Append to `path` (created if missing, never truncated).
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (sender, receiver) = sync_channel(QUEUE);
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_all(file, &path, receiver))?;
        Ok(Self {
            sender: Some(sender),
        })
    }

    /// Queue a record (never blocks).
    pub fn record(&self, record: AuditRecord) {
        if let Some(sender) = &self.sender {
            match sender.try_send(record) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    metrics::counter!("globallock_audit_dropped_total").increment(1);
                }
            }
        }
    }
}

/// Records written with one `write` at most: what queued up while the last
/// write ran goes out together, so a burst costs one system call, not one
/// (or two) per record.
const BATCH: usize = 1_024;

/// The writer thread: each wake-up takes what is queued (up to [`BATCH`]
/// records), in order, and appends it with one write.
fn write_all<W: Write>(mut file: W, path: &Path, receiver: Receiver<AuditRecord>) {
    let mut rejections = RejectionLimit::default();
    let mut summarised = Instant::now();
    let mut lines = Lines::default();
    loop {
        let received = receiver.recv_timeout(SUMMARY_EVERY);
        let closed = matches!(received, Err(RecvTimeoutError::Disconnected));
        if let Ok(first) = received {
            let more = std::iter::from_fn(|| receiver.try_recv().ok()).take(BATCH - 1);
            for record in std::iter::once(first).chain(more) {
                if rejections.admit(&record) {
                    lines.push(&record);
                }
            }
        }
        if closed || summarised.elapsed() >= SUMMARY_EVERY {
            for summary in rejections.summaries() {
                lines.push(&summary);
            }
            summarised = Instant::now();
        }
        lines.write_to(&mut file, path);
        if closed {
            return;
        }
    }
}

/// JSON lines waiting to be written.
#[derive(Debug, Default)]
struct Lines {
    /// The lines, each ending in `\n`.
    buffer: Vec<u8>,
    /// How many.
    count: u64,
}

impl Lines {
    fn push(&mut self, record: &AuditRecord) {
        if serde_json::to_writer(&mut self.buffer, record).is_ok() {
            self.buffer.push(b'\n');
            self.count += 1;
        }
    }

    /// Append every line to `file` in one write (and flush); on failure they
    /// are counted as dropped.
    fn write_to<W: Write>(&mut self, file: &mut W, path: &Path) {
        if self.buffer.is_empty() {
            return;
        }
        if let Err(error) = file.write_all(&self.buffer).and_then(|()| file.flush()) {
            tracing::warn!(path = %path.display(), %error, "audit write failed");
            metrics::counter!("globallock_audit_dropped_total").increment(self.count);
        }
        self.buffer.clear();
        self.count = 0;
    }
}

/// Suppressed rejections of one owner since the last summary.
#[derive(Debug, Default)]
struct Suppressed {
    /// How many.
    count: u64,
    /// The last one's time.
    last_unix_ms: u64,
    /// Who would have written them.
    source: String,
}

/// The rate limit on rejection records (see the module documentation).
#[derive(Debug, Default)]
struct RejectionLimit {
    /// The second (of record time) being counted.
    second: u64,
    /// Rejection records written in that second, all owners.
    written: u32,
    /// Rejection records written in that second, per owner (at most
    /// [`REJECTIONS_PER_SECOND`] entries).
    per_owner: HashMap<String, u32>,
    /// Not written since the last summary, per owner (`""`: the others).
    suppressed: HashMap<String, Suppressed>,
}

impl RejectionLimit {
    /// Whether to write `record`; a rejection over the limit is counted instead.
    fn admit(&mut self, record: &AuditRecord) -> bool {
        if record.event != AuditEvent::Rejected || record.suppressed.is_some() {
            return true;
        }
        let second = record.ts_unix_ms / 1_000;
        if second != self.second {
            self.second = second;
            self.written = 0;
            self.per_owner.clear();
        }
        let owner_written = self.per_owner.get(&record.owner).copied().unwrap_or(0);
        if self.written < REJECTIONS_PER_SECOND && owner_written < REJECTIONS_PER_OWNER_PER_SECOND {
            self.written += 1;
            self.per_owner
                .insert(record.owner.clone(), owner_written + 1);
            return true;
        }
        metrics::counter!("globallock_audit_suppressed_total").increment(1);
        let key = if self.suppressed.contains_key(&record.owner)
            || self.suppressed.len() < TRACKED_OWNERS
        {
            record.owner.clone()
        } else {
            String::new()
        };
        let entry = self.suppressed.entry(key).or_default();
        entry.count += 1;
        entry.last_unix_ms = entry.last_unix_ms.max(record.ts_unix_ms);
        entry.source.clone_from(&record.source);
        false
    }

    /// The summary records for what was suppressed since the last call: the
    /// [`SUMMARY_OWNERS`] owners with the most by name, the rest as owner `""`.
    fn summaries(&mut self) -> Vec<AuditRecord> {
        let mut pending: Vec<(String, Suppressed)> = self.suppressed.drain().collect();
        pending.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        let mut others = Suppressed::default();
        let mut named = Vec::new();
        for (owner, suppressed) in pending {
            if owner.is_empty() || named.len() >= SUMMARY_OWNERS {
                others.count += suppressed.count;
                others.last_unix_ms = others.last_unix_ms.max(suppressed.last_unix_ms);
                others.source = suppressed.source;
            } else {
                named.push((owner, suppressed));
            }
        }
        if others.count > 0 {
            named.push((String::new(), others));
        }
        named
            .into_iter()
            .map(|(owner, s)| AuditRecord {
                ts_unix_ms: s.last_unix_ms,
                event: AuditEvent::Rejected,
                source: s.source,
                resource: String::new(),
                owner,
                lock_id: String::new(),
                token: 0,
                regions: Vec::new(),
                outcome: "suppressed".into(),
                trace_id: String::new(),
                suppressed: Some(s.count),
            })
            .collect()
    }
}

/// Read every record from JSON-lines files (lines that do not parse are skipped).
pub fn read(paths: &[PathBuf]) -> std::io::Result<Vec<AuditRecord>> {
    let mut records = Vec::new();
    for path in paths {
        for line in std::fs::read_to_string(path)?.lines() {
            if let Ok(record) = serde_json::from_str(line) {
                records.push(record);
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(ts_unix_ms: u64, owner: &str) -> AuditRecord {
        AuditRecord {
            ts_unix_ms,
            event: AuditEvent::Rejected,
            source: "coordinator".into(),
            resource: "r".into(),
            owner: owner.into(),
            lock_id: String::new(),
            token: 0,
            regions: Vec::new(),
            outcome: "held".into(),
            trace_id: String::new(),
            suppressed: None,
        }
    }

    /// A file that counts its writes.
    #[derive(Default)]
    struct Counted {
        bytes: Vec<u8>,
        writes: usize,
    }

    impl Write for &mut Counted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.writes += 1;
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn regression_records_queued_together_are_written_in_order_with_one_write() {
        let (sender, receiver) = sync_channel(QUEUE);
        let mut granted = rejection(1_000, "a");
        granted.event = AuditEvent::Granted;
        for i in 0..5 {
            granted.lock_id = format!("lock-{i}");
            sender.send(granted.clone()).unwrap();
        }
        drop(sender);
        let mut file = Counted::default();
        write_all(&mut file, Path::new("audit.jsonl"), receiver);
        assert_eq!(file.writes, 1, "one write for the five queued records");
        let text = String::from_utf8(file.bytes).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<AuditRecord>(l).unwrap().lock_id)
            .collect();
        assert_eq!(ids, ["lock-0", "lock-1", "lock-2", "lock-3", "lock-4"]);
    }

    #[test]
    fn rejections_are_limited_per_owner_and_second_and_the_rest_summarised() {
        let mut limit = RejectionLimit::default();
        let written = (0..600)
            .filter(|i| limit.admit(&rejection(10_000 + i, "spammer")))
            .count();
        assert_eq!(written, REJECTIONS_PER_OWNER_PER_SECOND as usize);
        // Another owner in the same second, and the next second, get their own.
        assert!(limit.admit(&rejection(10_700, "other")));
        assert!(limit.admit(&rejection(11_000, "spammer")));
        // Other events are never limited.
        let mut grant = rejection(10_800, "spammer");
        grant.event = AuditEvent::Granted;
        assert!(limit.admit(&grant));

        let summaries = limit.summaries();
        assert_eq!(summaries.len(), 1, "{summaries:?}");
        assert_eq!(summaries[0].owner, "spammer");
        assert_eq!(summaries[0].outcome, "suppressed");
        assert_eq!(summaries[0].suppressed, Some(600 - written as u64));
        assert_eq!(summaries[0].ts_unix_ms, 10_599);
        assert!(
            limit.summaries().is_empty(),
            "each suppression is summarised once"
        );
    }

    #[test]
    fn many_owners_hit_the_global_limit_and_share_one_summary_beyond_the_named() {
        let mut limit = RejectionLimit::default();
        let owners: Vec<String> = (0..500).map(|i| format!("owner-{i}")).collect();
        let written = owners
            .iter()
            .filter(|o| limit.admit(&rejection(5_000, o)))
            .count();
        assert_eq!(written, REJECTIONS_PER_SECOND as usize);
        let summaries = limit.summaries();
        assert_eq!(summaries.len(), SUMMARY_OWNERS + 1);
        assert_eq!(summaries.last().map(|s| s.owner.as_str()), Some(""));
        let counted: u64 = summaries.iter().filter_map(|s| s.suppressed).sum();
        assert_eq!(counted as usize + written, owners.len());
    }
}
