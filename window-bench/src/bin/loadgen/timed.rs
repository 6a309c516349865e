//! The timed phase: every request written, at most `--in-flight` unanswered per connection,
//! each reply timed against its request; several connections kept within a span of each other.

use std::collections::VecDeque;
use std::io::{self, BufRead, Write};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Instant;
use window_proto::Kind;

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use crate::client::{Received, histogram, message_type, micros, read_line};

/// What the timed phase brings back.
pub(crate) struct Timed {
    pub(crate) replies: Vec<Received>,
    pub(crate) fired: Vec<Received>,
    pub(crate) ack: Histogram<u64>,
    /// When each request was written, by request.
    pub(crate) sent: Vec<Instant>,
    pub(crate) first_sent: Instant,
    pub(crate) last_reply: Instant,
    pub(crate) reader: Box<dyn BufRead + Send>,
    pub(crate) writer: Box<dyn Write + Send>,
}

/// Sends every request, at most `in_flight` unanswered at a time, while a reader thread times
/// the replies.
fn timed_phase(
    mut writer: Box<dyn Write + Send>,
    mut reader: Box<dyn BufRead + Send>,
    lines: Vec<String>,
    sizes: &[usize],
    in_flight: usize,
    progress: &ProgressBar,
    gate: Option<(Arc<Gate>, Vec<usize>)>,
) -> anyhow::Result<Timed> {
    let (gate, indices) = match gate {
        Some((gate, indices)) => (Some(gate), indices),
        None => (None, Vec::new()),
    };
    let writer_gate = gate.clone();
    let writer_indices = indices.clone();
    let requests = lines.len();
    // A permit per unanswered request: the writer takes one, the reader gives it back.
    let (permit_tx, permit_rx) = mpsc::sync_channel::<()>(in_flight);
    let (sent_tx, sent_rx) = mpsc::channel::<Instant>();
    let first_sent = Instant::now();
    let writer_thread = thread::spawn(move || -> io::Result<Box<dyn Write + Send>> {
        for (k, line) in lines.iter().enumerate() {
            if permit_tx.send(()).is_err() {
                break;
            }
            if let Some(gate) = &writer_gate {
                gate.wait_for(writer_indices[k]);
            }
            // The clock starts before the first byte: a slow pipe is part of the latency.
            if sent_tx.send(Instant::now()).is_err() {
                break;
            }
            writer.write_all(line.as_bytes())?;
            writer.flush()?;
        }
        Ok(writer)
    });
    let sizes = sizes.to_vec();
    let progress = progress.clone();
    let reader_thread = thread::spawn(move || -> anyhow::Result<Timed> {
        let mut replies = Vec::with_capacity(requests);
        let mut fired = Vec::new();
        let mut ack = histogram();
        let mut sent_at = Vec::with_capacity(requests);
        let mut pending = VecDeque::new();
        let mut last_reply = first_sent;
        while replies.len() < requests {
            let context = format!("after {} of {requests} replies", replies.len());
            let got = read_line(reader.as_mut(), &context)?;
            if message_type(&got.text) == Kind::WindowClosed.as_str() {
                fired.push(got);
                continue;
            }
            // Replies come in request order, so the oldest send time is this reply's.
            while pending.is_empty() {
                pending.push_back(
                    sent_rx
                        .recv()
                        .map_err(|_| anyhow!("a reply before its request"))?,
                );
            }
            let sent = pending.pop_front().unwrap_or(first_sent);
            ack.saturating_record(micros(got.at - sent));
            sent_at.push(sent);
            last_reply = got.at;
            if let Some(gate) = &gate {
                gate.ack(indices[replies.len()]);
            }
            progress.inc(sizes[replies.len()] as u64);
            replies.push(got);
            // Give the permit back (the writer may be gone if it failed).
            let _ = permit_rx.recv();
        }
        drop(permit_rx);
        Ok(Timed {
            replies,
            fired,
            ack,
            sent: sent_at,
            first_sent,
            last_reply,
            reader,
            writer: Box::new(io::sink()),
        })
    });
    let read = reader_thread
        .join()
        .map_err(|_| anyhow!("the reader thread panicked"))?;
    let written = writer_thread
        .join()
        .map_err(|_| anyhow!("the writer thread panicked"))?;
    let mut timed = read?;
    timed.writer = written.context("writing requests")?;
    Ok(timed)
}

/// Keeps several connections within `span` requests of each other: request `i` is written only
/// once every request before `i - span` has its reply. Without it one connection could run far
/// ahead of another, and its events would make the other's late.
#[derive(Debug)]
struct Gate {
    /// (acknowledged, by request; the lowest request not yet acknowledged).
    state: std::sync::Mutex<(Vec<bool>, usize)>,
    changed: std::sync::Condvar,
    span: usize,
}

impl Gate {
    fn new(requests: usize, span: usize) -> Gate {
        Gate {
            state: std::sync::Mutex::new((vec![false; requests], 0)),
            changed: std::sync::Condvar::new(),
            span: span.max(1),
        }
    }

    fn wait_for(&self, request: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.1 + self.span <= request {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn ack(&self, request: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (acked, low) = &mut *state;
        acked[request] = true;
        while *low < acked.len() && acked[*low] {
            *low += 1;
        }
        self.changed.notify_all();
    }
}

/// Runs [`timed_phase`] on every connection at once, request `i` on connection
/// `i % connections`, and merges the results by request. The first connection comes back for
/// the control requests.
pub(crate) fn timed_phase_many(
    links: Vec<(Box<dyn Write + Send>, Box<dyn BufRead + Send>)>,
    lines: Vec<String>,
    sizes: &[usize],
    in_flight: usize,
    progress: &ProgressBar,
) -> anyhow::Result<Timed> {
    let n = links.len();
    if n == 1 {
        let (writer, reader) = links.into_iter().next().context("a connection")?;
        return timed_phase(writer, reader, lines, sizes, in_flight, progress, None);
    }
    let gate = Arc::new(Gate::new(lines.len(), n * in_flight));
    let mut parts: Vec<(Vec<String>, Vec<usize>, Vec<usize>)> =
        vec![(Vec::new(), Vec::new(), Vec::new()); n];
    for (i, line) in lines.into_iter().enumerate() {
        parts[i % n].0.push(line);
        parts[i % n].1.push(sizes[i]);
        parts[i % n].2.push(i);
    }
    let results: Vec<anyhow::Result<Timed>> = thread::scope(|scope| {
        let handles: Vec<_> = links
            .into_iter()
            .zip(parts)
            .map(|((writer, reader), (lines, sizes, indices))| {
                let gate = Some((Arc::clone(&gate), indices));
                scope.spawn(move || {
                    timed_phase(writer, reader, lines, &sizes, in_flight, progress, gate)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a connection thread panicked")))
            })
            .collect()
    });
    let timed: Vec<Timed> = results.into_iter().collect::<anyhow::Result<_>>()?;
    let total: usize = timed.iter().map(|t| t.replies.len()).sum();
    let mut replies: Vec<Option<Received>> = (0..total).map(|_| None).collect();
    let mut sent = vec![None; total];
    let mut ack = histogram();
    let mut fired = Vec::new();
    let first_sent = timed
        .iter()
        .map(|t| t.first_sent)
        .min()
        .context("no connection")?;
    let last_reply = timed
        .iter()
        .map(|t| t.last_reply)
        .max()
        .context("no connection")?;
    let mut first = None;
    for (c, t) in timed.into_iter().enumerate() {
        ack.add(&t.ack)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        fired.extend(t.fired);
        for (k, (reply, at)) in t.replies.into_iter().zip(t.sent).enumerate() {
            replies[k * n + c] = Some(reply);
            sent[k * n + c] = Some(at);
        }
        if c == 0 {
            first = Some((t.writer, t.reader));
        }
    }
    let (writer, reader) = first.context("no first connection")?;
    Ok(Timed {
        replies: replies
            .into_iter()
            .collect::<Option<_>>()
            .context("a reply is missing")?,
        fired,
        ack,
        sent: sent
            .into_iter()
            .collect::<Option<_>>()
            .context("a send time is missing")?,
        first_sent,
        last_reply,
        reader,
        writer,
    })
}
