//! Eight contenders on one resource through two coordinators never overlap, as
//! checked by a fenced counter that rejects stale tokens.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use globallock_proto::v1::ReleaseRequest;
use harness::oracle::FencedCounter;
use harness::{Cluster, ClusterOptions, acquire};

const CONTENDERS: usize = 8;
const ROUNDS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_contenders_never_overlap() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        coordinators: 2,
        ..ClusterOptions::default()
    })
    .await?;
    let counter = Arc::new(FencedCounter::new());
    let mut tasks = Vec::new();
    for c in 0..CONTENDERS {
        let mut client = cluster.client(c % 2).await?;
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let granted = client
                    .acquire(acquire(
                        "inventory/sku-1",
                        &format!("contender-{c}"),
                        5_000,
                        30_000,
                    ))
                    .await?
                    .into_inner();
                counter.enter(granted.fencing_token);
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert!(
                    counter.write(granted.fencing_token),
                    "a current holder's write was rejected"
                );
                counter.leave(granted.fencing_token);
                client
                    .release(ReleaseRequest {
                        lock_id: granted.lock_id,
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    assert_eq!(counter.violations(), vec![]);
    assert_eq!(counter.writes(), (CONTENDERS * ROUNDS) as u64);
    assert_eq!(counter.rejected(), 0);
    Ok(())
}
