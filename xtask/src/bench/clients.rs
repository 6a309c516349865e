//! The clients' raw ingest beside loadgen's: the Rust (`clientload`), TypeScript and Python
//! clients each send the same events (ids 0.., 10 keys, a millisecond apart: none late or a
//! duplicate) in 500-event requests, 16 awaited at once, to a fresh `serve --memory` with the
//! daemon rows' windows, and must see every event accepted. The goal (issue 16): each within
//! 20 % of loadgen's `--memory`, 16 in flight figure, run again in the same rounds (loadgen also
//! reads every fired window on a subscription and sends 1 % retried events, so its figure is the
//! harder).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;
use window_testkit::Node;

use super::{NODE, Outcome, Rounds};

const CLIENTLOAD: &str = "target/release/clientload";
const TS_DRIVER: &str = "bench/clients/ingest.mjs";
const TS_CLIENT: &str = "clients/typescript/dist/index.js";
const PY_DRIVER: &str = "bench/clients/ingest.py";
const LIMIT: Duration = Duration::from_secs(10 * 60);

/// What the scenario found.
pub(super) struct Clients {
    /// Each client's first round, for the table.
    pub rows: Vec<Outcome>,
    /// The clients it skipped.
    pub notes: Vec<String>,
    /// Events/s of loadgen and of each client in every round, by name.
    pub rounds: Rounds,
}

/// loadgen's row in the clients' rounds (the daemon rows' `--memory`, 16 in flight workload).
const LOADGEN: &str = "clients' rounds: loadgen, --memory, 16 in flight";

/// Three rounds (one with `quick`), each running loadgen's `--memory`, 16 in flight workload
/// and then every client, one after the other: the ratios compare medians of the same rounds,
/// not figures minutes apart on a shared machine.
pub(super) fn run(quick: bool, work: &Path) -> anyhow::Result<Clients> {
    let events = if quick { "50000" } else { "1000000" };
    let shape = ["--events", events, "--batch", "500", "--in-flight", "16"];
    let mut found = Clients {
        rows: Vec::new(),
        notes: Vec::new(),
        rounds: Vec::new(),
    };
    let ts_client = std::fs::canonicalize(TS_CLIENT).ok();
    let node = Command::new("node").arg("--version").output().is_ok();
    let python = Command::new("python3").arg("--version").output().is_ok();
    if !(node && ts_client.is_some()) {
        found.notes.push(
            "Skipped: the TypeScript client's raw ingest (node, or the client's dist/, not found)."
                .to_owned(),
        );
    }
    if !python {
        found
            .notes
            .push("Skipped: the Python client's raw ingest (no python3).".to_owned());
    }
    let loadgen_args: Vec<&str> = ["--serve"]
        .into_iter()
        .chain(super::daemon_workload(events))
        .chain(["--in-flight", "16"])
        .collect();
    for round in 0..if quick { 1 } else { 3 } {
        let summary = super::loadgen(work, LOADGEN, &loadgen_args, &["--memory"])?;
        let outcome = summary.outcome("loadgen beside the clients")?;
        super::record(&mut found.rounds, LOADGEN, outcome.events_per_s());
        let mut clients: Vec<(&str, Command)> = vec![(
            "client ingest: Rust (window-client), --memory, 16 in flight",
            Command::new(CLIENTLOAD),
        )];
        clients[0].1.args(shape);
        if let (true, Some(client)) = (node, &ts_client) {
            let mut command = Command::new("node");
            command
                .arg(TS_DRIVER)
                .arg("--client")
                .arg(client)
                .args(shape);
            clients.push((
                "client ingest: TypeScript (window-node-client), --memory, 16 in flight",
                command,
            ));
        }
        if python {
            let mut command = Command::new("python3");
            command.arg(PY_DRIVER).args(shape);
            clients.push((
                "client ingest: Python (window_node_client), --memory, 16 in flight",
                command,
            ));
        }
        for (name, mut command) in clients {
            let outcome = measure(name, &mut command)?;
            super::record(&mut found.rounds, name, outcome.events_per_s());
            if round == 0 {
                found.rows.push(outcome);
            }
        }
    }
    found.notes.push(format!(
        "The clients / loadgen ratios are of medians over {} round(s), each running loadgen's \
         `--memory`, 16 in flight workload (a fresh daemon) and then every client; events/s per \
         round: {}. The table shows each client's first round.",
        found.rounds.first().map_or(0, |(_, r)| r.len()),
        super::rounds_text(&found.rounds)
    ));
    Ok(found)
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

/// The ratios against loadgen, of the medians of the same rounds.
pub(super) fn ratio_lines(rounds: &Rounds) -> Vec<(String, Option<f64>)> {
    let median = |prefix: &str| super::rounds_median(rounds, prefix);
    let loadgen = median(LOADGEN);
    ["Rust", "TypeScript", "Python"]
        .into_iter()
        .map(|client| {
            (
                format!(
                    "daemon ingest, --memory, 16 in flight: the {client} client / loadgen (events/s; goal >= 0.8)"
                ),
                super::ratio(median(&format!("client ingest: {client}")), loadgen),
            )
        })
        .collect()
}
