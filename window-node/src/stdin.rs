//! The stdin/stdout loop: a reader thread splits stdin into lines; the main thread answers them
//! and writes every reply through one buffered writer, flushed whenever it has answered all the
//! lines read so far, so a client sees a batch's replies at once.

use std::io::{self, BufRead, Write};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread;

use crate::error::NodeError;
use crate::node::Node;

/// One line of input as the reader hands it over.
#[derive(Debug)]
enum Line {
    /// The line's bytes, without the line end.
    Text(Vec<u8>),
    /// A line longer than the limit (its bytes were skipped).
    TooLong {
        /// Its length in bytes, as far as it was read.
        bytes: usize,
    },
}

/// Lines the reader may run ahead of the writer.
const QUEUE: usize = 1024;
/// Replies buffered before a flush even if more lines are waiting.
const FLUSH_BYTES: usize = 1 << 20;

/// Serves requests from `input` until it ends, writing replies to `output`.
pub fn serve<R, W>(mut node: Node, input: R, mut output: W, max_line_bytes: usize) -> io::Result<()>
where
    R: BufRead + Send + 'static,
    W: Write,
{
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let reader = thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || read_lines(input, max_line_bytes, &tx))?;
    let result = answer(&mut node, &rx, &mut output, max_line_bytes);
    // Dropping the receiver stops the reader at its next line if we stopped early.
    drop(rx);
    match reader.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            if result.is_ok() {
                return Err(e);
            }
        }
        Err(_) => return Err(io::Error::other("the stdin reader thread panicked")),
    }
    result
}

fn answer<W: Write>(
    node: &mut Node,
    rx: &Receiver<Line>,
    output: &mut W,
    max_line_bytes: usize,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(64 * 1024);
    while let Ok(line) = rx.recv() {
        handle(node, line, &mut out, max_line_bytes);
        loop {
            if out.len() >= FLUSH_BYTES {
                output.write_all(&out)?;
                out.clear();
            }
            match rx.try_recv() {
                Ok(line) => handle(node, line, &mut out, max_line_bytes),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        output.write_all(&out)?;
        output.flush()?;
        out.clear();
    }
    Ok(())
}

fn handle(node: &mut Node, line: Line, out: &mut Vec<u8>, max_line_bytes: usize) {
    match line {
        Line::Text(bytes) => match std::str::from_utf8(&bytes) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => node.handle_line(text, out),
            Err(e) => node.reject_line(
                &NodeError::malformed(format!(
                    "request is not valid UTF-8 (byte {}); send UTF-8 JSON",
                    e.valid_up_to()
                )),
                out,
            ),
        },
        Line::TooLong { bytes } => node.reject_line(
            &NodeError::malformed(format!(
                "line of {bytes} bytes or more exceeds the limit of {max_line_bytes} bytes; \
                 split the batch or raise --max-line-bytes"
            )),
            out,
        ),
    }
}

/// Splits `input` into lines (`\n`, `\r\n` accepted), never holding more than `max` bytes of one.
fn read_lines<R: BufRead>(mut input: R, max: usize, tx: &SyncSender<Line>) -> io::Result<()> {
    let mut line = Vec::new();
    let mut too_long: Option<usize> = None;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            // End of input: a last line without a line end still counts.
            if too_long.is_some() || !line.is_empty() {
                let _ = tx.send(finish(&mut line, too_long.take()));
            }
            return Ok(());
        }
        let (chunk, ends_line) = match memchr(buf) {
            Some(at) => (&buf[..at], true),
            None => (buf, false),
        };
        let used = chunk.len() + usize::from(ends_line);
        match &mut too_long {
            Some(seen) => *seen += chunk.len(),
            None if line.len() + chunk.len() > max => {
                too_long = Some(line.len() + chunk.len());
                line = Vec::new();
            }
            None => line.extend_from_slice(chunk),
        }
        input.consume(used);
        if ends_line && tx.send(finish(&mut line, too_long.take())).is_err() {
            return Ok(());
        }
    }
}

fn finish(line: &mut Vec<u8>, too_long: Option<usize>) -> Line {
    match too_long {
        Some(bytes) => Line::TooLong { bytes },
        None => {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Line::Text(std::mem::take(line))
        }
    }
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}
