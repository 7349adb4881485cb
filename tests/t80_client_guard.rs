//! The Rust client's guard: renews in the background across many TTLs, reports
//! loss when renewal becomes impossible, releases on request and on drop.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use globallock_client::{Client, ClientError, LostReason};
use harness::{Cluster, ClusterOptions, eventually};

fn client(cluster: &Cluster) -> Client {
    cluster.library_client(0).unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_acquire_names_the_holder_and_the_retry_delay_as_values() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = client(&cluster);
    let ttl = Duration::from_secs(30);
    let _alice = client
        .acquire("ledger/7", "alice", ttl, Duration::ZERO)
        .await?;

    // Refused at once: the holder and when to retry come as values, read from
    // the status's typed details, not from its text.
    let busy = client
        .acquire("ledger/7", "bob", ttl, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(busy, ClientError::Held(_)), "{busy:?}");
    assert_eq!(busy.reason().as_deref(), Some("held"));
    let holder = busy.holder().expect("the holder, as a value");
    assert_eq!(holder.owner, "alice");
    // Just granted for 30 s (a region's grant may outlive the TTL by its drift
    // allowance).
    assert!(
        holder.remaining > ttl / 2 && holder.remaining <= 2 * ttl,
        "{holder:?}"
    );
    // Retry once the holder's grant has run out.
    let retry_after = busy.retry_after().expect("a retry delay, as a value");
    assert_eq!(retry_after.as_millis(), holder.remaining.as_millis());
    assert_eq!(
        busy.details()
            .unwrap()
            .metadata
            .get("resource")
            .map(String::as_str),
        Some("ledger/7")
    );
    // The message text is unchanged.
    assert!(busy.to_string().contains("is held by \"alice\""), "{busy}");

    // After waiting, the same: the last holder seen and its remaining time.
    let waited = client
        .acquire("ledger/7", "bob", ttl, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(waited, ClientError::Held(_)), "{waited:?}");
    assert_eq!(waited.holder().map(|h| h.owner).as_deref(), Some("alice"));
    assert!(waited.retry_after().is_some(), "{waited:?}");

    // An invalid argument names its field.
    let invalid = client
        .acquire(
            "ledger/8",
            "bob",
            Duration::from_secs(10_000),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(invalid, ClientError::InvalidArgument(_)),
        "{invalid:?}"
    );
    assert_eq!(invalid.field().as_deref(), Some("ttl_ms"));
    assert_eq!(invalid.retry_after(), None);
    Ok(())
}

/// Waiting without a cap: the coordinators here take waits of at most 1 s per
/// request; the client re-issues a 30 s wait (shrinking its slice to what the
/// coordinator takes) until the holder's lock expires, and gets the lock.
/// Before, the wait above the coordinator's maximum was refused outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_longer_than_a_coordinator_takes_is_re_issued_until_the_lock_is_free()
-> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        max_wait_ms: 1_000,
        ..ClusterOptions::default()
    })
    .await?;
    let client = client(&cluster);
    let holder = client
        .acquire("wait/long", "first", Duration::from_secs(3), Duration::ZERO)
        .await?;
    let waiter = client
        .acquire(
            "wait/long",
            "second",
            Duration::from_secs(10),
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(waiter.owner, "second");
    assert!(waiter.fencing_token > holder.fencing_token);
    client.release(&waiter.lock_id).await?;
    Ok(())
}
