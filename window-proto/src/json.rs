//! A small JSON writer that produces the protocol's exact text style.
//!
//! The published samples separate with `", "` and `": "`; `--compact` drops the spaces. Keys
//! are written in the order the protocol lists them, so messages are assembled by hand here
//! rather than by serde (see `reply` for the messages themselves).

use std::io::Write;

use window_core::{Aggregate, EventId, Timestamp};

/// Separator style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `{"a": 1, "b": 2}`: the samples' style.
    Spaced,
    /// `{"a":1,"b":2}`.
    Compact,
}

/// Appends JSON to a byte buffer, tracking where commas go.
#[derive(Debug)]
pub struct JsonWriter<'o> {
    out: &'o mut Vec<u8>,
    style: Style,
    /// One entry per open object or array: whether it already holds an element.
    has_element: Vec<bool>,
    /// A key was just written: the next value follows it without a separator.
    after_key: bool,
}

impl<'o> JsonWriter<'o> {
    /// A writer appending to `out`.
    pub fn new(out: &'o mut Vec<u8>, style: Style) -> JsonWriter<'o> {
        JsonWriter {
            out,
            style,
            has_element: Vec::with_capacity(8),
            after_key: false,
        }
    }

    /// Starts an object (as a value or array element).
    pub fn begin_object(&mut self) -> &mut Self {
        self.element();
        self.out.push(b'{');
        self.has_element.push(false);
        self
    }

    /// Starts an array (as a value or array element).
    pub fn begin_array(&mut self) -> &mut Self {
        self.element();
        self.out.push(b'[');
        self.has_element.push(false);
        self
    }

    /// Ends the innermost object.
    pub fn end_object(&mut self) -> &mut Self {
        self.has_element.pop();
        self.out.push(b'}');
        self
    }

    /// Ends the innermost array.
    pub fn end_array(&mut self) -> &mut Self {
        self.has_element.pop();
        self.out.push(b']');
        self
    }

    /// Writes an object key; the next call writes its value.
    pub fn key(&mut self, key: &str) -> &mut Self {
        self.separate();
        escape_str(self.out, key);
        self.out.extend_from_slice(match self.style {
            Style::Spaced => b": ",
            Style::Compact => b":",
        });
        self.after_key = true;
        self
    }

    /// Writes a string value.
    pub fn str(&mut self, value: &str) -> &mut Self {
        self.element();
        escape_str(self.out, value);
        self
    }

    /// Writes an integer value.
    pub fn int(&mut self, value: impl itoa::Integer) -> &mut Self {
        self.element();
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    /// Writes a number: integers (within ±2^53) without a fraction, others in shortest form.
    pub fn float(&mut self, value: f64) -> &mut Self {
        self.element();
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if value.fract() == 0.0 && value.abs() < EXACT {
            // Exact: the value is an integer that i64 holds.
            #[allow(clippy::cast_possible_truncation)]
            let int = value as i64;
            self.out
                .extend_from_slice(itoa::Buffer::new().format(int).as_bytes());
        } else if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            self.out.extend_from_slice(b"null");
        }
        self
    }

    /// Writes JSON text as it is (it must be valid JSON).
    pub fn raw(&mut self, json: &str) -> &mut Self {
        self.element();
        self.out.extend_from_slice(json.as_bytes());
        self
    }

    /// `"payloads": [...]`, one per event (`null` for an event without one), unless none of
    /// them has one: a window without payloads looks as it always did.
    pub fn payloads<'p>(
        &mut self,
        payloads: impl Iterator<Item = Option<&'p str>> + Clone,
    ) -> &mut Self {
        if payloads.clone().all(|p| p.is_none()) {
            return self;
        }
        self.key("payloads").begin_array();
        for payload in payloads {
            self.raw(payload.unwrap_or("null"));
        }
        self.end_array()
    }

    /// Writes a timestamp as an RFC 3339 UTC string.
    pub fn timestamp(&mut self, ts: Timestamp) -> &mut Self {
        self.element();
        let _ = write!(self.out, "\"{ts}\"");
        self
    }

    /// Writes an event id as it was given.
    pub fn event_id(&mut self, id: &EventId) -> &mut Self {
        match id {
            EventId::Int(n) => self.int(*n),
            EventId::Text(s) => self.str(s),
            EventId::Number(text) => self.raw(text),
        }
    }

    /// Writes an array of event ids (a window's `ids` or `events`): the loop that dominates a
    /// large window's text, so it writes each separator and id directly, without the per-value
    /// bookkeeping of [`JsonWriter::event_id`].
    pub fn event_ids<'i>(&mut self, ids: impl IntoIterator<Item = &'i EventId>) -> &mut Self {
        self.begin_array();
        let spaced = self.style == Style::Spaced;
        let mut first = true;
        for id in ids {
            if !std::mem::take(&mut first) {
                if spaced {
                    self.out.extend_from_slice(b", ");
                } else {
                    self.out.push(b',');
                }
            }
            match id {
                EventId::Int(n) => self
                    .out
                    .extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
                EventId::Text(s) => escape_str(self.out, s),
                EventId::Number(text) => self.out.extend_from_slice(text.as_bytes()),
            }
        }
        self.end_array()
    }

    /// Writes `"sum", "min", "max"` fields when there is an aggregate.
    pub fn aggregate(&mut self, aggregate: Option<Aggregate>) -> &mut Self {
        if let Some(a) = aggregate {
            self.key("sum").float(a.sum);
            self.key("min").float(a.min);
            self.key("max").float(a.max);
        }
        self
    }

    /// Writes the separator before a value: none right after a key, a comma between elements.
    fn element(&mut self) {
        if !std::mem::take(&mut self.after_key) {
            self.separate();
        }
    }

    /// Writes the separator before an object key or array element.
    fn separate(&mut self) {
        if let Some(has) = self.has_element.last_mut() {
            if *has {
                self.out.extend_from_slice(match self.style {
                    Style::Spaced => b", ",
                    Style::Compact => b",",
                });
            }
            *has = true;
        }
    }
}

/// Appends `value` as a JSON string.
fn escape_str(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    // Most strings (ids, timestamps, keys) need no escape: copy them whole.
    if bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                let _ = write!(out, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_an_array_in_either_style() {
        let ids = [
            EventId::Int(-7),
            EventId::Text("a\"b".into()),
            EventId::Number("1.5e3".into()),
            EventId::Int(12_345_678_901),
        ];
        for (style, want) in [
            (
                Style::Compact,
                r#"{"ids":[-7,"a\"b",1.5e3,12345678901],"n":[]}"#,
            ),
            (
                Style::Spaced,
                r#"{"ids": [-7, "a\"b", 1.5e3, 12345678901], "n": []}"#,
            ),
        ] {
            let mut out = Vec::new();
            let mut w = JsonWriter::new(&mut out, style);
            w.begin_object();
            w.key("ids").event_ids(&ids);
            w.key("n").event_ids(&[]);
            w.end_object();
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}
