//! Who is calling, and what they may do: principals, bearer tokens and
//! per-namespace permissions. No I/O: the coordinator passes in what the
//! connection showed (certificate names, a bearer token) and the time.
//!
//! - A caller is identified by its client certificate (a URI or DNS name in it,
//!   e.g. `spiffe://example.org/ns/billing/sa/worker`), or by a bearer token for
//!   callers that cannot do mutual TLS. Tokens are kept only as SHA-256 digests,
//!   a principal may have several, and each may expire.
//! - Permissions map resource-name prefixes to principals and verbs. With
//!   access control on, anything not allowed is denied.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// What a caller asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// Take a lock.
    Acquire,
    /// Extend one's own lock.
    Renew,
    /// Give up one's own lock.
    Release,
    /// See who holds a resource (never another principal's lock id).
    Describe,
    /// Check a fencing token.
    Validate,
    /// Admin endpoints, and renew or release of another principal's lock
    /// (a force-release, audited as such).
    Admin,
}

impl Verb {
    /// Its name in configuration and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acquire => "acquire",
            Self::Renew => "renew",
            Self::Release => "release",
            Self::Describe => "describe",
            Self::Validate => "validate",
            Self::Admin => "admin",
        }
    }
}

/// A bearer token as configured: its SHA-256 digest (hex), and when it stops
/// being accepted (ms since the Unix epoch; absent: never).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// `sha256sum` of the token, lowercase hex.
    pub sha256: String,
    /// After this (ms since the Unix epoch) the token is refused.
    #[serde(default)]
    pub expires_unix_ms: Option<u64>,
}

/// A principal as configured.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalEntry {
    /// Its name: what audit records and lock owners show.
    pub name: String,
    /// Names in client certificates that are this principal (URI or DNS SANs).
    #[serde(default)]
    pub identities: Vec<String>,
    /// Bearer tokens that are this principal.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

/// One permission: `principals` may do `verbs` on resources starting with
/// `prefix` (`""`: every resource).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Resource-name prefix, e.g. `billing/`.
    pub prefix: String,
    /// Principal names.
    pub principals: Vec<String>,
    /// What they may do there.
    pub verbs: Vec<Verb>,
}

/// Why an access configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessConfigError {
    /// Two principals with one name, identity or token.
    #[error("{what} {value:?} belongs to two principals")]
    Duplicate {
        /// Which kind of value.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A rule names a principal that is not configured.
    #[error("rule for prefix {prefix:?} names unknown principal {principal:?}")]
    UnknownPrincipal {
        /// The rule's prefix.
        prefix: String,
        /// The name.
        principal: String,
    },
    /// A token digest is not 64 lowercase hex digits.
    #[error("token of principal {principal:?}: sha256 must be 64 lowercase hex digits")]
    BadDigest {
        /// The principal.
        principal: String,
    },
    /// A principal with no way to be recognised.
    #[error("principal {principal:?} has neither identities nor tokens")]
    Unreachable {
        /// The principal.
        principal: String,
    },
}

/// What a connection showed about its caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Names in the client certificate (URIs first, then DNS names).
    pub certificate: Vec<String>,
    /// The bearer token, if one was sent.
    pub bearer: Option<String>,
}

/// Why a caller was not identified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    /// Nothing identified the caller.
    #[error("no credentials: present a client certificate or a bearer token")]
    Anonymous,
    /// The bearer token is not known.
    #[error("unknown bearer token")]
    UnknownToken,
    /// The bearer token has expired.
    #[error("bearer token expired")]
    ExpiredToken,
    /// The certificate names no configured principal.
    #[error("client certificate names {0:?}, which no principal is")]
    UnknownCertificate(Vec<String>),
}

/// A refusal: the verb and the prefix it was asked on (never the other
/// tenant's data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("principal {principal:?} may not {} resources under {resource:?}", verb.as_str())]
pub struct Denied {
    /// Who asked.
    pub principal: String,
    /// What they asked to do.
    pub verb: Verb,
    /// The resource (or prefix) asked about.
    pub resource: String,
}

/// The access configuration, checked and indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessControl {
    by_identity: HashMap<String, usize>,
    by_digest: HashMap<String, (usize, Option<u64>)>,
    names: Vec<String>,
    rules: Vec<Rule>,
}

/// SHA-256 of `token`, lowercase hex (what configuration stores).
pub fn token_digest(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl AccessControl {
    /// Check and index `principals` and `rules`.
    pub fn new(principals: &[PrincipalEntry], rules: &[Rule]) -> Result<Self, AccessConfigError> {
        let mut by_identity = HashMap::new();
        let mut by_digest = HashMap::new();
        let mut names = Vec::new();
        for (i, p) in principals.iter().enumerate() {
            if names.contains(&p.name) {
                return Err(AccessConfigError::Duplicate {
                    what: "name",
                    value: p.name.clone(),
                });
            }
            if p.identities.is_empty() && p.tokens.is_empty() {
                return Err(AccessConfigError::Unreachable {
                    principal: p.name.clone(),
                });
            }
            names.push(p.name.clone());
            for identity in &p.identities {
                if by_identity.insert(identity.clone(), i).is_some() {
                    return Err(AccessConfigError::Duplicate {
                        what: "identity",
                        value: identity.clone(),
                    });
                }
            }
            for token in &p.tokens {
                let valid = token.sha256.len() == 64
                    && token
                        .sha256
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !valid {
                    return Err(AccessConfigError::BadDigest {
                        principal: p.name.clone(),
                    });
                }
                if by_digest
                    .insert(token.sha256.clone(), (i, token.expires_unix_ms))
                    .is_some()
                {
                    return Err(AccessConfigError::Duplicate {
                        what: "token",
                        value: format!("sha256:{}…", &token.sha256[..8]),
                    });
                }
            }
        }
        for rule in rules {
            if let Some(unknown) = rule.principals.iter().find(|p| !names.contains(p)) {
                return Err(AccessConfigError::UnknownPrincipal {
                    prefix: rule.prefix.clone(),
                    principal: unknown.clone(),
                });
            }
        }
        Ok(Self {
            by_identity,
            by_digest,
            names,
            rules: rules.to_vec(),
        })
    }

    /// Who is calling: a bearer token wins over the certificate (a token is
    /// sent on purpose); `now_unix_ms` decides expiry.
    pub fn identify(&self, c: &Credentials, now_unix_ms: u64) -> Result<&str, Unauthenticated> {
        if let Some(token) = &c.bearer {
            let (i, expires) = self
                .by_digest
                .get(&token_digest(token))
                .ok_or(Unauthenticated::UnknownToken)?;
            if expires.is_some_and(|at| now_unix_ms >= at) {
                return Err(Unauthenticated::ExpiredToken);
            }
            return Ok(&self.names[*i]);
        }
        if c.certificate.is_empty() {
            return Err(Unauthenticated::Anonymous);
        }
        c.certificate
            .iter()
            .find_map(|name| self.by_identity.get(name))
            .map(|&i| self.names[i].as_str())
            .ok_or_else(|| Unauthenticated::UnknownCertificate(c.certificate.clone()))
    }

    /// Whether `principal` may `verb` on `resource`: some rule whose prefix
    /// starts `resource` names both. Default deny.
    pub fn check(&self, principal: &str, verb: Verb, resource: &str) -> Result<(), Denied> {
        let allowed = self.rules.iter().any(|r| {
            resource.starts_with(&r.prefix)
                && r.verbs.contains(&verb)
                && r.principals.iter().any(|p| p == principal)
        });
        if allowed {
            Ok(())
        } else {
            Err(Denied {
                principal: principal.to_owned(),
                verb,
                resource: resource.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-token-of-the-batch-job";

    fn acl() -> AccessControl {
        AccessControl::new(
            &[
                PrincipalEntry {
                    name: "billing".into(),
                    identities: vec!["spiffe://example.org/ns/billing/sa/worker".into()],
                    tokens: vec![],
                },
                PrincipalEntry {
                    name: "batch".into(),
                    identities: vec![],
                    tokens: vec![
                        TokenEntry {
                            sha256: token_digest(TOKEN),
                            expires_unix_ms: Some(2_000),
                        },
                        TokenEntry {
                            sha256: token_digest("forever"),
                            expires_unix_ms: None,
                        },
                    ],
                },
                PrincipalEntry {
                    name: "ops".into(),
                    identities: vec!["ops.example.org".into()],
                    tokens: vec![],
                },
            ],
            &[
                Rule {
                    prefix: "billing/".into(),
                    principals: vec!["billing".into()],
                    verbs: vec![Verb::Acquire, Verb::Renew, Verb::Release, Verb::Describe],
                },
                Rule {
                    prefix: "batch/".into(),
                    principals: vec!["batch".into()],
                    verbs: vec![Verb::Acquire],
                },
                Rule {
                    prefix: String::new(),
                    principals: vec!["ops".into()],
                    verbs: vec![Verb::Describe, Verb::Admin],
                },
            ],
        )
        .unwrap()
    }

    fn cert(name: &str) -> Credentials {
        Credentials {
            certificate: vec![name.into()],
            bearer: None,
        }
    }

    fn bearer(token: &str) -> Credentials {
        Credentials {
            certificate: vec![],
            bearer: Some(token.into()),
        }
    }

    #[test]
    fn callers_are_identified_by_certificate_names_or_unexpired_tokens() {
        let acl = acl();
        let billing = cert("spiffe://example.org/ns/billing/sa/worker");
        assert_eq!(acl.identify(&billing, 0), Ok("billing"));
        assert_eq!(acl.identify(&cert("ops.example.org"), 0), Ok("ops"));
        assert_eq!(acl.identify(&bearer(TOKEN), 1_999), Ok("batch"));
        assert_eq!(
            acl.identify(&bearer(TOKEN), 2_000),
            Err(Unauthenticated::ExpiredToken)
        );
        assert_eq!(acl.identify(&bearer("forever"), u64::MAX), Ok("batch"));
        assert_eq!(
            acl.identify(&bearer("guess"), 0),
            Err(Unauthenticated::UnknownToken)
        );
        assert_eq!(
            acl.identify(&Credentials::default(), 0),
            Err(Unauthenticated::Anonymous)
        );
        assert_eq!(
            acl.identify(&cert("spiffe://evil"), 0),
            Err(Unauthenticated::UnknownCertificate(vec![
                "spiffe://evil".into()
            ]))
        );
        // A token sent on purpose wins over the certificate.
        let both = Credentials {
            certificate: billing.certificate,
            bearer: Some(TOKEN.into()),
        };
        assert_eq!(acl.identify(&both, 0), Ok("batch"));
    }

    #[test]
    fn permissions_are_per_prefix_and_verb_and_everything_else_is_denied() {
        let acl = acl();
        assert_eq!(acl.check("billing", Verb::Acquire, "billing/inv-1"), Ok(()));
        assert_eq!(acl.check("billing", Verb::Release, "billing/inv-1"), Ok(()));
        let denied = acl
            .check("billing", Verb::Acquire, "batch/job-1")
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "principal \"billing\" may not acquire resources under \"batch/job-1\""
        );
        assert!(acl.check("batch", Verb::Acquire, "batch/job").is_ok());
        assert!(acl.check("batch", Verb::Release, "batch/job").is_err());
        assert!(acl.check("batch", Verb::Acquire, "billing/x").is_err());
        assert!(acl.check("billing", Verb::Admin, "billing/x").is_err());
        assert!(acl.check("ops", Verb::Admin, "anything").is_ok());
        assert!(acl.check("ops", Verb::Describe, "billing/x").is_ok());
        assert!(acl.check("ops", Verb::Acquire, "billing/x").is_err());
        assert!(acl.check("nobody", Verb::Describe, "x").is_err());
        // A prefix is a prefix of the name, not of a path segment only.
        assert!(acl.check("billing", Verb::Acquire, "billing").is_err());
    }

    #[test]
    fn a_configuration_that_cannot_mean_one_thing_is_refused() {
        let p = |name: &str, identity: &str| PrincipalEntry {
            name: name.into(),
            identities: vec![identity.into()],
            tokens: vec![],
        };
        let dup_name = AccessControl::new(&[p("a", "x"), p("a", "y")], &[]);
        assert!(matches!(
            dup_name,
            Err(AccessConfigError::Duplicate { what: "name", .. })
        ));
        let dup_identity = AccessControl::new(&[p("a", "x"), p("b", "x")], &[]);
        assert!(matches!(
            dup_identity,
            Err(AccessConfigError::Duplicate {
                what: "identity",
                ..
            })
        ));
        let unknown = AccessControl::new(
            &[p("a", "x")],
            &[Rule {
                prefix: String::new(),
                principals: vec!["b".into()],
                verbs: vec![Verb::Acquire],
            }],
        );
        assert!(matches!(
            unknown,
            Err(AccessConfigError::UnknownPrincipal { .. })
        ));
        let bad = PrincipalEntry {
            name: "t".into(),
            identities: vec![],
            tokens: vec![TokenEntry {
                sha256: "ABC".into(),
                expires_unix_ms: None,
            }],
        };
        assert!(matches!(
            AccessControl::new(&[bad], &[]),
            Err(AccessConfigError::BadDigest { .. })
        ));
        let nothing = PrincipalEntry {
            name: "n".into(),
            identities: vec![],
            tokens: vec![],
        };
        assert!(matches!(
            AccessControl::new(&[nothing], &[]),
            Err(AccessConfigError::Unreachable { .. })
        ));
        let dup_token = PrincipalEntry {
            name: "t".into(),
            identities: vec![],
            tokens: vec![
                TokenEntry {
                    sha256: token_digest("x"),
                    expires_unix_ms: None,
                },
                TokenEntry {
                    sha256: token_digest("x"),
                    expires_unix_ms: None,
                },
            ],
        };
        assert!(matches!(
            AccessControl::new(&[dup_token], &[]),
            Err(AccessConfigError::Duplicate { what: "token", .. })
        ));
    }

    #[test]
    fn token_digests_are_sha256_hex() {
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Verb::Validate.as_str(), "validate");
        assert_eq!(Verb::Renew.as_str(), "renew");
        assert_eq!(Verb::Describe.as_str(), "describe");
        assert_eq!(Verb::Acquire.as_str(), "acquire");
        assert_eq!(Verb::Release.as_str(), "release");
        assert_eq!(Verb::Admin.as_str(), "admin");
    }
}
