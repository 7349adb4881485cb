//! `coordinator`: serve the public lock API. Parses flags, validates the
//! configuration before binding any port, then runs [`coordinator::serve`] until
//! Ctrl-C/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use coordinator::CoordinatorConfig;
use globallock_protocol::clock::SystemClock;
use globallock_runtime::{ServiceAllocator, config_or_exit, runtime_or_exit, serve_until_signal};
use globallock_telemetry::LogFormat;

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

#[global_allocator]
static ALLOCATOR: ServiceAllocator = ServiceAllocator;

fn main() {
    let args = Args::parse();
    let loaded = CoordinatorConfig::load(&args.config).and_then(CoordinatorConfig::validate);
    let config = config_or_exit("coordinator", &args.config, loaded);
    let runtime = runtime_or_exit("coordinator", config.worker_threads);
    let code = runtime.block_on(run(args, config));
    std::process::exit(code);
}

async fn run(args: Args, config: coordinator::ValidConfig) -> i32 {
    let telemetry = globallock_telemetry::init(
        "globallock-coordinator",
        args.log_format,
        config.otlp_endpoint.as_deref(),
    );
    // Bound in this order: gRPC, then REST and metrics when configured.
    let listen: Vec<_> = std::iter::once(config.listen)
        .chain(config.rest_listen)
        .chain(config.metrics_listen)
        .collect();
    let (has_rest, has_metrics) = (
        config.rest_listen.is_some(),
        config.metrics_listen.is_some(),
    );
    let code = serve_until_signal(
        "coordinator",
        &listen,
        Duration::from_secs(10),
        |listeners, stop| {
            let mut listeners = listeners.into_iter();
            let grpc = listeners.next().expect("the gRPC address is always bound");
            let rest = if has_rest { listeners.next() } else { None };
            let metrics = if has_metrics { listeners.next() } else { None };
            coordinator::serve(
                config,
                coordinator::Listeners {
                    grpc,
                    rest,
                    metrics,
                },
                SystemClock::shared(),
                stop,
            )
        },
    )
    .await;
    telemetry.shutdown();
    code
}
