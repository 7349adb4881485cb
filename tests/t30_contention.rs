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
    let (_, waiters) = line_up(&cluster, "line/one", 5).await?;
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

/// A release of a resource whose first waiter here is about to propose (asleep
/// in its backoff, or waiting for a lock granted here to end) carries that
/// waiter's proposals to the regions (the agents' HandOff: release, then
/// grant), so the next holder needs no round of its own. A chain of waiters,
/// each releasing as soon as it holds: every one is granted, in arrival order,
/// and releases carried the next grant. (Whether one particular release finds
/// its waiter between two of its own attempts is timing; that none of five
/// does is not: with rides disabled, none does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_carry_the_next_waiters_proposals_to_the_regions() -> anyhow::Result<()> {
    const WAITERS: u32 = 5;
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let (held, waiters) = line_up(&cluster, "line/hand-off", WAITERS).await?;
    let mut tokens = vec![held.fencing_token];
    for waiter in waiters {
        tokens.push(waiter.await??);
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "granted out of arrival order (tokens: holder, then by arrival): {tokens:?}"
    );
    let hand_offs = cluster
        .coordinator_metric(0, "globallock_hand_offs_total", &[])
        .await?;
    let carried = cluster
        .coordinator_metric(
            0,
            "globallock_agent_requests_total",
            &[("op", "hand_off"), ("outcome", "ok")],
        )
        .await?;
    eprintln!(
        "{hand_offs} of {WAITERS} releases carried the next grant ({carried} agent hand-offs)"
    );
    assert!(
        hand_offs >= 1.0 && carried >= 2.0 * hand_offs,
        "no release carried the next waiter's proposals to a majority \
         ({hand_offs} rides, {carried} agent hand-offs)"
    );
    Ok(())
}

/// A holder of `resource` at coordinator 0 and `n` waiters lined up behind it
/// there (each joins once the one before is in line), each releasing as soon as
/// it holds; then the holder releases. The holder's grant, and each waiter's
/// task (answering its fencing token), in arrival order.
async fn line_up(
    cluster: &Cluster,
    resource: &str,
    n: u32,
) -> anyhow::Result<(
    globallock_proto::v1::AcquireResponse,
    Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
)> {
    let mut holder = cluster.client(0).await?;
    let held = holder
        .acquire(acquire(resource, "holder", 30_000, 0))
        .await?
        .into_inner();
    let mut waiters = Vec::new();
    for i in 0..n {
        let mut client = cluster.client(0).await?;
        let resource = resource.to_owned();
        waiters.push(tokio::spawn(async move {
            let granted = client
                .acquire(acquire(&resource, &format!("waiter-{i}"), 30_000, 60_000))
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
            lock_id: held.lock_id.clone(),
        })
        .await?;
    Ok((held, waiters))
}
