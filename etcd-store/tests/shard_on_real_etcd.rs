//! The etcd store's own behaviour against a real etcd process: lease buckets,
//! quarantine after data loss, the watermark, mark collection, lost replies and
//! races staged between a read and its compare-and-swap. The rules every store
//! keeps are the contract tests in `region-agent/tests/store_contract.rs`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use globallock_etcd::keys::{KeyLayout, encode_token};
use globallock_etcd::shard::RenewHook;
use globallock_etcd::{
    GrantRecord, Holding, Proposal, Quarantined, Removal, ShardConfig, ShardStore, StoreError, Vote,
};
use globallock_localcluster::EtcdCluster;
use globallock_protocol::clock::{Clock, ManualClock, SharedClock, SystemClock};

const PREFIX: &str = "/globallock/";
const RESOURCE: &str = "orders/42";
/// The quarantine every fixture is configured with.
const QUARANTINE: Duration = Duration::from_secs(10);
/// Wall time the manual clocks start at (a realistic microsecond timestamp).
const START_UNIX_MICROS: u64 = 1_700_000_000_000_000;

struct Fixture {
    store: ShardStore,
    config: ShardConfig,
    etcd: EtcdCluster,
    _dir: tempfile::TempDir,
}

/// A bootstrapped store on its own etcd, on the system clock.
async fn fixture() -> Fixture {
    fixture_with(Arc::new(SystemClock::new())).await
}

/// A bootstrapped store on its own etcd, reading time from `clock`.
async fn fixture_with(clock: SharedClock) -> Fixture {
    let f = unprepared_fixture(clock).await;
    f.store.prepare(true).await.expect("bootstrap");
    f
}

/// A store on its own empty etcd that has not run `prepare` yet.
async fn unprepared_fixture(clock: SharedClock) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdCluster::start("shard", 1, dir.path()).expect("etcd starts");
    let config = ShardConfig {
        name: "s0".into(),
        endpoints: etcd.endpoints(),
        prefix: PREFIX.into(),
        request_timeout: Duration::from_secs(2),
        lease_granularity: Duration::from_millis(500),
        tombstone_ttl: Duration::from_secs(30),
        quarantine: QUARANTINE,
        drift_rate: 0.01,
        state_file: None,
        tls: None,
    };
    let store = ShardStore::connect(&config, clock).await.expect("connect");
    Fixture {
        store,
        config,
        etcd,
        _dir: dir,
    }
}

impl Fixture {
    /// Another store on the same etcd (an agent restart, or a concurrent writer),
    /// not prepared yet.
    async fn connect(&self, clock: SharedClock) -> ShardStore {
        ShardStore::connect(&self.config, clock)
            .await
            .expect("connect")
    }

    /// A plain etcd client, to look under the store.
    async fn raw(&self) -> etcd_client::Client {
        etcd_client::Client::connect(self.etcd.endpoints(), None)
            .await
            .expect("raw etcd client")
    }
}

fn manual_clock() -> Arc<ManualClock> {
    ManualClock::new(START_UNIX_MICROS)
}

fn keys() -> KeyLayout {
    KeyLayout::new(PREFIX)
}

/// The raw key-value under `key`, if any.
async fn raw_get(raw: &mut etcd_client::Client, key: &str) -> Option<etcd_client::KeyValue> {
    let response = raw.get(key, None).await.expect("raw get");
    response.kvs().first().cloned()
}

/// The incarnation marker's value, if any.
async fn raw_marker(raw: &mut etcd_client::Client) -> Option<String> {
    raw_get(raw, &keys().incarnation())
        .await
        .map(|kv| kv.value_str().expect("utf-8 marker").to_owned())
}

/// The grant under the resource's lock key: (record, mod revision, lease id).
async fn raw_grant(raw: &mut etcd_client::Client) -> Option<(GrantRecord, i64, i64)> {
    raw_get(raw, &keys().lock(RESOURCE)).await.map(|kv| {
        let record: GrantRecord = serde_json::from_slice(kv.value()).expect("record");
        (record, kv.mod_revision(), kv.lease())
    })
}

/// A renew hook from an async closure.
fn renew_hook<F, Fut>(hook: F) -> RenewHook
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move || Box::pin(hook()))
}

fn granted(vote: Vote<Holding>) -> Holding {
    match vote {
        Vote::Granted(h) => h,
        other => panic!("expected a grant, got {other:?}"),
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
        principal: "",
    }
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
        drift_rate: 0.01,
        state_file: None,
        tls: None,
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
                principal: "",
            })
            .await
            .unwrap_or_else(|e| panic!("grant {i} failed: {e}"));
        assert!(matches!(reply, Vote::Granted(_)), "{i}: {reply:?}");
        assert!(
            store.release("orders/42", &lock_id).await.expect("release"),
            "{i}"
        );
    }
}

// --- renew never shortens -----------------------------------------------------

#[tokio::test]
async fn renew_with_a_shorter_ttl_keeps_the_longer_remaining_time_and_writes_nothing() {
    let clock = manual_clock();
    let f = fixture_with(clock.clone()).await;
    let s = &f.store;
    let mut raw = f.raw().await;
    let mut p = proposal("L1", 10, "r1");
    p.ttl = Duration::from_secs(20);
    let grant = granted(s.grant(&p).await.expect("grant"));
    assert_eq!(grant.remaining, Duration::from_secs(20));
    let (_, revision, lease) = raw_grant(&mut raw).await.expect("stored");

    clock.advance(Duration::from_secs(1));
    // Shorter than the 19 s left, and exactly as long: both keep the grant as is.
    for ttl in [1, 2, 18, 19].map(Duration::from_secs) {
        let kept = s
            .renew(RESOURCE, "L1", Some(ttl))
            .await
            .expect("renew")
            .expect("still held by L1");
        assert_eq!(kept.record, grant.record, "renew({ttl:?})");
        assert_eq!(
            kept.remaining,
            Duration::from_secs(19),
            "renew({ttl:?}) must report the longer remaining time"
        );
        let (record, now_revision, now_lease) = raw_grant(&mut raw).await.expect("still stored");
        assert_eq!(record, grant.record);
        assert_eq!(
            (now_revision, now_lease),
            (revision, lease),
            "renew({ttl:?}) must not move the grant to a shorter lease"
        );
    }
    // The grant's etcd lease still has its ~20 s, not the 2 s asked for.
    let ttl = raw
        .lease_time_to_live(lease, None)
        .await
        .expect("lease ttl")
        .ttl();
    assert!(ttl > 10, "lease ttl {ttl}");
    let state = s.read(RESOURCE).await.expect("read");
    let holder = state.holder.expect("held");
    assert_eq!(holder.record.lock_id, "L1");
    assert_eq!(holder.remaining, Duration::from_secs(19));

    // Sanity: a longer TTL does extend (and moves the grant to a new lease).
    let extended = s
        .renew(RESOURCE, "L1", Some(Duration::from_secs(30)))
        .await
        .expect("renew")
        .expect("held");
    assert_eq!(extended.remaining, Duration::from_secs(30));
    let (_, _, new_lease) = raw_grant(&mut raw).await.expect("stored");
    assert_ne!(new_lease, lease);
}

// --- renew's compare-and-swap --------------------------------------------------

/// A second store on the same etcd, serving, for a hook to write through.
async fn concurrent_writer(f: &Fixture, clock: SharedClock) -> Arc<ShardStore> {
    let other = f.connect(clock).await;
    other.prepare(false).await.expect("prepare");
    assert_eq!(other.admit().await.expect("admit"), Ok(0));
    Arc::new(other)
}

#[tokio::test]
async fn renew_does_not_recreate_a_grant_released_between_its_read_and_its_write() {
    let clock = manual_clock();
    let mut f = fixture_with(clock.clone()).await;
    let mut p = proposal("L1", 10, "r1");
    p.ttl = Duration::from_secs(2);
    granted(f.store.grant(&p).await.expect("grant"));

    let other = concurrent_writer(&f, clock.clone()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let hook_calls = calls.clone();
    f.store.set_renew_hook(Some(renew_hook(move || {
        let other = other.clone();
        let calls = hook_calls.clone();
        async move {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                assert!(other.release(RESOURCE, "L1").await.expect("release"));
            }
        }
    })));

    let renewed = f
        .store
        .renew(RESOURCE, "L1", Some(Duration::from_secs(20)))
        .await
        .expect("renew");
    assert_eq!(renewed, None, "renew must not extend a released grant");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the release ran between renew's read and its transaction"
    );
    let mut raw = f.raw().await;
    assert!(
        raw_grant(&mut raw).await.is_none(),
        "renew must not recreate the released grant"
    );
    assert!(f.store.read(RESOURCE).await.expect("read").holder.is_none());
    // Free indeed: the next lock takes it.
    let next = f
        .store
        .grant(&proposal("L2", 11, "r2"))
        .await
        .expect("grant");
    assert_eq!(granted(next).record.lock_id, "L2");
}

#[tokio::test]
async fn renew_leaves_alone_another_lock_that_took_the_resource_between_its_read_and_its_write() {
    let clock = manual_clock();
    let mut f = fixture_with(clock.clone()).await;
    let mut p = proposal("L1", 10, "r1");
    p.ttl = Duration::from_secs(2);
    granted(f.store.grant(&p).await.expect("grant"));

    let other = concurrent_writer(&f, clock.clone()).await;
    let raw = f.raw().await;
    // What the other lock's grant looked like right after it was written:
    // (its holding as granted, and the raw (record, mod revision, lease)).
    type Taken = (Holding, (GrantRecord, i64, i64));
    let taken: Arc<Mutex<Option<Taken>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (hook_other, hook_taken, hook_calls) = (other.clone(), taken.clone(), calls.clone());
    f.store.set_renew_hook(Some(renew_hook(move || {
        let other = hook_other.clone();
        let taken = hook_taken.clone();
        let calls = hook_calls.clone();
        let mut raw = raw.clone();
        async move {
            if calls.fetch_add(1, Ordering::SeqCst) != 0 {
                return;
            }
            assert!(other.release(RESOURCE, "L1").await.expect("release"));
            let theirs = Proposal {
                resource: RESOURCE,
                lock_id: "L2",
                owner: "bob",
                token: 11,
                ttl: Duration::from_secs(3),
                request_id: "r2",
                principal: "",
            };
            let holding = granted(other.grant(&theirs).await.expect("grant"));
            let stored = raw_grant(&mut raw).await.expect("L2 stored");
            *taken.lock().unwrap() = Some((holding, stored));
        }
    })));

    let renewed = f
        .store
        .renew(RESOURCE, "L1", Some(Duration::from_secs(20)))
        .await
        .expect("renew");
    assert_eq!(renewed, None, "L1 no longer holds the resource");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let (holding, stored) = taken.lock().unwrap().take().expect("the hook ran");
    let mut raw = f.raw().await;
    assert_eq!(
        raw_grant(&mut raw).await.expect("L2 still stored"),
        stored,
        "renew must not write over the other lock's grant (record, revision, lease)"
    );
    let state = other.read(RESOURCE).await.expect("read");
    assert_eq!(state.mark, 11);
    let holder = state.holder.expect("held by L2");
    assert_eq!(holder.record, holding.record);
    assert_eq!(holder.record.owner, "bob");
    assert_eq!(
        holder.remaining, holding.remaining,
        "L2 was not extended by L1's renew"
    );
}

// --- abort with another lock's id -----------------------------------------------

#[tokio::test]
async fn abort_with_another_lock_id_leaves_the_holder_and_tombstones_that_id() {
    let clock = manual_clock();
    let f = fixture_with(clock.clone()).await;
    let s = &f.store;
    let mut raw = f.raw().await;
    let holding = granted(s.grant(&proposal("L1", 10, "r1")).await.expect("grant"));
    let before = raw_grant(&mut raw).await.expect("stored");

    assert!(
        !s.abort(RESOURCE, "OTHER").await.expect("abort"),
        "OTHER held nothing here"
    );
    assert_eq!(
        raw_grant(&mut raw).await.expect("L1 still stored"),
        before,
        "an abort of another id must not touch L1's grant"
    );
    let state = s.read(RESOURCE).await.expect("read");
    assert_eq!(state.holder, Some(holding));
    assert!(
        raw_get(&mut raw, &keys().tombstone("OTHER"))
            .await
            .is_some(),
        "the abort leaves a tombstone for OTHER"
    );

    // L1 is intact: it releases as usual.
    assert!(s.release(RESOURCE, "L1").await.expect("release"));
    // The resource is free and 20 is above the mark: only the tombstone refuses.
    let late = s.grant(&proposal("OTHER", 20, "r2")).await.expect("grant");
    assert_eq!(late, Vote::Aborted);
    let fresh = s.grant(&proposal("L3", 21, "r3")).await.expect("grant");
    assert_eq!(granted(fresh).record.lock_id, "L3");
}

// --- quarantine and the token floor ---------------------------------------------

fn assert_quarantined(error: StoreError, remaining: Duration) {
    match error {
        StoreError::Quarantined {
            remaining: left, ..
        } => assert_eq!(left, remaining),
        other => panic!("expected a quarantine error, got {other:?}"),
    }
}

#[tokio::test]
async fn prepare_without_a_marker_quarantines_until_the_clock_passes_the_quarantine_then_serves_above_the_clock()
 {
    let clock = manual_clock();
    let f = unprepared_fixture(clock.clone()).await;
    let s = &f.store;
    let mut raw = f.raw().await;
    s.prepare(false).await.expect("prepare");
    assert_eq!(
        raw_marker(&mut raw).await,
        None,
        "prepare(false) writes no marker"
    );

    assert_eq!(
        s.admit().await.expect("admit"),
        Err(Quarantined {
            remaining: QUARANTINE
        })
    );
    let p = proposal("L1", START_UNIX_MICROS * 2, "r1");
    assert_quarantined(s.grant(&p).await.unwrap_err(), QUARANTINE);
    assert_quarantined(s.read(RESOURCE).await.unwrap_err(), QUARANTINE);
    assert!(raw_grant(&mut raw).await.is_none(), "nothing granted");

    // Just short of the quarantine: still silent.
    clock.advance(QUARANTINE - Duration::from_millis(1));
    let left = Duration::from_millis(1);
    assert_eq!(
        s.admit().await.expect("admit"),
        Err(Quarantined { remaining: left })
    );
    assert_quarantined(s.grant(&p).await.unwrap_err(), left);
    assert_eq!(raw_marker(&mut raw).await, None);

    // Past it: serving again, above the clock's wall time now.
    clock.advance(Duration::from_millis(2));
    let floor = clock.unix_micros();
    assert_eq!(floor, START_UNIX_MICROS + 10_001_000);
    assert_eq!(s.admit().await.expect("admit"), Ok(floor));
    assert_eq!(raw_marker(&mut raw).await, Some(encode_token(floor)));

    for token in [1, floor - 1, floor] {
        let low = s.grant(&proposal("L1", token, "r1")).await.expect("grant");
        assert_eq!(low, Vote::TokenTooLow { mark: floor }, "token {token}");
    }
    assert!(raw_grant(&mut raw).await.is_none());
    let ok = s
        .grant(&proposal("L2", floor + 1, "r2"))
        .await
        .expect("grant");
    assert_eq!(granted(ok).record.token, floor + 1);
    // The floor stays put once serving, however the clock moves.
    clock.advance(Duration::from_secs(60));
    assert_eq!(s.admit().await.expect("admit"), Ok(floor));
}

#[tokio::test]
async fn prepare_with_bootstrap_on_an_empty_etcd_serves_at_once_with_floor_zero() {
    let clock = manual_clock();
    let f = unprepared_fixture(clock.clone()).await;
    let s = &f.store;
    let mut raw = f.raw().await;
    assert!(
        s.admit().await.expect("admit").is_err(),
        "silent before prepare"
    );
    s.prepare(true).await.expect("bootstrap");
    assert_eq!(s.admit().await.expect("admit"), Ok(0));
    assert_eq!(raw_marker(&mut raw).await, Some(encode_token(0)));
    let reply = s.grant(&proposal("L1", 1, "r1")).await.expect("grant");
    assert_eq!(granted(reply).record.token, 1);

    // Another store on it (without bootstrap) finds the marker and serves at once.
    let again = f.connect(manual_clock()).await;
    again.prepare(false).await.expect("prepare");
    assert_eq!(again.admit().await.expect("admit"), Ok(0));
}

#[tokio::test]
async fn prepare_without_bootstrap_on_an_etcd_with_a_marker_serves_at_once_above_its_floor() {
    let clock = manual_clock();
    let f = unprepared_fixture(clock.clone()).await;
    let s = &f.store;
    let mut raw = f.raw().await;
    let floor = 5_000;
    raw.put(keys().incarnation(), encode_token(floor), None)
        .await
        .expect("write marker");
    let written = raw_get(&mut raw, &keys().incarnation())
        .await
        .expect("marker")
        .mod_revision();

    s.prepare(false).await.expect("prepare");
    assert_eq!(s.admit().await.expect("admit"), Ok(floor));
    let marker = raw_get(&mut raw, &keys().incarnation())
        .await
        .expect("marker");
    assert_eq!(
        marker.mod_revision(),
        written,
        "the marker is not rewritten"
    );

    let low = s.grant(&proposal("L1", floor, "r1")).await.expect("grant");
    assert_eq!(low, Vote::TokenTooLow { mark: floor });
    let ok = s
        .grant(&proposal("L2", floor + 1, "r2"))
        .await
        .expect("grant");
    assert_eq!(granted(ok).record.token, floor + 1);
}

#[tokio::test]
async fn token_floor_survives_a_restart_of_the_store_and_of_etcd() {
    let clock = manual_clock();
    let mut f = unprepared_fixture(clock.clone()).await;
    f.store.prepare(false).await.expect("prepare");
    clock.advance(QUARANTINE + Duration::from_millis(1));
    let floor = f.store.admit().await.expect("admit").expect("serving");
    assert_eq!(floor, START_UNIX_MICROS + 10_001_000);

    // The agent restarts: a new store, whose clock reads another wall time, finds
    // the marker and serves above the same floor (with or without bootstrap).
    let later = ManualClock::new(START_UNIX_MICROS + 3_600_000_000);
    f.store = f.connect(later.clone()).await;
    f.store.prepare(false).await.expect("prepare");
    assert_eq!(f.store.admit().await.expect("admit"), Ok(floor));
    let bootstrapped = f.connect(later.clone()).await;
    bootstrapped.prepare(true).await.expect("prepare");
    assert_eq!(
        bootstrapped.admit().await.expect("admit"),
        Ok(floor),
        "bootstrap must not reset an existing floor"
    );
    let low = f
        .store
        .grant(&proposal("L1", floor, "r1"))
        .await
        .expect("grant");
    assert_eq!(low, Vote::TokenTooLow { mark: floor });

    // etcd itself restarts (keeping its data): still the same floor.
    f.etcd.kill();
    f.etcd.restart().expect("etcd restarts");
    f.store = f.connect(later.clone()).await;
    f.store.prepare(false).await.expect("prepare");
    assert_eq!(f.store.admit().await.expect("admit"), Ok(floor));
    let low = f
        .store
        .grant(&proposal("L1", floor, "r1"))
        .await
        .expect("grant");
    assert_eq!(low, Vote::TokenTooLow { mark: floor });
    let ok = f
        .store
        .grant(&proposal("L2", floor + 1, "r2"))
        .await
        .expect("grant");
    assert_eq!(granted(ok).record.token, floor + 1);
}

/// Hole 2: a shared bucket lease is asked for with the drift allowance on its
/// whole length, so a grant that reuses it just before its deadline cannot end
/// early on a fast etcd leader clock (before: exactly the bucket's seconds).
#[tokio::test]
async fn regression_hole2_bucket_leases_are_padded_for_a_fast_leader_clock() {
    let f = fixture().await;
    let s = &f.store;
    let mut long = proposal("L1", 10, "r1");
    long.ttl = Duration::from_secs(300);
    assert!(matches!(
        s.grant(&long).await.expect("grant"),
        Vote::Granted(_)
    ));
    let mut raw = f.raw().await;
    let kv = raw_get(&mut raw, &keys().lock("orders/42"))
        .await
        .expect("grant stored");
    let lease = raw
        .lease_time_to_live(kv.lease(), None)
        .await
        .expect("lease ttl");
    // 300 s (+ at most one 0.5 s granularity) × 1.01, rounded up.
    assert!(
        lease.granted_ttl() >= 303,
        "lease granted for {} s",
        lease.granted_ttl()
    );
}

/// Hole 2: abort tombstones never share a lease with grants (their buckets are
/// sized and forgotten on their own).
#[tokio::test]
async fn regression_hole2_tombstones_do_not_share_leases_with_grants() {
    let f = fixture().await;
    let s = &f.store;
    // A grant with the tombstone's TTL: same bucket deadline as the tombstone.
    let mut p = proposal("L1", 10, "r1");
    p.ttl = Duration::from_secs(30);
    s.grant(&p).await.expect("grant");
    assert!(!s.abort("orders/42", "GONE").await.expect("abort"));
    let mut raw = f.raw().await;
    let grant = raw_get(&mut raw, &keys().lock("orders/42"))
        .await
        .expect("grant stored");
    let tomb = raw_get(&mut raw, &keys().tombstone("GONE"))
        .await
        .expect("tombstone stored");
    assert_ne!(grant.lease(), 0);
    assert_ne!(tomb.lease(), 0);
    assert_ne!(grant.lease(), tomb.lease());
}

fn is_quarantined<T: std::fmt::Debug>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Quarantined { .. }))
}

/// Hole 6: etcd wiped under a running agent. Before, the grant transaction's
/// marker compare failed silently (contention forever), renew said "not found"
/// and health said healthy. Now every path reads the marker, the store
/// quarantines itself, health reports it, and it serves again only after the
/// quarantine, above a fresh floor.
#[tokio::test]
async fn regression_hole6_an_etcd_wiped_under_a_running_store_quarantines_it() {
    let clock = manual_clock();
    let f = fixture_with(clock.clone()).await;
    let s = &f.store;
    s.grant(&proposal("L1", 10, "r1")).await.expect("grant");
    let mut raw = f.raw().await;
    raw.delete(
        PREFIX,
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .expect("wipe");

    let renew = s.renew("orders/42", "L1", None).await;
    assert!(is_quarantined(&renew), "renew: {renew:?}");
    let grant = s.grant(&proposal("L2", 20, "r2")).await;
    assert!(is_quarantined(&grant), "grant: {grant:?}");
    assert!(is_quarantined(&s.read("orders/42").await));
    assert!(is_quarantined(&s.check_health().await));
    assert!(matches!(s.admit().await, Ok(Err(_))));

    clock.advance(QUARANTINE + Duration::from_millis(1));
    let floor = s.admit().await.expect("etcd").expect("serving again");
    assert_eq!(floor, clock.unix_micros());
    s.check_health()
        .await
        .expect("healthy after the quarantine");
    let low = s.grant(&proposal("L3", 30, "r3")).await.expect("grant");
    assert_eq!(low, Vote::TokenTooLow { mark: floor });
    let above = s
        .grant(&proposal("L4", floor + 1, "r4"))
        .await
        .expect("grant");
    assert!(matches!(above, Vote::Granted(_)));
}

/// Hole 6: a marker rewritten under a running agent (another floor) must not let
/// this store vote with its stale floor: the floor is compared inside the
/// transaction, and a mismatch quarantines.
#[tokio::test]
async fn regression_hole6_a_rewritten_marker_quarantines_instead_of_voting_with_a_stale_floor() {
    let f = fixture_with(manual_clock()).await;
    let s = &f.store;
    s.grant(&proposal("L1", 10, "r1")).await.expect("grant");
    let mut raw = f.raw().await;
    raw.put(keys().incarnation(), encode_token(5_000), None)
        .await
        .expect("rewrite marker");
    let grant = s.grant(&proposal("L2", 20, "r2")).await;
    assert!(is_quarantined(&grant), "grant: {grant:?}");
    assert!(is_quarantined(&s.check_health().await));
}

/// A listing reads the incarnation marker with the grants, like every other
/// read: on an etcd wiped (or a marker rewritten) under the running store, the
/// listing itself finds it, answers nothing, and quarantines the shard.
#[tokio::test]
async fn a_listing_checks_the_marker_and_quarantines_on_a_wiped_or_rewritten_one() {
    for rewrite in [false, true] {
        let f = fixture_with(manual_clock()).await;
        let s = &f.store;
        s.grant(&proposal("L1", 10, "r1")).await.expect("grant");
        let listed = s.list("", "", 10).await.expect("list");
        assert_eq!(listed.grants.len(), 1);
        let mut raw = f.raw().await;
        if rewrite {
            raw.put(keys().incarnation(), encode_token(5_000), None)
                .await
                .expect("rewrite marker");
        } else {
            raw.delete(keys().incarnation(), None)
                .await
                .expect("wipe marker");
        }
        let listed = s.list("", "", 10).await;
        assert!(is_quarantined(&listed), "rewrite {rewrite}: {listed:?}");
        assert!(is_quarantined(&s.check_health().await));
        // Also with an empty range (nothing can sort after "~"), the marker is read.
        let f = fixture_with(manual_clock()).await;
        let mut raw = f.raw().await;
        raw.delete(keys().incarnation(), None)
            .await
            .expect("wipe marker");
        assert!(is_quarantined(&f.store.list("", "~", 10).await));
    }
}

/// A key under the grant prefix that names no resource, or a record that does
/// not decode, is data loss for a listing (an operator must look), not a
/// silently shorter list.
#[tokio::test]
async fn a_listing_refuses_a_key_or_record_it_cannot_read() {
    let f = fixture_with(manual_clock()).await;
    let mut raw = f.raw().await;
    let stray = format!("{}zz", keys().lock_prefix());
    raw.put(stray.as_str(), "{}", None)
        .await
        .expect("stray key");
    let listed = f.store.list("", "", 10).await;
    assert!(
        matches!(listed, Err(StoreError::CorruptKey { ref key, .. }) if *key == stray),
        "{listed:?}"
    );
    raw.delete(stray.as_str(), None).await.expect("delete");
    raw.put(keys().lock("orders/1"), "not json", None)
        .await
        .expect("corrupt record");
    let listed = f.store.list("orders/", "", 10).await;
    assert!(
        matches!(listed, Err(StoreError::Corrupt { .. })),
        "{listed:?}"
    );
    // Outside the prefix, the listing does not touch it.
    assert!(
        f.store
            .list("jobs/", "", 10)
            .await
            .expect("list")
            .grants
            .is_empty()
    );
}

/// Hole 5: an etcd restored to older data (here: its data directory put back to
/// a copy taken earlier) keeps the incarnation marker but lost recent grants and
/// marks. The store notices the revision going back, quarantines, and so does a
/// restarted store that reads the watermark from disk. Before, both voted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_hole5_an_etcd_restored_to_older_data_is_quarantined() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut etcd = EtcdCluster::start("rolled", 1, dir.path()).expect("etcd starts");
    let state_file = dir.path().join("agent-state").join("s0.watermark.json");
    let config = ShardConfig {
        name: "s0".into(),
        endpoints: etcd.endpoints(),
        prefix: PREFIX.into(),
        request_timeout: Duration::from_secs(3),
        lease_granularity: Duration::from_millis(500),
        tombstone_ttl: Duration::from_secs(30),
        quarantine: QUARANTINE,
        drift_rate: 0.01,
        state_file: Some(state_file.clone()),
        tls: None,
    };
    let clock = manual_clock();
    let store = ShardStore::connect(&config, clock.clone())
        .await
        .expect("connect");
    store.prepare(true).await.expect("bootstrap");
    store.grant(&proposal("L1", 10, "r1")).await.expect("grant");

    // The "snapshot": a copy of the data directory as it is now.
    etcd.kill();
    let data = etcd.members()[0].data_dir().to_path_buf();
    let snapshot = dir.path().join("snapshot");
    copy_dir(&data, &snapshot);
    etcd.restart().expect("etcd restarts");
    // More history after the snapshot: a release and new grants and marks.
    assert!(store.release("orders/42", "L1").await.expect("release"));
    for (i, lock_id) in ["L2", "L3", "L4"].into_iter().enumerate() {
        let token = 20 + u64::try_from(i).expect("small");
        store
            .grant(&proposal(lock_id, token, lock_id))
            .await
            .expect("grant");
        assert!(store.release("orders/42", lock_id).await.expect("release"));
    }
    clock.advance(Duration::from_secs(2)); // lets the watermark reach the disk

    // Restore: the older data comes back under the same endpoints.
    store.read("orders/42").await.expect("read");
    etcd.kill();
    std::fs::remove_dir_all(&data).expect("remove data");
    copy_dir(&snapshot, &data);
    etcd.restart().expect("etcd restarts");

    let grant = store.grant(&proposal("L9", 99, "r9")).await;
    assert!(
        matches!(grant, Err(StoreError::Quarantined { .. })),
        "{grant:?}"
    );
    // A restarted agent remembers the watermark from its disk.
    let restarted = ShardStore::connect(&config, manual_clock())
        .await
        .expect("connect");
    restarted.prepare(false).await.expect("prepare");
    assert!(matches!(restarted.admit().await, Ok(Err(_))));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Hole 7: fencing-token marks are collected. 100 000 distinct resources are
/// locked in ten waves of 10 000; after each wave's grants expired, a sweep
/// deletes their marks, so the number of marks stays flat instead of growing by
/// 10 000 a wave (before, every resource ever locked kept a key forever). Tokens
/// never go back: a collected resource refuses a token at or below the floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_hole7_marks_are_collected_and_the_key_count_stays_flat() {
    use futures::StreamExt;
    const WAVES: u64 = 10;
    const PER_WAVE: u64 = 10_000;
    let f = fixture().await;
    let s = &f.store;
    let mut after_sweep = Vec::new();
    for wave in 0..WAVES {
        let results: Vec<Result<Vote<Holding>, StoreError>> = futures::stream::iter(0..PER_WAVE)
            .map(|i| async move {
                let resource = format!("wave-{wave}/r-{i}");
                let lock_id = format!("L-{wave}-{i}");
                s.grant(&Proposal {
                    resource: &resource,
                    lock_id: &lock_id,
                    owner: "sweeper-test",
                    token: wave * PER_WAVE + i + 1,
                    ttl: Duration::from_secs(1),
                    request_id: &lock_id,
                    principal: "",
                })
                .await
            })
            .buffer_unordered(64)
            .collect()
            .await;
        for result in results {
            assert!(matches!(result, Ok(Vote::Granted(_))), "{result:?}");
        }
        assert!(s.count_marks().await.expect("count") >= i64::try_from(PER_WAVE).expect("small"));
        // Every grant of the wave expires with its lease bucket.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while s.count_grants().await.expect("count") > 0 {
            assert!(std::time::Instant::now() < deadline, "grants never expired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let untouched_since = s.revision().await.expect("revision");
        let deleted = s.collect_marks(untouched_since).await.expect("sweep");
        assert_eq!(deleted, usize::try_from(PER_WAVE).expect("small"));
        after_sweep.push(s.count_marks().await.expect("count"));
    }
    assert_eq!(after_sweep, vec![0; usize::try_from(WAVES).expect("small")]);

    // G2 across collection: the highest collected token is the floor now.
    let top = WAVES * PER_WAVE;
    let old = "wave-0/r-7";
    let refused = s
        .grant(&Proposal {
            resource: old,
            lock_id: "again",
            owner: "sweeper-test",
            token: 8,
            ttl: Duration::from_secs(1),
            request_id: "again",
            principal: "",
        })
        .await
        .expect("grant");
    assert_eq!(refused, Vote::TokenTooLow { mark: top });
    let above = s
        .grant(&Proposal {
            resource: old,
            lock_id: "again-2",
            owner: "sweeper-test",
            token: top + 1,
            ttl: Duration::from_secs(1),
            request_id: "again-2",
            principal: "",
        })
        .await
        .expect("grant");
    assert!(matches!(above, Vote::Granted(_)));
}

/// Hole 7: a sweep never deletes the mark of a held resource, nor a mark written
/// after the revision it was given.
#[tokio::test]
async fn collecting_marks_spares_held_resources_and_recent_marks() {
    let f = fixture().await;
    let s = &f.store;
    s.grant(&proposal("L1", 10, "r1")).await.expect("grant");
    let mut free = proposal("F1", 20, "r2");
    free.resource = "free/1";
    s.grant(&free).await.expect("grant");
    assert!(s.release("free/1", "F1").await.expect("release"));
    let before_recent = s.revision().await.expect("revision");
    let mut recent = proposal("R1", 30, "r3");
    recent.resource = "recent/1";
    s.grant(&recent).await.expect("grant");
    assert!(s.release("recent/1", "R1").await.expect("release"));

    assert_eq!(s.collect_marks(before_recent).await.expect("sweep"), 1);
    assert_eq!(
        s.count_marks().await.expect("count"),
        2,
        "held and recent stay"
    );
    assert_eq!(s.read("orders/42").await.expect("read").mark, 10);
    assert_eq!(s.read("free/1").await.expect("read").mark, 0, "collected");
    let mut again = proposal("F2", 20, "r4");
    again.resource = "free/1";
    let low = s.grant(&again).await.expect("grant");
    assert_eq!(low, Vote::TokenTooLow { mark: 20 });
}

/// Hole 9: a release whose etcd reply was lost (the transaction applied, the
/// client sent it again) answered "not found" because the grant was gone when
/// the store looked again. Now the store recognises its own earlier removal.
#[tokio::test]
async fn regression_hole9_a_release_retried_after_a_lost_etcd_reply_still_says_released() {
    let mut f = fixture().await;
    let lost = Arc::new(AtomicUsize::new(0));
    let counter = lost.clone();
    f.store.set_lost_reply_hook(Some(Arc::new(move |op| {
        matches!(op, "release" | "abort") && counter.fetch_add(1, Ordering::SeqCst) == 0
    })));
    let s = &f.store;
    s.grant(&proposal("L1", 10, "r1")).await.expect("grant");
    assert!(s.release("orders/42", "L1").await.expect("release"));
    assert_eq!(lost.load(Ordering::SeqCst), 1, "one reply was lost");
    assert_eq!(s.read("orders/42").await.expect("read").holder, None);
    // A genuinely unknown lock is still "not found", and a second release of the
    // same lock (a new call) too.
    assert!(!s.release("orders/42", "L1").await.expect("release again"));
    assert!(
        !s.release("orders/42", "NEVER")
            .await
            .expect("release unknown")
    );
    // The same for an abort whose reply was lost.
    lost.store(0, Ordering::SeqCst);
    s.grant(&proposal("L2", 11, "r2")).await.expect("grant");
    assert!(s.abort("orders/42", "L2").await.expect("abort"));
}

/// A release answers with the grant it removed (owner and token, for the audit
/// trail), also when its etcd reply was lost and the store recognised its own
/// earlier removal; nothing when there was nothing to remove.
#[tokio::test]
async fn release_grant_answers_with_the_removed_record() {
    let mut f = fixture().await;
    // Armed just before L2's release: its first release transaction loses
    // its reply (the store sends it again, as after a transport error).
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trigger = armed.clone();
    f.store.set_lost_reply_hook(Some(Arc::new(move |op| {
        op == "release" && trigger.swap(false, Ordering::SeqCst)
    })));
    let s = &f.store;
    s.grant(&proposal("L1", 10, "r1")).await.expect("grant");
    match s.release_grant("orders/42", "L1").await.expect("release") {
        Removal::Removed(Some(record)) => {
            assert_eq!(
                (record.lock_id.as_str(), record.owner.as_str(), record.token),
                ("L1", "alice", 10)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.release_grant("orders/42", "L1").await.expect("again"),
        Removal::Nothing
    );
    // This release's reply is lost: the store finds its own tombstone nonce.
    s.grant(&proposal("L2", 11, "r2")).await.expect("grant");
    armed.store(true, Ordering::SeqCst);
    let removed = s.release_grant("orders/42", "L2").await.expect("release");
    assert!(!armed.load(Ordering::SeqCst), "L2's reply was lost");
    match removed {
        Removal::Removed(Some(record)) => {
            assert_eq!((record.lock_id.as_str(), record.token), ("L2", 11))
        }
        other => panic!("{other:?}"),
    }
}

// --- group commit -----------------------------------------------------------

/// `store` grants `lock_id` on `resource` with `token` (a grant is expected).
async fn grant_on(store: &ShardStore, resource: &str, lock_id: &str, token: u64) -> Holding {
    granted(
        store
            .grant(&proposal_on(resource, lock_id, token))
            .await
            .expect("grant"),
    )
}

/// `L1` holds [`RESOURCE`] and the tombstone lease exists (so the next
/// request's writes are all it does): etcd requests sent so far, and the
/// revision, to count from.
async fn l1_holds_and_counting_starts(store: &ShardStore) -> (u64, i64) {
    grant_on(store, RESOURCE, "L1", 10).await;
    assert!(
        store.abort("warm/up", "X").await.is_ok(),
        "tombstone lease ready"
    );
    let (sent, _) = store.group_commit_counts();
    (sent, store.revision().await.expect("revision"))
}

fn proposal_on<'a>(resource: &'a str, lock_id: &'a str, token: u64) -> Proposal<'a> {
    Proposal {
        resource,
        lock_id,
        owner: "alice",
        token,
        ttl: Duration::from_secs(30),
        request_id: lock_id,
        principal: "",
    }
}

/// Many grants, refusals and releases on one shard at once, some on the same
/// resource: group commit sends them in fewer etcd requests than transactions,
/// and every caller gets its own transaction's answer (a mix-up would hand one
/// resource's holder, or one release's record, to another caller).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_answers_every_transaction_with_its_own_outcome() {
    let f = fixture().await;
    const N: usize = 40;
    let resources: Vec<String> = (0..N).map(|i| format!("res/{i}")).collect();
    let held: Vec<String> = (0..N).map(|i| format!("H{i}")).collect();
    let first: Vec<String> = (0..N).map(|i| format!("N{i}")).collect();
    let second: Vec<String> = (0..N).map(|i| format!("M{i}")).collect();
    // Every even resource is held before the burst.
    for i in (0..N).step_by(2) {
        grant_on(&f.store, &resources[i], &held[i], 10).await;
    }
    let (before, batches_before) = f.store.group_commit_counts();
    // The burst: a proposal on every resource, and a second one on every odd
    // resource (two proposals on one resource never share a batch).
    let burst = (0..N).map(|i| {
        let store = &f.store;
        let resources = &resources;
        let (first, second) = (&first, &second);
        async move {
            let pa = proposal_on(&resources[i], &first[i], 20);
            let pb = proposal_on(&resources[i], &second[i], 21);
            let a = store.grant(&pa);
            if i % 2 == 0 {
                (a.await.expect("grant"), None)
            } else {
                let b = store.grant(&pb);
                let (a, b) = futures::join!(a, b);
                (a.expect("grant"), Some(b.expect("grant")))
            }
        }
    });
    let votes = futures::future::join_all(burst).await;
    let (after, batches_after) = f.store.group_commit_counts();
    let mut holders = Vec::new();
    for (i, (a, b)) in votes.into_iter().enumerate() {
        match b {
            None => match a {
                Vote::Held(h) => assert_eq!(h.record.lock_id, held[i], "resource {i}"),
                other => panic!("resource {i} is held by {}, got {other:?}", held[i]),
            },
            Some(b) => {
                let (winner, loser) = match (&a, &b) {
                    (Vote::Granted(_), _) => (&first[i], b),
                    (_, Vote::Granted(_)) => (&second[i], a),
                    _ => panic!("resource {i}: neither proposal granted: {a:?} / {b:?}"),
                };
                match loser {
                    Vote::Held(h) => assert_eq!(&h.record.lock_id, winner, "resource {i}"),
                    Vote::TokenTooLow { mark } => assert_eq!(mark, 21, "resource {i}"),
                    other => panic!("resource {i}: the loser got {other:?}"),
                }
                holders.push((i, winner.clone()));
            }
        }
    }
    for i in (0..N).step_by(2) {
        holders.push((i, held[i].clone()));
    }
    // Releases, all at once: each answers with its own grant's record.
    let releases = holders.iter().map(|(i, lock_id)| {
        let store = &f.store;
        let resource = &resources[*i];
        async move { (lock_id, store.release_grant(resource, lock_id).await) }
    });
    for (lock_id, removal) in futures::future::join_all(releases).await {
        match removal.expect("release") {
            Removal::Removed(Some(record)) => assert_eq!(&record.lock_id, lock_id),
            other => panic!("release of {lock_id}: {other:?}"),
        }
    }
    let (submitted, _) = f.store.group_commit_counts();
    assert!(
        submitted - before >= (N + N / 2 + holders.len()) as u64,
        "every grant and release went through group commit ({} of them)",
        submitted - before
    );
    let (burst, burst_batches) = (after - before, batches_after - batches_before);
    assert!(
        burst_batches < burst,
        "the burst took {burst_batches} etcd requests for {burst} transactions: nothing was batched"
    );
    for resource in &resources {
        let state = f.store.read(resource).await.expect("read");
        assert!(state.holder.is_none(), "{resource} still held");
    }
}

/// A batch that etcd refuses as a whole (here: the grants' shared lease was
/// revoked under the store) applied nothing; each transaction is then sent on
/// its own, and every grant still lands once its caller renews the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_a_whole_falls_back_and_every_grant_lands() {
    // A clock that stands still keeps every grant in the one lease bucket.
    let f = fixture_with(manual_clock()).await;
    const N: usize = 24;
    let resources: Vec<String> = (0..N).map(|i| format!("res/{i}")).collect();
    let ids: Vec<String> = (0..N).map(|i| format!("L{i}")).collect();
    // Create the lease bucket, then revoke every lease behind the store's back.
    grant_on(&f.store, "warm/up", "W", 5).await;
    let mut raw = f.raw().await;
    let leases = raw.leases().await.expect("list leases");
    assert!(!leases.leases().is_empty());
    for lease in leases.leases() {
        raw.lease_revoke(lease.id()).await.expect("revoke");
    }
    let proposals: Vec<Proposal<'_>> = (0..N)
        .map(|i| proposal_on(&resources[i], &ids[i], 50))
        .collect();
    let votes = futures::future::join_all(proposals.iter().map(|p| f.store.grant(p))).await;
    for (i, vote) in votes.into_iter().enumerate() {
        let holding = granted(vote.expect("grant"));
        assert_eq!(holding.record.lock_id, ids[i]);
        let state = f.store.read(&resources[i]).await.expect("read");
        assert_eq!(
            state.holder.expect("held").record.lock_id,
            ids[i],
            "resource {i}"
        );
    }
}

/// A hand-off whose release finds the grant is one etcd transaction (one
/// revision), not a release and then a grant; the contract tests check what it
/// leaves behind.
#[tokio::test]
async fn a_hand_off_is_one_etcd_transaction() {
    let f = fixture().await;
    grant_on(&f.store, RESOURCE, "L1", 10).await;
    // Lease buckets exist already for both kinds of key: a lease grant is no
    // revision, but keep the count exact.
    assert!(f.store.abort(RESOURCE, "X").await.is_ok());
    let before = f.store.revision().await.expect("revision");
    let (released, vote) = f
        .store
        .hand_off("L1", None, &proposal_on(RESOURCE, "L2", 20))
        .await;
    assert!(released.expect("release part").removed());
    assert_eq!(granted(vote.expect("grant part")).record.lock_id, "L2");
    let after = f.store.revision().await.expect("revision");
    assert_eq!(after, before + 1, "one write for release and grant");
}

/// A release of a grant this store wrote is one etcd transaction (it compares
/// the lock key's mod revision with the one noted when it wrote the grant,
/// instead of reading first). A note gone stale, because another agent renewed
/// the grant or released it and a new lock took the resource, never removes
/// the wrong grant: the compare fails and the release reads and decides.
#[tokio::test]
async fn a_release_compares_the_revision_it_wrote_and_a_stale_note_removes_nothing_else() {
    let f = fixture().await;
    grant_on(&f.store, RESOURCE, "L1", 10).await;
    assert!(
        f.store.abort(RESOURCE, "X").await.is_ok(),
        "tombstone lease ready"
    );
    let before = f.store.revision().await.expect("revision");
    assert!(f.store.release(RESOURCE, "L1").await.expect("release"));
    assert_eq!(
        f.store.revision().await.expect("revision"),
        before + 1,
        "one write, no read"
    );

    // Another agent on the same shard renews L2 after this store granted it:
    // the note is stale, and the release still finds and removes L2.
    let other = f.connect(Arc::new(SystemClock::new())).await;
    other.prepare(false).await.expect("serving");
    grant_on(&f.store, RESOURCE, "L2", 20).await;
    assert!(
        other
            .renew(RESOURCE, "L2", Some(Duration::from_secs(60)))
            .await
            .expect("renew")
            .is_some()
    );
    assert!(f.store.release(RESOURCE, "L2").await.expect("release"));
    assert!(f.store.read(RESOURCE).await.expect("read").holder.is_none());

    // The other agent releases L3, and L4 takes the resource there: this
    // store's note of L3 must not remove L4.
    grant_on(&f.store, RESOURCE, "L3", 30).await;
    assert!(other.release(RESOURCE, "L3").await.expect("release"));
    grant_on(&other, RESOURCE, "L4", 40).await;
    assert!(!f.store.release(RESOURCE, "L3").await.expect("release"));
    let (released, vote) = f
        .store
        .hand_off("L3", None, &proposal_on(RESOURCE, "L5", 50))
        .await;
    assert!(!released.expect("release part").removed());
    assert!(matches!(vote.expect("grant part"), Vote::Held(_)));
    let holder = f.store.read(RESOURCE).await.expect("read").holder;
    assert_eq!(holder.expect("held").record.lock_id, "L4");
}

/// A hand-off of a grant this store has no note of (another agent wrote it,
/// or this store's previous hand-off of the resource was still queued when the
/// next arrived) reads the grant once and stays one write. Regression: it was
/// a release and then a grant, and a region that fell behind on a hot resource
/// stayed behind (its hand-offs took four etcd requests instead of one).
#[tokio::test]
async fn regression_a_hand_off_without_a_note_reads_once_and_writes_once() {
    let f = fixture().await;
    let other = f.connect(Arc::new(SystemClock::new())).await;
    other.prepare(false).await.expect("serving");
    grant_on(&other, RESOURCE, "L1", 10).await;
    grant_on(&f.store, "warm/up", "W", 5).await;
    assert!(
        f.store.abort(RESOURCE, "X").await.is_ok(),
        "tombstone lease ready"
    );
    let before = f.store.revision().await.expect("revision");
    let (released, vote) = f
        .store
        .hand_off("L1", None, &proposal_on(RESOURCE, "L2", 20))
        .await;
    assert!(released.expect("release part").removed());
    assert_eq!(granted(vote.expect("grant part")).record.lock_id, "L2");
    assert_eq!(
        f.store.revision().await.expect("revision"),
        before + 1,
        "one write for release and grant"
    );
    let holder = f.store.read(RESOURCE).await.expect("read").holder;
    assert_eq!(holder.expect("held").record.lock_id, "L2");
}

/// A resource without a mark (never granted here, or its mark collected) used
/// to cost two transactions per grant: the first compared the mark by value,
/// which etcd fails on a missing key, and only the retry took the "no mark"
/// form. Every lock on a fresh resource name paid it. Both forms are now in one
/// transaction, so a first grant, like any other, is one etcd write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_first_grant_of_a_resource_is_one_transaction() {
    let f = fixture().await;
    let (sent, before) = l1_holds_and_counting_starts(&f.store).await;
    let holding = grant_on(&f.store, "fresh/resource", "F1", 30).await;
    assert_eq!(holding.record.lock_id, "F1");
    assert_eq!(
        f.store.group_commit_counts().0,
        sent + 1,
        "one transaction for a resource without a mark"
    );
    assert_eq!(f.store.revision().await.expect("revision"), before + 1);
    // The resource now has a mark: after a release, the next grant takes the
    // other form, also in one transaction, and a token not above the mark is
    // refused in one.
    assert!(
        f.store
            .release("fresh/resource", "F1")
            .await
            .expect("release")
    );
    let (sent, _) = f.store.group_commit_counts();
    let low = f
        .store
        .grant(&proposal_on("fresh/resource", "F2", 30))
        .await
        .expect("grant");
    assert_eq!(low, Vote::TokenTooLow { mark: 30 });
    let holding = grant_on(&f.store, "fresh/resource", "F3", 31).await;
    assert_eq!(holding.record.lock_id, "F3");
    assert_eq!(
        f.store.group_commit_counts().0,
        sent + 2,
        "one transaction each for a marked resource"
    );
}

/// A grant is three nested transactions deep, and etcd counts a nested
/// transaction's operations against what its parents leave of the 128 a
/// request may hold. Full batches of first grants (the deepest path: 5, 2 and
/// 5 operations under a batch of 64) must stay within it: a batch etcd
/// refused would still answer every grant (each is then sent alone), so what
/// shows it is the number of writes. 192 grants in a few batches are a few
/// revisions; refused batches would be one revision per grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_batches_of_first_grants_stay_within_etcds_operation_limit() {
    let f = fixture().await;
    const N: usize = 192;
    let (_, before) = l1_holds_and_counting_starts(&f.store).await;
    let resources: Vec<String> = (0..N).map(|i| format!("burst/{i}")).collect();
    let ids: Vec<String> = (0..N).map(|i| format!("B{i}")).collect();
    let votes = futures::future::join_all((0..N).map(|i| {
        let (store, resources, ids) = (&f.store, &resources, &ids);
        async move { store.grant(&proposal_on(&resources[i], &ids[i], 40)).await }
    }))
    .await;
    for (i, vote) in votes.into_iter().enumerate() {
        assert_eq!(granted(vote.expect("grant")).record.lock_id, ids[i]);
    }
    let writes = f.store.revision().await.expect("revision") - before;
    assert!(
        writes < i64::try_from(N / 4).expect("small"),
        "{N} grants took {writes} etcd writes: batches were refused"
    );
}

/// A region that fell behind on a hot resource (its queued transactions were
/// dropped when the coordinator stopped waiting) gets hand-offs whose release
/// finds no grant of its lock id: the resource is held by an older lock, or
/// free. Each used to cost four etcd transactions (the hand-off's read, then
/// a release's read and write, then a grant); it is one read and one write,
/// which leaves the release's tombstone (a delayed grant of
/// the released lock id is refused) and answers both parts as the two calls
/// would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_hand_off_whose_release_finds_another_lock_is_one_read_and_one_write() {
    let f = fixture().await;
    let (sent, before) = l1_holds_and_counting_starts(&f.store).await;
    let (released, vote) = f
        .store
        .hand_off("L0", None, &proposal_on(RESOURCE, "L2", 20))
        .await;
    assert!(
        !released.expect("release part").removed(),
        "L0 was never here"
    );
    match vote.expect("grant part") {
        Vote::Held(h) => assert_eq!(h.record.lock_id, "L1"),
        other => panic!("L1 holds the resource: {other:?}"),
    }
    assert_eq!(
        f.store.group_commit_counts().0,
        sent + 2,
        "one read and one write for both parts"
    );
    assert_eq!(
        f.store.revision().await.expect("revision"),
        before + 1,
        "one write: the tombstone"
    );
    let late = f
        .store
        .grant(&proposal_on(RESOURCE, "L0", 30))
        .await
        .expect("grant");
    assert_eq!(late, Vote::Aborted, "the released lock id stays refused");
}

/// The same, when the older lock has ended here: the next lock is granted in
/// the same one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_hand_off_whose_release_finds_the_resource_free_is_one_read_and_one_write() {
    let f = fixture().await;
    grant_on(&f.store, RESOURCE, "L1", 10).await;
    assert!(f.store.release(RESOURCE, "L1").await.expect("release"));
    let (sent, _) = f.store.group_commit_counts();
    let before = f.store.revision().await.expect("revision");
    let (released, vote) = f
        .store
        .hand_off("L0", None, &proposal_on(RESOURCE, "L2", 20))
        .await;
    assert!(
        !released.expect("release part").removed(),
        "L0 was never here"
    );
    assert_eq!(granted(vote.expect("grant part")).record.lock_id, "L2");
    assert_eq!(
        f.store.group_commit_counts().0,
        sent + 2,
        "one read and one write for both parts"
    );
    assert_eq!(
        f.store.revision().await.expect("revision"),
        before + 1,
        "one write: tombstone, mark and grant"
    );
    let holder = f.store.read(RESOURCE).await.expect("read").holder;
    assert_eq!(holder.expect("held").record.lock_id, "L2");
    let late = f
        .store
        .grant(&proposal_on(RESOURCE, "L0", 30))
        .await
        .expect("grant");
    assert_eq!(late, Vote::Aborted, "the released lock id stays refused");
    // The next release of L2 is the one-write release: the grant was noted.
    let before = f.store.revision().await.expect("revision");
    assert!(f.store.release(RESOURCE, "L2").await.expect("release"));
    assert_eq!(f.store.revision().await.expect("revision"), before + 1);
}

/// A region behind on a hot resource has several hand-offs of it in the store
/// at once, each releasing the lock the one before grants. Each used to find
/// no note of that grant yet (still queued ahead) and read the grant key
/// first: two requests per hand-off, one per batch on the resource, so the
/// region never caught up. Hand-offs of one resource now take turns, and each
/// is one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_hand_offs_queued_behind_each_other_are_one_write_each() {
    let f = fixture().await;
    let (sent, before) = l1_holds_and_counting_starts(&f.store).await;
    let l2 = proposal_on(RESOURCE, "L2", 20);
    let l3 = proposal_on(RESOURCE, "L3", 30);
    let l4 = proposal_on(RESOURCE, "L4", 40);
    let (first, second, third) = tokio::join!(
        f.store.hand_off("L1", None, &l2),
        f.store.hand_off("L2", None, &l3),
        f.store.hand_off("L3", None, &l4),
    );
    for (i, (released, vote)) in [first, second, third].into_iter().enumerate() {
        assert!(
            released.expect("release part").removed(),
            "hand-off {i} releases the lock the one before granted"
        );
        granted(vote.expect("grant part"));
    }
    assert_eq!(
        f.store.group_commit_counts().0,
        sent + 3,
        "one request per hand-off, no reads"
    );
    assert_eq!(f.store.revision().await.expect("revision"), before + 3);
    let holder = f.store.read(RESOURCE).await.expect("read").holder;
    assert_eq!(holder.expect("held").record.lock_id, "L4");
}
