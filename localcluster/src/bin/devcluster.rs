//! `devcluster` (what `make dev` runs): a local three-region cluster.
//!
//! For each region: one etcd cluster per shard (one member each, or three with
//! `--members 3`) and a region agent; then one coordinator on 127.0.0.1:7400 (REST
//! on 7480, metrics on 7490). Every process is a real child process
//! ([`globallock_localcluster::ProcessCluster`]). It prints a table of regions,
//! shards, endpoints and pids, writes the same as JSON into the data directory, and
//! stays in the foreground until Ctrl-C/SIGTERM, then stops everything it started.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use globallock_localcluster::processes::{CoordinatorInfo, REGIONS, RegionInfo};
use globallock_localcluster::{CoordinatorSpec, Layout, ProcessCluster};
use serde::Serialize;

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

/// What `cluster.json` holds.
#[derive(Debug, Serialize)]
struct ClusterInfo {
    coordinator_address: String,
    rest_address: String,
    coordinator_metrics: String,
    coordinator_pid: u32,
    audit_logs: Vec<String>,
    data_dir: String,
    coordinators: Vec<CoordinatorInfo>,
    regions: Vec<RegionInfo>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for (address, flag) in [
        (args.listen, "--listen"),
        (args.rest_listen, "--rest-listen"),
        (args.metrics_listen, "--metrics-listen"),
    ] {
        if TcpListener::bind(address).is_err() {
            bail!(
                "{address} is already in use: is another `make dev` running? Stop it, or pass {flag}"
            );
        }
    }
    if args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("cannot clear {}", args.data_dir.display()))?;
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "starting {} etcd processes...",
        REGIONS.len() * usize::from(args.shards) * args.members
    );
    let layout = Layout {
        shards: usize::from(args.shards),
        members: args.members,
        ..Layout::new(data_dir.clone())
    };
    let mut cluster = runtime.block_on(ProcessCluster::start(layout))?;
    let spec = CoordinatorSpec {
        grpc: args.listen,
        rest: Some(args.rest_listen),
        metrics: Some(args.metrics_listen),
        region_endpoints: cluster.agent_endpoints(),
    };
    runtime.block_on(cluster.start_coordinator(spec))?;

    let coordinators = cluster.coordinators();
    let info = ClusterInfo {
        coordinator_address: coordinators[0].grpc.clone(),
        rest_address: coordinators[0].rest.clone().unwrap_or_default(),
        coordinator_metrics: coordinators[0].metrics.clone().unwrap_or_default(),
        coordinator_pid: coordinators[0].pid,
        audit_logs: cluster
            .audit_logs()
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        data_dir: data_dir.display().to_string(),
        coordinators,
        regions: cluster.regions(),
    };
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
    cluster.stop();
    println!("stopped; data and logs kept in {}", data_dir.display());
    Ok(())
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
    let agents: Vec<&str> = info
        .regions
        .iter()
        .map(|r| r.agent_metrics.as_str())
        .collect();
    println!(
        "metrics      {} (agents: {})",
        info.coordinator_metrics,
        agents.join(", ")
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
