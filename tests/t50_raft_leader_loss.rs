//! A region whose shard is a 3-member etcd cluster loses its Raft leader: locks
//! keep working once the cluster elects a new one, validity stays conservative,
//! and tokens keep increasing. Region C is down throughout, so region A's etcd is
//! needed for every majority.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use globallock_proto::v1::{ReleaseRequest, RenewRequest};
use harness::history::{Recorded, Recorder, check};
use harness::{Cluster, ClusterOptions, acquire, eventually};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_etcd_leader_in_one_region_does_not_break_locks() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        three_member_region: Some(0),
        region_timeout_ms: 3_000,
        ..ClusterOptions::default()
    })
    .await?;
    let history = std::sync::Arc::new(Recorder::new());
    let mut client = Recorded::new(cluster.client(0).await?, history.clone(), "client");
    cluster.stop_region(2).await;

    let held = client
        .acquire(acquire("cluster/config", "operator", 20_000, 5_000))
        .await?
        .into_inner();
    assert!(
        Duration::from_millis(held.validity_ms)
            <= Duration::from_millis(20_000) - Duration::from_millis(200)
    );

    // SIGKILL region A's etcd leader.
    let etcd = &mut cluster.regions[0].etcd[0];
    let leader = etcd.leader().expect("a leader");
    etcd.kill_member(leader);

    // Renewal works again once a new leader is elected, and keeps the token.
    // Until then a renewal can only be unconfirmed (UNAVAILABLE): the lock is
    // never reported gone, and a rival never gets it.
    let renewed = eventually(Duration::from_secs(15), "renew after leader loss", || {
        let mut client = client.clone();
        let lock_id = held.lock_id.clone();
        async move {
            match client
                .renew(RenewRequest {
                    lock_id,
                    ttl_ms: 20_000,
                })
                .await
            {
                Ok(renewed) => Some(renewed.into_inner()),
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
                    None
                }
            }
        }
    })
    .await;
    assert_eq!(renewed.fencing_token, held.fencing_token);
    let rival = client
        .acquire(acquire("cluster/config", "rival", 10_000, 0))
        .await
        .expect_err("the renewed lock is held");
    assert_eq!(rival.code(), Code::Aborted, "{}", rival.message());
    assert!(rival.message().contains("operator"), "{}", rival.message());
    let next_leader = cluster.regions[0].etcd[0].leader().expect("new leader");
    assert_ne!(next_leader, leader);

    // Bring the killed member back, then pause the new leader (SIGSTOP): a stuck
    // leader, not a dead one; the other two members elect a third.
    cluster.regions[0].etcd[0].start_member(leader)?;
    cluster.regions[0].etcd[0].wait_healthy(Duration::from_secs(20))?;
    client
        .release(ReleaseRequest {
            lock_id: held.lock_id.clone(),
        })
        .await?;
    cluster.regions[0].etcd[0].pause_member(next_leader)?;
    let after = eventually(
        Duration::from_secs(20),
        "acquire with a paused leader",
        || {
            let mut client = client.clone();
            async move {
                client
                    .acquire(acquire("cluster/config", "operator-2", 10_000, 2_000))
                    .await
                    .ok()
            }
        },
    )
    .await
    .into_inner();
    assert!(after.fencing_token > held.fencing_token);
    cluster.regions[0].etcd[0].resume_member(next_leader)?;
    let verdict = check(&history.history(), None);
    assert_eq!(verdict, vec![], "{}", history.to_json_lines());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_leader_cut_off_from_its_peers_is_replaced_and_locks_stay_safe() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(ClusterOptions {
        three_member_region: Some(0),
        proxy_peers: true,
        region_timeout_ms: 3_000,
        ..ClusterOptions::default()
    })
    .await?;
    let history = std::sync::Arc::new(Recorder::new());
    let mut client = Recorded::new(cluster.client(0).await?, history.clone(), "holder");
    cluster.stop_region(2).await; // every majority now needs region A
    let held = client
        .acquire(acquire("raft/res", "holder", 20_000, 5_000))
        .await?
        .into_inner();

    // Nothing reaches region A's Raft leader from its peers any more (through the
    // proxy in front of its peer port): the other two elect a new leader.
    let leader = cluster.regions[0].etcd[0].leader().expect("a leader");
    cluster.peer_links(0, 0)[leader].set(globallock_localcluster::Faults::partition());
    let renewed = eventually(
        Duration::from_secs(20),
        "renew once a new leader serves",
        || {
            let mut client = client.clone();
            let lock_id = held.lock_id.clone();
            async move {
                match client
                    .renew(RenewRequest {
                        lock_id,
                        ttl_ms: 20_000,
                    })
                    .await
                {
                    Ok(renewed) => Some(renewed.into_inner()),
                    Err(status) => {
                        // Unconfirmed while A has no leader; never "gone".
                        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
                        None
                    }
                }
            }
        },
    )
    .await;
    assert_eq!(renewed.fencing_token, held.fencing_token);
    let new_leader = eventually(Duration::from_secs(10), "a new leader", || {
        let l = cluster.regions[0].etcd[0]
            .leaders()
            .into_iter()
            .find(|&l| l != leader);
        async move { l }
    })
    .await;
    assert_ne!(new_leader, leader);
    let mut rival = Recorded::new(cluster.client(0).await?, history.clone(), "rival");
    let refused = rival
        .acquire(acquire("raft/res", "rival", 5_000, 0))
        .await
        .expect_err("the holder's lock is held");
    assert_eq!(refused.code(), Code::Aborted, "{}", refused.message());
    assert!(
        refused.message().contains("holder"),
        "{}",
        refused.message()
    );
    cluster.peer_links(0, 0)[leader].heal();
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}
