//! Who is calling, at the front doors: what a connection showed (client
//! certificate names, a bearer token) becomes a [`Caller`], or an error, before
//! the engine is asked anything. The rules themselves are in
//! `globallock_protocol::access`.

use globallock_protocol::access::{AccessControl, Credentials, Verb};
use globallock_protocol::audit::AuditEvent;
use rustls_pki_types::CertificateDer;

use crate::engine::LockEngine;
use crate::error::LockError;

/// The caller of one request, once identified and allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Its principal (empty when access control is off: then every lock has
    /// the empty principal, and everyone is everyone).
    pub principal: String,
    /// Whether it may act on other principals' locks (the `admin` verb on the
    /// resource): its renew and release are forced, and audited as such.
    pub admin: bool,
}

impl Caller {
    /// Whether this caller may see the lock id of a lock held by `principal`:
    /// only its holder (or an admin, who may act on it anyway).
    pub fn may_see(&self, principal: &str) -> bool {
        self.admin || self.principal == principal
    }
}

/// The credentials of a gRPC request: the client certificate's names (a TLS
/// connection's) and an `authorization: Bearer <token>` header.
pub fn grpc_credentials<T>(request: &tonic::Request<T>) -> Credentials {
    let certificate = request
        .peer_certs()
        .and_then(|chain| chain.first().map(globallock_tls::identity::names))
        .unwrap_or_default();
    let bearer = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    Credentials {
        certificate,
        bearer,
    }
}

/// The credentials of an HTTP request: `certificate` from its connection, and
/// its `Authorization: Bearer <token>` header.
pub fn http_credentials(headers: &http::HeaderMap, certificate: Vec<String>) -> Credentials {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    Credentials {
        certificate,
        bearer,
    }
}

/// The names in the client certificate of a TLS connection (empty without one).
pub fn certificate_names(chain: Option<&[CertificateDer<'_>]>) -> Vec<String> {
    chain
        .and_then(<[_]>::first)
        .map(globallock_tls::identity::names)
        .unwrap_or_default()
}

fn bearer(value: &str) -> Option<String> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

impl LockEngine {
    /// Identify the caller and check that it may `verb` on `resource`; refusals
    /// are audited (without the other tenant's data). With access control off,
    /// everyone is the empty principal and may do everything except act on
    /// another principal's lock.
    pub fn authorize(
        &self,
        credentials: &Credentials,
        verb: Verb,
        resource: &str,
    ) -> Result<Caller, LockError> {
        let Some(access) = self.access() else {
            return Ok(Caller::default());
        };
        let now = self.clock.unix_micros() / 1_000;
        let outcome = identify_and_check(access, credentials, now, verb, resource);
        if let Err(error) = &outcome {
            metrics::counter!("globallock_access_denied_total", "verb" => verb.as_str(), "reason" => error.kind())
                .increment(1);
            let principal = match error {
                LockError::Denied(d) => d.principal.clone(),
                _ => String::new(),
            };
            self.audit_denial(resource, &principal, verb, error.kind());
            self.activity().rejected(verb.as_str(), error.kind());
        }
        outcome
    }

    /// Record a refusal in the audit trail (rate limited with the other
    /// rejections, so a flood of refused calls cannot fill the disk).
    fn audit_denial(&self, resource: &str, principal: &str, verb: Verb, why: &str) {
        self.audit(
            AuditEvent::Denied,
            resource,
            principal,
            "",
            0,
            Vec::new(),
            &format!("{why}: {}", verb.as_str()),
        );
    }
}

fn identify_and_check(
    access: &AccessControl,
    credentials: &Credentials,
    now_unix_ms: u64,
    verb: Verb,
    resource: &str,
) -> Result<Caller, LockError> {
    let principal = access.identify(credentials, now_unix_ms)?.to_owned();
    let admin = access.check(&principal, Verb::Admin, resource).is_ok();
    // `admin` includes releasing (a force-release of anyone's lock).
    if !(verb == Verb::Release && admin) {
        access.check(&principal, verb, resource)?;
    }
    Ok(Caller { principal, admin })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_token_is_read_from_the_authorization_header_only_with_its_scheme() {
        assert_eq!(bearer("Bearer abc"), Some("abc".into()));
        assert_eq!(bearer("bearer  abc "), Some("abc".into()));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, "Bearer t0k".parse().unwrap());
        let c = http_credentials(&headers, vec!["spiffe://x".into()]);
        assert_eq!(c.bearer.as_deref(), Some("t0k"));
        assert_eq!(c.certificate, vec!["spiffe://x".to_owned()]);
    }
}
