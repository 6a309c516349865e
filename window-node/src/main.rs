//! `window-node`: tumbling windows over an endless stream of timestamped events.
//!
//! With no subcommand it is a line-JSON node on stdin/stdout (the wire protocol of
//! `docs/protocol.md`). Logs go to stderr; stdout carries protocol messages only.

mod aggregate;
mod clock;
mod driver;
mod feeds;
mod follower;
mod group_route;
mod lease_file;
mod lease_redis;
mod line_budget;
mod links;
mod metrics;
mod node;
mod options;
mod partitions;
mod recovery;
mod redis_faults;
mod router;
mod serve;
mod stdin;
mod tcp;
mod upstream;

use std::io::{self, BufReader};
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use window_core::{EngineConfig, LatePolicy, PurgePolicy};
use window_store::SledStore;

use crate::lease_file::{FileLease, HolderKind};
use crate::node::{Node, NodeConfig};
use crate::options::{Frame, at_least_one, millis, parse_lateness, parse_window_size, size_ms};
use window_proto::Style;

/// jemalloc: memory allocated on one thread and freed on another (a request's events, parsed by
/// its connection and dropped by the driver) is its common case; glibc's malloc spent about a
/// quarter of the daemon's time consolidating free lists here (see bench/report.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ABOUT: &str = "Tumbling windows over an endless stream of timestamped events.";

const LONG_ABOUT: &str = "\
Tumbling windows over an endless stream of timestamped events.

With no subcommand, window-node is a line-JSON node: it reads one request per line on stdin and
writes one reply per request, in order, on stdout. Requests are Maelstrom envelopes
{\"src\", \"dest\", \"body\": {...}} or bare bodies {\"type\": ...}:

  assign          which window each event is in (events join the open state)
  process_window  the batch's events grouped by window: count and ids per window
  ingest          add events (window_size_ms, else --window-size); only counts come back
  close           emit one open window (window_id) and drop it
  flush           emit and drop every open window ending at or before `until` (all if absent)
  init            name the node; replies are envelopes from then on
  stats           counts of open windows, buffered events, duplicates, late events

An event is {\"id\": number|string, \"timestamp\": RFC 3339 string or epoch ms, \"key\"?: string,
\"value\"?: number}. Errors come back as {\"type\": \"error\", \"code\": N, \"text\": ...} with
Maelstrom codes (10 unknown type, 12 malformed request, 20 window not open) and the node goes on.

Example:
  echo '{\"type\": \"assign\", \"msg_id\": 1, \"events\": [{\"id\": 1, \"timestamp\": \"2024-01-15T10:00:10Z\"}], \"window_size_ms\": 60000}' | window-node

`window-node serve` runs the TCP daemon instead: clients ingest events, windows fire on their own
and subscribers receive them from a durable log (see `window-node serve --help`).
`window-node aggregate FILE` windows a file or stream of events (one JSON object per line, or CSV)
and writes one line per fired window (see `window-node aggregate --help`).

Window ids: the default `--ids grader` frame labels windows as the published exercise does (its
expected ids read `Z` times as UTC+2 local time: id = start - 7200000). `--ids utc` labels a
window by its UTC start. Logs go to stderr (RUST_LOG or -v); stdout carries replies only.";

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "window-node", version, about = ABOUT, long_about = LONG_ABOUT)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Window-id frame: `grader` reproduces the published exercise's ids, `utc` uses the UTC start.
    #[arg(long, value_enum, default_value_t = Frame::Grader, env = "WINDOW_NODE_IDS")]
    ids: Frame,

    /// Reply in Maelstrom envelopes from the first reply (otherwise only after `init`).
    #[arg(long, env = "WINDOW_NODE_ENVELOPE")]
    envelope: bool,

    /// Write replies without spaces after `,` and `:`.
    #[arg(long, env = "WINDOW_NODE_COMPACT")]
    compact: bool,

    /// Fire a window the moment it holds this many events (length purge); the next event of
    /// the window opens a fresh pane. Fired windows are sent as unsolicited `window_closed`.
    #[arg(long, value_name = "N", env = "WINDOW_NODE_MAX_EVENTS")]
    max_events: Option<NonZeroU32>,

    /// Turn on the event-time watermark (highest event time seen minus this lateness, e.g. `5s`):
    /// windows ending at or before it fire on their own, and later events of them are dropped
    /// as late. Off by default: windows then leave only by close, flush or --max-events.
    #[arg(long, value_name = "DURATION", value_parser = parse_lateness, env = "WINDOW_NODE_ALLOWED_LATENESS")]
    allowed_lateness: Option<Duration>,

    /// Window length of an `ingest` request without `window_size_ms` (`500ms`, `10s`, `5m`).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_window_size, env = "WINDOW_NODE_WINDOW_SIZE")]
    window_size: Duration,

    /// Persist the open windows, the watermark and the log of emitted windows in this
    /// directory (sled) and restore them on start, so a crash loses nothing acknowledged and
    /// fires nothing twice. Replies are written only after the requests are durable. Without it
    /// the node keeps everything in memory.
    #[arg(long, value_name = "DIR", env = "WINDOW_NODE_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,

    /// Longest request line in bytes; a longer line gets error 12 and the node goes on.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, value_parser = at_least_one, env = "WINDOW_NODE_MAX_LINE_BYTES")]
    max_line_bytes: usize,

    /// Largest payload an event may carry, in bytes of JSON text; a request with a larger one
    /// is refused whole with error 12.
    #[arg(long, value_name = "BYTES", default_value_t = window_proto::DEFAULT_MAX_PAYLOAD_BYTES, env = "WINDOW_NODE_MAX_PAYLOAD_BYTES")]
    max_payload_bytes: usize,

    /// More logging on stderr (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the TCP daemon: clients `ingest` events and `subscribe` to fired windows; windows
    /// fire on their own by event time (watermark), idle timeout, length or age; everything is
    /// durable in --data-dir before it is acknowledged.
    Serve(Box<serve::ServeArgs>),
    /// Window a file or a stream of events (NDJSON, or CSV with a header) and write one line per
    /// fired window, in firing order, to stdout or --output: window bounds, key, count,
    /// sum/min/max of the values, ids. At the end of input every open window fires. Bad lines
    /// are reported on stderr and skipped (or stop the run with --strict). Example:
    /// `window-node aggregate events.jsonl`.
    Aggregate(aggregate::AggregateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Aggregate(args)) = &cli.command {
        init_logging(cli.verbose, false);
        return match aggregate::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("window-node aggregate: error: {error}");
                ExitCode::from(error.exit_code())
            }
        };
    }
    // The daemon says what it does (start, listen, recover, stop) by default; the stdin node
    // stays quiet unless asked, since its caller reads stdout and may show stderr.
    let daemon = matches!(cli.command, Some(Command::Serve(_)));
    init_logging(cli.verbose, daemon);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the log's when errors are logged, else a plain one.
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{error:#}");
            } else {
                eprintln!("window-node: error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Serve(args)) => return serve::run(*args),
        Some(Command::Aggregate(_)) | None => {}
    }
    let lateness = cli.allowed_lateness.map(millis);
    let config = NodeConfig {
        frame: cli.ids.into(),
        style: if cli.compact {
            Style::Compact
        } else {
            Style::Spaced
        },
        envelope: cli.envelope,
        max_payload_bytes: cli.max_payload_bytes,
        engine: EngineConfig {
            frame: cli.ids.into(),
            purge: PurgePolicy {
                max_events: cli.max_events,
                max_age_ms: None,
            },
            allowed_lateness_ms: lateness,
            late: LatePolicy::Drop,
        },
        ingest_size: size_ms(cli.window_size).context("--window-size")?,
    };
    tracing::info!(?config, "window-node reading requests on stdin");
    let mut held_lease = None;
    let node = match &cli.data_dir {
        None => Node::new(config, clock::now()),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
            // The stdin node fires windows too, so it takes the lease like a coordinator.
            let lease = FileLease::try_acquire(dir, HolderKind::Stdin)
                .with_context(|| format!("taking the lease in {}", dir.display()))?
                .with_context(|| {
                    format!(
                        "the data directory {} is in use by another process (it holds the lease{}); stop it or choose another --data-dir",
                        dir.display(),
                        lease_file::describe_holder(dir)
                            .map(|holder| format!(": {holder}"))
                            .unwrap_or_default()
                    )
                })?;
            let store = SledStore::open_waiting(dir, std::time::Duration::from_secs(2))
                .with_context(|| format!("opening the store in {}", dir.display()))?;
            let node = Node::with_store(config, Box::new(store), lease.epoch(), clock::now())
                .with_context(|| format!("recovering the open state from {}", dir.display()))?;
            // Held until `run` returns.
            held_lease = Some(lease);
            node
        }
    };
    let input = BufReader::with_capacity(1 << 20, io::stdin());
    let output = io::stdout().lock();
    let served = stdin::serve(node, input, output, cli.max_line_bytes)
        .context("serving requests on stdin/stdout");
    drop(held_lease);
    served
}

fn init_logging(verbose: u8, daemon: bool) {
    let default = match verbose {
        0 if daemon => "info",
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // sled logs its own I/O errors (a full disk, say) on its threads; each also comes back to
    // the store as an error, which the node reports once with what to do. Its lines are kept
    // out unless RUST_LOG names sled.
    let sled_named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("sled"));
    if !sled_named && let Ok(off) = "sled=off".parse() {
        filter = filter.add_directive(off);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
}
