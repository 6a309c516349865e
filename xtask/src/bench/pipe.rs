//! The `pipe` scenario: a file of events through `window-node aggregate` and, in the same run,
//! through the naive single-threaded Python script `bench/peers/naive.py` (stdlib `json` and
//! `datetime`) and, with `--peers`, through DuckDB, Polars and Bytewax (one script each in
//! `bench/peers/`, installed by pip into `target/bench-peers-venv` from
//! `bench/peers/requirements.txt`). Every output must agree with the node's window by window
//! before its time counts.
//!
//! The workload (issue 17's): NDJSON generated here from a fixed seed, a million and ten million
//! events (a hundred thousand with `--quick`): RFC 3339 times in `Z` and at numeric offsets, with
//! and without milliseconds, ids not increasing, up to 3 s of disorder, and about 2 % of the
//! events late (behind the last window end the watermark passed, by up to 2 s); one-minute
//! windows, 5 s of allowed lateness; per window its count and ids in arrival order.
//!
//! A peer that cannot be installed (no network, no pip) is skipped with the reason in the
//! report; a peer that fails or disagrees gets a row saying so and no ratio. Neither fails the
//! bench: only the node and the naive script must agree for it to pass.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use window_testkit::calendar::write_rfc3339;
use window_testkit::{EXIT_POLL, Process, Stderr, procfs};

use super::{BASE_MS, NODE, Outcome, RUN_LIMIT, SIZE_MS, human};

const LATENESS_MS: i64 = 5_000;
/// Runs of the node and of the peers with a goal (DuckDB, Polars), of which the median counts:
/// runs of a tenth of a second to a few seconds vary by tens of percent on a shared machine.
/// The naive script and Bytewax run once: their tens of seconds even the noise out.
const RUNS: usize = 3;
/// How often a tool's peak memory is read while it runs.
const RSS_SAMPLE: Duration = Duration::from_millis(10);
const NAIVE: &str = "bench/peers/naive.py";
const REQUIREMENTS: &str = "bench/peers/requirements.txt";
const VENV: &str = "target/bench-peers-venv";
/// Issue 17's goal against the naive script: the node at least this many times faster.
const NAIVE_GOAL: f64 = 30.0;
/// Issue 17's goal for the node's peak memory beyond its open windows, in MiB.
const RSS_GOAL_MIB: f64 = 50.0;
/// Where the section sits in `bench/report.md`, so `--only pipe` can replace it alone.
const BEGIN: &str = "<!-- pipe -->";
const END: &str = "<!-- /pipe -->";

/// Whether the scenario runs the issue's peers (DuckDB, Polars, Bytewax) too.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Peers {
    Run,
    Skip,
}

/// One peer: its name, its script and issue 17's goal against it (the node this many times
/// faster), if the issue sets one.
struct Peer {
    name: &'static str,
    module: &'static str,
    script: &'static str,
    goal: Option<f64>,
}

const PEERS: [Peer; 3] = [
    Peer {
        name: "DuckDB",
        module: "duckdb",
        script: "bench/peers/duckdb_windows.py",
        goal: Some(5.0),
    },
    Peer {
        name: "Polars",
        module: "polars",
        script: "bench/peers/polars_windows.py",
        goal: Some(5.0),
    },
    Peer {
        name: "Bytewax",
        module: "bytewax",
        script: "bench/peers/bytewax_windows.py",
        goal: None,
    },
];

/// One tool's run over the workload.
pub struct Measured {
    pub seconds: f64,
    pub peak_rss_kib: Option<u64>,
}

/// What became of the peers' virtual environment.
pub enum PeerSetup {
    NotAsked,
    /// The venv's python and the installed versions, one per peer in `PEERS` order.
    Ready {
        python: PathBuf,
        versions: Vec<String>,
    },
    Skipped(String),
}

/// One peer's run at one size: its figures, or why there are none (it failed or disagreed).
pub struct PeerRun {
    peer: usize,
    outcome: Result<Measured, String>,
}

/// Everything measured at one size.
pub struct SizeRun {
    pub events: u64,
    pub bytes: u64,
    pub windows: usize,
    pub node: Measured,
    pub naive: Measured,
    /// The node's summary line (accepted, late, windows, its own events/s).
    pub node_summary: String,
    pub peers: Vec<PeerRun>,
}

/// What the scenario measured.
pub struct PipeResult {
    pub runs: Vec<SizeRun>,
    pub setup: PeerSetup,
    pub threads: usize,
    /// The one-minute load average before the first size and after the last: the machine may
    /// be shared, and every tool's time suffers from it, not in equal measure.
    pub load: [Option<f64>; 2],
}

impl PipeResult {
    /// The rows of the scenarios table and chart: every tool that ran, at every size.
    pub fn outcomes(&self) -> Vec<Outcome> {
        let mut rows = Vec::new();
        for run in &self.runs {
            let size = count_label(run.events);
            let row = |name: String, m: &Measured, note: String| Outcome {
                name,
                events: run.events,
                seconds: m.seconds,
                peak_rss_kib: m.peak_rss_kib,
                cpu_seconds: None,
                ack_us: None,
                fire_p99_us: None,
                note,
            };
            rows.push(row(
                format!("pipe {size}: window-node aggregate FILE"),
                &run.node,
                "NDJSON file in, one line per fired window out; every row below agrees with it"
                    .to_owned(),
            ));
            rows.push(row(
                format!("pipe {size}: naive Python (json + datetime)"),
                &run.naive,
                "bench/peers/naive.py on the same file, one thread".to_owned(),
            ));
            for p in &run.peers {
                if let Ok(m) = &p.outcome {
                    let peer = &PEERS[p.peer];
                    rows.push(row(
                        format!("pipe {size}: {}", peer.name),
                        m,
                        format!("{} on the same file", peer.script),
                    ));
                }
            }
        }
        rows
    }
}

/// Generates the workload at each size, runs every tool on it and checks that they agree.
pub fn run(quick: bool, peers: Peers, work: &Path) -> anyhow::Result<PipeResult> {
    let setup = match peers {
        Peers::Skip => PeerSetup::NotAsked,
        Peers::Run => prepare_peers(),
    };
    if let PeerSetup::Skipped(why) = &setup {
        eprintln!("xtask: pipe: the peers are skipped: {why}");
    }
    let sizes: &[u64] = if quick {
        &[100_000]
    } else {
        &[1_000_000, 10_000_000]
    };
    let before = load_average();
    let mut runs = Vec::new();
    for &events in sizes {
        runs.push(run_size(events, &setup, work)?);
    }
    Ok(PipeResult {
        runs,
        setup,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load: [before, load_average()],
    })
}

/// The first field of `/proc/loadavg`.
fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The venv under `target/`, made once per requirements file: `python3 -m venv` and pip. Any
/// failure is a reason to skip the peers, never an error.
fn prepare_peers() -> PeerSetup {
    match try_prepare_peers() {
        Ok((python, versions)) => PeerSetup::Ready { python, versions },
        Err(e) => PeerSetup::Skipped(format!("{e:#}")),
    }
}

fn try_prepare_peers() -> anyhow::Result<(PathBuf, Vec<String>)> {
    let venv = PathBuf::from(VENV);
    let python = venv.join("bin/python");
    let wanted =
        fs::read_to_string(REQUIREMENTS).with_context(|| format!("reading {REQUIREMENTS}"))?;
    // The copy of the requirements the venv was made from: written only after pip succeeded.
    let stamp = venv.join("requirements.txt");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) || !python.exists() {
        eprintln!("xtask: pipe: making {VENV} and installing {REQUIREMENTS} with pip");
        let _ = fs::remove_dir_all(&venv);
        quiet(
            Command::new("python3").args(["-m", "venv", VENV]),
            "python3 -m venv",
        )?;
        quiet(
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                REQUIREMENTS,
            ]),
            "pip install",
        )?;
        fs::write(&stamp, &wanted).with_context(|| format!("writing {}", stamp.display()))?;
    }
    let script = format!(
        "import importlib.metadata as m\nfor p in {:?}: print(m.version(p))",
        PEERS.map(|p| p.module)
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .output()
        .context("asking the venv for the peers' versions")?;
    ensure!(
        out.status.success(),
        "the venv's python could not name the peers' versions: {}",
        last_line(&out.stderr)
    );
    let versions: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    ensure!(versions.len() == PEERS.len(), "expected a version per peer");
    Ok((python, versions))
}

/// Runs a setup command with its output captured; an error carries its last stderr line.
fn quiet(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        last_line(&out.stderr)
    );
    Ok(())
}

fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(nothing on stderr)")
        .trim()
        .to_owned()
}

/// One size: the workload, the node, the naive script and the peers, each output checked.
fn run_size(events: u64, setup: &PeerSetup, work: &Path) -> anyhow::Result<SizeRun> {
    let input = work.join(format!("pipe-{events}-events.jsonl"));
    let bytes = generate(&input, events)?;
    // The input's writeback is not the first tool's to wait for.
    super::settle_disk();
    eprintln!(
        "xtask: pipe: {events} events ({bytes} bytes) in {}",
        input.display()
    );

    let node_out = work.join(format!("pipe-{events}-node.jsonl"));
    let node_run = |out: &Path| {
        let mut node = Command::new(NODE);
        node.arg("aggregate")
            .arg(&input)
            .args([
                "--window-size",
                "60s",
                "--allowed-lateness",
                "5s",
                "--ids",
                "utc",
            ])
            .arg("--output")
            .arg(out)
            .stdout(Stdio::null());
        measure(&mut node)
    };
    let (first, node_log) = node_run(&node_out)?;
    let node_summary = node_log
        .lines()
        .rev()
        .find(|l| l.contains("events read"))
        .unwrap_or("(no summary)")
        .trim_start_matches("window-node aggregate: ")
        .to_owned();
    let node_windows = windows(&node_out)?;
    let counted: u64 = node_windows.iter().map(|w| w.2).sum();
    ensure!(
        counted > events * 9 / 10,
        "only {counted} of {events} events in windows"
    );
    // A later run of the node must write the first one's bytes.
    let again = work.join(format!("pipe-{events}-node-again.jsonl"));
    let node_again = || {
        // Each run writes a new file, as the first did (an old one's removal is not timed).
        let _ = fs::remove_file(&again);
        let (m, _) = node_run(&again)?;
        let same = fs::read(&again)? == fs::read(&node_out)?;
        let _ = fs::remove_file(&again);
        ensure!(same, "a later run of the node wrote other windows");
        Ok(m)
    };

    let naive_out = work.join(format!("pipe-{events}-naive.jsonl"));
    let (naive_measured, _) = run_script(Path::new("python3"), NAIVE, &input, &naive_out)
        .context("running the naive Python peer")?;
    agree(&node_windows, &windows(&naive_out)?, "the naive script")?;
    let _ = fs::remove_file(&naive_out);

    // Round 1 runs every peer after the node and the naive script; rounds 2 to RUNS run the
    // node and the peers with a goal again, in the same order, so that the runs whose medians
    // are compared alternate. A peer that fails or disagrees runs no more.
    let python = match setup {
        PeerSetup::Ready { python, .. } => Some(python),
        _ => None,
    };
    let mut node_runs = vec![first];
    // One entry per peer in `PEERS` order, when they are installed.
    let mut peer_runs: Vec<Result<Vec<Measured>, String>> = match python {
        Some(_) => PEERS.iter().map(|_| Ok(Vec::new())).collect(),
        None => Vec::new(),
    };
    for round in 0..RUNS {
        if round > 0 {
            node_runs.push(node_again()?);
        }
        for (peer, runs) in PEERS.iter().zip(&mut peer_runs) {
            // The peers the issue sets a goal against run as often as the node.
            let wanted = if peer.goal.is_some() { RUNS } else { 1 };
            let (Some(python), Ok(done)) = (python, &mut *runs) else {
                continue;
            };
            if round >= wanted {
                continue;
            }
            eprintln!(
                "xtask: pipe: {} on {events} events (run {} of {wanted})",
                peer.name,
                round + 1
            );
            let out = work.join(format!("pipe-{events}-{}.jsonl", peer.module));
            let _ = fs::remove_file(&out);
            let checked = run_script(python, peer.script, &input, &out).and_then(|(m, _)| {
                agree(&node_windows, &windows(&out)?, peer.name)?;
                Ok(m)
            });
            let _ = fs::remove_file(&out);
            match checked {
                Ok(m) => done.push(m),
                Err(e) => {
                    let why = format!("{e:#}");
                    eprintln!("xtask: pipe: {} did not count: {why}", peer.name);
                    *runs = Err(why);
                }
            }
        }
    }
    let node_measured = median_run(node_runs);
    let peers = peer_runs
        .into_iter()
        .enumerate()
        .map(|(peer, runs)| PeerRun {
            peer,
            outcome: runs.map(median_run),
        })
        .collect();
    // The ten-million-event files are large; the next size or run writes its own.
    let _ = fs::remove_file(&node_out);
    let _ = fs::remove_file(&input);
    Ok(SizeRun {
        events,
        bytes,
        windows: node_windows.len(),
        node: node_measured,
        naive: naive_measured,
        node_summary,
        peers,
    })
}

/// The run of median time (of an even count, the upper one) of some runs (at least one).
fn median_run(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    runs.swap_remove(runs.len() / 2)
}

/// `python SCRIPT INPUT SIZE_MS LATENESS_MS > out`, measured.
fn run_script(
    python: &Path,
    script: &str,
    input: &Path,
    out: &Path,
) -> anyhow::Result<(Measured, String)> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut command = Command::new(python);
    command
        .arg(script)
        .arg(input)
        .args([SIZE_MS.to_string(), LATENESS_MS.to_string()])
        .stdout(file);
    measure(&mut command)
}

/// Writes the workload; returns its size in bytes.
fn generate(path: &Path, events: u64) -> anyhow::Result<u64> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut rng = SplitMix(0x5EED_0017);
    let mut highest: Option<i64> = None;
    let mut line = String::with_capacity(96);
    let mut bytes = 0;
    for i in 0..events {
        // 100 events per second of event time: 6000 per one-minute window.
        let nominal = BASE_MS + i as i64 * 10;
        let late = highest.is_some() && rng.below(100) < 2;
        let ts = match highest {
            // Late: behind the last window end the watermark has passed.
            Some(high) if late => {
                let watermark = high - LATENESS_MS;
                watermark.div_euclid(SIZE_MS) * SIZE_MS - 1 - rng.below(2_000) as i64
            }
            _ => nominal + rng.below(6_001) as i64 - 3_000,
        };
        // Z or an offset, with milliseconds or whole seconds.
        let form = rng.below(4);
        let ts = if form >= 2 {
            ts.div_euclid(1000) * 1000
        } else {
            ts
        };
        let offset = [0, 120, 0, -330][form as usize];
        if !late && highest < Some(ts) {
            highest = Some(ts);
        }
        // Ids are unique and not increasing: i times an odd constant, modulo 2^40.
        let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & ((1 << 40) - 1);
        line.clear();
        let _ = write!(line, "{{\"id\":{id},\"timestamp\":\"");
        write_rfc3339(&mut line, ts, offset);
        line.push_str("\"}\n");
        out.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
    }
    out.flush()?;
    Ok(bytes)
}

/// A seeded 64-bit generator (SplitMix64): the same workload on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs `command` to its end: wall time, and its peak resident memory sampled every 10 ms.
/// Returns its stderr too.
fn measure(command: &mut Command) -> anyhow::Result<(Measured, String)> {
    let started = Instant::now();
    let mut child = Process::spawn(command.stdin(Stdio::null()), Stderr::Capture)?;
    let pid = child.pid();
    let mut peak = None;
    let mut sampled: Option<Instant> = None;
    let status = loop {
        // The peak is a high-water mark: a look every 10 ms misses nothing but the last few
        // milliseconds' growth, and reading /proc more often would take the tools' CPU.
        if sampled.is_none_or(|at| at.elapsed() >= RSS_SAMPLE) {
            if let Some(kib) = procfs::peak_rss_kib(pid) {
                peak = Some(kib);
            }
            sampled = Some(Instant::now());
        }
        if let Some(status) = child.exited()? {
            break status;
        }
        ensure!(
            started.elapsed() < RUN_LIMIT,
            "{} took too long",
            child.name()
        );
        std::thread::sleep(EXIT_POLL);
    };
    let seconds = started.elapsed().as_secs_f64();
    // Reaped already: this waits for the end of its stderr alone, so that the last lines (the
    // node's summary) are read before the log is.
    child.wait_exit(RUN_LIMIT)?;
    if !status.success() {
        bail!(child.failure(&format!("exited with {status}")));
    }
    Ok((
        Measured {
            seconds,
            peak_rss_kib: peak,
        },
        child.log_text(),
    ))
}

/// One fired window: start, key, count, ids, reason.
type Window = (i64, Option<String>, u64, Vec<Value>, String);

fn windows(path: &Path) -> anyhow::Result<Vec<Window>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
            let field = |name: &str| {
                v.get(name)
                    .with_context(|| format!("{}:{}: no {name}", path.display(), n + 1))
            };
            Ok((
                field("window_start_ms")?
                    .as_i64()
                    .context("window_start_ms")?,
                v.get("key").and_then(Value::as_str).map(str::to_owned),
                field("count")?.as_u64().context("count")?,
                field("ids")?.as_array().context("ids")?.clone(),
                field("reason")?.as_str().context("reason")?.to_owned(),
            ))
        })
        .collect()
}

/// Another tool's output against the node's, window by window.
fn agree(node: &[Window], other: &[Window], who: &str) -> anyhow::Result<()> {
    for (i, (a, b)) in node.iter().zip(other).enumerate() {
        ensure!(
            a == b,
            "window {i} differs: window-node has start {} key {:?} count {} reason {}, {who} start {} key {:?} count {} reason {}{}",
            a.0,
            a.1,
            a.2,
            a.4,
            b.0,
            b.1,
            b.2,
            b.4,
            if a.2 == b.2 && a.3 != b.3 {
                " (the same count, other ids or another order)"
            } else {
                ""
            }
        );
    }
    ensure!(
        node.len() == other.len(),
        "window-node fired {} windows, {who} {}",
        node.len(),
        other.len()
    );
    Ok(())
}

/// The report's section, between markers.
pub fn section(out: &mut String, r: &PipeResult) {
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(
        out,
        "## Pipe: a file of events, `window-node aggregate` beside a naive script and its peers\n"
    );
    let load = |l: Option<f64>| l.map_or("n/a".to_owned(), |l| format!("{l:.2}"));
    let sizes: Vec<String> = r
        .runs
        .iter()
        .map(|run| {
            format!(
                "{} events ({:.1} MB, {} windows)",
                count_label(run.events),
                run.bytes as f64 / 1e6,
                run.windows
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "One NDJSON file per size, generated from a fixed seed: {}. RFC 3339 times in `Z` and at \
         numeric offsets, with and without milliseconds, ids not increasing, up to 3 s of \
         disorder, about 2 % late by up to 2 s; one-minute windows, 5 s allowed lateness, per \
         window its count and ids in arrival order. Every tool in the table wrote the same \
         windows as the node, compared window by window (start, count, ids in order, and whether \
         the watermark or the end of input fired it) before its time counted. Seconds are wall \
         time from process start to exit (seen within 1 ms), Python's start and imports \
         included: for the node, DuckDB and Polars the median of {RUNS} runs in alternating \
         rounds (each checked; runs this short vary by tens of percent on a shared machine), \
         for the naive script and Bytewax one run of tens of seconds. Nobody's output is \
         flushed to the disk (the node's `--fsync` would). Peak RSS is the process's high-water \
         mark (`VmHWM`), read every 10 ms, of the run counted. The speed-up is the tool's \
         seconds over the node's at the same size, both from this run. The tools ran one \
         after another on {} cores; the one-minute load average was {} before the first and {} \
         after the last (other work on a shared machine slows every tool, not in equal \
         measure).\n",
        sizes.join(" and "),
        r.threads,
        load(r.load[0]),
        load(r.load[1])
    );
    let _ = writeln!(
        out,
        "| events | tool | seconds | events/s | peak RSS | window-node's speed-up | issue 17's goal |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---|");
    let rss = |m: &Measured| {
        m.peak_rss_kib
            .map_or("n/a".to_owned(), |k| format!("{:.1} MB", k as f64 / 1024.0))
    };
    let mut goals_met = 0;
    let mut goals = 0;
    let mut judge = |speed_up: f64, goal: Option<f64>| match goal {
        None => "none set".to_owned(),
        Some(goal) => {
            goals += 1;
            if speed_up >= goal {
                goals_met += 1;
                format!(">= {goal:.0}x: met")
            } else {
                format!(">= {goal:.0}x: **NOT met**")
            }
        }
    };
    for run in &r.runs {
        let size = count_label(run.events);
        let per_s = |m: &Measured| human(run.events as f64 / m.seconds.max(1e-9));
        let speed_up = |m: &Measured| m.seconds / run.node.seconds.max(1e-9);
        let _ = writeln!(
            out,
            "| {size} | `window-node aggregate` ({} parsing threads) | {:.3} | {} | {} | – | – |",
            r.threads,
            run.node.seconds,
            per_s(&run.node),
            rss(&run.node)
        );
        let x = speed_up(&run.naive);
        let _ = writeln!(
            out,
            "| {size} | `python3 bench/peers/naive.py` (json + datetime, one thread) | {:.3} | {} | {} | {x:.1}x | {} |",
            run.naive.seconds,
            per_s(&run.naive),
            rss(&run.naive),
            judge(x, Some(NAIVE_GOAL))
        );
        for p in &run.peers {
            let peer = &PEERS[p.peer];
            let version = match &r.setup {
                PeerSetup::Ready { versions, .. } => versions[p.peer].as_str(),
                _ => "?",
            };
            let tool = format!("{} {version} (`{}`)", peer.name, peer.script);
            match &p.outcome {
                Ok(m) => {
                    let x = speed_up(m);
                    let _ = writeln!(
                        out,
                        "| {size} | {tool} | {:.3} | {} | {} | {x:.1}x | {} |",
                        m.seconds,
                        per_s(m),
                        rss(m),
                        judge(x, peer.goal)
                    );
                }
                Err(why) => {
                    let why: String = why.lines().next().unwrap_or("").chars().take(160).collect();
                    let goal = match peer.goal {
                        Some(goal) => format!(">= {goal:.0}x: not judged"),
                        None => "none set".to_owned(),
                    };
                    let _ = writeln!(
                        out,
                        "| {size} | {tool} | – | – | – | **did not count: {}** | {goal} |",
                        why.replace('|', "/")
                    );
                }
            }
        }
    }
    let _ = writeln!(out);
    for run in &r.runs {
        let _ = writeln!(
            out,
            "The node's summary at {}: {}.\n",
            count_label(run.events),
            run.node_summary
        );
    }
    match &r.setup {
        PeerSetup::NotAsked => {
            let _ = writeln!(
                out,
                "The peers DuckDB, Polars and Bytewax were **skipped**: this run was without \
                 `--peers` (`cargo xtask bench --peers` installs them with pip into `{VENV}` from \
                 `{REQUIREMENTS}` and adds their rows).\n"
            );
        }
        PeerSetup::Skipped(why) => {
            let _ = writeln!(
                out,
                "The peers DuckDB, Polars and Bytewax were **skipped**: `--peers` was given, but \
                 their venv could not be made: {}.\n",
                why.replace('\n', " ")
            );
        }
        PeerSetup::Ready { .. } => {
            let _ = writeln!(
                out,
                "The peers (`--peers`; pinned in `{REQUIREMENTS}`, installed by pip into `{VENV}`) \
                 compute the node's windows with the node's rule: the watermark is the highest \
                 event time so far minus the allowed lateness, and an event is dropped as late \
                 only when its window already closed. DuckDB (`read_json`, arrival order from \
                 `row_number() OVER ()`, the watermark as a running `max`, `GROUP BY` window with \
                 `list(id ORDER BY rn)`) and Polars (`read_ndjson`, `str.to_datetime`, `cum_max`, \
                 `group_by`) run on their default thread count ({} cores here) and skip the \
                 per-window de-duplication of ids, which the workload's unique ids do not need \
                 and which would only cost them time. Bytewax runs one worker; its own \
                 windowing drops an event behind the watermark even while its window is open and \
                 moves its watermark with system time, so its script keeps the windows in a \
                 `stateful_batch` step with the rule above. Each script's doc says more.\n",
                r.threads
            );
        }
    }
    let rss_line: Vec<String> = r
        .runs
        .iter()
        .map(|run| {
            let mib = run.node.peak_rss_kib.map(|k| k as f64 / 1024.0);
            match mib {
                Some(mib) if mib <= RSS_GOAL_MIB => format!(
                    "at {}: {mib:.1} MB in all, open windows included: met",
                    count_label(run.events)
                ),
                Some(mib) => format!(
                    "at {}: {mib:.1} MB in all, open windows included: not judged (this run does \
                     not measure the open windows apart)",
                    count_label(run.events)
                ),
                None => format!("at {}: not measured", count_label(run.events)),
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "Issue 17's memory goal, the node's peak RSS at most {RSS_GOAL_MIB:.0} MB beyond the open \
         windows: {}.\n",
        rss_line.join("; ")
    );
    let _ = writeln!(
        out,
        "Issue 17's speed goals met in this run: {goals_met} of {goals}{}.\n",
        if matches!(r.setup, PeerSetup::Ready { .. }) {
            ""
        } else {
            " (the naive script's alone; the peers' goals were not judged)"
        }
    );
    let _ = writeln!(out, "{END}");
}

/// `report` with its pipe section replaced by `section` (appended when it has none).
pub fn splice(report: &str, section: &str) -> String {
    super::splice(report, BEGIN, END, section)
}

/// 100k, 1 M, 10 M.
fn count_label(events: u64) -> String {
    if events >= 1_000_000 && events.is_multiple_of(1_000_000) {
        format!("{} M", events / 1_000_000)
    } else if events.is_multiple_of(1_000) {
        format!("{}k", events / 1_000)
    } else {
        events.to_string()
    }
}
