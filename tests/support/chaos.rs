//! The seeded chaos run: random operations from several clients over a few
//! resources while a nemesis injects random faults of the fault table, against a
//! cluster of real processes. Every run prints its seed, its fault schedule, the
//! number of operations, the faults planned and those actually injected, what the
//! nemesis failed to do, and the checker's violations. The schedule is a pure
//! function of the seed: the same seed replays the same faults at the same
//! offsets.

use std::sync::Arc;
use std::time::Duration;

use globallock_client::Client;
use globallock_localcluster::{CoordinatorSpec, FaultProxy, Faults, Layout, ProcessCluster};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{Kind, Phase, Recorder, Violation, check};
use crate::oracle::FencedCounter;

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Both directions of coordinator `c`'s link to region `r` blackholed.
    Partition { coordinator: usize, region: usize },
    /// Replies only, on coordinator `c`'s link to region `r`.
    OneWay { coordinator: usize, region: usize },
    /// Coordinator `c`'s link to region `r` delayed.
    Slow {
        coordinator: usize,
        region: usize,
        delay_ms: u64,
    },
    /// Region `r`'s agent SIGKILLed (restarted when the fault ends).
    KillAgent { region: usize },
    /// Region `r`'s agent SIGSTOPped (SIGCONT when the fault ends).
    PauseAgent { region: usize },
    /// Region `r`'s etcd SIGKILLed (restarted when the fault ends).
    KillEtcd { region: usize },
    /// Coordinator `c` SIGKILLed (restarted when the fault ends).
    KillCoordinator { coordinator: usize },
}

/// A fault, when it starts and how long it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// Offset from the start of the run.
    pub at: Duration,
    /// How long the fault lasts.
    pub lasts: Duration,
    /// The fault.
    pub fault: Fault,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The seed of the schedule and of the clients' choices.
    pub seed: u64,
    /// How long faults and operations go on.
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Resources they fight over.
    pub resources: usize,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct ChaosReport {
    /// The seed (replay with it).
    pub seed: u64,
    /// Operations recorded.
    pub operations: usize,
    /// Acquires that succeeded.
    pub granted: usize,
    /// Faults the schedule planned.
    pub planned: usize,
    /// Faults actually injected: those whose injection call succeeded.
    pub faults: usize,
    /// Everything the nemesis failed to do: injections that did not happen, and
    /// heals (resume, restart) that failed.
    pub nemesis_errors: Vec<String>,
    /// Late writes the fenced resource rejected (fencing at work).
    pub stale_writes_rejected: u64,
    /// Everything the checker and the fenced counters found.
    pub violations: Vec<String>,
}

const COORDINATORS: usize = 2;
const TTL_MS: u64 = 2_000;
const MAX_TTL: Duration = Duration::from_millis(3_000);

/// The fault schedule of a seed: one fault at a time, one every 1–3 s.
pub fn schedule(seed: u64, duration: Duration) -> Vec<Scheduled> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut at = Duration::from_millis(500);
    let mut out = Vec::new();
    while at < duration {
        let lasts = Duration::from_millis(rng.random_range(500..=2_500));
        let coordinator = rng.random_range(0..COORDINATORS);
        let region = rng.random_range(0..3);
        let fault = match rng.random_range(0..7) {
            0 => Fault::Partition {
                coordinator,
                region,
            },
            1 => Fault::OneWay {
                coordinator,
                region,
            },
            2 => Fault::Slow {
                coordinator,
                region,
                delay_ms: rng.random_range(200..=1_500),
            },
            3 => Fault::KillAgent { region },
            4 => Fault::PauseAgent { region },
            5 => Fault::KillEtcd { region },
            _ => Fault::KillCoordinator { coordinator },
        };
        out.push(Scheduled { at, lasts, fault });
        at += lasts + Duration::from_millis(rng.random_range(300..=1_000));
    }
    out
}

/// The client library aimed at `endpoints`, over TLS as the dev client when
/// the cluster runs TLS (it does by default).
fn connect(cluster: &ProcessCluster, endpoints: &[String]) -> anyhow::Result<Client> {
    Ok(match cluster.tls() {
        Some(tls) => Client::connect_tls(
            endpoints,
            &globallock_client::ClientTls {
                ca: tls.ca.clone(),
                identity: Some((tls.client.cert.clone(), tls.client.key.clone())),
            },
        )?,
        None => Client::connect(endpoints)?,
    })
}

/// Run the chaos test and report. Needs the workspace binaries built.
pub async fn run(config: ChaosConfig) -> anyhow::Result<ChaosReport> {
    let dir = tempfile::tempdir()?;
    let layout = Layout {
        shards: 1,
        quarantine_ms: 5_000,
        max_ttl_ms: u64::try_from(MAX_TTL.as_millis())?,
        ..Layout::new(dir.path().to_path_buf())
    };
    let mut cluster = ProcessCluster::start(layout).await?;
    // Every coordinator reaches every region through its own proxy.
    let mut links: Vec<Vec<FaultProxy>> = Vec::new();
    for _ in 0..COORDINATORS {
        let mut row = Vec::new();
        for addr in cluster.agent_addrs() {
            row.push(FaultProxy::start(addr).await?);
        }
        let spec = CoordinatorSpec {
            region_endpoints: row
                .iter()
                .map(|p| format!("{}://{}", cluster.scheme(), p.addr()))
                .collect(),
            ..cluster.free_coordinator_spec()?
        };
        cluster.start_coordinator(spec).await?;
        links.push(row);
    }
    let endpoints: Vec<String> = (0..COORDINATORS)
        .map(|c| cluster.coordinator_url(c))
        .collect();
    let plan = schedule(config.seed, config.duration);
    println!(
        "chaos: seed {} — {} faults over {:?}",
        config.seed,
        plan.len(),
        config.duration
    );
    for s in &plan {
        println!(
            "chaos:   at {:>6} ms for {:>5} ms: {:?}",
            s.at.as_millis(),
            s.lasts.as_millis(),
            s.fault
        );
    }

    let history = Arc::new(Recorder::new());
    let counters: Arc<Vec<FencedCounter>> = Arc::new(
        (0..config.resources)
            .map(|_| FencedCounter::new())
            .collect(),
    );
    let started = tokio::time::Instant::now();
    let deadline = started + config.duration;
    let mut clients = Vec::new();
    for c in 0..config.clients {
        let client = connect(&cluster, &endpoints)?;
        let (history, counters) = (history.clone(), counters.clone());
        let mut rng = StdRng::seed_from_u64(config.seed.wrapping_add(1 + c as u64));
        clients.push(tokio::spawn(async move {
            let process = format!("client-{c}");
            while tokio::time::Instant::now() < deadline {
                let r = rng.random_range(0..counters.len());
                let resource = format!("chaos/{r}");
                client_round(
                    &client,
                    &history,
                    &counters[r],
                    &process,
                    &resource,
                    &mut rng,
                )
                .await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..50))).await;
            }
        }));
    }

    // The nemesis follows the schedule, counting only the faults that happened.
    let mut injected = 0;
    let mut nemesis_errors = Vec::new();
    for s in &plan {
        tokio::time::sleep_until(started + s.at).await;
        match inject(&mut cluster, &links, s.fault, true).await {
            Ok(()) => injected += 1,
            Err(error) => nemesis_errors.push(format!(
                "at {} ms, {:?} not injected: {error}",
                s.at.as_millis(),
                s.fault
            )),
        }
        tokio::time::sleep(s.lasts).await;
        if let Err(error) = inject(&mut cluster, &links, s.fault, false).await {
            nemesis_errors.push(format!(
                "at {} ms, {:?} not healed: {error}",
                (s.at + s.lasts).as_millis(),
                s.fault
            ));
        }
    }
    for error in &nemesis_errors {
        println!("chaos: NEMESIS ERROR {error}");
    }
    for client in clients {
        client.await?;
    }

    // Healed. After the longest TTL every resource must be acquirable again.
    let healed_at = history.time_us();
    tokio::time::sleep(MAX_TTL + Duration::from_millis(500)).await;
    let client = connect(&cluster, &endpoints)?;
    for r in 0..config.resources {
        let resource = format!("chaos/{r}");
        for _ in 0..20 {
            let op = history.invoke("final", &resource, Kind::Acquire, "");
            match client
                .acquire(
                    &resource,
                    "final",
                    Duration::from_millis(TTL_MS),
                    Duration::from_secs(2),
                )
                .await
            {
                Ok(lock) => {
                    history.complete(
                        &op,
                        Phase::Ok,
                        &lock.lock_id,
                        lock.fencing_token,
                        validity_us(lock.validity),
                    );
                    break;
                }
                Err(error) => {
                    // Held is a definite refusal; anything else may have granted.
                    let phase = match error {
                        globallock_client::ClientError::Held(_) => Phase::Fail,
                        _ => Phase::Info,
                    };
                    history.complete(&op, phase, "", 0, 0);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    let records = history.history();
    let violations: Vec<String> = check(
        &records,
        Some((healed_at, u64::try_from(MAX_TTL.as_micros())?)),
    )
    .into_iter()
    .map(|v| describe(&v))
    .collect();
    // Overlap is judged by the checker on validity intervals (a slow holder may
    // linger past its validity before releasing; that is not an overlap). The
    // fenced counter rejecting a late holder's write is fencing at work: counted,
    // not a violation; accepting a stale one would be (the checker sees it).
    let stale_rejected: u64 = counters.iter().map(FencedCounter::rejected).sum();
    let granted = records
        .iter()
        .filter(|r| r.kind == Kind::Acquire && r.phase == Phase::Ok)
        .count();
    let report = ChaosReport {
        seed: config.seed,
        operations: records.iter().filter(|r| r.phase == Phase::Invoke).count(),
        granted,
        planned: plan.len(),
        faults: injected,
        nemesis_errors,
        stale_writes_rejected: stale_rejected,
        violations,
    };
    std::fs::write(dir.path().join("history.jsonl"), history.to_json_lines())?;
    println!(
        "chaos: seed {} — {} operations ({} acquires granted, {} stale writes rejected), {} of {} faults injected ({} nemesis errors), {} violations",
        report.seed,
        report.operations,
        report.granted,
        report.stale_writes_rejected,
        report.faults,
        report.planned,
        report.nemesis_errors.len(),
        report.violations.len()
    );
    for v in &report.violations {
        println!("chaos: VIOLATION {v}");
    }
    if !report.violations.is_empty() {
        // Keep the evidence.
        let kept = dir.keep();
        println!("chaos: history and logs kept in {}", kept.display());
    }
    Ok(report)
}

fn validity_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn describe(v: &Violation) -> String {
    format!("{v:?}")
}

/// One client round: acquire, then (while valid) fenced writes and maybe a
/// renewal, then release. Every step is recorded.
async fn client_round(
    client: &Client,
    history: &Recorder,
    counter: &FencedCounter,
    process: &str,
    resource: &str,
    rng: &mut StdRng,
) {
    let wait = Duration::from_millis(rng.random_range(0..=800));
    let op = history.invoke(process, resource, Kind::Acquire, "");
    let lock = match client
        .acquire(resource, process, Duration::from_millis(TTL_MS), wait)
        .await
    {
        Ok(lock) => {
            history.complete(
                &op,
                Phase::Ok,
                &lock.lock_id,
                lock.fencing_token,
                validity_us(lock.validity),
            );
            lock
        }
        Err(
            globallock_client::ClientError::Held(_)
            | globallock_client::ClientError::InvalidArgument(_),
        ) => {
            history.complete(&op, Phase::Fail, "", 0, 0);
            return;
        }
        Err(_) => {
            // No quorum or transport: the outcome is unknown.
            history.complete(&op, Phase::Info, "", 0, 0);
            return;
        }
    };
    let mut valid_until = lock.valid_until();
    for _ in 0..rng.random_range(1..=3) {
        // Only write while the lock may be relied on, with margin for the write.
        if std::time::Instant::now() + Duration::from_millis(50) >= valid_until {
            break;
        }
        let w = history.invoke(process, resource, Kind::Write, &lock.lock_id);
        let accepted = counter.write(lock.fencing_token);
        history.complete(
            &w,
            if accepted { Phase::Ok } else { Phase::Fail },
            &lock.lock_id,
            lock.fencing_token,
            0,
        );
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..200))).await;
        if rng.random_bool(0.5) {
            let r = history.invoke(process, resource, Kind::Renew, &lock.lock_id);
            match client
                .renew(&lock.lock_id, Duration::from_millis(TTL_MS))
                .await
            {
                Ok(renewal) => {
                    history.complete(
                        &r,
                        Phase::Ok,
                        &lock.lock_id,
                        renewal.fencing_token,
                        validity_us(renewal.validity),
                    );
                    valid_until = valid_until.max(renewal.sent_at + renewal.validity);
                }
                Err(globallock_client::ClientError::Lost(_)) => {
                    history.complete(&r, Phase::Fail, &lock.lock_id, 0, 0);
                    break;
                }
                Err(_) => history.complete(&r, Phase::Info, &lock.lock_id, 0, 0),
            }
        }
    }
    let rel = history.invoke(process, resource, Kind::Release, &lock.lock_id);
    let phase = match client.release(&lock.lock_id).await {
        Ok(_) => Phase::Ok,
        Err(globallock_client::ClientError::Lost(_)) => Phase::Fail,
        Err(_) => Phase::Info,
    };
    history.complete(&rel, phase, &lock.lock_id, 0, 0);
}

/// Start (`on`) or end a fault. `Err` says why it did not happen: the process to
/// kill or pause was not running, or the signal, restart or resume failed.
async fn inject(
    cluster: &mut ProcessCluster,
    links: &[Vec<FaultProxy>],
    fault: Fault,
    on: bool,
) -> Result<(), String> {
    match fault {
        Fault::Partition {
            coordinator,
            region,
        } => {
            let link = &links[coordinator][region];
            if on {
                link.set(Faults::partition());
            } else {
                link.heal();
            }
        }
        Fault::OneWay {
            coordinator,
            region,
        } => {
            let link = &links[coordinator][region];
            if on {
                link.set(Faults {
                    downstream: globallock_localcluster::Direction {
                        blackhole: true,
                        ..Default::default()
                    },
                    ..Faults::default()
                });
            } else {
                link.heal();
            }
        }
        Fault::Slow {
            coordinator,
            region,
            delay_ms,
        } => {
            let link = &links[coordinator][region];
            if on {
                link.set(Faults::delay(
                    Duration::from_millis(delay_ms),
                    Duration::from_millis(delay_ms / 4),
                ));
            } else {
                link.heal();
            }
        }
        Fault::KillAgent { region } => {
            if on {
                if cluster.agent_pid(region) == 0 {
                    return Err(format!("agent {region} was not running"));
                }
                cluster.kill_agent(region);
            } else {
                cluster
                    .restart_agent(region)
                    .await
                    .map_err(|e| format!("agent {region} did not come back: {e}"))?;
            }
        }
        Fault::PauseAgent { region } => {
            if cluster.agent_pid(region) == 0 {
                return Err(format!("agent {region} is not running"));
            }
            let (result, what) = if on {
                (cluster.pause_agent(region), "paused")
            } else {
                (cluster.resume_agent(region), "resumed")
            };
            result.map_err(|e| format!("agent {region} not {what}: {e}"))?;
        }
        Fault::KillEtcd { region } => {
            let etcd = cluster.etcd(region, 0);
            if on {
                if etcd.members().iter().all(|m| m.pid() == 0) {
                    return Err(format!("etcd of region {region} was not running"));
                }
                etcd.kill();
            } else {
                etcd.restart()
                    .map_err(|e| format!("etcd of region {region} did not come back: {e}"))?;
            }
        }
        Fault::KillCoordinator { coordinator } => {
            if on {
                if cluster.coordinator_pid(coordinator) == 0 {
                    return Err(format!("coordinator {coordinator} was not running"));
                }
                cluster.kill_coordinator(coordinator);
            } else {
                cluster
                    .restart_coordinator(coordinator)
                    .await
                    .map_err(|e| format!("coordinator {coordinator} did not come back: {e}"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_replays_the_same_schedule() {
        let a = schedule(42, Duration::from_secs(60));
        assert_eq!(a, schedule(42, Duration::from_secs(60)));
        assert_ne!(a, schedule(43, Duration::from_secs(60)));
        assert!(a.len() > 10);
        // One fault at a time, never overlapping.
        for pair in a.windows(2) {
            assert!(pair[0].at + pair[0].lasts < pair[1].at);
        }
    }
}
