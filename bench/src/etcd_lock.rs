//! etcd's own lock (the `Lock`/`Unlock` RPCs of its v3lock service), as
//! `etcdctl lock` uses it: one lease per worker, kept alive while the worker
//! runs; `Lock` waits on the server until the lock is the caller's.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, LockOptions};
use tokio::task::JoinHandle;

use crate::system::{Acquired, Counters, LockSystem, LockWorker};

/// Each worker's lease TTL (seconds); kept alive at a third of it.
const LEASE_TTL_S: i64 = 30;

/// An etcd cluster's lock service, reached at its client endpoints.
#[derive(Clone)]
pub struct EtcdLock {
    /// The client, shared by the workers (one connection per endpoint).
    client: Client,
}

impl EtcdLock {
    /// A client of the members at `endpoints`.
    /// Over TLS with `tls`'s certificate (the members' own) when given.
    pub async fn connect(
        endpoints: &[String],
        tls: Option<&globallock_localcluster::certs::TlsFiles>,
    ) -> anyhow::Result<Self> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(tls) = tls {
            options = options.with_tls(crate::peers::etcd_client_tls(tls)?);
        }
        Ok(Self {
            client: Client::connect(endpoints, Some(options)).await?,
        })
    }
}

impl std::fmt::Debug for EtcdLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLock").finish_non_exhaustive()
    }
}

/// A worker: its lease and the task keeping it alive.
pub struct EtcdWorker {
    /// The shared client.
    client: Client,
    /// The worker's lease; its lock keys are attached to it.
    lease: i64,
    /// Keeps the lease alive; aborted when the worker is dropped.
    keep_alive: KeepAlive,
}

impl std::fmt::Debug for EtcdWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdWorker")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// The lease keep-alive task, stopped on drop.
#[derive(Debug)]
struct KeepAlive(JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LockSystem for EtcdLock {
    type Worker = EtcdWorker;

    async fn worker(&self, _id: usize) -> anyhow::Result<EtcdWorker> {
        let mut client = self.client.clone();
        let lease = client.lease_grant(LEASE_TTL_S, None).await?.id();
        let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
        let task = tokio::spawn(async move {
            let period = Duration::from_secs(LEASE_TTL_S.unsigned_abs() / 3);
            loop {
                tokio::time::sleep(period).await;
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                if !matches!(responses.message().await, Ok(Some(_))) {
                    return;
                }
            }
        });
        Ok(EtcdWorker {
            client,
            lease,
            keep_alive: KeepAlive(task),
        })
    }
}

impl LockWorker for EtcdWorker {
    type Guard = Vec<u8>;

    async fn acquire(
        &mut self,
        resource: &str,
        _counters: &Counters,
    ) -> anyhow::Result<Acquired<Vec<u8>>> {
        let options = LockOptions::new().with_lease(self.lease);
        let response = self.client.lock(resource, Some(options)).await?;
        Ok(Acquired {
            guard: response.key().to_vec(),
            token: None,
            valid_until: None,
        })
    }

    async fn release(&mut self, key: Vec<u8>) -> anyhow::Result<()> {
        self.client.unlock(key).await?;
        Ok(())
    }

    async fn close(mut self) {
        drop(self.keep_alive);
        // Revoking deletes any lock key still attached (a waiter cut short).
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.lease_revoke(self.lease))
            .await;
    }
}
