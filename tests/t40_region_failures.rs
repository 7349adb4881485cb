//! One region lost: the service continues. Two regions lost: `UNAVAILABLE` at once,
//! naming the regions, and never a grant. Regions back: the service recovers.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use globallock_proto::v1::{DescribeRequest, ReleaseRequest, RenewRequest};
use harness::{Cluster, ClusterOptions, acquire, eventually};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_region_down_two_regions_down_and_back() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        region_timeout_ms: 3_000,
        ..ClusterOptions::default()
    })
    .await?;
    let history = std::sync::Arc::new(harness::history::Recorder::new());
    let mut client =
        harness::history::Recorded::new(cluster.client(0).await?, history.clone(), "client");
    let held = client
        .acquire(acquire("payments/batch", "holder", 30_000, 0))
        .await?
        .into_inner();
    // The answer names the nearest majority; stop a region outside it, so the
    // two that certainly hold the lock stay up.
    let down = (0..3)
        .rev()
        .find(|&r| {
            !held
                .granted_regions
                .contains(&harness::REGIONS[r].to_owned())
        })
        .unwrap_or(2);
    let up: Vec<&str> = (0..3)
        .filter(|&r| r != down)
        .map(|r| harness::REGIONS[r])
        .collect();

    // --- one region down: everything keeps working --------------------------
    cluster.stop_region(down).await;
    let renewed = client
        .renew(RenewRequest {
            lock_id: held.lock_id.clone(),
            ttl_ms: 30_000,
        })
        .await?
        .into_inner();
    assert_eq!(renewed.fencing_token, held.fencing_token);
    let other = client
        .acquire(acquire("payments/other", "b", 10_000, 0))
        .await?
        .into_inner();
    assert_eq!(other.granted_regions, up);
    let described = client
        .describe(DescribeRequest {
            resource: "payments/batch".into(),
        })
        .await?
        .into_inner();
    assert!(described.held && described.owner == "holder");
    let refused = client
        .acquire(acquire("payments/batch", "rival", 10_000, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Aborted);
    client
        .release(ReleaseRequest {
            lock_id: other.lock_id,
        })
        .await?;

    // --- two regions down: the minority rejects, at once, and never grants ----
    let second_down = (0..3).find(|&r| r != down).unwrap_or(0);
    let survivor = (0..3).find(|&r| r != down && r != second_down).unwrap_or(0);
    cluster.stop_region(second_down).await;
    let first = client
        .acquire(acquire("payments/x", "minority", 10_000, 0))
        .await
        .unwrap_err();
    assert_eq!(first.code(), Code::Unavailable, "{}", first.message());
    for r in [down, second_down] {
        assert!(
            first.message().contains(harness::REGIONS[r]),
            "{}",
            first.message()
        );
    }
    let reachable = format!("reachable regions [{}]", harness::REGIONS[survivor]);
    let names_the_regions = |status: &tonic::Status| {
        status.code() == Code::Unavailable
            && status.message().contains(&reachable)
            && [down, second_down]
                .iter()
                .all(|&r| status.message().contains(harness::REGIONS[r]))
    };
    // Once the coordinator's health checks mark both regions down, a rejected
    // acquire needs no round trip: it sends no grant request to any region.
    eventually(Duration::from_secs(5), "health marks regions down", || {
        let (cluster, mut client) = (&cluster, client.clone());
        async move {
            let before = cluster.grants_sent().await.ok()?;
            let status = client
                .acquire(acquire("payments/y", "minority", 10_000, 0))
                .await
                .expect_err("a minority never grants");
            assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
            let after = cluster.grants_sent().await.ok()?;
            (before == after && names_the_regions(&status)).then_some(())
        }
    })
    .await;
    let before = cluster.grants_sent().await?;
    for attempt in 0..20 {
        let status = client
            .acquire(acquire(
                &format!("payments/{attempt}"),
                "minority",
                10_000,
                0,
            ))
            .await
            .unwrap_err();
        assert!(names_the_regions(&status), "{status:?}");
    }
    assert_eq!(
        cluster.grants_sent().await?,
        before,
        "a rejection known from health checks sent grant requests to regions"
    );
    // Renew and release cannot be confirmed either; waiting does not help.
    let renew = client
        .renew(RenewRequest {
            lock_id: held.lock_id.clone(),
            ttl_ms: 30_000,
        })
        .await
        .unwrap_err();
    assert_eq!(renew.code(), Code::Unavailable);
    let waited = client
        .acquire(acquire("payments/z", "minority", 10_000, 5_000))
        .await
        .unwrap_err();
    assert_eq!(waited.code(), Code::Unavailable);

    // --- regions back: the service recovers ---------------------------------
    cluster.restart_region(second_down).await?;
    cluster.restart_region(down).await?;
    let recovered = eventually(Duration::from_secs(20), "acquire after restart", || {
        let mut client = client.clone();
        async move {
            client
                .acquire(acquire("payments/after", "back", 10_000, 0))
                .await
                .ok()
        }
    })
    .await
    .into_inner();
    assert!(recovered.granted_regions.len() >= 2);
    // The lock granted before the outage is still held (its grants survived in
    // etcd), so a rival is refused and the holder can renew.
    let renewed = client
        .renew(RenewRequest {
            lock_id: held.lock_id.clone(),
            ttl_ms: 30_000,
        })
        .await?
        .into_inner();
    assert_eq!(renewed.fencing_token, held.fencing_token);
    let rival = client
        .acquire(acquire("payments/batch", "rival", 10_000, 0))
        .await
        .unwrap_err();
    assert_eq!(rival.code(), Code::Aborted);
    let verdict = harness::history::check(&history.history(), None);
    assert_eq!(verdict, vec![], "{}", history.to_json_lines());
    Ok(())
}

/// Planted bug M3b (late grants of a *won* round aborted). Region C answers late,
/// after A and B already made the majority. Its grant is part of the lock: it
/// must stay, so that the lock still survives one region failing. Stop A (a
/// region that *did* answer in time) and the holder must still renew with B and C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_grant_of_a_won_round_stays_so_the_lock_survives_losing_a_region()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        proxied: true,
        region_timeout_ms: 10_000,
        ..ClusterOptions::default()
    })
    .await?;
    let mut client = cluster.client(0).await?;
    cluster
        .link(0, 2)
        .set(globallock_localcluster::Faults::delay(
            Duration::from_secs(1),
            Duration::ZERO,
        ));
    let held = client
        .acquire(acquire("archive/m3b", "holder", 60_000, 0))
        .await?
        .into_inner();
    assert_eq!(
        held.granted_regions,
        ["region-a", "region-b"],
        "precondition: region-c's reply is the late one"
    );
    // Wait until the coordinator has region C's late reply in hand (it handles a
    // late reply right after counting it).
    eventually(
        Duration::from_secs(30),
        "region-c's late grant reply reached the coordinator",
        || {
            let cluster = &cluster;
            async move {
                let replies = cluster
                    .coordinator_metric(
                        0,
                        "globallock_region_requests_total",
                        &[("region", "region-c"), ("op", "grant"), ("outcome", "ok")],
                    )
                    .await
                    .ok()?;
                (replies >= 1.0).then_some(())
            }
        },
    )
    .await;
    cluster.stop_region(0).await;
    // The renewal reaches C through the same in-order link as any abort sent
    // after the late reply, so an abort would have landed first.
    let renewed = client
        .renew(RenewRequest {
            lock_id: held.lock_id.clone(),
            ttl_ms: 60_000,
        })
        .await?
        .into_inner();
    assert_eq!(renewed.fencing_token, held.fencing_token);
    let at_c = cluster.agent_read(2, "archive/m3b").await?;
    assert_eq!(
        at_c.holder.map(|h| h.lock_id),
        Some(held.lock_id),
        "region-c keeps its late grant"
    );
    Ok(())
}

/// Hole 9 (one agent counted twice): a coordinator whose configuration reaches
/// region A's agent under two region names (two spellings of one address, which
/// configuration cannot see) must not count A twice. With B down, A alone is a
/// minority: the answer is `UNAVAILABLE`, never a grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_one_agent_under_two_region_names_never_votes_twice() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let a = cluster.regions[0].agent_addr;
    let scheme = cluster.scheme();
    let endpoints = vec![
        format!("{scheme}://{a}"),
        format!("{scheme}://{}", cluster.regions[1].agent_addr),
        format!("{scheme}://localhost:{}", a.port()),
    ];
    let index = cluster.start_coordinator_via(endpoints).await?;
    let mut client = cluster.client(index).await?;
    cluster.stop_region(1).await;
    for attempt in 0..5 {
        let refused = client
            .acquire(acquire(
                &format!("twice/{attempt}"),
                "mislabelled",
                10_000,
                0,
            ))
            .await
            .expect_err("one region is not a majority");
        assert_eq!(refused.code(), Code::Unavailable, "{}", refused.message());
    }
    Ok(())
}

/// A region that missed a release (the link to it was cut while a majority
/// released the lock) kept the released lock's grant until its TTL, refusing
/// every later holder of the resource there. The coordinator that decided the
/// release now aborts that grant at the region as soon as the region names it
/// as holder, so the region is free again long before the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_region_that_missed_a_release_is_freed_when_it_names_the_released_lock()
-> anyhow::Result<()> {
    const RESOURCE: &str = "ledger/stale";
    let cluster = Cluster::start(ClusterOptions {
        proxied: true,
        region_timeout_ms: 1_000,
        ..ClusterOptions::default()
    })
    .await?;
    let mut client = cluster.client(0).await?;
    let first = client
        .acquire(acquire(RESOURCE, "first", 120_000, 0))
        .await?
        .into_inner();
    let holds_first = |r: usize, lock_id: String| {
        let cluster = &cluster;
        async move {
            let read = cluster.agent_read(r, RESOURCE).await.ok()?;
            read.holder
                .is_some_and(|h| h.lock_id == lock_id)
                .then_some(())
        }
    };
    eventually(
        Duration::from_secs(30),
        "region-c holds the first lock",
        || holds_first(2, first.lock_id.clone()),
    )
    .await;

    // Region C misses the release: the link to it is cut until the release is decided.
    cluster
        .link(0, 2)
        .set(globallock_localcluster::Faults::partition());
    client
        .release(ReleaseRequest {
            lock_id: first.lock_id.clone(),
        })
        .await?;
    // Closed before healing, so what the cut link held back never arrives.
    cluster.link(0, 2).reset();
    cluster.link(0, 2).heal();
    assert!(
        holds_first(2, first.lock_id.clone()).await.is_some(),
        "precondition: region-c still holds the released lock"
    );
    // Wait until the coordinator proposes to C again (its health check saw it back).
    let mut probe = 0;
    eventually(
        Duration::from_secs(30),
        "proposals reach region-c again",
        || {
            probe += 1;
            let (cluster, mut client) = (&cluster, client.clone());
            let resource = format!("ledger/probe-{probe}");
            async move {
                let lock = client
                    .acquire(acquire(&resource, "probe", 5_000, 0))
                    .await
                    .ok()?
                    .into_inner();
                let at_c = eventually(Duration::from_secs(5), "the probe's answer at C", || {
                    let resource = resource.clone();
                    async move { Some(cluster.agent_read(2, &resource).await.ok()?.holder) }
                })
                .await;
                client
                    .release(ReleaseRequest {
                        lock_id: lock.lock_id.clone(),
                    })
                    .await
                    .ok()?;
                at_c.is_some_and(|h| h.lock_id == lock.lock_id)
                    .then_some(())
            }
        },
    )
    .await;

    // The next holder wins with A and B; C refuses it naming the released lock,
    // and the coordinator aborts that grant at C.
    let second = client
        .acquire(acquire(RESOURCE, "second", 120_000, 0))
        .await?
        .into_inner();
    assert!(second.fencing_token > first.fencing_token);
    eventually(
        Duration::from_secs(30),
        "region-c no longer holds the released lock (its TTL is 120 s)",
        || {
            let cluster = &cluster;
            let first = first.lock_id.clone();
            async move {
                let read = cluster.agent_read(2, RESOURCE).await.ok()?;
                read.holder.is_none_or(|h| h.lock_id != first).then_some(())
            }
        },
    )
    .await;
    // A holder that was not released is left alone where it is named.
    let refused = client
        .acquire(acquire(RESOURCE, "third", 120_000, 0))
        .await
        .expect_err("the second lock holds the resource");
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    for r in [0, 1] {
        assert!(
            holds_first(r, second.lock_id.clone()).await.is_some(),
            "region {r} still holds the second lock"
        );
    }
    let repaired = cluster
        .coordinator_metric(
            0,
            "globallock_stale_grants_repaired_total",
            &[("region", "region-c")],
        )
        .await?;
    assert_eq!(repaired, 1.0, "one repair: of the released lock, at C");
    Ok(())
}
