//! Every way lockctl fails, with its exit code, as text on stderr or, with
//! `--output json`, as one JSON object on stdout:
//! `{"error": {"kind": "...", "message": "...", "exit_code": N, ...}}`.

use std::process::ExitCode;

use globallock_client::{ClientError, EndpointFailure, EndpointProblem};
use serde_json::{Map, Value, json};

use crate::Output;

/// Usage error or invalid argument (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// An input file (an audit log) cannot be read (EX_NOINPUT).
pub const EXIT_NO_INPUT: u8 = 66;
/// No quorum (EX_UNAVAILABLE).
pub const EXIT_NO_QUORUM: u8 = 69;
/// Held by another, or rate limited: retry later (EX_TEMPFAIL).
pub const EXIT_HELD: u8 = 75;
/// No coordinator reachable, or it failed (EX_PROTOCOL).
pub const EXIT_UNREACHABLE: u8 = 76;
/// `run`/`lock`: the lock was lost while it was held.
pub const EXIT_LOCK_LOST: u8 = 79;
/// The TLS files cannot be used (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Not identified, or not allowed: another principal's lock, a verb the
/// caller's principal lacks (EX_NOPERM).
pub const EXIT_NO_PERMISSION: u8 = 77;

/// A failure, ready to report.
#[derive(Debug, Clone)]
pub struct Failure {
    /// A stable slug, e.g. `held`, `usage`, `unreachable`.
    pub kind: &'static str,
    /// One line for a human.
    pub message: String,
    /// Further lines for a human (what to do); not in JSON (see `extra`).
    pub hints: Vec<String>,
    /// The exit code.
    pub exit_code: u8,
    /// Extra JSON fields (`holder`, `retry_after_ms`, `endpoints`, `path`, ...).
    pub extra: Map<String, Value>,
}

impl Failure {
    pub fn new(kind: &'static str, exit_code: u8, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hints: Vec::new(),
            exit_code,
            extra: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// Print it (stderr as text, stdout as JSON) and return its exit code.
    pub fn report(&self, output: Output) -> ExitCode {
        match output {
            Output::Json => println!("{}", self.to_json()),
            Output::Text => {
                eprintln!("lockctl: {}", self.message);
                for hint in &self.hints {
                    eprintln!("  {hint}");
                }
            }
        }
        ExitCode::from(self.exit_code)
    }

    pub fn to_json(&self) -> Value {
        let mut error = Map::new();
        error.insert("kind".to_owned(), json!(self.kind));
        error.insert("message".to_owned(), json!(self.message));
        error.insert("exit_code".to_owned(), json!(self.exit_code));
        if !self.hints.is_empty() {
            error.insert("hint".to_owned(), json!(self.hints.join(" ")));
        }
        for (key, value) in &self.extra {
            error.insert(key.clone(), value.clone());
        }
        json!({ "error": error })
    }

    /// A command-line usage error from clap.
    pub fn usage(error: &clap::Error) -> Self {
        if error.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            return Self::new("usage", EXIT_USAGE, "a command is required")
                .hint("see `lockctl --help`");
        }
        // clap's rendering, without its "error: " prefix and colour.
        let text = error.render().to_string();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let first = lines
            .next()
            .unwrap_or("usage error")
            .trim_start_matches("error: ")
            .to_owned();
        let mut failure = Self::new("usage", EXIT_USAGE, first);
        for line in lines {
            failure = failure.hint(line.trim());
        }
        failure
    }

    /// A failed call to the service. The holder and the retry delay come as
    /// values from the coordinator's typed error details, not from its text.
    pub fn client(error: &ClientError) -> Self {
        let message = error.to_string();
        let reason = error.reason();
        let failure = match error {
            ClientError::InvalidArgument(_) if reason.as_deref() == Some("request-id-reused") => {
                Self::new("request-id-reused", EXIT_USAGE, message).hint(
                    "a retry must use the same --owner and --ttl as the first call; \
                     or use a new --request-id",
                )
            }
            ClientError::InvalidArgument(_) => Self::new("invalid-argument", EXIT_USAGE, message),
            ClientError::Held(_) if reason.as_deref() == Some("contended") => {
                Self::new("contended", EXIT_HELD, message)
            }
            ClientError::Held(_) => {
                let failure = Self::new("held", EXIT_HELD, message);
                match error.holder() {
                    Some(holder) => failure.with("holder", holder.owner),
                    None => failure,
                }
            }
            ClientError::RateLimited(_) => Self::new("rate-limited", EXIT_HELD, message),
            ClientError::QuotaExceeded(_) => Self::new("quota-exceeded", EXIT_HELD, message),
            ClientError::NoQuorum(_) => Self::new("no-quorum", EXIT_NO_QUORUM, message),
            ClientError::Lost(_) => Self::new("not-held", 1, message),
            ClientError::LockLost(_) => Self::new("lock-lost", EXIT_LOCK_LOST, message),
            ClientError::Endpoint { endpoint, .. } => {
                Self::new("bad-endpoint", EXIT_USAGE, message).with("endpoint", endpoint.clone())
            }
            ClientError::NoEndpoints => Self::new("bad-endpoint", EXIT_USAGE, message),
            ClientError::Tls(cause) => {
                let mut text = message;
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(cause);
                while let Some(e) = source {
                    text.push_str(": ");
                    text.push_str(&e.to_string());
                    source = e.source();
                }
                Self::new("tls", EXIT_CONFIG, text)
                    .hint("--ca, --cert and --key name PEM files (or GLOBALLOCK_CA, _CERT, _KEY)")
            }
            ClientError::Unreachable(failures) => unreachable(failures),
            ClientError::Transport(status) if status.code() == tonic::Code::PermissionDenied => {
                Self::new("permission-denied", EXIT_NO_PERMISSION, message)
            }
            ClientError::Transport(status) if status.code() == tonic::Code::Unauthenticated => {
                Self::new("unauthenticated", EXIT_NO_PERMISSION, message).hint(
                    "--cert and --key (or --token) identify you; the coordinator's [access] must name that identity",
                )
            }
            _ => Self::new("coordinator-error", EXIT_UNREACHABLE, message),
        };
        // Held: until the holder's grant ends; contended, no quorum, rate
        // limited: the coordinator's advice.
        match error.retry_after() {
            Some(after) => failure.with(
                "retry_after_ms",
                u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            ),
            None => failure,
        }
    }
}

/// No coordinator answered: say, per endpoint, what is wrong and what to do.
fn unreachable(failures: &[EndpointFailure]) -> Failure {
    let message = match failures {
        [one] => format!("cannot reach the coordinator at {one}"),
        _ => format!(
            "cannot reach any coordinator: {}",
            failures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    let mut failure = Failure::new("unreachable", EXIT_UNREACHABLE, message);
    let mut endpoints = Vec::new();
    let mut hinted = Vec::new();
    for f in failures {
        let hint = endpoint_hint(f);
        endpoints.push(json!({
            "endpoint": f.endpoint,
            "problem": f.problem,
            "detail": f.detail,
            "hint": hint,
        }));
        if !hinted.contains(&hint) {
            hinted.push(hint.clone());
            failure = failure.hint(hint);
        }
    }
    failure.with("endpoints", endpoints)
}

fn endpoint_hint(failure: &EndpointFailure) -> String {
    let endpoint = &failure.endpoint;
    match failure.problem {
        EndpointProblem::Refused => format!(
            "nothing listens at {endpoint}: is the cluster running (`make dev` starts one, \
             its gRPC endpoint is http://127.0.0.1:7400)? Check --endpoint / GLOBALLOCK_ENDPOINT"
        ),
        EndpointProblem::NotGrpc if failure.detail.contains("json") => format!(
            "{endpoint} is not the coordinator's gRPC port: this looks like the REST port. \
             lockctl needs the gRPC port, e.g. http://127.0.0.1:7400 with `make dev` \
             (whose REST port is 7480)"
        ),
        EndpointProblem::NotGrpc => format!(
            "{endpoint} is not the coordinator's gRPC port (an HTTP server that is not a \
             coordinator, or its REST port). lockctl needs the gRPC port, e.g. \
             http://127.0.0.1:7400 with `make dev`"
        ),
        // --discover: the SRV record itself.
        EndpointProblem::Dns if endpoint.starts_with('_') => format!(
            "no coordinator found through DNS at {endpoint}: check the zone given to \
             --discover, the record (`dig SRV {endpoint}`) and --dns-server"
        ),
        EndpointProblem::Dns => {
            format!("the host in {endpoint} does not resolve: check the name")
        }
        EndpointProblem::Timeout => format!(
            "no connection to {endpoint} in time: check the address, the network and that \
             the coordinator is up"
        ),
        _ => format!("check that a coordinator runs at {endpoint} (`make dev` starts one)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator_error(
        code: tonic::Code,
        reason: &str,
        metadata: &[(&str, &str)],
        retry_ms: Option<u64>,
    ) -> tonic::Status {
        let metadata: std::collections::HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut details =
            tonic_types::ErrorDetails::with_error_info(reason, "globallock", metadata);
        if let Some(ms) = retry_ms {
            details.set_retry_info(Some(std::time::Duration::from_millis(ms)));
        }
        // The text is not read: it says nothing about the holder here.
        <tonic::Status as tonic_types::StatusExt>::with_error_details(code, "busy", details)
    }

    #[test]
    fn refusals_of_access_exit_77_with_their_own_kind() {
        let denied = ClientError::Transport(tonic::Status::permission_denied(
            "permission denied: lock \"x\" belongs to another principal",
        ));
        let error = &Failure::client(&denied).to_json()["error"];
        assert_eq!(error["kind"], "permission-denied");
        assert_eq!(error["exit_code"], EXIT_NO_PERMISSION);
        let unknown = ClientError::Transport(tonic::Status::unauthenticated("unknown identity"));
        let error = &Failure::client(&unknown).to_json()["error"];
        assert_eq!(error["kind"], "unauthenticated");
        assert_eq!(error["exit_code"], EXIT_NO_PERMISSION);
        let quota = ClientError::QuotaExceeded(coordinator_error(
            tonic::Code::ResourceExhausted,
            "quota-exceeded",
            &[("principal", "p")],
            None,
        ));
        assert_eq!(
            Failure::client(&quota).to_json()["error"]["kind"],
            "quota-exceeded"
        );
    }

    #[test]
    fn holder_and_retry_after_come_from_the_typed_details() {
        let held = ClientError::Held(coordinator_error(
            tonic::Code::Aborted,
            "held",
            &[("owner", "a \"b\""), ("remaining_ms", "30831")],
            Some(30_831),
        ));
        let error = &Failure::client(&held).to_json()["error"];
        assert_eq!(error["kind"], "held");
        assert_eq!(error["exit_code"], EXIT_HELD);
        assert_eq!(error["holder"], "a \"b\"");
        assert_eq!(error["retry_after_ms"], 30_831);

        let contended = ClientError::Held(coordinator_error(
            tonic::Code::Aborted,
            "contended",
            &[("resource", "r")],
            Some(100),
        ));
        let error = &Failure::client(&contended).to_json()["error"];
        assert_eq!(error["kind"], "contended");
        assert_eq!(error["retry_after_ms"], 100);
        assert!(error.get("holder").is_none(), "{error}");

        let limited = ClientError::RateLimited(coordinator_error(
            tonic::Code::ResourceExhausted,
            "rate-limited",
            &[("owner", "o")],
            Some(250),
        ));
        let error = &Failure::client(&limited).to_json()["error"];
        assert_eq!(error["kind"], "rate-limited");
        assert_eq!(error["retry_after_ms"], 250);

        let no_quorum = ClientError::NoQuorum(coordinator_error(
            tonic::Code::Unavailable,
            "no-quorum",
            &[
                ("reachable_regions", "eu"),
                ("unreachable_regions", "us,ap"),
            ],
            Some(1_000),
        ));
        let error = &Failure::client(&no_quorum).to_json()["error"];
        assert_eq!(error["kind"], "no-quorum");
        assert_eq!(error["exit_code"], EXIT_NO_QUORUM);
        assert_eq!(error["retry_after_ms"], 1_000);

        let reused = ClientError::InvalidArgument(coordinator_error(
            tonic::Code::InvalidArgument,
            "request-id-reused",
            &[("field", "request_id")],
            None,
        ));
        let error = &Failure::client(&reused).to_json()["error"];
        assert_eq!(error["kind"], "request-id-reused");
        assert!(error.get("retry_after_ms").is_none(), "{error}");
    }

    #[test]
    fn json_errors_have_a_stable_shape() {
        let value = Failure::new("held", 75, "held by another")
            .with("holder", "bob")
            .to_json();
        assert_eq!(value["error"]["kind"], "held");
        assert_eq!(value["error"]["exit_code"], 75);
        assert_eq!(value["error"]["message"], "held by another");
        assert_eq!(value["error"]["holder"], "bob");
    }
}
