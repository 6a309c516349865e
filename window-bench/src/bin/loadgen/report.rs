//! The JSON summary of a run: what was sent, how fast it went, what the node process used, and
//! what the check found. It is written only after the check passed, and says `"verified": true`.

use std::fs;
use std::io::{self, Write};
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::Value;

use crate::options::{Cli, RequestKind, Transport};
use crate::verify::Checked;

/// What the node process used, from `/proc` (each `None` where loadgen did not start the
/// process or `/proc` does not say).
#[derive(Debug, Default)]
pub(crate) struct Usage {
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) peak_rss_kib: Option<u64>,
    /// Resident memory once the node first answered.
    pub(crate) baseline_rss_kib: Option<u64>,
    /// Resident memory with the data's open state held (before the final flush).
    pub(crate) rss_buffered_kib: Option<u64>,
}

/// One checked run, as the summary reports it.
pub(crate) struct Run<'a> {
    pub(crate) kind: RequestKind,
    pub(crate) transport: Transport,
    pub(crate) events: usize,
    pub(crate) requests: usize,
    /// The nodes the connections went to.
    pub(crate) nodes: usize,
    pub(crate) input_bytes: usize,
    /// From the first request written to the last reply read.
    pub(crate) elapsed: Duration,
    /// Spawn (or connect) to the first reply.
    pub(crate) ready: Duration,
    pub(crate) ack: &'a Histogram<u64>,
    pub(crate) fire: &'a Histogram<u64>,
    pub(crate) usage: &'a Usage,
    pub(crate) checked: &'a Checked,
}

/// Writes the summary of `run` to `--output`, or to stdout.
pub(crate) fn write(cli: &Cli, run: &Run<'_>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&summary(cli, run))? + "\n";
    match &cli.output {
        Some(path) => {
            fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => io::stdout().write_all(text.as_bytes())?,
    }
    Ok(())
}

fn summary(cli: &Cli, run: &Run<'_>) -> Value {
    let seconds = run.elapsed.as_secs_f64();
    let q = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            Value::Null
        } else {
            h.value_at_quantile(q).into()
        }
    };
    let (checked, usage) = (run.checked, run.usage);
    serde_json::json!({
        "name": cli.name,
        "transport": format!("{:?}", run.transport),
        "request": format!("{:?}", run.kind),
        "node": cli.node.display().to_string(),
        "node_args": cli.node_args,
        "events": run.events,
        "requests": run.requests,
        "batch": cli.batch,
        "in_flight": cli.in_flight,
        "connections": cli.connections,
        "nodes": run.nodes,
        "input_bytes": run.input_bytes,
        "seconds": seconds,
        "events_per_s": run.events as f64 / seconds.max(1e-9),
        "ack_p50_us": q(run.ack, 0.5),
        "ack_p99_us": q(run.ack, 0.99),
        "ack_p999_us": q(run.ack, 0.999),
        "ack_max_us": q(run.ack, 1.0),
        "fire_p50_us": q(run.fire, 0.5),
        "fire_p99_us": q(run.fire, 0.99),
        "fire_p999_us": q(run.fire, 0.999),
        "ready_ms": run.ready.as_secs_f64() * 1000.0,
        "cpu_seconds": usage.cpu_seconds,
        "peak_rss_kib": usage.peak_rss_kib,
        "baseline_rss_kib": usage.baseline_rss_kib,
        "rss_buffered_kib": usage.rss_buffered_kib,
        "buffered_events": checked.buffered_events,
        "open_windows": checked.open_windows,
        "accepted": checked.accepted,
        "duplicates": checked.duplicates,
        "late": checked.late,
        "emitted_windows": checked.emitted_windows,
        "verified": true,
    })
}
