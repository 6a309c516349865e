//! Reading the input: files (or stdin) in large blocks, split into lines without copying, parsed
//! on several threads into chunks of events that come back in input order.
//!
//! NDJSON: one reader thread cuts each input into blocks of whole lines and deals them round
//! robin to the parsing threads; the caller takes the parsed chunks back round robin, so the
//! order is the input's while the parsers run ahead (each by at most [`AHEAD`] chunks). CSV: one
//! thread reads records with the `csv` crate (a quoted cell may hold a line break, so blocks
//! cannot be cut at any newline) while the caller consumes the chunks before.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use window_core::{DateMemo, EventId, Timestamp, WindowBounds, WindowSpec};

use crate::aggregate::error::{Error, LineError};
use crate::aggregate::fields::{self, Fields, JsonPicker, Picked, Raw};
use crate::aggregate::role::Role;

/// Chunks a parsing thread may hold ready before the consumer takes them.
const AHEAD: usize = 2;
/// CSV records per chunk.
const CSV_CHUNK: usize = 8192;

/// The input formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// One JSON object per line.
    Ndjson,
    /// Comma-separated, the first row naming the columns.
    Csv,
}

/// One input, opened.
pub struct Source {
    /// The file's path as given, or `stdin`.
    pub name: String,
    /// The file's size in bytes; `None` for stdin.
    pub size: Option<u64>,
    format: InputFormat,
    reader: Box<dyn Read + Send>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// How lines become events.
#[derive(Clone, Debug)]
pub struct Parse {
    /// Which fields are the id, time, key and value.
    pub fields: Fields,
    /// Whether `--key-field` and `--value-field` were given (a CSV header must then have them).
    pub named: [bool; 4],
    /// The windows: an event whose window cannot be written is a bad line.
    pub spec: WindowSpec,
    /// Parsing threads for NDJSON.
    pub threads: usize,
    /// Bytes read at a time; a block is at least this long unless the input ends.
    pub block: usize,
}

/// Parsed events of consecutive input lines, with the text their keys borrow from.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The lines' text (NDJSON); empty for CSV, whose keys are owned.
    pub text: String,
    /// The events, in input order.
    pub items: Vec<Item>,
    /// The bad lines, in input order.
    pub bad: Vec<BadLine>,
    /// How many lines the chunk spans: the next chunk's line numbers count on from here.
    pub lines: u64,
    /// How many bytes of input the chunk spans.
    pub bytes: u64,
}

/// One event, its key held as a span of the chunk's text (or owned).
#[derive(Debug)]
pub struct Item {
    /// The id.
    pub id: EventId,
    /// The event time.
    pub ts: Timestamp,
    /// The key, if any.
    pub key: Option<KeyText>,
    /// The value, if any.
    pub value: Option<f64>,
}

/// Where a key's text is.
#[derive(Debug)]
pub enum KeyText {
    /// `text[start..end]` of the chunk.
    Span(usize, usize),
    /// A key that needed unescaping, or came from a CSV record.
    Owned(Box<str>),
}

impl KeyText {
    /// The key, given the text of its chunk.
    pub fn get<'a>(&'a self, text: &'a str) -> &'a str {
        match self {
            KeyText::Span(start, end) => text.get(*start..*end).unwrap_or_default(),
            KeyText::Owned(key) => key,
        }
    }
}

/// A line that is not an event.
#[derive(Debug)]
pub struct BadLine {
    /// How many of the chunk's items come before it.
    pub before: usize,
    /// Its line number: from 1 within the chunk (add the lines of the chunks before), or within
    /// the input when the chunk spans no lines (CSV).
    pub line: u64,
    /// Why.
    pub error: LineError,
}

/// Opens every input before anything is read, so a missing file stops the run before any
/// output. No paths, or `-`, is stdin. The format is `format`, else `.csv` files are CSV and
/// everything else NDJSON.
pub fn open(paths: &[PathBuf], format: Option<InputFormat>) -> Result<Vec<Source>, Error> {
    let stdin = || Source {
        name: "stdin".to_owned(),
        size: None,
        format: format.unwrap_or(InputFormat::Ndjson),
        reader: Box::new(io::stdin()),
    };
    if paths.is_empty() {
        return Ok(vec![stdin()]);
    }
    paths
        .iter()
        .map(|path| {
            if path == Path::new("-") {
                return Ok(stdin());
            }
            let file = File::open(path).map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?;
            let csv = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            Ok(Source {
                name: path.display().to_string(),
                size: file.metadata().ok().map(|m| m.len()),
                format: format.unwrap_or(if csv {
                    InputFormat::Csv
                } else {
                    InputFormat::Ndjson
                }),
                reader: Box::new(file),
            })
        })
        .collect()
}

/// Reads `source` to its end, handing `each` its chunks in input order. Stops at the first
/// error, `each`'s or the input's.
pub fn read(
    source: Source,
    parse: &Parse,
    each: &mut dyn FnMut(Chunk) -> Result<(), Error>,
) -> Result<(), Error> {
    thread::scope(|scope| {
        let results = match source.format {
            InputFormat::Ndjson => {
                let workers = parse.threads.max(1);
                let mut blocks = Vec::with_capacity(workers);
                let mut results = Vec::with_capacity(workers);
                for _ in 0..workers {
                    let (block_tx, block_rx) = sync_channel::<Result<Vec<u8>, Error>>(AHEAD);
                    let (chunk_tx, chunk_rx) = sync_channel(AHEAD);
                    scope.spawn(move || parse_blocks(&block_rx, &chunk_tx, parse));
                    blocks.push(block_tx);
                    results.push(chunk_rx);
                }
                let (name, reader, size) = (source.name, source.reader, parse.block);
                scope.spawn(move || cut_blocks(reader, &name, size, &blocks));
                results
            }
            InputFormat::Csv => {
                let (chunk_tx, chunk_rx) = sync_channel(AHEAD);
                scope.spawn(move || {
                    if let Err(error) = read_csv(source, parse, &chunk_tx) {
                        let _ = chunk_tx.send(Err(error));
                    }
                });
                vec![chunk_rx]
            }
        };
        take_in_order(&results, each)
        // Returning drops the receivers: the threads see their sends fail and stop.
    })
}

/// Takes the chunks round robin from the parsing threads, which is input order.
fn take_in_order(
    results: &[Receiver<Result<Chunk, Error>>],
    each: &mut dyn FnMut(Chunk) -> Result<(), Error>,
) -> Result<(), Error> {
    for next in (0..results.len()).cycle() {
        match results[next].recv() {
            Ok(chunk) => each(chunk?)?,
            // The thread finished: the input ended (the reader deals blocks in turn, so the
            // first thread without a chunk marks the end).
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// The reader thread: cuts the input into blocks of whole lines (the last one may lack its
/// newline) and deals them round robin; a read error goes to the thread whose turn it is.
fn cut_blocks(
    mut reader: Box<dyn Read + Send>,
    name: &str,
    size: usize,
    to: &[SyncSender<Result<Vec<u8>, Error>>],
) {
    let mut carry: Vec<u8> = Vec::new();
    let mut turn = 0;
    let mut send = |block| {
        let sent = to[turn].send(block).is_ok();
        turn = (turn + 1) % to.len();
        sent
    };
    loop {
        let mut block = std::mem::take(&mut carry);
        let ended = match fill(&mut reader, &mut block, size) {
            Ok(ended) => ended,
            Err(source) => {
                let name = name.to_owned();
                send(Err(Error::Read { name, source }));
                return;
            }
        };
        if ended {
            if !block.is_empty() {
                send(Ok(block));
            }
            return;
        }
        // A block without a newline is part of one long line: read on.
        let Some(last) = memchr::memrchr(b'\n', &block) else {
            carry = block;
            continue;
        };
        carry = block.split_off(last + 1);
        if !send(Ok(block)) {
            return;
        }
    }
}

/// Reads into `block` until it holds `size` more bytes or the input ends (`true`). (Through
/// `read_to_end`, which does not zero the buffer first.)
fn fill(reader: &mut dyn Read, block: &mut Vec<u8>, size: usize) -> io::Result<bool> {
    block.reserve(size);
    let want = u64::try_from(size).unwrap_or(u64::MAX);
    loop {
        match reader.take(want).read_to_end(block) {
            Ok(n) => return Ok(n < size),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A parsing thread: blocks in, chunks out, until either side hangs up.
fn parse_blocks(
    blocks: &Receiver<Result<Vec<u8>, Error>>,
    chunks: &SyncSender<Result<Chunk, Error>>,
    parse: &Parse,
) {
    while let Ok(block) = blocks.recv() {
        if chunks.send(block.map(|b| parse_block(b, parse))).is_err() {
            return;
        }
    }
}

/// Parses one block of whole lines. Blank lines are skipped; a line ending in `\r\n` loses both.
fn parse_block(block: Vec<u8>, parse: &Parse) -> Chunk {
    let bytes = block.len() as u64;
    let (text, not_utf8) = match String::from_utf8(block) {
        Ok(text) => (text, Vec::new()),
        Err(e) => utf8_lines(&e.into_bytes()),
    };
    let mut chunk = Chunk {
        // Room for lines of 32 bytes on average: a list that grows copies itself to fresh
        // pages, which costs more than room never touched.
        items: Vec::with_capacity(text.len() / 32),
        bytes,
        ..Chunk::default()
    };
    let mut not_utf8 = not_utf8.into_iter().peekable();
    let mut memo = Memo::default();
    let mut picker = JsonPicker::new(&parse.fields);
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', text.as_bytes());
    let last = (!text.ends_with('\n') && !text.is_empty()).then_some(text.len());
    for end in ends.chain(last) {
        chunk.lines += 1;
        let line = &text[start..end];
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line_start = start;
        start = end + 1;
        if not_utf8.next_if_eq(&chunk.lines).is_some() {
            chunk.bad.push(BadLine {
                before: chunk.items.len(),
                line: chunk.lines,
                error: LineError::NotUtf8,
            });
            continue;
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        let parsed = picker
            .pick(line)
            .and_then(|picked| item(picked, parse, &mut memo));
        match parsed {
            Ok((id, ts, key, value)) => {
                let key = key.map(|key| key_text(key, line, line_start));
                chunk.items.push(Item { id, ts, key, value });
            }
            Err(error) => chunk.bad.push(BadLine {
                before: chunk.items.len(),
                line: chunk.lines,
                error,
            }),
        }
    }
    chunk.text = text;
    chunk
}

/// Where a key picked from `line` (which starts at `line_start` in its chunk) is: a span of the
/// chunk's text when it borrows from the line, which it does unless it needed unescaping.
fn key_text(key: Cow<'_, str>, line: &str, line_start: usize) -> KeyText {
    if let Cow::Borrowed(k) = key
        && let Some(offset) = (k.as_ptr() as usize).checked_sub(line.as_ptr() as usize)
        && offset + k.len() <= line.len()
    {
        return KeyText::Span(line_start + offset, line_start + offset + k.len());
    }
    KeyText::Owned(key.into())
}

/// A block that is not all UTF-8: the text with each invalid line left empty, and the numbers
/// (from 1) of those lines.
fn utf8_lines(bytes: &[u8]) -> (String, Vec<u64>) {
    let mut text = String::with_capacity(bytes.len());
    let mut bad = Vec::new();
    for (n, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        match std::str::from_utf8(line) {
            Ok(line) => text.push_str(line),
            Err(_) => {
                bad.push(n as u64 + 1);
                if line.ends_with(b"\n") {
                    text.push('\n');
                } else {
                    // A last line without its newline still counts as a line.
                    text.push(' ');
                }
            }
        }
    }
    (text, bad)
}

/// The event of one record's picked fields, checked against the windows.
type Parsed<'a> = (EventId, Timestamp, Option<Cow<'a, str>>, Option<f64>);

/// What the lines before told about the next: consecutive events mostly share their date and
/// their window.
#[derive(Debug, Default)]
struct Memo {
    date: DateMemo,
    /// The last window found writable.
    window: Option<WindowBounds>,
}

fn item<'a>(picked: Picked<'a>, parse: &Parse, memo: &mut Memo) -> Result<Parsed<'a>, LineError> {
    let field = |role: Role| picked[role as usize];
    let Some(raw_id) = field(Role::Id) else {
        return Err(LineError::Missing(Role::Id));
    };
    let Some(raw_time) = field(Role::Time) else {
        return Err(LineError::Missing(Role::Time));
    };
    let id = fields::event_id(raw_id)?;
    let ts = fields::event_time(raw_time, parse.fields.time_unit, &mut memo.date)?;
    let key = field(Role::Key).map(fields::key).transpose()?.flatten();
    let value = field(Role::Value).map(fields::value).transpose()?.flatten();
    if memo.window.is_some_and(|b| b.contains(ts)) {
        return Ok((id, ts, key, value));
    }
    let bounds = parse
        .spec
        .bounds(ts)
        .filter(|b| b.start.check_formattable().is_ok() && b.end.check_formattable().is_ok());
    if bounds.is_none() {
        return Err(LineError::WindowOutOfRange);
    }
    memo.window = bounds;
    Ok((id, ts, key, value))
}

/// The CSV thread: the header names the columns; each record becomes an event or a bad line.
fn read_csv(
    source: Source,
    parse: &Parse,
    to: &SyncSender<Result<Chunk, Error>>,
) -> Result<(), Error> {
    let name = source.name;
    let mut reader = csv::ReaderBuilder::new().from_reader(source.reader);
    let header = reader.headers().map_err(|e| Error::CsvHeader {
        name: name.clone(),
        reason: e.to_string(),
    })?;
    if header.is_empty() {
        // An empty input: no header, no events.
        return Ok(());
    }
    let mut columns: [Option<usize>; 4] = [None; 4];
    for (role, path) in parse.fields.paths.iter().enumerate() {
        let column = path.to_string();
        columns[role] = header.iter().position(|h| h == column);
        if columns[role].is_none() && parse.named[role] {
            return Err(Error::UnknownColumn {
                name,
                role: [Role::Id, Role::Time, Role::Key, Role::Value][role],
                column,
                columns: header.iter().collect::<Vec<_>>().join(", "),
            });
        }
    }
    let mut chunk = Chunk::default();
    let mut memo = Memo::default();
    let mut record = csv::StringRecord::new();
    // The bytes the chunks sent so far span (the header's are in the first).
    let mut sent = 0;
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let picked = columns.map(|c| c.and_then(|c| record.get(c)).map(Raw::Cell));
                match item(picked, parse, &mut memo) {
                    Ok((id, ts, key, value)) => chunk.items.push(Item {
                        id,
                        ts,
                        key: key.map(|k| KeyText::Owned(k.into())),
                        value,
                    }),
                    Err(error) => chunk.bad.push(BadLine {
                        before: chunk.items.len(),
                        line,
                        error,
                    }),
                }
            }
            Err(e) if e.is_io_error() => {
                let source = match e.into_kind() {
                    csv::ErrorKind::Io(source) => source,
                    _ => io::Error::other("CSV read error"),
                };
                return Err(Error::Read { name, source });
            }
            Err(e) => chunk.bad.push(BadLine {
                before: chunk.items.len(),
                line: e.position().map_or(line, csv::Position::line),
                error: LineError::Csv(e.to_string()),
            }),
        }
        if chunk.items.len() + chunk.bad.len() >= CSV_CHUNK {
            chunk.bytes = reader.position().byte() - sent;
            sent += chunk.bytes;
            if to.send(Ok(std::mem::take(&mut chunk))).is_err() {
                return Ok(());
            }
        }
    }
    chunk.bytes = reader.position().byte() - sent;
    let _ = to.send(Ok(chunk));
    Ok(())
}
