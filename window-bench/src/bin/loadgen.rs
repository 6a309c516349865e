//! `loadgen`: drives a real `window-node` with a generated or given dataset, checks every answer
//! against an independent reference, and writes a JSON summary of how fast it went.
//!
//! ```text
//! loadgen --events 1000000 --batch 1000 --output summary.json -- --data-dir /tmp/wn
//! ```
//!
//! The node is spawned as a child and spoken to over stdin/stdout (arguments after `--` go to
//! it as they are). A request line is timed from the moment loadgen starts writing it to the
//! moment its reply line is read (ack latency, in an HDR histogram); an unsolicited
//! `window_closed` is timed from the request whose reply it follows (fire latency). CPU seconds
//! and peak memory are read from `/proc/<pid>` of the child just before its input is closed.
//! Nothing is reported unless every request was answered and every answer is what the reference
//! computes.
//!
//! The transport is a seam: [`Connection`] is a line writer, a line reader and, when loadgen
//! started the process, its pid. The same code drives the stdin node and the daemon
//! (`--serve` starts `window-node serve`, `--tcp` joins a running one, or several nodes sharing
//! one state, spreading the connections over them).

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use window_bench::panes::{EmittedPane, Expected, WindowOf, check_panes};
use window_bench::{
    GRADER_OFFSET_MS, GenEvent, IdKind, RefClosed, RefConfig, RefEvent, RefWindow, Reference,
    Render, TimestampForm, Values, Workload,
};
use window_testkit::procfs;
use window_testkit::{Node, Process, Signal, Stderr};

/// Drives a window-node over stdin or over TCP (the daemon, `window-node serve`) and reports events/s,
/// ack and fire latency, CPU seconds and peak memory, after checking every answer.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    /// The node binary to start (stdin transport).
    #[arg(long, default_value = "target/release/window-node")]
    node: PathBuf,

    /// Start the TCP daemon (`window-node serve` on a free loopback port) and send `ingest`
    /// requests over TCP; fired windows are read from a second, subscribed connection.
    /// `--memory` is passed unless the node arguments name `--data-dir` or `--memory`.
    #[arg(long, conflicts_with = "tcp")]
    serve: bool,

    /// Connect to a daemon already running at this address (nothing is started, so no CPU or
    /// memory figures). Its options must match the ones given here. Several addresses (the flag
    /// repeated, or a comma-separated list) are nodes sharing one state (`serve` processes on
    /// one --data-dir or one Redis namespace): connection `c` goes to address `c % addresses`,
    /// and the subscription and the control requests (stats, flush) to the first.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    tcp: Vec<String>,

    /// Which request carries the events: `process-window` on stdin by default, `ingest` (the
    /// only one) over TCP.
    #[arg(long, value_enum)]
    request: Option<RequestKind>,

    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,

    /// Requests written before waiting for the oldest reply (per connection).
    #[arg(long, default_value_t = 1)]
    in_flight: usize,

    /// TCP connections sending requests at once (round robin). With more than one the order in
    /// which the daemon sees requests is not known, so the check compares what is independent
    /// of it (totals, and every window's panes: a length pane holds exactly --max-events ids, a
    /// window fires as many as its id count allows and then at most one last pane of the rest,
    /// and its panes are disjoint and together its ids) and refuses workloads where order could
    /// make an event late.
    #[arg(long, default_value_t = 1)]
    connections: usize,

    /// A JSONL file of events (one event object per line) to send instead of generated ones.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,

    /// Generated events.
    #[arg(long, default_value_t = 100_000)]
    events: usize,

    /// Fresh events per window (over all keys).
    #[arg(long, default_value_t = 1000)]
    events_per_window: u32,

    /// Distinct keys (0: events carry no key).
    #[arg(long, default_value_t = 0)]
    keys: u32,

    /// Largest out-of-order shift of an event, in milliseconds.
    #[arg(long, default_value_t = 0)]
    disorder_ms: u64,

    /// Fraction of events far behind the stream (late under a short --allowed-lateness-ms).
    #[arg(long, default_value_t = 0.0)]
    late_fraction: f64,

    /// Fraction of events that repeat a recent one (duplicates).
    #[arg(long, default_value_t = 0.0)]
    duplicate_fraction: f64,

    /// Give every event a value (windows then carry sum, min and max).
    #[arg(long)]
    values: bool,

    /// How ids are written.
    #[arg(long, value_enum, default_value_t = Ids::Int)]
    ids: Ids,

    /// How timestamps are written.
    #[arg(long, value_enum, default_value_t = Timestamps::Utc)]
    timestamps: Timestamps,

    /// Window size of the requests, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    window_size_ms: i64,

    /// Seed of the generator.
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,

    /// The node's window-id frame (passed on as `--ids`).
    #[arg(long, value_enum, default_value_t = Frame::Grader)]
    frame: Frame,

    /// Passed on as `--allowed-lateness <N>ms`, and used by the reference. The daemon always
    /// has a watermark: over TCP this defaults to its 5000.
    #[arg(long, value_name = "MS")]
    allowed_lateness_ms: Option<u64>,

    /// Passed on as `--max-events`, and used by the reference.
    #[arg(long, value_name = "N")]
    max_events: Option<u32>,

    /// Leave the windows open at the end (no final flush), e.g. to restart over them.
    #[arg(long)]
    no_flush: bool,

    /// Write the JSON summary here instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// A name for the run, copied into the summary.
    #[arg(long, default_value = "loadgen")]
    name: String,

    /// No progress bar.
    #[arg(long)]
    no_progress: bool,

    /// Arguments for the node, after `--` (e.g. `-- --data-dir /tmp/wn`).
    #[arg(last = true)]
    node_args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RequestKind {
    /// `process_window`: the reply groups the request's events by window.
    ProcessWindow,
    /// `assign`: the reply gives every event's window.
    Assign,
    /// `ingest` (daemon only): the reply counts accepted, duplicate and late events.
    Ingest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Ids {
    Int,
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Timestamps {
    /// `2024-01-15T10:00:10.250Z`
    Utc,
    /// `2024-01-15T12:00:10.250+02:00`
    Offset,
    /// `1705312810250`
    EpochMs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Frame {
    Grader,
    Utc,
}

impl Frame {
    fn as_str(self) -> &'static str {
        match self {
            Frame::Grader => "grader",
            Frame::Utc => "utc",
        }
    }

    fn offset_ms(self) -> i64 {
        match self {
            Frame::Grader => GRADER_OFFSET_MS,
            Frame::Utc => 0,
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The events to send, in requests.
enum Dataset {
    Generated {
        batches: Vec<Vec<GenEvent>>,
        render: Render,
    },
    File {
        /// Each event's JSON text (as given) and its reference view.
        batches: Vec<Vec<(String, RefEvent)>>,
    },
}

impl Dataset {
    fn requests(&self) -> usize {
        match self {
            Dataset::Generated { batches, .. } => batches.len(),
            Dataset::File { batches } => batches.len(),
        }
    }

    fn events_in(&self, request: usize) -> usize {
        match self {
            Dataset::Generated { batches, .. } => batches[request].len(),
            Dataset::File { batches } => batches[request].len(),
        }
    }

    fn line(&self, kind: RequestKind, msg_id: u64, request: usize, size_ms: i64) -> String {
        match self {
            Dataset::Generated { batches, render } => {
                let batch = &batches[request];
                match kind {
                    RequestKind::ProcessWindow => {
                        render.process_window_line(msg_id, batch, size_ms)
                    }
                    RequestKind::Assign => render.assign_line(msg_id, batch, size_ms),
                    RequestKind::Ingest => render.ingest_line(msg_id, batch),
                }
            }
            Dataset::File { batches } => {
                let (name, size) = match kind {
                    RequestKind::ProcessWindow => ("process_window", Some(size_ms)),
                    RequestKind::Assign => ("assign", Some(size_ms)),
                    RequestKind::Ingest => ("ingest", None),
                };
                let events: Vec<&str> = batches[request].iter().map(|(t, _)| t.as_str()).collect();
                let size = size.map_or(String::new(), |s| format!(",\"window_size_ms\":{s}"));
                format!(
                    "{{\"type\":\"{name}\",\"msg_id\":{msg_id},\"events\":[{}]{size}}}\n",
                    events.join(",")
                )
            }
        }
    }

    fn reference_batch(&self, request: usize) -> Vec<RefEvent> {
        match self {
            Dataset::Generated { batches, render } => render.reference_events(&batches[request]),
            Dataset::File { batches } => batches[request].iter().map(|(_, e)| e.clone()).collect(),
        }
    }
}

fn dataset(cli: &Cli) -> anyhow::Result<Dataset> {
    let Some(path) = &cli.input else {
        let workload = Workload {
            events: cli.events,
            events_per_window: cli.events_per_window,
            keys: cli.keys,
            disorder_ms: cli.disorder_ms,
            late_fraction: cli.late_fraction,
            duplicate_fraction: cli.duplicate_fraction,
            values: if cli.values {
                Values::Present
            } else {
                Values::Absent
            },
            ids: match cli.ids {
                Ids::Int => IdKind::Int,
                Ids::Text => IdKind::Text,
            },
            timestamps: match cli.timestamps {
                Timestamps::Utc => TimestampForm::Utc,
                Timestamps::Offset => TimestampForm::Offset,
                Timestamps::EpochMs => TimestampForm::EpochMs,
            },
            size_ms: cli.window_size_ms,
            seed: cli.seed,
            ..Workload::default()
        };
        return Ok(Dataset::Generated {
            batches: workload.batches(cli.batch),
            render: workload.render(),
        });
    };
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let event = file_event(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        events.push((line.to_owned(), event));
    }
    ensure!(!events.is_empty(), "{} holds no events", path.display());
    let batches = events.chunks(cli.batch.max(1)).map(<[_]>::to_vec).collect();
    Ok(Dataset::File { batches })
}

/// The reference's view of one event of a given dataset.
fn file_event(line: &str) -> anyhow::Result<RefEvent> {
    let event: Value = serde_json::from_str(line).context("not JSON")?;
    let id = event.get("id").context("no id")?;
    let ts_ms = match event.get("timestamp").context("no timestamp")? {
        Value::Number(n) => n.as_i64().context("timestamp is not an integer")?,
        Value::String(s) => {
            // Parsed with the `time` crate, not the core's parser: the reference stays apart.
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("timestamp {s:?}"))?;
            i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000))?
        }
        other => bail!("timestamp {other} is neither a string nor a number"),
    };
    Ok(RefEvent {
        id: normalize_id(id),
        ts_ms,
        key: event.get("key").and_then(Value::as_str).map(str::to_owned),
        value: event.get("value").and_then(Value::as_f64),
    })
}

/// An id as compared: its JSON text as serde_json writes it, so both sides of a comparison
/// escape strings and write numbers the same way (`17`, `"e000000017"`).
fn normalize_id(id: &Value) -> String {
    id.to_string()
}

/// How loadgen reaches a node: lines out, lines in, the process to measure (when loadgen
/// started it) and, over TCP, the nodes' addresses: this connection's and the subscriber's is
/// the first; further connections go round robin over all of them.
struct Connection {
    writer: Box<dyn Write + Send>,
    reader: Box<dyn BufRead + Send>,
    child: Option<Process>,
    tcp: Vec<SocketAddr>,
}

/// Which transport a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Stdin,
    Tcp,
}

impl Cli {
    fn transport(&self) -> Transport {
        if self.serve || !self.tcp.is_empty() {
            Transport::Tcp
        } else {
            Transport::Stdin
        }
    }

    /// The allowed lateness the node runs with: the daemon always has a watermark.
    fn lateness_ms(&self) -> Option<u64> {
        match self.transport() {
            Transport::Stdin => self.allowed_lateness_ms,
            Transport::Tcp => Some(self.allowed_lateness_ms.unwrap_or(5000)),
        }
    }
}

fn connect(cli: &Cli) -> anyhow::Result<Connection> {
    if !cli.tcp.is_empty() {
        let addrs = cli
            .tcp
            .iter()
            .map(|addr| {
                addr.to_socket_addrs()
                    .with_context(|| format!("--tcp {addr}"))?
                    .next()
                    .with_context(|| format!("--tcp {addr}: no address"))
            })
            .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
        return tcp_connection(addrs, None, Duration::from_secs(5));
    }
    let mut args: Vec<String> = Vec::new();
    if cli.serve {
        args.extend([
            "--window-size".to_owned(),
            format!("{}ms", cli.window_size_ms),
        ]);
        // Wall time must not move event time, or the reference could not know what fires.
        args.extend(["--idle-timeout", "0s"].map(str::to_owned));
        let named = |flag: &str| {
            cli.node_args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        if !named("--data-dir") && !named("--memory") {
            args.push("--memory".to_owned());
        }
    }
    args.extend(["--ids", cli.frame.as_str()].map(str::to_owned));
    if let Some(ms) = cli.lateness_ms() {
        args.extend(["--allowed-lateness".to_owned(), format!("{ms}ms")]);
    }
    if let Some(n) = cli.max_events {
        args.extend(["--max-events".to_owned(), n.to_string()]);
    }
    args.extend(cli.node_args.iter().cloned());
    if cli.serve {
        // `serve --listen 127.0.0.1:0`: ready once it logged the address it listens on.
        let node = Node::start(&cli.node, &args)
            .with_context(|| format!("starting {} serve", cli.node.display()))?;
        return tcp_connection(vec![node.addr], Some(node.process), Duration::from_secs(30));
    }
    let mut child = Process::spawn(
        Command::new(&cli.node)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
        Stderr::Capture,
    )
    .with_context(|| format!("starting {}", cli.node.display()))?;
    let stdin = child.take_stdin().context("child stdin")?;
    let stdout = child.take_stdout().context("child stdout")?;
    Ok(Connection {
        writer: Box::new(stdin),
        reader: Box::new(BufReader::with_capacity(1 << 20, stdout)),
        child: Some(child),
        tcp: Vec::new(),
    })
}

/// Connects to the first of `addrs`, retrying while it starts (or until `child` exits).
fn tcp_connection(
    addrs: Vec<SocketAddr>,
    mut child: Option<Process>,
    patience: Duration,
) -> anyhow::Result<Connection> {
    let addr = *addrs.first().context("no address to connect to")?;
    let stream = connect_retrying(addr, child.as_mut(), patience)?;
    Ok(Connection {
        writer: Box::new(stream.try_clone()?),
        reader: Box::new(BufReader::with_capacity(1 << 20, stream)),
        child,
        tcp: addrs,
    })
}

fn connect_retrying(
    addr: SocketAddr,
    mut child: Option<&mut Process>,
    patience: Duration,
) -> anyhow::Result<TcpStream> {
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) if start.elapsed() < patience => {
                if let Some(child) = child.as_mut()
                    && let Some(status) = child.exited()?
                {
                    bail!(child.failure(&format!(
                        "exited with {status} before it listened on {addr}"
                    )));
                }
                let _ = e;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {addr}")),
        }
    }
}

/// A second connection that subscribes to every fired window from seq 0 and collects them,
/// with the time each was read, until `stop` is called.
struct Subscriber {
    stream: TcpStream,
    count: Arc<AtomicUsize>,
    thread: thread::JoinHandle<anyhow::Result<Vec<Received>>>,
}

impl Subscriber {
    fn start(addr: SocketAddr) -> anyhow::Result<Subscriber> {
        let mut stream = connect_retrying(addr, None, Duration::from_secs(5))?;
        stream.write_all(b"{\"type\":\"subscribe\",\"msg_id\":0,\"from_seq\":0}\n")?;
        let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone()?);
        let ok = read_line(&mut reader, "before subscribe_ok")?;
        ensure!(
            message_type(&ok.text) == "subscribe_ok",
            "subscribe answered {:.300}",
            ok.text
        );
        let count = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&count);
        let thread = thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                let mut text = String::new();
                match reader.read_line(&mut text) {
                    Ok(0) | Err(_) => return Ok(got),
                    Ok(_) => {}
                }
                let at = Instant::now();
                let kind = message_type(&text);
                ensure!(
                    kind == "window_closed",
                    "the subscription sent {kind}: {text:.300}"
                );
                got.push(Received { text, at });
                counted.fetch_add(1, Ordering::Release);
            }
        });
        Ok(Subscriber {
            stream,
            count,
            thread,
        })
    }

    /// Waits until `expected` windows have come (at most `patience`), then hangs up.
    fn stop(self, expected: usize, patience: Duration) -> anyhow::Result<Vec<Received>> {
        let start = Instant::now();
        while self.count.load(Ordering::Acquire) < expected && start.elapsed() < patience {
            thread::sleep(Duration::from_millis(2));
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        self.thread
            .join()
            .map_err(|_| anyhow!("the subscriber thread panicked"))?
    }
}

/// One line the node wrote, and when it was read.
struct Received {
    text: String,
    at: Instant,
}

/// Reads one line; an end of output is an error (the node must answer everything).
fn read_line(reader: &mut dyn BufRead, context: &str) -> anyhow::Result<Received> {
    let mut text = String::new();
    let n = reader
        .read_line(&mut text)
        .context("reading the node's output")?;
    let at = Instant::now();
    ensure!(n > 0, "the node closed its output {context}");
    Ok(Received { text, at })
}

/// The `type` of a message line: the first `"type"` key, which the node writes before anything
/// the client chose (ids, keys).
fn message_type(line: &str) -> &str {
    let Some(at) = line.find("\"type\"") else {
        return "";
    };
    let rest = line[at + 6..]
        .trim_start()
        .trim_start_matches(':')
        .trim_start();
    rest.strip_prefix('"')
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
}

/// Writes one request and reads until its reply, keeping unsolicited lines.
fn request(
    conn: &mut Connection,
    line: &str,
    unsolicited: &mut Vec<Received>,
) -> anyhow::Result<(Received, Duration)> {
    let sent = Instant::now();
    conn.writer.write_all(line.as_bytes())?;
    conn.writer.flush()?;
    loop {
        let got = read_line(conn.reader.as_mut(), "before answering a control request")?;
        if message_type(&got.text) == "window_closed" {
            unsolicited.push(got);
        } else {
            let latency = got.at - sent;
            return Ok((got, latency));
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, three significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What the timed phase brings back.
struct Timed {
    replies: Vec<Received>,
    fired: Vec<Received>,
    ack: Histogram<u64>,
    /// When each request was written, by request.
    sent: Vec<Instant>,
    first_sent: Instant,
    last_reply: Instant,
    reader: Box<dyn BufRead + Send>,
    writer: Box<dyn Write + Send>,
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    ensure!(cli.batch > 0, "--batch must be positive");
    ensure!(cli.in_flight > 0, "--in-flight must be positive");
    ensure!(cli.window_size_ms > 0, "--window-size-ms must be positive");
    let transport = cli.transport();
    let kind = match (cli.request, transport) {
        (None, Transport::Stdin) => RequestKind::ProcessWindow,
        (None, Transport::Tcp) | (Some(RequestKind::Ingest), Transport::Tcp) => RequestKind::Ingest,
        (Some(RequestKind::Ingest), Transport::Stdin) => {
            bail!("ingest is served by the daemon only: add --serve or --tcp")
        }
        (Some(kind), Transport::Stdin) => kind,
        (Some(kind), Transport::Tcp) => {
            bail!("the daemon takes ingest, not {kind:?}: leave out --request")
        }
    };
    ensure!(cli.connections > 0, "--connections must be positive");
    ensure!(
        cli.connections >= cli.tcp.len(),
        "{} --tcp addresses but only {} connections: every node should get one",
        cli.tcp.len(),
        cli.connections
    );
    if cli.connections > 1 {
        ensure!(
            transport == Transport::Tcp,
            "--connections above 1 needs --serve or --tcp"
        );
        // Requests may be seen up to (connections x in flight) requests out of order: events
        // that far apart in time must not be able to make each other late.
        let span = (cli.connections * cli.in_flight * cli.batch) as u64;
        let reorder_ms = span * cli.window_size_ms as u64 / u64::from(cli.events_per_window.max(1))
            + cli.disorder_ms
            + cli.window_size_ms as u64;
        ensure!(
            cli.input.is_none()
                && cli.late_fraction == 0.0
                && cli.lateness_ms().unwrap_or(u64::MAX) >= reorder_ms,
            "with --connections {} the check needs a generated workload without late events and \
             --allowed-lateness-ms of at least {reorder_ms} (what {} requests out of order span)",
            cli.connections,
            cli.connections * cli.in_flight
        );
    }
    let data = dataset(cli)?;
    let requests = data.requests();
    // Request i has msg_id i + 1; msg_id 0 and those after the data are control requests.
    let lines: Vec<String> = (0..requests)
        .map(|i| data.line(kind, i as u64 + 1, i, cli.window_size_ms))
        .collect();
    let total_events: usize = (0..requests).map(|i| data.events_in(i)).sum();
    let input_bytes: usize = lines.iter().map(String::len).sum();

    let spawned = Instant::now();
    let mut conn = connect(cli)?;
    let pid = conn.child.as_ref().map(Process::pid);
    let subscriber = conn
        .tcp
        .first()
        .copied()
        .map(Subscriber::start)
        .transpose()?;
    let mut unsolicited = Vec::new();
    // The first reply says the node is up (with a data directory: recovered).
    let (baseline, _) = request(
        &mut conn,
        "{\"type\":\"stats\",\"msg_id\":0}\n",
        &mut unsolicited,
    )?;
    ensure!(
        unsolicited.is_empty(),
        "the node emitted windows before any event"
    );
    let ready = baseline.at - spawned;
    let baseline_rss_kib = pid.and_then(procfs::rss_kib);

    let progress = if cli.no_progress {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(
            Some(total_events as u64),
            ProgressDrawTarget::stderr_with_hz(4),
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} events, {per_sec}, eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(cli.name.clone());
        bar
    };

    let sizes: Vec<usize> = (0..requests).map(|i| data.events_in(i)).collect();
    let mut links = vec![(conn.writer, conn.reader)];
    for c in 1..cli.connections {
        ensure!(!conn.tcp.is_empty(), "--connections above 1 needs TCP");
        let addr = conn.tcp[c % conn.tcp.len()];
        let stream = connect_retrying(addr, None, Duration::from_secs(5))?;
        let writer: Box<dyn Write + Send> = Box::new(stream.try_clone()?);
        let reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 20, stream));
        links.push((writer, reader));
    }
    let timed = timed_phase_many(links, lines, &sizes, cli.in_flight, &progress)?;
    progress.finish_and_clear();
    conn.writer = timed.writer;
    conn.reader = timed.reader;
    let mut fired_lines = timed.fired;

    // Control requests after the data: stats (the open state as the data left it), then flush.
    let next = requests as u64 + 1;
    let (stats, _) = request(
        &mut conn,
        &format!("{{\"type\":\"stats\",\"msg_id\":{next}}}\n"),
        &mut fired_lines,
    )?;
    let rss_buffered_kib = pid.and_then(procfs::rss_kib);
    let flushed = if cli.no_flush {
        None
    } else {
        let line = format!("{{\"type\":\"flush\",\"msg_id\":{}}}\n", next + 1);
        Some(request(&mut conn, &line, &mut fired_lines)?)
    };
    if let Some(subscriber) = subscriber {
        // Over TCP fired windows reach subscribers, flushed ones included; the ingesting
        // connection gets replies only.
        ensure!(
            fired_lines.is_empty(),
            "the daemon sent window_closed on an ingest connection"
        );
        let emitted = body(&stats.text)?
            .get("emitted_windows")
            .and_then(Value::as_u64)
            .context("emitted_windows in stats")? as usize;
        let flushed_count = match &flushed {
            Some((reply, _)) => body(&reply.text)?
                .get("windows")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            None => 0,
        };
        fired_lines = subscriber.stop(emitted + flushed_count, Duration::from_secs(60))?;
    }
    let cpu_seconds = pid.and_then(procfs::cpu_seconds);
    let peak_rss_kib = pid.and_then(procfs::peak_rss_kib);
    drop(conn.writer);
    if let Some(mut child) = conn.child.take() {
        if transport == Transport::Tcp {
            // The daemon drains and exits on SIGTERM.
            child.signal(Signal::Term)?;
        }
        // Anything after the last reply is a protocol violation.
        let mut rest = String::new();
        conn.reader.read_to_string(&mut rest)?;
        let status = child.wait_exit(Duration::from_secs(60))?;
        ensure!(
            status.success(),
            "{}",
            child.failure(&format!("exited with {status}"))
        );
        ensure!(
            rest.trim().is_empty(),
            "the node wrote after its last reply: {rest:.200}"
        );
    }

    // Check everything before reporting anything.
    let config = RefConfig {
        size_ms: cli.window_size_ms,
        frame_offset_ms: cli.frame.offset_ms(),
        allowed_lateness_ms: cli
            .lateness_ms()
            .map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
        max_events: cli.max_events,
    };
    let verify = if cli.connections > 1 {
        verify_unordered
    } else {
        verify
    };
    let (checked, fire) = verify(
        kind,
        transport,
        &data,
        config,
        &timed.replies,
        &timed.sent,
        &fired_lines,
        &stats.text,
        flushed.as_ref().map(|(r, _)| r.text.as_str()),
    )?;

    let seconds = (timed.last_reply - timed.first_sent).as_secs_f64();
    let q = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            Value::Null
        } else {
            h.value_at_quantile(q).into()
        }
    };
    let summary = serde_json::json!({
        "name": cli.name,
        "transport": format!("{transport:?}"),
        "request": format!("{kind:?}"),
        "node": cli.node.display().to_string(),
        "node_args": cli.node_args,
        "events": total_events,
        "requests": requests,
        "batch": cli.batch,
        "in_flight": cli.in_flight,
        "connections": cli.connections,
        "nodes": conn.tcp.len().max(1),
        "input_bytes": input_bytes,
        "seconds": seconds,
        "events_per_s": total_events as f64 / seconds.max(1e-9),
        "ack_p50_us": q(&timed.ack, 0.5),
        "ack_p99_us": q(&timed.ack, 0.99),
        "ack_p999_us": q(&timed.ack, 0.999),
        "ack_max_us": q(&timed.ack, 1.0),
        "fire_p50_us": q(&fire, 0.5),
        "fire_p99_us": q(&fire, 0.99),
        "fire_p999_us": q(&fire, 0.999),
        "ready_ms": ready.as_secs_f64() * 1000.0,
        "cpu_seconds": cpu_seconds,
        "peak_rss_kib": peak_rss_kib,
        "baseline_rss_kib": baseline_rss_kib,
        "rss_buffered_kib": rss_buffered_kib,
        "buffered_events": checked.buffered_events,
        "open_windows": checked.open_windows,
        "accepted": checked.accepted,
        "duplicates": checked.duplicates,
        "late": checked.late,
        "emitted_windows": checked.emitted_windows,
        "verified": true,
    });
    let text = serde_json::to_string_pretty(&summary)? + "\n";
    match &cli.output {
        Some(path) => {
            fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => io::stdout().write_all(text.as_bytes())?,
    }
    Ok(())
}

/// Sends every request, at most `in_flight` unanswered at a time, while a reader thread times
/// the replies.
fn timed_phase(
    mut writer: Box<dyn Write + Send>,
    mut reader: Box<dyn BufRead + Send>,
    lines: Vec<String>,
    sizes: &[usize],
    in_flight: usize,
    progress: &ProgressBar,
    gate: Option<(Arc<Gate>, Vec<usize>)>,
) -> anyhow::Result<Timed> {
    let (gate, indices) = match gate {
        Some((gate, indices)) => (Some(gate), indices),
        None => (None, Vec::new()),
    };
    let writer_gate = gate.clone();
    let writer_indices = indices.clone();
    let requests = lines.len();
    // A permit per unanswered request: the writer takes one, the reader gives it back.
    let (permit_tx, permit_rx) = mpsc::sync_channel::<()>(in_flight);
    let (sent_tx, sent_rx) = mpsc::channel::<Instant>();
    let first_sent = Instant::now();
    let writer_thread = thread::spawn(move || -> io::Result<Box<dyn Write + Send>> {
        for (k, line) in lines.iter().enumerate() {
            if permit_tx.send(()).is_err() {
                break;
            }
            if let Some(gate) = &writer_gate {
                gate.wait_for(writer_indices[k]);
            }
            // The clock starts before the first byte: a slow pipe is part of the latency.
            if sent_tx.send(Instant::now()).is_err() {
                break;
            }
            writer.write_all(line.as_bytes())?;
            writer.flush()?;
        }
        Ok(writer)
    });
    let sizes = sizes.to_vec();
    let progress = progress.clone();
    let reader_thread = thread::spawn(move || -> anyhow::Result<Timed> {
        let mut replies = Vec::with_capacity(requests);
        let mut fired = Vec::new();
        let mut ack = histogram();
        let mut sent_at = Vec::with_capacity(requests);
        let mut pending = VecDeque::new();
        let mut last_reply = first_sent;
        while replies.len() < requests {
            let context = format!("after {} of {requests} replies", replies.len());
            let got = read_line(reader.as_mut(), &context)?;
            if message_type(&got.text) == "window_closed" {
                fired.push(got);
                continue;
            }
            // Replies come in request order, so the oldest send time is this reply's.
            while pending.is_empty() {
                pending.push_back(
                    sent_rx
                        .recv()
                        .map_err(|_| anyhow!("a reply before its request"))?,
                );
            }
            let sent = pending.pop_front().unwrap_or(first_sent);
            ack.saturating_record(micros(got.at - sent));
            sent_at.push(sent);
            last_reply = got.at;
            if let Some(gate) = &gate {
                gate.ack(indices[replies.len()]);
            }
            progress.inc(sizes[replies.len()] as u64);
            replies.push(got);
            // Give the permit back (the writer may be gone if it failed).
            let _ = permit_rx.recv();
        }
        drop(permit_rx);
        Ok(Timed {
            replies,
            fired,
            ack,
            sent: sent_at,
            first_sent,
            last_reply,
            reader,
            writer: Box::new(io::sink()),
        })
    });
    let read = reader_thread
        .join()
        .map_err(|_| anyhow!("the reader thread panicked"))?;
    let written = writer_thread
        .join()
        .map_err(|_| anyhow!("the writer thread panicked"))?;
    let mut timed = read?;
    timed.writer = written.context("writing requests")?;
    Ok(timed)
}

/// Keeps several connections within `span` requests of each other: request `i` is written only
/// once every request before `i - span` has its reply. Without it one connection could run far
/// ahead of another, and its events would make the other's late.
#[derive(Debug)]
struct Gate {
    /// (acknowledged, by request; the lowest request not yet acknowledged).
    state: std::sync::Mutex<(Vec<bool>, usize)>,
    changed: std::sync::Condvar,
    span: usize,
}

impl Gate {
    fn new(requests: usize, span: usize) -> Gate {
        Gate {
            state: std::sync::Mutex::new((vec![false; requests], 0)),
            changed: std::sync::Condvar::new(),
            span: span.max(1),
        }
    }

    fn wait_for(&self, request: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.1 + self.span <= request {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn ack(&self, request: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (acked, low) = &mut *state;
        acked[request] = true;
        while *low < acked.len() && acked[*low] {
            *low += 1;
        }
        self.changed.notify_all();
    }
}

/// Runs [`timed_phase`] on every connection at once, request `i` on connection
/// `i % connections`, and merges the results by request. The first connection comes back for
/// the control requests.
fn timed_phase_many(
    links: Vec<(Box<dyn Write + Send>, Box<dyn BufRead + Send>)>,
    lines: Vec<String>,
    sizes: &[usize],
    in_flight: usize,
    progress: &ProgressBar,
) -> anyhow::Result<Timed> {
    let n = links.len();
    if n == 1 {
        let (writer, reader) = links.into_iter().next().context("a connection")?;
        return timed_phase(writer, reader, lines, sizes, in_flight, progress, None);
    }
    let gate = Arc::new(Gate::new(lines.len(), n * in_flight));
    let mut parts: Vec<(Vec<String>, Vec<usize>, Vec<usize>)> =
        vec![(Vec::new(), Vec::new(), Vec::new()); n];
    for (i, line) in lines.into_iter().enumerate() {
        parts[i % n].0.push(line);
        parts[i % n].1.push(sizes[i]);
        parts[i % n].2.push(i);
    }
    let results: Vec<anyhow::Result<Timed>> = thread::scope(|scope| {
        let handles: Vec<_> = links
            .into_iter()
            .zip(parts)
            .map(|((writer, reader), (lines, sizes, indices))| {
                let gate = Some((Arc::clone(&gate), indices));
                scope.spawn(move || {
                    timed_phase(writer, reader, lines, &sizes, in_flight, progress, gate)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a connection thread panicked")))
            })
            .collect()
    });
    let timed: Vec<Timed> = results.into_iter().collect::<anyhow::Result<_>>()?;
    let total: usize = timed.iter().map(|t| t.replies.len()).sum();
    let mut replies: Vec<Option<Received>> = (0..total).map(|_| None).collect();
    let mut sent = vec![None; total];
    let mut ack = histogram();
    let mut fired = Vec::new();
    let first_sent = timed
        .iter()
        .map(|t| t.first_sent)
        .min()
        .context("no connection")?;
    let last_reply = timed
        .iter()
        .map(|t| t.last_reply)
        .max()
        .context("no connection")?;
    let mut first = None;
    for (c, t) in timed.into_iter().enumerate() {
        ack.add(&t.ack)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        fired.extend(t.fired);
        for (k, (reply, at)) in t.replies.into_iter().zip(t.sent).enumerate() {
            replies[k * n + c] = Some(reply);
            sent[k * n + c] = Some(at);
        }
        if c == 0 {
            first = Some((t.writer, t.reader));
        }
    }
    let (writer, reader) = first.context("no first connection")?;
    Ok(Timed {
        replies: replies
            .into_iter()
            .collect::<Option<_>>()
            .context("a reply is missing")?,
        fired,
        ack,
        sent: sent
            .into_iter()
            .collect::<Option<_>>()
            .context("a send time is missing")?,
        first_sent,
        last_reply,
        reader,
        writer,
    })
}

/// What the check found, for the summary.
struct Checked {
    accepted: u64,
    duplicates: u64,
    late: u64,
    buffered_events: usize,
    open_windows: usize,
    emitted_windows: usize,
}

/// Compares every reply, every emitted window and the final stats and flush with the reference.
///
/// Also returns the fire latency of every window that fired on its own: from the write of the
/// request whose events made it fire (the reference knows which) to the read of its line.
#[allow(clippy::too_many_arguments)]
fn verify(
    kind: RequestKind,
    transport: Transport,
    data: &Dataset,
    config: RefConfig,
    replies: &[Received],
    sent: &[Instant],
    fired: &[Received],
    stats: &str,
    flushed: Option<&str>,
) -> anyhow::Result<(Checked, Histogram<u64>)> {
    let mut reference = Reference::new(config);
    let mut expected_fired: Vec<RefClosed> = Vec::new();
    // The request whose events fired each expected window.
    let mut fired_by: Vec<usize> = Vec::new();
    ensure!(
        replies.len() == data.requests(),
        "{} replies to {} requests",
        replies.len(),
        data.requests()
    );
    for (i, reply) in replies.iter().enumerate() {
        let batch = data.reference_batch(i);
        let body = body(&reply.text)?;
        let msg_id = i as u64 + 1;
        ensure!(
            body.get("in_reply_to").and_then(Value::as_u64) == Some(msg_id),
            "reply {i} is not to msg_id {msg_id}: {:.300}",
            reply.text
        );
        let what = body.get("type").and_then(Value::as_str).unwrap_or_default();
        ensure!(
            what != "error",
            "request {msg_id} failed: {:.500}",
            reply.text
        );
        match kind {
            RequestKind::ProcessWindow => {
                ensure!(what == "window_result", "reply {msg_id} is {what}");
                let got = windows_of(&body, "windows", &reference)?;
                let want = reference.group(&batch);
                compare_windows(
                    &got,
                    &want,
                    &reference,
                    &format!("window_result of request {msg_id}"),
                )?;
            }
            RequestKind::Assign => {
                ensure!(what == "assigned", "reply {msg_id} is {what}");
                check_assigned(&body, &batch, &reference, msg_id)?;
            }
            RequestKind::Ingest => {
                ensure!(what == "ingest_ok", "reply {msg_id} is {what}");
            }
        }
        let admitted = reference.admit(&batch);
        if kind == RequestKind::Ingest {
            let counts =
                ["accepted", "duplicates", "late"].map(|k| body.get(k).and_then(Value::as_u64));
            ensure!(
                counts
                    == [
                        Some(admitted.accepted),
                        Some(admitted.duplicates),
                        Some(admitted.late)
                    ],
                "ingest_ok of request {msg_id} counts {counts:?}, expected {admitted:?}"
            );
        }
        let emitted = reference.take_emitted();
        fired_by.extend(std::iter::repeat_n(i, emitted.len()));
        expected_fired.extend(emitted);
    }

    // Every window that fired on its own, in order, with dense seq numbers. Over TCP the
    // subscription also carries the flushed windows, after those.
    ensure!(
        fired.len() >= expected_fired.len(),
        "the node emitted {} windows, the reference {} on their own",
        fired.len(),
        expected_fired.len()
    );
    let (own, flush_lines) = fired.split_at(expected_fired.len());
    ensure!(
        transport == Transport::Tcp || flush_lines.is_empty(),
        "the node emitted {} windows on its own, the reference {}",
        fired.len(),
        expected_fired.len()
    );
    let mut fire = histogram();
    for (n, (line, want)) in own.iter().zip(&expected_fired).enumerate() {
        check_emitted(line, &want.window, want.reason, n as u64, &reference)?;
        fire.saturating_record(micros(line.at.saturating_duration_since(sent[fired_by[n]])));
    }

    let totals = reference.totals();
    let stats = body(stats)?;
    let field = |k: &str| stats.get(k).and_then(Value::as_u64);
    let want = [
        ("accepted", totals.accepted),
        ("duplicates", totals.duplicates),
        ("late", totals.late),
        ("buffered_events", reference.buffered_events() as u64),
        ("open_windows", reference.open_windows() as u64),
    ];
    for (name, value) in want {
        ensure!(
            field(name) == Some(value),
            "stats {name} is {:?}, expected {value}",
            field(name)
        );
    }
    let checked = Checked {
        accepted: totals.accepted,
        duplicates: totals.duplicates,
        late: totals.late,
        buffered_events: reference.buffered_events(),
        open_windows: reference.open_windows(),
        emitted_windows: fired.len(),
    };
    let want = if flushed.is_some() {
        reference.flush()
    } else {
        Vec::new()
    };
    if let Some(flushed) = flushed {
        let body = body(flushed)?;
        let got = windows_of(&body, "windows", &reference)?;
        compare_windows(&got, &want, &reference, "the final flush")?;
    }
    if transport == Transport::Tcp {
        ensure!(
            flush_lines.len() == want.len(),
            "the subscription carried {} flushed windows, the flush returned {}",
            flush_lines.len(),
            want.len()
        );
        for (n, (line, window)) in flush_lines.iter().zip(&want).enumerate() {
            let seq = (own.len() + n) as u64;
            check_emitted(line, window, "flush", seq, &reference)?;
        }
    }
    Ok((checked, fire))
}

/// The check for several connections, where the order in which the daemon saw the requests is
/// unknown: every request answered with `ingest_ok`, the totals (replies and stats) equal the
/// reference's, the seq numbers are dense, and every window's panes keep the rule that holds in
/// any order ([`window_bench::panes`]): under `--max-events N` each `length` pane holds exactly
/// N ids, a window of C ids fires C / N of them and then, if it left the open state with ids
/// left, one last `watermark` or `flush` pane of C % N; the panes are disjoint and together the
/// window's ids. `run` only allows workloads where order cannot make an event late. No fire
/// latency: which request fired a window depends on the order.
#[allow(clippy::too_many_arguments)]
fn verify_unordered(
    kind: RequestKind,
    _transport: Transport,
    data: &Dataset,
    config: RefConfig,
    replies: &[Received],
    _sent: &[Instant],
    fired: &[Received],
    stats: &str,
    flushed: Option<&str>,
) -> anyhow::Result<(Checked, Histogram<u64>)> {
    ensure!(
        kind == RequestKind::Ingest,
        "several connections send ingest only"
    );
    let mut reference = Reference::new(config);
    let mut want = Expected::new();
    let mut summed = [0u64; 3];
    for (i, reply) in replies.iter().enumerate() {
        let body = body(&reply.text)?;
        let msg_id = i as u64 + 1;
        ensure!(
            body.get("in_reply_to").and_then(Value::as_u64) == Some(msg_id),
            "reply {i} is not to msg_id {msg_id}: {:.300}",
            reply.text
        );
        let what = body.get("type").and_then(Value::as_str).unwrap_or_default();
        ensure!(
            what == "ingest_ok",
            "request {msg_id} answered {:.500}",
            reply.text
        );
        for (sum, k) in summed.iter_mut().zip(["accepted", "duplicates", "late"]) {
            *sum += body
                .get(k)
                .and_then(Value::as_u64)
                .context("ingest_ok counts")?;
        }
        reference.admit(&data.reference_batch(i));
        for closed in reference.take_emitted() {
            want.fired(closed);
        }
    }
    let totals = reference.totals();
    ensure!(
        summed == [totals.accepted, totals.duplicates, totals.late],
        "ingest_ok counts add up to {summed:?}, the reference to {totals:?}"
    );
    let stats = body(stats)?;
    for (name, value) in [
        ("accepted", totals.accepted),
        ("duplicates", totals.duplicates),
        ("late", totals.late),
    ] {
        let got = stats.get(name).and_then(Value::as_u64);
        ensure!(
            got == Some(value),
            "stats {name} is {got:?}, expected {value}"
        );
    }
    let checked = Checked {
        accepted: totals.accepted,
        duplicates: totals.duplicates,
        late: totals.late,
        buffered_events: reference.buffered_events(),
        open_windows: reference.open_windows(),
        emitted_windows: fired.len(),
    };
    if flushed.is_some() {
        for window in reference.flush() {
            want.fired(RefClosed {
                window,
                reason: "flush",
            });
        }
    } else {
        // Windows still open at the end: their buffered ids are theirs too, but not emitted.
        for pane in reference.open_panes() {
            want.buffered(pane);
        }
    }
    let mut got: BTreeMap<WindowOf, Vec<EmittedPane>> = BTreeMap::new();
    // A partitioned namespace (`serve --partitions`) numbers each partition's log apart.
    let mut seqs: BTreeMap<Option<u64>, Vec<u64>> = BTreeMap::new();
    for line in fired {
        let body = body(&line.text)?;
        let window = window_of(&body, &reference)?;
        let seq = body.get("seq").and_then(Value::as_u64).context("seq")?;
        let partition = body.get("partition").and_then(Value::as_u64);
        let reason = body
            .get("reason")
            .and_then(Value::as_str)
            .context("reason")?;
        got.entry((window.start, window.key))
            .or_default()
            .push(EmittedPane {
                seq,
                reason: reason.to_owned(),
                ids: window.ids,
            });
        seqs.entry(partition).or_default().push(seq);
    }
    for (partition, seqs) in &mut seqs {
        seqs.sort_unstable();
        ensure!(
            seqs.iter().enumerate().all(|(i, &s)| s == i as u64),
            "the emitted windows' seq numbers{} are not 0..{}",
            partition.map_or(String::new(), |p| format!(" of partition {p}")),
            seqs.len()
        );
    }
    // Every window's panes: sizes (exactly --max-events for a length pane), order (at most one
    // other pane, last), reason of the last one, and ids (disjoint, together the window's).
    check_panes(&reference, &want, &got)?;
    Ok((checked, histogram()))
}

/// Checks one `window_closed` the node emitted: content, reason and sequence number.
fn check_emitted(
    line: &Received,
    want: &RefWindow,
    reason: &str,
    seq: u64,
    reference: &Reference,
) -> anyhow::Result<()> {
    let body = body(&line.text)?;
    let got = window_of(&body, reference)?;
    compare_windows(
        &[got],
        std::slice::from_ref(want),
        reference,
        &format!("emitted window {seq}"),
    )?;
    let got_reason = body.get("reason").and_then(Value::as_str);
    ensure!(
        got_reason == Some(reason),
        "emitted window {seq} has reason {got_reason:?}, expected {reason}"
    );
    let got_seq = body.get("seq").and_then(Value::as_u64);
    ensure!(
        got_seq == Some(seq),
        "emitted window {seq} has seq {got_seq:?}"
    );
    Ok(())
}

/// The body of a message line (bare, or inside an envelope).
fn body(line: &str) -> anyhow::Result<Value> {
    let mut value: Value =
        serde_json::from_str(line).with_context(|| format!("not JSON: {line:.300}"))?;
    Ok(match value.get_mut("body") {
        Some(body) => body.take(),
        None => value,
    })
}

/// A window entry as the node wrote it, in the reference's terms. The start comes from the
/// window id; ids are normalized as the reference writes them.
fn window_of(entry: &Value, reference: &Reference) -> anyhow::Result<RefWindow> {
    let id = entry
        .get("window_id")
        .and_then(Value::as_str)
        .context("window_id")?;
    let label: i64 = id
        .strip_prefix("window-")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("window_id {id:?}"))?;
    let start = label + reference.config().frame_offset_ms;
    let ids = entry
        .get("events")
        .and_then(Value::as_array)
        .context("events")?;
    let ids: Vec<String> = ids.iter().map(normalize_id).collect();
    let count = entry
        .get("count")
        .and_then(Value::as_u64)
        .context("count")?;
    ensure!(
        count == ids.len() as u64,
        "window {id} says count {count} but lists {} ids",
        ids.len()
    );
    Ok(RefWindow {
        start,
        key: entry.get("key").and_then(Value::as_str).map(str::to_owned),
        ids,
        sum: entry.get("sum").and_then(Value::as_f64),
    })
}

fn windows_of(body: &Value, field: &str, reference: &Reference) -> anyhow::Result<Vec<RefWindow>> {
    body.get(field)
        .and_then(Value::as_array)
        .with_context(|| format!("no {field} array"))?
        .iter()
        .map(|w| window_of(w, reference))
        .collect()
}

fn compare_windows(
    got: &[RefWindow],
    want: &[RefWindow],
    reference: &Reference,
    what: &str,
) -> anyhow::Result<()> {
    if got == want {
        return Ok(());
    }
    let describe = |w: Option<&RefWindow>| match w {
        Some(w) => format!(
            "{} key {:?}: {} ids [{}{}] sum {:?}",
            reference.window_id(w.start),
            w.key,
            w.ids.len(),
            w.ids.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            if w.ids.len() > 5 { ", ..." } else { "" },
            w.sum
        ),
        None => "nothing".to_owned(),
    };
    let first = (0..got.len().max(want.len()))
        .find(|&i| got.get(i) != want.get(i))
        .unwrap_or(0);
    bail!(
        "{what} differs from the reference at window {first} ({} windows from the node, {} expected):\n  node:      {}\n  reference: {}",
        got.len(),
        want.len(),
        describe(got.get(first)),
        describe(want.get(first))
    )
}

fn check_assigned(
    body: &Value,
    batch: &[RefEvent],
    reference: &Reference,
    msg_id: u64,
) -> anyhow::Result<()> {
    let first = &batch[0];
    let want_first = reference.window_id(reference.start_of(first.ts_ms));
    let got_first = body.get("window_id").and_then(Value::as_str);
    ensure!(
        got_first == Some(want_first.as_str()),
        "assigned {msg_id}: window_id {got_first:?}, expected {want_first}"
    );
    if batch.len() == 1 {
        return Ok(());
    }
    let list = body
        .get("assignments")
        .and_then(Value::as_array)
        .context("assignments")?;
    ensure!(
        list.len() == batch.len(),
        "assigned {msg_id}: {} assignments for {} events",
        list.len(),
        batch.len()
    );
    for (n, (entry, event)) in list.iter().zip(batch).enumerate() {
        let want = reference.window_id(reference.start_of(event.ts_ms));
        let got = entry.get("window_id").and_then(Value::as_str);
        ensure!(
            got == Some(want.as_str()),
            "assigned {msg_id}, event {n}: window_id {got:?}, expected {want}"
        );
        let id = entry.get("id").map(normalize_id);
        ensure!(
            id.as_deref() == Some(event.id.as_str()),
            "assigned {msg_id}, event {n}: id {id:?}, expected {}",
            event.id
        );
    }
    Ok(())
}
