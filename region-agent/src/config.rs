//! The agent's configuration: a TOML file plus `GLOBALLOCK_AGENT_*` environment
//! overrides, validated before any port is bound.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use globallock_etcd::ShardConfig;
use globallock_protocol::ring::{DEFAULT_VNODES, HashRing, RingError};
use globallock_runtime::check_worker_threads;
use globallock_runtime::settings::{InvalidSetting, load_layered, within};
use serde::Deserialize;

/// Environment variables starting with this override file settings, e.g.
/// `GLOBALLOCK_AGENT_LISTEN=127.0.0.1:7411`.
pub const ENV_PREFIX: &str = "GLOBALLOCK_AGENT";

/// Configuration as written (see `region-agent/agent.sample.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This region's name, as coordinators know it.
    pub region: String,
    /// Address to serve the agent API on.
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint (absent: not served).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// OTLP/gRPC endpoint for traces (absent: `OTEL_EXPORTER_OTLP_ENDPOINT`, or none).
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Append-only JSON-lines audit file for expiries this region notices.
    #[serde(default)]
    pub audit_log: Option<std::path::PathBuf>,
    /// Threads that run requests: 1 runs everything on one thread (no
    /// hand-offs between threads; best where several services share a few
    /// cores, as in `make dev`), absent one per core.
    #[serde(default)]
    pub worker_threads: Option<u64>,
    /// Key prefix inside every shard's etcd.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Deadline of each etcd request.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Grid of shared lease deadlines; grants linger at most this long past their TTL.
    #[serde(default = "default_lease_granularity_ms")]
    pub lease_granularity_ms: u64,
    /// How long an abort refuses a late proposal for the same lock id.
    #[serde(default = "default_tombstone_ttl_ms")]
    pub tombstone_ttl_ms: u64,
    /// How long a shard whose etcd lost its data stays silent: at least the
    /// coordinators' max TTL plus a lock delay.
    #[serde(default = "default_quarantine_ms")]
    pub quarantine_ms: u64,
    /// Longest TTL this region grants or renews (ms). A grant must never outlive
    /// the quarantine of a shard that forgot it, so validation requires
    /// `quarantine_ms >= max_ttl_ms × (1 + drift_rate) + lease_granularity_ms`.
    #[serde(default = "default_max_ttl_ms")]
    pub max_ttl_ms: u64,
    /// Bound on clock-rate differences between machines (assumption A1), e.g.
    /// 0.01 for 1 %.
    #[serde(default = "default_drift_rate")]
    pub drift_rate: f64,
    /// Fencing tokens more than this far (ms) above this agent's wall clock are
    /// refused: a coordinator whose clock ran away would otherwise leave marks that
    /// a rejoining amnesiac shard's floor (taken from the wall clock) stays below.
    /// Must be below `quarantine_ms`.
    #[serde(default = "default_max_token_lead_ms")]
    pub max_token_lead_ms: u64,
    /// A proposal that arrives more than this (ms) after its coordinator's
    /// deadline is refused (DEADLINE_EXCEEDED): such a grant would hold the
    /// resource for nobody. Coordinators state the deadline on this agent's own
    /// clock (from their health probes), so this only covers a step of this
    /// clock between two probes. Too small refuses grants, never breaks safety.
    #[serde(default = "default_late_proposal_slack_ms")]
    pub late_proposal_slack_ms: u64,
    /// TLS on the agent API (`[tls]`: `ca`, `cert`, `key`, PEM files, reloaded
    /// when they change). The certificate must carry `<region>.agent.globallock`
    /// among its DNS names (coordinators check it), and only callers whose
    /// certificate carries `coordinator.globallock` are served.
    #[serde(default)]
    pub tls: Option<globallock_tls::TlsFiles>,
    /// Serve the agent API in plaintext. Refused unless set explicitly when
    /// `[tls]` is absent; warned about at every start.
    #[serde(default)]
    pub insecure: bool,
    /// TLS towards every shard's etcd (`[etcd_tls]`: `ca`, `cert`, `key`, and
    /// optionally `server_name`, the name etcd's certificate must carry). The
    /// agent presents `cert` (etcd's `--client-cert-auth`); every endpoint must
    /// then be `https://`. Reloaded when the files change.
    #[serde(default)]
    pub etcd_tls: Option<globallock_etcd::EtcdTls>,
    /// Talk to etcd in plaintext (`http://` endpoints). Refused unless set
    /// explicitly when `[etcd_tls]` is absent; warned about at every start.
    #[serde(default)]
    pub etcd_insecure: bool,
    /// Shards without an incarnation marker at start are new (write it) rather than
    /// amnesiac (quarantine). Only for a brand-new deployment.
    #[serde(default)]
    pub bootstrap: bool,
    /// How often to compact each shard's etcd history (0 disables).
    #[serde(default = "default_compaction_interval_s")]
    pub compaction_interval_s: u64,
    /// Revisions of history kept at each compaction.
    #[serde(default = "default_compaction_keep_revisions")]
    pub compaction_keep_revisions: i64,
    /// How often to collect the fencing-token marks of resources that were not
    /// locked since the previous sweep (seconds; 0 = never, and every resource
    /// ever locked keeps a key forever).
    #[serde(default = "default_mark_sweep_interval_s")]
    pub mark_sweep_interval_s: u64,
    /// Where the agent keeps what it must remember across restarts (per shard:
    /// the etcd cluster id and highest revision seen, to notice an etcd restored
    /// to older data). Absent: memory only, and a restore while the agent was
    /// down goes unnoticed (a warning at start says so).
    #[serde(default)]
    pub state_dir: Option<std::path::PathBuf>,
    /// Points per shard on the hash ring (must match the coordinators').
    #[serde(default = "default_vnodes")]
    pub ring_vnodes: u32,
    /// The ring's epoch: raise it (on every agent and coordinator) whenever the
    /// shard list or `ring_vnodes` changes. Agents refuse proposals of another
    /// epoch, and hand moved resources over safely (`docs/operations.md`).
    #[serde(default)]
    pub ring_epoch: u64,
    /// This region's shards; names must match the coordinators' shard list.
    pub shards: Vec<ShardEntry>,
}

/// One shard as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// The shard's name (the same in every region).
    pub name: String,
    /// This region's etcd client URLs for it.
    pub endpoints: Vec<String>,
}

fn default_prefix() -> String {
    "/globallock/".into()
}
fn default_request_timeout_ms() -> u64 {
    1_000
}
fn default_lease_granularity_ms() -> u64 {
    1_000
}
fn default_tombstone_ttl_ms() -> u64 {
    60_000
}
fn default_quarantine_ms() -> u64 {
    330_000
}
fn default_max_ttl_ms() -> u64 {
    300_000
}
fn default_drift_rate() -> f64 {
    0.01
}
fn default_max_token_lead_ms() -> u64 {
    60_000
}
fn default_late_proposal_slack_ms() -> u64 {
    1_000
}
fn default_compaction_interval_s() -> u64 {
    300
}
fn default_compaction_keep_revisions() -> i64 {
    10_000
}
fn default_mark_sweep_interval_s() -> u64 {
    3_600
}
fn default_vnodes() -> u32 {
    DEFAULT_VNODES
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
    Tls(#[from] globallock_tls::TlsError),
    /// The TLS files towards etcd cannot be used.
    #[error("etcd_tls")]
    EtcdTls(#[source] globallock_tls::TlsError),
}

/// The agent's own bounds on what coordinators propose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentLimits {
    /// Longest TTL granted or renewed.
    pub max_ttl: Duration,
    /// How far above this agent's wall clock a fencing token may be.
    pub max_token_lead: Duration,
    /// How late after its deadline a proposal is still taken.
    pub late_slack: Duration,
}

/// A configuration that passed every check.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// Threads that run requests (`None`: one per core).
    pub worker_threads: Option<usize>,
    /// The region name.
    pub region: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to export traces, if configured.
    pub otlp_endpoint: Option<String>,
    /// Where to write expiry audit records, if anywhere.
    pub audit_log: Option<std::path::PathBuf>,
    /// The shards, ready to connect.
    pub shards: Vec<ShardConfig>,
    /// The ring over the shard names.
    pub ring: HashRing,
    /// Write missing incarnation markers at start (brand-new deployment).
    pub bootstrap: bool,
    /// What the agent refuses before touching etcd.
    pub limits: AgentLimits,
    /// The ring's epoch.
    pub ring_epoch: u64,
    /// Points per shard (stored with the ring, to notice a change).
    pub ring_vnodes: u32,
    /// Where the agent keeps state across restarts, if anywhere.
    pub state_dir: Option<std::path::PathBuf>,
    /// How long a shard stays silent after data loss; also how long moved
    /// resources wait after a ring change.
    pub quarantine: Duration,
    /// Compaction period (`None`: never).
    pub compaction_interval: Option<Duration>,
    /// Revisions kept at each compaction.
    pub compaction_keep_revisions: i64,
    /// Mark sweep period (`None`: never).
    pub mark_sweep_interval: Option<Duration>,
    /// The agent API's TLS (client certificates required); `None` only with
    /// `insecure = true`.
    pub tls: Option<Arc<globallock_tls::Reloading<rustls::ServerConfig>>>,
    /// `/metrics` over TLS with the same certificate (client certificates
    /// optional); `None` only with `insecure = true`.
    pub metrics_tls: Option<Arc<globallock_tls::Reloading<rustls::ServerConfig>>>,
}

impl AgentConfig {
    /// etcd is reached over TLS (`https://` endpoints, files that load), or in
    /// plaintext only when `etcd_insecure = true` says so.
    fn check_etcd_tls(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: String| {
            ConfigError::Invalid(InvalidSetting::new(field, reason))
        };
        let scheme = match (&self.etcd_tls, self.etcd_insecure) {
            (Some(_), true) => {
                return Err(invalid(
                    "etcd_insecure",
                    "is true while [etcd_tls] is set: choose one".into(),
                ));
            }
            (None, false) => {
                return Err(invalid(
                    "etcd_tls",
                    "is not configured: set [etcd_tls] ca, cert and key (PEM files) to reach etcd \
                     over TLS with a client certificate, or etcd_insecure = true for plaintext \
                     (never across a network you do not own)"
                        .into(),
                ));
            }
            (Some(tls), false) => {
                tls.check().map_err(ConfigError::EtcdTls)?;
                "https://"
            }
            (None, true) => "http://",
        };
        for shard in &self.shards {
            if let Some(bad) = shard.endpoints.iter().find(|e| !e.starts_with(scheme)) {
                return Err(invalid(
                    "shards.endpoints",
                    format!(
                        "{bad:?} of shard {:?} is not an {scheme} URL ({})",
                        shard.name,
                        if scheme == "https://" {
                            "[etcd_tls] is set"
                        } else {
                            "etcd_insecure = true"
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Read `path` (TOML), then apply `GLOBALLOCK_AGENT_*` overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Ok(load_layered(path, ENV_PREFIX)?)
    }

    /// Check every setting; the result is what the agent runs with.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let invalid =
            |field, problem: String| ConfigError::Invalid(InvalidSetting::new(field, problem));
        if self.region.trim().is_empty() {
            return Err(invalid("region", "must not be empty".into()));
        }
        if !self
            .region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            // Every answer names the region in gRPC metadata (ASCII only).
            return Err(invalid(
                "region",
                format!(
                    "{:?}: only ASCII letters, digits, '-', '_' and '.'",
                    self.region
                ),
            ));
        }
        within("request_timeout_ms", self.request_timeout_ms, 10, 60_000)?;
        within(
            "lease_granularity_ms",
            self.lease_granularity_ms,
            100,
            60_000,
        )?;
        within("tombstone_ttl_ms", self.tombstone_ttl_ms, 1_000, 3_600_000)?;
        within("quarantine_ms", self.quarantine_ms, 1_000, 86_400_000)?;
        within("max_ttl_ms", self.max_ttl_ms, 100, 86_400_000)?;
        if !(0.0..0.5).contains(&self.drift_rate) {
            return Err(invalid(
                "drift_rate",
                format!(
                    "{} is out of bounds: must be at least 0 and below 0.5",
                    self.drift_rate
                ),
            ));
        }
        // A shard that lost its data stays silent for the quarantine; every grant
        // it forgot must have expired by then, measured on any machine's clock.
        let outlives = (self.max_ttl_ms as f64 * (1.0 + self.drift_rate)).ceil() as u64
            + self.lease_granularity_ms;
        if self.quarantine_ms < outlives {
            return Err(invalid(
                "quarantine_ms",
                format!(
                    "{} is below max_ttl_ms {} × (1 + drift_rate {}) + lease_granularity_ms {} = {outlives}: \
                     a lock this region forgot could still be valid when it votes again",
                    self.quarantine_ms, self.max_ttl_ms, self.drift_rate, self.lease_granularity_ms
                ),
            ));
        }
        within(
            "max_token_lead_ms",
            self.max_token_lead_ms,
            1,
            self.quarantine_ms - 1,
        )?;
        within(
            "late_proposal_slack_ms",
            self.late_proposal_slack_ms,
            0,
            600_000,
        )?;
        if self.metrics_listen == Some(self.listen) {
            return Err(invalid(
                "metrics_listen",
                format!("{} is also the agent's listen address", self.listen),
            ));
        }
        if self.ring_epoch > 0 && self.state_dir.is_none() {
            // Without a memory of the previous ring, moved resources cannot be
            // handed over safely.
            return Err(invalid(
                "ring_epoch",
                format!(
                    "{} needs state_dir: an agent hands moved resources over only if it remembers the previous ring",
                    self.ring_epoch
                ),
            ));
        }
        if self.compaction_keep_revisions < 1 {
            return Err(invalid(
                "compaction_keep_revisions",
                "must be at least 1".into(),
            ));
        }
        if self.key_prefix.is_empty() || !self.key_prefix.starts_with('/') {
            return Err(invalid(
                "key_prefix",
                format!("{:?} must start with '/'", self.key_prefix),
            ));
        }
        for shard in &self.shards {
            if shard.endpoints.is_empty() {
                return Err(invalid(
                    "shards.endpoints",
                    format!("shard {:?} has no endpoints", shard.name),
                ));
            }
            if let Some(bad) = shard
                .endpoints
                .iter()
                .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
            {
                return Err(invalid(
                    "shards.endpoints",
                    format!(
                        "{bad:?} of shard {:?} is not an http:// or https:// URL",
                        shard.name
                    ),
                ));
            }
        }
        self.check_etcd_tls()?;
        let names: Vec<String> = self.shards.iter().map(|s| s.name.clone()).collect();
        let ring = HashRing::new(&names, self.ring_vnodes)?;
        let request_timeout = Duration::from_millis(self.request_timeout_ms);
        let shards = self
            .shards
            .into_iter()
            .map(|s| ShardConfig {
                state_file: self
                    .state_dir
                    .as_ref()
                    .map(|dir| dir.join(format!("{}.watermark.json", s.name))),
                name: s.name,
                endpoints: s.endpoints,
                prefix: self.key_prefix.clone(),
                request_timeout,
                lease_granularity: Duration::from_millis(self.lease_granularity_ms),
                tombstone_ttl: Duration::from_millis(self.tombstone_ttl_ms),
                quarantine: Duration::from_millis(self.quarantine_ms),
                drift_rate: self.drift_rate,
                tls: self.etcd_tls.clone(),
            })
            .collect();
        let (tls, metrics_tls) = match (&self.tls, self.insecure) {
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
                     to serve the agent API in plaintext (never in production)"
                        .into(),
                ));
            }
            (Some(files), false) => {
                let name = globallock_tls::identity::agent(&self.region);
                globallock_tls::identity::server_name(&name)?;
                let server = |auth, alpn: &'static [&'static [u8]]| {
                    globallock_tls::config::naming(name.clone(), files.cert.clone(), move |m| {
                        globallock_tls::config::server(m, auth, alpn)
                    })
                };
                let api = server(globallock_tls::ClientAuth::Required, &[b"h2"]);
                // `/metrics`: the same certificate; scrapers need not present one.
                let metrics = server(globallock_tls::ClientAuth::Optional, &[b"h2", b"http/1.1"]);
                (
                    Some(Arc::new(globallock_tls::Reloading::new(
                        files.clone(),
                        api,
                    )?)),
                    Some(Arc::new(globallock_tls::Reloading::new(
                        files.clone(),
                        metrics,
                    )?)),
                )
            }
            (None, true) => (None, None),
        };
        let worker_threads = check_worker_threads(self.worker_threads)?;
        Ok(ValidConfig {
            worker_threads,
            tls,
            metrics_tls,
            region: self.region,
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            otlp_endpoint: self.otlp_endpoint,
            audit_log: self.audit_log,
            bootstrap: self.bootstrap,
            ring_epoch: self.ring_epoch,
            ring_vnodes: self.ring_vnodes,
            state_dir: self.state_dir.clone(),
            quarantine: Duration::from_millis(self.quarantine_ms),
            limits: AgentLimits {
                max_ttl: Duration::from_millis(self.max_ttl_ms),
                max_token_lead: Duration::from_millis(self.max_token_lead_ms),
                late_slack: Duration::from_millis(self.late_proposal_slack_ms),
            },
            shards,
            ring,
            compaction_interval: (self.compaction_interval_s > 0)
                .then(|| Duration::from_secs(self.compaction_interval_s)),
            compaction_keep_revisions: self.compaction_keep_revisions,
            mark_sweep_interval: (self.mark_sweep_interval_s > 0)
                .then(|| Duration::from_secs(self.mark_sweep_interval_s)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Certificates made for these tests (the sample names files under /etc).
    fn certs() -> &'static globallock_localcluster::ClusterTls {
        globallock_localcluster::ClusterTls::for_tests()
    }

    /// The sample file (region-a), with its `[tls]` files replaced by real ones.
    fn sample() -> AgentConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent.sample.toml");
        let mut config = AgentConfig::load(&path).expect("sample loads");
        assert!(config.tls.is_some(), "the sample runs with TLS");
        assert_eq!(config.region, "region-a");
        config.tls = Some(certs().agents[0].clone());
        let etcd = &certs().etcd[0];
        let sample_etcd = config
            .etcd_tls
            .take()
            .expect("the sample reaches etcd over TLS");
        config.etcd_tls = Some(globallock_etcd::EtcdTls {
            ca: etcd.agent.ca.clone(),
            cert: etcd.agent.cert.clone(),
            key: etcd.agent.key.clone(),
            server_name: sample_etcd.server_name,
        });
        config
    }

    #[test]
    fn etcd_is_reached_over_tls_unless_etcd_insecure_says_otherwise() {
        let valid = sample().validate().expect("sample is valid");
        let tls = valid.shards[0]
            .tls
            .as_ref()
            .expect("shards carry [etcd_tls]");
        assert_eq!(tls.server_name.as_deref(), Some("region-a.etcd.globallock"));
        let mut neither = sample();
        neither.etcd_tls = None;
        let text = neither.validate().unwrap_err().to_string();
        assert!(
            text.starts_with("etcd_tls: is not configured")
                && text.contains("etcd_insecure = true"),
            "{text}"
        );
        let mut both = sample();
        both.etcd_insecure = true;
        assert!(
            both.validate()
                .unwrap_err()
                .to_string()
                .starts_with("etcd_insecure")
        );
        // TLS configured, but an endpoint in plaintext: refused, not silently downgraded.
        let mut mixed = sample();
        mixed.shards[1].endpoints = vec!["http://127.0.0.1:2479".into()];
        let text = mixed.validate().unwrap_err().to_string();
        assert!(text.contains("is not an https:// URL"), "{text}");
        // Plaintext endpoints with etcd_insecure.
        let mut plain = sample();
        plain.etcd_tls = None;
        plain.etcd_insecure = true;
        for shard in &mut plain.shards {
            shard.endpoints = vec!["http://127.0.0.1:2379".into()];
        }
        assert!(
            plain.validate().expect("plaintext etcd").shards[0]
                .tls
                .is_none()
        );
        // Files that do not load are refused before any port is bound.
        let mut missing = sample();
        if let Some(tls) = missing.etcd_tls.as_mut() {
            tls.key = "/nonexistent/agent-etcd.key".into();
        }
        let text = globallock_runtime::error_chain(&missing.validate().unwrap_err());
        assert!(
            text.starts_with("etcd_tls") && text.contains("/nonexistent/agent-etcd.key"),
            "{text}"
        );
    }

    #[test]
    fn tls_or_an_explicit_insecure_is_required_and_the_certificate_must_name_this_region() {
        let mut neither = sample();
        neither.tls = None;
        let text = neither.validate().unwrap_err().to_string();
        assert!(
            text.starts_with("tls") && text.contains("insecure = true"),
            "{text}"
        );
        let mut both = sample();
        both.insecure = true;
        assert!(
            both.validate()
                .unwrap_err()
                .to_string()
                .starts_with("insecure")
        );
        // Region B's agent certificate, or a coordinator's, cannot serve region A.
        for other in [&certs().agents[1], &certs().coordinator] {
            let mut wrong = sample();
            wrong.tls = Some(other.clone());
            let text = globallock_runtime::error_chain(&wrong.validate().unwrap_err());
            assert!(text.contains("region-a.agent.globallock"), "{text}");
        }
        let mut plain = sample();
        plain.tls = None;
        plain.insecure = true;
        assert!(plain.validate().expect("plaintext config").tls.is_none());
    }

    #[test]
    fn the_sample_file_is_valid() {
        let valid = sample().validate().expect("sample is valid");
        assert_eq!(valid.shards.len(), 2);
    }

    #[test]
    fn errors_name_the_setting() {
        let mut c = sample();
        c.request_timeout_ms = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("request_timeout_ms")
        );
        let mut c = sample();
        c.shards[1].name = c.shards[0].name.clone();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Ring(RingError::Duplicate(_)))
        ));
        let mut c = sample();
        c.shards[0].endpoints = vec!["127.0.0.1:2379".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("not an http")
        );
    }

    #[test]
    fn regression_a_ttl_that_could_outlive_the_quarantine_is_refused() {
        // Hole 4: agents accepted TTLs up to 24 h with a 330 s quarantine.
        let mut c = sample();
        c.max_ttl_ms = 400_000;
        let text = c.validate().unwrap_err().to_string();
        assert!(
            text.starts_with("quarantine_ms: 330000 is below max_ttl_ms 400000"),
            "{text}"
        );
        let mut c = sample();
        c.quarantine_ms = 303_000; // 300 000 × 1.01 + 1 000 = 304 000
        assert!(c.validate().is_err());
        let mut c = sample();
        c.quarantine_ms = 304_000;
        assert_eq!(
            c.validate().expect("just enough").limits.max_ttl,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn the_token_lead_must_be_below_the_quarantine() {
        let mut c = sample();
        c.max_token_lead_ms = c.quarantine_ms;
        let text = c.validate().unwrap_err().to_string();
        assert!(text.starts_with("max_token_lead_ms"), "{text}");
    }

    #[test]
    fn a_ring_epoch_above_zero_needs_a_state_dir() {
        let mut c = sample();
        c.ring_epoch = 1;
        c.state_dir = None;
        let text = c.validate().unwrap_err().to_string();
        assert!(text.starts_with("ring_epoch: 1 needs state_dir"), "{text}");
    }
}
