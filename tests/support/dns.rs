//! A real DNS server for the discovery tests: Debian's `dnsmasq` (package
//! `dnsmasq-base`) on a free loopback port, answering for one zone from a
//! configuration file of `srv-host` and `host-record` lines.
//!
//! dnsmasq re-reads only its hosts files on SIGHUP, not `srv-host` lines, so a
//! change of records ([`DnsServer::apply`]) restarts it on the same port; while
//! it restarts, queries go unanswered (as when a real DNS server blips). It is
//! killed by pid when the handle drops (and dies with the test process).
//! Names outside the zone are refused; names inside it that have no record are
//! NXDOMAIN (`local=/zone/`). Records have TTL 0, so nothing is cached.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use globallock_localcluster::{ManagedProcess, free_port};

/// One SRV target: host, port, priority, weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    /// The target host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Lower is tried first.
    pub priority: u16,
    /// Within a priority, the share of picks.
    pub weight: u16,
}

impl SrvTarget {
    /// `host:port`, priority 0, weight 0.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            priority: 0,
            weight: 0,
        }
    }
}

/// A running dnsmasq serving one zone.
#[derive(Debug)]
pub struct DnsServer {
    zone: String,
    addr: SocketAddr,
    dir: PathBuf,
    srv: BTreeMap<String, Vec<SrvTarget>>,
    hosts: BTreeMap<String, IpAddr>,
    process: Option<ManagedProcess>,
    /// How many times it was started.
    starts: u32,
}

/// The dnsmasq binary: on PATH, or where Debian installs it (/usr/sbin is not
/// on every user's PATH).
fn dnsmasq() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("dnsmasq"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_default();
    on_path
        .or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/dnsmasq");
            sbin.is_file().then_some(sbin)
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "dnsmasq is not installed: the DNS discovery tests run a real DNS server. \
                 Run scripts/install-deps.sh (Debian package dnsmasq-base)"
            )
        })
}

/// The probe record that tells the server answers.
const READY: &str = "_ready._tcp";

impl DnsServer {
    /// Start dnsmasq for `zone` on a free loopback port, keeping its
    /// configuration and log under `dir`. It answers before this returns.
    pub async fn start(dir: &Path, zone: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let zone = zone.trim_end_matches('.').to_owned();
        let mut server = Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)),
            dir: dir.to_owned(),
            srv: BTreeMap::new(),
            hosts: BTreeMap::new(),
            process: None,
            starts: 0,
            zone,
        };
        server.apply().await?;
        Ok(server)
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The zone it answers for.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// `name.<zone>`.
    pub fn name(&self, name: &str) -> String {
        format!("{name}.{}", self.zone)
    }

    /// The process id of the running dnsmasq.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, ManagedProcess::pid)
    }

    /// Set the SRV record `name` to `targets` (applied by [`DnsServer::apply`]).
    pub fn set_srv(&mut self, name: &str, targets: Vec<SrvTarget>) -> &mut Self {
        self.srv
            .insert(name.trim_end_matches('.').to_owned(), targets);
        self
    }

    /// Remove the SRV record `name` (applied by [`DnsServer::apply`]).
    pub fn remove_srv(&mut self, name: &str) -> &mut Self {
        self.srv.remove(name.trim_end_matches('.'));
        self
    }

    /// Set the address record of `host` (applied by [`DnsServer::apply`]).
    pub fn set_host(&mut self, host: &str, ip: IpAddr) -> &mut Self {
        self.hosts.insert(host.trim_end_matches('.').to_owned(), ip);
        self
    }

    /// Write the records and (re)start dnsmasq with them; returns once it
    /// answers.
    pub async fn apply(&mut self) -> anyhow::Result<()> {
        let conf = self.dir.join("dnsmasq.conf");
        let mut text = format!(
            "# written by tests/support/dns.rs\nlocal=/{zone}/\nsrv-host={READY}.{zone},ready.{zone},1\nhost-record=ready.{zone},127.0.0.1\n",
            zone = self.zone
        );
        for (name, targets) in &self.srv {
            for t in targets {
                text.push_str(&format!(
                    "srv-host={name},{},{},{},{}\n",
                    t.host, t.port, t.priority, t.weight
                ));
            }
        }
        for (host, ip) in &self.hosts {
            text.push_str(&format!("host-record={host},{ip}\n"));
        }
        std::fs::write(&conf, text)?;
        if let Some(mut old) = self.process.take() {
            tokio::task::spawn_blocking(move || old.terminate(Duration::from_secs(2))).await?;
        }
        let mut command = Command::new(dnsmasq()?);
        command
            .arg("--no-daemon")
            .arg(format!("--conf-file={}", conf.display()))
            .arg(format!("--port={}", self.addr.port()))
            .arg(format!("--listen-address={}", self.addr.ip()))
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--local-ttl=0")
            .arg(format!(
                "--pid-file={}",
                self.dir.join("dnsmasq.pid").display()
            ))
            .arg("--log-queries");
        self.starts += 1;
        let log = self.dir.join("dnsmasq.log");
        self.process = Some(ManagedProcess::spawn(
            format!("dnsmasq for {} (start {})", self.zone, self.starts),
            command,
            &log,
        )?);
        self.wait_ready(&log).await
    }

    async fn wait_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let resolver = globallock_discovery::Resolver::new(&[self.addr])?;
        let ready = format!("{READY}.{}", self.zone);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let running = self
                .process
                .as_mut()
                .is_some_and(ManagedProcess::is_running);
            if running && resolver.lookup(&ready).await.is_ok() {
                return Ok(());
            }
            if !running || tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "dnsmasq on {} does not answer (running: {running}); its log:\n{}",
                    self.addr,
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop it (also done on drop).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}
