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
    loop {
        let (found, end) = object(text, i, names, |_, _| None)?;
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
    mut i: usize,
    names: [&str; N],
    mut nested: impl FnMut(usize, usize) -> Option<usize>,
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
        for (slot, name) in found.iter_mut().zip(names) {
            if same(name.as_bytes(), key) {
                // serde's derived readers refuse a repeated field; the pipe's picker keeps the
                // last. Either way it is theirs to decide.
                if slot.is_some() {
                    return None;
                }
                *slot = Some(&text[i..value_end]);
            }
        }
        i = skip_space(b, value_end);
        match b.get(i) {
            Some(b',') => i = skip_space(b, i + 1),
            Some(b'}') => return Some((found, i + 1)),
            _ => return None,
        }
    }
}

/// Whether two short texts (keys) are equal, compared here rather than by a call to `memcmp`.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
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
    b.get(i..i + literal.len())
        .filter(|&text| text == literal)
        .map(|_| i + literal.len())
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
