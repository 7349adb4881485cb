//! `bench --smoke` against the debug build: every cell, about a second each,
//! with every peer started and stopped by the harness. Asserts correctness
//! only (no overlapping holders, every system completed a cycle, the results
//! were written), never timings: figures belong in `make bench`'s output.

use std::process::Command;

#[test]
fn every_cell_runs_every_system_without_overlapping_holders() {
    let out = tempfile::tempdir().expect("a temporary directory for the results");
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("the bench binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench --smoke failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    let json =
        std::fs::read_to_string(out.path().join("results.json")).expect("results.json was written");
    let report: serde_json::Value = serde_json::from_str(&json).expect("results.json is JSON");
    assert_eq!(
        report["violations"],
        serde_json::json!([]),
        "{stdout}\n{stderr}"
    );
    let cells = report["cells"].as_array().expect("cells");
    let names: Vec<&str> = cells.iter().filter_map(|c| c["cell"].as_str()).collect();
    assert_eq!(
        names,
        [
            "uncontended-16",
            "uncontended-64",
            "hot-8",
            "hot-64",
            "wan-leader",
            "wan-remote"
        ]
    );
    for cell in cells {
        let systems = cell["systems"].as_array().expect("systems");
        let expected = if cell["cell"].as_str().is_some_and(|c| c.starts_with("wan")) {
            2
        } else {
            4
        };
        assert_eq!(systems.len(), expected, "{cell}");
        for system in systems {
            let label = format!("{} in {}", system["system"], cell["cell"]);
            assert!(
                system["total_cycles"].as_u64().is_some_and(|n| n >= 1),
                "{label} completed no cycle:\n{stdout}\n{stderr}"
            );
            assert_eq!(system["violations"], serde_json::json!([]), "{label}");
            if expected == 4 {
                // CPU per cycle is accounted by role for every system.
                let roles: Vec<&str> = system["cpu_per_cycle"]["roles"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{label} has no CPU per cycle"))
                    .iter()
                    .filter_map(|r| r["role"].as_str())
                    .collect();
                let servers: &[&str] = match system["system"].as_str() {
                    Some("globallock") => &["etcd", "agents", "coordinator"],
                    Some("redlock") => &["redis"],
                    _ => &["etcd"],
                };
                assert_eq!(roles, [servers, &["client"]].concat(), "{label}");
            }
        }
    }

    let svg =
        std::fs::read_to_string(out.path().join("latency.svg")).expect("latency.svg was written");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    for name in names {
        assert!(svg.contains(name), "the chart has a panel for {name}");
    }
}
