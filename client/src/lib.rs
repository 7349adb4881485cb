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
//! to the next endpoint. Instead of a list of endpoints, a client can find the
//! coordinators through DNS ([`Client::discover`]: the SRV record
//! `_globallock._tcp.<zone>`), dialling each target by the name the record
//! gives, which the coordinator's certificate must carry:
//!
//! ```no_run
//! # async fn demo() -> Result<(), globallock_client::ClientError> {
//! let tls = globallock_client::ClientTls {
//!     ca: "ca.pem".into(),
//!     identity: Some(("client.crt".into(), "client.key".into())),
//! };
//! let client = globallock_client::Client::discover("locks.example.com", &tls).await?;
//! # Ok(()) }
//! ```
//! Coordinators are stateless, so any of them serves any
//! lock. Errors are typed ([`ClientError`]) and keep the server's status; what
//! the coordinator says about an error comes as values too (the typed details of
//! its gRPC status): who holds the resource ([`ClientError::holder`]), when to
//! retry ([`ClientError::retry_after`]), which field was wrong
//! ([`ClientError::field`]), all of it in [`ClientError::details`].
//!
//! ```no_run
//! # async fn demo(client: globallock_client::Client) {
//! use std::time::Duration;
//! match client.acquire("orders/42", "billing-7f9c", Duration::from_secs(10), Duration::ZERO).await {
//!     Err(e @ globallock_client::ClientError::Held(_)) => {
//!         let owner = e.holder().map(|h| h.owner);
//!         let retry_in = e.retry_after().unwrap_or(Duration::from_secs(1));
//!         println!("held by {owner:?}; retrying in {retry_in:?}");
//!     }
//!     _ => {}
//! }
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use globallock_proto::v1::lock_service_client::LockServiceClient;
use globallock_proto::v1::{
    AcquireRequest, DescribeRequest, ListLocksRequest, ReleaseRequest, RenewRequest,
    ValidateRequest,
};
use serde::Serialize;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

mod guard;

pub use guard::{LockBuilder, LockGuard, LostReason};

/// The longest wait one acquire request asks a coordinator for; longer waits
/// are re-issued (see [`Client::acquire_with_id`]). Below the coordinators'
/// default `max_wait_ms` (60 s).
pub const WAIT_SLICE: Duration = Duration::from_secs(30);

/// The shortest slice a long wait is split into.
const MIN_WAIT_SLICE: Duration = Duration::from_millis(500);

/// 128 random bits (for generated request ids), from the standard library's
/// randomly seeded hasher: no extra dependency, unpredictable enough for ids.
fn random_id() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut id = 0u128;
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(id);
        id = (id << 64) | u128::from(h.finish());
    }
    id
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The resource is held by another lock (the message names the holder;
    /// [`ClientError::holder`] and [`ClientError::retry_after`] give it as
    /// values), or is contended ([`ClientError::reason`] is `contended`).
    #[error("held by another: {}", .0.message())]
    Held(#[source] tonic::Status),
    /// No majority of regions could be reached (the message names them;
    /// [`ErrorDetails::reachable_regions`] and
    /// [`ErrorDetails::unreachable_regions`] list them).
    #[error("no quorum: {}", .0.message())]
    NoQuorum(#[source] tonic::Status),
    /// The lock is not held any more (expired, released or superseded).
    #[error("lock lost: {}", .0.message())]
    Lost(#[source] tonic::Status),
    /// The request was invalid (the message names the field and its bounds;
    /// [`ClientError::field`] names the field).
    #[error("{}", .0.message())]
    InvalidArgument(#[source] tonic::Status),
    /// This owner acquires faster than its rate allows (the message says when
    /// to retry, and so does [`ClientError::retry_after`]).
    #[error("rate limited: {}", .0.message())]
    RateLimited(#[source] tonic::Status),
    /// The caller's principal is at a cap (locks held, or acquires waiting):
    /// release a lock, or wait for one to end. Not worth retrying at once.
    #[error("quota exceeded: {}", .0.message())]
    QuotaExceeded(#[source] tonic::Status),
    /// Any other status a coordinator answered with (internal error, fencing
    /// tokens exhausted, ...).
    #[error("coordinator error ({:?}): {}", .0.code(), .0.message())]
    Transport(#[source] tonic::Status),
    /// No coordinator could be reached: what went wrong at each endpoint, in the
    /// order they were tried.
    #[error("cannot reach any coordinator: {}", join_failures(.0))]
    Unreachable(Vec<EndpointFailure>),
    /// An endpoint URL was unusable.
    #[error("bad endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it, and what to write instead when that is known.
        reason: String,
    },
    /// The TLS files could not be used.
    #[error("TLS")]
    Tls(#[from] globallock_tls::TlsError),
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
            | Self::RateLimited(s)
            | Self::QuotaExceeded(s)
            | Self::Transport(s) => Some(s),
            Self::Unreachable(_)
            | Self::Endpoint { .. }
            | Self::Tls(_)
            | Self::NoEndpoints
            | Self::LockLost(_) => None,
        }
    }

    /// What the coordinator said about the error, as values: the typed details
    /// of its status. `None` when no coordinator answered, or the answer carries
    /// no details (a server that is not a coordinator of this version).
    pub fn details(&self) -> Option<ErrorDetails> {
        ErrorDetails::from_status(self.status()?)
    }

    /// The stable slug naming the problem (`held`, `contended`, `no-quorum`,
    /// `invalid-argument`, `request-id-reused`, `not-found`, `rate-limited`,
    /// `quota-exceeded`, `tokens-exhausted`, `internal`, ...), when the
    /// coordinator said.
    pub fn reason(&self) -> Option<String> {
        self.details().map(|d| d.reason)
    }

    /// Who holds the resource (for [`ClientError::Held`], when a holder was
    /// seen; a contended resource has none).
    pub fn holder(&self) -> Option<Holder> {
        self.details()?.holder
    }

    /// How long to wait before a retry can usefully succeed, when the
    /// coordinator said (held: until the holder's grant ends at the earliest;
    /// contended, no quorum, rate limited: its advice).
    pub fn retry_after(&self) -> Option<Duration> {
        self.status()?.get_details_retry_info()?.retry_delay
    }

    /// The request field that was invalid (for [`ClientError::InvalidArgument`],
    /// when the coordinator named one).
    pub fn field(&self) -> Option<String> {
        self.details()?.field
    }

    fn from_status(status: tonic::Status) -> Self {
        match status.code() {
            Code::Aborted => Self::Held(status),
            Code::Unavailable => Self::NoQuorum(status),
            Code::NotFound => Self::Lost(status),
            Code::InvalidArgument => Self::InvalidArgument(status),
            Code::ResourceExhausted
                if ErrorDetails::from_status(&status)
                    .is_some_and(|d| d.reason == "quota-exceeded") =>
            {
                Self::QuotaExceeded(status)
            }
            Code::ResourceExhausted => Self::RateLimited(status),
            _ => Self::Transport(status),
        }
    }
}

/// The `ErrorInfo.domain` of the coordinator's errors.
const ERROR_DOMAIN: &str = "globallock";

/// Who holds a resource, as an error names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// The holder's owner.
    pub owner: String,
    /// How long the holder's grant lives at least (from when the coordinator
    /// answered).
    #[serde(rename = "remaining_ms", serialize_with = "as_millis")]
    pub remaining: Duration,
}

/// What the coordinator said about an error, as values: the `google.rpc` error
/// details of its gRPC status (an `ErrorInfo` in the `globallock` domain, a
/// `RetryInfo`, a `BadRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorDetails {
    /// The stable slug naming the problem (see [`ClientError::reason`]).
    pub reason: String,
    /// Who holds the resource (held errors that saw a holder).
    pub holder: Option<Holder>,
    /// When a retry can usefully succeed.
    pub retry_after: Option<Duration>,
    /// The invalid request field (invalid arguments).
    pub field: Option<String>,
    /// The regions the coordinator reached (no quorum).
    pub reachable_regions: Vec<String>,
    /// The regions it did not reach (no quorum; the message says why).
    pub unreachable_regions: Vec<String>,
    /// Everything the `ErrorInfo` carried (`resource`, `owner`,
    /// `remaining_ms`, `waited_ms`, `lock_id`, ... depending on the reason),
    /// as sent.
    pub metadata: HashMap<String, String>,
}

impl ErrorDetails {
    /// The details of a coordinator's status: `None` without an `ErrorInfo` in
    /// the `globallock` domain.
    pub fn from_status(status: &tonic::Status) -> Option<Self> {
        let details = status.check_error_details().ok()?;
        let info = details
            .error_info()
            .filter(|info| info.domain == ERROR_DOMAIN)?;
        let metadata = info.metadata.clone();
        let text = |key: &str| metadata.get(key).filter(|v| !v.is_empty()).cloned();
        let list = |key: &str| {
            metadata
                .get(key)
                .map(|v| {
                    v.split(',')
                        .filter(|r| !r.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let holder = match (
            metadata.get("owner"),
            metadata
                .get("remaining_ms")
                .and_then(|ms| ms.parse::<u64>().ok()),
        ) {
            (Some(owner), Some(ms)) if info.reason == "held" => Some(Holder {
                owner: owner.clone(),
                remaining: Duration::from_millis(ms),
            }),
            _ => None,
        };
        let field = text("field").or_else(|| {
            details
                .bad_request()?
                .field_violations
                .first()
                .map(|v| v.field.clone())
        });
        Some(Self {
            reason: info.reason.clone(),
            holder,
            retry_after: details.retry_info().and_then(|r| r.retry_delay),
            field,
            reachable_regions: list("reachable_regions"),
            unreachable_regions: list("unreachable_regions"),
            metadata,
        })
    }
}

/// Why one endpoint could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum EndpointProblem {
    /// Nothing listens there: the connection was refused.
    Refused,
    /// The host name does not resolve.
    Dns,
    /// No connection within the connect timeout.
    Timeout,
    /// Something answered, but not gRPC: an HTTP/1 server, or an HTTP/2 one
    /// such as the coordinator's REST port.
    NotGrpc,
    /// Any other transport failure.
    Other,
}

/// One endpoint that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointFailure {
    /// The endpoint.
    pub endpoint: String,
    /// What went wrong, classified.
    pub problem: EndpointProblem,
    /// What went wrong, in the transport's words (the whole error chain).
    pub detail: String,
}

impl std::fmt::Display for EndpointFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.problem {
            EndpointProblem::Refused => "connection refused",
            EndpointProblem::Dns => "the host name does not resolve",
            EndpointProblem::Timeout => "no connection within the connect timeout",
            EndpointProblem::NotGrpc => "it answered, but not with gRPC",
            EndpointProblem::Other => "transport failure",
        };
        write!(f, "{}: {what} ({})", self.endpoint, self.detail)
    }
}

fn join_failures(failures: &[EndpointFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
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

/// A lock held now, as a listing shows it (no lock id: that is its holder's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedLock {
    /// The resource.
    pub resource: String,
    /// The holder's owner.
    pub owner: String,
    /// The holder's token.
    pub fencing_token: u64,
    /// How long a majority holds it at least (from when the coordinator answered).
    pub expires_in_ms: u64,
    /// The regions that hold it.
    pub granted_regions: Vec<String>,
}

/// One page of the locks held now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockPage {
    /// The locks, in resource order.
    pub locks: Vec<ListedLock>,
    /// Pass to [`Client::list_locks`] for the next page; empty on the last page.
    pub next_page_token: String,
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
    /// One lazily connected channel per coordinator (found through DNS:
    /// replaced when the record changes), shared with [`Client::with_token`]'s
    /// client.
    channels: Arc<RwLock<Arc<Channels>>>,
    /// The coordinator tried first (the last one that answered).
    preferred: AtomicUsize,
    /// `authorization: Bearer <token>` for every call, if set.
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// How coordinators are found, when through DNS.
    discovered: Option<Arc<Discovered>>,
}

/// The coordinators to try: `(endpoint as named, channel)`, in order.
type Channels = Vec<(String, Channel)>;

/// How to find coordinators through DNS: the SRV record
/// `_globallock._tcp.<zone>` ([`Discovery::zone`]), each target dialled by the
/// name the record gives (the coordinator's certificate must carry it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Discovery {
    /// The SRV record's name.
    pub srv: String,
    /// The name servers to ask (`ip:port`); empty: the system's
    /// (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Look the record up again when the last lookup is older than this
    /// (answers within their TTL come from the cache). Whenever no coordinator
    /// of the last answer can be reached, it is looked up again at once.
    pub refresh: Duration,
}

impl Discovery {
    /// Every coordinator of `zone`: `_globallock._tcp.<zone>`, asking the
    /// system's name servers, looked up again every 30 s.
    pub fn zone(zone: &str) -> Self {
        Self {
            srv: globallock_discovery::coordinator_srv_name(zone),
            nameservers: Vec::new(),
            refresh: Duration::from_secs(30),
        }
    }

    /// Ask these name servers (`ip:port`) instead of the system's.
    #[must_use]
    pub fn nameservers(mut self, nameservers: Vec<SocketAddr>) -> Self {
        self.nameservers = nameservers;
        self
    }

    /// Look the record up again after `refresh`.
    #[must_use]
    pub fn refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }
}

/// A client's DNS discovery state.
#[derive(Debug)]
struct Discovered {
    discovery: Discovery,
    resolver: globallock_discovery::Resolver,
    /// TLS to the coordinators (`None`: plaintext `http://`).
    tls: Option<Arc<globallock_tls::Reloading<rustls::ClientConfig>>>,
    /// What the record said last, and when it was looked up (held during a
    /// lookup: one at a time).
    last: tokio::sync::Mutex<(Vec<globallock_discovery::Target>, Instant)>,
}

impl Discovered {
    /// Look the record up (`force`: asking the name servers afresh, whatever
    /// was cached) and, when it changed, replace `channels` (before another
    /// lookup can start); true when it did.
    async fn refresh(
        &self,
        force: bool,
        channels: &RwLock<Arc<Channels>>,
    ) -> Result<bool, EndpointFailure> {
        let mut last = self.last.lock().await;
        if !force && last.1.elapsed() < self.discovery.refresh {
            // Looked up meanwhile by another call.
            return Ok(false);
        }
        if force {
            self.resolver.forget(&self.discovery.srv);
        }
        let found = self.lookup().await;
        last.1 = Instant::now();
        let targets = found?;
        // The same targets in another order (weights reshuffle it) are no change.
        let key = |targets: &[globallock_discovery::Target]| {
            let mut key: Vec<_> = targets
                .iter()
                .map(|t| (t.host.clone(), t.port, t.addrs.clone()))
                .collect();
            key.sort();
            key
        };
        if key(&targets) == key(&last.0) {
            return Ok(false);
        }
        let found = channels_for(&targets, self.tls.as_ref()).map_err(|e| EndpointFailure {
            endpoint: self.discovery.srv.clone(),
            problem: EndpointProblem::Other,
            detail: e.to_string(),
        })?;
        tracing::debug!(
            srv = %self.discovery.srv,
            coordinators = ?found.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
            "coordinators found through DNS"
        );
        *channels.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(found);
        last.0 = targets;
        Ok(true)
    }

    async fn lookup(&self) -> Result<Vec<globallock_discovery::Target>, EndpointFailure> {
        self.resolver
            .lookup(&self.discovery.srv)
            .await
            .map_err(|e| EndpointFailure {
                endpoint: self.discovery.srv.clone(),
                problem: EndpointProblem::Dns,
                detail: format!("no coordinator found through DNS: {e}"),
            })
    }
}

/// A channel per SRV target: dialling its addresses, and with `tls` checking
/// that the coordinator proves the target's name.
fn channels_for(
    targets: &[globallock_discovery::Target],
    tls: Option<&Arc<globallock_tls::Reloading<rustls::ClientConfig>>>,
) -> Result<Channels, ClientError> {
    let mut channels = Vec::with_capacity(targets.len());
    for target in targets {
        let label = target.url(if tls.is_some() { "https" } else { "http" });
        let first = target
            .addrs
            .first()
            .map_or_else(String::new, ToString::to_string);
        let endpoint = Endpoint::from_shared(format!("http://{first}"))
            .map_err(|e| ClientError::Endpoint {
                endpoint: label.clone(),
                reason: error_chain(&e),
            })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let channel = match tls {
            Some(config) => {
                let name = globallock_tls::identity::server_name(&target.host)?;
                endpoint.connect_with_connector_lazy(globallock_tls::TlsConnector::to_addresses(
                    config.clone(),
                    name,
                    target.addrs.clone(),
                ))
            }
            None => endpoint.connect_lazy(),
        };
        channels.push((label, channel));
    }
    Ok(channels)
}

impl Client {
    /// A client of these coordinators: their gRPC URLs, scheme included, like
    /// `http://127.0.0.1:7400` (an endpoint without `http://` or `https://` is an
    /// [`ClientError::Endpoint`] that shows the URL to write).
    /// Nothing is dialled until the first call.
    pub fn connect<S: AsRef<str>>(
        endpoints: impl IntoIterator<Item = S>,
    ) -> Result<Self, ClientError> {
        Self::connect_with(endpoints, None)
    }

    /// Like [`Client::connect`], over TLS to `https://` endpoints: trusting the
    /// CA in `tls`, and with mutual TLS when `tls` names a certificate (which
    /// then identifies the caller to the coordinator).
    pub fn connect_tls<S: AsRef<str>>(
        endpoints: impl IntoIterator<Item = S>,
        tls: &ClientTls,
    ) -> Result<Self, ClientError> {
        Self::connect_with(endpoints, Some(tls))
    }

    fn connect_with<S: AsRef<str>>(
        endpoints: impl IntoIterator<Item = S>,
        tls: Option<&ClientTls>,
    ) -> Result<Self, ClientError> {
        let config = tls.map(ClientTls::config).transpose()?;
        let mut channels = Vec::new();
        for endpoint in endpoints {
            let endpoint = endpoint.as_ref().trim().to_owned();
            check_scheme(&endpoint, config.is_some())?;
            let bad = |source: tonic::transport::Error| ClientError::Endpoint {
                endpoint: endpoint.clone(),
                reason: error_chain(&source),
            };
            let channel = match &config {
                Some(config) => {
                    // The connector does the TLS, and checks the coordinator's
                    // certificate against the host named in the endpoint.
                    let rest = &endpoint["https://".len()..];
                    let url = format!("http://{rest}");
                    let host = url
                        .parse::<tonic::transport::Uri>()
                        .ok()
                        .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
                        .unwrap_or_default();
                    let name = globallock_tls::identity::server_name(&host)?;
                    Endpoint::from_shared(url)
                        .map_err(bad)?
                        .connect_timeout(Duration::from_secs(2))
                        .connect_with_connector_lazy(globallock_tls::TlsConnector::new(
                            config.clone(),
                            name,
                        ))
                }
                None => Endpoint::from_shared(endpoint.clone())
                    .map_err(bad)?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .connect_lazy(),
            };
            channels.push((endpoint, channel));
        }
        if channels.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                channels: Arc::new(RwLock::new(Arc::new(channels))),
                preferred: AtomicUsize::new(0),
                bearer: None,
                discovered: None,
            }),
        })
    }

    /// A client of the coordinators DNS lists for `zone` (the SRV record
    /// `_globallock._tcp.<zone>`, asking the system's name servers), over TLS
    /// trusting the CA in `tls`. Each target is dialled at the addresses its
    /// name resolves to, and its certificate must carry that name (the SRV
    /// target, e.g. `coordinator-0.region-a.<zone>`). Calls fail over among the
    /// targets in the order RFC 2782 gives (priority, then weight); when none
    /// can be reached, or every 30 s, the record is looked up again.
    ///
    /// Fails with [`ClientError::Unreachable`] (problem `dns`) when DNS lists
    /// no coordinator.
    pub async fn discover(zone: &str, tls: &ClientTls) -> Result<Self, ClientError> {
        Self::discover_with(Discovery::zone(zone), Some(tls)).await
    }

    /// Like [`Client::discover`], with the record, name servers and refresh
    /// period of `discovery`; without `tls`, plaintext to `http://` targets
    /// (coordinators run with `insecure = true`).
    pub async fn discover_with(
        discovery: Discovery,
        tls: Option<&ClientTls>,
    ) -> Result<Self, ClientError> {
        let resolver =
            globallock_discovery::Resolver::new(&discovery.nameservers).map_err(|e| {
                ClientError::Unreachable(vec![EndpointFailure {
                    endpoint: discovery.srv.clone(),
                    problem: EndpointProblem::Dns,
                    detail: e.to_string(),
                }])
            })?;
        let discovered = Discovered {
            tls: tls.map(ClientTls::config).transpose()?,
            resolver,
            last: tokio::sync::Mutex::new((Vec::new(), Instant::now())),
            discovery,
        };
        let targets = discovered
            .lookup()
            .await
            .map_err(|failure| ClientError::Unreachable(vec![failure]))?;
        let channels = channels_for(&targets, discovered.tls.as_ref())?;
        *discovered.last.lock().await = (targets, Instant::now());
        Ok(Self {
            inner: Arc::new(Inner {
                channels: Arc::new(RwLock::new(Arc::new(channels))),
                preferred: AtomicUsize::new(0),
                bearer: None,
                discovered: Some(Arc::new(discovered)),
            }),
        })
    }

    /// The coordinators this client tries, as named (`https://host:port`), in
    /// the order it tries them from the first: the endpoints given, or what DNS
    /// said last.
    pub fn endpoints(&self) -> Vec<String> {
        self.channels().iter().map(|(e, _)| e.clone()).collect()
    }

    fn channels(&self) -> Arc<Channels> {
        self.inner
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Look the coordinators up again through DNS (`force`: now, asking the
    /// name servers afresh; else only when the last lookup is older than the
    /// refresh period). True when this lookup changed the list.
    async fn rediscover(&self, force: bool) -> Result<bool, EndpointFailure> {
        let Some(discovered) = &self.inner.discovered else {
            return Ok(false);
        };
        let changed = discovered.refresh(force, &self.inner.channels).await?;
        if changed {
            self.inner.preferred.store(0, Ordering::Relaxed);
        }
        Ok(changed)
    }

    /// Send `token` as `authorization: Bearer <token>` with every call: the
    /// coordinator identifies the caller by it (for callers without a client
    /// certificate). Use it over TLS only.
    pub fn with_token(self, token: &str) -> Result<Self, ClientError> {
        let value =
            format!("Bearer {}", token.trim())
                .parse()
                .map_err(|_| ClientError::Endpoint {
                    endpoint: String::new(),
                    reason: "the bearer token must be printable ASCII".into(),
                })?;
        let inner = Inner {
            channels: self.inner.channels.clone(),
            preferred: AtomicUsize::new(self.inner.preferred.load(Ordering::Relaxed)),
            bearer: Some(value),
            discovered: self.inner.discovered.clone(),
        };
        Ok(Self {
            inner: Arc::new(inner),
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
        // Found through DNS: a record looked up long enough ago is looked up
        // again (a failed lookup keeps the coordinators it said last).
        if let Err(failure) = self.rediscover(false).await {
            tracing::debug!(problem = %failure, "cannot look the coordinators up again");
        }
        let mut failures = Vec::new();
        let mut rediscovered = false;
        loop {
            let channels = self.channels();
            let n = channels.len();
            let start = self.inner.preferred.load(Ordering::Relaxed);
            for k in 0..n {
                let i = (start + k) % n;
                let (endpoint, channel) = &channels[i];
                let mut request = tonic::Request::new(message.clone());
                // The caller's trace continues through the coordinator to every region.
                globallock_telemetry::propagation::inject_grpc(request.metadata_mut());
                if let Some(bearer) = &self.inner.bearer {
                    request
                        .metadata_mut()
                        .insert("authorization", bearer.clone());
                }
                match call(LockServiceClient::new(channel.clone()), request).await {
                    Ok(response) => {
                        self.inner.preferred.store(i, Ordering::Relaxed);
                        return Ok(response.into_inner());
                    }
                    Err(status) => match unreachable(endpoint, &status) {
                        Some(failure)
                            if failure.problem != EndpointProblem::Other
                                || status.code() == Code::Unavailable =>
                        {
                            tracing::debug!(
                                endpoint,
                                problem = %failure,
                                "coordinator unreachable; failing over"
                            );
                            failures.push(failure);
                        }
                        // The connection failed in the middle of the call: the
                        // coordinator may have acted on it, so it is not re-sent.
                        Some(failure) => {
                            failures.push(failure);
                            return Err(ClientError::Unreachable(failures));
                        }
                        None => return Err(ClientError::from_status(status)),
                    },
                }
            }
            // None could be reached. Found through DNS: ask again, once, and
            // try the new list if the record changed.
            if rediscovered || self.inner.discovered.is_none() {
                return Err(ClientError::Unreachable(failures));
            }
            rediscovered = true;
            if let Err(failure) = self.rediscover(true).await {
                failures.push(failure);
                return Err(ClientError::Unreachable(failures));
            }
            // Changed by this lookup or by another call's meanwhile: try them.
            if Arc::ptr_eq(&channels, &self.channels()) {
                return Err(ClientError::Unreachable(failures));
            }
            tracing::debug!("coordinators changed in DNS; trying them");
        }
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
    ///
    /// A wait longer than a coordinator takes in one request (its `max_wait_ms`,
    /// 60 s by default) is split into requests of at most [`WAIT_SLICE`], re-issued
    /// while the resource stays held, with the same request id (so a grant whose
    /// answer was lost is found again, not doubled); `Duration::MAX` waits
    /// forever. A coordinator that takes less than a slice says so and the slice
    /// shrinks. The lock's validity counts from the request that won.
    pub async fn acquire_with_id(
        &self,
        resource: &str,
        owner: &str,
        ttl: Duration,
        wait: Duration,
        request_id: &str,
    ) -> Result<Lock, ClientError> {
        // Without a key, re-issued waits get one of their own.
        let generated;
        let request_id = if request_id.is_empty() && wait > WAIT_SLICE {
            generated = format!("client-wait-{:032x}", random_id());
            generated.as_str()
        } else {
            request_id
        };
        let started = Instant::now();
        let mut slice = WAIT_SLICE;
        loop {
            let left = wait.saturating_sub(started.elapsed());
            let this_wait = left.min(slice);
            match self
                .acquire_once(resource, owner, ttl, this_wait, request_id)
                .await
            {
                // Still held after this request's wait, with wait left: again.
                Err(ClientError::Held(_)) if started.elapsed() < wait && !this_wait.is_zero() => {}
                // This coordinator takes shorter waits: use shorter slices.
                Err(e @ ClientError::InvalidArgument(_))
                    if e.field().as_deref() == Some("wait_ms") && this_wait > MIN_WAIT_SLICE =>
                {
                    slice = (this_wait / 2).max(MIN_WAIT_SLICE);
                }
                other => return other,
            }
        }
    }

    async fn acquire_once(
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

    /// One page of the locks held now on resources starting with `prefix` (`""`:
    /// every resource), in resource order, as a majority of regions agree: at
    /// most `page_size` (0: the server's default, 100; at most 1000), after the
    /// page whose `next_page_token` is `page_token` (`""`: the first page). A
    /// page can hold fewer locks while more follow: the last page is the one
    /// with an empty `next_page_token`.
    pub async fn list_locks(
        &self,
        prefix: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<LockPage, ClientError> {
        let request = ListLocksRequest {
            prefix: prefix.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        };
        let r = self
            .call(request, |mut c, r| async move { c.list_locks(r).await })
            .await?;
        Ok(LockPage {
            locks: r
                .locks
                .into_iter()
                .map(|l| ListedLock {
                    resource: l.resource,
                    owner: l.owner,
                    fencing_token: l.fencing_token,
                    expires_in_ms: l.expires_in_ms,
                    granted_regions: l.granted_regions,
                })
                .collect(),
            next_page_token: r.next_page_token,
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

/// Refuse an endpoint without an `http://` or `https://` scheme: tonic would
/// accept `127.0.0.1:7400` and fail every call with a bare "transport error".
fn check_scheme(endpoint: &str, tls: bool) -> Result<(), ClientError> {
    if endpoint.starts_with(if tls { "https://" } else { "http://" }) {
        return Ok(());
    }
    let scheme = if tls { "https" } else { "http" };
    let reason = match endpoint.split_once("://") {
        Some(("https", rest)) => format!(
            "https:// needs the CA to trust (--ca, GLOBALLOCK_CA), or use \"http://{rest}\" \
             for a coordinator started with insecure = true"
        ),
        Some(("http", rest)) => {
            format!("plaintext http:// while TLS files were given: write \"https://{rest}\"")
        }
        Some((scheme, rest)) => format!(
            "unsupported scheme {scheme:?}: coordinator endpoints are https:// (or, without TLS, \
             http://) URLs, e.g. \"{wanted}://{rest}\"",
            wanted = if tls { "https" } else { "http" }
        ),
        None if endpoint.is_empty() => {
            "empty: coordinator endpoints are URLs like \"https://127.0.0.1:7400\"".to_owned()
        }
        None => format!(
            "missing the scheme: coordinator endpoints are URLs, write \"{scheme}://{endpoint}\""
        ),
    };
    Err(ClientError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    })
}

/// TLS to the coordinators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA certificates (PEM) the coordinators' certificates must chain to.
    pub ca: std::path::PathBuf,
    /// This caller's certificate and key (PEM) for mutual TLS, if any;
    /// reloaded when the files change.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl ClientTls {
    fn config(&self) -> Result<Arc<globallock_tls::Reloading<rustls::ClientConfig>>, ClientError> {
        let reloading = match &self.identity {
            Some((cert, key)) => globallock_tls::Reloading::new(
                globallock_tls::TlsFiles {
                    ca: self.ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                },
                globallock_tls::config::client,
            )?,
            None => globallock_tls::Reloading::fixed(globallock_tls::config::anonymous_client(
                globallock_tls::files::roots(&self.ca)?,
            )?),
        };
        Ok(Arc::new(reloading))
    }
}

/// If `status` comes from failing to reach a coordinator (rather than from a
/// coordinator's own answer), what went wrong. A coordinator always answers with
/// a gRPC content type; a transport failure has none, and a server that is not
/// a coordinator (the REST port, any HTTP/1 server) answers with another one or
/// breaks HTTP/2.
fn unreachable(endpoint: &str, status: &tonic::Status) -> Option<EndpointFailure> {
    let content_type = status
        .metadata()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    let failure = |problem, detail| {
        Some(EndpointFailure {
            endpoint: endpoint.to_owned(),
            problem,
            detail,
        })
    };
    if let Some(content_type) = content_type {
        if content_type.starts_with("application/grpc") {
            return None;
        }
        let http =
            http_status(status.message()).map_or_else(String::new, |code| format!("HTTP {code}, "));
        return failure(
            EndpointProblem::NotGrpc,
            format!("{http}content-type {content_type}"),
        );
    }
    let detail = status_chain(status);
    let io_kind = io_error_kind(status);
    let message = status.message();
    if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
        failure(EndpointProblem::Refused, detail)
    } else if message.contains("dns error") {
        failure(EndpointProblem::Dns, detail)
    } else if io_kind == Some(std::io::ErrorKind::TimedOut)
        || detail.contains("timed out")
        || message.contains("timeout")
    {
        failure(EndpointProblem::Timeout, detail)
    } else if message.contains("grpc-status header missing") {
        let http = http_status(message).map_or_else(String::new, |code| format!("HTTP {code}, "));
        failure(EndpointProblem::NotGrpc, format!("{http}no gRPC status"))
    } else if message.contains("h2 protocol error") || message.contains("http2 error") {
        failure(
            EndpointProblem::NotGrpc,
            format!("{detail} (an HTTP/1 server does not speak gRPC)"),
        )
    } else {
        // No gRPC content type: the call failed in transport, not at a coordinator.
        failure(EndpointProblem::Other, detail)
    }
}

/// `... status code 404` / `... status: 404 Not Found` in tonic's messages.
fn http_status(message: &str) -> Option<u16> {
    ["status code ", "status: "].iter().find_map(|marker| {
        let at = message.find(marker)? + marker.len();
        message[at..].get(..3)?.parse().ok()
    })
}

/// The error and its sources, joined with ": ", without repeats or tonic's
/// uninformative "transport error".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    chain_from(error.to_string(), error.source())
}

/// A status's message and the error chain under it.
fn status_chain(status: &tonic::Status) -> String {
    chain_from(
        status.message().to_owned(),
        std::error::Error::source(status),
    )
}

fn chain_from(first: String, mut next: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut parts = vec![first];
    while let Some(e) = next {
        let text = e.to_string();
        if text != "transport error" && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.len() > 1 && parts[0] == "transport error" {
        parts.remove(0);
    }
    parts.join(": ")
}

fn io_error_kind(status: &tonic::Status) -> Option<std::io::ErrorKind> {
    let mut next = std::error::Error::source(status);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        next = e.source();
    }
    None
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endpoint_without_a_scheme_is_refused_with_the_url_to_write() {
        let error = Client::connect(["127.0.0.1:7420"]).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("\"http://127.0.0.1:7420\""), "{text}");
        let error = Client::connect(["grpc://127.0.0.1:7420"]).unwrap_err();
        assert!(
            error.to_string().contains("http://127.0.0.1:7420"),
            "{error}"
        );
        assert!(Client::connect(["http://127.0.0.1:7400"]).is_ok());
        // https:// needs a CA to trust: the error says which flag gives it.
        let error = Client::connect(["https://coordinator:7400"]).unwrap_err();
        assert!(error.to_string().contains("--ca"), "{error}");
    }

    #[test]
    fn a_non_grpc_answer_is_an_unreachable_endpoint_not_a_coordinator_answer() {
        let mut rest = tonic::Status::internal(
            "protocol error: received message with invalid compression flag: 123 (valid flags \
             are 0 and 1) while receiving response with status: 404 Not Found",
        );
        rest.metadata_mut().insert(
            "content-type",
            tonic::metadata::MetadataValue::from_static("application/problem+json"),
        );
        let failure = unreachable("http://h:7480", &rest).expect("not a coordinator");
        assert_eq!(failure.problem, EndpointProblem::NotGrpc);
        assert_eq!(
            failure.detail,
            "HTTP 404, content-type application/problem+json"
        );

        let mut answer = tonic::Status::unavailable("no majority of regions reachable");
        answer.metadata_mut().insert(
            "content-type",
            tonic::metadata::MetadataValue::from_static("application/grpc"),
        );
        assert_eq!(unreachable("http://h:7400", &answer), None);

        let dns = tonic::Status::unavailable("dns error");
        assert_eq!(
            unreachable("http://h:7400", &dns).map(|f| f.problem),
            Some(EndpointProblem::Dns)
        );
    }

    /// A status as the client receives it: through gRPC's trailers.
    fn over_the_wire(status: &tonic::Status) -> tonic::Status {
        let mut headers = tonic::codegen::http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        tonic::Status::from_header_map(&headers).unwrap()
    }

    fn coordinator_status(
        code: Code,
        reason: &str,
        metadata: &[(&str, &str)],
        retry: Option<Duration>,
    ) -> tonic::Status {
        let metadata: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut details =
            tonic_types::ErrorDetails::with_error_info(reason, "globallock", metadata);
        if retry.is_some() {
            details.set_retry_info(retry);
        }
        over_the_wire(&tonic::Status::with_error_details(
            code,
            "the coordinator's text",
            details,
        ))
    }

    #[test]
    fn a_held_error_names_its_holder_and_when_to_retry_as_values() {
        let error = ClientError::from_status(coordinator_status(
            Code::Aborted,
            "held",
            &[
                ("resource", "orders/42"),
                ("owner", "billing-7f9c"),
                ("remaining_ms", "30831"),
            ],
            Some(Duration::from_millis(30_831)),
        ));
        assert!(matches!(error, ClientError::Held(_)), "{error:?}");
        assert_eq!(
            error.holder(),
            Some(Holder {
                owner: "billing-7f9c".into(),
                remaining: Duration::from_millis(30_831),
            })
        );
        assert_eq!(error.retry_after(), Some(Duration::from_millis(30_831)));
        assert_eq!(error.reason().as_deref(), Some("held"));
        assert_eq!(error.field(), None);
        let details = error.details().unwrap();
        assert_eq!(details.metadata["resource"], "orders/42");
        // The text is the coordinator's, unchanged.
        assert_eq!(error.to_string(), "held by another: the coordinator's text");

        let contended = ClientError::from_status(coordinator_status(
            Code::Aborted,
            "contended",
            &[("resource", "orders/42")],
            Some(Duration::from_millis(100)),
        ));
        assert_eq!(contended.reason().as_deref(), Some("contended"));
        assert_eq!(contended.holder(), None);
        assert_eq!(contended.retry_after(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn no_quorum_invalid_argument_and_rate_limit_details_are_values() {
        let error = ClientError::from_status(coordinator_status(
            Code::Unavailable,
            "no-quorum",
            &[
                ("reachable_regions", "eu"),
                ("unreachable_regions", "us,ap"),
            ],
            Some(Duration::from_secs(1)),
        ));
        let details = error.details().unwrap();
        assert_eq!(details.reachable_regions, ["eu"]);
        assert_eq!(details.unreachable_regions, ["us", "ap"]);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));

        let mut details = tonic_types::ErrorDetails::with_error_info(
            "invalid-argument",
            "globallock",
            HashMap::new(),
        );
        details.add_bad_request_violation("ttl_ms", "0 is out of bounds");
        let error = ClientError::from_status(over_the_wire(&tonic::Status::with_error_details(
            Code::InvalidArgument,
            "invalid argument: ttl_ms: 0 is out of bounds",
            details,
        )));
        assert!(matches!(error, ClientError::InvalidArgument(_)));
        assert_eq!(error.field().as_deref(), Some("ttl_ms"));
        assert_eq!(error.retry_after(), None);

        let error = ClientError::from_status(coordinator_status(
            Code::ResourceExhausted,
            "rate-limited",
            &[("owner", "billing-7f9c")],
            Some(Duration::from_millis(250)),
        ));
        assert!(matches!(error, ClientError::RateLimited(_)));
        assert_eq!(error.retry_after(), Some(Duration::from_millis(250)));
        assert_eq!(error.holder(), None, "a rate limit names no holder");
    }

    #[test]
    fn errors_without_details_have_none() {
        let error = ClientError::from_status(tonic::Status::aborted("held by someone"));
        assert!(matches!(error, ClientError::Held(_)));
        assert_eq!(error.details(), None);
        assert_eq!(error.holder(), None);
        assert_eq!(error.retry_after(), None);
        assert_eq!(ClientError::NoEndpoints.details(), None);
        assert_eq!(ClientError::NoEndpoints.retry_after(), None);
        // Another service's ErrorInfo is not the coordinator's.
        let foreign = coordinator_status(Code::Aborted, "held", &[("owner", "x")], None);
        let mut details = foreign.check_error_details().unwrap();
        details.set_error_info("held", "example.com", HashMap::new());
        let foreign = ClientError::from_status(tonic::Status::with_error_details(
            Code::Aborted,
            "x",
            details,
        ));
        assert_eq!(foreign.details(), None);
    }
}
