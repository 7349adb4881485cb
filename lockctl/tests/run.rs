//! `lockctl run` driven like flock(1), against a real cluster.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{Cluster, ClusterOptions};

fn lockctl(cluster: &Cluster) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lockctl"));
    command.env(
        "GLOBALLOCK_ENDPOINT",
        format!("http://{}", cluster.coordinator_addrs[0]),
    );
    command
}

async fn output(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_passes_the_token_and_the_exit_status_then_releases() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let seen = dir.path().join("seen");
    let mut command = lockctl(&cluster);
    command.args(["run", "backup/db", "--ttl", "3s", "--", "sh", "-c"]).arg(format!(
        "echo \"$GLOBALLOCK_RESOURCE $GLOBALLOCK_LOCK_ID $GLOBALLOCK_FENCING_TOKEN\" > {}; sleep 4; exit 7",
        seen.display()
    ));
    let out = output(command).await;
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = std::fs::read_to_string(&seen)?;
    let fields: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(fields[0], "backup/db");
    assert!(fields[1].contains('.'), "lock id: {seen}");
    let token: u64 = fields[2].parse()?;
    assert!(token > 0);

    // Held for longer than its TTL (renewed), and released after the command.
    let mut describe = lockctl(&cluster);
    describe.args(["describe", "backup/db", "--output", "json"]);
    let out = output(describe).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"held\":false"),
        "{out:?}"
    );

    // The next run gets a larger token.
    let mut next = lockctl(&cluster);
    next.args([
        "run",
        "backup/db",
        "--",
        "sh",
        "-c",
        "echo $GLOBALLOCK_FENCING_TOKEN",
    ]);
    let out = output(next).await;
    assert!(out.status.success());
    let next_token: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    assert!(next_token > token);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wait_on_a_held_lock_exits_75_without_running_the_command() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("ran");
    let mut holder = lockctl(&cluster);
    holder
        .args(["run", "deploy", "--", "sleep", "5"])
        .stdout(Stdio::null());
    let mut holder = holder.spawn()?;
    // Wait until the first run holds the lock.
    harness::eventually(Duration::from_secs(10), "first run holds the lock", || {
        let cluster = &cluster;
        async move {
            let mut describe = lockctl(cluster);
            describe.args(["describe", "deploy", "--output", "json"]);
            let out = output(describe).await;
            String::from_utf8_lossy(&out.stdout)
                .contains("\"held\":true")
                .then_some(())
        }
    })
    .await;

    let mut second = lockctl(&cluster);
    second
        .args(["run", "deploy", "--no-wait", "--", "touch"])
        .arg(&marker);
    let out = output(second).await;
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !marker.exists(),
        "the command must not run without the lock"
    );

    // With --wait, the second run gets the lock once the first finishes.
    let mut waiter = lockctl(&cluster);
    waiter
        .args(["run", "deploy", "--wait", "20s", "--", "touch"])
        .arg(&marker);
    let out = output(waiter).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(marker.exists());
    assert!(holder.wait()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_lock_stops_the_command_and_exits_79() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let started = dir.path().join("started");
    let stopped = dir.path().join("stopped");
    let mut command = lockctl(&cluster);
    command
        .args([
            "run", "migrate", "--ttl", "2s", "--grace", "5s", "--", "sh", "-c",
        ])
        .arg(format!(
            "trap 'touch {}; exit 0' TERM; touch {}; while true; do sleep 0.1; done",
            stopped.display(),
            started.display()
        ))
        .stderr(Stdio::piped());
    let child = command.spawn()?;
    harness::eventually(Duration::from_secs(10), "command started", || {
        let started = started.clone();
        async move { started.exists().then_some(()) }
    })
    .await;

    // Two regions gone: renewal is impossible, the lock is lost.
    cluster.stop_region(1).await;
    cluster.stop_region(2).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    assert_eq!(
        out.status.code(),
        Some(79),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("lost"));
    assert!(
        stopped.exists(),
        "the command got SIGTERM and could clean up"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_ignores_sigterm_is_killed_with_everything_it_started() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let worker_pid = dir.path().join("worker.pid");
    let mut command = lockctl(&cluster);
    command
        .args([
            "run", "stubborn", "--ttl", "2s", "--grace", "1s", "--", "sh", "-c",
        ])
        .arg(format!(
            "sleep 1000 & echo $! > {}; trap '' TERM; while true; do sleep 0.1; done",
            worker_pid.display()
        ))
        .stderr(Stdio::null());
    let child = command.spawn()?;
    let worker: i32 = harness::eventually(Duration::from_secs(10), "worker started", || {
        let worker_pid = worker_pid.clone();
        async move {
            std::fs::read_to_string(&worker_pid)
                .ok()?
                .trim()
                .parse()
                .ok()
        }
    })
    .await;
    cluster.stop_region(1).await;
    cluster.stop_region(2).await;
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await??
        .status;
    assert_eq!(status.code(), Some(79));
    // The background worker the command started was killed with it.
    let alive = Command::new("kill")
        .args(["-0", &worker.to_string()])
        .stderr(Stdio::null())
        .status()?
        .success();
    assert!(!alive, "worker {worker} outlived the lock");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_answers_who_held_a_resource_when() -> anyhow::Result<()> {
    let audit_dir = tempfile::tempdir()?;
    let cluster = Cluster::start(ClusterOptions {
        audit_dir: Some(audit_dir.path().to_path_buf()),
        ..ClusterOptions::default()
    })
    .await?;
    for owner in ["first-owner", "second-owner"] {
        let mut run = lockctl(&cluster);
        run.args([
            "run",
            "ledger/close",
            "--owner",
            owner,
            "--",
            "sleep",
            "0.2",
        ]);
        assert!(output(run).await.status.success());
    }
    let logs: Vec<String> = std::fs::read_dir(audit_dir.path())?
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let mut audit = lockctl(&cluster);
    audit.args(["audit", "ledger/close", "--output", "json"]);
    for log in &logs {
        audit.args(["--log", log]);
    }
    let out = output(audit).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tenures: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    assert_eq!(tenures.len(), 2, "{tenures:?}");
    assert_eq!(tenures[0]["owner"], "first-owner");
    assert_eq!(tenures[0]["ended_by"], "released");
    assert_eq!(tenures[1]["owner"], "second-owner");
    assert!(tenures[1]["token"].as_u64() > tenures[0]["token"].as_u64());

    // --at: the holder at an instant inside the first tenure.
    let at = tenures[0]["from_unix_ms"].as_u64().unwrap() + 50;
    let mut one = lockctl(&cluster);
    one.args(["audit", "ledger/close", "--at", &at.to_string()]);
    for log in &logs {
        one.args(["--log", log]);
    }
    let out = output(one).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("first-owner") && !text.contains("second-owner"),
        "{text}"
    );
    Ok(())
}
