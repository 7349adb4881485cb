//! TTL expiry lets the next holder in (never early); fencing tokens strictly
//! increase across holders, across coordinators, and across a coordinator whose
//! clock is far behind.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use globallock_proto::v1::{ReleaseRequest, RenewRequest};
use globallock_protocol::clock::ManualClock;
use harness::{Cluster, ClusterOptions, acquire, eventually};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lock_lets_the_next_client_in_but_not_before_its_validity() -> anyhow::Result<()>
{
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut client = cluster.client(0).await?;

    let sent = Instant::now();
    let first = client
        .acquire(acquire("reports/daily", "crashed-worker", 1_000, 0))
        .await?
        .into_inner();
    let relied_until = sent + Duration::from_millis(first.validity_ms);

    // The holder "crashes": no renew, no release. A waiter gets in by expiry.
    let second = client
        .acquire(acquire("reports/daily", "next-worker", 5_000, 15_000))
        .await?
        .into_inner();
    let granted_at = Instant::now();
    assert!(
        granted_at >= relied_until,
        "second holder got in {:?} before the first holder's validity ended",
        relied_until - granted_at
    );
    assert!(second.fencing_token > first.fencing_token);

    // The expired lock cannot be renewed back to life, nor released.
    let renew = client
        .renew(RenewRequest {
            lock_id: first.lock_id.clone(),
            ttl_ms: 5_000,
        })
        .await
        .unwrap_err();
    assert_eq!(renew.code(), Code::NotFound);
    let release = client
        .release(ReleaseRequest {
            lock_id: first.lock_id,
        })
        .await
        .unwrap_err();
    assert_eq!(release.code(), Code::NotFound);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_increase_across_holders_and_coordinators() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        coordinators: 2,
        ..ClusterOptions::default()
    })
    .await?;
    let mut clients = [cluster.client(0).await?, cluster.client(1).await?];
    let mut last = 0;
    for round in 0..10 {
        let client = &mut clients[round % 2];
        let granted = client
            .acquire(acquire("ledger", "alternating", 5_000, 5_000))
            .await?
            .into_inner();
        assert!(
            granted.fencing_token > last,
            "round {round}: {} after {last}",
            granted.fencing_token
        );
        last = granted.fencing_token;
        client
            .release(ReleaseRequest {
                lock_id: granted.lock_id,
            })
            .await?;
    }

    // A new coordinator with a wall clock stuck in 1970 proposes tiny tokens: the
    // regions refuse them (not above their marks) and it must climb above them.
    let stuck = ManualClock::new(1_000);
    let index = cluster.start_coordinator_with_clock(stuck).await?;
    let mut late = cluster.client(index).await?;
    // No wait: the re-proposal above the marks happens inside the first call
    // (a wait loop would hide a missing re-proposal, planted bug M4).
    for _ in 0..3 {
        let granted = late
            .acquire(acquire("ledger", "slow-clock", 5_000, 0))
            .await?
            .into_inner();
        assert!(
            granted.fencing_token > last,
            "{} after {last}",
            granted.fencing_token
        );
        last = granted.fencing_token;
        late.release(ReleaseRequest {
            lock_id: granted.lock_id,
        })
        .await?;
    }

    // And a restarted coordinator (no memory at all) still goes up.
    cluster.stop_coordinator(0).await;
    let index = cluster.start_coordinator().await?;
    let mut fresh = cluster.client(index).await?;
    let granted = fresh
        .acquire(acquire("ledger", "fresh", 5_000, 5_000))
        .await?
        .into_inner();
    assert!(granted.fencing_token > last);
    Ok(())
}

/// Planted bug M4 (the TOKEN_TOO_LOW re-proposal skipped, or the abort before it
/// dropped). Regions with *different* marks: A and B learned a high mark while C
/// was down, so a coordinator whose clock is stuck in 1970 gets its tiny token
/// granted by C and refused by A and B. The same call must re-propose above the
/// marks and win, and the low grant at C must be aborted first, so that C joins
/// the new lock instead of blocking it with a stale grant until its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_below_some_regions_marks_is_re_proposed_at_once_after_aborting_the_low_grant()
-> anyhow::Result<()> {
    // A generous region deadline: the abort at region C (just restarted, its TLS
    // connections not yet made) must complete before the re-proposal even on a
    // loaded machine; with the default 2 s it once timed out in CI, the
    // re-proposal then met the low grant still there, and C ended without
    // the lock, which is what the planted bug M4 looks like.
    let mut cluster = Cluster::start(ClusterOptions {
        region_timeout_ms: 10_000,
        ..ClusterOptions::default()
    })
    .await?;
    let mut client = cluster.client(0).await?;
    cluster.stop_region(2).await;
    let today = client
        .acquire(acquire("ledger/m4", "today", 5_000, 0))
        .await?
        .into_inner();
    client
        .release(ReleaseRequest {
            lock_id: today.lock_id.clone(),
        })
        .await?;
    cluster.restart_region(2).await?;
    let before = cluster.agent_read(2, "ledger/m4").await?;
    assert_eq!(
        (before.holder, before.high_water_mark),
        (None, 0),
        "region-c never saw the resource"
    );
    let marks = [
        cluster.agent_read(0, "ledger/m4").await?.high_water_mark,
        cluster.agent_read(1, "ledger/m4").await?.high_water_mark,
    ];
    assert_eq!(marks, [today.fencing_token; 2]);

    let stuck = ManualClock::new(1_000);
    let index = cluster.start_coordinator_with_clock(stuck).await?;
    let mut late = cluster.client(index).await?;
    let granted = late
        .acquire(acquire("ledger/m4", "slow-clock", 30_000, 0))
        .await?
        .into_inner();
    assert!(
        granted.fencing_token > today.fencing_token,
        "{} after {}",
        granted.fencing_token,
        today.fencing_token
    );
    // Region C holds the re-proposed lock, not the aborted low one.
    let at_c = eventually(Duration::from_secs(10), "region-c holds the lock", || {
        let cluster = &cluster;
        let lock_id = granted.lock_id.clone();
        async move {
            let read = cluster.agent_read(2, "ledger/m4").await.ok()?;
            read.holder.filter(|h| h.lock_id == lock_id)
        }
    })
    .await;
    assert_eq!(at_c.fencing_token, granted.fencing_token);
    Ok(())
}

/// Planted bug M2 (a retried lock's validity computed from its TTL instead of
/// from what the original grant has left). A retry with the same request id is
/// the same lock: it ends when the original grant ends, so the validity it
/// reports cannot reach past that, and a rival that waits gets in after the
/// retry's validity, never during it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_acquire_is_valid_only_until_the_original_grant_ends() -> anyhow::Result<()> {
    let options = ClusterOptions::default();
    let granularity = Duration::from_millis(options.lease_granularity_ms);
    let cluster = Cluster::start(options).await?;
    let mut client = cluster.client(0).await?;
    let mut request = acquire("reports/m2", "cron-7", 3_000, 0);
    request.request_id = "nightly-m2".into();

    let first_sent = Instant::now();
    let first = client.acquire(request.clone()).await?.into_inner();
    // The scenario: the caller lost the reply and retries two seconds later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let retry_sent = Instant::now();
    let retry = client.acquire(request).await?.into_inner();
    assert_eq!(
        (&retry.lock_id, retry.fencing_token),
        (&first.lock_id, first.fencing_token),
        "a retry is the same lock"
    );
    let relied_until = retry_sent + Duration::from_millis(retry.validity_ms);
    // The original grant's leases end at most a lease granularity after its TTL.
    let original_end = first_sent + Duration::from_millis(first.ttl_ms) + granularity;
    assert!(
        relied_until <= original_end,
        "the retry reports {} ms of validity, {:?} past the original grant's end",
        retry.validity_ms,
        relied_until - original_end
    );

    let rival = client
        .acquire(acquire("reports/m2", "rival", 3_000, 15_000))
        .await?
        .into_inner();
    let rival_in = Instant::now();
    assert!(rival.fencing_token > first.fencing_token);
    assert!(
        rival_in >= relied_until,
        "the rival got in {:?} before the retry's validity ended",
        relied_until - rival_in
    );
    Ok(())
}
