//! Running a coordinator: connect to the regions, probe their health, serve the
//! public API until told to stop.

use std::future::Future;
use std::sync::Arc;

use globallock_proto::v1::lock_service_server::LockServiceServer;
use globallock_protocol::clock::SharedClock;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use crate::config::ValidConfig;
use crate::engine::LockEngine;
use crate::grpc::GrpcService;
use crate::regions::{EndpointError, Regions};

/// Why the coordinator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A region endpoint is unusable.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
}

/// The engine and region set a configuration describes (shared by every front door).
pub fn build_engine(
    config: &ValidConfig,
    clock: SharedClock,
) -> Result<(Arc<LockEngine>, Arc<Regions>), EndpointError> {
    let regions = Arc::new(Regions::new(
        &config.regions,
        config.ring.shards(),
        config.region_timeout,
    )?);
    let engine = Arc::new(LockEngine::new(
        regions.clone(),
        config.ring.clone(),
        config.limits,
        config.drift,
        clock,
    ));
    Ok((engine, regions))
}

/// Serve the public gRPC API on `listener` until `shutdown` completes; then stop
/// accepting, let in-flight requests finish, and return.
pub async fn serve(
    config: ValidConfig,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (engine, regions) = build_engine(&config, clock)?;
    let probes = tokio::spawn(
        regions
            .clone()
            .probe_forever(config.health_interval, config.health_timeout),
    );
    info!(
        address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        regions = ?config.regions.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        "coordinator serving gRPC"
    );
    let result = tonic::transport::Server::builder()
        .add_service(LockServiceServer::new(GrpcService::new(engine)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    probes.abort();
    info!("coordinator stopped");
    Ok(result?)
}
