//! Splitting a byte stream into request lines, with a length limit. Shared by the stdin reader
//! (blocking) and the TCP connections (async): both feed it what their buffered reader holds.

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line's bytes, without `\n` or `\r\n`.
    Text(Vec<u8>),
    /// A line longer than the limit: its bytes were skipped, not kept.
    TooLong {
        /// Its length in bytes, as far as it was read.
        bytes: usize,
    },
}

/// Assembles lines from chunks, never holding more than `max` bytes of one line.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    line: Vec<u8>,
    /// Bytes seen of a line that went over the limit.
    too_long: Option<usize>,
}

impl LineSplitter {
    /// A splitter for lines of at most `max` bytes.
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter {
            max,
            line: Vec::new(),
            too_long: None,
        }
    }

    /// Takes bytes from `buf` up to and including the first line end. Returns how many bytes it
    /// used and the line, if one ended.
    pub fn feed(&mut self, buf: &[u8]) -> (usize, Option<Line>) {
        let (chunk, ends_line) = match memchr::memchr(b'\n', buf) {
            Some(at) => (&buf[..at], true),
            None => (buf, false),
        };
        let total = self.line.len() + chunk.len();
        // The limit counts the line's content, not its terminator: a `\r` may stand one byte
        // past it, as long as it is the last byte so far (the `\r` of a `\r\n` that is still
        // on its way). A byte after it makes the line too long.
        let last = chunk.last().or(self.line.last());
        let over = total > self.max.saturating_add(1)
            || (total == self.max.saturating_add(1) && last != Some(&b'\r'));
        match &mut self.too_long {
            Some(seen) => *seen += chunk.len(),
            None if over => {
                self.too_long = Some(total);
                self.line = Vec::new();
            }
            None => self.line.extend_from_slice(chunk),
        }
        let used = chunk.len() + usize::from(ends_line);
        (used, ends_line.then(|| self.take()))
    }

    /// Bytes of the unfinished line it holds now.
    pub fn buffered(&self) -> usize {
        self.line.len()
    }

    /// At end of input: the last line if it had no line end.
    pub fn finish(&mut self) -> Option<Line> {
        (self.too_long.is_some() || !self.line.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Line {
        match self.too_long.take() {
            Some(bytes) => Line::TooLong { bytes },
            None => {
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                // The next line is likely as long: one allocation instead of a run of regrowths.
                let hint = self.line.len().min(self.max).min(4 << 20);
                Line::Text(std::mem::replace(&mut self.line, Vec::with_capacity(hint)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<Line> {
        let mut splitter = LineSplitter::new(max);
        let mut lines = Vec::new();
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let (used, line) = splitter.feed(rest);
                lines.extend(line);
                rest = &rest[used..];
            }
        }
        lines.extend(splitter.finish());
        lines
    }

    #[test]
    fn splits_across_chunks_and_strips_line_ends() {
        assert_eq!(
            split(&[b"ab", b"c\r\nde\n", b"\nf"], 10),
            vec![
                Line::Text(b"abc".to_vec()),
                Line::Text(b"de".to_vec()),
                Line::Text(Vec::new()),
                Line::Text(b"f".to_vec()),
            ]
        );
    }

    #[test]
    fn the_cr_of_crlf_does_not_count_toward_the_limit() {
        // Five bytes of content then `\r\n`, in one chunk or with the `\r` and `\n` apart.
        assert_eq!(
            split(&[b"01234\r\n"], 5),
            vec![Line::Text(b"01234".to_vec())]
        );
        assert_eq!(
            split(&[b"01234\r", b"\nab\n"], 5),
            vec![Line::Text(b"01234".to_vec()), Line::Text(b"ab".to_vec())]
        );
        // A `\r` inside the line is content: six bytes are too many.
        assert_eq!(
            split(&[b"01234\r", b"x\n"], 5),
            vec![Line::TooLong { bytes: 7 }]
        );
        assert_eq!(split(&[b"012345\r\n"], 5), vec![Line::TooLong { bytes: 7 }]);
        assert_eq!(split(&[b"012345\n"], 5), vec![Line::TooLong { bytes: 6 }]);
    }

    #[test]
    fn a_long_line_is_skipped_and_reported_with_its_length() {
        assert_eq!(
            split(&[b"0123", b"456789\nok\n0123456"], 5),
            vec![
                Line::TooLong { bytes: 10 },
                Line::Text(b"ok".to_vec()),
                Line::TooLong { bytes: 7 },
            ]
        );
    }
}
