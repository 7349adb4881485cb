//! A short seeded chaos run inside `make test` (the long soak is `make chaos`):
//! random operations from four clients over three resources while the nemesis
//! partitions links and kills or pauses agents, etcd and coordinators. No
//! violation allowed; the seed is printed (override with GLOBALLOCK_CHAOS_SEED).

use std::time::Duration;

use harness::chaos::{ChaosConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_seeded_chaos_run_finds_no_violation() -> anyhow::Result<()> {
    let seed = std::env::var("GLOBALLOCK_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_126);
    let report = run(ChaosConfig {
        seed,
        duration: Duration::from_secs(25),
        clients: 4,
        resources: 3,
    })
    .await?;
    assert!(report.faults >= 5, "the nemesis did little: {report:?}");
    assert!(
        report.granted >= 10,
        "the clients made little progress: {report:?}"
    );
    assert!(
        report.violations.is_empty(),
        "seed {seed}: {:#?}",
        report.violations
    );
    Ok(())
}
