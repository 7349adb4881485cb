//! `chaos`: the seeded chaos soak (what `make chaos` runs). Prints the seed, the
//! fault schedule, the operations, faults and violations; exits 1 on any
//! violation. Replay a run with `--seed`.

use std::time::Duration;

use clap::Parser;
use harness::chaos::{ChaosConfig, run};

/// Random lock operations under random faults, checked for safety.
#[derive(Debug, Parser)]
struct Args {
    /// Seed of the fault schedule and the clients' choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// How long to inject faults, e.g. 300s, 10m.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Resources they contend for.
    #[arg(long, default_value_t = 3)]
    resources: usize,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: use e.g. 90s or 10m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3_600)),
        _ => Err(format!("{text:?}: unknown unit {unit:?}")),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    #[allow(clippy::disallowed_methods)] // a seed, not a time reading
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let report = run(ChaosConfig {
        seed,
        duration: args.duration,
        clients: args.clients,
        resources: args.resources,
    })
    .await?;
    if !report.violations.is_empty() {
        eprintln!(
            "chaos: FAILED — replay with: make chaos SEED={seed} DURATION={}s",
            args.duration.as_secs()
        );
        std::process::exit(1);
    }
    Ok(())
}
