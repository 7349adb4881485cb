//! Redlock over three independent redis-servers, as described by Redis
//! (<https://redis.io/docs/latest/develop/use/patterns/distributed-locks/>):
//! `SET key token NX PX ttl` on every instance (here in parallel), won when a
//! majority (2 of 3) said OK with validity left (`ttl` minus the time taken
//! minus a drift allowance of 1% + 2 ms); otherwise the partial grants are
//! deleted and the client retries after a short random pause. Release is a
//! compare-and-delete script on every instance.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;
use rand::Rng;
use tokio::time::Instant;

use crate::resp::{Connection, Reply};
use crate::system::{Acquired, Counters, LockSystem, LockWorker};

/// The TTL of each grant.
const TTL: Duration = Duration::from_secs(10);

/// The longest random pause before retrying a lost vote.
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(2);

/// Deletes the key only if it still holds this holder's token.
const RELEASE_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// The redis-servers.
#[derive(Debug, Clone)]
pub struct Redlock {
    /// Every instance's address.
    instances: Vec<SocketAddr>,
}

impl Redlock {
    /// Redlock over the instances at `instances`.
    pub fn new(instances: Vec<SocketAddr>) -> Self {
        Self { instances }
    }
}

/// A worker: one connection per instance (reconnected after an error).
#[derive(Debug)]
pub struct RedlockWorker {
    /// Every instance's address.
    instances: Vec<SocketAddr>,
    /// The connection to each, `None` after an error.
    connections: Vec<Option<Connection>>,
}

/// What a release needs.
#[derive(Debug)]
pub struct Grant {
    /// The key.
    key: String,
    /// This holder's random token.
    token: String,
}

impl LockSystem for Redlock {
    type Worker = RedlockWorker;

    async fn worker(&self, _id: usize) -> anyhow::Result<RedlockWorker> {
        let mut connections = Vec::new();
        for addr in &self.instances {
            let c = Connection::connect(*addr)
                .await
                .with_context(|| format!("cannot connect to redis-server at {addr}"))?;
            connections.push(Some(c));
        }
        Ok(RedlockWorker {
            instances: self.instances.clone(),
            connections,
        })
    }
}

/// Run `args` on one instance, connecting first if needed; a failed
/// connection is dropped (and made again next time).
async fn on_instance(
    slot: &mut Option<Connection>,
    addr: SocketAddr,
    args: &[&[u8]],
) -> std::io::Result<Reply> {
    if slot.is_none() {
        *slot = Some(Connection::connect(addr).await?);
    }
    let Some(connection) = slot.as_mut() else {
        return Err(std::io::ErrorKind::NotConnected.into());
    };
    let reply = connection.command(args).await;
    if reply.is_err() {
        *slot = None;
    }
    reply
}

impl RedlockWorker {
    /// Run `args` on every instance at once.
    async fn on_all(&mut self, args: &[&[u8]]) -> Vec<std::io::Result<Reply>> {
        join_all(
            self.connections
                .iter_mut()
                .zip(&self.instances)
                .map(|(slot, addr)| on_instance(slot, *addr, args)),
        )
        .await
    }

    async fn unlock_all(&mut self, key: &str, token: &str) -> Vec<std::io::Result<Reply>> {
        self.on_all(&[
            b"EVAL",
            RELEASE_SCRIPT.as_bytes(),
            b"1",
            key.as_bytes(),
            token.as_bytes(),
        ])
        .await
    }
}

impl LockWorker for RedlockWorker {
    type Guard = Grant;

    async fn acquire(
        &mut self,
        resource: &str,
        counters: &Counters,
    ) -> anyhow::Result<Acquired<Grant>> {
        let ttl_ms = TTL.as_millis().to_string();
        let drift = TTL / 100 + Duration::from_millis(2);
        loop {
            let token = format!("{:032x}", rand::random::<u128>());
            let started = Instant::now();
            let replies = self
                .on_all(&[
                    b"SET",
                    resource.as_bytes(),
                    token.as_bytes(),
                    b"NX",
                    b"PX",
                    ttl_ms.as_bytes(),
                ])
                .await;
            let granted = replies
                .iter()
                .filter(|r| matches!(r, Ok(Reply::Status(s)) if s == "OK"))
                .count();
            let failed = replies.iter().filter(|r| r.is_err()).count();
            let validity = TTL.saturating_sub(started.elapsed() + drift);
            if granted * 2 > self.instances.len() && !validity.is_zero() {
                return Ok(Acquired {
                    guard: Grant {
                        key: resource.to_owned(),
                        token,
                    },
                    token: None,
                    valid_until: Some((started + validity).into_std()),
                });
            }
            // Lost (held, or a split vote): take back what was granted.
            self.unlock_all(resource, &token).await;
            if failed * 2 > self.instances.len() {
                let errors: Vec<String> = replies
                    .into_iter()
                    .filter_map(|r| r.err().map(|e| e.to_string()))
                    .collect();
                anyhow::bail!("redis-servers unreachable: {}", errors.join("; "));
            }
            counters.retry();
            let pause = rand::rng().random_range(Duration::ZERO..=RETRY_PAUSE_MAX);
            tokio::time::sleep(pause).await;
        }
    }

    async fn release(&mut self, grant: Grant) -> anyhow::Result<()> {
        let replies = self.unlock_all(&grant.key, &grant.token).await;
        let deleted = replies
            .iter()
            .filter(|r| matches!(r, Ok(Reply::Integer(1))))
            .count();
        if deleted * 2 <= self.instances.len() {
            anyhow::bail!(
                "release of {} removed the grant on {deleted} of {} instances: {replies:?}",
                grant.key,
                self.instances.len()
            );
        }
        Ok(())
    }

    async fn close(self) {}
}
