//! Every message a node writes, one render function per kind.
//!
//! A message is one line: `type`, `in_reply_to` (when it answers a request with a `msg_id`),
//! then the kind's fields in the order `docs/protocol.md` lists them, in an envelope when the
//! [`Header`] says so. Each kind's `type` string is spelled once, in [`Kind::as_str`].

use window_core::{
    Aggregate, BatchWindow, ClosedWindow, Event, EventId, IdFrame, Timestamp, WindowBounds,
};

use crate::error::ProtoError;
use crate::json::{JsonWriter, Style};
use crate::kind::Kind;

/// Where a message goes: a bare body, or an envelope from `src` to `dest` (either may be unknown).
#[derive(Clone, Copy, Debug, Default)]
pub struct Address<'a> {
    /// Wrap the body in an envelope.
    pub envelope: bool,
    /// The envelope's `src`.
    pub src: Option<&'a str>,
    /// The envelope's `dest`.
    pub dest: Option<&'a str>,
}

/// How and where one message is written.
#[derive(Clone, Copy, Debug)]
pub struct Header<'a> {
    /// The separator style.
    pub style: Style,
    /// The envelope, if any.
    pub address: Address<'a>,
    /// The `msg_id` of the request answered, as JSON text; `None` for an unsolicited message.
    pub in_reply_to: Option<&'a str>,
}

impl Header<'_> {
    /// The same header for a message that answers no request (a streamed window).
    pub fn unsolicited(&self) -> Self {
        Header {
            in_reply_to: None,
            ..*self
        }
    }
}

/// What a fired window carries besides its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// Nothing: the stdin node's answer to `close` or `flush`.
    Content,
    /// Its `reason` and `seq`: a window the stdin node fired on its own.
    Numbered {
        /// Its position in the output log.
        seq: u64,
    },
    /// Its `reason`, `seq`, the lease `epoch` it fired under, and with partitions its
    /// `partition`: every window the daemon returns or streams.
    Logged {
        /// Its position in its partition's output log.
        seq: u64,
        /// The lease epoch it fired under.
        epoch: u64,
        /// Its partition, with `--partitions`.
        partition: Option<u32>,
        /// How often a consumer group handed it out, this time included (1 the first time);
        /// `None` outside a group.
        delivery: Option<u32>,
    },
}

/// A fired window as a message's fields.
#[derive(Clone, Copy, Debug)]
pub struct WindowView<'a> {
    /// The frame its id is written in.
    pub frame: IdFrame,
    /// The window and its content.
    pub window: &'a ClosedWindow,
    /// What it carries besides.
    pub stamp: Stamp,
}

/// The fields of one object in a message: a window of ours, or one a peer node wrote.
pub trait Fields {
    /// Writes the fields (inside an object the caller opened).
    fn write_fields(&self, w: &mut JsonWriter<'_>);
}

impl Fields for WindowView<'_> {
    fn write_fields(&self, w: &mut JsonWriter<'_>) {
        let closed = self.window;
        let window = &closed.window;
        w.key("window_id").window_id(self.frame.id_of(window.start));
        w.key("window_start").timestamp(window.start);
        w.key("window_end").timestamp(window.end());
        if let Some(key) = &window.key {
            w.key("key").str(key);
        }
        w.key("count").int(closed.ids.len());
        w.key("events").event_ids(&closed.ids);
        w.payloads(closed.payloads.iter().map(|p| p.as_deref()));
        w.aggregate(closed.aggregate);
        match self.stamp {
            Stamp::Content => {}
            Stamp::Numbered { seq } => {
                w.key("reason").str(closed.reason.as_str());
                w.key("seq").int(seq);
            }
            Stamp::Logged {
                seq,
                epoch,
                partition,
                delivery,
            } => {
                w.key("reason").str(closed.reason.as_str());
                w.key("seq").int(seq);
                w.key("epoch").int(epoch);
                if let Some(partition) = partition {
                    w.key("partition").int(partition);
                }
                if let Some(delivery) = delivery {
                    w.key("delivery").int(delivery);
                }
            }
        }
    }
}

impl<F: Fields> Fields for &F {
    fn write_fields(&self, w: &mut JsonWriter<'_>) {
        (**self).write_fields(w);
    }
}

/// What `ingest` did (also as a peer's `ingest_ok` is read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct IngestCounts {
    /// Events that joined a window.
    pub accepted: u64,
    /// Events whose id the window held already.
    pub duplicates: u64,
    /// Events behind the watermark.
    pub late: u64,
}

/// The fields of `stats_ok`.
#[derive(Clone, Debug, Default)]
pub struct StatsReply<'a> {
    /// Windows open now.
    pub open_windows: u64,
    /// Events held by the open windows.
    pub buffered_events: u64,
    /// Windows fired so far (the output log's length).
    pub emitted_windows: u64,
    /// Events accepted so far.
    pub accepted: u64,
    /// Duplicate events so far.
    pub duplicates: u64,
    /// Late events so far.
    pub late: u64,
    /// The daemon's view of its lease (absent on stdin and in a partitioned node's merge).
    pub holder: Option<HolderStats<'a>>,
    /// A partitioned node's merge: one entry per partition.
    pub partitions: Option<&'a [PartitionStats]>,
    /// The consumer groups (the daemon; none listed when there are none).
    pub groups: &'a [GroupStats],
    /// The daemon's windowing settings.
    pub config: Option<ConfigStats>,
}

/// The windowing settings in the daemon's `stats_ok` (also as a peer's are read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ConfigStats {
    pub window_size_ms: i64,
    /// Which clock puts events in windows.
    pub time: TimeKind,
    pub allowed_lateness_ms: Option<u64>,
    pub max_events: Option<u32>,
    pub max_age_ms: Option<u64>,
}

/// `--time`: event time or ingest time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeKind {
    #[default]
    Event,
    Ingest,
}

impl TimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeKind::Event => "event",
            TimeKind::Ingest => "ingest",
        }
    }
}

/// One consumer group in `stats_ok` (also as a peer's are read).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct GroupStats {
    /// The group's name.
    #[serde(rename = "group")]
    pub name: String,
    /// Connected members.
    pub members: u64,
    /// Delivered and not acknowledged, or waiting to be delivered again.
    pub pending: u64,
    /// Acknowledged since the group was created.
    pub acked: u64,
    /// Deliveries after the first, since this process took over.
    pub redelivered: u64,
    /// Windows of the log not yet handed to any member.
    pub lag: u64,
}

/// The daemon's part of `stats_ok`.
#[derive(Clone, Copy, Debug)]
pub struct HolderStats<'a> {
    /// The event-time watermark.
    pub watermark: Option<Timestamp>,
    /// The address of the lease holder.
    pub lease_holder: &'a str,
    /// The lease epoch.
    pub epoch: u64,
    /// Open client connections.
    pub connections: u64,
    /// Requests refused for an event too far ahead of the clock (`--max-event-ahead`).
    pub refused_ahead: u64,
    /// Requests refused for opening more windows than allowed (`--max-open-windows`).
    pub refused_open_windows: u64,
    /// The oldest seq the output log keeps (`--log-retention`; 0 while it keeps everything).
    pub log_start: u64,
}

/// One partition in a partitioned node's `stats_ok`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStats {
    /// The partition.
    pub partition: u32,
    /// The address of its holder.
    pub lease_holder: String,
    /// Its lease epoch.
    pub epoch: u64,
    /// Its open windows.
    pub open_windows: u64,
    /// Its output log's length.
    pub emitted_windows: u64,
    /// Its watermark.
    pub watermark: Option<Timestamp>,
}

/// Where a subscription starts, as `subscribe_ok` says.
#[derive(Clone, Copy, Debug)]
pub enum SubscribeStart<'a> {
    /// One output log.
    One(u64),
    /// One start per partition, in partition order.
    PerPartition(&'a [u64]),
    /// A consumer group's: the group and the seq it started at when it was created.
    Group { name: &'a str, from_seq: u64 },
    /// A consumer group's over partitions: one start per partition.
    GroupPerPartition { name: &'a str, from_seqs: &'a [u64] },
}

/// A late event as `late_event` shows it.
#[derive(Clone, Copy, Debug)]
pub struct LateView<'a> {
    /// The frame of its window's id.
    pub frame: IdFrame,
    /// The event's id.
    pub id: &'a EventId,
    /// Its timestamp.
    pub ts: Timestamp,
    /// Its key.
    pub key: Option<&'a str>,
    /// The start of the window it was late for.
    pub window_start: Timestamp,
}

/// `init_ok`.
pub fn init_ok(out: &mut Vec<u8>, h: &Header<'_>) {
    message(out, h, Kind::InitOk, |_| {});
}

/// `assigned`: the first event's window, and with several events each event's window.
/// `bounds[i]` is the window of `events[i]`; both hold at least one element.
pub fn assigned(
    out: &mut Vec<u8>,
    h: &Header<'_>,
    frame: IdFrame,
    events: &[Event<'_>],
    bounds: &[WindowBounds],
) {
    message(out, h, Kind::Assigned, |w| {
        let (Some(first), Some(event)) = (bounds.first(), events.first()) else {
            return;
        };
        w.key("window_id").window_id(frame.id_of(first.start));
        w.key("window_start").timestamp(first.start);
        w.key("window_end").timestamp(first.end);
        if let Some(key) = event.key {
            w.key("key").str(key);
        }
        if events.len() > 1 {
            w.key("assignments").begin_array();
            // Consecutive events mostly share a window: render its fields once.
            let mut cached: Option<(WindowBounds, String, String, String)> = None;
            for (event, b) in events.iter().zip(bounds) {
                if cached.as_ref().is_none_or(|c| c.0 != *b) {
                    // Ids and RFC 3339 times need no escaping: keep them as JSON text.
                    cached = Some((
                        *b,
                        format!("\"{}\"", frame.id_of(b.start)),
                        format!("\"{}\"", b.start),
                        format!("\"{}\"", b.end),
                    ));
                }
                let Some((_, id, start, end)) = &cached else {
                    continue;
                };
                w.begin_object();
                w.key("id").event_id(&event.id);
                w.key("window_id").raw(id);
                w.key("window_start").raw(start);
                w.key("window_end").raw(end);
                if let Some(key) = event.key {
                    w.key("key").str(key);
                }
                w.end_object();
            }
            w.end_array();
        }
    });
}

/// `window_result`: per window of the batch, its count and ids (in input order).
pub fn window_result(
    out: &mut Vec<u8>,
    h: &Header<'_>,
    frame: IdFrame,
    windows: &[BatchWindow<'_>],
    events: &[Event<'_>],
) {
    message(out, h, Kind::WindowResult, |w| {
        w.key("windows").begin_array();
        for window in windows {
            w.begin_object();
            w.key("window_id")
                .window_id(frame.id_of(window.bounds.start));
            if let Some(key) = window.key {
                w.key("key").str(key);
            }
            w.key("count").int(window.events.len());
            w.key("events")
                .event_ids(window.events.iter().map(|&i| &events[i].id));
            let mut aggregate = None;
            for &i in &window.events {
                if let Some(value) = events[i].value {
                    Aggregate::add(&mut aggregate, value);
                }
            }
            w.payloads(window.events.iter().map(|&i| events[i].payload.as_deref()));
            w.aggregate(aggregate);
            w.end_object();
        }
        w.end_array();
    });
}

/// `window_closed`: one window, ours ([`WindowView`]) or a peer's (`peer::PeerFields`).
pub fn window_closed(out: &mut Vec<u8>, h: &Header<'_>, window: &impl Fields) {
    message(out, h, Kind::WindowClosed, |w| window.write_fields(w));
}

/// `flushed`: the windows, in order.
pub fn flushed<F: Fields>(out: &mut Vec<u8>, h: &Header<'_>, windows: impl IntoIterator<Item = F>) {
    message(out, h, Kind::Flushed, |w| {
        w.key("windows").begin_array();
        for window in windows {
            w.begin_object();
            window.write_fields(w);
            w.end_object();
        }
        w.end_array();
    });
}

/// `stats_ok`.
pub fn stats_ok(out: &mut Vec<u8>, h: &Header<'_>, stats: &StatsReply<'_>) {
    message(out, h, Kind::StatsOk, |w| {
        w.key("open_windows").int(stats.open_windows);
        w.key("buffered_events").int(stats.buffered_events);
        w.key("emitted_windows").int(stats.emitted_windows);
        w.key("accepted").int(stats.accepted);
        w.key("duplicates").int(stats.duplicates);
        w.key("late").int(stats.late);
        if let Some(holder) = &stats.holder {
            watermark(w, holder.watermark);
            w.key("lease_holder").str(holder.lease_holder);
            w.key("epoch").int(holder.epoch);
            w.key("connections").int(holder.connections);
            w.key("refused_ahead").int(holder.refused_ahead);
            w.key("refused_open_windows")
                .int(holder.refused_open_windows);
            w.key("log_start").int(holder.log_start);
        }
        if let Some(config) = &stats.config {
            w.key("config").begin_object();
            w.key("window_size_ms").int(config.window_size_ms);
            w.key("time").str(config.time.as_str());
            for (name, value) in [
                ("allowed_lateness_ms", config.allowed_lateness_ms),
                ("max_events", config.max_events.map(u64::from)),
                ("max_age_ms", config.max_age_ms),
            ] {
                match value {
                    Some(v) => w.key(name).int(v),
                    None => w.key(name).raw("null"),
                };
            }
            w.end_object();
        }
        if !stats.groups.is_empty() {
            w.key("groups").begin_array();
            for g in stats.groups {
                w.begin_object();
                w.key("group").str(&g.name);
                w.key("members").int(g.members);
                w.key("pending").int(g.pending);
                w.key("acked").int(g.acked);
                w.key("redelivered").int(g.redelivered);
                w.key("lag").int(g.lag);
                w.end_object();
            }
            w.end_array();
        }
        if let Some(partitions) = stats.partitions {
            w.key("partitions").begin_array();
            for p in partitions {
                w.begin_object();
                w.key("partition").int(p.partition);
                w.key("lease_holder").str(&p.lease_holder);
                w.key("epoch").int(p.epoch);
                w.key("open_windows").int(p.open_windows);
                w.key("emitted_windows").int(p.emitted_windows);
                watermark(w, p.watermark);
                w.end_object();
            }
            w.end_array();
        }
    });
}

/// `ingest_ok`.
pub fn ingest_ok(out: &mut Vec<u8>, h: &Header<'_>, counts: IngestCounts) {
    message(out, h, Kind::IngestOk, |w| {
        w.key("accepted").int(counts.accepted);
        w.key("duplicates").int(counts.duplicates);
        w.key("late").int(counts.late);
    });
}

/// `subscribe_ok`.
pub fn subscribe_ok(out: &mut Vec<u8>, h: &Header<'_>, start: SubscribeStart<'_>) {
    message(out, h, Kind::SubscribeOk, |w| {
        w.key("from_seq");
        match start {
            SubscribeStart::One(seq) => {
                w.int(seq);
            }
            SubscribeStart::PerPartition(seqs) => seq_array(w, seqs),
            SubscribeStart::Group { name, from_seq } => {
                w.int(from_seq);
                w.key("group").str(name);
            }
            SubscribeStart::GroupPerPartition { name, from_seqs } => {
                seq_array(w, from_seqs);
                w.key("group").str(name);
            }
        }
    });
}

fn seq_array(w: &mut JsonWriter<'_>, seqs: &[u64]) {
    w.begin_array();
    for &seq in seqs {
        w.int(seq);
    }
    w.end_array();
}

/// `ack_ok`: how many of the acknowledged windows were not acknowledged before.
pub fn ack_ok(out: &mut Vec<u8>, h: &Header<'_>, acked: u64) {
    message(out, h, Kind::AckOk, |w| {
        w.key("acked").int(acked);
    });
}

/// `late_event`.
pub fn late_event(out: &mut Vec<u8>, h: &Header<'_>, late: &LateView<'_>) {
    message(out, h, Kind::LateEvent, |w| {
        w.key("id").event_id(late.id);
        w.key("timestamp").timestamp(late.ts);
        if let Some(key) = late.key {
            w.key("key").str(key);
        }
        w.key("window_id")
            .window_id(late.frame.id_of(late.window_start));
    });
}

/// `error`: the wire code and the text.
pub fn error(out: &mut Vec<u8>, h: &Header<'_>, error: &ProtoError) {
    message(out, h, Kind::Error, |w| {
        w.key("code").int(error.code());
        w.key("text").str(&error.to_string());
    });
}

/// A peer's message of `kind` written again under `h` (a router passing a partition's streamed
/// window or late event on, in its client's envelope).
pub fn relayed(out: &mut Vec<u8>, h: &Header<'_>, kind: Kind, fields: &impl Fields) {
    message(out, h, kind, |w| fields.write_fields(w));
}

/// The watermark, or `null` while there is none that RFC 3339 can write: a large allowed
/// lateness puts it before year 0000 (no event can be that early, so nothing has passed it yet,
/// as before the first event), and it is never written as a non-timestamp.
fn watermark(w: &mut JsonWriter<'_>, watermark: Option<Timestamp>) {
    match watermark.filter(|wm| wm.check_formattable().is_ok()) {
        Some(wm) => w.key("watermark").timestamp(wm),
        None => w.key("watermark").raw("null"),
    };
}

/// Writes one message line: `type`, `in_reply_to`, then what `fields` writes, in an envelope
/// when the header says so.
fn message(
    out: &mut Vec<u8>,
    h: &Header<'_>,
    kind: Kind,
    fields: impl FnOnce(&mut JsonWriter<'_>),
) {
    let mut w = JsonWriter::new(out, h.style);
    if h.address.envelope {
        w.begin_object();
        if let Some(src) = h.address.src {
            w.key("src").str(src);
        }
        if let Some(dest) = h.address.dest {
            w.key("dest").str(dest);
        }
        w.key("body");
    }
    w.begin_object();
    w.key("type").str(kind.as_str());
    if let Some(msg_id) = h.in_reply_to {
        w.key("in_reply_to").raw(msg_id);
    }
    fields(&mut w);
    w.end_object();
    if h.address.envelope {
        w.end_object();
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_in_an_envelope_in_both_styles() {
        let address = Address {
            envelope: true,
            src: Some("n1"),
            dest: Some("c1"),
        };
        let mut out = Vec::new();
        for style in [Style::Spaced, Style::Compact] {
            let h = Header {
                style,
                address,
                in_reply_to: Some("7"),
            };
            error(
                &mut out,
                &h,
                &ProtoError::NotOpen("no open window 5".into()),
            );
        }
        expect_test::expect![[r#"
            {"src": "n1", "dest": "c1", "body": {"type": "error", "in_reply_to": 7, "code": 20, "text": "no open window 5"}}
            {"src":"n1","dest":"c1","body":{"type":"error","in_reply_to":7,"code":20,"text":"no open window 5"}}
        "#]]
        .assert_eq(&String::from_utf8(out).unwrap());
    }
}
