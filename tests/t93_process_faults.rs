//! Faults that need real processes, killed and paused by pid: an agent SIGKILLed
//! (and another SIGSTOPped) while a holder renews, and a coordinator SIGKILLed
//! right after a partial grant, then an idempotent retry through another
//! coordinator. Agents and coordinators are the real binaries
//! (`cargo build --workspace --bins` first; `make test` does).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use globallock_client::Client;
use globallock_localcluster::{
    CoordinatorSpec, Direction, FaultProxy, Faults, Layout, ProcessCluster,
};
use globallock_proto::v1::AcquireRequest;
use globallock_proto::v1::lock_service_client::LockServiceClient;
use harness::history::{Kind, Phase, Recorder, check, record_acquire};
use harness::{acquire, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_killed_and_paused_mid_renewal_lose_and_resurrect_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = ProcessCluster::start(Layout {
        shards: 1,
        ..Layout::new(dir.path().to_path_buf())
    })
    .await?;
    let spec = cluster.free_coordinator_spec()?;
    cluster.start_coordinator(spec).await?;
    let client = Client::connect([cluster.coordinator_url(0)])?;
    let history = Recorder::new();

    let op = history.invoke("holder", "jobs/nightly", Kind::Acquire, "");
    let guard = client
        .lock("jobs/nightly")
        .ttl(Duration::from_secs(2))
        .acquire()
        .await?;
    history.complete(
        &op,
        Phase::Ok,
        guard.lock_id(),
        guard.fencing_token(),
        2_000_000,
    );

    // Region A's agent is SIGKILLed mid-renewal and comes back; then region B's is
    // frozen for a while. Two regions always answer: the holder keeps its lock.
    for round in 0..2 {
        cluster.kill_agent(0);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        cluster.restart_agent(0).await?;
        cluster.pause_agent(1)?;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        cluster.resume_agent(1)?;
        assert!(
            guard.is_held(),
            "round {round}: the renewing holder lost its lock"
        );
        let op = history.invoke("rival", "jobs/nightly", Kind::Acquire, "");
        let rival = client
            .lock("jobs/nightly")
            .owner("rival")
            .try_acquire()
            .await;
        history.complete(&op, Phase::Fail, "", 0, 0);
        assert!(
            matches!(rival, Ok(None)),
            "round {round}: a rival got a held lock: {rival:?}"
        );
    }

    // Released: gone everywhere, not resurrected by a late renewal.
    let lock_id = guard.lock_id().to_owned();
    let op = history.invoke("holder", "jobs/nightly", Kind::Release, &lock_id);
    guard.release().await?;
    history.complete(&op, Phase::Ok, &lock_id, 0, 0);
    assert!(
        client
            .renew(&lock_id, Duration::from_secs(2))
            .await
            .is_err(),
        "a released lock was renewed"
    );
    let op = history.invoke("next", "jobs/nightly", Kind::Acquire, "");
    let next = client
        .lock("jobs/nightly")
        .owner("next")
        .try_acquire()
        .await?
        .expect("free after release");
    history.complete(
        &op,
        Phase::Ok,
        next.lock_id(),
        next.fencing_token(),
        2_000_000,
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
async fn a_coordinator_crashing_after_a_partial_grant_leaves_a_retryable_request()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = ProcessCluster::start(Layout {
        shards: 1,
        ..Layout::new(dir.path().to_path_buf())
    })
    .await?;
    // Coordinator 0 reaches the agents through proxies; coordinator 1 directly.
    let mut proxies = Vec::new();
    for addr in cluster.agent_addrs() {
        proxies.push(FaultProxy::start(addr).await?);
    }
    let mut doomed = cluster.free_coordinator_spec()?;
    doomed.region_endpoints = proxies
        .iter()
        .map(|p| format!("http://{}", p.addr()))
        .collect();
    let doomed_url = format!("http://{}", doomed.grpc);
    cluster.start_coordinator(doomed).await?;
    let survivor: CoordinatorSpec = cluster.free_coordinator_spec()?;
    cluster.start_coordinator(survivor).await?;
    let history = Recorder::new();

    // Proposals to B and C hang; A grants at once. Then coordinator 0 dies before it
    // can decide or abort anything: a partial grant is left behind in A.
    let hold = Direction {
        blackhole: true,
        ..Direction::default()
    };
    proxies[1].set(Faults {
        upstream: hold,
        ..Faults::default()
    });
    proxies[2].set(Faults {
        upstream: hold,
        ..Faults::default()
    });
    let mut request: AcquireRequest = acquire("payouts/run", "payer", 3_000, 0);
    request.request_id = "payout-2026-11-26".into();
    let mut doomed_client = LockServiceClient::connect(doomed_url).await?;
    let op = history.invoke("payer", "payouts/run", Kind::Acquire, "");
    let in_flight = tokio::spawn({
        let request = request.clone();
        async move { doomed_client.acquire(request).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    cluster.kill_coordinator(0);
    assert!(
        in_flight.await?.is_err(),
        "the crashed coordinator cannot have answered"
    );
    history.complete(&op, Phase::Info, "", 0, 0);

    // The client retries the same request through another coordinator: it gets a
    // lock, and retrying again returns the same one.
    let mut client = LockServiceClient::connect(cluster.coordinator_url(1)).await?;
    let first = eventually(Duration::from_secs(10), "retry succeeds", || {
        let mut client = client.clone();
        let request = request.clone();
        let history = &history;
        async move {
            record_acquire(history, &mut client, "payer", request)
                .await
                .ok()
        }
    })
    .await;
    let again = client.acquire(request.clone()).await?.into_inner();
    assert_eq!(again.lock_id, first.lock_id, "the retry is idempotent");
    assert_eq!(again.fencing_token, first.fencing_token);
    // A rival is refused while the retried lock is held.
    let rival = client
        .acquire(acquire("payouts/run", "rival", 3_000, 0))
        .await;
    assert_eq!(rival.unwrap_err().code(), tonic::Code::Aborted);
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}
