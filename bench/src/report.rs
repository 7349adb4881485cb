//! The results: one table on stdout, `results.json`, and the chart.

use std::fmt::Write as _;

use serde::Serialize;

use crate::workload::Measurement;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `release` or `debug`: how the benchmark (and so the services) were built.
    pub build: &'static str,
    /// A `--smoke` run (short cells, fewer workers: for correctness only).
    pub smoke: bool,
    /// Length of each system's measured window in each cell (s).
    pub window_s: f64,
    /// Unmeasured warm-up before it (s).
    pub warmup_s: f64,
    /// CPUs of this machine (everything runs on it: peers and clients).
    pub cpus: usize,
    /// How each system was set up.
    pub setup: Vec<Setup>,
    /// Every cell.
    pub cells: Vec<CellReport>,
    /// Every violation seen, in all cells.
    pub violations: Vec<String>,
}

/// How one system was set up for the run.
#[derive(Debug, Serialize)]
pub struct Setup {
    /// The system.
    pub system: String,
    /// Its processes and configuration, as printed at start.
    pub setup: String,
}

/// One cell's results.
#[derive(Debug, Serialize)]
pub struct CellReport {
    /// The cell's name.
    pub cell: String,
    /// What it measures.
    pub description: String,
    /// Whether the fairness index applies.
    pub fairness_applies: bool,
    /// Each system, globallock first.
    pub systems: Vec<Measurement>,
    /// globallock's figures divided by each peer's.
    pub ratios: Vec<Ratio>,
}

/// globallock / one peer, in one cell.
#[derive(Debug, Serialize)]
pub struct Ratio {
    /// The peer.
    pub peer: String,
    /// Throughput: above 1 means globallock does more per second.
    pub ops_per_s: Option<f64>,
    /// Median acquire latency: below 1 means globallock is faster.
    pub p50_acquire: Option<f64>,
    /// 99th percentile acquire latency: below 1 means globallock is faster.
    pub p99_acquire: Option<f64>,
}

fn ratio(ours: f64, theirs: f64) -> Option<f64> {
    (ours > 0.0 && theirs > 0.0).then(|| ours / theirs)
}

impl CellReport {
    /// The ratios of the `globallock` measurement to every other one.
    pub fn new(
        cell: String,
        description: String,
        fairness_applies: bool,
        systems: Vec<Measurement>,
    ) -> Self {
        let ours = systems.iter().find(|m| m.system == "globallock");
        let ratios = match ours {
            None => Vec::new(),
            Some(g) => systems
                .iter()
                .filter(|m| m.system != "globallock")
                .map(|m| Ratio {
                    peer: m.system.clone(),
                    ops_per_s: ratio(g.ops_per_s, m.ops_per_s),
                    p50_acquire: ratio(g.acquire_ms.p50, m.acquire_ms.p50),
                    p99_acquire: ratio(g.acquire_ms.p99, m.acquire_ms.p99),
                })
                .collect(),
        };
        Self {
            cell,
            description,
            fairness_applies,
            systems,
            ratios,
        }
    }
}

fn ms(value: f64) -> String {
    if value >= 1000.0 {
        format!("{:.2} s", value / 1000.0)
    } else if value >= 10.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.2} ms")
    }
}

fn times(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}x"))
}

fn rate(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// The table printed at the end: per cell and system, throughput, acquire
/// latency, fairness (hot cells), and globallock's ratio to that system.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<15} {:<15} {:>9} {:>10} {:>10} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9}",
        "cell",
        "system",
        "ops/s",
        "p50 acq",
        "p99 acq",
        "fairness",
        "cycles",
        "errors",
        "gl/x ops",
        "gl/x p50",
        "gl/x p99"
    );
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{}", "-".repeat(header.len()));
    for cell in &report.cells {
        for (i, m) in cell.systems.iter().enumerate() {
            let r = cell.ratios.iter().find(|r| r.peer == m.system);
            let _ = writeln!(
                out,
                "{:<15} {:<15} {:>9} {:>10} {:>10} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9}",
                if i == 0 { cell.cell.as_str() } else { "" },
                m.system,
                rate(m.ops_per_s),
                ms(m.acquire_ms.p50),
                ms(m.acquire_ms.p99),
                if cell.fairness_applies {
                    format!("{:.3}", m.fairness)
                } else {
                    "-".to_owned()
                },
                m.cycles,
                m.tally.errors,
                times(r.and_then(|r| r.ops_per_s)),
                times(r.and_then(|r| r.p50_acquire)),
                times(r.and_then(|r| r.p99_acquire)),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nops/s: acquisitions per second in the window (uncontended, WAN: acquire+release cycles; hot: handoffs).\n\
         p50/p99 acq: acquire latency, waits and retries included. fairness: Jain's index over per-worker acquisitions.\n\
         gl/x: globallock's figure divided by that system's (ops: above 1 is better; p50/p99: below 1 is better)."
    );
    let _ = writeln!(
        out,
        "\netcd work per cycle (warm-up and drain included; globallock: per region, etcd's lock: per member):"
    );
    for cell in &report.cells {
        for m in &cell.systems {
            if let Some(w) = m.etcd_per_cycle {
                let _ = writeln!(out, "  {:<15} {:<11} {}", cell.cell, m.system, w.describe());
            }
        }
    }
    let _ = writeln!(
        out,
        "\nCPU per cycle (warm-up and drain included; the client is the benchmark's own process; busy: the whole machine):"
    );
    for cell in &report.cells {
        for m in &cell.systems {
            if let Some(c) = &m.cpu_per_cycle {
                let _ = writeln!(
                    out,
                    "  {:<15} {:<11} {}",
                    cell.cell,
                    m.system,
                    crate::cpu::describe(c)
                );
            }
        }
    }
    let limited: Vec<String> = report
        .cells
        .iter()
        .flat_map(|c| {
            c.systems
                .iter()
                .filter(|m| m.tally.rate_limited > 0)
                .map(move |m| format!("{} {} ({})", c.cell, m.system, m.tally.rate_limited))
        })
        .collect();
    if !limited.is_empty() {
        let _ = writeln!(
            out,
            "rate-limited answers (the coordinator's acquire_rate_per_owner, per principal; every worker is the dev client): {}",
            limited.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "{} build, {} CPUs, {:.1} s window per system and cell{}.",
        report.build,
        report.cpus,
        report.window_s,
        if report.smoke {
            " (--smoke: figures are not meaningful)"
        } else {
            ""
        }
    );
    out
}
