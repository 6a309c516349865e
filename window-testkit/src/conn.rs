//! A line-JSON TCP client for the tests: one request line out, reply lines in, every read
//! bounded.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::WAIT;

/// What reading one line gave.
#[derive(Debug)]
pub enum Next {
    /// A whole line, with its `\n`.
    Line(Vec<u8>),
    /// End of stream, or the connection was reset.
    Closed,
    Timeout,
}

/// One connection speaking JSON lines. Reads wait at most the connection's wait ([`WAIT`]
/// unless [`Conn::with_wait`] says otherwise); a line begun before a read timed out is kept for
/// the next read, so a timeout never loses or splits a line.
#[derive(Debug)]
pub struct Conn {
    reader: BufReader<TcpStream>,
    /// A line begun before a read timed out.
    partial: Vec<u8>,
    wait: Duration,
}

impl Conn {
    /// Connects (within 2 s) with Nagle's algorithm off: `writeln!` writes a line in pieces,
    /// and with it delayed acks would hold every request back by tens of milliseconds.
    pub fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WAIT))?;
        Ok(Conn {
            reader: BufReader::new(stream),
            partial: Vec::new(),
            wait: WAIT,
        })
    }

    /// The same connection with `wait` as the bound of [`Conn::read`] and [`Conn::recv`].
    pub fn with_wait(mut self, wait: Duration) -> Conn {
        self.wait = wait;
        self
    }

    /// Writes `line` and its `\n`.
    pub fn send(&mut self, line: &str) -> io::Result<()> {
        self.send_bytes(format!("{line}\n").as_bytes())
    }

    /// Writes `bytes` as they are.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// The next line, waiting at most `within`.
    pub fn next_line(&mut self, within: Duration) -> Next {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Timeout;
            }
            if self.reader.get_ref().set_read_timeout(Some(left)).is_err() {
                return Next::Closed;
            }
            // On a timeout `read_until` keeps the bytes it read in `partial`.
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(_) if self.partial.ends_with(b"\n") => {
                    return Next::Line(std::mem::take(&mut self.partial));
                }
                Ok(_) => return Next::Closed,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Next::Closed,
            }
        }
    }

    /// Reads one message (a reply, or a pushed `window_closed`); `None` if the connection
    /// closed, nothing came within the wait, or the line is not JSON.
    pub fn read(&mut self) -> Option<Value> {
        match self.next_line(self.wait) {
            Next::Line(line) => serde_json::from_slice(&line).ok(),
            Next::Closed | Next::Timeout => None,
        }
    }

    /// Sends one request line and reads one message; `None` as [`Conn::read`], or if the send
    /// failed.
    pub fn call(&mut self, line: &str) -> Option<Value> {
        self.send(line).ok()?;
        self.read()
    }

    // ---- For tests: these panic with a message instead of returning a failure. ----

    /// The next message, or `None` when none arrives within `within`. Panics if the connection
    /// closes or the line is not JSON.
    pub fn try_recv(&mut self, within: Duration) -> Option<Value> {
        match self.next_line(within) {
            Next::Line(line) => Some(serde_json::from_slice(&line).unwrap_or_else(|e| {
                panic!(
                    "a line that is not JSON ({e}): {}",
                    String::from_utf8_lossy(&line)
                )
            })),
            Next::Timeout => None,
            Next::Closed => panic!("the connection was closed"),
        }
    }

    /// The next message; panics when none comes within the connection's wait.
    pub fn recv(&mut self) -> Value {
        let wait = self.wait;
        self.try_recv(wait)
            .unwrap_or_else(|| panic!("no message within {wait:?}"))
    }

    /// Sends one request line and returns the next message; panics as [`Conn::recv`].
    pub fn request(&mut self, line: &str) -> Value {
        self.send(line)
            .unwrap_or_else(|e| panic!("sending a request: {e}"));
        self.recv()
    }

    /// Panics if a message arrives within `quiet`.
    pub fn assert_quiet(&mut self, quiet: Duration) {
        if let Some(extra) = self.try_recv(quiet) {
            panic!("expected nothing more, got {extra}");
        }
    }

    /// Panics unless the other side closes this connection within the connection's wait;
    /// lines before the close are skipped.
    pub fn assert_closed(&mut self) {
        let deadline = Instant::now() + self.wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Next::Closed => return,
                Next::Line(_) => {}
                Next::Timeout => panic!("the connection was not closed within {:?}", self.wait),
            }
        }
    }
}
