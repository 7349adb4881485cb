//! `lockctl run` driven like flock(1), against a real cluster.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{Cluster, ClusterOptions};

fn lockctl(cluster: &Cluster) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lockctl"));
    cluster.lockctl_env(&mut command);
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

/// A fenced resource over TCP: `WRITE <token>` is accepted (`OK`) only if the
/// token is at least the highest accepted so far, else `STALE`.
async fn fenced_oracle() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<(u64, bool)>>>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, bool)>::new()));
    let shared = log.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let log = shared.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let Some(token) = line
                        .strip_prefix("WRITE ")
                        .and_then(|t| t.trim().parse::<u64>().ok())
                    else {
                        continue;
                    };
                    let accepted = {
                        let mut log = log.lock().unwrap();
                        let highest = log
                            .iter()
                            .filter(|(_, ok)| *ok)
                            .map(|(t, _)| *t)
                            .max()
                            .unwrap_or(0);
                        let ok = token >= highest;
                        log.push((token, ok));
                        ok
                    };
                    let _ = write
                        .write_all(if accepted { b"OK\n" } else { b"STALE\n" })
                        .await;
                }
            });
        }
    });
    (addr, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_paused_past_its_ttl_has_its_stale_writes_rejected_and_is_stopped()
-> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let (oracle, log) = fenced_oracle().await;
    let dir = tempfile::tempdir()?;
    let child_pid = dir.path().join("child.pid");
    // The holder writes its token to the fenced resource every 100 ms.
    let mut holder = lockctl(&cluster);
    holder
        .args(["run", "fenced/res", "--ttl", "2s", "--grace", "2s", "--", "bash", "-c"])
        .arg(format!(
            "echo $$ > {}; exec 3<>/dev/tcp/{}/{}; while true; do echo \"WRITE $GLOBALLOCK_FENCING_TOKEN\" >&3; read -r reply <&3; sleep 0.1; done",
            child_pid.display(),
            oracle.ip(),
            oracle.port()
        ))
        .stderr(Stdio::piped());
    let holder = holder.spawn()?;
    let holder_pid = holder.id();
    let child: i32 = harness::eventually(Duration::from_secs(10), "the holder writes", || {
        let child_pid = child_pid.clone();
        let log = log.clone();
        async move {
            let pid = std::fs::read_to_string(&child_pid)
                .ok()?
                .trim()
                .parse()
                .ok()?;
            (!log.lock().unwrap().is_empty()).then_some(pid)
        }
    })
    .await;
    let old_token = log.lock().unwrap()[0].0;

    // Pause the holder (lockctl and its command) for longer than the TTL.
    let signal = |sig: &str, pid: i32| {
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
    };
    signal("-STOP", i32::try_from(holder_pid)?);
    signal("-STOP", child);
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Meanwhile another client takes the lock and writes with its newer token.
    let mut next = lockctl(&cluster);
    next.args(["run", "fenced/res", "--wait", "10s", "--", "bash", "-c"]).arg(format!(
        "exec 3<>/dev/tcp/{}/{}; echo \"WRITE $GLOBALLOCK_FENCING_TOKEN\" >&3; read -r reply <&3; echo $reply",
        oracle.ip(),
        oracle.port()
    ));
    let out = output(next).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");

    // The paused holder's command wakes up first (its watchdog is slower): its
    // next write carries the old token and is rejected. Then lockctl wakes, finds
    // the lock gone and stops the command.
    signal("-CONT", child);
    harness::eventually(Duration::from_secs(10), "the stale write", || {
        let log = log.clone();
        async move {
            log.lock()
                .unwrap()
                .iter()
                .any(|(t, ok)| *t == old_token && !ok)
                .then_some(())
        }
    })
    .await;
    signal("-CONT", i32::try_from(holder_pid)?);
    let out = tokio::task::spawn_blocking(move || holder.wait_with_output()).await??;
    assert_eq!(
        out.status.code(),
        Some(79),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = log.lock().unwrap().clone();
    let newest = log
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(t, _)| *t)
        .max()
        .unwrap();
    assert!(newest > old_token);
    assert!(
        log.iter().any(|(t, ok)| *t == old_token && !ok),
        "the stale holder's write after the pause must be rejected: {log:?}"
    );
    // The oracle never accepted a token lower than one it had accepted.
    let mut highest = 0;
    for (token, ok) in &log {
        if *ok {
            assert!(*token >= highest);
            highest = *token;
        }
    }
    Ok(())
}

/// True once `pid` no longer runs: `kill -0` fails, or it is a zombie waiting for
/// init to reap it (dead: it cannot act any more).
fn gone(pid: i32) -> bool {
    let signalable = Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            Some(rest.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(false);
    !signalable || zombie
}

/// Kills a process the test started indirectly if the test fails before it is
/// gone (a command that outlived lockctl must not outlive the test).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process that is killed (and reaped) if the test fails while it runs.
struct Supervised(Option<std::process::Child>);

impl Supervised {
    fn get(&mut self) -> &mut std::process::Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn read_pid(path: &std::path::Path) -> i32 {
    harness::eventually(Duration::from_secs(10), "the command wrote its pid", || {
        let path = path.to_path_buf();
        async move { std::fs::read_to_string(&path).ok()?.trim().parse().ok() }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_lockctl_kills_the_command_before_another_owner_gets_the_lock()
-> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let pid_file = dir.path().join("command.pid");
    let mut run = lockctl(&cluster);
    run.args(["run", "orphan/res", "--ttl", "3s", "--", "sh", "-c"])
        .arg(format!(
            "echo $$ > {}; while true; do sleep 0.1; done",
            pid_file.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut supervisor = run.spawn()?;
    let command = read_pid(&pid_file).await;
    let _cleanup = KillOnDrop(command);

    // SIGKILL: lockctl can neither release the lock nor stop the command itself.
    supervisor.kill()?;
    supervisor.wait()?;

    // Another owner keeps trying; the lock frees when its TTL runs out. Whenever
    // it gets the lock, the command must already be gone.
    let acquired = harness::eventually(
        Duration::from_secs(20),
        "another owner acquires after the TTL",
        || {
            let cluster = &cluster;
            async move {
                let mut acquire = lockctl(cluster);
                acquire.args([
                    "acquire",
                    "orphan/res",
                    "--owner",
                    "next",
                    "--ttl",
                    "5s",
                    "-o",
                    "json",
                ]);
                let out = output(acquire).await;
                out.status.success().then(|| gone(command))
            }
        },
    )
    .await;
    assert!(
        acquired,
        "another owner acquired the lock while the command {command} still ran"
    );
    // And it is gone for good (polled: the kernel's SIGKILL, then init's reaping).
    harness::eventually(
        Duration::from_secs(10),
        "the command is gone",
        || async move { gone(command).then_some(()) },
    )
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_interrupt_stops_a_command_that_ignores_sigint_and_sigterm() -> anyhow::Result<()>
{
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let pid_file = dir.path().join("command.pid");
    let mut run = lockctl(&cluster);
    run.args([
        "run",
        "stubborn/int",
        "--ttl",
        "5s",
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
    ])
    .arg(format!(
        "trap '' INT TERM; echo $$ > {}; while true; do sleep 0.1; done",
        pid_file.display()
    ))
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut supervisor = Supervised(Some(run.spawn()?));
    let supervisor_pid = supervisor.get().id().to_string();
    let command = read_pid(&pid_file).await;
    let _cleanup = KillOnDrop(command);
    let interrupt = || {
        Command::new("kill")
            .args(["-INT", &supervisor_pid])
            .status()
            .unwrap()
    };

    // The first Ctrl-C is passed on; the command ignores it and keeps the lock.
    interrupt();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        supervisor.get().try_wait()?.is_none(),
        "one Ctrl-C only passes it on"
    );
    assert!(!gone(command));

    // The second: SIGTERM (ignored too), then SIGKILL after --grace.
    interrupt();
    let status = harness::eventually(Duration::from_secs(15), "lockctl exits", || {
        let status = supervisor.get().try_wait().unwrap();
        async move { status }
    })
    .await;
    assert_eq!(status.code(), Some(128 + 9), "the command was killed");
    harness::eventually(
        Duration::from_secs(10),
        "the command is gone",
        || async move { gone(command).then_some(()) },
    )
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut supervisor.get().stderr.take().unwrap(), &mut stderr)?;
    assert!(stderr.contains("SIGKILL"), "{stderr}");

    // And the lock was released.
    let mut describe = lockctl(&cluster);
    describe.args(["describe", "stubborn/int", "--output", "json"]);
    let out = output(describe).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"held\":false"),
        "{out:?}"
    );
    Ok(())
}
