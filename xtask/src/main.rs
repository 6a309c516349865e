//! Development tasks, run as `cargo xtask <task>`.
//!
//! - `ci`: the checks CI runs: formatting, clippy with warnings as errors, the dependency
//!   direction of the crates, and every test.
//!
//! xtask shells out to cargo; of the workspace crates it uses `window-testkit` alone (processes,
//! Redis, `/proc`), never a product crate.

use std::env;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

mod bench;
mod crash;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci              cargo fmt --check, clippy -D warnings, dependency direction, all tests
  crash           SIGKILL runs: the store crash test (50 kills), failover (20 coordinator kills), partitions (20 holder kills)
  bench [--quick] end-to-end scenarios through the release binary, checked for correctness,
                  written to bench/report.md (--quick: small inputs, a smoke check of every
                  scenario for CI, written to target/bench-quick/)";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("crash") => crash::run(),
        Some("bench") => bench::run(args.iter().any(|a| a == "--quick")),
        Some("-h" | "--help" | "help") | None => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(anyhow::anyhow!("unknown task {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn ci() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    check_core_dependencies()?;
    cargo(&["test", "--workspace"])?;
    Ok(())
}

/// The core stays free of I/O crates: no tokio, sled, serde_json, redis or tracing.
fn check_core_dependencies() -> anyhow::Result<()> {
    let output = Command::new(cargo_bin())
        .args([
            "tree",
            "-p",
            "window-core",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .context("running cargo tree")?;
    if !output.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&output.stdout);
    let forbidden = ["tokio", "sled", "serde_json", "redis", "tracing"];
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if forbidden.contains(&name) {
            bail!("window-core depends on {name}: the core must stay free of I/O and JSON");
        }
    }
    eprintln!("xtask: window-core depends on no I/O crate");
    Ok(())
}

pub(crate) fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_with_env(args, &[])
}

pub(crate) fn cargo_with_env(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo_bin())
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn cargo_bin() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}
