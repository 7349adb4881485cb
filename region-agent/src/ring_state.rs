//! The ring this agent served, kept in its `state_dir` across restarts, so that a
//! ring change is noticed and handed over safely (`globallock_protocol::handover`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use globallock_protocol::handover::Handover;
use globallock_protocol::ring::{HashRing, RingError};
use serde::{Deserialize, Serialize};

/// A ring as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRing {
    /// Shard names, in configuration order.
    pub shards: Vec<String>,
    /// Points per shard.
    pub vnodes: u32,
}

/// What `ring.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    /// The epoch served.
    pub epoch: u64,
    /// The ring served.
    pub ring: StoredRing,
    /// The ring before the last change, while its resources may still move in.
    #[serde(default)]
    pub previous: Option<StoredRing>,
    /// The floor for moved resources, once the handover window ended.
    #[serde(default)]
    pub floor: Option<u64>,
    /// When this epoch was first served (wall clock, ms since the Unix epoch):
    /// the next ring change must wait until its handover is over.
    #[serde(default)]
    pub since_unix_ms: u64,
}

/// Why the configured ring cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum RingStateError {
    /// The state file could not be read or written.
    #[error("ring state {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The ring changed but the epoch did not.
    #[error(
        "ring_epoch: the shards or ring_vnodes changed but ring_epoch is still {epoch}: raise it (on every agent and coordinator) to change the ring"
    )]
    ChangedWithoutEpoch {
        /// The epoch.
        epoch: u64,
    },
    /// The configured epoch is below the one served before.
    #[error("ring_epoch: {configured} is below {served}, the epoch this agent already served")]
    EpochWentBack {
        /// Configured.
        configured: u64,
        /// Served before.
        served: u64,
    },
    /// A ring change while the previous one is still being handed over: the agent
    /// remembers only one previous ring.
    #[error(
        "ring_epoch: epoch {served} was started {} s ago; wait until its handover is over ({} s in all) before changing the ring again",
        elapsed.as_secs(),
        window.as_secs()
    )]
    TooSoon {
        /// The epoch being handed over.
        served: u64,
        /// How long ago it started.
        elapsed: Duration,
        /// The handover window.
        window: Duration,
    },
    /// The stored previous ring is not a ring.
    #[error("ring state: previous ring")]
    Ring(#[from] RingError),
}

/// Decide, at start, how to serve `epoch` with `ring` given what was served
/// before (from `dir/ring.json`; `None` dir: no memory, no handover). Writes the
/// new state. Returns the handover in progress, if any (its window starts now).
pub fn resolve(
    dir: Option<&Path>,
    epoch: u64,
    ring: StoredRing,
    now: Duration,
    window: Duration,
    now_unix_ms: u64,
) -> Result<Option<Handover>, RingStateError> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let path = dir.join("ring.json");
    let stored = read(&path)?;
    let state = match stored {
        None => RingState {
            epoch,
            ring,
            previous: None,
            floor: None,
            since_unix_ms: now_unix_ms,
        },
        Some(old) if old.epoch == epoch => {
            if old.ring != ring {
                return Err(RingStateError::ChangedWithoutEpoch { epoch });
            }
            old
        }
        Some(old) if old.epoch > epoch => {
            return Err(RingStateError::EpochWentBack {
                configured: epoch,
                served: old.epoch,
            });
        }
        Some(old) => {
            let elapsed = Duration::from_millis(now_unix_ms.saturating_sub(old.since_unix_ms));
            if old.previous.is_some() && elapsed < window {
                return Err(RingStateError::TooSoon {
                    served: old.epoch,
                    elapsed,
                    window,
                });
            }
            RingState {
                epoch,
                ring,
                previous: Some(old.ring),
                floor: None,
                since_unix_ms: now_unix_ms,
            }
        }
    };
    write(&path, &state)?;
    let Some(previous) = &state.previous else {
        return Ok(None);
    };
    let previous = HashRing::new(&previous.shards, previous.vnodes)?;
    Ok(Some(Handover::new(previous, now, window, state.floor)))
}

/// Remember the floor of a handover whose window ended.
pub fn save_floor(dir: &Path, floor: u64) -> Result<(), RingStateError> {
    let path = dir.join("ring.json");
    if let Some(mut state) = read(&path)? {
        state.floor = Some(floor);
        write(&path, &state)?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<Option<RingState>, RingStateError> {
    let io = |source| RingStateError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).map_err(|e| io(std::io::Error::other(e)))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

fn write(path: &Path, state: &RingState) -> Result<(), RingStateError> {
    let io = |source| RingStateError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(shards: &[&str]) -> StoredRing {
        StoredRing {
            shards: shards.iter().map(|s| (*s).to_owned()).collect(),
            vnodes: 16,
        }
    }

    #[test]
    fn a_new_epoch_starts_a_handover_and_a_restart_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Duration::from_secs(10);
        let t = Duration::ZERO;
        assert!(
            resolve(Some(dir.path()), 0, stored(&["a", "b"]), t, w, 0)
                .expect("first")
                .is_none()
        );
        assert!(
            resolve(Some(dir.path()), 0, stored(&["a", "b"]), t, w, 0)
                .expect("same")
                .is_none()
        );
        let h =
            resolve(Some(dir.path()), 1, stored(&["a", "b", "c"]), t, w, 1_000).expect("change");
        assert!(h.is_some_and(|h| h.floor().is_none()));
        // A restart during the window: still handing over (the window restarts).
        let again =
            resolve(Some(dir.path()), 1, stored(&["a", "b", "c"]), t, w, 1_000).expect("restart");
        assert!(again.is_some_and(|h| h.floor().is_none()));
        save_floor(dir.path(), 123).expect("floor");
        let done =
            resolve(Some(dir.path()), 1, stored(&["a", "b", "c"]), t, w, 1_000).expect("after");
        assert_eq!(done.and_then(|h| h.floor()), Some(123));
    }

    #[test]
    fn a_ring_changed_without_a_new_epoch_or_an_epoch_going_back_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Duration::from_secs(10);
        resolve(
            Some(dir.path()),
            3,
            stored(&["a", "b"]),
            Duration::ZERO,
            w,
            0,
        )
        .expect("first");
        assert!(matches!(
            resolve(Some(dir.path()), 3, stored(&["a"]), Duration::ZERO, w, 0),
            Err(RingStateError::ChangedWithoutEpoch { epoch: 3 })
        ));
        assert!(matches!(
            resolve(
                Some(dir.path()),
                2,
                stored(&["a", "b"]),
                Duration::ZERO,
                w,
                0
            ),
            Err(RingStateError::EpochWentBack {
                configured: 2,
                served: 3
            })
        ));
    }

    #[test]
    fn a_second_ring_change_waits_until_the_first_handover_is_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Duration::from_secs(10);
        let t = Duration::ZERO;
        resolve(Some(dir.path()), 0, stored(&["a", "b"]), t, w, 0).expect("first");
        // The first ring ever served can change at once (nothing to hand over).
        resolve(Some(dir.path()), 1, stored(&["a", "b", "c"]), t, w, 1_000).expect("change");
        let early = resolve(Some(dir.path()), 2, stored(&["b", "c"]), t, w, 5_000);
        assert!(
            matches!(early, Err(RingStateError::TooSoon { served: 1, .. })),
            "{early:?}"
        );
        resolve(Some(dir.path()), 2, stored(&["b", "c"]), t, w, 11_000).expect("after the window");
    }
}
