//! The Rust client of window-node's daemon (`window-node serve`).
//!
//! Contract: a [`Client`] talks to a list of nodes (the holder and its followers, or the nodes of
//! a partitioned cluster). Every request that changes something carries a `request_id`, so when a
//! connection is lost or a node answers error 11 (unavailable: it is stopping, or no holder yet)
//! the client sends the same request to the next node and it takes effect once. A
//! [`Subscription`] resumes after a reconnect from the next `seq` and never yields a seq twice; a
//! [`GroupSubscription`] joins a consumer group again after a reconnect, and its windows are
//! acknowledged with [`GroupSubscription::ack`]. Errors carry the daemon's wire code
//! ([`ClientError::Daemon`]).
//!
//! What it does not do: it keeps one request in flight per [`Client`] (clone-free; share it
//! behind an `Arc`; requests from several tasks queue on its connection). Batch events into one
//! `ingest` for throughput.

mod conn;
mod error;
mod subscription;
mod types;

pub use crate::error::ClientError;
pub use crate::subscription::{GroupSubscription, Subscription};
pub use crate::types::{Event, Window};
pub use window_proto::reply::IngestCounts;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::conn::{Conn, Nodes};

/// How long a request is retried on other nodes before it fails with the last error.
pub const DEFAULT_FAILOVER: Duration = Duration::from_secs(20);

/// A client of a list of nodes.
#[derive(Debug)]
pub struct Client {
    nodes: Nodes,
    conn: Mutex<Option<Conn>>,
    msg_id: AtomicU64,
    /// Request ids: 128 random bits, then a counter.
    id_prefix: String,
    next_id: AtomicU64,
}

impl Client {
    /// A client of `nodes`, connected to the first that answers.
    pub async fn connect(
        nodes: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Client, ClientError> {
        let nodes = Nodes::new(nodes.into_iter().collect(), DEFAULT_FAILOVER)?;
        let conn = nodes.connect().await?;
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)
            .map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
        Ok(Client {
            nodes,
            conn: Mutex::new(Some(conn)),
            msg_id: AtomicU64::new(1),
            id_prefix: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            next_id: AtomicU64::new(0),
        })
    }

    /// Sends `events`; once the reply comes they are durable. Sent again to another node if the
    /// connection is lost or the node is unavailable: the request id makes it count once.
    pub async fn ingest(&self, events: &[Event]) -> Result<IngestCounts, ClientError> {
        let reply = self
            .call(json!({"type": "ingest", "events": events}), true)
            .await?;
        Ok(serde_json::from_value(reply)?)
    }

    /// Fires every open window ending at or before `until` (RFC 3339 or epoch ms; all when
    /// `None`) and returns them.
    pub async fn flush(&self, until: Option<Value>) -> Result<Vec<Window>, ClientError> {
        let mut request = json!({"type": "flush"});
        if let Some(until) = until {
            request["until"] = until;
        }
        let reply = self.call(request, true).await?;
        Ok(serde_json::from_value(reply["windows"].clone())?)
    }

    /// Fires one open window (`window_id` as the daemon writes it; `key` when keyed).
    pub async fn close(&self, window_id: &str, key: Option<&str>) -> Result<Window, ClientError> {
        let mut request = json!({"type": "close", "window_id": window_id});
        if let Some(key) = key {
            request["key"] = json!(key);
        }
        let reply = self.call(request, true).await?;
        Ok(serde_json::from_value(reply)?)
    }

    /// The daemon's `stats_ok`.
    pub async fn stats(&self) -> Result<Value, ClientError> {
        self.call(json!({"type": "stats"}), false).await
    }

    /// Every fired window from `from_seq` on (only new ones when `None`), resuming after a
    /// reconnect.
    pub async fn subscribe(&self, from_seq: Option<u64>) -> Result<Subscription, ClientError> {
        Subscription::start(self.nodes.clone(), from_seq).await
    }

    /// Joins consumer group `group`, holding at most `max_unacked` windows unacknowledged.
    pub async fn subscribe_group(
        &self,
        group: &str,
        max_unacked: u32,
    ) -> Result<GroupSubscription, ClientError> {
        GroupSubscription::start(self.nodes.clone(), group, max_unacked).await
    }

    /// Sends `request` (with a fresh `msg_id`, and a `request_id` when `idempotent`) and returns
    /// its reply; on a lost connection or error 11, to the next node, until the failover time
    /// runs out.
    async fn call(&self, mut request: Value, idempotent: bool) -> Result<Value, ClientError> {
        let msg_id = self.msg_id.fetch_add(1, Ordering::Relaxed);
        request["msg_id"] = json!(msg_id);
        if idempotent {
            let n = self.next_id.fetch_add(1, Ordering::Relaxed);
            request["request_id"] = json!(format!("rc-{}-{n}", self.id_prefix));
        }
        let line = request.to_string();
        let mut slot = self.conn.lock().await;
        let deadline = tokio::time::Instant::now() + self.nodes.failover;
        loop {
            let conn = match slot.as_mut() {
                Some(conn) => conn,
                None => slot.insert(self.nodes.connect().await?),
            };
            let failure = match conn.request(&line, msg_id).await {
                Ok(reply) => match ClientError::of_reply(&reply) {
                    None => return Ok(reply),
                    Some(error) if error.is_unavailable() => error,
                    Some(error) => return Err(error),
                },
                Err(error) => error,
            };
            // The node is gone or stopping: the next one gets the same request.
            *slot = None;
            self.nodes.advance();
            // Reads (stats) are retried too: they change nothing.
            if tokio::time::Instant::now() >= deadline {
                return Err(failure);
            }
            tokio::time::sleep(conn::RETRY_PAUSE).await;
        }
    }
}
