//! Grouping one batch of events by window, as `process_window` reports it.

use hashbrown::HashSet;

use crate::error::BatchError;
use crate::event::Event;
use crate::spec::{WindowBounds, WindowSpec};

/// The events of one batch that fall into one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchWindow<'a> {
    /// Where the window lies.
    pub bounds: WindowBounds,
    /// The events' key, if any.
    pub key: Option<&'a str>,
    /// Positions of the window's events in the batch, in input order, each id once (the first
    /// occurrence counts).
    pub events: Vec<usize>,
}

/// Groups `events` by window (and key): windows in ascending start, then key (no key first);
/// events in input order with repeated ids counted once. Pure: it looks at nothing but the batch.
pub fn group_by_window<'a>(
    spec: WindowSpec,
    events: &[Event<'a>],
) -> Result<Vec<BatchWindow<'a>>, BatchError> {
    let mut placed: Vec<(WindowBounds, Option<&'a str>, usize)> = Vec::with_capacity(events.len());
    // Events in a row mostly share their window: the division runs once per window.
    let mut last: Option<WindowBounds> = None;
    for (index, event) in events.iter().enumerate() {
        let bounds = match last {
            Some(b) if b.start <= event.ts && event.ts < b.end => b,
            _ => spec.bounds(event.ts).ok_or(BatchError::WindowOverflow {
                index,
                ts: event.ts,
                size: spec.size,
            })?,
        };
        last = Some(bounds);
        placed.push((bounds, event.key, index));
    }
    // A stable sort keeps input order within a window, and is linear on sorted input.
    placed.sort_by(|a, b| (a.0.start, a.1).cmp(&(b.0.start, b.1)));

    let mut windows: Vec<BatchWindow<'a>> = Vec::new();
    let mut seen = HashSet::new();
    for (bounds, key, index) in placed {
        let same = windows
            .last()
            .is_some_and(|w| w.bounds.start == bounds.start && w.key == key);
        if !same {
            seen.clear();
            windows.push(BatchWindow {
                bounds,
                key,
                events: Vec::new(),
            });
        }
        if seen.insert(&events[index].id)
            && let Some(window) = windows.last_mut()
        {
            window.events.push(index);
        }
    }
    Ok(windows)
}
