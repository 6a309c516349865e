//! The engine: the open state of every window and the rules that fire them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet, HashTable};

use crate::error::{BatchError, CloseError};
use crate::event::{Event, EventId, Payload};
use crate::payloads::PanePayloads;
use crate::spec::{EngineConfig, LatePolicy, SizeMs, WindowBounds, WindowSpec};
use crate::time::Timestamp;
use crate::window::{Aggregate, CloseReason, ClosedWindow, WindowKey, WindowSnapshot};

/// The sans-I/O windowing state machine. See the crate documentation for how to drive it.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    /// Open windows by (start, size), then by key. Ordered so that the windows due first (by
    /// watermark or flush) are at the front.
    slots: BTreeMap<(Timestamp, SizeMs), Slot>,
    /// Pane deadlines of the time purge: (deadline, window). Empty unless `max_age_ms` is set.
    deadlines: BTreeSet<(Timestamp, WindowKey)>,
    /// Fired windows not yet taken by `poll_closed`.
    closed: VecDeque<ClosedWindow>,
    /// Highest event time admitted so far.
    max_event_time: Option<Timestamp>,
    /// Events whose window ends at or before the watermark are late. Never moves backwards.
    watermark: Option<Timestamp>,
    counters: Counters,
    hasher: DefaultHashBuilder,
    /// What changed since the last `take_dirty`; `None` unless a store asked for it.
    changes: Option<ChangeLog>,
    /// How many ids the last window without a key held when it fired: room a new window
    /// without a key is given at once, since windows in a row tend to be alike and a list that
    /// grows to thousands copies itself and rehashes its index about ten times.
    unkeyed_hint: usize,
}

/// Windows changed or removed since the last `take_dirty`.
#[derive(Debug, Default)]
struct ChangeLog {
    /// Windows whose `dirty` flag was set, in the order they were first touched.
    touched: Vec<WindowKey>,
    /// Windows that left the open state.
    removed: Vec<WindowKey>,
}

/// What changed in the open state since the last [`Engine::take_dirty`]: what a store must
/// write, in one atomic batch, together with the windows fired in the same step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dirty {
    /// Windows that left the open state. Apply these before `windows`: a window can leave and
    /// open afresh within one step.
    pub removed: Vec<WindowKey>,
    /// Windows opened or changed.
    pub windows: Vec<WindowDelta>,
    /// Highest event time admitted.
    pub max_event_time: Option<Timestamp>,
    /// The watermark.
    pub watermark: Option<Timestamp>,
    /// Running totals.
    pub counters: Counters,
}

/// The change to one open window: ids appended since the last take, and its pane state.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowDelta {
    /// Which window.
    pub window: WindowKey,
    /// Position of `appended[0]` in the window's list of ids (the number of ids taken before).
    pub first_index: usize,
    /// Ids admitted since the last take, in order.
    pub appended: Vec<EventId>,
    /// Their payloads, one per appended id (`None` for an event without one, and for the ids
    /// of panes that fired already); empty when none of them has one to keep.
    pub payloads: Vec<Option<Payload>>,
    /// `ids[pane_start..]` is the current pane.
    pub pane_start: usize,
    /// Aggregate of the current pane.
    pub aggregate: Option<Aggregate>,
    /// Processing time of the current pane's first event.
    pub pane_opened_at: Option<Timestamp>,
}

/// Running totals since the engine (or the state it was restored from) started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events added to a window.
    pub accepted: u64,
    /// Events whose id was already in their window.
    pub duplicates: u64,
    /// Events whose window the watermark had already closed.
    pub late: u64,
    /// Windows and panes emitted, for any reason.
    pub fired: u64,
}

/// A point-in-time view of the engine, for `stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineStats {
    /// Windows in the open state.
    pub open_windows: usize,
    /// Events in the current panes of the open windows.
    pub buffered_events: usize,
    /// Ids remembered for deduplication (buffered events plus those of fired panes).
    pub remembered_ids: usize,
    /// The event-time watermark, if any.
    pub watermark: Option<Timestamp>,
    /// Running totals.
    pub counters: Counters,
}

/// What became of a batch of events.
#[derive(Debug, Default, PartialEq)]
pub struct Admission<'a> {
    /// Events added to their window.
    pub accepted: usize,
    /// Events whose id was already in their window (ignored).
    pub duplicates: usize,
    /// Events behind the watermark. Returned only under [`LatePolicy::Emit`]; counted always.
    pub late: Vec<LateEvent<'a>>,
    /// Late events counted (also under [`LatePolicy::Drop`]).
    pub late_count: usize,
}

/// An event that arrived after the watermark had closed its window.
#[derive(Debug, PartialEq)]
pub struct LateEvent<'a> {
    /// The event.
    pub event: Event<'a>,
    /// The window it would have belonged to.
    pub bounds: WindowBounds,
}

/// Which window `close` should close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSelector<'a> {
    /// The window's start.
    pub start: Timestamp,
    /// Its size, when several sizes may share the start.
    pub size: Option<SizeMs>,
    /// Its key; `None` matches the window without a key if there is one, else any key.
    pub key: Option<&'a str>,
}

/// The whole open state, as `snapshot` takes it and `restore` rebuilds it.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineSnapshot {
    /// Every open window, in (start, size, key) order.
    pub windows: Vec<WindowSnapshot>,
    /// Highest event time admitted.
    pub max_event_time: Option<Timestamp>,
    /// The watermark.
    pub watermark: Option<Timestamp>,
    /// Running totals.
    pub counters: Counters,
}

impl Engine {
    /// An engine with no open windows.
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            slots: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            closed: VecDeque::new(),
            max_event_time: None,
            watermark: None,
            counters: Counters::default(),
            hasher: DefaultHashBuilder::default(),
            changes: None,
            unkeyed_hint: 0,
        }
    }

    /// Starts recording changes for [`take_dirty`](Engine::take_dirty). A store-backed caller
    /// turns this on once, right after `new` or `restore`; without it nothing is recorded.
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(ChangeLog::default);
    }

    /// What changed since the last call (everything since `track_changes` the first time).
    /// Returns an empty change when tracking is off.
    pub fn take_dirty(&mut self) -> Dirty {
        let mut dirty = Dirty {
            max_event_time: self.max_event_time,
            watermark: self.watermark,
            counters: self.counters,
            ..Dirty::default()
        };
        let Some(log) = self.changes.as_mut() else {
            return dirty;
        };
        dirty.removed = std::mem::take(&mut log.removed);
        for key in std::mem::take(&mut log.touched) {
            let Some(window) = open_window(&mut self.slots, &key) else {
                continue;
            };
            if !window.dirty {
                continue;
            }
            window.dirty = false;
            let first_index = window.persisted;
            window.persisted = window.ids.len();
            dirty.windows.push(WindowDelta {
                window: key,
                first_index,
                appended: window.ids[first_index..].to_vec(),
                payloads: window.payloads_from(first_index),
                pane_start: window.pane_start,
                aggregate: window.aggregate,
                pane_opened_at: window.pane_opened_at,
            });
        }
        dirty
    }

    /// An engine holding exactly the state of `snapshot`.
    pub fn restore(config: EngineConfig, snapshot: EngineSnapshot) -> Engine {
        let mut engine = Engine::new(config);
        engine.max_event_time = snapshot.max_event_time;
        engine.watermark = snapshot.watermark;
        engine.counters = snapshot.counters;
        for snap in snapshot.windows {
            let pane_start = snap.pane_start.min(snap.ids.len());
            let mut window = match OpenWindow::restored(snap.ids, pane_start, &engine.hasher) {
                Ok(mut window) => {
                    let ids = window.ids.len();
                    let payloads = snap.payloads.into_iter().take(ids).enumerate();
                    for (at, payload) in payloads.skip(pane_start) {
                        window.payloads.push(at - pane_start, payload);
                    }
                    window
                }
                // A snapshot that repeats an id: admitted id by id, each id once.
                Err(ids) => {
                    let mut window = OpenWindow {
                        ids: Vec::with_capacity(ids.len()),
                        pane_start,
                        ..OpenWindow::default()
                    };
                    for (at, id) in ids.into_iter().enumerate() {
                        if window.admit(id, &engine.hasher) && window.ids.len() > pane_start {
                            let payload = snap.payloads.get(at).cloned().flatten();
                            window.payloads.push(window.pane_len() - 1, payload);
                        }
                    }
                    window
                }
            };
            window.aggregate = snap.aggregate;
            window.pane_opened_at = snap.pane_opened_at;
            // A snapshot with a repeated id keeps it once; the pane cannot start past the end.
            window.pane_start = window.pane_start.min(window.ids.len());
            // Restored state is the store's state: nothing to write back.
            window.persisted = window.ids.len();
            if let (Some(opened), Some(age)) = (window.pane_opened_at, config.purge.max_age_ms)
                && window.pane_len() > 0
            {
                engine
                    .deadlines
                    .insert((deadline(opened, age), snap.window.clone()));
            }
            let slot = engine
                .slots
                .entry((snap.window.start, snap.window.size))
                .or_default();
            match snap.window.key {
                None => slot.unkeyed = Some(window),
                Some(key) => {
                    slot.keyed.insert(key, window);
                }
            }
        }
        engine
    }

    /// The end of the open window that ends first, if any is open.
    pub fn first_end(&self) -> Option<Timestamp> {
        self.slots
            .keys()
            .map(|&(start, size)| {
                Timestamp::from_millis(start.as_millis().saturating_add(size.get()))
            })
            .min()
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Adds a batch of events of windows of `size`, at processing time `now`.
    ///
    /// All or nothing: if any event's window does not fit in `i64` milliseconds the batch is
    /// rejected and nothing changes. Otherwise each event is added to its window unless its id is
    /// already there (a duplicate) or the watermark has passed the window's end (late). Windows
    /// that fire as a result (by length, or by the watermark the batch advanced) are queued for
    /// [`poll_closed`](Engine::poll_closed).
    pub fn handle_events<'a>(
        &mut self,
        now: Timestamp,
        size: SizeMs,
        events: Vec<Event<'a>>,
    ) -> Result<Admission<'a>, BatchError> {
        let spec = WindowSpec {
            size,
            frame: self.config.frame,
        };
        // The batch as runs of events in a row that share their window (its bounds and key):
        // most do, so the division runs and the window is looked up once per run.
        let mut runs: Vec<(WindowBounds, usize)> = Vec::new();
        let mut last: Option<(WindowBounds, Option<&str>)> = None;
        for (index, e) in events.iter().enumerate() {
            if let Some((b, key)) = last
                && b.contains(e.ts)
            {
                if key == e.key
                    && let Some((_, len)) = runs.last_mut()
                {
                    *len += 1;
                } else {
                    runs.push((b, 1));
                    last = Some((b, e.key));
                }
                continue;
            }
            let b = spec.bounds(e.ts).ok_or(BatchError::WindowOverflow {
                index,
                ts: e.ts,
                size,
            })?;
            runs.push((b, 1));
            last = Some((b, e.key));
        }

        let mut admission = Admission::default();
        let Engine {
            config,
            slots,
            deadlines,
            closed,
            max_event_time,
            watermark,
            counters,
            hasher,
            changes,
            unkeyed_hint,
        } = self;
        let purge = config.purge;
        // One event into its window (found by the caller), as a step of the loop below.
        let mut admit = |window: &mut OpenWindow, event: Event<'a>, bounds: WindowBounds| {
            let key = event.key;
            if !window.admit(event.id, hasher) {
                // A duplicate's payload is ignored with it.
                admission.duplicates += 1;
                counters.duplicates += 1;
                return;
            }
            window.payloads.push(window.pane_len() - 1, event.payload);
            admission.accepted += 1;
            counters.accepted += 1;
            // Only admitted events move event time: a retried duplicate says nothing new.
            if *max_event_time < Some(event.ts) {
                *max_event_time = Some(event.ts);
            }
            touch(changes, window, || window_key(bounds.start, size, key));
            if let Some(value) = event.value {
                Aggregate::add(&mut window.aggregate, value);
            }
            if window.pane_opened_at.is_none() {
                window.pane_opened_at = Some(now);
                if let Some(age) = purge.max_age_ms {
                    deadlines.insert((deadline(now, age), window_key(bounds.start, size, key)));
                }
            }
            if purge
                .max_events
                .is_some_and(|max| window.pane_len() >= max.get() as usize)
            {
                let window_key = window_key(bounds.start, size, key);
                if let (Some(opened), Some(age)) = (window.pane_opened_at, purge.max_age_ms) {
                    deadlines.remove(&(deadline(opened, age), window_key.clone()));
                }
                let fired = window.take_pane(window_key, CloseReason::Length);
                counters.fired += 1;
                closed.push_back(fired);
            }
        };
        let (mut late_count, mut late) = (0, Vec::new());
        let mut events = events.into_iter();
        for (bounds, len) in runs {
            let mut run = events.by_ref().take(len);
            if watermark.is_some_and(|wm| bounds.end <= wm) {
                for event in run {
                    late_count += 1;
                    if config.late == LatePolicy::Emit {
                        late.push(LateEvent { event, bounds });
                    }
                }
                continue;
            }
            let Some(first) = run.next() else {
                continue;
            };
            let window = slots
                .entry((bounds.start, size))
                .or_default()
                .get_or_open(first.key, *unkeyed_hint);
            // Room for the run at once: a list and an index that grow copy and rehash.
            window.reserve(len, hasher);
            admit(window, first, bounds);
            for event in run {
                admit(window, event, bounds);
            }
        }
        admission.late_count += late_count;
        admission.late = late;
        self.counters.late += late_count as u64;
        self.advance_watermark();
        Ok(admission)
    }

    /// Fires every pane whose time-purge deadline is at or before `now`.
    pub fn handle_deadline(&mut self, now: Timestamp) {
        while let Some(first) = self.deadlines.first() {
            if first.0 > now {
                break;
            }
            let Some((_, key)) = self.deadlines.pop_first() else {
                break;
            };
            let Some(window) = open_window(&mut self.slots, &key) else {
                continue;
            };
            if window.pane_len() > 0 {
                touch(&mut self.changes, window, || key.clone());
                let closed = window.take_pane(key, CloseReason::Time);
                self.counters.fired += 1;
                self.closed.push_back(closed);
            }
        }
    }

    /// Moves the watermark forward to `watermark` (if it is ahead) and fires every window that
    /// ends at or before it. This is how a caller advances event time without events, e.g.
    /// after an idle timeout.
    pub fn handle_watermark(&mut self, watermark: Timestamp) {
        if self.watermark < Some(watermark) {
            self.watermark = Some(watermark);
            self.fire_until(watermark, CloseReason::Watermark);
        }
    }

    /// The next fired window, in firing order.
    pub fn poll_closed(&mut self) -> Option<ClosedWindow> {
        self.closed.pop_front()
    }

    /// When to call [`handle_deadline`](Engine::handle_deadline) next, if anything waits on time.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Closes one open window now and returns its current pane (which is empty if the pane just
    /// fired by length or time). The window leaves the open state; a later event of it opens it
    /// afresh.
    pub fn close(&mut self, selector: WindowSelector<'_>) -> Result<ClosedWindow, CloseError> {
        let lo = (selector.start, selector.size.unwrap_or(SizeMs::MIN));
        let hi = (selector.start, selector.size.unwrap_or(SizeMs::MAX));
        let mut matches = Vec::new();
        for (&(start, size), slot) in self.slots.range(lo..=hi) {
            for key in slot.keys() {
                if selector.key.is_none() || selector.key == key {
                    matches.push(window_key(start, size, key));
                }
            }
        }
        // Without a key, the window without a key is meant when there is one.
        if selector.key.is_none() && matches.len() > 1 {
            let unkeyed: Vec<WindowKey> = matches
                .iter()
                .filter(|w| w.key.is_none())
                .cloned()
                .collect();
            if unkeyed.len() == 1 {
                matches = unkeyed;
            }
        }
        match matches.len() {
            0 => Err(CloseError::NotOpen),
            1 => {
                let key = matches.pop().unwrap_or_else(|| unreachable!());
                Ok(self.remove_window(key, CloseReason::Close))
            }
            _ => {
                matches.sort();
                Err(CloseError::Ambiguous(matches))
            }
        }
    }

    /// Closes every open window that ends at or before `until` (all, when `None`) and returns
    /// them in (start, size, key) order. Windows whose current pane is empty (it just fired by
    /// length or time) leave the open state without being returned.
    pub fn flush(&mut self, until: Option<Timestamp>) -> Vec<ClosedWindow> {
        let until = until.unwrap_or(Timestamp::from_millis(i64::MAX));
        let before = self.closed.len();
        self.fire_until(until, CloseReason::Flush);
        self.closed.drain(before..).collect()
    }

    /// Counts of what is open and what has happened.
    pub fn stats(&self) -> EngineStats {
        let mut stats = EngineStats {
            open_windows: 0,
            buffered_events: 0,
            remembered_ids: 0,
            watermark: self.watermark,
            counters: self.counters,
        };
        for window in self.slots.values().flat_map(Slot::windows) {
            stats.open_windows += 1;
            stats.buffered_events += window.pane_len();
            stats.remembered_ids += window.ids.len();
        }
        stats
    }

    /// How many windows are open (cheap: one count per window start).
    pub fn open_windows(&self) -> usize {
        self.slots.values().map(Slot::len).sum()
    }

    /// How many windows `events` (into windows of `size`) would open that are not open now,
    /// each counted once; events the watermark makes late open none.
    pub fn windows_opened_by(&self, size: SizeMs, events: &[Event<'_>]) -> usize {
        let spec = WindowSpec {
            size,
            frame: self.config.frame,
        };
        let mut fresh: HashSet<(Timestamp, Option<&str>)> = HashSet::new();
        for event in events {
            let Some(bounds) = spec.bounds(event.ts) else {
                continue;
            };
            if self.watermark.is_some_and(|wm| bounds.end <= wm) {
                continue;
            }
            let open = self
                .slots
                .get(&(bounds.start, size))
                .is_some_and(|slot| slot.get(event.key).is_some());
            if !open {
                fresh.insert((bounds.start, event.key));
            }
        }
        fresh.len()
    }

    /// True while any window is open.
    pub fn has_open_windows(&self) -> bool {
        !self.slots.is_empty()
    }

    /// The event-time watermark, if one has been set.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark
    }

    /// The whole open state. Take it after draining [`poll_closed`](Engine::poll_closed): fired
    /// windows still queued are not part of it.
    pub fn snapshot(&self) -> EngineSnapshot {
        let mut windows = Vec::new();
        for (&(start, size), slot) in &self.slots {
            let mut keys: Vec<_> = slot.keys().collect();
            keys.sort();
            for key in keys {
                let Some(window) = slot.get(key) else {
                    continue;
                };
                windows.push(WindowSnapshot {
                    window: window_key(start, size, key),
                    ids: window.ids.clone(),
                    payloads: window.payloads_from(0),
                    pane_start: window.pane_start,
                    aggregate: window.aggregate,
                    pane_opened_at: window.pane_opened_at,
                });
            }
        }
        EngineSnapshot {
            windows,
            max_event_time: self.max_event_time,
            watermark: self.watermark,
            counters: self.counters,
        }
    }

    /// Advances the watermark from the highest event time, if the watermark is on.
    fn advance_watermark(&mut self) {
        let (Some(lateness), Some(max)) = (self.config.allowed_lateness_ms, self.max_event_time)
        else {
            return;
        };
        let lateness = i64::try_from(lateness).unwrap_or(i64::MAX);
        self.handle_watermark(Timestamp::from_millis(
            max.as_millis().saturating_sub(lateness),
        ));
    }

    /// Fires, with `reason`, every window that ends at or before `until`, in (start, size, key)
    /// order. Windows with an empty current pane are removed silently.
    fn fire_until(&mut self, until: Timestamp, reason: CloseReason) {
        let due: Vec<(Timestamp, SizeMs)> = self
            .slots
            .range(..(until, SizeMs::MIN))
            .map(|(&at, _)| at)
            .filter(|&(start, size)| {
                start.as_millis().saturating_add(size.get()) <= until.as_millis()
            })
            .collect();
        for (start, size) in due {
            let Some(slot) = self.slots.remove(&(start, size)) else {
                continue;
            };
            for (key, window) in slot.into_sorted_windows() {
                let key = WindowKey { start, size, key };
                self.forget_deadline(&key, &window);
                if let Some(log) = &mut self.changes {
                    log.removed.push(key.clone());
                }
                if key.key.is_none() {
                    self.unkeyed_hint = window.ids.len();
                }
                if window.pane_len() > 0 {
                    let closed = window.into_pane(key, reason);
                    self.counters.fired += 1;
                    self.closed.push_back(closed);
                }
            }
        }
    }

    /// Removes one window from the open state and returns its current pane.
    fn remove_window(&mut self, key: WindowKey, reason: CloseReason) -> ClosedWindow {
        let slot_key = (key.start, key.size);
        let window = match self.slots.get_mut(&slot_key) {
            Some(slot) => slot.remove(key.key.as_deref()).unwrap_or_default(),
            None => OpenWindow::default(),
        };
        if self.slots.get(&slot_key).is_some_and(Slot::is_empty) {
            self.slots.remove(&slot_key);
        }
        self.forget_deadline(&key, &window);
        if let Some(log) = &mut self.changes {
            log.removed.push(key.clone());
        }
        self.counters.fired += 1;
        window.into_pane(key, reason)
    }

    fn forget_deadline(&mut self, key: &WindowKey, window: &OpenWindow) {
        if let (Some(opened), Some(age)) = (window.pane_opened_at, self.config.purge.max_age_ms) {
            self.deadlines.remove(&(deadline(opened, age), key.clone()));
        }
    }
}

/// Marks `window` as changed in this step (recording its key the first time).
fn touch(
    changes: &mut Option<ChangeLog>,
    window: &mut OpenWindow,
    key: impl FnOnce() -> WindowKey,
) {
    if let Some(log) = changes
        && !window.dirty
    {
        window.dirty = true;
        log.touched.push(key());
    }
}

fn deadline(opened: Timestamp, age_ms: u64) -> Timestamp {
    let age = i64::try_from(age_ms).unwrap_or(i64::MAX);
    Timestamp::from_millis(opened.as_millis().saturating_add(age))
}

/// The open window `key` names, if it is open.
fn open_window<'a>(
    slots: &'a mut BTreeMap<(Timestamp, SizeMs), Slot>,
    key: &WindowKey,
) -> Option<&'a mut OpenWindow> {
    slots
        .get_mut(&(key.start, key.size))
        .and_then(|slot| slot.get_mut(key.key.as_deref()))
}

fn window_key(start: Timestamp, size: SizeMs, key: Option<&str>) -> WindowKey {
    WindowKey {
        start,
        size,
        key: key.map(Box::from),
    }
}

/// The windows of one (start, size): at most one without a key, any number with.
#[derive(Debug, Default)]
struct Slot {
    unkeyed: Option<OpenWindow>,
    keyed: HashMap<Box<str>, OpenWindow>,
}

impl Slot {
    /// The window of `key`, opened if it is not open (without a key, with room for `hint` ids).
    fn get_or_open(&mut self, key: Option<&str>, hint: usize) -> &mut OpenWindow {
        match key {
            None => self
                .unkeyed
                .get_or_insert_with(|| OpenWindow::with_capacity(hint)),
            Some(key) => self.keyed.entry_ref(key).or_default(),
        }
    }

    fn get(&self, key: Option<&str>) -> Option<&OpenWindow> {
        match key {
            None => self.unkeyed.as_ref(),
            Some(key) => self.keyed.get(key),
        }
    }

    fn get_mut(&mut self, key: Option<&str>) -> Option<&mut OpenWindow> {
        match key {
            None => self.unkeyed.as_mut(),
            Some(key) => self.keyed.get_mut(key),
        }
    }

    fn remove(&mut self, key: Option<&str>) -> Option<OpenWindow> {
        match key {
            None => self.unkeyed.take(),
            Some(key) => self.keyed.remove(key),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.unkeyed.is_some()) + self.keyed.len()
    }

    fn keys(&self) -> impl Iterator<Item = Option<&str>> {
        let unkeyed = self.unkeyed.as_ref().map(|_| None);
        unkeyed
            .into_iter()
            .chain(self.keyed.keys().map(|k| Some(&**k)))
    }

    fn windows(&self) -> impl Iterator<Item = &OpenWindow> {
        self.unkeyed.iter().chain(self.keyed.values())
    }

    /// The slot's windows in the order they fire: the window without a key, then by key.
    ///
    /// Keys are unique within a slot, so one order is right; it is found by sorting each key's
    /// first 8 bytes held inline (big-endian, zero-padded: the same order as the bytes'), and
    /// the keys themselves only where those tie. Comparing the boxed keys directly cost a cache
    /// miss or two a comparison: with 1000 keys a window, 4 % of the driver thread's time
    /// (`memcmp`, in a profile of the Redis 1000-key bench row), 1 % now.
    fn into_sorted_windows(self) -> Vec<(Option<Box<str>>, OpenWindow)> {
        let mut sorted = Vec::with_capacity(self.len());
        sorted.extend(self.unkeyed.map(|w| (None, w)));
        let (mut keys, mut windows): (Vec<Box<str>>, Vec<Option<OpenWindow>>) = self
            .keyed
            .into_iter()
            .map(|(key, window)| (key, Some(window)))
            .unzip();
        let mut order: Vec<(u64, usize)> = keys
            .iter()
            .enumerate()
            .map(|(at, key)| (key_prefix(key), at))
            .collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| keys[a.1].cmp(&keys[b.1])));
        for (_, at) in order {
            if let Some(window) = windows[at].take() {
                sorted.push((Some(std::mem::take(&mut keys[at])), window));
            }
        }
        sorted
    }

    fn is_empty(&self) -> bool {
        self.unkeyed.is_none() && self.keyed.is_empty()
    }
}

/// The first 8 bytes of `key`, big-endian, zero-padded: two keys whose prefixes differ are in
/// the order of their prefixes.
fn key_prefix(key: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let head = &key.as_bytes()[..key.len().min(8)];
    bytes[..head.len()].copy_from_slice(head);
    u64::from_be_bytes(bytes)
}

/// A window holding fewer ids than this is deduplicated by a scan; from this many on, by a hash
/// index of its ids.
const INDEX_FROM: usize = 16;

/// The room a run of events may take at once in a window holding fewer ids than this.
const RESERVE_MIN: usize = 1024;

/// The most ids a new window is given room for at once (a hint, not a limit: 24 bytes an id).
const MAX_HINT: usize = 1 << 20;

/// One open window.
#[derive(Debug, Default)]
struct OpenWindow {
    /// Every id admitted since the window opened. Ids of fired panes stay so that a retried
    /// event is still recognised as a duplicate until the window leaves the open state.
    ids: Vec<EventId>,
    /// Positions in `ids`, hashed by id: the deduplication index (empty below `INDEX_FROM` ids).
    index: HashTable<usize>,
    /// `ids[pane_start..]` is the current pane.
    pane_start: usize,
    /// The current pane's payloads.
    payloads: PanePayloads,
    /// Sum, min and max of the current pane's values.
    aggregate: Option<Aggregate>,
    /// Processing time of the current pane's first event; `None` while the pane is empty.
    pane_opened_at: Option<Timestamp>,
    /// `ids[..persisted]` were handed to the store by `take_dirty`.
    persisted: usize,
    /// Changed since the last `take_dirty` (and listed in the change log).
    dirty: bool,
}

impl OpenWindow {
    /// An empty window with room for `ids` ids (and their index, from [`INDEX_FROM`] on).
    fn with_capacity(ids: usize) -> OpenWindow {
        let ids = ids.min(MAX_HINT);
        OpenWindow {
            ids: Vec::with_capacity(ids),
            index: if ids >= INDEX_FROM {
                HashTable::with_capacity(ids)
            } else {
                HashTable::new()
            },
            ..OpenWindow::default()
        }
    }

    /// The window of a snapshot's `ids`, which move in as they are, the index built over them:
    /// a restart over a million open events spent a third of its time pushing them one by one.
    /// A snapshot the engine wrote never repeats an id; one that does (a damaged or foreign
    /// store) gets its ids back, to be admitted one by one.
    fn restored(
        ids: Vec<EventId>,
        pane_start: usize,
        hasher: &DefaultHashBuilder,
    ) -> Result<OpenWindow, Vec<EventId>> {
        let mut index = HashTable::default();
        if ids.len() >= INDEX_FROM {
            index.reserve(ids.len(), |&at: &usize| hasher.hash_one(&ids[at]));
            for (at, id) in ids.iter().enumerate() {
                let hash = hasher.hash_one(id);
                if index.find(hash, |&seen| ids[seen] == *id).is_some() {
                    return Err(ids);
                }
                index.insert_unique(hash, at, |&seen| hasher.hash_one(&ids[seen]));
            }
        } else if ids
            .iter()
            .enumerate()
            .any(|(at, id)| ids[..at].contains(id))
        {
            return Err(ids);
        }
        Ok(OpenWindow {
            ids,
            index,
            pane_start,
            ..OpenWindow::default()
        })
    }

    /// Adds `id` unless it is already there; says whether it was added.
    fn admit(&mut self, id: EventId, hasher: &DefaultHashBuilder) -> bool {
        let OpenWindow { ids, index, .. } = self;
        if ids.len() < INDEX_FROM {
            // Small windows (most of them, with many keys) are scanned: no index to allocate.
            if ids.contains(&id) {
                return false;
            }
            ids.push(id);
            if ids.len() == INDEX_FROM {
                for (at, id) in ids.iter().enumerate() {
                    index.insert_unique(hasher.hash_one(id), at, |&at| hasher.hash_one(&ids[at]));
                }
            }
            return true;
        }
        let hash = hasher.hash_one(&id);
        if index.find(hash, |&at| ids[at] == id).is_some() {
            return false;
        }
        index.insert_unique(hash, ids.len(), |&at| hasher.hash_one(&ids[at]));
        ids.push(id);
        true
    }

    /// Room for `more` ids (and their index, once it is kept), growing the window by at most
    /// what it holds, or [`RESERVE_MIN`] when it holds fewer: the ids of a run may be
    /// duplicates, so room for all of them at once could be room kept for nothing until the
    /// window closes; growing by at most doubling keeps that to what a list that grows one id
    /// at a time would keep.
    fn reserve(&mut self, more: usize, hasher: &DefaultHashBuilder) {
        let OpenWindow { ids, index, .. } = self;
        let more = more.min(ids.len().max(RESERVE_MIN));
        ids.reserve(more);
        let total = ids.len() + more;
        if total >= INDEX_FROM {
            index.reserve(total - index.len(), |&at| hasher.hash_one(&ids[at]));
        }
    }

    fn pane_len(&self) -> usize {
        self.ids.len() - self.pane_start
    }

    /// The payloads of `ids[from..]`, one per id (`None` before the current pane); empty when
    /// none of them has one to keep.
    fn payloads_from(&self, from: usize) -> Vec<Option<Payload>> {
        let pane = self
            .payloads
            .range(from.saturating_sub(self.pane_start), self.pane_len());
        let fired = self.pane_start.saturating_sub(from);
        if pane.is_empty() || fired == 0 {
            return pane;
        }
        let mut payloads = vec![None; fired];
        payloads.extend(pane);
        payloads
    }

    /// Emits the current pane of a window that leaves the open state.
    fn into_pane(mut self, window: WindowKey, reason: CloseReason) -> ClosedWindow {
        let payloads = self.payloads.take(self.pane_len());
        let mut ids = self.ids;
        if self.pane_start > 0 {
            ids = ids.split_off(self.pane_start);
        }
        ClosedWindow {
            window,
            ids,
            payloads,
            aggregate: self.aggregate,
            reason,
        }
    }

    /// Emits the current pane and starts an empty one.
    fn take_pane(&mut self, window: WindowKey, reason: CloseReason) -> ClosedWindow {
        let ids = self.ids[self.pane_start..].to_vec();
        let payloads = self.payloads.take(ids.len());
        self.pane_start = self.ids.len();
        self.pane_opened_at = None;
        ClosedWindow {
            window,
            ids,
            payloads,
            aggregate: self.aggregate.take(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::IdFrame;

    fn event(id: i64) -> Event<'static> {
        Event {
            id: EventId::Int(id),
            ts: Timestamp::from_millis(5),
            key: None,
            value: None,
            payload: None,
        }
    }

    /// The one open window, without a key.
    fn only_window(engine: &Engine) -> &OpenWindow {
        engine
            .slots
            .values()
            .next()
            .and_then(|slot| slot.unkeyed.as_ref())
            .expect("open")
    }

    /// A run of one window's events takes room for itself at once, but no more than doubling
    /// what the window holds: a batch of repeats keeps no room for ids it never admitted.
    #[test]
    fn a_run_of_repeats_keeps_no_room_for_ids_it_did_not_admit() {
        let size = SizeMs::new(10).expect("size");
        let mut engine = Engine::new(EngineConfig::default());
        let repeats = vec![event(1); 100_000];
        let admission = engine
            .handle_events(Timestamp::EPOCH, size, repeats)
            .expect("fits");
        assert_eq!((admission.accepted, admission.duplicates), (1, 99_999));
        let distinct = (2..=100_000).map(event).collect();
        engine
            .handle_events(Timestamp::EPOCH, size, distinct)
            .expect("fits");
        let window = only_window(&engine);
        assert_eq!(window.ids.len(), 100_000);
        // The repeats took room for at most RESERVE_MIN; the distinct ids grew it by doubling.
        assert!(
            window.ids.capacity() < 2 * 100_000 + RESERVE_MIN,
            "{}",
            window.ids.capacity()
        );
        let mut repeats_only = Engine::new(EngineConfig::default());
        repeats_only
            .handle_events(Timestamp::EPOCH, size, vec![event(1); 100_000])
            .expect("fits");
        let window = only_window(&repeats_only);
        assert!(
            window.ids.capacity() <= RESERVE_MIN,
            "{}",
            window.ids.capacity()
        );
    }

    /// Deduplication is the same below and above the size at which a window builds its index,
    /// and survives a restore on either side of it.
    #[test]
    fn duplicates_are_caught_before_and_after_the_index_is_built() {
        let size = SizeMs::new(10).expect("size");
        for restore_at in [0, 3, INDEX_FROM - 1, INDEX_FROM, INDEX_FROM + 5, 60] {
            let mut engine = Engine::new(EngineConfig {
                frame: IdFrame::Utc,
                ..EngineConfig::default()
            });
            let mut admitted = 0;
            for n in 0..100i64 {
                if n as usize == restore_at {
                    engine = Engine::restore(*engine.config(), engine.snapshot());
                }
                // Every new id is followed by a repeat of an earlier one.
                let batch = vec![event(n), event(n / 2)];
                let admission = engine
                    .handle_events(Timestamp::EPOCH, size, batch)
                    .expect("fits");
                assert_eq!(admission.accepted, 1, "id {n} (restored at {restore_at})");
                assert_eq!(
                    admission.duplicates,
                    1,
                    "id {} again (restored at {restore_at})",
                    n / 2
                );
                admitted += admission.accepted;
            }
            let closed = engine.flush(None);
            assert_eq!(closed.len(), 1);
            assert_eq!(
                closed[0].ids,
                (0..100).map(EventId::Int).collect::<Vec<_>>()
            );
            assert_eq!(admitted, 100);
        }
    }

    // A snapshot that repeats an id (a damaged or foreign store; the engine never writes one) is
    // restored with each id once, small windows and indexed ones alike.
    #[test]
    fn a_snapshot_that_repeats_an_id_keeps_it_once() {
        let config = EngineConfig::default();
        let size = SizeMs::new(60_000).expect("size");
        for len in [5_i64, 40] {
            let mut engine = Engine::new(config);
            let events = (0..len).map(event).collect();
            engine
                .handle_events(Timestamp::EPOCH, size, events)
                .expect("fits");
            let mut snapshot = engine.snapshot();
            snapshot.windows[0].ids.push(EventId::Int(3));
            let mut engine = Engine::restore(config, snapshot);
            let admission = engine
                .handle_events(Timestamp::EPOCH, size, vec![event(len - 1)])
                .expect("fits");
            assert_eq!(
                (admission.accepted, admission.duplicates),
                (0, 1),
                "{len} ids"
            );
            let flushed = engine.flush(None);
            assert_eq!(flushed.len(), 1);
            let expected: Vec<EventId> = (0..len).map(EventId::Int).collect();
            assert_eq!(flushed[0].ids, expected, "{len} ids, 3 once");
        }
    }
}
