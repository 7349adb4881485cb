//! Running an agent: connect the shards, serve until told to stop.

use std::future::Future;
use std::sync::Arc;

use globallock_etcd::{ShardStore, StoreError};
use globallock_proto::agent::region_agent_server::RegionAgentServer;
use globallock_protocol::clock::SharedClock;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::config::ValidConfig;
use crate::service::AgentService;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A shard's store could not be set up.
    #[error("cannot set up shard")]
    Shard(#[from] StoreError),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
}

/// Serve the agent API on `listener` until `shutdown` completes, then stop
/// accepting, let in-flight requests finish, and return.
pub async fn serve(
    config: ValidConfig,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let mut stores = Vec::with_capacity(config.shards.len());
    for shard in &config.shards {
        stores.push(Arc::new(ShardStore::connect(shard, clock.clone()).await?));
    }
    let compaction = config.compaction_interval.map(|every| {
        let stores = stores.clone();
        let keep = config.compaction_keep_revisions;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                for store in &stores {
                    match store.compact(keep).await {
                        Ok(Some(revision)) => info!(shard = store.name(), revision, "compacted"),
                        Ok(None) => {}
                        Err(error) => warn!(shard = store.name(), %error, "compaction failed"),
                    }
                }
            }
        })
    });
    let service = AgentService::new(&config.region, stores, config.ring.clone());
    info!(region = %config.region, address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "region agent serving");
    let result = tonic::transport::Server::builder()
        .add_service(RegionAgentServer::new(service))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    if let Some(task) = compaction {
        task.abort();
    }
    info!(region = %config.region, "region agent stopped");
    Ok(result?)
}
