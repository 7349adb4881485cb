//! The deploy files are valid: Prometheus config, alert rules and their unit tests
//! (promtool, from Debian's `prometheus` package), Grafana dashboards (JSON with the
//! panels the README names).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's prometheus package (make deps does)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn prometheus_config_and_rules_are_valid_and_their_unit_tests_pass() {
    assert!(promtool(&["check", "config", "prometheus.yml"]).contains("SUCCESS"));
    assert!(promtool(&["check", "rules", "alerts.yml"]).contains("7 rules found"));
    assert!(promtool(&["test", "rules", "alerts_test.yml"]).contains("SUCCESS"));
}

#[test]
fn every_alert_has_a_unit_test() {
    let rules = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy().join("prometheus/alerts_test.yml")).unwrap();
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "alert {line} has no promtool unit test"
        );
    }
}

#[test]
fn dashboards_are_valid_grafana_json() {
    let dir = deploy().join("grafana/dashboards");
    let mut titles = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(!panels.is_empty(), "{}", path.display());
        for panel in panels {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                assert!(expr.contains("globallock_"), "{}: {expr}", path.display());
            }
        }
        titles.push(dashboard["title"].as_str().unwrap().to_owned());
    }
    titles.sort();
    assert_eq!(
        titles,
        [
            "Global locks: contention",
            "Global locks: operations overview",
            "Global locks: system health per region"
        ]
    );
}
