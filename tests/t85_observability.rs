//! What operators see: the metrics named in the issue are present, move, carry no
//! resource/owner/token labels, and pass `promtool check metrics`; dashboards and
//! alerts use only exported metrics; the audit trail answers who held a resource,
//! when. (Traces: t84_traces.rs, which needs the process's tracing to itself.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use futures::StreamExt;
use globallock_protocol::audit::{AuditEvent, holder_at, tenures};
use harness::{Cluster, ClusterOptions};

/// The metric names the service promises (histograms appear as _bucket etc.).
const PROMISED: &[&str] = &[
    "globallock_acquire_total",
    "globallock_request_duration_seconds_bucket",
    "globallock_region_requests_total",
    "globallock_region_request_duration_seconds_bucket",
    "globallock_quorum_failures_total",
    "globallock_renewals_total",
    "globallock_locks_lost_total",
    "globallock_releases_total",
    "globallock_contention_total",
    "globallock_region_reachable",
    "globallock_agent_locks_held",
    "globallock_agent_hold_duration_seconds_bucket",
    "globallock_agent_grants_total",
    "globallock_agent_requests_total",
    "globallock_etcd_request_duration_seconds_bucket",
    "globallock_build_info",
];

fn value(scrape: &str, series_prefix: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(series_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_stay_unlabelled_by_resource_and_pass_promtool_and_audit_answers()
-> anyhow::Result<()> {
    let audit_dir = tempfile::tempdir()?;
    let mut cluster = Cluster::start(ClusterOptions {
        audit_dir: Some(audit_dir.path().to_path_buf()),
        ..ClusterOptions::default()
    })
    .await?;
    let client = cluster.library_client(0)?;
    let (resource, owner) = ("payroll/run-secret-name", "owner-secret-name");

    let first = client
        .acquire(resource, owner, Duration::from_secs(10), Duration::ZERO)
        .await?;
    assert!(
        client
            .acquire(resource, "rival", Duration::from_secs(10), Duration::ZERO)
            .await
            .is_err()
    );
    assert!(
        client
            .acquire("", owner, Duration::from_secs(10), Duration::ZERO)
            .await
            .is_err()
    );
    client
        .renew(&first.lock_id, Duration::from_secs(10))
        .await?;
    client.release(&first.lock_id).await?;
    assert!(
        client
            .renew(&first.lock_id, Duration::from_secs(10))
            .await
            .is_err(),
        "lost"
    );
    // A lock that expires (its holder "crashes"), then the next holder.
    let crashed = client
        .acquire(
            resource,
            "crashed-worker",
            Duration::from_secs(1),
            Duration::ZERO,
        )
        .await?;
    let next = client
        .acquire(
            resource,
            "next-worker",
            Duration::from_secs(30),
            Duration::from_secs(15),
        )
        .await?;
    let metrics_url = cluster.metrics_addrs[0];

    let missing = |body: &str| {
        PROMISED
            .iter()
            .filter(|m| !body.contains(*m))
            .copied()
            .collect::<Vec<_>>()
    };
    let waited = tokio::time::Instant::now() + Duration::from_secs(15);
    let scrape = loop {
        let body = cluster
            .http(metrics_url, "GET", "/metrics", &[], None)
            .await?
            .body;
        if missing(&body).is_empty() {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < waited,
            "metrics never appeared: {:?}",
            missing(&body)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        value(&scrape, "globallock_acquire_total{outcome=\"granted\"}") >= 3.0,
        "{scrape}"
    );
    assert!(value(&scrape, "globallock_acquire_total{outcome=\"held\"}") >= 1.0);
    assert!(value(&scrape, "globallock_acquire_total{outcome=\"invalid\"}") >= 1.0);
    assert!(value(&scrape, "globallock_locks_lost_total") >= 1.0);
    assert!(value(&scrape, "globallock_renewals_total{outcome=\"renewed\"}") >= 1.0);
    assert!(value(&scrape, "globallock_region_reachable") >= 3.0);
    // A shard is named the same everywhere: `shard-0`, as in the agents' series.
    for line in scrape
        .lines()
        .filter(|l| l.starts_with("globallock_region_reachable{"))
    {
        assert!(line.contains("shard=\"shard-0\""), "{line}");
    }
    assert!(value(&scrape, "globallock_contention_total") >= 1.0);
    // Which resource is contended: the admin endpoint, never a label.
    let top = cluster
        .http(cluster.rest_addrs[0], "GET", "/admin/contention", &[], None)
        .await?
        .json();
    assert_eq!(top["top"][0]["resource"], resource, "{top}");
    for secret in [
        resource,
        owner,
        &first.fencing_token.to_string(),
        &first.lock_id,
    ] {
        assert!(!scrape.contains(secret), "metrics must not carry {secret}");
    }
    let checked = promtool(&["check", "metrics"], Some(&scrape));
    assert!(checked.0, "promtool check metrics:\n{}", checked.1);

    // Dashboards and alert rules refer only to metrics that exist.
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for file in walk(&deploy) {
        let text = std::fs::read_to_string(&file)?;
        for name in metric_names(&text) {
            assert!(
                scrape.contains(&name),
                "{} refers to {name}, which is not exported",
                file.display()
            );
        }
    }

    // No quorum shows up too.
    cluster.stop_region(1).await;
    cluster.stop_region(2).await;
    assert!(
        client
            .acquire("elsewhere", owner, Duration::from_secs(5), Duration::ZERO)
            .await
            .is_err()
    );
    let scrape = cluster
        .http(metrics_url, "GET", "/metrics", &[], None)
        .await?
        .body;
    assert!(value(&scrape, "globallock_acquire_total{outcome=\"no_quorum\"}") >= 1.0);
    assert!(value(&scrape, "globallock_quorum_failures_total") >= 1.0);

    // The audit trail: who held the resource, when.
    let logs: Vec<_> = walk(audit_dir.path());
    let records = globallock_telemetry::audit::read(&logs)?;
    let history = tenures(&records, resource);
    let owners: Vec<&str> = history.iter().map(|t| t.owner.as_str()).collect();
    assert_eq!(
        owners,
        [owner, "crashed-worker", "next-worker"],
        "{history:#?}"
    );
    assert_eq!(history[0].ended_by, Some(AuditEvent::Released));
    // The release names whose lock ended, and its token.
    let released = records
        .iter()
        .find(|r| r.event == AuditEvent::Released && r.lock_id == first.lock_id)
        .unwrap();
    assert_eq!(released.owner, owner, "{released:?}");
    assert_eq!(released.token, first.fencing_token, "{released:?}");
    assert!(!released.regions.is_empty(), "{released:?}");
    assert_eq!(history[0].token, first.fencing_token);
    assert_eq!(history[1].token, crashed.fencing_token);
    assert_eq!(history[2].token, next.fencing_token);
    let during =
        history[0].from_unix_ms + (history[0].until_unix_ms.unwrap() - history[0].from_unix_ms) / 2;
    assert_eq!(holder_at(&history, during).unwrap().lock_id, first.lock_id);
    assert_eq!(
        holder_at(&history, history[2].from_unix_ms + 1)
            .unwrap()
            .owner,
        "next-worker"
    );
    assert!(
        records
            .iter()
            .any(|r| r.event == AuditEvent::Rejected && r.outcome == "held")
    );
    assert!(records.iter().any(|r| r.event == AuditEvent::Lost));
    Ok(())
}

/// A flood of refused acquires does not flood the audit trail: at most a few
/// rejection records per owner per second are written, and the rest are counted
/// in periodic `suppressed` records, so every rejection is accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_acquires_are_rate_limited_in_the_audit_trail() -> anyhow::Result<()> {
    const SPAM: usize = 600;
    let audit_dir = tempfile::tempdir()?;
    let cluster = Cluster::start(ClusterOptions {
        audit_dir: Some(audit_dir.path().to_path_buf()),
        ..ClusterOptions::default()
    })
    .await?;
    let client = cluster.library_client(0)?;
    client
        .acquire(
            "spam/target",
            "holder",
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .await?;
    let started = tokio::time::Instant::now();
    let attempts = (0..SPAM).map(|_| {
        let client = client.clone();
        async move {
            client
                .acquire(
                    "spam/target",
                    "spammer",
                    Duration::from_secs(5),
                    Duration::ZERO,
                )
                .await
                .is_err()
        }
    });
    let refused = futures::stream::iter(attempts)
        .buffer_unordered(8)
        .filter(|refused| std::future::ready(*refused))
        .count()
        .await;
    assert_eq!(refused, SPAM);
    let spam_seconds = started.elapsed().as_secs() + 1;

    // The coordinator's trail, read as plain JSON lines.
    let coordinator_log = audit_dir.path().join("coordinator.jsonl");
    let spammer = |text: &str| -> (u64, u64) {
        let mut written = 0;
        let mut suppressed = 0;
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            if record["event"] == "rejected" && record["owner"] == "spammer" {
                match record["suppressed"].as_u64() {
                    Some(n) => suppressed += n,
                    None => written += 1,
                }
            }
        }
        (written, suppressed)
    };
    let (written, suppressed) = harness::eventually(
        Duration::from_secs(10),
        "every rejection written or counted as suppressed",
        || async {
            let text = std::fs::read_to_string(&coordinator_log).ok()?;
            let (written, suppressed) = spammer(&text);
            (written + suppressed == SPAM as u64).then_some((written, suppressed))
        },
    )
    .await;
    assert!(written >= 1, "the first rejections are written");
    assert!(
        written <= 5 * (spam_seconds + 1),
        "{written} rejection records for {SPAM} rejections in about {spam_seconds} s"
    );
    assert!(suppressed > 0);
    Ok(())
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Names like `globallock_acquire_total` in a text (dashboards, rules).
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("globallock_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if name.ends_with('_') || name.starts_with("globallock_problem") {
            continue;
        }
        names.push(name);
    }
    names.sort();
    names.dedup();
    names
}

/// Run promtool (Debian's `prometheus` package; `make deps` installs it).
fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => panic!(
            "cannot run promtool ({error}): install Debian's prometheus package (make deps does)"
        ),
    };
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
