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
  deps            the dependency direction alone: core, proto, service and cluster know no I/O crate
  crash           SIGKILL runs: the store crash test (50 kills), failover (20 coordinator kills), partitions (20 holder kills)
  soak            every memory limit driven past itself with real connections, peak RSS checked
                  against its bound; the figures go into bench/report.md
  bench [--quick] end-to-end scenarios through the release binary, checked for correctness,
                  written to bench/report.md (--quick: small inputs, a smoke check of every
                  scenario for CI, written to target/bench-quick/; --only pipe | apparatus:
                  that scenario alone, its section replaced in the report; --peers: the pipe
                  scenario adds DuckDB, Polars and Bytewax, pip-installed into
                  target/bench-peers-venv, skipped with a note when that fails)";

/// `bench`'s flags: `None` for `--help`; an unknown flag is an error, never ignored (a full
/// run takes ten minutes and rewrites the report).
fn bench_args(args: &[String]) -> anyhow::Result<Option<(bool, Option<&str>, bench::Peers)>> {
    let (mut quick, mut only, mut peers) = (false, None, bench::Peers::Skip);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => quick = true,
            "--peers" => peers = bench::Peers::Run,
            "--only" => match args.next() {
                Some(name) => only = Some(name.as_str()),
                None => bail!("--only needs a scenario name (pipe or apparatus)\n\n{USAGE}"),
            },
            other => bail!("unknown flag {other:?} for bench\n\n{USAGE}"),
        }
    }
    Ok(Some((quick, only, peers)))
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("deps") => check_core_dependencies(),
        Some("crash") => crash::run(),
        Some("soak") => crash::soak(),
        Some("bench") => match bench_args(&args[1..]) {
            Ok(None) => {
                eprintln!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Ok(Some((quick, only, peers))) => bench::run(quick, only, peers),
            Err(e) => Err(e),
        },
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

/// The crates below the binary stay free of I/O: the core knows no JSON either; the wire
/// crate, the sans-I/O service and the cluster decisions know no runtime, store backend or clock;
/// the client knows the wire and nothing of the daemon's insides.
fn check_core_dependencies() -> anyhow::Result<()> {
    const IO: [&str; 5] = ["tokio", "sled", "redis", "tracing", "chrono"];
    check_dependencies("window-core", &[&IO[..], &["serde_json"]].concat())?;
    check_dependencies("window-proto", &IO)?;
    check_dependencies("window-service", &IO)?;
    check_dependencies("window-cluster", &IO)?;
    // The client speaks the wire only: no store, no service, no engine state of its own.
    check_dependencies(
        "window-client",
        &[
            "window-store",
            "window-service",
            "window-cluster",
            "sled",
            "redis",
        ],
    )?;
    Ok(())
}

/// Fails when `package`'s normal dependency tree holds a crate named in `forbidden`.
fn check_dependencies(package: &str, forbidden: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(cargo_bin())
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none"])
        .output()
        .context("running cargo tree")?;
    if !output.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&output.stdout);
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if forbidden.contains(&name) {
            bail!("{package} depends on {name}: it must stay free of I/O (see ARCHITECTURE.md)");
        }
    }
    eprintln!(
        "xtask: {package} depends on none of {}",
        forbidden.join(", ")
    );
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
