//! The region agent: one per region, the only service that writes to that
//! region's etcd clusters (through `globallock-etcd`).
//!
//! # Layout
//! - [`config`] — settings, loaded from TOML + environment, validated before binding.
//! - [`service`] — the `RegionAgent` gRPC service (grant, abort, renew, release,
//!   read, list, health), over any [`LockStore`] (etcd's in production).
//! - [`exchange`] — the `Exchange` stream: many calls over one stream, each
//!   answered by its unary handler.
//! - [`memory`] — a shard's store in memory, the same [`LockStore`] contract as
//!   etcd's, for tests without etcd.
//! - [`ring_state`] — the ring served, kept across restarts, to hand resources
//!   over safely when the ring changes.
//! - [`server`] — [`server::serve`], which runs the service until a shutdown future
//!   completes (tests pass a channel; the binary passes Ctrl-C/SIGTERM).

pub mod config;
pub mod exchange;
pub mod memory;
pub mod ring_state;
pub mod server;
pub mod service;

pub use config::{AgentConfig, ConfigError, ValidConfig};
pub use globallock_protocol::store::LockStore;
pub use server::{AgentError, AgentListeners, serve};
