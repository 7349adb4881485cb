//! TLS on every hop, with real certificates from a CA made for the test: the
//! lock life cycle over TLS, and every way in that must be refused (plaintext,
//! another CA, an expired certificate, the wrong role, the wrong region), and a
//! certificate rotation that keeps held locks.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use globallock_localcluster::{DevCa, Role, channel};
use globallock_proto::agent::region_agent_client::RegionAgentClient;
use globallock_proto::agent::{Call, HealthRequest};
use globallock_proto::v1::lock_service_client::LockServiceClient;
use globallock_proto::v1::{ReleaseRequest, RenewRequest};
use globallock_tls::TlsFiles;
use harness::{Cluster, ClusterOptions, acquire, eventually};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

fn options() -> ClusterOptions {
    ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    }
}

fn tls(cluster: &Cluster) -> &globallock_localcluster::ClusterTls {
    cluster.tls.as_ref().unwrap()
}

/// `status` is a connection refused in the TLS handshake, for `why` (a TLS
/// alert, or the client's own verdict on the server's certificate).
fn assert_refused(status: &tonic::Status, why: &str) {
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
        "{status:?}"
    );
    // The client may see the server's alert, or only the connection closing
    // (TLS 1.3: the server judges the client's certificate after the client
    // considers the handshake done). When it names a reason, it is this one.
    let text = format!("{status:?}");
    assert!(
        !text.contains("alert") && !text.contains("invalid peer certificate") || text.contains(why),
        "{status:?}"
    );
}

/// A client of coordinator 0 showing `identity`.
fn client_as(cluster: &Cluster, identity: &TlsFiles) -> LockServiceClient<Channel> {
    let addr = cluster.coordinator_addrs[0];
    LockServiceClient::new(channel(identity, "127.0.0.1", addr).unwrap())
}

/// A client of region `r`'s agent showing `identity`.
fn agent_as(cluster: &Cluster, r: usize, identity: &TlsFiles) -> RegionAgentClient<Channel> {
    let name = globallock_tls::identity::agent(&cluster.regions[r].name);
    RegionAgentClient::new(channel(identity, &name, cluster.regions[r].agent_addr).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_life_cycle_runs_over_tls_on_every_hop() -> anyhow::Result<()> {
    let cluster = Cluster::start(options()).await?;
    let mut client = cluster.client(0).await?;
    let lock = client
        .acquire(acquire("tls/life", "alice", 10_000, 0))
        .await?
        .into_inner();
    assert!(lock.granted_regions.len() >= 2, "{lock:?}");
    client
        .renew(RenewRequest {
            lock_id: lock.lock_id.clone(),
            ttl_ms: 20_000,
        })
        .await?;
    client
        .release(ReleaseRequest {
            lock_id: lock.lock_id,
        })
        .await?;
    Ok(())
}

/// A plaintext HTTP/2 client of `addr`: the call fails (the door speaks TLS only).
async fn plaintext_call_fails(addr: SocketAddr) {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let answer = RegionAgentClient::new(channel)
        .health(HealthRequest {})
        .await;
    assert!(
        answer.is_err(),
        "plaintext was served on {addr}: {answer:?}"
    );
}

/// What a plaintext HTTP/1.0 GET gets back (empty if the connection fails).
fn plaintext_http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_refuses_plaintext() -> anyhow::Result<()> {
    let cluster = Cluster::start(options()).await?;
    plaintext_call_fails(cluster.coordinator_addrs[0]).await;
    for region in &cluster.regions {
        plaintext_call_fails(region.agent_addr).await;
        // etcd too: its client port serves TLS only (client certificates of the
        // region's own etcd CA; etcd-store/tests/etcd_tls.rs checks those).
        for etcd in &region.etcd {
            for endpoint in etcd.endpoints() {
                let addr = endpoint.trim_start_matches("https://");
                assert!(endpoint.starts_with("https://"), "{endpoint}");
                let answer = plaintext_http_get(addr, "/health");
                assert!(
                    !answer.contains("\"health\":\"true\""),
                    "etcd answered plaintext on {addr}: {answer}"
                );
            }
        }
    }
    // And the cluster still works for those who speak TLS.
    let mut client = cluster.client(0).await?;
    client
        .acquire(acquire("tls/plain", "alice", 5_000, 0))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_another_ca_are_refused_both_ways() -> anyhow::Result<()> {
    let cluster = Cluster::start(options()).await?;
    let dir = tempfile::tempdir()?;
    let other = DevCa::create(dir.path(), "other")?;
    // A caller with a certificate from another CA (trusting ours): refused by
    // the coordinator and by every agent, even in the coordinator's role.
    let stranger = TlsFiles {
        ca: tls(&cluster).ca.clone(),
        ..other.issue(&Role::Client("spiffe://evil/x".into()), "stranger", false)?
    };
    let fake_coordinator = TlsFiles {
        ca: tls(&cluster).ca.clone(),
        ..other.issue(&Role::Coordinator, "fake-coordinator", false)?
    };
    let refused = client_as(&cluster, &stranger)
        .acquire(acquire("tls/ca", "mallory", 5_000, 0))
        .await
        .unwrap_err();
    assert_refused(&refused, "UnknownCA");
    let refused = agent_as(&cluster, 0, &fake_coordinator)
        .health(HealthRequest {})
        .await
        .unwrap_err();
    assert_refused(&refused, "UnknownCA");

    // A caller that trusts only another CA refuses our coordinator.
    let trusting_other =
        other.issue(&Role::Client("spiffe://x/y".into()), "other-client", false)?;
    let refused = client_as(&cluster, &trusting_other)
        .acquire(acquire("tls/ca", "bob", 5_000, 0))
        .await
        .unwrap_err();
    assert_refused(&refused, "UnknownIssuer");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(options()).await?;
    let expired = tls(&cluster).authority.issue(
        &Role::Client("spiffe://globallock.dev/user/old".into()),
        "expired",
        true,
    )?;
    let refused = client_as(&cluster, &expired)
        .acquire(acquire("tls/expired", "old", 5_000, 0))
        .await
        .unwrap_err();
    assert_refused(&refused, "CertificateExpired");
    let expired_coordinator =
        tls(&cluster)
            .authority
            .issue(&Role::Coordinator, "expired-coordinator", true)?;
    let refused = agent_as(&cluster, 1, &expired_coordinator)
        .health(HealthRequest {})
        .await
        .unwrap_err();
    assert_refused(&refused, "CertificateExpired");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_coordinators_may_call_an_agent() -> anyhow::Result<()> {
    let cluster = Cluster::start(options()).await?;
    // Region A's agent certificate, and a client's, from the right CA: both
    // refused by region B's agent, naming what is required.
    for identity in [&tls(&cluster).agents[0], &tls(&cluster).client] {
        let refused = agent_as(&cluster, 1, identity)
            .health(HealthRequest {})
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains("coordinator.globallock"),
            "{}",
            refused.message()
        );
        // The stream the hot calls share is refused the same way, when it opens.
        let (_calls, outgoing) = tokio::sync::mpsc::unbounded_channel::<Call>();
        let refused = agent_as(&cluster, 1, identity)
            .exchange(UnboundedReceiverStream::new(outgoing))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    // The coordinator's certificate is served, on both.
    let coordinator = &tls(&cluster).coordinator;
    agent_as(&cluster, 1, coordinator)
        .health(HealthRequest {})
        .await?;
    let (_calls, outgoing) = tokio::sync::mpsc::unbounded_channel::<Call>();
    agent_as(&cluster, 1, coordinator)
        .exchange(UnboundedReceiverStream::new(outgoing))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_refuses_an_agent_proving_another_region() -> anyhow::Result<()> {
    let cluster = Cluster::start(options()).await?;
    // Dialled as region A's agent, region B's agent shows B's certificate: the
    // connection is refused (a coordinator would count region A unreachable).
    let as_region_a = globallock_tls::identity::agent(&cluster.regions[0].name);
    let wrong = channel(
        &tls(&cluster).coordinator,
        &as_region_a,
        cluster.regions[1].agent_addr,
    )?;
    let refused = RegionAgentClient::new(wrong)
        .health(HealthRequest {})
        .await
        .unwrap_err();
    assert_refused(&refused, "NotValidForName");
    Ok(())
}

/// The certificate a TLS server at `addr` presents, as `identity` sees it.
async fn served_certificate(addr: SocketAddr, identity: &TlsFiles) -> Vec<u8> {
    let material = identity.load().unwrap();
    let config = Arc::new(globallock_tls::config::client(&material).unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = globallock_tls::identity::server_name("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    session.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart_and_held_locks_stay() -> anyhow::Result<()> {
    let cluster = Cluster::start(options()).await?;
    let t = tls(&cluster);
    let mut client = cluster.client(0).await?;
    let lock = client
        .acquire(acquire("tls/rotate", "alice", 30_000, 0))
        .await?
        .into_inner();
    let addr = cluster.coordinator_addrs[0];
    let before = served_certificate(addr, &t.client).await;

    // Issue new certificates over the same files (renamed into place).
    let name = t
        .coordinator
        .cert
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let rotated = t.authority.issue(&Role::Coordinator, &name, false)?;
    assert_eq!(rotated.cert, t.coordinator.cert);
    for (r, agent) in t.agents.iter().enumerate() {
        let stem = agent
            .cert
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let region = cluster.regions[r].name.clone();
        t.authority.issue(&Role::Agent(region), &stem, false)?;
    }
    // New connections get the new certificate once the files are looked at again.
    let wanted = std::fs::read_to_string(&t.coordinator.cert)?;
    let wanted = rustls_pki_types::pem::PemObject::from_pem_slice(wanted.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'_>| c.to_vec())?;
    eventually(
        Duration::from_secs(30),
        "the rotated certificate served",
        || {
            let client_files = t.client.clone();
            let wanted = wanted.clone();
            async move { (served_certificate(addr, &client_files).await == wanted).then_some(()) }
        },
    )
    .await;
    assert_ne!(before, wanted);

    // The lock held across the rotation renews and releases as usual, through
    // the coordinator's new connections to the agents too.
    let renewed = client
        .renew(RenewRequest {
            lock_id: lock.lock_id.clone(),
            ttl_ms: 30_000,
        })
        .await?
        .into_inner();
    assert!(renewed.validity_ms > 0, "{renewed:?}");
    let other = client
        .acquire(acquire("tls/rotate/other", "bob", 5_000, 0))
        .await?
        .into_inner();
    assert!(other.granted_regions.len() >= 2);
    client
        .release(ReleaseRequest {
            lock_id: lock.lock_id,
        })
        .await?;
    Ok(())
}

// --- who is calling, and what they may do ---------------------------------

const BATCH_TOKEN: &str = "batch-token-4f1c9a";
const OLD_TOKEN: &str = "batch-token-retired";

/// Three tenants: `billing` (a certificate) owns `billing/`; `batch` (bearer
/// tokens, one expired) owns `batch/` and may also describe, renew and release
/// under `billing/` (so only ownership stands between it and billing's locks);
/// `ops` (a certificate) may describe everything and is an admin.
fn access() -> coordinator::config::AccessEntry {
    use globallock_protocol::access::{PrincipalEntry, Rule, TokenEntry, Verb, token_digest};
    let principal = |name: &str, identity: Option<&str>, tokens: Vec<TokenEntry>| PrincipalEntry {
        name: name.into(),
        identities: identity.map(|i| vec![i.to_owned()]).unwrap_or_default(),
        tokens,
    };
    let rule = |prefix: &str, who: &str, verbs: &[Verb]| Rule {
        prefix: prefix.into(),
        principals: vec![who.into()],
        verbs: verbs.to_vec(),
    };
    use Verb::*;
    coordinator::config::AccessEntry {
        principals: vec![
            principal("billing", Some("spiffe://test/billing"), vec![]),
            principal(
                "batch",
                None,
                vec![
                    TokenEntry {
                        sha256: token_digest(BATCH_TOKEN),
                        expires_unix_ms: None,
                    },
                    TokenEntry {
                        sha256: token_digest(OLD_TOKEN),
                        expires_unix_ms: Some(1),
                    },
                ],
            ),
            principal("ops", Some("spiffe://test/ops"), vec![]),
        ],
        rules: vec![
            rule(
                "billing/",
                "billing",
                &[Acquire, Renew, Release, Describe, Validate],
            ),
            rule("batch/", "batch", &[Acquire, Renew, Release, Describe]),
            rule("billing/", "batch", &[Describe, Renew, Release]),
            rule("", "ops", &[Describe, Validate, Admin]),
        ],
        max_locks_per_principal: 10_000,
        max_waiters_per_principal: 1_000,
    }
}

struct Tenants {
    cluster: Cluster,
    billing: TlsFiles,
    ops: TlsFiles,
    _audit: tempfile::TempDir,
}

async fn tenants() -> anyhow::Result<Tenants> {
    let audit = tempfile::tempdir()?;
    let cluster = Cluster::start(ClusterOptions {
        access: Some(access()),
        audit_dir: Some(audit.path().to_owned()),
        ..options()
    })
    .await?;
    let ca = &tls(&cluster).authority;
    let billing = ca.issue(
        &Role::Client("spiffe://test/billing".into()),
        "billing",
        false,
    )?;
    let ops = ca.issue(&Role::Client("spiffe://test/ops".into()), "ops", false)?;
    Ok(Tenants {
        cluster,
        billing,
        ops,
        _audit: audit,
    })
}

/// A client of coordinator 0 showing no certificate (it may send a token).
fn anonymous(cluster: &Cluster) -> LockServiceClient<Channel> {
    let roots = globallock_tls::files::roots(&tls(cluster).ca).unwrap();
    let config = globallock_tls::config::anonymous_client(roots).unwrap();
    let name = globallock_tls::identity::server_name("127.0.0.1").unwrap();
    let connector =
        globallock_tls::TlsConnector::new(Arc::new(globallock_tls::Reloading::fixed(config)), name);
    let channel = Channel::from_shared(format!("http://{}", cluster.coordinator_addrs[0]))
        .unwrap()
        .connect_with_connector_lazy(connector);
    LockServiceClient::new(channel)
}

/// `message` with `authorization: Bearer <token>`.
fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_without_the_verb_on_a_prefix_is_refused_naming_both() -> anyhow::Result<()> {
    let t = tenants().await?;
    let mut billing = client_as(&t.cluster, &t.billing);
    let denied = billing
        .acquire(acquire("batch/nightly", "billing-7", 5_000, 0))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("acquire") && denied.message().contains("batch/nightly"),
        "{}",
        denied.message()
    );
    // Its own namespace works.
    billing
        .acquire(acquire("billing/inv-1", "billing-7", 5_000, 0))
        .await?;

    // The same over REST: 403 problem+json naming the verb and the resource.
    let rest = t.cluster.rest_addrs[0];
    let body = r#"{"resource":"batch/nightly","owner":"billing-7","ttl_ms":5000}"#;
    let ca = &tls(&t.cluster).ca;
    let refused = harness::http::https_request(
        rest,
        ca,
        Some(&t.billing),
        "POST",
        "/locks",
        &[],
        Some(body),
    )
    .await?;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let problem = refused.json();
    assert_eq!(problem["type"], "urn:globallock:problem:permission-denied");
    assert!(
        problem["detail"].to_string().contains("acquire"),
        "{problem}"
    );

    // Unidentified callers: a certificate no principal has, no credentials at
    // all, an unknown or expired token: UNAUTHENTICATED / 401.
    let stranger = tls(&t.cluster).client.clone();
    let refused = client_as(&t.cluster, &stranger)
        .acquire(acquire("billing/x", "s", 5_000, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = anonymous(&t.cluster)
        .acquire(acquire("batch/x", "s", 5_000, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    for token in ["guess", OLD_TOKEN] {
        let refused = anonymous(&t.cluster)
            .acquire(bearer(acquire("batch/x", "s", 5_000, 0), token))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "{token}: {refused:?}"
        );
    }
    let anonymous_rest =
        harness::http::https_request(rest, ca, None, "POST", "/locks", &[], Some(body)).await?;
    assert_eq!(anonymous_rest.status, 401, "{}", anonymous_rest.body);

    // A valid token works without a certificate, over gRPC and REST.
    anonymous(&t.cluster)
        .acquire(bearer(acquire("batch/x", "cron", 5_000, 0), BATCH_TOKEN))
        .await?;
    let auth = format!("Bearer {BATCH_TOKEN}");
    let created = harness::http::https_request(
        rest,
        ca,
        None,
        "POST",
        "/locks",
        &[("Authorization", &auth)],
        Some(r#"{"resource":"batch/y","owner":"cron","ttl_ms":5000}"#),
    )
    .await?;
    assert_eq!(created.status, 201, "{}", created.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_can_neither_learn_nor_renew_nor_release_a_lock() -> anyhow::Result<()> {
    let t = tenants().await?;
    let mut billing = client_as(&t.cluster, &t.billing);
    let lock = billing
        .acquire(acquire("billing/inv-2", "billing-7", 30_000, 0))
        .await?
        .into_inner();

    // batch may describe billing/, but not learn the lock id.
    let mut batch = anonymous(&t.cluster);
    let seen = batch
        .describe(bearer(
            globallock_proto::v1::DescribeRequest {
                resource: "billing/inv-2".into(),
            },
            BATCH_TOKEN,
        ))
        .await?
        .into_inner();
    assert!(
        seen.held && seen.fencing_token == lock.fencing_token,
        "{seen:?}"
    );
    assert_eq!(seen.lock_id, "", "the lock id leaked to another tenant");
    let auth = format!("Bearer {BATCH_TOKEN}");
    let rest = harness::http::https_request(
        t.cluster.rest_addrs[0],
        &tls(&t.cluster).ca,
        None,
        "GET",
        "/resources/billing%2Finv-2",
        &[("Authorization", &auth)],
        None,
    )
    .await?;
    assert_eq!(rest.status, 200, "{}", rest.body);
    assert!(!rest.body.contains(&lock.lock_id), "{}", rest.body);
    assert!(rest.json().get("lock_id").is_none(), "{}", rest.body);

    // With the lock id anyway (leaked some other way): refused, nothing changes.
    let denied = batch
        .release(bearer(
            ReleaseRequest {
                lock_id: lock.lock_id.clone(),
            },
            BATCH_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = batch
        .renew(bearer(
            RenewRequest {
                lock_id: lock.lock_id.clone(),
                ttl_ms: 60_000,
            },
            BATCH_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // The owner still holds it, sees its own lock id, renews and releases it.
    let own = billing
        .describe(globallock_proto::v1::DescribeRequest {
            resource: "billing/inv-2".into(),
        })
        .await?
        .into_inner();
    assert_eq!(own.lock_id, lock.lock_id);
    billing
        .renew(RenewRequest {
            lock_id: lock.lock_id.clone(),
            ttl_ms: 30_000,
        })
        .await?;
    billing
        .release(ReleaseRequest {
            lock_id: lock.lock_id,
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_force_release_works_and_is_audited_as_one() -> anyhow::Result<()> {
    let t = tenants().await?;
    let lock = client_as(&t.cluster, &t.billing)
        .acquire(acquire("billing/inv-3", "billing-7", 30_000, 0))
        .await?
        .into_inner();
    let mut ops = client_as(&t.cluster, &t.ops);
    // An admin sees the lock id, and may release another principal's lock.
    let seen = ops
        .describe(globallock_proto::v1::DescribeRequest {
            resource: "billing/inv-3".into(),
        })
        .await?
        .into_inner();
    assert_eq!(seen.lock_id, lock.lock_id);
    ops.release(ReleaseRequest {
        lock_id: lock.lock_id.clone(),
    })
    .await?;
    // The audit trail is written in the background: wait for the record.
    let path = t._audit.path().join("coordinator.jsonl");
    let forced = eventually(Duration::from_secs(10), "a force_released record", || {
        let path = path.clone();
        async move {
            let audit = std::fs::read_to_string(path).ok()?;
            audit
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|r| r["event"] == "force_released")
        }
    })
    .await;
    assert_eq!(forced["lock_id"], lock.lock_id.as_str());
    assert_eq!(forced["owner"], "billing-7");
    // A refusal is audited too (the denied verb, not the other tenant's data).
    client_as(&t.cluster, &t.billing)
        .acquire(acquire("batch/z", "billing-7", 5_000, 0))
        .await
        .unwrap_err();
    eventually(Duration::from_secs(10), "the denial audited", || {
        let path = t._audit.path().join("coordinator.jsonl");
        async move {
            let audit = std::fs::read_to_string(path).ok()?;
            audit
                .lines()
                .any(|l| l.contains("\"denied\"") && l.contains("acquire"))
                .then_some(())
        }
    })
    .await;
    Ok(())
}

/// The Rust client over TLS: with a client certificate, and with only a CA
/// and a bearer token (what `lockctl --ca --token` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_calls_over_tls_with_a_certificate_or_a_token() -> anyhow::Result<()> {
    let t = tenants().await?;
    let endpoint = format!("https://{}", t.cluster.coordinator_addrs[0]);
    let ca = tls(&t.cluster).ca.clone();
    let with_cert = globallock_client::Client::connect_tls(
        [&endpoint],
        &globallock_client::ClientTls {
            ca: ca.clone(),
            identity: Some((t.billing.cert.clone(), t.billing.key.clone())),
        },
    )?;
    let lock = with_cert
        .acquire(
            "billing/client",
            "lib",
            Duration::from_secs(5),
            Duration::ZERO,
        )
        .await?;
    with_cert.release(&lock.lock_id).await?;

    let anonymous = globallock_client::ClientTls { ca, identity: None };
    let with_token =
        globallock_client::Client::connect_tls([&endpoint], &anonymous)?.with_token(BATCH_TOKEN)?;
    let lock = with_token
        .acquire(
            "batch/client",
            "cron",
            Duration::from_secs(5),
            Duration::ZERO,
        )
        .await?;
    with_token.release(&lock.lock_id).await?;
    // Without the token the same client is refused, and says why.
    let refused = globallock_client::Client::connect_tls([&endpoint], &anonymous)?
        .acquire(
            "batch/client",
            "cron",
            Duration::from_secs(5),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("unauthenticated"), "{refused}");
    Ok(())
}

/// Caps per principal: a tenant at its cap of locks held gets
/// `RESOURCE_EXHAUSTED` (REST 429, `quota-exceeded`) and nothing is proposed;
/// another tenant is not affected; a release frees a place. Waiting acquires
/// are capped the same way, and a waiter leaving frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_caps_is_refused_and_others_are_not() -> anyhow::Result<()> {
    let audit = tempfile::tempdir()?;
    let cluster = Cluster::start(ClusterOptions {
        access: Some(coordinator::config::AccessEntry {
            max_locks_per_principal: 2,
            max_waiters_per_principal: 1,
            ..access()
        }),
        audit_dir: Some(audit.path().to_owned()),
        ..options()
    })
    .await?;
    let ca = &tls(&cluster).authority;
    let billing = ca.issue(
        &Role::Client("spiffe://test/billing".into()),
        "billing",
        false,
    )?;
    let mut client = client_as(&cluster, &billing);
    let first = client
        .acquire(acquire("billing/q1", "b", 10_000, 0))
        .await?
        .into_inner();
    client
        .acquire(acquire("billing/q2", "b", 10_000, 0))
        .await?;
    let refused = client
        .acquire(acquire("billing/q3", "b", 10_000, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("\"billing\" is at its cap of 2 locks held"),
        "{}",
        refused.message()
    );
    // Nothing was proposed for the refused resource: it is free.
    let describe = client
        .describe(globallock_proto::v1::DescribeRequest {
            resource: "billing/q3".into(),
        })
        .await?
        .into_inner();
    assert!(!describe.held, "{describe:?}");
    // REST says 429 with the same kind.
    let rest = harness::http::https_request(
        cluster.rest_addrs[0],
        &tls(&cluster).ca,
        Some(&billing),
        "POST",
        "/locks",
        &[],
        Some(r#"{"resource":"billing/q3","owner":"b","ttl_ms":10000}"#),
    )
    .await?;
    assert_eq!(rest.status, 429, "{}", rest.body);
    assert!(rest.body.contains("quota-exceeded"), "{}", rest.body);
    // Another tenant is not affected.
    let mut batch = anonymous(&cluster);
    batch
        .acquire(bearer(acquire("batch/q1", "n", 10_000, 0), BATCH_TOKEN))
        .await?;
    // A release frees a place.
    client
        .release(ReleaseRequest {
            lock_id: first.lock_id,
        })
        .await?;
    client
        .acquire(acquire("billing/q3", "b", 10_000, 0))
        .await?;

    // Waiters: a first acquire of batch waits for batch/q1 (held by batch
    // itself); while it waits, a second waiting acquire of batch is refused;
    // once the first gave up, a waiter is admitted again.
    let mut first_waiter = batch.clone();
    let waiting = tokio::spawn(async move {
        first_waiter
            .acquire(bearer(
                acquire("batch/q1", "n2", 10_000, 3_000),
                BATCH_TOKEN,
            ))
            .await
    });
    eventually(
        Duration::from_secs(10),
        "the first acquire waiting",
        || async {
            let waiting = cluster
                .coordinator_metric(0, "globallock_acquires_waiting", &[])
                .await
                .ok()?;
            (waiting >= 1.0).then_some(())
        },
    )
    .await;
    let refused = batch
        .acquire(bearer(
            acquire("batch/q1", "n3", 10_000, 1_000),
            BATCH_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("cap of 1 waiting acquires"),
        "{}",
        refused.message()
    );
    // An acquire that does not wait is not a waiter.
    let at_once = batch
        .acquire(bearer(acquire("batch/q1", "n4", 10_000, 0), BATCH_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(at_once.code(), Code::Aborted, "{at_once:?}");
    // The first waiter gives up (batch/q1 stays held); its place is free again.
    assert_eq!(waiting.await?.unwrap_err().code(), Code::Aborted);
    let admitted = batch
        .acquire(bearer(acquire("batch/q1", "n5", 10_000, 100), BATCH_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(admitted.code(), Code::Aborted, "{admitted:?}");
    Ok(())
}

/// What `make dev` gives a second tenant, on real processes (the cluster
/// devcluster runs): tenant A's lock cannot be renewed, released or learned by
/// tenant B (each is its own principal), tenant A renews and releases it, and a
/// caller from another CA or in plaintext is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_devs_tenants_cannot_touch_each_others_locks() -> anyhow::Result<()> {
    use globallock_localcluster::{Layout, ProcessCluster};
    let dir = tempfile::tempdir()?;
    let mut cluster = ProcessCluster::start(Layout {
        shards: 1,
        ..Layout::new(dir.path().to_path_buf())
    })
    .await?;
    let spec = cluster.free_coordinator_spec()?;
    let addr = spec.grpc;
    cluster.start_coordinator(spec).await?;
    let tls = cluster.tls().expect("make dev's cluster runs TLS").clone();
    let as_tenant = |i: usize| {
        LockServiceClient::new(channel(&tls.tenants[i], "127.0.0.1", addr).expect("channel"))
    };
    let (mut a, mut b) = (as_tenant(0), as_tenant(1));
    let lock = a
        .acquire(acquire("dev/tenants", "tenant-a", 10_000, 0))
        .await?
        .into_inner();
    let described = b
        .describe(globallock_proto::v1::DescribeRequest {
            resource: "dev/tenants".into(),
        })
        .await?
        .into_inner();
    assert!(described.held);
    assert!(
        described.lock_id.is_empty(),
        "tenant B learned A's lock id: {described:?}"
    );
    let refused = b
        .release(ReleaseRequest {
            lock_id: lock.lock_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = b
        .renew(RenewRequest {
            lock_id: lock.lock_id.clone(),
            ttl_ms: 10_000,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Nothing was lost: A still holds it, renews and releases it.
    a.renew(RenewRequest {
        lock_id: lock.lock_id.clone(),
        ttl_ms: 10_000,
    })
    .await?;
    a.release(ReleaseRequest {
        lock_id: lock.lock_id,
    })
    .await?;
    // Another CA, and plaintext, are refused at the door.
    let other_dir = tempfile::tempdir()?;
    let other = DevCa::create(other_dir.path(), "other")?;
    let stranger = TlsFiles {
        ca: tls.ca.clone(),
        ..other.issue(&Role::Client("spiffe://evil/x".into()), "stranger", false)?
    };
    let refused = LockServiceClient::new(channel(&stranger, "127.0.0.1", addr)?)
        .acquire(acquire("dev/tenants", "mallory", 5_000, 0))
        .await
        .unwrap_err();
    assert_refused(&refused, "UnknownCA");
    plaintext_call_fails(addr).await;
    Ok(())
}
