//! TTL expiry lets the next holder in (never early); fencing tokens strictly
//! increase across holders, across coordinators, and across a coordinator whose
//! clock is far behind.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use globallock_proto::v1::{ReleaseRequest, RenewRequest};
use globallock_protocol::clock::ManualClock;
use harness::{Cluster, ClusterOptions, acquire};
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
    for _ in 0..3 {
        let granted = late
            .acquire(acquire("ledger", "slow-clock", 5_000, 5_000))
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
