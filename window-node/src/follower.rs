//! Followers: a `serve` process that does not hold the lease serves its clients by forwarding
//! their request lines to the coordinator and relaying the replies.
//!
//! Each client connection gets its own connection to the coordinator. Requests not yet answered
//! are remembered; when the coordinator goes away (it died, and another process, maybe this one,
//! takes over) the follower reconnects to the new coordinator and sends them again, so a client
//! sees a delay, not an error: ingest is idempotent by event id, so a resent batch is not counted
//! twice. Every forwarded line is marked with a request id (unless the client gave one), which
//! the coordinator records with the request's outcome in the same batch: a resent `close` or
//! `flush`, or an `ingest` whose window was closed meanwhile, is answered from that record rather
//! than run a second time. A coordinator that answers error 11 (it is stopping) is treated like
//! one that went away: the request is sent again to the next one. A subscription is resumed from
//! the next sequence number it had not yet seen. Only when no coordinator appears within the
//! failover timeout are the waiting requests answered with error 11 (safe to retry).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::lease_file::read_coordinator;
use crate::lease_redis::Role;
use crate::limits::IN_FLIGHT;
use window_proto::Kind;
use window_proto::ProtoError;
use window_proto::peer::{Peek, mark_request_id};
use window_proto::reply::{self, Address, Header};
use window_proto::{Line, LineSplitter};
use window_proto::{Style, peek_msg_id, peek_subscribe};

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

    /// Resolves once the coordinator is known to be another than `current` (a takeover while
    /// `current` is paused or cut off, which a connection to it would not show, or a takeover
    /// under the same address). Only the Redis lease can move while its old holder lives; a file
    /// lease never resolves this.
    pub(crate) async fn moved_from(&self, current: Holder) {
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
        Role::Starting | Role::Following { holder: None } | Role::Lost { .. } => None,
    }
}

/// What forwarding needs to know.
#[derive(Debug)]
pub struct Forwarding {
    /// Where to find the coordinator.
    pub coordinator: Coordinator,
    pub max_line_bytes: usize,
    /// How long to wait for a coordinator before answering error 11.
    pub failover_timeout: Duration,
    pub style: Style,
}

/// A request sent upstream and not yet answered.
enum Waiting {
    /// The client's line: its reply goes back to the client.
    Client(String),
    /// A resubscription the follower made itself: its `subscribe_ok` is not the client's.
    Resubscribe,
}

/// Serves one client connection by forwarding.
pub async fn forward_connection(client: TcpStream, forwarding: Arc<Forwarding>) {
    let _ = client.set_nodelay(true);
    let (client_read, mut client_write) = client.into_split();
    let mut client_read = BufReader::with_capacity(64 * 1024, client_read);
    let mut splitter = LineSplitter::new(forwarding.max_line_bytes);
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    // With a subscription: the next sequence number the client has not seen.
    let mut subscribed: Option<u64> = None;
    let mut client_done = false;
    let mut ids = RequestIds::new();
    let mut refusals = Refusals::default();
    loop {
        let Some((upstream, coordinator)) = connect(&forwarding).await else {
            // No coordinator: answer what waits with error 11, then go on (a coordinator may
            // appear before the client's next request).
            let error = ProtoError::Unavailable(
                "no coordinator is reachable (the lease holder died and none took over yet); retry: ingest is idempotent".to_owned(),
            );
            for item in waiting.drain(..) {
                if let Waiting::Client(line) = item {
                    let mut out = Vec::new();
                    let msg_id = peek_msg_id(&line);
                    let header = Header {
                        style: forwarding.style,
                        address: Address::default(),
                        in_reply_to: msg_id.as_deref(),
                    };
                    reply::error(&mut out, &header, &error);
                    if client_write.write_all(&out).await.is_err() {
                        return;
                    }
                }
            }
            if client_done || subscribed.is_some() {
                return;
            }
            match read_client(&mut client_read, &mut splitter).await {
                Some(line) => {
                    note_subscribe(&line, &mut subscribed);
                    let line = mark(&line, &ids.next(), forwarding.max_line_bytes);
                    waiting.push_back(Waiting::Client(line));
                }
                None => return,
            }
            continue;
        };
        let (up_read, mut up_write) = upstream.into_split();
        let mut up_read = BufReader::with_capacity(64 * 1024, up_read);
        if resend(&mut up_write, &mut waiting, subscribed)
            .await
            .is_err()
        {
            continue;
        }
        let mut up_line = Vec::new();
        loop {
            if client_done && waiting.is_empty() && subscribed.is_none() {
                let _ = client_write.flush().await;
                return;
            }
            tokio::select! {
                // Fewer in flight than the coordinator queues replies for (see `IN_FLIGHT`).
                line = read_client(&mut client_read, &mut splitter), if !client_done && waiting.len() < IN_FLIGHT => {
                    match line {
                        Some(line) => {
                            note_subscribe(&line, &mut subscribed);
                            let line = mark(&line, &ids.next(), forwarding.max_line_bytes);
                            let sent = up_write.write_all(format!("{line}\n").as_bytes()).await;
                            waiting.push_back(Waiting::Client(line));
                            if sent.is_err() {
                                break;
                            }
                        }
                        None => {
                            client_done = true;
                            if subscribed.is_some() {
                                return;
                            }
                        }
                    }
                }
                () = forwarding.coordinator.moved_from(coordinator) => {
                    tracing::info!(old = %coordinator.0, old_epoch = coordinator.1, "the lease moved to another coordinator");
                    break;
                }
                read = up_read.read_until(b'\n', &mut up_line) => {
                    match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&up_line).into_owned();
                    up_line.clear();
                    let may_retry = refusals.may_retry(forwarding.failover_timeout);
                    match relay(&text, &mut waiting, &mut subscribed, &mut client_write, may_retry).await {
                        Relayed::Passed { unavailable } => refusals.note(unavailable),
                        Relayed::Done => return,
                        Relayed::Retry => {
                            refusals.note(true);
                            tracing::info!("the coordinator is stopping; sending its waiting requests to the next one");
                            tokio::time::sleep(RETRY_PAUSE).await;
                            break;
                        }
                    }
                }
            }
        }
        tracing::info!(
            waiting = waiting.len(),
            "the coordinator went away; reconnecting"
        );
        // Not at once: a coordinator that closes every connection (at its connection limit, or
        // stopping) must not make this loop spin.
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// What became of an upstream line.
enum Relayed {
    /// Passed to the client (or, for the follower's own resubscription, taken); `unavailable`
    /// when it was an error 11 passed on because retrying took too long.
    Passed { unavailable: bool },
    /// Nothing more to do for this client: it is gone, or its subscription could not be resumed
    /// (the error was passed on, and closing tells the client to subscribe again).
    Done,
    /// The coordinator answered "unavailable" (error 11): the request stays waiting, to be sent
    /// to the next coordinator.
    Retry,
}

/// How long a follower waits before sending again what a stopping coordinator refused.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a follower waits before connecting again after its coordinator connection closed.
pub(crate) const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// A run of refusals (error 11) from coordinators. Waiting requests are sent again while the run
/// is younger than the failover timeout, and reach the client as errors after that. A run ends
/// with any other reply, or when no refusal came for a failover timeout.
#[derive(Default)]
pub(crate) struct Refusals {
    /// When the run began and when its latest refusal came.
    run: Option<(tokio::time::Instant, tokio::time::Instant)>,
}

impl Refusals {
    pub(crate) fn may_retry(&mut self, timeout: Duration) -> bool {
        let now = tokio::time::Instant::now();
        if self.run.is_some_and(|(_, last)| now - last > timeout) {
            self.run = None;
        }
        self.run.is_none_or(|(first, _)| now - first < timeout)
    }

    /// Notes a reply: a refusal or not.
    pub(crate) fn note(&mut self, refused: bool) {
        let now = tokio::time::Instant::now();
        self.run = match (refused, self.run) {
            (false, _) => None,
            (true, Some((first, _))) => Some((first, now)),
            (true, None) => Some((now, now)),
        };
    }
}

/// Routes one upstream line: a reply answers the oldest waiting request; a streamed window or
/// late event of a subscription goes straight to the client. An error 11 reply leaves its request
/// waiting when `may_retry`.
async fn relay(
    text: &str,
    waiting: &mut VecDeque<Waiting>,
    subscribed: &mut Option<u64>,
    client: &mut OwnedWriteHalf,
    may_retry: bool,
) -> Relayed {
    let peek = Peek::of(text);
    let unavailable = peek.as_ref().is_some_and(Peek::is_unavailable);
    let streamed = subscribed.is_some()
        && peek.as_ref().is_some_and(|p| {
            !p.answers && matches!(p.kind, Some(Kind::WindowClosed | Kind::LateEvent))
        });
    if streamed {
        if let Some(seq) = peek.as_ref().and_then(|p| p.seq) {
            *subscribed = Some(seq + 1);
        }
    } else {
        if let Some(p) = &peek
            && p.kind == Some(Kind::SubscribeOk)
            && let Some(from) = p.from_seq
        {
            // The coordinator says where the subscription starts (for "new windows only").
            subscribed.get_or_insert(from);
            if subscribed.is_some_and(|next| next < from) {
                *subscribed = Some(from);
            }
        }
        match waiting.pop_front() {
            Some(Waiting::Resubscribe) => {
                let resumed = peek
                    .as_ref()
                    .is_some_and(|p| p.kind == Some(Kind::SubscribeOk));
                if resumed {
                    return Relayed::Passed { unavailable: false };
                }
                if may_retry && unavailable {
                    // `resend` subscribes again on the next connection.
                    return Relayed::Retry;
                }
                // The subscription cannot go on: the client gets the error, then the end of
                // the connection, and subscribes again.
                let _ = client.write_all(text.as_bytes()).await;
                return Relayed::Done;
            }
            Some(Waiting::Client(line)) if may_retry && unavailable => {
                waiting.push_front(Waiting::Client(line));
                return Relayed::Retry;
            }
            Some(Waiting::Client(_)) => {}
            None => {
                // Nothing was asked: an unsolicited refusal (a coordinator at its connection
                // limit) is not the client's business.
                tracing::debug!(
                    line = text.trim_end(),
                    "dropping an unsolicited upstream line"
                );
                return Relayed::Passed { unavailable };
            }
        }
    }
    if client.write_all(text.as_bytes()).await.is_ok() {
        Relayed::Passed { unavailable }
    } else {
        Relayed::Done
    }
}

/// Sends every waiting request again (and resumes a subscription) on a new upstream.
async fn resend(
    up: &mut OwnedWriteHalf,
    waiting: &mut VecDeque<Waiting>,
    subscribed: Option<u64>,
) -> std::io::Result<()> {
    // A resubscription made earlier and not answered is made again below.
    waiting.retain(|w| matches!(w, Waiting::Client(_)));
    let mut out = Vec::new();
    if let Some(next) = subscribed {
        // Resume first: requests on a subscribed connection are only answered with errors.
        let client_subscribe_waiting = waiting
            .iter()
            .any(|w| matches!(w, Waiting::Client(l) if peek_subscribe(l).is_some()));
        if !client_subscribe_waiting {
            out.extend_from_slice(
                format!("{{\"type\":\"subscribe\",\"from_seq\":{next}}}\n").as_bytes(),
            );
            waiting.push_front(Waiting::Resubscribe);
        }
    }
    for item in waiting.iter() {
        if let Waiting::Client(line) = item {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    up.write_all(&out).await
}

/// Request ids for one client connection's lines: 128 random bits, then the line's number.
pub(crate) struct RequestIds {
    prefix: String,
    next: u64,
}

impl RequestIds {
    pub(crate) fn new() -> RequestIds {
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

    pub(crate) fn next(&mut self) -> String {
        self.next += 1;
        format!("fw-{}-{}", self.prefix, self.next)
    }
}

/// The client's line marked with request id `id` (see [`mark_request_id`]), or as it is.
fn mark(line: &str, id: &str, max_line_bytes: usize) -> String {
    mark_request_id(line, id, max_line_bytes).unwrap_or_else(|| line.to_owned())
}

/// Finds a coordinator to talk to, waiting up to the failover timeout.
async fn connect(forwarding: &Forwarding) -> Option<(TcpStream, Holder)> {
    connect_to(&forwarding.coordinator, forwarding.failover_timeout).await
}

/// Connects to `coordinator`'s holder, waiting up to `timeout` for one to be known and to answer.
pub(crate) async fn connect_to(
    coordinator: &Coordinator,
    timeout: Duration,
) -> Option<(TcpStream, Holder)> {
    let deadline = tokio::time::Instant::now() + timeout;
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

/// The client's next request line; `None` at the end of its input. A line over the limit is
/// replaced by a stand-in the coordinator rejects (see [`too_long`]).
async fn read_client(
    reader: &mut BufReader<OwnedReadHalf>,
    splitter: &mut LineSplitter,
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

/// Remembers where a client's subscription starts.
fn note_subscribe(line: &str, subscribed: &mut Option<u64>) {
    if let Some(from) = peek_subscribe(line) {
        *subscribed = from.or(*subscribed);
    }
}

#[cfg(test)]
mod tests {
    //! The follower against a scripted coordinator on loopback: what it sends again, and how.

    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn request_ids_differ_between_connections_and_lines() {
        let (mut a, mut b) = (RequestIds::new(), RequestIds::new());
        let ids = [a.next(), a.next(), b.next()];
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
        assert!(ids[0].len() > 32, "128 random bits: {}", ids[0]);
    }

    /// A follower in front of `dir`'s coordinator, with one client connected to it.
    async fn follower(dir: &std::path::Path) -> BufReader<TcpStream> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let forwarding = Arc::new(Forwarding {
            coordinator: Coordinator::Dir(dir.to_owned()),
            max_line_bytes: 1 << 20,
            failover_timeout: Duration::from_secs(5),
            style: Style::Compact,
        });
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
        client
            .get_mut()
            .write_all(b"{\"type\":\"flush\",\"msg_id\":7}\n")
            .await
            .unwrap();
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
        second
            .get_mut()
            .write_all(b"{\"type\":\"flushed\",\"in_reply_to\":7,\"windows\":[]}\n")
            .await
            .unwrap();
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
        client
            .get_mut()
            .write_all(b"{\"type\":\"ingest\",\"msg_id\":1,\"events\":[]}\n")
            .await
            .unwrap();
        // A stopping coordinator refuses with error 11 and keeps the connection open.
        let mut first = accept(&upstream).await;
        let sent = next_line(&mut first).await;
        first
            .get_mut()
            .write_all(
                b"{\"type\":\"error\",\"in_reply_to\":1,\"code\":11,\"text\":\"shutting down\"}\n",
            )
            .await
            .unwrap();
        let mut second = accept(&upstream).await;
        assert_eq!(
            next_line(&mut second).await,
            sent,
            "the same line, sent again"
        );
        second
            .get_mut()
            .write_all(
                b"{\"type\":\"ingest_ok\",\"in_reply_to\":1,\"accepted\":0,\"duplicates\":0,\"late\":0}\n",
            )
            .await
            .unwrap();
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
        let forwarding = Arc::new(Forwarding {
            coordinator: Coordinator::Redis { role, me },
            max_line_bytes: 1 << 20,
            failover_timeout: Duration::from_secs(5),
            style: Style::Compact,
        });
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            forward_connection(client, forwarding).await;
        });
        let mut client = BufReader::new(TcpStream::connect(me).await.unwrap());
        client
            .get_mut()
            .write_all(b"{\"type\":\"stats\",\"msg_id\":1}\n")
            .await
            .unwrap();
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

    #[tokio::test(start_paused = true)]
    async fn refusals_are_retried_for_one_failover_timeout_per_run() {
        let timeout = Duration::from_secs(5);
        let mut refusals = Refusals::default();
        assert!(refusals.may_retry(timeout));
        // A run of refusals a second apart: retried while it is younger than the timeout.
        for second in 0..5 {
            assert!(refusals.may_retry(timeout), "second {second}");
            refusals.note(true);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert!(!refusals.may_retry(timeout), "the run is 5 s old");
        refusals.note(true);
        // Quiet for longer than the timeout: the next refusal starts a new run.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(refusals.may_retry(timeout));
        refusals.note(true);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(refusals.may_retry(timeout));
        refusals.note(true);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!refusals.may_retry(timeout), "the new run is 6 s old");
        // Any other reply ends the run.
        refusals.note(false);
        assert!(refusals.may_retry(timeout));
    }
}
