//! A short seeded chaos run inside `make test` (the long soak is `make chaos`):
//! random operations from four clients over three resources while the nemesis
//! partitions links and kills or pauses agents, etcd and coordinators. No
//! violation allowed; the seed is printed (override with GLOBALLOCK_CHAOS_SEED).

use std::time::Duration;

use harness::chaos::{ChaosConfig, run};

/// The default seed, whose 25 s run is documented in docs/safety.md: about 220
/// acquires granted and 12 faults, 0 violations.
const SEED: u64 = 20_261_126;
/// Acquires that seed's 25 s run grants (docs/safety.md).
const BASELINE_GRANTED: usize = 220;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_seeded_chaos_run_finds_no_violation() -> anyhow::Result<()> {
    let seed = std::env::var("GLOBALLOCK_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let report = run(ChaosConfig {
        seed,
        duration: Duration::from_secs(25),
        clients: 4,
        resources: 3,
    })
    .await?;
    // The nemesis did what the schedule says: every planned fault was injected
    // (its kill, pause or link fault took effect) and healed.
    assert_eq!(
        report.nemesis_errors,
        Vec::<String>::new(),
        "seed {seed}: the nemesis failed: {report:?}"
    );
    assert_eq!(
        report.faults, report.planned,
        "seed {seed}: faults injected of those planned: {report:?}"
    );
    // Progress: at least a quarter of the default seed's documented ~220 granted
    // acquires (the same duration and clients; other seeds are held to it too).
    assert!(
        report.granted >= BASELINE_GRANTED / 4,
        "seed {seed}: the clients made little progress ({} acquires granted, the \
         baseline is ~{BASELINE_GRANTED}): {report:?}",
        report.granted
    );
    assert!(
        report.violations.is_empty(),
        "seed {seed}: {:#?}",
        report.violations
    );
    Ok(())
}
