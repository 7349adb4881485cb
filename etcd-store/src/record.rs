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
}
