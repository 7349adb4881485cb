//! A whole local cluster as real processes: per region, one etcd cluster per shard
//! and a `region-agent`; then any number of `coordinator`s. Every process can be
//! killed (SIGKILL), paused (SIGSTOP), resumed and restarted by pid; `make dev`
//! and the process-level fault tests both use this.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use globallock_proto::agent::HealthRequest;
use globallock_proto::agent::region_agent_client::RegionAgentClient;
use globallock_proto::v1::DescribeRequest;
use globallock_proto::v1::lock_service_client::LockServiceClient;
use globallock_tls::TlsFiles;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::certs::{DevCa, Role};
use crate::etcd::{EtcdCluster, EtcdError};
use crate::ports::free_port;
use crate::process::{ManagedProcess, ProcessError};

/// The identity of the dev client certificate (`make dev`'s operator).
pub const DEV_CLIENT: &str = "spiffe://globallock.dev/user/dev";

/// The dev cluster's tenant identities: (file and principal name, URI).
pub const DEV_TENANTS: [(&str, &str); 2] = [
    ("tenant-a", "spiffe://globallock.dev/tenant/a"),
    ("tenant-b", "spiffe://globallock.dev/tenant/b"),
];

/// The regions every local cluster has.
pub const REGIONS: [&str; 3] = ["region-a", "region-b", "region-c"];

/// Why a local cluster could not be started or changed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An etcd cluster failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The cluster's certificates could not be made.
    #[error(transparent)]
    Certs(#[from] crate::certs::CertError),
    /// The cluster's certificates could not be used.
    #[error("TLS")]
    Tls(#[from] globallock_tls::TlsError),
    /// A process could not be started or signalled.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A file or port could not be set up.
    #[error("cannot prepare the local cluster")]
    Io(#[from] std::io::Error),
    /// A binary this needs was not built.
    #[error(
        "{0} not found: build the workspace binaries first (`cargo build --workspace --bins`; `make dev` and `make test` do)"
    )]
    MissingBinary(PathBuf),
    /// A process did not become ready in time.
    #[error("{what} did not become ready within {after:?}; see its log in {log}")]
    NotReady {
        /// Which process.
        what: String,
        /// How long we waited.
        after: Duration,
        /// Its log file.
        log: String,
    },
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Data, configs and logs (must exist and be empty or disposable).
    pub data_dir: PathBuf,
    /// Shards per region.
    pub shards: usize,
    /// Members per etcd cluster (1 or 3).
    pub members: usize,
    /// Agents' `quarantine_ms`.
    pub quarantine_ms: u64,
    /// Coordinators' region deadline (loopback: short).
    pub region_timeout_ms: u64,
    /// Coordinators' longest TTL.
    pub max_ttl_ms: u64,
    /// Run every door and hop over TLS, with a CA and certificates made at
    /// start under `data_dir/tls` (the default; `false`: every service runs
    /// with `insecure = true` and `etcd_insecure = true`).
    pub tls: bool,
    /// Every agent's and coordinator's `worker_threads`: 1 by default, since
    /// the cluster's ten services and six etcd members share one machine's
    /// cores (`None`: the services' own default, one per core).
    pub worker_threads: Option<u64>,
    /// Every etcd member's `GOMAXPROCS`: 1 by default, for the same reason
    /// (`None`: etcd's default, one per core). Measured with `make bench`:
    /// 11-15 % more cycles and hand-offs per second (docs/benchmark.md).
    pub etcd_go_max_procs: Option<usize>,
}

impl Layout {
    /// Defaults for a loopback cluster under `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            shards: 2,
            members: 1,
            quarantine_ms: 330_000,
            region_timeout_ms: 500,
            max_ttl_ms: 300_000,
            tls: true,
            worker_threads: Some(1),
            etcd_go_max_procs: Some(1),
        }
    }
}

/// Where one coordinator serves and how it reaches the regions.
#[derive(Debug, Clone)]
pub struct CoordinatorSpec {
    /// gRPC address.
    pub grpc: SocketAddr,
    /// REST address, if any.
    pub rest: Option<SocketAddr>,
    /// `/metrics` address, if any.
    pub metrics: Option<SocketAddr>,
    /// Region agent URLs, in region order (e.g. through fault proxies).
    pub region_endpoints: Vec<String>,
}

/// One shard of one region, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct ShardInfo {
    /// Shard name.
    pub shard: String,
    /// Its etcd client URLs.
    pub etcd_endpoints: Vec<String>,
    /// Its etcd pids.
    pub etcd_pids: Vec<u32>,
}

/// One region, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct RegionInfo {
    /// Region name.
    pub region: String,
    /// The agent's URL.
    pub agent_address: String,
    /// The agent's metrics URL.
    pub agent_metrics: String,
    /// The agent's pid.
    pub agent_pid: u32,
    /// Its shards.
    pub shards: Vec<ShardInfo>,
}

/// One coordinator, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct CoordinatorInfo {
    /// gRPC URL.
    pub grpc: String,
    /// REST URL, if served.
    pub rest: Option<String>,
    /// Metrics URL, if served.
    pub metrics: Option<String>,
    /// Its pid.
    pub pid: u32,
    /// Its audit log.
    pub audit_log: String,
}

struct Region {
    name: String,
    dir: PathBuf,
    etcd: Vec<EtcdCluster>,
    agent: Option<ManagedProcess>,
    agent_addr: SocketAddr,
    metrics_addr: SocketAddr,
    config: PathBuf,
}

struct Coordinator {
    spec: CoordinatorSpec,
    process: Option<ManagedProcess>,
    config: PathBuf,
    log: PathBuf,
    audit: PathBuf,
}

/// The certificates of a TLS cluster (PEM files under `data_dir/tls`).
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// The CA every certificate chains to.
    pub ca: PathBuf,
    /// Every coordinator's identity.
    pub coordinator: TlsFiles,
    /// Each region's agent identity, in region order.
    pub agents: Vec<TlsFiles>,
    /// A client identity (`spiffe://globallock.dev/user/dev`): the dev
    /// cluster's operator, with every verb (admin included) on every resource.
    pub client: TlsFiles,
    /// Two tenant identities (`spiffe://globallock.dev/tenant/a` and `/b`), each
    /// its own principal with every verb but admin on every resource: each may
    /// lock anything, and neither can renew or release the other's locks.
    pub tenants: Vec<TlsFiles>,
    /// The CA itself, to issue more (tests: other callers, rotations).
    pub authority: std::sync::Arc<DevCa>,
    /// Each region's etcd TLS, in region order.
    pub etcd: Vec<RegionEtcdTls>,
}

/// TLS between one region's agent and its etcd clusters, under a CA of the
/// region's own (so etcd's `--client-cert-auth` admits that agent only).
#[derive(Debug, Clone)]
pub struct RegionEtcdTls {
    /// Every member's certificate (client and peer ports), with the region's
    /// etcd CA as `ca`.
    pub members: TlsFiles,
    /// The agent's client certificate towards etcd, with the same CA.
    pub agent: TlsFiles,
    /// The name the members prove (`<region>.etcd.globallock`).
    pub server_name: String,
    /// The region's etcd CA, to issue more (tests).
    pub authority: std::sync::Arc<DevCa>,
}

impl RegionEtcdTls {
    fn create(dir: &Path, region: &str) -> Result<Self, crate::certs::CertError> {
        let ca = DevCa::create(
            &dir.join(format!("etcd-{region}")),
            &format!("etcd-{region}"),
        )?;
        Ok(Self {
            members: ca.issue(&Role::Etcd(region.to_owned()), "member", false)?,
            agent: ca.issue(&Role::Agent(region.to_owned()), "agent", false)?,
            server_name: globallock_tls::identity::etcd(region),
            authority: std::sync::Arc::new(ca),
        })
    }
}

impl ClusterTls {
    /// Make a CA and every certificate under `dir`.
    pub fn create(dir: &Path) -> Result<Self, crate::certs::CertError> {
        let ca = DevCa::create(dir, "dev")?;
        let agents = REGIONS
            .iter()
            .map(|r| ca.issue(&Role::Agent((*r).to_owned()), &format!("agent-{r}"), false))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            ca: ca.ca_file(),
            coordinator: ca.issue(&Role::Coordinator, "coordinator", false)?,
            agents,
            client: ca.issue(&Role::Client(DEV_CLIENT.into()), "client", false)?,
            tenants: DEV_TENANTS
                .iter()
                .map(|(name, uri)| ca.issue(&Role::Client((*uri).into()), name, false))
                .collect::<Result<_, _>>()?,
            authority: std::sync::Arc::new(ca),
            etcd: REGIONS
                .iter()
                .map(|r| RegionEtcdTls::create(dir, r))
                .collect::<Result<_, _>>()?,
        })
    }

    /// One set of certificates per test process, made on first use in a
    /// directory removed when the process exits (configuration tests).
    pub fn for_tests() -> &'static Self {
        static CERTS: std::sync::OnceLock<ClusterTls> = std::sync::OnceLock::new();
        CERTS.get_or_init(|| {
            // A static is never dropped, so a `TempDir` kept in one would
            // leave its directory behind: one per test process.
            let dir = tempfile::tempdir()
                .expect("a temporary directory for test certificates")
                .keep();
            crate::process::remove_at_exit(dir.clone());
            Self::create(&dir).expect("test certificates")
        })
    }

    /// A channel to the agent of region `r` at `addr`, as a coordinator.
    pub fn agent_channel(&self, r: usize, addr: SocketAddr) -> Result<Channel, ClusterError> {
        channel(
            &self.coordinator,
            &globallock_tls::identity::agent(REGIONS[r]),
            addr,
        )
    }

    /// A channel to a coordinator at `addr`, as the dev client.
    pub fn coordinator_channel(&self, addr: SocketAddr) -> Result<Channel, ClusterError> {
        channel(&self.client, &addr.ip().to_string(), addr)
    }
}

/// A lazily connected channel to `addr` over mutual TLS as `identity`,
/// accepting the peer only if it proves `name`.
pub fn channel(identity: &TlsFiles, name: &str, addr: SocketAddr) -> Result<Channel, ClusterError> {
    let config = globallock_tls::Reloading::new(identity.clone(), globallock_tls::config::client)?;
    let name = globallock_tls::identity::server_name(name)?;
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ClusterError::Io(std::io::Error::other(e)))?
        .connect_with_connector_lazy(globallock_tls::TlsConnector::new(
            std::sync::Arc::new(config),
            name,
        )))
}

fn plaintext_channel(addr: SocketAddr) -> Result<Channel, ClusterError> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ClusterError::Io(std::io::Error::other(e)))?
        .connect_lazy())
}

/// A running local cluster; everything is stopped when dropped.
pub struct ProcessCluster {
    layout: Layout,
    tls: Option<ClusterTls>,
    agent_bin: PathBuf,
    coordinator_bin: PathBuf,
    regions: Vec<Region>,
    coordinators: Vec<Coordinator>,
}

impl std::fmt::Debug for ProcessCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCluster")
            .field("layout", &self.layout)
            .field("regions", &self.regions.len())
            .field("coordinators", &self.coordinators.len())
            .finish()
    }
}

/// The `region-agent` and `coordinator` binaries next to the running executable
/// (or one directory up, for test executables in `target/<profile>/deps`).
pub fn find_binary(name: &str) -> Result<PathBuf, ClusterError> {
    let exe = std::env::current_exe()?;
    let dirs = exe.ancestors().skip(1).take(2);
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(ClusterError::MissingBinary(
        exe.parent().unwrap_or(Path::new(".")).join(name),
    ))
}

impl ProcessCluster {
    /// Start every region (etcd clusters and agent) and wait until the agents are
    /// healthy. Coordinators come next, with [`ProcessCluster::start_coordinator`].
    pub async fn start(layout: Layout) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(&layout.data_dir)?;
        let tls = if layout.tls {
            Some(ClusterTls::create(&layout.data_dir.join("tls"))?)
        } else {
            None
        };
        let mut cluster = Self {
            tls,
            agent_bin: find_binary("region-agent")?,
            coordinator_bin: find_binary("coordinator")?,
            layout,
            regions: Vec::new(),
            coordinators: Vec::new(),
        };
        std::fs::create_dir_all(&cluster.layout.data_dir)?;
        for name in REGIONS {
            let dir = cluster.layout.data_dir.join(name);
            let mut etcd = Vec::new();
            let members_tls = cluster
                .tls
                .as_ref()
                .map(|t| t.etcd[cluster.regions.len()].members.clone());
            for s in 0..cluster.layout.shards {
                let name = format!("{name}-shard-{s}");
                let size = cluster.layout.members;
                etcd.push(EtcdCluster::start_limited(
                    &name,
                    size,
                    &dir,
                    members_tls.clone(),
                    cluster.layout.etcd_go_max_procs,
                )?);
            }
            let region = Region {
                name: name.to_owned(),
                config: dir.join("agent.toml"),
                dir,
                etcd,
                agent: None,
                agent_addr: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                metrics_addr: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            };
            // Fresh etcd: these shards are new, not amnesiac (first start only).
            let r = cluster.regions.len();
            std::fs::write(
                &region.config,
                agent_config(&region, &cluster.layout, cluster.tls.as_ref(), r, true),
            )?;
            cluster.regions.push(region);
        }
        for r in 0..cluster.regions.len() {
            cluster.spawn_agent(r)?;
        }
        for r in 0..cluster.regions.len() {
            cluster.wait_agent(r).await?;
            // Later restarts are restarts: a shard without its marker is amnesiac.
            let tls = cluster.tls.as_ref();
            let config = agent_config(&cluster.regions[r], &cluster.layout, tls, r, false);
            std::fs::write(&cluster.regions[r].config, config)?;
        }
        Ok(cluster)
    }

    fn spawn_agent(&mut self, r: usize) -> Result<(), ClusterError> {
        let region = &mut self.regions[r];
        let mut command = Command::new(&self.agent_bin);
        command.arg("--config").arg(&region.config);
        region.agent = Some(ManagedProcess::spawn(
            format!("agent {}", region.name),
            command,
            &region.dir.join("agent.log"),
        )?);
        Ok(())
    }

    async fn wait_agent(&self, r: usize) -> Result<(), ClusterError> {
        let region = &self.regions[r];
        let url = format!("http://{}", region.agent_addr);
        let channel = match &self.tls {
            Some(tls) => Some(tls.agent_channel(r, region.agent_addr)?),
            None => None,
        };
        wait_until(
            Duration::from_secs(30),
            &format!("agent of {}", region.name),
            &region.dir.join("agent.log"),
            || {
                let url = url.clone();
                let channel = channel.clone();
                async move {
                    let mut client = match channel {
                        Some(channel) => RegionAgentClient::new(channel),
                        None => RegionAgentClient::connect(url).await.ok()?,
                    };
                    client
                        .health(HealthRequest {})
                        .await
                        .ok()
                        .filter(|r| r.get_ref().healthy)
                        .map(|_| ())
                }
            },
        )
        .await
    }

    /// The agents' URLs, in region order.
    pub fn agent_endpoints(&self) -> Vec<String> {
        self.regions
            .iter()
            .map(|r| format!("{}://{}", self.scheme(), r.agent_addr))
            .collect()
    }

    /// `https` for a TLS cluster, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The certificates, for a TLS cluster.
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.tls.as_ref()
    }

    /// The agents' addresses, in region order (to put proxies in front of them).
    pub fn agent_addrs(&self) -> Vec<SocketAddr> {
        self.regions.iter().map(|r| r.agent_addr).collect()
    }

    /// A coordinator spec on free loopback ports reaching the agents directly.
    pub fn free_coordinator_spec(&self) -> Result<CoordinatorSpec, ClusterError> {
        let port = || -> Result<SocketAddr, ClusterError> {
            Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
        };
        Ok(CoordinatorSpec {
            grpc: port()?,
            rest: Some(port()?),
            metrics: Some(port()?),
            region_endpoints: self.agent_endpoints(),
        })
    }

    /// Start a coordinator and wait until it answers; returns its index.
    pub async fn start_coordinator(
        &mut self,
        spec: CoordinatorSpec,
    ) -> Result<usize, ClusterError> {
        let i = self.coordinators.len();
        let dir = &self.layout.data_dir;
        let name = if i == 0 {
            "coordinator".to_owned()
        } else {
            format!("coordinator-{i}")
        };
        let coordinator = Coordinator {
            config: dir.join(format!("{name}.toml")),
            log: dir.join(format!("{name}.log")),
            audit: dir.join(format!("{name}-audit.jsonl")),
            spec,
            process: None,
        };
        std::fs::write(
            &coordinator.config,
            coordinator_config(
                &coordinator,
                &self.layout,
                self.tls.as_ref().map(|t| &t.coordinator),
            ),
        )?;
        self.coordinators.push(coordinator);
        self.restart_coordinator(i).await?;
        Ok(i)
    }

    /// (Re)start coordinator `i` with its configuration and wait until it answers.
    pub async fn restart_coordinator(&mut self, i: usize) -> Result<(), ClusterError> {
        let c = &mut self.coordinators[i];
        if c.process.as_mut().is_some_and(ManagedProcess::is_running) {
            return Ok(());
        }
        let mut command = Command::new(&self.coordinator_bin);
        command.arg("--config").arg(&c.config);
        c.process = Some(ManagedProcess::spawn(
            format!("coordinator {i}"),
            command,
            &c.log,
        )?);
        let url = format!("http://{}", c.spec.grpc);
        let log = c.log.clone();
        let channel = match &self.tls {
            Some(tls) => Some(tls.coordinator_channel(c.spec.grpc)?),
            None => None,
        };
        wait_until(
            Duration::from_secs(30),
            &format!("coordinator {i}"),
            &log,
            || {
                let url = url.clone();
                let channel = channel.clone();
                async move {
                    let mut client = match channel {
                        Some(channel) => LockServiceClient::new(channel),
                        None => LockServiceClient::connect(url).await.ok()?,
                    };
                    client
                        .describe(DescribeRequest {
                            resource: "localcluster/ready".into(),
                        })
                        .await
                        .ok()
                        .map(|_| ())
                }
            },
        )
        .await
    }

    /// Coordinator `i`'s gRPC URL.
    pub fn coordinator_url(&self, i: usize) -> String {
        format!("{}://{}", self.scheme(), self.coordinators[i].spec.grpc)
    }

    /// A channel to coordinator `i`'s gRPC door (as the dev client over TLS,
    /// or plaintext), connected lazily.
    pub fn coordinator_channel(&self, i: usize) -> Result<Channel, ClusterError> {
        self.coordinator_channel_at(self.coordinators[i].spec.grpc)
    }

    /// A channel to a coordinator serving gRPC at `addr` (see
    /// [`ProcessCluster::coordinator_channel`]).
    pub fn coordinator_channel_at(&self, addr: SocketAddr) -> Result<Channel, ClusterError> {
        match &self.tls {
            Some(tls) => tls.coordinator_channel(addr),
            None => Ok(plaintext_channel(addr)?),
        }
    }

    /// A channel to region `r`'s agent, as a coordinator calls it.
    pub fn agent_channel(&self, r: usize) -> Result<Channel, ClusterError> {
        let addr = self.regions[r].agent_addr;
        match &self.tls {
            Some(tls) => tls.agent_channel(r, addr),
            None => Ok(plaintext_channel(addr)?),
        }
    }

    /// Coordinator `i`'s pid (0 while stopped).
    pub fn coordinator_pid(&self, i: usize) -> u32 {
        self.coordinators[i]
            .process
            .as_ref()
            .map_or(0, ManagedProcess::pid)
    }

    /// SIGKILL coordinator `i` (a crash: nothing is flushed, nothing aborted).
    pub fn kill_coordinator(&mut self, i: usize) {
        if let Some(mut p) = self.coordinators[i].process.take() {
            p.kill();
        }
    }

    /// Region `r`'s agent pid (0 while stopped).
    pub fn agent_pid(&self, r: usize) -> u32 {
        self.regions[r]
            .agent
            .as_ref()
            .map_or(0, ManagedProcess::pid)
    }

    /// SIGKILL region `r`'s agent.
    pub fn kill_agent(&mut self, r: usize) {
        if let Some(mut p) = self.regions[r].agent.take() {
            p.kill();
        }
    }

    /// SIGSTOP region `r`'s agent.
    pub fn pause_agent(&self, r: usize) -> Result<(), ClusterError> {
        if let Some(p) = &self.regions[r].agent {
            p.signal(libc::SIGSTOP)?;
        }
        Ok(())
    }

    /// SIGCONT region `r`'s agent.
    pub fn resume_agent(&self, r: usize) -> Result<(), ClusterError> {
        if let Some(p) = &self.regions[r].agent {
            p.signal(libc::SIGCONT)?;
        }
        Ok(())
    }

    /// Restart region `r`'s agent (if stopped) and wait until it is healthy.
    pub async fn restart_agent(&mut self, r: usize) -> Result<(), ClusterError> {
        if !self.regions[r]
            .agent
            .as_mut()
            .is_some_and(ManagedProcess::is_running)
        {
            self.spawn_agent(r)?;
        }
        self.wait_agent(r).await
    }

    /// Region `r`'s etcd cluster for shard `s`.
    pub fn etcd(&mut self, r: usize, s: usize) -> &mut EtcdCluster {
        &mut self.regions[r].etcd[s]
    }

    /// Every etcd cluster, region by region (each region's shards in order).
    pub fn etcd_clusters(&self) -> Vec<&EtcdCluster> {
        self.regions.iter().flat_map(|r| r.etcd.iter()).collect()
    }

    /// Every region, as reported.
    pub fn regions(&self) -> Vec<RegionInfo> {
        self.regions
            .iter()
            .map(|r| RegionInfo {
                region: r.name.clone(),
                agent_address: format!("{}://{}", self.scheme(), r.agent_addr),
                agent_metrics: format!("{}://{}/metrics", self.scheme(), r.metrics_addr),
                agent_pid: r.agent.as_ref().map_or(0, ManagedProcess::pid),
                shards: r
                    .etcd
                    .iter()
                    .enumerate()
                    .map(|(s, e)| ShardInfo {
                        shard: format!("shard-{s}"),
                        etcd_endpoints: e.endpoints(),
                        etcd_pids: e.members().iter().map(|m| m.pid()).collect(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Every coordinator, as reported.
    pub fn coordinators(&self) -> Vec<CoordinatorInfo> {
        self.coordinators
            .iter()
            .map(|c| CoordinatorInfo {
                grpc: format!("{}://{}", self.scheme(), c.spec.grpc),
                rest: c.spec.rest.map(|a| format!("{}://{a}", self.scheme())),
                metrics: c
                    .spec
                    .metrics
                    .map(|a| format!("{}://{a}/metrics", self.scheme())),
                pid: c.process.as_ref().map_or(0, ManagedProcess::pid),
                audit_log: c.audit.display().to_string(),
            })
            .collect()
    }

    /// Every audit log the processes write.
    pub fn audit_logs(&self) -> Vec<PathBuf> {
        self.coordinators
            .iter()
            .map(|c| c.audit.clone())
            .chain(self.regions.iter().map(|r| r.dir.join("audit.jsonl")))
            .collect()
    }

    /// Stop everything: coordinators and agents gracefully, etcd with SIGKILL.
    pub fn stop(&mut self) {
        for c in &mut self.coordinators {
            if let Some(mut p) = c.process.take() {
                p.terminate(Duration::from_secs(5));
            }
        }
        for r in &mut self.regions {
            if let Some(mut p) = r.agent.take() {
                p.terminate(Duration::from_secs(5));
            }
            for etcd in &mut r.etcd {
                etcd.kill();
            }
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_until<F, Fut>(
    within: Duration,
    what: &str,
    log: &Path,
    mut ready: F,
) -> Result<(), ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let deadline = Instant::now() + within;
    loop {
        if ready().await.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ClusterError::NotReady {
                what: what.to_owned(),
                after: within,
                log: log.display().to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `[tls]` table for `files`, or `insecure = true`.
fn tls_config(files: Option<&TlsFiles>) -> String {
    match files {
        Some(f) => format!(
            "\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            f.ca.display().to_string(),
            f.cert.display().to_string(),
            f.key.display().to_string()
        ),
        None => "insecure = true\n".to_owned(),
    }
}

fn agent_config(
    region: &Region,
    layout: &Layout,
    cluster_tls: Option<&ClusterTls>,
    r: usize,
    bootstrap: bool,
) -> String {
    let tls = cluster_tls.map(|t| &t.agents[r]);
    let mut text = format!(
        "# Written by globallock-localcluster.\nregion = {:?}\nlisten = \"{}\"\nmetrics_listen = \"{}\"\n\
         audit_log = {:?}\ncompaction_interval_s = 60\nquarantine_ms = {}\nmax_ttl_ms = {}\n\
         max_token_lead_ms = {}\nstate_dir = {:?}\nbootstrap = {bootstrap}\n",
        region.name,
        region.agent_addr,
        region.metrics_addr,
        region.dir.join("audit.jsonl").display().to_string(),
        layout.quarantine_ms,
        layout.max_ttl_ms,
        layout.quarantine_ms / 2,
        region.dir.join("agent-state").display().to_string(),
    );
    text.push_str(&worker_threads_config(layout));
    if tls.is_none() {
        text.push_str(&tls_config(None));
        text.push_str("etcd_insecure = true\n");
    }
    for (s, etcd) in region.etcd.iter().enumerate() {
        let endpoints: Vec<String> = etcd.endpoints().iter().map(|e| format!("{e:?}")).collect();
        text.push_str(&format!(
            "\n[[shards]]\nname = \"shard-{s}\"\nendpoints = [{}]\n",
            endpoints.join(", ")
        ));
    }
    if tls.is_some() {
        text.push_str(&tls_config(tls));
    }
    if let Some(etcd) = cluster_tls.map(|t| &t.etcd[r]) {
        text.push_str(&format!(
            "\n[etcd_tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\nserver_name = {:?}\n",
            etcd.agent.ca.display().to_string(),
            etcd.agent.cert.display().to_string(),
            etcd.agent.key.display().to_string(),
            etcd.server_name,
        ));
    }
    text
}

/// The `worker_threads` line of every service's configuration (none for the
/// default).
fn worker_threads_config(layout: &Layout) -> String {
    layout
        .worker_threads
        .map(|n| format!("worker_threads = {n}\n"))
        .unwrap_or_default()
}

fn coordinator_config(c: &Coordinator, layout: &Layout, tls: Option<&TlsFiles>) -> String {
    let shards: Vec<String> = (0..layout.shards)
        .map(|s| format!("\"shard-{s}\""))
        .collect();
    let mut text = format!(
        "# Written by globallock-localcluster.\nlisten = \"{}\"\naudit_log = {:?}\nshards = [{}]\n\
         region_timeout_ms = {}\nhealth_interval_ms = 250\nhealth_timeout_ms = 200\nmax_ttl_ms = {}\n",
        c.spec.grpc,
        c.audit.display().to_string(),
        shards.join(", "),
        layout.region_timeout_ms,
        layout.max_ttl_ms,
    );
    if let Some(rest) = c.spec.rest {
        text.push_str(&format!("rest_listen = \"{rest}\"\n"));
    }
    if let Some(metrics) = c.spec.metrics {
        text.push_str(&format!("metrics_listen = \"{metrics}\"\n"));
    }
    text.push_str(&worker_threads_config(layout));
    if tls.is_none() {
        text.push_str(&tls_config(None));
        text.push_str("open_access = true\n");
    }
    for (name, endpoint) in REGIONS.iter().zip(&c.spec.region_endpoints) {
        text.push_str(&format!(
            "\n[[regions]]\nname = {name:?}\nendpoint = {endpoint:?}\n"
        ));
    }
    if tls.is_some() {
        text.push_str(&tls_config(tls));
    }
    text.push_str(&access_config(tls.is_some()));
    text
}

/// With TLS, `[access]` lets the dev client identity do everything (it is
/// the cluster's operator) and each tenant identity everything but admin;
/// without, every caller may (`open_access`).
fn access_config(tls: bool) -> String {
    if !tls {
        // `open_access = true` is a top-level key: coordinator_config writes
        // it before the tables.
        return String::new();
    }
    let mut text = format!(
        "\n[[access.principals]]\nname = \"dev\"\nidentities = [{:?}]\n",
        DEV_CLIENT
    );
    for (name, uri) in DEV_TENANTS {
        text.push_str(&format!(
            "\n[[access.principals]]\nname = {name:?}\nidentities = [{uri:?}]\n"
        ));
    }
    text.push_str(
        "\n[[access.rules]]\nprefix = \"\"\nprincipals = [\"dev\"]\n\
         verbs = [\"acquire\", \"renew\", \"release\", \"describe\", \"validate\", \"admin\"]\n",
    );
    let tenants: Vec<String> = DEV_TENANTS.iter().map(|(n, _)| format!("{n:?}")).collect();
    text.push_str(&format!(
        "\n[[access.rules]]\nprefix = \"\"\nprincipals = [{}]\n\
         verbs = [\"acquire\", \"renew\", \"release\", \"describe\", \"validate\"]\n",
        tenants.join(", ")
    ));
    text
}
