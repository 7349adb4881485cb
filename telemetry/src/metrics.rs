//! The process's Prometheus recorder and its `/metrics` endpoint.
//!
//! Histograms get explicit buckets (never summaries, which cannot be aggregated
//! across regions). No metric is labelled by resource, owner, lock id or token.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 1 ms to 10 s, dense where cross-region commits
/// live (50–300 ms).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0,
];

/// Hold-duration buckets in seconds: 100 ms to 2 h (locks are renewed well past
/// their TTL; the alert on holds longer than the maximum TTL reads these).
pub const HOLD_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// The recorder of this process (installed on first use; later calls return the
/// same handle, so in-process test clusters share one).
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("globallock_agent_hold_duration_seconds".into()),
                        HOLD_BUCKETS,
                    )
                })
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); then
            // our handle renders only what is recorded through ours.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok();
            describe_all();
            metrics::gauge!("globallock_build_info", "version" => env!("CARGO_PKG_VERSION"))
                .set(1.0);
            handle
        })
        .clone()
}

/// Every metric the service exports, with its unit and meaning: the catalogue
/// (also what `# HELP` says). Labels are bounded: region, shard, op, outcome.
pub const CATALOGUE: &[(&str, &str, &str)] = &[
    // (kind, name, help)
    (
        "counter",
        "globallock_acquire_total",
        "Acquire requests by outcome (granted, held, contended, no_quorum, invalid, rate_limited, quota_exceeded, error).",
    ),
    (
        "gauge",
        "globallock_acquires_in_line",
        "Waiting acquires (wait_ms > 0) in this coordinator's lines, first in line included: each resource's waiters take turns in arrival order.",
    ),
    (
        "gauge",
        "globallock_acquires_waiting",
        "Acquires of principals that may wait (wait_ms > 0) in progress in this coordinator (capped per principal by max_waiters_per_principal).",
    ),
    (
        "histogram",
        "globallock_request_duration_seconds",
        "Coordinator request latency by operation (acquire, renew, release, describe).",
    ),
    (
        "counter",
        "globallock_renewals_total",
        "Renewals by outcome (renewed, lost, no_quorum, invalid, error).",
    ),
    (
        "counter",
        "globallock_locks_lost_total",
        "Renewals that found the lock gone: holders that lost their lock.",
    ),
    (
        "counter",
        "globallock_releases_total",
        "Releases by outcome (released, not_found, no_quorum, invalid, error).",
    ),
    (
        "counter",
        "globallock_quorum_failures_total",
        "Requests rejected because no majority of regions was reachable, by operation.",
    ),
    (
        "counter",
        "globallock_contention_total",
        "Acquires refused because another lock held the resource (top resources: GET /admin/contention).",
    ),
    (
        "counter",
        "globallock_region_requests_total",
        "Coordinator calls to region agents by region, operation and outcome (ok, error, timeout).",
    ),
    (
        "histogram",
        "globallock_region_request_duration_seconds",
        "Coordinator to region agent call latency by region and operation.",
    ),
    (
        "gauge",
        "globallock_region_reachable",
        "1 when the region serves the shard as this coordinator sees it, else 0.",
    ),
    (
        "counter",
        "globallock_discovery_lookups_total",
        "SRV lookups of a DNS-discovered region's agent by region and outcome (unchanged, changed, absent, failed).",
    ),
    (
        "counter",
        "globallock_agent_requests_total",
        "Region agent requests by operation and outcome.",
    ),
    (
        "histogram",
        "globallock_agent_request_duration_seconds",
        "Region agent request latency by operation.",
    ),
    (
        "counter",
        "globallock_agent_grants_total",
        "Grant proposals by shard and outcome in this region.",
    ),
    (
        "gauge",
        "globallock_agent_locks_held",
        "Grants this region holds now, by shard.",
    ),
    (
        "gauge",
        "globallock_agent_marks",
        "Fencing-token marks this region keeps after the last mark sweep, by shard.",
    ),
    (
        "counter",
        "globallock_agent_quarantines_total",
        "Times a shard entered quarantine (etcd data lost, marker wiped or rewritten, or etcd history rolled back), by shard.",
    ),
    (
        "histogram",
        "globallock_agent_hold_duration_seconds",
        "How long released locks were held (grant to release), by shard.",
    ),
    (
        "counter",
        "globallock_agent_expirations_total",
        "Grants this region saw expire without a release, by shard.",
    ),
    (
        "histogram",
        "globallock_etcd_request_duration_seconds",
        "etcd request latency by shard and operation (retries included; op=\"batch\" is a group-committed request of several transactions).",
    ),
    (
        "counter",
        "globallock_hand_offs_total",
        "Releases that carried the next waiter's proposals (one round for release and grant).",
    ),
    (
        "counter",
        "globallock_stale_grants_repaired_total",
        "Releases sent again to a region that named as holder a lock a majority already released (it had missed the release).",
    ),
    (
        "counter",
        "globallock_region_streams_opened_total",
        "Call streams (Exchange) opened to each region's agent: one per agent while connections hold; more mean reconnects.",
    ),
    (
        "counter",
        "globallock_agent_exchanges_total",
        "Call streams (Exchange) coordinators opened to this agent.",
    ),
    (
        "counter",
        "globallock_etcd_abandoned_total",
        "etcd transactions dropped unsent because their request was cancelled (the coordinator stopped waiting) while they waited for a batch.",
    ),
    (
        "histogram",
        "globallock_etcd_batch_size",
        "Transactions per etcd request sent by group commit, by shard (1: sent alone).",
    ),
    (
        "counter",
        "globallock_etcd_errors_total",
        "etcd requests that failed after retries, by shard and operation.",
    ),
    (
        "counter",
        "globallock_audit_dropped_total",
        "Audit records dropped (queue full or write failed).",
    ),
    (
        "counter",
        "globallock_audit_suppressed_total",
        "Rejection audit records not written because of the rejection rate limit (counted in periodic summary records instead).",
    ),
    (
        "gauge",
        "globallock_build_info",
        "Always 1; the version label names the build.",
    ),
];

fn describe_all() {
    for (kind, name, help) in CATALOGUE {
        match *kind {
            "counter" => metrics::describe_counter!(*name, *help),
            "histogram" => metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help),
            _ => metrics::describe_gauge!(*name, *help),
        }
    }
}

/// A router serving `GET /metrics` in the Prometheus text format.
pub fn router() -> axum::Router {
    let handle = recorder();
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    )
}

/// Serve `/metrics` on `listener` (a TCP listener, or TLS connections) until
/// `shutdown` completes.
pub async fn serve<L>(
    listener: L,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await
}
