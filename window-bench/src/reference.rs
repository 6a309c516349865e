//! An independent reference computation of what a node must answer: plain maps, no engine.
//!
//! It shares no code with `window-core`: window starts are computed here with their own floor
//! division, ids are compared as the JSON text the node echoes, and the firing rules (length
//! purge, watermark, flush) are re-stated in the simplest form that can be checked by reading.

use std::collections::{BTreeMap, HashSet};

/// One event as the reference sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct RefEvent {
    /// The id's JSON text, exactly as the node echoes it (`17`, `"e000000017"`).
    pub id: String,
    /// Event time in milliseconds since the epoch.
    pub ts_ms: i64,
    /// Its key, if any.
    pub key: Option<String>,
    /// Its value, if any.
    pub value: Option<f64>,
}

/// The rules the node runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefConfig {
    /// Window size in milliseconds (positive).
    pub size_ms: i64,
    /// The id frame's offset: 0 for `utc`, 7 200 000 for `grader`.
    pub frame_offset_ms: i64,
    /// `--allowed-lateness` in milliseconds; `None` means no watermark.
    pub allowed_lateness_ms: Option<i64>,
    /// `--max-events`; `None` means no length purge.
    pub max_events: Option<u32>,
}

/// The events of one window (or pane), as a reply lists them.
#[derive(Clone, Debug, PartialEq)]
pub struct RefWindow {
    /// First millisecond of the window.
    pub start: i64,
    /// The events' key.
    pub key: Option<String>,
    /// Id texts in order.
    pub ids: Vec<String>,
    /// Sum of the values, if any event had one.
    pub sum: Option<f64>,
}

/// A window that left the open state.
#[derive(Clone, Debug, PartialEq)]
pub struct RefClosed {
    /// What it held.
    pub window: RefWindow,
    /// `length`, `watermark` or `flush`.
    pub reason: &'static str,
}

/// What became of one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefAdmission {
    /// Events added to a window.
    pub accepted: u64,
    /// Events whose id was already in their window.
    pub duplicates: u64,
    /// Events whose window the watermark had closed.
    pub late: u64,
}

/// The ids and value sum of one window of a batch.
type Group = (Vec<String>, Option<f64>);

#[derive(Debug, Default)]
struct OpenWindow {
    /// Every id admitted since the window opened (panes that fired by length stay here, so a
    /// retry is still a duplicate).
    seen: HashSet<String>,
    /// The current pane.
    pane: Vec<String>,
    pane_sum: Option<f64>,
}

/// The reference node state: `(window start, key) -> ids`.
#[derive(Debug)]
pub struct Reference {
    config: RefConfig,
    open: BTreeMap<(i64, Option<String>), OpenWindow>,
    max_event_time: Option<i64>,
    watermark: Option<i64>,
    totals: RefAdmission,
    emitted: Vec<RefClosed>,
}

impl Reference {
    /// An empty reference.
    pub fn new(config: RefConfig) -> Reference {
        Reference {
            config,
            open: BTreeMap::new(),
            max_event_time: None,
            watermark: None,
            totals: RefAdmission::default(),
            emitted: Vec::new(),
        }
    }

    /// The rules it runs with.
    pub fn config(&self) -> RefConfig {
        self.config
    }

    /// The start of the window holding `ts_ms`.
    pub fn start_of(&self, ts_ms: i64) -> i64 {
        let (size, offset) = (self.config.size_ms, self.config.frame_offset_ms);
        (ts_ms - offset).div_euclid(size) * size + offset
    }

    /// The wire id of the window starting at `start`: `window-<start - offset>`.
    pub fn window_id(&self, start: i64) -> String {
        format!("window-{}", start - self.config.frame_offset_ms)
    }

    /// What `process_window` replies for `batch`: its events grouped by (start, key), ascending,
    /// ids in input order, an id repeated within a window counted once. Pure: the open state
    /// plays no part.
    pub fn group(&self, batch: &[RefEvent]) -> Vec<RefWindow> {
        let mut groups: BTreeMap<(i64, Option<&str>), Group> = BTreeMap::new();
        let mut seen: HashSet<(i64, Option<&str>, &str)> = HashSet::new();
        for event in batch {
            let start = self.start_of(event.ts_ms);
            let key = event.key.as_deref();
            if !seen.insert((start, key, &event.id)) {
                continue;
            }
            let (ids, sum) = groups.entry((start, key)).or_default();
            ids.push(event.id.clone());
            if let Some(v) = event.value {
                *sum = Some(sum.unwrap_or(0.0) + v);
            }
        }
        groups
            .into_iter()
            .map(|((start, key), (ids, sum))| RefWindow {
                start,
                key: key.map(str::to_owned),
                ids,
                sum,
            })
            .collect()
    }

    /// Adds `batch` to the open state as `assign`, `process_window` and `ingest` do: late (behind
    /// the watermark) first, then duplicate, then accepted; a full pane fires by length at once;
    /// the watermark moves once, after the whole batch.
    pub fn admit(&mut self, batch: &[RefEvent]) -> RefAdmission {
        let mut admission = RefAdmission::default();
        for event in batch {
            let start = self.start_of(event.ts_ms);
            let end = start + self.config.size_ms;
            if self.watermark.is_some_and(|wm| end <= wm) {
                admission.late += 1;
                continue;
            }
            let window = self.open.entry((start, event.key.clone())).or_default();
            if !window.seen.insert(event.id.clone()) {
                admission.duplicates += 1;
                continue;
            }
            admission.accepted += 1;
            window.pane.push(event.id.clone());
            if let Some(v) = event.value {
                window.pane_sum = Some(window.pane_sum.unwrap_or(0.0) + v);
            }
            self.max_event_time = Some(
                self.max_event_time
                    .map_or(event.ts_ms, |m| m.max(event.ts_ms)),
            );
            if self
                .config
                .max_events
                .is_some_and(|max| window.pane.len() >= max as usize)
            {
                let ids = std::mem::take(&mut window.pane);
                let sum = window.pane_sum.take();
                self.emitted.push(RefClosed {
                    window: RefWindow {
                        start,
                        key: event.key.clone(),
                        ids,
                        sum,
                    },
                    reason: "length",
                });
            }
        }
        if let (Some(lateness), Some(max)) = (self.config.allowed_lateness_ms, self.max_event_time)
        {
            let candidate = max.saturating_sub(lateness);
            if self.watermark.is_none_or(|wm| candidate > wm) {
                self.watermark = Some(candidate);
                self.fire_until(candidate, "watermark");
            }
        }
        self.totals.accepted += admission.accepted;
        self.totals.duplicates += admission.duplicates;
        self.totals.late += admission.late;
        admission
    }

    /// `flush` without `until`: every open window, in (start, key) order; windows whose pane is
    /// empty (it just fired by length) leave without a word.
    pub fn flush(&mut self) -> Vec<RefWindow> {
        let before = self.emitted.len();
        self.fire_until(i64::MAX, "flush");
        self.emitted
            .drain(before..)
            .map(|closed| closed.window)
            .collect()
    }

    fn fire_until(&mut self, until: i64, reason: &'static str) {
        let size = self.config.size_ms;
        let due: Vec<(i64, Option<String>)> = self
            .open
            .keys()
            .filter(|(start, _)| start.saturating_add(size) <= until)
            .cloned()
            .collect();
        for key in due {
            let Some(window) = self.open.remove(&key) else {
                continue;
            };
            if !window.pane.is_empty() {
                self.emitted.push(RefClosed {
                    window: RefWindow {
                        start: key.0,
                        key: key.1,
                        ids: window.pane,
                        sum: window.pane_sum,
                    },
                    reason,
                });
            }
        }
    }

    /// Windows that fired on their own (length, watermark), in firing order, since the last call.
    pub fn take_emitted(&mut self) -> Vec<RefClosed> {
        std::mem::take(&mut self.emitted)
    }

    /// Running totals over every batch admitted.
    pub fn totals(&self) -> RefAdmission {
        self.totals
    }

    /// Windows in the open state.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Events in the current panes of the open windows.
    pub fn buffered_events(&self) -> usize {
        self.open.values().map(|w| w.pane.len()).sum()
    }

    /// The current panes of the open windows, in (start, key) order (empty ones included).
    pub fn open_panes(&self) -> Vec<RefWindow> {
        self.open
            .iter()
            .map(|((start, key), window)| RefWindow {
                start: *start,
                key: key.clone(),
                ids: window.pane.clone(),
                sum: window.pane_sum,
            })
            .collect()
    }
}
