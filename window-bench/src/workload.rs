//! Seeded workloads: a stream of events with a chosen shape, and its renderings as engine events
//! and as protocol request lines.

use std::fmt::Write as _;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use window_core::{Event, EventId, Timestamp};
use window_testkit::calendar::write_rfc3339;

use crate::reference::RefEvent;

/// 2024-01-15T10:00:00Z, the start of every default workload (the published samples' day).
pub const DEFAULT_START_MS: i64 = 1_705_312_800_000;

/// The shape of a generated stream of events. The same `Workload` always gives the same events.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Events to generate (for [`Workload::generate`]; [`Workload::stream`] is endless).
    pub events: usize,
    /// Fresh events per window of `size_ms`, over all keys together: event `n` is nominally at
    /// `start_ms + n * size_ms / events_per_window`.
    pub events_per_window: u32,
    /// Distinct keys, chosen uniformly per event; 0 means events carry no key.
    pub keys: u32,
    /// Largest out-of-order shift: a fresh event lies up to this many milliseconds before its
    /// nominal time (uniform).
    pub disorder_ms: u64,
    /// Fraction of events far behind the stream: `late_lag_windows` windows before their nominal
    /// time, so a node whose allowed lateness is shorter than that drops them as late.
    pub late_fraction: f64,
    /// How far behind a late event lies, in windows. Invariant: at least 1.
    pub late_lag_windows: u32,
    /// Fraction of events that repeat one of the last [`RECENT`] events (same id, time and key):
    /// a retry, which the engine counts as a duplicate.
    pub duplicate_fraction: f64,
    /// Whether events carry a `value`.
    pub values: Values,
    /// With more than 0, every event carries a `payload` of this many bytes of JSON text (a
    /// string).
    pub payload_bytes: usize,
    /// How ids are written.
    pub ids: IdKind,
    /// How timestamps are written in protocol lines.
    pub timestamps: TimestampForm,
    /// The window size the requests ask for.
    pub size_ms: i64,
    /// Nominal time of the first event.
    pub start_ms: i64,
    /// The seed of the generator.
    pub seed: u64,
}

/// How many recent events a duplicate may repeat.
pub const RECENT: usize = 64;

/// Whether events carry a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Values {
    /// No `value` field.
    #[default]
    Absent,
    /// A `value` on every event (so windows carry sum, min and max).
    Present,
}

/// How event ids are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IdKind {
    /// `"id": 17`.
    #[default]
    Int,
    /// `"id": "e000000017"`.
    Text,
}

/// How timestamps are written on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimestampForm {
    /// `"2024-01-15T10:00:10.250Z"`: the parser's fast path.
    #[default]
    Utc,
    /// `"2024-01-15T12:00:10.250+02:00"`: the general RFC 3339 path.
    Offset,
    /// `1705312810250`: epoch milliseconds.
    EpochMs,
}

/// What a generated event is, for the reader of a workload (the engine cannot tell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A new event near the head of the stream.
    Fresh,
    /// A new event `late_lag_windows` windows behind the stream.
    Behind,
    /// A repeat of a recent event.
    Repeat,
}

/// One generated event. Owned and cheap to copy; [`Render`] turns it into engine events or JSON.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenEvent {
    /// Its id number (written according to [`IdKind`]).
    pub id: u64,
    /// Event time in milliseconds since the epoch.
    pub ts_ms: i64,
    /// Index of its key in the key table, if events have keys.
    pub key: Option<u32>,
    /// Its value, if events have values.
    pub value: Option<f64>,
    /// How it was made.
    pub origin: Origin,
}

impl Default for Workload {
    fn default() -> Workload {
        Workload {
            events: 100_000,
            events_per_window: 1_000,
            keys: 0,
            disorder_ms: 0,
            late_fraction: 0.0,
            late_lag_windows: 10,
            duplicate_fraction: 0.0,
            values: Values::Absent,
            payload_bytes: 0,
            ids: IdKind::Int,
            timestamps: TimestampForm::Utc,
            size_ms: 60_000,
            start_ms: DEFAULT_START_MS,
            seed: 0x5EED,
        }
    }
}

impl Workload {
    /// The endless stream of this workload's events.
    pub fn stream(&self) -> Generator {
        Generator {
            workload: self.clone(),
            rng: ChaCha8Rng::seed_from_u64(self.seed),
            fresh: 0,
            recent: Vec::with_capacity(RECENT),
            recent_at: 0,
        }
    }

    /// The first [`events`](Workload::events) events of the stream.
    pub fn generate(&self) -> Vec<GenEvent> {
        self.stream().take(self.events).collect()
    }

    /// The first `events` events in requests of `per_request` events (the last may be shorter).
    pub fn batches(&self, per_request: usize) -> Vec<Vec<GenEvent>> {
        let per_request = per_request.max(1);
        let mut stream = self.stream();
        let mut left = self.events;
        let mut out = Vec::with_capacity(self.events.div_ceil(per_request));
        while left > 0 {
            let n = left.min(per_request);
            out.push(stream.by_ref().take(n).collect());
            left -= n;
        }
        out
    }

    /// How this workload's events are written (ids, timestamps, key names).
    pub fn render(&self) -> Render {
        Render {
            ids: self.ids,
            timestamps: self.timestamps,
            payload: (self.payload_bytes > 0).then(|| payload_text(self.payload_bytes)),
            keys: (0..self.keys)
                .map(|k| format!("k{k:04}").into_boxed_str())
                .collect(),
        }
    }
}

/// The event stream of a [`Workload`]; see [`Workload::stream`].
#[derive(Debug)]
pub struct Generator {
    workload: Workload,
    rng: ChaCha8Rng,
    /// Fresh (and behind) events made so far: the next one's id and nominal position.
    fresh: u64,
    /// A ring of the last events made, for repeats.
    recent: Vec<GenEvent>,
    recent_at: usize,
}

impl Iterator for Generator {
    type Item = GenEvent;

    fn next(&mut self) -> Option<GenEvent> {
        let w = &self.workload;
        let roll: f64 = self.rng.random();
        if roll < w.duplicate_fraction && !self.recent.is_empty() {
            let pick = self.rng.random_range(0..self.recent.len());
            let mut repeat = self.recent[pick];
            repeat.origin = Origin::Repeat;
            return Some(repeat);
        }
        let n = self.fresh;
        self.fresh += 1;
        let epw = i128::from(w.events_per_window.max(1));
        let nominal = i128::from(w.start_ms) + i128::from(n) * i128::from(w.size_ms) / epw;
        let nominal = i64::try_from(nominal).unwrap_or(i64::MAX);
        let (ts_ms, origin) = if roll < w.duplicate_fraction + w.late_fraction {
            let lag = i64::from(w.late_lag_windows.max(1)).saturating_mul(w.size_ms);
            (nominal.saturating_sub(lag), Origin::Behind)
        } else if w.disorder_ms > 0 {
            let shift = self.rng.random_range(0..=w.disorder_ms);
            (
                nominal.saturating_sub(i64::try_from(shift).unwrap_or(i64::MAX)),
                Origin::Fresh,
            )
        } else {
            (nominal, Origin::Fresh)
        };
        let key = (w.keys > 0).then(|| self.rng.random_range(0..w.keys));
        let value = match w.values {
            Values::Absent => None,
            // Quarter steps keep sums exact in f64, so a reference can compare them exactly.
            Values::Present => Some(f64::from(self.rng.random_range(0..4000u32)) * 0.25),
        };
        let event = GenEvent {
            id: n,
            ts_ms,
            key,
            value,
            origin,
        };
        if self.recent.len() < RECENT {
            self.recent.push(event);
        } else {
            self.recent[self.recent_at] = event;
            self.recent_at = (self.recent_at + 1) % RECENT;
        }
        Some(event)
    }
}

/// Writes generated events as engine events and as protocol JSON.
#[derive(Clone, Debug)]
pub struct Render {
    /// How ids are written.
    pub ids: IdKind,
    /// How timestamps are written.
    pub timestamps: TimestampForm,
    /// Key names by index.
    pub keys: Vec<Box<str>>,
    /// The payload every event carries, as JSON text.
    pub payload: Option<String>,
}

/// A JSON string of `bytes` bytes of text (at least the two quotes).
fn payload_text(bytes: usize) -> String {
    let body: String = (0..bytes.saturating_sub(2))
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    format!("\"{body}\"")
}

impl Render {
    /// The engine's view of `batch`, borrowing key names from `self`.
    pub fn core_events(&self, batch: &[GenEvent]) -> Vec<Event<'_>> {
        batch
            .iter()
            .map(|e| Event {
                id: self.event_id(e.id),
                ts: Timestamp::from_millis(e.ts_ms),
                key: e.key.map(|k| &*self.keys[k as usize]),
                value: e.value,
                payload: self.payload.as_deref(),
            })
            .collect()
    }

    /// The reference computation's view of `batch`.
    pub fn reference_events(&self, batch: &[GenEvent]) -> Vec<RefEvent> {
        batch
            .iter()
            .map(|e| RefEvent {
                id: self.id_json(e.id),
                ts_ms: e.ts_ms,
                key: self.key_name(e).map(str::to_owned),
                value: e.value,
            })
            .collect()
    }

    /// The engine id of id number `id`.
    pub fn event_id(&self, id: u64) -> EventId {
        match self.ids {
            IdKind::Int => EventId::Int(i64::try_from(id).unwrap_or(i64::MAX)),
            IdKind::Text => EventId::Text(text_id(id).into_boxed_str()),
        }
    }

    /// The JSON text of id number `id`, as the node echoes it: `17` or `"e000000017"`.
    pub fn id_json(&self, id: u64) -> String {
        match self.ids {
            IdKind::Int => id.to_string(),
            IdKind::Text => format!("\"{}\"", text_id(id)),
        }
    }

    /// The key name of `event`, if any.
    pub fn key_name(&self, event: &GenEvent) -> Option<&str> {
        event.key.map(|k| &*self.keys[k as usize])
    }

    /// Appends `event` as a JSON object.
    pub fn event_json(&self, event: &GenEvent, out: &mut String) {
        out.push_str("{\"id\":");
        out.push_str(&self.id_json(event.id));
        out.push_str(",\"timestamp\":");
        match self.timestamps {
            TimestampForm::Utc => {
                out.push('"');
                write_rfc3339(out, event.ts_ms, 0);
                out.push('"');
            }
            TimestampForm::Offset => {
                out.push('"');
                write_rfc3339(out, event.ts_ms, 120);
                out.push('"');
            }
            TimestampForm::EpochMs => {
                let _ = write!(out, "{}", event.ts_ms);
            }
        }
        if let Some(key) = self.key_name(event) {
            // Generated key names need no escaping.
            let _ = write!(out, ",\"key\":\"{key}\"");
        }
        if let Some(value) = event.value {
            let _ = write!(out, ",\"value\":{value}");
        }
        if let Some(payload) = &self.payload {
            out.push_str(",\"payload\":");
            out.push_str(payload);
        }
        out.push('}');
    }

    /// `"events":[...]` of `batch`.
    fn events_field(&self, batch: &[GenEvent], out: &mut String) {
        out.push_str("\"events\":[");
        for (i, event) in batch.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            self.event_json(event, out);
        }
        out.push(']');
    }

    /// A `process_window` request line (with its `\n`).
    pub fn process_window_line(&self, msg_id: u64, batch: &[GenEvent], size_ms: i64) -> String {
        self.request_line("process_window", msg_id, batch, Some(size_ms))
    }

    /// An `assign` request line (with its `\n`).
    pub fn assign_line(&self, msg_id: u64, batch: &[GenEvent], size_ms: i64) -> String {
        self.request_line("assign", msg_id, batch, Some(size_ms))
    }

    /// An `ingest` request line for the daemon (with its `\n`): the window size is the daemon's.
    pub fn ingest_line(&self, msg_id: u64, batch: &[GenEvent]) -> String {
        self.request_line("ingest", msg_id, batch, None)
    }

    fn request_line(
        &self,
        kind: &str,
        msg_id: u64,
        batch: &[GenEvent],
        size_ms: Option<i64>,
    ) -> String {
        let mut out = String::with_capacity(48 + batch.len() * 56);
        let _ = write!(out, "{{\"type\":\"{kind}\",\"msg_id\":{msg_id},");
        self.events_field(batch, &mut out);
        if let Some(size) = size_ms {
            let _ = write!(out, ",\"window_size_ms\":{size}");
        }
        out.push_str("}\n");
        out
    }
}

fn text_id(id: u64) -> String {
    format!("e{id:09}")
}
