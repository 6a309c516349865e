//! The stdin/stdout loop: a reader thread splits stdin into lines and parses each whole request
//! line; the main thread answers them and writes every reply through one buffered writer,
//! flushed whenever it has answered all the lines read so far, so a client sees a batch's
//! replies at once. Parsing on the reader thread runs it beside the answering of the lines
//! before: on two cores, process_window's parse and its windowing overlap.

use std::io::{self, BufRead, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

use crate::clock;
use crate::node::Node;
use window_proto::{Assembled, Reassembler};
use window_proto::{Line, LineSplitter};
use window_proto::{ProtoError, ReplyTo, Request, parse_request};
use window_store::StoreError;

/// A line as the reader hands it over.
enum Input {
    /// As read: not UTF-8, blank, too long, or perhaps one part of a request over several lines.
    Line(Line),
    /// A whole request line, parsed.
    Parsed(ParsedLine),
}

/// What `parse_request` made of a line: taken (once) by the answering thread.
type Parsed<'a> = Option<Result<Request<'a>, (ReplyTo, ProtoError)>>;

self_cell::self_cell!(
    /// A request line with its request, which borrows the line's text.
    struct ParsedLine {
        owner: String,
        #[covariant]
        dependent: Parsed,
    }
);

impl Input {
    /// Parses `line` when it is a whole request by itself: UTF-8, not blank, and not ending
    /// where a request written over several lines would go on (the answering thread answers it
    /// as text when a request over several lines is being put together).
    fn read(line: Line) -> Input {
        let Line::Text(bytes) = line else {
            return Input::Line(line);
        };
        match String::from_utf8(bytes) {
            Ok(text) if !text.trim().is_empty() && !continues(&text) => {
                Input::Parsed(ParsedLine::new(text, |text| Some(parse_request(text))))
            }
            Ok(text) => Input::Line(Line::Text(text.into_bytes())),
            Err(not_utf8) => Input::Line(Line::Text(not_utf8.into_bytes())),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Input::Line(Line::Text(bytes)) => bytes.len(),
            Input::Line(Line::TooLong { .. }) => 0,
            Input::Parsed(parsed) => parsed.borrow_owner().len(),
        }
    }
}

/// Whether a line ends where a request written over several lines goes on.
fn continues(text: &str) -> bool {
    text.trim_end().ends_with(['{', '[', ',', ':'])
}

/// Batches of lines the reader may run ahead of the answering thread. With `BATCH_BYTES` this
/// bounds the memory held for unanswered input to a few MiB of text (or a few lines, if lines
/// are large), and about as much again of their parsed requests.
const QUEUE: usize = 4;
/// The reader hands over lines in batches of about this many bytes (or one larger line).
const BATCH_BYTES: usize = 1 << 20;
/// ... or of this many lines.
const BATCH_LINES: usize = 512;
/// Replies buffered before a flush even if more lines are waiting.
const FLUSH_BYTES: usize = 1 << 20;

/// Serves requests from `input` until it ends, writing replies to `output`.
///
/// A failed commit or sync is fail-stop: every request not made durable is answered with
/// error 13 (as are the lines already read behind it), and the error is returned at once,
/// without waiting for more input.
pub fn serve<R, W>(mut node: Node, input: R, mut output: W, max_line_bytes: usize) -> io::Result<()>
where
    R: BufRead + Send + 'static,
    W: Write,
{
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let reader = thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || read_lines(input, max_line_bytes, &tx))?;
    // On an error the reader may be waiting for input that never comes: it is left behind,
    // and ends with the process.
    answer(&mut node, &rx, &mut output, max_line_bytes)?;
    match reader.join() {
        Ok(result) => result,
        Err(_) => Err(io::Error::other("the stdin reader thread panicked")),
    }
}

fn answer<W: Write>(
    node: &mut Node,
    rx: &Receiver<Vec<Input>>,
    output: &mut W,
    max_line_bytes: usize,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut joiner = Reassembler::default();
    while let Ok(batch) = rx.recv() {
        let mut next = Some(batch);
        while let Some(batch) = next {
            let mut lines = batch.into_iter();
            while let Some(line) = lines.next() {
                handle(node, &mut joiner, line, &mut out, max_line_bytes);
                if out.len() >= FLUSH_BYTES
                    && let Err(failed) = write_durably(node, output, &mut out, false)
                {
                    return Err(failed.answer(node, output, lines, rx));
                }
            }
            // Whatever else is already waiting joins this group commit.
            next = rx.try_recv().ok();
        }
        write_durably(node, output, &mut out, true)
            .map_err(|failed| failed.answer(node, output, Vec::new().into_iter(), rx))?;
    }
    if let Some(unfinished) = joiner.finish() {
        answer_assembled(node, unfinished, &mut out);
    }
    write_durably(node, output, &mut out, true)
        .map_err(|failed| failed.answer(node, output, Vec::new().into_iter(), rx))
}

/// Writes the replies in `out`, but only after the steps they acknowledge are durable (group
/// commit: one sync for every request answered since the last write).
fn write_durably<W: Write>(
    node: &mut Node,
    output: &mut W,
    out: &mut Vec<u8>,
    flush: bool,
) -> Result<(), Failed> {
    if let Err(error) = node.sync(clock::now()) {
        out.clear();
        return Err(Failed::Store(error));
    }
    output.write_all(out).map_err(Failed::Output)?;
    if flush {
        output.flush().map_err(Failed::Output)?;
    }
    out.clear();
    Ok(())
}

/// Why replies could not be written.
enum Failed {
    /// The store failed: the replies written since the last sync were dropped.
    Store(StoreError),
    /// stdout failed.
    Output(io::Error),
}

impl Failed {
    /// Answers what the failure left unanswered, and says what happened. After a store failure
    /// every request answered since the last sync, the rest of `lines` and every line already
    /// read gets error 13 (best effort: stdout may be gone too).
    fn answer<W: Write>(
        self,
        node: &mut Node,
        output: &mut W,
        lines: impl Iterator<Item = Input>,
        rx: &Receiver<Vec<Input>>,
    ) -> io::Error {
        let error = match self {
            Failed::Output(error) => return error,
            Failed::Store(error) => error,
        };
        let refused = ProtoError::Internal(format!(
            "storage failed, so this request was not made durable and is not acknowledged \
             (sending it again after a restart is safe): {error}"
        ));
        let mut out = Vec::new();
        node.answer_unsynced(&refused, &mut out);
        let read = lines.chain(std::iter::from_fn(|| rx.try_recv().ok()).flatten());
        for line in read {
            match line {
                Input::Line(Line::Text(bytes)) => {
                    let text = String::from_utf8_lossy(&bytes);
                    if !text.trim().is_empty() {
                        node.refuse_line(&text, &refused, &mut out);
                    }
                }
                Input::Line(Line::TooLong { .. }) => node.reject_line(&refused, &mut out),
                Input::Parsed(parsed) => {
                    node.refuse_line(parsed.borrow_owner(), &refused, &mut out)
                }
            }
        }
        let _ = output.write_all(&out).and_then(|()| output.flush());
        io::Error::other(format!(
            "{error}; every request not made durable was answered with error 13 and the node \
             stopped: free space on the disk (or fix the storage) and run it again"
        ))
    }
}

fn answer_assembled(node: &mut Node, assembled: Assembled, out: &mut Vec<u8>) {
    match assembled {
        Assembled::Request(text) => node.handle_line(clock::now(), &text, out),
        Assembled::Unfinished(text) => node.reject_line(
            &ProtoError::malformed(format!(
                "request of {} bytes ended before its JSON value was complete; send one JSON \
                 object per line",
                text.len()
            )),
            out,
        ),
    }
}

fn handle(
    node: &mut Node,
    joiner: &mut Reassembler,
    input: Input,
    out: &mut Vec<u8>,
    max_line_bytes: usize,
) {
    let line = match input {
        // A whole request on one line, the common case, parsed by the reader.
        Input::Parsed(mut parsed) if !joiner.is_pending() => {
            parsed.with_dependent_mut(|_, request| {
                if let Some(request) = request.take() {
                    node.handle_parsed(clock::now(), request, out);
                }
            });
            return;
        }
        // The next part of a request over several lines.
        Input::Parsed(parsed) => Line::Text(parsed.into_owner().into_bytes()),
        Input::Line(line) => line,
    };
    match line {
        Line::Text(bytes) => match std::str::from_utf8(&bytes) {
            Ok(text) if text.trim().is_empty() => {}
            // Whole request lines come parsed (`Input::read`): text is part of a longer one.
            Ok(text) => {
                for assembled in joiner.push(text, max_line_bytes) {
                    answer_assembled(node, assembled, out);
                }
            }
            Err(e) => node.reject_line(
                &ProtoError::malformed(format!(
                    "request is not valid UTF-8 (byte {}); send UTF-8 JSON",
                    e.valid_up_to()
                )),
                out,
            ),
        },
        Line::TooLong { bytes } => node.reject_line(
            &ProtoError::malformed(format!(
                "line of {bytes} bytes or more exceeds the limit of {max_line_bytes} bytes; \
                 split the batch or raise --max-line-bytes"
            )),
            out,
        ),
    }
}

/// Splits `input` into lines (`\n`, `\r\n` accepted), never holding more than `max` bytes of one,
/// and hands them over in batches: when a batch is full, or when no more input is buffered (so a
/// client waiting for a reply is never kept waiting for a full batch).
fn read_lines<R: BufRead>(mut input: R, max: usize, tx: &SyncSender<Vec<Input>>) -> io::Result<()> {
    let mut batch = Batch::default();
    let mut splitter = LineSplitter::new(max);
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            // End of input: a last line without a line end still counts.
            if let Some(line) = splitter.finish() {
                batch.push(line);
            }
            let _ = batch.send(tx);
            return Ok(());
        }
        let (used, line) = splitter.feed(buf);
        let drained = used == buf.len();
        input.consume(used);
        if let Some(line) = line {
            batch.push(line);
        }
        // Hand over when full, or when we would block reading more.
        if (batch.is_full() || (drained && !batch.lines.is_empty())) && batch.send(tx).is_err() {
            return Ok(());
        }
    }
}

/// Lines read but not yet handed over.
#[derive(Default)]
struct Batch {
    lines: Vec<Input>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, line: Line) {
        let input = Input::read(line);
        self.bytes += input.bytes();
        self.lines.push(input);
    }

    fn is_full(&self) -> bool {
        self.bytes >= BATCH_BYTES || self.lines.len() >= BATCH_LINES
    }

    /// Sends the batch (if it holds anything); an error means the receiver is gone.
    fn send(&mut self, tx: &SyncSender<Vec<Input>>) -> Result<(), ()> {
        self.bytes = 0;
        if self.lines.is_empty() {
            return Ok(());
        }
        tx.send(std::mem::take(&mut self.lines)).map_err(|_| ())
    }
}
