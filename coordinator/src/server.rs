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
use globallock_tls::TlsIncoming;

use crate::rest::RestPeer;

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
        config.tls.as_ref().map(|t| t.agents.clone()),
        &config.discovery,
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
        access: config.access.clone(),
        quotas: config.quotas,
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
    // Regions found through DNS are looked up first: the probe then reaches them.
    regions.locate_all().await;
    let discovery = tokio::spawn(regions.clone().discover_forever());
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
    let metrics = match listeners.metrics {
        None => None,
        Some(listener) => {
            info!(address = %local(&listener), tls = config.tls.is_some(), "coordinator serving /metrics");
            let stop = shutdown.signal();
            Some(match &config.tls {
                // The REST door's configuration: the coordinator's certificate,
                // client certificates optional (scrapers check who serves).
                Some(tls) => {
                    let incoming = TlsIncoming::new(listener, tls.rest.clone(), "metrics")
                        .map_err(ServeError::Rest)?;
                    tokio::spawn(globallock_telemetry::metrics::serve(incoming, stop))
                }
                None => tokio::spawn(globallock_telemetry::metrics::serve(listener, stop)),
            })
        }
    };
    if config.tls.is_none() {
        warn!(
            "insecure = true: every door and hop of this coordinator is plaintext; never run it so in production"
        );
    }
    let rest = match listeners.rest {
        None => None,
        Some(listener) => {
            info!(address = %local(&listener), tls = config.tls.is_some(), "coordinator serving REST");
            let app = crate::rest::router(engine.clone(), regions.clone());
            let stop = shutdown.signal();
            Some(match &config.tls {
                Some(tls) => {
                    let incoming = TlsIncoming::new(listener, tls.rest.clone(), "rest")
                        .map_err(ServeError::Rest)?;
                    tokio::spawn(async move {
                        axum::serve(
                            incoming,
                            app.into_make_service_with_connect_info::<RestPeer>(),
                        )
                        .with_graceful_shutdown(stop)
                        .await
                    })
                }
                None => tokio::spawn(async move {
                    axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<RestPeer>(),
                    )
                    .with_graceful_shutdown(stop)
                    .await
                }),
            })
        }
    };
    info!(
        address = %local(&listeners.grpc),
        tls = config.tls.is_some(),
        regions = ?config.regions.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        "coordinator serving gRPC"
    );
    let server = tonic::transport::Server::builder()
        .add_service(LockServiceServer::new(GrpcService::new(engine)));
    let grpc = match &config.tls {
        Some(tls) => {
            let incoming = TlsIncoming::new(listeners.grpc, tls.grpc.clone(), "grpc")
                .map_err(ServeError::Rest)?;
            server
                .serve_with_incoming_shutdown(incoming, shutdown.signal())
                .await
        }
        None => {
            server
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listeners.grpc),
                    shutdown.signal(),
                )
                .await
        }
    };
    for task in [rest, metrics].into_iter().flatten() {
        match task.await {
            Ok(Err(error)) => return Err(ServeError::Rest(error)),
            Err(join) => warn!(%join, "REST server task failed"),
            Ok(Ok(())) => {}
        }
    }
    probes.abort();
    discovery.abort();
    info!("coordinator stopped");
    Ok(grpc?)
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsIncoming>>
    for RestPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsIncoming>) -> Self {
        let (_, session) = stream.io().get_ref();
        Self {
            names: crate::access::certificate_names(session.peer_certificates()),
        }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>>
    for RestPeer
{
    fn connect_info(_: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        Self::default()
    }
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}
