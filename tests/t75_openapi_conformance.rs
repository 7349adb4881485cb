//! The REST API against its own OpenAPI document: schemathesis (property-based,
//! from PyPI; `make deps` installs it) generates valid and invalid requests for
//! every operation of the live cluster's `/openapi.json` and checks that no
//! response is a 5xx and every response matches the document (status codes,
//! content types, headers, bodies).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use harness::{Cluster, ClusterOptions};

/// Fixed seed: the same requests every run (change it to explore).
const SEED: &str = "20261126";
/// Examples per operation and phase.
const EXAMPLES: &str = "25";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_and_no_schema_violations() -> anyhow::Result<()> {
    // Short waits, so generated wait_ms values never stall the run.
    let cluster = Cluster::start(ClusterOptions {
        max_wait_ms: 1_000,
        ..ClusterOptions::default()
    })
    .await?;
    // Over TLS, as the cluster's client identity (the harness runs TLS).
    let url = format!(
        "{}://{}/openapi.json",
        cluster.scheme(),
        cluster.rest_addrs[0]
    );
    let tls_args: Vec<std::ffi::OsString> = match &cluster.tls {
        Some(tls) => vec![
            "--tls-verify".into(),
            tls.ca.clone().into(),
            "--request-cert".into(),
            tls.client.cert.clone().into(),
            "--request-cert-key".into(),
            tls.client.key.clone().into(),
        ],
        None => Vec::new(),
    };
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis/schemathesis.toml");
    let report = cluster.dir().join("schemathesis.txt");

    let run = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-m", "schemathesis.cli", "--config-file"])
            .arg(&config)
            .args([
                "run",
                &url,
                "--checks",
                "all",
                "--max-examples",
                EXAMPLES,
                "--seed",
                SEED,
                "--workers",
                "1",
            ])
            .args(&tls_args)
            .args(["--output-sanitize", "false", "--no-color"])
            .output()
    })
    .await?;
    let output = match run {
        Ok(output) => output,
        Err(error) => panic!(
            "cannot run schemathesis ({error}); install it with: python3 -m pip install 'schemathesis>=4.32,<5' (make deps does)"
        ),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&report, &text)?;
    assert!(
        !text.contains("No module named"),
        "schemathesis is not installed: python3 -m pip install 'schemathesis>=4.32,<5' (make deps does)\n{text}"
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}"
    );
    assert!(
        text.contains("Tested: 12"),
        "every operation must be exercised:\n{text}"
    );
    // Shown with --nocapture: what was generated and checked.
    let summary = text
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("{summary}");
    Ok(())
}
