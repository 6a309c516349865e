//! The client side of a run: starting the node (stdin node or `serve`) or joining running ones,
//! connections, the subscriber that collects fired windows, and one request at a time with its
//! latency.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// A second connection that subscribes to every fired window from seq 0 and collects them,
/// with the time each was read, until `stop` is called.
pub(crate) struct Subscriber {
    stream: TcpStream,
    count: Arc<AtomicUsize>,
    thread: thread::JoinHandle<anyhow::Result<Vec<Received>>>,
}

impl Subscriber {
    pub(crate) fn start(addr: SocketAddr) -> anyhow::Result<Subscriber> {
        let mut stream = connect_retrying(addr, None, Duration::from_secs(5))?;
        stream.write_all(b"{\"type\":\"subscribe\",\"msg_id\":0,\"from_seq\":0}\n")?;
        let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone()?);
        let ok = read_line(&mut reader, "before subscribe_ok")?;
        ensure!(
            message_type(&ok.text) == Kind::SubscribeOk.as_str(),
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
                    kind == Kind::WindowClosed.as_str(),
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
    pub(crate) fn stop(self, expected: usize, patience: Duration) -> anyhow::Result<Vec<Received>> {
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
