//! The `apparatus` scenario: node-apparatus's `DistributedTimeWindow` (the npm package, its
//! own code, over Redis with the storage classes its readme shows) beside window-node-client's
//! `DistributedTimeWindow` (over `window-node serve --time ingest --store redis://`), in one run
//! against one `redis-server` (the cluster scenarios' `Redis`).
//!
//! The driver is `bench/peers/apparatus/dtw-bench.mjs` (what it measures and how is written at
//! its top); the npm packages it needs are pinned by `bench/peers/apparatus/package-lock.json`
//! and installed with `npm ci` into `target/bench-apparatus`; our client is built from
//! `clients/typescript`. Both implementations run with 6 s windows (node-apparatus refuses 5 s
//! or less) and no count limit. Without node and npm the scenario is skipped with a note.
//!
//! `--quick`: the two throughput phases only, one second each (the latency and SIGKILL phases
//! need whole 6 s windows).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;
use window_testkit::Node;

use super::cluster::Redis;
use super::{NODE, Outcome};

const DRIVER: &str = "bench/peers/apparatus/dtw-bench.mjs";
const PACKAGE: &str = "bench/peers/apparatus";
const MODULES: &str = "target/bench-apparatus";
const CLIENT: &str = "clients/typescript";
/// The longest one driver run may take (the full one takes about a minute).
const LIMIT: Duration = Duration::from_secs(10 * 60);
/// Where the section sits in `bench/report.md`, so `--only apparatus` can replace it alone.
pub(super) const BEGIN: &str = "<!-- apparatus -->";
pub(super) const END: &str = "<!-- /apparatus -->";

/// The goals of issue 16 item 5 (ratios of ours over node-apparatus, measured in one run).
const GOAL_ONE: f64 = 2.0;
const GOAL_SIXTEEN: f64 = 20.0;
const GOAL_P99_MS: f64 = 20.0;

/// What became of the scenario.
pub(super) enum Apparatus {
    Skipped(String),
    Ran {
        /// The drivers' summaries: node-apparatus's, then ours.
        apparatus: Value,
        ours: Value,
        redis: String,
        quick: bool,
        /// The machine's 1-minute load average before and after (its cores are shared).
        load: (String, String),
    },
}

/// Runs both implementations, or says why not.
pub(super) fn run(quick: bool, work: &Path) -> anyhow::Result<Apparatus> {
    for tool in ["node", "npm"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Ok(Apparatus::Skipped("node/npm not found".to_owned()));
        }
    }
    let Some(redis) = Redis::start(&work.join("apparatus"))? else {
        return Ok(Apparatus::Skipped("no redis-server".to_owned()));
    };
    if let Err(e) = install() {
        return Ok(Apparatus::Skipped(format!(
            "installing the npm packages failed: {e:#}"
        )));
    }
    let size = ["--time", "ingest", "--window-size", "6s"].map(str::to_owned);
    let node = Node::start(NODE, size.iter().chain(&redis.store_options("apparatus")))?;
    // ioredis reads a path as the database number: none.
    let url = redis.url().trim_end_matches('/').to_owned();
    let before = load_average();
    let apparatus = drive(
        quick,
        &["--impl", "apparatus", "--redis", &url, "--modules", MODULES],
    )?;
    let nodes = node.addr.to_string();
    let client = format!("{CLIENT}/dist/index.js");
    let ours = drive(
        quick,
        &[
            "--impl",
            "window-node",
            "--nodes",
            &nodes,
            "--client",
            &client,
        ],
    )?;
    Ok(Apparatus::Ran {
        apparatus,
        ours,
        redis: redis.durability.clone(),
        quick,
        load: (before, load_average()),
    })
}

/// The first field of `/proc/loadavg`.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// node-apparatus and its Redis client into `target/bench-apparatus` (`npm ci` from the
/// committed lock, again only when the lock changed), and our client's `dist/`.
fn install() -> anyhow::Result<()> {
    let lock = fs::read(format!("{PACKAGE}/package-lock.json")).context("reading the lock")?;
    let installed = fs::read(format!("{MODULES}/package-lock.json")).ok();
    let present = Path::new(MODULES)
        .join("node_modules/node-apparatus/package.json")
        .exists();
    if installed.as_ref() != Some(&lock) || !present {
        fs::create_dir_all(MODULES).with_context(|| format!("creating {MODULES}"))?;
        for file in ["package.json", "package-lock.json"] {
            fs::copy(format!("{PACKAGE}/{file}"), format!("{MODULES}/{file}"))
                .with_context(|| format!("copying {file}"))?;
        }
        npm(MODULES, &["ci", "--no-audit", "--no-fund"])?;
    }
    if !Path::new(CLIENT)
        .join("node_modules/typescript/package.json")
        .exists()
    {
        npm(CLIENT, &["ci", "--no-audit", "--no-fund"])?;
    }
    npm(CLIENT, &["run", "build"])
}

fn npm(dir: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: apparatus: npm {} (in {dir})", args.join(" "));
    let finished = window_testkit::run(Command::new("npm").args(args).current_dir(dir), &[], LIMIT)
        .with_context(|| format!("npm {}", args.join(" ")))?;
    ensure!(
        finished.status.success(),
        "npm {} in {dir} failed ({}): {}",
        args.join(" "),
        finished.status,
        finished.stderr.trim()
    );
    Ok(())
}

/// One driver run; its JSON summary.
fn drive(quick: bool, args: &[&str]) -> anyhow::Result<Value> {
    eprintln!("xtask: apparatus: node {DRIVER} {}", args.join(" "));
    let mut command = Command::new("node");
    command.arg(DRIVER).args(args);
    if quick {
        command.arg("--quick");
    }
    let finished = window_testkit::run(&mut command, &[], LIMIT).context("running the driver")?;
    // Its log: a line per phase, what the figures below came from.
    eprint!("{}", finished.stderr);
    ensure!(
        finished.status.success(),
        "node {DRIVER} {} failed ({})",
        args.join(" "),
        finished.status
    );
    let text = String::from_utf8_lossy(&finished.stdout);
    let summary: Value = serde_json::from_str(text.trim())
        .with_context(|| format!("the driver's summary is no JSON: {text}"))?;
    // Every element of a throughput phase must reach a tick exactly once: that is what makes
    // its elements/s count.
    for row in summary["throughput"].as_array().context("throughput")? {
        ensure!(
            row["lost"] == 0 && row["duplicated"] == 0,
            "{} with {} in flight lost {} and duplicated {} elements without any kill",
            summary["impl"],
            row["in_flight"],
            row["lost"],
            row["duplicated"]
        );
    }
    Ok(summary)
}

impl Apparatus {
    /// Elements/s with `in_flight` pushes in flight: (node-apparatus, ours).
    fn per_s(&self, in_flight: u64) -> Option<(f64, f64)> {
        let Apparatus::Ran {
            apparatus, ours, ..
        } = self
        else {
            return None;
        };
        let of = |v: &Value| {
            v["throughput"]
                .as_array()?
                .iter()
                .find(|r| r["in_flight"] == in_flight)?["per_s"]
                .as_f64()
        };
        Some((of(apparatus)?, of(ours)?))
    }

    /// The four rows of the scenarios table and chart.
    pub(super) fn outcomes(&self) -> Vec<Outcome> {
        let Apparatus::Ran {
            apparatus, ours, ..
        } = self
        else {
            return Vec::new();
        };
        let mut rows = Vec::new();
        for (v, name, note) in [
            (
                apparatus,
                "node-apparatus DistributedTimeWindow (Redis)",
                "node-apparatus 0.1.14, the readme's storage classes over one redis-server; every element ticked once",
            ),
            (
                ours,
                "window-node-client DistributedTimeWindow (serve --store redis)",
                "window-node-client over window-node serve --time ingest --store redis://; every element ticked once",
            ),
        ] {
            for row in v["throughput"].as_array().into_iter().flatten() {
                let (Some(events), Some(seconds), Some(in_flight)) = (
                    row["elements"].as_u64(),
                    row["seconds"].as_f64(),
                    row["in_flight"].as_u64(),
                ) else {
                    continue;
                };
                rows.push(Outcome {
                    name: format!(
                        "{name}, {in_flight} push{} in flight",
                        if in_flight == 1 { "" } else { "es" }
                    ),
                    events,
                    seconds,
                    peak_rss_kib: None,
                    cpu_seconds: None,
                    ack_us: None,
                    fire_p99_us: None,
                    note: note.to_owned(),
                });
            }
        }
        rows
    }
}

/// The ratio lines of the ratios table (ours over node-apparatus).
pub(super) fn ratio_lines(result: Option<&Apparatus>) -> Vec<(String, Option<f64>)> {
    let Some(result) = result else {
        return Vec::new();
    };
    [(1, GOAL_ONE), (16, GOAL_SIXTEEN)]
        .into_iter()
        .map(|(in_flight, goal)| {
            (
                format!(
                    "DistributedTimeWindow, {in_flight} push{} in flight: window-node-client / node-apparatus (elements/s; goal >= {goal})",
                    if in_flight == 1 { "" } else { "es" }
                ),
                result.per_s(in_flight).map(|(a, ours)| ours / a.max(1e-9)),
            )
        })
        .collect()
}

/// The report's section, between markers.
pub(super) fn section(out: &mut String, result: &Apparatus) {
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(
        out,
        "## DistributedTimeWindow: window-node-client beside node-apparatus\n"
    );
    let (apparatus, ours, redis, quick, load) = match result {
        Apparatus::Skipped(why) => {
            let _ = writeln!(out, "**Skipped: {why}.**\n");
            let _ = writeln!(out, "{END}");
            return;
        }
        Apparatus::Ran {
            apparatus,
            ours,
            redis,
            quick,
            load,
        } => (apparatus, ours, redis, *quick, load),
    };
    let _ = writeln!(
        out,
        "`bench/peers/apparatus/dtw-bench.mjs`, once per implementation, against one \
         `redis-server` ({redis}): node-apparatus 0.1.14's `DistributedTimeWindow` (its own code, \
         from npm) with `ExampleAccumulator` and `ExampleDistributedSortedSet` written as its \
         readme shows (redis-abstraction's pool of 2, ioredis), beside window-node-client's \
         `DistributedTimeWindow` on `window-node serve --time ingest --window-size 6s --store \
         redis://` (the same server, a namespace of its own). Both: 6 s windows (node-apparatus \
         refuses 5 s or less), no count limit, elements are unique strings, and every tick is \
         checked: an element whose push resolved and that never reached a tick is lost, one \
         that reached two is duplicated. Elements/s: one Node process, its pushes awaited one \
         at a time, then 16 awaited at once, for {} s each, then a flush; every element ticked \
         exactly once.{} The two run one after the other on this machine's shared cores \
         (1-minute load average {} before, {} after): node-apparatus's push is two Redis round \
         trips from one process, ours a round trip to the daemon, which commits to Redis before \
         it answers, so other work on the cores weighs more on ours.\n",
        if quick { 1 } else { 3 },
        if quick {
            String::new()
        } else {
            format!(
                " Latency: two processes each pushing one element every {} ms; the delay from \
                 the end of a window (by this machine's clock, the daemon's too) to the tick \
                 that gets it. SIGKILL: three processes pushing (4 in flight each); one \
                 SIGKILLed while pushing; then, in a new run, the first to enter a tick with \
                 elements stays in it and is SIGKILLed there.",
                ours["latency"]["every_ms"]
            )
        },
        load.0,
        load.1
    );
    let _ = writeln!(
        out,
        "| figure | node-apparatus | window-node-client | ours / theirs | goal | |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---|");
    for (in_flight, goal) in [(1, GOAL_ONE), (16, GOAL_SIXTEEN)] {
        if let Some((a, o)) = result.per_s(in_flight) {
            let r = o / a.max(1e-9);
            let _ = writeln!(
                out,
                "| elements/s, {in_flight} push{} in flight | {a:.0} | {o:.0} | {r:.2}x | >= {goal}x | {} |",
                if in_flight == 1 { "" } else { "es" },
                if quick {
                    "(quick: not judged)"
                } else {
                    met(r >= goal)
                }
            );
        }
    }
    if quick {
        let _ = writeln!(
            out,
            "\nQuick mode: the latency and SIGKILL phases were skipped (they need whole 6 s \
             windows); the full run measures them.\n"
        );
        let _ = writeln!(out, "{END}");
        return;
    }
    let latency = |v: &Value| {
        let l = &v["latency"];
        format!(
            "{} / {} ms ({} windows)",
            l["p50_ms"],
            l["p99_ms"],
            l["windows"].as_u64().unwrap_or(0)
        )
    };
    let p99 = ours["latency"]["p99_ms"].as_f64();
    let _ = writeln!(
        out,
        "| window end -> tick, p50 / p99 | {} | {} | | p99 <= {GOAL_P99_MS} ms | {} |",
        latency(apparatus),
        latency(ours),
        met(p99.is_some_and(|p| p <= GOAL_P99_MS))
    );
    for (key, what, held) in [
        ("kill_pusher", "a pushing process", None),
        (
            "kill_in_tick",
            "a process inside its tick",
            Some("held_in_tick"),
        ),
    ] {
        let cell = |v: &Value| {
            let k = &v[key];
            format!(
                "{} lost, {} duplicated of {} resolved{}",
                k["lost"],
                k["duplicated"],
                k["acked"],
                held.map_or(String::new(), |h| format!("; the tick held {}", k[h]))
            )
        };
        let lost = ours[key]["lost"].as_u64();
        let _ = writeln!(
            out,
            "| elements lost after SIGKILL of {what} | {} | {} | | 0 lost | {} |",
            cell(apparatus),
            cell(ours),
            met(lost == Some(0))
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Latency of each window (ms): node-apparatus {}, window-node-client {}. node-apparatus \
         drains a window when a push or its timer (every timeoutInSeconds / 2 = 3 s) in any \
         process first sees a later window, so its delay depends on how often elements come; \
         the daemon fires on its own clock.\n",
        apparatus["latency"]["delays_ms"], ours["latency"]["delays_ms"]
    );
    let _ = writeln!(out, "{END}");
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "**NOT met**" }
}
