//! `lockctl --discover ZONE`: the coordinators come from the SRV record
//! `_globallock._tcp.ZONE` on a real DNS server (dnsmasq, `harness::dns`),
//! against a TLS cluster, with no address typed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use globallock_localcluster::Role;
use harness::dns::{DnsServer, SrvTarget};
use harness::{Cluster, ClusterOptions};
use serde_json::Value;

const ZONE: &str = "lockctl.test";

async fn output(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON value ({e}): {:?} / stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockctl_discovers_the_coordinators_through_dns_and_locks() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        tls: true,
        coordinators: 0,
        ..ClusterOptions::default()
    })
    .await?;
    let tls = cluster.tls.clone().unwrap();
    // The coordinators' certificate carries the name clients dial: the SRV target.
    let target = format!("coordinator-0.{ZONE}");
    tls.authority
        .issue_naming(&Role::Coordinator, "coordinator", false, &[&target])?;
    cluster.start_coordinator().await?;
    cluster.client(0).await?;

    let mut dns = DnsServer::start(&cluster.dir().join("dns"), ZONE).await?;
    dns.set_host(&target, IpAddr::V4(Ipv4Addr::LOCALHOST));
    dns.set_srv(
        &format!("_globallock._tcp.{ZONE}"),
        vec![SrvTarget::new(
            target.clone(),
            cluster.coordinator_addrs[0].port(),
        )],
    );
    // As docs/deploy.md shows it for `make dev`: a record naming localhost,
    // which the dev certificates carry.
    dns.set_srv(
        &format!("_globallock._tcp.dev.{ZONE}"),
        vec![SrvTarget::new(
            "localhost",
            cluster.coordinator_addrs[0].port(),
        )],
    );
    dns.apply().await?;

    let lockctl = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lockctl"));
        for var in [
            "GLOBALLOCK_ENDPOINT",
            "GLOBALLOCK_DISCOVER",
            "GLOBALLOCK_DNS_SERVER",
            "GLOBALLOCK_CA",
            "GLOBALLOCK_CERT",
            "GLOBALLOCK_KEY",
            "GLOBALLOCK_TOKEN",
        ] {
            command.env_remove(var);
        }
        command
            .arg("--dns-server")
            .arg(dns.addr().to_string())
            .arg("--ca")
            .arg(&tls.ca)
            .arg("--cert")
            .arg(&tls.client.cert)
            .arg("--key")
            .arg(&tls.client.key)
            .arg("--dev-dir")
            .arg(cluster.dir().join("no-dev-cluster"))
            .args(args);
        command
    };

    // Acquire with --discover; describe with GLOBALLOCK_DISCOVER.
    let out = output(lockctl(&[
        "--discover",
        ZONE,
        "acquire",
        "dns/lockctl",
        "--ttl",
        "20s",
        "--output",
        "json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lock = json(&out);
    assert!(
        lock["granted_regions"].as_array().unwrap().len() >= 2,
        "{lock}"
    );
    let mut describe = lockctl(&["describe", "dns/lockctl", "--output", "json"]);
    describe.env("GLOBALLOCK_DISCOVER", ZONE);
    // The command line wins over the environment: --endpoint over an exported
    // GLOBALLOCK_DISCOVER (nothing listens at that endpoint: exit 76), and
    // --discover over an exported GLOBALLOCK_ENDPOINT.
    let mut typed_endpoint = lockctl(&["--endpoint", "https://127.0.0.1:9", "describe", "x"]);
    typed_endpoint.env("GLOBALLOCK_DISCOVER", ZONE);
    let out = output(typed_endpoint).await;
    assert_eq!(out.status.code(), Some(76), "{out:?}");
    let mut typed_discover = lockctl(&["--discover", ZONE, "describe", "dns/lockctl"]);
    typed_discover.env("GLOBALLOCK_ENDPOINT", "https://127.0.0.1:9");
    let out = output(typed_discover).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = output(describe).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let described = json(&out);
    assert_eq!(described["held"], true, "{described}");
    assert_eq!(described["fencing_token"], lock["fencing_token"]);
    let out = output(lockctl(&[
        "--discover",
        ZONE,
        "release",
        lock["lock_id"].as_str().unwrap(),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let out = output(lockctl(&[
        "--discover",
        &format!("dev.{ZONE}"),
        "describe",
        "dns/lockctl",
        "--output",
        "json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json(&out)["held"], false);

    // A zone without the record: unreachable, as a DNS problem with a hint.
    let out = output(lockctl(&[
        "--discover",
        &format!("elsewhere.{ZONE}"),
        "describe",
        "dns/lockctl",
        "--output",
        "json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(76), "{out:?}");
    let error = &json(&out)["error"];
    assert_eq!(error["kind"], "unreachable", "{error}");
    assert_eq!(error["endpoints"][0]["problem"], "dns", "{error}");
    assert!(
        error["endpoints"][0]["hint"]
            .as_str()
            .unwrap()
            .contains("--discover"),
        "{error}"
    );

    // --discover and --endpoint name the coordinators twice: a usage error.
    let out = output(lockctl(&[
        "--discover",
        ZONE,
        "--endpoint",
        "https://127.0.0.1:7400",
        "describe",
        "dns/lockctl",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");

    // Without a CA to trust there is no TLS, and discovery is TLS only.
    let mut no_ca = Command::new(env!("CARGO_BIN_EXE_lockctl"));
    no_ca
        .env_remove("GLOBALLOCK_ENDPOINT")
        .env_remove("GLOBALLOCK_CA")
        .args(["--discover", ZONE, "--dns-server"])
        .arg(dns.addr().to_string())
        .arg("--dev-dir")
        .arg(cluster.dir().join("no-dev-cluster"))
        .args(["describe", "dns/lockctl", "--output", "json"]);
    let out = output(no_ca).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let error = &json(&out)["error"];
    assert!(
        error["message"].as_str().unwrap().contains("--ca"),
        "{error}"
    );
    Ok(())
}
