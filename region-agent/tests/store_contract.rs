//! The [`LockStore`] contract, run against every implementation: the etcd store
//! on a real `etcd` process, and the in-memory store the agent's own tests use.
//! A rule that holds for one and not the other fails here.
//!
//! etcd-only behaviour (lease buckets, quarantine after data loss, the
//! watermark, mark collection, lost replies) is tested in
//! `etcd-store/tests/shard_on_real_etcd.rs`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use globallock_etcd::{ShardConfig, ShardStore};
use globallock_localcluster::EtcdCluster;
use globallock_protocol::clock::{ManualClock, SharedClock};
use globallock_protocol::store::{Holding, LockStore, Proposal, Removal, Vote};
use region_agent::memory::MemoryStore;

const RESOURCE: &str = "orders/42";
const TOMBSTONE_TTL: Duration = Duration::from_secs(30);
/// Wall time the manual clocks start at (a realistic microsecond timestamp).
const START_UNIX_MICROS: u64 = 1_700_000_000_000_000;

/// A store under test and what keeps it alive.
struct Fixture<S> {
    store: S,
    _etcd: Option<(EtcdCluster, tempfile::TempDir)>,
}

fn memory(clock: SharedClock) -> Fixture<MemoryStore> {
    Fixture {
        store: MemoryStore::new("s0", clock, TOMBSTONE_TTL),
        _etcd: None,
    }
}

async fn etcd(clock: SharedClock) -> Fixture<ShardStore> {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdCluster::start("shard", 1, dir.path()).expect("etcd starts");
    let config = ShardConfig {
        name: "s0".into(),
        endpoints: etcd.endpoints(),
        prefix: "/globallock/".into(),
        request_timeout: Duration::from_secs(2),
        lease_granularity: Duration::from_millis(500),
        tombstone_ttl: TOMBSTONE_TTL,
        quarantine: Duration::from_secs(10),
        drift_rate: 0.01,
        state_file: None,
    };
    let store = ShardStore::connect(&config, clock).await.expect("connect");
    store.prepare(true).await.expect("bootstrap");
    Fixture {
        store,
        _etcd: Some((etcd, dir)),
    }
}

/// Every contract test, once per implementation. Each test gets the store and
/// the manual clock it reads time from.
macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test]
                async fn $test() {
                    let clock = super::ManualClock::new(super::START_UNIX_MICROS);
                    let f = super::memory(clock.clone());
                    super::$test(&f.store, &clock).await;
                }
            )*
        }
        mod etcd_store {
            $(
                #[tokio::test]
                async fn $test() {
                    let clock = super::ManualClock::new(super::START_UNIX_MICROS);
                    let f = super::etcd(clock.clone()).await;
                    super::$test(&f.store, &clock).await;
                }
            )*
        }
    };
}

contract!(
    grant_is_guarded_by_holder_mark_and_tombstone,
    a_repeat_of_the_same_request_is_offered_its_grant_and_another_body_conflicts,
    renew_extends_only_the_matching_lock_and_never_recreates,
    renew_never_shortens_a_grant,
    a_grant_lives_its_ttl_and_then_ends_by_itself,
    regression_hole1_an_abort_never_removes_a_grant_a_retry_adopted,
    regression_hole1_a_retry_never_adopts_an_aborted_grant,
    an_offered_grant_that_no_majority_adopted_is_still_aborted,
    abort_with_another_lock_id_leaves_the_holder_and_refuses_that_id_later,
    regression_a_release_that_overtook_its_grant_refuses_the_grant_afterwards,
    release_answers_with_the_removed_record,
    marks_only_go_up_and_a_serving_store_is_healthy,
);

fn proposal<'a>(lock_id: &'a str, token: u64, request_id: &'a str) -> Proposal<'a> {
    Proposal {
        resource: RESOURCE,
        lock_id,
        owner: "alice",
        token,
        ttl: Duration::from_secs(5),
        request_id,
    }
}

async fn grant<S: LockStore>(s: &S, p: &Proposal<'_>) -> Vote<Holding> {
    s.grant(p).await.expect("grant")
}

fn granted(vote: Vote<Holding>) -> Holding {
    match vote {
        Vote::Granted(h) => h,
        other => panic!("expected a grant, got {other:?}"),
    }
}

async fn holder<S: LockStore>(s: &S) -> Option<Holding> {
    s.read(RESOURCE).await.expect("read").holder
}

async fn released<S: LockStore>(s: &S, lock_id: &str) -> bool {
    s.release_grant(RESOURCE, lock_id)
        .await
        .expect("release")
        .removed()
}

async fn grant_is_guarded_by_holder_mark_and_tombstone<S: LockStore>(s: &S, _: &ManualClock) {
    let first = granted(grant(s, &proposal("L1", 100, "r1")).await);
    assert_eq!(first.record.lock_id, "L1");
    assert!(first.remaining >= Duration::from_secs(5), "{first:?}");

    // Held by L1: another proposal is refused and told who holds it.
    match grant(s, &proposal("L2", 200, "r2")).await {
        Vote::Held(h) => assert_eq!(h.record.lock_id, "L1"),
        other => panic!("{other:?}"),
    }

    // Release by a wrong id changes nothing; by the right id frees it, once.
    assert!(!released(s, "L2").await);
    assert!(released(s, "L1").await);
    assert!(!released(s, "L1").await);

    // Free now, but a token not above the mark is refused, naming the mark.
    assert_eq!(
        grant(s, &proposal("L5", 100, "r5")).await,
        Vote::TokenTooLow { mark: 100 }
    );
    granted(grant(s, &proposal("L6", 101, "r6")).await);

    // An aborted lock id is refused later even though the resource is free...
    assert!(s.abort(RESOURCE, "L6").await.expect("abort"));
    assert_eq!(grant(s, &proposal("L6", 500, "r6")).await, Vote::Aborted);
    // ...while a fresh id is granted.
    granted(grant(s, &proposal("L7", 501, "r7")).await);
    let state = s.read(RESOURCE).await.expect("read");
    assert_eq!(state.mark, 501);
    assert_eq!(state.holder.expect("held").record.lock_id, "L7");
}

async fn a_repeat_of_the_same_request_is_offered_its_grant_and_another_body_conflicts<
    S: LockStore,
>(
    s: &S,
    _: &ManualClock,
) {
    granted(grant(s, &proposal("L1", 100, "r1")).await);
    // Same request id and body: the earlier grant (an offer), not a new one.
    let offer = granted(grant(s, &proposal("L3", 300, "r1")).await);
    assert_eq!(offer.record.lock_id, "L1");
    assert!(!offer.record.adopted);
    // Same request id, other TTL or owner: a conflict naming the grant.
    let mut other_ttl = proposal("L4", 300, "r1");
    other_ttl.ttl = Duration::from_secs(9);
    let mut other_owner = proposal("L4", 300, "r1");
    other_owner.owner = "mallory";
    for p in [other_ttl, other_owner] {
        match grant(s, &p).await {
            Vote::RequestConflict(h) => assert_eq!(h.record.lock_id, "L1"),
            other => panic!("{other:?}"),
        }
    }
    // An empty request id never matches: each such acquire is its own.
    assert!(matches!(
        grant(s, &proposal("L8", 400, "")).await,
        Vote::Held(_)
    ));
    assert_eq!(s.read(RESOURCE).await.expect("read").mark, 100);
}

async fn renew_extends_only_the_matching_lock_and_never_recreates<S: LockStore>(
    s: &S,
    _: &ManualClock,
) {
    let mut p = proposal("L1", 10, "r1");
    p.ttl = Duration::from_secs(2);
    granted(grant(s, &p).await);
    assert_eq!(s.renew(RESOURCE, "nope", None).await.expect("renew"), None);
    let renewed = s
        .renew(RESOURCE, "L1", Some(Duration::from_secs(20)))
        .await
        .expect("renew")
        .expect("held");
    assert!(renewed.remaining >= Duration::from_secs(20), "{renewed:?}");
    assert_eq!(renewed.record.lock_id, "L1");

    assert!(released(s, "L1").await);
    assert_eq!(
        s.renew(RESOURCE, "L1", Some(Duration::from_secs(20)))
            .await
            .expect("renew"),
        None,
        "renew after release must not resurrect the lock"
    );
    assert_eq!(holder(s).await, None);
}

async fn renew_never_shortens_a_grant<S: LockStore>(s: &S, clock: &ManualClock) {
    let mut p = proposal("L1", 10, "r1");
    p.ttl = Duration::from_secs(20);
    let grant = granted(grant(s, &p).await);
    clock.advance(Duration::from_secs(1));
    let left = holder(s).await.expect("held").remaining;
    assert!(left >= Duration::from_secs(19), "{left:?}");
    for ttl in [1, 2, 18].map(Duration::from_secs) {
        let kept = s
            .renew(RESOURCE, "L1", Some(ttl))
            .await
            .expect("renew")
            .expect("still held by L1");
        assert_eq!(kept.record, grant.record, "renew({ttl:?})");
        assert_eq!(kept.remaining, left, "renew({ttl:?}) reports what holds");
        assert_eq!(holder(s).await.expect("held").remaining, left);
    }
    // A longer TTL does extend.
    let extended = s
        .renew(RESOURCE, "L1", Some(Duration::from_secs(30)))
        .await
        .expect("renew")
        .expect("held");
    assert!(
        extended.remaining >= Duration::from_secs(30),
        "{extended:?}"
    );
}

async fn a_grant_lives_its_ttl_and_then_ends_by_itself<S: LockStore>(s: &S, clock: &ManualClock) {
    let mut p = proposal("L1", 10, "r1");
    p.ttl = Duration::from_secs(1);
    granted(grant(s, &p).await);
    assert!(holder(s).await.is_some(), "held right after the grant");
    // The store's clock passes the TTL (and any rounding up of it), and real time
    // passes too for a store whose expiry runs elsewhere (etcd's leases: at
    // least etcd's minimum lease, 2 s with default timings). Polled, not slept.
    clock.advance(Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while holder(s).await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the grant never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    granted(grant(s, &proposal("L2", 11, "r2")).await);
}

/// Hole 1 (two holders): a retry was offered the earlier grant E of its request,
/// a majority confirmed adopting it, and the retry reported E as won; the
/// background abort of the round that created E must not remove it afterwards.
async fn regression_hole1_an_abort_never_removes_a_grant_a_retry_adopted<S: LockStore>(
    s: &S,
    _: &ManualClock,
) {
    granted(grant(s, &proposal("E", 100, "r1")).await);
    let offer = granted(grant(s, &proposal("L", 200, "r1")).await);
    assert_eq!(
        (offer.record.lock_id.as_str(), offer.record.adopted),
        ("E", false)
    );
    // Only the request E was made for can adopt it.
    assert_eq!(s.adopt(RESOURCE, "E", "r2").await.expect("adopt"), None);
    assert_eq!(s.adopt(RESOURCE, "E", "").await.expect("adopt"), None);
    let adopted = s
        .adopt(RESOURCE, "E", "r1")
        .await
        .expect("adopt")
        .expect("E is here for r1");
    assert!(adopted.record.adopted);

    // The first round's late abort of E: refused, E stays.
    assert!(!s.abort(RESOURCE, "E").await.expect("abort"));
    let h = holder(s).await.expect("E still holds the resource");
    assert_eq!((h.record.lock_id.as_str(), h.record.adopted), ("E", true));
    // Its holder still renews and releases it as usual.
    assert!(
        s.renew(RESOURCE, "E", Some(Duration::from_secs(8)))
            .await
            .expect("renew")
            .is_some()
    );
    assert!(released(s, "E").await);
}

/// Hole 1, the other order: the abort lands first, so the adoption fails and
/// the retry gets a fresh grant of its own lock id.
async fn regression_hole1_a_retry_never_adopts_an_aborted_grant<S: LockStore>(
    s: &S,
    _: &ManualClock,
) {
    granted(grant(s, &proposal("E", 100, "r1")).await);
    assert!(s.abort(RESOURCE, "E").await.expect("abort"));
    assert_eq!(s.adopt(RESOURCE, "E", "r1").await.expect("adopt"), None);
    let retry = granted(grant(s, &proposal("L", 200, "r1")).await);
    assert_eq!(
        (retry.record.lock_id.as_str(), retry.record.adopted),
        ("L", false)
    );
    // A late proposal of E itself is refused by its tombstone.
    assert_eq!(grant(s, &proposal("E", 300, "r9")).await, Vote::Aborted);
}

/// An offer is not an adoption: a grant offered to a retry that never won stays
/// abortable, so duplicates of one request cannot pin each other's grants.
async fn an_offered_grant_that_no_majority_adopted_is_still_aborted<S: LockStore>(
    s: &S,
    _: &ManualClock,
) {
    granted(grant(s, &proposal("E", 100, "r1")).await);
    let offer = granted(grant(s, &proposal("L", 200, "r1")).await);
    assert_eq!(offer.record.lock_id, "E");
    assert!(s.abort(RESOURCE, "E").await.expect("abort"));
    assert_eq!(holder(s).await, None);
}

async fn abort_with_another_lock_id_leaves_the_holder_and_refuses_that_id_later<S: LockStore>(
    s: &S,
    _: &ManualClock,
) {
    granted(grant(s, &proposal("L1", 10, "r1")).await);
    let before = holder(s).await.expect("held");
    assert!(
        !s.abort(RESOURCE, "OTHER").await.expect("abort"),
        "OTHER held nothing here"
    );
    assert_eq!(holder(s).await, Some(before));
    assert!(released(s, "L1").await);
    // Free, and 20 is above the mark: only OTHER's tombstone refuses it.
    assert_eq!(grant(s, &proposal("OTHER", 20, "r2")).await, Vote::Aborted);
    assert_eq!(
        granted(grant(s, &proposal("L3", 21, "r3")).await)
            .record
            .lock_id,
        "L3"
    );
}

/// A release that arrives before its own grant (both in flight to one region)
/// leaves a tombstone, so the grant that lands afterwards is refused instead of
/// lingering as a stray holder until its TTL.
async fn regression_a_release_that_overtook_its_grant_refuses_the_grant_afterwards<S: LockStore>(
    s: &S,
    _: &ManualClock,
) {
    assert!(!released(s, "L1").await);
    assert_eq!(grant(s, &proposal("L1", 10, "r1")).await, Vote::Aborted);
    assert_eq!(holder(s).await, None);
    granted(grant(s, &proposal("L2", 11, "r2")).await);
}

async fn release_answers_with_the_removed_record<S: LockStore>(s: &S, _: &ManualClock) {
    granted(grant(s, &proposal("L1", 10, "r1")).await);
    match s.release_grant(RESOURCE, "L1").await.expect("release") {
        Removal::Removed(Some(record)) => assert_eq!(
            (record.lock_id.as_str(), record.owner.as_str(), record.token),
            ("L1", "alice", 10)
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.release_grant(RESOURCE, "L1").await.expect("again"),
        Removal::Nothing
    );
}

async fn marks_only_go_up_and_a_serving_store_is_healthy<S: LockStore>(s: &S, _: &ManualClock) {
    s.check_health().await.expect("healthy");
    assert_eq!(s.read(RESOURCE).await.expect("read").mark, 0);
    granted(grant(s, &proposal("L1", 50, "r1")).await);
    assert!(released(s, "L1").await);
    // A refused proposal never moves the mark, in either direction.
    for (id, token) in [("L2", 50), ("L3", 7)] {
        assert_eq!(
            grant(s, &proposal(id, token, id)).await,
            Vote::TokenTooLow { mark: 50 }
        );
    }
    assert_eq!(s.read(RESOURCE).await.expect("read").mark, 50);
}
