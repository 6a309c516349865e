//! Several `serve` processes on one data directory: the coordinator is SIGKILLed again and again
//! under load from a client connected to the others. Every acknowledged event must appear in
//! exactly one fired window, no window may fire twice, `seq` stays dense, and every takeover
//! raises the epoch. `FAILOVER_KILLS` sets the number of kills (default 3; `cargo xtask crash`
//! runs 20).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    fn start(dir: &Path) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_window-node"))
            .args(["serve", "--listen", "127.0.0.1:0", "--window-size", "1s"])
            .args([
                "--allowed-lateness",
                "0s",
                "--idle-timeout",
                "0s",
                "--failover-timeout",
                "15s",
            ])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start window-node serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("address="))
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx.recv_timeout(WAIT).expect("the node reports its address");
        Node { child, addr }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> Option<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(WAIT)).ok()?;
        Some(Conn {
            reader: BufReader::new(stream.try_clone().ok()?),
            writer: stream,
        })
    }

    fn call(&mut self, line: &str) -> Option<Value> {
        writeln!(self.writer, "{line}").ok()?;
        let mut reply = String::new();
        match self.reader.read_line(&mut reply) {
            Ok(n) if n > 0 => serde_json::from_str(&reply).ok(),
            _ => None,
        }
    }
}

/// Asks `addr` who coordinates, and with which epoch.
fn coordinator(addr: SocketAddr) -> Option<(String, u64)> {
    let stats = Conn::open(addr)?.call(r#"{"type":"stats","msg_id":1}"#)?;
    Some((
        stats["lease_holder"].as_str()?.to_owned(),
        stats["epoch"].as_u64()?,
    ))
}

#[test]
fn the_coordinator_dies_again_and_again_and_nothing_acknowledged_is_lost() {
    let kills: usize = std::env::var("FAILOVER_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes: Arc<Mutex<Vec<Node>>> = Arc::new(Mutex::new(
        (0..3).map(|_| Node::start(dir.path())).collect(),
    ));
    let addrs = || {
        nodes
            .lock()
            .expect("nodes")
            .iter()
            .map(|n| n.addr)
            .collect::<Vec<_>>()
    };
    let first = coordinator(addrs()[0]).expect("stats");
    assert_eq!(first.1, 1, "the first holder's epoch");

    // The client ingests through followers, one request in flight, retrying on errors.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let client = {
        let (stop, acked, nodes) = (Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&nodes));
        std::thread::spawn(move || {
            let mut conn: Option<Conn> = None;
            let mut request = 0i64;
            let mut retries = 0;
            while !stop.load(Ordering::Relaxed) && retries < 2_000 {
                let events: Vec<String> = (0..20)
                    .map(|i| {
                        let id = request * 20 + i;
                        format!(r#"{{"id":{id},"timestamp":{}}}"#, id * 10)
                    })
                    .collect();
                let line = format!(
                    r#"{{"type":"ingest","msg_id":{request},"events":[{}]}}"#,
                    events.join(",")
                );
                let reply = conn.as_mut().and_then(|c| c.call(&line));
                match reply {
                    Some(reply) if reply["type"] == "ingest_ok" => {
                        acked
                            .lock()
                            .expect("acked")
                            .extend((0..20).map(|i| request * 20 + i));
                        request += 1;
                    }
                    _ => {
                        // Reconnect to any live node (the list changes as nodes die) and resend.
                        retries += 1;
                        std::thread::sleep(Duration::from_millis(20));
                        let candidates: Vec<SocketAddr> = nodes
                            .lock()
                            .expect("nodes")
                            .iter()
                            .map(|n| n.addr)
                            .collect();
                        conn = candidates.iter().rev().find_map(|a| Conn::open(*a));
                    }
                }
            }
        })
    };

    let mut takeovers = Vec::new();
    for kill in 0..kills {
        std::thread::sleep(Duration::from_millis(300));
        let live = addrs();
        let (holder, epoch) = coordinator(live[0]).expect("stats before the kill");
        let victim = {
            let mut nodes = nodes.lock().expect("nodes");
            let at = nodes
                .iter()
                .position(|n| n.addr.to_string() == holder)
                .expect("the holder is one of ours");
            nodes.remove(at)
        };
        let killed_at = Instant::now();
        drop(victim); // SIGKILL, and reap.
        // Takeover: a surviving node reports a new holder with a higher epoch.
        let survivor = addrs()[0];
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((new_holder, new_epoch)) = coordinator(survivor)
                && new_holder != holder
            {
                assert_eq!(
                    new_epoch,
                    epoch + 1,
                    "each takeover raises the epoch by one"
                );
                break;
            }
            assert!(Instant::now() < deadline, "no takeover after kill {kill}");
            std::thread::sleep(Duration::from_millis(10));
        }
        takeovers.push(killed_at.elapsed());
        nodes.lock().expect("nodes").push(Node::start(dir.path()));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client");
    let acked = acked.lock().expect("acked").clone();
    assert!(
        acked.len() >= 200,
        "the client made progress ({} events)",
        acked.len()
    );

    // Flush everything, then read the whole output log from the coordinator.
    let live = addrs();
    let (holder, final_epoch) = coordinator(live[0]).expect("stats");
    assert_eq!(final_epoch, 1 + kills as u64);
    let holder: SocketAddr = holder.parse().expect("holder address");
    let flushed = Conn::open(holder)
        .expect("connect")
        .call(r#"{"type":"flush","msg_id":1}"#)
        .expect("flush");
    assert_eq!(flushed["type"], "flushed", "{flushed}");
    let stats = Conn::open(holder)
        .expect("connect")
        .call(r#"{"type":"stats","msg_id":2}"#)
        .expect("stats");
    let emitted = stats["emitted_windows"].as_u64().expect("emitted");
    let mut sub = Conn::open(holder).expect("connect");
    let ok = sub
        .call(r#"{"type":"subscribe","msg_id":3,"from_seq":0}"#)
        .expect("subscribe");
    assert_eq!(ok["type"], "subscribe_ok", "{ok}");
    let mut seen: HashMap<i64, u64> = HashMap::new();
    let mut last_epoch = 0;
    for expected_seq in 0..emitted {
        let mut line = String::new();
        sub.reader.read_line(&mut line).expect("a window");
        let window: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(window["seq"], expected_seq, "seq is dense: {window}");
        let epoch = window["epoch"].as_u64().expect("epoch");
        assert!(
            epoch >= last_epoch,
            "epochs never go back along the log: {window}"
        );
        last_epoch = epoch;
        for id in window["events"].as_array().expect("events") {
            let id = id.as_i64().expect("integer id");
            if let Some(earlier) = seen.insert(id, expected_seq) {
                panic!("event {id} emitted twice: seq {earlier} and seq {expected_seq}");
            }
        }
    }
    let lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|id| !seen.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let slowest = takeovers.iter().max().copied().unwrap_or_default();
    eprintln!(
        "failover: {kills} coordinator kills, {} acknowledged events all emitted exactly once in {emitted} windows; takeover (kill to new holder) max {slowest:?}, each {takeovers:?}",
        acked.len()
    );
}
