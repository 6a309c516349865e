//! The command line: what to send, how, to which node, and the options clap cannot check.

use std::path::PathBuf;

use anyhow::{bail, ensure};
use clap::{Parser, ValueEnum};
use window_bench::GRADER_OFFSET_MS;

/// Drives a window-node over stdin or over TCP (the daemon, `window-node serve`) and reports
/// events/s, ack and fire latency, CPU seconds and peak memory, after checking every answer.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
pub(crate) struct Cli {
    /// The node binary to start (stdin transport).
    #[arg(long, default_value = "target/release/window-node")]
    pub(crate) node: PathBuf,

    /// Start the TCP daemon (`window-node serve` on a free loopback port) and send `ingest`
    /// requests over TCP; fired windows are read from a second, subscribed connection.
    /// `--memory` is passed unless the node arguments name `--data-dir`, `--memory` or `--store`.
    #[arg(long, conflicts_with = "tcp")]
    pub(crate) serve: bool,

    /// Connect to a daemon already running at this address (nothing is started, so no CPU or
    /// memory figures). Its options must match the ones given here. Several addresses (the flag
    /// repeated, or a comma-separated list) are nodes sharing one state (`serve` processes on
    /// one --data-dir or one Redis namespace): connection `c` goes to address `c % addresses`,
    /// and the subscription and the control requests (stats, flush) to the first.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    pub(crate) tcp: Vec<String>,

    /// Which request carries the events: `process-window` on stdin by default, `ingest` (the
    /// only one) over TCP.
    #[arg(long, value_enum)]
    pub(crate) request: Option<RequestKind>,

    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    pub(crate) batch: usize,

    /// Requests written before waiting for the oldest reply (per connection).
    #[arg(long, default_value_t = 1)]
    pub(crate) in_flight: usize,

    /// TCP connections sending requests at once (round robin). With more than one the order in
    /// which the daemon sees requests is not known, so the check compares what is independent
    /// of it (totals, and every window's panes: a length pane holds exactly --max-events ids, a
    /// window fires as many as its id count allows and then at most one last pane of the rest,
    /// and its panes are disjoint and together its ids) and refuses workloads where order could
    /// make an event late.
    #[arg(long, default_value_t = 1)]
    pub(crate) connections: usize,

    /// A JSONL file of events (one event object per line) to send instead of generated ones.
    #[arg(long, value_name = "FILE")]
    pub(crate) input: Option<PathBuf>,

    /// Generated events.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) events: usize,

    /// Fresh events per window (over all keys).
    #[arg(long, default_value_t = 1000)]
    pub(crate) events_per_window: u32,

    /// Distinct keys (0: events carry no key).
    #[arg(long, default_value_t = 0)]
    pub(crate) keys: u32,

    /// Largest out-of-order shift of an event, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub(crate) disorder_ms: u64,

    /// Fraction of events far behind the stream (late under a short --allowed-lateness-ms).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) late_fraction: f64,

    /// Fraction of events that repeat a recent one (duplicates).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) duplicate_fraction: f64,

    /// Give every event a value (windows then carry sum, min and max).
    #[arg(long)]
    pub(crate) values: bool,

    /// Over TCP: receive the fired windows as this many members of one consumer group (each
    /// acknowledging every window) instead of one subscriber (0).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) group_members: usize,

    /// Give every event a payload of this many bytes of JSON text (0: none). Every window the
    /// node lists is checked to carry it once per id (and, without payloads, to list none).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub(crate) payload_bytes: usize,

    /// How ids are written.
    #[arg(long, value_enum, default_value_t = Ids::Int)]
    pub(crate) ids: Ids,

    /// How timestamps are written.
    #[arg(long, value_enum, default_value_t = Timestamps::Utc)]
    pub(crate) timestamps: Timestamps,

    /// Window size of the requests, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub(crate) window_size_ms: i64,

    /// Seed of the generator.
    #[arg(long, default_value_t = 0x5EED)]
    pub(crate) seed: u64,

    /// The node's window-id frame (passed on as `--ids`).
    #[arg(long, value_enum, default_value_t = Frame::Grader)]
    pub(crate) frame: Frame,

    /// Passed on as `--allowed-lateness <N>ms`, and used by the reference. The daemon always
    /// has a watermark: over TCP this defaults to its 5000.
    #[arg(long, value_name = "MS")]
    pub(crate) allowed_lateness_ms: Option<u64>,

    /// Passed on as `--max-events`, and used by the reference.
    #[arg(long, value_name = "N")]
    pub(crate) max_events: Option<u32>,

    /// Leave the windows open at the end (no final flush), e.g. to restart over them.
    #[arg(long)]
    pub(crate) no_flush: bool,

    /// Write the JSON summary here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,

    /// A name for the run, copied into the summary.
    #[arg(long, default_value = "loadgen")]
    pub(crate) name: String,

    /// No progress bar.
    #[arg(long)]
    pub(crate) no_progress: bool,

    /// Arguments for the node, after `--` (e.g. `-- --data-dir /tmp/wn`).
    #[arg(last = true)]
    pub(crate) node_args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum RequestKind {
    /// `process_window`: the reply groups the request's events by window.
    ProcessWindow,
    /// `assign`: the reply gives every event's window.
    Assign,
    /// `ingest` (daemon only): the reply counts accepted, duplicate and late events.
    Ingest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Ids {
    Int,
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Timestamps {
    /// `2024-01-15T10:00:10.250Z`
    Utc,
    /// `2024-01-15T12:00:10.250+02:00`
    Offset,
    /// `1705312810250`
    EpochMs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Frame {
    Grader,
    Utc,
}

impl Frame {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Frame::Grader => "grader",
            Frame::Utc => "utc",
        }
    }

    pub(crate) fn offset_ms(self) -> i64 {
        match self {
            Frame::Grader => GRADER_OFFSET_MS,
            Frame::Utc => 0,
        }
    }
}

/// Which transport a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Stdin,
    Tcp,
}

impl Cli {
    /// Checks the options that clap cannot, and returns the request that carries the events.
    pub(crate) fn check(&self) -> anyhow::Result<RequestKind> {
        ensure!(self.batch > 0, "--batch must be positive");
        ensure!(self.in_flight > 0, "--in-flight must be positive");
        ensure!(self.window_size_ms > 0, "--window-size-ms must be positive");
        let transport = self.transport();
        let kind = match (self.request, transport) {
            (None, Transport::Stdin) => RequestKind::ProcessWindow,
            (None, Transport::Tcp) | (Some(RequestKind::Ingest), Transport::Tcp) => {
                RequestKind::Ingest
            }
            (Some(RequestKind::Ingest), Transport::Stdin) => {
                bail!("ingest is served by the daemon only: add --serve or --tcp")
            }
            (Some(kind), Transport::Stdin) => kind,
            (Some(kind), Transport::Tcp) => {
                bail!("the daemon takes ingest, not {kind:?}: leave out --request")
            }
        };
        ensure!(self.connections > 0, "--connections must be positive");
        ensure!(
            self.connections >= self.tcp.len(),
            "{} --tcp addresses but only {} connections: every node should get one",
            self.tcp.len(),
            self.connections
        );
        if self.connections > 1 {
            self.check_unordered()?;
        }
        Ok(kind)
    }

    /// With several connections the node's order of requests is unknown: the check then needs
    /// a workload where no order can make an event late.
    fn check_unordered(&self) -> anyhow::Result<()> {
        ensure!(
            self.transport() == Transport::Tcp,
            "--connections above 1 needs --serve or --tcp"
        );
        // Requests may be seen up to (connections x in flight) requests out of order: events
        // that far apart in time must not be able to make each other late.
        let span = (self.connections * self.in_flight * self.batch) as u64;
        let reorder_ms = span * self.window_size_ms as u64
            / u64::from(self.events_per_window.max(1))
            + self.disorder_ms
            + self.window_size_ms as u64;
        ensure!(
            self.input.is_none()
                && self.late_fraction == 0.0
                && self.lateness_ms().unwrap_or(u64::MAX) >= reorder_ms,
            "with --connections {} the check needs a generated workload without late events and \
             --allowed-lateness-ms of at least {reorder_ms} (what {} requests out of order span)",
            self.connections,
            self.connections * self.in_flight
        );
        Ok(())
    }

    pub(crate) fn transport(&self) -> Transport {
        if self.serve || !self.tcp.is_empty() {
            Transport::Tcp
        } else {
            Transport::Stdin
        }
    }

    /// The allowed lateness the node runs with: the daemon always has a watermark.
    pub(crate) fn lateness_ms(&self) -> Option<u64> {
        match self.transport() {
            Transport::Stdin => self.allowed_lateness_ms,
            Transport::Tcp => Some(self.allowed_lateness_ms.unwrap_or(5000)),
        }
    }
}
