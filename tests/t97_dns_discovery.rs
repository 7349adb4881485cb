//! Discovery through DNS against a real DNS server (dnsmasq on a loopback
//! port, `harness::dns`): coordinators find every region's agent through
//! `_globallock-agent._tcp.<region>.<zone>`, and clients find coordinators
//! through `_globallock._tcp.<zone>`, all over TLS.
//!
//! - the lock life cycle with every agent found by SRV;
//! - a record that moves (to a fault proxy in front of the same agent) while
//!   a lock is held: the lock renews, new acquires work, and the coordinator
//!   now dials the new target;
//! - a failed connection makes the coordinator look the record up again at
//!   once, long before its schedule;
//! - a record that disappears makes its region unreachable, never a smaller
//!   quorum: 2 of 3 still grant, 1 of 3 never does, and a record pointing at
//!   another region's agent does not make that agent count twice;
//! - the client library finds coordinators by SRV, looks the record up again
//!   when none answers, and checks each coordinator's certificate against the
//!   SRV target name it dials.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use coordinator::config::DiscoveryEntry;
use globallock_client::{Client, ClientError, ClientTls, Discovery, EndpointProblem};
use globallock_discovery::{agent_srv_name, coordinator_srv_name};
use globallock_localcluster::{FaultProxy, Faults, Role};
use globallock_proto::v1::{DescribeRequest, ReleaseRequest, RenewRequest};
use harness::dns::{DnsServer, SrvTarget};
use harness::{Cluster, ClusterOptions, REGIONS, acquire, eventually};
use tonic::Code;

/// The zone the test DNS server answers for (`.test` is reserved for tests).
const ZONE: &str = "globallock.test";

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Point region `region`'s SRV record at `host.<zone>` (an address record to
/// `addr`'s IP) on `addr`'s port. Applied by the caller.
fn point(dns: &mut DnsServer, region: &str, host: &str, addr: SocketAddr) {
    let host = dns.name(host);
    dns.set_host(&host, addr.ip());
    dns.set_srv(
        &agent_srv_name(region, ZONE),
        vec![SrvTarget::new(host, addr.port())],
    );
}

/// A TLS cluster (etcd, agents) and a DNS server whose records point at each
/// region's agent as `agent-X.<zone>`; no coordinator yet.
async fn cluster_and_dns() -> anyhow::Result<(Cluster, DnsServer)> {
    let cluster = Cluster::start(ClusterOptions {
        tls: true,
        coordinators: 0,
        ..ClusterOptions::default()
    })
    .await?;
    let mut dns = DnsServer::start(&cluster.dir().join("dns"), ZONE).await?;
    for (r, region) in REGIONS.iter().enumerate() {
        let letter = region.trim_start_matches("region-");
        point(
            &mut dns,
            region,
            &format!("agent-{letter}"),
            cluster.regions[r].agent_addr,
        );
    }
    dns.apply().await?;
    Ok((cluster, dns))
}

/// Start a coordinator that finds every agent through `dns`, looking the
/// records up every `interval_ms`.
async fn start_discovering(
    cluster: &mut Cluster,
    dns: &DnsServer,
    interval_ms: u64,
) -> anyhow::Result<()> {
    cluster
        .start_coordinator_discovering(DiscoveryEntry {
            zone: Some(ZONE.to_owned()),
            nameservers: vec![dns.addr()],
            interval_ms,
        })
        .await?;
    Ok(())
}

/// [`cluster_and_dns`] with a coordinator looking the records up every 300 ms.
async fn discovering_cluster() -> anyhow::Result<(Cluster, DnsServer)> {
    let (mut cluster, dns) = cluster_and_dns().await?;
    start_discovering(&mut cluster, &dns, 300).await?;
    Ok((cluster, dns))
}

/// Coordinator 0's `globallock_discovery_lookups_total` for `region` and `outcome`.
async fn lookups(cluster: &Cluster, region: &str, outcome: &str) -> f64 {
    cluster
        .coordinator_metric(
            0,
            "globallock_discovery_lookups_total",
            &[("region", region), ("outcome", outcome)],
        )
        .await
        .unwrap_or(0.0)
}

/// Whether coordinator 0 counts `region` reachable for `shard-0` (its
/// `globallock_region_reachable` gauge).
async fn reachable(cluster: &Cluster, region: &str) -> bool {
    cluster
        .coordinator_metric(
            0,
            "globallock_region_reachable",
            &[("region", region), ("shard", "shard-0")],
        )
        .await
        .unwrap_or(0.0)
        > 0.5
}

async fn wait_reachable(cluster: &Cluster, region: &str, want: bool) {
    let what = format!("{region} reachable = {want}");
    eventually(Duration::from_secs(15), &what, || async {
        (reachable(cluster, region).await == want).then_some(())
    })
    .await;
}

fn sorted(mut regions: Vec<String>) -> Vec<String> {
    regions.sort();
    regions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_find_the_agents_by_srv_and_the_life_cycle_runs_over_tls() -> anyhow::Result<()>
{
    let (cluster, _dns) = discovering_cluster().await?;
    let mut client = cluster.client(0).await?;
    let lock = client
        .acquire(acquire("dns/life", "alice", 10_000, 0))
        .await?
        .into_inner();
    assert!(lock.granted_regions.len() >= 2, "{lock:?}");
    // Every region was found through its own record (and proved its name).
    for region in REGIONS {
        assert!(
            lookups(&cluster, region, "changed").await >= 1.0,
            "{region}"
        );
        wait_reachable(&cluster, region, true).await;
    }
    let renewed = client
        .renew(RenewRequest {
            lock_id: lock.lock_id.clone(),
            ttl_ms: 20_000,
        })
        .await?
        .into_inner();
    assert_eq!(renewed.fencing_token, lock.fencing_token);
    let described = client
        .describe(DescribeRequest {
            resource: "dns/life".into(),
        })
        .await?
        .into_inner();
    assert!(
        described.held && described.owner == "alice",
        "{described:?}"
    );
    client
        .release(ReleaseRequest {
            lock_id: lock.lock_id,
        })
        .await?;
    let next = client
        .acquire(acquire("dns/life", "bob", 10_000, 0))
        .await?
        .into_inner();
    assert!(next.fencing_token > lock.fencing_token);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_moves_while_a_lock_is_held_keeps_the_lock_and_new_acquires_work()
-> anyhow::Result<()> {
    let (cluster, mut dns) = discovering_cluster().await?;
    let mut client = cluster.client(0).await?;
    let held = client
        .acquire(acquire("dns/moved", "alice", 6_000, 0))
        .await?
        .into_inner();

    // region-b's agent moves behind a proxy: DNS now points there.
    let proxy = FaultProxy::start(cluster.regions[1].agent_addr).await?;
    point(&mut dns, "region-b", "proxy-b", proxy.addr());
    dns.apply().await?;
    eventually(
        Duration::from_secs(15),
        "the coordinator dials region-b's new target",
        || async { (lookups(&cluster, "region-b", "changed").await >= 2.0).then_some(()) },
    )
    .await;

    // The held lock renews, past its first TTL, and stays the holder's.
    for _ in 0..4 {
        client
            .renew(RenewRequest {
                lock_id: held.lock_id.clone(),
                ttl_ms: 6_000,
            })
            .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let described = client
        .describe(DescribeRequest {
            resource: "dns/moved".into(),
        })
        .await?
        .into_inner();
    assert!(
        described.held && described.fencing_token == held.fencing_token,
        "{described:?}"
    );
    // New locks are granted.
    let fresh = client
        .acquire(acquire("dns/after-move", "bob", 6_000, 0))
        .await?
        .into_inner();
    assert!(fresh.granted_regions.len() >= 2, "{fresh:?}");

    // The coordinator really dials the proxy now: cutting it cuts region-b.
    proxy.set(Faults::partition());
    wait_reachable(&cluster, "region-b", false).await;
    let cut = client
        .acquire(acquire("dns/while-cut", "carol", 6_000, 0))
        .await?
        .into_inner();
    assert_eq!(sorted(cut.granted_regions), ["region-a", "region-c"]);
    client
        .renew(RenewRequest {
            lock_id: held.lock_id.clone(),
            ttl_ms: 6_000,
        })
        .await?;
    proxy.heal();
    wait_reachable(&cluster, "region-b", true).await;
    client
        .renew(RenewRequest {
            lock_id: held.lock_id,
            ttl_ms: 6_000,
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connection_makes_the_coordinator_look_the_record_up_again_at_once()
-> anyhow::Result<()> {
    let (mut cluster, mut dns) = cluster_and_dns().await?;
    // region-b's agent is reached through a first proxy; its record is looked
    // up on schedule only once an hour.
    let agent_b = cluster.regions[1].agent_addr;
    let first = FaultProxy::start(agent_b).await?;
    let second = FaultProxy::start(agent_b).await?;
    point(&mut dns, "region-b", "proxy-1", first.addr());
    dns.apply().await?;
    start_discovering(&mut cluster, &dns, 3_600_000).await?;
    let mut client = cluster.client(0).await?;
    wait_reachable(&cluster, "region-b", true).await;
    let held = client
        .acquire(acquire("dns/failover", "alice", 20_000, 0))
        .await?
        .into_inner();

    // The record moves to the second proxy; nothing fails, nothing is noticed.
    point(&mut dns, "region-b", "proxy-2", second.addr());
    dns.apply().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lookups(&cluster, "region-b", "changed").await, 1.0);

    // The first target stops answering: the failed calls make the coordinator
    // ask DNS again, and it follows the record to the second.
    first.set(Faults {
        refuse: true,
        ..Faults::default()
    });
    first.reset();
    eventually(
        Duration::from_secs(10),
        "the coordinator follows region-b's record after a failed connection",
        || async { (lookups(&cluster, "region-b", "changed").await >= 2.0).then_some(()) },
    )
    .await;
    wait_reachable(&cluster, "region-b", true).await;
    client
        .renew(RenewRequest {
            lock_id: held.lock_id,
            ttl_ms: 20_000,
        })
        .await?;
    // Through the second proxy now: cutting it cuts region-b.
    second.set(Faults::partition());
    wait_reachable(&cluster, "region-b", false).await;
    second.heal();
    wait_reachable(&cluster, "region-b", true).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_gone_from_dns_is_unreachable_never_a_smaller_quorum() -> anyhow::Result<()> {
    let (cluster, mut dns) = discovering_cluster().await?;
    let mut client = cluster.client(0).await?;
    let held = client
        .acquire(acquire("dns/kept", "alice", 30_000, 0))
        .await?
        .into_inner();

    // region-c's record disappears: region-c is unreachable, 2 of 3 still grant.
    dns.remove_srv(&agent_srv_name("region-c", ZONE));
    dns.apply().await?;
    wait_reachable(&cluster, "region-c", false).await;
    assert!(lookups(&cluster, "region-c", "absent").await >= 1.0);
    let two = client
        .acquire(acquire("dns/two-of-three", "bob", 10_000, 0))
        .await?
        .into_inner();
    assert_eq!(sorted(two.granted_regions), ["region-a", "region-b"]);
    client
        .renew(RenewRequest {
            lock_id: held.lock_id.clone(),
            ttl_ms: 30_000,
        })
        .await?;

    // region-b's goes too: one region left is not a majority of three.
    dns.remove_srv(&agent_srv_name("region-b", ZONE));
    dns.apply().await?;
    wait_reachable(&cluster, "region-b", false).await;
    let refused = client
        .acquire(acquire("dns/one-left", "carol", 10_000, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("region-b") && refused.message().contains("region-c"),
        "{refused:?}"
    );
    let renewal = client
        .renew(RenewRequest {
            lock_id: held.lock_id.clone(),
            ttl_ms: 30_000,
        })
        .await
        .unwrap_err();
    assert_eq!(renewal.code(), Code::Unavailable, "{renewal:?}");

    // region-b's record comes back pointing at region-c's agent: that agent
    // cannot prove region-b, so it does not count as region-b (and region-c
    // is still gone): still no majority.
    point(
        &mut dns,
        "region-b",
        "agent-c",
        cluster.regions[2].agent_addr,
    );
    dns.apply().await?;
    eventually(
        Duration::from_secs(15),
        "region-b's record found again",
        || async { (lookups(&cluster, "region-b", "changed").await >= 2.0).then_some(()) },
    )
    .await;
    for attempt in 0..5 {
        let refused = client
            .acquire(acquire("dns/impostor", "mallory", 10_000, 0))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::Unavailable,
            "attempt {attempt}: {refused:?}"
        );
        assert!(!reachable(&cluster, "region-b").await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Both records right again: every region is back, and locks are granted.
    point(
        &mut dns,
        "region-b",
        "agent-b",
        cluster.regions[1].agent_addr,
    );
    point(
        &mut dns,
        "region-c",
        "agent-c",
        cluster.regions[2].agent_addr,
    );
    dns.apply().await?;
    for region in ["region-b", "region-c"] {
        wait_reachable(&cluster, region, true).await;
    }
    let back = client
        .acquire(acquire("dns/back", "dave", 10_000, 0))
        .await?
        .into_inner();
    assert!(back.granted_regions.len() >= 2, "{back:?}");
    client
        .renew(RenewRequest {
            lock_id: held.lock_id,
            ttl_ms: 30_000,
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_find_coordinators_by_srv_and_look_again_when_none_answers() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        tls: true,
        coordinators: 0,
        ..ClusterOptions::default()
    })
    .await?;
    let tls = cluster.tls.clone().unwrap();
    // Clients check a coordinator's certificate against the SRV target they
    // dial: the coordinators' certificate carries those names.
    let names = [
        format!("coordinator-0.{ZONE}"),
        format!("coordinator-1.{ZONE}"),
    ];
    let extra: Vec<&str> = names.iter().map(String::as_str).collect();
    tls.authority
        .issue_naming(&Role::Coordinator, "coordinator", false, &extra)?;
    cluster.start_coordinator().await?;
    cluster.start_coordinator().await?;
    cluster.client(0).await?;
    cluster.client(1).await?;

    let mut dns = DnsServer::start(&cluster.dir().join("dns"), ZONE).await?;
    for name in &names {
        dns.set_host(name, LOOPBACK);
    }
    dns.set_host(&dns.name("stranger"), LOOPBACK);
    let srv = coordinator_srv_name(ZONE);
    dns.set_srv(
        &srv,
        vec![SrvTarget::new(
            names[0].clone(),
            cluster.coordinator_addrs[0].port(),
        )],
    );
    dns.apply().await?;

    let client_tls = ClientTls {
        ca: tls.ca.clone(),
        identity: Some((tls.client.cert.clone(), tls.client.key.clone())),
    };
    let discovery = Discovery::zone(ZONE).nameservers(vec![dns.addr()]);
    let client = Client::discover_with(discovery.clone(), Some(&client_tls)).await?;
    assert_eq!(
        client.endpoints(),
        [format!(
            "https://{}:{}",
            names[0],
            cluster.coordinator_addrs[0].port()
        )]
    );
    let lock = client
        .acquire(
            "dns/client",
            "alice",
            Duration::from_secs(20),
            Duration::ZERO,
        )
        .await?;

    // Coordinator 0 goes away and the record now names coordinator 1: when
    // no coordinator it knows answers, the client looks the record up again.
    cluster.stop_coordinator(0).await;
    dns.set_srv(
        &srv,
        vec![SrvTarget::new(
            names[1].clone(),
            cluster.coordinator_addrs[1].port(),
        )],
    );
    dns.apply().await?;
    let renewal = client.renew(&lock.lock_id, Duration::ZERO).await?;
    assert_eq!(renewal.fencing_token, lock.fencing_token);
    assert_eq!(
        client.endpoints(),
        [format!(
            "https://{}:{}",
            names[1],
            cluster.coordinator_addrs[1].port()
        )]
    );
    client.release(&lock.lock_id).await?;

    // A target whose name the coordinator's certificate lacks is refused, even
    // though it is the very same coordinator.
    dns.set_srv(
        &srv,
        vec![SrvTarget::new(
            dns.name("stranger"),
            cluster.coordinator_addrs[1].port(),
        )],
    );
    dns.apply().await?;
    let stranger = Client::discover_with(discovery.clone(), Some(&client_tls)).await?;
    let refused = stranger.describe("dns/client").await.unwrap_err();
    match &refused {
        ClientError::Unreachable(failures) => {
            let text = format!("{refused}");
            assert!(
                failures[0].endpoint.contains("stranger")
                    && text.contains(&format!("not valid for name \"stranger.{ZONE}\"")),
                "{text}"
            );
        }
        other => panic!("expected unreachable: {other:?}"),
    }

    // No record at all: nothing to dial, said as a DNS problem.
    let nowhere = Discovery::zone(&format!("nowhere.{ZONE}")).nameservers(vec![dns.addr()]);
    match Client::discover_with(nowhere, Some(&client_tls))
        .await
        .unwrap_err()
    {
        ClientError::Unreachable(failures) => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].problem, EndpointProblem::Dns, "{failures:?}");
            assert!(
                failures[0].detail.contains("does not exist"),
                "{failures:?}"
            );
        }
        other => panic!("expected unreachable: {other:?}"),
    }
    Ok(())
}
