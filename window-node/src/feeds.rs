//! A partitioned subscription's merge: each partition's task feeds its windows (or a group's
//! deliveries and ack replies) here, and one stream goes to the client, after one
//! `subscribe_ok` with every partition's start.

use std::time::Duration;

use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use window_proto::peer::PeerFields;
use window_proto::reply::{self, SubscribeStart};
use window_proto::{ProtoError, ReplyTo, Style};

use crate::clock::monotonic;
use crate::upstream::{Coordinator, Holder, Replies, connect_to};

/// What a partition's subscription sends the merger.
pub enum Feed {
    /// The partition's subscription began at this sequence number.
    Started { partition: u32, from_seq: u64 },
    /// A window or late event, as its holder wrote it (with its `partition`).
    Line(String),
    /// The subscription cannot go on: an error line for the client.
    Failed(ProtoError),
}

/// Sends `subscribe_ok` (with every partition's start) once every partition's subscription
/// began, then every partition's windows as they come, until the client is gone (`out` closed:
/// returning drops `feed`, which stops the partitions' subscriptions).
pub async fn merge_feeds(
    mut feed: mpsc::Receiver<Feed>,
    count: u32,
    to: ReplyTo,
    style: Style,
    group: Option<String>,
    out: mpsc::Sender<Vec<u8>>,
) {
    // Streamed messages answer no request: no `in_reply_to`, but the envelope of the
    // subscription's, like the windows of an unpartitioned subscription.
    let event_to = to.unsolicited();
    let streamed_header = event_to.header(style);
    let failed = |error: ProtoError| {
        let mut line = Vec::new();
        reply::error(&mut line, &streamed_header, &error);
        line
    };
    let streamed = |line: String| -> Vec<u8> {
        if event_to.src.is_none() {
            return line.into_bytes();
        }
        match PeerFields::of(&line) {
            Ok((Some(kind), fields)) => {
                let mut wrapped = Vec::with_capacity(line.len() + 64);
                reply::relayed(&mut wrapped, &streamed_header, kind, &fields);
                wrapped
            }
            _ => line.into_bytes(),
        }
    };
    let mut starts: Vec<Option<u64>> = vec![None; count as usize];
    let mut early = Vec::new();
    while starts.iter().any(Option::is_none) {
        let item = tokio::select! {
            item = feed.recv() => item,
            () = out.closed() => return,
        };
        match item {
            Some(Feed::Started {
                partition,
                from_seq,
            }) => {
                starts[partition as usize] = Some(from_seq);
            }
            Some(Feed::Line(line)) => early.push(line),
            Some(Feed::Failed(error)) => {
                let _ = out.send(failed(error)).await;
                return;
            }
            None => return,
        }
    }
    let starts: Vec<u64> = starts.into_iter().map(|s| s.unwrap_or(0)).collect();
    let mut ok = Vec::new();
    let start = match &group {
        Some(name) => SubscribeStart::GroupPerPartition {
            name,
            from_seqs: &starts,
        },
        None => SubscribeStart::PerPartition(&starts),
    };
    reply::subscribe_ok(&mut ok, &to.header(style), start);
    if out.send(ok).await.is_err() {
        return;
    }
    for line in early {
        if out.send(streamed(line)).await.is_err() {
            return;
        }
    }
    loop {
        let item = tokio::select! {
            item = feed.recv() => item,
            () = out.closed() => return,
        };
        let sent = match item {
            Some(Feed::Line(line)) => out.send(streamed(line)).await,
            Some(Feed::Failed(error)) => {
                let _ = out.send(failed(error)).await;
                return;
            }
            Some(Feed::Started { .. }) => Ok(()),
            None => return,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// A connection to `partition`'s holder for a feed: `None` when the merger is gone, or when no
/// holder answered within `failover_timeout` (then the merger was told, with `advice` on what the
/// client should do).
pub async fn connect_feed(
    coordinator: &Coordinator,
    partition: u32,
    feed: &mpsc::Sender<Feed>,
    failover_timeout: Duration,
    advice: &str,
) -> Option<(OwnedWriteHalf, Replies, Holder)> {
    let connected = tokio::select! {
        connected = connect_to(coordinator, monotonic() + failover_timeout) => connected,
        () = feed.closed() => return None,
    };
    let Some((upstream, holder)) = connected else {
        let _ = feed
            .send(Feed::Failed(ProtoError::Unavailable(format!(
                "no node serves partition {partition} (none took over within --failover-timeout); {advice}"
            ))))
            .await;
        return None;
    };
    let (up_read, up_write) = upstream.into_split();
    Some((up_write, Replies::new(up_read), holder))
}
