//! Subscriptions: every window from a seq on, or a consumer group's share; both join again on
//! the next node when theirs goes away.

use std::collections::VecDeque;

use serde_json::{Value, json};
use window_proto::Kind;

use crate::conn::{Conn, Nodes, RETRY_PAUSE};
use crate::error::ClientError;
use crate::types::Window;

/// A subscribed connection that joins again (on the next node) when it is lost.
#[derive(Debug)]
struct Session {
    nodes: Nodes,
    conn: Option<Conn>,
}

impl Session {
    /// Connects and sends `join`; returns its `subscribe_ok`.
    async fn join(&mut self, join: &Value) -> Result<Value, ClientError> {
        let mut conn = self.nodes.connect().await?;
        let ok = conn.request(&join.to_string(), 1).await?;
        if let Some(error) = ClientError::of_reply(&ok) {
            return Err(error);
        }
        self.conn = Some(conn);
        Ok(ok)
    }

    /// The next `window_closed`; on a lost connection or error 11, joins again with what
    /// `join` says then, until the failover time runs out.
    async fn next_window(&mut self, join: impl Fn() -> Value) -> Result<Window, ClientError> {
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
                    // The node is stopping (or this subscriber fell behind): elsewhere.
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
            // A failed join is tried again on the next round, until the deadline.
            let _ = self.join(&join()).await;
        }
    }
}

/// Every fired window from a seq on, in seq order, each once, across reconnects.
#[derive(Debug)]
pub struct Subscription {
    session: Session,
    /// The next seq wanted.
    next: u64,
}

impl Subscription {
    pub(crate) async fn start(
        nodes: Nodes,
        from_seq: Option<u64>,
    ) -> Result<Subscription, ClientError> {
        let mut session = Session { nodes, conn: None };
        let mut join = json!({"type": "subscribe", "msg_id": 1});
        if let Some(seq) = from_seq {
            join["from_seq"] = json!(seq);
        }
        let ok = session.join(&join).await?;
        // Where "new windows only" starts, so that a resume asks from there.
        let next = from_seq.or(ok["from_seq"].as_u64()).unwrap_or(0);
        Ok(Subscription { session, next })
    }

    /// The next window; reconnects (to the next node) and resumes when the connection is lost.
    pub async fn next(&mut self) -> Result<Window, ClientError> {
        loop {
            let next = self.next;
            let window = self
                .session
                .next_window(|| json!({"type": "subscribe", "msg_id": 1, "from_seq": next}))
                .await?;
            if window.seq >= self.next {
                self.next = window.seq + 1;
                return Ok(window);
            }
        }
    }
}

/// A consumer group member: each window the group hands it, to [`ack`](Self::ack) when done.
#[derive(Debug)]
pub struct GroupSubscription {
    session: Session,
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
        let mut session = Session { nodes, conn: None };
        session.join(&join).await?;
        Ok(GroupSubscription {
            session,
            join,
            early: VecDeque::new(),
            msg_id: 1,
        })
    }

    /// The next window the group hands this member; joins again (on the next node) when the
    /// connection is lost: what was not acknowledged comes again, with `delivery` raised.
    pub async fn next(&mut self) -> Result<Window, ClientError> {
        if let Some(window) = self.early.pop_front() {
            return Ok(window);
        }
        let join = &self.join;
        self.session.next_window(|| join.clone()).await
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
            .session
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
}
