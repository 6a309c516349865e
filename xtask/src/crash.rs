//! `cargo xtask crash`: the long crash runs. The normal test run does a handful of SIGKILL
//! cycles; this does many, with an optimized build so each cycle ingests more.

/// Kill cycles of the store crash test.
const CYCLES: u32 = 50;

pub fn run() -> anyhow::Result<()> {
    // The test binary reads the cycle count from its environment.
    let cycles = CYCLES.to_string();
    crate::cargo_with_env(
        &["test", "--release", "-p", "window-store", "--test", "crash"],
        &[("CRASH_CYCLES", cycles.as_str())],
    )
}
