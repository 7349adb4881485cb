//! The lock guard: holds a lock, renews it in the background, and says when it is
//! lost, always before its validity runs out.

use std::fmt;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Client, ClientError, Lock};

/// Why a guard's lock is no longer held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// The service says this lock is not held any more (expired or superseded).
    NotHeld,
    /// Renewals kept failing (no quorum, no coordinator) until the validity was
    /// about to run out.
    RenewalFailed,
    /// The guard was released.
    Released,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotHeld => "the service no longer holds this lock (expired or superseded)",
            Self::RenewalFailed => "renewals failed until the lock's validity ran out",
            Self::Released => "the lock was released",
        })
    }
}

/// What the renewal task publishes.
#[derive(Debug, Clone, Copy)]
struct Status {
    /// Until when the lock may be relied on (from the last successful grant or
    /// renewal, counted from when that request was sent).
    valid_until: Instant,
    /// Set once the lock is lost; never cleared.
    lost: Option<LostReason>,
}

/// How to acquire a lock; made by [`Client::lock`].
#[derive(Debug, Clone)]
pub struct LockBuilder {
    /// The client.
    client: Client,
    /// The resource.
    resource: String,
    /// Who asks.
    owner: String,
    /// The TTL (renewals keep it alive at about a third of it).
    ttl: Duration,
    /// How long to wait while the resource is held.
    wait: Duration,
    /// Idempotency key.
    request_id: String,
}

fn default_owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    };
    format!("{host}:{}", std::process::id())
}

impl LockBuilder {
    pub(crate) fn new(client: Client, resource: String) -> Self {
        Self {
            client,
            resource,
            owner: default_owner(),
            ttl: Duration::from_secs(30),
            wait: Duration::ZERO,
            request_id: String::new(),
        }
    }

    /// The TTL (default 30 s). The guard renews at about a third of it.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long to keep trying while the resource is held (default: not at all).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Who is asking, as other contenders will see it.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// An idempotency key: retrying with the same key returns the same lock.
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = request_id.into();
        self
    }

    /// Acquire the lock (waiting as configured) and start renewing it.
    pub async fn acquire(self) -> Result<LockGuard, ClientError> {
        let lock = self
            .client
            .acquire_with_id(
                &self.resource,
                &self.owner,
                self.ttl,
                self.wait,
                &self.request_id,
            )
            .await?;
        Ok(LockGuard::start(self.client, lock, self.ttl))
    }

    /// Try once, without waiting: `Ok(None)` when another lock holds the resource.
    pub async fn try_acquire(self) -> Result<Option<LockGuard>, ClientError> {
        match self.wait(Duration::ZERO).acquire().await {
            Ok(guard) => Ok(Some(guard)),
            Err(ClientError::Held(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Acquire, run `work(fencing_token)` while the lock is renewed, then release.
    /// If the lock is lost first, `work` is dropped and the result is
    /// [`ClientError::LockLost`].
    pub async fn with_lock<T, F, Fut>(self, work: F) -> Result<T, ClientError>
    where
        F: FnOnce(u64) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let guard = self.acquire().await?;
        let token = guard.fencing_token();
        let outcome = tokio::select! {
            value = work(token) => Ok(value),
            reason = guard.lost() => Err(ClientError::LockLost(reason)),
        };
        match guard.release().await {
            Ok(()) | Err(ClientError::Lost(_)) | Err(ClientError::LockLost(_)) => outcome,
            Err(error) => outcome.and(Err(error)),
        }
    }
}

/// A held lock. Renews itself at about a third of its TTL; [`LockGuard::lost`]
/// completes as soon as a renewal says the lock is gone, or before the validity
/// runs out when renewals keep failing. Dropping it stops renewal and releases
/// the lock in the background (best effort); [`LockGuard::release`] does it and
/// reports the outcome.
#[derive(Debug)]
pub struct LockGuard {
    /// The client, for release.
    client: Client,
    /// The lock as granted.
    lock: Lock,
    /// Published by the renewal task.
    status: watch::Receiver<Status>,
    /// Tells the renewal task to stop.
    stop: Option<oneshot::Sender<()>>,
    /// The renewal task.
    renewer: Option<JoinHandle<()>>,
}

impl LockGuard {
    fn start(client: Client, lock: Lock, ttl: Duration) -> Self {
        let valid_until = Instant::from_std(lock.valid_until());
        let (publish, status) = watch::channel(Status {
            valid_until,
            lost: None,
        });
        let (stop, stopped) = oneshot::channel();
        let renewer = tokio::spawn(renew(
            client.clone(),
            lock.lock_id.clone(),
            ttl,
            publish,
            stopped,
        ));
        Self {
            client,
            lock,
            status,
            stop: Some(stop),
            renewer: Some(renewer),
        }
    }

    /// The fencing token: send it with every write to the protected resource.
    pub fn fencing_token(&self) -> u64 {
        self.lock.fencing_token
    }

    /// The lock id.
    pub fn lock_id(&self) -> &str {
        &self.lock.lock_id
    }

    /// The resource.
    pub fn resource(&self) -> &str {
        &self.lock.resource
    }

    /// The lock as granted.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Until when the lock may be relied on, as of the last successful renewal.
    pub fn valid_until(&self) -> std::time::Instant {
        self.status.borrow().valid_until.into_std()
    }

    /// True while the lock is held and its validity has not run out.
    pub fn is_held(&self) -> bool {
        let status = *self.status.borrow();
        status.lost.is_none() && Instant::now() < status.valid_until
    }

    /// Completes when the lock is lost (at once if it already is).
    pub async fn lost(&self) -> LostReason {
        let mut status = self.status.clone();
        match status.wait_for(|s| s.lost.is_some()).await {
            Ok(s) => s.lost.unwrap_or(LostReason::RenewalFailed),
            // The renewal task ended without publishing a loss: only after stop.
            Err(_) => LostReason::Released,
        }
    }

    /// Stop renewing and release the lock everywhere.
    pub async fn release(mut self) -> Result<(), ClientError> {
        self.stop_renewing().await;
        self.client.release(&self.lock.lock_id).await.map(|_| ())
    }

    async fn stop_renewing(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.await;
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
            // Best effort: release in the background if a runtime is still there;
            // otherwise the lock expires with its TTL.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let client = self.client.clone();
                let lock_id = self.lock.lock_id.clone();
                runtime.spawn(async move {
                    let _ = client.release(&lock_id).await;
                });
            }
        }
    }
}

/// The renewal loop: renew at a third of the TTL from the last success; publish
/// every new validity; publish a loss as soon as the service says the lock is
/// gone, or shortly before the validity runs out if renewals keep failing.
async fn renew(
    client: Client,
    lock_id: String,
    ttl: Duration,
    publish: watch::Sender<Status>,
    mut stopped: oneshot::Receiver<()>,
) {
    let interval = ttl / 3;
    // Lost is declared this long before validity ends, so no caller acting on
    // `lost()` ever holds past it.
    let margin = (ttl / 10).max(Duration::from_millis(10));
    let mut next = Instant::now() + interval;
    let mut retry = Duration::from_millis(50);
    loop {
        let deadline = publish
            .borrow()
            .valid_until
            .checked_sub(margin)
            .unwrap_or_else(Instant::now);
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep_until(deadline) => {
                lose(&publish, LostReason::RenewalFailed);
                return;
            }
            () = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        let attempt = tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep_until(deadline) => {
                lose(&publish, LostReason::RenewalFailed);
                return;
            }
            result = client.renew(&lock_id, ttl) => result,
        };
        match attempt {
            Ok(renewal) => {
                publish.send_modify(|s| s.valid_until = sent + renewal.validity);
                next = sent + interval;
                retry = Duration::from_millis(50);
            }
            Err(ClientError::Lost(_)) => {
                lose(&publish, LostReason::NotHeld);
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "renewal failed; retrying while the lock is still valid");
                next = Instant::now() + retry;
                retry = (retry * 2).min(interval.max(Duration::from_millis(50)));
            }
        }
    }
}

fn lose(publish: &watch::Sender<Status>, reason: LostReason) {
    publish.send_modify(|s| {
        if s.lost.is_none() {
            s.lost = Some(reason);
        }
    });
}
