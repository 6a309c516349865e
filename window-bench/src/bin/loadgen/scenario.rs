//! One run, from start to summary: check the options, build the requests, start or join the
//! node, the timed phase, the control requests (stats, flush), a clean stop, the check against
//! the reference, and only then the report.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use window_bench::RefConfig;
use window_testkit::procfs::{self, Pid};
use window_testkit::{Process, Signal};

use crate::client::{Connection, Received, Subscriber, connect, connect_retrying, request};
use crate::options::{Cli, Transport};
use crate::report::{self, Usage};
use crate::timed::{Timed, timed_phase_many};
use crate::verify::{Observed, body, verify, verify_unordered};
use crate::workload::dataset;

/// How long a node may take to exit once its input ended (or after SIGTERM).
const STOP: Duration = Duration::from_secs(60);
/// How long the subscription may take to bring the last fired windows.
const LAST_WINDOWS: Duration = Duration::from_secs(60);

/// Runs what `cli` asks for and writes its summary.
pub(crate) fn run(cli: &Cli) -> anyhow::Result<()> {
    let kind = cli.check()?;
    let transport = cli.transport();
    let data = dataset(cli)?;
    let requests = data.requests();
    // Request i has msg_id i + 1; msg_id 0 and those after the data are control requests.
    let lines: Vec<String> = (0..requests)
        .map(|i| data.line(kind, i as u64 + 1, i, cli.window_size_ms))
        .collect();
    let sizes: Vec<usize> = (0..requests).map(|i| data.events_in(i)).collect();
    let events: usize = sizes.iter().sum();
    let input_bytes: usize = lines.iter().map(String::len).sum();

    let spawned = Instant::now();
    let mut conn = connect(cli)?;
    let pid = conn.child.as_ref().map(Process::pid);
    let subscriber = conn
        .tcp
        .first()
        .copied()
        .map(|addr| Subscriber::start(addr, cli.group_members))
        .transpose()?;
    let ready = first_reply(&mut conn)?.at - spawned;
    let mut usage = Usage {
        baseline_rss_kib: pid.and_then(procfs::rss_kib),
        ..Usage::default()
    };

    let progress = progress_bar(cli, events);
    let timed = timed(&mut conn, cli, lines, &sizes, &progress)?;
    progress.finish_and_clear();
    let mut fired = timed.fired;
    let control = control(&mut conn, cli, requests, subscriber, &mut fired, pid)?;
    usage.rss_buffered_kib = control.rss_buffered_kib;
    usage.cpu_seconds = pid.and_then(procfs::cpu_seconds);
    usage.peak_rss_kib = pid.and_then(procfs::peak_rss_kib);
    let nodes = conn.tcp.len().max(1);
    stop(conn, transport)?;

    // Check everything before reporting anything.
    let config = RefConfig {
        size_ms: cli.window_size_ms,
        frame_offset_ms: cli.frame.offset_ms(),
        allowed_lateness_ms: cli
            .lateness_ms()
            .map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
        max_events: cli.max_events,
    };
    let seen = Observed {
        replies: &timed.replies,
        sent: &timed.sent,
        fired: &fired,
        stats: &control.stats.text,
        flushed: control.flushed.as_ref().map(|r| r.text.as_str()),
    };
    let (checked, fire) = if cli.connections > 1 {
        verify_unordered(kind, &data, config, &seen)?
    } else {
        verify(kind, transport, &data, config, &seen)?
    };
    report::write(
        cli,
        &report::Run {
            kind,
            transport,
            events,
            requests,
            nodes,
            input_bytes,
            elapsed: timed.last_reply - timed.first_sent,
            ready,
            ack: &timed.ack,
            fire: &fire,
            usage: &usage,
            checked: &checked,
        },
    )
}

/// Asks `stats` first: its reply says the node is up (with a data directory: recovered).
fn first_reply(conn: &mut Connection) -> anyhow::Result<Received> {
    let mut unsolicited = Vec::new();
    let (baseline, _) = request(
        conn,
        "{\"type\":\"stats\",\"msg_id\":0}\n",
        &mut unsolicited,
    )?;
    ensure!(
        unsolicited.is_empty(),
        "the node emitted windows before any event"
    );
    Ok(baseline)
}

fn progress_bar(cli: &Cli, events: usize) -> ProgressBar {
    if cli.no_progress {
        return ProgressBar::hidden();
    }
    let bar =
        ProgressBar::with_draw_target(Some(events as u64), ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {human_pos}/{human_len} events, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(cli.name.clone());
    bar
}

/// The timed phase over `conn` and `--connections - 1` more connections (round robin over the
/// nodes); `conn` gets its writer and reader back for the control requests.
fn timed(
    conn: &mut Connection,
    cli: &Cli,
    lines: Vec<String>,
    sizes: &[usize],
    progress: &ProgressBar,
) -> anyhow::Result<Timed> {
    let writer = std::mem::replace(&mut conn.writer, Box::new(io::sink()));
    let reader = std::mem::replace(&mut conn.reader, Box::new(io::empty()));
    let mut links = vec![(writer, reader)];
    for c in 1..cli.connections {
        ensure!(!conn.tcp.is_empty(), "--connections above 1 needs TCP");
        let addr = conn.tcp[c % conn.tcp.len()];
        let stream = connect_retrying(addr, None, Duration::from_secs(5))?;
        let writer: Box<dyn Write + Send> = Box::new(stream.try_clone()?);
        let reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 20, stream));
        links.push((writer, reader));
    }
    let mut timed = timed_phase_many(links, lines, sizes, cli.in_flight, progress)?;
    conn.writer = std::mem::replace(&mut timed.writer, Box::new(io::sink()));
    conn.reader = std::mem::replace(&mut timed.reader, Box::new(io::empty()));
    Ok(timed)
}

/// What the control requests after the data brought.
struct Control {
    /// `stats_ok`: the open state as the data left it.
    stats: Received,
    /// The final flush's reply, unless `--no-flush`.
    flushed: Option<Received>,
    /// The node's resident memory with that open state held.
    rss_buffered_kib: Option<u64>,
}

/// Sends the control requests after the data: `stats`, then `flush`. Windows that fire meanwhile
/// join `fired`; over TCP, where they reach the subscriber instead, `fired` becomes the
/// subscription's windows, once as many have come as `stats` and the flush say.
fn control(
    conn: &mut Connection,
    cli: &Cli,
    requests: usize,
    subscriber: Option<Subscriber>,
    fired: &mut Vec<Received>,
    pid: Option<Pid>,
) -> anyhow::Result<Control> {
    let next = requests as u64 + 1;
    let stats_line = format!("{{\"type\":\"stats\",\"msg_id\":{next}}}\n");
    let (stats, _) = request(conn, &stats_line, fired)?;
    let rss_buffered_kib = pid.and_then(procfs::rss_kib);
    let flushed = if cli.no_flush {
        None
    } else {
        let line = format!("{{\"type\":\"flush\",\"msg_id\":{}}}\n", next + 1);
        Some(request(conn, &line, fired)?.0)
    };
    if let Some(subscriber) = subscriber {
        // Over TCP fired windows reach subscribers, flushed ones included; the ingesting
        // connection gets replies only.
        ensure!(
            fired.is_empty(),
            "the daemon sent window_closed on an ingest connection"
        );
        let emitted = body(&stats.text)?
            .get("emitted_windows")
            .and_then(Value::as_u64)
            .context("emitted_windows in stats")? as usize;
        let flushed_count = match &flushed {
            Some(reply) => body(&reply.text)?
                .get("windows")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            None => 0,
        };
        *fired = subscriber.stop(emitted + flushed_count, LAST_WINDOWS)?;
    }
    Ok(Control {
        stats,
        flushed,
        rss_buffered_kib,
    })
}

/// Ends the run: closes the node's input (and sends the daemon SIGTERM, on which it drains and
/// exits), checks that nothing came after the last reply and that the node exits cleanly.
fn stop(conn: Connection, transport: Transport) -> anyhow::Result<()> {
    let Connection {
        writer,
        mut reader,
        child,
        ..
    } = conn;
    drop(writer);
    let Some(mut child) = child else {
        return Ok(());
    };
    if transport == Transport::Tcp {
        child.signal(Signal::Term)?;
    }
    // Anything after the last reply is a protocol violation.
    let mut rest = String::new();
    reader.read_to_string(&mut rest)?;
    let status = child.wait_exit(STOP)?;
    ensure!(
        status.success(),
        "{}",
        child.failure(&format!("exited with {status}"))
    );
    ensure!(
        rest.trim().is_empty(),
        "the node wrote after its last reply: {rest:.200}"
    );
    Ok(())
}
