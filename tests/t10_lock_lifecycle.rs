//! Acquire, describe, validate, renew and release against three regions of real
//! etcd; idempotent retries by request id.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use globallock_proto::v1::{DescribeRequest, ReleaseRequest, RenewRequest, ValidateRequest};
use harness::history::{Recorded, Recorder, check};
use harness::{Cluster, ClusterOptions, acquire, eventually};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_describe_validate_renew_release() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut client = cluster.client(0).await?;

    let granted = client
        .acquire(acquire("orders/42", "alice", 10_000, 0))
        .await?
        .into_inner();
    assert_eq!(granted.ttl_ms, 10_000);
    assert_eq!(granted.resource, "orders/42");
    assert!(granted.fencing_token > 0);
    assert!(
        granted.granted_regions.len() >= 2,
        "{:?}",
        granted.granted_regions
    );
    assert!(
        granted.validity_ms > 0 && granted.validity_ms < 10_000,
        "{}",
        granted.validity_ms
    );

    let described = client
        .describe(DescribeRequest {
            resource: "orders/42".into(),
        })
        .await?
        .into_inner();
    assert!(described.held);
    assert_eq!(described.owner, "alice");
    assert_eq!(described.fencing_token, granted.fencing_token);
    assert_eq!(described.lock_id, granted.lock_id);
    assert!(described.expires_in_ms > 0 && described.expires_in_ms <= 10_500);

    // Held: a second acquirer is refused at once, told who holds it.
    let refused = client
        .acquire(acquire("orders/42", "bob", 10_000, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Aborted);
    assert!(refused.message().contains("alice"), "{}", refused.message());

    let valid = client
        .validate(ValidateRequest {
            resource: "orders/42".into(),
            fencing_token: granted.fencing_token,
        })
        .await?
        .into_inner();
    assert!(valid.current);
    assert_eq!(valid.current_token, granted.fencing_token);
    let stale = client
        .validate(ValidateRequest {
            resource: "orders/42".into(),
            fencing_token: granted.fencing_token - 1,
        })
        .await?
        .into_inner();
    assert!(!stale.current);

    let renewed = client
        .renew(RenewRequest {
            lock_id: granted.lock_id.clone(),
            ttl_ms: 20_000,
        })
        .await?
        .into_inner();
    assert_eq!(
        renewed.fencing_token, granted.fencing_token,
        "renewal keeps the token"
    );
    assert_eq!(renewed.ttl_ms, 20_000);
    assert!(renewed.validity_ms > 10_000);

    let released = client
        .release(ReleaseRequest {
            lock_id: granted.lock_id.clone(),
        })
        .await?
        .into_inner();
    assert!(released.released_regions.len() >= 2);
    let after = client
        .describe(DescribeRequest {
            resource: "orders/42".into(),
        })
        .await?
        .into_inner();
    assert!(!after.held);

    // Released: renew and release of it are NOT_FOUND; the next acquirer gets in
    // with a larger token.
    let gone = client
        .renew(RenewRequest {
            lock_id: granted.lock_id.clone(),
            ttl_ms: 5_000,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let twice = client
        .release(ReleaseRequest {
            lock_id: granted.lock_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::NotFound);
    let next = client
        .acquire(acquire("orders/42", "bob", 5_000, 0))
        .await?
        .into_inner();
    assert!(next.fencing_token > granted.fencing_token);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_with_the_same_request_id_returns_the_same_lock() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut client = cluster.client(0).await?;
    let mut request = acquire("jobs/nightly", "cron-1", 10_000, 0);
    request.request_id = "req-7f3a".into();

    let first = client.acquire(request.clone()).await?.into_inner();
    let again = client.acquire(request.clone()).await?.into_inner();
    assert_eq!(again.lock_id, first.lock_id);
    assert_eq!(again.fencing_token, first.fencing_token);

    // The same key with a different body is a client bug, not a retry.
    let mut other = request.clone();
    other.ttl_ms = 20_000;
    let status = client.acquire(other).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("request_id"),
        "{}",
        status.message()
    );

    // Another client is still refused: the retry did not create a second holder.
    let refused = client
        .acquire(acquire("jobs/nightly", "cron-2", 10_000, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Aborted);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_acquire_gets_the_lock_when_it_is_released() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let history = Arc::new(Recorder::new());
    let mut client = Recorded::new(cluster.client(0).await?, history.clone(), "a");
    let first = client
        .acquire(acquire("queue/1", "a", 30_000, 0))
        .await?
        .into_inner();

    // Every refused attempt, including those of a waiting acquire, counts as
    // contention: once the counter moves, the waiter has been refused and waits.
    let contention = || cluster.coordinator_metric(0, "globallock_contention_total", &[]);
    let before = contention().await?;
    let mut waiter_client = Recorded::new(cluster.client(0).await?, history.clone(), "b");
    let waiter = tokio::spawn(async move {
        waiter_client
            .acquire(acquire("queue/1", "b", 5_000, 20_000))
            .await
    });
    eventually(
        Duration::from_secs(10),
        "the waiter was refused once and is waiting",
        || async { contention().await.ok().filter(|&n| n > before) },
    )
    .await;
    assert!(!waiter.is_finished(), "the waiter gave up while held");
    client
        .release(ReleaseRequest {
            lock_id: first.lock_id.clone(),
        })
        .await?;
    let second = waiter.await??.into_inner();
    assert_eq!(second.owner, "b");
    assert!(second.fencing_token > first.fencing_token);

    // A wait that runs out while the resource stays held answers ABORTED.
    let mut other = Recorded::new(cluster.client(0).await?, history.clone(), "c");
    let started = std::time::Instant::now();
    let status = other
        .acquire(acquire("queue/1", "c", 5_000, 400))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert!(
        status.message().contains("after waiting"),
        "{}",
        status.message()
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        check(&history.history(), None),
        vec![],
        "{}",
        history.to_json_lines()
    );
    Ok(())
}
