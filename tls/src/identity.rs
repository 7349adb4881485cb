//! The identities certificates carry.
//!
//! Services prove who they are with DNS names in their certificates, checked
//! the standard way (as a host name) by whoever dials them, and on the client
//! certificate by the server:
//! - the agent of region `R`: `R.agent.globallock` ([`agent`]);
//! - a coordinator: `coordinator.globallock` ([`COORDINATOR`]);
//! - the etcd clusters of region `R`, to that region's agent:
//!   `R.etcd.globallock` ([`etcd`]).
//!
//! Callers are identified by their certificate's names ([`names`]): URI names
//! first (SPIFFE-style, e.g. `spiffe://example.org/ns/billing/sa/worker`), then
//! DNS names.

use rustls_pki_types::{CertificateDer, ServerName};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::files::TlsError;

/// The DNS name every coordinator's certificate carries: agents accept calls
/// only from certificates with it.
pub const COORDINATOR: &str = "coordinator.globallock";

/// The DNS name the agent of `region` proves; a coordinator dialling that
/// region's agent checks it, so an agent of another region is refused.
pub fn agent(region: &str) -> String {
    format!("{region}.agent.globallock")
}

/// The DNS name the etcd clusters of `region` prove to that region's agent
/// (the default `server_name` in the agents' `[etcd_tls]` that `make dev` and
/// the shipped configurations write).
pub fn etcd(region: &str) -> String {
    format!("{region}.etcd.globallock")
}

/// `name` as a name to check a peer's certificate against.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::Name {
        name: name.to_owned(),
    })
}

/// The names a certificate carries in its subject alternative names: URIs
/// first, then DNS names (empty if it cannot be parsed).
pub fn names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::URI(uri) => uris.push((*uri).to_owned()),
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            _ => {}
        }
    }
    uris.extend(dns);
    uris
}

/// True when the leaf of `chain` names `name` (DNS or URI).
pub fn carries(chain: &[CertificateDer<'_>], name: &str) -> bool {
    chain
        .first()
        .is_some_and(|leaf| names(leaf).iter().any(|n| n == name))
}
