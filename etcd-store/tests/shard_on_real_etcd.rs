//! The shard operations against a real etcd process.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use globallock_etcd::{GrantOutcome, Proposal, ShardConfig, ShardStore};
use globallock_localcluster::EtcdCluster;
use globallock_protocol::clock::SystemClock;

struct Fixture {
    store: ShardStore,
    _etcd: EtcdCluster,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdCluster::start("shard", 1, dir.path()).expect("etcd starts");
    let config = ShardConfig {
        name: "s0".into(),
        endpoints: etcd.endpoints(),
        prefix: "/globallock/".into(),
        request_timeout: Duration::from_secs(2),
        lease_granularity: Duration::from_millis(500),
        tombstone_ttl: Duration::from_secs(30),
        quarantine: Duration::from_secs(10),
    };
    let store = ShardStore::connect(&config, Arc::new(SystemClock::new()))
        .await
        .expect("connect");
    store.prepare(true).await.expect("bootstrap");
    Fixture {
        store,
        _etcd: etcd,
        _dir: dir,
    }
}

fn proposal<'a>(lock_id: &'a str, token: u64, request_id: &'a str) -> Proposal<'a> {
    Proposal {
        resource: "orders/42",
        lock_id,
        owner: "alice",
        token,
        ttl: Duration::from_secs(5),
        request_id,
    }
}

#[tokio::test]
async fn grant_is_guarded_by_holder_mark_and_tombstone() {
    let f = fixture().await;
    let s = &f.store;

    // First grant on a never-seen resource (the "fence absent" path).
    let first = s.grant(&proposal("L1", 100, "r1")).await.expect("grant");
    assert!(matches!(first.outcome, GrantOutcome::Granted(ref h) if h.record.lock_id == "L1"));
    assert_eq!(first.mark, 100);

    // Held by L1: a second proposal is refused and told who holds it.
    let second = s.grant(&proposal("L2", 200, "r2")).await.expect("grant");
    match second.outcome {
        GrantOutcome::Held(h) => {
            assert_eq!(h.record.lock_id, "L1");
            assert!(h.remaining > Duration::from_secs(4));
        }
        other => panic!("{other:?}"),
    }

    // Same request id and body: the earlier grant, not a new one.
    let replay = s.grant(&proposal("L3", 300, "r1")).await.expect("grant");
    assert!(matches!(replay.outcome, GrantOutcome::Granted(ref h) if h.record.lock_id == "L1"));
    // Same request id, other TTL: conflict.
    let mut other_body = proposal("L4", 300, "r1");
    other_body.ttl = Duration::from_secs(9);
    let conflict = s.grant(&other_body).await.expect("grant");
    assert!(matches!(conflict.outcome, GrantOutcome::RequestConflict(_)));

    // Release by a wrong id changes nothing; by the right id frees it.
    assert!(!s.release("orders/42", "L2").await.expect("release"));
    assert!(s.release("orders/42", "L1").await.expect("release"));
    assert!(!s.release("orders/42", "L1").await.expect("release twice"));

    // Free now, but a token not above the mark is refused.
    let low = s.grant(&proposal("L5", 100, "r5")).await.expect("grant");
    assert_eq!(low.outcome, GrantOutcome::TokenTooLow);
    assert_eq!(low.mark, 100);
    let ok = s.grant(&proposal("L6", 101, "r6")).await.expect("grant");
    assert!(matches!(ok.outcome, GrantOutcome::Granted(_)));

    // An aborted lock id is refused later even though the resource is free.
    assert!(s.abort("orders/42", "L6").await.expect("abort"));
    let late = s.grant(&proposal("L6", 500, "r6")).await.expect("grant");
    assert_eq!(late.outcome, GrantOutcome::Aborted);
    // ...while a fresh id is granted.
    let fresh = s.grant(&proposal("L7", 501, "r7")).await.expect("grant");
    assert!(matches!(fresh.outcome, GrantOutcome::Granted(_)));

    let state = s.read("orders/42").await.expect("read");
    assert_eq!(state.mark, 501);
    assert_eq!(state.holder.expect("held").record.lock_id, "L7");
}

#[tokio::test]
async fn renew_extends_only_the_matching_lock_and_never_recreates() {
    let f = fixture().await;
    let s = &f.store;
    let mut p = proposal("L1", 10, "r1");
    p.ttl = Duration::from_secs(2);
    s.grant(&p).await.expect("grant");

    assert_eq!(
        s.renew("orders/42", "nope", None).await.expect("renew"),
        None
    );
    let renewed = s
        .renew("orders/42", "L1", Some(Duration::from_secs(20)))
        .await
        .expect("renew")
        .expect("held");
    assert!(renewed.remaining >= Duration::from_secs(20));

    assert!(s.release("orders/42", "L1").await.expect("release"));
    assert_eq!(
        s.renew("orders/42", "L1", Some(Duration::from_secs(20)))
            .await
            .expect("renew"),
        None,
        "renew after release must not resurrect the lock"
    );
    assert!(s.read("orders/42").await.expect("read").holder.is_none());
}

#[tokio::test]
async fn grants_expire_with_their_lease_bucket() {
    let f = fixture().await;
    let s = &f.store;
    let mut p = proposal("L1", 10, "r1");
    p.ttl = Duration::from_secs(1);
    s.grant(&p).await.expect("grant");
    // etcd raises leases below its minimum (2 s with default timings), so the grant
    // lives 1–3 s. Wait for it to go, by polling, not by a fixed sleep.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if s.read("orders/42").await.expect("read").holder.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "grant never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next = s.grant(&proposal("L2", 11, "r2")).await.expect("grant");
    assert!(matches!(next.outcome, GrantOutcome::Granted(_)));
}

/// Regression: with one member of a 3-member cluster dead, the client still sent
/// some requests to it and reported "connection refused" as a failure. A dead
/// member must cost a retry, never an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_dead_member_costs_retries_not_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut etcd = EtcdCluster::start("three", 3, dir.path()).expect("etcd starts");
    let config = ShardConfig {
        name: "s0".into(),
        endpoints: etcd.endpoints(),
        prefix: "/globallock/".into(),
        request_timeout: Duration::from_secs(3),
        lease_granularity: Duration::from_millis(500),
        tombstone_ttl: Duration::from_secs(30),
        quarantine: Duration::from_secs(10),
    };
    let store = ShardStore::connect(&config, Arc::new(SystemClock::new()))
        .await
        .expect("connect");
    store.prepare(true).await.expect("bootstrap");
    // Pick a member that is not the leader, so no election is involved.
    let leader = etcd.leader().expect("leader");
    etcd.kill_member((leader + 1) % 3);
    for i in 0..30u64 {
        let lock_id = format!("L{i}");
        let request_id = format!("r{i}");
        let reply = store
            .grant(&Proposal {
                resource: "orders/42",
                lock_id: &lock_id,
                owner: "alice",
                token: 100 + i,
                ttl: Duration::from_secs(5),
                request_id: &request_id,
            })
            .await
            .unwrap_or_else(|e| panic!("grant {i} failed: {e}"));
        assert!(
            matches!(reply.outcome, GrantOutcome::Granted(_)),
            "{i}: {reply:?}"
        );
        assert!(
            store.release("orders/42", &lock_id).await.expect("release"),
            "{i}"
        );
    }
}

/// Hole 1 (two holders): a retry adopted the earlier grant E of its request and
/// reported E as won; the background abort of the round that created E must not
/// remove it afterwards. Fails on the code before the fix (the abort deleted E).
#[tokio::test]
async fn regression_hole1_an_abort_never_removes_a_grant_a_retry_adopted() {
    let f = fixture().await;
    let s = &f.store;
    let original = s.grant(&proposal("E", 100, "r1")).await.expect("grant");
    assert!(matches!(original.outcome, GrantOutcome::Granted(ref h) if !h.record.adopted));

    // The retry proposes its own lock id L with the same request: it is told E.
    let retry = s.grant(&proposal("L", 200, "r1")).await.expect("grant");
    match retry.outcome {
        GrantOutcome::Granted(h) => {
            assert_eq!(h.record.lock_id, "E");
            assert!(h.record.adopted, "the retry's answer marks E adopted");
        }
        other => panic!("{other:?}"),
    }

    // The first round's late abort of E: refused, E stays.
    assert!(!s.abort("orders/42", "E").await.expect("abort"));
    let state = s.read("orders/42").await.expect("read");
    let holder = state.holder.expect("E still holds the resource");
    assert_eq!((holder.record.lock_id.as_str(), holder.record.adopted), ("E", true));
    // Its holder still renews and releases it as usual.
    assert!(
        s.renew("orders/42", "E", Some(Duration::from_secs(8)))
            .await
            .expect("renew")
            .is_some()
    );
    assert!(s.release("orders/42", "E").await.expect("release"));
}

/// Hole 1, the other order: the abort lands first, so the retry cannot adopt E
/// any more and gets a fresh grant of its own lock id (which its own round owns).
#[tokio::test]
async fn regression_hole1_a_retry_never_adopts_an_aborted_grant() {
    let f = fixture().await;
    let s = &f.store;
    s.grant(&proposal("E", 100, "r1")).await.expect("grant");
    assert!(s.abort("orders/42", "E").await.expect("abort"));
    let retry = s.grant(&proposal("L", 200, "r1")).await.expect("grant");
    match retry.outcome {
        GrantOutcome::Granted(h) => {
            assert_eq!(h.record.lock_id, "L");
            assert!(!h.record.adopted);
        }
        other => panic!("{other:?}"),
    }
    // And a late proposal of E itself is refused by its tombstone.
    let late = s.grant(&proposal("E", 300, "r9")).await.expect("grant");
    assert!(matches!(late.outcome, GrantOutcome::Aborted | GrantOutcome::Held(_)));
}
