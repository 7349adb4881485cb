//! Running one system in one cell: N workers in acquire → check → release
//! cycles for a warm-up, then for the measured window, then until each has
//! finished its last cycle (or the drain deadline cuts it short).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::cell::{Cell, Workload};
use crate::fence::Fence;
use crate::stats::{self, Latency};
use crate::system::{Counters, LockSystem, LockWorker, Tally};

/// How long each phase of a cell lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Cycles before the window (connections, caches) are not measured.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// After the window, how long workers may take to finish their cycle
    /// before they are stopped (a waiter still queued, say).
    pub drain: Duration,
}

/// What one system did in one cell.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// The system's name.
    pub system: String,
    /// Workers.
    pub workers: usize,
    /// Acquisitions that completed within the window.
    pub cycles: u64,
    /// Acquisitions per second of the window (cycles/s; handoffs/s on a hot
    /// resource).
    pub ops_per_s: f64,
    /// Acquire latency over the window (ms), retries and waits included.
    pub acquire_ms: Latency,
    /// Jain's fairness index over per-worker acquisitions in the window.
    pub fairness: f64,
    /// Acquire+release cycles completed in all, warm-up and drain included.
    pub total_cycles: u64,
    /// Workers stopped at the drain deadline while still in a cycle.
    pub abandoned_workers: usize,
    /// Errors, retries and refusals.
    #[serde(flatten)]
    pub tally: Tally,
    /// Overlapping holders or fencing tokens going back, as printed.
    pub violations: Vec<String>,
    /// What etcd did per cycle (warm-up and drain included), where measured.
    pub etcd_per_cycle: Option<crate::etcd_work::PerCycle>,
    /// CPU per cycle by role (warm-up and drain included), where measured.
    pub cpu_per_cycle: Option<crate::cpu::PerCycle>,
    /// Every acquire latency in the window (µs, sorted), for the chart.
    #[serde(skip)]
    pub samples_us: Vec<u64>,
}

/// What one worker did (kept outside the worker's task, so that a worker
/// stopped at the drain deadline keeps what it measured).
#[derive(Debug, Default)]
struct WorkerRun {
    /// Latencies (µs) of acquisitions completed within the window.
    samples_us: Vec<u64>,
    /// Acquire+release cycles completed in all.
    total: u64,
}

/// Where a worker's cycles take place.
#[derive(Debug, Clone)]
struct Plan {
    /// Resource names (one per worker, or one for all).
    resources: Arc<Vec<String>>,
    /// Unmeasured until here.
    warm_end: Instant,
    /// No new cycle starts after this.
    end: Instant,
}

/// Measure `system` (named `name`) in `cell` with `workers` workers; resource
/// names start with `prefix` (unique per run).
pub async fn measure<S: LockSystem>(
    system: &S,
    name: &str,
    cell: &Cell,
    workers: usize,
    prefix: &str,
    timing: Timing,
) -> anyhow::Result<Measurement> {
    let resources: Vec<String> = match cell.workload {
        Workload::Hot => vec![format!("{prefix}/{}/{name}/hot", cell.name)],
        Workload::Uncontended | Workload::Wan { .. } => (0..workers)
            .map(|w| format!("{prefix}/{}/{name}/w{w}", cell.name))
            .collect(),
    };
    let fence = Arc::new(Fence::new(format!("{} {name}", cell.name), resources.len()));
    let counters = Arc::new(Counters::default());
    let prepared = futures::future::try_join_all((0..workers).map(|id| system.worker(id))).await?;
    let start = Instant::now();
    let plan = Plan {
        resources: Arc::new(resources),
        warm_end: start + timing.warmup,
        end: start + timing.warmup + timing.window,
    };
    let runs: Arc<Vec<Mutex<WorkerRun>>> =
        Arc::new((0..workers).map(|_| Mutex::default()).collect());
    let handles: Vec<_> = prepared
        .into_iter()
        .enumerate()
        .map(|(id, worker)| {
            tokio::spawn(run_worker(
                id,
                worker,
                plan.clone(),
                fence.clone(),
                counters.clone(),
                runs.clone(),
            ))
        })
        .collect();

    let deadline = plan.end + timing.drain;
    let mut abandoned_workers = 0;
    let mut finished = Vec::new();
    for mut handle in handles {
        match tokio::time::timeout_at(deadline, &mut handle).await {
            Ok(joined) => finished.push(joined?),
            Err(_) => {
                handle.abort();
                abandoned_workers += 1;
            }
        }
    }
    futures::future::join_all(finished.into_iter().map(LockWorker::close)).await;

    let mut per_worker = Vec::with_capacity(workers);
    let mut samples_us = Vec::new();
    let mut total_cycles = 0;
    for run in runs.iter() {
        let run = std::mem::take(&mut *run.lock().unwrap_or_else(|e| e.into_inner()));
        per_worker.push(run.samples_us.len() as u64);
        samples_us.extend(run.samples_us);
        total_cycles += run.total;
    }
    samples_us.sort_unstable();
    let cycles = samples_us.len() as u64;
    Ok(Measurement {
        system: name.to_owned(),
        workers,
        cycles,
        ops_per_s: cycles as f64 / timing.window.as_secs_f64(),
        acquire_ms: stats::latency(&samples_us),
        fairness: stats::jain(&per_worker),
        total_cycles,
        abandoned_workers,
        tally: counters.tally(),
        violations: fence.violations(),
        etcd_per_cycle: None,
        cpu_per_cycle: None,
        samples_us,
    })
}

/// One worker's cycles until the window ends, recorded in `runs[id]`; gives
/// the worker back to be closed.
async fn run_worker<W: LockWorker>(
    id: usize,
    mut worker: W,
    plan: Plan,
    fence: Arc<Fence>,
    counters: Arc<Counters>,
    runs: Arc<Vec<Mutex<WorkerRun>>>,
) -> W {
    let resource = if plan.resources.len() == 1 { 0 } else { id };
    let name = plan.resources[resource].as_str();
    while Instant::now() < plan.end {
        let started = Instant::now();
        let acquired = match worker.acquire(name, &counters).await {
            Ok(acquired) => acquired,
            Err(error) => {
                counters.error(&error);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let got = Instant::now();
        // Inside: the slot is ours, or the fence recorded a violation.
        let entered = fence.enter(resource, name, id, acquired.token);
        tokio::task::yield_now().await;
        if acquired
            .valid_until
            .is_some_and(|v| std::time::Instant::now() > v)
        {
            counters.overran();
        }
        if entered {
            fence.exit(resource, id);
        }
        if got >= plan.warm_end && got < plan.end {
            let us = u64::try_from(got.duration_since(started).as_micros()).unwrap_or(u64::MAX);
            record(&runs[id], |run| run.samples_us.push(us));
        }
        match worker.release(acquired.guard).await {
            Ok(()) => record(&runs[id], |run| run.total += 1),
            Err(error) => counters.error(&error),
        }
    }
    worker
}

fn record(run: &Mutex<WorkerRun>, change: impl FnOnce(&mut WorkerRun)) {
    change(&mut run.lock().unwrap_or_else(|e| e.into_inner()));
}
