//! Eight contenders on one resource through two coordinators never overlap, as
//! checked by a fenced counter that rejects stale tokens (each holder stays inside
//! its critical section across an `.await`) and by the history checker.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use globallock_proto::v1::ReleaseRequest;
use harness::history::{Recorded, Recorder, check};
use harness::oracle::FencedCounter;
use harness::{Cluster, ClusterOptions, acquire};

const CONTENDERS: usize = 8;
const ROUNDS: usize = 5;
const RESOURCE: &str = "inventory/sku-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_contenders_never_overlap() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        coordinators: 2,
        ..ClusterOptions::default()
    })
    .await?;
    let history = Arc::new(Recorder::new());
    let counter = Arc::new(FencedCounter::new());
    let mut tasks = Vec::new();
    for c in 0..CONTENDERS {
        let process = format!("contender-{c}");
        let mut client = Recorded::new(cluster.client(c % 2).await?, history.clone(), &process);
        let (history, counter) = (history.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let sent = Instant::now();
                let granted = client
                    .acquire(acquire(RESOURCE, &process, 5_000, 30_000))
                    .await?
                    .into_inner();
                let valid_until = sent + Duration::from_millis(granted.validity_ms);
                let wrote = counter
                    .critical_section(
                        &history,
                        &process,
                        RESOURCE,
                        &granted.lock_id,
                        granted.fencing_token,
                        valid_until,
                    )
                    .await;
                assert_eq!(
                    wrote,
                    Some(true),
                    "the lock was not usable (None: its validity had ended when it \
                     was granted) or a current holder's write was rejected: {granted:?}"
                );
                client
                    .release(ReleaseRequest {
                        lock_id: granted.lock_id,
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    assert_eq!(counter.violations(), vec![]);
    assert_eq!(counter.writes(), (CONTENDERS * ROUNDS) as u64);
    assert_eq!(counter.rejected(), 0);
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}

/// Waiters of one coordinator take turns in arrival order: with the resource
/// held, five acquires join the line one after another; once it is released,
/// each is granted in the order it arrived (its fencing token is higher than
/// every earlier one's), each handing over to the next by releasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_one_coordinator_are_served_in_arrival_order() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut holder = cluster.client(0).await?;
    let held = holder
        .acquire(acquire("line/one", "holder", 30_000, 0))
        .await?
        .into_inner();
    let mut waiters = Vec::new();
    for i in 0..5u32 {
        let mut client = cluster.client(0).await?;
        waiters.push(tokio::spawn(async move {
            let granted = client
                .acquire(acquire("line/one", &format!("waiter-{i}"), 30_000, 60_000))
                .await?
                .into_inner();
            client
                .release(ReleaseRequest {
                    lock_id: granted.lock_id,
                })
                .await?;
            anyhow::Ok(granted.fencing_token)
        }));
        // The next joins only once this one is in line.
        let joined = f64::from(i + 1);
        harness::eventually(Duration::from_secs(10), "the waiter in line", || async {
            let in_line = cluster
                .coordinator_metric(0, "globallock_acquires_in_line", &[])
                .await
                .ok()?;
            (in_line >= joined).then_some(())
        })
        .await;
    }
    holder
        .release(ReleaseRequest {
            lock_id: held.lock_id,
        })
        .await?;
    let mut tokens = Vec::new();
    for waiter in waiters {
        tokens.push(waiter.await??);
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "granted out of arrival order (tokens by arrival): {tokens:?}"
    );
    Ok(())
}

/// A release of a resource whose first waiter here sleeps in its backoff
/// carries that waiter's proposals to the regions (the agents' HandOff:
/// release, then grant), so the next holder needs no round of its own: the
/// waiter is granted with a higher token, by hand-offs, and its lock is a lock
/// like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_carries_the_first_waiters_proposal_to_every_region() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut holder = cluster.client(0).await?;
    let held = holder
        .acquire(acquire("line/hand-off", "holder", 30_000, 0))
        .await?
        .into_inner();
    let mut client = cluster.client(0).await?;
    let waiter = tokio::spawn(async move {
        let granted = client
            .acquire(acquire("line/hand-off", "waiter", 30_000, 60_000))
            .await?
            .into_inner();
        anyhow::Ok((client, granted))
    });
    // The waiter proposed, found the resource held and sleeps in its backoff.
    harness::eventually(
        Duration::from_secs(10),
        "the waiter refused once",
        || async {
            let refused = cluster
                .coordinator_metric(0, "globallock_contention_total", &[])
                .await
                .ok()?;
            (refused >= 1.0).then_some(())
        },
    )
    .await;
    let hand_offs_before = cluster
        .coordinator_metric(0, "globallock_hand_offs_total", &[])
        .await?;
    holder
        .release(ReleaseRequest {
            lock_id: held.lock_id,
        })
        .await?;
    let (mut client, granted) = waiter.await??;
    assert!(granted.fencing_token > held.fencing_token);
    assert_eq!(
        cluster
            .coordinator_metric(0, "globallock_hand_offs_total", &[])
            .await?
            - hand_offs_before,
        1.0,
        "the release offered the waiter a ride"
    );
    let carried = cluster
        .coordinator_metric(
            0,
            "globallock_agent_requests_total",
            &[("op", "hand_off"), ("outcome", "ok")],
        )
        .await?;
    assert!(
        carried >= 2.0,
        "a majority of regions answered hand-offs ({carried})"
    );
    client
        .release(ReleaseRequest {
            lock_id: granted.lock_id,
        })
        .await?;
    Ok(())
}
