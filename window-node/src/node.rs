//! The request handler of the stdin node: one request line in, its reply (and any windows that
//! fired) out. No I/O here: `stdin.rs` moves the bytes.

use std::ops::Range;

use window_core::{EngineConfig, IdFrame, SizeMs, Timestamp, WindowSpec, group_by_window};
use window_proto::reply::{self, Stamp, StatsReply, WindowView};
use window_proto::{
    Address, Batch, Body, Header, ProtoError, ReplyTo, Request, Style, check_formattable,
    parse_request, window_bounds,
};
use window_service::{Answer, Config, NoLog, OutputLog, Service, TimeBase};

use crate::recovery::recover;
use window_store::{StoreError, WindowStore};

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
    /// The window size of an `ingest` without `window_size_ms` (`--window-size`).
    pub ingest_size: SizeMs,
    /// The largest payload an event may carry (`--max-payload-bytes`).
    pub max_payload_bytes: usize,
}

/// The stdin node's state: the service, its store (with `--data-dir`) and what `init` told it.
pub struct Node {
    config: NodeConfig,
    service: Service,
    /// Where every group is committed; `None` keeps everything in memory.
    store: Option<Box<dyn WindowStore>>,
    node_id: Option<String>,
    envelope: bool,
    /// Where emitted windows go: the `src` of the latest request.
    last_src: Option<String>,
    /// With a store: whom the replies written since the last sync answer, so that a failed
    /// sync can answer them with an error instead.
    unsynced: Vec<ReplyTo>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("config", &self.config)
            .field("durable", &self.store.is_some())
            .field("next_seq", &self.service.next_seq())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with no open windows.
    pub fn new(config: NodeConfig, now: Timestamp) -> Node {
        let service = Service::new(service_config(&config, 0), now);
        Node::with_service(config, service, None)
    }

    /// A node that restores its open state from `store` and commits every group to it.
    pub fn with_store(
        config: NodeConfig,
        mut store: Box<dyn WindowStore>,
        epoch: u64,
        now: Timestamp,
    ) -> Result<Node, StoreError> {
        let service_config = service_config(&config, epoch);
        let opened = recover(&mut *store, service_config.engine)?;
        let service = Service::restore(service_config, opened, now);
        Ok(Node::with_service(config, service, Some(store)))
    }

    fn with_service(
        config: NodeConfig,
        service: Service,
        store: Option<Box<dyn WindowStore>>,
    ) -> Node {
        Node {
            envelope: config.envelope,
            config,
            service,
            store,
            node_id: None,
            last_src: None,
            unsynced: Vec::new(),
        }
    }

    /// Makes every answered request durable. Replies may be written only after this succeeds.
    ///
    /// The requests answered since the last sync are written as one atomic batch (the change
    /// since then and every window they fired), then synced: group commit.
    pub fn sync(&mut self, now: Timestamp) -> Result<(), StoreError> {
        let Some(batch) = self.service.poll_batch(now) else {
            return Ok(());
        };
        let Some(store) = &mut self.store else {
            // Nothing keeps it: without a store the node is in memory only.
            return Ok(());
        };
        store.commit(&batch)?;
        self.service.on_committed(now, batch);
        store.sync()?;
        self.unsynced.clear();
        Ok(())
    }

    /// After a failed [`Node::sync`]: answers every request answered since the last sync with
    /// `error` instead (their replies must be dropped: they were not made durable).
    pub fn answer_unsynced(&mut self, error: &ProtoError, out: &mut Vec<u8>) {
        for to in std::mem::take(&mut self.unsynced) {
            self.error(out, &to, error);
        }
    }

    /// Answers a request line with `error` without running it (its `msg_id` and envelope are
    /// read from it when it is a request).
    pub fn refuse_line(&mut self, line: &str, error: &ProtoError, out: &mut Vec<u8>) {
        let to = match parse_request(line) {
            Ok(request) => request.reply_to(),
            Err((to, _)) => to,
        };
        self.error(out, &to, error);
    }

    /// Answers one request line at processing time `now`, appending the reply (and any windows
    /// that fired on their own) to `out`.
    pub fn handle_line(&mut self, now: Timestamp, line: &str, out: &mut Vec<u8>) {
        self.handle_parsed(now, parse_request(line), out);
    }

    /// Answers a request line parsed already (by `parse_request`, on the stdin reader thread),
    /// as [`Node::handle_line`] answers the line.
    pub fn handle_parsed(
        &mut self,
        now: Timestamp,
        parsed: Result<Request<'_>, (ReplyTo, ProtoError)>,
        out: &mut Vec<u8>,
    ) {
        let fired = match parsed {
            Ok(request) => {
                let to = request.reply_to();
                self.awaiting_sync(&to);
                if let Err(error) = request.check_payloads(self.config.max_payload_bytes) {
                    self.error(out, &to, &error);
                    return;
                }
                if request.src.is_some() {
                    self.last_src.clone_from(&request.src);
                }
                match self.handle_request(now, request, &to, out) {
                    Ok(fired) => fired,
                    Err(error) => {
                        self.error(out, &to, &error);
                        return;
                    }
                }
            }
            Err((to, error)) => {
                self.awaiting_sync(&to);
                self.error(out, &to, &error);
                return;
            }
        };
        self.emit_fired(fired, out);
    }

    /// Answers a line that could not be read as a request (too long, or not UTF-8).
    pub fn reject_line(&mut self, error: &ProtoError, out: &mut Vec<u8>) {
        self.awaiting_sync(&ReplyTo::default());
        self.error(out, &ReplyTo::default(), error);
    }

    /// Notes that the reply to `to` is written only after the next sync (with a store).
    fn awaiting_sync(&mut self, to: &ReplyTo) {
        if self.store.is_some() {
            self.unsynced.push(to.clone());
        }
    }

    /// Runs one request, writing its reply; returns the windows it fired on their own.
    fn handle_request(
        &mut self,
        now: Timestamp,
        request: Request<'_>,
        to: &ReplyTo,
        out: &mut Vec<u8>,
    ) -> Result<Range<u64>, ProtoError> {
        let frame = self.config.frame;
        let content = |window| WindowView {
            frame,
            window,
            stamp: Stamp::Content,
        };
        // The stdin node answers each line once, in order: nothing resends, so it keeps no
        // remembered requests (a `request_id` is ignored).
        let log: &dyn OutputLog = &NoLog;
        match request.body {
            Body::Init { node_id } => {
                self.node_id = Some(node_id);
                self.envelope = true;
                reply::init_ok(out, &self.header(to));
                Ok(self.no_windows())
            }
            Body::Assign { events, size } => {
                self.place(now, out, to, (events, size), Placement::EachEvent)
            }
            Body::ProcessWindow { events, size } => {
                self.place(now, out, to, (events, size), Placement::ByWindow)
            }
            Body::Close {
                window_id,
                size,
                key,
            } => {
                let answer = self
                    .service
                    .close(log, window_id, size, key.as_deref(), None);
                let record = answer.result?;
                reply::window_closed(out, &self.header(to), &content(&record.window));
                Ok(answer.fired)
            }
            Body::Flush { until } => {
                let answer = self.service.flush(log, until, None);
                let records = answer.result?;
                let views = records.iter().map(|record| content(&record.window));
                reply::flushed(out, &self.header(to), views);
                Ok(answer.fired)
            }
            Body::Stats => {
                let stats = self.service.stats();
                let stats = StatsReply {
                    open_windows: stats.open_windows as u64,
                    buffered_events: stats.buffered_events as u64,
                    emitted_windows: stats.counters.fired,
                    accepted: stats.counters.accepted,
                    duplicates: stats.counters.duplicates,
                    late: stats.counters.late,
                    ..StatsReply::default()
                };
                reply::stats_ok(out, &self.header(to), &stats);
                Ok(self.no_windows())
            }
            Body::Ingest { mut events, size } => {
                let size = size.unwrap_or(self.config.ingest_size);
                let events = events.events();
                let spec = self.spec(size);
                for (index, event) in events.iter().enumerate() {
                    window_bounds(spec, index, event.ts)?;
                }
                let answer = self.service.ingest(now, size, events, None);
                let counts = answer.result?;
                reply::ingest_ok(out, &self.header(to), counts);
                Ok(answer.fired)
            }
            Body::Subscribe { .. } | Body::Ack { .. } => Err(ProtoError::UnknownType(
                "subscribe and ack are served by the daemon (`window-node serve`); on stdin, \
                 windows come out through close, flush and as they fire"
                    .to_owned(),
            )),
        }
    }

    /// Answers an `assign` (each event's window) or a `process_window` (the windows with their
    /// events), then ingests the events.
    fn place(
        &mut self,
        now: Timestamp,
        out: &mut Vec<u8>,
        to: &ReplyTo,
        (mut batch, size): (Batch<'_>, SizeMs),
        answer: Placement,
    ) -> Result<Range<u64>, ProtoError> {
        let spec = self.spec(size);
        let events = batch.events();
        let (header, frame) = (self.header(to), self.config.frame);
        match answer {
            Placement::EachEvent => {
                let bounds = events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| window_bounds(spec, i, e.ts))
                    .collect::<Result<Vec<_>, _>>()?;
                reply::assigned(out, &header, frame, &events, &bounds);
            }
            Placement::ByWindow => {
                let windows = group_by_window(spec, &events)?;
                for window in &windows {
                    check_formattable(window.bounds, window.events[0])?;
                }
                reply::window_result(out, &header, frame, &windows, &events);
            }
        }
        fired(self.service.ingest(now, size, events, None))
    }

    /// Writes the windows a request fired on their own, each as an unsolicited `window_closed`
    /// to the latest request's sender.
    fn emit_fired(&self, fired: Range<u64>, out: &mut Vec<u8>) {
        let to = ReplyTo {
            msg_id: None,
            src: self.last_src.clone(),
            dest: None,
        };
        let header = self.header(&to);
        for record in self.service.fired(fired) {
            let view = WindowView {
                frame: self.config.frame,
                window: &record.window,
                stamp: Stamp::Numbered { seq: record.seq },
            };
            reply::window_closed(out, &header, &view);
        }
    }

    fn no_windows(&self) -> Range<u64> {
        let next = self.service.next_seq();
        next..next
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

/// What an ingesting request answers.
#[derive(Clone, Copy)]
enum Placement {
    /// `assign`: each event's window, in the events' order.
    EachEvent,
    /// `process_window`: the windows, each with its events.
    ByWindow,
}

/// The service's configuration for the stdin node: no idle watermark.
fn service_config(config: &NodeConfig, epoch: u64) -> Config {
    Config {
        engine: EngineConfig {
            frame: config.frame,
            ..config.engine
        },
        epoch,
        idle_timeout_ms: None,
        ack_timeout_ms: window_service::DEFAULT_ACK_TIMEOUT_MS,
        max_event_ahead_ms: None,
        max_open_windows: None,
        log_retention: window_service::Retention::KEEP_ALL,
        time: TimeBase::Event,
    }
}

/// The windows an ingest fired on its own, or the error that rejected it.
fn fired<T>(answer: Answer<T>) -> Result<Range<u64>, ProtoError> {
    answer.result.map(|_| answer.fired)
}
