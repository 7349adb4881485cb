//! `devcluster` (what `make dev` runs): a local three-region cluster.
//!
//! For each region: one etcd cluster per shard (one member each, or three with
//! `--members 3`) and a region agent; then one coordinator on 127.0.0.1:7400.
//! Every process is a real child process. It prints a table of regions, shards,
//! endpoints and pids, writes the same as JSON into the data directory, and stays
//! in the foreground until Ctrl-C/SIGTERM, then stops everything it started.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use globallock_localcluster::{EtcdCluster, ManagedProcess, free_port};
use globallock_proto::agent::HealthRequest;
use globallock_proto::agent::region_agent_client::RegionAgentClient;
use globallock_proto::v1::DescribeRequest;
use globallock_proto::v1::lock_service_client::LockServiceClient;
use serde::Serialize;

const REGIONS: [&str; 3] = ["region-a", "region-b", "region-c"];

/// Start a local three-region global lock cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Where data, logs, configs and cluster.json go (wiped at start).
    #[arg(long, default_value = ".dev-cluster")]
    data_dir: PathBuf,
    /// Shards per region (each its own etcd cluster).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    shards: u16,
    /// Members per etcd cluster: 1, or 3 to see Raft at work.
    #[arg(long, default_value_t = 1, value_parser = parse_members)]
    members: usize,
    /// The coordinator's gRPC address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// The coordinator's REST address.
    #[arg(long, default_value = "127.0.0.1:7480")]
    rest_listen: SocketAddr,
    /// The coordinator's Prometheus `/metrics` address (agents get free ports).
    #[arg(long, default_value = "127.0.0.1:7490")]
    metrics_listen: SocketAddr,
}

fn parse_members(text: &str) -> Result<usize, String> {
    match text {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err("must be 1 or 3".into()),
    }
}

#[derive(Debug, Serialize)]
struct ShardInfo {
    shard: String,
    etcd_endpoints: Vec<String>,
    etcd_pids: Vec<u32>,
}

#[derive(Debug, Serialize)]
struct RegionInfo {
    region: String,
    agent_address: String,
    agent_metrics: String,
    agent_pid: u32,
    shards: Vec<ShardInfo>,
}

#[derive(Debug, Serialize)]
struct ClusterInfo {
    coordinator_address: String,
    rest_address: String,
    coordinator_metrics: String,
    audit_logs: Vec<String>,
    coordinator_pid: u32,
    data_dir: String,
    regions: Vec<RegionInfo>,
}

/// Everything started, stopped in reverse order on drop.
struct Running {
    coordinator: Option<ManagedProcess>,
    agents: Vec<ManagedProcess>,
    etcd: Vec<EtcdCluster>,
}

impl Running {
    fn stop(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            c.terminate(Duration::from_secs(5));
        }
        for agent in &mut self.agents {
            agent.terminate(Duration::from_secs(5));
        }
        for etcd in &mut self.etcd {
            etcd.kill();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for (address, flag) in [
        (args.listen, "--listen"),
        (args.rest_listen, "--rest-listen"),
    ] {
        if TcpListener::bind(address).is_err() {
            bail!(
                "{address} is already in use: is another `make dev` running? Stop it, or pass {flag}"
            );
        }
    }
    let binaries = sibling_binaries()?;
    if args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("cannot clear {}", args.data_dir.display()))?;
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    let shard_names: Vec<String> = (0..args.shards).map(|i| format!("shard-{i}")).collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut running = Running {
        coordinator: None,
        agents: Vec::new(),
        etcd: Vec::new(),
    };
    let mut regions = Vec::new();
    println!(
        "starting {} etcd processes...",
        REGIONS.len() * shard_names.len() * args.members
    );
    for region in REGIONS {
        let region_dir = data_dir.join(region);
        let mut shards = Vec::new();
        for shard in &shard_names {
            let etcd = EtcdCluster::start(&format!("{region}-{shard}"), args.members, &region_dir)?;
            shards.push(ShardInfo {
                shard: shard.clone(),
                etcd_endpoints: etcd.endpoints(),
                etcd_pids: etcd.members().iter().map(|m| m.pid()).collect(),
            });
            running.etcd.push(etcd);
        }
        let agent_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let config = region_dir.join("agent.toml");
        let audit = region_dir.join("audit.jsonl");
        std::fs::write(
            &config,
            agent_config(region, agent_addr, metrics_addr, &audit, &shards),
        )?;
        let mut command = Command::new(&binaries.agent);
        command.arg("--config").arg(&config);
        let agent = ManagedProcess::spawn(
            format!("agent {region}"),
            command,
            &region_dir.join("agent.log"),
        )?;
        regions.push(RegionInfo {
            region: region.to_owned(),
            agent_address: format!("http://{agent_addr}"),
            agent_metrics: format!("http://{metrics_addr}/metrics"),
            agent_pid: agent.pid(),
            shards,
        });
        running.agents.push(agent);
    }
    runtime.block_on(wait_for_agents(&regions))?;

    let config = data_dir.join("coordinator.toml");
    let coordinator_audit = data_dir.join("coordinator-audit.jsonl");
    std::fs::write(
        &config,
        coordinator_config(&args, &coordinator_audit, &regions, &shard_names),
    )?;
    let mut command = Command::new(&binaries.coordinator);
    command.arg("--config").arg(&config);
    let coordinator =
        ManagedProcess::spawn("coordinator", command, &data_dir.join("coordinator.log"))?;
    let info = ClusterInfo {
        coordinator_address: format!("http://{}", args.listen),
        rest_address: format!("http://{}", args.rest_listen),
        coordinator_metrics: format!("http://{}/metrics", args.metrics_listen),
        audit_logs: std::iter::once(coordinator_audit.display().to_string())
            .chain(
                REGIONS
                    .iter()
                    .map(|r| data_dir.join(r).join("audit.jsonl").display().to_string()),
            )
            .collect(),
        coordinator_pid: coordinator.pid(),
        data_dir: data_dir.display().to_string(),
        regions,
    };
    running.coordinator = Some(coordinator);
    runtime.block_on(wait_for_coordinator(args.listen))?;

    let json_path = data_dir.join("cluster.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&info)?)?;
    // For deploy/prometheus/prometheus.yml (file_sd_configs).
    std::fs::write(
        data_dir.join("prometheus-targets.json"),
        prometheus_targets(&info),
    )?;
    print_table(&info, &json_path);

    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    println!("\nstopping: coordinator, agents, etcd...");
    running.stop();
    println!("stopped; data and logs kept in {}", data_dir.display());
    Ok(())
}

struct Binaries {
    agent: PathBuf,
    coordinator: PathBuf,
}

/// The `region-agent` and `coordinator` binaries built next to this one.
fn sibling_binaries() -> anyhow::Result<Binaries> {
    let dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("no directory for the current executable")?;
    let agent = dir.join("region-agent");
    let coordinator = dir.join("coordinator");
    for binary in [&agent, &coordinator] {
        if !binary.is_file() {
            bail!(
                "{} not found: build everything first (`cargo build --bins`, which `make dev` does)",
                binary.display()
            );
        }
    }
    Ok(Binaries { agent, coordinator })
}

fn agent_config(
    region: &str,
    listen: SocketAddr,
    metrics: SocketAddr,
    audit: &Path,
    shards: &[ShardInfo],
) -> String {
    let mut text = format!(
        "# Written by devcluster.\nregion = {region:?}\nlisten = \"{listen}\"\nmetrics_listen = \"{metrics}\"\n\
         audit_log = {:?}\ncompaction_interval_s = 60\n\
         # Fresh etcd every `make dev`: its shards are new, not amnesiac.\nbootstrap = true\n",
        audit.display().to_string()
    );
    for shard in shards {
        let endpoints: Vec<String> = shard
            .etcd_endpoints
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        text.push_str(&format!(
            "\n[[shards]]\nname = {:?}\nendpoints = [{}]\n",
            shard.shard,
            endpoints.join(", ")
        ));
    }
    text
}

fn coordinator_config(
    args: &Args,
    audit: &Path,
    regions: &[RegionInfo],
    shards: &[String],
) -> String {
    let shards: Vec<String> = shards.iter().map(|s| format!("{s:?}")).collect();
    // Loopback answers in microseconds: a short region deadline and frequent
    // probes make the minority side reject within half a second even when two
    // regions are frozen (SIGSTOP) rather than dead.
    let mut text = format!(
        "# Written by devcluster.\nlisten = \"{}\"\nrest_listen = \"{}\"\nmetrics_listen = \"{}\"\n\
         audit_log = {:?}\nshards = [{}]\n\
         region_timeout_ms = 500\nhealth_interval_ms = 250\nhealth_timeout_ms = 200\n",
        args.listen,
        args.rest_listen,
        args.metrics_listen,
        audit.display().to_string(),
        shards.join(", ")
    );
    for region in regions {
        text.push_str(&format!(
            "\n[[regions]]\nname = {:?}\nendpoint = {:?}\n",
            region.region, region.agent_address
        ));
    }
    text
}

async fn wait_for_agents(regions: &[RegionInfo]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for region in regions {
        loop {
            let healthy = async {
                let mut client = RegionAgentClient::connect(region.agent_address.clone())
                    .await
                    .ok()?;
                client
                    .health(HealthRequest {})
                    .await
                    .ok()
                    .map(|r| r.into_inner().healthy)
            };
            if healthy.await == Some(true) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "agent of {} did not become healthy; see its agent.log",
                    region.region
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn wait_for_coordinator(listen: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answered = async {
            let mut client = LockServiceClient::connect(format!("http://{listen}"))
                .await
                .ok()?;
            client
                .describe(DescribeRequest {
                    resource: "devcluster/ready".into(),
                })
                .await
                .ok()
        };
        if answered.await.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("coordinator did not answer on {listen}; see coordinator.log");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prometheus file_sd targets: the coordinator and every agent.
fn prometheus_targets(info: &ClusterInfo) -> String {
    let host = |url: &str| {
        url.trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_owned()
    };
    let mut groups = vec![serde_json::json!({
        "targets": [host(&info.coordinator_metrics)],
        "labels": {"job": "globallock-coordinator", "region": "local"}
    })];
    for region in &info.regions {
        groups.push(serde_json::json!({
            "targets": [host(&region.agent_metrics)],
            "labels": {"job": "globallock-agent", "region": region.region}
        }));
    }
    serde_json::to_string_pretty(&groups).unwrap_or_default()
}

fn print_table(info: &ClusterInfo, json_path: &Path) {
    println!();
    println!(
        "{:<10} {:<9} {:<46} {:<18} {:<24} {:>7}",
        "REGION", "SHARD", "ETCD ENDPOINTS", "ETCD PIDS", "AGENT", "AGENT PID"
    );
    for region in &info.regions {
        for (i, shard) in region.shards.iter().enumerate() {
            let pids: Vec<String> = shard.etcd_pids.iter().map(u32::to_string).collect();
            let (agent, agent_pid) = if i == 0 {
                (region.agent_address.as_str(), region.agent_pid.to_string())
            } else {
                ("", String::new())
            };
            println!(
                "{:<10} {:<9} {:<46} {:<18} {:<24} {:>7}",
                if i == 0 { region.region.as_str() } else { "" },
                shard.shard,
                shard.etcd_endpoints.join(","),
                pids.join(","),
                agent,
                agent_pid
            );
        }
    }
    println!();
    println!(
        "coordinator  gRPC {}  REST {}  (pid {})",
        info.coordinator_address, info.rest_address, info.coordinator_pid
    );
    println!("openapi      {}/openapi.json", info.rest_address);
    println!(
        "metrics      {} (agents: {})",
        info.coordinator_metrics,
        info.regions
            .iter()
            .map(|r| r.agent_metrics.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("audit        {}", info.audit_logs.join(", "));
    println!(
        "traces       set OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 before `make dev` to export to Jaeger"
    );
    println!("cluster.json {}", json_path.display());
    println!(
        "logs         {}/<region>/*.log, {}/coordinator.log",
        info.data_dir, info.data_dir
    );
    println!();
    println!("try:  target/debug/lockctl acquire orders/42 --ttl 30s");
    println!("      target/debug/lockctl describe orders/42");
    println!(
        "      target/debug/lockctl audit orders/42 --log {}",
        info.audit_logs.join(" --log ")
    );
    println!(
        "      curl -s -XPOST {}/locks -H 'content-type: application/json' \\",
        info.rest_address
    );
    println!("           -d '{{\"resource\":\"orders/42\",\"owner\":\"me\",\"ttl_ms\":30000}}'");
    println!();
    println!("Ctrl-C stops everything.");
}
