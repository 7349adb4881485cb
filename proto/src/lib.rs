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
}
