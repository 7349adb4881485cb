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
use globallock_protocol::store::{Holding, Listing, LockStore, Proposal, Removal, Vote};
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
        tls: None,
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
    a_repeat_of_a_request_by_another_principal_conflicts,
    only_the_principal_of_a_grant_renews_or_releases_it_and_a_refusal_changes_nothing,
    list_shows_what_read_shows_under_a_prefix_in_resource_order_a_page_at_a_time,
    list_shows_no_released_aborted_or_ended_grant,
    a_hand_off_moves_the_resource_from_the_released_lock_to_the_next,
    a_hand_off_answers_each_part_as_the_two_calls_would,
);

fn proposal<'a>(lock_id: &'a str, token: u64, request_id: &'a str) -> Proposal<'a> {
    Proposal {
        resource: RESOURCE,
        lock_id,
        owner: "alice",
        token,
        ttl: Duration::from_secs(5),
        request_id,
        principal: "",
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

fn proposal_on<'a>(resource: &'a str, lock_id: &'a str, token: u64) -> Proposal<'a> {
    Proposal {
        resource,
        ..proposal(lock_id, token, lock_id)
    }
}

async fn list<S: LockStore>(s: &S, prefix: &str, start_after: &str, limit: usize) -> Listing {
    s.list(prefix, start_after, limit).await.expect("list")
}

fn names(listing: &Listing) -> Vec<&str> {
    listing.grants.iter().map(|g| g.resource.as_str()).collect()
}

async fn list_shows_what_read_shows_under_a_prefix_in_resource_order_a_page_at_a_time<
    S: LockStore,
>(
    s: &S,
    _: &ManualClock,
) {
    // Granted out of order; names that share the start "orders" without the "/".
    let resources = [
        "orders/2",
        "other/1",
        "orders/ü",
        "orders",
        "orders/10",
        "ordersX",
        "orders/1",
    ];
    for (i, resource) in resources.iter().enumerate() {
        let lock_id = format!("L{i}");
        granted(grant(s, &proposal_on(resource, &lock_id, 10 + i as u64)).await);
    }
    // A free resource with a mark is not listed.
    granted(grant(s, &proposal_on("orders/3", "L9", 50)).await);
    assert!(s.release_grant("orders/3", "L9").await.unwrap().removed());

    let all = list(s, "orders/", "", 10).await;
    assert_eq!(
        names(&all),
        ["orders/1", "orders/10", "orders/2", "orders/ü"],
        "by UTF-8 bytes, only under the prefix"
    );
    assert!(!all.more);
    // Each entry is the holder a read of that resource shows.
    for listed in &all.grants {
        let read = s.read(&listed.resource).await.expect("read");
        assert_eq!(Some(&listed.holding), read.holder.as_ref(), "{listed:?}");
        assert!(listed.holding.remaining >= Duration::from_secs(5));
    }
    assert_eq!(all.grants[2].holding.record.lock_id, "L0");
    assert_eq!(all.grants[2].holding.record.owner, "alice");
    assert_eq!(all.grants[2].holding.record.token, 10);

    // A page at a time: `more` until the last page.
    let first = list(s, "orders/", "", 2).await;
    assert_eq!(names(&first), ["orders/1", "orders/10"]);
    assert!(first.more);
    let second = list(s, "orders/", "orders/10", 2).await;
    assert_eq!(names(&second), ["orders/2", "orders/ü"]);
    assert!(!second.more, "nothing after the last one");
    assert_eq!(names(&list(s, "orders/", "orders/ü", 2).await), [""; 0]);

    // The start needs not be a listed name, nor under the prefix.
    assert_eq!(
        names(&list(s, "orders/", "orders/1", 10).await),
        ["orders/10", "orders/2", "orders/ü"]
    );
    assert_eq!(
        names(&list(s, "orders/", "orders/1\u{0}", 10).await),
        ["orders/10", "orders/2", "orders/ü"]
    );
    assert_eq!(names(&list(s, "orders/", "a", 10).await).len(), 4);
    assert_eq!(names(&list(s, "orders/", "p", 10).await), [""; 0]);
    assert_eq!(
        names(&list(s, "orders/1", "", 10).await),
        ["orders/1", "orders/10"]
    );
    // No prefix: everything, in order.
    let everything = list(s, "", "", 100).await;
    assert_eq!(
        names(&everything),
        [
            "orders",
            "orders/1",
            "orders/10",
            "orders/2",
            "orders/ü",
            "ordersX",
            "other/1"
        ]
    );
    assert!(!everything.more);
    assert_eq!(names(&list(s, "nothing/", "", 10).await), [""; 0]);
}

async fn list_shows_no_released_aborted_or_ended_grant<S: LockStore>(s: &S, clock: &ManualClock) {
    granted(grant(s, &proposal_on("jobs/a", "A", 10)).await);
    granted(grant(s, &proposal_on("jobs/b", "B", 11)).await);
    let mut short = proposal_on("jobs/c", "C", 12);
    short.ttl = Duration::from_secs(1);
    granted(grant(s, &short).await);
    let mut long = proposal_on("jobs/d", "D", 13);
    long.ttl = Duration::from_secs(60);
    granted(grant(s, &long).await);
    assert_eq!(
        names(&list(s, "jobs/", "", 10).await),
        ["jobs/a", "jobs/b", "jobs/c", "jobs/d"]
    );

    assert!(s.release_grant("jobs/a", "A").await.unwrap().removed());
    assert!(s.abort("jobs/b", "B").await.unwrap());
    // Another lock id's release or abort leaves the holder listed.
    assert!(!s.release_grant("jobs/d", "B").await.unwrap().removed());
    assert_eq!(names(&list(s, "jobs/", "", 10).await), ["jobs/c", "jobs/d"]);

    // The short grant ends by itself (see a_grant_lives_its_ttl_and_then_ends_by_itself).
    clock.advance(Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listing = list(s, "jobs/", "", 10).await;
        if names(&listing) == ["jobs/d"] {
            let left = listing.grants[0].holding.remaining;
            assert!(left >= Duration::from_secs(54), "{left:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the short grant is still listed: {listing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A repeat of a request by another principal is not the same acquire: it is
/// never offered the first principal's grant.
async fn a_repeat_of_a_request_by_another_principal_conflicts<S: LockStore>(
    s: &S,
    _: &ManualClock,
) {
    let mut first = proposal("L1", 100, "r1");
    first.principal = "billing";
    let held = granted(grant(s, &first).await);
    assert_eq!(held.record.principal, "billing");
    let mut other = proposal("L2", 200, "r1");
    other.principal = "batch";
    match grant(s, &other).await {
        Vote::RequestConflict(h) => assert_eq!(h.record.lock_id, "L1"),
        other => panic!("{other:?}"),
    }
    first.lock_id = "L3";
    first.token = 300;
    assert_eq!(granted(grant(s, &first).await).record.lock_id, "L1");
}

/// A lock belongs to whoever acquired it: renew and release as another
/// principal are refused (an error of kind `NotOwner`) on the same read they
/// would act on, and change nothing; as its own principal, or with no principal
/// (an admin's forced call), they work.
async fn only_the_principal_of_a_grant_renews_or_releases_it_and_a_refusal_changes_nothing<
    S: LockStore,
>(
    s: &S,
    clock: &ManualClock,
) {
    use globallock_protocol::store::{FaultKind, StoreFault};
    let mut p = proposal("L1", 100, "r1");
    p.principal = "billing";
    granted(grant(s, &p).await);
    let before = holder(s).await.expect("held");
    clock.advance(Duration::from_secs(1));
    let refused = s
        .renew_as(RESOURCE, "L1", Some(Duration::from_secs(30)), Some("batch"))
        .await
        .expect_err("another principal's renewal");
    assert_eq!(refused.kind(), FaultKind::NotOwner);
    let refused = s
        .release_as(RESOURCE, "L1", Some("batch"))
        .await
        .expect_err("another principal's release");
    assert_eq!(refused.kind(), FaultKind::NotOwner);
    let after = holder(s).await.expect("still held");
    assert_eq!(after.record, before.record);
    assert!(
        after.remaining < before.remaining,
        "not extended: {after:?}"
    );
    // Another lock id is not a refusal: there is nothing of this principal's.
    assert_eq!(
        s.renew_as(RESOURCE, "L9", None, Some("batch"))
            .await
            .expect("renew"),
        None
    );
    // Its own principal renews it; an admin (no principal) releases it.
    let renewed = s
        .renew_as(
            RESOURCE,
            "L1",
            Some(Duration::from_secs(30)),
            Some("billing"),
        )
        .await
        .expect("own renewal")
        .expect("renewed");
    assert!(renewed.remaining > Duration::from_secs(20), "{renewed:?}");
    assert!(
        s.release_as(RESOURCE, "L1", None)
            .await
            .expect("forced release")
            .removed()
    );
    assert_eq!(holder(s).await, None);
}

/// A hand-off releases one lock and grants the next: afterwards the next holds
/// the resource with its own token, the mark is that token, the released lock
/// cannot be renewed, released again or proposed again, and its release
/// answered with its record.
async fn a_hand_off_moves_the_resource_from_the_released_lock_to_the_next<S: LockStore>(
    s: &S,
    _: &ManualClock,
) {
    let mut first = proposal("L1", 100, "r1");
    first.principal = "billing";
    granted(grant(s, &first).await);
    let mut next = proposal("L2", 200, "r2");
    next.principal = "batch";
    next.owner = "bob";
    let (release_part, vote) = s.hand_off("L1", Some("billing"), &next).await;
    match release_part.expect("release part") {
        Removal::Removed(Some(record)) => {
            assert_eq!((record.lock_id.as_str(), record.token), ("L1", 100));
        }
        other => panic!("the release part removed nothing: {other:?}"),
    }
    let h = granted(vote.expect("grant part"));
    assert_eq!((h.record.lock_id.as_str(), h.record.token), ("L2", 200));
    assert_eq!(h.record.principal, "batch");
    let state = s.read(RESOURCE).await.expect("read");
    let held = state.holder.expect("held by the next");
    assert_eq!(
        (held.record.lock_id.as_str(), held.record.owner.as_str()),
        ("L2", "bob")
    );
    assert_eq!(state.mark, 200);
    assert!(
        s.renew(RESOURCE, "L1", None)
            .await
            .expect("renew")
            .is_none()
    );
    assert!(!released(s, "L1").await, "L1 is gone");
    // A delayed copy of L1's proposal is refused.
    assert!(!matches!(grant(s, &first).await, Vote::Granted(_)));
    // The next lock is a lock like any other: its principal releases it.
    let removal = s
        .release_as(RESOURCE, "L2", Some("batch"))
        .await
        .expect("release");
    assert!(removal.removed());
    assert!(holder(s).await.is_none());
}

/// Where the release finds nothing, or is refused, or the next proposal would
/// be refused, a hand-off answers each part exactly as the release and then
/// the grant would, and a refused part changes nothing.
async fn a_hand_off_answers_each_part_as_the_two_calls_would<S: LockStore>(s: &S, _: &ManualClock) {
    use globallock_protocol::store::{FaultKind, StoreFault};
    // Another principal's lock: the release part is refused, the grant part
    // finds the resource held, and nothing changes.
    let mut first = proposal("L1", 100, "r1");
    first.principal = "billing";
    granted(grant(s, &first).await);
    let (released, vote) = s
        .hand_off("L1", Some("batch"), &proposal("L2", 200, "r2"))
        .await;
    assert_eq!(
        released.expect_err("not its lock").kind(),
        FaultKind::NotOwner
    );
    match vote.expect("grant part") {
        Vote::Held(h) => assert_eq!(h.record.lock_id, "L1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.read(RESOURCE).await.expect("read").mark, 100);
    // A token not above the mark: released, and the grant part is refused.
    let (released, vote) = s
        .hand_off("L1", Some("billing"), &proposal("L3", 100, "r3"))
        .await;
    assert!(released.expect("release part").removed());
    assert!(matches!(
        vote.expect("grant part"),
        Vote::TokenTooLow { mark: 100 }
    ));
    assert!(holder(s).await.is_none(), "released, and nothing granted");
    // Nothing to release: the grant part alone.
    let (released, vote) = s.hand_off("L1", None, &proposal("L4", 300, "r4")).await;
    assert!(!released.expect("release part").removed());
    assert_eq!(granted(vote.expect("grant part")).record.lock_id, "L4");
    // An aborted next lock id is refused even when the release frees the resource.
    assert!(!s.abort(RESOURCE, "L5").await.expect("abort"));
    let (released, vote) = s.hand_off("L4", None, &proposal("L5", 400, "r5")).await;
    assert!(released.expect("release part").removed());
    assert!(matches!(vote.expect("grant part"), Vote::Aborted));
    assert!(holder(s).await.is_none());
    assert_eq!(s.read(RESOURCE).await.expect("read").mark, 300);
}
