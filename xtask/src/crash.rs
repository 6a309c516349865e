//! `cargo xtask crash`: the long crash runs. The normal test run does a handful of SIGKILL
//! cycles; this does many, with an optimized build so each cycle ingests more: the store crash
//! test (a child killed 50 times) and the failover tests (the coordinator of three `serve`
//! processes killed 20 times, on one data directory and on one Redis server, plus a Redis holder
//! paused past its lease), and the partitioned test (a holder of some of the partitions of three
//! `serve --partitions` processes killed 20 times).

/// Kill cycles of the store crash test.
const CYCLES: u32 = 50;
/// Coordinator kills of the failover test.
const FAILOVER_KILLS: u32 = 20;

pub fn run() -> anyhow::Result<()> {
    // The test binary reads the cycle count from its environment.
    let cycles = CYCLES.to_string();
    crate::cargo_with_env(
        &["test", "--release", "-p", "window-store", "--test", "crash"],
        &[("CRASH_CYCLES", cycles.as_str())],
    )?;
    let kills = FAILOVER_KILLS.to_string();
    for test in ["failover", "partitions"] {
        node_test(test, &[("FAILOVER_KILLS", kills.as_str())])?;
    }
    Ok(())
}

/// Runs window-node's integration test `test`, optimized and showing its output, with `env`.
fn node_test(test: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
    crate::cargo_with_env(
        &[
            "test",
            "--release",
            "-p",
            "window-node",
            "--test",
            test,
            "--",
            "--nocapture",
        ],
        env,
    )
}

/// How many times the test run's sizes `cargo xtask soak` drives each limit.
const SOAK_SCALE: u32 = 4;

/// `cargo xtask soak`: every memory limit driven past itself (window-node's `soak` test, at
/// `SOAK_SCALE` times its size, optimized), the daemon's peak RSS held to each stated bound; the
/// figures go into `bench/report.md`'s soak section.
pub fn soak() -> anyhow::Result<()> {
    // Absolute: the test runs in the package's directory.
    let target = std::env::current_dir()?.join("target");
    std::fs::create_dir_all(&target)?;
    let report = target.join("soak.md");
    let scale = SOAK_SCALE.to_string();
    let report_path = report.display().to_string();
    node_test(
        "soak",
        &[
            ("SOAK_SCALE", scale.as_str()),
            ("SOAK_REPORT", report_path.as_str()),
        ],
    )?;
    let table = std::fs::read_to_string(&report)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", report.display()))?;
    crate::bench::write_soak_section(&table)
}
