//! Network faults of the fault table, injected with the user-space proxy on every
//! coordinator → region link: minority partition, bridge, asymmetric partition,
//! slow region, delay and duplicated requests. Every test records a history and
//! ends with the checker's verdict.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use globallock_localcluster::{Direction, Faults};
use globallock_proto::v1::ReleaseRequest;
use harness::history::{Kind, Phase, Recorder, check, record_acquire};
use harness::oracle::FencedCounter;
use harness::{Cluster, ClusterOptions, acquire, eventually};
use tonic::Code;
use tonic::transport::Channel;

type Client = globallock_proto::v1::lock_service_client::LockServiceClient<Channel>;

fn options(coordinators: usize) -> ClusterOptions {
    ClusterOptions {
        coordinators,
        proxied: true,
        region_timeout_ms: 1_000,
        ..ClusterOptions::default()
    }
}

async fn recorded_release(
    history: &Recorder,
    client: &mut Client,
    process: &str,
    resource: &str,
    lock_id: &str,
) {
    let op = history.invoke(process, resource, Kind::Release, lock_id);
    let phase = match client
        .release(ReleaseRequest {
            lock_id: lock_id.into(),
        })
        .await
    {
        Ok(_) => Phase::Ok,
        Err(_) => Phase::Info,
    };
    history.complete(&op, phase, lock_id, 0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition_rejects_fast_and_the_majority_side_keeps_serving() -> anyhow::Result<()>
{
    let cluster = Cluster::start(options(2)).await?;
    let history = Recorder::new();
    let (mut minority, mut majority) = (cluster.client(0).await?, cluster.client(1).await?);
    // Coordinator 0 is cut off from regions B and C.
    cluster.link(0, 1).set(Faults::partition());
    cluster.link(0, 2).set(Faults::partition());

    let first = record_acquire(
        &history,
        &mut minority,
        "minority",
        acquire("orders/1", "m", 5_000, 0),
    )
    .await;
    let status = first.expect_err("a minority must never grant");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("region-b") && status.message().contains("region-c"),
        "{}",
        status.message()
    );
    // Once its health probes see it, the minority side rejects without waiting.
    eventually(Duration::from_secs(5), "fast rejection", || {
        let mut minority = minority.clone();
        async move {
            let started = Instant::now();
            let result = minority.acquire(acquire("orders/2", "m", 5_000, 0)).await;
            (result.is_err() && started.elapsed() < Duration::from_millis(200)).then_some(())
        }
    })
    .await;
    for i in 0..10 {
        let result = record_acquire(
            &history,
            &mut minority,
            "minority",
            acquire(&format!("orders/{i}"), "m", 5_000, 0),
        )
        .await;
        assert_eq!(result.expect_err("never OK").code(), Code::Unavailable);
    }

    // The majority side is unaffected, on the same resources.
    for i in 0..10 {
        let lock = record_acquire(
            &history,
            &mut majority,
            "majority",
            acquire(&format!("orders/{i}"), "M", 5_000, 0),
        )
        .await
        .expect("the majority side serves");
        recorded_release(
            &history,
            &mut majority,
            "majority",
            &format!("orders/{i}"),
            &lock.lock_id,
        )
        .await;
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
    let cluster = Cluster::start(options(2)).await?;
    let history = Arc::new(Recorder::new());
    let counter = Arc::new(FencedCounter::new());
    // Coordinator 0 sees {A, B}; coordinator 1 sees {B, C}. Only B is in both.
    cluster.link(0, 2).set(Faults::partition());
    cluster.link(1, 0).set(Faults::partition());
    let mut tasks = Vec::new();
    for (c, process) in [(0, "left"), (1, "right"), (0, "left-2"), (1, "right-2")] {
        let mut client = cluster.client(c).await?;
        let (history, counter) = (history.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = 0;
            for _ in 0..6 {
                let Ok(lock) = record_acquire(
                    &history,
                    &mut client,
                    process,
                    acquire("bridge/doc", process, 5_000, 10_000),
                )
                .await
                else {
                    continue;
                };
                counter.enter(lock.fencing_token);
                assert!(
                    counter.write(lock.fencing_token),
                    "current holder's write rejected"
                );
                counter.leave(lock.fencing_token);
                recorded_release(&history, &mut client, process, "bridge/doc", &lock.lock_id).await;
                held += 1;
            }
            held
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await?;
    }
    assert!(total >= 6, "both sides made progress through B: {total}");
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
    let history = Recorder::new();
    let (mut cut, mut healthy) = (cluster.client(0).await?, cluster.client(1).await?);
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
    let ttl_ms = 3_000;
    let unknown = record_acquire(
        &history,
        &mut cut,
        "cut",
        acquire("asym/res", "cut", ttl_ms, 0),
    )
    .await;
    assert_eq!(
        unknown.expect_err("no majority answered").code(),
        Code::Unavailable
    );

    // A phantom grant may block the resource, but only until it is aborted or
    // its TTL runs out; the other coordinator then gets it.
    let started = Instant::now();
    let lock = eventually(Duration::from_secs(15), "phantom grants go away", || {
        let history = &history;
        let mut healthy = healthy.clone();
        async move {
            record_acquire(
                history,
                &mut healthy,
                "healthy",
                acquire("asym/res", "healthy", 5_000, 0),
            )
            .await
            .ok()
        }
    })
    .await;
    assert!(started.elapsed() < Duration::from_millis(ttl_ms + 5_000));
    assert!(lock.fencing_token > 0);
    cluster.link(0, 1).heal();
    cluster.link(0, 2).heal();
    recorded_release(&history, &mut healthy, "healthy", "asym/res", &lock.lock_id).await;
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
    let history = Recorder::new();
    let mut client = cluster.client(0).await?;
    cluster.link(0, 2).set(Faults::delay(
        Duration::from_millis(1_500),
        Duration::from_millis(500),
    ));
    for i in 0..8 {
        let lock = record_acquire(
            &history,
            &mut client,
            "p",
            acquire(&format!("slow/{i}"), "p", 10_000, 0),
        )
        .await?;
        // The slow region's reply (≥ 1.5 s away) cannot be part of the majority.
        assert!(
            !lock.granted_regions.contains(&"region-c".to_owned()),
            "{:?}",
            lock.granted_regions
        );
        recorded_release(
            &history,
            &mut client,
            "p",
            &format!("slow/{i}"),
            &lock.lock_id,
        )
        .await;
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
    let history = Recorder::new();
    let mut client = cluster.client(0).await?;
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
    // they retry on ABORTED (contended), and must all end up with one lock.
    let replays: Vec<_> = (0..3)
        .map(|_| {
            let mut client = client.clone();
            let request = request.clone();
            tokio::spawn(async move {
                let mut last = None;
                for _ in 0..20 {
                    match client.acquire(request.clone()).await {
                        Ok(r) => return Ok(r),
                        Err(status) if status.code() == Code::Aborted => {
                            last = Some(status);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(status) => return Err(status),
                    }
                }
                Err(last.unwrap_or_else(|| tonic::Status::aborted("contended")))
            })
        })
        .collect();
    let mut granted = Vec::new();
    for replay in replays {
        if let Ok(r) = replay.await? {
            granted.push(r.into_inner());
        }
    }
    assert!(!granted.is_empty());
    assert!(granted.iter().all(|g| g.lock_id == granted[0].lock_id && g.fencing_token == granted[0].fencing_token));
    let first = record_acquire(&history, &mut client, "dup", request.clone()).await?;
    assert_eq!(
        first.lock_id, granted[0].lock_id,
        "a replay returns the same lock"
    );

    // An old release replayed after a newer holder acquired frees nothing.
    recorded_release(&history, &mut client, "dup", "dup/res", &first.lock_id).await;
    let newer = record_acquire(
        &history,
        &mut client,
        "newer",
        acquire("dup/res", "newer", 5_000, 0),
    )
    .await?;
    assert!(newer.fencing_token > first.fencing_token);
    let replayed = client
        .release(ReleaseRequest {
            lock_id: first.lock_id.clone(),
        })
        .await;
    assert_eq!(replayed.unwrap_err().code(), Code::NotFound);
    let rival = client.acquire(acquire("dup/res", "rival", 5_000, 0)).await;
    assert_eq!(
        rival.unwrap_err().code(),
        Code::Aborted,
        "the newer holder still holds it"
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
    let history = Recorder::new();
    let mut client = cluster.client(0).await?;
    let held = record_acquire(
        &history,
        &mut client,
        "holder",
        acquire("etcd-cut/held", "holder", 20_000, 0),
    )
    .await?;

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
            let lock = record_acquire(
                &history,
                &mut client,
                "worker",
                acquire(&resource, "worker", 5_000, 0),
            )
            .await?;
            assert!(
                !lock.granted_regions.contains(&"region-a".to_owned()),
                "{:?}",
                lock.granted_regions
            );
            recorded_release(&history, &mut client, "worker", &resource, &lock.lock_id).await;
        }
        // The lock granted before the cut lives on through B and C.
        let op = history.invoke("holder", "etcd-cut/held", Kind::Renew, &held.lock_id);
        let renewed = client
            .renew(globallock_proto::v1::RenewRequest {
                lock_id: held.lock_id.clone(),
                ttl_ms: 20_000,
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
        let rival = record_acquire(
            &history,
            &mut client,
            "rival",
            acquire("etcd-cut/held", "rival", 5_000, 0),
        )
        .await;
        assert_eq!(rival.unwrap_err().code(), Code::Aborted);
        for link in cluster.etcd_links(0, 0) {
            link.heal();
            link.reset();
        }
    }
    // Healed: region A takes part again.
    eventually(Duration::from_secs(15), "region A grants again", || {
        let history = &history;
        let mut client = client.clone();
        async move {
            let lock = record_acquire(
                history,
                &mut client,
                "worker",
                acquire("etcd-cut/back", "worker", 5_000, 0),
            )
            .await
            .ok()?;
            recorded_release(
                history,
                &mut client,
                "worker",
                "etcd-cut/back",
                &lock.lock_id,
            )
            .await;
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
