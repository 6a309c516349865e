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
//! Requests share one connection: up to `max_in_flight` (default 16) are written ahead of their
//! replies, and more wait (backpressure). [`Client::ingest`] is one request per call, with its
//! own counts; [`Client::push`] merges the events of pushes that wait for a slot into one
//! `ingest` (many small concurrent pushes cost few requests) and resolves once they are
//! durable. The client is shared behind an `Arc` (or a reference) by as many tasks as like.

mod conn;
mod error;
mod pipeline;
mod subscription;
mod types;

pub use crate::error::ClientError;
pub use crate::subscription::{GroupSubscription, Subscription};
pub use crate::types::{Event, Window};
pub use window_proto::reply::IngestCounts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::conn::Nodes;
use crate::pipeline::{Ids, Job, Settings};

/// How long a request is retried on other nodes before it fails with the last error.
pub const DEFAULT_FAILOVER: Duration = Duration::from_secs(20);

/// Requests written ahead of their replies, by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

/// How a [`Client`] behaves.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Requests written ahead of their replies, at most (at least 1).
    pub max_in_flight: usize,
    /// How long a request is sent again to other nodes before it fails.
    pub failover: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            failover: DEFAULT_FAILOVER,
        }
    }
}

/// A client of a list of nodes.
#[derive(Debug)]
pub struct Client {
    nodes: Nodes,
    jobs: mpsc::Sender<Job>,
}

impl Client {
    /// A client of `nodes` with the default [`Options`].
    pub async fn connect(
        nodes: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Client, ClientError> {
        Client::connect_with(nodes, Options::default()).await
    }

    /// A client of `nodes`, connected to the first that answers.
    pub async fn connect_with(
        nodes: impl IntoIterator<Item = SocketAddr>,
        options: Options,
    ) -> Result<Client, ClientError> {
        let nodes = Nodes::new(nodes.into_iter().collect(), options.failover)?;
        // Fail early when no node answers at all.
        drop(nodes.connect().await?);
        let max_in_flight = options.max_in_flight.max(1);
        let (jobs, queue) = mpsc::channel(max_in_flight * 64);
        let settings = Settings {
            nodes: nodes.clone(),
            ids: Arc::new(Ids::new()?),
            max_in_flight,
        };
        tokio::spawn(pipeline::run(settings, queue));
        Ok(Client { nodes, jobs })
    }

    /// Sends `events` as one request; once the reply comes they are durable. Sent again to
    /// another node if the connection is lost or the node is unavailable: the request id makes
    /// it count once.
    pub async fn ingest(&self, events: &[Event]) -> Result<IngestCounts, ClientError> {
        // Serialized here, on the caller's task, once: the line is written around it.
        let events = serde_json::to_string(events)?;
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Ingest { events, reply })
            .await
            .map_err(|_| stopped())?;
        let reply = answer.await.map_err(|_| stopped())??;
        Ok(serde_json::from_value(reply)?)
    }

    /// Ingests `events`, merged with the pushes of other tasks that wait at the same time into
    /// one request; resolves once they are durable. Like [`Client::ingest`] but without counts
    /// (a merged request's counts are everyone's).
    pub async fn push(&self, events: Vec<Event>) -> Result<(), ClientError> {
        let count = events.len();
        let events = serde_json::to_string(&events)?;
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Push {
                events,
                count,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
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
    async fn call(&self, request: Value, idempotent: bool) -> Result<Value, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Call {
                request,
                idempotent,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The connection's task is gone (the runtime is shutting down).
fn stopped() -> ClientError {
    ClientError::Io(std::io::Error::other(
        "the client's connection task stopped (its runtime is shutting down)",
    ))
}
