//! A trace collector that is down (nothing listening) or stuck (accepts
//! connections, never answers) never blocks or fails a lock request: spans are
//! exported from their own thread, with a bounded queue and deadline.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use harness::{Cluster, ClusterOptions};
use opentelemetry::trace::TracerProvider as _;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_requests_do_not_wait_for_a_stuck_collector() -> anyhow::Result<()> {
    // A "collector" that accepts connections and never says anything; it counts
    // the connections it accepted (each one an export hanging until its deadline).
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", stuck.local_addr()?);
    let accepted = Arc::new(AtomicUsize::new(0));
    let collector = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = stuck.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        }
    });
    let provider = globallock_telemetry::pipeline("globallock-test", &endpoint).unwrap();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .init();

    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.library_client(0)?;
    let mut done = 0;
    // Spans pile up until a batch is exported: the exporter connects to the stuck
    // collector, and that export hangs. Every request meanwhile succeeds.
    while accepted.load(Ordering::SeqCst) == 0 {
        work(&client, &mut done, 1).await?;
        assert!(
            done < 2_000,
            "{done} requests and the exporter never tried the collector"
        );
    }
    // With an export hanging, far more spans than one batch: every request still
    // succeeds (a request path that waited for the collector would hang here).
    work(&client, &mut done, 60).await?;

    // Nothing listens at all (the collector's listener and connections closed):
    // the same.
    collector.abort();
    let _ = collector.await;
    work(&client, &mut done, 60).await?;
    drop(provider);
    Ok(())
}

/// `rounds` traced acquire-and-release rounds, each of which must succeed; `done`
/// counts them (and names the resources).
async fn work(
    client: &globallock_client::Client,
    done: &mut usize,
    rounds: usize,
) -> anyhow::Result<()> {
    for _ in 0..rounds {
        let span = tracing::info_span!("client.work", i = *done);
        let lock = client
            .acquire(
                &format!("jobs/{done}"),
                "tracer",
                Duration::from_secs(5),
                Duration::ZERO,
            )
            .instrument(span)
            .await?;
        client.release(&lock.lock_id).await?;
        *done += 1;
    }
    Ok(())
}
