//! Finding the service through DNS SRV records, with `hickory-resolver`.
//!
//! Two names (`<zone>` is the deployment's DNS zone):
//!
//! | name | what it lists | who looks it up |
//! |---|---|---|
//! | `_globallock-agent._tcp.<region>.<zone>` ([`agent_srv_name`]) | the agent of one region | coordinators configured with `[discovery]` |
//! | `_globallock._tcp.<zone>` ([`coordinator_srv_name`]) | every coordinator | clients and `lockctl --discover` |
//!
//! DNS only says *where* things are. It never says how many regions there
//! are (configuration does), nor who a peer is: TLS checks that (an agent must
//! prove `<region>.agent.globallock` whatever address it was found at; a
//! coordinator must prove the SRV target name a client dialled).
//!
//! A [`Resolver`] asks the system's name servers (`/etc/resolv.conf`) or the
//! ones given, and caches answers for their TTL. [`Resolver::lookup`] gives the
//! targets in the order RFC 2782 says to try them, each with its addresses,
//! which the same name servers resolve. It tells apart a name DNS says is gone
//! ([`DiscoveryError::Absent`]: the caller must treat it as unreachable) from no
//! answer at all ([`DiscoveryError::Lookup`]: DNS is down, the last answer may
//! still be right).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

/// The service label of the agents' records: `_globallock-agent._tcp`.
pub const AGENT_SERVICE: &str = "_globallock-agent._tcp";

/// The service label of the coordinators' records: `_globallock._tcp`.
pub const COORDINATOR_SERVICE: &str = "_globallock._tcp";

/// The SRV name of region `region`'s agent in `zone`:
/// `_globallock-agent._tcp.<region>.<zone>`.
pub fn agent_srv_name(region: &str, zone: &str) -> String {
    format!("{AGENT_SERVICE}.{region}.{}", zone.trim_end_matches('.'))
}

/// The SRV name of every coordinator in `zone`: `_globallock._tcp.<zone>`.
pub fn coordinator_srv_name(zone: &str) -> String {
    format!("{COORDINATOR_SERVICE}.{}", zone.trim_end_matches('.'))
}

/// Why a lookup gave nothing to dial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// DNS answered that there is nothing there: the name does not exist, has
    /// no SRV record, says "no service" (target `.`), or none of its targets
    /// has an address. Whatever it located is unreachable now.
    #[error("{name}: no SRV record to dial ({detail})")]
    Absent {
        /// The SRV name.
        name: String,
        /// What DNS said.
        detail: String,
    },
    /// No answer: the name servers did not answer, failed, or refused. The
    /// last answer may still be right.
    #[error("{name}: DNS lookup failed ({detail})")]
    Lookup {
        /// The SRV name.
        name: String,
        /// What went wrong.
        detail: String,
    },
    /// The resolver cannot be set up (the system's configuration is unreadable,
    /// or a name is not a domain name).
    #[error("DNS resolver: {0}")]
    Config(String),
}

impl DiscoveryError {
    /// True when DNS said the name is gone (not when it did not answer).
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Absent { .. })
    }
}

/// One SRV target: a host, its port, and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The target host name, without the trailing dot (what TLS checks when the
    /// name is the identity, as for coordinators).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The SRV priority (lower first).
    pub priority: u16,
    /// The SRV weight (within a priority).
    pub weight: u16,
    /// The host's addresses with the port, in the order to try them.
    pub addrs: Vec<SocketAddr>,
}

impl Target {
    /// `scheme://host:port`: how the target is named in messages and logs.
    pub fn url(&self, scheme: &str) -> String {
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} (", self.host, self.port)?;
        for (i, addr) in self.addrs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{addr}")?;
        }
        f.write_str(")")
    }
}

/// A DNS resolver for SRV discovery (cheap to clone; clones share the cache).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<TokioResolver>,
    /// Which name servers it asks, for messages.
    servers: String,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver asking `nameservers` (UDP, then TCP for long answers), or,
    /// when there are none, the system's name servers (`/etc/resolv.conf`).
    /// Answers are cached for their TTL. Must be called within a Tokio runtime
    /// to be used.
    pub fn new(nameservers: &[SocketAddr]) -> Result<Self, DiscoveryError> {
        let config_error = |e: NetError| DiscoveryError::Config(e.to_string());
        let (mut builder, servers) = if nameservers.is_empty() {
            (
                TokioResolver::builder_tokio().map_err(config_error)?,
                "the system's name servers (/etc/resolv.conf)".to_owned(),
            )
        } else {
            let servers = nameservers
                .iter()
                .map(|addr| {
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    for connection in &mut server.connections {
                        connection.port = addr.port();
                    }
                    server
                })
                .collect();
            (
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    TokioRuntimeProvider::default(),
                ),
                nameservers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        };
        let options: &mut ResolverOpts = builder.options_mut();
        // A discovery answer is wanted soon or not at all: the caller keeps
        // the last one and tries again.
        options.timeout = std::time::Duration::from_secs(2);
        options.attempts = 2;
        options.try_tcp_on_error = true;
        let inner = builder.build().map_err(config_error)?;
        Ok(Self {
            inner: Arc::new(inner),
            servers,
        })
    }

    /// Which name servers this resolver asks.
    pub fn servers(&self) -> &str {
        &self.servers
    }

    /// Drop the cached answers for `srv_name` (its SRV record), so that the next
    /// lookup asks the name servers again even within the TTL: after a
    /// connection failure, the record may have changed.
    pub fn forget(&self, srv_name: &str) {
        self.inner
            .clear_lookup_cache(fqdn(srv_name).as_str(), RecordType::SRV);
    }

    /// The targets of `srv_name`, in the order RFC 2782 says to try them
    /// (lowest priority first; within a priority, a random order weighted by
    /// weight), each with its addresses. Targets without an address are left
    /// out; if none is left, or the record says "no service", the name is
    /// [`DiscoveryError::Absent`].
    pub async fn lookup(&self, srv_name: &str) -> Result<Vec<Target>, DiscoveryError> {
        let name = srv_name.trim_end_matches('.').to_owned();
        let failed = |e: &NetError| {
            if e.is_no_records_found() {
                DiscoveryError::Absent {
                    name: name.clone(),
                    detail: if e.is_nx_domain() {
                        "the name does not exist".to_owned()
                    } else {
                        "the name has no SRV record".to_owned()
                    },
                }
            } else {
                DiscoveryError::Lookup {
                    name: name.clone(),
                    detail: format!("{e}, asking {}", self.servers),
                }
            }
        };
        let answer = self
            .inner
            .srv_lookup(fqdn(srv_name).as_str())
            .await
            .map_err(|e| failed(&e))?;
        let mut records = Vec::new();
        for record in answer.answers() {
            if let RData::SRV(srv) = &record.data {
                let host = srv.target.to_ascii();
                let host = host.trim_end_matches('.');
                // "." as the only target: the service is decidedly not here.
                if host.is_empty() {
                    continue;
                }
                records.push(Target {
                    host: host.to_owned(),
                    port: srv.port,
                    priority: srv.priority,
                    weight: srv.weight,
                    addrs: Vec::new(),
                });
            }
        }
        if records.is_empty() {
            return Err(DiscoveryError::Absent {
                name,
                detail: "the record lists no target".to_owned(),
            });
        }
        let mut targets = Vec::with_capacity(records.len());
        let mut unresolved = Vec::new();
        let mut unanswered = false;
        for mut target in rfc2782_order(records, &mut random_u64) {
            match self.addresses(&target.host).await {
                Ok(ips) if !ips.is_empty() => {
                    target.addrs = ips
                        .into_iter()
                        .map(|ip| SocketAddr::new(ip, target.port))
                        .collect();
                    targets.push(target);
                }
                Ok(_) => unresolved.push(format!("{} has no address", target.host)),
                Err(e) => {
                    unanswered |= !e.is_no_records_found();
                    unresolved.push(format!("{}: {e}", target.host));
                }
            }
        }
        if targets.is_empty() {
            let detail = format!("no target resolves: {}", unresolved.join("; "));
            return Err(if unanswered {
                DiscoveryError::Lookup { name, detail }
            } else {
                DiscoveryError::Absent { name, detail }
            });
        }
        Ok(targets)
    }

    /// The addresses of `host` (an IP address is its own).
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, NetError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        Ok(self
            .inner
            .lookup_ip(fqdn(host).as_str())
            .await?
            .iter()
            .collect())
    }
}

/// `name` with its trailing dot: looked up as written, never under a search
/// domain.
fn fqdn(name: &str) -> String {
    let mut name = name.to_owned();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

/// 64 random bits from the standard library's randomly seeded hasher (the
/// order only spreads load; nothing depends on it being unpredictable).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}

/// RFC 2782's order: by priority, lowest first; within a priority, pick each
/// next target at random with a chance proportional to its weight (weight-0
/// targets first in the running sum, so they get a small chance).
fn rfc2782_order(mut targets: Vec<Target>, random: &mut dyn FnMut() -> u64) -> Vec<Target> {
    targets.sort_by_key(|t| (t.priority, t.weight != 0));
    let mut ordered = Vec::with_capacity(targets.len());
    let mut rest = targets.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|t| t.priority == first.priority)
            .count();
        let mut group: Vec<Target> = rest[..same].to_vec();
        rest = &rest[same..];
        while !group.is_empty() {
            let total: u64 = group.iter().map(|t| u64::from(t.weight)).sum();
            let pick = random() % (total + 1);
            let mut running = 0;
            let mut chosen = group.len() - 1;
            for (i, target) in group.iter().enumerate() {
                running += u64::from(target.weight);
                if running >= pick {
                    chosen = i;
                    break;
                }
            }
            ordered.push(group.remove(chosen));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, priority: u16, weight: u16) -> Target {
        Target {
            host: host.to_owned(),
            port: 7400,
            priority,
            weight,
            addrs: Vec::new(),
        }
    }

    #[test]
    fn names_follow_the_published_records() {
        assert_eq!(
            agent_srv_name("region-a", "locks.example.com."),
            "_globallock-agent._tcp.region-a.locks.example.com"
        );
        assert_eq!(
            coordinator_srv_name("locks.example.com"),
            "_globallock._tcp.locks.example.com"
        );
        assert_eq!(fqdn("a.b"), "a.b.");
        assert_eq!(fqdn("a.b."), "a.b.");
    }

    #[test]
    fn lower_priorities_come_first_and_weights_pick_the_order_within_one() {
        let targets = vec![
            target("backup", 20, 0),
            target("heavy", 10, 90),
            target("light", 10, 10),
            target("zero", 10, 0),
        ];
        // A draw of 0 picks the first in the running sum, where weight-0
        // targets stand (their only chance).
        let mut zero = || 0;
        let hosts: Vec<String> = rfc2782_order(targets.clone(), &mut zero)
            .into_iter()
            .map(|t| t.host)
            .collect();
        assert_eq!(hosts, ["zero", "heavy", "light", "backup"]);
        // Over many draws the heavier target leads most of the time.
        let mut state = 0x1234_5678_u64;
        let mut lcg = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            state >> 33
        };
        let heavy_first = (0..1000)
            .filter(|_| rfc2782_order(targets.clone(), &mut lcg)[0].host == "heavy")
            .count();
        assert!((800..980).contains(&heavy_first), "{heavy_first}");
        // Every target is kept, the lower priority always last.
        for _ in 0..50 {
            let order = rfc2782_order(targets.clone(), &mut lcg);
            assert_eq!(order.len(), 4);
            assert_eq!(order[3].host, "backup");
        }
    }

    #[test]
    fn targets_are_named_as_urls() {
        let mut t = target("coordinator-0.region-a.example.com", 0, 0);
        t.addrs = vec!["192.0.2.7:7400".parse().expect("an address")];
        assert_eq!(
            t.url("https"),
            "https://coordinator-0.region-a.example.com:7400"
        );
        assert_eq!(
            t.to_string(),
            "coordinator-0.region-a.example.com:7400 (192.0.2.7:7400)"
        );
    }
}
