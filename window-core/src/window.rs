//! Open windows, the windows that come out of the engine, and why they came out.

use std::fmt;

use crate::event::EventId;
use crate::spec::SizeMs;
use crate::time::Timestamp;

/// Names one window of the open state: a key (or none), a size and a start.
///
/// Ordered by start, then size, then key (no key first), the order windows are emitted in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowKey {
    /// First millisecond of the window.
    pub start: Timestamp,
    /// Window length.
    pub size: SizeMs,
    /// The events' key, if they had one.
    pub key: Option<Box<str>>,
}

impl WindowKey {
    /// First millisecond after the window. Never overflows: windows are only made when their
    /// end fits.
    pub fn end(&self) -> Timestamp {
        Timestamp::from_millis(self.start.as_millis().saturating_add(self.size.get()))
    }
}

/// Why a window (or pane) left the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// It reached the purge policy's `max_events`.
    Length,
    /// Its pane was open for the purge policy's `max_age`.
    Time,
    /// The watermark passed its end.
    Watermark,
    /// A `close` request.
    Close,
    /// A `flush` request.
    Flush,
}

impl CloseReason {
    /// The wire name: `length`, `time`, `watermark`, `close` or `flush`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::Length => "length",
            CloseReason::Time => "time",
            CloseReason::Watermark => "watermark",
            CloseReason::Close => "close",
            CloseReason::Flush => "flush",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sum, minimum and maximum of the values of a pane's events that had one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Aggregate {
    /// Sum of the values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Aggregate {
    /// The aggregate of one value.
    pub fn of(value: f64) -> Aggregate {
        Aggregate {
            sum: value,
            min: value,
            max: value,
        }
    }

    /// Folds `value` into `agg`.
    pub fn add(agg: &mut Option<Aggregate>, value: f64) {
        match agg {
            Some(a) => {
                a.sum += value;
                a.min = a.min.min(value);
                a.max = a.max.max(value);
            }
            None => *agg = Some(Aggregate::of(value)),
        }
    }
}

/// A window, or one pane of it, that has fired: what the engine emits.
#[derive(Clone, Debug, PartialEq)]
pub struct ClosedWindow {
    /// Which window.
    pub window: WindowKey,
    /// The ids of the pane's events, in the order they were admitted.
    pub ids: Vec<EventId>,
    /// The events' payloads, one per id in the same order (`None` for an event without one);
    /// empty when no event of the pane had one.
    pub payloads: Vec<Option<Box<str>>>,
    /// Sum, min and max of the values, if any event had one.
    pub aggregate: Option<Aggregate>,
    /// Why it fired.
    pub reason: CloseReason,
}

/// A snapshot of one open window, enough to rebuild it exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSnapshot {
    /// Which window.
    pub window: WindowKey,
    /// Every id admitted to the window since it opened, in order: the ids of panes that already
    /// fired (kept so a retried event is still recognised) followed by the current pane's.
    pub ids: Vec<EventId>,
    /// The current pane's payloads, one per id of `ids` (`None` for the ids of earlier panes and
    /// for events without one); empty when no event of the current pane had one.
    pub payloads: Vec<Option<Box<str>>>,
    /// `ids[pane_start..]` is the current pane.
    pub pane_start: usize,
    /// Aggregate of the current pane.
    pub aggregate: Option<Aggregate>,
    /// Processing time at which the current pane received its first event.
    pub pane_opened_at: Option<Timestamp>,
}

impl WindowSnapshot {
    /// The number of events in the current pane.
    pub fn pane_len(&self) -> usize {
        self.ids.len().saturating_sub(self.pane_start)
    }
}
