//! The coordinator's view of the regions: one gRPC channel to each region's agent,
//! and each region's health per shard, kept fresh by a probe loop and by the
//! outcome of every request.
//!
//! Health is used for one thing only: rejecting at once, with `UNAVAILABLE`, when
//! fewer than a majority of regions can serve a resource's shard (the minority side
//! of a partition). It is never used to grant: only region replies count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use globallock_proto::agent::HealthRequest;
use globallock_proto::agent::region_agent_client::RegionAgentClient;
use globallock_protocol::quorum::majority;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use globallock_tls::{Reloading, TlsConnector, identity};

use crate::config::RegionEntry;
use crate::error::{Reachability, RegionFailure};

/// One region agent.
#[derive(Debug)]
pub struct Region {
    /// The region's name.
    pub name: String,
    /// A lazily connected channel to its agent (reconnects by itself).
    client: RegionAgentClient<Channel>,
    /// Per shard (by index): did the last probe or request succeed?
    healthy: Vec<AtomicBool>,
    /// The agent's clock as the last health probe read it.
    clock: Mutex<Option<AgentClock>>,
}

/// An agent's wall clock, read by a probe: it said `unix_ms` at some moment
/// after `sent` (this coordinator's monotonic clock).
#[derive(Debug, Clone, Copy)]
struct AgentClock {
    unix_ms: u64,
    sent: Instant,
}

impl Region {
    /// A client for this region's agent (cheap to clone).
    pub fn client(&self) -> RegionAgentClient<Channel> {
        self.client.clone()
    }

    /// `after` from now, on this region's agent's wall clock (ms since the Unix
    /// epoch), as the last probe read that clock; 0 before any probe. Never
    /// earlier than the true moment: the probe's reading is taken as of when it
    /// was sent, so its round trip only adds slack. This coordinator's own wall
    /// clock plays no part.
    pub fn agent_time_in(&self, after: Duration) -> u64 {
        let clock = *self.clock.lock().unwrap_or_else(|e| e.into_inner());
        clock.map_or(0, |c| {
            let since = c.sent.elapsed() + after;
            c.unix_ms
                .saturating_add(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        })
    }
}

/// All regions, in configuration order: a region's index is its identity.
#[derive(Debug)]
pub struct Regions {
    /// The regions.
    regions: Vec<Region>,
    /// Shard name → index into each region's `healthy`.
    shard_index: HashMap<String, usize>,
    /// Shard names by index: what logs and metrics call a shard (`shard-0`,
    /// like the agents do), never its index.
    shard_names: Vec<String>,
    /// Deadline of each call to a region.
    timeout: Duration,
}

/// The configuration could not produce a channel.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The URL is unusable.
    #[error("region {region}: bad endpoint {endpoint:?}")]
    Url {
        /// The region.
        region: String,
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The region's name cannot be checked in a certificate.
    #[error("region {region}: its agent's identity cannot be checked")]
    Identity {
        /// The region.
        region: String,
        /// Why.
        #[source]
        source: globallock_tls::TlsError,
    },
}

impl Regions {
    /// Channels to every region (connected lazily; nothing is dialled here).
    /// With `tls`, every agent is called over mutual TLS and must prove its
    /// region (`<name>.agent.globallock`); an agent of another region is refused.
    pub fn new(
        entries: &[RegionEntry],
        shards: &[String],
        timeout: Duration,
        tls: Option<Arc<Reloading<rustls::ClientConfig>>>,
    ) -> Result<Self, EndpointError> {
        let mut regions = Vec::with_capacity(entries.len());
        for entry in entries {
            // With TLS the connector does the TLS; the channel itself speaks
            // HTTP/2 over what the connector returns.
            let url = match entry.endpoint.strip_prefix("https://") {
                Some(rest) if tls.is_some() => format!("http://{rest}"),
                _ => entry.endpoint.clone(),
            };
            let endpoint = Endpoint::from_shared(url)
                .map_err(|source| EndpointError::Url {
                    region: entry.name.clone(),
                    endpoint: entry.endpoint.clone(),
                    source,
                })?
                .connect_timeout(timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(timeout.max(Duration::from_secs(1)))
                .keep_alive_while_idle(true);
            let channel = match &tls {
                Some(config) => {
                    let name =
                        identity::server_name(&identity::agent(&entry.name)).map_err(|source| {
                            EndpointError::Identity {
                                region: entry.name.clone(),
                                source,
                            }
                        })?;
                    endpoint.connect_with_connector_lazy(TlsConnector::new(config.clone(), name))
                }
                None => endpoint.connect_lazy(),
            };
            regions.push(Region {
                name: entry.name.clone(),
                client: RegionAgentClient::new(channel),
                // Optimistic until the first probe: requests still carry deadlines.
                healthy: shards.iter().map(|_| AtomicBool::new(true)).collect(),
                clock: Mutex::new(None),
            });
        }
        let shard_index = shards
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i))
            .collect();
        Ok(Self {
            regions,
            shard_index,
            shard_names: shards.to_vec(),
            timeout,
        })
    }

    /// How many regions there are.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// True when there are none (never, for a validated configuration).
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Region `i`.
    pub fn get(&self, i: usize) -> &Region {
        &self.regions[i]
    }

    /// Per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Names of the regions at `indices`.
    pub fn names(&self, indices: &[usize]) -> Vec<String> {
        indices
            .iter()
            .map(|&i| self.regions[i].name.clone())
            .collect()
    }

    /// Record the outcome of a request to region `i` for `shard`.
    pub fn observe(&self, i: usize, shard: &str, outcome: Result<(), &tonic::Status>) {
        let Some(&s) = self.shard_index.get(shard) else {
            return;
        };
        let ok = match outcome {
            Ok(()) => true,
            // Only "could not reach / could not serve" marks a region down; an
            // answer such as INVALID_ARGUMENT proves it is up.
            Err(status) => !matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
            ),
        };
        self.set(i, s, ok);
    }

    fn set(&self, region: usize, shard: usize, ok: bool) {
        let name = &self.regions[region].name;
        let shard_name = &self.shard_names[shard];
        metrics::gauge!("globallock_region_reachable", "region" => name.clone(), "shard" => shard_name.clone())
            .set(if ok { 1.0 } else { 0.0 });
        let was = self.regions[region].healthy[shard].swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                info!(region = %name, shard = %shard_name, "region reachable again");
            } else {
                warn!(region = %name, shard = %shard_name, "region unreachable");
            }
        }
    }

    /// `Err` (naming reachable and unreachable regions) when fewer than a majority
    /// of regions are healthy for `shard`: the caller must reject at once.
    pub fn require_majority(&self, shard: &str) -> Result<(), Reachability> {
        let s = self.shard_index.get(shard).copied().unwrap_or(0);
        let mut reach = Reachability::default();
        for region in &self.regions {
            if region.healthy[s].load(Ordering::Relaxed) {
                reach.reachable.push(region.name.clone());
            } else {
                reach.unreachable.push(RegionFailure {
                    region: region.name.clone(),
                    status: tonic::Status::unavailable("failing health checks"),
                });
            }
        }
        if reach.reachable.len() >= majority(self.regions.len()) {
            Ok(())
        } else {
            Err(reach)
        }
    }

    /// Ready when, for every shard, a majority of regions is healthy. `Err` names
    /// the regions that are not healthy for every shard.
    pub fn readiness(&self) -> Result<Reachability, Reachability> {
        let mut reach = Reachability::default();
        for region in &self.regions {
            if region.healthy.iter().all(|h| h.load(Ordering::Relaxed)) {
                reach.reachable.push(region.name.clone());
            } else {
                reach.unreachable.push(RegionFailure {
                    region: region.name.clone(),
                    status: tonic::Status::unavailable("failing health checks"),
                });
            }
        }
        let every_shard_ok = self
            .shard_index
            .keys()
            .all(|shard| self.require_majority(shard).is_ok());
        if every_shard_ok {
            Ok(reach)
        } else {
            Err(reach)
        }
    }

    /// Probe every region every `interval` (each probe bounded by `timeout`) until
    /// the task is dropped.
    pub async fn probe_forever(self: Arc<Self>, interval: Duration, timeout: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.probe_all(timeout).await;
        }
    }

    /// Probe every region once, at the same time (each bounded by `timeout`).
    pub async fn probe_all(&self, timeout: Duration) {
        let probes = (0..self.regions.len()).map(|i| self.probe(i, timeout));
        futures::future::join_all(probes).await;
    }

    async fn probe(&self, i: usize, timeout: Duration) {
        let mut client = self.regions[i].client();
        let mut request = tonic::Request::new(HealthRequest {});
        request.set_timeout(timeout);
        let sent = Instant::now();
        let answer = tokio::time::timeout(timeout, client.health(request)).await;
        match answer {
            Ok(Ok(response)) if response.get_ref().region != self.regions[i].name => {
                warn!(
                    region = %self.regions[i].name,
                    answered_as = %response.get_ref().region,
                    "the agent at this region's endpoint serves another region: counted as down"
                );
                for s in 0..self.shard_index.len() {
                    self.set(i, s, false);
                }
            }
            Ok(Ok(response)) => {
                let response = response.into_inner();
                if response.unix_ms > 0 {
                    *self.regions[i]
                        .clock
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(AgentClock {
                        unix_ms: response.unix_ms,
                        sent,
                    });
                }
                for shard in response.shards {
                    if let Some(&s) = self.shard_index.get(&shard.shard) {
                        self.set(i, s, shard.healthy);
                    }
                }
            }
            _ => {
                for s in 0..self.shard_index.len() {
                    self.set(i, s, false);
                }
            }
        }
    }
}
