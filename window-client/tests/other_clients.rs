//! The TypeScript and Python clients' own suites (`clients/typescript`: `npm test`;
//! `clients/python`: pytest), run from here so that `cargo test --workspace` runs every test of
//! the project. Each suite starts real `window-node serve` processes: the binary cargo built,
//! passed as `WINDOW_NODE_BIN`. Without Node.js or pytest a suite says so loudly and is skipped,
//! except under CI (`CI` set), where it fails: `.ci/run` installs what they need.

use std::path::{Path, PathBuf};
use std::process::Command;

use window_testkit::window_node_binary;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// Whether `program --version` runs.
fn available(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Skips (loudly) when `what` is missing, unless this is CI.
fn require(present: bool, what: &str, install: &str) -> bool {
    if present {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is missing, and CI must run this suite: {install}"
    );
    eprintln!("\n*** SKIPPING the {what} suite: install it with {install} ***\n");
    false
}

/// One suite at a time: each starts daemons and measures nothing, but two at once on a small
/// machine make their waits long.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(command: &mut Command, what: &str) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let status = command
        .env("WINDOW_NODE_BIN", window_node_binary())
        .status()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(status.success(), "{what} failed ({status})");
}

#[test]
fn the_typescript_client_suite_passes() {
    let dir = repo().join("clients/typescript");
    if !require(
        available("npm", &["--version"]),
        "Node.js (npm)",
        "apt-get install -y nodejs npm (Node 20+)",
    ) {
        return;
    }
    if !dir.join("node_modules").exists() {
        run(Command::new("npm").arg("ci").current_dir(&dir), "npm ci");
    }
    run(
        Command::new("npm").arg("test").current_dir(&dir),
        "the TypeScript client's npm test",
    );
}

#[test]
fn the_python_client_suite_passes() {
    let dir = repo().join("clients/python");
    if !require(
        available("python3", &["-c", "import pytest"]),
        "Python pytest",
        "python3 -m pip install pytest",
    ) {
        return;
    }
    run(
        Command::new("python3")
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(&dir),
        "the Python client's pytest",
    );
}
