//! A consumer group over partitions: the client's connection joins the group on every
//! partition's holder (one member per partition, each in that partition's group), the
//! partitions' deliveries are merged into one stream (each window carries its `partition`), and
//! the client's acks (each naming its `partition`) go to that partition's member connection,
//! whose holder answers them on the stream. A holder that dies or hands its partition over is
//! joined again at the next holder, which hands out again what was not acknowledged.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use window_cluster::link::RETRY_PAUSE;
use window_proto::peer::{Peek, request_line};
use window_proto::{GroupJoin, Kind, ReplyTo, Style};

use crate::feeds::{Feed, connect_feed, merge_feeds};
use crate::upstream::Coordinator;

/// The merged stream of a group over partitions, and where each partition's acks go.
#[derive(Debug)]
pub struct GroupStream {
    pub lines: mpsc::Receiver<Vec<u8>>,
    /// By partition: the client's ack lines for it.
    pub acks: Vec<mpsc::Sender<String>>,
}

/// Joins `join` on every partition of `coordinators` (partition order) and merges the streams.
pub fn route_group(
    join: GroupJoin,
    from_seq: Option<u64>,
    to: ReplyTo,
    style: Style,
    coordinators: Vec<Arc<Coordinator>>,
    failover_timeout: Duration,
) -> GroupStream {
    let count = coordinators.len() as u32;
    let (feed_tx, feed) = mpsc::channel(1024);
    let mut acks = Vec::with_capacity(coordinators.len());
    for (partition, coordinator) in (0..).zip(coordinators) {
        let (ack_tx, ack_rx) = mpsc::channel(256);
        acks.push(ack_tx);
        let line = join_line(&join, partition, from_seq);
        tokio::spawn(follow_group_partition(
            coordinator,
            partition,
            line,
            ack_rx,
            feed_tx.clone(),
            failover_timeout,
        ));
    }
    let (out, lines) = mpsc::channel(1024);
    tokio::spawn(merge_feeds(feed, count, to, style, Some(join.name), out));
    GroupStream { lines, acks }
}

/// The `subscribe` that joins the group on one partition.
fn join_line(join: &GroupJoin, partition: u32, from_seq: Option<u64>) -> String {
    let mut line = request_line("subscribe", Some(partition), None, |w| {
        w.key("group").str(&join.name);
        w.key("max_unacked").int(join.max_unacked);
        if let Some(consumer) = &join.consumer {
            w.key("consumer").str(consumer);
        }
        if let Some(seq) = from_seq {
            w.key("from_seq").int(seq);
        }
    });
    line.push('\n');
    line
}

/// One partition's member: joins (again after a failover), passes deliveries and ack replies
/// to the merger and the client's acks to the holder, until the merger is gone.
async fn follow_group_partition(
    coordinator: Arc<Coordinator>,
    partition: u32,
    join: String,
    mut acks: mpsc::Receiver<String>,
    feed: mpsc::Sender<Feed>,
    failover_timeout: Duration,
) {
    let mut started = false;
    const ADVICE: &str = "subscribe to the group again: what was not acknowledged comes again";
    loop {
        let Some((mut up_write, mut replies, holder)) =
            connect_feed(&coordinator, partition, &feed, failover_timeout, ADVICE).await
        else {
            return;
        };
        if up_write.write_all(join.as_bytes()).await.is_ok() {
            loop {
                let line = tokio::select! {
                    read = replies.next() => match read {
                        Some(line) => line,
                        None => break,
                    },
                    ack = acks.recv() => {
                        let Some(mut ack) = ack else { return };
                        ack.push('\n');
                        if up_write.write_all(ack.as_bytes()).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    () = coordinator.moved_from(holder) => break,
                    () = feed.closed() => return,
                };
                let peek = Peek::of(&line);
                let item = match peek.as_ref().and_then(|p| p.kind) {
                    Some(Kind::SubscribeOk) if !started => {
                        started = true;
                        let from_seq = peek.and_then(|p| p.from_seq).unwrap_or(0);
                        Feed::Started {
                            partition,
                            from_seq,
                        }
                    }
                    // Joined again after a failover: the client was told where it started.
                    Some(Kind::SubscribeOk) => continue,
                    Some(Kind::WindowClosed | Kind::AckOk) => Feed::Line(line),
                    // An answer to one of the client's acks: the client's business.
                    Some(Kind::Error) if peek.as_ref().is_some_and(|p| p.answers) => {
                        Feed::Line(line)
                    }
                    // The holder is stopping (or refused the join): join the next one.
                    _ => break,
                };
                if feed.send(item).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}
