//! How the launcher runs etcd members: a member started with a `GOMAXPROCS`
//! limit runs with it, also when restarted, and `make dev`'s layout asks for 1.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use globallock_localcluster::{EtcdCluster, Layout};

/// The value of `name` in process `pid`'s environment.
fn environment_value(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ.split(|b| *b == 0).find_map(|entry| {
        let entry = std::str::from_utf8(entry).ok()?;
        let (key, value) = entry.split_once('=')?;
        (key == name).then(|| value.to_owned())
    })
}

#[test]
fn a_member_started_with_a_go_max_procs_runs_with_it_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = EtcdCluster::start_limited("limited", 1, dir.path(), None, Some(1)).unwrap();
    let first = etcd.members()[0].pid();
    assert_eq!(environment_value(first, "GOMAXPROCS").as_deref(), Some("1"));

    etcd.kill_member(0);
    etcd.start_member(0).unwrap();
    etcd.wait_healthy(Duration::from_secs(30)).unwrap();
    let second = etcd.members()[0].pid();
    assert_ne!(first, second, "the member was restarted");
    assert_eq!(
        environment_value(second, "GOMAXPROCS").as_deref(),
        Some("1")
    );
}

#[test]
fn make_devs_layout_runs_each_etcd_member_on_one_thread_like_its_services() {
    let layout = Layout::new(std::env::temp_dir());
    assert_eq!(layout.etcd_go_max_procs, Some(1));
    assert_eq!(layout.worker_threads, Some(1));
}
