//! `devcluster` (what `make dev` runs) on other ports and another data directory:
//! what it prints follows its flags (the `try:` lines name the coordinator it
//! started), the Prometheus config it writes scrapes its own targets file, and the
//! logs under its data directory are plain text. The cluster runs as a child
//! process with its output in a file; it is stopped by pid (SIGTERM, then SIGKILL),
//! and killed on drop or if this test process dies (`PR_SET_PDEATHSIG`).
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`; `make test`
//! builds them first).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use globallock_localcluster::{ManagedProcess, free_port};

/// What devcluster prints last once everything is up.
const READY: &str = "Ctrl-C stops everything.";

fn wait_for_output(devcluster: &mut ManagedProcess, out: &Path, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let printed = std::fs::read_to_string(out).unwrap_or_default();
        if printed.contains(READY) {
            return printed;
        }
        assert!(
            devcluster.is_running(),
            "devcluster exited before it was ready:\n{printed}"
        );
        assert!(
            Instant::now() < deadline,
            "devcluster not ready within {within:?}:\n{printed}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every file below `dir` whose name ends with `.log`.
fn logs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(logs(&path));
        } else if path.extension().is_some_and(|e| e == "log") {
            out.push(path);
        }
    }
    out
}

#[test]
fn other_ports_and_data_dir_are_what_it_prints_and_what_prometheus_scrapes() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("another-cluster");
    let (grpc, rest, metrics) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let out = dir.path().join("devcluster.out");
    let mut command = Command::new(env!("CARGO_BIN_EXE_devcluster"));
    command
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--shards", "1"])
        .args(["--listen", &format!("127.0.0.1:{grpc}")])
        .args(["--rest-listen", &format!("127.0.0.1:{rest}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        // The default log format, whatever the caller's environment says.
        .env_remove("GLOBALLOCK_LOG_FORMAT")
        .env_remove("NO_COLOR");
    let mut devcluster = ManagedProcess::spawn("devcluster", command, &out).unwrap();
    let printed = wait_for_output(&mut devcluster, &out, Duration::from_secs(90));
    let data_dir = data_dir.canonicalize().unwrap();

    // The try: lines reach the coordinator that was started, not the default one,
    // over TLS with the dev CA of this data directory.
    let endpoint = format!(
        "--endpoint https://127.0.0.1:{grpc} --dev-dir {}",
        data_dir.display()
    );
    for command in [
        "lockctl acquire orders/42 --ttl 30s",
        "lockctl describe orders/42",
    ] {
        let line = printed
            .lines()
            .find(|l| l.contains(command))
            .unwrap_or_else(|| panic!("no try: line with {command:?}:\n{printed}"));
        assert!(
            line.contains(&endpoint),
            "{line:?} must name {endpoint}:\n{printed}"
        );
    }
    let tls = data_dir.join("tls");
    assert!(
        printed.contains(&format!(
            "curl -s --cacert {} --cert {} --key {} -XPOST https://127.0.0.1:{rest}/locks",
            tls.join("dev-ca.pem").display(),
            tls.join("client.pem").display(),
            tls.join("client.key").display()
        )),
        "{printed}"
    );
    // The acquire line works as printed.
    let line = printed
        .lines()
        .find(|l| l.contains("lockctl acquire orders/42"))
        .unwrap();
    let args: Vec<&str> = line
        .split_whitespace()
        .skip_while(|w| !w.ends_with("lockctl"))
        .skip(1)
        .collect();
    let lockctl = globallock_localcluster::processes::find_binary("lockctl").unwrap();
    let acquired = Command::new(lockctl).args(&args).output().unwrap();
    assert!(
        acquired.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&acquired.stdout),
        String::from_utf8_lossy(&acquired.stderr)
    );
    assert!(
        String::from_utf8_lossy(&acquired.stdout).contains("fencing_token"),
        "{acquired:?}"
    );

    // Prometheus: a config in the data directory, scraping this cluster's targets
    // file, and the command that starts Prometheus with it.
    let config_path = data_dir.join("prometheus.yml");
    let config = std::fs::read_to_string(&config_path)
        .unwrap_or_else(|e| panic!("{}: {e}\n{printed}", config_path.display()));
    let targets_path = data_dir.join("prometheus-targets.json");
    assert!(
        config.contains(&targets_path.display().to_string()),
        "{config}"
    );
    assert!(!config.contains(".dev-cluster"), "{config}");
    assert!(
        printed.contains(&format!(
            "prometheus --config.file={}",
            config_path.display()
        )),
        "{printed}"
    );
    let targets = std::fs::read_to_string(&targets_path).unwrap();
    assert!(
        targets.contains(&format!("127.0.0.1:{metrics}")),
        "{targets}"
    );
    let checked = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config_path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's prometheus package (make deps does)"
            )
        });
    assert!(
        checked.status.success(),
        "promtool check config {}:\n{}{}",
        config_path.display(),
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Logs written to files are plain text: no ANSI colour codes.
    let logs = logs(&data_dir);
    assert!(
        logs.iter()
            .any(|l| l.file_name().unwrap() == "coordinator.log"),
        "{logs:?}"
    );
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            !text.contains('\u{1b}'),
            "{} has ANSI escape codes:\n{text}",
            log.display()
        );
    }
    let coordinator_log = std::fs::read_to_string(data_dir.join("coordinator.log")).unwrap();
    assert!(
        coordinator_log.contains(" INFO "),
        "plain text lines with their level:\n{coordinator_log}"
    );

    devcluster.terminate(Duration::from_secs(30));
    let printed = std::fs::read_to_string(&out).unwrap();
    assert!(printed.contains("stopped;"), "{printed}");
}
