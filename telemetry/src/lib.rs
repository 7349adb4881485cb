//! Telemetry for every process: traces exported over OTLP, Prometheus metrics,
//! and W3C trace context carried across gRPC and HTTP.
//!
//! # Layout
//! - [`audit`] — the append-only JSON-lines audit sink (written off the request
//!   path) and its reader.
//! - [`propagation`] — `traceparent` in and out of gRPC metadata and HTTP headers
//!   (always available; the client library uses only this).
//! - `export` feature: [`init`] (structured logs + OTLP span export that never
//!   blocks a request), [`metrics`] (the Prometheus recorder with explicit
//!   histogram buckets, and a `/metrics` endpoint).

pub mod audit;
pub mod propagation;

#[cfg(feature = "export")]
mod export;
#[cfg(feature = "export")]
pub mod metrics;

#[cfg(feature = "export")]
pub use export::{LogFormat, Telemetry, init, pipeline};
