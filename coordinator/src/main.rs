//! `coordinator`: serve the public lock API. Parses flags, validates the
//! configuration before binding any port, then runs [`coordinator::serve`] until
//! Ctrl-C/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use coordinator::CoordinatorConfig;
use globallock_protocol::clock::SystemClock;
use globallock_runtime::{LogFormat, config_or_exit, init_logging, serve_until_signal};

/// Serve the global lock API (a stateless coordinator).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); see coordinator/coordinator.sample.toml.
    #[arg(long, env = "GLOBALLOCK_COORDINATOR_CONFIG")]
    config: PathBuf,
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "GLOBALLOCK_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    init_logging(args.log_format);
    let loaded = CoordinatorConfig::load(&args.config).and_then(CoordinatorConfig::validate);
    let config = config_or_exit("coordinator", &args.config, loaded);
    let listen: Vec<_> = std::iter::once(config.listen)
        .chain(config.rest_listen)
        .collect();
    let code = serve_until_signal(
        "coordinator",
        &listen,
        Duration::from_secs(10),
        |mut listeners, stop| {
            let grpc = listeners.remove(0);
            let rest = listeners.pop();
            coordinator::serve(
                config,
                coordinator::Listeners { grpc, rest },
                SystemClock::shared(),
                stop,
            )
        },
    )
    .await;
    std::process::exit(code);
}
