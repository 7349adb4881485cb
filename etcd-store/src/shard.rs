//! One shard: an etcd cluster holding grants and fencing marks for the resources
//! the ring routes to it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse, WatchFilterType, WatchOptions,
};
use globallock_protocol::clock::SharedClock;
use globallock_protocol::expiry::{Bucket, BucketGrid};
use tracing::{Instrument, debug, instrument};

use globallock_protocol::membership::{
    Admission, HeldBy, Membership, Refusal, RefusalAnswer, renewal_extends,
};

use crate::batch::{Committed, GroupCommit, Link};
use crate::error::StoreError;
use crate::keys::{KeyLayout, decode_token, encode_token};
use crate::leases::LeaseTable;
use crate::watermark::{Before, Watermark};
use globallock_protocol::store::{
    FaultKind, GrantRecord, HandOff, Holding, Listed, Listing, LockStore, Proposal, Removal,
    ResourceState, StoreFault, Vote,
};

/// Marks read per page while collecting them.
const MARK_PAGE: i64 = 500;

/// Marks deleted per transaction: two compares each, plus two for the marker and
/// the floor, stay within etcd's 128 operations per transaction.
const MARK_BATCH: usize = 60;

/// The end of the key range of everything starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// How many times an operation re-reads and retries after losing a race with a
/// concurrent writer on the same key (or finding its lease bucket gone).
const ATTEMPTS: usize = 4;

/// How to reach and use one shard.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// The shard's name, the same in every region (it is what the ring routes to).
    pub name: String,
    /// The etcd client URLs of this region's cluster for the shard.
    pub endpoints: Vec<String>,
    /// Key prefix inside etcd (lets several deployments share a cluster).
    pub prefix: String,
    /// Deadline for each etcd request.
    pub request_timeout: Duration,
    /// Grid of shared lease deadlines: grants linger at most this long past their TTL.
    pub lease_granularity: Duration,
    /// How long an abort's tombstone refuses a late grant for the same lock id.
    pub tombstone_ttl: Duration,
    /// How long a shard found without its incarnation marker (its data was lost)
    /// refuses to take part: at least the longest TTL plus a lock delay, so every
    /// grant it forgot has expired everywhere before it votes again.
    pub quarantine: Duration,
    /// Bound on clock-rate differences (assumption A1), e.g. 0.01: shared leases
    /// are padded by it so a fast etcd leader clock cannot end them early.
    pub drift_rate: f64,
    /// Where the agent keeps this shard's etcd watermark (cluster id and highest
    /// revision seen) across restarts; `None` keeps it in memory only.
    pub state_file: Option<std::path::PathBuf>,
    /// TLS towards this shard's etcd (`None`: plaintext `http://` endpoints).
    pub tls: Option<crate::EtcdTls>,
}

/// Why a shard is not serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarantined {
    /// How long until it serves again.
    pub remaining: Duration,
}

/// Test hook run by [`ShardStore::renew`] between its read of the grant and its
/// compare-and-swap, to stage a concurrent write there. Not for production use.
#[doc(hidden)]
pub type RenewHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Test hook consulted after each transaction's reply: `true` makes the store
/// behave as if that reply was lost, so it sends the same transaction again (as
/// the client does after a transport error). Not for production use.
#[doc(hidden)]
pub type LostReplyHook = Arc<dyn Fn(&'static str) -> bool + Send + Sync>;

/// A handle on one shard's etcd cluster. Cheap to share.
pub struct ShardStore {
    /// The shard name, for errors and spans.
    name: String,
    /// The etcd client (lazily connected, balanced over the endpoints, remade
    /// when its certificates rotate), with the request deadline and retries.
    link: Arc<Link>,
    /// Concurrent transactions on distinct resources, sent as one (group commit).
    commit: Arc<GroupCommit>,
    /// Where keys live.
    keys: KeyLayout,
    /// Shared lease buckets of grants.
    leases: LeaseTable,
    /// Lease buckets of abort tombstones, never shared with grants: a grant's
    /// lease is sized for grants only.
    tombstone_leases: LeaseTable,
    /// The bucket grid.
    grid: BucketGrid,
    /// Time, for lease arithmetic.
    clock: SharedClock,
    /// Tombstone lifetime.
    tombstone_ttl: Duration,
    /// Lock ids this store removed recently (their deletes are not expiries).
    removed: RecentlyRemoved,
    /// The revision at which this store last wrote each grant it holds.
    written: Written,
    /// Hand-offs of one resource take turns (`crate::turns`).
    turns: crate::turns::Turns,
    /// Serving or quarantined.
    membership: std::sync::Mutex<Membership>,
    /// Quarantine length.
    quarantine: Duration,
    /// The etcd history seen so far (to notice a restore from an older snapshot).
    watermark: Watermark,
    /// Test hook inside `renew` (always `None` in production).
    renew_hook: Option<RenewHook>,
    /// Test hook that loses transaction replies (always `None` in production).
    lost_reply_hook: Option<LostReplyHook>,
    /// Held while a quarantine ends, so only one request writes the new marker.
    rejoin: tokio::sync::Mutex<()>,
}

/// The grants this store wrote, renewed or adopted, by resource and lock id:
/// the etcd revision of that write (the lock key's mod revision then) and the
/// grant's principal. A release or hand-off compares the lock key's mod
/// revision with it instead of reading the grant first: equal means the key
/// still holds exactly what this store wrote, nothing else. Bounded; an entry
/// that is missing or out of date only costs the read.
#[derive(Debug, Default)]
struct Written {
    grants: std::sync::Mutex<std::collections::HashMap<(String, String), (i64, String)>>,
}

impl Written {
    const CAPACITY: usize = 65_536;

    fn grants(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), (i64, String)>> {
        self.grants.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note(&self, resource: &str, lock_id: &str, revision: Option<i64>, principal: &str) {
        let mut grants = self.grants();
        let key = (resource.to_owned(), lock_id.to_owned());
        let Some(revision) = revision.filter(|r| *r > 0) else {
            grants.remove(&key);
            return;
        };
        if grants.len() >= Self::CAPACITY {
            // Forgetting costs a read on release, never a wrong answer.
            grants.clear();
        }
        grants.insert(key, (revision, principal.to_owned()));
    }

    fn get(&self, resource: &str, lock_id: &str) -> Option<(i64, String)> {
        self.grants()
            .get(&(resource.to_owned(), lock_id.to_owned()))
            .cloned()
    }

    fn forget(&self, resource: &str, lock_id: &str) {
        self.grants()
            .remove(&(resource.to_owned(), lock_id.to_owned()));
    }
}

/// A bounded set of lock ids this store released or aborted.
#[derive(Debug, Default)]
struct RecentlyRemoved {
    ids: std::sync::Mutex<std::collections::VecDeque<String>>,
}

impl RecentlyRemoved {
    const CAPACITY: usize = 4_096;

    fn remember(&self, lock_id: &str) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.len() >= Self::CAPACITY {
            ids.pop_front();
        }
        ids.push_back(lock_id.to_owned());
    }

    /// True (and forgotten) if `lock_id` was removed by this store.
    fn forget(&self, lock_id: &str) -> bool {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        match ids.iter().position(|id| id == lock_id) {
            Some(i) => {
                ids.remove(i);
                true
            }
            None => false,
        }
    }
}

impl std::fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStore")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .field("grid", &self.grid)
            .finish_non_exhaustive()
    }
}

impl ShardStore {
    /// A store for the shard described by `config`. Does not wait for etcd to be up.
    pub async fn connect(config: &ShardConfig, clock: SharedClock) -> Result<Self, StoreError> {
        let connection = crate::connection::Connection::open(
            config.endpoints.clone(),
            config.request_timeout,
            config.tls.as_ref(),
        )
        .await
        .map_err(|source| StoreError::Endpoints {
            shard: config.name.clone(),
            endpoints: config.endpoints.clone(),
            source: Box::new(source),
        })?;
        let link = Arc::new(Link::new(
            config.name.clone(),
            config.request_timeout,
            connection,
        ));
        Ok(Self {
            name: config.name.clone(),
            commit: Arc::new(GroupCommit::new(Arc::clone(&link))),
            link,
            keys: KeyLayout::new(&config.prefix),
            leases: LeaseTable::default(),
            tombstone_leases: LeaseTable::default(),
            grid: BucketGrid {
                granularity: config.lease_granularity,
                // Whole parts per million, rounded up (0.01 → 10 000).
                drift_ppm: (config.drift_rate.clamp(0.0, 1.0) * 1e6).ceil() as u32,
            },
            clock,
            tombstone_ttl: config.tombstone_ttl,
            removed: RecentlyRemoved::default(),
            written: Written::default(),
            turns: crate::turns::Turns::default(),
            // Silent until `prepare` has looked for the incarnation marker.
            membership: std::sync::Mutex::new(Membership::UNCHECKED),
            quarantine: config.quarantine,
            watermark: Watermark::load(config.state_file.clone()).map_err(|source| {
                StoreError::State {
                    shard: config.name.clone(),
                    path: config.state_file.clone().unwrap_or_default(),
                    source,
                }
            })?,
            renew_hook: None,
            lost_reply_hook: None,
            rejoin: tokio::sync::Mutex::new(()),
        })
    }

    /// Test hook: run `hook` in every [`ShardStore::renew`] attempt after the grant
    /// was read and before the compare-and-swap that extends it. Not for production.
    #[doc(hidden)]
    pub fn set_renew_hook(&mut self, hook: Option<RenewHook>) {
        self.renew_hook = hook;
    }

    /// Test hook: lose the replies of transactions for which `hook(op)` is true
    /// (the store re-sends the transaction, as after a transport error).
    #[doc(hidden)]
    pub fn set_lost_reply_hook(&mut self, hook: Option<LostReplyHook>) {
        self.lost_reply_hook = hook;
    }

    /// Transactions sent through group commit so far, and the etcd requests
    /// that carried them (for tests and benchmarks).
    #[doc(hidden)]
    pub fn group_commit_counts(&self) -> (u64, u64) {
        self.commit.counts()
    }

    /// The shard's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Decide at start whether this shard may vote: with its incarnation marker it
    /// serves (above the marker's token floor); without it, it is new (with
    /// `bootstrap`: write the marker now) or its data was lost (quarantine).
    pub async fn prepare(&self, bootstrap: bool) -> Result<(), StoreError> {
        let marker = match self.get(&self.keys.incarnation()).await {
            // etcd's history went back since this agent last saw it: the
            // watermark check quarantined the shard already.
            Err(StoreError::Quarantined { .. }) => return Ok(()),
            other => other?,
        };
        match marker {
            Some(kv) => {
                let floor = decode_token(kv.value()).unwrap_or(0);
                self.ensure_mark_floor(floor).await?;
                self.set_membership(Membership::Serving { floor });
            }
            None if bootstrap => {
                // A new shard forgot nothing: no floor.
                let floor = self.write_incarnation(0).await?;
                tracing::info!(shard = %self.name, floor, "bootstrapped a new shard");
            }
            None => self.enter_quarantine("no incarnation marker at start"),
        }
        Ok(())
    }

    /// `Err` while the shard is quarantined; ends the quarantine (rewriting the
    /// marker with a fresh token floor) once it has run its course.
    pub async fn admit(&self) -> Result<Result<u64, Quarantined>, StoreError> {
        let admission = |store: &Self| {
            let membership = *store.membership.lock().unwrap_or_else(|e| e.into_inner());
            membership.admit(store.clock.monotonic())
        };
        match admission(self) {
            Admission::Serve { floor } => return Ok(Ok(floor)),
            Admission::Wait { remaining } => return Ok(Err(Quarantined { remaining })),
            Admission::Rejoin => {}
        }
        // One rejoin at a time: requests that raced to it must not each write a
        // marker (the second would overwrite the first's floor and quarantine the
        // shard again: "marker rewritten").
        let _rejoining = self.rejoin.lock().await;
        match admission(self) {
            Admission::Serve { floor } => return Ok(Ok(floor)),
            Admission::Wait { remaining } => return Ok(Err(Quarantined { remaining })),
            Admission::Rejoin => {}
        }
        // Every token it forgot was minted at least a quarantine ago, so its clock
        // now is above them all (clock offsets are smaller than the quarantine).
        let floor = self.write_incarnation(self.clock.unix_micros()).await?;
        tracing::warn!(shard = %self.name, floor, "quarantine over: voting again above the new token floor");
        Ok(Ok(floor))
    }

    /// Write the marker with this token floor and start serving above it.
    async fn write_incarnation(&self, floor: u64) -> Result<u64, StoreError> {
        let txn = Txn::new().and_then([
            TxnOp::put(self.keys.incarnation(), encode_token(floor), None),
            // The mark floor starts where the token floor does (never lower
            // than a floor it already had: see `ensure_mark_floor`).
            TxnOp::txn(
                Txn::new()
                    .when([Compare::version(
                        self.keys.mark_floor(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then([TxnOp::put(
                        self.keys.mark_floor(),
                        encode_token(floor),
                        None,
                    )]),
            ),
        ]);
        // A new incarnation starts on whatever history etcd holds now: accept it
        // as the watermark (a rolled-back etcd would otherwise never serve again).
        let response = self
            .call("incarnation", || {
                let mut kv = self.link.client().kv_client();
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await?;
        if let Some(header) = response.header() {
            self.watermark.reset(header.cluster_id(), header.revision());
        }
        self.set_membership(Membership::Serving { floor });
        Ok(floor)
    }

    /// Write the mark floor if it is missing (a shard bootstrapped before marks
    /// were collected): grants of unmarked resources compare against it.
    async fn ensure_mark_floor(&self, floor: u64) -> Result<(), StoreError> {
        let txn = Txn::new()
            .when([Compare::version(
                self.keys.mark_floor(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                self.keys.mark_floor(),
                encode_token(floor),
                None,
            )]);
        self.txn("mark floor", txn).await.map(|_| ())
    }

    fn enter_quarantine(&self, why: &str) {
        let membership = Membership::quarantine(self.clock.monotonic(), self.quarantine);
        tracing::warn!(shard = %self.name, why, quarantine = ?self.quarantine, "shard lost its data: not voting until the quarantine ends");
        metrics::counter!("globallock_agent_quarantines_total", "shard" => self.name.clone())
            .increment(1);
        self.set_membership(membership);
    }

    fn set_membership(&self, membership: Membership) {
        *self.membership.lock().unwrap_or_else(|e| e.into_inner()) = membership;
    }

    /// Propose a grant: one transaction that writes the grant and the new mark only
    /// if the resource is free, this lock id was not aborted, and the token is above
    /// the mark.
    #[instrument(skip_all, fields(shard = %self.name, resource = p.resource, lock_id = p.lock_id, token = p.token))]
    pub async fn grant(&self, p: &Proposal<'_>) -> Result<Vote<Holding>, StoreError> {
        let floor = self.serving().await?;
        if p.token <= floor {
            return Ok(Vote::TokenTooLow { mark: floor });
        }
        self.grant_admitted(p, floor).await
    }

    /// Check the incarnation marker read alongside an operation against the floor
    /// this store serves with. A marker that vanished (etcd wiped under a running
    /// agent) or changed (rewritten by someone else) means this store's view of
    /// the shard is void: quarantine, exactly as if the agent had started on it.
    fn check_marker(&self, floor: u64, marker: Option<&KeyValue>) -> Result<(), StoreError> {
        let why = match marker {
            None => "incarnation marker vanished under a running agent (etcd data lost)",
            Some(kv) if decode_token(kv.value()) != Some(floor) => {
                "incarnation marker rewritten under a running agent"
            }
            Some(_) => return Ok(()),
        };
        self.enter_quarantine(why);
        Err(StoreError::Quarantined {
            shard: self.name.clone(),
            remaining: self.quarantine,
        })
    }

    /// What a grant of `p` writes: the resource's mark (`fence_key`) raised to
    /// its token, and the grant (`value`) under `lock_key`, attached to `lease`.
    fn grant_writes(
        p: &Proposal<'_>,
        fence_key: &str,
        lock_key: &str,
        value: Vec<u8>,
        lease: i64,
    ) -> Vec<TxnOp> {
        vec![
            TxnOp::put(fence_key, encode_token(p.token), None),
            TxnOp::put(lock_key, value, Some(PutOptions::new().with_lease(lease))),
        ]
    }

    /// The guard every write carries: the marker still holds the floor this store
    /// serves with (so a wiped or rewritten marker fails the write).
    fn marker_guard(&self, floor: u64) -> Compare {
        Compare::value(
            self.keys.incarnation(),
            CompareOp::Equal,
            encode_token(floor),
        )
    }

    /// Read `key` and the incarnation marker in one request, and check the marker.
    /// With `resource`, `key` is one of that resource's (the read is then
    /// group-committed with the shard's other requests).
    async fn get_checked(
        &self,
        resource: Option<&str>,
        key: &str,
        floor: u64,
    ) -> Result<Option<KeyValue>, StoreError> {
        let txn = Txn::new().and_then([
            TxnOp::get(key, None),
            TxnOp::get(self.keys.incarnation(), None),
        ]);
        let response = self.transact(resource, "get", txn).await?;
        let [value, marker] = first_kvs::<2>(&response);
        self.check_marker(floor, marker.as_ref())?;
        Ok(value)
    }

    /// The token floor while serving; `Err(Quarantined)` while quarantined.
    async fn serving(&self) -> Result<u64, StoreError> {
        self.admit().await?.map_err(|q| StoreError::Quarantined {
            shard: self.name.clone(),
            remaining: q.remaining,
        })
    }

    async fn grant_admitted(
        &self,
        p: &Proposal<'_>,
        floor: u64,
    ) -> Result<Vote<Holding>, StoreError> {
        let lock_key = self.keys.lock(p.resource);
        let marker = self.keys.incarnation();
        let fence_key = self.keys.fence(p.resource);
        let tomb_key = self.keys.tombstone(p.lock_id);
        let (record, value) = self.new_record(p, &lock_key)?;
        for _ in 0..ATTEMPTS {
            let (bucket, lease) = self.lease_for(p.ttl).await?;
            let reads = [
                TxnOp::get(lock_key.as_str(), None),
                TxnOp::get(fence_key.as_str(), None),
                TxnOp::get(tomb_key.as_str(), None),
                TxnOp::get(marker.as_str(), None),
                TxnOp::get(self.keys.mark_floor(), None),
            ];
            let writes = Self::grant_writes(p, &fence_key, &lock_key, value.clone(), lease);
            // The token must exceed the resource's mark. A mark that exists is
            // compared by value; etcd fails every value comparison on a missing
            // key, so a resource without a mark (never granted, or its mark
            // collected) takes the nested form instead: no mark, and a token
            // above the shard's mark floor (every collected mark was at most
            // it). Both forms are in this one transaction, so a first grant
            // costs one write like any other.
            let unmarked = Txn::new()
                .when([
                    Compare::version(fence_key.as_str(), CompareOp::Equal, 0),
                    Compare::value(
                        self.keys.mark_floor(),
                        CompareOp::Less,
                        encode_token(p.token),
                    ),
                ])
                .and_then(writes.clone())
                .or_else(reads.clone());
            let marked = Txn::new()
                .when([Compare::value(
                    fence_key.as_str(),
                    CompareOp::Less,
                    encode_token(p.token),
                )])
                .and_then(writes)
                .or_else([TxnOp::txn(unmarked)]);
            let txn = Txn::new()
                .when([
                    // The floor is compared inside the transaction: a marker
                    // wiped or rewritten since this store read it fails the grant.
                    self.marker_guard(floor),
                    Compare::version(lock_key.as_str(), CompareOp::Equal, 0),
                    Compare::version(tomb_key.as_str(), CompareOp::Equal, 0),
                ])
                .and_then([TxnOp::txn(marked)])
                .or_else(reads);
            let (response, revision) = match self.txn_on_at(p.resource, "grant", txn).await {
                Err(e) if e.is_lease_not_found() => {
                    self.leases.forget(bucket);
                    continue;
                }
                other => other?,
            };
            let [lock, fence, tomb, marker, mark_floor] = match GrantWrite::of(&response) {
                GrantWrite::Refused(reads) => *reads,
                GrantWrite::Written => {
                    self.written
                        .note(p.resource, p.lock_id, revision, p.principal);
                    let remaining = bucket.deadline.saturating_sub(self.clock.monotonic());
                    debug!(?remaining, "granted");
                    return Ok(Vote::Granted(Holding { record, remaining }));
                }
                GrantWrite::Unexpected => {
                    return Err(StoreError::odd_answer(
                        &self.name,
                        "grant",
                        "a grant with neither its writes nor its reads",
                    ));
                }
            };
            self.check_marker(floor, marker.as_ref())?;
            let Some(outcome) = self
                .refusal(
                    p,
                    lock.as_ref(),
                    fence.as_ref(),
                    tomb.is_some(),
                    mark_floor.as_ref(),
                )
                .await?
            else {
                // Nothing in what the transaction read refuses it (an etcd
                // that answers oddly): try again.
                continue;
            };
            return Ok(outcome);
        }
        Err(StoreError::Contention {
            shard: self.name.clone(),
            op: "grant",
        })
    }

    /// Why proposal `p` is refused, from what
    /// its transaction read: the grant key, the mark, whether its lock id has
    /// a tombstone, and the shard's mark floor. `None` when nothing refuses it
    /// (the resource was freed or the mark moved since the compare).
    async fn refusal(
        &self,
        p: &Proposal<'_>,
        lock: Option<&KeyValue>,
        fence: Option<&KeyValue>,
        tombstoned: bool,
        mark_floor: Option<&KeyValue>,
    ) -> Result<Option<Vote<Holding>>, StoreError> {
        // What a token must exceed here: the resource's mark, or without one
        // the shard's mark floor (every collected mark was at most it).
        let mark_floor = mark_floor
            .and_then(|kv| decode_token(kv.value()))
            .unwrap_or(0);
        let mark = fence
            .and_then(|kv| decode_token(kv.value()))
            .unwrap_or(mark_floor);
        let holding = match lock {
            Some(kv) => Some(self.holding(kv).await?),
            None => None,
        };
        let refusal = Refusal {
            tombstoned,
            held: holding.as_ref().map(|h| HeldBy::of(&h.record, p)),
            mark,
            token: p.token,
        };
        Ok(match (refusal.answer(), holding) {
            (RefusalAnswer::Aborted, _) => Some(Vote::Aborted),
            (RefusalAnswer::TokenTooLow, _) => Some(Vote::TokenTooLow { mark }),
            (RefusalAnswer::Held, Some(h)) => Some(Vote::Held(h)),
            // Offered, not yet adopted: the retry's coordinator confirms with
            // `adopt` once a majority offered the same lock.
            (RefusalAnswer::Offer, Some(h)) => Some(Vote::Granted(h)),
            (RefusalAnswer::RequestConflict, Some(h)) => Some(Vote::RequestConflict(h)),
            _ => None,
        })
    }

    /// Let an idempotent retry take over the earlier grant `lock_id` of its
    /// request: mark it adopted, so that no abort removes it afterwards. `None`
    /// when this region does not hold that grant for that request (any more).
    ///
    /// One compare-and-swap on the revision that was read, which fails if the
    /// grant was aborted (its tombstone exists), released or rewritten meanwhile.
    /// Adopting and aborting one grant thus conflict in every region, and a round
    /// never reports as won a lock that the round that created it may still abort
    /// (hole 1 in `docs/safety.md`).
    #[instrument(skip_all, fields(shard = %self.name, resource, lock_id))]
    pub async fn adopt(
        &self,
        resource: &str,
        lock_id: &str,
        request_id: &str,
    ) -> Result<Option<Holding>, StoreError> {
        let floor = self.serving().await?;
        let lock_key = self.keys.lock(resource);
        for _ in 0..ATTEMPTS {
            let Some(kv) = self.get_checked(Some(resource), &lock_key, floor).await? else {
                return Ok(None);
            };
            let holding = self.holding(&kv).await?;
            if holding.record.lock_id != lock_id
                || request_id.is_empty()
                || holding.record.request_id != request_id
            {
                return Ok(None);
            }
            if let Some(adopted) = self
                .mark_adopted(resource, &lock_key, &kv, holding, floor)
                .await?
            {
                return Ok(Some(adopted));
            }
            debug!("grant changed during adopt; re-reading");
        }
        Err(StoreError::Contention {
            shard: self.name.clone(),
            op: "adopt",
        })
    }

    /// The compare-and-swap of [`ShardStore::adopt`]; `None` when it lost a race.
    async fn mark_adopted(
        &self,
        resource: &str,
        lock_key: &str,
        kv: &KeyValue,
        holding: Holding,
        floor: u64,
    ) -> Result<Option<Holding>, StoreError> {
        if holding.record.adopted {
            return Ok(Some(holding));
        }
        let record = GrantRecord {
            adopted: true,
            ..holding.record
        };
        let value = serde_json::to_vec(&record).map_err(|source| self.corrupt(lock_key, source))?;
        let txn = Txn::new()
            .when([
                Compare::mod_revision(lock_key, CompareOp::Equal, kv.mod_revision()),
                Compare::version(
                    self.keys.tombstone(&record.lock_id).as_str(),
                    CompareOp::Equal,
                    0,
                ),
                self.marker_guard(floor),
            ])
            .and_then([TxnOp::put(
                lock_key,
                value,
                Some(PutOptions::new().with_lease(kv.lease())),
            )]);
        let (response, revision) = self.txn_on_at(resource, "adopt", txn).await?;
        if response.succeeded() {
            self.written
                .note(resource, &record.lock_id, revision, &record.principal);
        }
        Ok(response.succeeded().then_some(Holding {
            record,
            remaining: holding.remaining,
        }))
    }

    /// Extend the grant of exactly `lock_id` to live at least `ttl` from now
    /// (`None` keeps the TTL it was granted with). Never creates a grant and never
    /// shortens one. `None` when this lock id does not hold the resource here.
    #[instrument(skip_all, fields(shard = %self.name, resource, lock_id))]
    pub async fn renew(
        &self,
        resource: &str,
        lock_id: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Holding>, StoreError> {
        self.renew_as(resource, lock_id, ttl, None).await
    }

    /// [`ShardStore::renew`], only for `principal` when given (checked on the
    /// read the compare-and-swap acts on: a lock id's principal never changes).
    pub async fn renew_as(
        &self,
        resource: &str,
        lock_id: &str,
        ttl: Option<Duration>,
        principal: Option<&str>,
    ) -> Result<Option<Holding>, StoreError> {
        let floor = self.serving().await?;
        let lock_key = self.keys.lock(resource);
        for _ in 0..ATTEMPTS {
            let Some(kv) = self.get_checked(Some(resource), &lock_key, floor).await? else {
                return Ok(None);
            };
            let current = self.holding(&kv).await?;
            if current.record.lock_id != lock_id {
                return Ok(None);
            }
            self.check_owner(&current.record, principal)?;
            let ttl = ttl.unwrap_or(Duration::from_millis(current.record.ttl_ms));
            let (bucket, lease) = self.lease_for(ttl).await?;
            let extended = bucket.deadline.saturating_sub(self.clock.monotonic());
            if !renewal_extends(current.remaining, extended) {
                // Already lives long enough: renewal never shortens a grant.
                return Ok(Some(current));
            }
            if let Some(hook) = &self.renew_hook {
                hook().await;
            }
            // Compare-and-swap on the revision we read: if the grant was released or
            // replaced meanwhile, the write does not happen.
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(lock_key.as_str(), CompareOp::Equal, kv.mod_revision()),
                    self.marker_guard(floor),
                ])
                .and_then([TxnOp::put(
                    lock_key.as_str(),
                    kv.value().to_vec(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            match self.txn_on_at(resource, "renew", txn).await {
                Err(e) if e.is_lease_not_found() => self.leases.forget(bucket),
                Err(e) => return Err(e),
                Ok((response, revision)) if response.succeeded() => {
                    self.written
                        .note(resource, lock_id, revision, &current.record.principal);
                    return Ok(Some(Holding {
                        record: current.record,
                        remaining: extended,
                    }));
                }
                Ok(_) => debug!("grant changed during renew; re-reading"),
            }
        }
        Err(StoreError::Contention {
            shard: self.name.clone(),
            op: "renew",
        })
    }

    /// Remove the grant of exactly `lock_id`. True when it existed.
    pub async fn release(&self, resource: &str, lock_id: &str) -> Result<bool, StoreError> {
        Ok(self.release_grant(resource, lock_id).await?.removed())
    }

    /// [`ShardStore::release`], answering with the removed grant's record (who
    /// held it, with which token), for the audit trail.
    #[instrument(skip_all, fields(shard = %self.name, resource, lock_id))]
    pub async fn release_grant(
        &self,
        resource: &str,
        lock_id: &str,
    ) -> Result<Removal, StoreError> {
        self.remove(resource, lock_id, false, None).await
    }

    /// [`ShardStore::release_grant`], only for `principal` when given.
    #[instrument(skip_all, fields(shard = %self.name, resource, lock_id))]
    pub async fn release_as(
        &self,
        resource: &str,
        lock_id: &str,
        principal: Option<&str>,
    ) -> Result<Removal, StoreError> {
        self.remove(resource, lock_id, false, principal).await
    }

    /// A release in one write: if the lock key still holds what this store
    /// last wrote for this lock id (its mod revision is the one noted then, so
    /// it is that grant, with that principal), delete it and leave the call's
    /// tombstone, reading the grant in the same transaction. `Some(record)`
    /// when it did; `None` when this store has no such note, the principal is
    /// not the grant's, or the guards failed (the caller then reads and
    /// decides).
    async fn release_by_id(
        &self,
        resource: &str,
        lock_id: &str,
        principal: Option<&str>,
        floor: u64,
        nonce: &str,
    ) -> Result<Option<Option<GrantRecord>>, StoreError> {
        let Some((revision, owner)) = self.written.get(resource, lock_id) else {
            return Ok(None);
        };
        if principal.is_some_and(|p| p != owner) {
            // The read path answers NotOwner from what etcd holds.
            return Ok(None);
        }
        let lock_key = self.keys.lock(resource);
        let guards = [
            Compare::mod_revision(lock_key.as_str(), CompareOp::Equal, revision),
            self.marker_guard(floor),
        ];
        let (bucket, lease) = self.tombstone_lease_for(self.tombstone_ttl).await?;
        // So the expiry watcher knows this delete is ours, not an expiry.
        self.removed.remember(lock_id);
        let txn = Txn::new().when(guards).and_then([
            TxnOp::get(lock_key.as_str(), None),
            TxnOp::delete(lock_key.as_str(), None),
            TxnOp::put(
                self.keys.tombstone(lock_id),
                nonce,
                Some(PutOptions::new().with_lease(lease)),
            ),
        ]);
        let response = match self.txn_on(resource, "release", txn).await {
            Ok(response) => response,
            Err(e) if e.is_lease_not_found() => {
                self.tombstone_leases.forget(bucket);
                self.removed.forget(lock_id);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        // Whatever the answer, the note has served: the grant is gone, or it
        // changed under another writer.
        self.written.forget(resource, lock_id);
        if !response.succeeded() {
            self.removed.forget(lock_id);
            return Ok(None);
        }
        let [grant] = first_kvs::<1>(&response);
        if let Some(kv) = &grant {
            self.observe_hold(kv);
        }
        let record = grant.map(|kv| self.decode(&kv)).transpose()?;
        Ok(Some(record))
    }

    /// The grant of `lock_id` under `lock_key` as it was at `revision` (from
    /// etcd's history; `None` if compacted away or not that lock's).
    async fn record_at(&self, lock_key: &str, lock_id: &str, revision: i64) -> Option<GrantRecord> {
        let response = self
            .call("get", || {
                let mut kv = self.link.client().kv_client();
                let key = lock_key.to_owned();
                async move {
                    kv.get(key, Some(GetOptions::new().with_revision(revision)))
                        .await
                }
            })
            .await
            .ok()?;
        let record = self.decode(response.kvs().first()?).ok()?;
        (record.lock_id == lock_id).then_some(record)
    }

    /// `Err(NotOwner)` when `principal` is given and is not the grant's.
    fn check_owner(&self, record: &GrantRecord, principal: Option<&str>) -> Result<(), StoreError> {
        match principal {
            Some(p) if p != record.principal => Err(StoreError::NotOwner {
                shard: self.name.clone(),
                lock_id: record.lock_id.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// A hand-off (see [`LockStore::hand_off`]): release `lock_id` and grant
    /// `next` on the same resource. When `lock_id` holds the resource here (for
    /// `principal`, when given) and `next`'s token is above the resource's
    /// mark, one transaction does both: it leaves the release's tombstone and
    /// writes `next`'s grant and mark over the old grant. Its guards are the
    /// union of the release's (the lock key is still what this store wrote for
    /// `lock_id`, whose principal it noted) and the grant's, with "the resource
    /// is free" replaced by "the released lock holds it": the state it leaves is the one
    /// the two calls would leave one after the other (`docs/safety.md`, G5).
    /// Otherwise, or when the transaction fails, the two calls run one after
    /// the other (with the same tombstone value, so a release whose reply was
    /// lost is still recognised as this one's).
    #[instrument(skip_all, fields(shard = %self.name, resource = next.resource, lock_id, next = next.lock_id, token = next.token))]
    pub async fn hand_off(
        &self,
        lock_id: &str,
        principal: Option<&str>,
        next: &Proposal<'_>,
    ) -> HandOff<StoreError> {
        // After the hand-off before it, whose grant this one releases.
        let _turn = self.turns.take(next.resource).await;
        let nonce = removal_nonce(false);
        match self.transfer(lock_id, principal, next, &nonce).await {
            Ok(Some(done)) => return (Ok(done.0), Ok(done.1)),
            Ok(None) => {}
            Err(error) => debug!(%error, "one-write hand-off failed; releasing, then granting"),
        }
        let released = self
            .remove_with(next.resource, lock_id, false, principal, nonce)
            .await;
        let vote = self.grant(next).await;
        (released, vote)
    }

    /// The one transaction of [`ShardStore::hand_off`]; `None` when a guard
    /// failed (nothing written).
    async fn transfer(
        &self,
        lock_id: &str,
        principal: Option<&str>,
        p: &Proposal<'_>,
        nonce: &str,
    ) -> Result<Option<(Removal, Vote<Holding>)>, StoreError> {
        let floor = self.serving().await?;
        if p.token <= floor || lock_id == p.lock_id {
            return Ok(None);
        }
        let lock_key = self.keys.lock(p.resource);
        let fence_key = self.keys.fence(p.resource);
        // The revision the released grant was written at: noted when this
        // store wrote it, or else read now. Without a note (another agent wrote
        // it, or this store's previous hand-off of the resource is still queued
        // ahead: the read waits behind it), one read keeps the hand-off one
        // write instead of a release and a grant.
        let (revision, owner) = match self.written.get(p.resource, lock_id) {
            Some(noted) => noted,
            None => {
                let found = self.get_checked(Some(p.resource), &lock_key, floor).await?;
                let held = found.as_ref().map(|kv| self.decode(kv)).transpose()?;
                match (found, held) {
                    (Some(kv), Some(held)) if held.lock_id == lock_id => {
                        (kv.mod_revision(), held.principal)
                    }
                    (other, _) => {
                        return self
                            .hand_off_missed(lock_id, p, other.as_ref(), floor)
                            .await;
                    }
                }
            }
        };
        if principal.is_some_and(|caller| caller != owner) {
            return Ok(None);
        }
        let (record, value) = self.new_record(p, &lock_key)?;
        let (bucket, lease) = self.lease_for(p.ttl).await?;
        let (tomb_bucket, tomb_lease) = self.tombstone_lease_for(self.tombstone_ttl).await?;
        let guards = [
            self.marker_guard(floor),
            // The released lock holds the resource: the lock key is still
            // exactly what this store wrote for it...
            Compare::mod_revision(lock_key.as_str(), CompareOp::Equal, revision),
            // ...the next lock id was never aborted here, and its token is
            // above the resource's mark.
            Compare::version(self.keys.tombstone(p.lock_id).as_str(), CompareOp::Equal, 0),
            Compare::value(fence_key.as_str(), CompareOp::Less, encode_token(p.token)),
        ];
        let txn = Txn::new().when(guards).and_then(
            [
                vec![
                    TxnOp::get(lock_key.as_str(), None),
                    TxnOp::put(
                        self.keys.tombstone(lock_id),
                        nonce,
                        Some(PutOptions::new().with_lease(tomb_lease)),
                    ),
                ],
                Self::grant_writes(p, &fence_key, &lock_key, value, lease),
            ]
            .concat(),
        );
        let (response, at) = match self.txn_on_at(p.resource, "hand off", txn).await {
            Err(e) if e.is_lease_not_found() => {
                self.leases.forget(bucket);
                self.tombstone_leases.forget(tomb_bucket);
                return Ok(None);
            }
            other => other?,
        };
        if !response.succeeded() {
            return Ok(None);
        }
        self.written.forget(p.resource, lock_id);
        self.written.note(p.resource, p.lock_id, at, p.principal);
        let [old] = first_kvs::<1>(&response);
        if let Some(kv) = &old {
            self.observe_hold(kv);
        }
        let released = old.map(|kv| self.decode(&kv)).transpose()?;
        let remaining = bucket.deadline.saturating_sub(self.clock.monotonic());
        debug!(?remaining, "handed off");
        Ok(Some((
            Removal::Removed(released),
            Vote::Granted(Holding { record, remaining }),
        )))
    }

    /// A hand-off whose release finds no grant of `lock_id` here (`found`: the
    /// grant key as read, another lock's or none): a region that missed that
    /// lock's grant, or fell behind on a hot resource and had its queued
    /// transactions dropped. One transaction, guarded by what was read, leaves
    /// the release's tombstone (as a release that finds nothing does) and
    /// either grants the next lock (the resource is free) or reads why not
    /// (held by another lock), so the region answers both parts with one write
    /// instead of a release's reads and write and then a grant. `None` when
    /// the guard failed (nothing written): the caller runs the two calls.
    async fn hand_off_missed(
        &self,
        lock_id: &str,
        p: &Proposal<'_>,
        found: Option<&KeyValue>,
        floor: u64,
    ) -> Result<Option<(Removal, Vote<Holding>)>, StoreError> {
        // A tombstone value of its own, not the hand-off's: if this write's
        // reply is lost, the release that follows must not take it for a
        // removal of its own (this one removed nothing).
        let nonce = removal_nonce(false);
        let lock_key = self.keys.lock(p.resource);
        let fence_key = self.keys.fence(p.resource);
        let next_tomb = self.keys.tombstone(p.lock_id);
        let (record, value) = self.new_record(p, &lock_key)?;
        let (tomb_bucket, tomb_lease) = self.tombstone_lease_for(self.tombstone_ttl).await?;
        let tomb = TxnOp::put(
            self.keys.tombstone(lock_id),
            nonce,
            Some(PutOptions::new().with_lease(tomb_lease)),
        );
        let mut bucket = None;
        let txn = match found {
            // Held by another lock, still as read: the grant part is refused;
            // read what says why (as the grant's own refusal does).
            Some(kv) => Txn::new()
                .when([
                    self.marker_guard(floor),
                    Compare::mod_revision(lock_key.as_str(), CompareOp::Equal, kv.mod_revision()),
                ])
                .and_then([
                    TxnOp::get(lock_key.as_str(), None),
                    TxnOp::get(fence_key.as_str(), None),
                    TxnOp::get(next_tomb.as_str(), None),
                    TxnOp::get(self.keys.mark_floor(), None),
                    tomb,
                ]),
            // Free: the grant's own guards (a resource without a mark takes
            // the grant's other path, below).
            None => {
                let (grant_bucket, lease) = self.lease_for(p.ttl).await?;
                bucket = Some(grant_bucket);
                Txn::new()
                    .when([
                        self.marker_guard(floor),
                        Compare::version(lock_key.as_str(), CompareOp::Equal, 0),
                        Compare::version(next_tomb.as_str(), CompareOp::Equal, 0),
                        Compare::value(fence_key.as_str(), CompareOp::Less, encode_token(p.token)),
                    ])
                    .and_then(
                        [
                            vec![tomb],
                            Self::grant_writes(p, &fence_key, &lock_key, value, lease),
                        ]
                        .concat(),
                    )
            }
        };
        let (response, at) = match self.txn_on_at(p.resource, "hand off", txn).await {
            Err(e) if e.is_lease_not_found() => {
                if let Some(b) = bucket {
                    self.leases.forget(b);
                }
                self.tombstone_leases.forget(tomb_bucket);
                return Ok(None);
            }
            other => other?,
        };
        if !response.succeeded() {
            return Ok(None);
        }
        let vote = match bucket {
            Some(bucket) => {
                self.written.note(p.resource, p.lock_id, at, p.principal);
                let remaining = bucket.deadline.saturating_sub(self.clock.monotonic());
                Vote::Granted(Holding { record, remaining })
            }
            None => {
                let [lock, fence, next_tomb, mark_floor] = first_kvs::<4>(&response);
                let Some(vote) = self
                    .refusal(
                        p,
                        lock.as_ref(),
                        fence.as_ref(),
                        next_tomb.is_some(),
                        mark_floor.as_ref(),
                    )
                    .await?
                else {
                    return Ok(None);
                };
                vote
            }
        };
        debug!("hand-off whose release found no grant here: one write");
        Ok(Some((Removal::Nothing, vote)))
    }

    /// Remove the grant of exactly `lock_id` if present, and leave a tombstone so a
    /// delayed proposal for the same lock id is refused. True when a grant existed.
    #[instrument(skip_all, fields(shard = %self.name, resource, lock_id))]
    pub async fn abort(&self, resource: &str, lock_id: &str) -> Result<bool, StoreError> {
        Ok(self.remove(resource, lock_id, true, None).await?.removed())
    }

    async fn remove(
        &self,
        resource: &str,
        lock_id: &str,
        tombstone: bool,
        principal: Option<&str>,
    ) -> Result<Removal, StoreError> {
        // Written into this call's tombstone: a later attempt that finds the grant
        // gone and this value knows its own earlier transaction removed it (its
        // reply was lost), rather than answering "not found".
        let nonce = removal_nonce(tombstone);
        self.remove_with(resource, lock_id, tombstone, principal, nonce)
            .await
    }

    async fn remove_with(
        &self,
        resource: &str,
        lock_id: &str,
        tombstone: bool,
        principal: Option<&str>,
        nonce: String,
    ) -> Result<Removal, StoreError> {
        let floor = self.serving().await?;
        let lock_key = self.keys.lock(resource);
        let tomb_key = self.keys.tombstone(lock_id);
        // A release first tries one write that needs no read: compare the lock
        // key's mod revision with the one this store noted when it wrote the
        // grant, delete it. Only when that cannot be done or fails (no note,
        // another principal's, the grant rewritten elsewhere, a lost reply)
        // does it read, below.
        let mut first = 0;
        if !tombstone {
            if let Some(record) = self
                .release_by_id(resource, lock_id, principal, floor, &nonce)
                .await?
            {
                return Ok(Removal::Removed(record));
            }
            // The read path starts by looking for this call's own tombstone: the
            // write may have happened and only its reply been lost.
            first = 1;
        }
        // The grant as last read by an attempt that found it (what was removed).
        let mut read: Option<GrantRecord> = None;
        for attempt in first..ATTEMPTS {
            if attempt > 0
                && let Some(tomb) = self
                    .get_checked(Some(resource), &tomb_key, floor)
                    .await?
                    .filter(|kv| kv.value() == nonce.as_bytes())
            {
                if read.is_none() {
                    // The write whose reply was lost removed the grant at the
                    // tombstone's revision: the grant as it was just before.
                    read = self
                        .record_at(&lock_key, lock_id, tomb.mod_revision() - 1)
                        .await;
                }
                return Ok(Removal::Removed(read));
            }
            let ours = match self.get_checked(Some(resource), &lock_key, floor).await? {
                Some(kv) => {
                    let record = self.decode(&kv)?;
                    if record.lock_id != lock_id {
                        None
                    } else if let Err(not_owner) = self.check_owner(&record, principal) {
                        return Err(not_owner);
                    } else if tombstone && record.adopted {
                        // A retry reported this grant as its lock: it is no
                        // longer the aborting round's to take back.
                        debug!("grant adopted by a retry; not aborting it");
                        return Ok(Removal::Nothing);
                    } else {
                        read = Some(record);
                        Some(kv)
                    }
                }
                None => None,
            };
            if ours.is_some() {
                // So the expiry watcher knows this delete is ours, not an expiry.
                self.removed.remember(lock_id);
            }
            // A tombstone refuses a delayed proposal of this lock id afterwards
            // (on a release that found nothing here, the grant may still be in
            // flight to this region and would otherwise land after its own release
            // and linger until its TTL), and carries this call's nonce.
            let (bucket, lease) = self.tombstone_lease_for(self.tombstone_ttl).await?;
            let mut ops = vec![TxnOp::put(
                tomb_key.as_str(),
                nonce.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )];
            let bucket = Some(bucket);
            let txn = match &ours {
                None => Txn::new().and_then(ops),
                Some(kv) => {
                    ops.push(TxnOp::delete(lock_key.as_str(), None));
                    Txn::new()
                        .when([
                            Compare::mod_revision(
                                lock_key.as_str(),
                                CompareOp::Equal,
                                kv.mod_revision(),
                            ),
                            self.marker_guard(floor),
                        ])
                        .and_then(ops)
                }
            };
            match self
                .txn_on(resource, if tombstone { "abort" } else { "release" }, txn)
                .await
            {
                Err(e) if e.is_lease_not_found() => {
                    if let Some(b) = bucket {
                        self.tombstone_leases.forget(b);
                    }
                }
                Err(e) => return Err(e),
                Ok(response) if response.succeeded() => {
                    self.written.forget(resource, lock_id);
                    if let Some(kv) = &ours
                        && !tombstone
                    {
                        self.observe_hold(kv);
                    }
                    return Ok(match ours {
                        Some(_) => Removal::Removed(read),
                        None => Removal::Nothing,
                    });
                }
                Ok(_) => debug!("grant changed during release; re-reading"),
            }
        }
        Err(StoreError::Contention {
            shard: self.name.clone(),
            op: "release",
        })
    }

    /// Delete the fencing-token marks of resources that hold no grant and whose
    /// mark was not written after `untouched_since` (an etcd revision, e.g. the
    /// one seen at the previous sweep), raising the shard's mark floor to at
    /// least every mark deleted, in the same transaction. Returns how many marks
    /// were deleted.
    ///
    /// Without this every resource ever locked leaves a key forever, and a shard
    /// fills its etcd quota (hole 7 in `docs/safety.md`). Tokens never go back: a
    /// resource without a mark takes only tokens above the floor, which is at
    /// least its collected mark. Each batch compares every mark's revision and the
    /// absence of its grant, so a grant racing the sweep wins and keeps its mark.
    pub async fn collect_marks(&self, untouched_since: i64) -> Result<usize, StoreError> {
        let floor = self.serving().await?;
        let prefix = self.keys.fence_prefix();
        let range_end = prefix_end(&prefix);
        let mut from = prefix.into_bytes();
        let mut deleted = 0;
        loop {
            let options = GetOptions::new()
                .with_range(range_end.clone())
                .with_limit(MARK_PAGE);
            let page = self
                .call("collect marks", || {
                    let mut kv = self.link.client().kv_client();
                    let (from, options) = (from.clone(), options.clone());
                    async move { kv.get(from, Some(options)).await }
                })
                .await?;
            let old: Vec<&KeyValue> = page
                .kvs()
                .iter()
                .filter(|kv| kv.mod_revision() <= untouched_since)
                .collect();
            for batch in old.chunks(MARK_BATCH) {
                deleted += self.collect_batch(batch, floor).await?;
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(deleted),
            }
        }
    }

    /// Delete `marks` in one transaction if none changed and none of their
    /// resources is held; otherwise one by one (each under the same guards).
    async fn collect_batch(&self, marks: &[&KeyValue], floor: u64) -> Result<usize, StoreError> {
        if self.delete_marks(marks, floor).await? {
            return Ok(marks.len());
        }
        let mut deleted = 0;
        for mark in marks {
            if self.delete_marks(&[mark], floor).await? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// One guarded transaction: delete `marks`, raise the mark floor to their
    /// highest token. False when a guard failed (nothing changed).
    async fn delete_marks(&self, marks: &[&KeyValue], floor: u64) -> Result<bool, StoreError> {
        let floor_key = self.keys.mark_floor();
        let current = self.get_checked(None, &floor_key, floor).await?;
        let current_floor = current
            .as_ref()
            .and_then(|kv| decode_token(kv.value()))
            .unwrap_or(0);
        let mut guards = vec![self.marker_guard(floor)];
        guards.push(match &current {
            Some(kv) => {
                Compare::mod_revision(floor_key.as_str(), CompareOp::Equal, kv.mod_revision())
            }
            None => Compare::version(floor_key.as_str(), CompareOp::Equal, 0),
        });
        let mut ops = Vec::new();
        let mut highest = current_floor;
        for mark in marks {
            // A mark that cannot be read is left alone (never a floor of 2^64).
            let (Some(resource), Some(token)) = (
                self.keys.resource_of_fence(mark.key()),
                decode_token(mark.value()),
            ) else {
                continue;
            };
            guards.push(Compare::mod_revision(
                mark.key(),
                CompareOp::Equal,
                mark.mod_revision(),
            ));
            guards.push(Compare::version(
                self.keys.lock(&resource),
                CompareOp::Equal,
                0,
            ));
            ops.push(TxnOp::delete(mark.key(), None));
            highest = highest.max(token);
        }
        ops.push(TxnOp::put(floor_key.as_str(), encode_token(highest), None));
        let response = self
            .txn("collect marks", Txn::new().when(guards).and_then(ops))
            .await?;
        Ok(response.succeeded())
    }

    /// How many fencing-token marks this shard keeps (for metrics and tests).
    pub async fn count_marks(&self) -> Result<i64, StoreError> {
        self.count(self.keys.fence_prefix(), false).await
    }

    /// How many keys start with `prefix` (`serializable`: from the member asked,
    /// without a round through the leader; fine for metrics).
    async fn count(&self, prefix: String, serializable: bool) -> Result<i64, StoreError> {
        let response = self
            .call("count", || {
                let mut kv = self.link.client().kv_client();
                let prefix = prefix.clone();
                let options = GetOptions::new().with_prefix().with_count_only();
                let options = if serializable {
                    options.with_serializable()
                } else {
                    options
                };
                async move { kv.get(prefix, Some(options)).await }
            })
            .await?;
        Ok(response.count())
    }

    /// The shard's current etcd revision (for sweeps: "untouched since").
    pub async fn revision(&self) -> Result<i64, StoreError> {
        let key = self.keys.health();
        let response = self
            .call("revision", || {
                let mut kv = self.link.client().kv_client();
                let key = key.clone();
                async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    /// The grant holding `resource` (if any) and its mark, read atomically.
    #[instrument(skip_all, fields(shard = %self.name, resource))]
    pub async fn read(&self, resource: &str) -> Result<ResourceState, StoreError> {
        let floor = self.serving().await?;
        let txn = Txn::new().and_then([
            TxnOp::get(self.keys.lock(resource), None),
            TxnOp::get(self.keys.fence(resource), None),
            TxnOp::get(self.keys.incarnation(), None),
        ]);
        let response = self.txn_on(resource, "read", txn).await?;
        let [lock, fence, marker] = first_kvs::<3>(&response);
        self.check_marker(floor, marker.as_ref())?;
        let holder = match lock {
            Some(kv) => Some(self.holding(&kv).await?),
            None => None,
        };
        let mark = fence.and_then(|kv| decode_token(kv.value())).unwrap_or(0);
        Ok(ResourceState { holder, mark })
    }

    /// The grants of resources that start with `prefix` and sort after
    /// `start_after` (`""`: from the first), in resource order, at most `limit`
    /// (0 lists nothing). One range read over the grant keys, whose hex-encoded
    /// names keep the names' byte order and prefixes, in one transaction with
    /// the incarnation marker, checked like every other read.
    #[instrument(skip_all, fields(shard = %self.name, prefix, limit))]
    pub async fn list(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Listing, StoreError> {
        let floor = self.serving().await?;
        let first = self.keys.lock(prefix);
        let end = prefix_end(&first);
        let mut from = first.into_bytes();
        if !start_after.is_empty() {
            // The first key above `start_after`'s is that key and a NUL byte.
            let mut after = self.keys.lock(start_after).into_bytes();
            after.push(0);
            from = from.max(after);
        }
        let range = (limit > 0 && from < end).then(|| {
            let options = GetOptions::new()
                .with_range(end)
                .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
            TxnOp::get(from, Some(options))
        });
        let mut ops = vec![TxnOp::get(self.keys.incarnation(), None)];
        ops.extend(range);
        let response = self.txn("list", Txn::new().and_then(ops)).await?;
        let mut pages = response.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        });
        let marker = pages.next().flatten();
        self.check_marker(floor, marker.as_ref().and_then(|m| m.kvs().first()))?;
        let Some(page) = pages.next().flatten() else {
            // Nothing can sort in the range (or no room on the page).
            return Ok(Listing {
                grants: Vec::new(),
                more: limit == 0,
            });
        };
        // Grants share lease buckets: ask etcd about each lease once at most.
        let mut lease_left: std::collections::HashMap<i64, Duration> = Default::default();
        let mut grants = Vec::with_capacity(page.kvs().len());
        for kv in page.kvs() {
            let resource =
                self.keys
                    .resource_of_lock(kv.key())
                    .ok_or_else(|| StoreError::CorruptKey {
                        shard: self.name.clone(),
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                    })?;
            let record = self.decode(kv)?;
            let remaining = match lease_left.get(&kv.lease()) {
                Some(left) => *left,
                None => {
                    let left = self.remaining(kv.lease()).await?;
                    lease_left.insert(kv.lease(), left);
                    left
                }
            };
            grants.push(Listed {
                resource,
                holding: Holding { record, remaining },
            });
        }
        Ok(Listing {
            grants,
            more: page.more(),
        })
    }

    /// How many grants this shard holds now (a serializable count: cheap, and
    /// only for the `locks held` gauge).
    pub async fn count_grants(&self) -> Result<i64, StoreError> {
        self.count(self.keys.lock_prefix(), true).await
    }

    /// Watch this shard's grants and call `on_expired` for every grant that
    /// disappears without this store having released or aborted it: its lease
    /// expired. Runs until the task is dropped, re-watching after errors.
    pub async fn watch_expirations(&self, on_expired: impl Fn(GrantRecord)) {
        let prefix = self.keys.lock_prefix();
        loop {
            let mut watch = self.link.client().watch_client();
            // Only deletes matter; etcd leaves out every grant's put.
            let options = WatchOptions::new()
                .with_prefix()
                .with_prev_key()
                .with_filters([WatchFilterType::NoPut]);
            match watch.watch(prefix.clone(), Some(options)).await {
                Ok(mut stream) => loop {
                    match stream.message().await {
                        Ok(Some(response)) => {
                            for event in response.events() {
                                if event.event_type() != EventType::Delete {
                                    continue;
                                }
                                let Some(record) =
                                    event.prev_kv().and_then(|kv| self.decode(kv).ok())
                                else {
                                    continue;
                                };
                                if let Some(resource) = self.keys.resource_of_lock(
                                    event.prev_kv().map_or(&[][..], |kv| kv.key()),
                                ) {
                                    self.written.forget(&resource, &record.lock_id);
                                }
                                if !self.removed.forget(&record.lock_id) {
                                    metrics::counter!("globallock_agent_expirations_total", "shard" => self.name.clone())
                                        .increment(1);
                                    on_expired(record);
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            debug!(shard = %self.name, %error, "expiry watch broke; re-watching");
                            break;
                        }
                    }
                },
                Err(error) => debug!(shard = %self.name, %error, "cannot watch grants; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn observe_hold(&self, kv: &KeyValue) {
        if let Ok(record) = self.decode(kv)
            && record.granted_unix_ms > 0
        {
            let now = self.clock.unix_micros() / 1_000;
            let held = Duration::from_millis(now.saturating_sub(record.granted_unix_ms));
            metrics::histogram!("globallock_agent_hold_duration_seconds", "shard" => self.name.clone())
                .record(held.as_secs_f64());
        }
    }

    /// Prove the shard serves linearizable reads (which needs a live Raft leader).
    pub async fn check_health(&self) -> Result<(), StoreError> {
        // Quarantined, or a marker that vanished or changed since: unhealthy, so
        // coordinators and operators see it (it used to report healthy forever).
        let floor = self.serving().await?;
        let marker = self.keys.incarnation();
        self.get_checked(None, &marker, floor).await.map(|_| ())
    }

    /// Compact history older than `keep` revisions (every acquire and release adds
    /// revisions; without compaction etcd's backend quota eventually fills).
    pub async fn compact(&self, keep: i64) -> Result<Option<i64>, StoreError> {
        let key = self.keys.health();
        let response = self
            .call("compact", || {
                let mut kv = self.link.client().kv_client();
                let key = key.clone();
                async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        let target = revision - keep;
        if target <= 0 {
            return Ok(None);
        }
        let compacted = self
            .call("compact", || {
                let mut kv = self.link.client().kv_client();
                async move { kv.compact(target, None).await }
            })
            .await;
        match compacted {
            Ok(_) => Ok(Some(target)),
            // Someone (another agent incarnation) compacted further already.
            Err(StoreError::Etcd {
                source: etcd_client::Error::GRpcStatus(status),
                ..
            }) if status.message().contains("compacted") => Ok(None),
            Err(e) => Err(e),
        }
    }

    // --- helpers -----------------------------------------------------------

    /// The lease of the bucket that outlives a grant of `ttl` made now.
    async fn lease_for(&self, ttl: Duration) -> Result<(Bucket, i64), StoreError> {
        self.lease_in(&self.leases, ttl).await
    }

    /// The lease of the tombstone bucket that outlives `ttl` from now.
    async fn tombstone_lease_for(&self, ttl: Duration) -> Result<(Bucket, i64), StoreError> {
        self.lease_in(&self.tombstone_leases, ttl).await
    }

    async fn lease_in(
        &self,
        table: &LeaseTable,
        ttl: Duration,
    ) -> Result<(Bucket, i64), StoreError> {
        let now = self.clock.monotonic();
        let bucket = self.grid.bucket_for(now, ttl);
        let cell = table.cell(bucket, now);
        let lease = cell
            .get_or_try_init(|| {
                async {
                    let asked_at = self.clock.monotonic();
                    let seconds = self.grid.lease_seconds(bucket, asked_at);
                    let response = self
                        .call("lease grant", || {
                            let mut leases = self.link.client().lease_client();
                            async move { leases.grant(seconds, None).await }
                        })
                        .await?;
                    table.created(bucket, response.id());
                    debug!(lease = response.id(), seconds, "created lease bucket");
                    Ok::<_, StoreError>(response.id())
                }
                .in_current_span()
            })
            .await?;
        Ok((bucket, *lease))
    }

    /// The record a proposal writes under `lock_key`, and its stored form.
    fn new_record(
        &self,
        p: &Proposal<'_>,
        lock_key: &str,
    ) -> Result<(GrantRecord, Vec<u8>), StoreError> {
        let record = GrantRecord {
            lock_id: p.lock_id.to_owned(),
            owner: p.owner.to_owned(),
            token: p.token,
            ttl_ms: millis(p.ttl),
            request_id: p.request_id.to_owned(),
            granted_unix_ms: self.clock.unix_micros() / 1_000,
            adopted: false,
            principal: p.principal.to_owned(),
        };
        let value = serde_json::to_vec(&record).map_err(|source| self.corrupt(lock_key, source))?;
        Ok((record, value))
    }

    /// A grant as stored, with how long it lives at least.
    async fn holding(&self, kv: &KeyValue) -> Result<Holding, StoreError> {
        let record = self.decode(kv)?;
        let remaining = self.remaining(kv.lease()).await?;
        Ok(Holding { record, remaining })
    }

    /// How long a lease lives at least, from now.
    async fn remaining(&self, lease: i64) -> Result<Duration, StoreError> {
        if lease == 0 {
            return Ok(Duration::ZERO);
        }
        if let Some(deadline) = self.leases.deadline_of(lease) {
            return Ok(deadline.saturating_sub(self.clock.monotonic()));
        }
        // A lease from an earlier incarnation of this agent: etcd reports whole
        // seconds, rounded, so one second less is what we can promise.
        let response = self
            .call("lease ttl", || {
                let mut leases = self.link.client().lease_client();
                async move { leases.time_to_live(lease, None).await }
            })
            .await?;
        let seconds = u64::try_from(response.ttl().saturating_sub(1)).unwrap_or(0);
        Ok(Duration::from_secs(seconds))
    }

    fn decode(&self, kv: &KeyValue) -> Result<GrantRecord, StoreError> {
        serde_json::from_slice(kv.value())
            .map_err(|source| self.corrupt(&String::from_utf8_lossy(kv.key()), source))
    }

    fn corrupt(&self, key: &str, source: serde_json::Error) -> StoreError {
        StoreError::Corrupt {
            shard: self.name.clone(),
            key: key.to_owned(),
            source,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let before = self.watermark.before_request();
        let mut response = self
            .call("get", || {
                let mut kv = self.link.client().kv_client();
                let key = key.to_owned();
                async move { kv.get(key, None).await }
            })
            .await?;
        self.check_history(before, response.header())?;
        Ok(response.take_kvs().into_iter().next())
    }

    /// One transaction, sent alone (for those that span resources).
    async fn txn(&self, op: &'static str, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.transact(None, op, txn).await
    }

    /// One transaction that touches only `resource`'s keys, group-committed
    /// with whatever else is sent to this shard at the same time.
    async fn txn_on(
        &self,
        resource: &str,
        op: &'static str,
        txn: Txn,
    ) -> Result<TxnResponse, StoreError> {
        self.transact(Some(resource), op, txn).await
    }

    /// [`ShardStore::txn_on`], with the revision the transaction (or the batch
    /// that carried it) ran at: what it wrote has that mod revision.
    async fn txn_on_at(
        &self,
        resource: &str,
        op: &'static str,
        txn: Txn,
    ) -> Result<(TxnResponse, Option<i64>), StoreError> {
        let committed = self.commit_on(Some(resource), op, txn).await?;
        let revision = committed.header.as_ref().map(|h| h.revision());
        Ok((committed.response, revision))
    }

    async fn transact(
        &self,
        resource: Option<&str>,
        op: &'static str,
        txn: Txn,
    ) -> Result<TxnResponse, StoreError> {
        Ok(self.commit_on(resource, op, txn).await?.response)
    }

    async fn commit_on(
        &self,
        resource: Option<&str>,
        op: &'static str,
        txn: Txn,
    ) -> Result<Committed, StoreError> {
        let before = self.watermark.before_request();
        let send = |txn: Txn| async move {
            match resource {
                Some(resource) => self.commit.submit(resource, op, txn).await,
                None => self.link.send(op, txn).await,
            }
        };
        let mut committed: Committed = send(txn.clone()).await?;
        if self.lost_reply_hook.as_ref().is_some_and(|lose| lose(op)) {
            // The reply was "lost": the transaction applied, and is sent again.
            committed = send(txn).await?;
        }
        self.check_history(before, committed.header.as_ref())?;
        Ok(committed)
    }

    /// Quarantine when a response shows etcd's history went back (hole 5 in
    /// `docs/safety.md`): another cluster id, or a revision below one seen before
    /// the request was sent.
    fn check_history(
        &self,
        before: Before,
        header: Option<&etcd_client::ResponseHeader>,
    ) -> Result<(), StoreError> {
        let Some(header) = header else {
            return Ok(());
        };
        let now = self.clock.monotonic();
        match self
            .watermark
            .observe(before, header.cluster_id(), header.revision(), now)
        {
            Ok(()) => Ok(()),
            Err(rollback) => {
                self.enter_quarantine(&rollback.to_string());
                Err(StoreError::Quarantined {
                    shard: self.name.clone(),
                    remaining: self.quarantine,
                })
            }
        }
    }

    async fn call<T, Fut>(
        &self,
        op: &'static str,
        request: impl FnMut() -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.link.call(op, request).await
    }
}

/// A removal's tombstone value: what it did, and a random part of its own.
fn removal_nonce(tombstone: bool) -> String {
    format!(
        "{}:{:016x}",
        if tombstone { "aborted" } else { "released" },
        rand::random::<u64>()
    )
}

/// What a grant transaction did, found by following its nested transactions
/// down the branches that ran.
enum GrantWrite {
    /// One of them wrote the grant.
    Written,
    /// None did; what the branch that ran read instead: the grant key, the
    /// mark, the tombstone, the marker and the mark floor.
    Refused(Box<[Option<KeyValue>; 5]>),
    /// Neither writes nor reads: not an answer to the transaction we sent.
    Unexpected,
}

impl GrantWrite {
    fn of(response: &TxnResponse) -> Self {
        match response.op_responses().first() {
            Some(TxnOpResponse::Txn(nested)) => Self::of(nested),
            Some(TxnOpResponse::Put(_)) => Self::Written,
            Some(TxnOpResponse::Get(_)) => Self::Refused(Box::new(first_kvs::<5>(response))),
            _ => Self::Unexpected,
        }
    }
}

/// The first key-value of each of a transaction's first `N` get responses.
fn first_kvs<const N: usize>(response: &TxnResponse) -> [Option<KeyValue>; N] {
    let mut out: [Option<KeyValue>; N] = std::array::from_fn(|_| None);
    for (slot, op) in out.iter_mut().zip(response.op_responses()) {
        if let TxnOpResponse::Get(get) = op {
            *slot = get.kvs().first().cloned();
        }
    }
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl StoreFault for StoreError {
    fn kind(&self) -> FaultKind {
        match self {
            StoreError::Corrupt { .. } | StoreError::CorruptKey { .. } => FaultKind::DataLoss,
            StoreError::NotOwner { .. } => FaultKind::NotOwner,
            _ => FaultKind::Unavailable,
        }
    }
}

/// The agent's view of a shard: each operation is the inherent one above.
impl LockStore for ShardStore {
    type Error = StoreError;

    fn name(&self) -> &str {
        ShardStore::name(self)
    }

    async fn grant(&self, proposal: &Proposal<'_>) -> Result<Vote<Holding>, StoreError> {
        ShardStore::grant(self, proposal).await
    }

    async fn adopt(
        &self,
        resource: &str,
        lock_id: &str,
        request_id: &str,
    ) -> Result<Option<Holding>, StoreError> {
        ShardStore::adopt(self, resource, lock_id, request_id).await
    }

    async fn renew_as(
        &self,
        resource: &str,
        lock_id: &str,
        ttl: Option<Duration>,
        principal: Option<&str>,
    ) -> Result<Option<Holding>, StoreError> {
        ShardStore::renew_as(self, resource, lock_id, ttl, principal).await
    }

    async fn release_as(
        &self,
        resource: &str,
        lock_id: &str,
        principal: Option<&str>,
    ) -> Result<Removal, StoreError> {
        ShardStore::release_as(self, resource, lock_id, principal).await
    }

    async fn hand_off(
        &self,
        lock_id: &str,
        principal: Option<&str>,
        next: &Proposal<'_>,
    ) -> HandOff<StoreError> {
        ShardStore::hand_off(self, lock_id, principal, next).await
    }

    async fn abort(&self, resource: &str, lock_id: &str) -> Result<bool, StoreError> {
        ShardStore::abort(self, resource, lock_id).await
    }

    async fn read(&self, resource: &str) -> Result<ResourceState, StoreError> {
        ShardStore::read(self, resource).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Listing, StoreError> {
        ShardStore::list(self, prefix, start_after, limit).await
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        ShardStore::check_health(self).await
    }
}
