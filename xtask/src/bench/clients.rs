//! The clients' raw ingest beside loadgen's: the Rust (`clientload`), TypeScript and Python
//! clients each send the same events (ids 0.., 10 keys, a millisecond apart: none late or a
//! duplicate) in 500-event requests, 16 awaited at once, to a fresh `serve --memory` with the
//! daemon rows' windows, and must see every event accepted. The goal (issue 16): each within
//! 20 % of loadgen's `--memory`, 16 in flight figure from the same run (loadgen also reads every
//! fired window on a subscription and sends 1 % retried events, so its figure is the harder).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;
use window_testkit::Node;

use super::{NODE, Outcome};

const CLIENTLOAD: &str = "target/release/clientload";
const TS_DRIVER: &str = "bench/clients/ingest.mjs";
const TS_CLIENT: &str = "clients/typescript/dist/index.js";
const PY_DRIVER: &str = "bench/clients/ingest.py";
const LIMIT: Duration = Duration::from_secs(10 * 60);

/// The rows this scenario adds, and notes for the clients it skipped.
pub(super) fn run(quick: bool, _work: &Path) -> anyhow::Result<(Vec<Outcome>, Vec<String>)> {
    let events = if quick { "50000" } else { "1000000" };
    let shape = ["--events", events, "--batch", "500", "--in-flight", "16"];
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    rows.push(measure(
        "client ingest: Rust (window-client), --memory, 16 in flight",
        Command::new(CLIENTLOAD).args(shape),
    )?);
    let ts_client = std::fs::canonicalize(TS_CLIENT).ok();
    match (Command::new("node").arg("--version").output(), ts_client) {
        (Ok(_), Some(client)) => {
            let mut command = Command::new("node");
            command
                .arg(TS_DRIVER)
                .arg("--client")
                .arg(client)
                .args(shape);
            rows.push(measure(
                "client ingest: TypeScript (window-node-client), --memory, 16 in flight",
                &mut command,
            )?);
        }
        _ => notes.push(
            "Skipped: the TypeScript client's raw ingest (node, or the client's dist/, not found)."
                .to_owned(),
        ),
    }
    match Command::new("python3").arg("--version").output() {
        Ok(_) => {
            let mut command = Command::new("python3");
            command.arg(PY_DRIVER).args(shape);
            rows.push(measure(
                "client ingest: Python (window_node_client), --memory, 16 in flight",
                &mut command,
            )?);
        }
        Err(_) => notes.push("Skipped: the Python client's raw ingest (no python3).".to_owned()),
    }
    Ok((rows, notes))
}

/// Runs one client against a fresh daemon and checks that every event was accepted.
fn measure(name: &str, command: &mut Command) -> anyhow::Result<Outcome> {
    eprintln!("xtask: clients: {name}");
    let args = [
        "--memory",
        "--window-size",
        "1s",
        "--max-events",
        "64",
        "--allowed-lateness",
        "1200s",
    ];
    let node = Node::start(NODE, args).context("starting the daemon")?;
    command.arg("--addr").arg(node.addr.to_string());
    let finished = window_testkit::run(command, &[], LIMIT).with_context(|| name.to_owned())?;
    ensure!(
        finished.status.success(),
        "{name} failed ({}): {}",
        finished.status,
        finished.stderr.trim()
    );
    let stdout = String::from_utf8_lossy(&finished.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let summary: Value =
        serde_json::from_str(line).with_context(|| format!("{name}: its summary {line:?}"))?;
    let events = summary["events"].as_u64().context("events")?;
    ensure!(
        summary["accepted"].as_u64() == Some(events),
        "{name}: not every event was accepted: {summary}"
    );
    let mut note = "the client's own program (bench/clients/, window-bench clientload): 500-event ingest requests, 16 awaited at once, every event accepted; a fresh serve --memory".to_owned();
    // The Python client encodes with orjson when it is installed, with json otherwise.
    if let Some(encoder) = summary["encoder"].as_str() {
        note.push_str(&format!("; JSON through {encoder}"));
    }
    Ok(Outcome {
        name: name.to_owned(),
        events,
        seconds: summary["seconds"].as_f64().context("seconds")?,
        peak_rss_kib: None,
        cpu_seconds: None,
        ack_us: None,
        fire_p99_us: None,
        note,
    })
}

/// The ratios against loadgen (`scenario` finds a row's events/s by its name's start).
pub(super) fn ratio_lines(scenario: &dyn Fn(&str) -> Option<f64>) -> Vec<(String, Option<f64>)> {
    let loadgen = scenario("daemon ingest, --memory, 16 in flight");
    ["Rust", "TypeScript", "Python"]
        .into_iter()
        .map(|client| {
            (
                format!(
                    "daemon ingest, --memory, 16 in flight: the {client} client / loadgen (events/s; goal >= 0.8)"
                ),
                super::ratio(scenario(&format!("client ingest: {client}")), loadgen),
            )
        })
        .collect()
}
