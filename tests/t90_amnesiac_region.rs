//! The amnesiac region (fault table): a region whose etcd data is wiped must not
//! vote until every lock it forgot has expired (max TTL + lock delay), and must
//! never let tokens go backwards. Each test records its history and ends with the
//! checker's verdict.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use globallock_protocol::clock::ManualClock;
use harness::history::{Recorder, check, record_acquire};
use harness::{Cluster, ClusterOptions, acquire, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_region_does_not_vote_while_locks_it_forgot_may_be_valid() -> anyhow::Result<()> {
    // Quarantine (4 s) covers the longest TTL used here (3 s).
    let mut cluster = Cluster::start(ClusterOptions {
        quarantine_ms: 4_000,
        ..ClusterOptions::default()
    })
    .await?;
    let history = Recorder::new();
    let mut client = cluster.client(0).await?;

    // L is held by regions A and B only (C was down when it was granted).
    cluster.stop_region(2).await;
    record_acquire(
        &history,
        &mut client,
        "holder",
        acquire("ledger", "holder", 3_000, 0),
    )
    .await
    .expect("granted by A and B");
    cluster.restart_region(2).await?;

    // A loses its data and restarts. While L is valid, a rival must not win:
    // without the quarantine, A (empty) and C (never saw L) would both grant it.
    cluster.wipe_region(0).await?;
    let rival = record_acquire(
        &history,
        &mut client,
        "rival",
        acquire("ledger", "rival", 3_000, 0),
    )
    .await;
    assert!(
        rival.is_err(),
        "an amnesiac region voted: two holders of one lock"
    );

    // After the quarantine the resource is usable again.
    let after = eventually(
        Duration::from_secs(20),
        "A rejoins after its quarantine",
        || {
            let history = &history;
            let mut client = client.clone();
            async move {
                record_acquire(
                    history,
                    &mut client,
                    "after",
                    acquire("ledger", "after", 3_000, 0),
                )
                .await
                .ok()
            }
        },
    )
    .await;
    assert!(after.fencing_token > 0);
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoined_region_keeps_tokens_above_everything_it_forgot() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        quarantine_ms: 4_000,
        ..ClusterOptions::default()
    })
    .await?;
    let history = Recorder::new();
    let mut client = cluster.client(0).await?;

    // L is held by A and B; C never hears of the resource.
    cluster.stop_region(2).await;
    let held = record_acquire(
        &history,
        &mut client,
        "holder",
        acquire("ledger", "holder", 3_000, 0),
    )
    .await
    .expect("granted by A and B");
    // A loses its data; B (the only region that remembers L's token) goes down; C
    // comes back. The only majority is {A, C}, and neither has a mark for the
    // resource. A coordinator whose clock says 1970 proposes tiny tokens: only A's
    // token floor keeps the next token above L's.
    cluster.wipe_region(0).await?;
    cluster.stop_region(1).await;
    cluster.restart_region(2).await?;
    let late = cluster
        .start_coordinator_with_clock(ManualClock::new(1_000))
        .await?;
    let late_client = cluster.client(late).await?;
    let after = eventually(
        Duration::from_secs(20),
        "A rejoins after its quarantine",
        || {
            let history = &history;
            let mut late_client = late_client.clone();
            async move {
                record_acquire(
                    history,
                    &mut late_client,
                    "after",
                    acquire("ledger", "after", 3_000, 0),
                )
                .await
                .ok()
            }
        },
    )
    .await;
    assert!(
        after.fencing_token > held.fencing_token,
        "token went backwards through the amnesiac region: {} after {}",
        after.fencing_token,
        held.fencing_token
    );
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_wiped_under_a_running_agent_is_noticed_at_the_next_grant() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        quarantine_ms: 4_000,
        ..ClusterOptions::default()
    })
    .await?;
    let history = Recorder::new();
    let mut client = cluster.client(0).await?;
    cluster.stop_region(2).await;
    record_acquire(
        &history,
        &mut client,
        "holder",
        acquire("orders/1", "holder", 3_000, 0),
    )
    .await
    .expect("granted by A and B");
    cluster.restart_region(2).await?;

    // A's etcd loses everything; its agent keeps running and must notice.
    cluster.wipe_etcd(0)?;
    let rival = record_acquire(
        &history,
        &mut client,
        "rival",
        acquire("orders/1", "rival", 3_000, 0),
    )
    .await;
    assert!(rival.is_err(), "a wiped shard granted");
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}
