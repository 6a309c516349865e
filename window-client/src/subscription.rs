//! Subscriptions: every window from a seq on, or a consumer group's share; both reconnect to
//! the next node when theirs goes away.

use std::collections::VecDeque;

use serde_json::{Value, json};
use window_proto::Kind;

use crate::conn::{Conn, Nodes, RETRY_PAUSE};
use crate::error::ClientError;
use crate::types::Window;

/// Every fired window from a seq on, in seq order, each once, across reconnects.
#[derive(Debug)]
pub struct Subscription {
    nodes: Nodes,
    conn: Option<Conn>,
    /// The next seq wanted; `None` until the daemon said where a "new windows only"
    /// subscription starts.
    next: Option<u64>,
}

impl Subscription {
    pub(crate) async fn start(
        nodes: Nodes,
        from_seq: Option<u64>,
    ) -> Result<Subscription, ClientError> {
        let mut subscription = Subscription {
            nodes,
            conn: None,
            next: from_seq,
        };
        subscription.reconnect().await?;
        Ok(subscription)
    }

    /// The next window; reconnects (to the next node) and resumes when the connection is lost.
    pub async fn next(&mut self) -> Result<Window, ClientError> {
        let deadline = tokio::time::Instant::now() + self.nodes.failover;
        loop {
            let message = match self.conn.as_mut() {
                Some(conn) => conn.next().await,
                None => Err(ClientError::Io(std::io::ErrorKind::NotConnected.into())),
            };
            match message {
                Ok(message) if message["type"] == Kind::WindowClosed.as_str() => {
                    let window: Window = serde_json::from_value(message)?;
                    if self.next.is_some_and(|next| window.seq < next) {
                        continue;
                    }
                    self.next = Some(window.seq + 1);
                    return Ok(window);
                }
                Ok(message) => match ClientError::of_reply(&message) {
                    // Fell behind, or the node is stopping: resume elsewhere.
                    Some(error) if !error.is_unavailable() => return Err(error),
                    Some(_) => self.conn = None,
                    None => continue,
                },
                Err(error) if !error.is_unavailable() => return Err(error),
                Err(_) => self.conn = None,
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::NoNode(
                    "the subscription could not be resumed on any node".to_owned(),
                ));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            self.nodes.advance();
            // A failed resubscribe is tried again on the next round, until the deadline.
            let _ = self.reconnect().await;
        }
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        let mut conn = self.nodes.connect().await?;
        let mut request = json!({"type": "subscribe", "msg_id": 1});
        if let Some(next) = self.next {
            request["from_seq"] = json!(next);
        }
        let ok = conn.request(&request.to_string(), 1).await?;
        if let Some(error) = ClientError::of_reply(&ok) {
            return Err(error);
        }
        if self.next.is_none() {
            self.next = ok["from_seq"].as_u64();
        }
        self.conn = Some(conn);
        Ok(())
    }
}

/// A consumer group member: each window the group hands it, to [`ack`](Self::ack) when done.
#[derive(Debug)]
pub struct GroupSubscription {
    nodes: Nodes,
    conn: Option<Conn>,
    join: Value,
    /// Windows read while waiting for an `ack_ok`.
    early: VecDeque<Window>,
    msg_id: u64,
}

impl GroupSubscription {
    pub(crate) async fn start(
        nodes: Nodes,
        group: &str,
        max_unacked: u32,
    ) -> Result<GroupSubscription, ClientError> {
        let join =
            json!({"type": "subscribe", "msg_id": 1, "group": group, "max_unacked": max_unacked});
        let mut subscription = GroupSubscription {
            nodes,
            conn: None,
            join,
            early: VecDeque::new(),
            msg_id: 1,
        };
        subscription.reconnect().await?;
        Ok(subscription)
    }

    /// The next window the group hands this member; joins again (on the next node) when the
    /// connection is lost: what was not acknowledged comes again, with `delivery` raised.
    pub async fn next(&mut self) -> Result<Window, ClientError> {
        if let Some(window) = self.early.pop_front() {
            return Ok(window);
        }
        let deadline = tokio::time::Instant::now() + self.nodes.failover;
        loop {
            let message = match self.conn.as_mut() {
                Some(conn) => conn.next().await,
                None => Err(ClientError::Io(std::io::ErrorKind::NotConnected.into())),
            };
            match message {
                Ok(message) if message["type"] == Kind::WindowClosed.as_str() => {
                    return Ok(serde_json::from_value(message)?);
                }
                Ok(message) => match ClientError::of_reply(&message) {
                    Some(error) if !error.is_unavailable() => return Err(error),
                    Some(_) => self.conn = None,
                    None => continue,
                },
                Err(error) if !error.is_unavailable() => return Err(error),
                Err(_) => self.conn = None,
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::NoNode(
                    "the group membership could not be resumed on any node".to_owned(),
                ));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            self.nodes.advance();
            let _ = self.reconnect().await;
        }
    }

    /// Acknowledges windows of this member (with `--partitions`, of one `partition`); returns
    /// how many were not acknowledged before. Windows that arrive meanwhile are kept for
    /// [`next`](Self::next).
    pub async fn ack(&mut self, seqs: &[u64], partition: Option<u32>) -> Result<u64, ClientError> {
        self.msg_id += 1;
        let msg_id = self.msg_id;
        let mut request = json!({"type": "ack", "msg_id": msg_id, "seqs": seqs});
        if let Some(partition) = partition {
            request["partition"] = json!(partition);
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| ClientError::Io(std::io::ErrorKind::NotConnected.into()))?;
        conn.send(&request.to_string()).await?;
        loop {
            let message = conn.next().await?;
            if message["type"] == Kind::WindowClosed.as_str() {
                self.early.push_back(serde_json::from_value(message)?);
                continue;
            }
            if message["in_reply_to"] != msg_id {
                continue;
            }
            if let Some(error) = ClientError::of_reply(&message) {
                return Err(error);
            }
            return Ok(message["acked"].as_u64().unwrap_or(0));
        }
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        let mut conn = self.nodes.connect().await?;
        let ok = conn.request(&self.join.to_string(), 1).await?;
        if let Some(error) = ClientError::of_reply(&ok) {
            return Err(error);
        }
        self.conn = Some(conn);
        Ok(())
    }
}
