//! Grouping one batch of events by window, as `process_window` reports it.

use hashbrown::HashSet;

use crate::error::BatchError;
use crate::event::{Event, EventId};
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
    // Events in a row mostly share their window: the division runs once per window.
    let mut last: Option<WindowBounds> = None;
    let mut bounds = |index: usize, event: &Event<'_>| match last {
        Some(b) if b.contains(event.ts) => Ok(b),
        _ => {
            let b = spec.bounds(event.ts).ok_or(BatchError::WindowOverflow {
                index,
                ts: event.ts,
                size: spec.size,
            })?;
            last = Some(b);
            Ok(b)
        }
    };
    // The usual batch comes in window order: its events are grouped as they come.
    let mut grouping = Grouping::default();
    let mut in_order = true;
    for (index, event) in events.iter().enumerate() {
        let b = bounds(index, event)?;
        if !grouping.follows(b, event.key) {
            in_order = false;
            break;
        }
        grouping.add(b, event.key, index, events);
    }
    if in_order {
        return Ok(grouping.windows);
    }
    // Any other goes through a list sorted by window; a stable sort keeps input order within
    // a window.
    let mut placed = events
        .iter()
        .enumerate()
        .map(|(index, event)| Ok((bounds(index, event)?, event.key, index)))
        .collect::<Result<Vec<_>, BatchError>>()?;
    placed.sort_by(|a, b| (a.0.start, a.1).cmp(&(b.0.start, b.1)));
    let mut grouping = Grouping::default();
    for (b, key, index) in placed {
        grouping.add(b, key, index, events);
    }
    Ok(grouping.windows)
}

/// Windows being put together from events that come in window order.
#[derive(Default)]
struct Grouping<'e, 'a> {
    windows: Vec<BatchWindow<'a>>,
    /// The ids of the last window so far.
    seen: HashSet<&'e EventId>,
}

impl<'e, 'a> Grouping<'e, 'a> {
    /// Whether an event of the window at `bounds` and `key` comes at or after the last window
    /// (in start, then key order).
    fn follows(&self, bounds: WindowBounds, key: Option<&str>) -> bool {
        self.windows
            .last()
            .is_none_or(|w| (w.bounds.start, w.key) <= (bounds.start, key))
    }

    /// Adds `events[index]` (of the window at `bounds` and `key`) to the last window, or to a
    /// new one after it; an id that window has already is left out.
    fn add(
        &mut self,
        bounds: WindowBounds,
        key: Option<&'a str>,
        index: usize,
        events: &'e [Event<'a>],
    ) {
        let same = self
            .windows
            .last()
            .is_some_and(|w| w.bounds.start == bounds.start && w.key == key);
        if !same {
            self.seen.clear();
            self.windows.push(BatchWindow {
                bounds,
                key,
                events: Vec::new(),
            });
        }
        if self.seen.insert(&events[index].id)
            && let Some(window) = self.windows.last_mut()
        {
            window.events.push(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::spec::{IdFrame, SizeMs};
    use crate::time::Timestamp;

    const KEYS: [Option<&str>; 3] = [None, Some("a"), Some("b")];

    /// The grouping by its definition: windows by (start, key), each with the first event of
    /// every id, in input order.
    fn model(spec: WindowSpec, events: &[Event<'_>]) -> Vec<(i64, Option<String>, Vec<usize>)> {
        let mut windows: BTreeMap<(i64, Option<&str>), Vec<usize>> = BTreeMap::new();
        for (index, event) in events.iter().enumerate() {
            let start = spec.bounds(event.ts).expect("fits").start.as_millis();
            let list = windows.entry((start, event.key)).or_default();
            if !list.iter().any(|&i| events[i].id == event.id) {
                list.push(index);
            }
        }
        windows
            .into_iter()
            .map(|((start, key), list)| (start, key.map(str::to_owned), list))
            .collect()
    }

    proptest::proptest! {
        /// Batches in window order (the one-pass path), and in any order (the sorted path),
        /// with repeated ids and keys: the grouping is the model's.
        #[test]
        fn groups_as_the_model_does(
            picks in proptest::collection::vec((0i64..5_000, 0usize..3, 0i64..6), 0..40),
            sorted in proptest::bool::ANY,
        ) {
            let spec = WindowSpec { size: SizeMs::new(1000).expect("positive"), frame: IdFrame::Utc };
            let mut picks = picks;
            if sorted {
                picks.sort_by_key(|&(ts, key, _)| (ts / 1000, key));
            }
            let events: Vec<Event<'_>> = picks
                .iter()
                .map(|&(ts, key, id)| Event {
                    id: crate::EventId::Int(id),
                    ts: Timestamp::from_millis(ts),
                    key: KEYS[key],
                    value: None,
                    payload: None,
                })
                .collect();
            let grouped: Vec<_> = group_by_window(spec, &events)
                .expect("fits")
                .into_iter()
                .map(|w| (w.bounds.start.as_millis(), w.key.map(str::to_owned), w.events))
                .collect();
            proptest::prop_assert_eq!(grouped, model(spec, &events));
        }
    }
}
