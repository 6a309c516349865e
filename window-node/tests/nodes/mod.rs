//! Real `window-node serve` processes for the multi-process tests (`failover.rs`,
//! `partitions.rs`): started with their stderr captured, found by the `address=` they log,
//! signalled, and SIGKILLed and reaped on drop, so a failing test leaves nothing behind (dropping
//! a node is how the tests kill one); and a client connection speaking JSON lines.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a node may take to report its address, to exit, and a reply to come.
pub const WAIT: Duration = Duration::from_secs(20);

/// How many times the kill tests disrupt a holder: `FAILOVER_KILLS` (`cargo xtask crash` sets
/// 20), 3 by default.
pub fn kills() -> usize {
    std::env::var("FAILOVER_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(3)
}

/// A running `serve` process.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line the node wrote on stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `window-node ARGS` (with `RUST_LOG=info`) and waits until it logs the address it
    /// listens on. A node that exits first (a rejected option, say) fails at once, with its log.
    pub fn spawn(args: &[String]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_window-node"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start window-node serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let lines = Arc::clone(&log);
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
                lines.lock().expect("log").push(line);
            }
        });
        // The reader drops `tx` at the end of the log, so a node that exits at once fails here
        // straight away rather than after the whole wait.
        match rx.recv_timeout(WAIT) {
            Ok(addr) => Node { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the node did not report its address; its log: {:#?}",
                    log.lock().expect("log")
                );
            }
        }
    }

    /// The address other nodes and `stats` call this node by.
    pub fn name(&self) -> String {
        self.addr.to_string()
    }

    /// Sends `signal` (`TERM`, `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits (bounded by `WAIT`) for the process to exit; `what` names it in the failure.
    pub fn wait_exit(&mut self, what: &str) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not stop within {WAIT:?}: {:#?}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when the node logged a line containing `text`.
    pub fn log_has(&self, text: &str) -> bool {
        self.log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains(text))
    }

    /// The last few lines of the node's log, for a failure message.
    pub fn log_tail(&self) -> Vec<String> {
        let log = self.log.lock().expect("log");
        log[log.len().saturating_sub(10)..].to_vec()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client connection speaking JSON lines.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Option<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(WAIT)).ok()?;
        // `writeln!` writes a line in pieces: without this, Nagle's algorithm and delayed acks
        // hold every request back by tens of milliseconds.
        stream.set_nodelay(true).ok()?;
        Some(Conn {
            reader: BufReader::new(stream.try_clone().ok()?),
            writer: stream,
        })
    }

    /// Sends one request line and reads one reply line; `None` if the connection failed, closed
    /// or timed out, after which the connection is no longer usable.
    pub fn call(&mut self, line: &str) -> Option<Value> {
        writeln!(self.writer, "{line}").ok()?;
        self.read()
    }

    /// Reads one line (a reply, or a pushed `window_closed`).
    pub fn read(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).ok(),
            _ => None,
        }
    }
}
