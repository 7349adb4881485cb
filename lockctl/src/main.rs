//! `lockctl`: acquire, renew, release, describe, list and validate global locks
//! from a shell. Output is a readable table or, with `--output json`, one JSON object
//! (errors too: `{"error": {"kind", "message", "exit_code", ...}}` on stdout).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use globallock_client::Client;
use serde::Serialize;

use duration::parse_duration;
use failure::{EXIT_USAGE, Failure};

mod audit;
mod duration;
mod failure;
mod hold;
mod list;
mod run;

const EXIT_CODES: &str = "\
Durations (--ttl, --wait, --grace): a number and a unit, repeatable: 30s, 1500ms,
1.5s, 1m30s, 2h (units ns, us, ms, s, m, h, d; case-insensitive). A bare number
other than 0 is refused: write 10s, not 10.

Errors: a line on stderr; with --output json, one object on stdout:
  {\"error\": {\"kind\": \"held\", \"message\": \"...\", \"exit_code\": 75, \"holder\": \"...\", \"retry_after_ms\": 30831}}

Exit status:
  0   success (for `validate`: the token is current; `lock`: released on Ctrl-C/SIGTERM)
  N   `run`: the command's own exit status (128+signal if it was killed by one)
  1   `validate`: the token is not current; renew/release: the lock is not held
      (unknown, expired, released or superseded)
  64  usage error or invalid argument, including a bad --endpoint (EX_USAGE)
  66  `audit`: an audit log cannot be read; the message names the file (EX_NOINPUT)
  69  no quorum: a majority of regions is unreachable (EX_UNAVAILABLE)
  75  the resource is held by another lock, or the owner is rate limited
      (EX_TEMPFAIL): retry later or use --wait
  76  cannot reach any coordinator, or it failed (EX_PROTOCOL)
  78  the TLS files (--ca, --cert, --key) cannot be used (EX_CONFIG)
  79  `run`/`lock`: the lock was lost while held; `run` sent the command SIGTERM,
      then SIGKILL after --grace
  126 `run`: the command could not be executed; 127: it was not found";

/// Command-line client of the global lock coordinator.
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    /// Coordinator gRPC URL(s), e.g. https://127.0.0.1:7400 (not the REST port;
    /// http:// for a coordinator run with insecure = true); repeat or separate
    /// with commas to fail over.
    #[arg(
        long,
        env = "GLOBALLOCK_ENDPOINT",
        default_value = "https://127.0.0.1:7400",
        value_delimiter = ',',
        global = true
    )]
    endpoint: Vec<String>,
    /// Find the coordinators through DNS instead of --endpoint: the SRV record
    /// _globallock._tcp.ZONE, over TLS (--ca, or the dev CA). Each coordinator is
    /// dialled by its SRV target name, which its certificate must carry. On the
    /// command line it wins over GLOBALLOCK_ENDPOINT, and --endpoint over
    /// GLOBALLOCK_DISCOVER; both flags at once are a usage error.
    #[arg(long, env = "GLOBALLOCK_DISCOVER", value_name = "ZONE", global = true)]
    discover: Option<String>,
    /// With --discover: the DNS server(s) to ask, as IP:PORT (default: the
    /// system's, /etc/resolv.conf); repeat or separate with commas.
    #[arg(
        long,
        env = "GLOBALLOCK_DNS_SERVER",
        value_name = "IP:PORT",
        value_delimiter = ',',
        global = true
    )]
    dns_server: Vec<std::net::SocketAddr>,
    /// CA certificate (PEM) to trust for https:// endpoints. Default: the CA
    /// `make dev` made, DEV_DIR/tls/dev-ca.pem, when it exists.
    #[arg(long, env = "GLOBALLOCK_CA", global = true)]
    ca: Option<PathBuf>,
    /// This caller's certificate (PEM), for mutual TLS; with --key. Default with
    /// the dev CA: DEV_DIR/tls/client.pem, the dev client identity.
    #[arg(long, env = "GLOBALLOCK_CERT", global = true, requires = "key")]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, env = "GLOBALLOCK_KEY", global = true, requires = "cert")]
    key: Option<PathBuf>,
    /// A bearer token identifying the caller (for callers without a client
    /// certificate); prefer the environment variable to keep it out of `ps`.
    #[arg(long, env = "GLOBALLOCK_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Where `make dev` keeps its data (its CA and dev client identity are
    /// under tls/).
    #[arg(
        long,
        env = "GLOBALLOCK_DEV_DIR",
        default_value = ".dev-cluster",
        global = true
    )]
    dev_dir: PathBuf,
    /// Output format (errors too: with json, they are an object on stdout).
    #[arg(long, short, value_enum, default_value = "text", global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Acquire a lock and print its id and fencing token.
    Acquire {
        /// The resource to lock.
        resource: String,
        /// Who is asking (shown to other contenders). Default: lockctl@HOST:PID,
        /// or lockctl@HOST with --request-id, so that retrying the same command
        /// from this machine is recognised as the same request.
        #[arg(long, env = "GLOBALLOCK_OWNER")]
        owner: Option<String>,
        /// TTL, e.g. 30s, 1500ms, 1.5s, 1m30s (a bare number is refused).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        ttl: Duration,
        /// Keep trying this long while the resource is held (0: try once), e.g.
        /// 10s, 2h, or `forever`. Waits longer than a coordinator takes in one
        /// request (max_wait_ms, 60 s by default) are re-issued transparently.
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        wait: Duration,
        /// Idempotency key: retrying with the same id (and the same --owner and
        /// --ttl) returns the same lock.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Extend a held lock. Prints what the coordinator says is in force: the TTL
    /// applied, how long the lock may be relied on (validity_ms), and how long it
    /// stays held at least (expires_in_ms; renewal never shortens a lock).
    Renew {
        /// The lock id printed by `acquire`.
        lock_id: String,
        /// New TTL from now, e.g. 60s, 1m30s (a bare number is refused; default: the
        /// TTL it was granted with). Renewal never shortens a lock.
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
    /// List the locks held now, as a majority of regions agree, in resource order:
    /// resource, owner, fencing token, how long each stays held at least
    /// (expires_in_ms) and the regions holding it. Lock ids are not shown.
    List {
        /// Only resources whose name starts with this, e.g. orders/ (default: all).
        prefix: Option<String>,
        /// Show at most this many locks (default: all of them, fetched a page at a
        /// time); with more left, the next page's token is printed.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Continue where an earlier `list --limit` stopped (the token it printed).
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Hold a lock until Ctrl-C or SIGTERM, then release it (like `etcdctl lock`
    /// without a command): prints the lock id and fencing token once acquired and
    /// renews the lock meanwhile. Exits 79 if the lock is lost.
    Lock {
        /// The resource to lock.
        resource: String,
        /// Who is asking (shown to other contenders) [default: lockctl@HOST:PID].
        #[arg(long, env = "GLOBALLOCK_OWNER")]
        owner: Option<String>,
        /// TTL, e.g. 30s, 1.5s, 1m30s (a bare number is refused); the lock is renewed
        /// at about a third of it.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        ttl: Duration,
        /// Wait this long for the lock while another holds it, e.g. 5m, or `forever`.
        #[arg(long, default_value = "60s", value_parser = parse_duration, conflicts_with = "no_wait")]
        wait: Duration,
        /// Do not wait: exit 75 at once if the lock is held.
        #[arg(long)]
        no_wait: bool,
    },
    /// Run a command while holding the lock (like flock(1)): renews the lock while
    /// the command runs, passes GLOBALLOCK_RESOURCE, GLOBALLOCK_LOCK_ID and
    /// GLOBALLOCK_FENCING_TOKEN in its environment, exits with its status, and
    /// stops it (SIGTERM, then SIGKILL) if the lock is lost. The command dies with
    /// lockctl (even on kill -9). Ctrl-C/SIGTERM is passed to the command; a
    /// second one sends SIGTERM and SIGKILL after --grace; a third, SIGKILL.
    Run {
        /// The resource to lock.
        resource: String,
        /// Who is asking (shown to other contenders) [default: lockctl@HOST:PID].
        #[arg(long, env = "GLOBALLOCK_OWNER")]
        owner: Option<String>,
        /// TTL, e.g. 30s, 1.5s, 1m30s (a bare number is refused); the lock is renewed
        /// at about a third of it.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        ttl: Duration,
        /// Wait this long for the lock while another holds it, e.g. 5m, or `forever`.
        #[arg(long, default_value = "60s", value_parser = parse_duration, conflicts_with = "no_wait")]
        wait: Duration,
        /// Do not wait: exit 75 at once if the lock is held.
        #[arg(long)]
        no_wait: bool,
        /// After SIGTERM (on lock loss or a second Ctrl-C), wait this long before
        /// SIGKILL, e.g. 10s.
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

fn hostname() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    }
}

/// The owner when `--owner` is not given: `lockctl@HOST:PID`, or, for an
/// idempotent acquire (`--request-id`), `lockctl@HOST`: the coordinator accepts a
/// retry only with the same owner, and a retry is another process.
fn default_owner(owner: Option<&String>, request_id: &str) -> String {
    match owner {
        Some(owner) => owner.clone(),
        None if request_id.is_empty() => format!("lockctl@{}:{}", hostname(), std::process::id()),
        None => format!("lockctl@{}", hostname()),
    }
}

/// `--output json` as written on the command line, for reporting errors of a
/// command line clap refused.
fn json_requested(args: &[String]) -> bool {
    let mut args = args.iter().skip(1).take_while(|a| a.as_str() != "--");
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--output" | "-o" => args.next().map(String::as_str),
            other => other
                .strip_prefix("--output=")
                .or_else(|| other.strip_prefix("-o="))
                .or_else(|| other.strip_prefix("-o")),
        };
        if value == Some("json") {
            return true;
        }
    }
    false
}

/// A client for `--endpoint`: over TLS for https:// endpoints, trusting --ca
/// (or the dev CA of `make dev`) and showing --cert (or the dev client identity);
/// or, with `--discover`, of the coordinators DNS lists, over TLS.
async fn connect(cli: &Cli) -> Result<Client, globallock_client::ClientError> {
    let client = match &cli.discover {
        Some(zone) => discover(cli, zone).await?,
        None => connect_tls(cli)?,
    };
    match &cli.token {
        Some(token) => client.with_token(token),
        None => Ok(client),
    }
}

/// `--discover ZONE`: the coordinators of `_globallock._tcp.ZONE`, over TLS.
async fn discover(cli: &Cli, zone: &str) -> Result<Client, globallock_client::ClientError> {
    let Some(tls) = client_tls(cli) else {
        return Err(globallock_client::ClientError::Endpoint {
            endpoint: format!("--discover {zone}"),
            reason: "coordinators found through DNS are dialled over TLS: give the CA to trust \
                     (--ca, GLOBALLOCK_CA)"
                .into(),
        });
    };
    let discovery = globallock_client::Discovery::zone(zone).nameservers(cli.dns_server.clone());
    Client::discover_with(discovery, Some(&tls)).await
}

fn connect_tls(cli: &Cli) -> Result<Client, globallock_client::ClientError> {
    if !cli.endpoint.iter().any(|e| e.starts_with("https://")) {
        return Client::connect(&cli.endpoint);
    }
    match client_tls(cli) {
        Some(tls) => Client::connect_tls(&cli.endpoint, &tls),
        // Without a CA, say so (the endpoint check names what to do).
        None => Client::connect(&cli.endpoint),
    }
}

/// The CA to trust (--ca, or the dev CA) and the identity to show (--cert and
/// --key, or the dev client identity with the dev CA); `None` without a CA.
fn client_tls(cli: &Cli) -> Option<globallock_client::ClientTls> {
    let dev = cli.dev_dir.join("tls");
    let ca = match &cli.ca {
        Some(ca) => ca.clone(),
        None if dev.join("dev-ca.pem").exists() => dev.join("dev-ca.pem"),
        None => return None,
    };
    let identity = match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        // A token identifies the caller: no dev identity besides it.
        _ if cli.token.is_some() => None,
        _ if cli.ca.is_none() && dev.join("client.pem").exists() => {
            Some((dev.join("client.pem"), dev.join("client.key")))
        }
        _ => None,
    };
    Some(globallock_client::ClientTls { ca, identity })
}

/// The command line, with the coordinators named once: `--discover` or
/// `--endpoint`, whichever the command line gives (the environment yields to it).
fn parse(args: &[String]) -> Result<Cli, clap::Error> {
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let mut matches = Cli::command().try_get_matches_from(args)?;
    let typed = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let typed = (typed("discover"), typed("endpoint"));
    let mut cli = Cli::from_arg_matches_mut(&mut matches)
        .map_err(|error| error.format(&mut Cli::command()))?;
    match typed {
        (true, true) => {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--discover and --endpoint both name the coordinators: give one",
            ));
        }
        // --endpoint on the command line: GLOBALLOCK_DISCOVER yields.
        (false, true) => cli.discover = None,
        _ => {}
    }
    Ok(cli)
}

/// Help and version exit 0; every other command-line error exits 64 (EX_USAGE).
fn usage_error(error: &clap::Error, args: &[String]) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            ExitCode::SUCCESS
        }
        _ if json_requested(args) => Failure::usage(error).report(Output::Json),
        _ => {
            let _ = error.print();
            ExitCode::from(EXIT_USAGE)
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cli = match parse(&args) {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error, &args),
    };
    let output = cli.output;
    // Reading audit logs needs no coordinator (nor its CA).
    if let Command::Audit { resource, logs, at } = &cli.command {
        return audit::audit(resource, logs, *at, output);
    }
    let client = match connect(&cli).await {
        Ok(client) => client,
        Err(error) => return Failure::client(&error).report(output),
    };
    let result = match &cli.command {
        Command::Acquire {
            resource,
            owner,
            ttl,
            wait,
            request_id,
        } => {
            let owner = default_owner(owner.as_ref(), request_id);
            client
                .acquire_with_id(resource, &owner, *ttl, *wait, request_id)
                .await
                .map(|lock| print(output, &lock, ExitCode::SUCCESS))
        }
        Command::Renew { lock_id, ttl } => renew(&client, lock_id, *ttl, output).await,
        Command::Release { lock_id } => client.release(lock_id).await.map(|regions| {
            #[derive(Serialize)]
            struct Released {
                released: bool,
                released_regions: Vec<String>,
            }
            print(
                output,
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
            .map(|description| print(output, &description, ExitCode::SUCCESS)),
        Command::List {
            prefix,
            limit,
            page_token,
        } => {
            list::list(
                &client,
                list::Options {
                    prefix: prefix.as_deref().unwrap_or(""),
                    limit: limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                    page_token: page_token.as_deref().unwrap_or(""),
                    output,
                },
            )
            .await
        }
        Command::Audit { .. } => unreachable!("handled before connecting"),
        Command::Lock {
            resource,
            owner,
            ttl,
            wait,
            no_wait,
        } => {
            let wait = if *no_wait { Duration::ZERO } else { *wait };
            let owner = default_owner(owner.as_ref(), "");
            return hold::hold(&client, resource, &owner, *ttl, wait, output).await;
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
            let owner = default_owner(owner.as_ref(), "");
            run::run(
                &client,
                run::Options {
                    resource,
                    owner: &owner,
                    ttl: *ttl,
                    wait,
                    grace: *grace,
                    command,
                    output,
                },
            )
            .await
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
            print(output, &v, code)
        }),
    };
    result.unwrap_or_else(|error| Failure::client(&error).report(output))
}

/// `renew`: what the coordinator says is in force after the renewal.
async fn renew(
    client: &Client,
    lock_id: &str,
    ttl: Option<Duration>,
    output: Output,
) -> Result<ExitCode, globallock_client::ClientError> {
    #[derive(Serialize)]
    struct Renewed {
        lock_id: String,
        fencing_token: u64,
        /// The TTL the coordinator applied.
        ttl_ms: u64,
        /// How long the lock may be relied on, from when the renewal was sent.
        validity_ms: u64,
        /// How long the lock stays held at least, as the coordinator describes it
        /// right after the renewal (renewal never shortens a lock, so this can
        /// exceed ttl_ms). Absent if that description failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_in_ms: Option<u64>,
    }
    let renewal = client.renew(lock_id, ttl.unwrap_or(Duration::ZERO)).await?;
    let resource = lock_id
        .parse::<globallock_protocol::lock_id::LockId>()
        .ok()
        .map(|id| id.resource().to_owned());
    let expires_in_ms = match resource {
        Some(resource) => match client.describe(&resource).await {
            Ok(d) if d.held && d.lock_id == lock_id => Some(d.expires_in_ms),
            _ => None,
        },
        None => None,
    };
    let renewed = Renewed {
        lock_id: lock_id.to_owned(),
        fencing_token: renewal.fencing_token,
        ttl_ms: renewal.ttl_ms,
        validity_ms: u64::try_from(renewal.validity.as_millis()).unwrap_or(u64::MAX),
        expires_in_ms,
    };
    if output == Output::Text
        && let Some(expires) = expires_in_ms
        && expires > renewed.ttl_ms
    {
        eprintln!(
            "lockctl: note: renewal never shortens a lock: it stays held for at least another \
             {expires} ms; rely on it for validity_ms ({} ms)",
            renewed.validity_ms
        );
    }
    Ok(print(output, &renewed, ExitCode::SUCCESS))
}

/// Print `value` as JSON or as aligned `key  value` lines. A closed stdout (e.g.
/// `lockctl lock ... | head -1`) is not an error: the lock matters, not the echo.
pub fn print<T: Serialize>(output: Output, value: &T, code: ExitCode) -> ExitCode {
    use std::io::Write;
    let json = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    let mut text = String::new();
    match output {
        Output::Json => text = format!("{json}\n"),
        Output::Text => {
            if let serde_json::Value::Object(fields) = &json {
                let width = fields.keys().map(String::len).max().unwrap_or(0);
                for (key, value) in fields {
                    let value = match value {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Array(items) => items
                            .iter()
                            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(", "),
                        other => other.to_string(),
                    };
                    text.push_str(&format!("{key:<width$}  {value}\n"));
                }
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn json_output_is_found_in_a_refused_command_line() {
        assert!(json_requested(&args("lockctl aquire x --output json")));
        assert!(json_requested(&args("lockctl -o json acquire")));
        assert!(json_requested(&args("lockctl acquire --output=json")));
        assert!(json_requested(&args("lockctl acquire -ojson")));
        assert!(!json_requested(&args("lockctl acquire x")));
        assert!(!json_requested(&args("lockctl run x -- cmd -o json")));
    }

    #[test]
    fn the_default_owner_has_no_pid_for_an_idempotent_acquire() {
        let plain = default_owner(None, "");
        assert!(
            plain.ends_with(&format!(":{}", std::process::id())),
            "{plain}"
        );
        let idempotent = default_owner(None, "job-1");
        assert!(idempotent.starts_with("lockctl@") && !idempotent.contains(':'));
        let given = "bob".to_owned();
        assert_eq!(default_owner(Some(&given), "job-1"), "bob");
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
