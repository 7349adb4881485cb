//! Clock faults through the clock abstraction: one agent's and one coordinator's
//! wall clocks jump by ±2×TTL during contention, one agent's monotonic clock jumps
//! forward while a lock is held, and agents run fast and slow within the drift
//! bound. No early expiry, no second holder, tokens
//! only go up; every test ends with the history checker's verdict.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use globallock_proto::v1::{ReleaseRequest, RenewRequest};
use globallock_protocol::clock::SkewedClock;
use harness::history::{Kind, Phase, Recorder, check, record_acquire};
use harness::oracle::FencedCounter;
use harness::{Cluster, ClusterOptions, acquire};

const TTL_MS: u64 = 3_000;

/// Four contenders through two coordinators, a few rounds each.
async fn contend(
    cluster: &Cluster,
    history: &Arc<Recorder>,
    counter: &Arc<FencedCounter>,
    phase: &str,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for c in 0..4 {
        let mut client = cluster.client(c % 2).await?;
        let (history, counter) = (history.clone(), counter.clone());
        let process = format!("{phase}-{c}");
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let Ok(lock) = record_acquire(
                    &history,
                    &mut client,
                    &process,
                    acquire("clock/res", &process, TTL_MS, 10_000),
                )
                .await
                else {
                    continue;
                };
                counter.enter(lock.fencing_token);
                assert!(counter.write(lock.fencing_token));
                counter.leave(lock.fencing_token);
                let op = history.invoke(&process, "clock/res", Kind::Release, &lock.lock_id);
                let ok = client
                    .release(ReleaseRequest {
                        lock_id: lock.lock_id.clone(),
                    })
                    .await
                    .is_ok();
                history.complete(
                    &op,
                    if ok { Phase::Ok } else { Phase::Info },
                    &lock.lock_id,
                    0,
                    0,
                );
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
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

    contend(&cluster, &history, &counter, "before").await?;
    cluster.regions[0].clock.jump_wall(two_ttl_us);
    skewed.jump_wall(-two_ttl_us);
    contend(&cluster, &history, &counter, "jumped").await?;
    cluster.regions[0].clock.jump_wall(-2 * two_ttl_us);
    skewed.jump_wall(2 * two_ttl_us);
    contend(&cluster, &history, &counter, "jumped-back").await?;

    assert_eq!(counter.violations(), vec![]);
    assert!(
        counter.writes() >= 12,
        "progress in every phase: {}",
        counter.writes()
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
    let history = Recorder::new();
    let mut client = cluster.client(0).await?;
    let held = record_acquire(
        &history,
        &mut client,
        "holder",
        acquire("mono/res", "holder", TTL_MS, 0),
    )
    .await
    .unwrap();

    // Region A's monotonic clock leaps two TTLs ahead: its lease arithmetic now
    // believes the grant is over. etcd's leases run in real time, so the grant
    // stands, and no rival may get the lock while the holder's validity lasts.
    cluster.regions[0]
        .clock
        .jump_monotonic(Duration::from_millis(2 * TTL_MS));
    let rival = record_acquire(
        &history,
        &mut client,
        "rival",
        acquire("mono/res", "rival", TTL_MS, 0),
    )
    .await;
    assert!(
        rival.is_err(),
        "a clock jump on one agent let a rival in early"
    );

    // The holder renews normally, and later grants on A are sized in real time.
    let op = history.invoke("holder", "mono/res", Kind::Renew, &held.lock_id);
    let renewed = client
        .renew(RenewRequest {
            lock_id: held.lock_id.clone(),
            ttl_ms: TTL_MS,
        })
        .await?
        .into_inner();
    history.complete(
        &op,
        Phase::Ok,
        &held.lock_id,
        renewed.fencing_token,
        renewed.validity_ms * 1_000,
    );
    assert_eq!(renewed.fencing_token, held.fencing_token);
    let rival = record_acquire(
        &history,
        &mut client,
        "rival",
        acquire("mono/res", "rival", TTL_MS, 0),
    )
    .await;
    assert!(rival.is_err(), "renewed lock must still be held");
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
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
    contend(&cluster, &history, &counter, "drifting").await?;
    assert_eq!(counter.violations(), vec![]);
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}
