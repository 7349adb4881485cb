//! Real etcd clusters on loopback: one or more members, each a child process with
//! its own data directory and free ports, killed when dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use globallock_tls::TlsFiles;
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::process::{ManagedProcess, ProcessError};

/// Why a cluster could not be started or checked.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No `etcd` binary.
    #[error(
        "no etcd binary found (looked at $ETCD_BIN, /usr/bin/etcd and $PATH); install Debian's etcd-server"
    )]
    NotInstalled,
    /// A port or directory could not be set up.
    #[error("cannot prepare etcd member {member}")]
    Setup {
        /// The member name.
        member: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A process could not be started or signalled.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The cluster did not become healthy in time.
    #[error("etcd cluster {cluster} not healthy after {after:?}; see logs in {logs}")]
    Unhealthy {
        /// The cluster.
        cluster: String,
        /// How long we waited.
        after: Duration,
        /// Where its logs are.
        logs: String,
    },
}

/// The etcd binary to run.
pub fn etcd_binary() -> Result<PathBuf, EtcdError> {
    if let Some(path) = std::env::var_os("ETCD_BIN") {
        return Ok(PathBuf::from(path));
    }
    let candidates = std::iter::once(PathBuf::from("/usr/bin/etcd")).chain(
        std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("etcd"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    );
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or(EtcdError::NotInstalled)
}

/// The ports of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberPorts {
    /// Client port.
    pub client: u16,
    /// Peer port it listens on.
    pub peer: u16,
    /// Peer port the other members dial.
    pub advertised_peer: u16,
}

/// One member of a cluster.
#[derive(Debug)]
pub struct EtcdMember {
    /// Member name (unique inside the cluster).
    name: String,
    /// Client port on 127.0.0.1.
    client_port: u16,
    /// Peer port on 127.0.0.1 (where the member listens).
    peer_port: u16,
    /// Peer port other members dial (a proxy in front of `peer_port`, or the same).
    advertised_peer_port: u16,
    /// Its data directory.
    data_dir: PathBuf,
    /// Its log file.
    log: PathBuf,
    /// The running process (`None` while killed).
    process: Option<ManagedProcess>,
    /// TLS on its client and peer ports (shared by the cluster).
    tls: Option<TlsFiles>,
}

impl EtcdMember {
    /// Client URL (`https://` when the cluster runs TLS).
    pub fn endpoint(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            scheme(self.tls.as_ref()),
            self.client_port
        )
    }

    /// Process id (0 while stopped).
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, ManagedProcess::pid)
    }

    /// Member name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// A running etcd cluster.
#[derive(Debug)]
pub struct EtcdCluster {
    /// Cluster name (also its initial-cluster token).
    name: String,
    /// `name=peer-url,...` for every member.
    initial_cluster: String,
    /// The members.
    members: Vec<EtcdMember>,
    /// The binary.
    binary: PathBuf,
    /// TLS on every member's client and peer ports: `ca` the only CA trusted
    /// (`--client-cert-auth`, `--peer-client-cert-auth`), `cert`/`key` each
    /// member's certificate for both.
    tls: Option<TlsFiles>,
    /// Each member's `GOMAXPROCS` (`None`: Go's default, one per core).
    go_max_procs: Option<usize>,
}

fn scheme(tls: Option<&TlsFiles>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

impl EtcdCluster {
    /// Start a cluster of `size` members with data under `dir`, and wait until it
    /// serves requests.
    pub fn start(name: &str, size: usize, dir: &Path) -> Result<Self, EtcdError> {
        Self::start_limited(name, size, dir, None, None)
    }

    /// Start a cluster whose members use these ports. A member's
    /// `advertised_peer` may differ from its `peer` port: other members then dial
    /// it there (through a fault proxy the caller started in front of `peer`).
    pub fn start_with_ports(
        name: &str,
        ports: &[MemberPorts],
        dir: &Path,
    ) -> Result<Self, EtcdError> {
        Self::start_secured(name, ports, dir, None)
    }

    /// Start a cluster of `size` members over TLS with `tls` (see
    /// [`EtcdCluster::start_secured`]).
    pub fn start_tls(
        name: &str,
        size: usize,
        dir: &Path,
        tls: TlsFiles,
    ) -> Result<Self, EtcdError> {
        Self::start_limited(name, size, dir, Some(tls), None)
    }

    /// Start a cluster on these ports, over TLS when `tls` is given: clients
    /// and peers must then present a certificate of `tls.ca`, and every member
    /// serves `tls.cert` on its client and peer ports.
    pub fn start_secured(
        name: &str,
        ports: &[MemberPorts],
        dir: &Path,
        tls: Option<TlsFiles>,
    ) -> Result<Self, EtcdError> {
        Self::start_members(name, ports, dir, tls, None)
    }

    /// Start a cluster of `size` members, over TLS when `tls` is given (as
    /// [`EtcdCluster::start_tls`]), each member's Go runtime running Go code on
    /// at most `go_max_procs` threads at once (`GOMAXPROCS`; `None`: one per
    /// core, etcd's default). A member that shares a few cores with many other
    /// processes wastes less of them with 1: an idle Go runtime's threads spin
    /// looking for work before they sleep.
    pub fn start_limited(
        name: &str,
        size: usize,
        dir: &Path,
        tls: Option<TlsFiles>,
        go_max_procs: Option<usize>,
    ) -> Result<Self, EtcdError> {
        let ports = free_member_ports(name, size)?;
        Self::start_members(name, &ports, dir, tls, go_max_procs)
    }

    fn start_members(
        name: &str,
        ports: &[MemberPorts],
        dir: &Path,
        tls: Option<TlsFiles>,
        go_max_procs: Option<usize>,
    ) -> Result<Self, EtcdError> {
        let binary = etcd_binary()?;
        let mut members = Vec::with_capacity(ports.len());
        for (i, p) in ports.iter().enumerate() {
            let member = format!("{name}-m{i}");
            std::fs::create_dir_all(dir).map_err(|source| EtcdError::Setup {
                member: member.clone(),
                source,
            })?;
            members.push(EtcdMember {
                client_port: p.client,
                peer_port: p.peer,
                advertised_peer_port: p.advertised_peer,
                log: dir.join(format!("{member}.log")),
                data_dir: dir.join(&member),
                name: member,
                process: None,
                tls: tls.clone(),
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| {
                format!(
                    "{}={}://127.0.0.1:{}",
                    m.name,
                    scheme(tls.as_ref()),
                    m.advertised_peer_port
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let size = members.len();
        let mut cluster = Self {
            name: name.to_owned(),
            initial_cluster,
            members,
            binary,
            tls,
            go_max_procs,
        };
        for i in 0..size {
            cluster.start_member(i)?;
        }
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// The TLS files of its members (`None`: plaintext).
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::endpoint).collect()
    }

    /// The members.
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// (Re)start member `i` on its ports and data directory.
    pub fn start_member(&mut self, i: usize) -> Result<(), EtcdError> {
        let m = &mut self.members[i];
        if m.process.as_mut().is_some_and(ManagedProcess::is_running) {
            return Ok(());
        }
        let scheme = scheme(self.tls.as_ref());
        let client = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer = format!("{scheme}://127.0.0.1:{}", m.peer_port);
        let advertised_peer = format!("{scheme}://127.0.0.1:{}", m.advertised_peer_port);
        let mut command = Command::new(&self.binary);
        if let Some(n) = self.go_max_procs {
            command.env("GOMAXPROCS", n.to_string());
        }
        if let Some(tls) = &self.tls {
            command
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--peer-client-cert-auth")
                .arg("--peer-trusted-ca-file")
                .arg(&tls.ca)
                .arg("--peer-cert-file")
                .arg(&tls.cert)
                .arg("--peer-key-file")
                .arg(&tls.key);
        }
        command
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &advertised_peer,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.name])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"]);
        m.process = Some(ManagedProcess::spawn(
            format!("etcd {}", m.name),
            command,
            &m.log,
        )?);
        Ok(())
    }

    /// SIGKILL member `i` (its data directory stays).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].process.take() {
            p.kill();
        }
    }

    /// SIGKILL member `i` and delete its data directory (an amnesiac restart
    /// follows with [`EtcdCluster::start_member`] only for single-member clusters).
    pub fn wipe_member(&mut self, i: usize) -> std::io::Result<()> {
        self.kill_member(i);
        match std::fs::remove_dir_all(&self.members[i].data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// SIGSTOP member `i`.
    pub fn pause_member(&self, i: usize) -> Result<(), EtcdError> {
        if let Some(p) = &self.members[i].process {
            p.signal(libc::SIGSTOP)?;
        }
        Ok(())
    }

    /// SIGCONT member `i`.
    pub fn resume_member(&self, i: usize) -> Result<(), EtcdError> {
        if let Some(p) = &self.members[i].process {
            p.signal(libc::SIGCONT)?;
        }
        Ok(())
    }

    /// SIGKILL every member.
    pub fn kill(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }

    /// Restart every stopped member and wait until the cluster is healthy.
    pub fn restart(&mut self) -> Result<(), EtcdError> {
        for i in 0..self.members.len() {
            self.start_member(i)?;
        }
        self.wait_healthy(Duration::from_secs(30))
    }

    /// The index of the member that is Raft leader now, if any answers so.
    pub fn leader(&self) -> Option<usize> {
        self.leaders().into_iter().next()
    }

    /// Every member that says it is leader (an isolated old leader may still say
    /// so for a moment, beside the new one).
    pub fn leaders(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| {
                let m = &self.members[i];
                m.process.is_some()
                    && http_get(m.client_port, self.tls.as_ref(), "/metrics").is_some_and(|body| {
                        body.lines().any(|l| l.trim() == "etcd_server_is_leader 1")
                    })
            })
            .collect()
    }

    /// Each running member's `/metrics` text (`None` for a member that is
    /// down or did not answer).
    pub fn metrics(&self) -> Vec<Option<String>> {
        self.members
            .iter()
            .map(|m| {
                m.process.as_ref()?;
                http_get(m.client_port, self.tls.as_ref(), "/metrics")
            })
            .collect()
    }

    /// Wait until every running member reports healthy (it has a leader).
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), EtcdError> {
        let deadline = Instant::now() + timeout;
        loop {
            let healthy = self
                .members
                .iter()
                .filter(|m| m.process.is_some())
                .all(|m| {
                    http_get(m.client_port, self.tls.as_ref(), "/health")
                        .is_some_and(|b| b.contains("\"health\":\"true\""))
                });
            if healthy {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(EtcdError::Unhealthy {
                    cluster: self.name.clone(),
                    after: timeout,
                    logs: self
                        .members
                        .iter()
                        .map(|m| m.log.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Free client and peer ports for `size` members of cluster `name`.
fn free_member_ports(name: &str, size: usize) -> Result<Vec<MemberPorts>, EtcdError> {
    (0..size)
        .map(|i| {
            let setup = |source| EtcdError::Setup {
                member: format!("{name}-m{i}"),
                source,
            };
            let peer = free_port().map_err(setup)?;
            Ok(MemberPorts {
                client: free_port().map_err(setup)?,
                peer,
                advertised_peer: peer,
            })
        })
        .collect()
}

/// A tiny HTTP/1.0 GET against 127.0.0.1 (etcd's /health and /metrics), over
/// TLS with `tls`'s certificate when given: the body, or `None` on any failure.
fn http_get(port: u16, tls: Option<&TlsFiles>, path: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut response = String::new();
    match tls {
        None => {
            stream.write_all(request.as_bytes()).ok()?;
            stream.read_to_string(&mut response).ok()?;
        }
        Some(files) => {
            let mut config = globallock_tls::config::client(&files.load().ok()?).ok()?;
            config.alpn_protocols.clear(); // HTTP/1.0, not h2
            let name = rustls_pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
            let connection = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
            let mut tls = rustls::StreamOwned::new(connection, stream);
            tls.write_all(request.as_bytes()).ok()?;
            // etcd may close without a close_notify: keep what was read.
            let mut bytes = Vec::new();
            let _ = tls.read_to_end(&mut bytes);
            response = String::from_utf8(bytes).ok()?;
        }
    }
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}
