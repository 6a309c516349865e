//! The shell side of a link to a holder (the lease's coordinator, or a partition's holder):
//! where the holder is found, connecting to it until the link gives up, the request ids a
//! forwarding node marks lines with, and the monotonic time the link decides on. What becomes of
//! the forwarded lines is `window_cluster::link`'s; the follower and the router drive it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use crate::lease_file::{HolderKind, read_coordinator, read_holder};
use crate::lease_redis::Role;

/// Where the coordinator's address is found.
#[derive(Debug)]
pub enum Coordinator {
    /// Published in this data directory by the file lease's holder.
    Dir(PathBuf),
    /// The Redis lease's holder, as this process's lease keeper last saw it; `me` is this
    /// process's own address, for when it holds the lease itself.
    Redis {
        role: tokio::sync::watch::Receiver<Role>,
        me: SocketAddr,
    },
}

/// A coordinator: its address and the lease epoch it holds (a process that takes over under the
/// same address is another coordinator).
pub type Holder = (SocketAddr, u64);

impl Coordinator {
    /// The coordinator, if one is known.
    pub fn holder(&self) -> Option<Holder> {
        match self {
            Coordinator::Dir(dir) => read_coordinator(dir),
            Coordinator::Redis { role, me } => holder_of(&role.borrow(), *me),
        }
    }

    /// Why no coordinator answered, and what to do, for the error 11 a follower gives: a stdin
    /// node holding the directory is named, since it never will answer.
    pub fn unreachable(&self) -> String {
        if let Coordinator::Dir(dir) = self
            && let Some((HolderKind::Stdin, pid)) = read_holder(dir)
        {
            return format!(
                "no coordinator is reachable: the data directory {} is in use by a stdin node (window-node --data-dir without serve, pid {pid}), which serves no TCP clients; end that node (its input) and this serve takes over, or start this serve with another --data-dir",
                dir.display()
            );
        }
        "no coordinator is reachable (the lease holder died, or Redis does not answer, and none took over yet); retry: ingest is idempotent".to_owned()
    }

    /// Resolves once the coordinator is known to be another than `current` (a takeover while
    /// `current` is paused or cut off, which a connection to it would not show, or a takeover
    /// under the same address). Only the Redis lease can move while its old holder lives; a file
    /// lease never resolves this.
    pub async fn moved_from(&self, current: Holder) {
        match self {
            Coordinator::Dir(_) => std::future::pending().await,
            Coordinator::Redis { role, me } => {
                let mut role = role.clone();
                let moved = role
                    .wait_for(|role| holder_of(role, *me).is_some_and(|h| h != current))
                    .await
                    .map(drop);
                if moved.is_err() {
                    // The keeper is gone (the process is stopping): nothing will move.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// The lease holder as `role` knows it (`me` when this process holds it).
fn holder_of(role: &Role, me: SocketAddr) -> Option<Holder> {
    match role {
        Role::Following {
            holder: Some((address, epoch)),
        } => Some((address.parse().ok()?, *epoch)),
        Role::Holding { epoch } => Some((me, *epoch)),
        Role::Starting
        | Role::Following { holder: None }
        | Role::Lost { .. }
        | Role::NamespaceLost { .. } => None,
    }
}

/// Connects to `coordinator`'s holder, trying until `deadline` for one to be known and to answer.
pub async fn connect_to(
    coordinator: &Coordinator,
    deadline: Instant,
) -> Option<(TcpStream, Holder)> {
    let deadline = tokio::time::Instant::from_std(deadline);
    loop {
        if let Some(holder) = coordinator.holder()
            && let Ok(stream) = TcpStream::connect(holder.0).await
        {
            let _ = stream.set_nodelay(true);
            return Some((stream, holder));
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The reading half of a connection to a holder, line by line.
pub struct Replies {
    reader: BufReader<OwnedReadHalf>,
    /// Bytes, not a String: `read_until` keeps a partly read line when another branch of a
    /// select wins, which `read_line` does not promise.
    line: Vec<u8>,
}

impl Replies {
    pub fn new(read: OwnedReadHalf) -> Replies {
        Replies {
            reader: BufReader::with_capacity(64 * 1024, read),
            line: Vec::new(),
        }
    }

    /// The holder's next line (with its line feed); `None` at the end of the connection.
    /// Cancel-safe: a line partly read when the future is dropped is kept for the next call.
    pub async fn next(&mut self) -> Option<String> {
        match self.reader.read_until(b'\n', &mut self.line).await {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                let text = String::from_utf8_lossy(&self.line).into_owned();
                self.line.clear();
                Some(text)
            }
        }
    }
}

/// The lines a link says to send, one per line, for one write.
pub fn lines_out<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Request ids for one client connection's lines: 128 random bits, then the line's number.
pub struct RequestIds {
    prefix: String,
    next: u64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        let mut bytes = [0u8; 16];
        if let Err(error) = getrandom::fill(&mut bytes) {
            // Unique enough without the OS's randomness: this process, this instant (from the one
            // place that reads wall time), a counter.
            tracing::warn!(%error, "no random bytes from the OS; request ids fall back to time and process id");
            static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let nanos = crate::clock::now().as_millis() as u64;
            let count = FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            bytes[..8].copy_from_slice(&nanos.to_be_bytes());
            bytes[8..12].copy_from_slice(&std::process::id().to_be_bytes());
            bytes[12..].copy_from_slice(&(count as u32).to_be_bytes());
        }
        let prefix = bytes.iter().map(|b| format!("{b:02x}")).collect();
        RequestIds { prefix, next: 0 }
    }

    pub fn next(&mut self) -> String {
        self.next += 1;
        format!("fw-{}-{}", self.prefix, self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_differ_between_connections_and_lines() {
        let (mut a, mut b) = (RequestIds::new(), RequestIds::new());
        let ids = [a.next(), a.next(), b.next()];
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
        assert!(ids[0].len() > 32, "128 random bits: {}", ids[0]);
    }
}
