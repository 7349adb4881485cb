//! The audit sink: an append-only JSON-lines file, written by a thread of its own
//! so a slow disk never delays a lock request.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use globallock_protocol::audit::AuditRecord;

/// Records queued at most; beyond that records are dropped (and counted).
const QUEUE: usize = 65_536;

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

fn write_all(mut file: std::fs::File, path: &Path, receiver: Receiver<AuditRecord>) {
    for record in receiver {
        let line = match serde_json::to_string(&record) {
            Ok(line) => line,
            Err(_) => continue,
        };
        if let Err(error) = writeln!(file, "{line}").and_then(|()| file.flush()) {
            tracing::warn!(path = %path.display(), %error, "audit write failed");
            metrics::counter!("globallock_audit_dropped_total").increment(1);
        }
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
