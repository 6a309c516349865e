//! Window end to delivery with `serve --time ingest`: how long after a window's end (on the
//! holder's clock, which is this machine's) a consumer group's member has it (and acknowledges
//! it), with a client sending events all along. The figure node-apparatus users know as "the window reaches its callback 1.6-1.7 s
//! (median) after its bucket ends".

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use window_testkit::{Conn, Node};

use super::cluster::Redis;
use super::{NODE, Results};

/// One measured setting: what, p50 and p99 in milliseconds, windows seen, and the goal.
pub(super) struct Latency {
    what: String,
    p50_ms: f64,
    p99_ms: f64,
    windows: usize,
    goal: &'static str,
}

/// Measures with sled and, when `redis-server` is installed, through Redis.
pub(super) fn run(quick: bool, work: &Path, results: &mut Results) -> anyhow::Result<()> {
    let span = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    let dir = work.join("latency-sled");
    let sled = ["--data-dir".to_owned(), dir.display().to_string()];
    results
        .latency
        .push(measure("sled (--data-dir)", &sled, span, "p99 <= 10 ms")?);
    // The cluster scenarios' server (append-only file fsynced every second), in a directory of
    // this measurement's own.
    let Some(redis) = Redis::start(&work.join("latency"))? else {
        results
            .notes
            .push("Skipped: window end to delivery through Redis (no redis-server).".into());
        return Ok(());
    };
    results.latency.push(measure(
        &format!("Redis (--store, {})", redis.durability),
        &redis.store_options("latency"),
        span,
        "p99 <= 20 ms",
    )?);
    Ok(())
}

/// Runs one node with `store` options, 100 ms windows on its clock, a client ingesting an event
/// every 5 ms for `span`, and a subscriber noting when each window arrives.
fn measure(
    what: &str,
    store: &[String],
    span: Duration,
    goal: &'static str,
) -> anyhow::Result<Latency> {
    let size = format!("{WINDOW_MS}ms");
    let options = ["--time", "ingest", "--window-size", &size].map(str::to_owned);
    let node = Node::start(NODE, options.iter().chain(store))?;
    let mut sub = Conn::open(node.addr)?;
    let ok = sub
        .call(r#"{"type":"subscribe","msg_id":1,"group":"bench"}"#)
        .context("no subscribe_ok")?;
    ensure!(ok["type"] == "subscribe_ok", "subscribe: {ok}");
    let sender = std::thread::spawn({
        let addr = node.addr;
        move || -> anyhow::Result<()> {
            let mut client = Conn::open(addr)?;
            let started = Instant::now();
            let mut id = 0u64;
            while started.elapsed() < span {
                id += 1;
                let line = json!({"type": "ingest", "msg_id": id, "events": [{"id": id}]});
                let reply = client.call(&line.to_string()).context("no ingest reply")?;
                ensure!(reply["type"] == "ingest_ok", "ingest: {reply}");
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        }
    });
    let mut delays = Vec::new();
    let until = Instant::now() + span + Duration::from_secs(2);
    while Instant::now() < until {
        let Some(window) = sub.try_recv(Duration::from_millis(500)) else {
            continue;
        };
        let arrived = wall_ms();
        if window["type"] == "window_closed" {
            delays.push((arrived - end_ms(&window)?) as f64);
            let ack = json!({"type": "ack", "msg_id": 2, "seqs": [window["seq"]]});
            sub.send(&ack.to_string())?;
        }
    }
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    ensure!(
        delays.len() >= 10,
        "{what}: only {} windows arrived",
        delays.len()
    );
    delays.sort_by(f64::total_cmp);
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        what: what.to_owned(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        windows: delays.len(),
        goal,
    })
}

fn wall_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// A window's end in epoch milliseconds: its id in the `utc` frame (the daemon's default) is
/// its start.
fn end_ms(window: &Value) -> anyhow::Result<i64> {
    let start = window["window_id"]
        .as_str()
        .and_then(|id| id.strip_prefix("window-"))
        .and_then(|ms| ms.parse::<i64>().ok())
        .with_context(|| format!("no utc window_id in {window}"))?;
    Ok(start + WINDOW_MS)
}

/// The windows' length.
const WINDOW_MS: i64 = 100;

/// The report's section.
pub(super) fn section(out: &mut String, results: &Results) {
    if results.latency.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Window end to delivery (`serve --time ingest`)\n");
    let _ = writeln!(
        out,
        "100 ms windows on the holder's clock; a client ingests one event every 5 ms; a \
         consumer group's member notes when each `window_closed` arrives, against the window's \
         end (the same clock), and acknowledges it. node-apparatus's `DistributedTimeWindow` was measured at 1.6-1.7 s (median) and \
         2.8-2.9 s (p95) on this kind of machine (issue 15; not run here).\n"
    );
    let _ = writeln!(out, "| store | windows | p50 | p99 | goal |");
    let _ = writeln!(out, "|---|---:|---:|---:|---|");
    for l in &results.latency {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} ms | {:.1} ms | {} |",
            l.what, l.windows, l.p50_ms, l.p99_ms, l.goal
        );
    }
    let _ = writeln!(out);
}
