//! The grant record stored under a resource's lock key.

use serde::{Deserialize, Serialize};

/// What a region remembers about the grant that holds a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// The lock this grant belongs to; renew and release must name it exactly.
    pub lock_id: String,
    /// Who holds it.
    pub owner: String,
    /// Its fencing token.
    pub token: u64,
    /// The TTL it was granted or last renewed with.
    pub ttl_ms: u64,
    /// The idempotency key of the acquire that created it.
    pub request_id: String,
    /// When the region granted it (ms since the Unix epoch; 0 for old records).
    /// Only for reporting hold durations, never for expiry.
    #[serde(default)]
    pub granted_unix_ms: u64,
    /// Set (by compare-and-swap) when a retry of the same request reported this
    /// grant as its own. An abort never removes an adopted grant: a round that
    /// counted it as won must not lose it to the background abort of the round
    /// that created it (the two-holders bug, hole 1 in `docs/safety.md`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// The principal that acquired it (empty when access control was off):
    /// only it renews or releases the lock, unless forced by an admin.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub principal: String,
}
