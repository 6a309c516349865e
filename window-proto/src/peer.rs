//! Reading what another node wrote: the one parser of a peer's replies and streamed messages,
//! and the one way of marking a forwarded request line with a request id.
//!
//! A node that forwards (a follower) or routes (a partitioned node) reads its peers' lines only
//! as far as it must: which kind, whether it answers a request, an error's code, a window's
//! `seq`. Fields it passes on are kept as raw JSON ([`PeerFields`]) and written again as they
//! came.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::error::ProtoError;
use crate::json::{JsonWriter, Style};
use crate::kind::Kind;
use crate::reply::Fields;

/// The head of a peer's message: enough to route it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peek {
    /// Its `type`, when it is a kind a node writes.
    pub kind: Option<Kind>,
    /// It answers a request (it has `in_reply_to`).
    pub answers: bool,
    /// An error's code.
    pub code: Option<u32>,
    /// A window's sequence number.
    pub seq: Option<u64>,
    /// `subscribe_ok`'s start, when it is one number.
    pub from_seq: Option<u64>,
}

impl Peek {
    /// Reads the head of `line` (a bare body or an envelope); `None` when it is no JSON object.
    pub fn of(line: &str) -> Option<Peek> {
        let head: Head<'_> = serde_json::from_str(line.trim_end()).ok()?;
        let head = match head.body {
            Some(body) => serde_json::from_str::<Head<'_>>(body.get()).ok()?,
            None => head,
        };
        Some(Peek {
            kind: head.kind.as_deref().and_then(Kind::parse),
            answers: head.in_reply_to.is_some(),
            code: head.code,
            seq: head.seq,
            from_seq: head.from_seq.and_then(|raw| raw.get().parse().ok()),
        })
    }

    /// True for an error with `code`.
    pub fn is_error(&self, code: u32) -> bool {
        self.kind == Some(Kind::Error) && self.code == Some(code)
    }

    /// True for error 11: the peer did not run the request, and it may be sent again.
    pub fn is_unavailable(&self) -> bool {
        self.is_error(ProtoError::UNAVAILABLE)
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    in_reply_to: Option<IgnoredAny>,
    code: Option<u32>,
    seq: Option<u64>,
    #[serde(default, borrow)]
    from_seq: Option<&'a RawValue>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
}

/// A peer's reply of kind `kind`, read as `T`; an error reply as its error.
pub fn expect_reply<'a, T: Deserialize<'a>>(text: &'a str, kind: Kind) -> Result<T, ProtoError> {
    #[derive(Deserialize)]
    struct ErrorHead<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        code: Option<u32>,
        text: Option<String>,
    }
    let head: ErrorHead<'_> = serde_json::from_str(text).map_err(|e| unexpected(text, &e))?;
    if head.kind == Kind::Error.as_str() {
        return Err(ProtoError::from_code(
            head.code.unwrap_or(ProtoError::INTERNAL),
            head.text.unwrap_or_default(),
        ));
    }
    if head.kind != kind.as_str() {
        return Err(ProtoError::Internal(format!(
            "a peer answered {} where {} was expected",
            head.kind,
            kind.as_str()
        )));
    }
    serde_json::from_str(text).map_err(|e| unexpected(text, &e))
}

/// The error for a peer's line that could not be read.
pub fn unexpected(text: &str, error: &serde_json::Error) -> ProtoError {
    let shown: String = text.chars().take(200).collect();
    ProtoError::Internal(format!(
        "a peer's reply could not be read ({error}): {shown}"
    ))
}

/// A message's fields in their order, values as raw JSON, without `type` and `in_reply_to`: to
/// be written again under another header (see `reply::relayed` and `reply::window_closed`).
#[derive(Clone, Debug, Default)]
pub struct PeerFields<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'a> PeerFields<'a> {
    /// The fields of the message `text` (its body, when it is an envelope), and its kind.
    pub fn of(text: &'a str) -> Result<(Option<Kind>, PeerFields<'a>), ProtoError> {
        let fields: AllFields<'a> =
            serde_json::from_str(text.trim_end()).map_err(|e| unexpected(text, &e))?;
        let fields = match fields.get("body") {
            Some(body) => serde_json::from_str(body.get()).map_err(|e| unexpected(text, &e))?,
            None => fields,
        };
        let kind = fields
            .get("type")
            .and_then(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok())
            .and_then(|kind| Kind::parse(&kind));
        let kept = fields
            .0
            .into_iter()
            .filter(|(key, _)| *key != "type" && *key != "in_reply_to")
            .collect();
        Ok((kind, PeerFields(kept)))
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.0.iter().map(|(key, value)| (*key, value.get()))
    }

    /// The raw value of the field `name`.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find_map(|(key, value)| (*key == name).then_some(*value))
    }
}

impl Fields for PeerFields<'_> {
    fn write_fields(&self, w: &mut JsonWriter<'_>) {
        for (key, value) in self.iter() {
            w.key(key).raw(value);
        }
    }
}

/// Every field of an object, in order.
#[derive(Debug)]
struct AllFields<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'a> AllFields<'a> {
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find_map(|(key, value)| (*key == name).then_some(*value))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for PeerFields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let AllFields(fields) = AllFields::deserialize(d)?;
        Ok(PeerFields(
            fields
                .into_iter()
                .filter(|(key, _)| *key != "type" && *key != "in_reply_to")
                .collect(),
        ))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for AllFields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = AllFields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<&'de str, &'de RawValue>()? {
                    fields.push(entry);
                }
                Ok(AllFields(fields))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// The client's request `line` with `"request_id": id` added first to its outermost object (the
/// envelope, or a bare body), so that the receiver can tell a resend from a new request.
///
/// `None` when the line must go as it is: it carries a request id already (on the outside or in
/// its body), it is no JSON object (the receiver rejects it anyway), or the id would push it to
/// `max_line_bytes` or over (the receiver would reject it as too long, though the client's line
/// was within the limit). The last two lose only the resend protection.
pub fn mark_request_id(line: &str, id: &str, max_line_bytes: usize) -> Option<String> {
    // The common case, a line that does not mention the name at all, cannot carry an id: the id
    // goes in front of its first field without reading the rest (forwarding a large ingest
    // costs no parse). A line that mentions it is read, so that a value is not taken for a key.
    if !line.contains("request_id") {
        return prepend_request_id(line, id, max_line_bytes);
    }
    let fields: AllFields<'_> = serde_json::from_str(line.trim_end()).ok()?;
    let has_id = |fields: &AllFields<'_>| fields.get("request_id").is_some();
    if has_id(&fields) {
        return None;
    }
    if let Some(body) = fields.get("body")
        && serde_json::from_str::<AllFields<'_>>(body.get()).is_ok_and(|body| has_id(&body))
    {
        return None;
    }
    let mut out = Vec::with_capacity(line.len() + id.len() + 20);
    let mut w = JsonWriter::new(&mut out, Style::Compact);
    w.begin_object();
    w.key("request_id").str(id);
    for (key, value) in &fields.0 {
        w.key(key).raw(value.get());
    }
    w.end_object();
    if out.len() >= max_line_bytes {
        return None;
    }
    // Written from a `&str` and JSON text: valid UTF-8.
    String::from_utf8(out).ok()
}

/// `line` (an object, or the receiver rejects it anyway) with the id as its first field.
fn prepend_request_id(line: &str, id: &str, max_line_bytes: usize) -> Option<String> {
    let inside = line.trim().strip_prefix('{')?;
    let mut out = Vec::with_capacity(line.len() + id.len() + 20);
    let mut w = JsonWriter::new(&mut out, Style::Compact);
    w.begin_object();
    w.key("request_id").str(id);
    out.extend_from_slice(if inside.trim_start().starts_with('}') {
        b""
    } else {
        b","
    });
    out.extend_from_slice(inside.as_bytes());
    if out.len() >= max_line_bytes {
        return None;
    }
    String::from_utf8(out).ok()
}

/// A request line for a peer node: `type`, then `partition` and `request_id` when given, then
/// what `fields` writes (compact).
pub fn request_line(
    kind: &str,
    partition: Option<u32>,
    request_id: Option<&str>,
    fields: impl FnOnce(&mut JsonWriter<'_>),
) -> String {
    let mut line = Vec::with_capacity(256);
    let mut w = JsonWriter::new(&mut line, Style::Compact);
    w.begin_object();
    w.key("type").str(kind);
    if let Some(partition) = partition {
        w.key("partition").int(partition);
    }
    if let Some(id) = request_id {
        w.key("request_id").str(id);
    }
    fields(&mut w);
    w.end_object();
    // Written from `&str`s and JSON text: valid UTF-8.
    String::from_utf8(line).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_into_envelopes_and_both_styles() {
        let peek =
            Peek::of(r#"{"src":"a","body":{"type": "error", "in_reply_to": 3, "code": 11}}"#)
                .unwrap();
        assert!(peek.is_unavailable());
        assert!(peek.answers);
        let closed = format!(
            r#"{{"type":"{}","seq":9,"window_id":"window-0"}}"#,
            Kind::WindowClosed.as_str()
        );
        let peek = Peek::of(&closed).unwrap();
        assert_eq!(peek.kind, Some(Kind::WindowClosed));
        assert_eq!(peek.seq, Some(9));
        assert!(!peek.answers);
        let peek = Peek::of(r#"{"type":"subscribe_ok","from_seq":[1,2]}"#).unwrap();
        assert_eq!(peek.kind, Some(Kind::SubscribeOk));
        assert_eq!(peek.from_seq, None, "an array is no single start");
        assert_eq!(Peek::of("[1]"), None);
    }

    #[test]
    fn a_reply_of_another_kind_or_an_error_is_an_error() {
        #[derive(Debug, Deserialize)]
        struct Counts {
            accepted: u64,
        }
        let counts: Counts =
            expect_reply(r#"{"type":"ingest_ok","accepted":2}"#, Kind::IngestOk).unwrap();
        assert_eq!(counts.accepted, 2);
        let error = expect_reply::<Counts>(
            r#"{"type":"error","code":20,"text":"gone"}"#,
            Kind::IngestOk,
        )
        .unwrap_err();
        assert_eq!(error, ProtoError::NotOpen("gone".into()));
        let error = expect_reply::<Counts>(r#"{"type":"flushed","windows":[]}"#, Kind::IngestOk)
            .unwrap_err();
        assert_eq!(error.code(), ProtoError::INTERNAL);
    }

    #[test]
    fn fields_keep_their_order_and_raw_values_without_type_and_reply() {
        let text = format!(
            r#"{{"type":"{}","in_reply_to":4,"window_id":"window-0","events":[1, 2],"partition":2}}"#,
            Kind::WindowClosed.as_str()
        );
        let (kind, fields) = PeerFields::of(&text).unwrap();
        assert_eq!(kind, Some(Kind::WindowClosed));
        let fields: Vec<_> = fields.iter().collect();
        assert_eq!(
            fields,
            [
                ("window_id", "\"window-0\""),
                ("events", "[1, 2]"),
                ("partition", "2")
            ]
        );
    }

    #[test]
    fn a_request_id_goes_first_unless_one_is_there() {
        assert_eq!(
            mark_request_id(r#"{"type":"flush"}"#, "f-1", 1000).as_deref(),
            Some(r#"{"request_id":"f-1","type":"flush"}"#)
        );
        assert_eq!(
            mark_request_id("{}", "f-1", 1000).as_deref(),
            Some(r#"{"request_id":"f-1"}"#)
        );
        assert_eq!(
            mark_request_id(r#"{"src":"c","body":{"type":"flush"}}"#, "f-2", 1000).as_deref(),
            Some(r#"{"request_id":"f-2","src":"c","body":{"type":"flush"}}"#)
        );
        assert_eq!(
            mark_request_id(r#"{"type":"flush","request_id":"mine"}"#, "f", 1000),
            None
        );
        assert_eq!(
            mark_request_id(
                r#"{"body":{"type":"flush","request_id":"mine"}}"#,
                "f",
                1000
            ),
            None
        );
        assert_eq!(
            mark_request_id(r#"{"type":"flush","key":"request_id"}"#, "f", 1000).as_deref(),
            Some(r#"{"request_id":"f","type":"flush","key":"request_id"}"#),
            "a value that mentions the name is no id"
        );
        assert_eq!(mark_request_id("[1]", "f", 1000), None);
        assert_eq!(
            mark_request_id(r#" {"type": "flush"} "#, "f-3", 1000).as_deref(),
            Some(r#"{"request_id":"f-3","type": "flush"}"#),
            "the fast path keeps the line's own text"
        );
        assert_eq!(mark_request_id(r#"{"type":"flush"}"#, "f-1", 20), None);
    }
}
