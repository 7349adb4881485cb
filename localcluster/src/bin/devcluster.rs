//! `devcluster` (what `make dev` runs): a local three-region cluster.
//!
//! For each region: one etcd cluster per shard (one member each, or three with
//! `--members 3`) and a region agent; then one coordinator on 127.0.0.1:7400 (REST
//! on 7480, metrics on 7490). Every process is a real child process
//! ([`globallock_localcluster::ProcessCluster`]). It prints a table of regions,
//! shards, endpoints and pids, writes the same as JSON into the data directory, and
//! stays in the foreground until Ctrl-C/SIGTERM, then stops everything it started.
//!
//! What it prints follows its flags: the `try:` lines pass `--endpoint` when the
//! coordinator is not on lockctl's default, and the data directory gets a
//! `prometheus.yml` that scrapes this cluster's own `prometheus-targets.json`
//! (`deploy/prometheus/prometheus.yml` is the same for the default `.dev-cluster`).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use globallock_localcluster::processes::{CoordinatorInfo, REGIONS, RegionInfo};
use globallock_localcluster::{CoordinatorSpec, Layout, ProcessCluster};
use serde::Serialize;

/// The endpoint lockctl uses without `--endpoint` (and `make dev`'s `--listen`).
const LOCKCTL_DEFAULT_ENDPOINT: &str = "https://127.0.0.1:7400";
/// Where lockctl looks for the dev CA and client identity without flags.
const LOCKCTL_DEFAULT_DEV_DIR: &str = ".dev-cluster";

/// The repository's alert rules, for the Prometheus config written into the data
/// directory (left out when the binary runs away from its source tree).
const ALERT_RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/prometheus/alerts.yml"
);

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
    /// Run every door and hop in plaintext instead of TLS (by default a CA and
    /// certificates are made under DATA_DIR/tls, and everything runs over TLS).
    #[arg(long)]
    insecure: bool,
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
    /// A Prometheus config scraping this cluster (`prometheus --config.file=...`).
    prometheus_config: String,
    /// The dev CA and client identity (absent with --insecure).
    tls: Option<TlsInfo>,
    coordinators: Vec<CoordinatorInfo>,
    regions: Vec<RegionInfo>,
}

/// The files a client needs to call this cluster over TLS.
#[derive(Debug, Serialize)]
struct TlsInfo {
    ca: String,
    client_cert: String,
    client_key: String,
    /// Tenant identities: (certificate, key), each its own principal.
    tenants: Vec<(String, String)>,
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
        tls: !args.insecure,
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
        prometheus_config: data_dir.join("prometheus.yml").display().to_string(),
        tls: cluster.tls().map(|t| TlsInfo {
            ca: t.ca.display().to_string(),
            client_cert: t.client.cert.display().to_string(),
            tenants: t
                .tenants
                .iter()
                .map(|f| (f.cert.display().to_string(), f.key.display().to_string()))
                .collect(),
            client_key: t.client.key.display().to_string(),
        }),
        coordinators,
        regions: cluster.regions(),
    };
    let json_path = data_dir.join("cluster.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&info)?)?;
    // Prometheus file_sd targets, and a config that scrapes exactly this file
    // (deploy/prometheus/prometheus.yml reads the default .dev-cluster path only).
    let targets = data_dir.join("prometheus-targets.json");
    std::fs::write(&targets, prometheus_targets(&info))?;
    let rules = Path::new(ALERT_RULES).canonicalize().ok();
    std::fs::write(
        &info.prometheus_config,
        prometheus_config(
            &targets,
            rules.as_deref(),
            cluster.tls().map(|t| t.ca.as_path()),
        ),
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
            .trim_start_matches("https://")
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

/// A Prometheus configuration scraping the targets in `targets` (absolute), with
/// the alert rules when they are at hand, over TLS trusting `ca` when given.
fn prometheus_config(targets: &Path, rules: Option<&Path>, ca: Option<&Path>) -> String {
    // JSON strings are YAML double-quoted scalars: any path is quoted safely.
    let quote = |path: &Path| serde_json::Value::from(path.display().to_string()).to_string();
    let mut text = String::from(
        "# Written by devcluster for this cluster: scrapes the coordinator and every\n\
         # agent listed in the targets file below. Start Prometheus with\n\
         #   prometheus --config.file=<this file>\n\
         global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n",
    );
    if let Some(rules) = rules {
        text.push_str(&format!("\nrule_files:\n  - {}\n", quote(rules)));
    }
    text.push_str("\nscrape_configs:\n  - job_name: globallock\n");
    if let Some(ca) = ca {
        // Every /metrics port serves TLS with the service's own certificate
        // (which names 127.0.0.1); no client certificate is needed to scrape.
        text.push_str(&format!(
            "    scheme: https\n    tls_config:\n      ca_file: {}\n",
            quote(ca)
        ));
    }
    text.push_str(&format!(
        "    file_sd_configs:\n      - files:\n          - {}\n        refresh_interval: 10s\n",
        quote(targets)
    ));
    text
}

/// The commands to try, aimed at this cluster: `--endpoint` whenever the
/// coordinator is not where lockctl looks by default.
fn try_lines(info: &ClusterInfo) -> Vec<String> {
    let mut endpoint = if info.coordinator_address == LOCKCTL_DEFAULT_ENDPOINT {
        String::new()
    } else {
        format!(" --endpoint {}", info.coordinator_address)
    };
    // lockctl finds the dev CA and client identity under its default --dev-dir.
    let default_dir = std::path::Path::new(LOCKCTL_DEFAULT_DEV_DIR)
        .canonicalize()
        .ok()
        .is_some_and(|d| d.display().to_string() == info.data_dir);
    if info.tls.is_some() && !default_dir {
        endpoint.push_str(&format!(" --dev-dir {}", info.data_dir));
    }
    let curl_tls = match &info.tls {
        Some(tls) => format!(
            " --cacert {} --cert {} --key {}",
            tls.ca, tls.client_cert, tls.client_key
        ),
        None => String::new(),
    };
    vec![
        format!("try:  target/debug/lockctl acquire orders/42 --ttl 30s{endpoint}"),
        format!("      target/debug/lockctl describe orders/42{endpoint}"),
        format!(
            "      target/debug/lockctl audit orders/42 --log {}",
            info.audit_logs.join(" --log ")
        ),
        format!(
            "      curl -s{curl_tls} -XPOST {}/locks -H 'content-type: application/json' \\",
            info.rest_address
        ),
        "           -d '{\"resource\":\"orders/42\",\"owner\":\"me\",\"ttl_ms\":30000}'".to_owned(),
    ]
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
    println!(
        "prometheus   prometheus --config.file={}",
        info.prometheus_config
    );
    println!("audit        {}", info.audit_logs.join(", "));
    match &info.tls {
        Some(tls) => {
            println!(
                "tls          every door and hop; CA {}, client identity {} (lockctl uses both on its own)",
                tls.ca, tls.client_cert
            );
            for (cert, key) in &tls.tenants {
                println!(
                    "tenant       --cert {cert} --key {key} (its own principal: no renewing or releasing others' locks, no admin)"
                );
            }
        }
        None => println!("tls          OFF (--insecure): every door and hop is plaintext"),
    }
    println!(
        "traces       set OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 before `make dev` to export to Jaeger"
    );
    println!("cluster.json {}", json_path.display());
    println!(
        "logs         {}/<region>/*.log, {}/coordinator.log (GLOBALLOCK_LOG_FORMAT=json for JSON lines)",
        info.data_dir, info.data_dir
    );
    println!();
    for line in try_lines(info) {
        println!("{line}");
    }
    println!();
    println!("Ctrl-C stops everything.");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(grpc: &str) -> ClusterInfo {
        ClusterInfo {
            coordinator_address: grpc.to_owned(),
            rest_address: "http://127.0.0.1:7480".into(),
            coordinator_metrics: "http://127.0.0.1:7490/metrics".into(),
            coordinator_pid: 1,
            audit_logs: vec!["/d/coordinator-audit.jsonl".into()],
            data_dir: "/d".into(),
            prometheus_config: "/d/prometheus.yml".into(),
            tls: None,
            coordinators: Vec::new(),
            regions: Vec::new(),
        }
    }

    #[test]
    fn try_lines_name_the_endpoint_only_when_it_is_not_the_default() {
        let default = try_lines(&info(LOCKCTL_DEFAULT_ENDPOINT)).join("\n");
        assert!(!default.contains("--endpoint"), "{default}");
        let other = try_lines(&info("http://127.0.0.1:7500")).join("\n");
        assert!(
            other.contains("acquire orders/42 --ttl 30s --endpoint http://127.0.0.1:7500"),
            "{other}"
        );
        assert!(
            other.contains("describe orders/42 --endpoint http://127.0.0.1:7500"),
            "{other}"
        );
    }

    #[test]
    fn try_lines_over_tls_name_the_files_curl_needs_and_a_data_dir_lockctl_would_not_find() {
        let mut tls = info(LOCKCTL_DEFAULT_ENDPOINT);
        tls.tls = Some(TlsInfo {
            ca: "/d/tls/dev-ca.pem".into(),
            client_cert: "/d/tls/client.pem".into(),
            client_key: "/d/tls/client.key".into(),
            tenants: Vec::new(),
        });
        let lines = try_lines(&tls).join("\n");
        assert!(
            lines.contains("curl -s --cacert /d/tls/dev-ca.pem --cert /d/tls/client.pem --key /d/tls/client.key"),
            "{lines}"
        );
        assert!(
            lines.contains("acquire orders/42 --ttl 30s --dev-dir /d"),
            "{lines}"
        );
    }

    #[test]
    fn prometheus_config_scrapes_the_given_targets_file() {
        let config = prometheus_config(
            Path::new("/tmp/my cluster/prometheus-targets.json"),
            Some(Path::new("/repo/deploy/prometheus/alerts.yml")),
            Some(Path::new("/tmp/my cluster/tls/dev-ca.pem")),
        );
        assert!(
            config.contains(
                "scheme: https\n    tls_config:\n      ca_file: \"/tmp/my cluster/tls/dev-ca.pem\""
            ),
            "{config}"
        );
        assert!(
            config.contains("- \"/tmp/my cluster/prometheus-targets.json\""),
            "{config}"
        );
        assert!(
            config.contains("rule_files:\n  - \"/repo/deploy/prometheus/alerts.yml\""),
            "{config}"
        );
        let without_rules = prometheus_config(Path::new("/t.json"), None, None);
        assert!(!without_rules.contains("rule_files"), "{without_rules}");
        assert!(!without_rules.contains("https"), "{without_rules}");
    }
}
