//! The fast path of reading JSON objects: a flat object (its values numbers, strings, `true`,
//! `false` or `null`; no escape in its keys and strings) scanned in one pass without a parser.
//! Anything else (nesting, escapes, control characters, a wanted name given twice, anything that
//! is not valid JSON) returns `None`, and the caller's serde_json path decides, so this path only
//! ever accepts valid JSON, and gives the same raw value texts as serde_json's `RawValue`.
//!
//! Used for bare request lines and their `events` (`window_proto::request`), and the lines of
//! `window-node aggregate`.

/// The raw JSON text of the values of the top-level `names` in `line`, or `None` when the line
/// is not one flat object this scanner reads (or gives a wanted name twice).
pub fn pick<'a, const N: usize>(line: &'a str, names: [&str; N]) -> Option<[Option<&'a str>; N]> {
    let b = line.as_bytes();
    let (found, end) = object(line, skip_space(b, 0), names, |_, _| None)?;
    (skip_space(b, end) == b.len()).then_some(found)
}

/// [`pick`], where the value of `names[array]` may instead be an array of flat objects, read as
/// [`objects`] reads one with `element_names` (a request and its `events`). Also gives the
/// array's elements when it was one.
#[allow(clippy::type_complexity)]
pub fn pick_with_array<'a, const N: usize, const M: usize>(
    line: &'a str,
    names: [&str; N],
    array: usize,
    element_names: [&str; M],
) -> Option<([Option<&'a str>; N], Option<Vec<[Option<&'a str>; M]>>)> {
    let b = line.as_bytes();
    let mut elements = None;
    let (found, end) = object(line, skip_space(b, 0), names, |slot, i| {
        if slot != array {
            return None;
        }
        let (list, end) = array_at(line, i, element_names)?;
        elements = Some(list);
        Some(end)
    })?;
    (skip_space(b, end) == b.len()).then_some((found, elements))
}

/// The elements of `array`, a JSON array of flat objects, as [`pick`] reads each; `None` when
/// it is anything else.
pub fn objects<'a, const N: usize>(
    array: &'a str,
    names: [&str; N],
) -> Option<Vec<[Option<&'a str>; N]>> {
    let b = array.as_bytes();
    let (elements, end) = array_at(array, skip_space(b, 0), names)?;
    (skip_space(b, end) == b.len()).then_some(elements)
}

/// An array of flat objects starting at `text[i]`: their wanted values and the index after its
/// `]`.
#[allow(clippy::type_complexity)]
fn array_at<'a, const N: usize>(
    text: &'a str,
    mut i: usize,
    names: [&str; N],
) -> Option<(Vec<[Option<&'a str>; N]>, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'[') {
        return None;
    }
    // Room for elements of 32 bytes or more (a list that grows copies itself), up to a bound:
    // the text after the array may be long.
    let mut elements = Vec::with_capacity(((b.len() - i) / 32).min(1 << 16));
    i = skip_space(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Some((elements, i + 1));
    }
    // The elements of one array are usually written alike: from the third on, each is read by
    // the layout learned from the second (an array of one element learns nothing).
    let mut shapes = Shapes::new(names);
    loop {
        let (found, end) = if elements.is_empty() {
            object(text, i, names, |_, _| None)?
        } else {
            shapes.object(text, i)?
        };
        elements.push(found);
        i = skip_space(b, end);
        match b.get(i) {
            Some(b',') => i = skip_space(b, i + 1),
            Some(b']') => return Some((elements, i + 1)),
            _ => return None,
        }
    }
}

/// One flat object starting at `text[i]`: the wanted values and the index after its `}`. A
/// wanted member whose value is not a scalar goes to `nested` (its name's index, where its
/// value starts), which gives where the value ends, or `None`.
fn object<'a, const N: usize>(
    text: &'a str,
    i: usize,
    names: [&str; N],
    nested: impl FnMut(usize, usize) -> Option<usize>,
) -> Option<([Option<&'a str>; N], usize)> {
    object_seen(text, i, names, nested, |_, _, _| {})
}

/// [`object`], telling `seen` where each member's value starts and ends and which wanted name
/// it is (what [`Shape::learn`] records).
fn object_seen<'a, const N: usize>(
    text: &'a str,
    mut i: usize,
    names: [&str; N],
    mut nested: impl FnMut(usize, usize) -> Option<usize>,
    mut seen: impl FnMut(usize, usize, Option<usize>),
) -> Option<([Option<&'a str>; N], usize)> {
    let b = text.as_bytes();
    let mut found = [None; N];
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_space(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some((found, i + 1));
    }
    loop {
        let key_end = string_end(b, i)?;
        let key = &b[i + 1..key_end - 1];
        i = skip_space(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_space(b, i + 1);
        let value_end = match scalar_end(b, i) {
            Some(end) => end,
            None => nested(names.iter().position(|n| same(n.as_bytes(), key))?, i)?,
        };
        let mut wanted = None;
        for (n, (slot, name)) in found.iter_mut().zip(names).enumerate() {
            if same(name.as_bytes(), key) {
                // serde's derived readers refuse a repeated field; the pipe's picker keeps the
                // last. Either way it is theirs to decide.
                if slot.is_some() {
                    return None;
                }
                *slot = Some(&text[i..value_end]);
                wanted = Some(n);
            }
        }
        seen(i, value_end, wanted);
        i = skip_space(b, value_end);
        match b.get(i) {
            Some(b',') => i = skip_space(b, i + 1),
            Some(b'}') => return Some((found, i + 1)),
            _ => return None,
        }
    }
}

/// The layout of one flat object, learned from an object [`pick`] read: the bytes between its
/// members' values (the braces, the names, the colons, the commas, the whitespace) and which
/// wanted name each value is. Lines written by one program share a layout, so the next object
/// is read by comparing those bytes and scanning only the values.
///
/// Why it reads what [`object`] reads: an object that matches is the learned one with each
/// scalar value replaced by another scalar. Every byte between the values is the learned
/// object's, and each learned value was followed by whitespace, `,` or `}`, where a scalar's
/// scan stops; so the object is valid JSON with the same names in the same places (none given
/// twice), and each wanted value is the one [`object`] gives. Anything else (another layout, an
/// escape, a nested value) is `None`, and the caller reads the object the general way.
#[derive(Clone, Debug)]
pub struct Shape<const N: usize> {
    /// The bytes around the values: `literal(0)` before the first, `literal(k)` after value
    /// `k - 1`; the last ends with the object's `}`.
    bytes: Vec<u8>,
    /// Where each literal ends in `bytes`: one more than `slots`, so never empty.
    ends: Vec<usize>,
    /// For each member's value in order, the wanted name it is, if any.
    slots: Vec<Option<usize>>,
}

/// What learning a layout read: the wanted values and the index after the object.
type Learned<'a, const N: usize> = ([Option<&'a str>; N], usize);

impl<const N: usize> Shape<N> {
    /// Learns the layout of the flat object at `text[i]` (the object alone), or `None` when
    /// [`object`] does not read it (or `names` gives one name twice, which one slot could not
    /// fill).
    pub fn object(text: &str, i: usize, names: [&str; N]) -> Option<Shape<N>> {
        Shape::learn(text, i, names, false).map(|(shape, _)| shape)
    }

    /// Learns the layout of `line`, one flat object with the whitespace around it, or `None`
    /// when [`pick`] does not read it.
    pub fn line(line: &str, names: [&str; N]) -> Option<Shape<N>> {
        Shape::learn(line, 0, names, true).map(|(shape, _)| shape)
    }

    /// From `text[start]` (whitespace, then the object), to the end of `text` when `line`: the
    /// layout and what the scan read, or `None` when the scan reads nothing (the values and
    /// end may still be read then: when `names` repeats a name, `None` says only "no layout").
    fn learn<'a>(
        text: &'a str,
        start: usize,
        names: [&str; N],
        line: bool,
    ) -> Option<(Shape<N>, Learned<'a, N>)> {
        if (1..N).any(|n| names[..n].contains(&names[n])) {
            return None;
        }
        let b = text.as_bytes();
        let mut shape = Shape {
            bytes: Vec::new(),
            ends: Vec::new(),
            slots: Vec::new(),
        };
        let mut from = start;
        let i = if line { skip_space(b, start) } else { start };
        let (found, mut end) = object_seen(
            text,
            i,
            names,
            |_, _| None,
            |value_start, value_end, wanted| {
                shape.bytes.extend_from_slice(&b[from..value_start]);
                shape.ends.push(shape.bytes.len());
                shape.slots.push(wanted);
                from = value_end;
            },
        )?;
        if line {
            end = skip_space(b, end);
            if end != b.len() {
                return None;
            }
        }
        shape.bytes.extend_from_slice(&b[from..end]);
        shape.ends.push(shape.bytes.len());
        Some((shape, (found, end)))
    }

    fn literal(&self, k: usize) -> &[u8] {
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        &self.bytes[start..self.ends[k]]
    }

    /// The wanted values of the object at `text[i]` and the index after its `}`, when it has
    /// this layout (learned by [`Shape::object`]).
    pub fn read<'a>(&self, text: &'a str, mut i: usize) -> Option<Learned<'a, N>> {
        let b = text.as_bytes();
        let mut found = [None; N];
        for (k, slot) in self.slots.iter().enumerate() {
            i = literal_end(b, i, self.literal(k))?;
            let end = scalar_end(b, i)?;
            if let Some(n) = *slot {
                found[n] = Some(&text[i..end]);
            }
            i = end;
        }
        Some((found, literal_end(b, i, self.literal(self.slots.len()))?))
    }

    /// The wanted values of `line` when it has this layout (learned by [`Shape::line`]).
    pub fn pick<'a>(&self, line: &'a str) -> Option<[Option<&'a str>; N]> {
        self.read(line, 0)
            .and_then(|(found, end)| (end == line.len()).then_some(found))
    }
}

/// Reads objects most of which share a layout, each for the same `names`: by the last
/// [`Shape`] learned while it matches; one that does not by the general scan, which learns its
/// layout on the way, but after a miss of a layout just learned only at the 2nd, 4th, 8th, ...
/// 1024th miss, and then at every 1024th (so input where no layout lasts costs few lessons).
#[derive(Clone, Debug)]
pub struct Shapes<'n, const N: usize> {
    names: [&'n str; N],
    shape: Option<Shape<N>>,
    /// Misses since the last lesson, and how many to wait for before the next.
    misses: u32,
    wait: u32,
}

impl<'n, const N: usize> Shapes<'n, N> {
    /// Reads the values of `names`, no layout learned yet.
    pub fn new(names: [&'n str; N]) -> Shapes<'n, N> {
        Shapes {
            names,
            shape: None,
            misses: 0,
            wait: 0,
        }
    }

    /// [`pick`] of `line`.
    pub fn pick<'a>(&mut self, line: &'a str) -> Option<[Option<&'a str>; N]> {
        if let Some(found) = self.shape.as_ref().and_then(|s| s.pick(line)) {
            self.hit();
            return Some(found);
        }
        if self.due()
            && let Some((shape, (found, _))) = Shape::learn(line, 0, self.names, true)
        {
            self.shape = Some(shape);
            return Some(found);
        }
        pick(line, self.names)
    }

    /// [`object`] at `text[i]` (no member nested).
    pub fn object<'a>(&mut self, text: &'a str, i: usize) -> Option<Learned<'a, N>> {
        if let Some(read) = self.shape.as_ref().and_then(|s| s.read(text, i)) {
            self.hit();
            return Some(read);
        }
        if self.due()
            && let Some((shape, read)) = Shape::learn(text, i, self.names, false)
        {
            self.shape = Some(shape);
            return Some(read);
        }
        object(text, i, self.names, |_, _| None)
    }

    fn hit(&mut self) {
        self.misses = 0;
        self.wait = 0;
    }

    /// Counts a miss; whether to learn from it.
    fn due(&mut self) -> bool {
        self.misses += 1;
        if self.misses < self.wait {
            return false;
        }
        self.misses = 0;
        self.wait = (self.wait * 2).clamp(1, 1024);
        true
    }
}

/// Whether two short texts (keys, a [`Shape`]'s literals) are equal, compared here eight bytes
/// at a time rather than by a call to `memcmp`.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a, mut b) = (a, b);
    while let (Some((x, rest_a)), Some((y, rest_b))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        if x != y {
            return false;
        }
        (a, b) = (rest_a, rest_b);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index after a string starting at `i` that has no escape and no control character.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let stop = string_stop(b, i + 1);
    (b.get(stop) == Some(&b'"')).then_some(stop + 1)
}

/// The content of `text` when it is one JSON string with no escape and no control character.
pub fn plain_string(text: &str) -> Option<&str> {
    (text.len() >= 2 && string_end(text.as_bytes(), 0) == Some(text.len()))
        .then(|| &text[1..text.len() - 1])
}

/// The index of the first `"`, `\` or control character at or after `i`, or `b.len()`. Eight
/// bytes at a time: the strings of events are short, so one pass without a call beats a
/// vectorised search for the quote followed by a second pass for escapes.
fn string_stop(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while let Some(word) = b.get(i..i + 8) {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_le_bytes(bytes);
        let quote = w ^ (ONES * u64::from(b'"'));
        let slash = w ^ (ONES * u64::from(b'\\'));
        // A byte's high bit marks it: zero after the xor (a quote, a backslash) or below 0x20.
        // A borrow can mark a byte above one truly marked, never below it, so the lowest mark
        // is exact.
        let marks = ((quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGHS;
        if marks != 0 {
            return i + (marks.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while b
        .get(i)
        .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
    {
        i += 1;
    }
    i.min(b.len())
}

/// The index after a string (as [`string_end`]), a number, `true`, `false` or `null` at `i`.
fn scalar_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'-' | b'0'..=b'9' => number_end(b, i),
        b't' => literal_end(b, i, b"true"),
        b'f' => literal_end(b, i, b"false"),
        b'n' => literal_end(b, i, b"null"),
        _ => None,
    }
}

fn literal_end(b: &[u8], i: usize, literal: &[u8]) -> Option<usize> {
    let end = i.checked_add(literal.len())?;
    b.get(i..end)
        .filter(|&text| same(text, literal))
        .map(|_| end)
}

/// A JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], i: usize| {
        let n = b[i.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        (n > 0).then_some(i + n)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i) {
        Some(b'0') => i + 1,
        Some(b'1'..=b'9') => digits(b, i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 4] = ["id", "timestamp", "key", "value"];

    #[test]
    fn reads_flat_objects() {
        let line = r#" { "id" : -1.5e+3, "timestamp":"2024-01-15T10:00:10Z","key":null,"x":true,"value":0, "x": 7 } "#;
        assert_eq!(
            pick(line, NAMES),
            Some([
                Some("-1.5e+3"),
                Some("\"2024-01-15T10:00:10Z\""),
                Some("null"),
                Some("0")
            ])
        );
        assert_eq!(pick("{}", NAMES), Some([None; 4]));
        assert_eq!(
            pick(r#"{"é": "ü", "id": "ß"}"#, NAMES),
            Some([Some("\"ß\""), None, None, None])
        );
    }

    #[test]
    fn finds_the_first_quote_escape_or_control_character_at_any_offset() {
        for len in 0..40 {
            for stop in [b'"', b'\\', b'\n', 0x1f] {
                for at in 0..=len {
                    let mut text = vec![b'a'; len];
                    // Bytes around 0x20 and above 0x80 are not stops.
                    for (i, c) in text.iter_mut().enumerate() {
                        *c = [b'a', b' ', 0x7f, 0x80, 0xff, b'!', b'#', b'['][i % 8];
                    }
                    if at < len {
                        text[at] = stop;
                        // A second stop after the first changes nothing.
                        if at + 1 < len {
                            text[at + 1] = b'"';
                        }
                    }
                    assert_eq!(string_stop(&text, 0), at, "{len} {stop} {at}");
                }
            }
        }
        assert_eq!(plain_string(r#""abc""#), Some("abc"));
        assert_eq!(plain_string(r#""""#), Some(""));
        for text in [r#""a\"b""#, r#""ab"#, r#""a"b""#, "\"a\tb\"", "\"", ""] {
            assert_eq!(plain_string(text), None, "{text}");
        }
    }

    #[test]
    fn reads_arrays_of_flat_objects() {
        let names = ["id", "payload"];
        assert_eq!(
            objects(r#" [ {"id": 1}, {"payload": "a", "x": null} ,{} ] "#, names),
            Some(vec![[Some("1"), None], [None, Some("\"a\"")], [None, None]])
        );
        assert_eq!(objects(" [ ] ", names), Some(vec![]));
        for array in [
            "",
            "[",
            "[{}",
            "[{},]",
            "[{}] x",
            "{}",
            "[1]",
            r#"[{"payload": {"a": 1}}]"#,
            r#"[{"id": 1} {"id": 2}]"#,
        ] {
            assert_eq!(objects(array, names), None, "{array}");
        }
    }

    #[test]
    fn reads_an_object_with_one_array_of_flat_objects() {
        let names = ["type", "events", "n"];
        let line = r#"{"type": "x", "events": [{"id": 1}, {"id": "b"}], "n": 2}"#;
        assert_eq!(
            pick_with_array(line, names, 1, ["id"]),
            Some((
                [
                    Some("\"x\""),
                    Some(r#"[{"id": 1}, {"id": "b"}]"#),
                    Some("2")
                ],
                Some(vec![[Some("1")], [Some("\"b\"")]])
            ))
        );
        assert_eq!(
            pick_with_array(r#"{"events": 5}"#, names, 1, ["id"]),
            Some(([None, Some("5"), None], None))
        );
        for line in [
            r#"{"n": [1]}"#,
            r#"{"events": [1]}"#,
            r#"{"events": [{"id": [1]}]}"#,
            r#"{"events": [], "events": []}"#,
            r#"{"x": [{"id": 1}]}"#,
        ] {
            assert_eq!(pick_with_array(line, names, 1, ["id"]), None, "{line}");
        }
    }

    /// Member texts for the layout tests: names (the wanted ones, as [`NAMES`], then two
    /// others), scalar values of every kind and a few a line may not hold here (escapes,
    /// nesting, bad numbers).
    const KEYS: [&str; 6] = ["id", "timestamp", "key", "value", "x", "é"];
    const VALUES: [&str; 16] = [
        "7",
        "-0.5e+3",
        "\"a\"",
        "\"2024-01-15T10:00:10Z\"",
        "true",
        "false",
        "null",
        "\"\"",
        "12345678901234567890",
        "\"ü ß\"",
        "\"a\\\"b\"",
        "{\"y\": 1}",
        "[1]",
        "01",
        "1.",
        "tru",
    ];
    const SPACES: [&str; 3] = ["", " ", "\t "];
    /// What an edit inserts: structure, number parts, an escape, a raw line break, non-ASCII.
    const EDITS: [&str; 11] = ["\"", ",", " ", "}", "1", "x", ".", "e", "\\", "\n", "é"];

    /// A line of members `(key, value, space)` from the tables above.
    fn line_of(members: &[(usize, usize, usize)], around: usize) -> String {
        let body: Vec<String> = members
            .iter()
            .map(|&(k, v, w)| {
                format!(
                    "{}\"{}\"{}:{}{}",
                    SPACES[w], KEYS[k], SPACES[w], SPACES[w], VALUES[v]
                )
            })
            .collect();
        format!("{0}{{{1}}}{0}", SPACES[around], body.join(","))
    }

    proptest::proptest! {
        /// A layout learned from one line reads another line only when the general scan reads
        /// it the same way, and always reads a line of the same layout with other scalars.
        #[test]
        fn a_layout_reads_what_the_scan_reads(
            members in proptest::collection::vec((0..KEYS.len(), 0..10usize, 0..SPACES.len()), 0..6),
            others in proptest::collection::vec(0..VALUES.len(), 6),
            around in 0..SPACES.len(),
            edit in proptest::option::of((proptest::arbitrary::any::<proptest::sample::Index>(), 0..EDITS.len(), proptest::bool::ANY)),
        ) {
            let learned = line_of(&members, around);
            let Some(shape) = Shape::line(&learned, NAMES) else {
                // Only what the scan reads is learned.
                proptest::prop_assert_eq!(pick(&learned, NAMES), None, "{}", learned);
                return Ok(());
            };
            proptest::prop_assert_eq!(shape.pick(&learned), pick(&learned, NAMES));
            let swapped: Vec<_> = members
                .iter()
                .zip(&others)
                .map(|(&(k, _, w), &v)| (k, v, w))
                .collect();
            let mut line = line_of(&swapped, around);
            // An inserted or replaced character anywhere: in a value, a name, the spaces.
            if let Some((at, token, replace)) = &edit {
                let at = at.index(line.len() + 1);
                let at = (0..=at).rev().find(|&i| line.is_char_boundary(i)).unwrap_or(0);
                if *replace && let Some(c) = line[at..].chars().next() {
                    line.replace_range(at..at + c.len_utf8(), "");
                }
                line.insert_str(at, EDITS[*token]);
            }
            let read = shape.pick(&line);
            if read.is_some() {
                proptest::prop_assert_eq!(read, pick(&line, NAMES), "{} learned from {}", line, learned);
            }
            // Same layout, scalars only: read by the layout.
            if edit.is_none() && swapped.iter().all(|m| m.1 < 10) {
                proptest::prop_assert!(read.is_some(), "{} learned from {}", line, learned);
            }
            // Shapes, over any sequence of lines, gives what the scan gives.
            let mut shapes = Shapes::new(NAMES);
            for text in [&learned, &line, &learned, &line, &line] {
                proptest::prop_assert_eq!(shapes.pick(text), pick(text, NAMES), "{}", text);
            }
        }
    }

    #[test]
    fn a_layout_is_learned_again_less_often_while_none_lasts() {
        let names = ["id"];
        let lines: Vec<String> = (0..64)
            .map(|n| format!("{{\"id\": 1{}}}", " ".repeat(n)))
            .collect();
        let mut shapes = Shapes::new(names);
        let mut lessons = Vec::new();
        for (n, line) in lines.iter().enumerate() {
            let before = shapes.shape.as_ref().map(|s| s.bytes.clone());
            assert_eq!(shapes.pick(line), Some([Some("1")]));
            if shapes.shape.as_ref().map(|s| s.bytes.clone()) != before {
                lessons.push(n + 1);
            }
        }
        // 64 lines that all differ: learned at misses 1, 2, 4, 8, 16, 32 and 64.
        assert_eq!(lessons, [1, 2, 4, 8, 16, 32, 64]);
        // A line of the last layout is read by it, and the next miss is learned at once.
        let last = shapes.shape.clone().expect("a layout");
        let same = lines
            .iter()
            .find(|l| last.pick(l).is_some())
            .expect("a line of it");
        assert_eq!(shapes.pick(same), Some([Some("1")]));
        assert_eq!(shapes.pick("{\"id\":2}"), Some([Some("2")]));
        assert_eq!(
            shapes.shape.expect("learned").pick("{\"id\":3}"),
            Some([Some("3")])
        );
    }

    #[test]
    fn a_layout_needs_distinct_names_and_scalar_values() {
        assert!(Shape::line(r#"{"id": 1}"#, ["id", "id"]).is_none());
        assert!(Shape::line(r#"{"id": {"a": 1}}"#, ["id"]).is_none());
        let shape = Shape::object(r#"[{"id": 1}, {"id": 2}]"#, 1, ["id"]).expect("learned");
        assert_eq!(
            shape.read(r#"[{"id": 1}, {"id": 22}]"#, 12),
            Some(([Some("22")], 22))
        );
        assert_eq!(shape.read(r#"[{"id": 1}, {"id": "a\"b"}]"#, 12), None);
    }

    #[test]
    fn leaves_everything_else_to_the_parser() {
        for line in [
            r#"{"id": "a\"b"}"#,
            r#"{"id": {"x": 1}}"#,
            r#"{"id": [1]}"#,
            r#"{"id": 01}"#,
            r#"{"id": 1.}"#,
            r#"{"id": -}"#,
            r#"{"id": 1e}"#,
            r#"{"id": +1}"#,
            r#"{"id": tru}"#,
            r#"{"id": 1,}"#,
            r#"{"id": 1} x"#,
            r#"{"id" 1}"#,
            r#"{id: 1}"#,
            "{\"id\": \"a\tb\"}",
            r#"{"id": 1"#,
            r#"{"id": 1, "id": 2}"#,
            "[1]",
            "",
        ] {
            assert_eq!(pick(line, NAMES), None, "{line}");
        }
    }
}
