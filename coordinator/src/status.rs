//! The one table that maps every [`LockError`] to a gRPC code and an HTTP status.
//!
//! gRPC statuses also carry typed details (`google.rpc` error details, in the
//! `grpc-status-details-bin` trailer), so clients read values instead of
//! parsing the message:
//!
//! - always an `ErrorInfo`: `reason` = [`LockError::kind`], `domain` =
//!   [`ERROR_DOMAIN`], and `metadata` as listed on [`error_metadata`];
//! - a `RetryInfo` whenever [`Presentation::retry_after`] is set;
//! - a `BadRequest` naming the field for invalid arguments.

use std::collections::HashMap;
use std::time::Duration;

use tonic::Code;
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::error::LockError;

/// The `ErrorInfo.domain` of every coordinator error.
pub const ERROR_DOMAIN: &str = "globallock";

/// How an error is presented to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presentation {
    /// gRPC status code.
    pub grpc: Code,
    /// HTTP status code.
    pub http: u16,
    /// A stable slug naming the problem (used in problem+json `type`).
    pub kind: &'static str,
    /// When the caller may usefully retry, if that is known.
    pub retry_after: Option<Duration>,
}

/// The table.
pub fn present(error: &LockError) -> Presentation {
    let kind = error.kind();
    let p = |grpc, http| Presentation {
        grpc,
        http,
        kind,
        retry_after: None,
    };
    match error {
        LockError::Invalid(_) => p(Code::InvalidArgument, 400),
        LockError::RequestIdReused { .. } => p(Code::InvalidArgument, 422),
        LockError::Held { remaining, .. } => Presentation {
            retry_after: Some(*remaining),
            ..p(Code::Aborted, 409)
        },
        LockError::WaitExpired { holder, .. } => Presentation {
            retry_after: holder.as_ref().map(|(_, remaining)| *remaining),
            ..p(Code::Aborted, 409)
        },
        LockError::Contended { .. } => Presentation {
            retry_after: Some(Duration::from_millis(100)),
            ..p(Code::Aborted, 409)
        },
        LockError::NotFound { .. } => p(Code::NotFound, 404),
        LockError::Unavailable(_) | LockError::TooSlow { .. } => Presentation {
            retry_after: Some(Duration::from_secs(1)),
            ..p(Code::Unavailable, 503)
        },
        LockError::RateLimited { retry_after, .. } => Presentation {
            retry_after: Some(*retry_after),
            ..p(Code::ResourceExhausted, 429)
        },
        LockError::QuotaExceeded(_) => p(Code::ResourceExhausted, 429),
        LockError::TokensExhausted(_) => p(Code::FailedPrecondition, 409),
        LockError::Unauthenticated(_) => p(Code::Unauthenticated, 401),
        LockError::Denied(_) | LockError::NotOwner { .. } => p(Code::PermissionDenied, 403),
        LockError::Internal(_) => p(Code::Internal, 500),
    }
}

/// The gRPC status for an error: message = the error's full text, details =
/// an `ErrorInfo`, a `RetryInfo` when a retry can help and a `BadRequest` for
/// an invalid field (see the module docs).
pub fn to_status(error: &LockError) -> tonic::Status {
    let presentation = present(error);
    let mut details =
        ErrorDetails::with_error_info(presentation.kind, ERROR_DOMAIN, error_metadata(error));
    if let Some(after) = presentation.retry_after {
        details.set_retry_info(Some(after));
    }
    if let Some((field, description)) = bad_field(error) {
        details.set_bad_request(vec![FieldViolation::new(field, description)]);
    }
    tonic::Status::with_error_details(presentation.grpc, error.to_string(), details)
}

/// The `ErrorInfo.metadata` of an error (durations in whole milliseconds,
/// lists comma-separated):
///
/// | kind | keys |
/// | --- | --- |
/// | `held` | `resource`, `owner`, `remaining_ms` (the holder; after a wait also `waited_ms`, and the holder only when one was seen) |
/// | `contended` | `resource` |
/// | `no-quorum` | `reachable_regions`, `unreachable_regions` (or, for a grant slower than its TTL, `elapsed_ms`, `ttl_ms`) |
/// | `invalid-argument`, `request-id-reused` | `field` (and `request_id`) |
/// | `not-found` | `lock_id` |
/// | `rate-limited` | `owner` |
/// | `quota-exceeded` | `principal`, `quota` (`locks held` or `waiting acquires`), `limit` |
/// | `tokens-exhausted` | `mark` |
pub fn error_metadata(error: &LockError) -> HashMap<String, String> {
    let mut metadata = HashMap::new();
    let mut put = |key: &str, value: String| {
        metadata.insert(key.to_owned(), value);
    };
    match error {
        LockError::Invalid(input) => put("field", input.field.to_owned()),
        LockError::RequestIdReused { request_id } => {
            put("field", "request_id".to_owned());
            put("request_id", request_id.clone());
        }
        LockError::Held {
            resource,
            owner,
            remaining,
        } => {
            put("resource", resource.clone());
            put("owner", owner.clone());
            put("remaining_ms", millis(*remaining).to_string());
        }
        LockError::WaitExpired {
            resource,
            waited,
            holder,
        } => {
            put("resource", resource.clone());
            put("waited_ms", millis(*waited).to_string());
            if let Some((owner, remaining)) = holder {
                put("owner", owner.clone());
                put("remaining_ms", millis(*remaining).to_string());
            }
        }
        LockError::Contended { resource } => put("resource", resource.clone()),
        LockError::NotFound { lock_id } => put("lock_id", lock_id.clone()),
        LockError::Unavailable(reach) => {
            put("reachable_regions", reach.reachable.join(","));
            let unreachable: Vec<&str> = reach
                .unreachable
                .iter()
                .map(|f| f.region.as_str())
                .collect();
            put("unreachable_regions", unreachable.join(","));
        }
        LockError::TooSlow { elapsed, ttl } => {
            put("elapsed_ms", millis(*elapsed).to_string());
            put("ttl_ms", millis(*ttl).to_string());
        }
        LockError::RateLimited { owner, .. } => put("owner", owner.clone()),
        LockError::QuotaExceeded(exceeded) => {
            put("principal", exceeded.principal.clone());
            put("quota", exceeded.quota.as_str().to_owned());
            put("limit", exceeded.limit.to_string());
        }
        LockError::TokensExhausted(exhausted) => put("mark", exhausted.mark.to_string()),
        LockError::Denied(denied) => {
            put("verb", denied.verb.as_str().to_owned());
            put("resource", denied.resource.clone());
        }
        LockError::NotOwner { lock_id } => put("lock_id", lock_id.clone()),
        LockError::Unauthenticated(_) | LockError::Internal(_) => {}
    }
    metadata
}

/// The field an invalid-argument error is about, and what is wrong with it.
fn bad_field(error: &LockError) -> Option<(&'static str, String)> {
    match error {
        LockError::Invalid(input) => Some((input.field, input.problem.clone())),
        LockError::RequestIdReused { .. } => Some((
            "request_id",
            "already used for an acquire with a different owner or ttl_ms".to_owned(),
        )),
        _ => None,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use globallock_protocol::fence::TokensExhausted;
    use globallock_protocol::request::InvalidInput;
    use tonic_types::StatusExt;

    use super::*;
    use crate::error::{Reachability, RegionFailure};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One error of every kind, with the retry delay its status must carry.
    fn every_kind() -> Vec<(LockError, &'static str, Option<Duration>)> {
        vec![
            (
                LockError::Invalid(InvalidInput::new("ttl_ms", "0 is out of bounds")),
                "invalid-argument",
                None,
            ),
            (
                LockError::RequestIdReused {
                    request_id: "r-1".into(),
                },
                "request-id-reused",
                None,
            ),
            (
                LockError::Held {
                    resource: "orders/42".into(),
                    owner: "billing-7f9c".into(),
                    remaining: ms(30_831),
                },
                "held",
                Some(ms(30_831)),
            ),
            (
                LockError::WaitExpired {
                    resource: "orders/42".into(),
                    waited: ms(500),
                    holder: Some(("billing-7f9c".into(), ms(12))),
                },
                "held",
                Some(ms(12)),
            ),
            (
                LockError::WaitExpired {
                    resource: "orders/42".into(),
                    waited: ms(500),
                    holder: None,
                },
                "held",
                None,
            ),
            (
                LockError::Contended {
                    resource: "orders/42".into(),
                },
                "contended",
                Some(ms(100)),
            ),
            (
                LockError::NotFound {
                    lock_id: "l-1".into(),
                },
                "not-found",
                None,
            ),
            (
                LockError::Unavailable(Reachability {
                    reachable: vec!["eu".into()],
                    unreachable: vec![
                        RegionFailure {
                            region: "us".into(),
                            status: tonic::Status::unavailable("connection refused"),
                        },
                        RegionFailure {
                            region: "ap".into(),
                            status: tonic::Status::deadline_exceeded("timeout"),
                        },
                    ],
                }),
                "no-quorum",
                Some(ms(1_000)),
            ),
            (
                LockError::TooSlow {
                    elapsed: ms(1_200),
                    ttl: ms(1_000),
                },
                "no-quorum",
                Some(ms(1_000)),
            ),
            (
                LockError::RateLimited {
                    owner: "billing-7f9c".into(),
                    retry_after: ms(250),
                },
                "rate-limited",
                Some(ms(250)),
            ),
            (
                LockError::QuotaExceeded(crate::quota::QuotaExceeded {
                    principal: "billing".into(),
                    quota: crate::quota::Quota::Locks,
                    limit: 2,
                }),
                "quota-exceeded",
                None,
            ),
            (
                LockError::TokensExhausted(TokensExhausted { mark: u64::MAX }),
                "tokens-exhausted",
                None,
            ),
            (LockError::Internal("bad answer".into()), "internal", None),
        ]
    }

    #[test]
    fn every_status_carries_its_kind_as_error_info_and_its_retry_delay_as_retry_info() {
        for (error, reason, retry) in every_kind() {
            let status = to_status(&error);
            assert_eq!(status.code(), present(&error).grpc, "{error}");
            assert_eq!(status.message(), error.to_string(), "message unchanged");
            let details = status.check_error_details().unwrap();
            let info = details.error_info().expect("an ErrorInfo");
            assert_eq!(info.reason, reason, "{error}");
            assert_eq!(info.reason, error.kind(), "{error}");
            assert_eq!(info.domain, "globallock");
            assert_eq!(
                details.retry_info().and_then(|r| r.retry_delay),
                retry,
                "{error}"
            );
            assert_eq!(details.retry_info().is_some(), retry.is_some(), "{error}");
            assert_eq!(retry, present(&error).retry_after, "{error}");
        }
    }

    #[test]
    fn held_statuses_name_the_holder_and_how_long_it_holds() {
        let status = to_status(&LockError::Held {
            resource: "orders/42".into(),
            owner: "billing-7f9c".into(),
            remaining: ms(30_831),
        });
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata["owner"], "billing-7f9c");
        assert_eq!(info.metadata["remaining_ms"], "30831");
        assert_eq!(info.metadata["resource"], "orders/42");

        let status = to_status(&LockError::WaitExpired {
            resource: "orders/42".into(),
            waited: ms(500),
            holder: Some(("a \"b\"".into(), ms(12))),
        });
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata["owner"], "a \"b\"");
        assert_eq!(info.metadata["remaining_ms"], "12");
        assert_eq!(info.metadata["waited_ms"], "500");

        let status = to_status(&LockError::WaitExpired {
            resource: "orders/42".into(),
            waited: ms(500),
            holder: None,
        });
        let info = status.get_details_error_info().unwrap();
        assert!(!info.metadata.contains_key("owner"));
        assert!(!info.metadata.contains_key("remaining_ms"));
    }

    #[test]
    fn no_quorum_statuses_name_the_regions() {
        let (error, _, _) = every_kind()
            .into_iter()
            .find(|(e, _, _)| matches!(e, LockError::Unavailable(_)))
            .unwrap();
        let info = to_status(&error).get_details_error_info().unwrap();
        assert_eq!(info.metadata["reachable_regions"], "eu");
        assert_eq!(info.metadata["unreachable_regions"], "us,ap");
    }

    #[test]
    fn invalid_arguments_name_the_field_as_metadata_and_as_a_bad_request() {
        let status = to_status(&LockError::Invalid(InvalidInput::new(
            "ttl_ms",
            "0 is out of bounds",
        )));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.check_error_details().unwrap();
        assert_eq!(details.error_info().unwrap().metadata["field"], "ttl_ms");
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "ttl_ms");
        assert_eq!(violations[0].description, "0 is out of bounds");

        let status = to_status(&LockError::RequestIdReused {
            request_id: "r-1".into(),
        });
        let details = status.check_error_details().unwrap();
        assert_eq!(
            details.error_info().unwrap().metadata["field"],
            "request_id"
        );
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "request_id"
        );

        // Other errors name no field.
        let status = to_status(&LockError::Internal("x".into()));
        assert!(status.get_details_bad_request().is_none());
    }
}
