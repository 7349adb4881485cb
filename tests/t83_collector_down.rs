//! A trace collector that is down (nothing listening) or stuck (accepts
//! connections, never answers) never blocks or fails a lock request: spans are
//! exported from their own thread, with a bounded queue and deadline.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use harness::{Cluster, ClusterOptions};
use opentelemetry::trace::TracerProvider as _;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_requests_do_not_wait_for_a_stuck_collector() -> anyhow::Result<()> {
    // A "collector" that accepts connections and never says anything.
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", stuck.local_addr()?);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = stuck.accept().await {
            held.push(socket);
        }
    });
    let provider = globallock_telemetry::pipeline("globallock-test", &endpoint).unwrap();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .init();

    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client =
        globallock_client::Client::connect([format!("http://{}", cluster.coordinator_addrs[0])])?;
    // Far more spans than one export batch, while every export hangs until its
    // deadline. A blocked request path would make this time out.
    let work = async {
        for i in 0..60 {
            let span = tracing::info_span!("client.work", i);
            let lock = client
                .acquire(
                    &format!("jobs/{i}"),
                    "tracer",
                    Duration::from_secs(5),
                    Duration::ZERO,
                )
                .instrument(span)
                .await?;
            client.release(&lock.lock_id).await?;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .expect("lock requests must not wait for the collector")?;
    // Nothing listens at all: the same.
    drop(provider);
    Ok(())
}
