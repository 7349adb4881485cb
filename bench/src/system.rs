//! What every measured lock looks like to a worker: acquire (waiting or
//! retrying as that system does), release, and what went wrong on the way.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A lock service under test; hands each worker its own connection state
/// (lease, connections, owner name).
pub trait LockSystem: Send + Sync + 'static {
    /// One worker's view of the system.
    type Worker: LockWorker;

    /// Prepare worker `id` (before the clock starts).
    fn worker(&self, id: usize) -> impl Future<Output = anyhow::Result<Self::Worker>> + Send;
}

/// One worker of a lock service.
pub trait LockWorker: Send + 'static {
    /// What releasing needs (a lock id, a key, a token).
    type Guard: Send + 'static;

    /// Acquire `resource`, waiting while another holds it, as this system's
    /// clients do (a server-side wait, or retries). Retries and refusals are
    /// counted in `counters`; an error ends this attempt.
    fn acquire(
        &mut self,
        resource: &str,
        counters: &Counters,
    ) -> impl Future<Output = anyhow::Result<Acquired<Self::Guard>>> + Send;

    /// Release what `acquire` returned.
    fn release(&mut self, guard: Self::Guard) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Give back what the worker held (etcd: revoke its lease).
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A lock held.
#[derive(Debug)]
pub struct Acquired<G> {
    /// What releasing needs.
    pub guard: G,
    /// The fencing token, for systems that issue one (checked to increase
    /// strictly per resource).
    pub token: Option<u64>,
    /// Until when the holder may rely on the lock, for systems that say.
    pub valid_until: Option<Instant>,
}

/// What happened besides successful cycles, shared by a system's workers in a cell.
#[derive(Debug, Default)]
pub struct Counters {
    /// Attempts that failed with an error (transport, no quorum, ...).
    errors: AtomicU64,
    /// Attempts that did not get the lock and were tried again (wait ran out,
    /// Redlock lost the vote).
    retries: AtomicU64,
    /// Refusals for acquiring too fast (globallock's per-principal rate limit).
    rate_limited: AtomicU64,
    /// Holders that were still inside after their validity ran out.
    overran: AtomicU64,
    /// The first error seen, for the report.
    first_error: Mutex<Option<String>>,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Tally {
    /// Attempts that failed with an error.
    pub errors: u64,
    /// Attempts tried again.
    pub retries: u64,
    /// Refusals for acquiring too fast.
    pub rate_limited: u64,
    /// Holders past their validity.
    pub overran_validity: u64,
    /// The first error seen.
    pub first_error: Option<String>,
}

impl Counters {
    /// An attempt failed.
    pub fn error(&self, error: &anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(format!("{error:#}"));
        }
    }

    /// An attempt did not get the lock and is tried again.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The system refused an attempt for going too fast.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// A holder overran its validity.
    pub fn overran(&self) {
        self.overran.fetch_add(1, Ordering::Relaxed);
    }

    /// What was counted.
    pub fn tally(&self) -> Tally {
        Tally {
            errors: self.errors.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            overran_validity: self.overran.load(Ordering::Relaxed),
            first_error: self
                .first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
