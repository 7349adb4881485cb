//! A region whose shard is a 3-member etcd cluster loses its Raft leader: locks
//! keep working once the cluster elects a new one, validity stays conservative,
//! and tokens keep increasing. Region C is down throughout, so region A's etcd is
//! needed for every majority.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use globallock_proto::v1::{ReleaseRequest, RenewRequest};
use harness::{Cluster, ClusterOptions, acquire, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_etcd_leader_in_one_region_does_not_break_locks() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        three_member_region: Some(0),
        region_timeout_ms: 3_000,
        ..ClusterOptions::default()
    })
    .await?;
    let history = std::sync::Arc::new(harness::history::Recorder::new());
    let mut client =
        harness::history::Recorded::new(cluster.client(0).await?, history.clone(), "client");
    cluster.stop_region(2).await;

    let sent = Instant::now();
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

    // Renewal works again once a new leader is elected, well inside the lock's
    // validity, and keeps the token.
    let renewed = eventually(Duration::from_secs(15), "renew after leader loss", || {
        let mut client = client.clone();
        let lock_id = held.lock_id.clone();
        async move {
            client
                .renew(RenewRequest {
                    lock_id,
                    ttl_ms: 20_000,
                })
                .await
                .ok()
        }
    })
    .await
    .into_inner();
    assert_eq!(renewed.fencing_token, held.fencing_token);
    assert!(
        sent.elapsed() < Duration::from_millis(held.validity_ms),
        "renewal came after validity ended"
    );
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
    let verdict = harness::history::check(&history.history(), None);
    assert_eq!(verdict, vec![], "{}", history.to_json_lines());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_leader_cut_off_from_its_peers_is_replaced_and_locks_stay_safe() -> anyhow::Result<()>
{
    use harness::history::{Kind, Phase, Recorder, check};

    let mut cluster = Cluster::start(ClusterOptions {
        three_member_region: Some(0),
        proxy_peers: true,
        region_timeout_ms: 3_000,
        ..ClusterOptions::default()
    })
    .await?;
    let history = Recorder::new();
    let mut client = cluster.client(0).await?;
    cluster.stop_region(2).await; // every majority now needs region A
    let op = history.invoke("holder", "raft/res", Kind::Acquire, "");
    let held = client
        .acquire(acquire("raft/res", "holder", 20_000, 5_000))
        .await?
        .into_inner();
    history.complete(
        &op,
        Phase::Ok,
        &held.lock_id,
        held.fencing_token,
        held.validity_ms * 1_000,
    );

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
            let history = &history;
            async move {
                let op = history.invoke("holder", "raft/res", Kind::Renew, &lock_id);
                match client
                    .renew(RenewRequest {
                        lock_id: lock_id.clone(),
                        ttl_ms: 20_000,
                    })
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        history.complete(
                            &op,
                            Phase::Ok,
                            &lock_id,
                            r.fencing_token,
                            r.validity_ms * 1_000,
                        );
                        Some(r)
                    }
                    Err(_) => {
                        history.complete(&op, Phase::Info, &lock_id, 0, 0);
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
    let op = history.invoke("rival", "raft/res", Kind::Acquire, "");
    let rival = client.acquire(acquire("raft/res", "rival", 5_000, 0)).await;
    history.complete(&op, Phase::Fail, "", 0, 0);
    assert_eq!(rival.unwrap_err().code(), tonic::Code::Aborted);
    cluster.peer_links(0, 0)[leader].heal();
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}
