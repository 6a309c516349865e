//! Followers: a `serve` process that does not hold the lease serves its clients by forwarding
//! their request lines to the coordinator and relaying the replies.
//!
//! Requests go over a few links to the coordinator shared by every client connection
//! ([`FOLLOWER_LINKS`], see [`crate::links`]): each connection's lines go over one of them, in
//! order, pipelined with the other connections' lines, and the replies come back to it in order.
//! So a follower costs the coordinator a few connections however many clients it serves, and
//! idle clients of a follower do not use up the coordinator's `--max-connections`. Requests not
//! yet answered are remembered; when the coordinator goes away (it died, and another process,
//! maybe this one, takes over) the link reconnects to the new coordinator and sends them again,
//! so a client sees a delay, not an error: ingest is idempotent by event id, so a resent batch is
//! not counted twice. Every forwarded line is marked with a request id (unless the client gave
//! one), which the coordinator records with the request's outcome in the same batch: a resent
//! `close` or `flush`, or an `ingest` whose window was closed meanwhile, is answered from that
//! record rather than run a second time. A coordinator that answers error 11 (it is stopping) is
//! treated like one that went away: the request is sent again to the next one. Only when no
//! coordinator appears within the failover timeout are the waiting requests answered with error
//! 11 (safe to retry). Those rules are `window_cluster::link::Link`'s.
//!
//! A subscription streams, so a connection that subscribes gets a connection of its own to the
//! coordinator from then on (its requests before were all answered first); it is resumed from
//! the next sequence number it had not yet seen when the coordinator changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use window_cluster::link::{Link, LinkConfig, RECONNECT_PAUSE, RETRY_PAUSE, Reply};

use crate::clock::monotonic;
use crate::line_budget::{LineBudget, Share};
use crate::links::{Answer, Links};
use crate::upstream::{Coordinator, Replies, RequestIds, connect_to, lines_out};
use window_proto::Kind;
use window_proto::ProtoError;
use window_proto::peer::{Peek, mark_request_id};
use window_proto::reply::{self, Address, Header};
use window_proto::{Line, LineSplitter};
use window_proto::{Style, peek_group_subscribe, peek_msg_id, peek_subscribe};

/// Links a follower keeps to the coordinator, shared by its client connections.
pub const FOLLOWER_LINKS: usize = 4;

/// Replies one client connection may wait for at once: a client pipelining more waits (its
/// lines are not read) until the oldest is answered.
const PENDING: usize = 64;

/// What forwarding needs to know.
#[derive(Debug)]
pub struct Forwarding {
    /// Where to find the coordinator.
    pub coordinator: Arc<Coordinator>,
    pub max_line_bytes: usize,
    /// How long to wait for a coordinator before answering error 11.
    pub failover_timeout: Duration,
    pub style: Style,
    /// Bytes of unfinished client lines over all forwarded connections
    /// (`--max-buffered-line-bytes`): a client whose line would cross it is disconnected.
    pub line_budget: Arc<LineBudget>,
    /// The shared links to the coordinator.
    links: Links,
    /// The link the next client connection uses.
    next_link: AtomicUsize,
}

impl Forwarding {
    pub fn new(
        coordinator: Coordinator,
        max_line_bytes: usize,
        failover_timeout: Duration,
        style: Style,
        line_budget: Arc<LineBudget>,
    ) -> Forwarding {
        let coordinator = Arc::new(coordinator);
        let links = Links::new(
            vec![Arc::clone(&coordinator); FOLLOWER_LINKS],
            failover_timeout,
        );
        Forwarding {
            coordinator,
            max_line_bytes,
            failover_timeout,
            style,
            line_budget,
            links,
            next_link: AtomicUsize::new(0),
        }
    }

    /// Error 11 for `line` (the client's, maybe marked), which no coordinator answered.
    fn unavailable(&self, line: Option<&str>, out: &mut Vec<u8>) {
        let error = ProtoError::Unavailable(self.coordinator.unreachable());
        let msg_id = line.and_then(peek_msg_id);
        let header = Header {
            style: self.style,
            address: Address::default(),
            in_reply_to: msg_id.as_deref(),
        };
        reply::error(out, &header, &error);
    }
}

/// Whose a forwarded line is (the line itself is kept by the link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// The client's line: its reply goes back to the client.
    Client,
    /// A resubscription the follower made itself: its `subscribe_ok` is not the client's.
    Resubscribe,
}

/// One client connection being forwarded.
struct Forwarded {
    client_read: BufReader<OwnedReadHalf>,
    client_write: OwnedWriteHalf,
    splitter: LineSplitter,
    /// What this connection's unfinished line holds of the line budget.
    share: Share,
    link: Link<Waiting>,
    ids: RequestIds,
    /// With a subscription: the next sequence number the client has not seen.
    subscribed: Option<u64>,
    /// With a consumer group's subscription: the client's line, sent again to join again.
    group_line: Option<String>,
    client_done: bool,
}

/// Serves one client connection by forwarding.
pub async fn forward_connection(client: TcpStream, forwarding: Arc<Forwarding>) {
    let _ = client.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let mut client_read = BufReader::with_capacity(64 * 1024, client_read);
    let mut splitter = LineSplitter::new(forwarding.max_line_bytes);
    let mut share = forwarding.line_budget.share();
    let mut ids = RequestIds::new();
    let n = forwarding.next_link.fetch_add(1, Ordering::Relaxed) % FOLLOWER_LINKS;
    let (pending, answers) = mpsc::channel(PENDING);
    let writer = tokio::spawn(write_answers(
        client_write,
        answers,
        Arc::clone(&forwarding),
    ));
    // Requests over the shared link until the client subscribes (or is done).
    let subscribe = loop {
        let Some(line) = read_client(&mut client_read, &mut splitter, &mut share).await else {
            break None;
        };
        if peek_subscribe(&line).is_some() {
            break Some(line);
        }
        let marked = mark(&line, &ids.next(), forwarding.max_line_bytes);
        let answer = forwarding.links.ask(n, marked).await;
        if pending.send(answer).await.is_err() {
            // The writer stopped: the client is gone.
            break None;
        }
    };
    drop(pending);
    // Every request before the subscription is answered before the stream starts.
    let Ok(Some(client_write)) = writer.await else {
        return;
    };
    let Some(line) = subscribe else {
        return;
    };
    let mut this = Forwarded {
        client_read,
        client_write,
        splitter,
        share,
        link: Link::new(LinkConfig::new(forwarding.failover_timeout), monotonic()),
        ids,
        subscribed: None,
        group_line: None,
        client_done: false,
    };
    let line = this.take(line, forwarding.max_line_bytes);
    this.link.push(monotonic(), line, Waiting::Client);
    stream_connection(this, &forwarding).await;
}

/// Writes the answers to a client's requests, in the order it asked; gives the writing half back
/// once every answer was written, `None` when the client is gone.
async fn write_answers(
    mut client_write: OwnedWriteHalf,
    mut answers: mpsc::Receiver<oneshot::Receiver<Answer>>,
    forwarding: Arc<Forwarding>,
) -> Option<OwnedWriteHalf> {
    let mut out = Vec::new();
    while let Some(answer) = answers.recv().await {
        out.clear();
        match answer.await {
            Ok(Answer::Reply(text)) => {
                out.extend_from_slice(text.as_bytes());
                out.push(b'\n');
            }
            Ok(Answer::GaveUp(line)) => forwarding.unavailable(Some(&line), &mut out),
            Err(_) => forwarding.unavailable(None, &mut out),
        }
        client_write.write_all(&out).await.ok()?;
    }
    Some(client_write)
}

/// Serves a subscribed client connection over a connection of its own to the coordinator.
async fn stream_connection(mut this: Forwarded, forwarding: &Forwarding) {
    loop {
        let deadline = this.link.give_up_at().unwrap_or_else(monotonic);
        let Some((upstream, coordinator)) = connect_to(&forwarding.coordinator, deadline).await
        else {
            // No coordinator: answer what waits with error 11, then go on (a coordinator may
            // appear before the client's next request).
            if this.give_up(forwarding).await.is_err()
                || this.client_done
                || this.subscribed.is_some()
            {
                return;
            }
            match read_client(&mut this.client_read, &mut this.splitter, &mut this.share).await {
                Some(line) => {
                    let line = this.take(line, forwarding.max_line_bytes);
                    this.link.push(monotonic(), line, Waiting::Client);
                }
                None => return,
            }
            continue;
        };
        let (up_read, mut up_write) = upstream.into_split();
        let mut replies = Replies::new(up_read);
        this.resubscribe();
        if up_write
            .write_all(&lines_out(this.link.connected()))
            .await
            .is_err()
        {
            this.link.lost(monotonic());
            continue;
        }
        loop {
            if this.client_done && this.link.is_idle() && this.subscribed.is_none() {
                let _ = this.client_write.flush().await;
                return;
            }
            tokio::select! {
                // Fewer in flight than the coordinator queues replies for (see `IN_FLIGHT`).
                line = read_client(&mut this.client_read, &mut this.splitter, &mut this.share), if !this.client_done && this.link.may_take() => {
                    match line {
                        Some(line) => {
                            let line = this.take(line, forwarding.max_line_bytes);
                            if let Some(line) = this.link.push(monotonic(), line, Waiting::Client)
                                && up_write.write_all(format!("{line}\n").as_bytes()).await.is_err()
                            {
                                break;
                            }
                        }
                        None => {
                            this.client_done = true;
                            if this.subscribed.is_some() {
                                return;
                            }
                        }
                    }
                }
                () = forwarding.coordinator.moved_from(coordinator) => {
                    tracing::info!(old = %coordinator.0, old_epoch = coordinator.1, "the lease moved to another coordinator");
                    break;
                }
                text = replies.next() => {
                    let Some(text) = text else { break };
                    match this.relay(&text).await {
                        Relayed::Passed => {}
                        Relayed::Done => return,
                        Relayed::Retry => {
                            tracing::info!("the coordinator is stopping; sending its waiting requests to the next one");
                            tokio::time::sleep(RETRY_PAUSE).await;
                            break;
                        }
                    }
                }
            }
        }
        this.link.lost(monotonic());
        tracing::info!(
            waiting = this.link.waiting(),
            "the coordinator went away; reconnecting"
        );
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// What became of an upstream line.
enum Relayed {
    /// Passed to the client, or taken (the follower's own resubscription), or dropped (nothing
    /// asked for it).
    Passed,
    /// Nothing more to do for this client: it is gone, or its subscription could not be resumed
    /// (the error was passed on, and closing tells the client to subscribe again).
    Done,
    /// The coordinator answered "unavailable" (error 11): the request stays waiting, to be sent
    /// to the next coordinator.
    Retry,
}

impl Forwarded {
    /// A client line, noted (a subscription) and marked with a request id, for the link.
    fn take(&mut self, line: String, max_line_bytes: usize) -> String {
        let marked = mark(&line, &self.ids.next(), max_line_bytes);
        // Only a subscribe is read further: other lines (ingest batches) pass unparsed.
        if let Some(from) = peek_subscribe(&line) {
            self.subscribed = from.or(self.subscribed);
            if peek_group_subscribe(&line) {
                self.group_line = Some(marked.clone());
            }
        }
        marked
    }

    /// Answers every waiting client line with error 11; `Err` when the client is gone.
    async fn give_up(&mut self, forwarding: &Forwarding) -> std::io::Result<()> {
        let mut out = Vec::new();
        for (line, waiting) in self.link.give_up(monotonic()) {
            if waiting == Waiting::Client {
                forwarding.unavailable(Some(&line), &mut out);
            }
        }
        self.client_write.write_all(&out).await
    }

    /// Before a new connection's resend: a subscription is resumed first (requests on a
    /// subscribed connection are only answered with errors), unless the client's own subscribe
    /// still waits; a resubscription made earlier and not answered is made again. A consumer
    /// group's member joins again with its own line: the new coordinator hands it what the
    /// group still owes, with `delivery` raised for what went out before.
    fn resubscribe(&mut self) {
        self.link.retain(|_, w| *w == Waiting::Client);
        if let Some(next) = self.subscribed
            && !self.link.any(|line, _| peek_subscribe(line).is_some())
        {
            let line = match &self.group_line {
                Some(line) => line.clone(),
                None => format!("{{\"type\":\"subscribe\",\"from_seq\":{next}}}"),
            };
            self.link.push_front(line, Waiting::Resubscribe);
        }
    }

    /// Routes one upstream line: a reply answers the oldest waiting request; a streamed window
    /// or late event of a subscription goes straight to the client.
    async fn relay(&mut self, text: &str) -> Relayed {
        let peek = Peek::of(text);
        let streamed = self.subscribed.is_some()
            && peek.as_ref().is_some_and(|p| {
                !p.answers && matches!(p.kind, Some(Kind::WindowClosed | Kind::LateEvent))
            });
        if streamed {
            if let Some(seq) = peek.as_ref().and_then(|p| p.seq) {
                self.subscribed = Some(seq + 1);
            }
        } else {
            if let Some(p) = &peek
                && p.kind == Some(Kind::SubscribeOk)
                && let Some(from) = p.from_seq
            {
                // The coordinator says where the subscription starts (for "new windows only").
                let next = self.subscribed.get_or_insert(from);
                *next = (*next).max(from);
            }
            let unavailable = peek.as_ref().is_some_and(Peek::is_unavailable);
            match self.link.reply(monotonic(), unavailable) {
                Reply::Retry => return Relayed::Retry,
                Reply::Answer(Waiting::Client) => {}
                Reply::Answer(Waiting::Resubscribe) => {
                    if peek
                        .as_ref()
                        .is_some_and(|p| p.kind == Some(Kind::SubscribeOk))
                    {
                        return Relayed::Passed;
                    }
                    // The subscription cannot go on: the client gets the error, then the end of
                    // the connection, and subscribes again.
                    let _ = self.client_write.write_all(text.as_bytes()).await;
                    return Relayed::Done;
                }
                Reply::Unsolicited => {
                    // Nothing was asked: an unsolicited refusal (a coordinator at its
                    // connection limit) is not the client's business.
                    tracing::debug!(
                        line = text.trim_end(),
                        "dropping an unsolicited upstream line"
                    );
                    return Relayed::Passed;
                }
            }
        }
        if self.client_write.write_all(text.as_bytes()).await.is_ok() {
            Relayed::Passed
        } else {
            Relayed::Done
        }
    }
}

/// The client's line marked with request id `id` (see [`mark_request_id`]), or as it is.
fn mark(line: &str, id: &str, max_line_bytes: usize) -> String {
    mark_request_id(line, id, max_line_bytes).unwrap_or_else(|| line.to_owned())
}

/// The client's next request line; `None` at the end of its input. A line over the limit is
/// replaced by a stand-in the coordinator rejects (see [`too_long`]).
async fn read_client(
    reader: &mut BufReader<OwnedReadHalf>,
    splitter: &mut LineSplitter,
    share: &mut Share,
) -> Option<String> {
    loop {
        let buf = reader.fill_buf().await.ok()?;
        if buf.is_empty() {
            return match splitter.finish()? {
                Line::Text(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
                Line::TooLong { bytes } => Some(too_long(bytes)),
            };
        }
        let (used, line) = splitter.feed(buf);
        reader.consume(used);
        if !share.hold(splitter.buffered()) {
            tracing::warn!(
                "closing a client connection: unfinished lines over --max-buffered-line-bytes"
            );
            return None;
        }
        match line {
            Some(Line::Text(bytes)) if bytes.iter().all(u8::is_ascii_whitespace) => {}
            Some(Line::Text(bytes)) => return Some(String::from_utf8_lossy(&bytes).into_owned()),
            Some(Line::TooLong { bytes }) => return Some(too_long(bytes)),
            None => {}
        }
    }
}

/// A stand-in for a line over the limit, kept in order with the other requests: the coordinator
/// answers it with error 12, its text naming the size.
fn too_long(bytes: usize) -> String {
    format!(
        "{{\"type\":\"ingest\",\"events\":\"a request line of {bytes} bytes or more, over --max-line-bytes; split the batch\"}}"
    )
}

#[cfg(test)]
mod tests {
    //! The follower against a scripted coordinator on loopback: what it sends again, and how.

    use tokio::net::TcpListener;

    use super::*;
    use crate::lease_redis::Role;

    /// A follower in front of `dir`'s coordinator, with one client connected to it.
    async fn follower(dir: &std::path::Path) -> BufReader<TcpStream> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        forward_on(listener, Coordinator::Dir(dir.to_owned())).await
    }

    /// A follower of `coordinator` that serves `listener`, with one client connected to it.
    async fn forward_on(listener: TcpListener, coordinator: Coordinator) -> BufReader<TcpStream> {
        let address = listener.local_addr().unwrap();
        let forwarding = Arc::new(Forwarding::new(
            coordinator,
            1 << 20,
            Duration::from_secs(5),
            Style::Compact,
            crate::line_budget::LineBudget::new(1 << 30),
        ));
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            forward_connection(client, forwarding).await;
        });
        BufReader::new(TcpStream::connect(address).await.unwrap())
    }

    /// A fake coordinator: publishes its address in `dir` and returns its listener.
    async fn coordinator(dir: &std::path::Path) -> TcpListener {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        std::fs::write(dir.join("coordinator"), format!("{address} 1")).unwrap();
        listener
    }

    /// The coordinator's next connection from the follower.
    async fn accept(listener: &TcpListener) -> BufReader<TcpStream> {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the follower connects within 10 s")
            .unwrap();
        BufReader::new(stream)
    }

    /// Writes `line` on `conn`.
    async fn say(conn: &mut BufReader<TcpStream>, line: &[u8]) {
        conn.get_mut().write_all(line).await.unwrap();
    }

    async fn next_line<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> String {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .expect("a line within 10 s")
            .unwrap();
        assert!(read > 0, "the connection closed");
        line
    }

    #[tokio::test]
    async fn an_unanswered_request_is_sent_again_with_the_same_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let upstream = coordinator(dir.path()).await;
        let mut client = follower(dir.path()).await;
        say(&mut client, b"{\"type\":\"flush\",\"msg_id\":7}\n").await;
        // The first coordinator takes the line and dies without answering.
        let mut first = accept(&upstream).await;
        let sent = next_line(&mut first).await;
        drop(first);
        let marked: serde_json::Value = serde_json::from_str(&sent).unwrap();
        let id = marked["request_id"].as_str().expect("marked").to_owned();
        assert_eq!(marked["msg_id"], 7);
        // The next one gets the same line, id and all, and its reply reaches the client.
        let mut second = accept(&upstream).await;
        assert_eq!(next_line(&mut second).await, sent);
        say(
            &mut second,
            b"{\"type\":\"flushed\",\"in_reply_to\":7,\"windows\":[]}\n",
        )
        .await;
        let reply = next_line(&mut client).await;
        assert!(reply.contains("flushed"), "{reply}");
        assert!(
            !reply.contains(&id),
            "the id is the follower's business: {reply}"
        );
    }

    #[tokio::test]
    async fn a_request_refused_as_unavailable_is_sent_again_not_passed_on() {
        let dir = tempfile::tempdir().unwrap();
        let upstream = coordinator(dir.path()).await;
        let mut client = follower(dir.path()).await;
        say(
            &mut client,
            b"{\"type\":\"ingest\",\"msg_id\":1,\"events\":[]}\n",
        )
        .await;
        // A stopping coordinator refuses with error 11 and keeps the connection open.
        let mut first = accept(&upstream).await;
        let sent = next_line(&mut first).await;
        say(
            &mut first,
            b"{\"type\":\"error\",\"in_reply_to\":1,\"code\":11,\"text\":\"shutting down\"}\n",
        )
        .await;
        let mut second = accept(&upstream).await;
        assert_eq!(
            next_line(&mut second).await,
            sent,
            "the same line, sent again"
        );
        say(&mut second, b"{\"type\":\"ingest_ok\",\"in_reply_to\":1,\"accepted\":0,\"duplicates\":0,\"late\":0}\n").await;
        let reply = next_line(&mut client).await;
        assert!(reply.contains("ingest_ok"), "{reply}");
        drop(first);
    }

    #[tokio::test]
    async fn a_takeover_under_the_same_address_moves_the_connection() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = upstream.local_addr().unwrap();
        let (role_tx, role) = tokio::sync::watch::channel(Role::Following {
            holder: Some((address.to_string(), 1)),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = listener.local_addr().unwrap();
        let mut client = forward_on(listener, Coordinator::Redis { role, me }).await;
        say(&mut client, b"{\"type\":\"stats\",\"msg_id\":1}\n").await;
        // Epoch 1 takes the line and stalls (alive, connection open); epoch 2 takes over at the
        // same address, as a quick restart would.
        let mut stalled = accept(&upstream).await;
        let sent = next_line(&mut stalled).await;
        role_tx
            .send(Role::Following {
                holder: Some((address.to_string(), 2)),
            })
            .unwrap();
        let mut second = accept(&upstream).await;
        assert_eq!(next_line(&mut second).await, sent, "sent again to epoch 2");
        drop(stalled);
    }
}
