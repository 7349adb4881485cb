//! `region-agent`: serve one region. Parses flags, validates the configuration
//! before binding any port, then runs [`region_agent::serve`] until Ctrl-C/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use globallock_protocol::clock::SystemClock;
use globallock_runtime::{ServiceAllocator, config_or_exit, runtime_or_exit, serve_until_signal};
use globallock_telemetry::LogFormat;
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

#[global_allocator]
static ALLOCATOR: ServiceAllocator = ServiceAllocator;

fn main() {
    let args = Args::parse();
    let loaded = AgentConfig::load(&args.config).and_then(AgentConfig::validate);
    let config = config_or_exit("region-agent", &args.config, loaded);
    let runtime = runtime_or_exit("region-agent", config.worker_threads);
    let code = runtime.block_on(run(args, config));
    std::process::exit(code);
}

async fn run(args: Args, config: region_agent::ValidConfig) -> i32 {
    let service = format!("globallock-agent-{}", config.region);
    let telemetry =
        globallock_telemetry::init(&service, args.log_format, config.otlp_endpoint.as_deref());
    let listen: Vec<_> = std::iter::once(config.listen)
        .chain(config.metrics_listen)
        .collect();
    let code = serve_until_signal(
        "region-agent",
        &listen,
        Duration::from_secs(10),
        |listeners, stop| {
            let mut listeners = listeners.into_iter();
            let api = listeners.next().expect("the API address is always bound");
            let metrics = listeners.next();
            region_agent::serve(
                config,
                region_agent::AgentListeners { api, metrics },
                SystemClock::shared(),
                stop,
            )
        },
    )
    .await;
    telemetry.shutdown();
    code
}
