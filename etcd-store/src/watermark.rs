//! What a shard's etcd history looked like when this agent last saw it: the
//! cluster id and the highest revision of any response, kept on the agent's disk.
//!
//! etcd restored from a snapshot, or forced into a new cluster from a lagging
//! member (`--force-new-cluster`), keeps the incarnation marker but loses recent
//! grants and fencing marks. Voting at once would let a rival in (two holders) and
//! let tokens go back. Such an etcd answers with another cluster id, or with
//! revisions below ones this agent already saw: either sends the shard into
//! quarantine, as if its data were lost.
//!
//! Revisions are compared only against responses that *completed before the
//! request was sent*: etcd requests are linearizable, so a later request never
//! sees an older revision, while two concurrent requests may complete in any
//! order.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often the highest revision is written to disk at most.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// The history seen, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Seen {
    /// etcd's cluster id (0: none seen yet).
    pub cluster_id: u64,
    /// The highest revision of any response.
    pub revision: i64,
}

/// Why a response shows that etcd's history went back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    /// Another cluster answers at the same endpoints.
    ClusterChanged {
        /// The id seen before.
        was: u64,
        /// The id now.
        now: u64,
    },
    /// A revision below one this agent saw before the request was sent.
    RevisionBack {
        /// The highest revision seen before the request.
        was: i64,
        /// The response's revision.
        now: i64,
    },
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClusterChanged { was, now } => write!(
                f,
                "etcd cluster id changed from {was:#x} to {now:#x} (restored or recreated)"
            ),
            Self::RevisionBack { was, now } => write!(
                f,
                "etcd revision went back from {was} to {now} (restored from an older snapshot)"
            ),
        }
    }
}

/// What was seen before a request was sent: compare its response against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Before {
    /// The history seen.
    pub seen: Seen,
    /// How many times the history was reset (a quarantine ended) so far: a
    /// response to a request sent before a reset is not compared.
    generation: u64,
}

/// The watermark of one shard.
#[derive(Debug)]
pub struct Watermark {
    /// Where it is kept (`None`: memory only).
    path: Option<PathBuf>,
    /// Seen so far, and what is on disk, and when it was written (monotonic).
    state: Mutex<(Seen, Seen, Option<Duration>)>,
    /// Resets so far.
    generation: std::sync::atomic::AtomicU64,
}

impl Watermark {
    /// The watermark stored at `path` (a missing file is a new agent: nothing seen).
    pub fn load(path: Option<PathBuf>) -> std::io::Result<Self> {
        let seen = match &path {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::default(),
                Err(e) => return Err(e),
            },
            None => Seen::default(),
        };
        Ok(Self {
            path,
            state: Mutex::new((seen, seen, None)),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The highest revision seen so far (take it before sending a request).
    pub fn before_request(&self) -> Before {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Before {
            seen: state.0,
            generation: self.generation.load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    /// Check a response's header against what was seen before its request was
    /// sent, and remember it. `now` is monotonic time, for throttling writes.
    pub fn observe(
        &self,
        before: Before,
        cluster_id: u64,
        revision: i64,
        now: Duration,
    ) -> Result<(), Rollback> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if before.generation != self.generation.load(std::sync::atomic::Ordering::SeqCst) {
            // The history was reset after this request was sent: nothing to compare.
            return Ok(());
        }
        let before = before.seen;
        if before.cluster_id != 0 && cluster_id != before.cluster_id {
            return Err(Rollback::ClusterChanged {
                was: before.cluster_id,
                now: cluster_id,
            });
        }
        if revision < before.revision {
            return Err(Rollback::RevisionBack {
                was: before.revision,
                now: revision,
            });
        }
        state.0.cluster_id = cluster_id;
        state.0.revision = state.0.revision.max(revision);
        let due = state.2.is_none_or(|at| now >= at + PERSIST_EVERY);
        if due && state.0 != state.1 {
            state.2 = Some(now);
            state.1 = state.0;
            let seen = state.0;
            drop(state);
            self.write(seen);
        }
        Ok(())
    }

    /// Accept the history as it is now (a quarantine ended: the shard starts a new
    /// incarnation on whatever etcd holds).
    pub fn reset(&self, cluster_id: u64, revision: i64) {
        let seen = Seen {
            cluster_id,
            revision,
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = (seen, seen, None);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        drop(state);
        self.write(seen);
    }

    /// Write `seen` (temporary file, then rename, so a crash never leaves half a file).
    fn write(&self, seen: Seen) {
        let Some(path) = &self.path else { return };
        let result = (|| {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(
                &tmp,
                serde_json::to_vec(&seen).map_err(std::io::Error::other)?,
            )?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(error) = result {
            tracing::warn!(path = %path.display(), %error, "cannot write the etcd watermark");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn revisions_may_complete_out_of_order_but_never_go_below_what_preceded_the_request() {
        let w = Watermark::load(None).expect("memory");
        let before = w.before_request();
        assert_eq!(w.observe(before, 7, 10, at(0)), Ok(()));
        // Two requests sent while 10 was the highest: the one that completes
        // second may carry a lower revision than the first.
        let (a, b) = (w.before_request(), w.before_request());
        assert_eq!(w.observe(a, 7, 15, at(1)), Ok(()));
        assert_eq!(w.observe(b, 7, 12, at(2)), Ok(()));
        // A request sent after 15 was seen must not see less.
        let later = w.before_request();
        assert_eq!(later.seen.revision, 15);
        assert_eq!(
            w.observe(later, 7, 14, at(3)),
            Err(Rollback::RevisionBack { was: 15, now: 14 })
        );
        assert_eq!(
            w.observe(later, 8, 20, at(3)),
            Err(Rollback::ClusterChanged { was: 7, now: 8 })
        );
    }

    #[test]
    fn the_watermark_survives_a_restart_and_a_reset_accepts_the_new_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shard-0.json");
        let w = Watermark::load(Some(path.clone())).expect("load");
        w.observe(w.before_request(), 7, 100, at(0)).expect("first");
        drop(w);
        let again = Watermark::load(Some(path.clone())).expect("reload");
        assert_eq!(
            again.before_request().seen,
            Seen {
                cluster_id: 7,
                revision: 100
            }
        );
        assert!(again.observe(again.before_request(), 7, 50, at(0)).is_err());
        again.reset(7, 50);
        let after_reset = Watermark::load(Some(path)).expect("reload");
        assert_eq!(after_reset.before_request().seen.revision, 50);
    }

    #[test]
    fn a_response_to_a_request_sent_before_a_reset_is_not_a_rollback() {
        // A quarantine ended (reset to the new, lower history) while a request
        // was in flight: its answer carries the new history, which is no rollback.
        let w = Watermark::load(None).expect("memory");
        w.observe(w.before_request(), 7, 1_000, at(0))
            .expect("first");
        let in_flight = w.before_request();
        w.reset(7, 5);
        assert_eq!(w.observe(in_flight, 7, 6, at(1)), Ok(()));
        // A request sent after the reset is compared against the new history.
        let after = w.before_request();
        assert_eq!(
            w.observe(after, 7, 4, at(2)),
            Err(Rollback::RevisionBack { was: 5, now: 4 })
        );
    }
}
