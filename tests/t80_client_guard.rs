//! The Rust client's guard: renews in the background across many TTLs, reports
//! loss when renewal becomes impossible, releases on request and on drop.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use globallock_client::{Client, ClientError, LostReason};
use harness::{Cluster, ClusterOptions, eventually};

fn client(cluster: &Cluster) -> Client {
    Client::connect([format!("http://{}", cluster.coordinator_addrs[0])]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_keeps_its_lock_across_several_ttls() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = client(&cluster);
    let guard = client
        .lock("reports/q3")
        .ttl(Duration::from_millis(1_000))
        .acquire()
        .await?;
    let token = guard.fencing_token();

    // Four TTLs later the lock is still ours: renewal kept it alive.
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    assert!(guard.is_held());
    let described = client.describe("reports/q3").await?;
    assert!(described.held);
    assert_eq!(described.lock_id, guard.lock_id());
    assert_eq!(described.fencing_token, token);
    assert!(
        client.lock("reports/q3").try_acquire().await?.is_none(),
        "a rival must not get it"
    );

    guard.release().await?;
    let rival = client
        .lock("reports/q3")
        .try_acquire()
        .await?
        .expect("free after release");
    assert!(rival.fencing_token() > token);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_when_renewal_becomes_impossible() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = client(&cluster);
    let guard = client
        .lock("payments/run")
        .ttl(Duration::from_millis(2_000))
        .acquire()
        .await?;
    let granted_until = guard.valid_until();

    cluster.stop_region(1).await;
    cluster.stop_region(2).await;
    let reason = tokio::time::timeout(Duration::from_secs(10), guard.lost()).await?;
    let lost_at = std::time::Instant::now();
    assert_eq!(reason, LostReason::RenewalFailed);
    assert!(!guard.is_held());
    // `lost()` fires before the validity the guard was last given runs out, so
    // no caller acting on it holds past that validity...
    let valid_until = guard.valid_until();
    assert!(
        lost_at <= valid_until,
        "lost() fired {:?} after the lock's validity ended",
        lost_at.duration_since(valid_until)
    );
    // ...and that validity is the last one a successful grant or renewal gave: it
    // never moves back.
    assert!(valid_until >= granted_until);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_at_once_when_the_service_says_the_lock_is_gone() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = client(&cluster);
    let guard = client
        .lock("jobs/x")
        .ttl(Duration::from_millis(1_500))
        .acquire()
        .await?;
    // Someone (an operator) releases it behind the guard's back.
    client.release(guard.lock_id()).await?;
    let reason = tokio::time::timeout(Duration::from_secs(5), guard.lost()).await?;
    assert_eq!(reason, LostReason::NotHeld);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_guard_releases_and_with_lock_runs_and_releases() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = client(&cluster);
    {
        let _guard = client
            .lock("cache/warm")
            .ttl(Duration::from_secs(60))
            .acquire()
            .await?;
    }
    // Released in the background long before its 60 s TTL.
    eventually(Duration::from_secs(5), "drop releases", || {
        let client = client.clone();
        async move { (!client.describe("cache/warm").await.ok()?.held).then_some(()) }
    })
    .await;

    let token = client
        .with_lock("cache/warm", |token| async move {
            assert!(token > 0);
            token
        })
        .await?;
    assert!(
        !client.describe("cache/warm").await?.held,
        "with_lock releases afterwards"
    );

    // with_lock on a held resource waits, then reports who holds it.
    let holder = client
        .lock("cache/warm")
        .ttl(Duration::from_secs(60))
        .acquire()
        .await?;
    let busy = client
        .lock("cache/warm")
        .wait(Duration::from_millis(300))
        .with_lock(|_| async {})
        .await;
    assert!(matches!(busy, Err(ClientError::Held(_))), "{busy:?}");
    assert!(holder.fencing_token() > token);
    Ok(())
}
