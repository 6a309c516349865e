//! The driver shell: the one task that owns the service and the store.
//!
//! Connections send it commands over a bounded channel. It takes whatever commands are waiting
//! (up to a bound, and those that arrive while it steps them), runs each through the service
//! (`window-service`: the engine, the numbering of fired windows, remembered requests), commits
//! the group's batch, makes it durable with one `sync` (group commit), and only then answers the
//! commands and publishes the fired windows to subscribers. Timers (the time purge and the idle
//! watermark) are the service's; the driver only sleeps until the service says and reads the
//! clock. Nothing else touches the service or the store, so there are no locks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use window_core::{EngineConfig, SizeMs, Timestamp, WindowId};
use window_proto::ProtoError;
use window_proto::reply::IngestCounts;
use window_service::{Answer, Config, MemberId, OutputLog, Service, TimeBase};
use window_store::{OutputRecord, StoreError, WindowStore};

pub use window_service::{LateNotice, OwnedEvent, Stats};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::recovery::recover;

/// Commands a group may hold before it is committed.
const MAX_GROUP: usize = 512;
/// Output records a subscription's backlog page holds.
pub const BACKLOG_PAGE: usize = 4096;

/// What subscribers receive live.
#[derive(Debug, Clone)]
pub enum Published {
    /// A fired window, durable in the output log, with the bytes the live feed carried up to
    /// and including it (see [`held_bytes`]): a subscriber is that far along.
    Window(Arc<OutputRecord>, u64),
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
    pub live: Option<Live>,
}

/// A subscriber's live feed, and how far the feed has gone: the records it has not taken yet
/// stay in memory for it, so it is dropped once they hold too many bytes
/// (`--subscriber-buffer-bytes`; see `tcp`).
#[derive(Debug)]
pub struct Live {
    pub feed: broadcast::Receiver<Published>,
    /// The bytes the feed has carried, as each group is published.
    pub head: watch::Receiver<u64>,
    /// Where this subscriber starts: the head when it subscribed.
    pub taken: u64,
}

/// About the memory a fired window holds while a subscriber has not taken it: the record, its
/// ids, their texts and its payloads.
pub fn held_bytes(record: &OutputRecord) -> u64 {
    let window = &record.window;
    let ids: usize = window
        .ids
        .iter()
        .map(|id| match id {
            window_core::EventId::Int(_) => std::mem::size_of::<window_core::EventId>(),
            window_core::EventId::Text(text) | window_core::EventId::Number(text) => {
                std::mem::size_of::<window_core::EventId>() + text.len()
            }
        })
        .sum();
    let payloads: usize = window
        .payloads
        .iter()
        .map(|p| {
            std::mem::size_of::<Option<window_core::Payload>>() + p.as_ref().map_or(0, |p| p.len())
        })
        .sum();
    (std::mem::size_of::<OutputRecord>()
        + window.window.key.as_ref().map_or(0, |k| k.len())
        + ids
        + payloads) as u64
}

/// A request to the driver.
#[derive(Debug)]
pub enum Command {
    Ingest {
        events: Vec<OwnedEvent>,
        /// When given, a repeat of the request is answered from its record.
        request_id: Option<String>,
        reply: oneshot::Sender<Result<IngestCounts, ProtoError>>,
    },
    Close {
        window_id: WindowId,
        size: Option<SizeMs>,
        key: Option<String>,
        request_id: Option<String>,
        reply: oneshot::Sender<Result<OutputRecord, ProtoError>>,
    },
    Flush {
        until: Option<Timestamp>,
        request_id: Option<String>,
        reply: oneshot::Sender<Result<Vec<OutputRecord>, ProtoError>>,
    },
    Subscribe {
        from_seq: Option<u64>,
        reply: oneshot::Sender<Result<Subscription, ProtoError>>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    /// A connection joins a consumer group; its windows arrive on `deliver`.
    JoinGroup {
        name: String,
        member: MemberId,
        max_unacked: u32,
        from_seq: Option<u64>,
        deliver: mpsc::Sender<Delivered>,
        /// The seq the group started at.
        reply: oneshot::Sender<Result<u64, ProtoError>>,
    },
    /// A member's connection ended: what it held goes to the others.
    LeaveGroup {
        member: MemberId,
    },
    /// A member acknowledges windows; answered once that is durable.
    Ack {
        member: MemberId,
        seqs: Vec<u64>,
        reply: oneshot::Sender<Result<u64, ProtoError>>,
    },
}

/// A window a consumer group hands to one member.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub record: Arc<OutputRecord>,
    /// 1 the first time the group hands it out.
    pub delivery: u32,
}

/// How the driver runs.
#[derive(Debug, Clone, Copy)]
pub struct DriverConfig {
    pub engine: EngineConfig,
    pub size: SizeMs,
    /// After this long without events, event time advances with the wall clock.
    pub idle_timeout: Option<Duration>,
    /// Which clock puts events in windows.
    pub time: TimeBase,
    /// How long a group member may hold a window unacknowledged.
    pub ack_timeout_ms: u64,
    /// The furthest an event may be ahead of the clock (`None`: no check).
    pub max_event_ahead_ms: Option<u64>,
    /// The most windows open at once (`None`: no limit).
    pub max_open_windows: Option<usize>,
    /// How much of the output log to keep.
    pub log_retention: window_service::Retention,
    /// Lease epoch stamped on every fired window.
    pub epoch: u64,
}

/// May this process fire now? Asked before every group; once it says no, the driver stops
/// without stepping or committing anything more (the Redis lease keeper's gate says no once
/// the lease may have lapsed).
pub trait Gate: Send + Sync + std::fmt::Debug {
    /// True while this process holds the lease.
    fn may_fire(&self) -> bool;
}

/// A reply that waits for the group's sync.
enum Pending {
    Ingest(
        oneshot::Sender<Result<IngestCounts, ProtoError>>,
        Result<IngestCounts, ProtoError>,
    ),
    Close(
        oneshot::Sender<Result<OutputRecord, ProtoError>>,
        Result<OutputRecord, ProtoError>,
    ),
    Flush(
        oneshot::Sender<Result<Vec<OutputRecord>, ProtoError>>,
        Result<Vec<OutputRecord>, ProtoError>,
    ),
    /// A join's or an ack's answer.
    Group(
        oneshot::Sender<Result<u64, ProtoError>>,
        Result<u64, ProtoError>,
    ),
}

impl Pending {
    /// Answers with `error` instead of the group's result (the group was not made durable).
    fn refuse(self, error: ProtoError) {
        let _ = match self {
            Pending::Ingest(tx, _) => tx.send(Err(error)).map_err(drop),
            Pending::Close(tx, _) => tx.send(Err(error)).map_err(drop),
            Pending::Flush(tx, _) => tx.send(Err(error)).map_err(drop),
            Pending::Group(tx, _) => tx.send(Err(error)).map_err(drop),
        };
    }

    fn send(self) {
        // A client that went away is not the driver's error.
        let _ = match self {
            Pending::Ingest(tx, r) => tx.send(r).map_err(drop),
            Pending::Close(tx, r) => tx.send(r).map_err(drop),
            Pending::Flush(tx, r) => tx.send(r).map_err(drop),
            Pending::Group(tx, r) => tx.send(r).map_err(drop),
        };
    }
}

/// The driver's state.
pub struct Driver {
    config: DriverConfig,
    service: Service,
    store: Box<dyn WindowStore>,
    publish: broadcast::Sender<Published>,
    /// The bytes the live feed has carried ([`held_bytes`] of each window published).
    head: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    /// Processing time: wall time at start plus monotonic time since.
    clock: Clock,
    /// With a lease that can lapse (Redis): asked before every group.
    gate: Option<Arc<dyn Gate>>,
    /// Where each consumer-group member's windows go.
    members: HashMap<MemberId, mpsc::Sender<Delivered>>,
}

/// Why the driver stopped before it was told to.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The store failed: the service and the store no longer agree.
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
    /// Restores the service from `store`.
    pub fn new(
        config: DriverConfig,
        mut store: Box<dyn WindowStore>,
        publish: broadcast::Sender<Published>,
        metrics: Arc<Metrics>,
    ) -> Result<Driver, StoreError> {
        let opened = recover(&mut *store, config.engine)?;
        let clock = Clock::start();
        let service_config = Config {
            engine: config.engine,
            epoch: config.epoch,
            idle_timeout_ms: config
                .idle_timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            time: config.time,
            ack_timeout_ms: config.ack_timeout_ms,
            max_event_ahead_ms: config.max_event_ahead_ms,
            max_open_windows: config.max_open_windows,
            log_retention: config.log_retention,
        };
        let service = Service::restore(service_config, opened, clock.now());
        metrics
            .log_start
            .store(service.log_start(), std::sync::atomic::Ordering::Relaxed);
        Ok(Driver {
            service,
            config,
            store,
            publish,
            head: watch::Sender::new(0),
            metrics,
            clock,
            gate: None,
            members: HashMap::new(),
        })
    }

    /// Makes the driver ask `gate` before every group, and stop with
    /// [`DriverError::LeaseLapsed`] once it says no.
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Driver {
        self.gate = Some(gate);
        self
    }

    /// Serves commands until every sender is gone; then makes everything durable and returns.
    /// A store failure stops the driver with the error: the service and the store no longer
    /// agree.
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
            let wake = self
                .service
                .next_timeout(self.clock.now())
                .map(|at| self.clock.instant_at(at));
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
            let mut group = Vec::new();
            group.extend(first);
            while group.len() < MAX_GROUP {
                match commands.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            if let Err(error) = self.run_group(group, &mut commands) {
                refuse_queued(&mut commands, &error);
                return Err(error);
            }
        }
        self.store.sync()?;
        tracing::info!(
            next_seq = self.service.next_seq(),
            "driver stopped; everything acknowledged is durable"
        );
        Ok(())
    }

    /// One group: the timers, every command as a service step (those queued when it starts, then
    /// those `late` holds by the time they are stepped, up to [`MAX_GROUP`] in all), one batch,
    /// one sync, then the answers and the publication.
    fn run_group(
        &mut self,
        group: Vec<Command>,
        late: &mut mpsc::Receiver<Command>,
    ) -> Result<(), DriverError> {
        let trigger = Instant::now();
        let now = self.clock.now();
        let fired = self.service.handle_timeout(now);
        if !fired.is_empty() {
            tracing::debug!(fired = fired.end - fired.start, "timers fired windows");
        }
        let mut pending = Vec::new();
        let mut subscribes = Vec::new();
        let mut stats = Vec::new();
        let mut taken = group.len();
        let mut queued = group.into_iter();
        loop {
            let command = match queued.next() {
                Some(command) => command,
                // Commands that arrived while the group's first ones were stepped join it: they
                // share its sync instead of waiting for it and then paying one of their own.
                None if taken < MAX_GROUP => match late.try_recv() {
                    Ok(command) => {
                        taken += 1;
                        command
                    }
                    Err(_) => break,
                },
                None => break,
            };
            match command {
                Command::Subscribe { from_seq, reply } => subscribes.push((from_seq, reply)),
                Command::Stats { reply } => stats.push(reply),
                other => pending.extend(self.step(now, other)),
            }
        }
        // Decided before the batch, so that what the groups hand out is durable with it; sent
        // after the sync.
        let deliveries = self.service.poll_deliveries(now);
        let written = self.write_group(now);
        let fired = match written.and_then(|fired| self.sync().map(|()| fired)) {
            Ok(fired) => fired,
            Err(error) => {
                // Nothing of the group is acknowledged; each request is told why, unless another
                // process took over (then a follower sends it on: it gets no answer here).
                if let Some(refusal) = refusal(&error) {
                    for reply in pending {
                        reply.refuse(refusal.clone());
                    }
                    for (_, reply) in subscribes {
                        let _ = reply.send(Err(refusal.clone()));
                    }
                }
                return Err(error.into());
            }
        };
        // The fired windows go out first, right after the sync (they are durable): their
        // subscribers and group members wait no longer than the group's own acknowledgements.
        let fired: Vec<Arc<OutputRecord>> = fired.into_iter().map(Arc::new).collect();
        self.publish_group(&fired, trigger);
        self.deliver(now, deliveries, &fired);
        // Stats too are answered only once the group is known to be this holder's.
        for reply in stats {
            let _ = reply.send(self.service.stats());
        }
        for reply in pending {
            reply.send();
        }
        for (from_seq, reply) in subscribes {
            let _ = reply.send(self.subscribe(from_seq));
        }
        Ok(())
    }

    /// Makes the group durable. fsync blocks: see [`blocking`] (a no-op on the driver's own
    /// thread, see [`RunningDriver`]).
    fn sync(&mut self) -> Result<(), StoreError> {
        blocking(|| self.store.sync())
    }

    /// One command as one service step; its reply waits for the group's sync.
    fn step(&mut self, now: Timestamp, command: Command) -> Option<Pending> {
        let log = BlockingLog(&*self.store);
        Some(match command {
            Command::Ingest {
                mut events,
                request_id,
                reply,
            } => {
                let batch = events.iter_mut().map(OwnedEvent::take_event).collect();
                let answer = self
                    .service
                    .ingest(now, self.config.size, batch, request_id);
                if let (false, Ok(counts)) = (answer.repeated, &answer.result) {
                    Metrics::add(&self.metrics.events_accepted, counts.accepted);
                    Metrics::add(&self.metrics.events_duplicate, counts.duplicates);
                    Metrics::add(&self.metrics.events_late, counts.late);
                    Metrics::add(&self.metrics.ingest_requests, 1);
                }
                Pending::Ingest(reply, self.counted(answer))
            }
            Command::Close {
                window_id,
                size,
                key,
                request_id,
                reply,
            } => {
                let answer = self
                    .service
                    .close(&log, window_id, size, key.as_deref(), request_id);
                Pending::Close(reply, self.counted(answer))
            }
            Command::Flush {
                until,
                request_id,
                reply,
            } => {
                let answer = self.service.flush(&log, until, request_id);
                Pending::Flush(reply, self.counted(answer))
            }
            Command::JoinGroup {
                name,
                member,
                max_unacked,
                from_seq,
                deliver,
                reply,
            } => {
                let joined = self
                    .service
                    .join_group(&name, member, max_unacked, from_seq);
                if joined.is_ok() {
                    self.members.insert(member, deliver);
                }
                Pending::Group(reply, joined)
            }
            Command::LeaveGroup { member } => {
                self.service.leave_group(member);
                self.members.remove(&member);
                return None;
            }
            Command::Ack {
                member,
                seqs,
                reply,
            } => Pending::Group(reply, self.service.ack(member, &seqs)),
            Command::Subscribe { .. } | Command::Stats { .. } => return None,
        })
    }

    /// Sends the windows the consumer groups handed out to their members (after the sync: only
    /// durable windows). A member whose connection is gone leaves, and what it was given goes
    /// to the others at once.
    fn deliver(
        &mut self,
        now: Timestamp,
        mut deliveries: Vec<window_service::Delivery>,
        fresh: &[Arc<OutputRecord>],
    ) {
        loop {
            if deliveries.is_empty() {
                return;
            }
            let records = self.records_of(deliveries.iter().map(|d| d.seq), fresh);
            let mut gone = Vec::new();
            for d in deliveries {
                let Some(record) = records.get(&d.seq) else {
                    // Unreadable now: it stays with the member until the ack timeout.
                    continue;
                };
                let delivered = Delivered {
                    record: Arc::clone(record),
                    delivery: d.delivery,
                };
                let sent = self
                    .members
                    .get(&d.member)
                    .is_some_and(|tx| tx.try_send(delivered).is_ok());
                if !sent {
                    gone.push(d.member);
                }
            }
            if gone.is_empty() {
                return;
            }
            for member in gone {
                self.service.leave_group(member);
                self.members.remove(&member);
            }
            deliveries = self.service.poll_deliveries(now);
        }
    }

    /// The records of `seqs`: from the group just fired, or read from the log in runs.
    fn records_of(
        &self,
        seqs: impl Iterator<Item = u64>,
        fresh: &[Arc<OutputRecord>],
    ) -> HashMap<u64, Arc<OutputRecord>> {
        let mut found = HashMap::new();
        let mut missing: Vec<u64> = Vec::new();
        for seq in seqs {
            match fresh.binary_search_by_key(&seq, |r| r.seq) {
                Ok(at) => {
                    found.insert(seq, Arc::clone(&fresh[at]));
                }
                Err(_) => missing.push(seq),
            }
        }
        missing.sort_unstable();
        for run in missing.chunk_by(|a, b| b == &(a + 1)) {
            let read = blocking(|| self.store.read_output(run[0], run.len()));
            match read {
                Ok(records) => {
                    found.extend(records.into_iter().map(|r| (r.seq, Arc::new(r))));
                }
                Err(error) => tracing::warn!(%error, from = run[0], "reading windows to deliver"),
            }
        }
        found
    }

    /// The answer's result, counting a repeat answered from its record.
    fn counted<T>(&self, answer: Answer<T>) -> Result<T, ProtoError> {
        if answer.repeated {
            Metrics::add(&self.metrics.requests_repeated, 1);
            tracing::debug!("answered a repeated request from its record");
        }
        answer.result
    }

    /// Writes the group's batch (one atomic batch for every step of the group), or, when the
    /// group wrote nothing, asks a store whose writer can be fenced whether this one still may
    /// write (a read-only check), so it never answers from a state it no longer owns. Returns
    /// the fired windows to publish after the sync.
    fn write_group(&mut self, now: Timestamp) -> Result<Vec<OutputRecord>, StoreError> {
        let Some(batch) = self.service.poll_batch(now) else {
            if self.gate.is_some() {
                blocking(|| self.store.check_writer())?;
            }
            return Ok(Vec::new());
        };
        // A network store (Redis) blocks for a round trip: as for `sync`, tell tokio.
        blocking(|| self.store.commit(&batch))?;
        let fired = self.service.on_committed(now, batch);
        Metrics::add(&self.metrics.windows_fired, fired.len() as u64);
        self.metrics.log_start.store(
            self.service.log_start(),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(fired)
    }

    fn publish_group(&mut self, fired: &[Arc<OutputRecord>], trigger: Instant) {
        let latency = trigger.elapsed().as_micros() as u64;
        let mut head = *self.head.borrow();
        for record in fired {
            self.metrics.observe_fire_latency(latency);
            head += held_bytes(record);
            // No subscriber is not an error: the log keeps everything.
            let _ = self
                .publish
                .send(Published::Window(Arc::clone(record), head));
        }
        if !fired.is_empty() {
            self.head.send_replace(head);
        }
        for late in self.service.take_late() {
            let _ = self.publish.send(Published::Late(Arc::new(late)));
        }
    }

    fn subscribe(&self, from_seq: Option<u64>) -> Result<Subscription, ProtoError> {
        // Not clamped to `next_seq`: a subscriber asking for a sequence number the log has not
        // reached yet gets nothing below it (the contract is "every window with seq >= from_seq");
        // the live feed skips the records before it.
        let end = self.service.next_seq();
        let from = from_seq.unwrap_or(end);
        let backlog =
            blocking(|| self.store.read_output(from, BACKLOG_PAGE)).map_err(|e| match e {
                StoreError::Trimmed { from, oldest } => window_service::trimmed(from, oldest),
                e => ProtoError::Internal(format!("reading the output log: {e}")),
            })?;
        let next_seq = from + backlog.len() as u64;
        let live = (next_seq >= end).then(|| Live {
            feed: self.publish.subscribe(),
            head: self.head.subscribe(),
            taken: *self.head.borrow(),
        });
        Ok(Subscription {
            backlog,
            next_seq,
            live,
        })
    }
}

/// A driver running on its own task: the one lifecycle every holding uses (one lease, or one
/// partition's): recover and start, hand out its command sender, notice when it stops by itself
/// (the store failed or the lease lapsed), and stop it cleanly (answer what is queued, sync).
///
/// The driver runs on a thread of its own (with a single-threaded tokio runtime for its timers),
/// not on the runtime's workers: its store calls block (sled's fsync, a Redis round trip), and
/// on a worker every one of them would need `block_in_place`, which hands the worker's other
/// tasks to another thread and back: two thread hand-offs per group, the largest part of a
/// lone request's latency. On its own thread a store call blocks nobody else.
#[derive(Debug)]
pub struct RunningDriver {
    commands: mpsc::Sender<Command>,
    stop: watch::Sender<bool>,
    /// The driver's result, sent when `run` returns; dropped unsent when it panicked.
    done: oneshot::Receiver<Result<(), DriverError>>,
    /// Why the driver's thread panicked, if it did.
    panicked: Arc<std::sync::Mutex<Option<String>>>,
}

/// How long a stopping driver may take to answer what is queued and sync.
const STOP_WITHIN: Duration = Duration::from_secs(30);

impl RunningDriver {
    /// Recovers the open state from `store` and starts the driver; with a `gate` it asks it
    /// before every group.
    pub fn start(
        config: DriverConfig,
        store: Box<dyn WindowStore>,
        subscriber_buffer: usize,
        metrics: Arc<Metrics>,
        gate: Option<Arc<dyn Gate>>,
    ) -> Result<RunningDriver, StoreError> {
        let (publish, _) = broadcast::channel(subscriber_buffer.max(16));
        let mut driver = blocking(|| Driver::new(config, store, publish, metrics))?;
        if let Some(gate) = gate {
            driver = driver.with_gate(gate);
        }
        let (commands, rx) = mpsc::channel(1024);
        let (stop, stopped) = watch::channel(false);
        let (finished, done) = oneshot::channel();
        let panicked = Arc::new(std::sync::Mutex::new(None));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the driver's runtime: {e}")))?;
        let why = Arc::clone(&panicked);
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("window-node-driver".to_owned())
            .spawn(move || {
                let _entered = span.enter();
                let run =
                    std::panic::AssertUnwindSafe(|| runtime.block_on(driver.run(rx, stopped)));
                match std::panic::catch_unwind(run) {
                    Ok(result) => {
                        let _ = finished.send(result);
                    }
                    Err(panic) => {
                        let text = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic without a message".to_owned());
                        if let Ok(mut why) = why.lock() {
                            *why = Some(text);
                        }
                        // `finished` is dropped unsent: the waiting side reads `why`.
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("starting the driver's thread: {e}")))?;
        Ok(RunningDriver {
            commands,
            stop,
            done,
            panicked,
        })
    }

    /// Where connections send their commands.
    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// Resolves when the driver stopped by itself, with why: it does so only when the store
    /// failed or the lease lapsed, and this process must then stop coordinating.
    pub async fn stopped_by_itself(&mut self) -> DriverStopped {
        match (&mut self.done).await {
            Ok(Ok(())) => DriverStopped::Unexpectedly,
            Ok(Err(error)) => DriverStopped::Failed(error),
            Err(_) => DriverStopped::Panicked(panic_text(&self.panicked)),
        }
    }

    /// Stops the driver: it takes no new commands (later ones get error 11), answers those
    /// queued, syncs and returns.
    pub async fn stop(self) -> Result<(), DriverStopped> {
        let _ = self.stop.send(true);
        drop(self.commands);
        match tokio::time::timeout(STOP_WITHIN, self.done).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(DriverStopped::Failed(error)),
            Ok(Err(_)) => Err(DriverStopped::Panicked(panic_text(&self.panicked))),
            Err(_) => Err(DriverStopped::TooSlow),
        }
    }
}

/// Why the driver's thread panicked, as the thread caught it.
fn panic_text(panicked: &std::sync::Mutex<Option<String>>) -> String {
    panicked
        .lock()
        .ok()
        .and_then(|why| why.clone())
        .unwrap_or_else(|| "the driver's thread ended without a result".to_owned())
}

/// Why a driver stopped, when it was not asked to (or did not stop cleanly when asked).
#[derive(Debug, thiserror::Error)]
pub enum DriverStopped {
    /// The store failed or the lease lapsed.
    #[error(transparent)]
    Failed(DriverError),
    /// It returned without an error although nobody asked it to (a bug).
    #[error("the driver stopped unexpectedly")]
    Unexpectedly,
    /// Its task panicked.
    #[error("the driver task failed: {0}")]
    Panicked(String),
    /// It did not answer what was queued and sync within the time allowed.
    #[error("the driver did not stop within 30 s of being asked")]
    TooSlow,
}

/// What a request gets when its group's commit or sync failed with `error`: error 13 when the
/// store failed (the request may or may not be durable; a resend with its `request_id` is
/// safe), error 11 when the store could not be reached, and no answer when another process took
/// over (a follower sends it on to the new holder).
pub fn refusal(error: &StoreError) -> Option<ProtoError> {
    match error {
        StoreError::Fenced { .. } => None,
        StoreError::Unreachable(_) => Some(ProtoError::Unavailable(format!(
            "the store is unreachable, so this request was not acknowledged; this node stops \
             coordinating: retry against another node or later (ingest is idempotent; give close \
             and flush a request_id to make them so): {error}"
        ))),
        _ => Some(ProtoError::Internal(format!(
            "storage failed, so this request was not acknowledged (it may or may not have been \
             stored: send it again with the same request_id once a node serves again); this node \
             stops: {error}"
        ))),
    }
}

/// After a failed group: no new commands are taken, and those already queued are answered
/// like the group's (see [`refusal`]).
fn refuse_queued(commands: &mut mpsc::Receiver<Command>, error: &DriverError) {
    commands.close();
    let refusal = match error {
        DriverError::Store(error) => refusal(error),
        DriverError::LeaseLapsed => None,
    };
    let Some(refusal) = refusal else {
        return;
    };
    while let Ok(command) = commands.try_recv() {
        let _ = match command {
            Command::Ingest { reply, .. } => reply.send(Err(refusal.clone())).map_err(drop),
            Command::Close { reply, .. } => reply.send(Err(refusal.clone())).map_err(drop),
            Command::Flush { reply, .. } => reply.send(Err(refusal.clone())).map_err(drop),
            Command::Subscribe { reply, .. } => reply.send(Err(refusal.clone())).map_err(drop),
            Command::JoinGroup { reply, .. } | Command::Ack { reply, .. } => {
                reply.send(Err(refusal.clone())).map_err(drop)
            }
            // A stats reply has no error: dropped, the connection answers error 11.
            Command::Stats { .. } | Command::LeaveGroup { .. } => Ok(()),
        };
    }
}

/// The store's output log, read without stalling the runtime (see [`blocking`]).
struct BlockingLog<'a>(&'a dyn WindowStore);

impl OutputLog for BlockingLog<'_> {
    fn read_output(&self, from: u64, limit: usize) -> Result<Vec<OutputRecord>, StoreError> {
        blocking(|| self.0.read_output(from, limit))
    }
}

/// Runs blocking store I/O: on a multi-threaded runtime's worker tokio is told, so other tasks
/// move to another worker meanwhile (a hand-off between threads, costly for a short call); on
/// a single-threaded runtime (the driver's own thread, see [`RunningDriver`]) it just runs.
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

    use window_core::{CloseReason, EventId, IdFrame, LatePolicy, PurgePolicy};
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
            time: TimeBase::Event,
            ack_timeout_ms: 30_000,
            max_event_ahead_ms: None,
            max_open_windows: None,
            log_retention: window_service::Retention::KEEP_ALL,
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

    async fn ingest(running: &Running, events: &[(i64, i64)]) -> IngestCounts {
        let events = events
            .iter()
            .map(|&(id, ts)| OwnedEvent {
                id: EventId::Int(id),
                ts: Timestamp::from_millis(ts),
                key: None,
                value: None,
                payload: None,
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
            Published::Window(record, _) => record,
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

    use crate::lease_redis::FireGate;

    fn events(ids: &[i64]) -> Vec<OwnedEvent> {
        ids.iter()
            .map(|&id| OwnedEvent {
                id: EventId::Int(id),
                ts: Timestamp::from_millis(id),
                key: None,
                value: None,
                payload: None,
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
            time: TimeBase::Event,
            ack_timeout_ms: 30_000,
            max_event_ahead_ms: None,
            max_open_windows: None,
            log_retention: window_service::Retention::KEEP_ALL,
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
    ) -> oneshot::Receiver<Result<IngestCounts, ProtoError>> {
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
            time: TimeBase::Event,
            ack_timeout_ms: 30_000,
            max_event_ahead_ms: None,
            max_open_windows: None,
            log_retention: window_service::Retention::KEEP_ALL,
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
        ) -> oneshot::Receiver<Result<IngestCounts, ProtoError>> {
            let events = ids
                .iter()
                .map(|&id| OwnedEvent {
                    id: EventId::Int(id),
                    ts: Timestamp::from_millis(id),
                    key: None,
                    value: None,
                    payload: None,
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
        ) -> oneshot::Receiver<Result<OutputRecord, ProtoError>> {
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

    fn ok(accepted: u64, duplicates: u64) -> IngestCounts {
        IngestCounts {
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
            matches!(other.await.expect("reply"), Err(ProtoError::NotOpen(_))),
            "a new close of the closed window is refused"
        );
        // An id used for a close cannot be an ingest's.
        let misused = node.ingest(&[6], "c1").await.await.expect("reply");
        match misused {
            Err(ProtoError::Malformed(text)) => {
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
