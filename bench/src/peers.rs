//! The systems under test, started by the benchmark as real processes on free
//! loopback ports, and stopped (by pid) when dropped: on return, on Ctrl-C,
//! on panic. Every child also dies with this process (`PR_SET_PDEATHSIG`,
//! see `globallock_localcluster::process`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use globallock_client::ClientTls;
use globallock_localcluster::process::ManagedProcess;
use globallock_localcluster::{
    CoordinatorSpec, Direction, EtcdCluster, FaultProxy, Faults, Layout, MemberPorts,
    ProcessCluster, free_port,
};

use crate::geography;
use crate::resp::{Connection, Reply};

/// `make dev`'s topology: 3 regions × 2 shards of single-member etcd, TLS on
/// every door and hop, one coordinator.
#[derive(Debug)]
pub struct GloballockPeer {
    /// The processes.
    cluster: ProcessCluster,
    /// The coordinator's gRPC URL.
    url: String,
    /// The dev CA and client identity.
    tls: ClientTls,
}

/// A coordinator placed in one region of the WAN profile: its own region's
/// agent reached directly, the others through delaying proxies.
#[derive(Debug)]
pub struct WanCoordinator {
    /// Its index in the cluster (to stop it).
    index: usize,
    /// Its gRPC URL.
    pub url: String,
    /// The delayed links to the other regions' agents.
    _links: Vec<FaultProxy>,
}

impl GloballockPeer {
    /// Start the regions under `dir`, then the coordinator.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let layout = Layout {
            tls: true,
            ..Layout::new(dir.to_path_buf())
        };
        let mut cluster = ProcessCluster::start(layout)
            .await
            .context("cannot start the globallock cluster")?;
        let spec = cluster.free_coordinator_spec()?;
        let index = cluster.start_coordinator(spec).await?;
        let url = cluster.coordinator_url(index);
        let files = cluster
            .tls()
            .context("the cluster was started with TLS, so it has certificates")?;
        let tls = ClientTls {
            ca: files.ca.clone(),
            identity: Some((files.client.cert.clone(), files.client.key.clone())),
        };
        Ok(Self { cluster, url, tls })
    }

    /// The coordinator's gRPC URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The dev CA and client identity.
    pub fn tls(&self) -> &ClientTls {
        &self.tls
    }

    /// Start a coordinator in `region` of the WAN profile: each other region's
    /// agent behind a proxy delaying both directions by half their round trip.
    pub async fn place_coordinator(&mut self, region: usize) -> anyhow::Result<WanCoordinator> {
        let agents = self.cluster.agent_addrs();
        let scheme = self.cluster.scheme();
        let mut links = Vec::new();
        let mut region_endpoints = Vec::new();
        for (r, agent) in agents.iter().enumerate() {
            if r == region {
                region_endpoints.push(format!("{scheme}://{agent}"));
                continue;
            }
            let proxy = FaultProxy::start(*agent).await?;
            proxy.set(Faults::delay(
                geography::round_trip(region, r) / 2,
                Duration::ZERO,
            ));
            region_endpoints.push(format!("{scheme}://{}", proxy.addr()));
            links.push(proxy);
        }
        let spec = CoordinatorSpec {
            rest: None,
            metrics: None,
            region_endpoints,
            ..self.cluster.free_coordinator_spec()?
        };
        let index = self.cluster.start_coordinator(spec).await?;
        Ok(WanCoordinator {
            index,
            url: self.cluster.coordinator_url(index),
            _links: links,
        })
    }

    /// Stop a coordinator started by [`GloballockPeer::place_coordinator`].
    pub fn remove_coordinator(&mut self, coordinator: WanCoordinator) {
        self.cluster.kill_coordinator(coordinator.index);
    }

    /// Every region's etcd clusters (to read what etcd did).
    pub fn etcd_clusters(&self) -> Vec<&EtcdCluster> {
        self.cluster.etcd_clusters()
    }

    /// The running processes by role, to account their CPU.
    pub fn roles(&self) -> crate::cpu::Roles {
        let mut etcd = Vec::new();
        let mut agents = Vec::new();
        for region in self.cluster.regions() {
            agents.push(region.agent_pid);
            for shard in region.shards {
                etcd.extend(shard.etcd_pids);
            }
        }
        let coordinators = self
            .cluster
            .coordinators()
            .iter()
            .map(|c| c.pid)
            .filter(|pid| *pid != 0)
            .collect();
        crate::cpu::Roles(vec![
            ("etcd", etcd),
            ("agents", agents),
            ("coordinator", coordinators),
        ])
    }

    /// Every pid, for the startup report.
    pub fn pids(&self) -> Vec<u32> {
        self.roles()
            .0
            .into_iter()
            .flat_map(|(_, pids)| pids)
            .collect()
    }
}

/// An etcd cluster on free ports with the project's launcher flags.
pub fn start_etcd(name: &str, members: usize, dir: &Path) -> anyhow::Result<EtcdCluster> {
    EtcdCluster::start_tls(name, members, dir, etcd_tls(dir)?)
        .with_context(|| format!("cannot start the {members}-member etcd cluster {name}"))
}

/// The name the benchmark's etcd members prove.
pub const ETCD_SERVER_NAME: &str = "bench.etcd.globallock";

/// TLS for a peer etcd cluster, as globallock's own etcd runs it (so the
/// comparison is fair): a CA of its own under `dir/tls`, one certificate for
/// every member's client and peer ports (client certificates required on
/// both); clients present the same certificate.
pub fn etcd_tls(dir: &Path) -> anyhow::Result<globallock_localcluster::certs::TlsFiles> {
    let ca = globallock_localcluster::DevCa::create(&dir.join("tls"), "bench-etcd")
        .context("cannot make the etcd CA")?;
    ca.issue(
        &globallock_localcluster::Role::Etcd("bench".into()),
        "member",
        false,
    )
    .context("cannot issue the etcd member certificate")
}

/// etcd-client TLS options for a cluster started with `tls`.
pub fn etcd_client_tls(
    tls: &globallock_localcluster::certs::TlsFiles,
) -> anyhow::Result<etcd_client::TlsOptions> {
    Ok(etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&tls.ca)?))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(&tls.cert)?,
            std::fs::read(&tls.key)?,
        ))
        .domain_name(ETCD_SERVER_NAME))
}

/// Every member's pid.
pub fn etcd_pids(cluster: &EtcdCluster) -> Vec<u32> {
    cluster.members().iter().map(|m| m.pid()).collect()
}

/// Three (or `n`) redis-servers without persistence.
#[derive(Debug)]
pub struct RedisServers {
    /// Each server and where it listens.
    servers: Vec<(ManagedProcess, SocketAddr)>,
}

fn redis_binary() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .context("no redis-server found on $PATH or in /usr/bin: install Debian's redis-server (`make deps` does)")
}

impl RedisServers {
    /// Start `n` servers with data (none kept) and logs under `dir`.
    pub async fn start(n: usize, dir: &Path) -> anyhow::Result<Self> {
        let binary = redis_binary()?;
        std::fs::create_dir_all(dir)?;
        let mut servers = Vec::new();
        for i in 0..n {
            let port = free_port()?;
            let mut command = Command::new(&binary);
            command
                .args(["--port", &port.to_string()])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--bind", "127.0.0.1"])
                .args(["--daemonize", "no"])
                .arg("--dir")
                .arg(dir);
            let log = dir.join(format!("redis-{i}.log"));
            let process = ManagedProcess::spawn(format!("redis-server {i}"), command, &log)?;
            servers.push((process, SocketAddr::from(([127, 0, 0, 1], port))));
        }
        for (i, (_, addr)) in servers.iter().enumerate() {
            wait_for_redis(*addr)
                .await
                .with_context(|| format!("see {}", dir.join(format!("redis-{i}.log")).display()))?;
        }
        Ok(Self { servers })
    }

    /// Where they listen.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|(_, a)| *a).collect()
    }

    /// Their pids.
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(|(p, _)| p.pid()).collect()
    }
}

async fn wait_for_redis(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = Connection::connect(addr).await
            && let Ok(Reply::Status(pong)) = c.command(&[b"PING"]).await
            && pong == "PONG"
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("redis-server at {addr} did not answer PING within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A three-member etcd cluster stretched over the WAN profile: member `m` in
/// region `m`, every member's inbound peer port behind a proxy that delays
/// what the member sends by its share of the round trips
/// ([`geography::peer_outbound`]), the leader moved to
/// [`geography::LEADER_REGION`], and one client link per other region to the
/// leader's client port, delayed by that region's round trip to it.
#[derive(Debug)]
pub struct StretchedEtcd {
    /// The members.
    cluster: EtcdCluster,
    /// The peer links (kept running).
    _peer_links: Vec<FaultProxy>,
    /// Per region, the delayed link from a client there to the leader
    /// (`None` in the leader's own region).
    client_links: Vec<Option<FaultProxy>>,
}

impl StretchedEtcd {
    /// Start it under `dir` and move the leader into place.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut ports = Vec::new();
        let mut peer_links = Vec::new();
        for m in 0..geography::PLACES.len() {
            let peer = free_port()?;
            let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], peer))).await?;
            let share = Direction {
                delay: geography::peer_outbound(m),
                ..Direction::default()
            };
            proxy.set(Faults {
                upstream: share,
                downstream: share,
                refuse: false,
            });
            ports.push(MemberPorts {
                client: free_port()?,
                peer,
                advertised_peer: proxy.addr().port(),
            });
            peer_links.push(proxy);
        }
        let cluster =
            EtcdCluster::start_secured("bench-etcd-stretched", &ports, dir, Some(etcd_tls(dir)?))
                .context("cannot start the stretched etcd cluster")?;
        move_leader(&cluster, geography::LEADER_REGION).await?;
        let leader: SocketAddr =
            SocketAddr::from(([127, 0, 0, 1], ports[geography::LEADER_REGION].client));
        let mut client_links = Vec::new();
        for region in 0..geography::PLACES.len() {
            if region == geography::LEADER_REGION {
                client_links.push(None);
                continue;
            }
            let proxy = FaultProxy::start(leader).await?;
            proxy.set(Faults::delay(
                geography::round_trip(region, geography::LEADER_REGION) / 2,
                Duration::ZERO,
            ));
            client_links.push(Some(proxy));
        }
        Ok(Self {
            cluster,
            _peer_links: peer_links,
            client_links,
        })
    }

    /// The client endpoint a client in `region` uses: the leader's own
    /// client port, through that region's delayed link unless it is the
    /// leader's region.
    pub fn endpoint_from(&self, region: usize) -> String {
        match &self.client_links[region] {
            Some(link) => format!("https://{}", link.addr()),
            None => self.cluster.endpoints()[geography::LEADER_REGION].clone(),
        }
    }

    /// The members' pids.
    pub fn pids(&self) -> Vec<u32> {
        etcd_pids(&self.cluster)
    }

    /// The members' TLS files.
    pub fn tls(&self) -> Option<&globallock_localcluster::certs::TlsFiles> {
        self.cluster.tls()
    }

    /// Which member leads now (it should stay `LEADER_REGION`'s).
    pub fn leader(&self) -> Option<usize> {
        self.cluster.leader()
    }
}

/// Make member `target` the leader (etcd's MoveLeader, asked of the current
/// leader), and wait until it says so.
async fn move_leader(cluster: &EtcdCluster, target: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let target_name = cluster.members()[target].name().to_owned();
    loop {
        match cluster.leader() {
            Some(leader) if leader == target => return Ok(()),
            Some(leader) => {
                let endpoint = cluster.endpoints()[leader].clone();
                let attempt = async {
                    let tls = cluster.tls().context("the stretched etcd runs TLS")?;
                    let options =
                        etcd_client::ConnectOptions::new().with_tls(etcd_client_tls(tls)?);
                    let mut client =
                        etcd_client::Client::connect([endpoint], Some(options)).await?;
                    let members = client.member_list().await?;
                    let id = members
                        .members()
                        .iter()
                        .find(|m| m.name() == target_name)
                        .map(etcd_client::Member::id)
                        .context("the target member is not in the member list")?;
                    client.move_leader(id).await?;
                    anyhow::Ok(())
                };
                if let Err(error) = attempt.await {
                    eprintln!("moving the stretched etcd's leader: {error:#} (retrying)");
                }
            }
            None => {}
        }
        if Instant::now() > deadline {
            bail!("the stretched etcd's leader could not be moved to member {target} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
