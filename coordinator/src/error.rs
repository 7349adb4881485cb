//! Everything a lock request can fail with. [`crate::status`] maps each variant to
//! a gRPC code and an HTTP status, in one table.

use std::fmt;
use std::time::Duration;

use globallock_protocol::fence::TokensExhausted;
use globallock_protocol::request::InvalidInput;

/// A region that could not take part in a request, and why.
#[derive(Debug, Clone)]
pub struct RegionFailure {
    /// The region.
    pub region: String,
    /// What its agent (or the transport) answered.
    pub status: tonic::Status,
}

impl fmt::Display for RegionFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}: {})",
            self.region,
            self.status.code(),
            self.status.message()
        )
    }
}

/// The regions a coordinator could and could not reach for one request.
#[derive(Debug, Clone, Default)]
pub struct Reachability {
    /// Regions that answered.
    pub reachable: Vec<String>,
    /// Regions that did not, with why.
    pub unreachable: Vec<RegionFailure>,
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unreachable: Vec<String> = self.unreachable.iter().map(ToString::to_string).collect();
        write!(
            f,
            "reachable regions [{}], unreachable regions [{}]",
            self.reachable.join(", "),
            unreachable.join(", ")
        )
    }
}

/// Why a lock request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// A field broke its rule; nothing was changed.
    #[error("invalid argument: {0}")]
    Invalid(#[from] InvalidInput),
    /// Another lock holds the resource.
    #[error("resource {resource:?} is held by {owner:?} for at least another {} ms", remaining.as_millis())]
    Held {
        /// The resource.
        resource: String,
        /// The holder's owner.
        owner: String,
        /// How long the holder's grant lives at least.
        remaining: Duration,
    },
    /// The wait ran out while the resource stayed held or contended.
    #[error("resource {resource:?} still held after waiting {} ms{}", waited.as_millis(), holder_text(holder.as_ref()))]
    WaitExpired {
        /// The resource.
        resource: String,
        /// How long we waited.
        waited: Duration,
        /// The last holder seen (owner, remaining).
        holder: Option<(String, Duration)>,
    },
    /// Concurrent proposals split the vote and no holder emerged; retry.
    #[error(
        "resource {resource:?} is contended: concurrent proposals split the regions' votes; retry"
    )]
    Contended {
        /// The resource.
        resource: String,
    },
    /// No lock with this id is held by a majority (unknown, expired, released,
    /// or superseded).
    #[error("lock {lock_id:?} is not held (unknown, expired, released or superseded)")]
    NotFound {
        /// The lock id.
        lock_id: String,
    },
    /// The request id was used before with another owner or TTL.
    #[error(
        "invalid argument: request_id: {request_id:?} was already used for an acquire with a different owner or ttl_ms"
    )]
    RequestIdReused {
        /// The request id.
        request_id: String,
    },
    /// No majority of regions could be reached.
    #[error("no majority of regions reachable: {0}")]
    Unavailable(Reachability),
    /// The grant took longer than its TTL, so nothing can be relied on.
    #[error("grant took {} ms, longer than its ttl of {} ms minus the drift allowance; retry", elapsed.as_millis(), ttl.as_millis())]
    TooSlow {
        /// How long the grant took.
        elapsed: Duration,
        /// The TTL asked for.
        ttl: Duration,
    },
    /// This owner is acquiring faster than its rate allows.
    #[error("owner {owner:?} is acquiring too fast; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// The owner.
        owner: String,
        /// When a retry will be allowed.
        retry_after: Duration,
    },
    /// The caller's principal is at one of its caps (locks held, acquires
    /// waiting).
    #[error(transparent)]
    QuotaExceeded(#[from] crate::quota::QuotaExceeded),
    /// The resource's fencing tokens are used up.
    #[error(transparent)]
    TokensExhausted(#[from] TokensExhausted),
    /// The caller could not be identified (access control is on).
    #[error("unauthenticated: {0}")]
    Unauthenticated(#[from] globallock_protocol::access::Unauthenticated),
    /// The caller may not do this (to this resource, or to another
    /// principal's lock).
    #[error("permission denied: {0}")]
    Denied(#[from] globallock_protocol::access::Denied),
    /// The lock belongs to another principal, and the caller may not act on
    /// other principals' locks (`admin`).
    #[error("permission denied: lock {lock_id:?} belongs to another principal")]
    NotOwner {
        /// The lock id.
        lock_id: String,
    },
    /// A region answered something that breaks the protocol.
    #[error("internal error: {0}")]
    Internal(String),
}

fn holder_text(holder: Option<&(String, Duration)>) -> String {
    match holder {
        Some((owner, remaining)) => {
            format!(
                " (held by {owner:?} for at least another {} ms)",
                remaining.as_millis()
            )
        }
        None => String::new(),
    }
}

impl LockError {
    /// A stable slug naming the problem: the `outcome` of audit records and
    /// metrics, and the problem+json `type` (see [`crate::status`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid-argument",
            Self::RequestIdReused { .. } => "request-id-reused",
            Self::Held { .. } | Self::WaitExpired { .. } => "held",
            Self::Contended { .. } => "contended",
            Self::NotFound { .. } => "not-found",
            Self::Unavailable(_) | Self::TooSlow { .. } => "no-quorum",
            Self::RateLimited { .. } => "rate-limited",
            Self::QuotaExceeded(_) => "quota-exceeded",
            Self::TokensExhausted(_) => "tokens-exhausted",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Denied(_) | Self::NotOwner { .. } => "permission-denied",
            Self::Internal(_) => "internal",
        }
    }
}
