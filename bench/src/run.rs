//! One benchmark run: start the peers the selected cells need, measure each
//! system in each cell in turn, then report.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use globallock_localcluster::EtcdCluster;

use crate::cell::{Cell, System, Workload};
use crate::cpu::Roles;
use crate::etcd_lock::EtcdLock;
use crate::geography;
use crate::globallock::Globallock;
use crate::peers::{self, GloballockPeer, RedisServers, StretchedEtcd};
use crate::redlock::Redlock;
use crate::report::{CellReport, Report, Setup};
use crate::workload::{Measurement, Timing, measure};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cells, in order.
    pub cells: Vec<Cell>,
    /// The systems to measure (others are skipped in every cell).
    pub systems: Vec<System>,
    /// Phases of each measurement.
    pub timing: Timing,
    /// Short cells and fewer workers (for the smoke test).
    pub smoke: bool,
    /// Where `results.json` and `latency.svg` go.
    pub out_dir: PathBuf,
    /// Where the peers keep data and logs (wiped at start).
    pub data_dir: PathBuf,
}

/// The peers started for this run; each stops its processes when dropped.
#[derive(Debug, Default)]
struct Peers {
    /// `make dev`'s topology.
    globallock: Option<GloballockPeer>,
    /// etcd, one member.
    etcd1: Option<EtcdCluster>,
    /// etcd, three members.
    etcd3: Option<EtcdCluster>,
    /// Three redis-servers.
    redis: Option<RedisServers>,
    /// etcd stretched over the WAN profile.
    stretched: Option<StretchedEtcd>,
}

fn needed(options: &Options) -> BTreeSet<System> {
    options
        .cells
        .iter()
        .flat_map(|c| c.systems().iter().copied())
        .filter(|s| options.systems.contains(s))
        .collect()
}

async fn start_peers(options: &Options) -> anyhow::Result<(Peers, Vec<Setup>)> {
    let dir = &options.data_dir;
    let mut peers = Peers::default();
    let mut setup = Vec::new();
    let mut note = |system: &str, text: String| {
        println!("  {system:<15} {text}");
        setup.push(Setup {
            system: system.to_owned(),
            setup: text,
        });
    };
    println!("starting peers (data and logs in {}):", dir.display());
    let systems = needed(options);
    if systems.contains(&System::Globallock) {
        let peer = GloballockPeer::start(&dir.join("globallock")).await?;
        note(
            "globallock",
            format!(
                "3 regions x 2 shards, single-member etcd, TLS on every door and hop, one coordinator at {} (pids {:?})",
                peer.url(),
                peer.pids()
            ),
        );
        peers.globallock = Some(peer);
    }
    if systems.contains(&System::Etcd1) {
        let etcd = peers::start_etcd("bench-etcd-1", 1, &dir.join("etcd-1"))?;
        note(
            "etcd-1",
            format!(
                "etcd's lock, 1 member, TLS with client certificates on client and peer ports (pids {:?})",
                peers::etcd_pids(&etcd)
            ),
        );
        peers.etcd1 = Some(etcd);
    }
    if systems.contains(&System::Etcd3) {
        let etcd = peers::start_etcd("bench-etcd-3", 3, &dir.join("etcd-3"))?;
        note(
            "etcd-3",
            format!(
                "etcd's lock, 3 members, client balancing over all, TLS with client certificates on client and peer ports (pids {:?})",
                peers::etcd_pids(&etcd)
            ),
        );
        peers.etcd3 = Some(etcd);
    }
    if systems.contains(&System::Redlock) {
        let redis = RedisServers::start(3, &dir.join("redis")).await?;
        note(
            "redlock",
            format!(
                "3 redis-server, no persistence, SET NX PX + compare-and-delete, majority 2 (pids {:?})",
                redis.pids()
            ),
        );
        peers.redis = Some(redis);
    }
    if systems.contains(&System::EtcdStretched) {
        let stretched = StretchedEtcd::start(&dir.join("etcd-stretched")).await?;
        note(
            "etcd-stretched",
            format!(
                "etcd's lock, 3 members in {} with peer round trips 80/88/137 ms, leader in {} (pids {:?})",
                geography::PLACES.join("/"),
                geography::PLACES[geography::LEADER_REGION],
                stretched.pids()
            ),
        );
        peers.stretched = Some(stretched);
    }
    Ok((peers, setup))
}

/// Run the benchmark; every process started is stopped before this returns.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    if options.data_dir.exists() {
        std::fs::remove_dir_all(&options.data_dir)
            .with_context(|| format!("cannot clear {}", options.data_dir.display()))?;
    }
    std::fs::create_dir_all(&options.data_dir)?;
    std::fs::create_dir_all(&options.out_dir)?;
    let (mut peers, setup) = start_peers(&options).await?;
    let prefix = format!("bench-{:08x}", rand::random::<u32>());
    let mut cells = Vec::new();
    for cell in &options.cells {
        let workers = if options.smoke {
            cell.smoke_workers
        } else {
            cell.workers
        };
        let description = cell.describe(workers);
        println!("\n== {}: {description}", cell.name);
        let mut measurements = Vec::new();
        for system in cell.systems() {
            if !options.systems.contains(system) {
                continue;
            }
            let m = measure_system(&mut peers, *system, cell, workers, &prefix, options.timing)
                .await
                .with_context(|| format!("{} in cell {}", system.name(), cell.name))?;
            println!(
                "   {:<15} {:>9.1} ops/s  p50 {:>9.2} ms  p99 {:>9.2} ms  fairness {:.3}  cycles {}  errors {}{}{}{}",
                m.system,
                m.ops_per_s,
                m.acquire_ms.p50,
                m.acquire_ms.p99,
                m.fairness,
                m.cycles,
                m.tally.errors,
                m.tally
                    .first_error
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default(),
                m.etcd_per_cycle
                    .map(|w| format!(
                        "\n   {:<15} etcd per cycle and {}: {}",
                        "",
                        if m.system == "globallock" {
                            "region"
                        } else {
                            "member"
                        },
                        w.describe()
                    ))
                    .unwrap_or_default(),
                m.cpu_per_cycle
                    .as_ref()
                    .map(|c| format!("\n   {:<15} CPU per cycle: {}", "", crate::cpu::describe(c)))
                    .unwrap_or_default()
            );
            measurements.push(m);
        }
        cells.push(CellReport::new(
            cell.name.to_owned(),
            description,
            cell.has_fairness(),
            measurements,
        ));
    }
    if let Some(stretched) = &peers.stretched
        && stretched.leader() != Some(geography::LEADER_REGION)
    {
        println!(
            "note: the stretched etcd's leader moved during the run (now member {:?})",
            stretched.leader()
        );
    }
    println!("\nstopping peers...");
    drop(peers);
    let violations = cells
        .iter()
        .flat_map(|c| c.systems.iter().flat_map(|m| m.violations.iter().cloned()))
        .collect();
    Ok(Report {
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        smoke: options.smoke,
        window_s: options.timing.window.as_secs_f64(),
        warmup_s: options.timing.warmup.as_secs_f64(),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        setup,
        cells,
        violations,
    })
}

async fn measure_system(
    peers: &mut Peers,
    system: System,
    cell: &Cell,
    workers: usize,
    prefix: &str,
    timing: Timing,
) -> anyhow::Result<Measurement> {
    let name = system.name();
    let started = "started for this run";
    match (system, cell.workload) {
        (System::Globallock, Workload::Wan { client_region }) => {
            let peer = peers.globallock.as_mut().context(started)?;
            let coordinator = peer.place_coordinator(client_region).await?;
            let client = Globallock::connect(&coordinator.url, peer.tls())?;
            let result = measure(&client, name, cell, workers, prefix, timing).await;
            peer.remove_coordinator(coordinator);
            result
        }
        (System::Globallock, _) => {
            let peer = peers.globallock.as_ref().context(started)?;
            let client = Globallock::connect(peer.url(), peer.tls())?;
            let regions = peer.etcd_clusters().len() / SHARDS_PER_REGION;
            with_work(&peer.etcd_clusters(), regions, &peer.roles(), || {
                measure(&client, name, cell, workers, prefix, timing)
            })
            .await
        }
        (System::Etcd1 | System::Etcd3, _) => {
            let etcd = if system == System::Etcd1 {
                &peers.etcd1
            } else {
                &peers.etcd3
            };
            let etcd = etcd.as_ref().context(started)?;
            let client = EtcdLock::connect(&etcd.endpoints(), etcd.tls()).await?;
            let roles = Roles(vec![("etcd", peers::etcd_pids(etcd))]);
            with_work(&[etcd], etcd.members().len(), &roles, || {
                measure(&client, name, cell, workers, prefix, timing)
            })
            .await
        }
        (System::Redlock, _) => {
            let redis = peers.redis.as_ref().context(started)?;
            let client = Redlock::new(redis.addrs());
            let roles = Roles(vec![("redis", redis.pids())]);
            with_work(&[], 1, &roles, || {
                measure(&client, name, cell, workers, prefix, timing)
            })
            .await
        }
        (System::EtcdStretched, workload) => {
            let region = match workload {
                Workload::Wan { client_region } => client_region,
                _ => geography::LEADER_REGION,
            };
            let stretched = peers.stretched.as_ref().context(started)?;
            let client =
                EtcdLock::connect(&[stretched.endpoint_from(region)], stretched.tls()).await?;
            measure(&client, name, cell, workers, prefix, timing).await
        }
    }
}

/// Shards per region in `make dev`'s topology (what the benchmark starts).
const SHARDS_PER_REGION: usize = 2;

/// Run `measurement`, and add what `clusters` did per cycle and per `units`,
/// and the CPU that `roles` and the client spent per cycle.
async fn with_work<F, Fut>(
    clusters: &[&EtcdCluster],
    units: usize,
    roles: &Roles,
    measurement: F,
) -> anyhow::Result<Measurement>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Measurement>>,
{
    let before = crate::etcd_work::sample(clusters);
    let cpu_before = crate::cpu::sample(roles);
    let mut m = measurement().await?;
    let cpu_after = crate::cpu::sample(roles);
    let after = crate::etcd_work::sample(clusters);
    if !clusters.is_empty() {
        m.etcd_per_cycle = before
            .zip(after)
            .and_then(|(b, a)| crate::etcd_work::per_cycle(b, a, m.total_cycles, units));
    }
    m.cpu_per_cycle = cpu_before.zip(cpu_after).and_then(|(b, a)| {
        crate::cpu::per_cycle(&b, &a, m.total_cycles, crate::cpu::ticks_per_s())
    });
    Ok(m)
}

/// Default phases for a window of `window`.
pub fn timing(window: Duration, smoke: bool) -> Timing {
    if smoke {
        Timing {
            warmup: Duration::from_millis(200),
            window,
            drain: Duration::from_secs(10),
        }
    } else {
        Timing {
            warmup: (window / 5).min(Duration::from_secs(2)),
            window,
            drain: Duration::from_secs(30),
        }
    }
}
