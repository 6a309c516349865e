//! The router of a partitioned node (`--partitions N`): a client's request, split by partition,
//! sent to each partition's holder, and the answers merged into one reply.
//!
//! - `ingest`: the events grouped by their key's partition; one `ingest` per partition, each
//!   with its own request id (the client's id with `/pN` appended, or a fresh one), so a part
//!   sent again after a failover is answered from its record; the counts are summed.
//! - `close`: to its key's partition. `flush` and `stats`: to every partition, the windows merged
//!   by (start, end, key), the counts summed with a `partitions` list beside them.
//! - `subscribe`: one subscription per partition, resumed after a failover from the next `seq`
//!   it had not seen; `from_seq` is one number for all partitions or one per partition, and
//!   every window carries its `partition` (its `seq` is that partition's).
//!
//! A partition this node holds is served in process ([`PartitionLinks::serve_here`]: the
//! holder's own request handler, without a connection). For the others a node has one link per
//! partition ([`PartitionLinks`], over [`Links`]), shared by all its client connections: a
//! connection to the node that holds the partition's lease that sends the
//! partition's requests in the order they were asked, keeps the unanswered ones, and sends them
//! again to the next holder when the holder goes away, moves, or answers error 11 (a handover
//! or a stop), for up to the failover timeout. Replies come back in order on the link, so the
//! first unanswered ask is always the one a reply answers; one connection per partition keeps
//! the holders' connection count bounded by nodes x partitions, and many clients' requests
//! pipelined on it make large group commits. A subscription has connections of its own (one
//! per partition), since it streams.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use window_core::Timestamp;

use crate::feeds::{Feed, connect_feed, merge_feeds};
use crate::group_route::{GroupStream, route_group};
use crate::links::{Answer, Links, is_unavailable};
use crate::partitions::PartitionTable;
use crate::upstream::{Coordinator, RequestIds};
use window_cluster::link::RETRY_PAUSE;
use window_proto::ProtoError;
use window_proto::peer::{Peek, PeerFields, expect_reply, request_line, unexpected};
use window_proto::reply::{
    self, ConfigStats, GroupStats, IngestCounts, PartitionStats, StatsReply,
};
use window_proto::{
    Body, FromSeq, JsonWriter, Kind, MAX_REQUEST_ID, ReplyTo, Style, window_bounds,
};

/// What the router answers a request with.
#[derive(Debug)]
pub enum Routed {
    /// The reply, ready now.
    Ready(Vec<u8>),
    /// The reply, once every partition answered.
    Reply(oneshot::Receiver<Vec<u8>>),
    /// A subscription: `subscribe_ok`, then windows, until the channel closes.
    Stream(mpsc::Receiver<Vec<u8>>),
    /// A consumer group's membership: the stream, and where the client's acks go.
    Group(GroupStream),
}

/// The reply text of a partition's request served in this process.
pub type LocalAnswer = Pin<Box<dyn Future<Output = String> + Send>>;
/// A partition's request handed to this process's driver of it: resolves once it is queued
/// there (so requests keep their order), to the reply to come.
pub type LocalReply = Pin<Box<dyn Future<Output = LocalAnswer> + Send>>;
/// Serves a partition's request line in this process (`tcp::answer_here`).
pub type ServeHere = Box<dyn Fn(String) -> LocalReply + Send + Sync>;

/// A node's way to each partition's holder: for a partition this process holds, its driver,
/// directly; for the others, a link (one per partition, see [`Links`]) shared by its
/// connections.
pub struct PartitionLinks {
    table: Arc<PartitionTable>,
    links: Arc<Links>,
    /// Per partition, the task serving its requests here while this process holds it (set once
    /// the connections' settings exist).
    here: OnceLock<Vec<mpsc::Sender<LocalAsk>>>,
    ids: Mutex<RequestIds>,
    failover_timeout: Duration,
}

impl std::fmt::Debug for PartitionLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLinks")
            .field("partitions", &self.table.count())
            .finish_non_exhaustive()
    }
}

impl PartitionLinks {
    pub fn new(table: Arc<PartitionTable>, failover_timeout: Duration) -> PartitionLinks {
        let targets = (0..table.count())
            .map(|p| {
                table
                    .coordinator(p)
                    .map(Arc::clone)
                    .expect("a partition below the count")
            })
            .collect();
        PartitionLinks {
            table,
            links: Arc::new(Links::new(targets, failover_timeout)),
            here: OnceLock::new(),
            ids: Mutex::new(RequestIds::new()),
            failover_timeout,
        }
    }

    /// A fresh request id, for a request that came without one.
    fn next_id(&self) -> String {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).next()
    }

    /// Serves the partitions this process holds with `here`, not over a link to itself: one task
    /// per partition takes its requests in the order asked (a pipeline like a link's, so the
    /// partitions' requests are parsed and queued in parallel, without the connection).
    pub fn serve_here(&self, here: ServeHere) {
        let here = Arc::new(here);
        let workers = (0..self.table.count())
            .map(|partition| {
                let (asks, queue) = mpsc::channel(LOCAL_QUEUE);
                tokio::spawn(serve_partition_here(
                    Arc::clone(&here),
                    partition,
                    queue,
                    Arc::clone(&self.links),
                ));
                asks
            })
            .collect();
        let _ = self.here.set(workers);
    }

    /// Sends `line` to the holder of `partition`: this process's driver when it holds the
    /// partition, else over the partition's link (see [`Links::ask`]). A partition being handed
    /// over or stopped here answers error 11, and the line goes over the link then, which finds
    /// the next holder (across such a handover a client's requests to that partition may run out
    /// of order; the request ids keep each one's effect to once).
    async fn ask(&self, partition: u32, line: String) -> oneshot::Receiver<Answer> {
        let line = match self.here.get() {
            Some(workers) if self.table.local(partition).is_some() => {
                let (answer, receiver) = oneshot::channel();
                match workers[partition as usize]
                    .send(LocalAsk { line, answer })
                    .await
                {
                    Ok(()) => return receiver,
                    Err(mpsc::error::SendError(ask)) => ask.line,
                }
            }
            _ => line,
        };
        self.links.ask(partition as usize, line).await
    }
}

/// A partition's request for this process's driver of it, and where its answer goes.
struct LocalAsk {
    line: String,
    answer: oneshot::Sender<Answer>,
}

/// Requests waiting for a partition's local task.
const LOCAL_QUEUE: usize = 256;

/// Serves `partition`'s requests here, in the order asked: each is queued to the driver before
/// the next is read; its reply is awaited apart. One the driver refuses with error 11 goes over
/// the partition's link.
async fn serve_partition_here(
    here: Arc<ServeHere>,
    partition: u32,
    mut asks: mpsc::Receiver<LocalAsk>,
    links: Arc<Links>,
) {
    while let Some(LocalAsk { line, answer }) = asks.recv().await {
        let reply = here(line.clone()).await;
        let links = Arc::clone(&links);
        tokio::spawn(async move {
            let text = reply.await;
            let result = if is_unavailable(&text) {
                links
                    .ask(partition as usize, line)
                    .await
                    .await
                    .unwrap_or(Answer::Reply(text))
            } else {
                Answer::Reply(text)
            };
            let _ = answer.send(result);
        });
    }
}

/// What the router needs of the node's settings.
#[derive(Clone, Copy, Debug)]
pub struct RouteLimits {
    /// The daemon's windows, to check each event's before any part is sent.
    pub spec: window_core::WindowSpec,
    /// The reply style.
    pub style: Style,
    /// The longest line a holder takes.
    pub max_line_bytes: usize,
}

/// Routes one client request (`init`, `assign` and `process_window` are answered by the caller).
pub async fn route(
    body: Body<'_>,
    request_id: Option<String>,
    to: ReplyTo,
    shared: RouteLimits,
    links: &PartitionLinks,
) -> Routed {
    let id = || part_id(links, request_id.as_deref());
    match body {
        Body::Ingest { mut events, .. } => {
            route_ingest(events.events(), id(), to, shared, links).await
        }
        Body::Close {
            window_id,
            size,
            key,
        } => route_close(window_id, size, key, id(), to, shared.style, links).await,
        Body::Flush { until } => route_flush(until, id(), to, shared.style, links).await,
        Body::Stats => route_stats(to, shared.style, links).await,
        Body::Subscribe {
            from_seq,
            group: None,
        } => route_subscribe(from_seq, to, shared.style, links),
        Body::Subscribe {
            group: Some(join),
            from_seq,
        } => {
            const WHY: &str = "a group's applies to its group on every partition";
            let from_seq = match FromSeq::one(from_seq, WHY) {
                Ok(from_seq) => from_seq,
                Err(error) => return ready_error(shared.style, &to, &error),
            };
            let coordinators = (0..links.table.count())
                .map(|p| {
                    links
                        .table
                        .coordinator(p)
                        .map(Arc::clone)
                        .expect("a partition below the count")
                })
                .collect();
            Routed::Group(route_group(
                join,
                from_seq,
                to,
                shared.style,
                coordinators,
                links.failover_timeout,
            ))
        }
        Body::Ack { .. } => ready_error(shared.style, &to, &ProtoError::not_a_group_member()),
        Body::Init { .. } | Body::Assign { .. } | Body::ProcessWindow { .. } => ready_error(
            shared.style,
            &to,
            &ProtoError::Internal("this request is not routed".to_owned()),
        ),
    }
}

/// The request id of a request's parts (each part adds `/pN`): the client's, a hash standing
/// for it when it is too long to extend (the same for a resend of the same id), or a fresh one.
fn part_id(links: &PartitionLinks, request_id: Option<&str>) -> String {
    match request_id {
        Some(id) if id.len() + 12 <= MAX_REQUEST_ID => id.to_owned(),
        Some(id) => format!("h{:032x}", xxhash_rust::xxh3::xxh3_128(id.as_bytes())),
        None => links.next_id(),
    }
}

/// `ingest`: one part per partition touched; the counts summed.
async fn route_ingest(
    events: Vec<window_core::Event<'_>>,
    id: String,
    to: ReplyTo,
    shared: RouteLimits,
    links: &PartitionLinks,
) -> Routed {
    let style = shared.style;
    let count = links.table.count();
    // Each partition's events, as the text of a JSON array.
    let mut parts: Vec<Option<Vec<u8>>> = (0..count).map(|_| None).collect();
    for (index, event) in events.iter().enumerate() {
        if let Err(error) = window_bounds(shared.spec, index, event.ts) {
            return ready_error(style, &to, &error);
        }
        let partition = links.table.of(event.key);
        let array = parts[partition as usize].get_or_insert_with(|| b"[".to_vec());
        if array.len() > 1 {
            array.push(b',');
        }
        let mut w = JsonWriter::new(array, Style::Compact);
        w.begin_object();
        w.key("id").event_id(&event.id);
        w.key("timestamp").int(event.ts.as_millis());
        if let Some(key) = event.key {
            w.key("key").str(key);
        }
        if let Some(value) = event.value {
            w.key("value").float(value);
        }
        if let Some(payload) = &event.payload {
            w.key("payload").raw(payload);
        }
        w.end_object();
    }
    let lines: Vec<(u32, String)> = (0..count)
        .filter_map(|p| {
            let mut array = parts[p as usize].take()?;
            array.push(b']');
            let line = line_for("ingest", p, &id, |w| {
                w.key("events").raw(&String::from_utf8_lossy(&array));
            });
            Some((p, line))
        })
        .collect();
    // Checked before any part is sent, so that no part is applied when one would be
    // refused as too long by its holder.
    if let Some((p, line)) = lines
        .iter()
        .find(|(_, line)| line.len() >= shared.max_line_bytes)
    {
        return ready_error(
            style,
            &to,
            &ProtoError::malformed(format!(
                "the part of this request for partition {p} is {} bytes as sent to its holder, over --max-line-bytes {}; split the batch",
                line.len(),
                shared.max_line_bytes
            )),
        );
    }
    let mut answers = Vec::with_capacity(lines.len());
    for (p, line) in lines {
        answers.push((p, links.ask(p, line).await));
    }
    reply_when_answered(answers, style, to.clone(), move |texts| {
        let mut sum = IngestCounts::default();
        for text in &texts {
            let counts: IngestCounts = expect_reply(text, Kind::IngestOk)?;
            sum.accepted += counts.accepted;
            sum.duplicates += counts.duplicates;
            sum.late += counts.late;
        }
        let mut out = Vec::new();
        reply::ingest_ok(&mut out, &to.header(style), sum);
        Ok(out)
    })
}

/// `close`: to its key's partition.
async fn route_close(
    window_id: window_core::WindowId,
    size: Option<window_core::SizeMs>,
    key: Option<String>,
    id: String,
    to: ReplyTo,
    style: Style,
    links: &PartitionLinks,
) -> Routed {
    let partition = links.table.of(key.as_deref());
    let line = line_for("close", partition, &id, |w| {
        w.key("window_id").window_id(window_id);
        if let Some(size) = size {
            w.key("window_size_ms").raw(&size.to_string());
        }
        if let Some(key) = &key {
            w.key("key").str(key);
        }
    });
    let answer = links.ask(partition, line).await;
    reply_when_answered(vec![(partition, answer)], style, to.clone(), move |texts| {
        let fields: PeerFields<'_> = expect_reply(&texts[0], Kind::WindowClosed)?;
        let mut out = Vec::new();
        reply::window_closed(&mut out, &to.header(style), &fields);
        Ok(out)
    })
}

/// `flush`: to every partition; the windows merged by (start, end, key).
async fn route_flush(
    until: Option<Timestamp>,
    id: String,
    to: ReplyTo,
    style: Style,
    links: &PartitionLinks,
) -> Routed {
    let count = links.table.count();
    let mut answers = Vec::with_capacity(count as usize);
    for p in 0..count {
        let line = line_for("flush", p, &id, |w| {
            if let Some(until) = until {
                w.key("until").int(until.as_millis());
            }
        });
        answers.push((p, links.ask(p, line).await));
    }
    reply_when_answered(answers, style, to.clone(), move |texts| {
        let mut windows = Vec::new();
        for text in &texts {
            let flushed: Flushed<'_> = expect_reply(text, Kind::Flushed)?;
            for window in flushed.windows {
                let order: WindowOrder =
                    serde_json::from_str(window.get()).map_err(|e| unexpected(window.get(), &e))?;
                let fields: PeerFields<'_> =
                    serde_json::from_str(window.get()).map_err(|e| unexpected(window.get(), &e))?;
                windows.push((order.sort_key(), fields));
            }
        }
        windows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        reply::flushed(&mut out, &to.header(style), windows.iter().map(|(_, w)| w));
        Ok(out)
    })
}

/// `stats`: from every partition; the counts summed beside a `partitions` list.
async fn route_stats(to: ReplyTo, style: Style, links: &PartitionLinks) -> Routed {
    let count = links.table.count();
    let mut answers = Vec::with_capacity(count as usize);
    for p in 0..count {
        let line = request_line("stats", Some(p), None, |_| {});
        answers.push((p, links.ask(p, line).await));
    }
    reply_when_answered(answers, style, to.clone(), move |texts| {
        let parts = texts
            .iter()
            .map(|text| expect_reply::<PartStats>(text, Kind::StatsOk))
            .collect::<Result<Vec<_>, _>>()?;
        let total = |f: fn(&PartStats) -> u64| parts.iter().map(f).sum::<u64>();
        let partitions: Vec<PartitionStats> = (0..)
            .zip(&parts)
            .map(|(partition, p)| p.of(partition))
            .collect();
        let stats = StatsReply {
            open_windows: total(|s| s.open_windows),
            buffered_events: total(|s| s.buffered_events),
            emitted_windows: total(|s| s.emitted_windows),
            accepted: total(|s| s.accepted),
            duplicates: total(|s| s.duplicates),
            late: total(|s| s.late),
            holder: None,
            partitions: Some(&partitions),
            groups: &merged_groups(&parts),
            config: parts.first().and_then(|p| p.config),
        };
        let mut out = Vec::new();
        reply::stats_ok(&mut out, &to.header(style), &stats);
        Ok(out)
    })
}

/// `subscribe`: one subscription per partition, merged into one stream.
fn route_subscribe(
    from_seq: Option<FromSeq>,
    to: ReplyTo,
    style: Style,
    links: &PartitionLinks,
) -> Routed {
    let count = links.table.count();
    let starts: Vec<Option<u64>> = match from_seq {
        None => vec![None; count as usize],
        Some(FromSeq::All(seq)) => vec![Some(seq); count as usize],
        Some(FromSeq::PerPartition(seqs)) if seqs.len() == count as usize => {
            seqs.into_iter().map(Some).collect()
        }
        Some(FromSeq::PerPartition(seqs)) => {
            return ready_error(
                style,
                &to,
                &ProtoError::malformed(format!(
                    "from_seq has {} numbers, but the namespace has {count} partitions: give one per partition, or one number for all",
                    seqs.len()
                )),
            );
        }
    };
    let (feed_tx, feed) = mpsc::channel(1024);
    for (p, start) in (0..count).zip(starts) {
        let coordinator = links
            .table
            .coordinator(p)
            .map(Arc::clone)
            .expect("a partition below the count");
        tokio::spawn(follow_partition(
            coordinator,
            p,
            start,
            feed_tx.clone(),
            links.failover_timeout,
        ));
    }
    let (out, lines) = mpsc::channel(1024);
    tokio::spawn(merge_feeds(feed, count, to, style, None, out));
    Routed::Stream(lines)
}

/// A request line for a partition: type, partition, request id (`ID/pN`), then what `fields`
/// writes.
fn line_for(
    kind: &str,
    partition: u32,
    request_id: &str,
    fields: impl FnOnce(&mut JsonWriter<'_>),
) -> String {
    let id = format!("{request_id}/p{partition}");
    request_line(kind, Some(partition), Some(&id), fields)
}

fn ready_error(style: Style, to: &ReplyTo, error: &ProtoError) -> Routed {
    let mut out = Vec::new();
    reply::error(&mut out, &to.header(style), error);
    Routed::Ready(out)
}

/// Waits for every answer, then builds the reply with `merge`; an error answer (or a merge that
/// fails) becomes the reply instead.
fn reply_when_answered(
    answers: Vec<(u32, oneshot::Receiver<Answer>)>,
    style: Style,
    to: ReplyTo,
    merge: impl FnOnce(Vec<String>) -> Result<Vec<u8>, ProtoError> + Send + 'static,
) -> Routed {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut texts = Vec::with_capacity(answers.len());
        for (partition, answer) in answers {
            texts.push(match answer.await {
                Ok(Answer::Reply(text)) => text,
                Ok(Answer::GaveUp(_)) | Err(_) => unavailable_line(partition),
            });
        }
        let out = merge(texts).unwrap_or_else(|error| {
            let mut out = Vec::new();
            reply::error(&mut out, &to.header(style), &error);
            out
        });
        let _ = tx.send(out);
    });
    Routed::Reply(rx)
}

#[derive(Deserialize)]
struct Flushed<'a> {
    #[serde(borrow)]
    windows: Vec<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct WindowOrder {
    window_start: String,
    window_end: String,
    key: Option<String>,
}

impl WindowOrder {
    /// (start, end, key), by time rather than by text (`10:00:00.250Z` sorts before
    /// `10:00:00Z` as text).
    fn sort_key(&self) -> (i64, i64, Option<String>) {
        let ms = |t: &str| Timestamp::parse_rfc3339(t).map_or(i64::MAX, Timestamp::as_millis);
        (
            ms(&self.window_start),
            ms(&self.window_end),
            self.key.clone(),
        )
    }
}

#[derive(Deserialize)]
struct PartStats {
    open_windows: u64,
    buffered_events: u64,
    emitted_windows: u64,
    accepted: u64,
    duplicates: u64,
    late: u64,
    watermark: Option<String>,
    lease_holder: String,
    epoch: u64,
    #[serde(default)]
    config: Option<ConfigStats>,
    #[serde(default)]
    groups: Vec<GroupStats>,
}

/// Each group over the partitions: its counts summed, its members those of the partition that
/// has the most (a member joins every partition).
fn merged_groups(parts: &[PartStats]) -> Vec<GroupStats> {
    let mut merged: Vec<GroupStats> = Vec::new();
    for g in parts.iter().flat_map(|p| &p.groups) {
        let at = match merged.iter().position(|m| m.name == g.name) {
            Some(at) => at,
            None => {
                merged.push(GroupStats {
                    name: g.name.clone(),
                    ..GroupStats::default()
                });
                merged.len() - 1
            }
        };
        let m = &mut merged[at];
        m.members = m.members.max(g.members);
        m.pending += g.pending;
        m.acked += g.acked;
        m.redelivered += g.redelivered;
        m.lag += g.lag;
    }
    merged
}

impl PartStats {
    /// The partition's entry in the merged `stats_ok`.
    fn of(&self, partition: u32) -> PartitionStats {
        PartitionStats {
            partition,
            lease_holder: self.lease_holder.clone(),
            epoch: self.epoch,
            open_windows: self.open_windows,
            emitted_windows: self.emitted_windows,
            watermark: self
                .watermark
                .as_deref()
                .and_then(|wm| Timestamp::parse_rfc3339(wm).ok()),
        }
    }
}

/// The answer for a partition no node serves within the failover timeout.
fn unavailable_line(partition: u32) -> String {
    let error = ProtoError::Unavailable(format!(
        "no node serves partition {partition} right now (its holder died or is handing it over, and none took over within --failover-timeout); retry: ingest is idempotent, and a request_id makes close and flush so"
    ));
    let mut out = Vec::new();
    reply::error(&mut out, &ReplyTo::default().header(Style::Compact), &error);
    String::from_utf8_lossy(&out).into_owned()
}

/// Follows one partition's output log from `from` (only new windows when `None`) across
/// failovers, until the merger is gone.
async fn follow_partition(
    coordinator: Arc<Coordinator>,
    partition: u32,
    from: Option<u64>,
    feed: mpsc::Sender<Feed>,
    failover_timeout: Duration,
) {
    let mut next = from;
    let mut started = false;
    const ADVICE: &str = "subscribe again with from_seq as the windows you have say";
    loop {
        let Some((mut up_write, mut replies, holder)) =
            connect_feed(&coordinator, partition, &feed, failover_timeout, ADVICE).await
        else {
            return;
        };
        let mut request = request_line("subscribe", Some(partition), None, |w| {
            if let Some(seq) = next {
                w.key("from_seq").int(seq);
            }
        });
        request.push('\n');
        if up_write.write_all(request.as_bytes()).await.is_ok() {
            loop {
                let read = tokio::select! {
                    read = replies.next() => read,
                    () = coordinator.moved_from(holder) => break,
                    () = feed.closed() => return,
                };
                let Some(line) = read else { break };
                let Some(peek) = Peek::of(&line) else {
                    continue;
                };
                match peek.kind {
                    Some(Kind::SubscribeOk) => {
                        let from_seq = peek.from_seq.unwrap_or(0);
                        next = Some(next.map_or(from_seq, |n| n.max(from_seq)));
                        if !started {
                            started = true;
                            if feed
                                .send(Feed::Started {
                                    partition,
                                    from_seq,
                                })
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    Some(Kind::WindowClosed) => {
                        let seq = peek.seq.unwrap_or(0);
                        if next.is_some_and(|n| seq < n) {
                            continue;
                        }
                        next = Some(seq + 1);
                        if feed.send(Feed::Line(line.clone())).await.is_err() {
                            return;
                        }
                    }
                    Some(Kind::LateEvent) => {
                        if feed.send(Feed::Line(line.clone())).await.is_err() {
                            return;
                        }
                    }
                    // An error (fell behind, or the holder is stopping): resume elsewhere.
                    _ => break,
                }
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_sort_by_time_not_by_text() {
        let order = |start: &str| WindowOrder {
            window_start: start.to_owned(),
            window_end: "2024-01-15T10:01:00Z".to_owned(),
            key: None,
        };
        assert!(
            order("2024-01-15T10:00:00Z").sort_key() < order("2024-01-15T10:00:00.250Z").sort_key()
        );
    }

    #[test]
    fn error_replies_become_errors_with_their_code() {
        let text = r#"{"type":"error","code":20,"text":"window-5 is not open"}"#;
        let error = expect_reply::<IngestCounts>(text, Kind::IngestOk).unwrap_err();
        assert_eq!(error.code(), 20);
        assert_eq!(error.to_string(), "window-5 is not open");
        assert!(is_unavailable(&unavailable_line(3)));
        assert!(is_unavailable(
            r#"{"type": "error", "code": 11, "text": "this node does not serve partition 2"}"#
        ));
        assert!(!is_unavailable(text));
        assert!(!is_unavailable(
            r#"{"type":"ingest_ok","error":1,"code":11}"#
        ));
        let counts: IngestCounts = expect_reply(
            r#"{"type":"ingest_ok","accepted":2,"duplicates":1,"late":0}"#,
            Kind::IngestOk,
        )
        .unwrap();
        assert_eq!((counts.accepted, counts.duplicates, counts.late), (2, 1, 0));
    }
}
