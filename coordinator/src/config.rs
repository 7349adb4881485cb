//! The coordinator's configuration: a TOML file plus `GLOBALLOCK_COORDINATOR_*`
//! environment overrides, validated before any port is bound.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use globallock_protocol::request::Limits;
use globallock_protocol::ring::{DEFAULT_VNODES, HashRing, RingError};
use globallock_protocol::validity::DriftAllowance;
use globallock_runtime::check_worker_threads;
use globallock_runtime::settings::{InvalidSetting, load_layered, within};
use globallock_tls::{ClientAuth, Reloading, TlsError, TlsFiles};
use serde::Deserialize;
use std::sync::Arc;

/// Environment variables starting with this override file settings, e.g.
/// `GLOBALLOCK_COORDINATOR_LISTEN=127.0.0.1:7401`.
pub const ENV_PREFIX: &str = "GLOBALLOCK_COORDINATOR";

/// Configuration as written (see `coordinator/coordinator.sample.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Address of the public gRPC API.
    pub listen: SocketAddr,
    /// Address of the REST API (absent: no REST).
    #[serde(default)]
    pub rest_listen: Option<SocketAddr>,
    /// Address of the Prometheus `/metrics` endpoint (absent: not served).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// OTLP/gRPC endpoint for traces, e.g. `http://127.0.0.1:4317` (absent: the
    /// standard `OTEL_EXPORTER_OTLP_ENDPOINT`, or no export).
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Append-only JSON-lines audit file (absent: no audit trail).
    #[serde(default)]
    pub audit_log: Option<std::path::PathBuf>,
    /// Threads that run requests: 1 runs everything on one thread (no
    /// hand-offs between threads; best where several services share a few
    /// cores, as in `make dev`), absent one per core.
    #[serde(default)]
    pub worker_threads: Option<u64>,
    /// Acquires per second each owner may make (a flooding client gets
    /// RESOURCE_EXHAUSTED / 429; others are unaffected).
    #[serde(default = "default_acquire_rate")]
    pub acquire_rate_per_owner: f64,
    /// Burst of acquires each owner may make at once.
    #[serde(default = "default_acquire_burst")]
    pub acquire_burst_per_owner: f64,
    /// The regions (an odd number, at least 3); a lock needs a majority of them.
    pub regions: Vec<RegionEntry>,
    /// `[discovery]`: find regions' agents through DNS SRV records (regions
    /// without a static `endpoint`). Absent: every region has an `endpoint`, or
    /// names its `srv` record and the system's name servers are asked.
    #[serde(default)]
    pub discovery: Option<DiscoveryEntry>,
    /// Shard names, the same in every region; resources are routed over them by a
    /// consistent-hash ring.
    pub shards: Vec<String>,
    /// Points per shard on the ring (must match the agents').
    #[serde(default = "default_vnodes")]
    pub ring_vnodes: u32,
    /// The ring's epoch (must match the agents'): raise it on every coordinator
    /// and agent whenever `shards` or `ring_vnodes` changes.
    #[serde(default)]
    pub ring_epoch: u64,
    /// Deadline of each call to a region agent.
    #[serde(default = "default_region_timeout_ms")]
    pub region_timeout_ms: u64,
    /// How often every region's health is probed.
    #[serde(default = "default_health_interval_ms")]
    pub health_interval_ms: u64,
    /// Deadline of a health probe.
    #[serde(default = "default_health_timeout_ms")]
    pub health_timeout_ms: u64,
    /// Shortest TTL a lock may ask for.
    #[serde(default = "default_min_ttl_ms")]
    pub min_ttl_ms: u64,
    /// Longest TTL a lock may ask for.
    #[serde(default = "default_max_ttl_ms")]
    pub max_ttl_ms: u64,
    /// Longest wait an acquire may ask for.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Bound on the relative clock-rate difference between any two machines.
    #[serde(default = "default_drift_rate")]
    pub drift_rate: f64,
    /// Fixed safety margin subtracted from every reported validity.
    #[serde(default = "default_drift_margin_ms")]
    pub drift_margin_ms: u64,
    /// TLS on every door and hop (`[tls]`: `ca`, `cert`, `key`, PEM files,
    /// reloaded when they change). Clients are served with this certificate,
    /// and it is the client certificate shown to agents, so it must carry
    /// `coordinator.globallock` among its DNS names.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Run every door and hop in plaintext. Refused unless set explicitly when
    /// `[tls]` is absent; warned about at every start.
    #[serde(default)]
    pub insecure: bool,
    /// Who may call, and what they may do (`[access]`). Absent: every caller
    /// may do everything (refused unless `open_access = true`).
    #[serde(default)]
    pub access: Option<AccessEntry>,
    /// Serve every caller without identifying it. Refused unless set
    /// explicitly when `[access]` is absent; warned about at every start.
    #[serde(default)]
    pub open_access: bool,
}

/// The `[access]` table: principals and the permissions they have.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessEntry {
    /// `[[access.principals]]`: name, certificate identities, bearer tokens.
    #[serde(default)]
    pub principals: Vec<globallock_protocol::access::PrincipalEntry>,
    /// `[[access.rules]]`: prefix, principals, verbs. Anything not allowed is denied.
    #[serde(default)]
    pub rules: Vec<globallock_protocol::access::Rule>,
    /// Locks one principal may hold through this coordinator (further
    /// acquires: `RESOURCE_EXHAUSTED` / 429 `quota-exceeded`).
    #[serde(default = "default_max_locks_per_principal")]
    pub max_locks_per_principal: usize,
    /// Acquires of one principal that may wait (`wait_ms > 0`) at once in this
    /// coordinator.
    #[serde(default = "default_max_waiters_per_principal")]
    pub max_waiters_per_principal: usize,
}

fn default_max_locks_per_principal() -> usize {
    10_000
}
fn default_max_waiters_per_principal() -> usize {
    1_000
}

/// One region as written: a static `endpoint`, or found through DNS (`srv`,
/// or `[discovery] zone`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionEntry {
    /// The region's name (as its agent's `region` setting spells it).
    pub name: String,
    /// The region agent's URL: `https://host:port` with TLS (the agent must
    /// prove `<name>.agent.globallock`), `http://host:port` with `insecure`.
    /// Empty (absent): the region is found through DNS.
    #[serde(default)]
    pub endpoint: String,
    /// The SRV record that locates the agent, e.g.
    /// `_globallock-agent._tcp.region-a.locks.example.com`. Absent, for a
    /// region without `endpoint`: `_globallock-agent._tcp.<name>.<zone>` of
    /// `[discovery] zone`. After validation, every region without `endpoint`
    /// has it.
    #[serde(default)]
    pub srv: Option<String>,
}

impl RegionEntry {
    /// True when the region is found through DNS (it has no static endpoint).
    pub fn is_discovered(&self) -> bool {
        self.endpoint.is_empty()
    }
}

/// The `[discovery]` table: where regions' SRV records are, and how they are
/// looked up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryEntry {
    /// The deployment's DNS zone: a region with neither `endpoint` nor `srv`
    /// is found at `_globallock-agent._tcp.<region>.<zone>`.
    #[serde(default)]
    pub zone: Option<String>,
    /// Name servers to ask, as `ip:port` (absent: the system's,
    /// `/etc/resolv.conf`).
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
    /// How often every region's record is looked up again (answers are reused
    /// within their TTL; a failed connection to an agent asks again at once).
    #[serde(default = "default_discovery_interval_ms")]
    pub interval_ms: u64,
}

/// Discovery as the coordinator runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// Name servers to ask (empty: the system's).
    pub nameservers: Vec<SocketAddr>,
    /// How often records are looked up again.
    pub interval: Duration,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            interval: Duration::from_millis(default_discovery_interval_ms()),
        }
    }
}

fn default_acquire_rate() -> f64 {
    10_000.0
}
fn default_acquire_burst() -> f64 {
    20_000.0
}
fn default_vnodes() -> u32 {
    DEFAULT_VNODES
}
fn default_discovery_interval_ms() -> u64 {
    30_000
}
fn default_region_timeout_ms() -> u64 {
    1_000
}
fn default_health_interval_ms() -> u64 {
    500
}
fn default_health_timeout_ms() -> u64 {
    300
}
fn default_min_ttl_ms() -> u64 {
    1_000
}
fn default_max_ttl_ms() -> u64 {
    300_000
}
fn default_max_wait_ms() -> u64 {
    60_000
}
fn default_drift_rate() -> f64 {
    0.01
}
fn default_drift_margin_ms() -> u64 {
    10
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or parsed.
    #[error("cannot load configuration")]
    Load(#[from] config::ConfigError),
    /// A setting is out of its bounds.
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
    /// The shard list does not make a ring.
    #[error("shards: {0}")]
    Ring(#[from] RingError),
    /// The TLS files cannot be used.
    #[error("tls")]
    Tls(#[from] TlsError),
}

/// A configuration that passed every check.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// Threads that run requests (`None`: one per core).
    pub worker_threads: Option<usize>,
    /// Where to serve gRPC.
    pub listen: SocketAddr,
    /// Where to serve REST, if anywhere.
    pub rest_listen: Option<SocketAddr>,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to export traces, if configured.
    pub otlp_endpoint: Option<String>,
    /// Where to write the audit trail, if anywhere.
    pub audit_log: Option<std::path::PathBuf>,
    /// Per-owner acquire rate.
    pub acquire_rate: globallock_protocol::rate::Rate,
    /// The regions, in configuration order (their index is their identity).
    /// Each has an `endpoint`, or else an `srv` name to look up.
    pub regions: Vec<RegionEntry>,
    /// How SRV records are looked up (for regions without an `endpoint`).
    pub discovery: DiscoverySettings,
    /// The ring over the shards.
    pub ring: HashRing,
    /// The ring's epoch.
    pub ring_epoch: u64,
    /// Per-call deadline to a region.
    pub region_timeout: Duration,
    /// Health probe period.
    pub health_interval: Duration,
    /// Health probe deadline.
    pub health_timeout: Duration,
    /// Bounds on TTL and wait.
    pub limits: Limits,
    /// Clock drift allowance.
    pub drift: DriftAllowance,
    /// TLS for every door and hop; `None` only with `insecure = true`.
    pub tls: Option<CoordinatorTls>,
    /// Access control; `None` only with `open_access = true`.
    pub access: Option<globallock_protocol::access::AccessControl>,
    /// Caps per principal (only principals are capped: with open access, none).
    pub quotas: crate::quota::QuotaLimits,
}

/// The coordinator's TLS configurations, each reloaded when its files change.
#[derive(Debug, Clone)]
pub struct CoordinatorTls {
    /// The public gRPC door (client certificates optional: they identify callers).
    pub grpc: Arc<Reloading<rustls::ServerConfig>>,
    /// The REST door (HTTP/2 and HTTP/1.1).
    pub rest: Arc<Reloading<rustls::ServerConfig>>,
    /// Calls to agents (mutual TLS).
    pub agents: Arc<Reloading<rustls::ClientConfig>>,
}

impl CoordinatorTls {
    /// Load and check the files (an error stops the coordinator before it binds).
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        use globallock_tls::config;
        use globallock_tls::identity::COORDINATOR;
        let server = |alpn: &'static [&'static [u8]]| {
            config::naming(COORDINATOR.to_owned(), files.cert.clone(), move |m| {
                config::server(m, ClientAuth::Optional, alpn)
            })
        };
        let grpc = Reloading::new(files.clone(), server(&[b"h2"]))?;
        let rest = Reloading::new(files.clone(), server(&[b"h2", b"http/1.1"]))?;
        let agents = Reloading::new(
            files.clone(),
            config::naming(COORDINATOR.to_owned(), files.cert.clone(), config::client),
        )?;
        Ok(Self {
            grpc: Arc::new(grpc),
            rest: Arc::new(rest),
            agents: Arc::new(agents),
        })
    }
}

impl CoordinatorConfig {
    /// Read `path` (TOML), then apply `GLOBALLOCK_COORDINATOR_*` overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Ok(load_layered(path, ENV_PREFIX)?)
    }

    /// Check every setting; the result is what the coordinator runs with.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let invalid =
            |field, problem: String| ConfigError::Invalid(InvalidSetting::new(field, problem));
        let tls = match (&self.tls, self.insecure) {
            (Some(_), true) => {
                return Err(invalid(
                    "insecure",
                    "is true while [tls] is set: choose one".into(),
                ));
            }
            (None, false) => {
                return Err(invalid(
                    "tls",
                    "is not configured: set [tls] ca, cert and key (PEM files), or insecure = true \
                     to run every door and hop in plaintext (never in production)"
                        .into(),
                ));
            }
            (Some(files), false) => Some(CoordinatorTls::load(files)?),
            (None, true) => None,
        };
        let access = match (&self.access, self.open_access) {
            (Some(_), true) => {
                return Err(invalid(
                    "open_access",
                    "is true while [access] is set: choose one".into(),
                ));
            }
            (None, false) => {
                return Err(invalid(
                    "access",
                    "is not configured: list [[access.principals]] and [[access.rules]], or set \
                     open_access = true to let every caller do everything (never in production)"
                        .into(),
                ));
            }
            (Some(a), false) => Some(
                globallock_protocol::access::AccessControl::new(&a.principals, &a.rules)
                    .map_err(|e| invalid("access", e.to_string()))?,
            ),
            (None, true) => None,
        };
        let quotas = match &self.access {
            Some(a) => {
                within(
                    "access.max_locks_per_principal",
                    a.max_locks_per_principal as u64,
                    1,
                    100_000_000,
                )?;
                within(
                    "access.max_waiters_per_principal",
                    a.max_waiters_per_principal as u64,
                    1,
                    10_000_000,
                )?;
                crate::quota::QuotaLimits {
                    max_locks: a.max_locks_per_principal,
                    max_waiters: a.max_waiters_per_principal,
                }
            }
            None => crate::quota::QuotaLimits {
                max_locks: default_max_locks_per_principal(),
                max_waiters: default_max_waiters_per_principal(),
            },
        };
        let n = self.regions.len();
        if n < 3 || n.is_multiple_of(2) {
            return Err(invalid(
                "regions",
                format!("{n} regions configured: need an odd number, at least 3"),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for region in &self.regions {
            if region.name.trim().is_empty() {
                return Err(invalid("regions.name", "must not be empty".into()));
            }
            if !region
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(
                    "regions.name",
                    format!(
                        "{:?}: only ASCII letters, digits, '-', '_' and '.'",
                        region.name
                    ),
                ));
            }
            if !names.insert(region.name.as_str()) {
                return Err(invalid(
                    "regions.name",
                    format!("{:?} is listed twice", region.name),
                ));
            }
            let scheme = if self.tls.is_some() {
                "https://"
            } else {
                "http://"
            };
            if region.is_discovered() {
                continue;
            }
            if region.srv.is_some() {
                return Err(invalid(
                    "regions.srv",
                    format!(
                        "region {:?} has both an endpoint and an srv name: a region is either \
                         static (endpoint) or found through DNS (srv), not both",
                        region.name
                    ),
                ));
            }
            if !region.endpoint.starts_with(scheme) {
                return Err(invalid(
                    "regions.endpoint",
                    format!(
                        "{:?} of region {:?} is not an {scheme} URL ({})",
                        region.endpoint,
                        region.name,
                        if self.tls.is_some() {
                            "agents are called over TLS"
                        } else {
                            "insecure = true calls agents in plaintext"
                        }
                    ),
                ));
            }
        }
        let zone = match &self.discovery {
            Some(DiscoveryEntry {
                zone: Some(zone), ..
            }) => {
                let zone = zone.trim_end_matches('.');
                if !is_dns_name(zone) {
                    return Err(invalid(
                        "discovery.zone",
                        format!("{zone:?} is not a DNS name"),
                    ));
                }
                Some(zone.to_owned())
            }
            _ => None,
        };
        let mut regions = self.regions;
        let mut srv_names = std::collections::HashMap::new();
        for region in &mut regions {
            if !region.is_discovered() {
                continue;
            }
            let srv = match (&region.srv, &zone) {
                (Some(srv), _) => srv.trim_end_matches('.').to_owned(),
                (None, Some(zone)) => globallock_discovery::agent_srv_name(&region.name, zone),
                (None, None) => {
                    return Err(invalid(
                        "regions.endpoint",
                        format!(
                            "region {:?} has no endpoint: set its endpoint, or its srv record, \
                             or [discovery] zone to find it at \
                             _globallock-agent._tcp.<region>.<zone>",
                            region.name
                        ),
                    ));
                }
            };
            if !is_dns_name(&srv) {
                return Err(invalid(
                    "regions.srv",
                    format!("{srv:?} of region {:?} is not a DNS name", region.name),
                ));
            }
            if let Some(other) = srv_names.insert(srv.to_ascii_lowercase(), region.name.clone()) {
                // One agent found under two names would vote twice.
                return Err(invalid(
                    "regions.srv",
                    format!(
                        "{srv:?} is the SRV record of both region {other:?} and region {:?}",
                        region.name
                    ),
                ));
            }
            region.srv = Some(srv);
        }
        let discovery = match &self.discovery {
            Some(entry) => {
                within("discovery.interval_ms", entry.interval_ms, 100, 3_600_000)?;
                DiscoverySettings {
                    nameservers: entry.nameservers.clone(),
                    interval: Duration::from_millis(entry.interval_ms),
                }
            }
            None => DiscoverySettings::default(),
        };
        let mut endpoints = std::collections::HashMap::new();
        for region in regions.iter().filter(|r| !r.is_discovered()) {
            let endpoint = region.endpoint.trim_end_matches('/').to_ascii_lowercase();
            if let Some(other) = endpoints.insert(endpoint, region.name.as_str()) {
                // One agent listed twice would vote twice: a fake majority.
                return Err(invalid(
                    "regions.endpoint",
                    format!(
                        "{:?} is the endpoint of both region {other:?} and region {:?}",
                        region.endpoint, region.name
                    ),
                ));
            }
        }
        for (field, value, least) in [
            ("acquire_rate_per_owner", self.acquire_rate_per_owner, 0.0),
            ("acquire_burst_per_owner", self.acquire_burst_per_owner, 1.0),
        ] {
            if !(value.is_finite() && value > 0.0 && value >= least) {
                return Err(invalid(
                    field,
                    format!(
                        "{value} is out of bounds: must be a finite number above 0 and at least {least}"
                    ),
                ));
            }
        }
        within("region_timeout_ms", self.region_timeout_ms, 10, 60_000)?;
        within("health_interval_ms", self.health_interval_ms, 50, 60_000)?;
        within(
            "health_timeout_ms",
            self.health_timeout_ms,
            10,
            self.health_interval_ms,
        )?;
        within("min_ttl_ms", self.min_ttl_ms, 100, 86_400_000)?;
        within("max_ttl_ms", self.max_ttl_ms, self.min_ttl_ms, 86_400_000)?;
        within("max_wait_ms", self.max_wait_ms, 0, 3_600_000)?;
        within(
            "drift_margin_ms",
            self.drift_margin_ms,
            0,
            self.min_ttl_ms / 2,
        )?;
        if !(0.0..0.5).contains(&self.drift_rate) {
            return Err(invalid(
                "drift_rate",
                format!(
                    "{} is out of bounds: must be at least 0 and below 0.5",
                    self.drift_rate
                ),
            ));
        }
        let ring = HashRing::new(&self.shards, self.ring_vnodes)?;
        if self.rest_listen == Some(self.listen) {
            return Err(invalid(
                "rest_listen",
                format!("{} is also the gRPC listen address", self.listen),
            ));
        }
        let worker_threads = check_worker_threads(self.worker_threads)?;
        Ok(ValidConfig {
            worker_threads,
            access,
            quotas,
            tls,
            listen: self.listen,
            rest_listen: self.rest_listen,
            metrics_listen: self.metrics_listen,
            otlp_endpoint: self.otlp_endpoint,
            audit_log: self.audit_log,
            acquire_rate: globallock_protocol::rate::Rate {
                per_second: self.acquire_rate_per_owner,
                burst: self.acquire_burst_per_owner,
            },
            regions,
            discovery,
            ring,
            ring_epoch: self.ring_epoch,
            region_timeout: Duration::from_millis(self.region_timeout_ms),
            health_interval: Duration::from_millis(self.health_interval_ms),
            health_timeout: Duration::from_millis(self.health_timeout_ms),
            limits: Limits {
                min_ttl: Duration::from_millis(self.min_ttl_ms),
                max_ttl: Duration::from_millis(self.max_ttl_ms),
                max_wait: Duration::from_millis(self.max_wait_ms),
            },
            drift: DriftAllowance {
                rate: self.drift_rate,
                margin: Duration::from_millis(self.drift_margin_ms),
            },
        })
    }
}

/// A host or domain name as DNS writes it: labels of ASCII letters, digits,
/// '-' and '_' (SRV names start with `_service._proto`), separated by dots.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Certificates made for these tests (the sample names files under /etc).
    fn certs() -> &'static globallock_localcluster::ClusterTls {
        globallock_localcluster::ClusterTls::for_tests()
    }

    /// The sample file, with its `[tls]` files replaced by real ones.
    fn sample() -> CoordinatorConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("coordinator.sample.toml");
        let mut config = CoordinatorConfig::load(&path).expect("sample loads");
        assert!(config.tls.is_some(), "the sample runs with TLS");
        config.tls = Some(certs().coordinator.clone());
        config
    }

    #[test]
    fn tls_or_an_explicit_insecure_is_required_and_the_certificate_must_name_a_coordinator() {
        let mut neither = sample();
        neither.tls = None;
        let text = neither.validate().unwrap_err().to_string();
        assert!(
            text.starts_with("tls") && text.contains("insecure = true"),
            "{text}"
        );

        let mut both = sample();
        both.insecure = true;
        let text = both.validate().unwrap_err().to_string();
        assert!(text.starts_with("insecure"), "{text}");

        // An agent's certificate cannot serve as a coordinator's.
        let mut agent_cert = sample();
        agent_cert.tls = Some(certs().agents[0].clone());
        let error = agent_cert.validate().unwrap_err();
        let text = globallock_runtime::error_chain(&error);
        assert!(text.contains("coordinator.globallock"), "{text}");

        // Plaintext, when asked for: agents are then http:// URLs.
        let mut plain = sample();
        plain.tls = None;
        plain.insecure = true;
        let text = plain.clone().validate().unwrap_err().to_string();
        assert!(text.contains("http://"), "{text}");
        for region in &mut plain.regions {
            region.endpoint = region.endpoint.replace("https://", "http://");
        }
        assert!(plain.validate().expect("plaintext config").tls.is_none());
    }

    #[test]
    fn the_sample_file_is_valid() {
        let valid = sample().validate().expect("sample is valid");
        assert_eq!(valid.regions.len(), 3);
        assert_eq!(valid.ring.shards().len(), 2);
    }

    #[test]
    fn errors_name_the_setting_and_bounds() {
        let mut c = sample();
        c.regions.pop();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("regions: 2 regions")
        );
        let mut c = sample();
        c.max_ttl_ms = 10;
        let text = c.validate().unwrap_err().to_string();
        assert!(
            text.starts_with("max_ttl_ms: 10 is out of bounds"),
            "{text}"
        );
        let mut c = sample();
        c.regions[1].name = c.regions[0].name.clone();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("listed twice")
        );
        let mut c = sample();
        c.drift_rate = 0.7;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("drift_rate")
        );
    }

    #[test]
    fn worker_threads_is_absent_or_between_one_and_the_maximum() {
        let c = sample();
        assert_eq!(c.validate().unwrap().worker_threads, None);
        for (n, ok) in [(1, true), (4, true), (0, false), (1_025, false)] {
            let mut c = sample();
            c.worker_threads = Some(n);
            match c.validate() {
                Ok(v) => assert!(ok && v.worker_threads == Some(n as usize), "{n}"),
                Err(e) => assert!(
                    !ok && e.to_string().starts_with("worker_threads: "),
                    "{n}: {e}"
                ),
            }
        }
    }

    #[test]
    fn regression_an_acquire_rate_of_zero_is_refused_not_a_panic() {
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let mut c = sample();
            c.acquire_rate_per_owner = rate;
            let text = c.validate().unwrap_err().to_string();
            assert!(text.starts_with("acquire_rate_per_owner: "), "{text}");
        }
        let mut c = sample();
        c.acquire_burst_per_owner = 0.5;
        let text = c.validate().unwrap_err().to_string();
        assert!(text.starts_with("acquire_burst_per_owner: "), "{text}");
    }

    #[test]
    fn a_region_is_static_or_found_through_dns_and_never_counted_twice() {
        // Without an endpoint, a region needs an SRV name or a zone to find it in.
        let mut c = sample();
        c.regions[1].endpoint.clear();
        let text = c.validate().unwrap_err().to_string();
        assert!(
            text.starts_with("regions.endpoint: ") && text.contains("[discovery] zone"),
            "{text}"
        );

        // The zone names every region's record; a static endpoint stays static.
        let mut c = sample();
        c.regions[1].endpoint.clear();
        c.regions[2].endpoint.clear();
        c.discovery = Some(DiscoveryEntry {
            zone: Some("locks.example.com.".into()),
            nameservers: vec!["127.0.0.1:5353".parse().unwrap()],
            interval_ms: 1_000,
        });
        let valid = c.validate().expect("discovered regions");
        assert_eq!(valid.regions[0].srv, None);
        assert!(!valid.regions[0].is_discovered());
        assert_eq!(
            valid.regions[1].srv.as_deref(),
            Some(
                format!(
                    "_globallock-agent._tcp.{}.locks.example.com",
                    valid.regions[1].name
                )
                .as_str()
            )
        );
        assert!(valid.regions[2].is_discovered());
        assert_eq!(valid.discovery.interval, Duration::from_secs(1));
        assert_eq!(valid.discovery.nameservers.len(), 1);

        // An explicit record needs no zone (the system's name servers are asked).
        let mut c = sample();
        c.regions[0].endpoint.clear();
        c.regions[0].srv = Some("_globallock-agent._tcp.a.example.org".into());
        let valid = c.validate().expect("an explicit srv name");
        assert_eq!(valid.discovery, DiscoverySettings::default());

        // Both at once is ambiguous.
        let mut c = sample();
        c.regions[0].srv = Some("_globallock-agent._tcp.a.example.org".into());
        let text = c.validate().unwrap_err().to_string();
        assert!(
            text.starts_with("regions.srv: ") && text.contains("both"),
            "{text}"
        );

        // One record for two regions would let one agent vote twice.
        let mut c = sample();
        for region in &mut c.regions[..2] {
            region.endpoint.clear();
            region.srv = Some("_globallock-agent._tcp.A.example.org".into());
        }
        c.regions[1].srv = Some("_globallock-agent._tcp.a.example.org.".into());
        let text = c.validate().unwrap_err().to_string();
        assert!(text.contains("SRV record of both region"), "{text}");

        // Not a DNS name; an interval out of bounds.
        let mut c = sample();
        c.regions[0].endpoint.clear();
        c.regions[0].srv = Some("https://agent:7411".into());
        let text = c.validate().unwrap_err().to_string();
        assert!(text.contains("is not a DNS name"), "{text}");
        let mut c = sample();
        c.discovery = Some(DiscoveryEntry {
            zone: None,
            nameservers: Vec::new(),
            interval_ms: 5,
        });
        let text = c.validate().unwrap_err().to_string();
        assert!(text.starts_with("discovery.interval_ms"), "{text}");
    }

    #[test]
    fn regression_two_regions_on_one_endpoint_are_refused() {
        // One agent listed under two names would count twice toward a majority.
        let mut c = sample();
        c.regions[2].endpoint = format!("{}/", c.regions[0].endpoint);
        let text = c.validate().unwrap_err().to_string();
        assert!(
            text.starts_with("regions.endpoint: ") && text.contains("both region"),
            "{text}"
        );
    }
}
