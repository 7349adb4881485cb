//! Running an agent: connect the shards, serve until told to stop.

use std::future::Future;
use std::sync::Arc;

use globallock_etcd::{ShardStore, StoreError};
use globallock_proto::agent::region_agent_server::RegionAgentServer;
use globallock_protocol::clock::SharedClock;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use globallock_protocol::audit::{AuditEvent, AuditRecord};
use globallock_protocol::lock_id::LockId;
use globallock_telemetry::audit::AuditLog;
use tracing::{info, warn};

use crate::config::ValidConfig;
use crate::service::AgentService;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A shard's store could not be set up.
    #[error("cannot set up shard")]
    Shard(#[from] StoreError),
    /// The configured ring cannot be served (changed without a new epoch, or the
    /// ring state cannot be kept).
    #[error("cannot serve the configured ring")]
    Ring(#[from] crate::ring_state::RingStateError),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
    /// The listener could not be set up.
    #[error("cannot listen")]
    Listen(#[source] std::io::Error),
    /// The audit log cannot be opened.
    #[error("cannot open audit log {path}")]
    Audit {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where the agent serves.
#[derive(Debug)]
pub struct AgentListeners {
    /// The internal agent API.
    pub api: TcpListener,
    /// `/metrics`, if served.
    pub metrics: Option<TcpListener>,
}

/// Serve the agent API until `shutdown` completes, then stop accepting, let
/// in-flight requests finish, and return.
pub async fn serve(
    config: ValidConfig,
    listeners: AgentListeners,
    clock: SharedClock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let _ = globallock_telemetry::metrics::recorder();
    let mut stores = Vec::with_capacity(config.shards.len());
    for shard in &config.shards {
        let store = Arc::new(ShardStore::connect(shard, clock.clone()).await?);
        // A shard that cannot be reached now is prepared lazily: it stays silent
        // (quarantined) until the next start finds its marker.
        if let Err(error) = store.prepare(config.bootstrap).await {
            warn!(shard = store.name(), %error, "cannot check the shard's incarnation; it stays silent");
        }
        stores.push(store);
    }
    let audit = match &config.audit_log {
        Some(path) => AuditLog::to_file(path).map_err(|source| AgentError::Audit {
            path: path.clone(),
            source,
        })?,
        None => AuditLog::disabled(),
    };
    let mut background = vec![tokio::spawn(maintain(
        stores.clone(),
        config.compaction_interval,
        config.compaction_keep_revisions,
        config.mark_sweep_interval,
    ))];
    for store in &stores {
        background.push(tokio::spawn(watch_expirations(
            store.clone(),
            config.region.clone(),
            audit.clone(),
            clock.clone(),
        )));
    }
    // One shutdown signal, shared by every server of this process.
    let shutdown = globallock_runtime::SharedShutdown::new(shutdown);
    let metrics = match listeners.metrics {
        None => None,
        Some(listener) => {
            info!(region = %config.region, address = %local(&listener), tls = config.metrics_tls.is_some(), "region agent serving /metrics");
            Some(match &config.metrics_tls {
                Some(tls) => {
                    let incoming =
                        globallock_tls::TlsIncoming::new(listener, tls.clone(), "metrics")
                            .map_err(AgentError::Listen)?;
                    tokio::spawn(globallock_telemetry::metrics::serve(
                        incoming,
                        shutdown.signal(),
                    ))
                }
                None => tokio::spawn(globallock_telemetry::metrics::serve(
                    listener,
                    shutdown.signal(),
                )),
            })
        }
    };
    for store in &stores {
        for op in [
            "grant",
            "renew",
            "release",
            "abort",
            "read",
            "get",
            "lease grant",
            "batch",
        ] {
            metrics::counter!("globallock_etcd_errors_total", "shard" => store.name().to_owned(), "op" => op).increment(0);
        }
        metrics::counter!("globallock_agent_expirations_total", "shard" => store.name().to_owned())
            .increment(0);
    }
    let handover = crate::ring_state::resolve(
        config.state_dir.as_deref(),
        config.ring_epoch,
        crate::ring_state::StoredRing {
            shards: config.ring.shards().to_vec(),
            vnodes: config.ring_vnodes,
        },
        clock.monotonic(),
        config.quarantine,
        clock.unix_micros() / 1_000,
    )?;
    if let Some(handover) = &handover
        && handover.floor().is_none()
    {
        warn!(
            region = %config.region,
            epoch = config.ring_epoch,
            wait = ?config.quarantine,
            "ring changed: resources that moved onto this region's shards are served once every lock of the previous ring has expired"
        );
    }
    if config.shards.iter().any(|s| s.state_file.is_none()) {
        tracing::warn!(
            region = %config.region,
            "no state_dir configured: an etcd restored to older data while this agent is down will not be noticed"
        );
    }
    let service = AgentService::new(
        &config.region,
        stores,
        config.ring.clone(),
        config.limits,
        clock.clone(),
    )
    .with_ring_epoch(config.ring_epoch, handover, config.state_dir.clone())
    .with_shutdown(shutdown.clone());
    info!(region = %config.region, address = %local(&listeners.api), tls = config.tls.is_some(), "region agent serving");
    if config.shards.iter().any(|s| s.tls.is_none()) {
        warn!(region = %config.region, "etcd_insecure = true: this agent talks to etcd in plaintext, and anyone who reaches etcd can rewrite locks; never run it so across a network you do not own");
    }
    let result = match &config.tls {
        Some(tls) => {
            // Only coordinators may call: their certificates carry the
            // coordinator's name (an agent's certificate, or any other from the
            // CA, is refused).
            let server = tonic::transport::Server::builder().add_service(
                RegionAgentServer::with_interceptor(service, only_coordinators),
            );
            let incoming = globallock_tls::TlsIncoming::new(listeners.api, tls.clone(), "agent")
                .map_err(AgentError::Listen)?;
            server
                .serve_with_incoming_shutdown(incoming, shutdown.signal())
                .await
        }
        None => {
            warn!(region = %config.region, "insecure = true: the agent API is plaintext and anyone who reaches it can vote as a coordinator; never run it so in production");
            tonic::transport::Server::builder()
                .add_service(RegionAgentServer::new(service))
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listeners.api),
                    shutdown.signal(),
                )
                .await
        }
    };
    for task in background {
        task.abort();
    }
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    info!(region = %config.region, "region agent stopped");
    Ok(result?)
}

/// Let a call through only if its client certificate names a coordinator.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
fn only_coordinators(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let certs = request.peer_certs();
    let chain = certs.as_deref().map(Vec::as_slice).unwrap_or_default();
    if globallock_tls::identity::carries(chain, globallock_tls::identity::COORDINATOR) {
        return Ok(request);
    }
    let names = chain
        .first()
        .map(globallock_tls::identity::names)
        .unwrap_or_default();
    metrics::counter!("globallock_agent_refused_callers_total").increment(1);
    Err(tonic::Status::permission_denied(format!(
        "only coordinators may call a region agent: the client certificate must name {}, \
         this one names {names:?}",
        globallock_tls::identity::COORDINATOR
    )))
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// Every 5 s: publish how many grants each shard holds; every `compaction`
/// period: compact each shard's history; every `sweep` period: collect the
/// fencing-token marks untouched since the previous sweep.
async fn maintain(
    stores: Vec<Arc<ShardStore>>,
    compaction: Option<Duration>,
    keep: i64,
    sweep: Option<Duration>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last_compaction = tokio::time::Instant::now();
    let mut last_sweep = tokio::time::Instant::now();
    // The revision each shard was at when the previous sweep looked at it.
    let mut swept_at: Vec<Option<i64>> = vec![None; stores.len()];
    loop {
        tick.tick().await;
        if let Some(every) = sweep
            && (last_sweep.elapsed() >= every || swept_at.iter().all(Option::is_none))
        {
            last_sweep = tokio::time::Instant::now();
            for (store, since) in stores.iter().zip(&mut swept_at) {
                sweep_marks(store, since).await;
            }
        }
        for store in &stores {
            if let Ok(count) = store.count_grants().await {
                metrics::gauge!("globallock_agent_locks_held", "shard" => store.name().to_owned())
                    .set(count as f64);
            }
        }
        if let Some(every) = compaction
            && last_compaction.elapsed() >= every
        {
            last_compaction = tokio::time::Instant::now();
            for store in &stores {
                match store.compact(keep).await {
                    Ok(Some(revision)) => info!(shard = store.name(), revision, "compacted"),
                    Ok(None) => {}
                    Err(error) => warn!(shard = store.name(), %error, "compaction failed"),
                }
            }
        }
    }
}

/// Collect the marks of `store` untouched since `since` (the revision of the
/// previous sweep), then remember the revision now.
async fn sweep_marks(store: &ShardStore, since: &mut Option<i64>) {
    let now = match store.revision().await {
        Ok(revision) => revision,
        Err(error) => {
            warn!(shard = store.name(), %error, "cannot read the revision for the mark sweep");
            return;
        }
    };
    if let Some(untouched_since) = *since {
        match store.collect_marks(untouched_since).await {
            Ok(0) => {}
            Ok(deleted) => info!(
                shard = store.name(),
                deleted, "collected fencing-token marks"
            ),
            Err(error) => warn!(shard = store.name(), %error, "mark sweep failed"),
        }
        if let Ok(count) = store.count_marks().await {
            metrics::gauge!("globallock_agent_marks", "shard" => store.name().to_owned())
                .set(count as f64);
        }
    }
    *since = Some(now);
}

/// Audit every grant this region sees expire.
async fn watch_expirations(
    store: Arc<ShardStore>,
    region: String,
    audit: AuditLog,
    clock: SharedClock,
) {
    store
        .watch_expirations(|record| {
            let resource = record
                .lock_id
                .parse::<LockId>()
                .map(|id| id.resource().to_owned())
                .unwrap_or_default();
            info!(region = %region, resource = %resource, lock_id = %record.lock_id, "grant expired");
            audit.record(AuditRecord {
                ts_unix_ms: clock.unix_micros() / 1_000,
                event: AuditEvent::Expired,
                source: format!("agent {region}"),
                resource,
                owner: record.owner,
                lock_id: record.lock_id,
                token: record.token,
                regions: vec![region.clone()],
                outcome: "expired".into(),
                trace_id: String::new(),
                suppressed: None,
            });
        })
        .await;
}
