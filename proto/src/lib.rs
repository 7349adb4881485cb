//! Generated gRPC code for the global lock coordinator.
//!
//! - [`v1`]: the public `globallock.v1.LockService` (what clients call).
//! - [`agent`] — the internal `globallock.agent.v1.RegionAgent` (what coordinators call).
//!
//! The `.proto` files beside this crate are the source of truth; their comments
//! document every field's meaning and failure behaviour.

#![allow(missing_docs, clippy::all, missing_debug_implementations)]

pub mod codec;

/// The public lock API.
pub mod v1 {
    tonic::include_proto!("globallock.v1");
}

/// The internal region-agent API.
pub mod agent {
    tonic::include_proto!("globallock.agent.v1");

    /// Response metadata every agent answer carries: the name of the region the
    /// agent serves. A coordinator counts a reply only when it names the region the
    /// coordinator meant to reach, so one agent reachable under two configured
    /// regions (two names for one address) can never vote twice.
    pub const REGION_METADATA: &str = "globallock-region";
}
