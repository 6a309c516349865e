//! The driver: the one task that owns the engine and the store.
//!
//! Connections send it commands over a bounded channel. It takes whatever commands are waiting
//! (up to a bound), runs each as one engine step committed to the store, then makes the whole
//! group durable with one `sync` (group commit), and only then answers the commands and publishes
//! the fired windows to subscribers. Timers (the time purge and the idle watermark) are steps of
//! their own. Nothing else touches the engine or the store, so there are no locks.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use window_core::{
    ClosedWindow, Engine, EngineConfig, Event, EventId, SizeMs, Timestamp, WindowBounds, WindowId,
};
use window_store::{
    Batch, OutputRecord, RememberedRequest, RequestOutcome, StoreError, WindowStore,
};

use crate::clock::Clock;
use crate::error::NodeError;
use crate::lease_redis::FireGate;
use crate::metrics::Metrics;
use crate::node::{batch_error, close_window, recover};
use crate::remembered::Remembered;

/// Commands a group may hold before it is committed.
const MAX_GROUP: usize = 512;
/// Output records a subscription's backlog page holds.
pub const BACKLOG_PAGE: usize = 4096;
/// How often the idle watermark is advanced while no events arrive.
const IDLE_TICK: Duration = Duration::from_millis(50);
/// How often a group that only moved the watermark (an idle tick) is written: not every tick,
/// which would sync 20 times a second while windows wait. A takeover may turn such a watermark
/// back by at most this much; a group that fires or accepts anything is always written.
const WATERMARK_WRITE_EVERY: Duration = Duration::from_secs(1);

/// An event owned by a command (it crosses from a connection to the driver).
#[derive(Debug, Clone)]
pub struct OwnedEvent {
    pub id: EventId,
    pub ts: Timestamp,
    pub key: Option<Box<str>>,
    pub value: Option<f64>,
}

/// What an ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOk {
    pub accepted: usize,
    pub duplicates: usize,
    pub late: usize,
}

/// A late event, as sent to subscribers under `--late emit`.
#[derive(Debug, Clone)]
pub struct LateNotice {
    pub event: OwnedEvent,
    pub bounds: WindowBounds,
}

/// What subscribers receive live.
#[derive(Debug, Clone)]
pub enum Published {
    /// A fired window, durable in the output log.
    Window(Arc<OutputRecord>),
    /// A late event (not logged).
    Late(Arc<LateNotice>),
}

/// A subscription's start: a page of the log, and the live feed once the page reaches the end.
#[derive(Debug)]
pub struct Subscription {
    /// Records from the requested sequence number on.
    pub backlog: Vec<OutputRecord>,
    /// The sequence number after the backlog.
    pub next_seq: u64,
    /// Present when the backlog reaches the end of the log: everything after it arrives here.
    pub live: Option<broadcast::Receiver<Published>>,
}

/// Counters for `stats`.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub open_windows: usize,
    pub buffered_events: usize,
    pub emitted_windows: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub late: u64,
    pub watermark: Option<Timestamp>,
    pub epoch: u64,
}

/// A request to the driver.
#[derive(Debug)]
pub enum Command {
    Ingest {
        events: Vec<OwnedEvent>,
        /// When given, a repeat of the request is answered from its record (see `remembered`).
        request_id: Option<String>,
        reply: oneshot::Sender<Result<IngestOk, NodeError>>,
    },
    Close {
        window_id: WindowId,
        size: Option<SizeMs>,
        key: Option<String>,
        request_id: Option<String>,
        reply: oneshot::Sender<Result<OutputRecord, NodeError>>,
    },
    Flush {
        until: Option<Timestamp>,
        request_id: Option<String>,
        reply: oneshot::Sender<Result<Vec<OutputRecord>, NodeError>>,
    },
    Subscribe {
        from_seq: Option<u64>,
        reply: oneshot::Sender<Result<Subscription, NodeError>>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
}

/// How the driver runs.
#[derive(Debug, Clone, Copy)]
pub struct DriverConfig {
    pub engine: EngineConfig,
    pub size: SizeMs,
    /// After this long without events, event time advances with the wall clock.
    pub idle_timeout: Option<Duration>,
    /// Lease epoch stamped on every fired window.
    pub epoch: u64,
}

/// A reply that waits for the group's sync.
enum Pending {
    Ingest(
        oneshot::Sender<Result<IngestOk, NodeError>>,
        Result<IngestOk, NodeError>,
    ),
    Close(
        oneshot::Sender<Result<OutputRecord, NodeError>>,
        Result<OutputRecord, NodeError>,
    ),
    Flush(
        oneshot::Sender<Result<Vec<OutputRecord>, NodeError>>,
        Result<Vec<OutputRecord>, NodeError>,
    ),
}

impl Pending {
    /// What a successful request did, to remember under its id. Errors are not remembered: a
    /// request answered with an error changed nothing, so running it again is safe.
    fn outcome(&self) -> Option<RequestOutcome> {
        match self {
            Pending::Ingest(_, Ok(ok)) => Some(RequestOutcome::Ingest {
                accepted: ok.accepted as u64,
                duplicates: ok.duplicates as u64,
                late: ok.late as u64,
            }),
            Pending::Close(_, Ok(record)) => Some(RequestOutcome::Close { seq: record.seq }),
            Pending::Flush(_, Ok(records)) => Some(RequestOutcome::Flush {
                first_seq: records.first().map_or(0, |r| r.seq),
                count: records.len() as u64,
            }),
            Pending::Ingest(_, Err(_)) | Pending::Close(_, Err(_)) | Pending::Flush(_, Err(_)) => {
                None
            }
        }
    }
}

/// The request a remembered outcome belongs to, for error texts.
fn outcome_kind(outcome: RequestOutcome) -> &'static str {
    match outcome {
        RequestOutcome::Ingest { .. } => "an ingest",
        RequestOutcome::Close { .. } => "a close",
        RequestOutcome::Flush { .. } => "a flush",
    }
}

/// The part of the engine's state the store's meta record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MetaState {
    counters: window_core::Counters,
    watermark: Option<Timestamp>,
    max_event_time: Option<Timestamp>,
}

/// The driver's state.
pub struct Driver {
    config: DriverConfig,
    engine: Engine,
    store: Box<dyn WindowStore>,
    next_seq: u64,
    publish: broadcast::Sender<Published>,
    metrics: Arc<Metrics>,
    /// Processing time: wall time at start plus monotonic time since.
    clock: Clock,
    /// Processing time of the last ingest that admitted events, and the watermark after it.
    last_arrival: Instant,
    watermark_at_arrival: Option<Timestamp>,
    /// Fired in this group and not yet written to the store.
    unwritten: Vec<OutputRecord>,
    /// Fired in this group and written, published after the sync.
    fired: Vec<Arc<OutputRecord>>,
    late: Vec<Arc<LateNotice>>,
    /// Outcomes of requests with ids, by id; and those of this group, not yet written.
    remembered: Remembered,
    unwritten_requests: Vec<RememberedRequest>,
    /// What the store's meta record holds (counters, watermark, max event time): a group that
    /// changes only these is written too, so a takeover does not turn them back. `None` until
    /// the first write.
    written_meta: Option<MetaState>,
    /// When a batch was last written.
    written_at: Instant,
    /// With a lease that can lapse (Redis): asked before every group.
    gate: Option<Arc<FireGate>>,
}

/// Why the driver stopped before it was told to.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The store failed: the engine and the store no longer agree.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lease ran out (not renewed in time, e.g. after a pause or while Redis did not answer):
    /// another process may hold it now, so this one must not commit anything more.
    #[error(
        "the lease lapsed before this process could renew it (paused, or Redis did not answer in time); another node may hold it now"
    )]
    LeaseLapsed,
}

impl Driver {
    /// Restores the engine from `store`.
    pub fn new(
        config: DriverConfig,
        mut store: Box<dyn WindowStore>,
        publish: broadcast::Sender<Published>,
        metrics: Arc<Metrics>,
    ) -> Result<Driver, StoreError> {
        let opened = recover(&mut *store, config.engine)?;
        let (engine, next_seq) = (opened.engine, opened.next_seq);
        Ok(Driver {
            written_meta: None,
            written_at: Instant::now(),
            remembered: Remembered::restore(opened.requests),
            unwritten_requests: Vec::new(),
            watermark_at_arrival: engine.watermark(),
            config,
            engine,
            store,
            next_seq,
            publish,
            metrics,
            last_arrival: Instant::now(),
            clock: Clock::start(),
            unwritten: Vec::new(),
            fired: Vec::new(),
            late: Vec::new(),
            gate: None,
        })
    }

    /// Makes the driver ask `gate` before every group, and stop with
    /// [`DriverError::LeaseLapsed`] once it says no.
    pub fn with_gate(mut self, gate: Arc<FireGate>) -> Driver {
        self.gate = Some(gate);
        self
    }

    /// Serves commands until every sender is gone; then makes everything durable and returns.
    /// A store failure stops the driver with the error: the engine and the store no longer agree.
    ///
    /// When `stop` turns true the driver takes no new commands, answers those already queued,
    /// syncs, and returns.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), DriverError> {
        // Whether the stop signal has been taken. A local flag, not `*stop.borrow()`: the
        // branch's condition is checked when `select!` starts, so with `borrow()` a stop sent
        // while the driver was busy would disable the branch before it ever ran, and the driver
        // would go on taking commands until `serve` gave up on it.
        let mut stopping = false;
        loop {
            let wake = self.next_wake();
            let first = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => Some(command),
                    None => break,
                },
                () = sleep_until(wake) => None,
                changed = stop.changed(), if !stopping => {
                    stopping = true;
                    if changed.is_ok() {
                        // Refuse new commands; the queued ones still come out of `recv`.
                        commands.close();
                    }
                    continue;
                }
            };
            // Nothing of the group is stepped or committed without the lease: the commands are
            // dropped unanswered, so a follower that forwarded them sends them to the next holder.
            if self.gate.as_ref().is_some_and(|gate| !gate.may_fire()) {
                return Err(DriverError::LeaseLapsed);
            }
            let trigger = Instant::now();
            let mut group = Vec::new();
            group.extend(first);
            while group.len() < MAX_GROUP {
                match commands.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            self.on_timers();
            let mut pending = Vec::new();
            let mut subscribes = Vec::new();
            let mut stats = Vec::new();
            for command in group {
                match command {
                    Command::Subscribe { from_seq, reply } => subscribes.push((from_seq, reply)),
                    Command::Stats { reply } => stats.push(reply),
                    other => pending.push(self.step(other)),
                }
            }
            self.write_group()?;
            self.sync()?;
            // Stats too are answered only once the group is known to be this holder's.
            for reply in stats {
                let _ = reply.send(self.stats());
            }
            for reply in pending {
                match reply {
                    Pending::Ingest(tx, r) => {
                        let _ = tx.send(r);
                    }
                    Pending::Close(tx, r) => {
                        let _ = tx.send(r);
                    }
                    Pending::Flush(tx, r) => {
                        let _ = tx.send(r);
                    }
                }
            }
            self.publish_group(trigger);
            for (from_seq, reply) in subscribes {
                let _ = reply.send(self.subscribe(from_seq));
            }
        }
        self.store.sync()?;
        tracing::info!(
            next_seq = self.next_seq,
            "driver stopped; everything acknowledged is durable"
        );
        Ok(())
    }

    /// Makes the group durable. fsync blocks: on a multi-threaded runtime the driver tells tokio,
    /// so other tasks move to another worker meanwhile.
    fn sync(&mut self) -> Result<(), StoreError> {
        blocking(|| self.store.sync())
    }

    /// When the driver must wake without a command: the next time-purge deadline, or the next
    /// idle tick while windows are open.
    fn next_wake(&self) -> Option<Instant> {
        let deadline = self
            .engine
            .next_deadline()
            .map(|at| self.clock.instant_at(at));
        let idle = self
            .config
            .idle_timeout
            .filter(|_| self.engine.has_open_windows())
            .map(|timeout| (self.last_arrival + timeout).max(Instant::now() + IDLE_TICK));
        match (deadline, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the time purge and the idle watermark; what they fire joins the group's batch.
    fn on_timers(&mut self) {
        let now = self.clock.now();
        let before = self.next_seq;
        if self.engine.next_deadline().is_some_and(|at| at <= now) {
            self.engine.handle_deadline(now);
        }
        if let (Some(timeout), Some(wm)) = (self.config.idle_timeout, self.watermark_at_arrival) {
            let idle = self.last_arrival.elapsed();
            if idle >= timeout && self.engine.has_open_windows() {
                let advanced = wm.as_millis().saturating_add(idle.as_millis() as i64);
                self.engine
                    .handle_watermark(Timestamp::from_millis(advanced));
            }
        }
        self.number_fired(Vec::new());
        if self.next_seq > before {
            tracing::debug!(fired = self.next_seq - before, "timers fired windows");
        }
    }

    /// One command as one engine step.
    /// One command: answered from its record when its request id is remembered, else run as one
    /// engine step, its outcome remembered when it has an id.
    fn step(&mut self, command: Command) -> Pending {
        let id = match &command {
            Command::Ingest { request_id, .. }
            | Command::Close { request_id, .. }
            | Command::Flush { request_id, .. } => request_id.clone(),
            Command::Subscribe { .. } | Command::Stats { .. } => None,
        };
        let Some(id) = id else {
            return self.run_step(command);
        };
        let Some(outcome) = self.remembered.get(&id) else {
            let pending = self.run_step(command);
            if let Some(outcome) = pending.outcome() {
                let record = self.remembered.remember(id, outcome);
                self.unwritten_requests.push(record);
            }
            return pending;
        };
        Metrics::add(&self.metrics.requests_repeated, 1);
        tracing::debug!(request_id = %id, ?outcome, "answering a repeated request from its record");
        let used_for = |what: &str| {
            NodeError::malformed(format!(
                "request_id {id:?} was used for {what} already; give every request its own id"
            ))
        };
        match (command, outcome) {
            (
                Command::Ingest { reply, .. },
                RequestOutcome::Ingest {
                    accepted,
                    duplicates,
                    late,
                },
            ) => Pending::Ingest(
                reply,
                Ok(IngestOk {
                    accepted: accepted as usize,
                    duplicates: duplicates as usize,
                    late: late as usize,
                }),
            ),
            (Command::Close { reply, .. }, RequestOutcome::Close { seq }) => Pending::Close(
                reply,
                self.output_records(seq, 1).and_then(|mut records| {
                    records.pop().ok_or_else(|| {
                        NodeError::Internal(format!("output record {seq} is missing"))
                    })
                }),
            ),
            (Command::Flush { reply, .. }, RequestOutcome::Flush { first_seq, count }) => {
                Pending::Flush(reply, self.output_records(first_seq, count))
            }
            (Command::Ingest { reply, .. }, other) => {
                Pending::Ingest(reply, Err(used_for(outcome_kind(other))))
            }
            (Command::Close { reply, .. }, other) => {
                Pending::Close(reply, Err(used_for(outcome_kind(other))))
            }
            (Command::Flush { reply, .. }, other) => {
                Pending::Flush(reply, Err(used_for(outcome_kind(other))))
            }
            (Command::Subscribe { .. } | Command::Stats { .. }, _) => {
                unreachable!("handled by run")
            }
        }
    }

    /// Output records `first..first + count`: from the store, and from this group's records
    /// not yet written.
    fn output_records(&self, first: u64, count: u64) -> Result<Vec<OutputRecord>, NodeError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let written_end = self.next_seq - self.unwritten.len() as u64;
        let end = first.saturating_add(count);
        let mut records = if first < written_end {
            let limit = usize::try_from(end.min(written_end) - first).unwrap_or(usize::MAX);
            blocking(|| self.store.read_output(first, limit))
                .map_err(|e| NodeError::Internal(format!("reading the output log: {e}")))?
        } else {
            Vec::new()
        };
        records.extend(
            self.unwritten
                .iter()
                .filter(|r| r.seq >= first && r.seq < end)
                .cloned(),
        );
        if records.len() as u64 != count || records.first().is_some_and(|r| r.seq != first) {
            return Err(NodeError::Internal(format!(
                "the output log does not hold records {first}..{end} that a remembered request returned"
            )));
        }
        Ok(records)
    }

    /// One command as one engine step.
    fn run_step(&mut self, command: Command) -> Pending {
        match command {
            Command::Ingest { events, reply, .. } => {
                let result = self.ingest(events);
                self.number_fired(Vec::new());
                Pending::Ingest(reply, result)
            }
            Command::Close {
                window_id,
                size,
                key,
                reply,
                ..
            } => {
                let result = close_window(
                    &mut self.engine,
                    self.config.engine.frame,
                    window_id,
                    size,
                    key.as_deref(),
                );
                let mut records = self.number_fired(result.iter().cloned().collect());
                Pending::Close(
                    reply,
                    // A closed window is exactly one record.
                    result.and_then(|_| {
                        records.pop().ok_or_else(|| {
                            NodeError::Internal("a closed window got no output record".to_owned())
                        })
                    }),
                )
            }
            Command::Flush { until, reply, .. } => {
                let windows = self.engine.flush(until);
                let records = self.number_fired(windows);
                Pending::Flush(reply, Ok(records))
            }
            Command::Subscribe { .. } | Command::Stats { .. } => unreachable!("handled by run"),
        }
    }

    fn ingest(&mut self, events: Vec<OwnedEvent>) -> Result<IngestOk, NodeError> {
        let batch: Vec<Event<'_>> = events
            .iter()
            .map(|e| Event {
                id: e.id.clone(),
                ts: e.ts,
                key: e.key.as_deref(),
                value: e.value,
            })
            .collect();
        let admission = self
            .engine
            .handle_events(self.clock.now(), self.config.size, batch)
            .map_err(batch_error)?;
        if admission.accepted > 0 {
            self.last_arrival = Instant::now();
            self.watermark_at_arrival = self.engine.watermark();
        }
        for late in admission.late {
            self.late.push(Arc::new(LateNotice {
                event: OwnedEvent {
                    id: late.event.id,
                    ts: late.event.ts,
                    key: late.event.key.map(Box::from),
                    value: late.event.value,
                },
                bounds: late.bounds,
            }));
        }
        Metrics::add(&self.metrics.events_accepted, admission.accepted as u64);
        Metrics::add(&self.metrics.events_duplicate, admission.duplicates as u64);
        Metrics::add(&self.metrics.events_late, admission.late_count as u64);
        Metrics::add(&self.metrics.ingest_requests, 1);
        Ok(IngestOk {
            accepted: admission.accepted,
            duplicates: admission.duplicates,
            late: admission.late_count,
        })
    }

    /// Gives the step's fired windows (`returned` first: those a reply returns) their sequence
    /// numbers and keeps them for the group's batch (`write_group`). Returns the records of
    /// `returned`.
    fn number_fired(&mut self, returned: Vec<ClosedWindow>) -> Vec<OutputRecord> {
        let returned_count = returned.len();
        let first = self.unwritten.len();
        for window in returned
            .into_iter()
            .chain(std::iter::from_fn(|| self.engine.poll_closed()))
        {
            self.unwritten.push(OutputRecord {
                seq: self.next_seq,
                epoch: self.config.epoch,
                window,
            });
            self.next_seq += 1;
        }
        self.unwritten[first..first + returned_count].to_vec()
    }

    /// Writes the group's steps as one atomic batch: the engine's change since the last write
    /// and every window fired since. One batch per group rather than per step: a window touched
    /// by many requests of the group is written once.
    fn write_group(&mut self) -> Result<(), StoreError> {
        let dirty = self.engine.take_dirty();
        let meta = MetaState {
            counters: dirty.counters,
            watermark: dirty.watermark,
            max_event_time: dirty.max_event_time,
        };
        let meta_unchanged = match self.written_meta {
            Some(written) if written == meta => true,
            Some(written) if written.counters == meta.counters => {
                self.written_at.elapsed() < WATERMARK_WRITE_EVERY
            }
            _ => false,
        };
        if self.unwritten.is_empty()
            && self.unwritten_requests.is_empty()
            && dirty.windows.is_empty()
            && dirty.removed.is_empty()
            && meta_unchanged
        {
            // Nothing to write, so no batch meets the fence: with a lease that can be lost, ask
            // the store before answering (a read-only check, one round trip).
            if self.gate.is_some() {
                blocking(|| self.store.check_writer())?;
            }
            return Ok(());
        }
        let batch = Batch {
            dirty,
            fired: std::mem::take(&mut self.unwritten),
            requests: std::mem::take(&mut self.unwritten_requests),
        };
        // A network store (Redis) blocks for a round trip: as for `sync`, tell tokio.
        blocking(|| self.store.commit(&batch))?;
        self.written_meta = Some(meta);
        self.written_at = Instant::now();
        Metrics::add(&self.metrics.windows_fired, batch.fired.len() as u64);
        self.fired.extend(batch.fired.into_iter().map(Arc::new));
        Ok(())
    }

    fn publish_group(&mut self, trigger: Instant) {
        let latency = trigger.elapsed().as_micros() as u64;
        for record in self.fired.drain(..) {
            self.metrics.observe_fire_latency(latency);
            // No subscriber is not an error: the log keeps everything.
            let _ = self.publish.send(Published::Window(record));
        }
        for late in self.late.drain(..) {
            let _ = self.publish.send(Published::Late(late));
        }
    }

    fn subscribe(&self, from_seq: Option<u64>) -> Result<Subscription, NodeError> {
        // Not clamped to `next_seq`: a subscriber asking for a sequence number the log has not
        // reached yet gets nothing below it (the contract is "every window with seq >= from_seq");
        // the live feed skips the records before it.
        let from = from_seq.unwrap_or(self.next_seq);
        let backlog = blocking(|| self.store.read_output(from, BACKLOG_PAGE))
            .map_err(|e| NodeError::Internal(format!("reading the output log: {e}")))?;
        let next_seq = from + backlog.len() as u64;
        let live = (next_seq >= self.next_seq).then(|| self.publish.subscribe());
        Ok(Subscription {
            backlog,
            next_seq,
            live,
        })
    }

    fn stats(&self) -> Stats {
        let s = self.engine.stats();
        Stats {
            open_windows: s.open_windows,
            buffered_events: s.buffered_events,
            emitted_windows: self.next_seq,
            accepted: s.counters.accepted,
            duplicates: s.counters.duplicates,
            late: s.counters.late,
            watermark: s.watermark,
            epoch: self.config.epoch,
        }
    }
}

/// Runs blocking store I/O on the driver's task: on a multi-threaded runtime tokio is told, so
/// other tasks move to another worker meanwhile.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The frame and late policy the daemon reports (kept here so `serve` and tests agree).
pub fn describe(config: &DriverConfig) -> String {
    format!(
        "window {} ms, frame {:?}, lateness {:?} ms, purge {:?}, late {:?}",
        config.size,
        config.engine.frame,
        config.engine.allowed_lateness_ms,
        config.engine.purge,
        config.engine.late
    )
}

#[cfg(test)]
mod tests {
    //! The driver's timers under paused tokio time: the runtime jumps to the next timer when
    //! nothing else can run, so these tests take no wall time and measure exact delays.

    use std::num::NonZeroU32;

    use window_core::{CloseReason, IdFrame, LatePolicy, PurgePolicy};
    use window_store::MemoryStore;

    use super::*;

    struct Running {
        commands: mpsc::Sender<Command>,
        feed: broadcast::Receiver<Published>,
        _stop: watch::Sender<bool>,
    }

    fn start(purge: PurgePolicy, lateness_ms: u64, idle: Option<Duration>) -> Running {
        let config = DriverConfig {
            engine: EngineConfig {
                frame: IdFrame::Utc,
                purge,
                allowed_lateness_ms: Some(lateness_ms),
                late: LatePolicy::Drop,
            },
            size: SizeMs::new(1_000).expect("size"),
            idle_timeout: idle,
            epoch: 7,
        };
        let (publish, feed) = broadcast::channel(64);
        let store = Box::new(MemoryStore::in_memory());
        let driver =
            Driver::new(config, store, publish, Arc::new(Metrics::default())).expect("driver");
        let (commands, rx) = mpsc::channel(16);
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(driver.run(rx, stopped));
        Running {
            commands,
            feed,
            _stop: stop,
        }
    }

    async fn ingest(running: &Running, events: &[(i64, i64)]) -> IngestOk {
        let events = events
            .iter()
            .map(|&(id, ts)| OwnedEvent {
                id: EventId::Int(id),
                ts: Timestamp::from_millis(ts),
                key: None,
                value: None,
            })
            .collect();
        let (reply, rx) = oneshot::channel();
        running
            .commands
            .send(Command::Ingest {
                events,
                request_id: None,
                reply,
            })
            .await
            .expect("send");
        rx.await.expect("reply").expect("ingest ok")
    }

    async fn next_window(running: &mut Running) -> Arc<OutputRecord> {
        match running.feed.recv().await.expect("feed") {
            Published::Window(record) => record,
            Published::Late(late) => panic!("unexpected late event {late:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_purge_fires_a_pane_max_age_after_its_first_event() {
        let purge = PurgePolicy {
            max_events: None,
            max_age_ms: Some(300),
        };
        let mut running = start(purge, 60_000, None);
        let opened = Instant::now();
        assert_eq!(ingest(&running, &[(1, 100), (2, 200)]).await.accepted, 2);
        let record = next_window(&mut running).await;
        let waited = opened.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_millis(310),
            "{waited:?}"
        );
        assert_eq!(record.window.reason, CloseReason::Time);
        assert_eq!(record.window.ids, vec![EventId::Int(1), EventId::Int(2)]);
        assert_eq!((record.seq, record.epoch), (0, 7));
        // The next event of the window opens a fresh pane with its own deadline.
        tokio::time::advance(Duration::from_millis(1_000)).await;
        let reopened = Instant::now();
        ingest(&running, &[(3, 300)]).await;
        let record = next_window(&mut running).await;
        assert!(
            reopened.elapsed() >= Duration::from_millis(300),
            "{:?}",
            reopened.elapsed()
        );
        assert_eq!(record.window.ids, vec![EventId::Int(3)]);
        assert_eq!(record.seq, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_watermark_closes_windows_without_new_events() {
        let mut running = start(PurgePolicy::default(), 5_000, Some(Duration::from_secs(10)));
        let arrived = Instant::now();
        ingest(&running, &[(1, 100)]).await;
        // Event time stands at 100 - 5000: nothing is due until the node has been idle for 10 s,
        // after which event time moves with the wall clock and passes the window's end at once.
        let record = next_window(&mut running).await;
        let waited = arrived.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_millis(10_100),
            "{waited:?}"
        );
        assert_eq!(record.window.reason, CloseReason::Watermark);
        assert_eq!(record.window.window.start, Timestamp::from_millis(0));
    }

    #[tokio::test(start_paused = true)]
    async fn length_fires_at_once_and_nothing_fires_early() {
        let purge = PurgePolicy {
            max_events: NonZeroU32::new(2),
            max_age_ms: None,
        };
        let mut running = start(purge, 60_000, Some(Duration::from_secs(30)));
        ingest(&running, &[(1, 100)]).await;
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(matches!(
            running.feed.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        ingest(&running, &[(2, 150)]).await;
        let record = next_window(&mut running).await;
        assert_eq!(record.window.reason, CloseReason::Length);
        assert_eq!(record.window.ids, vec![EventId::Int(1), EventId::Int(2)]);
    }
}

#[cfg(test)]
mod fencing {
    //! The driver over a real Redis store (a `redis-server` on a free loopback port): once another
    //! process has taken the lease, the old driver acknowledges nothing, fires nothing, and stops.

    use std::time::Duration;

    use window_core::{EngineConfig, EventId, SizeMs, Timestamp};
    use window_store::{RedisLease, RedisStore, StoreError, WindowStore};

    use super::*;

    use window_testkit as support;

    fn events(ids: &[i64]) -> Vec<OwnedEvent> {
        ids.iter()
            .map(|&id| OwnedEvent {
                id: EventId::Int(id),
                ts: Timestamp::from_millis(id),
                key: None,
                value: None,
            })
            .collect()
    }

    /// A driver that held the lease at epoch 1 and acknowledged event 1, after another process
    /// took the lease at epoch 2.
    struct Superseded {
        commands: mpsc::Sender<Command>,
        running: tokio::task::JoinHandle<Result<(), DriverError>>,
        feed: broadcast::Receiver<Published>,
        _stop: watch::Sender<bool>,
    }

    async fn superseded(url: &str, ns: &str, gate: Option<Arc<FireGate>>) -> Superseded {
        let ttl = Duration::from_secs(30);
        let mut lease = RedisLease::connect(url, ns).expect("lease");
        let seen = lease.observe().expect("observe");
        assert!(lease.try_acquire(&seen, "a", 1, ttl).expect("acquire"));
        let mut store = RedisStore::connect(url, ns).expect("store");
        store.backend_mut().set_epoch(1);
        let config = DriverConfig {
            engine: EngineConfig::default(),
            size: SizeMs::new(1_000).expect("size"),
            idle_timeout: None,
            epoch: 1,
        };
        let (publish, feed) = broadcast::channel(16);
        let mut driver = Driver::new(
            config,
            Box::new(store),
            publish,
            Arc::new(Metrics::default()),
        )
        .expect("driver");
        if let Some(gate) = gate {
            driver = driver.with_gate(gate);
        }
        let (commands, rx) = mpsc::channel(16);
        let (stop, stopped) = watch::channel(false);
        let running = tokio::spawn(driver.run(rx, stopped));
        let acked = send_ingest(&commands, 1).await;
        assert!(acked.await.expect("reply").is_ok());

        // Another process takes over (here without waiting for the ttl): epoch 2, fence raised.
        assert!(lease.release("a", 1).expect("release"));
        let seen = lease.observe().expect("observe");
        assert!(lease.try_acquire(&seen, "b", 2, ttl).expect("acquire"));
        Superseded {
            commands,
            running,
            feed,
            _stop: stop,
        }
    }

    async fn send_ingest(
        commands: &mpsc::Sender<Command>,
        id: i64,
    ) -> oneshot::Receiver<Result<IngestOk, NodeError>> {
        let (reply, rx) = oneshot::channel();
        commands
            .send(Command::Ingest {
                events: events(&[id]),
                request_id: None,
                reply,
            })
            .await
            .expect("send");
        rx
    }

    fn assert_fenced(stopped: Result<(), DriverError>) {
        assert!(
            matches!(
                stopped,
                Err(DriverError::Store(StoreError::Fenced {
                    epoch: 1,
                    highest: 2
                }))
            ),
            "{stopped:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_superseded_driver_acknowledges_nothing_and_stops() {
        let Some(server) = support::RedisServer::start() else {
            return;
        };
        let (url, ns) = (server.url(), server.fresh_namespace());
        let mut old = superseded(&url, &ns, None).await;

        // The old driver's next group adds an event and fires the open window: refused whole.
        let ingested = send_ingest(&old.commands, 2).await;
        let (reply, flushed) = oneshot::channel();
        // The driver may have stopped on the ingest's group already: then the flush is not even
        // taken (its reply sender is dropped with it), which is as good as refused.
        let _ = old
            .commands
            .send(Command::Flush {
                until: None,
                request_id: None,
                reply,
            })
            .await;
        assert!(ingested.await.is_err(), "the ingest was acknowledged");
        assert!(flushed.await.is_err(), "the flush was answered");
        assert_fenced(old.running.await.expect("join"));
        assert!(old.feed.try_recv().is_err(), "a fired window was published");
        // The store holds what was acknowledged, and nothing of the refused group.
        let mut check = RedisStore::connect(&url, &ns).expect("store");
        let recovered = check.recover().expect("recover").expect("state");
        assert_eq!(recovered.next_seq, 0, "nothing was fired");
        assert_eq!(recovered.snapshot.windows.len(), 1);
        assert_eq!(recovered.snapshot.windows[0].ids, vec![EventId::Int(1)]);
        assert!(check.read_output(0, 10).expect("log").is_empty());
    }

    /// A group that writes nothing (a `stats`) meets no fence in a batch: the driver
    /// asks the store before answering it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_superseded_driver_answers_nothing_even_when_nothing_is_written() {
        let Some(server) = support::RedisServer::start() else {
            return;
        };
        let (url, ns) = (server.url(), server.fresh_namespace());
        let gate = FireGate::always_open_for_tests();
        let old = superseded(&url, &ns, Some(gate)).await;

        // A stats reads only memory and writes nothing. (A duplicate now writes its counters,
        // so it meets the fence in its batch, as the test above shows for any write.)
        let (reply, stats) = oneshot::channel();
        old.commands
            .send(Command::Stats { reply })
            .await
            .expect("send");
        assert!(stats.await.is_err(), "stats were answered");
        assert_fenced(old.running.await.expect("join"));
    }
}

#[cfg(test)]
mod repeats {
    //! Requests with a request id, sent again (as a follower does after a failover): answered
    //! from their record, never run twice, before and after a restart on a real sled directory.

    use window_core::{EngineConfig, EventId, IdFrame, SizeMs, Timestamp};
    use window_store::SledStore;

    use super::*;

    struct Running {
        commands: mpsc::Sender<Command>,
        stop: watch::Sender<bool>,
        running: tokio::task::JoinHandle<Result<(), DriverError>>,
    }

    fn start(dir: &std::path::Path) -> Running {
        let config = DriverConfig {
            engine: EngineConfig {
                frame: IdFrame::Utc,
                ..EngineConfig::default()
            },
            size: SizeMs::new(1_000).expect("size"),
            idle_timeout: None,
            epoch: 1,
        };
        // A restart right after a stop: the stopped driver's sled may still be letting go of
        // its lock (it does when its last background thread ends), as after a process exit.
        let store = SledStore::open_waiting(dir, Duration::from_secs(10)).expect("open sled");
        let (publish, _) = broadcast::channel(64);
        let driver = Driver::new(
            config,
            Box::new(store),
            publish,
            Arc::new(Metrics::default()),
        )
        .expect("driver");
        let (commands, rx) = mpsc::channel(16);
        let (stop, stopped) = watch::channel(false);
        let running = tokio::spawn(driver.run(rx, stopped));
        Running {
            commands,
            stop,
            running,
        }
    }

    impl Running {
        async fn stop(self) {
            self.stop.send(true).expect("stop");
            drop(self.commands);
            self.running.await.expect("join").expect("a clean stop");
        }

        /// Queues an ingest of events `ids` (timestamp = id) under `request_id`.
        async fn ingest(
            &self,
            ids: &[i64],
            request_id: &str,
        ) -> oneshot::Receiver<Result<IngestOk, NodeError>> {
            let events = ids
                .iter()
                .map(|&id| OwnedEvent {
                    id: EventId::Int(id),
                    ts: Timestamp::from_millis(id),
                    key: None,
                    value: None,
                })
                .collect();
            let (reply, rx) = oneshot::channel();
            let request_id = Some(request_id.to_owned());
            self.commands
                .send(Command::Ingest {
                    events,
                    request_id,
                    reply,
                })
                .await
                .expect("send");
            rx
        }

        async fn close(
            &self,
            window: i64,
            request_id: &str,
        ) -> oneshot::Receiver<Result<OutputRecord, NodeError>> {
            let (reply, rx) = oneshot::channel();
            self.commands
                .send(Command::Close {
                    window_id: WindowId(window),
                    size: None,
                    key: None,
                    request_id: Some(request_id.to_owned()),
                    reply,
                })
                .await
                .expect("send");
            rx
        }

        async fn flush(&self, request_id: &str) -> Vec<OutputRecord> {
            let (reply, rx) = oneshot::channel();
            self.commands
                .send(Command::Flush {
                    until: None,
                    request_id: Some(request_id.to_owned()),
                    reply,
                })
                .await
                .expect("send");
            rx.await.expect("reply").expect("flushed")
        }
    }

    fn ok(accepted: usize, duplicates: usize) -> IngestOk {
        IngestOk {
            accepted,
            duplicates,
            late: 0,
        }
    }

    #[tokio::test]
    async fn a_resent_ingest_after_its_window_was_flushed_is_not_emitted_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = start(dir.path());
        let first = node.ingest(&[1, 2], "i1").await.await.expect("reply");
        assert_eq!(first.expect("ingest"), ok(2, 0));
        let flushed = node.flush("f1").await;
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].window.ids, [EventId::Int(1), EventId::Int(2)]);

        // The resends get the first replies; the ingest does not open the window again.
        let again = node.ingest(&[1, 2], "i1").await.await.expect("reply");
        assert_eq!(again.expect("ingest"), ok(2, 0));
        assert_eq!(
            node.flush("f1").await,
            flushed,
            "the same records, seq and all"
        );
        assert!(node.flush("f2").await.is_empty(), "the resent ingest ran");

        // After a restart the records are still there.
        node.stop().await;
        let node = start(dir.path());
        let again = node.ingest(&[1, 2], "i1").await.await.expect("reply");
        assert_eq!(again.expect("ingest"), ok(2, 0));
        assert_eq!(node.flush("f1").await, flushed);
        assert!(node.flush("f3").await.is_empty(), "the resent ingest ran");
        // A new request runs as usual: the same events under a new id open the window afresh.
        let fresh = node.ingest(&[1], "i2").await.await.expect("reply");
        assert_eq!(fresh.expect("ingest"), ok(1, 0));
        node.stop().await;
    }

    #[tokio::test]
    async fn a_close_resent_within_one_group_returns_the_same_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = start(dir.path());
        node.ingest(&[5], "i1")
            .await
            .await
            .expect("reply")
            .expect("ingest");
        // Both closes are queued before the driver runs again, so they share one group: the
        // repeat is answered from the record not yet written.
        let first = node.close(0, "c1").await;
        let repeat = node.close(0, "c1").await;
        let other = node.close(0, "c2").await;
        let first = first.await.expect("reply").expect("closed");
        assert_eq!(repeat.await.expect("reply").expect("closed"), first);
        assert!(
            matches!(other.await.expect("reply"), Err(NodeError::NotOpen(_))),
            "a new close of the closed window is refused"
        );
        // An id used for a close cannot be an ingest's.
        let misused = node.ingest(&[6], "c1").await.await.expect("reply");
        match misused {
            Err(NodeError::Malformed(text)) => {
                assert!(
                    text.contains("\"c1\"") && text.contains("a close"),
                    "{text}"
                )
            }
            other => panic!("a reused id was run: {other:?}"),
        }
        node.stop().await;
        let node = start(dir.path());
        let again = node.close(0, "c1").await.await.expect("reply");
        assert_eq!(again.expect("closed"), first, "remembered across a restart");
        node.stop().await;
    }

    #[tokio::test]
    async fn a_resent_duplicate_only_ingest_is_remembered_too() {
        // An ingest whose events were all duplicates writes no window, yet its outcome must be
        // kept: resent after the window was flushed, it would otherwise be accepted afresh.
        let dir = tempfile::tempdir().expect("temp dir");
        let node = start(dir.path());
        node.ingest(&[1], "i1")
            .await
            .await
            .expect("reply")
            .expect("ingest");
        let duplicate = node.ingest(&[1], "i2").await.await.expect("reply");
        assert_eq!(duplicate.expect("ingest"), ok(0, 1));
        node.stop().await;
        let node = start(dir.path());
        assert_eq!(node.flush("f1").await.len(), 1);
        let again = node.ingest(&[1], "i2").await.await.expect("reply");
        assert_eq!(again.expect("ingest"), ok(0, 1));
        assert!(node.flush("f2").await.is_empty());
        node.stop().await;
    }
}
