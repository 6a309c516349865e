//! The client side of a run: starting the node (stdin node or `serve`) or joining running ones,
//! connections, the subscriber that collects fired windows, and one request at a time with its
//! latency.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use window_proto::Kind;

use anyhow::{Context, anyhow, bail, ensure};
use hdrhistogram::Histogram;
use window_testkit::{Node, Process, Stderr};

use crate::options::Cli;

/// How loadgen reaches a node: lines out, lines in, the process to measure (when loadgen
/// started it) and, over TCP, the nodes' addresses: this connection's and the subscriber's is
/// the first; further connections go round robin over all of them.
pub(crate) struct Connection {
    pub(crate) writer: Box<dyn Write + Send>,
    pub(crate) reader: Box<dyn BufRead + Send>,
    pub(crate) child: Option<Process>,
    pub(crate) tcp: Vec<SocketAddr>,
}

pub(crate) fn connect(cli: &Cli) -> anyhow::Result<Connection> {
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
        if !named("--data-dir") && !named("--memory") && !named("--store") {
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

pub(crate) fn connect_retrying(
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

/// The connections that receive fired windows until `stop` is called, with the time each was
/// read: one subscriber of every window from seq 0, or the members of one consumer group
/// (created at seq 0), each acknowledging every window it gets.
pub(crate) struct Subscriber {
    streams: Vec<TcpStream>,
    /// Windows received; for a group, distinct seqs (a group delivers at least once: a window
    /// may come again, with `delivery` above 1, and a consumer drops the repeat by seq).
    count: Arc<AtomicUsize>,
    /// A group's seqs received so far.
    seqs: Arc<Mutex<HashSet<u64>>>,
    threads: Vec<thread::JoinHandle<anyhow::Result<Vec<Received>>>>,
}

impl Subscriber {
    /// One subscriber (`members` 0), or `members` members of group `loadgen`.
    pub(crate) fn start(addr: SocketAddr, members: usize) -> anyhow::Result<Subscriber> {
        let count = Arc::new(AtomicUsize::new(0));
        let mut subscriber = Subscriber {
            streams: Vec::new(),
            count,
            seqs: Arc::default(),
            threads: Vec::new(),
        };
        let request: &[u8] = if members == 0 {
            b"{\"type\":\"subscribe\",\"msg_id\":0,\"from_seq\":0}\n"
        } else {
            b"{\"type\":\"subscribe\",\"msg_id\":0,\"from_seq\":0,\"group\":\"loadgen\"}\n"
        };
        for _ in 0..members.max(1) {
            let mut stream = connect_retrying(addr, None, Duration::from_secs(5))?;
            stream.write_all(request)?;
            let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone()?);
            let ok = read_line(&mut reader, "before subscribe_ok")?;
            ensure!(
                message_type(&ok.text) == Kind::SubscribeOk.as_str(),
                "subscribe answered {:.300}",
                ok.text
            );
            let acks = (members > 0).then(|| stream.try_clone()).transpose()?;
            let counted = Arc::clone(&subscriber.count);
            let seqs = Arc::clone(&subscriber.seqs);
            subscriber.threads.push(thread::spawn(move || {
                receive(reader, acks, &counted, &seqs)
            }));
            subscriber.streams.push(stream);
        }
        Ok(subscriber)
    }

    /// Waits until `expected` windows have come (at most `patience`), then hangs up. A group's
    /// windows come back in seq order.
    pub(crate) fn stop(self, expected: usize, patience: Duration) -> anyhow::Result<Vec<Received>> {
        let start = Instant::now();
        while self.count.load(Ordering::Acquire) < expected && start.elapsed() < patience {
            thread::sleep(Duration::from_millis(2));
        }
        for stream in &self.streams {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let mut got = Vec::new();
        for thread in self.threads {
            got.extend(
                thread
                    .join()
                    .map_err(|_| anyhow!("the subscriber thread panicked"))??,
            );
        }
        if self.streams.len() > 1 {
            got.sort_by_key(|r| seq_of(&r.text));
            // A repeat (a redelivery) is dropped by seq, as a group's consumer does.
            let before = got.len();
            got.dedup_by_key(|r| seq_of(&r.text));
            if got.len() < before {
                eprintln!(
                    "loadgen: the group delivered {} window(s) again (at least once); repeats dropped by seq",
                    before - got.len()
                );
            }
        }
        Ok(got)
    }
}

/// Reads windows until the connection ends; a group member (`acks`) acknowledges each, in one
/// `ack` per burst of windows read (as a client that processes what it has, then acks it).
fn receive(
    mut reader: BufReader<TcpStream>,
    mut acks: Option<TcpStream>,
    counted: &AtomicUsize,
    seqs: &Mutex<HashSet<u64>>,
) -> anyhow::Result<Vec<Received>> {
    let mut got = Vec::new();
    let mut unacked: Vec<u64> = Vec::new();
    loop {
        let mut text = String::new();
        match reader.read_line(&mut text) {
            Ok(0) | Err(_) => return Ok(got),
            Ok(_) => {}
        }
        let at = Instant::now();
        let kind = message_type(&text);
        if kind == Kind::AckOk.as_str() {
            continue;
        }
        ensure!(
            kind == Kind::WindowClosed.as_str(),
            "the subscription sent {kind}: {text:.300}"
        );
        if let Some(acks) = &mut acks {
            unacked.push(seq_of(&text));
            if reader.buffer().is_empty() {
                let seqs: Vec<String> = unacked.drain(..).map(|s| s.to_string()).collect();
                let ack = format!("{{\"type\":\"ack\",\"seqs\":[{}]}}\n", seqs.join(","));
                if acks.write_all(ack.as_bytes()).is_err() {
                    return Ok(got);
                }
            }
        }
        if acks.is_some() {
            let mut seqs = seqs
                .lock()
                .map_err(|_| anyhow!("a member thread panicked"))?;
            seqs.insert(seq_of(&text));
            counted.store(seqs.len(), Ordering::Release);
        } else {
            counted.fetch_add(1, Ordering::Release);
        }
        got.push(Received { text, at });
    }
}

/// The `seq` of a window line (0 when it has none).
fn seq_of(line: &str) -> u64 {
    line.rfind("\"seq\":")
        .and_then(|at| {
            let digits: String = line[at + 6..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

/// One line the node wrote, and when it was read.
pub(crate) struct Received {
    pub(crate) text: String,
    pub(crate) at: Instant,
}

/// Reads one line; an end of output is an error (the node must answer everything).
pub(crate) fn read_line(reader: &mut dyn BufRead, context: &str) -> anyhow::Result<Received> {
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
pub(crate) fn message_type(line: &str) -> &str {
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
pub(crate) fn request(
    conn: &mut Connection,
    line: &str,
    unsolicited: &mut Vec<Received>,
) -> anyhow::Result<(Received, Duration)> {
    let sent = Instant::now();
    conn.writer.write_all(line.as_bytes())?;
    conn.writer.flush()?;
    loop {
        let got = read_line(conn.reader.as_mut(), "before answering a control request")?;
        if message_type(&got.text) == Kind::WindowClosed.as_str() {
            unsolicited.push(got);
        } else {
            let latency = got.at - sent;
            return Ok((got, latency));
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, three significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!())
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}
