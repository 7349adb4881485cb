//! Faults that need real processes, killed and paused by pid: an agent SIGKILLed
//! (and another SIGSTOPped) while a holder renews, and a coordinator SIGKILLed
//! right after a partial grant, then an idempotent retry through another
//! coordinator. Agents and coordinators are the real binaries
//! (`cargo build --workspace --bins` first; `make test` does). Every call is
//! recorded, with its real outcome, and each test ends with the checker's verdict.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use globallock_localcluster::{
    CoordinatorSpec, Direction, FaultProxy, Faults, Layout, ProcessCluster,
};
use globallock_proto::agent::ReadRequest;
use globallock_proto::agent::region_agent_client::RegionAgentClient;
use globallock_proto::v1::lock_service_client::LockServiceClient;
use globallock_proto::v1::{AcquireRequest, ReleaseRequest, RenewRequest};
use harness::history::{Recorded, Recorder, check};
use harness::{acquire, eventually};
use tokio::sync::{oneshot, watch};
use tonic::Code;

/// What the holder's renewal loop knows about its lock.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// Until when the lock may be relied on: the latest successful grant's or
    /// renewal's send time plus its validity.
    valid_until: Instant,
    /// The service said the lock is gone (`NOT_FOUND`).
    gone: bool,
}

impl Held {
    fn is_held(&self) -> bool {
        !self.gone && Instant::now() < self.valid_until
    }
}

/// Renew `lock_id` through `client` (every call recorded) a third of `ttl` after
/// each success, retrying failures every 100 ms, until told to stop.
fn renew_in_background(
    mut client: Recorded,
    lock_id: String,
    ttl: Duration,
    valid_until: Instant,
) -> (
    watch::Receiver<Held>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (publish, held) = watch::channel(Held {
        valid_until,
        gone: false,
    });
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut next = tokio::time::Instant::now() + ttl / 3;
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                () = tokio::time::sleep_until(next) => {}
            }
            let sent = Instant::now();
            let request = RenewRequest {
                lock_id: lock_id.clone(),
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap(),
            };
            let result = tokio::select! {
                _ = &mut stopped => return,
                result = client.renew(request) => result,
            };
            match result {
                Ok(renewed) => {
                    let until = sent + Duration::from_millis(renewed.get_ref().validity_ms);
                    publish.send_modify(|h| h.valid_until = h.valid_until.max(until));
                    next = tokio::time::Instant::now() + ttl / 3;
                }
                Err(status) if status.code() == Code::NotFound => {
                    publish.send_modify(|h| h.gone = true);
                    return;
                }
                Err(_) => next = tokio::time::Instant::now() + Duration::from_millis(100),
            }
        }
    });
    (held, stop, task)
}

/// Refused because `holder` holds the resource (ABORTED naming it).
fn assert_held_by(status: &tonic::Status, holder: &str) {
    assert_eq!(status.code(), Code::Aborted, "{}", status.message());
    assert!(
        status.message().contains(&format!("{holder:?}")),
        "{}",
        status.message()
    );
}

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
    let coordinator = LockServiceClient::new(cluster.coordinator_channel(0)?);
    let history = Arc::new(Recorder::new());
    let mut holder = Recorded::new(coordinator.clone(), history.clone(), "holder");
    let mut rival = Recorded::new(coordinator.clone(), history.clone(), "rival");

    let ttl = Duration::from_secs(2);
    let sent = Instant::now();
    let granted = holder
        .acquire(acquire("jobs/nightly", "holder", 2_000, 0))
        .await?
        .into_inner();
    let (held, stop, renewer) = renew_in_background(
        holder.clone(),
        granted.lock_id.clone(),
        ttl,
        sent + Duration::from_millis(granted.validity_ms),
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
        let now = *held.borrow();
        assert!(
            now.is_held(),
            "round {round}: the renewing holder lost its lock: {now:?}"
        );
        let refused = rival
            .acquire(acquire("jobs/nightly", "rival", 2_000, 0))
            .await
            .expect_err("a rival got a held lock");
        assert_held_by(&refused, "holder");
    }

    // Released: gone everywhere, not resurrected by a late renewal.
    let _ = stop.send(());
    renewer.await?;
    holder
        .release(ReleaseRequest {
            lock_id: granted.lock_id.clone(),
        })
        .await?;
    let late = holder
        .renew(RenewRequest {
            lock_id: granted.lock_id.clone(),
            ttl_ms: 2_000,
        })
        .await
        .expect_err("a released lock was renewed");
    assert_eq!(late.code(), Code::NotFound, "{}", late.message());
    let mut next = Recorded::new(coordinator, history.clone(), "next");
    let next = next
        .acquire(acquire("jobs/nightly", "next", 2_000, 0))
        .await
        .expect("free after release")
        .into_inner();
    assert!(next.fencing_token > granted.fencing_token);
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
        // The services' own default runtime (a worker thread per core), as
        // deployed; the other process tests run them on one thread, as make dev.
        worker_threads: None,
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
        .map(|p| format!("{}://{}", cluster.scheme(), p.addr()))
        .collect();
    let doomed_channel = cluster.coordinator_channel_at(doomed.grpc)?;
    cluster.start_coordinator(doomed).await?;
    let survivor: CoordinatorSpec = cluster.free_coordinator_spec()?;
    cluster.start_coordinator(survivor).await?;
    let history = Arc::new(Recorder::new());

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
    let mut doomed_client = Recorded::new(
        LockServiceClient::new(doomed_channel),
        history.clone(),
        "payer",
    );
    let in_flight = tokio::spawn({
        let request = request.clone();
        async move { doomed_client.acquire(request).await }
    });
    // A's agent itself holds the partial grant (read directly, not through any
    // coordinator or proxy) before the coordinator dies.
    let a = cluster.agent_channel(0)?;
    eventually(Duration::from_secs(10), "A holds the partial grant", || {
        let a = a.clone();
        async move {
            let mut agent = RegionAgentClient::new(a);
            let read = agent
                .read(ReadRequest {
                    shard: "shard-0".into(),
                    resource: "payouts/run".into(),
                })
                .await
                .ok()?
                .into_inner();
            read.holder
                .filter(|h| h.owner == "payer" && h.request_id == "payout-2026-11-26")
        }
    })
    .await;
    cluster.kill_coordinator(0);
    assert!(
        in_flight.await?.is_err(),
        "the crashed coordinator cannot have answered"
    );

    // The client retries the same request through another coordinator: it gets a
    // lock, and retrying again returns the same one.
    let survivor = LockServiceClient::new(cluster.coordinator_channel(1)?);
    let mut payer = Recorded::new(survivor.clone(), history.clone(), "payer");
    let first = eventually(Duration::from_secs(10), "retry succeeds", || {
        let mut payer = payer.clone();
        let request = request.clone();
        async move { payer.acquire(request).await.ok() }
    })
    .await
    .into_inner();
    let again = payer.acquire(request.clone()).await?.into_inner();
    assert_eq!(again.lock_id, first.lock_id, "the retry is idempotent");
    assert_eq!(again.fencing_token, first.fencing_token);
    // A rival is refused while the retried lock is held.
    let mut rival = Recorded::new(survivor, history.clone(), "rival");
    let refused = rival
        .acquire(acquire("payouts/run", "rival", 3_000, 0))
        .await
        .expect_err("the retried lock is held");
    assert_held_by(&refused, "payer");
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}
