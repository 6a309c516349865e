//! A `window-node serve` process on a free loopback port: the [`Process`] harness plus the one
//! thing the daemon tells a supervisor, the `listening ... address=` line it logs.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Error, Process, Stderr};

/// A running `window-node serve --listen 127.0.0.1:0 ...`, SIGKILLed and reaped when dropped
/// (dropping a node is how a test kills one).
#[derive(Debug)]
pub struct Node {
    pub process: Process,
    /// The address it listens on, from its log: also its name as a lease holder.
    pub addr: SocketAddr,
}

impl Node {
    /// How long a node may take to log its address.
    pub const START: Duration = Duration::from_secs(30);

    /// Starts `BINARY serve --listen 127.0.0.1:0 ARGS` and waits (at most [`Node::START`])
    /// until it logs the address it listens on. It runs with `RUST_LOG=info` (the listening line
    /// is an info line) and without the caller's `WINDOW_NODE_*` variables (options also come
    /// from the environment), stdin and stdout closed, stderr kept. A node that exits first (a
    /// rejected option, say) fails at once, with its log.
    pub fn start<S: AsRef<OsStr>>(
        binary: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Result<Node, Error> {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("WINDOW_NODE_") {
                command.env_remove(name);
            }
        }
        let mut process = Process::spawn(&mut command, Stderr::Capture)?;
        let addr =
            process.wait_for_line(Node::START, "its listening address", listening_address)?;
        process.set_name(format!("window-node serve at {addr}"));
        Ok(Node { process, addr })
    }

    /// The address other nodes and `stats` call this node by.
    pub fn name(&self) -> String {
        self.addr.to_string()
    }

    /// Waits (at most [`crate::WAIT`]) until its log has `text` (`"coordinating"` once it
    /// holds the lease, `"following"` once it follows); panics naming `text` otherwise.
    pub fn wait_logged(&self, text: &str) {
        crate::wait_until(crate::WAIT, &format!("{text:?} in the log"), || {
            self.process.log_has(text)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.process.log_text()));
    }
}

/// The address in the daemon's `listening; ... address=127.0.0.1:PORT` log line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("address="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        let line = "2024-01-15T08:00:00.000000Z  INFO window_node::serve: listening; 1s windows address=127.0.0.1:40295";
        assert_eq!(
            listening_address(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 40295)))
        );
        assert_eq!(
            listening_address("INFO took the lease address=127.0.0.1:1"),
            None
        );
    }
}
