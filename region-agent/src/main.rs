//! `region-agent`: serve one region. Parses flags, validates the configuration
//! before binding any port, then runs [`region_agent::serve`] until Ctrl-C/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use globallock_protocol::clock::SystemClock;
use globallock_runtime::{
    LogFormat, drain_within, error_chain, exit, init_logging, shutdown_signal,
};
use region_agent::AgentConfig;

/// Serve one region of the global lock service.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); see region-agent/agent.sample.toml.
    #[arg(long, env = "GLOBALLOCK_AGENT_CONFIG")]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "GLOBALLOCK_LOG_FORMAT")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    init_logging(args.log_format);
    let config = match AgentConfig::load(&args.config).and_then(AgentConfig::validate) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("region-agent: invalid configuration {}: {}", args.config.display(), error_chain(&error));
            std::process::exit(exit::CONFIG);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("region-agent: cannot listen on {}: {error}", config.listen);
            std::process::exit(exit::UNAVAILABLE);
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(region_agent::serve(config, listener, SystemClock::shared(), async {
        let _ = stop_rx.await;
    }));
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => result,
        () = shutdown_signal() => {
            let _ = stop_tx.send(());
            match drain_within(Duration::from_secs(10), &mut server).await {
                Some(result) => result,
                None => std::process::exit(exit::SOFTWARE),
            }
        }
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            eprintln!("region-agent: {}", error_chain(&error));
            std::process::exit(exit::SOFTWARE);
        }
        Err(panic) => {
            eprintln!("region-agent: server task failed: {panic}");
            std::process::exit(exit::SOFTWARE);
        }
    }
}
