//! A small JSON writer that produces the protocol's exact text style.
//!
//! The published samples separate with `", "` and `": "`; `--compact` drops the spaces. Keys
//! are written in the order the protocol lists them, so messages are assembled by hand here
//! rather than by serde (see `reply` for the messages themselves).

use std::io::Write;

use window_core::{Aggregate, EventId, Timestamp, WindowId};

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
    has_element: Nesting,
    /// A key was just written: the next value follows it without a separator.
    after_key: bool,
}

impl<'o> JsonWriter<'o> {
    /// A writer appending to `out`.
    pub fn new(out: &'o mut Vec<u8>, style: Style) -> JsonWriter<'o> {
        JsonWriter {
            out,
            style,
            has_element: Nesting::default(),
            after_key: false,
        }
    }

    /// Starts an object (as a value or array element).
    pub fn begin_object(&mut self) -> &mut Self {
        self.element();
        self.out.push(b'{');
        self.has_element.push();
        self
    }

    /// Starts an array (as a value or array element).
    pub fn begin_array(&mut self) -> &mut Self {
        self.element();
        self.out.push(b'[');
        self.has_element.push();
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

    /// Writes a timestamp as an RFC 3339 UTC string (as its `Display` writes it).
    pub fn timestamp(&mut self, ts: Timestamp) -> &mut Self {
        self.element();
        match ts.rfc3339() {
            Some(text) => {
                self.out.push(b'"');
                self.out.extend_from_slice(text.as_bytes());
                self.out.push(b'"');
            }
            None => {
                let _ = write!(self.out, "\"{ts}\"");
            }
        }
        self
    }

    /// Writes a window id as a string, as its `Display` writes it (`window-<n>`).
    pub fn window_id(&mut self, id: WindowId) -> &mut Self {
        self.element();
        self.out.push(b'"');
        self.out.extend_from_slice(WindowId::PREFIX.as_bytes());
        self.out
            .extend_from_slice(itoa::Buffer::new().format(id.0).as_bytes());
        self.out.push(b'"');
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
        if self.has_element.mark() == Some(true) {
            self.out.extend_from_slice(match self.style {
                Style::Spaced => b", ",
                Style::Compact => b",",
            });
        }
    }
}

/// Whether each open object or array holds an element yet: a stack of flags, without an
/// allocation for the first [`IN_BITS`] levels (every message the node writes nests a few deep).
#[derive(Debug, Default)]
struct Nesting {
    /// Bit `i`: level `i + 1` (from the outermost) holds an element; bits at or above `depth`
    /// mean nothing (a push clears its own).
    bits: u64,
    /// Levels open.
    depth: usize,
    /// The flags of the levels past [`IN_BITS`]: `depth.saturating_sub(IN_BITS)` of them.
    deeper: Vec<bool>,
}

/// Levels whose flags are bits of [`Nesting::bits`].
const IN_BITS: usize = u64::BITS as usize;

impl Nesting {
    /// A level opens, without an element.
    fn push(&mut self) {
        if self.depth < IN_BITS {
            self.bits &= !(1 << self.depth);
        } else {
            self.deeper.push(false);
        }
        self.depth += 1;
    }

    /// The innermost level closes (none open: nothing happens).
    fn pop(&mut self) {
        if self.depth > IN_BITS {
            self.deeper.pop();
        }
        self.depth = self.depth.saturating_sub(1);
    }

    /// Marks the innermost level as holding an element; whether it held one before. Outside
    /// any object or array: `None`.
    fn mark(&mut self) -> Option<bool> {
        match self.depth {
            0 => None,
            d if d <= IN_BITS => {
                let bit = 1 << (d - 1);
                let had = self.bits & bit != 0;
                self.bits |= bit;
                Some(had)
            }
            _ => self
                .deeper
                .last_mut()
                .map(|has| std::mem::replace(has, true)),
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
    fn nesting_is_a_stack_of_flags_at_any_depth() {
        // The bits and the overflow list against a plain stack, through a fixed walk that goes
        // past the bits' 64 levels and back several times, opens siblings at every depth (a
        // reused level must start without an element), marks levels and pops below zero.
        let mut nesting = Nesting::default();
        let mut model: Vec<bool> = Vec::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut deepest = 0;
        for step in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Phases of 2500 steps that drift down, then up.
            let pushes = if (step / 2_500) % 2 == 0 { 3 } else { 1 };
            match rng % 6 {
                r if r < pushes => {
                    nesting.push();
                    model.push(false);
                }
                3 | 4 => {
                    nesting.pop();
                    model.pop();
                }
                _ => {
                    let want = model.last_mut().map(|has| std::mem::replace(has, true));
                    assert_eq!(nesting.mark(), want, "step {step}, depth {}", model.len());
                }
            }
            assert_eq!(nesting.depth, model.len());
            deepest = deepest.max(model.len());
        }
        assert!(deepest > IN_BITS + 10, "the walk went {deepest} deep");
    }

    #[test]
    fn commas_are_right_at_any_depth() {
        // Nested arrays, each with an element before and after its child: the separators
        // past the 64 levels the bits hold as well as within them.
        for depth in [1usize, 3, 63, 64, 65, 70] {
            let mut out = Vec::new();
            let mut w = JsonWriter::new(&mut out, Style::Compact);
            for _ in 0..depth {
                w.begin_array().int(1);
            }
            for _ in 0..depth {
                w.end_array().int(2);
            }
            let text = String::from_utf8(out).unwrap();
            // `[1,[1,[1]` ... `,2],2` then the last `,2` after the outermost array (outside
            // any container, a value gets no separator).
            let want = format!("{}[1]{}2", "[1,".repeat(depth - 1), ",2]".repeat(depth - 1));
            assert_eq!(text, want, "{depth}");
        }
    }

    #[test]
    fn timestamps_and_window_ids_read_as_their_display() {
        for ms in [
            0,
            -1,
            1_705_312_800_250,
            253_402_300_799_999,
            253_402_300_800_000,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            let mut w = JsonWriter::new(&mut out, Style::Spaced);
            w.begin_object();
            w.key("t").timestamp(Timestamp::from_millis(ms));
            w.key("id").window_id(WindowId(ms));
            w.end_object();
            let ts = Timestamp::from_millis(ms);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!(r#"{{"t": "{ts}", "id": "{}"}}"#, WindowId(ms))
            );
        }
    }

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
