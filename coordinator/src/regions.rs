//! The coordinator's view of the regions: one gRPC channel to each region's agent,
//! and each region's health per shard, kept fresh by a probe loop and by the
//! outcome of every request.
//!
//! Health is used for one thing only: rejecting at once, with `UNAVAILABLE`, when
//! fewer than a majority of regions can serve a resource's shard (the minority side
//! of a partition). It is never used to grant: only region replies count.
//!
//! A region's agent is at a static endpoint, or found through DNS: its SRV
//! record (`_globallock-agent._tcp.<region>.<zone>`) is looked up before
//! serving, every `[discovery] interval_ms`, and soon after a call to the agent
//! fails to connect. When the record points elsewhere, the region's channel is
//! replaced (calls in flight finish on the old one). When DNS says the record is
//! gone, the region is unreachable until it is back: the number of regions, and
//! so the majority, is fixed by configuration. DNS never changes who an agent
//! must prove to be (`<region>.agent.globallock`), only the address dialled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use globallock_proto::agent::HealthRequest;
use globallock_protocol::quorum::majority;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use globallock_discovery::{Resolver, Target};
use globallock_tls::{Reloading, TlsConnector, identity};
use rustls_pki_types::ServerName;

use crate::config::{DiscoverySettings, RegionEntry};
use crate::error::{Reachability, RegionFailure};
use crate::link::AgentClient;

/// One region agent.
#[derive(Debug)]
pub struct Region {
    /// The region's name.
    pub name: String,
    /// A lazily connected channel to its agent (reconnects by itself). For a
    /// region found through DNS, replaced when its record points elsewhere.
    client: RwLock<AgentClient>,
    /// The name its agent must prove over TLS (`<region>.agent.globallock`).
    tls_name: Option<ServerName<'static>>,
    /// Where its agent is found: a static endpoint, or an SRV record.
    source: Source,
    /// For a region found through DNS: what its record said last.
    located: Mutex<Located>,
    /// Wakes the region's discovery task: a call to its agent failed.
    resolve_now: tokio::sync::Notify,
    /// Per shard (by index): did the last probe or request succeed?
    healthy: Vec<AtomicBool>,
    /// The agent's clock as the last health probe read it.
    clock: Mutex<Option<AgentClock>>,
    /// Recent health-probe round trips (for the status page).
    pub probe_rtt: crate::status_page::activity::ProbeRtt,
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
    pub fn client(&self) -> AgentClient {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The SRV record that locates this region's agent, if it is found
    /// through DNS.
    pub fn srv(&self) -> Option<&str> {
        match &self.source {
            Source::Srv(srv) => Some(srv),
            Source::Static(_) => None,
        }
    }

    /// Where this region's agent is dialled: its endpoint, or what its SRV
    /// record says now.
    pub fn location(&self) -> String {
        match &self.source {
            Source::Static(endpoint) => endpoint.clone(),
            Source::Srv(srv) => match &*self.located.lock().unwrap_or_else(|e| e.into_inner()) {
                Located::Unknown => format!("SRV {srv}: not found yet"),
                Located::Absent(why) => format!("SRV {srv}: gone ({why})"),
                Located::At(target) => format!("SRV {srv}: {target}"),
            },
        }
    }

    /// After a failed call: look the record up again soon (found through DNS
    /// only; a region whose record is gone fails every call, and its record is
    /// looked up on schedule).
    fn wake_discovery(&self) {
        let gone = matches!(
            *self.located.lock().unwrap_or_else(|e| e.into_inner()),
            Located::Absent(_)
        );
        if matches!(self.source, Source::Srv(_)) && !gone {
            self.resolve_now.notify_one();
        }
    }

    fn replace_client(&self, channel: Channel, timeout: Duration) {
        *self.client.write().unwrap_or_else(|e| e.into_inner()) =
            AgentClient::new(channel, &self.name, timeout);
    }

    /// Per shard, in [`Regions::shard_names`] order: did the last probe or
    /// request succeed?
    pub fn shard_health(&self) -> Vec<bool> {
        self.healthy
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .collect()
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

/// Where a region's agent is found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// Its endpoint URL, from configuration.
    Static(String),
    /// Its SRV record's name.
    Srv(String),
}

/// What a region's SRV record said last.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Located {
    /// Not looked up yet, or no answer yet.
    Unknown,
    /// DNS says it is gone (why): the region is unreachable.
    Absent(String),
    /// The target dialled.
    At(Target),
}

/// The soonest a failed call makes a region's record be looked up again after
/// the last such lookup.
const FAILURE_LOOKUP_GAP: Duration = Duration::from_secs(1);

/// How channels to agents are made.
#[derive(Debug, Clone)]
struct Dial {
    /// Mutual TLS to agents (`None`: plaintext, `insecure = true`).
    tls: Option<Arc<Reloading<rustls::ClientConfig>>>,
    /// Connect and keep-alive deadlines.
    timeout: Duration,
}

impl Dial {
    fn endpoint(&self, url: String) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(url)?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(self.timeout.max(Duration::from_secs(1)))
            .keep_alive_while_idle(true))
    }

    /// To a static endpoint URL.
    fn to_url(
        &self,
        url: &str,
        name: Option<&ServerName<'static>>,
    ) -> Result<Channel, tonic::transport::Error> {
        // With TLS the connector does the TLS; the channel itself speaks
        // HTTP/2 over what the connector returns.
        let plain = match url.strip_prefix("https://") {
            Some(rest) if self.tls.is_some() => format!("http://{rest}"),
            _ => url.to_owned(),
        };
        let endpoint = self.endpoint(plain)?;
        Ok(match (&self.tls, name) {
            (Some(config), Some(name)) => endpoint
                .connect_with_connector_lazy(TlsConnector::new(config.clone(), name.clone())),
            _ => endpoint.connect_lazy(),
        })
    }

    /// To a target found in DNS: its addresses in turn (plaintext: the first),
    /// the agent still proving `name`.
    fn to_target(
        &self,
        target: &Target,
        name: Option<&ServerName<'static>>,
    ) -> Result<Channel, tonic::transport::Error> {
        let first = target
            .addrs
            .first()
            .map_or_else(String::new, ToString::to_string);
        let endpoint = self.endpoint(format!("http://{first}"))?;
        Ok(match (&self.tls, name) {
            (Some(config), Some(name)) => endpoint.connect_with_connector_lazy(
                TlsConnector::to_addresses(config.clone(), name.clone(), target.addrs.clone()),
            ),
            _ => endpoint.connect_lazy(),
        })
    }

    /// To nowhere: every call fails at once, saying `why` (a region whose
    /// record is gone or not found yet).
    fn nowhere(&self, why: String) -> Channel {
        Endpoint::from_static("http://agent.invalid")
            .connect_timeout(self.timeout)
            .connect_with_connector_lazy(Nowhere(why.into()))
    }
}

/// A connector that never connects (see [`Dial::nowhere`]).
#[derive(Debug, Clone)]
struct Nowhere(Arc<str>);

impl tower_service::Service<http::Uri> for Nowhere {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        std::future::ready(Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            self.0.to_string(),
        )))
    }
}

/// All regions, in configuration order: a region's index is its identity.
#[derive(Debug)]
pub struct Regions {
    /// The regions.
    regions: Vec<Region>,
    /// How channels to agents are made.
    dial: Dial,
    /// Looks up the SRV records of regions found through DNS (`None`: every
    /// region has a static endpoint).
    resolver: Option<Resolver>,
    /// How often those records are looked up again.
    discovery_interval: Duration,
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
    /// The DNS resolver for regions found through DNS cannot be set up.
    #[error("DNS discovery")]
    Discovery(#[source] globallock_discovery::DiscoveryError),
}

impl Regions {
    /// Channels to every region (connected lazily; nothing is dialled here).
    /// With `tls`, every agent is called over mutual TLS and must prove its
    /// region (`<name>.agent.globallock`); an agent of another region is refused.
    /// A region without an endpoint (an `srv` name) has no address until
    /// [`Regions::locate_all`] looks its record up.
    pub fn new(
        entries: &[RegionEntry],
        shards: &[String],
        timeout: Duration,
        tls: Option<Arc<Reloading<rustls::ClientConfig>>>,
        discovery: &DiscoverySettings,
    ) -> Result<Self, EndpointError> {
        let dial = Dial { tls, timeout };
        let resolver = if entries.iter().any(RegionEntry::is_discovered) {
            Some(Resolver::new(&discovery.nameservers).map_err(EndpointError::Discovery)?)
        } else {
            None
        };
        let mut regions = Vec::with_capacity(entries.len());
        for entry in entries {
            let tls_name = match &dial.tls {
                Some(_) => Some(
                    identity::server_name(&identity::agent(&entry.name)).map_err(|source| {
                        EndpointError::Identity {
                            region: entry.name.clone(),
                            source,
                        }
                    })?,
                ),
                None => None,
            };
            let (source, channel) = match &entry.srv {
                Some(srv) if entry.is_discovered() => (
                    Source::Srv(srv.clone()),
                    dial.nowhere(format!("the SRV record {srv} was not found yet")),
                ),
                _ => (
                    Source::Static(entry.endpoint.clone()),
                    dial.to_url(&entry.endpoint, tls_name.as_ref())
                        .map_err(|source| EndpointError::Url {
                            region: entry.name.clone(),
                            endpoint: entry.endpoint.clone(),
                            source,
                        })?,
                ),
            };
            regions.push(Region {
                name: entry.name.clone(),
                client: RwLock::new(AgentClient::new(channel, &entry.name, timeout)),
                tls_name,
                source,
                located: Mutex::new(Located::Unknown),
                resolve_now: tokio::sync::Notify::new(),
                // Optimistic until the first probe: requests still carry deadlines.
                healthy: shards.iter().map(|_| AtomicBool::new(true)).collect(),
                clock: Mutex::new(None),
                probe_rtt: Default::default(),
            });
        }
        let shard_index = shards
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i))
            .collect();
        Ok(Self {
            regions,
            dial,
            resolver,
            discovery_interval: discovery.interval,
            shard_index,
            shard_names: shards.to_vec(),
            timeout,
        })
    }

    /// Look up the SRV record of every region found through DNS, at the same
    /// time, and dial what each says (nothing to do for static endpoints).
    pub async fn locate_all(&self) {
        let lookups = (0..self.regions.len()).map(|i| self.locate(i));
        futures::future::join_all(lookups).await;
    }

    /// Keep every DNS-found region's location fresh until the task is dropped:
    /// its record is looked up every `[discovery] interval_ms` (answers are
    /// reused within their TTL), and again soon after a call to its agent
    /// failed (at most once per second, asking the name servers afresh).
    pub async fn discover_forever(self: Arc<Self>) {
        let tasks = (0..self.regions.len())
            .filter(|&i| self.regions[i].srv().is_some())
            .map(|i| self.clone().discover_region(i));
        futures::future::join_all(tasks).await;
    }

    async fn discover_region(self: Arc<Self>, i: usize) {
        let region = &self.regions[i];
        loop {
            let failed = tokio::select! {
                () = tokio::time::sleep(self.discovery_interval) => false,
                () = region.resolve_now.notified() => true,
            };
            if failed && let (Some(resolver), Some(srv)) = (&self.resolver, region.srv()) {
                resolver.forget(srv);
            }
            self.locate(i).await;
            if failed {
                tokio::time::sleep(FAILURE_LOOKUP_GAP).await;
            }
        }
    }

    /// Look region `i`'s SRV record up and dial what it says.
    async fn locate(&self, i: usize) {
        let region = &self.regions[i];
        let (Some(resolver), Some(srv)) = (&self.resolver, region.srv()) else {
            return;
        };
        // A record not found (yet) is asked for afresh: a cached "no such
        // name" could hide its return for the negative TTL.
        let found = matches!(
            *region.located.lock().unwrap_or_else(|e| e.into_inner()),
            Located::At(_)
        );
        if !found {
            resolver.forget(srv);
        }
        let answer = resolver.lookup(srv).await;
        let name = &region.name;
        let mut located = region.located.lock().unwrap_or_else(|e| e.into_inner());
        match answer {
            Ok(targets) => {
                // One agent per region: stay with the target dialled now while
                // the record still lists it (its addresses may have changed),
                // else take the first to try.
                let current = match &*located {
                    Located::At(now) => targets
                        .iter()
                        .find(|t| t.host == now.host && t.port == now.port),
                    _ => None,
                };
                let chosen = current.unwrap_or(&targets[0]).clone();
                if *located == Located::At(chosen.clone()) {
                    count_lookup(name, "unchanged");
                    return;
                }
                match self.dial.to_target(&chosen, region.tls_name.as_ref()) {
                    Ok(channel) => {
                        region.replace_client(channel, self.timeout);
                        match &*located {
                            Located::At(previous) => info!(
                                region = %name, srv, target = %chosen, %previous,
                                "the region's SRV record points elsewhere: dialling its new target"
                            ),
                            _ => info!(
                                region = %name, srv, target = %chosen,
                                "region agent found through DNS"
                            ),
                        }
                        *located = Located::At(chosen);
                        count_lookup(name, "changed");
                    }
                    Err(error) => {
                        warn!(region = %name, srv, target = %chosen, %error, "cannot dial the region's SRV target");
                        count_lookup(name, "failed");
                    }
                }
            }
            Err(error) if error.is_absent() => {
                count_lookup(name, "absent");
                if !matches!(*located, Located::Absent(_)) {
                    warn!(
                        region = %name, %error,
                        "the region's SRV record is gone: the region is unreachable until it is \
                         back (it still counts toward the majority needed)"
                    );
                    region.replace_client(
                        self.dial
                            .nowhere(format!("region {name} is not in DNS: {error}")),
                        self.timeout,
                    );
                    *located = Located::Absent(error.to_string());
                }
                drop(located);
                for s in 0..self.shard_names.len() {
                    self.set(i, s, false);
                }
            }
            Err(error) => {
                count_lookup(name, "failed");
                warn!(
                    region = %name, %error,
                    "cannot look the region's SRV record up: keeping what it said last"
                );
            }
        }
    }

    /// How many regions there are.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// True when there are none (never, for a validated configuration).
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// `call` region `i`'s agent with `message`, under the region deadline
    /// (also sent along, so the agent can give up too); `None` when no answer
    /// came within it. For the coordinator's own background calls (aborts,
    /// repairs); calls on a request's path go through the engine's
    /// `call_region`, which also counts and traces them.
    pub(crate) async fn call_within_deadline<M, T, F, Fut>(
        &self,
        i: usize,
        message: M,
        call: F,
    ) -> Option<Result<T, tonic::Status>>
    where
        F: FnOnce(crate::link::AgentClient, tonic::Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let timeout = self.timeout();
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        tokio::time::timeout(timeout, call(self.get(i).client(), request))
            .await
            .ok()
    }

    /// Region `i`.
    pub fn get(&self, i: usize) -> &Region {
        &self.regions[i]
    }

    /// The shards' names, by index.
    pub fn shard_names(&self) -> &[String] {
        &self.shard_names
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
            Err(status) => answered(status),
        };
        if !ok {
            self.regions[i].wake_discovery();
        }
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
                self.regions[i].probe_rtt.record(sent.elapsed());
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
                self.regions[i].probe_rtt.unanswered();
                self.regions[i].wake_discovery();
                for s in 0..self.shard_index.len() {
                    self.set(i, s, false);
                }
            }
        }
    }
}

/// `globallock_discovery_lookups_total{region, outcome}`: SRV lookups of a
/// region's agent, by what they found (`unchanged`, `changed`, `absent`,
/// `failed`).
fn count_lookup(region: &str, outcome: &'static str) {
    metrics::counter!(
        "globallock_discovery_lookups_total",
        "region" => region.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

/// Whether an agent answered a call that failed with `status`. Only "could not
/// reach / could not serve" means it did not; an answer such as
/// INVALID_ARGUMENT proves it is up.
pub(crate) fn answered(status: &tonic::Status) -> bool {
    !matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}
