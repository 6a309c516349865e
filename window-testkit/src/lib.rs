//! `window-testkit`: what the tests, `loadgen` and `xtask` need to run real processes, and
//! nothing a product crate needs.
//!
//! # Contract
//! - **Used only by tests and tools.** Product crates take it as a dev-dependency (their
//!   `tests/`, and `src/` under `#[cfg(test)]`); `window-bench`'s loadgen and `xtask` take it as a
//!   normal dependency. A product crate's `src/` never uses it outside `#[cfg(test)]`.
//! - **Every wait is bounded.** Nothing here blocks without a deadline: readiness
//!   ([`Process::wait_for_line`], [`Node::start`]), exit ([`Process::wait_exit`]), replies
//!   ([`Conn`], whose reads time out) and conditions ([`wait_for`], [`wait_until`]). A deadline
//!   that passes is an [`Error`] that says what was awaited and, for a process, ends with the
//!   tail of its stderr.
//! - **Nothing is left behind.** A [`Process`] (and so a [`Node`] and a [`RedisServer`]) is
//!   SIGKILLed and reaped when dropped, whatever path the caller takes; a [`TempDir`] is removed.
//! - **Errors are values, failures are loud.** The harness returns [`Error`] (`Result`), so xtask
//!   and loadgen can add context with `?`; its `Debug` is its message, so a test's
//!   `.expect("...")` panics with a readable text. The test-only conveniences that panic say so
//!   (`Conn::recv`, [`temp_dir`], [`RedisServer::start`]).
//! - **Redis is optional outside CI.** [`RedisServer::start`] returns `None` after one loud
//!   message on the terminal when `redis-server` is not installed and `CI` is unset; with `CI`
//!   set it panics, because CI installs Redis and a missing server must not look like a pass.
//!
//! # Main types
//! - [`Process`]: one child process with its stderr kept line by line (for `log_has` and failure
//!   messages), signals, a bounded `wait_exit`, kill and reap on drop; [`run`] runs a command to
//!   its end with input and a time limit.
//! - [`Node`]: a `window-node serve --listen 127.0.0.1:0` process, ready once it logged the
//!   address it listens on.
//! - [`Conn`]: a line-JSON TCP client for the tests (send, bounded reads, call).
//! - [`RedisServer`]: a real `redis-server` on a free loopback port.
//! - [`wait_for`] and [`wait_until`]: bounded polling; [`calendar`]: RFC 3339 text written
//!   independently of `window-core`; [`procfs`]: CPU time and memory of a process.
//!
//! # What it does not do
//! It knows the wire protocol only as far as reading JSON lines and the node's `listening ...
//! address=` log line; it checks no answer and holds no expected output (the tests do). It never
//! reaches beyond loopback.

mod binary;
pub mod calendar;
mod conn;
mod error;
mod node;
mod process;
pub mod procfs;
mod redis_cluster;
mod redis_server;
mod wait;

use std::time::Duration;

pub use crate::binary::window_node_binary;
pub use crate::conn::{Conn, Next};
pub use crate::error::Error;
pub use crate::node::Node;
pub use crate::process::{EXIT_POLL, Finished, Lines, Process, Signal, Stderr, run};
pub use crate::redis_cluster::RedisCluster;
pub use crate::redis_server::{Persistence, RedisServer, StartError};
pub use crate::wait::{wait_for, wait_until};
pub use tempfile::TempDir;

/// The tests' usual bound on one expected thing: a reply, a process's start or exit. Longer
/// than the nodes' `--failover-timeout` in the tests (15 s), so a node that retries a request
/// for that long before answering is not mistaken for a dead one.
pub const WAIT: Duration = Duration::from_secs(20);

/// A count the slow runs raise through the environment: `name`'s value, or `default` when it is
/// unset or not a number (`cargo xtask crash` sets `FAILOVER_KILLS=20`, `CRASH_CYCLES=50`).
pub fn count_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// A fresh temporary directory, removed when dropped. Panics if none can be made (tests only).
pub fn temp_dir() -> TempDir {
    tempfile::tempdir().expect("a temporary directory")
}
