//! What can go wrong talking to a shard.

use std::time::Duration;

/// A shard operation that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd did not answer within the deadline.
    #[error("shard {shard}: {op} timed out after {after:?}")]
    Timeout {
        /// The shard.
        shard: String,
        /// The operation.
        op: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// etcd answered with an error (or the connection failed).
    #[error("shard {shard}: {op} failed")]
    Etcd {
        /// The shard.
        shard: String,
        /// The operation.
        op: &'static str,
        /// etcd's error.
        #[source]
        source: etcd_client::Error,
    },
    /// A stored grant record could not be decoded.
    #[error("shard {shard}: record under {key} is corrupt")]
    Corrupt {
        /// The shard.
        shard: String,
        /// The key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A key under the grant prefix does not name a resource (it was not
    /// written by a store of this layout).
    #[error("shard {shard}: key {key} under the grant prefix names no resource")]
    CorruptKey {
        /// The shard.
        shard: String,
        /// The key, lossily decoded.
        key: String,
    },
    /// A transaction kept losing races with concurrent writers.
    #[error("shard {shard}: {op} kept conflicting with concurrent writes")]
    Contention {
        /// The shard.
        shard: String,
        /// The operation.
        op: &'static str,
    },
    /// The shard lost its data and is not voting until its quarantine ends.
    #[error("shard {shard}: quarantined for another {} ms: its etcd data was lost, so it stays silent until every lock it forgot has expired", remaining.as_millis())]
    Quarantined {
        /// The shard.
        shard: String,
        /// How long until it serves.
        remaining: Duration,
    },
    /// The shard's watermark file could not be read.
    #[error("shard {shard}: cannot read its etcd watermark {}", path.display())]
    State {
        /// The shard.
        shard: String,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The grant belongs to another principal than the one acting on it.
    #[error("shard {shard}: lock {lock_id:?} belongs to another principal")]
    NotOwner {
        /// The shard.
        shard: String,
        /// The lock id.
        lock_id: String,
    },
    /// The endpoint list was unusable.
    #[error("shard {shard}: cannot use endpoints {endpoints:?}")]
    Endpoints {
        /// The shard.
        shard: String,
        /// The endpoints given.
        endpoints: Vec<String>,
        /// Why.
        #[source]
        source: Box<crate::connection::ConnectError>,
    },
}

impl StoreError {
    /// etcd answered `op` on `shard` with something that is not an answer to
    /// the request sent (a broken etcd): said as it is, nothing guessed.
    pub(crate) fn odd_answer(shard: &str, op: &'static str, what: &str) -> Self {
        Self::Etcd {
            shard: shard.to_owned(),
            op,
            source: etcd_client::Error::Internal(format!("etcd answered {what}")),
        }
    }

    /// True when the request lease was not found (it expired or etcd lost it).
    pub(crate) fn is_lease_not_found(&self) -> bool {
        match self {
            Self::Etcd {
                source: etcd_client::Error::GRpcStatus(status),
                ..
            } => status.message().contains("lease not found"),
            _ => false,
        }
    }
}
