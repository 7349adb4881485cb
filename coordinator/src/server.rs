//! Running a coordinator: connect to the regions, probe their health, serve the
//! public API until told to stop.

use std::future::Future;
use std::sync::Arc;

use globallock_proto::v1::lock_service_server::LockServiceServer;
use globallock_protocol::clock::SharedClock;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::config::ValidConfig;
use crate::engine::{EngineOptions, LockEngine};
use crate::grpc::GrpcService;
use crate::regions::{EndpointError, Regions};
use globallock_telemetry::audit::AuditLog;

/// Why the coordinator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A region endpoint is unusable.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
    /// The REST or metrics server failed.
    #[error("HTTP server failed")]
    Rest(#[source] std::io::Error),
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

/// The engine and region set a configuration describes (shared by every front door).
pub fn build_engine(
    config: &ValidConfig,
    clock: SharedClock,
) -> Result<(Arc<LockEngine>, Arc<Regions>), ServeError> {
    let regions = Arc::new(Regions::new(
        &config.regions,
        config.ring.shards(),
        config.region_timeout,
    )?);
    let audit = match &config.audit_log {
        Some(path) => AuditLog::to_file(path).map_err(|source| ServeError::Audit {
            path: path.clone(),
            source,
        })?,
        None => AuditLog::disabled(),
    };
    let options = EngineOptions {
        limits: config.limits,
        drift: config.drift,
        acquire_rate: config.acquire_rate,
        audit,
        ring_epoch: config.ring_epoch,
    };
    let engine = Arc::new(LockEngine::new(
        regions.clone(),
        config.ring.clone(),
        options,
        clock,
    ));
    Ok((engine, regions))
}

/// Where the coordinator serves.
#[derive(Debug)]
pub struct Listeners {
    /// The public gRPC API.
    pub grpc: TcpListener,
    /// The REST API, if served.
    pub rest: Option<TcpListener>,
    /// `/metrics`, if served.
    pub metrics: Option<TcpListener>,
}

/// Serve gRPC (and REST, if given a listener) until `shutdown` completes; then
/// stop accepting, let in-flight requests finish, and return.
pub async fn serve(
    config: ValidConfig,
    listeners: Listeners,
    clock: SharedClock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (engine, regions) = build_engine(&config, clock)?;
    // Install the recorder before any request records anything.
    let _ = globallock_telemetry::metrics::recorder();
    crate::engine::register_metrics();
    // One probe round before serving: health and each agent's clock (which
    // proposal deadlines are stated on) are known from the first request on.
    regions.probe_all(config.health_timeout).await;
    let probes = tokio::spawn(
        regions
            .clone()
            .probe_forever(config.health_interval, config.health_timeout),
    );
    // One shutdown signal, shared by every server of this process.
    let shutdown = globallock_runtime::SharedShutdown::new(shutdown);
    let metrics = listeners.metrics.map(|listener| {
        info!(address = %local(&listener), "coordinator serving /metrics");
        let stop = shutdown.signal();
        tokio::spawn(globallock_telemetry::metrics::serve(listener, stop))
    });
    let rest = listeners.rest.map(|listener| {
        info!(address = %local(&listener), "coordinator serving REST");
        let app = crate::rest::router(engine.clone(), regions.clone());
        let stop = shutdown.signal();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        })
    });
    info!(
        address = %local(&listeners.grpc),
        regions = ?config.regions.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        "coordinator serving gRPC"
    );
    let grpc = tonic::transport::Server::builder()
        .add_service(LockServiceServer::new(GrpcService::new(engine)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listeners.grpc), shutdown.signal())
        .await;
    for task in [rest, metrics].into_iter().flatten() {
        match task.await {
            Ok(Err(error)) => return Err(ServeError::Rest(error)),
            Err(join) => warn!(%join, "REST server task failed"),
            Ok(Ok(())) => {}
        }
    }
    probes.abort();
    info!("coordinator stopped");
    Ok(grpc?)
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}
