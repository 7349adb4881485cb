//! Network faults of the fault table, injected with the user-space proxy on every
//! coordinator → region link: minority partition, bridge, asymmetric partition,
//! slow region, delay and duplicated requests. Every test records its history
//! (every call through a recording client) and ends with the checker's verdict.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use globallock_localcluster::{Direction, Faults};
use globallock_proto::v1::{ReleaseRequest, RenewRequest};
use harness::history::{Recorded, Recorder, check};
use harness::oracle::FencedCounter;
use harness::{Cluster, ClusterOptions, acquire, eventually};
use tonic::Code;

fn options(coordinators: usize) -> ClusterOptions {
    ClusterOptions {
        coordinators,
        proxied: true,
        region_timeout_ms: 1_000,
        ..ClusterOptions::default()
    }
}

/// A client of coordinator `c` whose calls are recorded in `history` as `process`.
async fn recorded(
    cluster: &Cluster,
    c: usize,
    history: &Arc<Recorder>,
    process: &str,
) -> anyhow::Result<Recorded> {
    Ok(Recorded::new(
        cluster.client(c).await?,
        history.clone(),
        process,
    ))
}

fn release(lock_id: &str) -> ReleaseRequest {
    ReleaseRequest {
        lock_id: lock_id.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition_rejects_fast_and_the_majority_side_keeps_serving() -> anyhow::Result<()>
{
    let cluster = Cluster::start(options(2)).await?;
    let history = Arc::new(Recorder::new());
    let mut minority = recorded(&cluster, 0, &history, "minority").await?;
    let mut majority = recorded(&cluster, 1, &history, "majority").await?;
    // Coordinator 0 is cut off from regions B and C.
    cluster.link(0, 1).set(Faults::partition());
    cluster.link(0, 2).set(Faults::partition());
    let names_b_and_c = |status: &tonic::Status| {
        status.code() == Code::Unavailable
            && status.message().contains("reachable regions [region-a]")
            && status.message().contains("region-b")
            && status.message().contains("region-c")
    };

    let status = minority
        .acquire(acquire("orders/1", "m", 5_000, 0))
        .await
        .expect_err("a minority must never grant");
    assert!(names_b_and_c(&status), "{status:?}");
    // Once its health probes see it, the minority side rejects at once: without
    // a round trip, it sends no grant request to any region (coordinator 1 is
    // idle meanwhile, so the shared counters are coordinator 0's).
    eventually(
        Duration::from_secs(5),
        "rejection from health checks",
        || {
            let (cluster, mut minority) = (&cluster, minority.clone());
            async move {
                let before = cluster.grants_sent().await.ok()?;
                let status = minority
                    .acquire(acquire("orders/2", "m", 5_000, 0))
                    .await
                    .expect_err("a minority must never grant");
                assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
                let after = cluster.grants_sent().await.ok()?;
                (before == after && names_b_and_c(&status)).then_some(())
            }
        },
    )
    .await;
    let before = cluster.grants_sent().await?;
    for i in 0..10 {
        let status = minority
            .acquire(acquire(&format!("orders/{i}"), "m", 5_000, 0))
            .await
            .expect_err("never OK");
        assert!(names_b_and_c(&status), "{status:?}");
    }
    assert_eq!(
        cluster.grants_sent().await?,
        before,
        "the minority side sent grant requests although its health checks had \
         marked B and C down"
    );

    // The majority side is unaffected, on the same resources.
    for i in 0..10 {
        let lock = majority
            .acquire(acquire(&format!("orders/{i}"), "M", 5_000, 0))
            .await
            .expect("the majority side serves")
            .into_inner();
        majority.release(release(&lock.lock_id)).await?;
    }

    // Healed: the former minority serves again.
    cluster.link(0, 1).heal();
    cluster.link(0, 2).heal();
    eventually(Duration::from_secs(10), "minority side recovers", || {
        let mut minority = minority.clone();
        async move {
            minority
                .acquire(acquire("orders/healed", "m", 5_000, 0))
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_region_serialises_two_coordinators_that_see_different_majorities()
-> anyhow::Result<()> {
    const ATTEMPTS: usize = 6;
    let cluster = Cluster::start(options(2)).await?;
    let history = Arc::new(Recorder::new());
    let counter = Arc::new(FencedCounter::new());
    // Coordinator 0 sees {A, B}; coordinator 1 sees {B, C}. Only B is in both.
    cluster.link(0, 2).set(Faults::partition());
    cluster.link(1, 0).set(Faults::partition());
    let mut tasks = Vec::new();
    for (c, process) in [(0, "left"), (1, "right"), (0, "left-2"), (1, "right-2")] {
        let mut client = recorded(&cluster, c, &history, process).await?;
        let (history, counter) = (history.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = 0;
            for _ in 0..ATTEMPTS {
                let sent = Instant::now();
                let Ok(lock) = client
                    .acquire(acquire("bridge/doc", process, 5_000, 10_000))
                    .await
                else {
                    continue;
                };
                let lock = lock.into_inner();
                let wrote = counter
                    .critical_section(
                        &history,
                        process,
                        "bridge/doc",
                        &lock.lock_id,
                        lock.fencing_token,
                        sent + Duration::from_millis(lock.validity_ms),
                    )
                    .await;
                assert_ne!(wrote, Some(false), "current holder's write rejected");
                client.release(release(&lock.lock_id)).await?;
                held += usize::from(wrote.is_some());
            }
            anyhow::Ok((c, held))
        }));
    }
    let mut per_side = [0; 2];
    for task in tasks {
        let (c, held) = task.await??;
        per_side[c] += held;
    }
    // Each side's two clients make 2 × 6 attempts, each waiting up to 10 s for a
    // lock held a few ms: through B, each side gets a usable lock (one whose
    // validity leaves room for the critical section) on at least half of them.
    assert!(
        per_side.iter().all(|&held| held >= ATTEMPTS),
        "each side made progress through B: {per_side:?} of {ATTEMPTS} × 2 each"
    );
    assert_eq!(counter.violations(), vec![]);
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asymmetric_partition_reports_unknown_and_blocks_only_until_abort_or_ttl()
-> anyhow::Result<()> {
    let cluster = Cluster::start(options(2)).await?;
    let history = Arc::new(Recorder::new());
    let mut cut = recorded(&cluster, 0, &history, "cut").await?;
    let mut healthy = recorded(&cluster, 1, &history, "healthy").await?;
    // Coordinator 0's requests reach B and C, but their replies never come back:
    // they may grant, and coordinator 0 cannot know.
    let one_way = Faults {
        downstream: Direction {
            blackhole: true,
            ..Direction::default()
        },
        ..Faults::default()
    };
    cluster.link(0, 1).set(one_way);
    cluster.link(0, 2).set(one_way);
    let unknown = cut.acquire(acquire("asym/res", "cut", 3_000, 0)).await;
    assert_eq!(
        unknown.expect_err("no majority answered").code(),
        Code::Unavailable
    );

    // A phantom grant may block the resource, but only until it is aborted or
    // its TTL runs out; the other coordinator then gets it. Until then it is
    // refused as held or contended (it reaches every region), never granted.
    let lock = eventually(Duration::from_secs(15), "phantom grants go away", || {
        let mut healthy = healthy.clone();
        async move {
            match healthy
                .acquire(acquire("asym/res", "healthy", 5_000, 0))
                .await
            {
                Ok(lock) => Some(lock.into_inner()),
                Err(status) => {
                    assert_eq!(status.code(), Code::Aborted, "{}", status.message());
                    None
                }
            }
        }
    })
    .await;
    assert!(lock.fencing_token > 0);
    cluster.link(0, 1).heal();
    cluster.link(0, 2).heal();
    healthy.release(release(&lock.lock_id)).await?;
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_region_does_not_slow_the_quorum() -> anyhow::Result<()> {
    let cluster = Cluster::start(options(1)).await?;
    let history = Arc::new(Recorder::new());
    let mut client = recorded(&cluster, 0, &history, "p").await?;
    cluster.link(0, 2).set(Faults::delay(
        Duration::from_millis(1_500),
        Duration::from_millis(500),
    ));
    for i in 0..8 {
        let lock = client
            .acquire(acquire(&format!("slow/{i}"), "p", 10_000, 0))
            .await?
            .into_inner();
        // The slow region's reply (≥ 1.5 s away) cannot be part of the majority.
        assert!(
            !lock.granted_regions.contains(&"region-c".to_owned()),
            "{:?}",
            lock.granted_regions
        );
        client.release(release(&lock.lock_id)).await?;
    }
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jittered_links_and_duplicated_requests_mint_no_new_token_and_free_no_newer_holder()
-> anyhow::Result<()> {
    let cluster = Cluster::start(options(1)).await?;
    let history = Arc::new(Recorder::new());
    let mut client = recorded(&cluster, 0, &history, "dup").await?;
    for r in 0..3 {
        cluster.link(0, r).set(Faults::delay(
            Duration::from_millis(5),
            Duration::from_millis(40),
        ));
    }
    // The same acquire sent three times at once (a retrying client).
    let mut request = acquire("dup/res", "dup", 5_000, 0);
    request.request_id = "dup-1".into();
    // Duplicates racing each other may split the regions' votes; like any client
    // they retry on ABORTED (contended) for a while. Every one that gets a lock
    // gets the same lock and token: no duplicate mints a second lock.
    let retry_until = tokio::time::Instant::now() + Duration::from_millis(request.ttl_ms);
    let replays: Vec<_> = (0..3)
        .map(|_| {
            let mut client = client.clone();
            let request = request.clone();
            tokio::spawn(async move {
                loop {
                    match client.acquire(request.clone()).await {
                        Err(status)
                            if status.code() == Code::Aborted
                                && tokio::time::Instant::now() < retry_until =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        result => return result,
                    }
                }
            })
        })
        .collect();
    let mut granted = Vec::new();
    for replay in replays {
        match replay.await? {
            Ok(r) => granted.push(r.into_inner()),
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{}", status.message()),
        }
    }
    assert!(
        granted.iter().all(|g| g.lock_id == granted[0].lock_id
            && g.fencing_token == granted[0].fencing_token),
        "{granted:?}"
    );
    // A lone retry of the request gets its lock (once any split among grants the
    // duplicates adopted has expired), and it is the one the duplicates got.
    let first = eventually(
        Duration::from_secs(20),
        "a lone retry of the request gets its lock",
        || {
            let (mut client, request) = (client.clone(), request.clone());
            async move {
                match client.acquire(request).await {
                    Ok(lock) => Some(lock.into_inner()),
                    Err(status) => {
                        assert_eq!(status.code(), Code::Aborted, "{}", status.message());
                        None
                    }
                }
            }
        },
    )
    .await;
    if let Some(replayed) = granted.first() {
        assert_eq!(
            (&first.lock_id, first.fencing_token),
            (&replayed.lock_id, replayed.fencing_token),
            "a replay returns the same lock"
        );
    }

    // An old release replayed after a newer holder acquired frees nothing.
    client.release(release(&first.lock_id)).await?;
    let mut newer = recorded(&cluster, 0, &history, "newer").await?;
    let newer = newer
        .acquire(acquire("dup/res", "newer", 5_000, 0))
        .await?
        .into_inner();
    assert!(newer.fencing_token > first.fencing_token);
    let replayed = client.release(release(&first.lock_id)).await;
    assert_eq!(replayed.unwrap_err().code(), Code::NotFound);
    let mut rival = recorded(&cluster, 0, &history, "rival").await?;
    let refused = rival
        .acquire(acquire("dup/res", "rival", 5_000, 0))
        .await
        .expect_err("the newer holder still holds it");
    assert_eq!(refused.code(), Code::Aborted, "{}", refused.message());
    assert!(
        refused.message().contains("\"newer\""),
        "{}",
        refused.message()
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
async fn an_agent_cut_off_from_its_etcd_stops_counting_and_the_others_carry_the_locks()
-> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        proxy_etcd: true,
        ..ClusterOptions::default()
    })
    .await?;
    let history = Arc::new(Recorder::new());
    let mut holder = recorded(&cluster, 0, &history, "holder").await?;
    let mut worker = recorded(&cluster, 0, &history, "worker").await?;
    let mut rival = recorded(&cluster, 0, &history, "rival").await?;
    let held = holder
        .acquire(acquire("etcd-cut/held", "holder", 20_000, 0))
        .await?
        .into_inner();

    // Both directions of region A's agent → etcd link go dark, then only etcd's
    // replies (the agent's writes are applied; it never hears).
    for faults in [
        Faults::partition(),
        Faults {
            downstream: Direction {
                blackhole: true,
                ..Direction::default()
            },
            ..Faults::default()
        },
    ] {
        for link in cluster.etcd_links(0, 0) {
            link.set(faults);
        }
        for i in 0..4 {
            let resource = format!("etcd-cut/{i}");
            let lock = worker
                .acquire(acquire(&resource, "worker", 5_000, 0))
                .await?
                .into_inner();
            assert!(
                !lock.granted_regions.contains(&"region-a".to_owned()),
                "{:?}",
                lock.granted_regions
            );
            worker.release(release(&lock.lock_id)).await?;
        }
        // The lock granted before the cut lives on through B and C.
        let renewed = holder
            .renew(RenewRequest {
                lock_id: held.lock_id.clone(),
                ttl_ms: 20_000,
            })
            .await?
            .into_inner();
        assert_eq!(renewed.fencing_token, held.fencing_token);
        let refused = rival
            .acquire(acquire("etcd-cut/held", "rival", 5_000, 0))
            .await
            .expect_err("the holder's lock lives on");
        assert_eq!(refused.code(), Code::Aborted, "{}", refused.message());
        assert!(
            refused.message().contains("\"holder\""),
            "{}",
            refused.message()
        );
        for link in cluster.etcd_links(0, 0) {
            link.heal();
            link.reset();
        }
    }
    // Healed: region A takes part again.
    eventually(Duration::from_secs(15), "region A grants again", || {
        let mut worker = worker.clone();
        async move {
            let lock = worker
                .acquire(acquire("etcd-cut/back", "worker", 5_000, 0))
                .await
                .ok()?
                .into_inner();
            worker.release(release(&lock.lock_id)).await.ok()?;
            lock.granted_regions
                .contains(&"region-a".to_owned())
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}

/// Hole 1, reproduced end to end as it was from outside (two holders, 5 of 5
/// tries, before the fix): coordinator 0 reaches A with 80 ms of delay, B turns
/// slow (300 ms each way) and C is down. Its round loses (B's grant misses the
/// 500 ms deadline although B applied it) and it aborts in the background. The
/// client retries at once with the same request id through coordinator 1
/// (direct links): A and B still hold the earlier grant. Before, coordinator 1
/// reported it won with almost full validity, coordinator 0's aborts then deleted
/// it, and a rival acquired 1.5 s later. Now the retry wins only a grant a
/// majority adopted, which no abort removes, so the rival is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_hole1_a_retry_never_wins_a_lock_that_is_being_aborted() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        region_timeout_ms: 500,
        ..options(2)
    })
    .await?;
    let history = Arc::new(Recorder::new());
    let mut first = recorded(&cluster, 0, &history, "first").await?;
    let mut retry = recorded(&cluster, 1, &history, "retry").await?;
    let mut rival = recorded(&cluster, 1, &history, "rival").await?;
    cluster.stop_region(2).await;
    cluster
        .link(0, 0)
        .set(Faults::delay(Duration::from_millis(80), Duration::ZERO));
    cluster
        .link(0, 1)
        .set(Faults::delay(Duration::from_millis(300), Duration::ZERO));

    let mut request = acquire("payouts/h1", "worker", 10_000, 0);
    request.request_id = "payout-run-7".into();
    let lost = first.acquire(request.clone()).await.unwrap_err();
    assert_eq!(lost.code(), Code::Unavailable, "{}", lost.message());

    // The retry at once, through the other coordinator; it may wait a little
    // (if the aborts land first, the regions are free again soon).
    request.wait_ms = 5_000;
    let held = retry.acquire(request).await?.into_inner();
    // Long enough for coordinator 0's slow aborts to land everywhere.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let refused = rival
        .acquire(acquire("payouts/h1", "rival", 10_000, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Aborted, "{}", refused.message());
    assert!(
        refused.message().contains("worker"),
        "held by the retry's owner: {}",
        refused.message()
    );
    let at_a = cluster.agent_read(0, "payouts/h1").await?;
    assert_eq!(at_a.holder.map(|h| h.lock_id), Some(held.lock_id));
    assert_eq!(check(&history.history(), None), vec![]);
    Ok(())
}

/// Hole 9 end to end: region C's link delays every request by 3 s, three times
/// the coordinator's deadline. The lock is won by A and B; the proposal that
/// reaches C seconds later is refused (its deadline passed), so C never holds a
/// grant that nobody waits for. Before the fix C applied it and held the
/// resource until the lock's TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_hole9_a_proposal_delayed_past_its_deadline_is_not_applied() -> anyhow::Result<()>
{
    let cluster = Cluster::start(ClusterOptions {
        late_proposal_slack_ms: 0,
        ..options(1)
    })
    .await?;
    let mut client = cluster.client(0).await?;
    // The coordinator states deadlines on each agent's clock, as its health
    // probes read it: wait until a probe of region C succeeded.
    let rest = cluster.rest_addrs[0];
    let probe = &cluster;
    eventually(Duration::from_secs(30), "region C probed", || async move {
        let ready = probe.http(rest, "GET", "/readyz", &[], None).await;
        ready.ok().filter(|r| {
            r.json()["reachable_regions"]
                .to_string()
                .contains("region-c")
        })
    })
    .await;
    let delay = Duration::from_secs(3);
    cluster.link(0, 2).set(Faults::delay(delay, Duration::ZERO));
    let lock = client
        .acquire(acquire("late/grant", "p", 60_000, 0))
        .await?
        .into_inner();
    assert!(
        !lock.granted_regions.contains(&"region-c".to_owned()),
        "{:?}",
        lock.granted_regions
    );
    // The delayed proposal reaches C after `delay`; watch C well past that. (If
    // the machine is so slow that it arrives later still, this passes without
    // proving anything; it never fails when the rule holds.)
    let until = Instant::now() + delay + Duration::from_secs(5);
    while Instant::now() < until {
        let at_c = cluster.agent_read(2, "late/grant").await?;
        assert_eq!(
            at_c.holder, None,
            "region C applied a proposal that arrived after its deadline"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
