//! The request handler of the stdin node: one request line in, its reply (and any windows that
//! fired) out. No I/O here: `stdin.rs` moves the bytes.

use window_core::{
    CloseError, ClosedWindow, Engine, EngineConfig, Event, IdFrame, SizeMs, WindowId,
    WindowSelector, WindowSpec, group_by_window,
};
use window_proto::reply::{self, Stamp, StatsReply, WindowView};
use window_proto::{Address, Header, Style, check_formattable, window_bounds};

use window_store::{OutputRecord, StoreError, WindowStore};

use crate::clock;
use window_proto::ProtoError;
use window_proto::{Batch, Body, ReplyTo, Request, parse_request};

/// How the node answers.
#[derive(Clone, Copy, Debug)]
pub struct NodeConfig {
    /// Window-id frame of every id the node reads or writes.
    pub frame: IdFrame,
    /// Reply text style.
    pub style: Style,
    /// Reply in envelopes from the start (otherwise only after `init`).
    pub envelope: bool,
    /// Firing rules of the open state.
    pub engine: EngineConfig,
}

/// The stdin node's state: the engine, its store (with `--data-dir`) and what `init` told it.
pub struct Node {
    config: NodeConfig,
    engine: Engine,
    /// Where every step is committed; `None` keeps everything in memory.
    store: Option<Box<dyn WindowStore>>,
    node_id: Option<String>,
    envelope: bool,
    /// Sequence number of the next fired window (every fired window takes one, also those
    /// returned by `close` and `flush`): the position in the output log.
    next_seq: u64,
    /// Windows the current request's reply returned (`close`, `flush`), for the output log.
    replied: Vec<ClosedWindow>,
    /// Where emitted windows go: the `src` of the latest request.
    last_src: Option<String>,
    /// The lease epoch stamped on fired windows (0 without a data directory).
    epoch: u64,
    /// Windows fired since the last sync, not yet written to the store.
    unwritten: Vec<OutputRecord>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("config", &self.config)
            .field("durable", &self.store.is_some())
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with no open windows.
    pub fn new(config: NodeConfig) -> Node {
        let engine_config = EngineConfig {
            frame: config.frame,
            ..config.engine
        };
        Node {
            engine: Engine::new(engine_config),
            store: None,
            envelope: config.envelope,
            config,
            node_id: None,
            next_seq: 0,
            replied: Vec::new(),
            last_src: None,
            unwritten: Vec::new(),
            epoch: 0,
        }
    }

    /// A node that restores its open state from `store` and commits every step to it.
    pub fn with_store(
        config: NodeConfig,
        mut store: Box<dyn WindowStore>,
        epoch: u64,
    ) -> Result<Node, StoreError> {
        let engine_config = EngineConfig {
            frame: config.frame,
            ..config.engine
        };
        // The stdin node answers each line once, in order: nothing resends, so it keeps no
        // remembered requests.
        let window_store::Opened {
            engine, next_seq, ..
        } = recover(&mut *store, engine_config)?;
        let mut node = Node::new(config);
        node.engine = engine;
        node.next_seq = next_seq;
        node.store = Some(store);
        node.epoch = epoch;
        Ok(node)
    }

    /// Makes every committed step durable. Replies may be written only after this succeeds.
    ///
    /// The requests answered since the last sync are written as one atomic batch (the engine's
    /// change since then and every window they fired), then synced: group commit.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let Some(store) = &mut self.store else {
            return Ok(());
        };
        let batch = window_store::Batch {
            dirty: self.engine.take_dirty(),
            fired: std::mem::take(&mut self.unwritten),
            requests: Vec::new(),
        };
        store.commit(&batch)?;
        store.sync()
    }

    /// Answers one request line, appending the reply (and any fired windows) to `out`.
    pub fn handle_line(&mut self, line: &str, out: &mut Vec<u8>) {
        match parse_request(line) {
            Ok(request) => {
                let reply_to = ReplyTo {
                    msg_id: request.msg_id.map(str::to_owned),
                    src: request.src.clone(),
                    dest: request.dest.clone(),
                };
                if request.src.is_some() {
                    self.last_src.clone_from(&request.src);
                }
                if let Err(error) = self.handle_request(request, out) {
                    self.error(out, &reply_to, &error);
                }
            }
            Err((reply_to, error)) => self.error(out, &reply_to, &error),
        }
        // Kept for the group's batch (see [`Node::sync`]).
        let fired = self.emit_fired(out);
        self.unwritten.extend(fired);
    }

    /// Answers a line that could not be read as a request (too long, or not UTF-8).
    pub fn reject_line(&mut self, error: &ProtoError, out: &mut Vec<u8>) {
        self.error(out, &ReplyTo::default(), error);
    }

    fn handle_request(
        &mut self,
        request: Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtoError> {
        let to = ReplyTo {
            msg_id: request.msg_id.map(str::to_owned),
            src: request.src,
            dest: request.dest,
        };
        match request.body {
            Body::Init { node_id } => {
                self.node_id = Some(node_id);
                self.envelope = true;
                reply::init_ok(out, &self.header(&to));
            }
            Body::Assign { events, size } => self.assign(out, &to, events, size)?,
            Body::ProcessWindow { events, size } => self.process_window(out, &to, events, size)?,
            Body::Close {
                window_id,
                size,
                key,
            } => {
                let closed = close_window(
                    &mut self.engine,
                    self.config.frame,
                    window_id,
                    size,
                    key.as_deref(),
                )?;
                let view = WindowView {
                    frame: self.config.frame,
                    window: &closed,
                    stamp: Stamp::Content,
                };
                reply::window_closed(out, &self.header(&to), &view);
                self.replied.push(closed);
            }
            Body::Flush { until } => {
                let windows = self.engine.flush(until);
                let frame = self.config.frame;
                let views = windows.iter().map(|window| WindowView {
                    frame,
                    window,
                    stamp: Stamp::Content,
                });
                reply::flushed(out, &self.header(&to), views);
                self.replied.extend(windows);
            }
            Body::Stats => {
                let stats = self.engine.stats();
                let stats = StatsReply {
                    open_windows: stats.open_windows as u64,
                    buffered_events: stats.buffered_events as u64,
                    emitted_windows: stats.counters.fired,
                    accepted: stats.counters.accepted,
                    duplicates: stats.counters.duplicates,
                    late: stats.counters.late,
                    ..StatsReply::default()
                };
                reply::stats_ok(out, &self.header(&to), &stats);
            }
            Body::Ingest { .. } | Body::Subscribe { .. } => {
                return Err(ProtoError::UnknownType(
                    "ingest and subscribe are served by the daemon (`window-node serve`); \
                     on stdin use assign or process_window"
                        .to_owned(),
                ));
            }
        }
        Ok(())
    }

    fn assign(
        &mut self,
        out: &mut Vec<u8>,
        to: &ReplyTo,
        mut batch: Batch<'_>,
        size: SizeMs,
    ) -> Result<(), ProtoError> {
        let spec = self.spec(size);
        let events = batch.events();
        let bounds = events
            .iter()
            .enumerate()
            .map(|(i, e)| window_bounds(spec, i, e.ts))
            .collect::<Result<Vec<_>, _>>()?;
        reply::assigned(out, &self.header(to), self.config.frame, &events, &bounds);
        self.admit(size, events)
    }

    fn process_window(
        &mut self,
        out: &mut Vec<u8>,
        to: &ReplyTo,
        mut batch: Batch<'_>,
        size: SizeMs,
    ) -> Result<(), ProtoError> {
        let spec = self.spec(size);
        let events = batch.events();
        let windows = group_by_window(spec, &events)?;
        for window in &windows {
            check_formattable(window.bounds, window.events[0])?;
        }
        reply::window_result(out, &self.header(to), self.config.frame, &windows, &events);
        self.admit(size, events)
    }

    /// Adds validated events to the open state.
    fn admit(&mut self, size: SizeMs, events: Vec<Event<'_>>) -> Result<(), ProtoError> {
        self.engine.handle_events(clock::now(), size, events)?;
        Ok(())
    }

    /// Numbers the windows this request fired: those its reply returned, then those that fired
    /// on their own, each written as an unsolicited `window_closed`. Returns the output records
    /// (only with a store: without one nothing keeps them).
    fn emit_fired(&mut self, out: &mut Vec<u8>) -> Vec<OutputRecord> {
        let mut records = Vec::new();
        let keep = self.store.is_some();
        for window in std::mem::take(&mut self.replied) {
            let seq = self.next_seq;
            self.next_seq += 1;
            if keep {
                records.push(OutputRecord {
                    seq,
                    epoch: self.epoch,
                    window,
                });
            }
        }
        while let Some(closed) = self.engine.poll_closed() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let to = ReplyTo {
                msg_id: None,
                src: self.last_src.clone(),
                dest: None,
            };
            let view = WindowView {
                frame: self.config.frame,
                window: &closed,
                stamp: Stamp::Numbered { seq },
            };
            reply::window_closed(out, &self.header(&to), &view);
            if keep {
                records.push(OutputRecord {
                    seq,
                    epoch: self.epoch,
                    window: closed,
                });
            }
        }
        records
    }

    fn spec(&self, size: SizeMs) -> WindowSpec {
        WindowSpec {
            size,
            frame: self.config.frame,
        }
    }

    fn error(&self, out: &mut Vec<u8>, to: &ReplyTo, error: &ProtoError) {
        tracing::debug!(code = error.code(), %error, "request rejected");
        reply::error(out, &self.header(to), error);
    }

    /// How a message to `to` is written: this node's style and envelope, answering its `msg_id`.
    fn header<'a>(&'a self, to: &'a ReplyTo) -> Header<'a> {
        Header {
            style: self.config.style,
            address: self.address(to),
            in_reply_to: to.msg_id.as_deref(),
        }
    }

    /// Envelopes (after `init` or with `--envelope`) go from this node to the request's `src`.
    fn address<'a>(&'a self, to: &'a ReplyTo) -> Address<'a> {
        Address {
            envelope: self.envelope,
            src: self.node_id.as_deref().or(to.dest.as_deref()),
            dest: to.src.as_deref(),
        }
    }
}

/// Restores the engine from `store` (or starts an empty one) and logs what was recovered.
pub(crate) fn recover(
    store: &mut dyn WindowStore,
    config: EngineConfig,
) -> Result<window_store::Opened, StoreError> {
    let started = std::time::Instant::now();
    let opened = window_store::open(store, config)?;
    let stats = opened.engine.stats();
    tracing::info!(
        open_windows = stats.open_windows,
        buffered_events = stats.buffered_events,
        next_seq = opened.next_seq,
        remembered_requests = opened.requests.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered the open state from the store"
    );
    Ok(opened)
}

/// Closes the window `window_id` (of `size` and `key`, when given), with the protocol's errors.
pub(crate) fn close_window(
    engine: &mut Engine,
    frame: IdFrame,
    window_id: WindowId,
    size: Option<SizeMs>,
    key: Option<&str>,
) -> Result<ClosedWindow, ProtoError> {
    let start = match size {
        Some(size) => WindowSpec { size, frame }.start_of(window_id).ok_or_else(|| {
            ProtoError::NotOpen(format!(
                "no open window {window_id} of size {size} ms: {window_id} is not a window of that size"
            ))
        })?,
        None => frame
            .start_of(window_id)
            .ok_or_else(|| ProtoError::NotOpen(format!("no open window {window_id}")))?,
    };
    let selector = WindowSelector { start, size, key };
    engine.close(selector).map_err(|e| match e {
        CloseError::NotOpen => ProtoError::NotOpen(format!(
            "no open window {window_id}{}{}: it was never opened, or was already closed",
            size.map(|s| format!(" of size {s} ms")).unwrap_or_default(),
            key.map(|k| format!(" with key {k:?}")).unwrap_or_default(),
        )),
        CloseError::Ambiguous(windows) => ProtoError::malformed(format!(
            "{} open windows have id {window_id}: give {} to choose one of {}",
            windows.len(),
            if windows.iter().all(|w| w.size == windows[0].size) {
                "key"
            } else {
                "window_size_ms (and key)"
            },
            windows
                .iter()
                .map(|w| match &w.key {
                    Some(k) => format!("size {} key {k:?}", w.size),
                    None => format!("size {} no key", w.size),
                })
                .collect::<Vec<_>>()
                .join(", ")
        )),
    })
}
