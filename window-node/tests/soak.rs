//! The soak scenario: each of the daemon's memory limits driven past itself with real
//! connections, and the daemon's peak resident memory (`VmHWM`) held to a stated bound: the
//! memory at start plus what the limit allows plus a fixed allowance for the rest.
//!
//! Every test run drives it small. `cargo xtask soak` drives it at `SOAK_SCALE` times that with
//! an optimized build and has the figures written (`SOAK_REPORT`) into `bench/report.md`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use window_testkit::procfs::{Pid, peak_rss_kib, rss_kib};
use window_testkit::{Conn, Node, WAIT, temp_dir, window_node_binary};

/// 2024-01-15T08:00:00Z.
const BASE: i64 = 1_705_305_600_000;
/// What the daemon may hold beyond its memory at start and the limit under test: the runtime's
/// buffers, the allocator's slack, one request being parsed.
const ALLOWANCE_MIB: u64 = 96;

fn scale() -> u64 {
    std::env::var("SOAK_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s >= 1)
        .unwrap_or(1)
}

/// One limit's figures.
struct Figure {
    limit: &'static str,
    setting: String,
    driven: String,
    start_mib: f64,
    peak_mib: f64,
    bound_mib: f64,
}

fn start(dir: &Path, args: &[String]) -> Node {
    let mut all = vec!["--data-dir".to_owned(), dir.display().to_string()];
    all.extend(args.iter().cloned());
    Node::start(window_node_binary(), all).expect("start the daemon")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn memory(node: &Node) -> (u64, u64) {
    let pid = Pid::Other(node.process.id());
    (
        rss_kib(pid).expect("the daemon's VmRSS"),
        peak_rss_kib(pid).expect("the daemon's VmHWM"),
    )
}

/// Checks the peak against the bound (`base_kib`, the memory at start or that of a control
/// run, plus what the limit allows, plus the allowance) and returns the figure.
fn figure(
    node: &Node,
    base_kib: u64,
    limit: &'static str,
    setting: String,
    driven: String,
    limit_bytes: u64,
) -> Figure {
    let (_, peak) = memory(node);
    let bound_kib = base_kib + limit_bytes / 1024 + ALLOWANCE_MIB * 1024;
    assert!(
        peak <= bound_kib,
        "{limit} {setting}, {driven}: peak RSS {:.1} MiB over the bound {:.1} MiB",
        mib(peak),
        mib(bound_kib)
    );
    Figure {
        limit,
        setting,
        driven,
        start_mib: mib(base_kib),
        peak_mib: mib(peak),
        bound_mib: mib(bound_kib),
    }
}

/// `--max-open-windows`: events with a key each open a window each, half again as many as the
/// limit allows; the requests past it are refused whole with error 11.
fn open_windows() -> Figure {
    let limit = 20_000 * scale();
    let dir = temp_dir();
    let node = start(
        dir.path(),
        &[
            "--window-size".into(),
            "1h".into(),
            "--allowed-lateness".into(),
            "1h".into(),
            "--max-open-windows".into(),
            limit.to_string(),
        ],
    );
    let (start_kib, _) = memory(&node);
    let mut client = Conn::open(node.addr).expect("connect");
    let per_request = 1000;
    let requests = limit * 3 / 2 / per_request;
    let mut refused = 0;
    for r in 0..requests {
        let events: Vec<String> = (0..per_request)
            .map(|i| {
                let n = r * per_request + i;
                format!(
                    r#"{{"id":{n},"timestamp":{},"key":"key-{n:09}"}}"#,
                    BASE + n as i64 % 1000
                )
            })
            .collect();
        let reply = client.request(&format!(
            r#"{{"type":"ingest","msg_id":{},"events":[{}]}}"#,
            r + 1,
            events.join(",")
        ));
        match reply["type"].as_str() {
            Some("ingest_ok") => {}
            Some("error") if reply["code"] == 11 => refused += 1,
            _ => panic!("unexpected reply {reply}"),
        }
    }
    assert!(
        refused >= requests / 4,
        "{refused} of {requests} requests refused"
    );
    let stats = client.request(r#"{"type":"stats","msg_id":999999}"#);
    assert!(
        stats["open_windows"].as_u64().expect("open_windows") <= limit,
        "{stats}"
    );
    // A window's share of the limit: what one open window with one event holds (its key, its
    // id set, the store's records of it, and the growth of the tables that hold them), at most
    // about 3 KiB.
    figure(
        &node,
        start_kib,
        "--max-open-windows",
        limit.to_string(),
        format!(
            "{} windows offered, {refused} requests refused",
            requests * per_request
        ),
        limit * 3 * 1024,
    )
}

/// `--max-buffered-line-bytes`: eight connections each send a quarter of the budget without a
/// newline; those that would cross it get error 11 and are closed.
fn partial_lines() -> Figure {
    let budget: u64 = 16 << 20;
    let budget = budget * scale();
    let dir = temp_dir();
    let node = start(
        dir.path(),
        &[
            "--max-buffered-line-bytes".into(),
            budget.to_string(),
            "--max-line-bytes".into(),
            (budget / 2).to_string(),
        ],
    );
    let (start_kib, _) = memory(&node);
    let chunk = vec![b'x'; 1 << 16];
    let share = budget / 4;
    let mut connections = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(node.addr).expect("connect");
        stream.set_write_timeout(Some(WAIT)).expect("timeout");
        let mut sent = 0;
        stream
            .write_all(b"{\"type\":\"ingest\",\"msg_id\":1,\"events\":[],\"pad\":\"")
            .expect("a line's start");
        // A connection the daemon closed fails a write: it was refused.
        while sent < share {
            if stream.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        connections.push(stream);
    }
    // Refused connections got error 11 and were closed; the others hold their lines.
    let mut refused = 0;
    for stream in &mut connections {
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        if String::from_utf8_lossy(&got).contains("\"code\":11") {
            refused += 1;
        }
    }
    assert!(
        refused >= 4,
        "{refused} of 8 connections refused at the budget"
    );
    figure(
        &node,
        start_kib,
        "--max-buffered-line-bytes",
        format!("{} MiB", budget >> 20),
        format!(
            "8 connections x {} MiB of one line, {refused} refused",
            share >> 20
        ),
        budget,
    )
}

/// `--subscriber-buffer-bytes`: four subscribers that never read while windows of long ids
/// fire; each is dropped once the windows held for it pass the limit. The bound starts from the
/// peak of the same run without them (the allocator keeps some of what a long run freed, so the
/// peak grows with the run's length whatever the subscribers do).
fn stalled_subscribers() -> Figure {
    let (control, _) = subscribers_run(0);
    let (_, (node, driven)) = subscribers_run(4);
    figure(
        &node,
        control,
        "--subscriber-buffer-bytes",
        format!("{} MiB", SUBSCRIBER_LIMIT >> 20),
        driven,
        SUBSCRIBER_LIMIT,
    )
}

const SUBSCRIBER_LIMIT: u64 = 8 << 20;

/// The subscriber run with `stalled` subscribers: the control's peak memory (KiB) with `0`, or
/// the node and what drove it.
fn subscribers_run(stalled_count: usize) -> (u64, (Node, String)) {
    let limit = SUBSCRIBER_LIMIT;
    let dir = temp_dir();
    let node = start(
        dir.path(),
        &[
            "--window-size".into(),
            "1s".into(),
            "--max-events".into(),
            "500".into(),
            "--subscriber-buffer-bytes".into(),
            limit.to_string(),
        ],
    );
    let mut stalled: Vec<TcpStream> = (0..stalled_count)
        .map(|_| {
            let mut stream = TcpStream::connect(node.addr).expect("connect");
            stream
                .write_all(b"{\"type\":\"subscribe\",\"msg_id\":1}\n")
                .expect("subscribe");
            stream
        })
        .collect();
    let mut client = Conn::open(node.addr).expect("connect");
    let padding = "x".repeat(190);
    let requests = 800 * scale();
    for r in 0..requests {
        let events: Vec<String> = (0..250)
            .map(|i| {
                let n = r * 250 + i;
                format!(
                    r#"{{"id":"{padding}-{n:09}","timestamp":{}}}"#,
                    BASE + n as i64
                )
            })
            .collect();
        let reply = client.request(&format!(
            r#"{{"type":"ingest","msg_id":{},"events":[{}]}}"#,
            r + 1,
            events.join(",")
        ));
        assert_eq!(reply["type"], "ingest_ok", "{reply}");
    }
    // Every stalled subscriber's connection ends.
    for stream in &mut stalled {
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut got = Vec::new();
        stream
            .read_to_end(&mut got)
            .expect("a stalled subscriber was never dropped");
    }
    let bytes = requests * 250 * 200;
    let peak = memory(&node).1;
    let driven = format!(
        "{stalled_count} subscribers that never read, {} MiB of windows fired (the base: the same run without them)",
        bytes >> 20
    );
    (peak, (node, driven))
}

#[test]
fn each_memory_limit_holds_the_daemon_under_its_bound() {
    let figures = [open_windows(), partial_lines(), stalled_subscribers()];
    let mut table = String::from(
        "| limit | set to | driven with | base | peak RSS | bound |\n|---|---|---|---|---|---|\n",
    );
    for f in &figures {
        let _ = writeln!(
            table,
            "| `{}` | {} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            f.limit, f.setting, f.driven, f.start_mib, f.peak_mib, f.bound_mib
        );
    }
    table.push_str(
        "\nbase: the daemon's RSS at start; for the subscribers, the peak of the same run without \
         them. bound: base + what the limit allows + 96 MiB for the rest.\n",
    );
    eprint!("{table}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        std::fs::write(&path, &table).expect("write the soak report");
    }
}
