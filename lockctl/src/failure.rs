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

    /// A failed call to the service.
    pub fn client(error: &ClientError) -> Self {
        let message = error.to_string();
        match error {
            ClientError::InvalidArgument(status) => {
                if status.message().contains("was already used for an acquire") {
                    Self::new("request-id-reused", EXIT_USAGE, message).hint(
                        "a retry must use the same --owner and --ttl as the first call; \
                         or use a new --request-id",
                    )
                } else {
                    Self::new("invalid-argument", EXIT_USAGE, message)
                }
            }
            ClientError::Held(status) => {
                let kind = if status.message().contains("is contended") {
                    "contended"
                } else {
                    "held"
                };
                let mut failure = Self::new(kind, EXIT_HELD, message);
                if let Some(holder) = quoted_after(status.message(), "held by ") {
                    failure = failure.with("holder", holder);
                }
                match millis_after(status.message(), "for at least another ") {
                    Some(ms) => failure.with("retry_after_ms", ms),
                    None if kind == "contended" => failure.with("retry_after_ms", 100),
                    None => failure,
                }
            }
            ClientError::RateLimited(status) => {
                let failure = Self::new("rate-limited", EXIT_HELD, message);
                match millis_after(status.message(), "retry in ") {
                    Some(ms) => failure.with("retry_after_ms", ms),
                    None => failure,
                }
            }
            ClientError::NoQuorum(_) => {
                Self::new("no-quorum", EXIT_NO_QUORUM, message).with("retry_after_ms", 1_000)
            }
            ClientError::Lost(_) => Self::new("not-held", 1, message),
            ClientError::LockLost(_) => Self::new("lock-lost", EXIT_LOCK_LOST, message),
            ClientError::Endpoint { endpoint, .. } => {
                Self::new("bad-endpoint", EXIT_USAGE, message).with("endpoint", endpoint.clone())
            }
            ClientError::NoEndpoints => Self::new("bad-endpoint", EXIT_USAGE, message),
            ClientError::Unreachable(failures) => unreachable(failures),
            _ => Self::new("coordinator-error", EXIT_UNREACHABLE, message),
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

/// The `"..."` right after `marker` (Rust debug quoting, as the coordinator
/// writes owners).
fn quoted_after(text: &str, marker: &str) -> Option<String> {
    let at = text.find(marker)? + marker.len();
    let rest = text[at..].strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.push(chars.next()?),
            c => value.push(c),
        }
    }
    None
}

/// The number in `<marker>N ms`.
fn millis_after(text: &str, marker: &str) -> Option<u64> {
    let at = text.find(marker)? + marker.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_and_retry_after_come_from_the_coordinators_message() {
        let text =
            r#"resource "orders/42" is held by "lockctl@vm:27635" for at least another 30831 ms"#;
        assert_eq!(
            quoted_after(text, "held by ").as_deref(),
            Some("lockctl@vm:27635")
        );
        assert_eq!(millis_after(text, "for at least another "), Some(30_831));
        let waited = r#"resource "r" still held after waiting 500 ms (held by "a \"b\"" for at least another 12 ms)"#;
        assert_eq!(quoted_after(waited, "held by ").as_deref(), Some("a \"b\""));
        assert_eq!(millis_after(waited, "for at least another "), Some(12));
        assert_eq!(quoted_after("no holder", "held by "), None);
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
