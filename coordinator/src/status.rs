//! The one table that maps every [`LockError`] to a gRPC code and an HTTP status.

use std::time::Duration;

use tonic::Code;

use crate::error::LockError;

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
        LockError::TokensExhausted(_) => p(Code::FailedPrecondition, 409),
        LockError::Internal(_) => p(Code::Internal, 500),
    }
}

/// The gRPC status for an error (message = the error's full text).
pub fn to_status(error: &LockError) -> tonic::Status {
    tonic::Status::new(present(error).grpc, error.to_string())
}
