//! The test cluster: three regions of real etcd processes, each with its region
//! agent, and one or more coordinators, all on free loopback ports.
//!
//! Agents and coordinators run in this process (so a test can stop and restart
//! them); etcd members are real child processes, killed when the cluster drops,
//! panics included.

pub mod chaos;
pub mod dns;
pub mod history;
pub mod http;
pub mod oracle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use globallock_localcluster::EtcdCluster;
use globallock_proto::v1::lock_service_client::LockServiceClient;
use globallock_protocol::clock::SystemClock;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Region names used by every test cluster.
pub const REGIONS: [&str; 3] = ["region-a", "region-b", "region-c"];

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Shards per region (each its own etcd cluster).
    pub shards: usize,
    /// Members per shard cluster (1, or 3 where Raft behaviour is the point).
    pub members: usize,
    /// Coordinators.
    pub coordinators: usize,
    /// Coordinator → agent deadline.
    pub region_timeout_ms: u64,
    /// Lease bucket granularity.
    pub lease_granularity_ms: u64,
    /// A region whose shard clusters get three members instead of `members`.
    pub three_member_region: Option<usize>,
    /// Longest `wait_ms` the coordinators accept.
    pub max_wait_ms: u64,
    /// Where coordinators and agents write audit records (absent: no audit).
    pub audit_dir: Option<std::path::PathBuf>,
    /// How long an amnesiac shard stays silent. Agents then accept TTLs up to
    /// about this long (less the drift allowance and a lease granularity) and
    /// tokens up to half of it above their clock.
    pub quarantine_ms: u64,
    /// Route every coordinator → agent link through its own fault proxy.
    pub proxied: bool,
    /// Route every agent → etcd client link through its own fault proxy.
    pub proxy_etcd: bool,
    /// Put a fault proxy in front of every etcd member's peer port (inbound Raft
    /// traffic), for the three-member region.
    pub proxy_peers: bool,
    /// How late after its deadline an agent still takes a proposal.
    pub late_proposal_slack_ms: u64,
    /// Every door and hop over TLS, with a CA and certificates made for the
    /// cluster (`false`: `insecure = true` everywhere).
    pub tls: bool,
    /// The coordinators' `[access]` (`None`: `open_access = true`).
    pub access: Option<coordinator::config::AccessEntry>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            shards: 1,
            members: 1,
            coordinators: 1,
            region_timeout_ms: 2_000,
            lease_granularity_ms: 250,
            three_member_region: None,
            max_wait_ms: 60_000,
            audit_dir: None,
            quarantine_ms: 310_000,
            proxied: false,
            proxy_etcd: false,
            proxy_peers: false,
            late_proposal_slack_ms: 1_000,
            // Secure by default: every door and hop over TLS (etcd included).
            tls: true,
            access: None,
        }
    }
}

/// An in-process server task and the way to stop it.
#[derive(Debug)]
struct ServerTask {
    /// Sends the graceful shutdown.
    stop: Option<oneshot::Sender<()>>,
    /// The serving task.
    task: JoinHandle<()>,
}

impl ServerTask {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One region: its shards' etcd clusters and its agent.
#[derive(Debug)]
pub struct RegionNode {
    /// The region's name.
    pub name: String,
    /// One etcd cluster per shard.
    pub etcd: Vec<EtcdCluster>,
    /// The agent's address (kept across restarts).
    pub agent_addr: SocketAddr,
    /// The running agent.
    agent: Option<ServerTask>,
    /// Whether the agent treats marker-less shards as new (first start only).
    bootstrap: bool,
    /// The agent's clock (faults can be injected into it).
    pub clock: Arc<globallock_protocol::clock::SkewedClock>,
}

/// A running test cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The regions.
    pub regions: Vec<RegionNode>,
    /// Coordinator gRPC addresses.
    pub coordinator_addrs: Vec<SocketAddr>,
    /// Coordinator REST addresses (same index).
    pub rest_addrs: Vec<SocketAddr>,
    /// Coordinator `/metrics` addresses (same index).
    pub metrics_addrs: Vec<SocketAddr>,
    /// Running coordinators.
    coordinators: Vec<ServerTask>,
    /// With `proxied`: the link from coordinator `c` to region `r` is `links[c][r]`.
    links: Vec<Vec<globallock_localcluster::FaultProxy>>,
    /// With `proxy_peers`: inbound Raft traffic of region `r`, shard `s`, member `m`.
    peer_links: std::collections::HashMap<(usize, usize), Vec<globallock_localcluster::FaultProxy>>,
    /// With `proxy_etcd`: region `r`'s agent reaches shard `s` through
    /// `etcd_links[r][s]` (one proxy per member).
    etcd_links: Vec<Vec<Vec<globallock_localcluster::FaultProxy>>>,
    /// Shard names.
    shards: Vec<String>,
    /// The ring's epoch (raised by [`Cluster::change_ring`]).
    ring_epoch: u64,
    /// What was asked for.
    options: ClusterOptions,
    /// The certificates, with `tls`.
    pub tls: Option<globallock_localcluster::ClusterTls>,
    /// Data and logs. Declared last, so dropped last: the agents and etcd
    /// processes above stop before it is removed (an agent still running
    /// rewrote its watermark file and so re-created part of the removed
    /// directory, which then stayed in /tmp).
    dir: tempfile::TempDir,
}

/// Install a test log subscriber once (honours RUST_LOG; quiet by default).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

impl Cluster {
    /// Start three regions and the coordinators. Must run on a multi-thread
    /// runtime: etcd start-up blocks the test's own thread (which also owns the
    /// etcd processes) while agents and coordinators run on the workers.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        init_logs();
        let dir = tempfile::tempdir()?;
        let tls = if options.tls {
            Some(globallock_localcluster::ClusterTls::create(
                &dir.path().join("tls"),
            )?)
        } else {
            None
        };
        let shards: Vec<String> = (0..options.shards).map(|i| format!("shard-{i}")).collect();
        let mut regions = Vec::new();
        let mut peer_links = std::collections::HashMap::new();
        let etcd_tls = |r: usize| tls.as_ref().map(|t| t.etcd[r].members.clone());
        for (r, name) in REGIONS.into_iter().enumerate() {
            let members = if options.three_member_region == Some(r) {
                3
            } else {
                options.members
            };
            let mut etcd = Vec::new();
            for (s, shard) in shards.iter().enumerate() {
                let cluster_name = format!("{name}-{shard}");
                let data = dir.path().join(name);
                if options.proxy_peers && members > 1 {
                    let mut ports = Vec::new();
                    let mut proxies = Vec::new();
                    for _ in 0..members {
                        let peer = globallock_localcluster::free_port()?;
                        let proxy = globallock_localcluster::FaultProxy::start(SocketAddr::from((
                            [127, 0, 0, 1],
                            peer,
                        )))
                        .await?;
                        ports.push(globallock_localcluster::MemberPorts {
                            client: globallock_localcluster::free_port()?,
                            peer,
                            advertised_peer: proxy.addr().port(),
                        });
                        proxies.push(proxy);
                    }
                    peer_links.insert((r, s), proxies);
                    etcd.push(EtcdCluster::start_secured(
                        &cluster_name,
                        &ports,
                        &data,
                        etcd_tls(r),
                    )?);
                } else {
                    etcd.push(match etcd_tls(r) {
                        Some(files) => {
                            EtcdCluster::start_tls(&cluster_name, members, &data, files)?
                        }
                        None => EtcdCluster::start(&cluster_name, members, &data)?,
                    });
                }
            }
            let agent_addr =
                SocketAddr::from(([127, 0, 0, 1], globallock_localcluster::free_port()?));
            regions.push(RegionNode {
                name: name.to_owned(),
                etcd,
                agent_addr,
                agent: None,
                bootstrap: true,
                clock: globallock_protocol::clock::SkewedClock::new(),
            });
        }
        let mut cluster = Self {
            tls,
            dir,
            regions,
            coordinator_addrs: Vec::new(),
            rest_addrs: Vec::new(),
            metrics_addrs: Vec::new(),
            links: Vec::new(),
            etcd_links: Vec::new(),
            peer_links,
            coordinators: Vec::new(),
            shards,
            ring_epoch: 0,
            options,
        };
        if cluster.options.proxy_etcd {
            for region in &cluster.regions {
                let mut shards = Vec::new();
                for etcd in &region.etcd {
                    let mut members = Vec::new();
                    for endpoint in etcd.endpoints() {
                        let addr: SocketAddr = endpoint
                            .split_once("://")
                            .map_or(endpoint.as_str(), |(_, a)| a)
                            .parse()?;
                        members.push(globallock_localcluster::FaultProxy::start(addr).await?);
                    }
                    shards.push(members);
                }
                cluster.etcd_links.push(shards);
            }
        }
        for r in 0..cluster.regions.len() {
            cluster.start_agent(r).await?;
            // Restarts are restarts: a shard without its marker is then amnesiac.
            cluster.regions[r].bootstrap = false;
        }
        for _ in 0..cluster.options.coordinators {
            cluster.start_coordinator().await?;
        }
        Ok(cluster)
    }

    /// The longest TTL the agents' quarantine covers (see the agent's
    /// validation: quarantine ≥ max TTL × 1.01 + lease granularity).
    fn agent_max_ttl_ms(&self) -> u64 {
        (self
            .options
            .quarantine_ms
            .saturating_sub(self.options.lease_granularity_ms)
            * 100)
            / 101
    }

    fn agent_config(&self, r: usize) -> region_agent::AgentConfig {
        let region = &self.regions[r];
        region_agent::AgentConfig {
            region: region.name.clone(),
            listen: region.agent_addr,
            metrics_listen: None,
            otlp_endpoint: None,
            audit_log: self
                .options
                .audit_dir
                .as_ref()
                .map(|d| d.join(format!("{}.jsonl", region.name))),
            // In-process services run on the test's own runtime.
            worker_threads: None,
            key_prefix: "/globallock/".into(),
            request_timeout_ms: 1_000,
            lease_granularity_ms: self.options.lease_granularity_ms,
            tombstone_ttl_ms: 60_000,
            quarantine_ms: self.options.quarantine_ms,
            max_ttl_ms: self.agent_max_ttl_ms(),
            drift_rate: 0.01,
            max_token_lead_ms: self.options.quarantine_ms / 2,
            late_proposal_slack_ms: self.options.late_proposal_slack_ms,
            state_dir: Some(self.dir.path().join(&region.name).join("agent-state")),
            bootstrap: self.regions[r].bootstrap,
            compaction_interval_s: 0,
            compaction_keep_revisions: 10_000,
            mark_sweep_interval_s: 0,
            ring_vnodes: 160,
            ring_epoch: self.ring_epoch,
            tls: self.tls.as_ref().map(|t| t.agents[r].clone()),
            insecure: self.tls.is_none(),
            etcd_tls: self.tls.as_ref().map(|t| {
                let etcd = &t.etcd[r];
                globallock_etcd::EtcdTls {
                    ca: etcd.agent.ca.clone(),
                    cert: etcd.agent.cert.clone(),
                    key: etcd.agent.key.clone(),
                    server_name: Some(etcd.server_name.clone()),
                }
            }),
            etcd_insecure: self.tls.is_none(),
            shards: self
                .shards
                .iter()
                .zip(&region.etcd)
                .enumerate()
                .map(|(s, (name, etcd))| region_agent::config::ShardEntry {
                    name: name.clone(),
                    endpoints: match self.etcd_links.get(r) {
                        Some(shards) => shards[s]
                            .iter()
                            .map(|p| format!("{}://{}", self.scheme(), p.addr()))
                            .collect(),
                        None => etcd.endpoints(),
                    },
                })
                .collect(),
        }
    }

    /// The coordinator configuration this cluster uses (listen address aside).
    pub fn coordinator_config(&self, listen: SocketAddr) -> coordinator::CoordinatorConfig {
        let endpoints = self
            .regions
            .iter()
            .map(|r| format!("{}://{}", self.scheme(), r.agent_addr))
            .collect();
        self.coordinator_config_via(listen, endpoints)
    }

    /// The coordinator configuration, reaching region `i` at `endpoints[i]`.
    fn coordinator_config_via(
        &self,
        listen: SocketAddr,
        endpoints: Vec<String>,
    ) -> coordinator::CoordinatorConfig {
        coordinator::CoordinatorConfig {
            listen,
            rest_listen: None,
            metrics_listen: None,
            otlp_endpoint: None,
            audit_log: self
                .options
                .audit_dir
                .as_ref()
                .map(|d| d.join("coordinator.jsonl")),
            worker_threads: None,
            acquire_rate_per_owner: 1_000.0,
            acquire_burst_per_owner: 2_000.0,
            regions: self
                .regions
                .iter()
                .zip(endpoints)
                .map(|(r, endpoint)| coordinator::config::RegionEntry {
                    name: r.name.clone(),
                    endpoint,
                    srv: None,
                })
                .collect(),
            discovery: None,
            shards: self.shards.clone(),
            ring_vnodes: 160,
            ring_epoch: self.ring_epoch,
            region_timeout_ms: self.options.region_timeout_ms,
            health_interval_ms: 200,
            health_timeout_ms: 150,
            min_ttl_ms: 1_000,
            // The service's default bound, or less if the agents accept less
            // (their quarantine must cover every TTL).
            max_ttl_ms: self.agent_max_ttl_ms().min(300_000),
            max_wait_ms: self.options.max_wait_ms,
            drift_rate: 0.01,
            drift_margin_ms: 10,
            tls: self.tls.as_ref().map(|t| t.coordinator.clone()),
            insecure: self.tls.is_none(),
            access: self.options.access.clone(),
            open_access: self.options.access.is_none(),
        }
    }

    /// One HTTP request to `addr` (a REST or `/metrics` door of this cluster):
    /// over TLS as the cluster's client identity with `tls`, else plaintext.
    pub async fn http(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> std::io::Result<http::HttpResponse> {
        match &self.tls {
            Some(tls) => {
                http::https_request(
                    addr,
                    &tls.ca,
                    Some(&tls.client),
                    method,
                    path,
                    headers,
                    body,
                )
                .await
            }
            None => http::request(addr, method, path, headers, body).await,
        }
    }

    /// [`Cluster::http`] with a JSON body.
    pub async fn send_json(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> std::io::Result<http::HttpResponse> {
        self.http(addr, method, path, &[], Some(&body.to_string()))
            .await
    }

    /// The Rust client library aimed at coordinator `i` (over TLS as the
    /// cluster's client identity with `tls`).
    pub fn library_client(&self, i: usize) -> anyhow::Result<globallock_client::Client> {
        let endpoint = format!("{}://{}", self.scheme(), self.coordinator_addrs[i]);
        Ok(match &self.tls {
            Some(tls) => globallock_client::Client::connect_tls(
                [endpoint],
                &globallock_client::ClientTls {
                    ca: tls.ca.clone(),
                    identity: Some((tls.client.cert.clone(), tls.client.key.clone())),
                },
            )?,
            None => globallock_client::Client::connect([endpoint])?,
        })
    }

    /// Point a `lockctl` command at coordinator 0 (`GLOBALLOCK_ENDPOINT`), and
    /// with `tls` make it trust the cluster's CA and show its client identity,
    /// as it does `make dev`'s (`GLOBALLOCK_CA`, `_CERT`, `_KEY`).
    pub fn lockctl_env(&self, command: &mut std::process::Command) {
        command.env(
            "GLOBALLOCK_ENDPOINT",
            format!("{}://{}", self.scheme(), self.coordinator_addrs[0]),
        );
        if let Some(tls) = &self.tls {
            command
                .env("GLOBALLOCK_CA", &tls.ca)
                .env("GLOBALLOCK_CERT", &tls.client.cert)
                .env("GLOBALLOCK_KEY", &tls.client.key);
        }
    }

    /// `https` with `tls`, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// A channel to region `r`'s agent, as a coordinator would call it (over
    /// mutual TLS with a coordinator's certificate, with `tls`).
    pub async fn agent_channel(&self, r: usize) -> anyhow::Result<Channel> {
        let addr = self.regions[r].agent_addr;
        Ok(match &self.tls {
            Some(tls) => tls.agent_channel(r, addr)?,
            None => Channel::from_shared(format!("http://{addr}"))?.connect_lazy(),
        })
    }

    /// A channel to coordinator `i`'s gRPC door, as the cluster's client (over
    /// TLS with the client identity, with `tls`).
    pub fn coordinator_channel(&self, i: usize) -> anyhow::Result<Channel> {
        let addr = self.coordinator_addrs[i];
        Ok(match &self.tls {
            Some(tls) => tls.coordinator_channel(addr)?,
            None => Channel::from_shared(format!("http://{addr}"))?.connect_lazy(),
        })
    }

    async fn start_agent(&mut self, r: usize) -> anyhow::Result<()> {
        let config = self.agent_config(r).validate()?;
        let listener = bind_retrying(self.regions[r].agent_addr).await?;
        let clock: globallock_protocol::clock::SharedClock = self.regions[r].clock.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let listeners = region_agent::AgentListeners {
                api: listener,
                metrics: None,
            };
            if let Err(error) = region_agent::serve(config, listeners, clock, shutdown).await {
                tracing::error!(%error, "agent failed");
            }
        });
        self.regions[r].agent = Some(ServerTask {
            stop: Some(stop),
            task,
        });
        Ok(())
    }

    /// Start one more coordinator; returns its index.
    pub async fn start_coordinator(&mut self) -> anyhow::Result<usize> {
        self.start_coordinator_with_clock(SystemClock::shared())
            .await
    }

    /// Start one more coordinator reading time from `clock`; returns its index.
    pub async fn start_coordinator_with_clock(
        &mut self,
        clock: globallock_protocol::clock::SharedClock,
    ) -> anyhow::Result<usize> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let rest = TcpListener::bind("127.0.0.1:0").await?;
        let metrics = TcpListener::bind("127.0.0.1:0").await?;
        let mut endpoints = Vec::new();
        if self.options.proxied {
            let mut links = Vec::new();
            for region in &self.regions {
                let proxy = globallock_localcluster::FaultProxy::start(region.agent_addr).await?;
                endpoints.push(format!("{}://{}", self.scheme(), proxy.addr()));
                links.push(proxy);
            }
            self.links.push(links);
        } else {
            endpoints = self
                .regions
                .iter()
                .map(|r| format!("{}://{}", self.scheme(), r.agent_addr))
                .collect();
            self.links.push(Vec::new());
        }
        self.serve_coordinator(listener, rest, metrics, endpoints, clock)
            .await
    }

    /// Start one more coordinator that reaches region `i` at `endpoints[i]`
    /// (no fault proxies); returns its index.
    pub async fn start_coordinator_via(&mut self, endpoints: Vec<String>) -> anyhow::Result<usize> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let rest = TcpListener::bind("127.0.0.1:0").await?;
        let metrics = TcpListener::bind("127.0.0.1:0").await?;
        self.links.push(Vec::new());
        self.serve_coordinator(listener, rest, metrics, endpoints, SystemClock::shared())
            .await
    }

    /// Start one more coordinator that finds every region's agent through DNS
    /// (`discovery`: the zone of the `_globallock-agent._tcp.<region>.<zone>`
    /// records, the name server to ask, how often); returns its index.
    pub async fn start_coordinator_discovering(
        &mut self,
        discovery: coordinator::config::DiscoveryEntry,
    ) -> anyhow::Result<usize> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let rest = TcpListener::bind("127.0.0.1:0").await?;
        let metrics = TcpListener::bind("127.0.0.1:0").await?;
        self.links.push(Vec::new());
        let endpoints = vec![String::new(); self.regions.len()];
        self.serve_coordinator_with(
            listener,
            rest,
            metrics,
            endpoints,
            Some(discovery),
            SystemClock::shared(),
        )
        .await
    }

    async fn serve_coordinator(
        &mut self,
        listener: TcpListener,
        rest: TcpListener,
        metrics: TcpListener,
        endpoints: Vec<String>,
        clock: globallock_protocol::clock::SharedClock,
    ) -> anyhow::Result<usize> {
        self.serve_coordinator_with(listener, rest, metrics, endpoints, None, clock)
            .await
    }

    async fn serve_coordinator_with(
        &mut self,
        listener: TcpListener,
        rest: TcpListener,
        metrics: TcpListener,
        endpoints: Vec<String>,
        discovery: Option<coordinator::config::DiscoveryEntry>,
        clock: globallock_protocol::clock::SharedClock,
    ) -> anyhow::Result<usize> {
        let addr = listener.local_addr()?;
        self.rest_addrs.push(rest.local_addr()?);
        self.metrics_addrs.push(metrics.local_addr()?);
        let mut config = self.coordinator_config_via(addr, endpoints);
        config.discovery = discovery;
        let config = config.validate()?;
        let listeners = coordinator::Listeners {
            grpc: listener,
            rest: Some(rest),
            metrics: Some(metrics),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = coordinator::serve(config, listeners, clock, shutdown).await {
                tracing::error!(%error, "coordinator failed");
            }
        });
        self.coordinator_addrs.push(addr);
        self.coordinators.push(ServerTask {
            stop: Some(stop),
            task,
        });
        Ok(self.coordinators.len() - 1)
    }

    /// A gRPC client of coordinator `i`.
    pub async fn client(&self, i: usize) -> anyhow::Result<LockServiceClient<Channel>> {
        let channel = self.coordinator_channel(i)?;
        let mut client = LockServiceClient::new(channel);
        // Until the coordinator serves (it probes the regions first).
        for _ in 0..100 {
            let probe = client
                .describe(globallock_proto::v1::DescribeRequest {
                    resource: "harness/ready".into(),
                })
                .await;
            if probe.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(client)
    }

    /// Stop region `r`'s agent only (gracefully); its etcd members keep running.
    pub async fn stop_agent(&mut self, r: usize) {
        if let Some(agent) = self.regions[r].agent.take() {
            agent.stop().await;
        }
    }

    /// Stop region `r` entirely: its agent and every etcd member (SIGKILL).
    pub async fn stop_region(&mut self, r: usize) {
        if let Some(agent) = self.regions[r].agent.take() {
            agent.stop().await;
        }
        for etcd in &mut self.regions[r].etcd {
            etcd.kill();
        }
    }

    /// Wipe region `r`'s etcd data (every shard) and restart it empty: the
    /// amnesiac region of the fault table. Its agent restarts too.
    pub async fn wipe_region(&mut self, r: usize) -> anyhow::Result<()> {
        self.stop_region(r).await;
        for etcd in &mut self.regions[r].etcd {
            for m in 0..etcd.members().len() {
                etcd.wipe_member(m)?;
            }
        }
        self.restart_region(r).await
    }

    /// Wipe region `r`'s etcd data under its running agent and restart etcd empty.
    pub fn wipe_etcd(&mut self, r: usize) -> anyhow::Result<()> {
        for etcd in &mut self.regions[r].etcd {
            for m in 0..etcd.members().len() {
                etcd.wipe_member(m)?;
            }
            etcd.restart()?;
        }
        Ok(())
    }

    /// Restart region `r` on the same ports and data.
    pub async fn restart_region(&mut self, r: usize) -> anyhow::Result<()> {
        for etcd in &mut self.regions[r].etcd {
            etcd.restart()?;
        }
        self.start_agent(r).await
    }

    /// Change the ring to `shards` under a new epoch, as an operator would: start
    /// each new shard's etcd in every region, stop the etcd of removed shards, and
    /// restart every agent on the new ring. Coordinators started afterwards use
    /// it; running ones keep the old ring (and agents refuse their proposals).
    pub async fn change_ring(&mut self, shards: &[&str]) -> anyhow::Result<()> {
        assert!(
            !self.options.proxy_etcd && !self.options.proxy_peers,
            "ring changes are not combined with etcd proxies"
        );
        self.ring_epoch += 1;
        let shards: Vec<String> = shards.iter().map(|s| (*s).to_owned()).collect();
        for r in 0..self.regions.len() {
            if let Some(agent) = self.regions[r].agent.take() {
                agent.stop().await;
            }
            let name = self.regions[r].name.clone();
            let mut old: Vec<(String, EtcdCluster)> = self
                .shards
                .iter()
                .cloned()
                .zip(std::mem::take(&mut self.regions[r].etcd))
                .collect();
            for shard in &shards {
                let etcd = match old.iter().position(|(s, _)| s == shard) {
                    Some(i) => old.swap_remove(i).1,
                    None => {
                        let cluster_name = format!("{name}-{shard}");
                        let data = self.dir.path().join(&name);
                        let members = self.options.members;
                        match self.tls.as_ref().map(|t| t.etcd[r].members.clone()) {
                            Some(files) => {
                                EtcdCluster::start_tls(&cluster_name, members, &data, files)?
                            }
                            None => EtcdCluster::start(&cluster_name, members, &data)?,
                        }
                    }
                };
                self.regions[r].etcd.push(etcd);
            }
            // Removed shards' etcd processes stop here (dropped).
        }
        self.shards = shards;
        for r in 0..self.regions.len() {
            self.start_agent(r).await?;
        }
        Ok(())
    }

    /// Inbound Raft traffic of each member of region `r`'s shard `s` (`proxy_peers`).
    pub fn peer_links(&self, r: usize, s: usize) -> &[globallock_localcluster::FaultProxy] {
        &self.peer_links[&(r, s)]
    }

    /// Region `r`'s agent's links to its shard `s` etcd members (`proxy_etcd`).
    pub fn etcd_links(&self, r: usize, s: usize) -> &[globallock_localcluster::FaultProxy] {
        &self.etcd_links[r][s]
    }

    /// The link from coordinator `c` to region `r` (clusters started `proxied`).
    pub fn link(&self, c: usize, r: usize) -> &globallock_localcluster::FaultProxy {
        &self.links[c][r]
    }

    /// Stop coordinator `i` (gracefully).
    pub async fn stop_coordinator(&mut self, i: usize) {
        let placeholder = ServerTask {
            stop: None,
            task: tokio::spawn(async {}),
        };
        std::mem::replace(&mut self.coordinators[i], placeholder)
            .stop()
            .await;
    }

    /// Where logs and data live (kept on failure for inspection when the test
    /// panics only while the tempdir lives).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

async fn bind_retrying(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
}

/// An acquire request.
pub fn acquire(
    resource: &str,
    owner: &str,
    ttl_ms: u64,
    wait_ms: u64,
) -> globallock_proto::v1::AcquireRequest {
    globallock_proto::v1::AcquireRequest {
        resource: resource.into(),
        owner: owner.into(),
        ttl_ms,
        wait_ms,
        request_id: String::new(),
    }
}

/// Poll `check` every 50 ms until it returns `Some`, or fail after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one series in a Prometheus text exposition: the line whose metric
/// name is `name` and whose labels include every `labels` pair (0 if absent).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Cluster {
    /// Grant requests sent to each region (every outcome), as counted by
    /// coordinator 0's `globallock_region_requests_total{op="grant"}`. The
    /// coordinators of an in-process cluster share one metrics recorder, so this
    /// counts what all of them sent.
    pub async fn grants_sent(&self) -> anyhow::Result<Vec<f64>> {
        let mut sent = Vec::new();
        for region in REGIONS {
            sent.push(
                self.coordinator_metric(
                    0,
                    "globallock_region_requests_total",
                    &[("region", region), ("op", "grant")],
                )
                .await?,
            );
        }
        Ok(sent)
    }

    /// The current value of one series on coordinator `c`'s `/metrics`.
    pub async fn coordinator_metric(
        &self,
        c: usize,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<f64> {
        let response = self
            .http(self.metrics_addrs[c], "GET", "/metrics", &[], None)
            .await?;
        Ok(metric_value(&response.body, name, labels))
    }

    /// What region `r`'s agent itself holds for `resource` on shard `shard-0`,
    /// asked directly (not through any coordinator or fault proxy).
    pub async fn agent_read(
        &self,
        r: usize,
        resource: &str,
    ) -> anyhow::Result<globallock_proto::agent::ReadResponse> {
        let mut agent = globallock_proto::agent::region_agent_client::RegionAgentClient::new(
            self.agent_channel(r).await?,
        );
        Ok(agent
            .read(globallock_proto::agent::ReadRequest {
                shard: "shard-0".into(),
                resource: resource.into(),
            })
            .await?
            .into_inner())
    }
}

impl Cluster {
    /// Region `r`'s agent's own health answer, asked directly (not through any
    /// coordinator or fault proxy).
    pub async fn agent_health(
        &self,
        r: usize,
    ) -> anyhow::Result<globallock_proto::agent::HealthResponse> {
        let mut agent = globallock_proto::agent::region_agent_client::RegionAgentClient::new(
            self.agent_channel(r).await?,
        );
        Ok(agent
            .health(globallock_proto::agent::HealthRequest {})
            .await?
            .into_inner())
    }

    /// The detail of shard `shard-0` in region `r`'s health answer when the agent
    /// says that shard is quarantined (its data was lost); `None` when it serves,
    /// fails for another reason, or the agent does not answer.
    pub async fn agent_quarantine(&self, r: usize) -> Option<String> {
        let health = self.agent_health(r).await.ok()?;
        health
            .shards
            .into_iter()
            .find(|s| s.shard == "shard-0" && !s.healthy && s.detail.contains("quarantined"))
            .map(|s| s.detail)
    }

    /// How many times agents entered quarantine (`globallock_agent_quarantines_total`
    /// for `shard-0`). Agents and coordinators of this in-process cluster share the
    /// test process's metrics recorder, so coordinator 0's `/metrics` shows every
    /// agent's count, summed over regions.
    pub async fn quarantines(&self) -> anyhow::Result<f64> {
        self.coordinator_metric(
            0,
            "globallock_agent_quarantines_total",
            &[("shard", "shard-0")],
        )
        .await
    }
}
