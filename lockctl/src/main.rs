//! `lockctl`: acquire, renew, release, describe and validate global locks from a
//! shell. Output is a readable table or, with `--output json`, one JSON object.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use globallock_client::{Client, ClientError};
use serde::Serialize;

mod audit;
mod run;

const EXIT_CODES: &str = "\
Exit status:
  0   success (for `validate`: the token is current)
  N   `run`: the command's own exit status (128+signal if it was killed by one)
  1   `validate`: the token is not current; renew/release: the lock is not held
      (unknown, expired, released or superseded)
  64  usage error or invalid argument (EX_USAGE)
  69  no quorum: a majority of regions is unreachable (EX_UNAVAILABLE)
  75  the resource is held by another lock (EX_TEMPFAIL): retry later or use --wait
  76  cannot reach any coordinator (EX_PROTOCOL)
  79  `run`: the lock was lost while the command ran; it was sent SIGTERM, then
      SIGKILL after --grace
  126 `run`: the command could not be executed; 127: it was not found";

/// `run`: the lock was lost while the command ran.
const EXIT_LOCK_LOST: u8 = 79;

/// Command-line client of the global lock coordinator.
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    /// Coordinator URL(s); repeat or separate with commas to fail over.
    #[arg(
        long,
        env = "GLOBALLOCK_ENDPOINT",
        default_value = "http://127.0.0.1:7400",
        value_delimiter = ',',
        global = true
    )]
    endpoint: Vec<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "text", global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Acquire a lock and print its id and fencing token.
    Acquire {
        /// The resource to lock.
        resource: String,
        /// Who is asking (shown to other contenders).
        #[arg(long, env = "GLOBALLOCK_OWNER", default_value_t = default_owner())]
        owner: String,
        /// TTL, e.g. 30s, 1500ms, 2m.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        ttl: Duration,
        /// Keep trying this long while the resource is held (0: try once).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        wait: Duration,
        /// Idempotency key: retrying with the same id returns the same lock.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Extend a held lock.
    Renew {
        /// The lock id printed by `acquire`.
        lock_id: String,
        /// New TTL from now (default: the TTL it was granted with).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Release a held lock.
    Release {
        /// The lock id printed by `acquire`.
        lock_id: String,
    },
    /// Show who holds a resource.
    Describe {
        /// The resource.
        resource: String,
    },
    /// Run a command while holding the lock (like flock(1)): renews the lock while
    /// the command runs, passes GLOBALLOCK_RESOURCE, GLOBALLOCK_LOCK_ID and
    /// GLOBALLOCK_FENCING_TOKEN in its environment, exits with its status, and
    /// stops it (SIGTERM, then SIGKILL) if the lock is lost.
    Run {
        /// The resource to lock.
        resource: String,
        /// Who is asking (shown to other contenders).
        #[arg(long, env = "GLOBALLOCK_OWNER", default_value_t = default_owner())]
        owner: String,
        /// TTL; the lock is renewed at about a third of it.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        ttl: Duration,
        /// Wait this long for the lock while another holds it.
        #[arg(long, default_value = "60s", value_parser = parse_duration, conflicts_with = "no_wait")]
        wait: Duration,
        /// Do not wait: exit 75 at once if the lock is held.
        #[arg(long)]
        no_wait: bool,
        /// After SIGTERM on lock loss, wait this long before SIGKILL.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        grace: Duration,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Who held a resource, when: read from audit trail files (the coordinator's
    /// and agents' `audit_log`).
    Audit {
        /// The resource.
        resource: String,
        /// An audit log file (repeat for several; e.g. every coordinator's and agent's).
        #[arg(long = "log", required = true)]
        logs: Vec<std::path::PathBuf>,
        /// Only the holder at this time (ms since the epoch, or 2026-11-26T08:15:00Z).
        #[arg(long, value_parser = audit::parse_time)]
        at: Option<u64>,
    },
    /// Check whether a fencing token is still the current holder's.
    Validate {
        /// The resource.
        resource: String,
        /// The token to check.
        fencing_token: u64,
    },
}

fn default_owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!(
        "lockctl@{}:{}",
        if host.is_empty() { "localhost" } else { &host },
        std::process::id()
    )
}

/// Parse `1500ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 1500ms, 30s, 2m"))?;
    let millis = match unit {
        "ms" => Some(number),
        "" | "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = match Client::connect(&cli.endpoint) {
        Ok(client) => client,
        Err(error) => return fail(&error),
    };
    let result = match &cli.command {
        Command::Acquire {
            resource,
            owner,
            ttl,
            wait,
            request_id,
        } => client
            .acquire_with_id(resource, owner, *ttl, *wait, request_id)
            .await
            .map(|lock| print(cli.output, &lock, ExitCode::SUCCESS)),
        Command::Renew { lock_id, ttl } => client
            .renew(lock_id, ttl.unwrap_or(Duration::ZERO))
            .await
            .map(|renewal| print(cli.output, &renewal, ExitCode::SUCCESS)),
        Command::Release { lock_id } => client.release(lock_id).await.map(|regions| {
            #[derive(Serialize)]
            struct Released {
                released: bool,
                released_regions: Vec<String>,
            }
            print(
                cli.output,
                &Released {
                    released: true,
                    released_regions: regions,
                },
                ExitCode::SUCCESS,
            )
        }),
        Command::Describe { resource } => client
            .describe(resource)
            .await
            .map(|description| print(cli.output, &description, ExitCode::SUCCESS)),
        Command::Audit { resource, logs, at } => {
            return audit::audit(resource, logs, *at, cli.output == Output::Json);
        }
        Command::Run {
            resource,
            owner,
            ttl,
            wait,
            no_wait,
            grace,
            command,
        } => {
            let wait = if *no_wait { Duration::ZERO } else { *wait };
            return run::run(
                &client,
                resource,
                owner,
                *ttl,
                wait,
                *grace,
                command,
                EXIT_LOCK_LOST,
            )
            .await
            .unwrap_or_else(|error| fail(&error));
        }
        Command::Validate {
            resource,
            fencing_token,
        } => client.validate(resource, *fencing_token).await.map(|v| {
            let code = if v.current {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
            print(cli.output, &v, code)
        }),
    };
    result.unwrap_or_else(|error| fail(&error))
}

/// Print `value` as JSON or as aligned `key  value` lines.
fn print<T: Serialize>(output: Output, value: &T, code: ExitCode) -> ExitCode {
    let json = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    match output {
        Output::Json => println!("{json}"),
        Output::Text => {
            if let serde_json::Value::Object(fields) = &json {
                let width = fields.keys().map(String::len).max().unwrap_or(0);
                for (key, value) in fields {
                    let text = match value {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Array(items) => items
                            .iter()
                            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(", "),
                        other => other.to_string(),
                    };
                    println!("{key:<width$}  {text}");
                }
            }
        }
    }
    code
}

fn fail(error: &ClientError) -> ExitCode {
    eprintln!("lockctl: {error}");
    ExitCode::from(match error {
        ClientError::InvalidArgument(_)
        | ClientError::Endpoint { .. }
        | ClientError::NoEndpoints => 64,
        ClientError::NoQuorum(_) => 69,
        ClientError::Held(_) => 75,
        ClientError::Lost(_) => 1,
        _ => 76,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("3 days").is_err());
    }
}
