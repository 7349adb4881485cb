//! The agent's hop to etcd over TLS, against a real etcd run with
//! `--client-cert-auth` and a CA of the region's own: the store works over it,
//! refuses plaintext, another CA's certificate and an etcd that proves another
//! name, and picks up rotated certificates without being rebuilt.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use globallock_etcd::{EtcdTls, ShardConfig, ShardStore};
use globallock_localcluster::{ClusterTls, EtcdCluster, Role};
use globallock_protocol::clock::SystemClock;

const RESOURCE: &str = "orders/42";

struct Fixture {
    etcd: EtcdCluster,
    certs: ClusterTls,
    _dir: tempfile::TempDir,
}

/// A single-member etcd serving TLS with region A's etcd CA.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let certs = ClusterTls::create(&dir.path().join("tls")).unwrap();
    let etcd = EtcdCluster::start_tls(
        "shard",
        1,
        &dir.path().join("etcd"),
        certs.etcd[0].members.clone(),
    )
    .unwrap();
    Fixture {
        etcd,
        certs,
        _dir: dir,
    }
}

impl Fixture {
    /// Region A's agent identity towards etcd, checking region A's etcd name.
    fn agent_tls(&self) -> EtcdTls {
        let etcd = &self.certs.etcd[0];
        EtcdTls {
            ca: etcd.agent.ca.clone(),
            cert: etcd.agent.cert.clone(),
            key: etcd.agent.key.clone(),
            server_name: Some(etcd.server_name.clone()),
        }
    }

    fn config(&self, endpoints: Vec<String>, tls: Option<EtcdTls>) -> ShardConfig {
        ShardConfig {
            name: "s0".into(),
            endpoints,
            prefix: "/globallock/".into(),
            request_timeout: Duration::from_secs(1),
            lease_granularity: Duration::from_millis(500),
            tombstone_ttl: Duration::from_secs(30),
            quarantine: Duration::from_secs(10),
            drift_rate: 0.01,
            state_file: None,
            tls,
        }
    }

    async fn store(&self, endpoints: Vec<String>, tls: Option<EtcdTls>) -> ShardStore {
        ShardStore::connect(&self.config(endpoints, tls), Arc::new(SystemClock::new()))
            .await
            .unwrap()
    }
}

/// The store's view of the resource, or the error chain.
async fn read(store: &ShardStore) -> Result<(), String> {
    store
        .read(RESOURCE)
        .await
        .map(|_| ())
        .map_err(|e| globallock_tls::files::error_chain(&e))
}

/// Bootstrap the store (its first writes to etcd), or the error chain.
async fn prepare(store: &ShardStore) -> Result<(), String> {
    store
        .prepare(true)
        .await
        .map(|_| ())
        .map_err(|e| globallock_tls::files::error_chain(&e))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_works_over_tls_with_the_regions_client_certificate() {
    let f = fixture();
    assert!(f.etcd.endpoints()[0].starts_with("https://"));
    let store = f.store(f.etcd.endpoints(), Some(f.agent_tls())).await;
    store.prepare(true).await.expect("bootstrap over TLS");
    store.check_health().await.expect("healthy over TLS");
    read(&store).await.expect("read over TLS");
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_another_ca_and_another_etcd_name_are_refused() {
    let f = fixture();
    // Plaintext against the TLS port.
    let plain: Vec<String> = f
        .etcd
        .endpoints()
        .iter()
        .map(|e| e.replace("https://", "http://"))
        .collect();
    let store = f.store(plain, None).await;
    assert!(prepare(&store).await.is_err(), "plaintext must be refused");

    // Region B's agent certificate (region B's etcd CA): etcd does not trust it,
    // and the store does not trust region A's etcd either.
    let b = &f.certs.etcd[1];
    let other_ca = EtcdTls {
        ca: b.agent.ca.clone(),
        cert: b.agent.cert.clone(),
        key: b.agent.key.clone(),
        server_name: Some(f.certs.etcd[0].server_name.clone()),
    };
    let store = f.store(f.etcd.endpoints(), Some(other_ca)).await;
    assert!(prepare(&store).await.is_err(), "another CA must be refused");

    // Region A's material, but expecting region B's etcd: the server's
    // certificate does not prove that name.
    let mut wrong_name = f.agent_tls();
    wrong_name.server_name = Some(b.server_name.clone());
    let store = f.store(f.etcd.endpoints(), Some(wrong_name)).await;
    let error = prepare(&store).await.unwrap_err();
    assert!(!error.is_empty());

    // A certificate of the right CA, but the dev coordinator's (other CA): the
    // coordinator cannot write to a region's etcd.
    let coordinator = EtcdTls {
        ca: f.certs.etcd[0].agent.ca.clone(),
        cert: f.certs.coordinator.cert.clone(),
        key: f.certs.coordinator.key.clone(),
        server_name: Some(f.certs.etcd[0].server_name.clone()),
    };
    let store = f.store(f.etcd.endpoints(), Some(coordinator)).await;
    assert!(
        prepare(&store).await.is_err(),
        "a certificate of the global CA must not reach a region's etcd"
    );

    // And the right material still works (the refusals were not etcd being down).
    let store = f.store(f.etcd.endpoints(), Some(f.agent_tls())).await;
    prepare(&store).await.expect("region A's agent is served");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_client_certificates_are_used_without_rebuilding_the_store() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    // The store reads its identity from files of its own, which we rewrite.
    let files = EtcdTls {
        ca: f.certs.etcd[0].agent.ca.clone(),
        cert: dir.path().join("agent-etcd.pem"),
        key: dir.path().join("agent-etcd.key"),
        server_name: Some(f.certs.etcd[0].server_name.clone()),
    };
    let install = |from: &globallock_tls::TlsFiles| {
        std::fs::copy(&from.key, &files.key).unwrap();
        std::fs::copy(&from.cert, &files.cert).unwrap();
    };
    install(&f.certs.etcd[0].agent);
    let store = f.store(f.etcd.endpoints(), Some(files.clone())).await;
    store.prepare(true).await.expect("bootstrap");
    read(&store)
        .await
        .expect("served with the first certificate");

    // Rotate to a certificate etcd does not trust: the next requests use it
    // (so they fail), which shows the files are read again.
    let stranger = f.certs.etcd[1]
        .authority
        .issue(&Role::Agent("region-a".into()), "stranger", false)
        .unwrap();
    install(&stranger);
    let refused = wait_for(&store, false).await;
    assert!(refused, "the store kept using the old certificate");

    // Rotate to a new certificate of the right CA: served again, same store.
    let renewed = f.certs.etcd[0]
        .authority
        .issue(&Role::Agent("region-a".into()), "renewed", false)
        .unwrap();
    install(&renewed);
    assert!(
        wait_for(&store, true).await,
        "the store did not pick up the renewed certificate"
    );
}

/// Poll reads until they succeed (`ok`) or fail (`!ok`); false if that never
/// happened within 20 s (reloads are looked for once a second).
async fn wait_for(store: &ShardStore, ok: bool) -> bool {
    for _ in 0..40 {
        if read(store).await.is_ok() == ok {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}
