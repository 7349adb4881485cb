//! globallock through its Rust client, over TLS with the dev client identity.
//!
//! A worker acquires with a server-side wait (`wait_ms`), so a held resource is
//! waited for by the coordinator, as `lockctl acquire --wait` does; a wait that
//! runs out, or a refusal for acquiring too fast (the per-principal rate
//! limit: every worker is the same principal), is retried and counted.

use std::time::Duration;

use globallock_client::{Client, ClientError, ClientTls};

use crate::system::{Acquired, Counters, LockSystem, LockWorker};

/// The TTL asked for: far longer than a cycle holds the lock.
const TTL: Duration = Duration::from_secs(10);

/// The server-side wait per request (within the client's single-request slice).
const WAIT: Duration = Duration::from_secs(20);

/// One coordinator, shared by the workers (one connection, as one process
/// with one client would have).
#[derive(Debug)]
pub struct Globallock {
    /// The client.
    client: Client,
}

impl Globallock {
    /// A client of the coordinator at `url` (`https://...`) trusting `tls`.
    pub fn connect(url: &str, tls: &ClientTls) -> anyhow::Result<Self> {
        Ok(Self {
            client: Client::connect_tls([url], tls)?,
        })
    }
}

/// A worker: the shared client and an owner name of its own.
#[derive(Debug)]
pub struct GloballockWorker {
    /// The client.
    client: Client,
    /// `bench-w<id>`.
    owner: String,
}

impl LockSystem for Globallock {
    type Worker = GloballockWorker;

    async fn worker(&self, id: usize) -> anyhow::Result<GloballockWorker> {
        Ok(GloballockWorker {
            client: self.client.clone(),
            owner: format!("bench-w{id}"),
        })
    }
}

impl LockWorker for GloballockWorker {
    type Guard = String;

    async fn acquire(
        &mut self,
        resource: &str,
        counters: &Counters,
    ) -> anyhow::Result<Acquired<String>> {
        loop {
            match self.client.acquire(resource, &self.owner, TTL, WAIT).await {
                Ok(lock) => {
                    return Ok(Acquired {
                        valid_until: Some(lock.valid_until()),
                        token: Some(lock.fencing_token),
                        guard: lock.lock_id,
                    });
                }
                // The wait ran out (or the resource was contended): again.
                Err(ClientError::Held(_)) => counters.retry(),
                Err(e @ ClientError::RateLimited(_)) => {
                    counters.rate_limited();
                    let pause = e.retry_after().unwrap_or(Duration::from_millis(10));
                    tokio::time::sleep(pause.max(Duration::from_millis(1))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn release(&mut self, lock_id: String) -> anyhow::Result<()> {
        self.client.release(&lock_id).await?;
        Ok(())
    }

    async fn close(self) {}
}
