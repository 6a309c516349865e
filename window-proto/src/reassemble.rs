//! Requests that span several lines.
//!
//! The protocol is one JSON object per line, but people paste pretty-printed requests (the
//! published exercise shows its inputs that way). A line that opens a JSON value without closing
//! it, and ends the way pretty-printers end a line (`{`, `[`, `,` or `:`), starts a multi-line
//! request: the following lines are joined to it until its brackets balance. A line that starts
//! with `{"` is never a continuation (pretty-printers put a newline after `{`), so a truncated
//! request cannot swallow the well-formed requests after it: it is answered as malformed and the
//! new line is read afresh.

/// What to answer next.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembled {
    /// A whole request.
    Request(String),
    /// An unfinished multi-line request that had to be given up (answered as malformed).
    Unfinished(String),
}

/// Joins the lines of multi-line requests.
#[derive(Debug, Default)]
pub struct Reassembler {
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    text: String,
    scan: Scan,
}

impl Reassembler {
    /// Takes one line; returns the requests it completes, in order (zero, one or two).
    pub fn push(&mut self, line: &str, max_bytes: usize) -> Vec<Assembled> {
        let mut out = Vec::new();
        if let Some(mut pending) = self.pending.take() {
            if line.trim_start().starts_with("{\"") {
                out.push(Assembled::Unfinished(pending.text));
            } else if pending.text.len() + line.len() + 1 > max_bytes {
                out.push(Assembled::Unfinished(pending.text));
                return out;
            } else {
                pending.text.push('\n');
                pending.text.push_str(line);
                pending.scan.feed(line);
                if pending.scan.depth <= 0 {
                    out.push(Assembled::Request(pending.text));
                } else {
                    self.pending = Some(pending);
                }
                return out;
            }
        }
        let trimmed = line.trim_end();
        // The common case, a whole request on one line, skips the scan.
        let opens = trimmed.ends_with(['{', '[', ',', ':']);
        if opens {
            let mut scan = Scan::default();
            scan.feed(line);
            if scan.depth > 0 {
                self.pending = Some(Pending {
                    text: line.to_owned(),
                    scan,
                });
                return out;
            }
        }
        out.push(Assembled::Request(line.to_owned()));
        out
    }

    /// At end of input: an unfinished request, if one is pending.
    pub fn finish(&mut self) -> Option<Assembled> {
        self.pending.take().map(|p| Assembled::Unfinished(p.text))
    }

    /// True while a multi-line request is being joined.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// Bracket depth outside strings.
#[derive(Debug, Default)]
struct Scan {
    depth: i64,
    in_string: bool,
    escaped: bool,
}

impl Scan {
    fn feed(&mut self, text: &str) {
        for b in text.bytes() {
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => self.depth -= 1,
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&str]) -> Vec<Assembled> {
        let mut r = Reassembler::default();
        let mut out = Vec::new();
        for line in lines {
            out.extend(r.push(line, 1 << 20));
        }
        out.extend(r.finish());
        out
    }

    #[test]
    fn one_line_requests_pass_through() {
        assert_eq!(
            run(&[r#"{"type": "flush"}"#, "garbage", r#"{"type": "assign""#]),
            vec![
                Assembled::Request(r#"{"type": "flush"}"#.into()),
                Assembled::Request("garbage".into()),
                Assembled::Request(r#"{"type": "assign""#.into()),
            ]
        );
    }

    #[test]
    fn pretty_printed_requests_are_joined() {
        let lines = [
            "{",
            r#"  "type": "assign","#,
            r#"  "events": ["#,
            "    {",
            r#"      "id": 1, "timestamp": "}]{[\"x""#,
            "    }",
            "  ]",
            "}",
            r#"{"type": "flush"}"#,
        ];
        let out = run(&lines);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Assembled::Request(lines[..8].join("\n")));
        assert_eq!(out[1], Assembled::Request(r#"{"type": "flush"}"#.into()));
    }

    #[test]
    fn a_truncated_request_does_not_swallow_the_next() {
        let out = run(&[r#"{"type": "assign","#, r#"{"type": "flush"}"#, "{"]);
        assert_eq!(
            out,
            vec![
                Assembled::Unfinished(r#"{"type": "assign","#.into()),
                Assembled::Request(r#"{"type": "flush"}"#.into()),
                Assembled::Unfinished("{".into()),
            ]
        );
    }

    #[test]
    fn a_multi_line_request_over_the_limit_is_given_up() {
        let mut r = Reassembler::default();
        assert!(r.push("{", 10).is_empty());
        assert_eq!(
            r.push("\"a\": \"0123456789\"", 10),
            vec![Assembled::Unfinished("{".into())]
        );
        assert!(!r.is_pending());
    }
}
