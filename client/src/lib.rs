//! Client for the global lock coordinator.
//!
//! ```no_run
//! # async fn demo() -> Result<(), globallock_client::ClientError> {
//! use std::time::Duration;
//! let client = globallock_client::Client::connect(["http://127.0.0.1:7400"])?;
//! let lock = client
//!     .acquire("orders/42", "billing-7f9c", Duration::from_secs(10), Duration::ZERO)
//!     .await?;
//! // Send lock.fencing_token with every write to the protected resource.
//! println!("token {} valid for {:?}", lock.fencing_token, lock.validity);
//! client.release(&lock.lock_id).await?;
//! # Ok(()) }
//! ```
//!
//! Most code wants the guard, which renews in the background and says when the
//! lock is lost:
//!
//! ```no_run
//! # async fn demo() -> Result<(), globallock_client::ClientError> {
//! use std::time::Duration;
//! let client = globallock_client::Client::connect(["http://127.0.0.1:7400"])?;
//! let guard = client.lock("orders/42").ttl(Duration::from_secs(10)).wait(Duration::from_secs(5)).acquire().await?;
//! tokio::select! {
//!     _ = guard.lost() => { /* stop touching the resource: someone else may hold it */ }
//!     _ = async { /* work, sending guard.fencing_token() with every write */ } => {}
//! }
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! Calls go to one coordinator; when it cannot be reached the client fails over
//! to the next endpoint. Coordinators are stateless, so any of them serves any
//! lock. Errors are typed ([`ClientError`]) and keep the server's status.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use globallock_proto::v1::lock_service_client::LockServiceClient;
use globallock_proto::v1::{
    AcquireRequest, DescribeRequest, ReleaseRequest, RenewRequest, ValidateRequest,
};
use serde::Serialize;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

mod guard;

pub use guard::{LockBuilder, LockGuard, LostReason};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The resource is held by another lock (the message names the holder).
    #[error("held by another: {}", .0.message())]
    Held(#[source] tonic::Status),
    /// No majority of regions could be reached (the message names them).
    #[error("no quorum: {}", .0.message())]
    NoQuorum(#[source] tonic::Status),
    /// The lock is not held any more (expired, released or superseded).
    #[error("lock lost: {}", .0.message())]
    Lost(#[source] tonic::Status),
    /// The request was invalid (the message names the field and its bounds).
    #[error("{}", .0.message())]
    InvalidArgument(#[source] tonic::Status),
    /// Any other status from the coordinator, or no coordinator reachable.
    #[error("transport: {}", .0.message())]
    Transport(#[source] tonic::Status),
    /// An endpoint URL was unusable.
    #[error("bad endpoint {endpoint:?}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// No endpoints were given.
    #[error("no coordinator endpoints given")]
    NoEndpoints,
    /// A guarded lock was lost while the guarded work ran.
    #[error("lock lost: {0}")]
    LockLost(LostReason),
}

impl ClientError {
    /// The status the coordinator answered, if it answered.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Held(s)
            | Self::NoQuorum(s)
            | Self::Lost(s)
            | Self::InvalidArgument(s)
            | Self::Transport(s) => Some(s),
            Self::Endpoint { .. } | Self::NoEndpoints | Self::LockLost(_) => None,
        }
    }

    fn from_status(status: tonic::Status) -> Self {
        match status.code() {
            Code::Aborted => Self::Held(status),
            Code::Unavailable => Self::NoQuorum(status),
            Code::NotFound => Self::Lost(status),
            Code::InvalidArgument => Self::InvalidArgument(status),
            _ => Self::Transport(status),
        }
    }
}

/// A granted lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lock {
    /// Pass to renew and release.
    pub lock_id: String,
    /// The resource.
    pub resource: String,
    /// The owner.
    pub owner: String,
    /// Send with every write to the protected resource.
    pub fencing_token: u64,
    /// The TTL granted.
    pub ttl_ms: u64,
    /// How long the lock may be relied on, from `sent_at`.
    #[serde(rename = "validity_ms", serialize_with = "as_millis")]
    pub validity: Duration,
    /// The regions whose grants formed the majority.
    pub granted_regions: Vec<String>,
    /// When the request was sent (validity counts from here).
    #[serde(skip)]
    pub sent_at: Instant,
}

impl Lock {
    /// The instant after which the lock must no longer be relied on.
    pub fn valid_until(&self) -> Instant {
        self.sent_at + self.validity
    }
}

/// The result of a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Renewal {
    /// The lock's token (unchanged).
    pub fencing_token: u64,
    /// The TTL applied.
    pub ttl_ms: u64,
    /// How long the lock may be relied on, from `sent_at`.
    #[serde(rename = "validity_ms", serialize_with = "as_millis")]
    pub validity: Duration,
    /// When the renewal was sent.
    #[serde(skip)]
    pub sent_at: Instant,
}

/// Who holds a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Description {
    /// Whether a majority holds a lock on it.
    pub held: bool,
    /// The holder's owner.
    pub owner: String,
    /// The holder's token.
    pub fencing_token: u64,
    /// The holder's lock id.
    pub lock_id: String,
    /// How long the holder's grant lives at least.
    pub expires_in_ms: u64,
}

/// Whether a token is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Validation {
    /// True when the token is the current holder's.
    pub current: bool,
    /// The current holder's token (0: nobody holds the resource).
    pub current_token: u64,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A client of one or more coordinators. Cheap to clone (clones share
/// connections).
#[derive(Debug, Clone)]
pub struct Client {
    /// Shared connection state.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// One lazily connected channel per coordinator.
    channels: Vec<(String, Channel)>,
    /// The coordinator tried first (the last one that answered).
    preferred: AtomicUsize,
}

impl Client {
    /// A client of these coordinators (URLs like `http://127.0.0.1:7400`).
    /// Nothing is dialled until the first call.
    pub fn connect<S: AsRef<str>>(
        endpoints: impl IntoIterator<Item = S>,
    ) -> Result<Self, ClientError> {
        let mut channels = Vec::new();
        for endpoint in endpoints {
            let endpoint = endpoint.as_ref().to_owned();
            let channel = Endpoint::from_shared(endpoint.clone())
                .map_err(|source| ClientError::Endpoint {
                    endpoint: endpoint.clone(),
                    source,
                })?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .connect_lazy();
            channels.push((endpoint, channel));
        }
        if channels.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                channels,
                preferred: AtomicUsize::new(0),
            }),
        })
    }

    /// Run `call` against the preferred coordinator, failing over to the next
    /// when a coordinator cannot be reached at all. A coordinator's own answer
    /// (including UNAVAILABLE for "no quorum") is final: every coordinator would
    /// give the same one.
    async fn call<M, T, F, Fut>(&self, message: M, call: F) -> Result<T, ClientError>
    where
        M: Clone,
        F: Fn(LockServiceClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.inner.channels.len();
        let start = self.inner.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..n {
            let i = (start + k) % n;
            let (endpoint, channel) = &self.inner.channels[i];
            let mut request = tonic::Request::new(message.clone());
            // The caller's trace continues through the coordinator to every region.
            globallock_telemetry::propagation::inject_grpc(request.metadata_mut());
            match call(LockServiceClient::new(channel.clone()), request).await {
                Ok(response) => {
                    self.inner.preferred.store(i, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Err(status) if is_unreachable(&status) => {
                    tracing::debug!(
                        endpoint,
                        message = status.message(),
                        "coordinator unreachable; failing over"
                    );
                    last = Some(status);
                }
                Err(status) => return Err(ClientError::from_status(status)),
            }
        }
        Err(ClientError::Transport(last.unwrap_or_else(|| {
            tonic::Status::unavailable("no coordinator reachable")
        })))
    }

    /// Acquire `resource` for `ttl`, waiting up to `wait` while it is held.
    pub async fn acquire(
        &self,
        resource: &str,
        owner: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lock, ClientError> {
        self.acquire_with_id(resource, owner, ttl, wait, "").await
    }

    /// Like [`Client::acquire`], with an idempotency key: retrying with the same
    /// `request_id` returns the same lock instead of a second one.
    pub async fn acquire_with_id(
        &self,
        resource: &str,
        owner: &str,
        ttl: Duration,
        wait: Duration,
        request_id: &str,
    ) -> Result<Lock, ClientError> {
        let request = AcquireRequest {
            resource: resource.to_owned(),
            owner: owner.to_owned(),
            ttl_ms: millis(ttl),
            wait_ms: millis(wait),
            request_id: request_id.to_owned(),
        };
        let sent_at = Instant::now();
        let r = self
            .call(request, |mut c, r| async move { c.acquire(r).await })
            .await?;
        Ok(Lock {
            lock_id: r.lock_id,
            resource: r.resource,
            owner: r.owner,
            fencing_token: r.fencing_token,
            ttl_ms: r.ttl_ms,
            validity: Duration::from_millis(r.validity_ms),
            granted_regions: r.granted_regions,
            sent_at,
        })
    }

    /// Extend a lock to live `ttl` from now (`Duration::ZERO`: its granted TTL).
    pub async fn renew(&self, lock_id: &str, ttl: Duration) -> Result<Renewal, ClientError> {
        let request = RenewRequest {
            lock_id: lock_id.to_owned(),
            ttl_ms: millis(ttl),
        };
        let sent_at = Instant::now();
        let r = self
            .call(request, |mut c, r| async move { c.renew(r).await })
            .await?;
        Ok(Renewal {
            fencing_token: r.fencing_token,
            ttl_ms: r.ttl_ms,
            validity: Duration::from_millis(r.validity_ms),
            sent_at,
        })
    }

    /// Release a lock; returns the regions that removed their grant.
    pub async fn release(&self, lock_id: &str) -> Result<Vec<String>, ClientError> {
        let request = ReleaseRequest {
            lock_id: lock_id.to_owned(),
        };
        let r = self
            .call(request, |mut c, r| async move { c.release(r).await })
            .await?;
        Ok(r.released_regions)
    }

    /// Who holds `resource` now.
    pub async fn describe(&self, resource: &str) -> Result<Description, ClientError> {
        let request = DescribeRequest {
            resource: resource.to_owned(),
        };
        let r = self
            .call(request, |mut c, r| async move { c.describe(r).await })
            .await?;
        Ok(Description {
            held: r.held,
            owner: r.owner,
            fencing_token: r.fencing_token,
            lock_id: r.lock_id,
            expires_in_ms: r.expires_in_ms,
        })
    }

    /// Is `fencing_token` the current holder's token for `resource`?
    pub async fn validate(
        &self,
        resource: &str,
        fencing_token: u64,
    ) -> Result<Validation, ClientError> {
        let request = ValidateRequest {
            resource: resource.to_owned(),
            fencing_token,
        };
        let r = self
            .call(request, |mut c, r| async move { c.validate(r).await })
            .await?;
        Ok(Validation {
            current: r.current,
            current_token: r.current_token,
        })
    }
}

impl Client {
    /// Start a lock request on `resource` (defaults: TTL 30 s, no waiting, owner
    /// `<hostname>:<pid>`).
    pub fn lock(&self, resource: impl Into<String>) -> LockBuilder {
        LockBuilder::new(self.clone(), resource.into())
    }

    /// Acquire `resource` (TTL 30 s, waiting up to 30 s), run `work` with the
    /// fencing token while the lock is renewed, then release it. Fails with
    /// [`ClientError::LockLost`] (and drops `work`) if the lock is lost first.
    pub async fn with_lock<T, F, Fut>(&self, resource: &str, work: F) -> Result<T, ClientError>
    where
        F: FnOnce(u64) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        self.lock(resource)
            .wait(Duration::from_secs(30))
            .with_lock(work)
            .await
    }
}

/// True when the status comes from failing to reach the coordinator at all
/// (rather than from the coordinator itself).
fn is_unreachable(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable && status.metadata().get("content-type").is_none()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
