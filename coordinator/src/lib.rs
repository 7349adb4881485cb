//! The stateless coordinator.
//!
//! Every lock request is proposed to all regions in parallel; a lock is held once
//! a majority granted it. Coordinators keep no state that matters for safety, so
//! any number can run side by side.
//!
//! # Layout
//! - [`access`] — who is calling (client certificate, bearer token) and whether
//!   it may: the front doors' check before the engine is asked anything.
//! - [`config`] — settings, loaded from TOML + environment, validated before binding.
//! - [`engine`] — acquire, renew, release, describe, validate: fan-out to the
//!   regions and the decisions of `globallock_protocol::quorum`.
//! - `acquire` — carries out the acquire state machine's commands
//!   (`globallock_protocol::acquire`): mint, send, abort, back off, answer.
//! - [`waiters`]: the waiting line per resource (FIFO), and `handoff`: a
//!   release that carries the first waiter's proposals (the agents' HandOff).
//! - [`regions`] — channels to the region agents and their health (for the fast
//!   minority-side rejection).
//! - [`link`] — a client of one agent: the hot calls share one `Exchange`
//!   stream (one message each way per call); reads and probes stay unary.
//! - [`error`] — [`LockError`], every way a request can fail.
//! - [`contention`] — the bounded top-K of contended resources (admin endpoint).
//! - [`status`] — the one table mapping errors to gRPC codes and HTTP statuses.
//! - [`status_page`] — the operator's status page (`GET /` on the REST port) and
//!   the recent activity it shows.
//! - [`grpc`] — the public `globallock.v1.LockService`.
//! - [`rest`] — the REST API (axum) and its OpenAPI document.
//! - [`server`] — [`server::serve`], running it all until a shutdown future completes.

pub mod access;
mod acquire;
pub mod config;
pub mod contention;
pub mod engine;
pub mod error;
pub mod grpc;
mod handoff;
pub mod link;
pub mod quota;
pub mod regions;
mod repair;
pub mod rest;
pub mod server;
pub mod status;
pub mod status_page;
pub mod waiters;

pub use config::{ConfigError, CoordinatorConfig, ValidConfig};
pub use error::LockError;
pub use server::{Listeners, ServeError, serve};
