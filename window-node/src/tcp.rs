//! The TCP daemon: `window-node serve`. Connections speak the line protocol (compact by
//! default); the driver (`driver.rs`) owns the engine and the store.
//!
//! Each connection has a reader (lines with a length limit and an idle timeout) and a writer.
//! The reader parses a request, sends its command to the driver and queues the pending reply; the
//! writer answers in request order. So a client may pipeline requests, and the bounded queues
//! between them give back-pressure: a connection that sends faster than the driver commits waits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot, watch};
use window_core::{IdFrame, WindowSpec};
use window_store::OutputRecord;

use crate::driver::{Command, Delivered, Live, OwnedEvent, Published, Stats, Subscription};
use crate::group_route::GroupStream;
use crate::line_budget::{LineBudget, Share};
use crate::metrics::Metrics;
use crate::partitions::PartitionTable;
use crate::router::{LocalReply, PartitionLinks, RouteLimits, Routed, route};
use window_cluster::link::PIPELINE;
use window_proto::ProtoError;
use window_proto::reply::{
    self, ConfigStats, HolderStats, IngestCounts, LateView, Stamp, StatsReply, SubscribeStart,
    TimeKind, WindowView,
};
use window_proto::{
    Body, FromSeq, GroupJoin, ReplyTo, Style, Timestamps, parse_request_with, window_bounds,
};
use window_proto::{Line, LineSplitter};
use window_service::{MemberId, TimeBase};

/// Where a connection's requests go.
#[derive(Debug)]
pub enum Route {
    /// To the one driver (this process coordinates the whole namespace).
    Single(mpsc::Sender<Command>),
    /// `--partitions`: a request for one partition (`"partition": i`, from a router) to that
    /// partition's driver here, or error 11 when this process does not serve it; a client's
    /// request to the router, which splits it over the partitions' holders.
    Partitioned {
        table: Arc<PartitionTable>,
        links: Arc<PartitionLinks>,
    },
}

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub route: Route,
    pub frame: IdFrame,
    pub spec: WindowSpec,
    pub style: Style,
    pub max_line_bytes: usize,
    /// The largest payload an event may carry (`--max-payload-bytes`).
    pub max_payload_bytes: usize,
    /// Whether events must carry a timestamp (not with `--time ingest`).
    pub timestamps: Timestamps,
    pub idle_timeout: Option<Duration>,
    pub metrics: Arc<Metrics>,
    /// The coordinator's address, reported by `stats`.
    pub holder: String,
    /// Bytes of unfinished lines over all connections (`--max-buffered-line-bytes`).
    pub line_budget: Arc<LineBudget>,
    /// Bytes of fired windows a subscriber may leave untaken before it is dropped
    /// (`--subscriber-buffer-bytes`).
    pub subscriber_buffer_bytes: u64,
    /// Turns true when the holding these connections were accepted for ended (a Redis holder
    /// stepped down): they are closed, and their clients reconnect to whoever holds the lease.
    pub retired: watch::Receiver<bool>,
}

impl Shared {
    /// What the router needs of the connection's settings.
    fn route_limits(&self) -> RouteLimits {
        RouteLimits {
            spec: self.spec,
            style: self.style,
            max_line_bytes: self.max_line_bytes,
        }
    }
}

/// The connection limit (`--max-connections`) of one accept loop: the holder's, a follower's,
/// or a partition router's.
#[derive(Clone, Debug)]
pub struct Slots {
    free: Arc<Semaphore>,
    max: usize,
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots {
            free: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A slot for a new connection (held as long as it is open), or `None` at the limit: the
    /// connection is then answered with error 11 and closed.
    pub fn take(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        style: Style,
    ) -> Option<(TcpStream, OwnedSemaphorePermit)> {
        match Arc::clone(&self.free).try_acquire_owned() {
            Ok(permit) => Some((stream, permit)),
            Err(_) => {
                tracing::warn!(%peer, max_connections = self.max, "refusing a connection: at the connection limit");
                tokio::spawn(refuse(stream, style, self.max));
                None
            }
        }
    }
}

/// Accepts connections until `shutdown` resolves.
pub async fn accept_loop(
    listener: &TcpListener,
    shared: Arc<Shared>,
    slots: Slots,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let Some((stream, permit)) = slots.take(stream, peer, shared.style) else {
            continue;
        };
        let shared = Arc::clone(&shared);
        Metrics::add(&shared.metrics.connections_total, 1);
        shared
            .metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let span = tracing::info_span!("connection", %peer);
            let _enter = span.enter();
            drop(_enter);
            serve_connection(stream, peer, Arc::clone(&shared)).await;
            shared
                .metrics
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Resolves once `retired` turns true (never when its sender is gone without turning it).
async fn retired(mut retired: watch::Receiver<bool>) {
    if retired.wait_for(|retired| *retired).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn refuse(mut stream: TcpStream, style: Style, max: usize) {
    let mut out = Vec::new();
    let error = ProtoError::Unavailable(format!(
        "the node serves at most {max} connections; retry later or raise --max-connections"
    ));
    reply::error(&mut out, &ReplyTo::default().header(style), &error);
    let _ = stream.write_all(&out).await;
}

/// A reply the writer must produce, in order.
enum Outgoing {
    Ready(Vec<u8>),
    Ingest(ReplyTo, oneshot::Receiver<Result<IngestCounts, ProtoError>>),
    Close(
        ReplyTo,
        Part,
        oneshot::Receiver<Result<OutputRecord, ProtoError>>,
    ),
    Flush(
        ReplyTo,
        Part,
        oneshot::Receiver<Result<Vec<OutputRecord>, ProtoError>>,
    ),
    Stats(ReplyTo, oneshot::Receiver<Stats>),
    Subscribe(
        ReplyTo,
        Part,
        oneshot::Receiver<Result<Subscription, ProtoError>>,
    ),
    /// A consumer group joined: `subscribe_ok`, then the windows the group hands this member.
    Group(Box<Joining>),
    /// A member's `ack`, answered once durable.
    Acked(ReplyTo, oneshot::Receiver<Result<u64, ProtoError>>),
    /// The router's reply, whole.
    Routed(oneshot::Receiver<Vec<u8>>),
    /// The router's merged subscription.
    RoutedStream(mpsc::Receiver<Vec<u8>>),
    /// The router's merged consumer-group membership; the reader keeps `acks`.
    RoutedGroup(GroupStream),
}

/// A connection joining a consumer group.
struct Joining {
    to: ReplyTo,
    part: Part,
    name: String,
    member: MemberId,
    /// The seq the group started at, once the driver took the member in.
    joined: oneshot::Receiver<Result<u64, ProtoError>>,
    deliveries: mpsc::Receiver<Delivered>,
}

/// Names the members of consumer groups in this process.
static NEXT_MEMBER: AtomicU64 = AtomicU64::new(1);

/// The partition a request was for (written on its windows), and its driver; `partition` is
/// `None` without partitions.
#[derive(Clone, Debug)]
struct Part {
    partition: Option<u32>,
    commands: mpsc::Sender<Command>,
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (out_tx, out_rx) = mpsc::channel(PIPELINE);
    let writer = tokio::spawn(write_replies(write, out_rx, Arc::clone(&shared)));
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut splitter = LineSplitter::new(shared.max_line_bytes);
    let mut share = shared.line_budget.share();
    // Once it subscribes, a connection only streams windows: it is never idle, and requests on
    // it are answered with an error (on the stream) instead of being run; a consumer group's
    // member sends its acks there.
    let mut subscribed = false;
    let mut member: Option<(MemberId, mpsc::Sender<Command>)> = None;
    // A consumer group over partitions: where each partition's acks go.
    let mut routed_acks: Option<Vec<mpsc::Sender<String>>> = None;
    // One wait for the whole connection, not one per line.
    let retired = retired(shared.retired.clone());
    tokio::pin!(retired);
    loop {
        let idle = shared.idle_timeout.filter(|_| !subscribed);
        let read = tokio::select! {
            read = read_line(&mut reader, &mut splitter, &mut share, idle) => read,
            () = &mut retired => {
                tracing::debug!(%peer, "closing a connection: this node stepped down");
                break;
            }
        };
        let outgoing = match read {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::debug!(%peer, "closing an idle connection");
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::OutOfMemory => {
                // Over the budget of unfinished lines: answered, then closed (its bytes let go).
                let budget = &shared.line_budget;
                tracing::warn!(%peer, held = budget.held(), max = budget.max(), "closing a connection: unfinished lines over --max-buffered-line-bytes");
                let error = ProtoError::Unavailable(format!(
                    "this node holds {} bytes of unfinished request lines over its connections, over --max-buffered-line-bytes ({}); this connection is closed and its line dropped: send the request again",
                    budget.held(),
                    budget.max()
                ));
                let _ = out_tx
                    .send(ready_error(&shared, &ReplyTo::default(), &error))
                    .await;
                break;
            }
            Ok(None) | Err(_) => break,
            Ok(Some(Line::TooLong { bytes })) => {
                let error = ProtoError::malformed(format!(
                    "line of {bytes} bytes or more exceeds the limit of {} bytes; split the batch or raise --max-line-bytes",
                    shared.max_line_bytes
                ));
                ready_error(&shared, &ReplyTo::default(), &error)
            }
            Ok(Some(Line::Text(line))) => match std::str::from_utf8(&line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) if member.is_some() => {
                    member_request(text, &shared, member.as_ref()).await
                }
                Ok(text) if routed_acks.is_some() => {
                    let acks = routed_acks.as_deref().unwrap_or_default();
                    match routed_ack(text, &shared, acks).await {
                        Some(outgoing) => outgoing,
                        // Forwarded: its answer comes on the merged stream.
                        None => continue,
                    }
                }
                Ok(_) if subscribed => ready_error(
                    &shared,
                    &ReplyTo::default(),
                    &ProtoError::malformed(
                        "this connection is subscribed and only streams windows; send requests on another connection",
                    ),
                ),
                Ok(text) => {
                    let mut outgoing = handle_request(text, &shared).await;
                    subscribed = matches!(
                        outgoing,
                        Outgoing::Subscribe(..)
                            | Outgoing::RoutedStream(..)
                            | Outgoing::Group(..)
                            | Outgoing::RoutedGroup(..)
                    );
                    match &mut outgoing {
                        Outgoing::Group(joining) => {
                            member = Some((joining.member, joining.part.commands.clone()));
                        }
                        Outgoing::RoutedGroup(stream) => {
                            routed_acks = Some(std::mem::take(&mut stream.acks));
                        }
                        _ => {}
                    }
                    outgoing
                }
                Err(e) => ready_error(
                    &shared,
                    &ReplyTo::default(),
                    &ProtoError::malformed(format!(
                        "request is not valid UTF-8 (byte {}); send UTF-8 JSON",
                        e.valid_up_to()
                    )),
                ),
            },
        };
        if out_tx.send(outgoing).await.is_err() {
            break;
        }
    }
    drop(out_tx);
    if let Some((member, commands)) = member {
        // What it held goes to the other members.
        let _ = commands.send(Command::LeaveGroup { member }).await;
    }
    let _ = writer.await;
}

/// A line on the connection of a consumer group over partitions: an `ack` naming its
/// partition goes to that partition's member (`None`: its answer comes on the stream), anything
/// else gets an error.
async fn routed_ack(
    text: &str,
    shared: &Shared,
    acks: &[mpsc::Sender<String>],
) -> Option<Outgoing> {
    let request = match parse_request_with(text, shared.timestamps) {
        Ok(request) => request,
        Err((to, error)) => return Some(ready_error(shared, &to, &error)),
    };
    let to = request.reply_to();
    let error = match (&request.body, request.partition) {
        (Body::Ack { .. }, Some(p)) => match acks.get(p as usize) {
            Some(partition) => {
                if partition.send(text.to_owned()).await.is_ok() {
                    return None;
                }
                lost()
            }
            None => ProtoError::malformed(format!(
                "partition {p} is not one of the {} partitions",
                acks.len()
            )),
        },
        (Body::Ack { .. }, None) => ProtoError::malformed(
            "with --partitions an ack names its \"partition\": the partition of the windows it acknowledges (each window says it)",
        ),
        _ => only_ack(),
    };
    Some(ready_error(shared, &to, &error))
}

/// The answer to any request but `ack` on a consumer group member's connection.
fn only_ack() -> ProtoError {
    ProtoError::malformed(
        "this connection is a consumer group's member: it takes only ack; send other requests on another connection",
    )
}

/// A line on a group member's connection: an `ack`, or an error.
async fn member_request(
    text: &str,
    shared: &Shared,
    member: Option<&(MemberId, mpsc::Sender<Command>)>,
) -> Outgoing {
    let request = match parse_request_with(text, shared.timestamps) {
        Ok(request) => request,
        Err((to, error)) => return ready_error(shared, &to, &error),
    };
    let to = request.reply_to();
    let (Body::Ack { seqs }, Some((member, commands))) = (request.body, member) else {
        return ready_error(shared, &to, &only_ack());
    };
    let member = *member;
    match ask(commands, |reply| Command::Ack {
        member,
        seqs,
        reply,
    })
    .await
    {
        Some(rx) => Outgoing::Acked(to, rx),
        None => ready_error(shared, &to, &lost()),
    }
}

/// Reads one line, skipping the rest of a line over the splitter's limit; `None` at the end.
/// With `idle`, a connection that sends no byte for that long is idle (an error of kind
/// `TimedOut`): any byte is activity, so a client slowly sending one long line is not idle.
async fn read_line<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    splitter: &mut LineSplitter,
    share: &mut Share,
    idle: Option<Duration>,
) -> std::io::Result<Option<Line>> {
    loop {
        let buf = match idle {
            Some(limit) => tokio::time::timeout(limit, reader.fill_buf())
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??,
            None => reader.fill_buf().await?,
        };
        if buf.is_empty() {
            return Ok(splitter.finish());
        }
        let (used, line) = splitter.feed(buf);
        reader.consume(used);
        if !share.hold(splitter.buffered()) {
            return Err(std::io::ErrorKind::OutOfMemory.into());
        }
        if line.is_some() {
            return Ok(line);
        }
    }
}

async fn handle_request(text: &str, shared: &Shared) -> Outgoing {
    let request = match parse_request_with(text, shared.timestamps) {
        Ok(request) => request,
        Err((to, error)) => return ready_error(shared, &to, &error),
    };
    let to = request.reply_to();
    if let Err(error) = request.check_payloads(shared.max_payload_bytes) {
        return ready_error(shared, &to, &error);
    }
    match request.body {
        Body::Init { .. } => {
            let mut out = Vec::new();
            reply::init_ok(&mut out, &to.header(shared.style));
            return Outgoing::Ready(out);
        }
        Body::Assign { .. } | Body::ProcessWindow { .. } => {
            return ready_error(
                shared,
                &to,
                &ProtoError::UnknownType(
                    "assign and process_window are stdin requests; the daemon takes ingest (the window size comes from --window-size)".to_owned(),
                ),
            );
        }
        _ => {}
    }
    let part = match target(shared, request.partition) {
        Target::Local(part) => part,
        Target::Refused(error) => return ready_error(shared, &to, &error),
        Target::Router(links) => {
            let limits = shared.route_limits();
            return match route(request.body, request.request_id, to, limits, links).await {
                Routed::Ready(out) => Outgoing::Ready(out),
                Routed::Reply(rx) => Outgoing::Routed(rx),
                Routed::Stream(rx) => Outgoing::RoutedStream(rx),
                Routed::Group(stream) => Outgoing::RoutedGroup(stream),
            };
        }
    };
    command(request.body, request.request_id, to, part, shared).await
}

/// Where a request goes: a driver of this process, the router, or nowhere (an error).
enum Target<'a> {
    Local(Part),
    Router(&'a PartitionLinks),
    Refused(ProtoError),
}

/// Where a request for `partition` (or, without it, for any key) goes.
fn target(shared: &Shared, partition: Option<u32>) -> Target<'_> {
    match (&shared.route, partition) {
        (Route::Single(commands), None) => Target::Local(Part {
            partition: None,
            commands: commands.clone(),
        }),
        (Route::Single(_), Some(partition)) => Target::Refused(ProtoError::malformed(format!(
            "partition {partition} was given, but this namespace has no partitions (--partitions 1); leave partition out"
        ))),
        (Route::Partitioned { table, .. }, Some(partition)) => match table.local(partition) {
            Some(commands) => Target::Local(Part {
                partition: Some(partition),
                commands,
            }),
            None if partition >= table.count() => Target::Refused(ProtoError::malformed(format!(
                "partition {partition} does not exist: the namespace has {} partitions (0 to {})",
                table.count(),
                table.count() - 1
            ))),
            None => Target::Refused(ProtoError::Unavailable(format!(
                "this node does not serve partition {partition} (its lease is elsewhere, or being handed over); send it to the partition's holder, or leave partition out and any node routes it"
            ))),
        },
        (Route::Partitioned { links, .. }, None) => Target::Router(links),
    }
}

/// A request for one partition must hold only that partition's keys: a key's windows in two
/// partitions would fire twice, with ids counted apart.
fn foreign_key(shared: &Shared, part: &Part, key: Option<&str>) -> Option<ProtoError> {
    match (&shared.route, part.partition) {
        (Route::Partitioned { table, .. }, Some(partition)) => {
            let home = table.of(key);
            (home != partition).then(|| {
                ProtoError::malformed(format!(
                    "key {key:?} belongs to partition {home}, not {partition}: leave partition out and any node routes the request"
                ))
            })
        }
        _ => None,
    }
}

/// The events of an ingest, owned for the driver, each checked: its window fits, and its key
/// belongs to the request's partition.
fn owned_events(
    events: Vec<window_core::Event<'_>>,
    shared: &Shared,
    part: &Part,
) -> Result<Vec<OwnedEvent>, ProtoError> {
    let mut owned = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        window_bounds(shared.spec, index, event.ts)?;
        if let Some(error) = foreign_key(shared, part, event.key) {
            return Err(error);
        }
        owned.push(OwnedEvent::of(event));
    }
    Ok(owned)
}

/// Sends the request's command to its partition's driver; the reply waits in the queue.
async fn command(
    body: Body<'_>,
    request_id: Option<String>,
    to: ReplyTo,
    part: Part,
    shared: &Shared,
) -> Outgoing {
    let commands = &part.commands;
    let unavailable = || {
        ProtoError::Unavailable("the node is shutting down; retry against another node or after restart (ingest is idempotent)".to_owned())
    };
    let foreign = |key: Option<&str>| foreign_key(shared, &part, key);
    match body {
        Body::Ingest { mut events, .. } => {
            let owned = match owned_events(events.events(), shared, &part) {
                Ok(owned) => owned,
                Err(error) => return ready_error(shared, &to, &error),
            };
            let Some(rx) = ask(commands, |reply| Command::Ingest {
                events: owned,
                request_id,
                reply,
            })
            .await
            else {
                return ready_error(shared, &to, &unavailable());
            };
            Outgoing::Ingest(to, rx)
        }
        Body::Close {
            window_id,
            size,
            key,
        } => {
            if let Some(error) = foreign(key.as_deref()) {
                return ready_error(shared, &to, &error);
            }
            let Some(rx) = ask(commands, |reply| Command::Close {
                window_id,
                size,
                key,
                request_id,
                reply,
            })
            .await
            else {
                return ready_error(shared, &to, &unavailable());
            };
            Outgoing::Close(to, part, rx)
        }
        Body::Flush { until } => {
            let Some(rx) = ask(commands, |reply| Command::Flush {
                until,
                request_id,
                reply,
            })
            .await
            else {
                return ready_error(shared, &to, &unavailable());
            };
            Outgoing::Flush(to, part, rx)
        }
        Body::Stats => {
            let Some(rx) = ask(commands, |reply| Command::Stats { reply }).await else {
                return ready_error(shared, &to, &unavailable());
            };
            Outgoing::Stats(to, rx)
        }
        Body::Subscribe {
            group: Some(group),
            from_seq,
        } => {
            let from_seq = match FromSeq::one(from_seq, "a group's is one number") {
                Ok(from_seq) => from_seq,
                Err(error) => return ready_error(shared, &to, &error),
            };
            join_group(group, from_seq, to, part, shared).await
        }
        Body::Ack { .. } => ready_error(shared, &to, &ProtoError::not_a_group_member()),
        Body::Subscribe {
            from_seq,
            group: None,
        } => {
            const WHY: &str = "this request is for one log (no partitions, or one partition)";
            let from_seq = match FromSeq::one(from_seq, WHY) {
                Ok(from_seq) => from_seq,
                Err(error) => return ready_error(shared, &to, &error),
            };
            let Some(rx) = ask(commands, |reply| Command::Subscribe { from_seq, reply }).await
            else {
                return ready_error(shared, &to, &unavailable());
            };
            Outgoing::Subscribe(to, part, rx)
        }
        Body::Init { .. } | Body::Assign { .. } | Body::ProcessWindow { .. } => {
            unreachable!("answered above")
        }
    }
}

/// Joins consumer group `group` as a new member of this connection.
async fn join_group(
    group: GroupJoin,
    from_seq: Option<u64>,
    to: ReplyTo,
    part: Part,
    shared: &Shared,
) -> Outgoing {
    let member = NEXT_MEMBER.fetch_add(1, Ordering::Relaxed);
    // At most this many held, however many asked (the parser saw to at least 1): a member never
    // holds more, so its channel never fills.
    let max_unacked = group.max_unacked.min(1 << 16);
    let (deliver, deliveries) = mpsc::channel(max_unacked as usize);
    let name = group.name.clone();
    let joined = ask(&part.commands, |reply| Command::JoinGroup {
        name: group.name,
        member,
        max_unacked,
        from_seq,
        deliver,
        reply,
    })
    .await;
    let Some(joined) = joined else {
        return ready_error(shared, &to, &lost());
    };
    Outgoing::Group(Box::new(Joining {
        to,
        part,
        name,
        member,
        joined,
        deliveries,
    }))
}

/// Sends the driver the command `make` builds around a reply channel; the channel's receiving
/// end, or `None` when the driver is gone.
async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Option<oneshot::Receiver<T>> {
    let (tx, rx) = oneshot::channel();
    commands.send(make(tx)).await.ok().map(|()| rx)
}

/// The driver is gone. It stops unasked only when this process may no longer coordinate (the
/// lease lapsed, or the store failed): the request may be run by the next coordinator.
fn lost() -> ProtoError {
    ProtoError::Unavailable(
        "this node stopped coordinating before answering; retry against another node (ingest is idempotent; give close and flush a request_id to make them so)"
            .to_owned(),
    )
}

fn ready_error(shared: &Shared, to: &ReplyTo, error: &ProtoError) -> Outgoing {
    let mut out = Vec::new();
    reply::error(&mut out, &to.header(shared.style), error);
    Outgoing::Ready(out)
}

async fn write_replies(
    write: tokio::net::tcp::OwnedWriteHalf,
    mut queue: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
) {
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    let mut out = Vec::with_capacity(4096);
    while let Some(item) = queue.recv().await {
        out.clear();
        let style = shared.style;
        let item = reply_once(item, &shared, &mut out).await.err();
        match item {
            None => {}
            Some(
                Outgoing::RoutedStream(lines) | Outgoing::RoutedGroup(GroupStream { lines, .. }),
            ) => {
                stream_routed(&mut write, &mut queue, lines).await;
                let _ = write.flush().await;
                return;
            }
            Some(Outgoing::Group(joining)) => {
                stream_group(&mut write, &mut queue, &shared, *joining).await;
                let _ = write.flush().await;
                return;
            }
            Some(Outgoing::Subscribe(to, part, rx)) => {
                match rx.await.unwrap_or_else(|_| Err(lost())) {
                    Ok(subscription) => {
                        stream_subscription(
                            &mut write,
                            &mut queue,
                            &shared,
                            &part,
                            to,
                            subscription,
                        )
                        .await;
                    }
                    Err(error) => {
                        reply::error(&mut out, &to.header(style), &error);
                    }
                }
                // A subscriber's connection ends with its subscription.
                let _ = write.write_all(&out).await;
                let _ = write.flush().await;
                return;
            }
            Some(_) => unreachable!("reply_once answers every other kind"),
        }
        if write.write_all(&out).await.is_err() {
            return;
        }
        if queue.is_empty() && write.flush().await.is_err() {
            return;
        }
    }
    let _ = write.flush().await;
}

/// Writes the reply to a request answered once into `out`, when its outcome is known; a stream
/// (a subscription, a group's membership) is given back.
async fn reply_once(item: Outgoing, shared: &Shared, out: &mut Vec<u8>) -> Result<(), Outgoing> {
    let style = shared.style;
    match item {
        Outgoing::Ready(bytes) => *out = bytes,
        Outgoing::Ingest(to, rx) => match rx.await.unwrap_or_else(|_| Err(lost())) {
            Ok(ok) => reply::ingest_ok(out, &to.header(style), ok),
            Err(error) => reply::error(out, &to.header(style), &error),
        },
        Outgoing::Close(to, part, rx) => match rx.await.unwrap_or_else(|_| Err(lost())) {
            Ok(record) => reply::window_closed(
                out,
                &to.header(style),
                &logged(shared.frame, &record, part.partition),
            ),
            Err(error) => reply::error(out, &to.header(style), &error),
        },
        Outgoing::Flush(to, part, rx) => match rx.await.unwrap_or_else(|_| Err(lost())) {
            Ok(records) => reply::flushed(
                out,
                &to.header(style),
                records
                    .iter()
                    .map(|record| logged(shared.frame, record, part.partition)),
            ),
            Err(error) => reply::error(out, &to.header(style), &error),
        },
        Outgoing::Stats(to, rx) => match rx.await {
            Ok(stats) => {
                let holder = HolderStats {
                    watermark: stats.watermark,
                    lease_holder: &shared.holder,
                    epoch: stats.epoch,
                    connections: shared.metrics.connections_open.load(Ordering::Relaxed),
                    refused_ahead: stats.refused_ahead,
                    refused_open_windows: stats.refused_open_windows,
                    log_start: stats.log_start,
                };
                let stats = StatsReply {
                    open_windows: stats.open_windows as u64,
                    buffered_events: stats.buffered_events as u64,
                    emitted_windows: stats.next_seq,
                    accepted: stats.counters.accepted,
                    duplicates: stats.counters.duplicates,
                    late: stats.counters.late,
                    holder: Some(holder),
                    partitions: None,
                    groups: &stats.groups,
                    config: Some(ConfigStats {
                        window_size_ms: shared.spec.size.get(),
                        time: match stats.time {
                            TimeBase::Event => TimeKind::Event,
                            TimeBase::Ingest => TimeKind::Ingest,
                        },
                        allowed_lateness_ms: stats.engine.allowed_lateness_ms,
                        max_events: stats.engine.purge.max_events.map(|n| n.get()),
                        max_age_ms: stats.engine.purge.max_age_ms,
                    }),
                };
                reply::stats_ok(out, &to.header(style), &stats);
            }
            Err(_) => reply::error(out, &to.header(style), &lost()),
        },
        Outgoing::Routed(rx) => {
            *out = rx.await.unwrap_or_else(|_| {
                let mut out = Vec::new();
                reply::error(&mut out, &ReplyTo::default().header(style), &lost());
                out
            });
        }
        Outgoing::Acked(to, rx) => match rx.await.unwrap_or_else(|_| Err(lost())) {
            Ok(acked) => reply::ack_ok(out, &to.header(style), acked),
            Err(error) => reply::error(out, &to.header(style), &error),
        },
        stream @ (Outgoing::RoutedStream(_)
        | Outgoing::RoutedGroup(_)
        | Outgoing::Group(_)
        | Outgoing::Subscribe(..)) => return Err(stream),
    }
    Ok(())
}

/// [`answer_here`] once the process's connections' settings are gone (it is stopping): error 11.
// The outer future queues the request, the inner one is its reply: yielding it is the point.
#[allow(clippy::async_yields_async)]
pub fn answer_stopped() -> LocalReply {
    Box::pin(async {
        Box::pin(async {
            let mut out = Vec::new();
            reply::error(
                &mut out,
                &ReplyTo::default().header(Style::Compact),
                &lost(),
            );
            String::from_utf8_lossy(&out).trim_end().to_owned()
        }) as crate::router::LocalAnswer
    })
}

/// Answers a partition's request line in this process, as its holder's connection would (the
/// router's way to a partition this process serves): once the request is queued to its driver,
/// the reply to come. A subscription is not answered here (it streams over a connection).
#[allow(clippy::async_yields_async)] // As for `answer_stopped`.
pub fn answer_here(shared: &Arc<Shared>, line: String) -> LocalReply {
    let shared = Arc::clone(shared);
    Box::pin(async move {
        let outgoing = handle_request(&line, &shared).await;
        Box::pin(async move {
            let mut out = Vec::new();
            if reply_once(outgoing, &shared, &mut out).await.is_err() {
                let error = ProtoError::Internal(
                    "a stream was asked of the local partition path".to_owned(),
                );
                out.clear();
                reply::error(&mut out, &ReplyTo::default().header(shared.style), &error);
            }
            String::from_utf8_lossy(&out).trim_end().to_owned()
        }) as crate::router::LocalAnswer
    })
}

/// Sends `subscribe_ok`, the backlog (paging through the log), then live windows, until the
/// client goes away or falls too far behind (then an error says where to resume).
///
/// The connection's reply queue stays open alongside: error replies to requests sent on the
/// subscribed connection are written between windows, and when the client closes its side (the
/// reader ends, closing the queue) the subscription ends and the connection's slot is freed.
async fn stream_subscription<W: AsyncWriteExt + Unpin>(
    write: &mut W,
    queue: &mut mpsc::Receiver<Outgoing>,
    shared: &Shared,
    part: &Part,
    to: ReplyTo,
    mut subscription: Subscription,
) {
    let mut out = Vec::new();
    let start = subscription.next_seq - subscription.backlog.len() as u64;
    reply::subscribe_ok(
        &mut out,
        &to.header(shared.style),
        SubscribeStart::One(start),
    );
    let event_to = to.unsolicited();
    let streamed = event_to.header(shared.style);
    let mut next = subscription.next_seq;
    let Live {
        feed: mut live,
        mut head,
        mut taken,
    } = loop {
        for record in &subscription.backlog {
            let view = logged(shared.frame, record, part.partition);
            reply::window_closed(&mut out, &streamed, &view);
        }
        if !send_out(write, &mut out).await {
            return;
        }
        if let Some(live) = subscription.live.take() {
            break live;
        }
        let Some(rx) = ask(&part.commands, |reply| Command::Subscribe {
            from_seq: Some(next),
            reply,
        })
        .await
        else {
            return;
        };
        subscription = match rx.await {
            Ok(Ok(s)) => s,
            Ok(Err(error)) => {
                // The log's retention passed the subscriber while it paged (error 12 names the
                // oldest seq kept), or the log could not be read: said, then closed.
                reply::error(&mut out, &event_to.header(shared.style), &error);
                let _ = write.write_all(&out).await;
                let _ = write.flush().await;
                return;
            }
            Err(_) => return,
        };
        next = subscription.next_seq;
    };
    let limit = shared.subscriber_buffer_bytes;
    let behind = |next: u64| {
        ProtoError::Unavailable(format!(
            "this subscriber fell too far behind and was disconnected; subscribe again with from_seq {next} (the log is durable, nothing is lost)"
        ))
    };
    loop {
        let received = tokio::select! {
            received = live.recv() => received,
            item = queue.recv() => {
                match item {
                    Some(Outgoing::Ready(bytes)) => out.extend_from_slice(&bytes),
                    // The reader queues nothing else once subscribed; the client is gone.
                    Some(_) | None => return,
                }
                if !write_watching(write, &out, &mut head, taken, limit, &shared.metrics).await {
                    return;
                }
                out.clear();
                continue;
            }
        };
        let published = match received {
            Ok(published) => published,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                Metrics::add(&shared.metrics.subscribers_dropped, 1);
                reply::error(&mut out, &streamed, &behind(next));
                let _ = write.write_all(&out).await;
                let _ = write.flush().await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        match &published {
            Published::Window(record, through) => {
                taken = *through;
                if head.borrow().saturating_sub(taken) > limit {
                    // The windows it has not taken hold too much memory for it.
                    Metrics::add(&shared.metrics.subscribers_dropped, 1);
                    reply::error(&mut out, &streamed, &behind(next));
                    let _ = write.write_all(&out).await;
                    let _ = write.flush().await;
                    return;
                }
                if record.seq < next {
                    continue;
                }
                next = record.seq + 1;
                let view = logged(shared.frame, record, part.partition);
                reply::window_closed(&mut out, &streamed, &view);
            }
            Published::Late(late) => {
                let view = LateView {
                    frame: shared.frame,
                    id: &late.event.id,
                    ts: late.event.ts,
                    key: late.event.key.as_deref(),
                    window_start: late.bounds.start,
                };
                reply::late_event(&mut out, &streamed, &view);
            }
        }
        // Batch what is already waiting into one write.
        if live.is_empty() || out.len() > 64 * 1024 {
            if !write_watching(write, &out, &mut head, taken, limit, &shared.metrics).await {
                return;
            }
            out.clear();
        }
    }
}

/// Writes `out` to a subscriber, unless the live feed gets more than `limit` bytes ahead of
/// what it has taken (`taken`) while the write waits (a subscriber that does not read): then it
/// is dropped (counted), mid-line perhaps, which frees the windows held for it; it resumes with
/// `from_seq`. False when the subscription ends.
async fn write_watching<W: AsyncWriteExt + Unpin>(
    write: &mut W,
    out: &[u8],
    head: &mut watch::Receiver<u64>,
    taken: u64,
    limit: u64,
    metrics: &Metrics,
) -> bool {
    let written = async {
        write.write_all(out).await?;
        write.flush().await
    };
    tokio::pin!(written);
    let mut watching = true;
    loop {
        tokio::select! {
            result = &mut written => return result.is_ok(),
            changed = head.changed(), if watching => {
                if changed.is_err() {
                    // The driver is gone: nothing more is published.
                    watching = false;
                } else if head.borrow_and_update().saturating_sub(taken) > limit {
                    tracing::warn!(
                        behind_bytes = *head.borrow() - taken,
                        limit,
                        "a subscriber that does not read fell over --subscriber-buffer-bytes behind; disconnected"
                    );
                    Metrics::add(&metrics.subscribers_dropped, 1);
                    return false;
                }
            }
        }
    }
}

/// Sends `subscribe_ok` with the group, then each window the group hands this member (with
/// its `delivery`), and the answers to the member's acks, until the client or the driver goes.
async fn stream_group<W: AsyncWriteExt + Unpin>(
    write: &mut W,
    queue: &mut mpsc::Receiver<Outgoing>,
    shared: &Shared,
    joining: Joining,
) {
    let Joining {
        to,
        part,
        name,
        joined,
        mut deliveries,
        ..
    } = joining;
    let style = shared.style;
    let mut out = Vec::new();
    match joined.await.unwrap_or_else(|_| Err(lost())) {
        Ok(from_seq) => reply::subscribe_ok(
            &mut out,
            &to.header(style),
            SubscribeStart::Group {
                name: &name,
                from_seq,
            },
        ),
        Err(error) => {
            reply::error(&mut out, &to.header(style), &error);
            let _ = write.write_all(&out).await;
            return;
        }
    }
    let streamed = to.unsolicited();
    loop {
        // Batch what is already waiting into one write (a group commit hands a member many
        // windows at once: one write each was one `sendto` a window).
        if !out.is_empty()
            && ((deliveries.is_empty() && queue.is_empty()) || out.len() > 64 * 1024)
            && !send_out(write, &mut out).await
        {
            return;
        }
        tokio::select! {
            delivered = deliveries.recv() => {
                let Some(delivered) = delivered else {
                    // The driver is gone: this process no longer coordinates.
                    reply::error(&mut out, &streamed.header(style), &lost());
                    let _ = write.write_all(&out).await;
                    return;
                };
                let mut view = logged(shared.frame, &delivered.record, part.partition);
                if let Stamp::Logged { delivery, .. } = &mut view.stamp {
                    *delivery = Some(delivered.delivery);
                }
                reply::window_closed(&mut out, &streamed.header(style), &view);
            }
            item = queue.recv() => match item {
                Some(Outgoing::Ready(bytes)) => out.extend_from_slice(&bytes),
                Some(Outgoing::Acked(to, rx)) => {
                    // What is written goes out before the wait for the ack's sync.
                    if !out.is_empty() && !send_out(write, &mut out).await {
                        return;
                    }
                    match rx.await.unwrap_or_else(|_| Err(lost())) {
                        Ok(acked) => reply::ack_ok(&mut out, &to.header(style), acked),
                        Err(error) => reply::error(&mut out, &to.header(style), &error),
                    }
                }
                // The client closed its side: the reader ended, and the member leaves (what
                // is written still goes out; the caller flushes).
                Some(_) | None => {
                    let _ = write.write_all(&out).await;
                    return;
                }
            },
        }
    }
}

/// Writes and flushes what `out` holds, then empties it; false once the connection is gone.
async fn send_out<W: AsyncWriteExt + Unpin>(write: &mut W, out: &mut Vec<u8>) -> bool {
    if write.write_all(out).await.is_err() || write.flush().await.is_err() {
        return false;
    }
    out.clear();
    true
}

/// A logged window as the daemon shows it.
fn logged(frame: IdFrame, record: &OutputRecord, partition: Option<u32>) -> WindowView<'_> {
    WindowView {
        frame,
        window: &record.window,
        stamp: Stamp::Logged {
            seq: record.seq,
            epoch: record.epoch,
            partition,
            delivery: None,
        },
    }
}

/// Streams the router's merged subscription until it ends or the client goes away; error
/// replies to requests sent on the subscribed connection go between its lines.
async fn stream_routed<W: AsyncWriteExt + Unpin>(
    write: &mut W,
    queue: &mut mpsc::Receiver<Outgoing>,
    mut lines: mpsc::Receiver<Vec<u8>>,
) {
    let mut out = Vec::new();
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => out.extend_from_slice(&line),
                None => {
                    let _ = write.write_all(&out).await;
                    return;
                }
            },
            item = queue.recv() => match item {
                Some(Outgoing::Ready(bytes)) => out.extend_from_slice(&bytes),
                // The client is gone; what is written still goes out (the caller flushes).
                Some(_) | None => {
                    let _ = write.write_all(&out).await;
                    return;
                }
            },
        }
        // Batch what is already waiting into one write.
        if (lines.is_empty() || out.len() > 64 * 1024) && !send_out(write, &mut out).await {
            return;
        }
    }
}
