//! `bench` (what `make bench` runs): globallock side by side with etcd's own
//! lock (1 and 3 members), Redlock on 3 redis-servers, and, on an emulated
//! WAN, a stretched etcd; every peer started here as real processes and
//! stopped on exit. See `docs/benchmark.md`.
//!
//! # Layout
//! - [`cell`] — the cells (workload × workers) and the systems each compares.
//! - [`geography`] — the WAN profile's regions, round trips and link delays.
//! - [`peers`] — starting the systems under test as processes (and stopping them).
//! - [`system`] — what a lock looks like to a worker: acquire, release, counters.
//! - [`globallock`], [`etcd_lock`], [`redlock`] (over [`resp`]) — the three clients.
//! - [`workload`] — N workers in acquire → check → release cycles, timed.
//! - [`fence`] — the check that no two holders overlap and tokens increase.
//! - [`stats`] — percentiles and Jain's fairness index.
//! - [`report`], [`chart`] — the table, `results.json` and `latency.svg`.
//! - [`run`] — one run from start to report.

mod cell;
mod chart;
mod cpu;
mod etcd_lock;
mod etcd_work;
mod fence;
mod geography;
mod globallock;
mod peers;
mod redlock;
mod report;
mod resp;
mod run;
mod stats;
mod system;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// Benchmark globallock against etcd's own lock and Redlock, on peers it
/// starts itself (cells: uncontended-16, uncontended-64, hot-8, hot-64,
/// wan-leader, wan-remote).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Measured window per system and cell, e.g. 10s, 1500ms, 1m (after a
    /// warm-up of a fifth of it, at most 2 s).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Only these cells (comma-separated names, or families: uncontended, hot, wan).
    #[arg(long, value_delimiter = ',')]
    cells: Vec<String>,
    /// Only these systems (globallock, etcd-1, etcd-3, redlock, etcd-stretched).
    #[arg(long, value_delimiter = ',')]
    systems: Vec<String>,
    /// A short run to check the harness: 1 s per cell, fewer workers.
    #[arg(long)]
    smoke: bool,
    /// Where results.json and latency.svg go [default: target/bench, next to
    /// the directory of this binary].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the peers keep data and logs (wiped at start) [default: OUT/data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// `10s`, `1.5s`, `500ms`, `2m`: a number and a unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit: add one, e.g. 10s or 500ms"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a number and a unit"))?;
    let seconds = match unit.to_ascii_lowercase().as_str() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} (use ms, s or m)")),
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("{text:?} must be above zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `target/bench`: the sibling of the profile directory this binary is in.
fn default_out() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(|profile| profile.parent())
        .context("cannot tell the target directory from this binary's path; pass --out")?;
    Ok(target.join("bench"))
}

fn options(args: Args) -> anyhow::Result<run::Options> {
    let cells = cell::select(&args.cells).map_err(anyhow::Error::msg)?;
    let systems = cell::select_systems(&args.systems).map_err(anyhow::Error::msg)?;
    let window = args.duration.unwrap_or(if args.smoke {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    });
    let out_dir = match args.out {
        Some(out) => out,
        None => default_out()?,
    };
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let out_dir = out_dir.canonicalize()?;
    let data_dir = args.data_dir.unwrap_or_else(|| out_dir.join("data"));
    Ok(run::Options {
        cells,
        systems,
        timing: run::timing(window, args.smoke),
        smoke: args.smoke,
        out_dir,
        data_dir,
    })
}

/// Write the table, JSON and chart; the exit code follows what was seen.
fn finish(report: &report::Report, out_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    println!("\n{}", report::table(report));
    let json = out_dir.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let svg = out_dir.join("latency.svg");
    std::fs::write(&svg, chart::svg(report))
        .with_context(|| format!("cannot write {}", svg.display()))?;
    println!("results: {}\nchart:   {}", json.display(), svg.display());
    let idle: Vec<String> = report
        .cells
        .iter()
        .flat_map(|c| {
            c.systems
                .iter()
                .filter(|m| m.total_cycles == 0)
                .map(move |m| format!("{} in {}", m.system, c.cell))
        })
        .collect();
    let mut failed = false;
    if !report.violations.is_empty() {
        eprintln!("\n{} VIOLATIONS:", report.violations.len());
        for v in &report.violations {
            eprintln!("  {v}");
        }
        failed = true;
    }
    if !idle.is_empty() {
        eprintln!("\nno cycle completed: {}", idle.join(", "));
        failed = true;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options(Args::parse()) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("bench: {error:#}");
            return ExitCode::from(64);
        }
    };
    let out_dir = options.out_dir.clone();
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        eprintln!("bench: cannot listen for SIGTERM");
        return ExitCode::FAILURE;
    };
    // The run owns every peer: dropping it stops them (by pid).
    let mut run = Box::pin(run::run(options));
    let signal = tokio::select! {
        outcome = &mut run => match outcome {
            Ok(report) => return finish(&report, &out_dir).unwrap_or_else(|error| {
                eprintln!("bench: {error:#}");
                ExitCode::FAILURE
            }),
            Err(error) => {
                // The peers are already stopped: the run dropped them.
                eprintln!("bench: {error:#}");
                return ExitCode::FAILURE;
            }
        },
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = terminate.recv() => "terminated",
    };
    eprintln!("bench: {signal}; stopping every process it started (Ctrl-C again to force)");
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("bench: forced exit (the children die with this process)");
        std::process::exit(130);
    });
    drop(run);
    ExitCode::from(130)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
