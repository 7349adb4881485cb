//! Group commit: the transactions that one shard's callers send at the same
//! time, each on its own resource, go to etcd as **one** transaction whose
//! operations are their transactions, nested (etcd ≥ 3.3). That is one request,
//! one Raft entry and one fsync for many locks, and each nested transaction
//! keeps its own compares and gets its own answer.
//!
//! # Why nesting preserves each transaction's meaning
//! etcd evaluates the compares of every nested transaction against the state
//! before the outer transaction, then applies the chosen branches in order
//! (`compareToPath`, then `applyTxn`). A batch never holds two transactions on
//! the same resource (every key a transaction here writes or reads belongs to
//! one resource: its grant, fencing mark and tombstones), so no
//! nested transaction reads or compares a key another one in the batch writes:
//! the batch has the same effect as the same transactions sent one by one, in
//! any order. etcd would anyway refuse a batch that puts one key twice
//! ("duplicate key given in txn request").
//!
//! # Flow
//! A caller queues its transaction. While fewer than [`MAX_IN_FLIGHT`] batches
//! (one) are on their way to etcd, the caller's own submission starts a sender task
//! with everything queued (so a lone request goes at once, as before); otherwise
//! it waits for a sender to come back, and that sender takes the queue next. A
//! batch of one is sent as itself. The sender is its own task, so a caller that
//! gives up (its RPC cancelled) never abandons the others' batch.
//!
//! # Failures
//! A batch that etcd refuses as a whole (a lease in it expired, a limit) applied
//! nothing: each of its transactions is then sent alone, so each gets its own
//! answer. A batch that timed out gives each caller a timeout, exactly what
//! sending alone would have given after the same wait; the caller treats the
//! outcome as unknown, as it does for any timeout (every operation of the store
//! is safe to repeat).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{ResponseHeader, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::sync::oneshot;
use tracing::{Instrument, debug};

use crate::connection::Connection;
use crate::error::StoreError;

/// Batches on their way to one shard's etcd at once. One: while it is on its
/// way, what queues is the next batch. Measured with `make bench`: two in
/// flight made batches smaller (0.39 against 0.27 Raft entries per cycle at
/// 64 workers) and cost 15-19 % of the uncontended throughput; etcd applies
/// one shard's writes one after the other anyway.
pub(crate) const MAX_IN_FLIGHT: usize = 1;

/// Nested transactions per batch. etcd allows 128 operations per transaction
/// and counts a nested transaction's own operations against what the outer one
/// leaves (`maxTxnOps - len(outer)`), level by level; the deepest path here
/// is a grant's: 5, 2 and 5 operations down its nested transactions.
pub(crate) const MAX_BATCH: usize = 64;

/// How one shard's requests reach etcd: the connection, with the deadline and
/// the retries every request gets.
pub(crate) struct Link {
    name: String,
    timeout: Duration,
    connection: Connection,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.name)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

impl Link {
    pub(crate) fn new(name: String, timeout: Duration, connection: Connection) -> Self {
        Self {
            name,
            timeout,
            connection,
        }
    }

    /// The etcd client to use now.
    pub(crate) fn client(&self) -> Arc<etcd_client::Client> {
        self.connection.client()
    }

    /// Run one etcd request under the request deadline. A failure to reach a
    /// member (`UNAVAILABLE`: connection refused, no leader yet) is retried on the
    /// next attempt until the deadline, because the client balances over every
    /// member and a dead one must cost a retry, not an error. Every operation of
    /// the store is safe to repeat: grants are idempotent per request id, renew
    /// and release are compare-and-swaps on what they read.
    pub(crate) async fn call<T, Fut>(
        &self,
        op: &'static str,
        mut request: impl FnMut() -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.connection.refresh().await;
        let started = std::time::Instant::now();
        let result = self.call_with_retries(op, &mut request).await;
        metrics::histogram!("globallock_etcd_request_duration_seconds", "shard" => self.name.clone(), "op" => op)
            .record(started.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!("globallock_etcd_errors_total", "shard" => self.name.clone(), "op" => op).increment(1);
        }
        result
    }

    async fn call_with_retries<T, Fut>(
        &self,
        op: &'static str,
        request: &mut impl FnMut() -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(10);
        loop {
            let attempt = tokio::time::timeout_at(deadline, request()).await;
            let source = match attempt {
                Err(_) => return Err(self.timed_out(op)),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(source)) => source,
            };
            let retryable = matches!(&source, etcd_client::Error::GRpcStatus(status)
                if status.code() == tonic::Code::Unavailable)
                || matches!(&source, etcd_client::Error::TransportError(_));
            if !retryable || tokio::time::Instant::now() + pause >= deadline {
                return Err(StoreError::Etcd {
                    shard: self.name.clone(),
                    op,
                    source,
                });
            }
            debug!(op, error = %source, "etcd member unreachable; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    fn timed_out(&self, op: &'static str) -> StoreError {
        StoreError::Timeout {
            shard: self.name.clone(),
            op,
            after: self.timeout,
        }
    }

    /// One transaction, alone.
    pub(crate) async fn send(&self, op: &'static str, txn: Txn) -> Result<Committed, StoreError> {
        let mut response = self
            .call(op, || {
                let mut kv = self.client().kv_client();
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await?;
        let header = response.take_header();
        Ok(Committed { response, header })
    }
}

/// A transaction's answer, with the header of the request that carried it (a
/// nested transaction's own response has none).
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) response: TxnResponse,
    pub(crate) header: Option<ResponseHeader>,
}

struct Pending {
    resource: String,
    op: &'static str,
    txn: Txn,
    reply: oneshot::Sender<Result<Committed, StoreError>>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Pending>,
    in_flight: usize,
}

impl Queue {
    /// The next batch: queued transactions in arrival order, at most one per
    /// resource (a later one on the same resource waits for the next batch).
    /// A transaction whose caller is gone (its request was cancelled: the
    /// coordinator stopped waiting) is dropped unsent, which is one of the
    /// outcomes that caller already had to allow for (the request never
    /// arrived). Without this a region that fell behind on a hot resource,
    /// where transactions go one per batch, never caught up.
    fn take(&mut self) -> Vec<Pending> {
        let mut batch = Vec::new();
        let mut resources = HashSet::new();
        let mut kept = VecDeque::new();
        while let Some(pending) = self.waiting.pop_front() {
            if pending.reply.is_closed() {
                metrics::counter!("globallock_etcd_abandoned_total").increment(1);
                continue;
            }
            if batch.len() < MAX_BATCH && resources.insert(pending.resource.clone()) {
                batch.push(pending);
            } else {
                kept.push_back(pending);
            }
        }
        self.waiting = kept;
        batch
    }
}

/// One shard's group commit.
pub(crate) struct GroupCommit {
    link: Arc<Link>,
    queue: Mutex<Queue>,
    /// Transactions submitted, and batches sent for them (a batch refused as a
    /// whole counts once, however its transactions were then sent).
    submitted: AtomicU64,
    batches: AtomicU64,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    pub(crate) fn new(link: Arc<Link>) -> Self {
        Self {
            link,
            queue: Mutex::new(Queue::default()),
            submitted: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        }
    }

    /// (transactions submitted, batches sent for them) so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.submitted.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
        )
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send `txn`, which touches only `resource`'s keys, in the next batch.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        resource: &str,
        op: &'static str,
        txn: Txn,
    ) -> Result<Committed, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submitted.fetch_add(1, Ordering::Relaxed);
        let start = {
            let mut queue = self.queue();
            queue.waiting.push_back(Pending {
                resource: resource.to_owned(),
                op,
                txn,
                reply,
            });
            (queue.in_flight < MAX_IN_FLIGHT).then(|| {
                queue.in_flight += 1;
                queue.take()
            })
        };
        if let Some(batch) = start {
            tokio::spawn(Arc::clone(self).send_batches(batch).in_current_span());
        }
        // The sender task answers every transaction it took; it only goes away
        // with the runtime.
        answer
            .await
            .unwrap_or_else(|_| Err(self.link.timed_out(op)))
    }

    /// Send `batch`, then whatever queued meanwhile, until the queue is empty.
    async fn send_batches(self: Arc<Self>, mut batch: Vec<Pending>) {
        loop {
            self.send_batch(batch).await;
            let mut queue = self.queue();
            if queue.waiting.is_empty() {
                // Under the queue's lock: a caller that queues after this sees a
                // free slot and starts a sender itself.
                queue.in_flight -= 1;
                return;
            }
            batch = queue.take();
        }
    }

    async fn send_batch(&self, mut batch: Vec<Pending>) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("globallock_etcd_batch_size", "shard" => self.link.name.clone())
            .record(batch.len() as f64);
        if batch.len() == 1 {
            let Some(one) = batch.pop() else { return };
            let answer = self.link.send(one.op, one.txn).await;
            let _ = one.reply.send(answer);
            return;
        }
        let outer = Txn::new().and_then(
            batch
                .iter()
                .map(|p| TxnOp::txn(p.txn.clone()))
                .collect::<Vec<_>>(),
        );
        match self.link.send("batch", outer).await {
            Ok(Committed {
                response, header, ..
            }) => {
                let mut answers = response.op_responses().into_iter();
                for pending in batch {
                    let answer = match answers.next() {
                        Some(TxnOpResponse::Txn(response)) => Ok(Committed {
                            response,
                            header: header.clone(),
                        }),
                        // etcd answers a transaction's operations in order, one
                        // each; anything else is a broken etcd. Nothing to
                        // attribute: say so rather than guess.
                        _ => Err(StoreError::odd_answer(
                            &self.link.name,
                            pending.op,
                            "a batch without one response per transaction",
                        )),
                    };
                    let _ = pending.reply.send(answer);
                }
            }
            Err(StoreError::Timeout { .. }) => {
                for pending in batch {
                    let _ = pending.reply.send(Err(self.link.timed_out(pending.op)));
                }
            }
            Err(error) => {
                // Refused as a whole (nothing applied), or unreachable: each goes
                // alone and gets its own answer.
                debug!(%error, size = batch.len(), "batch refused; sending its transactions one by one");
                let alone = batch.into_iter().map(|pending| async move {
                    let answer = self.link.send(pending.op, pending.txn).await;
                    let _ = pending.reply.send(answer);
                });
                futures::future::join_all(alone).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(resource: &str) -> (Pending, oneshot::Receiver<Result<Committed, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let p = Pending {
            resource: resource.to_owned(),
            op: "grant",
            txn: Txn::new(),
            reply,
        };
        (p, answer)
    }

    #[test]
    fn a_batch_takes_one_transaction_per_resource_in_order_and_drops_abandoned_ones() {
        let mut queue = Queue::default();
        let (a1, _a1) = pending("a");
        let (b1, gone) = pending("b");
        let (a2, _a2) = pending("a");
        let (c1, _c1) = pending("c");
        drop(gone);
        queue.waiting.extend([a1, b1, a2, c1]);
        let batch: Vec<String> = queue.take().into_iter().map(|p| p.resource).collect();
        assert_eq!(batch, ["a", "c"], "b's caller is gone; a's second waits");
        let next: Vec<String> = queue.take().into_iter().map(|p| p.resource).collect();
        assert_eq!(next, ["a"]);
        assert!(queue.take().is_empty());
    }
}
