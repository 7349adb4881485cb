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

    impl PartError {
        /// The part of a hand-off that failed with `status`.
        pub fn from_status(status: &tonic::Status) -> Self {
            Self {
                code: status.code() as i32,
                message: status.message().to_owned(),
            }
        }

        /// The status that part's call would have returned on its own.
        pub fn to_status(&self) -> tonic::Status {
            tonic::Status::new(tonic::Code::from_i32(self.code), self.message.clone())
        }
    }
}
