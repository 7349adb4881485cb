//! TLS on every hop, on rustls with the ring provider.
//!
//! - [`files`] — the certificate, key and CA files named in configuration,
//!   loaded and checked at start, and reloaded when they change
//!   ([`files::Reloading`]): certificates rotate without a restart.
//! - [`config`] — the rustls configurations every door and hop uses: TLS 1.3
//!   only, client certificates required (service to service) or optional
//!   (public doors).
//! - [`listener`] — accepting TLS connections on a TCP listener, one handshake
//!   at a time per connection (a slow or plaintext peer blocks nobody).
//! - [`connector`] — dialling a TLS peer for tonic channels, checking that the
//!   peer's certificate names the identity expected.
//! - [`identity`] — the identities certificates carry: the names services prove
//!   (a region's agent, a coordinator) and what a caller's certificate says.

pub mod config;
pub mod connector;
pub mod files;
pub mod identity;
pub mod listener;

pub use config::ClientAuth;
pub use connector::TlsConnector;
pub use files::{Material, Reloading, TlsError, TlsFiles};
pub use listener::TlsIncoming;
