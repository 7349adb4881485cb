//! The promises of README's lockctl sections, against the real binary (and a
//! real cluster where the service takes part).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{Cluster, ClusterOptions};
use serde_json::Value;

fn bare_lockctl() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lockctl"));
    command.env_remove("GLOBALLOCK_ENDPOINT");
    command.env_remove("GLOBALLOCK_OWNER");
    command
}

fn lockctl(cluster: &Cluster) -> Command {
    let mut command = bare_lockctl();
    cluster.lockctl_env(&mut command);
    command
}

async fn output(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn stdout_json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON value ({e}): {:?} / stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A local port nothing listens on.
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn usage_errors_exit_64_and_help_and_version_exit_0() {
    for (line, expect) in [
        (&["aquire", "x"][..], "unrecognized subcommand"),
        (&["acquire", "x", "--tll", "5s"], "--tll"),
        (&["acquire"], "<RESOURCE>"),
        (&["acquire", "x", "--ttl", "5parsecs"], "unknown unit"),
        (&["acquire", "x", "--ttl", "10"], "add a unit, e.g. 10s"),
        (&["run", "x", "--grace", "1m30"], "add a unit"),
        (&[], "Usage"),
    ] {
        let mut command = bare_lockctl();
        command.args(line);
        let out = output(command).await;
        assert_eq!(out.status.code(), Some(64), "{line:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{line:?}: {}", stderr(&out));
    }
    for line in [
        &["--help"][..],
        &["--version"],
        &["acquire", "--help"],
        &["help", "run"],
    ] {
        let mut command = bare_lockctl();
        command.args(line);
        let out = output(command).await;
        assert_eq!(out.status.code(), Some(0), "{line:?}: {}", stderr(&out));
        assert!(!out.stdout.is_empty(), "{line:?}");
    }
    // --help says what a duration is, and that a bare number is refused.
    let mut help = bare_lockctl();
    help.args(["acquire", "--help"]);
    let text = String::from_utf8_lossy(&output(help).await.stdout).into_owned();
    assert!(
        text.contains("1m30s") && text.contains("bare number"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_audit_log_exits_66_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-audit.jsonl");
    let present = dir.path().join("audit.jsonl");
    std::fs::write(&present, "").unwrap();
    let mut audit = bare_lockctl();
    audit
        .args(["audit", "orders/42", "--log"])
        .arg(&present)
        .arg("--log")
        .arg(&missing);
    let out = output(audit).await;
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );

    let mut json = bare_lockctl();
    json.args(["audit", "orders/42", "-o", "json", "--log"])
        .arg(&missing);
    let out = output(json).await;
    assert_eq!(out.status.code(), Some(66));
    let error = &stdout_json(&out)["error"];
    assert_eq!(error["kind"], "audit-log-unreadable");
    assert_eq!(error["exit_code"], 66);
    assert_eq!(error["path"], missing.display().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_with_the_default_owner_returns_the_same_lock() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut locks = Vec::new();
    for _ in 0..2 {
        let mut acquire = lockctl(&cluster);
        acquire.args(["acquire", "idem/1", "--request-id", "job-1", "-o", "json"]);
        let out = output(acquire).await;
        assert!(out.status.success(), "{}", stderr(&out));
        locks.push(stdout_json(&out));
    }
    assert_eq!(locks[0]["lock_id"], locks[1]["lock_id"]);
    assert_eq!(locks[0]["fencing_token"], locks[1]["fencing_token"]);
    assert_eq!(locks[0]["owner"], locks[1]["owner"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_have_one_humantime_syntax() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    for (i, (ttl, ttl_ms)) in [("1.5s", 1_500), ("10S", 10_000), ("1m30s", 90_000)]
        .into_iter()
        .enumerate()
    {
        let mut acquire = lockctl(&cluster);
        acquire.args([
            "acquire",
            &format!("durations/{i}"),
            "--ttl",
            ttl,
            "--wait",
            "1.5s",
            "-o",
            "json",
        ]);
        let out = output(acquire).await;
        assert!(out.status.success(), "--ttl {ttl}: {}", stderr(&out));
        assert_eq!(stdout_json(&out)["ttl_ms"], ttl_ms, "--ttl {ttl}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_reports_what_the_coordinator_says_is_in_force() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut acquire = lockctl(&cluster);
    acquire.args(["acquire", "renew/1", "--ttl", "30s", "-o", "json"]);
    let out = output(acquire).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lock = stdout_json(&out);
    let lock_id = lock["lock_id"].as_str().unwrap().to_owned();

    let mut renew = lockctl(&cluster);
    renew.args(["renew", &lock_id, "--ttl", "5s", "-o", "json"]);
    let out = output(renew).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let renewed = stdout_json(&out);
    assert_eq!(renewed["lock_id"], lock_id.as_str());
    assert_eq!(renewed["fencing_token"], lock["fencing_token"]);
    let validity = renewed["validity_ms"].as_u64().unwrap();
    assert!(validity > 0 && validity <= 5_000, "{renewed}");
    // Renewal never shortens: the lock stays held about 30 s, and the CLI says so.
    let expires = renewed["expires_in_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("renew must report how long the lock stays held: {renewed}"));
    assert!(expires > 20_000, "{renewed}");
    let mut describe = lockctl(&cluster);
    describe.args(["describe", "renew/1", "-o", "json"]);
    let described = stdout_json(&output(describe).await);
    assert!(
        described["expires_in_ms"].as_u64().unwrap() > 20_000,
        "{described}"
    );

    // In text, a note says so too.
    let mut renew = lockctl(&cluster);
    renew.args(["renew", &lock_id, "--ttl", "5s"]);
    let out = output(renew).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("never shortens"), "{}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_say_what_is_wrong_and_what_to_do() -> anyhow::Result<()> {
    // Plaintext on purpose: what lockctl says about plaintext endpoints (the
    // REST port given as gRPC, nothing listening, failing over).
    let cluster = Cluster::start(ClusterOptions {
        tls: false,
        ..ClusterOptions::default()
    })
    .await?;
    let grpc = cluster.coordinator_addrs[0];

    // No scheme: a usage error that shows the URL to write.
    let mut no_scheme = bare_lockctl();
    no_scheme.args(["describe", "x", "--endpoint", &grpc.to_string()]);
    let out = output(no_scheme).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("http://{grpc}")),
        "{}",
        stderr(&out)
    );

    // The REST port given as the gRPC endpoint.
    let rest = format!("http://{}", cluster.rest_addrs[0]);
    let mut wrong_port = bare_lockctl();
    wrong_port.args(["describe", "x", "--endpoint", &rest]);
    let out = output(wrong_port).await;
    assert_eq!(out.status.code(), Some(76), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("REST port") && text.contains("7400"),
        "{text}"
    );
    assert!(!text.contains("compression flag"), "{text}");

    // Nothing listening: name the endpoint and what to check.
    let refused = format!("http://127.0.0.1:{}", refused_port());
    let mut down = bare_lockctl();
    down.args(["describe", "x", "--endpoint", &refused]);
    let out = output(down).await;
    assert_eq!(out.status.code(), Some(76), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains(&refused) && text.contains("refused") && text.contains("make dev"),
        "{text}"
    );

    // Failing over past a dead endpoint still works.
    let mut failover = bare_lockctl();
    failover.args([
        "describe",
        "x",
        "--endpoint",
        &format!("{refused},http://{grpc}"),
    ]);
    let out = output(failover).await;
    assert!(out.status.success(), "{}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_on_stdout_with_output_json() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut first = lockctl(&cluster);
    first.args(["acquire", "json/held", "--owner", "alice", "--ttl", "30s"]);
    assert!(output(first).await.status.success());

    let mut second = lockctl(&cluster);
    second.args(["acquire", "json/held", "--owner", "bob", "-o", "json"]);
    let out = output(second).await;
    assert_eq!(out.status.code(), Some(75));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    let error = &stdout_json(&out)["error"];
    assert_eq!(error["kind"], "held");
    assert_eq!(error["exit_code"], 75);
    assert_eq!(error["holder"], "alice");
    assert!(error["retry_after_ms"].as_u64().unwrap() > 0, "{error}");
    assert!(error["message"].as_str().unwrap().contains("alice"));

    // Not held: exit 1.
    let mut renew = lockctl(&cluster);
    renew.args([
        "renew",
        "0123456789abcdef0123456789abcdef.anNvbi9ub25l",
        "-o",
        "json",
    ]);
    let out = output(renew).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["error"]["kind"], "not-held");

    // A usage error.
    let mut usage = lockctl(&cluster);
    usage.args(["acquire", "--output", "json", "--ttl", "10"]);
    let out = output(usage).await;
    assert_eq!(out.status.code(), Some(64));
    let error = &stdout_json(&out)["error"];
    assert_eq!(error["kind"], "usage");
    assert_eq!(error["exit_code"], 64);

    // No coordinator.
    let refused = format!("http://127.0.0.1:{}", refused_port());
    let mut down = bare_lockctl();
    down.args(["describe", "x", "-o", "json", "--endpoint", &refused]);
    let out = output(down).await;
    assert_eq!(out.status.code(), Some(76));
    let error = &stdout_json(&out)["error"];
    assert_eq!(error["kind"], "unreachable");
    assert_eq!(error["endpoints"][0]["endpoint"], refused.as_str());
    assert_eq!(error["endpoints"][0]["problem"], "refused");
    Ok(())
}

/// A child process that is killed (and reaped) if the test fails while it runs.
struct Supervised(Option<std::process::Child>);

impl Supervised {
    fn get(&mut self) -> &mut std::process::Child {
        self.0.as_mut().unwrap()
    }

    fn take(&mut self) -> std::process::Child {
        self.0.take().unwrap()
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

async fn describe_json(cluster: &Cluster, resource: &str) -> Value {
    let mut describe = lockctl(cluster);
    describe.args(["describe", resource, "-o", "json"]);
    let out = output(describe).await;
    assert!(out.status.success(), "{}", stderr(&out));
    stdout_json(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_holds_until_a_signal_then_releases() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut previous_token = 0;
    for (signal, output_format) in [("-TERM", "json"), ("-INT", "text")] {
        let mut lock = lockctl(&cluster);
        lock.args(["lock", "held/by-lock", "--ttl", "2s", "-o", output_format])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut holder = Supervised(Some(lock.spawn()?));
        let stdout = holder.get().stdout.take().unwrap();
        // The lock id and token are printed as soon as the lock is held.
        let printed = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            if output_format == "json" {
                let value: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
                (
                    value["lock_id"].as_str().unwrap().to_owned(),
                    value["fencing_token"].as_u64().unwrap(),
                )
            } else {
                let mut lock_id = String::new();
                let mut token = 0;
                for line in lines {
                    let line = line.unwrap();
                    let (key, value) = line.split_once(' ').unwrap();
                    match key {
                        "lock_id" => lock_id = value.trim().to_owned(),
                        "fencing_token" => token = value.trim().parse().unwrap(),
                        _ => {}
                    }
                    if key == "validity_ms" {
                        break;
                    }
                }
                (lock_id, token)
            }
        });
        let (lock_id, token) = tokio::time::timeout(Duration::from_secs(20), printed).await??;
        assert!(token > previous_token);
        previous_token = token;

        // Renewed past its TTL.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let described = describe_json(&cluster, "held/by-lock").await;
        assert_eq!(described["held"], true, "{described}");
        assert_eq!(described["lock_id"], lock_id.as_str());

        Command::new("kill")
            .args([signal, &holder.get().id().to_string()])
            .status()?;
        let holder = holder.take();
        let out = tokio::task::spawn_blocking(move || holder.wait_with_output()).await??;
        assert_eq!(out.status.code(), Some(0), "{signal}: {}", stderr(&out));
        // Released at once, not left to expire.
        let described = describe_json(&cluster, "held/by-lock").await;
        assert_eq!(described["held"], false, "{signal}: {described}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_the_locks_held_under_a_prefix_as_a_table_or_json() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut acquired = Vec::new();
    for (resource, owner) in [
        ("cli/b", "bob"),
        ("cli/a", "alice"),
        ("cli/c", "carol"),
        ("other/x", "xavier"),
    ] {
        let mut acquire = lockctl(&cluster);
        acquire.args(["acquire", resource, "--owner", owner, "-o", "json"]);
        let out = output(acquire).await;
        assert!(out.status.success(), "{}", stderr(&out));
        acquired.push(stdout_json(&out));
    }

    // JSON: every lock under the prefix, in resource order, without lock ids.
    let mut list = lockctl(&cluster);
    list.args(["list", "cli/", "-o", "json"]);
    let out = output(list).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout_json(&out);
    let locks = listed["locks"].as_array().unwrap();
    let names: Vec<&str> = locks
        .iter()
        .map(|l| l["resource"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cli/a", "cli/b", "cli/c"], "{listed}");
    assert_eq!(locks[0]["owner"], "alice");
    assert_eq!(locks[0]["fencing_token"], acquired[1]["fencing_token"]);
    assert!(
        locks[0]["expires_in_ms"].as_u64().unwrap() > 20_000,
        "{listed}"
    );
    assert!(locks[0]["granted_regions"].as_array().unwrap().len() >= 2);
    assert!(locks[0].get("lock_id").is_none(), "{listed}");
    assert!(listed.get("next_page_token").is_none(), "{listed}");

    // --limit stops early and prints where to continue; --page-token continues.
    let mut first = lockctl(&cluster);
    first.args(["list", "cli/", "--limit", "2", "-o", "json"]);
    let first = stdout_json(&output(first).await);
    assert_eq!(first["locks"].as_array().unwrap().len(), 2, "{first}");
    let token = first["next_page_token"].as_str().unwrap();
    let mut rest = lockctl(&cluster);
    rest.args(["list", "cli/", "--page-token", token, "-o", "json"]);
    let rest = stdout_json(&output(rest).await);
    assert_eq!(rest["locks"][0]["resource"], "cli/c", "{rest}");
    assert_eq!(rest["locks"].as_array().unwrap().len(), 1, "{rest}");

    // Text: a header of the JSON names, then one aligned row per lock.
    let mut text = lockctl(&cluster);
    text.args(["list", "cli/"]);
    let out = output(text).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("resource")
            && lines[0].contains("owner")
            && lines[0].contains("fencing_token")
            && lines[0].contains("expires_in_ms")
            && lines[0].contains("granted_regions"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("cli/a") && lines[1].contains("alice"),
        "{table}"
    );
    let column = lines[0].find("owner").unwrap();
    assert_eq!(lines[3].find("carol"), Some(column), "aligned: {table}");
    // --limit in text: the rows, and a note on stderr saying how to go on.
    let mut limited = lockctl(&cluster);
    limited.args(["list", "cli/", "--limit", "1"]);
    let out = output(limited).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    assert!(stderr(&out).contains("--page-token"), "{}", stderr(&out));

    // Nothing held there: no rows, a note, exit 0.
    let mut none = lockctl(&cluster);
    none.args(["list", "nothing/"]);
    let out = output(none).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("no locks held"), "{}", stderr(&out));

    // Released: gone from the list.
    let mut release = lockctl(&cluster);
    release.args(["release", acquired[0]["lock_id"].as_str().unwrap()]);
    assert!(output(release).await.status.success());
    let mut list = lockctl(&cluster);
    list.args(["list", "cli/", "-o", "json"]);
    let listed = stdout_json(&output(list).await);
    let names: Vec<&str> = listed["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["resource"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cli/a", "cli/c"], "{listed}");

    // A bad --limit is a usage error; a bad token an invalid argument: both 64.
    let mut zero = lockctl(&cluster);
    zero.args(["list", "--limit", "0"]);
    assert_eq!(output(zero).await.status.code(), Some(64));
    let mut bad = lockctl(&cluster);
    bad.args(["list", "cli/", "--page-token", "not-a-token!", "-o", "json"]);
    let out = output(bad).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let error = &stdout_json(&out)["error"];
    assert_eq!(error["kind"], "invalid-argument", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("page_token"),
        "{error}"
    );
    Ok(())
}
