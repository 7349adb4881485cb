//! Ring changes under load (hole 3 in `docs/safety.md`): adding a shard and then
//! removing one, with locks held across each change. Resources that move keep a
//! single holder and rising tokens, checked by the history checker; coordinators
//! on the old ring get no votes from agents on the new one.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use harness::history::{Recorded, Recorder, check};
use harness::{Cluster, ClusterOptions, acquire};
use tonic::Code;

const TTL_MS: u64 = 3_000;

fn resources() -> Vec<String> {
    (0..24).map(|i| format!("ring/{i}")).collect()
}

/// Hold every resource (recorded). With `patient`, wait while it is held and
/// retry while it is unavailable (a moved resource waits for the handover, a new
/// shard for its quarantine), for up to 20 s each. Returns how many are held.
async fn hold_all(client: &mut Recorded, patient: bool) -> anyhow::Result<usize> {
    let mut granted = 0;
    for resource in resources() {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let wait_ms = if patient { 5_000 } else { 0 };
            match client
                .acquire(acquire(&resource, "holder", TTL_MS, wait_ms))
                .await
            {
                Ok(_) => {
                    granted += 1;
                    break;
                }
                Err(status)
                    if patient
                        && status.code() == Code::Unavailable
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => break,
            }
        }
    }
    Ok(granted)
}

/// Right after a change, while the previous ring's locks are valid: no resource
/// may be granted to a rival (the ones that stayed are held; the ones that moved
/// wait for the handover).
async fn rivals_are_refused(rival: &mut Recorded) -> anyhow::Result<()> {
    for resource in resources() {
        let refused = rival
            .acquire(acquire(&resource, "rival", TTL_MS, 0))
            .await
            .unwrap_err();
        assert!(
            matches!(refused.code(), Code::Aborted | Code::Unavailable),
            "{resource}: {refused:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_a_shard_under_load_keeps_one_holder_and_rising_tokens()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        shards: 2,
        quarantine_ms: 4_000,
        ..ClusterOptions::default()
    })
    .await?;
    let history = Arc::new(Recorder::new());
    let mut first = Recorded::new(cluster.client(0).await?, history.clone(), "epoch-0");
    assert_eq!(hold_all(&mut first, false).await?, 24);

    // Add a shard: about a third of the resources move onto it.
    cluster
        .change_ring(&["shard-0", "shard-1", "shard-2"])
        .await?;
    let old = cluster.client(0).await?;
    let c1 = cluster.start_coordinator().await?;
    let mut rival = Recorded::new(cluster.client(c1).await?, history.clone(), "rival-1");
    rivals_are_refused(&mut rival).await?;
    // The old ring's coordinator gets no votes from agents on the new ring.
    let mut old = Recorded::new(old, history.clone(), "stale-coordinator");
    let stale = old
        .acquire(acquire("ring/stale", "stale", TTL_MS, 0))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Unavailable, "{}", stale.message());
    assert!(
        stale.message().contains("ring_epoch"),
        "{}",
        stale.message()
    );
    // Once the previous ring's locks have expired, everything is served again.
    let mut second = Recorded::new(cluster.client(c1).await?, history.clone(), "epoch-1");
    assert_eq!(hold_all(&mut second, true).await?, 24);

    // Remove a shard, with the locks just taken still held.
    cluster.change_ring(&["shard-1", "shard-2"]).await?;
    let c2 = cluster.start_coordinator().await?;
    let mut rival = Recorded::new(cluster.client(c2).await?, history.clone(), "rival-2");
    rivals_are_refused(&mut rival).await?;
    let mut third = Recorded::new(cluster.client(c2).await?, history.clone(), "epoch-2");
    assert_eq!(hold_all(&mut third, true).await?, 24);

    let verdict = check(&history.history(), None);
    assert_eq!(verdict, vec![], "{}", history.to_json_lines());
    Ok(())
}
