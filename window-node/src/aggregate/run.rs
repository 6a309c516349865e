//! One run of the pipe: the inputs' chunks, in order, through the engine; the fired windows to
//! the output; at the end of input every open window.

use std::fmt;
use std::time::{Duration, Instant};

use window_core::{Admission, Engine, Event, SizeMs, Timestamp, WindowSpec};

use crate::aggregate::error::Error;
use crate::aggregate::input::{self, Chunk, Item, Parse};
use crate::aggregate::options::AggregateArgs;
use crate::aggregate::output::{Output, Shape};
use crate::aggregate::progress::Progress;
use crate::clock;
use crate::options::DEFAULT_LATENESS;

/// What a run did, for the summary on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines that held an event or were bad (blank lines are not counted).
    pub read: u64,
    /// Lines that were not events, skipped.
    pub bad: u64,
    /// Events added to a window.
    pub accepted: u64,
    /// Events whose id their window already held.
    pub duplicates: u64,
    /// Events behind the watermark.
    pub late: u64,
    /// Windows written.
    pub windows: u64,
    /// From start to the last line written.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        let rate = if seconds > 0.0 {
            self.read as f64 / seconds
        } else {
            0.0
        };
        write!(
            f,
            "{} events read ({} bad lines skipped): {} accepted, {} duplicate, {} late; {} windows; {:.3} s, {:.0} events/s",
            self.read,
            self.bad,
            self.accepted,
            self.duplicates,
            self.late,
            self.windows,
            seconds,
            rate
        )
    }
}

/// Runs the pipe as `args` say.
pub fn run(args: &AggregateArgs) -> Result<Summary, Error> {
    let started = Instant::now();
    let (config, size) = args.engine.config(DEFAULT_LATENESS)?;
    let (fields, named) = args.fields();
    let spec = WindowSpec {
        size,
        frame: config.frame,
    };
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n.get(),
    );
    let parse = Parse {
        fields,
        named,
        spec,
        threads,
        block: args.block_bytes.get(),
    };
    let sources = input::open(&args.files, args.input_format)?;
    let total = sources.iter().map(|s| s.size).sum::<Option<u64>>();
    let shape = Shape {
        format: args.output_format,
        frame: config.frame,
        ids: !args.no_ids,
    };
    let mut pipe = Pipe {
        lateness: i64::try_from(config.allowed_lateness_ms.unwrap_or(0)).unwrap_or(i64::MAX),
        timed: config.purge.max_age_ms.is_some(),
        engine: Engine::new(config),
        size,
        spec,
        next_boundary: None,
        output: Output::create(args.output.as_deref(), shape, args.fsync)?,
        strict: args.strict,
        summary: Summary::default(),
        progress: Progress::new(total),
    };
    for source in sources {
        let name = source.name.clone();
        let mut lines_before = 0;
        input::read(source, &parse, &mut |chunk| {
            pipe.take(chunk, &name, &mut lines_before)
        })?;
    }
    let mut summary = pipe.finish()?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The engine and the output, fed chunk by chunk.
struct Pipe {
    engine: Engine,
    size: SizeMs,
    spec: WindowSpec,
    /// The allowed lateness: the watermark trails the highest event time by this much.
    lateness: i64,
    /// A time purge (`--max-age`) is on: panes fire by processing time.
    timed: bool,
    /// The first window boundary after the engine's watermark (see [`Pipe::cut_after`]);
    /// `None` before the first event.
    next_boundary: Option<Timestamp>,
    output: Output,
    strict: bool,
    summary: Summary,
    progress: Progress,
}

impl Pipe {
    /// Feeds one chunk's events, reporting (or, with `--strict`, stopping at) its bad lines.
    /// `lines_before` counts the input's lines before the chunk.
    fn take(&mut self, chunk: Chunk, name: &str, lines_before: &mut u64) -> Result<(), Error> {
        let Chunk {
            text,
            mut items,
            bad,
            lines,
            bytes,
        } = chunk;
        self.summary.read += (items.len() + bad.len()) as u64;
        let mut done = 0;
        for bad_line in bad {
            self.feed(&text, &mut items[done..bad_line.before])?;
            done = bad_line.before;
            let line = *lines_before + bad_line.line;
            if self.strict {
                return Err(Error::Strict {
                    name: name.to_owned(),
                    line,
                    reason: bad_line.error,
                });
            }
            self.summary.bad += 1;
            self.progress.say(&format!(
                "window-node aggregate: {name}:{line}: {}; skipped",
                bad_line.error
            ));
        }
        self.feed(&text, &mut items[done..])?;
        *lines_before += lines;
        self.progress.advance(bytes);
        if self.timed {
            self.engine.handle_deadline(clock::now());
            self.write_fired()?;
        }
        Ok(())
    }

    /// Hands events to the engine in batches as large as keep the result the same as one event
    /// at a time: a batch ends after an event that may move the watermark across a window
    /// boundary, since the engine moves it at the end of a batch.
    fn feed(&mut self, text: &str, items: &mut [Item]) -> Result<(), Error> {
        let now = clock::now();
        let mut batch = Vec::with_capacity(items.len());
        for item in items {
            let cut = self.cut_after(item.ts);
            batch.push(event(text, item));
            if cut {
                self.handle(now, std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            self.handle(now, batch)?;
        }
        Ok(())
    }

    /// Whether the watermark may cross a window boundary with the event at `ts`: it would be at
    /// most `ts - lateness` after it, and an event is late by the last boundary at or before the
    /// watermark, so only reaching the next boundary changes which events are late and which
    /// windows fire. (A duplicate or late event may cut needlessly: that only costs a batch.)
    fn cut_after(&self, ts: Timestamp) -> bool {
        self.next_boundary
            .is_none_or(|next| ts.as_millis().saturating_sub(self.lateness) >= next.as_millis())
    }

    /// One batch through the engine, then out with what fired and what came late.
    fn handle(&mut self, now: Timestamp, batch: Vec<Event<'_>>) -> Result<(), Error> {
        let admission: Admission<'_> = self.engine.handle_events(now, self.size, batch)?;
        self.next_boundary = self
            .engine
            .watermark()
            .and_then(|wm| self.spec.bounds(wm))
            .map(|b| b.end);
        self.summary.accepted += admission.accepted as u64;
        self.summary.duplicates += admission.duplicates as u64;
        self.summary.late += admission.late_count as u64;
        self.write_fired()?;
        for late in &admission.late {
            let event = &late.event;
            self.output
                .late(&event.id, event.ts, late.bounds, event.key)?;
        }
        Ok(())
    }

    fn write_fired(&mut self) -> Result<(), Error> {
        while let Some(window) = self.engine.poll_closed() {
            self.output.window(&window)?;
            self.summary.windows += 1;
        }
        Ok(())
    }

    /// The end of input: every open window fires, and the output is completed.
    fn finish(mut self) -> Result<Summary, Error> {
        self.write_fired()?;
        for window in self.engine.flush(None) {
            self.output.window(&window)?;
            self.summary.windows += 1;
        }
        self.output.finish()?;
        Ok(self.summary)
    }
}

/// The engine's event for one parsed item (the one place the pipe builds one). The id moves
/// out of the item; the key borrows from the chunk's text or the item.
fn event<'a>(text: &'a str, item: &'a mut Item) -> Event<'a> {
    let Item { id, ts, key, value } = item;
    Event {
        id: std::mem::replace(id, window_core::EventId::Int(0)),
        ts: *ts,
        key: key.as_ref().map(|k| k.get(text)),
        value: *value,
        // The pipe writes no payloads, so it reads none.
        payload: None,
    }
}
