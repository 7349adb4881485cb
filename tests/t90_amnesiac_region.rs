//! The amnesiac region (fault table): a region whose etcd data is wiped must not
//! vote until every lock it forgot has expired (max TTL + lock delay), and must
//! never let tokens go backwards. Each test records its history and ends with the
//! checker's verdict, and proves the refusal came from the amnesia mechanism
//! (quarantine or marker compare), not from a region that was merely unreachable.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use globallock_protocol::clock::ManualClock;
use harness::history::{Recorded, Recorder, check};
use harness::{Cluster, ClusterOptions, acquire, eventually};
use tonic::Code;

/// Grant requests coordinator 0 sent to region `r` that ended in an error answer.
async fn grant_errors(cluster: &Cluster, r: usize) -> anyhow::Result<f64> {
    cluster
        .coordinator_metric(
            0,
            "globallock_region_requests_total",
            &[
                ("region", harness::REGIONS[r]),
                ("op", "grant"),
                ("outcome", "error"),
            ],
        )
        .await
}

/// The rival is refused because the resource is held by `holder` (ABORTED naming
/// it), not for want of regions.
fn assert_refused_for(status: &tonic::Status, holder: &str) {
    assert_eq!(
        status.code(),
        Code::Aborted,
        "an amnesiac region must not vote, and the others must still see the \
         holder: {}",
        status.message()
    );
    assert!(
        status.message().contains(&format!("{holder:?}")),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_region_does_not_vote_while_locks_it_forgot_may_be_valid() -> anyhow::Result<()> {
    // Quarantine (6 s) covers the longest TTL used here (5 s).
    let mut cluster = Cluster::start(ClusterOptions {
        quarantine_ms: 6_000,
        ..ClusterOptions::default()
    })
    .await?;
    let history = Arc::new(Recorder::new());
    let mut holder = Recorded::new(cluster.client(0).await?, history.clone(), "holder");

    // L is held by regions A and B only (C was down when it was granted).
    cluster.stop_region(2).await;
    holder
        .acquire(acquire("ledger", "holder", 5_000, 0))
        .await
        .expect("granted by A and B");
    cluster.restart_region(2).await?;

    // A loses its data and restarts: it finds no incarnation marker and enters
    // quarantine (its own health answer says so, and the counter moves).
    let quarantines = cluster.quarantines().await?;
    cluster.wipe_region(0).await?;
    let detail = eventually(Duration::from_secs(5), "A reports its quarantine", || {
        cluster.agent_quarantine(0)
    })
    .await;
    assert_eq!(cluster.quarantines().await?, quarantines + 1.0, "{detail}");

    // While L is valid, a rival must not win: without the quarantine, A (empty)
    // and C (never saw L) would both grant it. The rival's proposal reaches A and
    // A refuses it (an error answer, while it still reports its quarantine).
    let refusals = grant_errors(&cluster, 0).await?;
    let mut rival = Recorded::new(cluster.client(0).await?, history.clone(), "rival");
    let refused = rival
        .acquire(acquire("ledger", "rival", 3_000, 0))
        .await
        .expect_err("an amnesiac region voted: two holders of one lock");
    assert_refused_for(&refused, "holder");
    assert_eq!(
        grant_errors(&cluster, 0).await?,
        refusals + 1.0,
        "the rival's proposal did not reach A, or A did not refuse it"
    );
    assert!(
        cluster.agent_quarantine(0).await.is_some(),
        "A left its quarantine before the rival was refused: the refusal proves nothing"
    );

    // After the quarantine the resource is usable again.
    let after = Recorded::new(cluster.client(0).await?, history.clone(), "after");
    let after = eventually(
        Duration::from_secs(20),
        "A rejoins after its quarantine",
        || {
            let mut after = after.clone();
            async move {
                after
                    .acquire(acquire("ledger", "after", 3_000, 0))
                    .await
                    .ok()
            }
        },
    )
    .await
    .into_inner();
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
    let history = Arc::new(Recorder::new());
    let mut holder = Recorded::new(cluster.client(0).await?, history.clone(), "holder");

    // L is held by A and B; C never hears of the resource.
    cluster.stop_region(2).await;
    let held = holder
        .acquire(acquire("ledger", "holder", 3_000, 0))
        .await
        .expect("granted by A and B")
        .into_inner();
    // A loses its data; B (the only region that remembers L's token) goes down; C
    // comes back. The only majority is {A, C}, and neither has a mark for the
    // resource. A coordinator whose clock says 1970 proposes tiny tokens: only A's
    // token floor keeps the next token above L's.
    let quarantines = cluster.quarantines().await?;
    cluster.wipe_region(0).await?;
    eventually(Duration::from_secs(5), "A reports its quarantine", || {
        cluster.agent_quarantine(0)
    })
    .await;
    assert_eq!(cluster.quarantines().await?, quarantines + 1.0);
    cluster.stop_region(1).await;
    cluster.restart_region(2).await?;
    let late = cluster
        .start_coordinator_with_clock(ManualClock::new(1_000))
        .await?;
    let late_client = Recorded::new(cluster.client(late).await?, history.clone(), "after");
    let after = eventually(
        Duration::from_secs(20),
        "A rejoins after its quarantine",
        || {
            let mut late_client = late_client.clone();
            async move {
                late_client
                    .acquire(acquire("ledger", "after", 3_000, 0))
                    .await
                    .ok()
            }
        },
    )
    .await
    .into_inner();
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
    // The holder's TTL leaves ample time for the wipe; this test does not wait
    // for the quarantine to end.
    let mut cluster = Cluster::start(ClusterOptions {
        quarantine_ms: 12_000,
        ..ClusterOptions::default()
    })
    .await?;
    let history = Arc::new(Recorder::new());
    let mut holder = Recorded::new(cluster.client(0).await?, history.clone(), "holder");
    cluster.stop_region(2).await;
    holder
        .acquire(acquire("orders/1", "holder", 10_000, 0))
        .await
        .expect("granted by A and B");
    cluster.restart_region(2).await?;

    // A's etcd loses everything; its agent keeps running and must notice the
    // vanished incarnation marker at its next operation on the shard (a grant, or
    // the health check the coordinator probes with) and quarantine the shard.
    let quarantines = cluster.quarantines().await?;
    cluster.wipe_etcd(0)?;
    let detail = eventually(
        Duration::from_secs(10),
        "A notices its wiped etcd and reports its quarantine",
        || cluster.agent_quarantine(0),
    )
    .await;
    assert!(
        cluster.quarantines().await? > quarantines,
        "A reports a quarantine the counter did not see: {detail}"
    );

    // While the holder's lock is valid, a rival is refused for it; its proposal
    // reaches A, and A refuses it (an error answer, while still in quarantine).
    let refusals = grant_errors(&cluster, 0).await?;
    let mut rival = Recorded::new(cluster.client(0).await?, history.clone(), "rival");
    let refused = rival
        .acquire(acquire("orders/1", "rival", 3_000, 0))
        .await
        .expect_err("a wiped shard granted");
    assert_refused_for(&refused, "holder");
    assert_eq!(
        grant_errors(&cluster, 0).await?,
        refusals + 1.0,
        "the rival's proposal did not reach A, or A did not refuse it"
    );
    assert!(
        cluster.agent_quarantine(0).await.is_some(),
        "A left its quarantine before the rival was refused: the refusal proves nothing"
    );
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}
