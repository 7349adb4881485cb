//! `region-agent`: serve one region. Parses flags, validates the configuration
//! before binding any port, then runs [`region_agent::serve`] until Ctrl-C/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use globallock_protocol::clock::SystemClock;
use globallock_runtime::{LogFormat, config_or_exit, init_logging, serve_until_signal};
use region_agent::AgentConfig;

/// Serve one region of the global lock service.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); see region-agent/agent.sample.toml.
    #[arg(long, env = "GLOBALLOCK_AGENT_CONFIG")]
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
    let loaded = AgentConfig::load(&args.config).and_then(AgentConfig::validate);
    let config = config_or_exit("region-agent", &args.config, loaded);
    let listen = [config.listen];
    let code = serve_until_signal(
        "region-agent",
        &listen,
        Duration::from_secs(10),
        |mut listeners, stop| {
            let listener = listeners.remove(0);
            region_agent::serve(config, listener, SystemClock::shared(), stop)
        },
    )
    .await;
    std::process::exit(code);
}
