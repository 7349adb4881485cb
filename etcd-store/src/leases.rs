//! The table of shared lease buckets of one shard.
//!
//! One lease per bucket deadline (see `globallock_protocol::expiry`), created on
//! first use and forgotten once its deadline passed: etcd expires it by itself,
//! so no keep-alive ever runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use globallock_protocol::expiry::Bucket;
use tokio::sync::OnceCell;

/// Lease ids per bucket, and the bucket of every lease we created.
#[derive(Debug, Default)]
pub(crate) struct LeaseTable {
    /// Bucket → its lease, created once even when many grants race for it.
    by_bucket: Mutex<BTreeMap<Bucket, Arc<OnceCell<i64>>>>,
    /// Lease id → bucket, to report a grant's remaining time without asking etcd.
    deadlines: Mutex<HashMap<i64, Bucket>>,
}

impl LeaseTable {
    /// The cell holding `bucket`'s lease (empty until someone creates it).
    /// Buckets whose deadline is before `now` are dropped on the way.
    pub(crate) fn cell(&self, bucket: Bucket, now: Duration) -> Arc<OnceCell<i64>> {
        let mut by_bucket = self.by_bucket.lock().unwrap_or_else(|e| e.into_inner());
        let expired: Vec<Bucket> = by_bucket
            .range(..Bucket { deadline: now })
            .map(|(b, _)| *b)
            .collect();
        if !expired.is_empty() {
            let mut deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
            for bucket in expired {
                if let Some(id) = by_bucket
                    .remove(&bucket)
                    .and_then(|cell| cell.get().copied())
                {
                    deadlines.remove(&id);
                }
            }
        }
        by_bucket.entry(bucket).or_default().clone()
    }

    /// Remember that `lease` outlives `bucket`'s deadline.
    pub(crate) fn created(&self, bucket: Bucket, lease: i64) {
        self.deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(lease, bucket);
    }

    /// Forget a bucket whose lease etcd no longer has.
    pub(crate) fn forget(&self, bucket: Bucket) {
        let removed = self
            .by_bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&bucket);
        if let Some(id) = removed.and_then(|cell| cell.get().copied()) {
            self.deadlines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
    }

    /// The bucket deadline of a lease we created, if we know it.
    pub(crate) fn deadline_of(&self, lease: i64) -> Option<Duration> {
        self.deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&lease)
            .map(|b| b.deadline)
    }
}
