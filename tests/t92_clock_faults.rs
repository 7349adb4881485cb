//! Clock faults through the clock abstraction: one agent's and one coordinator's
//! wall clocks jump by ±2×TTL during contention, one agent's monotonic clock jumps
//! forward while a lock is held, and agents run fast and slow within the drift
//! bound. No early expiry, no second holder, tokens
//! only go up; every test ends with the history checker's verdict.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use globallock_proto::v1::{ReleaseRequest, RenewRequest};
use globallock_protocol::clock::SkewedClock;
use harness::history::{Recorded, Recorder, check};
use harness::oracle::FencedCounter;
use harness::{Cluster, ClusterOptions, acquire};

const TTL_MS: u64 = 3_000;
/// Contenders per phase, and rounds each.
const CONTENDERS: usize = 4;
const ROUNDS: usize = 3;
/// Usable holds (a lock granted with room left in its validity for the fenced
/// write) each phase must reach, of its `CONTENDERS × ROUNDS` acquires that wait up
/// to 10 s each for a lock held a few ms: at least half.
const MIN_HOLDS_PER_PHASE: usize = CONTENDERS * ROUNDS / 2;

/// Four contenders through two coordinators, a few rounds each. Returns how many
/// usable holds the phase had.
async fn contend(
    cluster: &Cluster,
    history: &Arc<Recorder>,
    counter: &Arc<FencedCounter>,
    phase: &str,
) -> anyhow::Result<usize> {
    let mut tasks = Vec::new();
    for c in 0..CONTENDERS {
        let process = format!("{phase}-{c}");
        let mut client = Recorded::new(cluster.client(c % 2).await?, history.clone(), &process);
        let (history, counter) = (history.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = 0;
            for _ in 0..ROUNDS {
                let sent = Instant::now();
                let Ok(lock) = client
                    .acquire(acquire("clock/res", &process, TTL_MS, 10_000))
                    .await
                else {
                    continue;
                };
                let lock = lock.into_inner();
                let wrote = counter
                    .critical_section(
                        &history,
                        &process,
                        "clock/res",
                        &lock.lock_id,
                        lock.fencing_token,
                        sent + Duration::from_millis(lock.validity_ms),
                    )
                    .await;
                assert_ne!(wrote, Some(false), "a current holder's write was rejected");
                held += usize::from(wrote.is_some());
                // The outcome is recorded; a lost reply is no failure here.
                let _ = client
                    .release(ReleaseRequest {
                        lock_id: lock.lock_id.clone(),
                    })
                    .await;
            }
            held
        }));
    }
    let mut held = 0;
    for task in tasks {
        held += task.await?;
    }
    Ok(held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_jumps_on_an_agent_and_a_coordinator_change_nothing() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let skewed = SkewedClock::new();
    let second = cluster.start_coordinator_with_clock(skewed.clone()).await?;
    assert_eq!(second, 1);
    let history = Arc::new(Recorder::new());
    let counter = Arc::new(FencedCounter::new());
    let two_ttl_us = i64::try_from(2 * TTL_MS * 1_000)?;

    let before = contend(&cluster, &history, &counter, "before").await?;
    cluster.regions[0].clock.jump_wall(two_ttl_us);
    skewed.jump_wall(-two_ttl_us);
    let jumped = contend(&cluster, &history, &counter, "jumped").await?;
    cluster.regions[0].clock.jump_wall(-2 * two_ttl_us);
    skewed.jump_wall(2 * two_ttl_us);
    let jumped_back = contend(&cluster, &history, &counter, "jumped-back").await?;

    assert_eq!(counter.violations(), vec![]);
    let phases = [before, jumped, jumped_back];
    assert!(
        phases.iter().all(|&held| held >= MIN_HOLDS_PER_PHASE),
        "progress in every phase (before, jumped, jumped back): {phases:?}, each of \
         {} acquires, at least {MIN_HOLDS_PER_PHASE} needed",
        CONTENDERS * ROUNDS
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
async fn a_monotonic_jump_on_one_agent_expires_nothing_early() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let history = Arc::new(Recorder::new());
    let mut holder = Recorded::new(cluster.client(0).await?, history.clone(), "holder");
    let mut rival = Recorded::new(cluster.client(0).await?, history.clone(), "rival");
    let held = holder
        .acquire(acquire("mono/res", "holder", TTL_MS, 0))
        .await?
        .into_inner();

    // Region A's monotonic clock leaps two TTLs ahead: its lease arithmetic now
    // believes the grant is over. etcd's leases run in real time, so the grant
    // stands, and no rival may get the lock while the holder's validity lasts:
    // the regions still report the holder.
    cluster.regions[0]
        .clock
        .jump_monotonic(Duration::from_millis(2 * TTL_MS));
    let refused = rival
        .acquire(acquire("mono/res", "rival", TTL_MS, 0))
        .await
        .expect_err("a clock jump on one agent let a rival in early");
    assert_held_by_holder(&refused);

    // The holder renews normally, and later grants on A are sized in real time.
    let renewed = holder
        .renew(RenewRequest {
            lock_id: held.lock_id.clone(),
            ttl_ms: TTL_MS,
        })
        .await?
        .into_inner();
    assert_eq!(renewed.fencing_token, held.fencing_token);
    let refused = rival
        .acquire(acquire("mono/res", "rival", TTL_MS, 0))
        .await
        .expect_err("renewed lock must still be held");
    assert_held_by_holder(&refused);
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}

/// Refused because the holder holds it (ABORTED naming it), not for want of
/// regions.
fn assert_held_by_holder(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::Aborted, "{}", status.message());
    assert!(
        status.message().contains("\"holder\""),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_running_fast_and_slow_within_the_drift_bound_change_nothing() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    cluster.start_coordinator().await?;
    let history = Arc::new(Recorder::new());
    let counter = Arc::new(FencedCounter::new());
    // Assumption A1 bounds clock-rate differences by the drift allowance (1%):
    // one agent 0.5% slow, another 0.5% fast.
    cluster.regions[0].clock.set_rate(0.995);
    cluster.regions[1].clock.set_rate(1.005);
    let held = contend(&cluster, &history, &counter, "drifting").await?;
    assert_eq!(counter.violations(), vec![]);
    assert!(
        held >= MIN_HOLDS_PER_PHASE,
        "progress while drifting: {held} of {} acquires, at least \
         {MIN_HOLDS_PER_PHASE} needed",
        CONTENDERS * ROUNDS
    );
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}
