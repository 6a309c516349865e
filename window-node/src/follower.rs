//! Followers: a `serve` process that does not hold the lease serves its clients by forwarding
//! their request lines to the coordinator and relaying the replies.
//!
//! Each client connection gets its own connection to the coordinator. Requests not yet answered
//! are remembered; when the coordinator goes away (it died, and another process, maybe this one,
//! takes over) the follower reconnects to the new coordinator and sends them again, so a client
//! sees a delay, not an error: ingest is idempotent by event id, so a resent batch is not counted
//! twice. A subscription is resumed from the next sequence number it had not yet seen. Only when
//! no coordinator appears within the failover timeout are the waiting requests answered with
//! error 11 (safe to retry).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::NodeError;
use crate::lease_file::read_coordinator;
use crate::lease_redis::Role;
use crate::lines::{Line, LineSplitter};
use crate::render::{Address, Style, write_message};

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

impl Coordinator {
    /// The coordinator's address, if one is known.
    pub fn address(&self) -> Option<SocketAddr> {
        match self {
            Coordinator::Dir(dir) => read_coordinator(dir).map(|(address, _epoch)| address),
            Coordinator::Redis { role, me } => holder_address(&role.borrow(), *me),
        }
    }

    /// Resolves once the coordinator is known to be another than `current` (a takeover while
    /// `current` is paused or cut off, which a connection to it would not show). Only the Redis
    /// lease can move while its old holder lives; a file lease never resolves this.
    async fn moved_from(&self, current: SocketAddr) {
        match self {
            Coordinator::Dir(_) => std::future::pending().await,
            Coordinator::Redis { role, me } => {
                let mut role = role.clone();
                let moved = role
                    .wait_for(|role| holder_address(role, *me).is_some_and(|a| a != current))
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

/// The lease holder's address as `role` knows it (`me` when this process holds it).
fn holder_address(role: &Role, me: SocketAddr) -> Option<SocketAddr> {
    match role {
        Role::Following {
            holder: Some(holder),
        } => holder.parse().ok(),
        Role::Holding { .. } => Some(me),
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

/// Just enough of a message to route it.
#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "type")]
    kind: Option<String>,
    in_reply_to: Option<serde::de::IgnoredAny>,
    seq: Option<u64>,
    from_seq: Option<u64>,
    body: Option<Box<Peek>>,
}

impl Peek {
    fn of(line: &str) -> Option<Peek> {
        let peek: Peek = serde_json::from_str(line).ok()?;
        Some(match peek.body {
            Some(body) => *body,
            None => peek,
        })
    }
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
    loop {
        let Some((upstream, coordinator)) = connect(&forwarding).await else {
            // No coordinator: answer what waits with error 11, then go on (a coordinator may
            // appear before the client's next request).
            let error = NodeError::Unavailable(
                "no coordinator is reachable (the lease holder died and none took over yet); retry: ingest is idempotent".to_owned(),
            );
            for item in waiting.drain(..) {
                if let Waiting::Client(line) = item {
                    let mut out = Vec::new();
                    write_message(
                        &mut out,
                        forwarding.style,
                        Address::default(),
                        "error",
                        msg_id_of(&line).as_deref(),
                        |w| {
                            w.key("code").int(error.code());
                            w.key("text").str(&error.to_string());
                        },
                    );
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
                line = read_client(&mut client_read, &mut splitter), if !client_done => {
                    match line {
                        Some(line) => {
                            note_subscribe(&line, &mut subscribed);
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
                    tracing::info!(old = %coordinator, "the lease moved to another coordinator");
                    break;
                }
                read = up_read.read_until(b'\n', &mut up_line) => {
                    match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&up_line).into_owned();
                    up_line.clear();
                    if !relay(&text, &mut waiting, &mut subscribed, &mut client_write).await {
                        return;
                    }
                }
            }
        }
        tracing::info!(
            waiting = waiting.len(),
            "the coordinator went away; reconnecting"
        );
    }
}

/// Routes one upstream line: a reply answers the oldest waiting request; a streamed window or
/// late event of a subscription goes straight to the client. Returns false if the client is gone.
async fn relay(
    text: &str,
    waiting: &mut VecDeque<Waiting>,
    subscribed: &mut Option<u64>,
    client: &mut OwnedWriteHalf,
) -> bool {
    let peek = Peek::of(text.trim_end());
    let streamed = subscribed.is_some()
        && peek.as_ref().is_some_and(|p| {
            p.in_reply_to.is_none()
                && matches!(p.kind.as_deref(), Some("window_closed" | "late_event"))
        });
    if streamed {
        if let Some(seq) = peek.as_ref().and_then(|p| p.seq) {
            *subscribed = Some(seq + 1);
        }
    } else {
        if let Some(p) = &peek
            && p.kind.as_deref() == Some("subscribe_ok")
            && let Some(from) = p.from_seq
        {
            // The coordinator says where the subscription starts (for "new windows only").
            subscribed.get_or_insert(from);
            if subscribed.is_some_and(|next| next < from) {
                *subscribed = Some(from);
            }
        }
        if let Some(Waiting::Resubscribe) = waiting.pop_front() {
            return true;
        }
    }
    client.write_all(text.as_bytes()).await.is_ok()
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
            .any(|w| matches!(w, Waiting::Client(l) if is_subscribe(l)));
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

/// Finds a coordinator to talk to, waiting up to the failover timeout.
async fn connect(forwarding: &Forwarding) -> Option<(TcpStream, SocketAddr)> {
    let deadline = tokio::time::Instant::now() + forwarding.failover_timeout;
    loop {
        if let Some(address) = forwarding.coordinator.address()
            && let Ok(stream) = TcpStream::connect(address).await
        {
            let _ = stream.set_nodelay(true);
            return Some((stream, address));
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

fn is_subscribe(line: &str) -> bool {
    line.contains("subscribe")
        && Peek::of(line).is_some_and(|p| p.kind.as_deref() == Some("subscribe"))
}

/// Remembers where a client's subscription starts.
fn note_subscribe(line: &str, subscribed: &mut Option<u64>) {
    if is_subscribe(line) {
        let from = Peek::of(line).and_then(|p| p.from_seq);
        *subscribed = from.or(*subscribed);
    }
}

/// The `msg_id` of a request line, as JSON text, for an error reply.
fn msg_id_of(line: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        msg_id: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        body: Option<Box<Id<'a>>>,
    }
    let id: Id<'_> = serde_json::from_str(line).ok()?;
    let id = match id.body {
        Some(body) => *body,
        None => id,
    };
    id.msg_id.map(|m| m.get().to_owned())
}
