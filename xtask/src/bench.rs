//! `cargo xtask bench`: end-to-end scenarios through the release binary, each checked for
//! correctness against an independent computation before its speed is reported, written to
//! `bench/report.md`.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// 2024-01-15T10:00:00Z.
const BASE_MS: i64 = 1_705_312_800_000;
const GRADER_OFFSET_MS: i64 = 7_200_000;
const SIZE_MS: i64 = 60_000;

/// One measured scenario.
struct Outcome {
    name: &'static str,
    events: u64,
    seconds: f64,
    peak_rss_kib: Option<u64>,
    note: String,
}

pub fn run(quick: bool) -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "-p", "window-node"])?;
    let node = "target/release/window-node";
    let mut outcomes = Vec::new();
    let (lines, per_line) = if quick { (2, 50_000) } else { (10, 200_000) };
    outcomes.push(process_window_batches(node, lines, per_line)?);
    let stream_events = if quick { 200_000 } else { 5_000_000 };
    outcomes.push(streaming(node, stream_events)?);
    let report = render(&outcomes, quick);
    eprint!("{report}");
    if !quick {
        fs::create_dir_all("bench").context("creating bench/")?;
        fs::write("bench/report.md", &report).context("writing bench/report.md")?;
        eprintln!("xtask: wrote bench/report.md");
    }
    Ok(())
}

/// Timestamp text of event `i` of a stream that advances 37 ms per event.
fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `lines` requests of `per_line` events each; every reply is compared with the expected text.
fn process_window_batches(node: &str, lines: usize, per_line: usize) -> anyhow::Result<Outcome> {
    let mut input = String::new();
    let mut expected = String::new();
    for line in 0..lines {
        let mut events = String::new();
        let mut windows: Vec<(i64, Vec<u64>)> = Vec::new();
        for i in 0..per_line {
            let id = (line * per_line + i) as u64;
            let ms = BASE_MS + id as i64 * 37;
            if i > 0 {
                events.push_str(", ");
            }
            write!(
                events,
                "{{\"id\": {id}, \"timestamp\": \"{}\"}}",
                timestamp(ms)
            )?;
            let window = (ms - GRADER_OFFSET_MS).div_euclid(SIZE_MS) * SIZE_MS;
            match windows.last_mut() {
                Some((w, ids)) if *w == window => ids.push(id),
                _ => windows.push((window, vec![id])),
            }
        }
        writeln!(
            input,
            "{{\"type\": \"process_window\", \"msg_id\": {line}, \"events\": [{events}], \"window_size_ms\": {SIZE_MS}}}"
        )?;
        let rendered: Vec<String> = windows
            .iter()
            .map(|(w, ids)| {
                let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
                format!(
                    "{{\"window_id\": \"window-{w}\", \"count\": {}, \"events\": [{}]}}",
                    ids.len(),
                    ids.join(", ")
                )
            })
            .collect();
        writeln!(
            expected,
            "{{\"type\": \"window_result\", \"in_reply_to\": {line}, \"windows\": [{}]}}",
            rendered.join(", ")
        )?;
    }
    let run = run_node(node, &[], input.into_bytes())?;
    ensure!(
        run.stdout == expected,
        "process_window replies differ from the independent computation"
    );
    let events = (lines * per_line) as u64;
    Ok(Outcome {
        name: "stdin process_window",
        events,
        seconds: run.elapsed.as_secs_f64(),
        peak_rss_kib: run.peak_rss_kib,
        note: format!("{lines} requests of {per_line} events; replies checked byte for byte"),
    })
}

/// A long stream in small requests with the watermark on: memory must follow the open windows,
/// not the input. Checks that every event comes out exactly once.
fn streaming(node: &str, total: u64) -> anyhow::Result<Outcome> {
    let per_line = 1000;
    let mut input = String::new();
    for first in (0..total).step_by(per_line) {
        input.push_str("{\"type\":\"assign\",\"events\":[");
        for id in first..(first + per_line as u64).min(total) {
            if id > first {
                input.push(',');
            }
            write!(
                input,
                "{{\"id\":{id},\"timestamp\":{}}}",
                BASE_MS + id as i64 * 3
            )?;
        }
        writeln!(input, "],\"window_size_ms\":{SIZE_MS}}}")?;
    }
    input.push_str("{\"type\":\"flush\"}\n");
    let run = run_node(
        node,
        &["--compact", "--allowed-lateness", "1s", "--ids", "utc"],
        input.into_bytes(),
    )?;
    // Every event is emitted once: by the watermark on the way, the rest by the final flush.
    let mut emitted = 0u64;
    for part in run.stdout.split("\"count\":").skip(1) {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        emitted += digits.parse::<u64>().context("count in window_closed")?;
    }
    ensure!(
        emitted == total,
        "streaming emitted {emitted} events, expected {total}"
    );
    Ok(Outcome {
        name: "stdin streaming (assign, watermark)",
        events: total,
        seconds: run.elapsed.as_secs_f64(),
        peak_rss_kib: run.peak_rss_kib,
        note: format!(
            "{per_line}-event assign requests, --allowed-lateness 1s; every event emitted once"
        ),
    })
}

struct Run {
    stdout: String,
    elapsed: Duration,
    peak_rss_kib: Option<u64>,
}

/// Runs the node on `input`, measuring wall time and peak memory (read from /proc just before
/// the node exits: it waits for end of input, which we send last).
fn run_node(node: &str, args: &[&str], input: Vec<u8>) -> anyhow::Result<Run> {
    let start = Instant::now();
    let mut child = Command::new(node)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {node}"))?;
    let pid = child.id();
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    stdin.write_all(&input).context("writing requests")?;
    stdin.flush()?;
    // Give the node a moment to answer the last line before sampling its memory.
    thread::sleep(Duration::from_millis(50));
    let peak_rss_kib = peak_rss_kib(pid);
    drop(stdin);
    let status = child.wait()?;
    let elapsed = start.elapsed();
    let stdout = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    if !status.success() {
        bail!("{node} exited with {status}");
    }
    Ok(Run {
        stdout,
        elapsed,
        peak_rss_kib,
    })
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn render(outcomes: &[Outcome], quick: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# window-node benchmark report\n");
    let _ = writeln!(
        out,
        "Generated by `cargo xtask bench{}` on {} ({} cores). Each scenario checks its output \
         against an independent computation before its speed counts. Wall time includes process \
         start and generating nothing: the input is prepared before the clock starts.\n",
        if quick { " --quick" } else { "" },
        machine(),
        thread::available_parallelism().map_or(0, usize::from)
    );
    let _ = writeln!(
        out,
        "| scenario | events | seconds | events/s | peak RSS | what |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
    for o in outcomes {
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {:.0} | {} | {} |",
            o.name,
            o.events,
            o.seconds,
            o.events as f64 / o.seconds,
            o.peak_rss_kib.map_or("n/a".to_owned(), |k| format!(
                "{:.1} MiB",
                k as f64 / 1024.0
            )),
            o.note
        );
    }
    out
}

fn machine() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "an unknown CPU".to_owned())
}
