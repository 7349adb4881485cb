//! The only crate that talks to etcd.
//!
//! A region keeps, per shard (one etcd cluster each), three kinds of keys:
//! the grant holding a resource (attached to a shared lease bucket, so it
//! expires by itself), the resource's fencing-token high-water mark (never
//! expires), and tombstones of aborted lock ids. Every change is a guarded etcd
//! transaction; see [`ShardStore::grant`] for the one that matters most.
//! [`ShardStore`] is the production [`LockStore`] (the agent's view of a shard).
//!
//! # Layout
//! - [`shard`] — [`ShardStore`], the operations on one shard.
//! - [`keys`] — the key layout and the order-preserving token encoding.
//! - `leases`: the table of shared lease buckets.
//! - `batch`: group commit (concurrent transactions on distinct resources
//!   sent as one etcd transaction of nested ones), and the link every request
//!   takes (deadline, retries, metrics).
//! - `turns`: hand-offs of one resource take turns (each finds the grant
//!   the one before it wrote noted, and stays one write).
//! - [`watermark`] — the etcd history an agent saw (cluster id, highest
//!   revision), kept on disk to notice an etcd restored to older data.
//! - [`connection`] — the etcd client, over TLS ([`EtcdTls`]) when configured,
//!   rebuilt when its certificate files change.
//! - [`error`] — [`StoreError`].

mod batch;
pub mod connection;
pub mod error;
pub mod keys;
mod leases;
pub mod shard;
mod turns;
pub mod watermark;

pub use connection::EtcdTls;
pub use error::StoreError;
pub use globallock_protocol::store::{
    GrantRecord, Holding, Listed, Listing, LockStore, Proposal, Removal, ResourceState, Vote,
};
pub use shard::{Quarantined, ShardConfig, ShardStore};
