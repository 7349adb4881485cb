//! What etcd did per acquire+release cycle: Raft entries, WAL fsyncs and
//! transactions, from each member's own `/metrics` counters read before and
//! after a measurement. globallock's figures are per region (the sum over a
//! region's shards: a cycle touches one shard in each); etcd's lock's are per
//! member (every member logs and fsyncs every entry).

use serde::Serialize;

use globallock_localcluster::EtcdCluster;

/// Counter values summed over members.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    fsyncs: f64,
    entries: f64,
    txns: f64,
    puts: f64,
    deletes: f64,
    calls: f64,
    stream_messages: f64,
}

/// Per cycle, per region (globallock) or per member (etcd's lock).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PerCycle {
    /// WAL fsyncs.
    pub fsyncs: f64,
    /// Raft entries committed (requests that went through Raft, leases too).
    pub raft_entries: f64,
    /// Transactions applied (a group-committed batch is one).
    pub txns: f64,
    /// Keys written (puts) and deleted.
    pub key_writes: f64,
    /// Unary gRPC calls the member answered (transactions, ranges, lease grants).
    pub calls: f64,
    /// Messages the member sent on gRPC streams (watch events and responses,
    /// lease keep-alives, etcd's lock service's waits).
    pub stream_messages: f64,
}

impl PerCycle {
    /// One line of figures, aligned for a table.
    pub fn describe(&self) -> String {
        format!(
            "{:>6.2} fsyncs {:>6.2} Raft entries {:>6.2} txns {:>6.2} keys written {:>6.2} calls {:>6.2} stream messages",
            self.fsyncs,
            self.raft_entries,
            self.txns,
            self.key_writes,
            self.calls,
            self.stream_messages
        )
    }
}

/// Sample every member of `clusters`; `None` when a member did not answer
/// (the figure is then left out rather than wrong).
pub fn sample(clusters: &[&EtcdCluster]) -> Option<Counters> {
    let mut total = Counters::default();
    for cluster in clusters {
        for body in cluster.metrics() {
            let body = body?;
            total.fsyncs += value(&body, "etcd_disk_wal_fsync_duration_seconds_count")?;
            total.entries += value(&body, "etcd_server_proposals_committed_total")?;
            total.txns += value(&body, "etcd_mvcc_txn_total").unwrap_or(0.0);
            total.puts += value(&body, "etcd_mvcc_put_total").unwrap_or(0.0);
            total.deletes += value(&body, "etcd_mvcc_delete_total").unwrap_or(0.0);
            total.calls += sum(&body, "grpc_server_handled_total", "unary");
            total.stream_messages += sum(&body, "grpc_server_msg_sent_total", "bidi_stream");
        }
    }
    Some(total)
}

/// What happened between `before` and `after`, per cycle and per `units`
/// (regions or members).
pub fn per_cycle(before: Counters, after: Counters, cycles: u64, units: usize) -> Option<PerCycle> {
    let per = (cycles as f64) * (units.max(1) as f64);
    (cycles > 0).then(|| PerCycle {
        fsyncs: (after.fsyncs - before.fsyncs) / per,
        raft_entries: (after.entries - before.entries) / per,
        txns: (after.txns - before.txns) / per,
        key_writes: (after.puts - before.puts + after.deletes - before.deletes) / per,
        calls: (after.calls - before.calls) / per,
        stream_messages: (after.stream_messages - before.stream_messages) / per,
    })
}

/// The value of an unlabelled series in a Prometheus text exposition.
fn value(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// The sum over every series of `name` whose `grpc_type` label is `grpc_type`.
fn sum(body: &str, name: &str, grpc_type: &str) -> f64 {
    let label = format!("grpc_type=\"{grpc_type}\"");
    body.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once("} ")?;
            labels.split(',').any(|l| l == label).then_some(value)
        })
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unlabelled_series_and_divides_by_cycles_and_units() {
        let body = "# HELP x\netcd_mvcc_txn_total 12\netcd_mvcc_txn_total_other 5\n\
                    etcd_disk_wal_fsync_duration_seconds_count 30\n";
        assert_eq!(value(body, "etcd_mvcc_txn_total"), Some(12.0));
        assert_eq!(
            value(body, "etcd_disk_wal_fsync_duration_seconds_count"),
            Some(30.0)
        );
        assert_eq!(value(body, "etcd_mvcc_put_total"), None);
        let before = Counters::default();
        let after = Counters {
            fsyncs: 60.0,
            entries: 120.0,
            txns: 120.0,
            puts: 300.0,
            deletes: 60.0,
            calls: 90.0,
            stream_messages: 30.0,
        };
        let p = per_cycle(before, after, 10, 3).unwrap();
        assert_eq!(
            (p.fsyncs, p.raft_entries, p.txns, p.key_writes),
            (2.0, 4.0, 4.0, 12.0)
        );
        assert_eq!((p.calls, p.stream_messages), (3.0, 1.0));
        assert!(per_cycle(before, after, 0, 3).is_none());
    }

    #[test]
    fn sums_grpc_series_of_one_type_over_their_labels() {
        let body = "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 40\n\
                    grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 2\n\
                    grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 7\n\
                    grpc_server_handled_total_x{grpc_type=\"unary\"} 100\n";
        assert_eq!(sum(body, "grpc_server_handled_total", "unary"), 42.0);
        assert_eq!(sum(body, "grpc_server_handled_total", "bidi_stream"), 7.0);
        assert_eq!(sum(body, "grpc_server_msg_sent_total", "unary"), 0.0);
    }
}
