//! One line-JSON connection to a node, and the list of nodes to connect to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::ClientError;

/// How long the client waits before sending again to the next node.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long one connection attempt may take (a node that is cut off does not refuse).
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// The nodes, and which one is tried first (shared by a client and its subscriptions).
#[derive(Clone, Debug)]
pub(crate) struct Nodes {
    addrs: Arc<Vec<SocketAddr>>,
    current: Arc<AtomicUsize>,
    pub(crate) failover: Duration,
}

impl Nodes {
    pub(crate) fn new(addrs: Vec<SocketAddr>, failover: Duration) -> Result<Nodes, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::NoNode(
                "no node address given: pass at least one host:port".to_owned(),
            ));
        }
        Ok(Nodes {
            addrs: Arc::new(addrs),
            current: Arc::new(AtomicUsize::new(0)),
            failover,
        })
    }

    /// The next node is tried first from now on.
    pub(crate) fn advance(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection to the first node that answers, trying them in turn until the failover time
    /// runs out.
    pub(crate) async fn connect(&self) -> Result<Conn, ClientError> {
        let deadline = tokio::time::Instant::now() + self.failover;
        loop {
            let at = self.current.load(Ordering::Relaxed) % self.addrs.len();
            let attempt = tokio::time::timeout(CONNECT_WAIT, TcpStream::connect(self.addrs[at]));
            let last = match attempt.await.unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {CONNECT_WAIT:?}"),
                ))
            }) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let (read, write) = stream.into_split();
                    return Ok(Conn {
                        reader: BufReader::new(read),
                        writer: write,
                        line: Vec::new(),
                    });
                }
                Err(error) => format!("{}: {error}", self.addrs[at]),
            };
            self.advance();
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::NoNode(format!(
                    "no node answered within {:?} (last: {})",
                    self.failover, last
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// A line partly read (kept across a cancelled read).
    line: Vec<u8>,
}

impl Conn {
    pub(crate) async fn send(&mut self, line: &str) -> Result<(), ClientError> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.writer.write_all(&bytes).await?;
        Ok(())
    }

    /// The next message; an error when the connection ended.
    pub(crate) async fn next(&mut self) -> Result<Value, ClientError> {
        loop {
            let n = self.reader.read_until(b'\n', &mut self.line).await?;
            if n == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let line = std::mem::take(&mut self.line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice(&line).map_err(ClientError::from);
        }
    }

    /// Sends `line` and returns the message that answers `msg_id` (other lines are skipped).
    pub(crate) async fn request(&mut self, line: &str, msg_id: u64) -> Result<Value, ClientError> {
        self.send(line).await?;
        loop {
            let message = self.next().await?;
            if message["in_reply_to"] == msg_id {
                return Ok(message);
            }
            // An unsolicited error (a node at its connection limit, or stopping) ends this
            // connection's use.
            if let Some(error) = ClientError::of_reply(&message)
                && message.get("in_reply_to").is_none()
            {
                return Err(error);
            }
        }
    }
}
