//! The request connection. One task owns it: it sends up to `max_in_flight` requests ahead of
//! their replies, merges pushes that wait for a slot into one `ingest`, and after a lost
//! connection or error 11 sends every unanswered request again, in order and with its request
//! id (so each takes effect once), to the next node; a request still unanswered one failover
//! time after it was first sent fails with the last error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::conn::{Conn, Nodes, RETRY_PAUSE};
use crate::error::ClientError;

/// At most this many events go into one merged `ingest`.
pub(crate) const MAX_MERGED_EVENTS: usize = 10_000;

/// Message ids and request ids for one client.
#[derive(Debug)]
pub(crate) struct Ids {
    msg_id: AtomicU64,
    /// Request ids: 128 random bits, then a counter.
    prefix: String,
    next: AtomicU64,
}

impl Ids {
    pub(crate) fn new() -> Result<Ids, ClientError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)
            .map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
        Ok(Ids {
            msg_id: AtomicU64::new(1),
            prefix: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            next: AtomicU64::new(0),
        })
    }

    /// `request` with a fresh `msg_id` (and a fresh `request_id` when `idempotent`), as a line.
    pub(crate) fn line(&self, mut request: Value, idempotent: bool) -> (u64, String) {
        let msg_id = self.msg_id.fetch_add(1, Ordering::Relaxed);
        request["msg_id"] = json!(msg_id);
        if idempotent {
            request["request_id"] = json!(self.request_id());
        }
        (msg_id, request.to_string())
    }

    /// An `ingest` of `events` (a JSON array, as serialized) with a fresh `msg_id` and
    /// `request_id`, as a line: written around the array, which is not parsed again.
    pub(crate) fn ingest_line(&self, events: &str) -> (u64, String) {
        let msg_id = self.msg_id.fetch_add(1, Ordering::Relaxed);
        // The id is hex and a counter: nothing in it needs escaping.
        let line = format!(
            "{{\"type\":\"ingest\",\"msg_id\":{msg_id},\"request_id\":\"{}\",\"events\":{events}}}",
            self.request_id()
        );
        (msg_id, line)
    }

    fn request_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("rc-{}-{n}", self.prefix)
    }
}

/// What the client asks of the connection's task.
pub(crate) enum Job {
    /// One request, answered with its reply.
    Call {
        request: Value,
        idempotent: bool,
        reply: oneshot::Sender<Result<Value, ClientError>>,
    },
    /// One `ingest` of events (a JSON array), answered with its reply.
    Ingest {
        events: String,
        reply: oneshot::Sender<Result<Value, ClientError>>,
    },
    /// Events to ingest (a JSON array of `count`); answered once they are durable, possibly
    /// within a merged request.
    Push {
        events: String,
        count: usize,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
}

/// Who waits for a request's reply.
enum Waiters {
    Call(oneshot::Sender<Result<Value, ClientError>>),
    Push(Vec<oneshot::Sender<Result<(), ClientError>>>),
}

/// A request written and not answered yet.
struct Sent {
    msg_id: u64,
    line: String,
    first_sent: Instant,
    /// When it was last written (on this connection).
    sent_at: Instant,
    waiters: Waiters,
}

impl Sent {
    fn answer(self, result: Result<Value, ClientError>) {
        match self.waiters {
            Waiters::Call(reply) => {
                let _ = reply.send(result);
            }
            Waiters::Push(replies) => {
                for reply in replies {
                    let _ = reply.send(match &result {
                        Ok(_) => Ok(()),
                        Err(error) => Err(error.duplicate()),
                    });
                }
            }
        }
    }
}

/// The task's settings.
pub(crate) struct Settings {
    pub(crate) nodes: Nodes,
    pub(crate) ids: Arc<Ids>,
    pub(crate) max_in_flight: usize,
}

/// Runs the connection until the client is dropped and everything sent is answered.
pub(crate) async fn run(settings: Settings, mut jobs: mpsc::Receiver<Job>) {
    let Settings {
        nodes,
        ids,
        max_in_flight,
    } = settings;
    // How long one node may keep a request unanswered, or a write waiting, before the next
    // node is tried (the whole failover time bounds the request).
    let attempt = nodes.failover / 4;
    let mut conn: Option<Conn> = None;
    let mut sent: VecDeque<Sent> = VecDeque::new();
    // A job taken from the queue that did not fit into the merge before it.
    let mut held: Option<Job> = None;
    let mut open = true;
    loop {
        if conn.is_none() {
            if sent.is_empty() && held.is_none() {
                match jobs.recv().await {
                    Some(job) => held = Some(job),
                    None => return,
                }
            }
            match nodes.connect().await {
                Ok(mut fresh) => {
                    // Everything unanswered goes again, in order, with its request id.
                    let mut ok = true;
                    for s in &mut sent {
                        s.sent_at = Instant::now();
                        if !written(fresh.send(&s.line), attempt).await {
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        conn = Some(fresh);
                    } else {
                        lost(&nodes, &mut sent, nodes.failover).await;
                    }
                }
                Err(error) => {
                    // No node answers: everything waiting fails now, not one failover time
                    // after another.
                    for s in sent.drain(..) {
                        s.answer(Err(error.duplicate()));
                    }
                    if let Some(job) = held.take() {
                        fail(job, &error);
                    }
                    while let Ok(job) = jobs.try_recv() {
                        fail(job, &error);
                    }
                }
            }
            continue;
        }
        if !open && sent.is_empty() && held.is_none() {
            return;
        }
        let Some(c) = conn.as_mut() else { continue };
        let room = sent.len() < max_in_flight && (open || held.is_some());
        // A node that stops answering (stopped, or cut off) is left for the next one once the
        // oldest request has waited an attempt's time on it.
        let give_up = sent.front().map(|s| s.sent_at + attempt);
        tokio::select! {
            () = sleep_until_some(give_up) => {
                conn = None;
                lost(&nodes, &mut sent, nodes.failover).await;
            }
            job = next_job(&mut held, &mut jobs), if room => {
                let Some(job) = job else {
                    open = false;
                    continue;
                };
                let next = prepare(job, &ids, &mut jobs, &mut held);
                let ok = written(c.send(&next.line), attempt).await;
                sent.push_back(next);
                if !ok {
                    conn = None;
                    lost(&nodes, &mut sent, nodes.failover).await;
                }
            }
            message = c.next() => {
                let unavailable = match message {
                    Ok(reply) => match sent.iter().position(|s| reply["in_reply_to"] == s.msg_id) {
                        Some(at) => match ClientError::of_reply(&reply) {
                            // 11: the node cannot serve now; 13: its store failed and it stops
                            // (the request may or may not have been stored). Either way the
                            // next node gets it again with its request id: it takes effect once.
                            Some(error) if error.is_unavailable() || error.code() == Some(13) => {
                                true
                            }
                            Some(error) => {
                                if let Some(s) = sent.remove(at) {
                                    s.answer(Err(error));
                                }
                                false
                            }
                            None => {
                                if let Some(s) = sent.remove(at) {
                                    s.answer(Ok(reply));
                                }
                                false
                            }
                        },
                        None => match ClientError::of_reply(&reply) {
                            // An error naming no request: 11 (at the connection limit, or
                            // stopping) ends this connection's use; any other (a line the node
                            // could not read as a request, say one over its --max-line-bytes)
                            // answers the oldest request, as replies come in order.
                            Some(error) if error.is_unavailable() => true,
                            Some(error) => {
                                if let Some(s) = sent.pop_front() {
                                    s.answer(Err(error));
                                }
                                false
                            }
                            None => false,
                        },
                    },
                    Err(_) => true,
                };
                if unavailable {
                    conn = None;
                    lost(&nodes, &mut sent, nodes.failover).await;
                }
            }
        }
    }
}

/// The connection is lost or its node unavailable: the next node is tried after a pause, and
/// requests first sent longer than `failover` ago fail.
async fn lost(nodes: &Nodes, sent: &mut VecDeque<Sent>, failover: Duration) {
    nodes.advance();
    let now = Instant::now();
    let mut kept = VecDeque::with_capacity(sent.len());
    for s in sent.drain(..) {
        if now.duration_since(s.first_sent) >= failover {
            s.answer(Err(ClientError::NoNode(format!(
                "no node answered the request within {failover:?}"
            ))));
        } else {
            kept.push_back(s);
        }
    }
    *sent = kept;
    tokio::time::sleep(RETRY_PAUSE).await;
}

/// Whether `send` finished within `limit`.
async fn written(
    send: impl std::future::Future<Output = Result<(), ClientError>>,
    limit: Duration,
) -> bool {
    matches!(tokio::time::timeout(limit, send).await, Ok(Ok(())))
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_job(held: &mut Option<Job>, jobs: &mut mpsc::Receiver<Job>) -> Option<Job> {
    match held.take() {
        Some(job) => Some(job),
        None => jobs.recv().await,
    }
}

/// The request for `job`; a push takes the pushes queued behind it along (up to
/// [`MAX_MERGED_EVENTS`] events), and a job of another kind met on the way is held for later.
fn prepare(job: Job, ids: &Ids, jobs: &mut mpsc::Receiver<Job>, held: &mut Option<Job>) -> Sent {
    let ((msg_id, line), waiters) = match job {
        Job::Call {
            request,
            idempotent,
            reply,
        } => (ids.line(request, idempotent), Waiters::Call(reply)),
        Job::Ingest { events, reply } => (ids.ingest_line(&events), Waiters::Call(reply)),
        Job::Push {
            mut events,
            mut count,
            reply,
        } => {
            let mut replies = vec![reply];
            while count < MAX_MERGED_EVENTS {
                match jobs.try_recv() {
                    Ok(Job::Push {
                        events: more,
                        count: more_count,
                        reply,
                    }) => {
                        append_array(&mut events, &more);
                        count += more_count;
                        replies.push(reply);
                    }
                    Ok(other) => {
                        *held = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            (ids.ingest_line(&events), Waiters::Push(replies))
        }
    };
    let now = Instant::now();
    Sent {
        msg_id,
        line,
        first_sent: now,
        sent_at: now,
        waiters,
    }
}

/// Appends the items of the JSON array `more` to the JSON array `into` (both as serialized).
fn append_array(into: &mut String, more: &str) {
    let items = more
        .strip_prefix('[')
        .and_then(|m| m.strip_suffix(']'))
        .unwrap_or_default();
    if items.is_empty() {
        return;
    }
    if into.len() <= 2 {
        *into = more.to_owned();
        return;
    }
    into.pop();
    into.push(',');
    into.push_str(items);
    into.push(']');
}

fn fail(job: Job, error: &ClientError) {
    match job {
        Job::Call { reply, .. } => {
            let _ = reply.send(Err(error.duplicate()));
        }
        Job::Ingest { reply, .. } => {
            let _ = reply.send(Err(error.duplicate()));
        }
        Job::Push { reply, .. } => {
            let _ = reply.send(Err(error.duplicate()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::append_array;

    #[test]
    fn arrays_are_appended_item_by_item() {
        let mut a = "[]".to_owned();
        append_array(&mut a, "[]");
        assert_eq!(a, "[]");
        append_array(&mut a, r#"[{"id":1}]"#);
        assert_eq!(a, r#"[{"id":1}]"#);
        append_array(&mut a, r#"[{"id":2},{"id":"]"}]"#);
        assert_eq!(a, r#"[{"id":1},{"id":2},{"id":"]"}]"#);
        append_array(&mut a, "[]");
        assert_eq!(a, r#"[{"id":1},{"id":2},{"id":"]"}]"#);
        let parsed: serde_json::Value = serde_json::from_str(&a).unwrap();
        assert_eq!(parsed.as_array().map(Vec::len), Some(3));
    }
}
