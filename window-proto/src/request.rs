//! The wire protocol's requests: parsing one line into a typed request.
//!
//! Parsing is strict about what it uses and lenient about what it does not: unknown fields are
//! ignored (as a Maelstrom node does), every used field is checked, and every error names the
//! field and the bad value. Large batches are parsed without copying: field values are borrowed
//! from the line as raw JSON and decoded only where needed.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;
use window_core::{DateMemo, Event, EventId, Payload, SizeMs, Timestamp, WindowId};

use crate::error::ProtoError;
use crate::flat;
use crate::json::Style;
use crate::reply::{Address, Header};

/// What `events` must be, for error texts.
const EVENTS: &str =
    "an array of {\"id\", \"timestamp\", \"key\"?, \"value\"?, \"payload\"?} objects";
/// What an event timestamp must be, for error texts.
const TIMESTAMP: &str = "an RFC 3339 string (2024-01-15T10:00:10Z) or integer epoch milliseconds";
/// What a window id must be, for error texts.
const WINDOW_ID: &str = "\"window-<integer>\", e.g. \"window-1705305600000\"";
/// The form of a window id, for error texts.
const WINDOW_ID_FORM: &str = "\"window-<integer>\"";
/// What a window size must be, for error texts.
const WINDOW_SIZE: &str = "the window length in milliseconds, a positive integer";

/// The largest payload an event may carry, as JSON text, unless the daemon is told otherwise
/// (`--max-payload-bytes`).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Every request type, with the names the wire uses.
pub const REQUEST_TYPES: &str =
    "init, assign, process_window, ingest, close, flush, stats (and subscribe, ack on `serve`)";

/// One request line, parsed.
#[derive(Debug)]
pub struct Request<'a> {
    /// The envelope's `src`, if the request came in an envelope.
    pub src: Option<String>,
    /// The envelope's `dest`, if the request came in an envelope.
    pub dest: Option<String>,
    /// `msg_id` as its JSON text, echoed as `in_reply_to`.
    pub msg_id: Option<&'a str>,
    /// `request_id`: a request the daemon has run under this id is answered from its record
    /// instead of being run again (in the body, or for a forwarded envelope on the envelope).
    pub request_id: Option<String>,
    /// `partition`: with `--partitions`, the one partition a request between nodes is for (a
    /// node's router sends each partition's part to the node holding that partition's lease).
    /// Clients leave it out and are routed.
    pub partition: Option<u32>,
    /// What is asked.
    pub body: Body<'a>,
}

impl Request<'_> {
    /// Where the reply goes.
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            msg_id: self.msg_id.map(str::to_owned),
            src: self.src.clone(),
            dest: self.dest.clone(),
        }
    }

    /// Refuses the request whole when one of its events carries a payload longer than
    /// `max_bytes` of JSON text (error 12 naming the event).
    pub fn check_payloads(&self, max_bytes: usize) -> Result<(), ProtoError> {
        match &self.body {
            Body::Assign { events, .. }
            | Body::ProcessWindow { events, .. }
            | Body::Ingest { events, .. } => events.check_payloads(max_bytes),
            _ => Ok(()),
        }
    }
}

/// The typed body of a request.
#[derive(Debug)]
pub enum Body<'a> {
    /// `init`: names this node.
    Init {
        /// This node's id.
        node_id: String,
    },
    /// `assign`: which window each event is in; the events join the open state.
    Assign {
        /// The events (at least one).
        events: Batch<'a>,
        /// Window size.
        size: SizeMs,
    },
    /// `process_window`: the batch's windows; the events join the open state.
    ProcessWindow {
        /// The events.
        events: Batch<'a>,
        /// Window size.
        size: SizeMs,
    },
    /// `close`: emit one open window and drop it.
    Close {
        /// The window's id in the node's frame.
        window_id: WindowId,
        /// The size, when several sizes share the id.
        size: Option<SizeMs>,
        /// The key, when several keys share the id.
        key: Option<String>,
    },
    /// `flush`: emit and drop every window that ends at or before `until` (all when absent).
    Flush {
        /// The cut-off.
        until: Option<Timestamp>,
    },
    /// `ingest`: add events and answer with counts only. The daemon windows them by its
    /// `--window-size` (and ignores `size`); the stdin node by `size`, else its `--window-size`.
    Ingest {
        /// The events.
        events: Batch<'a>,
        /// `window_size_ms`, when given.
        size: Option<SizeMs>,
    },
    /// `ack` (daemon, on a group member's connection): these windows are done.
    Ack {
        /// The acknowledged windows' seqs.
        seqs: Vec<u64>,
    },
    /// `subscribe` (daemon): stream emitted windows from `from_seq`; with a group, join it
    /// and get each window the group hands this member.
    Subscribe {
        /// The consumer group to join, if any.
        group: Option<GroupJoin>,
        /// First sequence number wanted; `None` means only new windows.
        from_seq: Option<FromSeq>,
    },
    /// `stats`: counters and state.
    Stats,
}

impl FromSeq {
    /// The one number `from_seq` must be here (`why` says why), or the error refusing an array.
    pub fn one(from_seq: Option<FromSeq>, why: &str) -> Result<Option<u64>, ProtoError> {
        match from_seq {
            None => Ok(None),
            Some(FromSeq::All(seq)) => Ok(Some(seq)),
            Some(FromSeq::PerPartition(_)) => Err(ProtoError::malformed(format!(
                "from_seq is an array, but {why}: give one number"
            ))),
        }
    }
}

/// A `subscribe` that joins a consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupJoin {
    /// The group's name (1-128 printable ASCII characters, no spaces).
    pub name: String,
    /// The member's name, for logs and stats; optional.
    pub consumer: Option<String>,
    /// Windows this member may hold unacknowledged (at least 1; 1000 when not given).
    pub max_unacked: u32,
}

/// `max_unacked` when a group member does not say.
pub const DEFAULT_MAX_UNACKED: u32 = 1000;

/// The longest group name.
pub const MAX_GROUP_NAME: usize = 128;

/// Checks a group name: 1 to 128 printable ASCII characters, no spaces.
pub fn check_group_name(name: &str) -> Result<(), ProtoError> {
    let printable = name.bytes().all(|b| b.is_ascii_graphic());
    if name.is_empty() || name.len() > MAX_GROUP_NAME || !printable {
        return Err(ProtoError::malformed(format!(
            "group must be 1 to {MAX_GROUP_NAME} printable ASCII characters without spaces, got {}",
            shorten(&format!("{name:?}"))
        )));
    }
    Ok(())
}

/// Where a subscription starts: one sequence number (for every partition), or one per
/// partition (`"from_seq": [s0, s1, ...]`, with `--partitions`: each partition has its own log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromSeq {
    /// The same number for every partition (the only form without partitions).
    All(u64),
    /// One number per partition, in partition order.
    PerPartition(Vec<u64>),
}

/// A batch of parsed events. Keys are kept apart from the events so that the events can be
/// handed to the engine by value (moving their ids) while borrowing their keys.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    items: Vec<(EventId, Timestamp, Option<f64>)>,
    keys: Vec<Option<Cow<'a, str>>>,
    /// One per event once an event had a payload (empty until then: most batches have none).
    payloads: Vec<Option<Cow<'a, str>>>,
}

impl Batch<'_> {
    /// True when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The events, borrowing their keys and payloads from the batch.
    pub fn events(&mut self) -> Vec<Event<'_>> {
        let items = std::mem::take(&mut self.items);
        items
            .into_iter()
            .zip(&self.keys)
            .enumerate()
            .map(|(i, ((id, ts, value), key))| Event {
                id,
                ts,
                key: key.as_deref(),
                value,
                payload: self
                    .payloads
                    .get(i)
                    .and_then(|p| p.as_deref())
                    .map(Payload::from),
            })
            .collect()
    }

    /// Refuses the batch whole when an event's payload is longer than `max_bytes` of JSON text.
    pub fn check_payloads(&self, max_bytes: usize) -> Result<(), ProtoError> {
        for (index, payload) in self.payloads.iter().enumerate() {
            if let Some(payload) = payload
                && payload.len() > max_bytes
            {
                return Err(ProtoError::malformed(format!(
                    "events[{index}].payload is {} bytes of JSON, over the limit of {max_bytes} (--max-payload-bytes); send a smaller payload (a reference to where the data is) or raise the limit",
                    payload.len()
                )));
            }
        }
        Ok(())
    }
}

/// A field that is present, even as `null` (which `Option` alone would read as absent), so that
/// errors can tell "missing" from "null".
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Fields parsed in one pass, events and all: serde_json's path for valid requests.
type Typed<'a> = Fields<'a, Box<TypedBody<'a>>, Vec<RawEvent<'a>>>;
/// The envelope body of [`Typed`] (a newtype breaks the type's recursion).
#[derive(Deserialize)]
struct TypedBody<'a>(#[serde(borrow)] Fields<'a, IgnoredBody, Vec<RawEvent<'a>>>);
/// Fields with body and events kept as raw JSON: the careful path that explains errors.
type Loose<'a> = Fields<'a, &'a RawValue, &'a RawValue>;
/// A body inside a body is ignored, as any unknown field is.
#[derive(Deserialize)]
struct IgnoredBody(serde::de::IgnoredAny);

/// Parses one request line. On error, returns what is known of the request (its `msg_id`, `src`
/// and `dest`, for the error reply) with the error.
///
/// Valid requests are parsed in a single pass. Only when that fails is the line parsed again,
/// field by field, to say precisely which field is wrong and to recover `msg_id` for the reply.
pub fn parse_request(line: &str) -> Result<Request<'_>, (ReplyTo, ProtoError)> {
    parse_request_with(line, Timestamps::Required)
}

/// Whether events must carry a `timestamp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Timestamps {
    /// Every event says when it happened (event time, the default).
    #[default]
    Required,
    /// The receiver stamps events with its own clock (`serve --time ingest`): a `timestamp` may
    /// be left out, and one that is given is checked but not used. An event without one reads
    /// as [`Timestamp::EPOCH`] until it is stamped.
    Optional,
}

/// [`parse_request`], with events' timestamps as `timestamps` says.
pub fn parse_request_with(
    line: &str,
    timestamps: Timestamps,
) -> Result<Request<'_>, (ReplyTo, ProtoError)> {
    match flat_request(line, timestamps) {
        Some(request) => request,
        None => serde_request(line, timestamps),
    }
}

/// The members of a request the flat path reads: every field of [`Fields`], in its order (a
/// field added there must be added here, or the flat path would ignore it; the test
/// `every_field_is_read_by_both_paths` checks each).
const MEMBERS: [&str; 18] = [
    "src",
    "dest",
    "body",
    "type",
    "msg_id",
    "events",
    "window_size_ms",
    "node_id",
    "window_id",
    "key",
    "until",
    "from_seq",
    "request_id",
    "partition",
    "group",
    "consumer",
    "max_unacked",
    "seqs",
];

/// Where [`MEMBERS`] lists the fields [`flat_request`] reads itself.
const AT_BODY: usize = 2;
const AT_TYPE: usize = 3;
const AT_MSG_ID: usize = 4;
const AT_EVENTS: usize = 5;

/// The usual request, a flat object whose `events` (if any) are flat objects, read by the flat
/// scanner in one pass; `None` for any other line (an envelope, nested values, escapes, ...),
/// which serde_json reads. Where both read a line, they read the same fields.
fn flat_request(
    line: &str,
    timestamps: Timestamps,
) -> Option<Result<Request<'_>, (ReplyTo, ProtoError)>> {
    let (members, events) = flat::pick_with_array(line, MEMBERS, AT_EVENTS, EventTexts::NAMES)?;
    if members[AT_BODY].is_some() {
        return None;
    }
    let events = match (members[AT_EVENTS], events) {
        (None | Some("null"), _) => None,
        (Some(_), Some(events)) => Some(EventTexts {
            events,
            strings: Strings::Plain,
        }),
        // Not an array of flat objects: serde_json says what is wrong with it.
        (Some(_), None) => return None,
    };
    let (kind, msg_id, rest) = (
        members[AT_TYPE],
        members[AT_MSG_ID],
        Rest::of_members(&members),
    );
    Some(typed_request(
        None,
        None,
        msg_id,
        kind,
        events.as_ref(),
        &rest,
        timestamps,
    ))
}

/// [`parse_request_with`] by serde_json: any request, and the errors' explanations.
fn serde_request(line: &str, timestamps: Timestamps) -> Result<Request<'_>, (ReplyTo, ProtoError)> {
    match serde_json::from_str::<Typed<'_>>(line) {
        Ok(outer) if outer.body.is_some() && outer.kind.is_some() => Err(both_type_and_body(
            outer
                .msg_id
                .or(outer.body.as_ref().and_then(|b| b.0.msg_id)),
        )),
        Ok(outer) => match &outer.body {
            Some(body) => typed_fields(
                (decode_opt(outer.src), decode_opt(outer.dest)),
                &body.0,
                &body.0.rest_within(outer.request_id),
                timestamps,
            ),
            None => typed_fields((None, None), &outer, &outer.rest(), timestamps),
        },
        Err(fast_error) => Err(explain(line, &fast_error, timestamps)),
    }
}

/// The request serde_json read (a bare one, or an envelope's body) with its `src` and `dest`.
fn typed_fields<'a, B>(
    (src, dest): (Option<String>, Option<String>),
    fields: &Fields<'a, B, Vec<RawEvent<'a>>>,
    rest: &Rest<'a>,
    timestamps: Timestamps,
) -> Result<Request<'a>, (ReplyTo, ProtoError)> {
    let events = fields.events.as_deref().map(EventTexts::of);
    typed_request(
        src,
        dest,
        fields.msg_id.map(RawValue::get),
        fields.kind.map(RawValue::get),
        events.as_ref(),
        rest,
        timestamps,
    )
}

/// A line that is both a bare request (`type`) and an envelope (`body`): which one it means
/// cannot be told, so it is refused.
fn both_type_and_body(msg_id: Option<&RawValue>) -> (ReplyTo, ProtoError) {
    let to = ReplyTo {
        msg_id: msg_id.map(|m| m.get().to_owned()),
        ..ReplyTo::default()
    };
    let error = ProtoError::malformed(
        "a line has either a \"type\" (a bare request) or a \"body\" (an envelope with src and dest), not both",
    );
    (to, error)
}

/// The careful path: finds what is wrong with a line the fast path could not parse.
fn explain(
    line: &str,
    fast_error: &serde_json::Error,
    timestamps: Timestamps,
) -> (ReplyTo, ProtoError) {
    let outer: Loose<'_> = match serde_json::from_str(line) {
        Ok(outer) => outer,
        Err(e) => {
            return (
                ReplyTo::default(),
                ProtoError::malformed(not_an_object("request", line, &e)),
            );
        }
    };
    if outer.body.is_some() && outer.kind.is_some() {
        return both_type_and_body(None);
    }
    let envelope_request_id = outer.body.and(outer.request_id);
    let (src, dest, fields) = match outer.body {
        Some(body) => {
            let (src, dest) = (decode_opt(outer.src), decode_opt(outer.dest));
            match serde_json::from_str::<Loose<'_>>(body.get()) {
                Ok(fields) => (src, dest, fields),
                Err(e) => {
                    let to = ReplyTo {
                        msg_id: None,
                        src,
                        dest,
                    };
                    return (
                        to,
                        ProtoError::malformed(not_an_object("body", body.get(), &e)),
                    );
                }
            }
        }
        None => (None, None, outer),
    };
    let events = match fields.events.map(parse_events_array).transpose() {
        Ok(events) => events.as_deref().map(EventTexts::of),
        Err(e) => {
            let to = ReplyTo {
                msg_id: fields.msg_id.map(|m| m.get().to_owned()),
                src,
                dest,
            };
            return (to, e);
        }
    };
    match typed_request(
        src,
        dest,
        fields.msg_id.map(RawValue::get),
        fields.kind.map(RawValue::get),
        events.as_ref(),
        &fields.rest_within(envelope_request_id),
        timestamps,
    ) {
        Err(error) => error,
        // Both paths accept the same fields; if the careful one finds no fault, report the
        // parser's own words.
        Ok(request) => {
            let to = ReplyTo {
                msg_id: request.msg_id.map(str::to_owned),
                src: request.src,
                dest: request.dest,
            };
            (to, ProtoError::malformed(json_error("request", fast_error)))
        }
    }
}

/// The fields of a request other than the envelope, the type, the id and the events.
struct Rest<'a> {
    window_size_ms: Option<&'a str>,
    node_id: Option<&'a str>,
    window_id: Option<&'a str>,
    key: Option<&'a str>,
    until: Option<&'a str>,
    from_seq: Option<&'a str>,
    request_id: Option<&'a str>,
    partition: Option<&'a str>,
    group: Option<&'a str>,
    consumer: Option<&'a str>,
    max_unacked: Option<&'a str>,
    seqs: Option<&'a str>,
}

impl<'a> Rest<'a> {
    /// The fields of a request's members as the flat scanner found them, in [`MEMBERS`] order.
    fn of_members(members: &[Option<&'a str>; 18]) -> Rest<'a> {
        Rest {
            window_size_ms: members[6],
            node_id: members[7],
            window_id: members[8],
            key: members[9],
            until: members[10],
            from_seq: members[11],
            request_id: members[12],
            partition: members[13],
            group: members[14],
            consumer: members[15],
            max_unacked: members[16],
            seqs: members[17],
        }
    }
}

impl<'a, B, E> Fields<'a, B, E> {
    fn rest(&self) -> Rest<'a> {
        let text = |raw: Option<&'a RawValue>| raw.map(RawValue::get);
        Rest {
            window_size_ms: text(self.window_size_ms),
            node_id: text(self.node_id),
            window_id: text(self.window_id),
            key: text(self.key),
            until: text(self.until),
            from_seq: text(self.from_seq),
            request_id: text(self.request_id),
            partition: text(self.partition),
            group: text(self.group),
            consumer: text(self.consumer),
            max_unacked: text(self.max_unacked),
            seqs: text(self.seqs),
        }
    }

    /// The body's fields, with the envelope's `request_id` when the body has none (a follower
    /// marks a forwarded line on the outside, without rewriting the client's body).
    fn rest_within(&self, envelope_request_id: Option<&'a RawValue>) -> Rest<'a> {
        Rest {
            request_id: self.request_id.or(envelope_request_id).map(RawValue::get),
            ..self.rest()
        }
    }
}

fn typed_request<'a>(
    src: Option<String>,
    dest: Option<String>,
    msg_id: Option<&'a str>,
    kind: Option<&'a str>,
    events: Option<&EventTexts<'a>>,
    rest: &Rest<'a>,
    timestamps: Timestamps,
) -> Result<Request<'a>, (ReplyTo, ProtoError)> {
    let msg_id = msg_id.filter(|&m| m != "null");
    let reply_to = |msg_id: Option<&str>| ReplyTo {
        msg_id: msg_id.map(|m| m.to_owned()),
        src: src.clone(),
        dest: dest.clone(),
    };
    if let Some(raw) = msg_id
        && raw.parse::<i64>().is_err()
        && raw.parse::<u64>().is_err()
    {
        let err = ProtoError::malformed(format!(
            "msg_id must be an integer (-2^63 to 2^64-1), got {}",
            shorten(raw)
        ));
        return Err((reply_to(None), err));
    }
    let request_id = rest
        .request_id
        .filter(|&raw| raw != "null")
        .map(parse_request_id)
        .transpose()
        .map_err(|e| (reply_to(msg_id), e))?;
    let partition = rest
        .partition
        .filter(|&raw| raw != "null")
        .map(|raw| {
            raw.parse::<u32>().map_err(|_| {
                invalid(
                    "partition",
                    raw,
                    "a partition number (0 to --partitions - 1); clients leave it out",
                )
            })
        })
        .transpose()
        .map_err(|e| (reply_to(msg_id), e))?;
    let body = parse_body(kind, events, rest, timestamps).map_err(|e| (reply_to(msg_id), e))?;
    Ok(Request {
        src,
        dest,
        msg_id,
        request_id,
        partition,
        body,
    })
}

/// A `subscribe`'s group fields, when it names a group.
fn parse_group(fields: &Rest<'_>) -> Result<Option<GroupJoin>, ProtoError> {
    fn given(raw: Option<&str>) -> Option<&str> {
        raw.filter(|&raw| raw != "null")
    }
    let Some(raw) = given(fields.group) else {
        if given(fields.max_unacked)
            .or(given(fields.consumer))
            .is_some()
        {
            return Err(ProtoError::malformed(
                "max_unacked and consumer belong to a group subscription: add \"group\"",
            ));
        }
        return Ok(None);
    };
    const NAME: &str = "a string of 1 to 128 printable ASCII characters without spaces";
    let name = decode_str(raw).map_err(|v| invalid("group", v, NAME))?;
    check_group_name(&name)?;
    let consumer = given(fields.consumer)
        .map(|raw| decode_str(raw).map_err(|v| invalid("consumer", v, "a string")))
        .transpose()?
        .map(Cow::into_owned);
    const MAX: &str = "a positive integer: how many windows this member may hold unacknowledged";
    let max_unacked = match given(fields.max_unacked) {
        None => DEFAULT_MAX_UNACKED,
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(invalid("max_unacked", raw, MAX)),
        },
    };
    Ok(Some(GroupJoin {
        name: name.into_owned(),
        consumer,
        max_unacked,
    }))
}

/// An `ack`'s `seqs`: at least one.
fn parse_seqs(raw: &str) -> Result<Vec<u64>, ProtoError> {
    const WHAT: &str = "a non-empty array of the acknowledged windows' seq numbers";
    match serde_json::from_str::<Vec<u64>>(raw) {
        Ok(seqs) if !seqs.is_empty() => Ok(seqs),
        _ => Err(invalid("seqs", raw, WHAT)),
    }
}

fn parse_from_seq(raw: &str) -> Result<FromSeq, ProtoError> {
    const WHAT: &str = "a non-negative integer, or with --partitions an array of one per partition";
    if let Ok(seq) = raw.parse::<u64>() {
        return Ok(FromSeq::All(seq));
    }
    serde_json::from_str::<Vec<u64>>(raw)
        .map(FromSeq::PerPartition)
        .map_err(|_| invalid("from_seq", raw, WHAT))
}

/// The longest request id taken, in bytes.
pub const MAX_REQUEST_ID: usize = 256;

fn parse_request_id(raw: &str) -> Result<String, ProtoError> {
    const WHAT: &str = "a non-empty string of at most 256 bytes, unique per request (e.g. a UUID)";
    let id = decode_str(raw).map_err(|v| invalid("request_id", v, WHAT))?;
    if id.is_empty() || id.len() > MAX_REQUEST_ID {
        return Err(invalid("request_id", raw, WHAT));
    }
    Ok(id.into_owned())
}

fn decode_opt(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|raw| decode_str(raw).ok())
        .map(Cow::into_owned)
}

/// Without a full parse: when `line` is a `subscribe` request, its `from_seq` (`Some(None)` for
/// "new windows only"); `None` for any other line. For a node that forwards lines it does not
/// otherwise read.
pub fn peek_subscribe(line: &str) -> Option<Option<u64>> {
    if !line.contains("subscribe") {
        return None;
    }
    let head = RequestHead::of(line)?;
    (head.kind.as_deref() == Some("subscribe"))
        .then(|| head.from_seq.and_then(|raw| raw.get().parse().ok()))
}

/// Without a full parse: whether `line` is a `subscribe` that joins a consumer group (a
/// forwarding node sends such a line again as it is, to join again after a failover).
pub fn peek_group_subscribe(line: &str) -> bool {
    line.contains("group")
        && RequestHead::of(line).is_some_and(|head| {
            head.kind.as_deref() == Some("subscribe")
                && head.group.is_some_and(|raw| raw.get() != "null")
        })
}

/// Without a full parse: the `msg_id` of a request line, as JSON text, for an error reply to a
/// line a node forwards rather than reads.
pub fn peek_msg_id(line: &str) -> Option<String> {
    RequestHead::of(line)?.msg_id.map(|m| m.get().to_owned())
}

/// The routing fields of a request, in its body when it is an envelope.
#[derive(Deserialize)]
struct RequestHead<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    msg_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    from_seq: Option<&'a RawValue>,
    #[serde(default, borrow)]
    group: Option<&'a RawValue>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
}

impl<'a> RequestHead<'a> {
    fn of(line: &'a str) -> Option<RequestHead<'a>> {
        let head: RequestHead<'a> = serde_json::from_str(line.trim_end()).ok()?;
        match head.body {
            Some(body) => serde_json::from_str(body.get()).ok(),
            None => Some(head),
        }
    }
}

/// What an error reply needs to know about the request it answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyTo {
    /// `msg_id`, as JSON text.
    pub msg_id: Option<String>,
    /// The envelope's `src`.
    pub src: Option<String>,
    /// The envelope's `dest`.
    pub dest: Option<String>,
}

impl ReplyTo {
    /// A reply back to the sender, in `style`: in an envelope (from the request's `dest` to its
    /// `src`) when the request came in one, answering its `msg_id`.
    pub fn header(&self, style: Style) -> Header<'_> {
        Header {
            style,
            address: Address {
                envelope: self.src.is_some(),
                src: self.dest.as_deref(),
                dest: self.src.as_deref(),
            },
            in_reply_to: self.msg_id.as_deref(),
        }
    }

    /// The same sender, for messages that answer no request (streamed windows).
    pub fn unsolicited(&self) -> ReplyTo {
        ReplyTo {
            msg_id: None,
            ..self.clone()
        }
    }
}

/// Every field any request may carry, borrowed from the line. `B` is how the envelope's body
/// is held and `E` how the events are: parsed in the same pass on the fast path ([`Typed`]), or
/// kept as raw JSON to explain what is wrong on the careful path ([`Loose`]).
#[derive(Deserialize)]
#[serde(bound(deserialize = "B: Deserialize<'de>, E: Deserialize<'de>, 'de: 'a"))]
struct Fields<'a, B, E> {
    #[serde(default, borrow, deserialize_with = "present")]
    src: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    dest: Option<&'a RawValue>,
    body: Option<B>,
    #[serde(default, borrow, rename = "type", deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    msg_id: Option<&'a RawValue>,
    events: Option<E>,
    #[serde(default, borrow, deserialize_with = "present")]
    window_size_ms: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    node_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    window_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    key: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    until: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    from_seq: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    request_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    partition: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    group: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    consumer: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    max_unacked: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    seqs: Option<&'a RawValue>,
}

/// One event as raw JSON fields. Only a JSON object is one: serde's derived `Deserialize` also
/// takes an array of the fields in order (`[7, "2024-01-15T10:00:10Z"]`), which the protocol
/// does not allow, so the derived part is [`RawEventFields`] and this type asks for a map.
struct RawEvent<'a>(RawEventFields<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for RawEvent<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawEvent<'a>, D::Error> {
        struct ObjectOnly<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for ObjectOnly<'a> {
            type Value = RawEvent<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with id and timestamp")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                map: M,
            ) -> Result<RawEvent<'a>, M::Error> {
                let fields = serde::de::value::MapAccessDeserializer::new(map);
                RawEventFields::deserialize(fields).map(RawEvent)
            }
        }
        d.deserialize_map(ObjectOnly(std::marker::PhantomData))
    }
}

impl<'a> std::ops::Deref for RawEvent<'a> {
    type Target = RawEventFields<'a>;
    fn deref(&self) -> &RawEventFields<'a> {
        &self.0
    }
}

/// A request's events, each as the raw JSON texts of its fields (in [`EventTexts::NAMES`]
/// order), from the flat scanner or serde_json: what [`parse_events`] reads.
#[derive(Clone, Debug)]
struct EventTexts<'a> {
    events: Vec<[Option<&'a str>; 5]>,
    /// What is known of the strings among them.
    strings: Strings,
}

/// What is known of the strings among some raw JSON texts.
#[derive(Clone, Copy, Debug)]
enum Strings {
    /// The flat scanner read them: none has an escape, so a string's content is the text
    /// between its quotes.
    Plain,
    /// Any JSON string: [`decode_str`] reads it.
    Any,
}

impl Strings {
    /// The content of `raw` when it is a JSON string, as [`decode_str`] gives it.
    fn decode(self, raw: &str) -> Result<Cow<'_, str>, &str> {
        match self {
            Strings::Plain if raw.len() >= 2 && raw.starts_with('"') => {
                Ok(Cow::Borrowed(&raw[1..raw.len() - 1]))
            }
            _ => decode_str(raw),
        }
    }
}

impl<'a> EventTexts<'a> {
    /// An event's fields, in the order of its array.
    const NAMES: [&'static str; 5] = ["id", "timestamp", "key", "value", "payload"];

    /// The events serde_json read.
    fn of(events: &[RawEvent<'a>]) -> EventTexts<'a> {
        let events = events
            .iter()
            .map(|e| [e.id, e.timestamp, e.key, e.value, e.payload].map(|f| f.map(RawValue::get)))
            .collect();
        EventTexts {
            events,
            strings: Strings::Any,
        }
    }
}

/// The fields of a [`RawEvent`].
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct RawEventFields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    timestamp: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    key: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    value: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
}

fn parse_body<'a>(
    kind: Option<&'a str>,
    events: Option<&EventTexts<'a>>,
    fields: &Rest<'a>,
    timestamps: Timestamps,
) -> Result<Body<'a>, ProtoError> {
    let events = || {
        events.ok_or_else(|| ProtoError::malformed(format!("missing field events: give {EVENTS}")))
    };
    let kind = kind.ok_or_else(|| {
        ProtoError::malformed(format!(
            "missing field type: this node serves {REQUEST_TYPES}"
        ))
    })?;
    let kind = decode_str(kind).map_err(|_| {
        ProtoError::malformed(format!(
            "type must be a string, got {}: this node serves {REQUEST_TYPES}",
            shorten(kind)
        ))
    })?;
    Ok(match &*kind {
        "init" => Body::Init {
            node_id: decode_str(required(
                fields.node_id,
                "node_id",
                "this node's id, a string",
            )?)
            .map_err(|v| invalid("node_id", v, "a string"))?
            .into_owned(),
        },
        "assign" => {
            let events = parse_events(events()?, timestamps)?;
            if events.is_empty() {
                return Err(ProtoError::malformed(
                    "events must hold at least one event for assign, got []",
                ));
            }
            Body::Assign {
                events,
                size: parse_size(required(
                    fields.window_size_ms,
                    "window_size_ms",
                    WINDOW_SIZE,
                )?)?,
            }
        }
        "process_window" => Body::ProcessWindow {
            events: parse_events(events()?, timestamps)?,
            size: parse_size(required(
                fields.window_size_ms,
                "window_size_ms",
                WINDOW_SIZE,
            )?)?,
        },
        "close" => Body::Close {
            window_id: parse_window_id(required(fields.window_id, "window_id", WINDOW_ID)?)?,
            size: fields.window_size_ms.map(parse_size).transpose()?,
            key: fields
                .key
                .filter(|&raw| raw != "null")
                .map(|raw| decode_str(raw).map_err(|v| invalid("key", v, "a string")))
                .transpose()?
                .map(Cow::into_owned),
        },
        "flush" => Body::Flush {
            until: fields
                .until
                .filter(|&raw| raw != "null")
                .map(|raw| parse_timestamp(raw, "until", &mut DateMemo::default(), Strings::Any))
                .transpose()?,
        },
        "ingest" => Body::Ingest {
            events: parse_events(events()?, timestamps)?,
            size: fields
                .window_size_ms
                .filter(|&raw| raw != "null")
                .map(parse_size)
                .transpose()?,
        },
        "ack" => Body::Ack {
            seqs: parse_seqs(required(
                fields.seqs,
                "seqs",
                "an array of the acknowledged windows' seq numbers",
            )?)?,
        },
        "subscribe" => Body::Subscribe {
            group: parse_group(fields)?,
            from_seq: fields
                .from_seq
                .filter(|&raw| raw != "null")
                .map(parse_from_seq)
                .transpose()?,
        },
        "stats" => Body::Stats,
        other => {
            return Err(ProtoError::UnknownType(format!(
                "unknown request type {other:?}: this node serves {REQUEST_TYPES}"
            )));
        }
    })
}

/// Parses the raw `events` field, explaining what is wrong with it.
fn parse_events_array<'a>(raw: &'a RawValue) -> Result<Vec<RawEvent<'a>>, ProtoError> {
    let elements: Vec<&'a RawValue> = serde_json::from_str(raw.get()).map_err(|_| {
        ProtoError::malformed(format!(
            "events must be {EVENTS}, got {}",
            shorten(raw.get())
        ))
    })?;
    elements
        .into_iter()
        .enumerate()
        .map(|(index, element)| {
            serde_json::from_str(element.get()).map_err(|e| {
                let shape = "an {\"id\", \"timestamp\", \"key\"?, \"value\"?, \"payload\"?} object";
                let got = shorten(element.get());
                ProtoError::malformed(if element.get().starts_with('{') {
                    format!("events[{index}] must be {shape}: {e}, got {got}")
                } else if element.get().starts_with('[') {
                    format!(
                        "events[{index}] must be an object with id and timestamp, e.g. {{\"id\": 7, \"timestamp\": \"2024-01-15T10:00:10Z\"}}, not an array: got {got}"
                    )
                } else {
                    format!("events[{index}] must be {shape}, got {got}")
                })
            })
        })
        .collect()
}

fn parse_events<'a>(
    texts: &EventTexts<'a>,
    timestamps: Timestamps,
) -> Result<Batch<'a>, ProtoError> {
    let mut batch = Batch {
        items: Vec::with_capacity(texts.events.len()),
        keys: Vec::with_capacity(texts.events.len()),
        payloads: Vec::new(),
    };
    let strings = texts.strings;
    // Events in a row mostly share their date: it is read once (see `DateMemo`).
    let mut memo = DateMemo::default();
    for (index, &[id, timestamp, key, value, payload]) in texts.events.iter().enumerate() {
        let field = |name| EventField { index, name };
        let id = required(id, field("id"), "a number or a string")?;
        let id = parse_event_id(id, field("id"), strings)?;
        let ts = match (timestamp, timestamps) {
            (None, Timestamps::Optional) => Timestamp::EPOCH,
            (raw, _) => {
                let raw = required(raw, field("timestamp"), TIMESTAMP)?;
                parse_timestamp(raw, field("timestamp"), &mut memo, strings)?
            }
        };
        let key = match key.filter(|&raw| raw != "null") {
            None => None,
            Some(raw) => Some(
                strings
                    .decode(raw)
                    .map_err(|v| invalid(field("key"), v, "a string"))?,
            ),
        };
        let value = match value.filter(|&raw| raw != "null") {
            None => None,
            Some(raw) => Some(parse_value(raw, field("value"))?),
        };
        if let Some(raw) = payload.filter(|&raw| raw != "null") {
            batch.payloads.resize(index, None);
            batch.payloads.push(Some(one_line(raw)));
        } else if !batch.payloads.is_empty() {
            batch.payloads.push(None);
        }
        batch.items.push((id, ts, value));
        batch.keys.push(key);
    }
    Ok(batch)
}

/// JSON text on one line: as given, unless line breaks stand between its tokens (a request that
/// came over several lines), which are dropped with the rest of the whitespace between tokens.
/// A JSON string holds no raw line break, so outside strings is the only place one can be.
fn one_line(json: &str) -> Cow<'_, str> {
    let bytes = json.as_bytes();
    if memchr::memchr2(b'\n', b'\r', bytes).is_none() {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !c.is_ascii_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Names a field of one event in error texts (`events[3].timestamp`), formatted only on error.
#[derive(Clone, Copy, Debug)]
struct EventField {
    index: usize,
    name: &'static str,
}

impl fmt::Display for EventField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "events[{}].{}", self.index, self.name)
    }
}

fn parse_event_id(raw: &str, field: EventField, strings: Strings) -> Result<EventId, ProtoError> {
    let text = raw;
    match text.as_bytes().first() {
        Some(b'"') => Ok(EventId::Text(
            strings
                .decode(raw)
                .map_err(|v| invalid(field, v, "a number or a string"))?
                .into(),
        )),
        // `-0` parses as 0 but must be echoed as given.
        Some(b'-' | b'0'..=b'9') => Ok(match text.parse::<i64>() {
            Ok(n) if text != "-0" => EventId::Int(n),
            _ => EventId::Number(text.into()),
        }),
        _ => Err(invalid(field, raw, "a number or a string")),
    }
}

/// Parses an RFC 3339 string or integer epoch milliseconds, within years 0000..=9999. `memo` is
/// the last date read.
fn parse_timestamp(
    raw: &str,
    field: impl fmt::Display + Copy,
    memo: &mut DateMemo,
    strings: Strings,
) -> Result<Timestamp, ProtoError> {
    let text = raw;
    let ts = if text.starts_with('"') {
        let s = strings
            .decode(raw)
            .map_err(|v| invalid(field, v, "a timestamp"))?;
        Timestamp::parse_rfc3339_memo(&s, memo)
            .map_err(|e| ProtoError::malformed(format!("{field}: {e}")))?
    } else {
        let integer = text.strip_prefix('-').unwrap_or(text);
        match text.parse::<i64>() {
            Ok(ms) => Timestamp::from_millis(ms),
            Err(_) if !integer.is_empty() && integer.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(ProtoError::malformed(format!(
                    "{field}: timestamp {text} ms is outside years 0000..=9999"
                )));
            }
            Err(_) => return Err(invalid(field, raw, TIMESTAMP)),
        }
    };
    ts.check_formattable()
        .map_err(|e| ProtoError::malformed(format!("{field}: {e}")))
}

fn parse_value(raw: &str, field: EventField) -> Result<f64, ProtoError> {
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && !raw.starts_with('"') => Ok(v),
        _ => Err(invalid(field, raw, "a finite number")),
    }
}

fn parse_size(raw: &str) -> Result<SizeMs, ProtoError> {
    raw.parse::<i64>()
        .ok()
        .and_then(|ms| SizeMs::new(ms).ok())
        .ok_or_else(|| invalid("window_size_ms", raw, WINDOW_SIZE))
}

fn parse_window_id(raw: &str) -> Result<WindowId, ProtoError> {
    let text = raw;
    if !text.starts_with('"') && text.parse::<f64>().is_ok() {
        return Err(ProtoError::malformed(format!(
            "window_id must be the string {WINDOW_ID_FORM} as the node writes it in replies, e.g. \"window-{text}\", not a bare number: got {}",
            shorten(text)
        )));
    }
    let decoded = decode_str(raw).map_err(|v| invalid("window_id", v, WINDOW_ID))?;
    decoded.parse().map_err(|()| {
        // Only the form the node writes names a window: "window-05" or "window--0" would be a
        // second spelling of one id.
        let other_spelling = decoded.strip_prefix("window-").is_some_and(|digits| {
            let negative = digits.starts_with('-');
            let magnitude = digits.strip_prefix('-').unwrap_or(digits);
            magnitude.bytes().all(|b| b.is_ascii_digit())
                && magnitude.starts_with('0')
                && (magnitude.len() > 1 || negative)
        });
        if other_spelling {
            ProtoError::malformed(format!(
                "window_id must be {WINDOW_ID_FORM} exactly as the node writes it in replies (no leading zeros, no \"-0\"), e.g. \"window-5\" or \"window--60000\": got {}",
                shorten(text)
            ))
        } else {
            invalid("window_id", raw, WINDOW_ID)
        }
    })
}

/// A field that must be there and not null; the error says what it must be.
fn required<'a, T: JsonText + ?Sized>(
    raw: Option<&'a T>,
    name: impl fmt::Display,
    expected: &str,
) -> Result<&'a T, ProtoError> {
    match raw {
        Some(raw) if raw.text() != "null" => Ok(raw),
        Some(_) => Err(ProtoError::malformed(format!(
            "{name} must be {expected}, got null"
        ))),
        None => Err(ProtoError::malformed(format!(
            "missing field {name}: give {expected}"
        ))),
    }
}

/// Decodes a JSON string, borrowing when it has no escapes. On error returns the raw value.
fn decode_str<T: JsonText + ?Sized>(raw: &T) -> Result<Cow<'_, str>, &T> {
    let text = raw.text();
    if let Some(inner) = flat::plain_string(text) {
        return Ok(Cow::Borrowed(inner));
    }
    if !text.starts_with('"') {
        return Err(raw);
    }
    serde_json::from_str::<String>(text)
        .map(Cow::Owned)
        .map_err(|_| raw)
}

fn invalid<T: JsonText + ?Sized>(field: impl fmt::Display, raw: &T, expected: &str) -> ProtoError {
    ProtoError::malformed(format!(
        "{field} must be {expected}, got {}",
        shorten(raw.text())
    ))
}

/// A JSON value's raw text: serde_json's [`RawValue`], or a slice the flat scanner found.
trait JsonText {
    fn text(&self) -> &str;
}

impl JsonText for RawValue {
    fn text(&self) -> &str {
        self.get()
    }
}

impl JsonText for str {
    fn text(&self) -> &str {
        self
    }
}

/// Explains a request (or body) that did not parse: valid JSON of the wrong shape, or not JSON.
fn not_an_object(what: &str, text: &str, e: &serde_json::Error) -> String {
    let valid_json = serde_json::from_str::<&RawValue>(text).is_ok();
    if valid_json && !text.trim_start().starts_with('{') {
        let shape = if what == "body" {
            "send {\"src\", \"dest\", \"body\": {\"type\": ...}}"
        } else {
            "send {\"type\": ...} or {\"src\", \"dest\", \"body\": {\"type\": ...}}, one per line"
        };
        format!(
            "{what} must be a JSON object, got {}: {shape}",
            shorten(text.trim())
        )
    } else {
        json_error(what, e)
    }
}

fn json_error(what: &str, e: &serde_json::Error) -> String {
    if e.is_data() {
        format!("{what} must be a JSON object: {e}")
    } else {
        format!("{what} is not valid JSON: {e}")
    }
}

/// A value as shown in an error text: at most 80 characters.
fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of event objects: known and unknown keys (one escaped), values of every kind (some
    /// the flat scanner leaves to serde_json: nested, escaped).
    const EVENT_KEYS: [&str; 7] = [
        "\"id\"",
        "\"timestamp\"",
        "\"key\"",
        "\"value\"",
        "\"payload\"",
        "\"x\"",
        "\"\\u0069d\"",
    ];
    const EVENT_VALUES: [&str; 12] = [
        "7",
        "-1.5e3",
        "\"2024-01-15T10:00:10Z\"",
        "\"a\"",
        "null",
        "true",
        "\"\"",
        "\"é\"",
        "\"a\\\"b\"",
        "{\"n\": [1, {}]}",
        "[]",
        "0",
    ];

    /// Members of request lines: every field a request has (some twice), an unknown one, and
    /// values of every kind, some the flat path leaves to serde_json.
    const REQUEST_MEMBERS: [&str; 14] = [
        r#""type": "process_window""#,
        r#""type": "ingest""#,
        r#""type": 7"#,
        r#""msg_id": 3"#,
        r#""msg_id": "x""#,
        r#""events": [{"id": 1, "timestamp": "2024-01-15T10:00:10Z"}, {"id": 2, "timestamp": 60000}]"#,
        r#""events": [{"id": 1, "timestamp": "2024-01-15T10:00:10Z", "payload": {"a": 1}}]"#,
        r#""events": [{"id": 1}]"#,
        r#""events": null"#,
        r#""window_size_ms": 60000"#,
        r#""window_size_ms": "1m""#,
        r#""request_id": "r-1""#,
        r#""other": [1, {"b": null}]"#,
        r#""body": null"#,
    ];

    proptest::proptest! {
        /// Whatever the flat path reads, serde_json's path reads the same way: the same request
        /// or the same error.
        #[test]
        fn the_flat_request_path_agrees_with_serde(
            members in proptest::collection::vec(0..REQUEST_MEMBERS.len(), 0..6),
        ) {
            let picked: Vec<&str> = members.iter().map(|&m| REQUEST_MEMBERS[m]).collect();
            let line = format!("{{{}}}", picked.join(", "));
            if let Some(flat) = flat_request(&line, Timestamps::Required) {
                let by_serde = serde_request(&line, Timestamps::Required);
                proptest::prop_assert_eq!(format!("{flat:?}"), format!("{by_serde:?}"), "{}", line);
            }
        }
    }

    #[test]
    fn every_field_is_read_by_both_paths() {
        // The derived reader hands its field names to `deserialize_struct`: catch them there.
        struct Names<'c>(&'c mut Vec<&'static str>);
        impl<'de> serde::Deserializer<'de> for Names<'_> {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(
                self,
                _: V,
            ) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("only a struct"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.extend_from_slice(fields);
                Err(serde::de::Error::custom("names taken"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        let mut names = Vec::new();
        assert!(Loose::deserialize(Names(&mut names)).is_err());
        assert_eq!(names, MEMBERS);
    }

    #[test]
    fn each_member_the_flat_path_finds_goes_to_its_own_field() {
        let rest = Rest::of_members(&MEMBERS.map(Some));
        let fields = [
            rest.window_size_ms,
            rest.node_id,
            rest.window_id,
            rest.key,
            rest.until,
            rest.from_seq,
            rest.request_id,
            rest.partition,
            rest.group,
            rest.consumer,
            rest.max_unacked,
            rest.seqs,
        ];
        // Each field names itself: the members after the four the flat path reads itself.
        let names: Vec<Option<&str>> = MEMBERS[AT_EVENTS + 1..].iter().copied().map(Some).collect();
        assert_eq!(fields.to_vec(), names);
        let at = [AT_BODY, AT_TYPE, AT_MSG_ID, AT_EVENTS].map(|i| MEMBERS[i]);
        assert_eq!(at, ["body", "type", "msg_id", "events"]);
    }

    #[test]
    fn an_envelope_keeps_refusing_what_it_refused() {
        // An envelope's own `events` must still be events, though the body's are the ones read.
        let bad_outer =
            r#"{"src":"c1","dest":"n1","body":{"type":"stats","msg_id":1},"events":[1]}"#;
        let (to, error) = parse_request(bad_outer).expect_err("refused");
        assert_eq!(to.msg_id.as_deref(), Some("1"));
        assert!(
            error.to_string().contains("invalid type: integer `1`"),
            "{error}"
        );
        // A line with both `type` and `body` names no msg_id to answer when its events are bad.
        for line in [
            r#"{"type":"stats","msg_id":1,"body":{"type":"stats"},"events":[1]}"#,
            r#"{"type":"stats","msg_id":1,"body":{"type":"stats","events":[1]}}"#,
        ] {
            let (to, _) = parse_request(line).expect_err("refused");
            assert_eq!(to.msg_id, None, "{line}");
        }
    }

    #[test]
    fn a_usual_request_takes_the_flat_path() {
        let line = r#"{"type": "process_window", "msg_id": 1, "events": [{"id": 1, "timestamp": "2024-01-15T10:00:10Z", "key": "k", "value": 2.5}], "window_size_ms": 60000}"#;
        assert!(flat_request(line, Timestamps::Required).is_some());
        let envelope = r#"{"src": "c1", "dest": "n1", "body": {"type": "stats", "msg_id": 1}}"#;
        assert!(flat_request(envelope, Timestamps::Required).is_none());
        assert!(parse_request(envelope).is_ok());
    }

    proptest::proptest! {
        /// Whenever the flat scanner reads an events array, serde_json reads the same fields
        /// with the same texts; and a request of only plain events takes the flat path.
        #[test]
        fn the_flat_events_path_agrees_with_serde(
            events in proptest::collection::vec(
                proptest::collection::vec((0..EVENT_KEYS.len(), 0..EVENT_VALUES.len(), proptest::bool::ANY), 0..5),
                0..4,
            ),
        ) {
            let objects: Vec<String> = events
                .iter()
                .map(|pairs| {
                    let members: Vec<String> = pairs
                        .iter()
                        .map(|&(k, v, spaced)| {
                            let gap = if spaced { " " } else { "" };
                            format!("{gap}{}{gap}:{gap}{}", EVENT_KEYS[k], EVENT_VALUES[v])
                        })
                        .collect();
                    format!("{{{}}}", members.join(","))
                })
                .collect();
            let array = format!("[{}]", objects.join(", "));
            let flat = flat::objects(&array, EventTexts::NAMES);
            let raw: &RawValue = serde_json::from_str(&array).expect("valid JSON");
            let by_serde = parse_events_array(raw)
                .ok()
                .map(|v| EventTexts::of(&v).events);
            if let Some(flat) = &flat {
                proptest::prop_assert_eq!(Some(flat), by_serde.as_ref(), "{}", array);
            }
            let plain = events.iter().all(|pairs| {
                pairs.iter().all(|&(k, v, _)| k < 6 && v < 8)
                    && (0..5).all(|k| pairs.iter().filter(|p| p.0 == k).count() <= 1)
            });
            if plain {
                proptest::prop_assert!(flat.is_some(), "{}", array);
            }
        }
    }

    fn payloads_of(line: &str) -> Vec<Option<String>> {
        let mut request = parse_request(line).expect("parses");
        let Body::Ingest { events, .. } = &mut request.body else {
            panic!("an ingest");
        };
        events
            .events()
            .iter()
            .map(|e| e.payload.as_deref().map(str::to_owned))
            .collect()
    }

    #[test]
    fn a_payload_is_kept_as_its_json_text_on_one_line() {
        let line = "{\"type\":\"ingest\",\"events\":[{\"id\":1,\"timestamp\":0},\
                    {\"id\":2,\"timestamp\":0,\"payload\":{ \"a\" :\n [1,\r\n \"x \\\" y\\\\\"] }},\
                    {\"id\":3,\"timestamp\":0,\"payload\":null}]}";
        assert_eq!(
            payloads_of(line),
            vec![None, Some("{\"a\":[1,\"x \\\" y\\\\\"]}".to_owned()), None],
            "line breaks between tokens go (with the other whitespace there); strings stay"
        );
        let kept = "{\"type\":\"ingest\",\"events\":[{\"id\":1,\"timestamp\":0,\"payload\":[ 1, \"a  b\" ]}]}";
        assert_eq!(payloads_of(kept), vec![Some("[ 1, \"a  b\" ]".to_owned())]);
    }

    #[test]
    fn a_payload_over_the_limit_refuses_the_request_naming_the_event() {
        let line = "{\"type\":\"ingest\",\"events\":[{\"id\":1,\"timestamp\":0,\"payload\":\"ab\"},\
                    {\"id\":2,\"timestamp\":0,\"payload\":\"abcdef\"}]}";
        let request = parse_request(line).expect("parses");
        assert!(request.check_payloads(8).is_ok(), "\"abcdef\" is 8 bytes");
        let error = request.check_payloads(7).expect_err("over 7 bytes");
        assert_eq!(error.code(), 12);
        assert!(
            error.to_string().contains("events[1].payload is 8 bytes"),
            "{error}"
        );
    }
}
