//! The service: the engine, the numbering of fired windows, remembered requests and the
//! group-commit policy, driven by requests and `now`.

use std::ops::Range;

use window_core::{
    ClosedWindow, Counters, Engine, EngineConfig, Event, EventId, Payload, SizeMs, Timestamp,
    WindowBounds, WindowId,
};
use window_proto::ProtoError;
use window_proto::reply::IngestCounts;
use window_store::{Batch, OutputRecord, RememberedRequest, RequestOutcome, StoreError};

use crate::close::close_window;
use crate::fingerprint;
use crate::groups::{Delivery, Groups, MemberId};
use crate::remembered::Remembered;
use crate::retention::{FiredTimes, Retention};
use window_proto::reply::GroupStats;

/// How often the idle watermark is advanced while no events arrive.
pub const IDLE_TICK_MS: i64 = 50;
/// How often a group that only moved the watermark (an idle tick) is written: not every tick,
/// which would sync 20 times a second while windows wait. A takeover may turn such a watermark
/// back by at most this much; a group that fires or accepts anything is always written.
pub const WATERMARK_WRITE_EVERY_MS: i64 = 1_000;

/// Which clock puts events in windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeBase {
    /// The events' own timestamps (event time).
    #[default]
    Event,
    /// Ingest time: every event is stamped with the `now` at which its request is applied, and
    /// the watermark follows `now` minus the allowed lateness, so a window fires when `now`
    /// passes its end (plus the lateness) with no further event.
    Ingest,
}

/// How the service runs.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The firing rules.
    pub engine: EngineConfig,
    /// Which clock puts events in windows.
    pub time: TimeBase,
    /// The lease epoch stamped on every fired window (0 without a lease).
    pub epoch: u64,
    /// After this long without events (ms of processing time), event time advances with
    /// processing time (the daemon's `--idle-timeout`); `None` turns it off.
    pub idle_timeout_ms: Option<u64>,
    /// How long a consumer group's member may hold a window unacknowledged before it goes to
    /// another member (`--ack-timeout`).
    pub ack_timeout_ms: u64,
    /// With event time: an event more than this far ahead of `now` refuses its request (a typo
    /// like the year 9999 would move the watermark past every real event); `None` turns the
    /// check off (`--max-event-ahead`).
    pub max_event_ahead_ms: Option<u64>,
    /// At most this many windows open at once: a request that would open more is refused whole
    /// with error 11, to be sent again once windows have fired (`--max-open-windows`); `None`
    /// for no limit.
    pub max_open_windows: Option<usize>,
    /// How much of the output log to keep (`--log-retention`, `--log-retention-age`); older
    /// windows are trimmed in the batches, except those a consumer group has not acknowledged.
    pub log_retention: Retention,
}

/// `--ack-timeout` unless told otherwise.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 30_000;

/// Where a repeated `close` or `flush` reads the records it returned the first time: the
/// store's output log. A read-only view, so that the service itself does no I/O: the caller
/// decides how a read is done (on the daemon, without stalling its runtime).
pub trait OutputLog {
    /// Output records with `seq >= from`, in order, at most `limit`.
    fn read_output(&self, from: u64, limit: usize) -> Result<Vec<OutputRecord>, StoreError>;
}

/// An output log that holds nothing: for a service without a store, which never remembers a
/// request and so never reads one back.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLog;

impl OutputLog for NoLog {
    fn read_output(&self, _from: u64, _limit: usize) -> Result<Vec<OutputRecord>, StoreError> {
        Ok(Vec::new())
    }
}

/// An event owned by its request (it crosses from a connection to the service's owner).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedEvent {
    /// Its id.
    pub id: EventId,
    /// Its event time.
    pub ts: Timestamp,
    /// Its key.
    pub key: Option<Box<str>>,
    /// Its value.
    pub value: Option<f64>,
    /// Its payload, as JSON text.
    pub payload: Option<Payload>,
}

impl OwnedEvent {
    /// The event, owning its key and payload (to cross a channel or wait for a commit).
    pub fn of(event: Event<'_>) -> OwnedEvent {
        OwnedEvent {
            id: event.id,
            ts: event.ts,
            key: event.key.map(Box::from),
            value: event.value,
            payload: event.payload,
        }
    }

    /// The event, moving its id and payload out (this one keeps the key the event borrows, and
    /// is left holding the id 0 and no payload): a batch handed to the engine once needs no
    /// copy of a string id nor a second reference to a payload.
    pub fn take_event(&mut self) -> Event<'_> {
        let OwnedEvent {
            id,
            ts,
            key,
            value,
            payload,
        } = self;
        Event {
            id: std::mem::replace(id, EventId::Int(0)),
            ts: *ts,
            key: key.as_deref(),
            value: *value,
            payload: payload.take(),
        }
    }
}

/// A late event, for subscribers under `--late emit`.
#[derive(Debug, Clone, PartialEq)]
pub struct LateNotice {
    /// The event.
    pub event: OwnedEvent,
    /// The window it was late for.
    pub bounds: WindowBounds,
}

/// What one request came to.
#[derive(Debug)]
pub struct Answer<T> {
    /// The reply's content, or the error that rejected the request (and changed nothing).
    pub result: Result<T, ProtoError>,
    /// It was answered from its remembered record, not run again.
    pub repeated: bool,
    /// The sequence numbers of the windows the step fired on its own (by the rules, not
    /// returned by the reply): see [`Service::fired`].
    pub fired: Range<u64>,
}

/// Counters and state, for `stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Windows open now.
    pub open_windows: usize,
    /// Events held by their current panes.
    pub buffered_events: usize,
    /// The output log's length: the sequence number the next fired window gets.
    pub next_seq: u64,
    /// The engine's running totals.
    pub counters: Counters,
    /// The event-time watermark.
    pub watermark: Option<Timestamp>,
    /// The lease epoch.
    pub epoch: u64,
    /// The consumer groups.
    pub groups: Vec<GroupStats>,
    /// The firing rules and the clock windows are on.
    pub engine: EngineConfig,
    pub time: TimeBase,
    /// Requests refused for an event too far ahead of the clock, since this process started.
    pub refused_ahead: u64,
    /// Requests refused because they would have opened more windows than allowed, since this
    /// process started.
    pub refused_open_windows: u64,
    /// The oldest seq the output log keeps (`--log-retention`).
    pub log_start: u64,
}

/// The part of the engine's state the store's meta record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MetaState {
    counters: Counters,
    watermark: Option<Timestamp>,
    max_event_time: Option<Timestamp>,
}

/// The service's state. See the crate documentation for how to drive it.
#[derive(Debug)]
pub struct Service {
    config: Config,
    engine: Engine,
    /// The sequence number of the next fired window: the only place windows are numbered.
    next_seq: u64,
    /// Fired since the last batch, numbered densely up to `next_seq`, not yet in a batch.
    unwritten: Vec<OutputRecord>,
    /// Outcomes of requests with ids, by id; and those not yet in a batch.
    remembered: Remembered,
    unwritten_requests: Vec<RememberedRequest>,
    /// Late events since the last [`Service::take_late`].
    late: Vec<LateNotice>,
    /// What the store's meta record holds, and when it was written: a group that changes only
    /// the watermark is written at most every [`WATERMARK_WRITE_EVERY_MS`]. `None` before the
    /// first batch.
    written: Option<(MetaState, Timestamp)>,
    /// Processing time of the last ingest that accepted events, and the watermark after it.
    last_arrival: Timestamp,
    watermark_at_arrival: Option<Timestamp>,
    /// The consumer groups reading the output log.
    groups: Groups,
    /// The seq after the last window of a committed batch: where a new group starts.
    committed_end: u64,
    /// Requests refused for an event too far ahead, since this process started.
    refused_ahead: u64,
    refused_open_windows: u64,
    /// The oldest seq the output log keeps (its retention's mark, as committed).
    log_start: u64,
    /// When the log's windows fired, with an age limit.
    fired_times: Option<FiredTimes>,
}

impl Service {
    /// A service with no open windows, nothing logged and nothing remembered, that keeps no
    /// change for a store (the stdin node without `--data-dir`).
    pub fn new(config: Config, now: Timestamp) -> Service {
        let opened = window_store::Opened {
            engine: Engine::new(config.engine),
            next_seq: 0,
            requests: Vec::new(),
            groups: Vec::new(),
            log_start: 0,
        };
        Service::restore(config, opened, now)
    }

    /// A service that goes on from what a store recovered (`window_store::open`).
    pub fn restore(config: Config, opened: window_store::Opened, now: Timestamp) -> Service {
        let window_store::Opened {
            engine,
            next_seq,
            requests,
            groups,
            log_start,
        } = opened;
        Service {
            fired_times: config
                .log_retention
                .age_ms
                .map(|age| FiredTimes::new(age, next_seq, now)),
            groups: Groups::restore(groups, config.ack_timeout_ms),
            committed_end: next_seq,
            refused_ahead: 0,
            refused_open_windows: 0,
            log_start,
            watermark_at_arrival: engine.watermark(),
            config,
            engine,
            next_seq,
            unwritten: Vec::new(),
            remembered: Remembered::restore(requests),
            unwritten_requests: Vec::new(),
            late: Vec::new(),
            written: None,
            last_arrival: now,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Adds `events` (each in its window of `size`) to the open state. A repeated `request_id`
    /// is answered from its record. A rejected batch changes nothing.
    pub fn ingest(
        &mut self,
        now: Timestamp,
        size: SizeMs,
        events: Vec<Event<'_>>,
        request_id: Option<String>,
    ) -> Answer<IngestCounts> {
        let fingerprint = request_id
            .as_ref()
            .map(|_| fingerprint::ingest(size, &events));
        let answer = self.remembering(Op::Ingest, request_id, fingerprint, |service| {
            (service.admit(now, size, events).map(Some), Vec::new())
        });
        answer.map(|done| match done {
            Done::Ingest(counts) => Ok(counts),
            _ => Err(ProtoError::Internal("an ingest returned records".into())),
        })
    }

    /// Closes one open window, returning its output record. A repeated `request_id` is
    /// answered from its record, read back from `log`.
    pub fn close(
        &mut self,
        log: &dyn OutputLog,
        window_id: WindowId,
        size: Option<SizeMs>,
        key: Option<&str>,
        request_id: Option<String>,
    ) -> Answer<OutputRecord> {
        let frame = self.config.engine.frame;
        let fingerprint = Some(fingerprint::close(window_id, size, key));
        let answer =
            self.remembering(
                Op::Close,
                request_id,
                fingerprint,
                |service| match close_window(&mut service.engine, frame, window_id, size, key) {
                    Ok(window) => (Ok(None), vec![window]),
                    Err(error) => (Err(error), Vec::new()),
                },
            );
        answer.map(|done| {
            self.records(log, done)?
                .pop()
                .ok_or_else(|| ProtoError::Internal("a closed window got no output record".into()))
        })
    }

    /// Fires every open window ending at or before `until` (all when `None`), returning their
    /// output records. A repeated `request_id` is answered from its record, read back from
    /// `log`.
    pub fn flush(
        &mut self,
        log: &dyn OutputLog,
        until: Option<Timestamp>,
        request_id: Option<String>,
    ) -> Answer<Vec<OutputRecord>> {
        let fingerprint = Some(fingerprint::flush(until));
        let answer = self.remembering(Op::Flush, request_id, fingerprint, |service| {
            (Ok(None), service.engine.flush(until))
        });
        answer.map(|done| self.records(log, done))
    }

    /// Runs what is due at `now`: the time purge, and the idle watermark (after
    /// `idle_timeout_ms` without events, event time advances with processing time). Returns
    /// the sequence numbers of the windows it fired.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Range<u64> {
        if self.engine.next_deadline().is_some_and(|at| at <= now) {
            self.engine.handle_deadline(now);
        }
        if let Some(watermark) = self.ingest_watermark(now)
            && self.engine.first_end().is_some_and(|end| end <= watermark)
        {
            self.engine.handle_watermark(watermark);
        }
        if let (Some(timeout), Some(wm)) = (self.config.idle_timeout_ms, self.watermark_at_arrival)
        {
            let idle = now
                .as_millis()
                .saturating_sub(self.last_arrival.as_millis());
            if idle >= timeout as i64 && self.engine.has_open_windows() {
                self.engine
                    .handle_watermark(Timestamp::from_millis(wm.as_millis().saturating_add(idle)));
            }
        }
        self.groups.handle_timeout(now);
        self.number_fired(Vec::new()).1
    }

    /// When [`Service::handle_timeout`] must run next without a request: the next time-purge
    /// deadline, or the next idle tick while windows are open.
    pub fn next_timeout(&self, now: Timestamp) -> Option<Timestamp> {
        let deadline = self.engine.next_deadline();
        let idle = self
            .config
            .idle_timeout_ms
            .filter(|_| self.engine.has_open_windows())
            .map(|timeout| {
                let due = self.last_arrival.as_millis().saturating_add(timeout as i64);
                Timestamp::from_millis(due.max(now.as_millis().saturating_add(IDLE_TICK_MS)))
            });
        // With ingest time, the first open window fires once `now` passes its end plus the
        // allowed lateness.
        let ends = self
            .ingest_watermark(now)
            .and(self.engine.first_end())
            .map(|end| Timestamp::from_millis(end.as_millis().saturating_add(self.lateness_ms())));
        let acks = self.groups.next_timeout();
        [deadline, idle, ends, acks].into_iter().flatten().min()
    }

    /// With ingest time, the watermark at `now`: `now` minus the allowed lateness.
    fn ingest_watermark(&self, now: Timestamp) -> Option<Timestamp> {
        (self.config.time == TimeBase::Ingest)
            .then(|| Timestamp::from_millis(now.as_millis().saturating_sub(self.lateness_ms())))
    }

    fn lateness_ms(&self) -> i64 {
        let lateness = self.config.engine.allowed_lateness_ms.unwrap_or(0);
        i64::try_from(lateness).unwrap_or(i64::MAX)
    }

    /// The group's batch: the engine's change since the last batch, every window fired since,
    /// and the outcomes of the requests remembered since, to commit atomically and sync before
    /// any of the group is answered. `None` when the group changed nothing worth writing (only
    /// the watermark, within [`WATERMARK_WRITE_EVERY_MS`] of the last write).
    ///
    /// After a commit, hand the batch back to [`Service::on_committed`]. A failed commit leaves
    /// the service ahead of its store: the owner must stop (fail-stop), not go on.
    pub fn poll_batch(&mut self, now: Timestamp) -> Option<Batch> {
        let dirty = self.engine.take_dirty();
        let meta = meta_of(&dirty);
        let meta_unchanged = match self.written {
            Some((written, _)) if written == meta => true,
            Some((written, at)) if written.counters == meta.counters => {
                now.as_millis().saturating_sub(at.as_millis()) < WATERMARK_WRITE_EVERY_MS
            }
            _ => false,
        };
        let groups = self.groups.take_dirty();
        if self.unwritten.is_empty()
            && self.unwritten_requests.is_empty()
            && dirty.windows.is_empty()
            && dirty.removed.is_empty()
            && groups.is_empty()
            && meta_unchanged
        {
            return None;
        }
        Some(Batch {
            dirty,
            fired: std::mem::take(&mut self.unwritten),
            requests: std::mem::take(&mut self.unwritten_requests),
            groups,
            trim_log_below: self.trim_point(now),
        })
    }

    /// Where the output log may start at `now`: `--log-retention` windows back from its end, or
    /// past the windows older than `--log-retention-age`, whichever is further, but never past
    /// a window a consumer group has not acknowledged; `None` when that is not above where it
    /// starts already.
    fn trim_point(&self, now: Timestamp) -> Option<u64> {
        let retention = self.config.log_retention;
        let by_count = retention
            .windows
            .map(|keep| self.next_seq.saturating_sub(keep.max(1)));
        let by_age = retention
            .age_ms
            .zip(self.fired_times.as_ref())
            .and_then(|(age, times)| {
                let age = i64::try_from(age).unwrap_or(i64::MAX);
                times.fired_by(Timestamp::from_millis(now.as_millis().saturating_sub(age)))
            });
        let mut below = by_count.max(by_age)?;
        if let Some(pinned) = self.groups.lowest_unacked() {
            below = below.min(pinned);
        }
        (below > self.log_start).then_some(below)
    }

    /// The oldest seq the output log keeps.
    pub fn log_start(&self) -> u64 {
        self.log_start
    }

    /// Notes that `batch` (from [`Service::poll_batch`]) is committed, at `now`; returns its
    /// fired windows, to publish once the batch is synced.
    pub fn on_committed(&mut self, now: Timestamp, batch: Batch) -> Vec<OutputRecord> {
        self.written = Some((meta_of(&batch.dirty), now));
        if let Some(below) = batch.trim_log_below {
            self.log_start = self.log_start.max(below);
        }
        if let Some(last) = batch.fired.last() {
            self.committed_end = last.seq + 1;
        }
        if let Some(times) = &mut self.fired_times {
            times.trimmed(self.log_start);
            times.fired(self.committed_end, now);
        }
        batch.fired
    }

    /// `member` joins consumer group `name` (see [`Groups::join`]); returns the seq the group
    /// started at.
    pub fn join_group(
        &mut self,
        name: &str,
        member: MemberId,
        max_unacked: u32,
        from_seq: Option<u64>,
    ) -> Result<u64, ProtoError> {
        self.groups.join(
            name,
            member,
            max_unacked,
            from_seq,
            (self.log_start, self.committed_end),
        )
    }

    /// `member` left (its connection ended): what it held goes to the others.
    pub fn leave_group(&mut self, member: MemberId) {
        self.groups.leave(member);
    }

    /// `member` acknowledges `seqs` (see [`Groups::ack`]). Durable with the next batch: answer
    /// after its sync.
    pub fn ack(&mut self, member: MemberId, seqs: &[u64]) -> Result<u64, ProtoError> {
        self.groups.ack(member, seqs)
    }

    /// Windows to hand to group members now, numbered ones included. Call it before
    /// [`Service::poll_batch`], so that the groups' new state goes in the same batch as the
    /// windows, and send the deliveries only after that batch's sync.
    pub fn poll_deliveries(&mut self, now: Timestamp) -> Vec<Delivery> {
        self.groups.poll_deliveries(now, self.next_seq)
    }

    /// Each consumer group, for `stats`.
    pub fn group_stats(&self) -> Vec<GroupStats> {
        self.groups.stats(self.committed_end)
    }

    /// Late events since the last call (under `--late emit`), to publish with the group.
    pub fn take_late(&mut self) -> Vec<LateNotice> {
        std::mem::take(&mut self.late)
    }

    /// The records of windows fired since the last batch, by sequence number (those of an
    /// [`Answer::fired`] range, before [`Service::poll_batch`] takes them).
    pub fn fired(&self, seqs: Range<u64>) -> &[OutputRecord] {
        let first = self.next_seq - self.unwritten.len() as u64;
        let from = seqs
            .start
            .saturating_sub(first)
            .min(self.unwritten.len() as u64) as usize;
        let to = seqs
            .end
            .saturating_sub(first)
            .min(self.unwritten.len() as u64) as usize;
        &self.unwritten[from..to.max(from)]
    }

    /// The sequence number the next fired window gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Counters and state, for `stats`.
    pub fn stats(&self) -> Stats {
        let s = self.engine.stats();
        Stats {
            open_windows: s.open_windows,
            buffered_events: s.buffered_events,
            next_seq: self.next_seq,
            counters: s.counters,
            watermark: s.watermark,
            epoch: self.config.epoch,
            groups: self.group_stats(),
            engine: self.config.engine,
            time: self.config.time,
            refused_ahead: self.refused_ahead,
            refused_open_windows: self.refused_open_windows,
            log_start: self.log_start,
        }
    }

    fn admit(
        &mut self,
        now: Timestamp,
        size: SizeMs,
        mut events: Vec<Event<'_>>,
    ) -> Result<IngestCounts, ProtoError> {
        if self.config.time == TimeBase::Ingest {
            for event in &mut events {
                event.ts = now;
            }
        }
        self.check_ahead(now, &events)?;
        self.check_open_windows(size, &events)?;
        let admission = self.engine.handle_events(now, size, events)?;
        if admission.accepted > 0 {
            self.last_arrival = now;
            self.watermark_at_arrival = self.engine.watermark();
        }
        self.late
            .extend(admission.late.into_iter().map(|late| LateNotice {
                event: OwnedEvent::of(late.event),
                bounds: late.bounds,
            }));
        Ok(IngestCounts {
            accepted: admission.accepted as u64,
            duplicates: admission.duplicates as u64,
            late: admission.late_count as u64,
        })
    }

    /// Refuses a batch that would open more windows than `max_open_windows` allows (counted):
    /// error 11, since the same request succeeds once windows have fired.
    fn check_open_windows(&mut self, size: SizeMs, events: &[Event<'_>]) -> Result<(), ProtoError> {
        let Some(limit) = self.config.max_open_windows else {
            return Ok(());
        };
        let open = self.engine.open_windows();
        // A batch cannot open more windows than it has events: only near the limit is it
        // worth counting which windows it would open.
        if open.saturating_add(events.len()) <= limit {
            return Ok(());
        }
        let new = self.engine.windows_opened_by(size, events);
        if open.saturating_add(new) <= limit {
            return Ok(());
        }
        self.refused_open_windows += 1;
        Err(ProtoError::Unavailable(format!(
            "this request would open {new} windows while {open} are open, over the limit of {limit} (--max-open-windows); nothing of it was taken: send it again once windows have fired, or raise --max-open-windows"
        )))
    }

    /// Refuses a batch with an event more than `max_event_ahead_ms` ahead of `now` (counted).
    fn check_ahead(&mut self, now: Timestamp, events: &[Event<'_>]) -> Result<(), ProtoError> {
        let Some(ahead) = self.config.max_event_ahead_ms else {
            return Ok(());
        };
        let limit = now
            .as_millis()
            .saturating_add(i64::try_from(ahead).unwrap_or(i64::MAX));
        let Some((index, event)) = events
            .iter()
            .enumerate()
            .find(|(_, e)| e.ts.as_millis() > limit)
        else {
            return Ok(());
        };
        self.refused_ahead += 1;
        Err(ProtoError::malformed(format!(
            "events[{index}].timestamp {} is more than {ahead} ms ahead of this node's clock ({}): it would move the watermark past every real event; fix the timestamp, or raise --max-event-ahead (0s turns the check off)",
            event.ts, now
        )))
    }

    /// Runs `step` unless `request_id` is remembered (then answers from the record); remembers
    /// the outcome of a successful step that had an id. `step` returns its counts (an ingest)
    /// and the windows its reply returns; windows that fired on their own are numbered after
    /// those.
    fn remembering(
        &mut self,
        op: Op,
        request_id: Option<String>,
        fingerprint: Option<u64>,
        step: impl FnOnce(&mut Service) -> (Result<Option<IngestCounts>, ProtoError>, Vec<ClosedWindow>),
    ) -> Answer<Done> {
        if let Some(id) = &request_id
            && let Some((outcome, first)) = self.remembered.get(id)
        {
            // A record without a fingerprint (written before they were kept) cannot tell.
            let same = first.is_none() || first == fingerprint;
            let result = match op.recall(outcome) {
                Some(done) if same => Ok(done),
                Some(_) => Err(changed(id, outcome)),
                None => Err(reused(id, outcome)),
            };
            return Answer {
                result,
                repeated: true,
                fired: self.next_seq..self.next_seq,
            };
        }
        let (result, returned) = step(self);
        let (returned, fired) = self.number_fired(returned);
        let result = result.map(|counts| match counts {
            Some(counts) => Done::Ingest(counts),
            None => Done::Records(returned),
        });
        if let (Some(id), Ok(done)) = (request_id, &result) {
            let record = self.remembered.remember(id, op.outcome(done), fingerprint);
            self.unwritten_requests.push(record);
        }
        Answer {
            result,
            repeated: false,
            fired,
        }
    }

    /// The records a `close` or `flush` returns: fired now, or read back for a repeat.
    fn records(&self, log: &dyn OutputLog, done: Done) -> Result<Vec<OutputRecord>, ProtoError> {
        match done {
            Done::Records(records) => Ok(records),
            Done::Recalled { first, count } => self.output_records(log, first, count),
            Done::Ingest(_) => Err(ProtoError::Internal(
                "a close or flush returned counts".into(),
            )),
        }
    }

    /// Gives the step's fired windows (`returned` first: those a reply returns) their sequence
    /// numbers, keeping them for the next batch. Returns the records of `returned`, and the
    /// range of those that fired on their own.
    fn number_fired(&mut self, returned: Vec<ClosedWindow>) -> (Vec<OutputRecord>, Range<u64>) {
        let returned_count = returned.len();
        let first = self.unwritten.len();
        let spontaneous_from = self.next_seq + returned_count as u64;
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
        let returned = self.unwritten[first..first + returned_count].to_vec();
        (returned, spontaneous_from..self.next_seq)
    }

    /// Output records `first..first + count`: from the log, and from those not yet written.
    fn output_records(
        &self,
        log: &dyn OutputLog,
        first: u64,
        count: u64,
    ) -> Result<Vec<OutputRecord>, ProtoError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let written_end = self.next_seq - self.unwritten.len() as u64;
        let end = first.saturating_add(count);
        let mut records = if first < written_end {
            let limit = usize::try_from(end.min(written_end) - first).unwrap_or(usize::MAX);
            log.read_output(first, limit).map_err(|e| match e {
                StoreError::Trimmed { oldest, .. } => ProtoError::malformed(format!(
                    "this request_id was answered before with windows seq {first} to {}, which the output log no longer keeps (--log-retention: it starts at seq {oldest}); the first answer cannot be given again: use a new request_id for a new request",
                    end - 1
                )),
                e => ProtoError::Internal(format!("reading the output log: {e}")),
            })?
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
            return Err(ProtoError::Internal(format!(
                "the output log does not hold records {first}..{end} that a remembered request returned"
            )));
        }
        Ok(records)
    }
}

impl<T> Answer<T> {
    fn map<U>(self, f: impl FnOnce(T) -> Result<U, ProtoError>) -> Answer<U> {
        Answer {
            result: self.result.and_then(f),
            repeated: self.repeated,
            fired: self.fired,
        }
    }
}

/// The requests that may carry a request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Ingest,
    Close,
    Flush,
}

/// What a request that may carry an id did.
#[derive(Debug)]
enum Done {
    /// An ingest's counts.
    Ingest(IngestCounts),
    /// The records a close or flush fired now.
    Records(Vec<OutputRecord>),
    /// The records a repeated close or flush returned the first time, to read back.
    Recalled { first: u64, count: u64 },
}

impl Op {
    /// The outcome to remember of what the request did.
    fn outcome(self, done: &Done) -> RequestOutcome {
        match (self, done) {
            (_, Done::Ingest(counts)) => RequestOutcome::Ingest {
                accepted: counts.accepted,
                duplicates: counts.duplicates,
                late: counts.late,
            },
            (Op::Close, Done::Records(records)) => RequestOutcome::Close {
                seq: records.first().map_or(0, |r| r.seq),
            },
            (_, Done::Records(records)) => RequestOutcome::Flush {
                first_seq: records.first().map_or(0, |r| r.seq),
                count: records.len() as u64,
            },
            (Op::Close, Done::Recalled { first, .. }) => RequestOutcome::Close { seq: *first },
            (_, Done::Recalled { first, count }) => RequestOutcome::Flush {
                first_seq: *first,
                count: *count,
            },
        }
    }

    /// What a repeat answers, from the remembered outcome; `None` when the id was used by a
    /// request of another kind.
    fn recall(self, outcome: RequestOutcome) -> Option<Done> {
        match (self, outcome) {
            (
                Op::Ingest,
                RequestOutcome::Ingest {
                    accepted,
                    duplicates,
                    late,
                },
            ) => Some(Done::Ingest(IngestCounts {
                accepted,
                duplicates,
                late,
            })),
            (Op::Close, RequestOutcome::Close { seq }) => Some(Done::Recalled {
                first: seq,
                count: 1,
            }),
            (Op::Flush, RequestOutcome::Flush { first_seq, count }) => Some(Done::Recalled {
                first: first_seq,
                count,
            }),
            _ => None,
        }
    }
}

fn meta_of(dirty: &window_core::Dirty) -> MetaState {
    MetaState {
        counters: dirty.counters,
        watermark: dirty.watermark,
        max_event_time: dirty.max_event_time,
    }
}

/// The error for a request id that a request of the same kind with other content used before:
/// answering it from the record would drop what is new in it.
fn changed(id: &str, outcome: RequestOutcome) -> ProtoError {
    ProtoError::malformed(format!(
        "request_id {id:?} was used already for {} with other content; a resend must repeat its request exactly, and a new request needs an id of its own",
        what(outcome)
    ))
}

fn what(outcome: RequestOutcome) -> &'static str {
    match outcome {
        RequestOutcome::Ingest { .. } => "an ingest",
        RequestOutcome::Close { .. } => "a close",
        RequestOutcome::Flush { .. } => "a flush",
    }
}

/// The error for a request id that a request of another kind used before.
fn reused(id: &str, outcome: RequestOutcome) -> ProtoError {
    ProtoError::malformed(format!(
        "request_id {id:?} was used for {} already; give every request its own id",
        what(outcome)
    ))
}
