//! The panes of each window, checked without knowing the order in which the node saw the events.
//!
//! With several connections the daemon's order of requests is unknown, so which ids share a
//! pane is unknown too. What the engine's rules still fix, whatever the order (this restates
//! `window-core`'s `Engine::handle_events` and `fire_until`; nothing here calls them):
//!
//! - a pane fires by `length` the moment it holds N ids (`--max-events N`), and ids enter it one
//!   at a time, so every `length` pane holds exactly N ids;
//! - an id is admitted once per window: a retry is a duplicate even after its pane fired, so the
//!   panes of a window are disjoint;
//! - a window leaves the open state once (by `watermark`, or `flush` at the end); its current
//!   pane is then emitted if it is not empty, and never again after that; it holds 1..=N-1 ids
//!   (N would have fired by length);
//! - so a window of C distinct ids fires exactly C / N `length` panes (integer division) and,
//!   if C % N > 0 and the window left the open state, one last pane of C % N ids, after them in
//!   seq order, whose reason (`watermark` or `flush`) does not depend on the order either: the
//!   final watermark is the highest event time less the lateness, whatever came first. Without a
//!   length purge C / N is 0 and the last pane holds all C ids. A window still open at the end
//!   (no flush) has emitted only its C / N length panes;
//! - the union of the panes is the window's id set (without its buffered pane while it is open).
//!
//! This holds only where order cannot make an event late (loadgen refuses other workloads with
//! several connections): a window closed by the watermark then never opens again. `time` panes
//! (an age purge) and `close` panes (which the engine emits even empty) are refused: loadgen
//! causes neither, and the reference models neither.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::bail;

use crate::reference::{RefClosed, RefWindow, Reference};

/// A window as the reference names it: (start, key).
pub type WindowOf = (i64, Option<String>);

/// One `window_closed` the node emitted, as the pane check sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmittedPane {
    /// Its `seq`.
    pub seq: u64,
    /// Its `reason` (`length`, `watermark`, `flush`, ...).
    pub reason: String,
    /// Its ids, as the reference writes them.
    pub ids: Vec<String>,
}

/// What the reference says of one window, whatever the order: its ids and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpectedWindow {
    /// Every id admitted to the window (over all its panes, the buffered one included).
    pub ids: BTreeSet<String>,
    /// The reason of its last, non-`length` pane, if the reference emitted one (`watermark` or
    /// `flush`); `None` when it emitted none (the id count is a multiple of N, or the window is
    /// still open).
    pub last: Option<&'static str>,
}

impl ExpectedWindow {
    /// What the rule expects of this window under `max_events`, in words.
    fn expectation(&self, max_events: Option<u32>) -> String {
        let count = self.ids.len();
        let (full, rest) = split(count, max_events);
        let last = match self.last {
            Some(reason) => format!("a {reason} pane of {rest}"),
            None if rest == 0 => "no other pane".to_owned(),
            None => format!("no other pane ({rest} ids stay buffered)"),
        };
        match max_events {
            Some(n) => format!(
                "{count} distinct ids, --max-events {n}: {full} length pane(s) of {n}, then {last}"
            ),
            None => format!("{count} distinct ids, no length purge: {last}"),
        }
    }
}

/// What the reference says of every window, built from its panes in the order it saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    windows: BTreeMap<WindowOf, ExpectedWindow>,
}

impl Expected {
    /// Nothing yet.
    pub fn new() -> Expected {
        Expected::default()
    }

    /// A pane the reference emitted (by length, watermark or flush).
    pub fn fired(&mut self, closed: RefClosed) {
        let window = self.entry(closed.window);
        if closed.reason != "length" {
            window.last = Some(closed.reason);
        }
    }

    /// The current pane of a window the reference still has open at the end (no flush): its
    /// ids are the window's, but stay buffered.
    pub fn buffered(&mut self, pane: RefWindow) {
        self.entry(pane);
    }

    /// Every window, by (start, key).
    pub fn windows(&self) -> &BTreeMap<WindowOf, ExpectedWindow> {
        &self.windows
    }

    fn entry(&mut self, pane: RefWindow) -> &mut ExpectedWindow {
        let window = self.windows.entry((pane.start, pane.key)).or_default();
        window.ids.extend(pane.ids);
        window
    }
}

/// (length panes, ids left for the last pane) of a window of `count` ids.
fn split(count: usize, max_events: Option<u32>) -> (usize, usize) {
    match max_events {
        Some(n) if n > 0 => (count / n as usize, count % n as usize),
        _ => (0, count),
    }
}

/// Checks the panes the node emitted for one window (in any order; they are sorted by seq here)
/// against the rule in the module documentation. The error says what differed.
pub fn check_window(
    max_events: Option<u32>,
    want: &ExpectedWindow,
    got: &[EmittedPane],
) -> Result<(), String> {
    let mut panes: Vec<&EmittedPane> = got.iter().collect();
    panes.sort_by_key(|p| p.seq);
    let count = want.ids.len();
    let (full, rest) = split(count, max_events);

    let owner = owners(want, &panes)?;
    check_reasons(max_events, full, count, &panes)?;
    check_last(want, rest, &panes)?;

    // All of the window's ids came out, unless some are still buffered.
    let emitted = owner.len();
    let buffered = if want.last.is_none() { rest } else { 0 };
    if emitted + buffered != count {
        let missing = want
            .ids
            .iter()
            .find(|id| !owner.contains_key(id.as_str()))
            .map_or_else(String::new, |id| format!("; e.g. {id} is missing"));
        return Err(format!(
            "the panes hold {emitted} of the window's {count} ids ({buffered} buffered){missing}"
        ));
    }
    Ok(())
}

/// Which pane each emitted id is in: every id is the window's, and in one pane only.
fn owners<'a>(
    want: &ExpectedWindow,
    panes: &[&'a EmittedPane],
) -> Result<HashMap<&'a str, u64>, String> {
    let mut owner: HashMap<&str, u64> = HashMap::new();
    for pane in panes {
        for id in &pane.ids {
            if !want.ids.contains(id) {
                return Err(format!(
                    "pane seq {} ({}) holds id {id}, which is not one of the window's",
                    pane.seq, pane.reason
                ));
            }
            if let Some(first) = owner.insert(id, pane.seq) {
                return Err(if first == pane.seq {
                    format!("pane seq {first} lists id {id} twice")
                } else {
                    format!(
                        "id {id} is in pane seq {first} and again in pane seq {}: a retry was \
                         counted twice",
                        pane.seq
                    )
                });
            }
        }
    }

    Ok(owner)
}

/// Reasons, sizes and order: length panes hold exactly `max_events`, a watermark or flush pane
/// comes last, and there are `full` length panes.
fn check_reasons(
    max_events: Option<u32>,
    full: usize,
    count: usize,
    panes: &[&EmittedPane],
) -> Result<(), String> {
    let mut length = 0;
    for (at, pane) in panes.iter().enumerate() {
        match pane.reason.as_str() {
            "length" => {
                let Some(n) = max_events else {
                    return Err(format!(
                        "pane seq {} fired by length, but no length purge is expected",
                        pane.seq
                    ));
                };
                if pane.ids.len() != n as usize {
                    return Err(format!(
                        "pane seq {} (length) holds {} ids; under --max-events {n} a length pane \
                         holds exactly {n}",
                        pane.seq,
                        pane.ids.len()
                    ));
                }
                length += 1;
            }
            reason @ ("watermark" | "flush") => {
                if let Some(next) = panes.get(at + 1) {
                    return Err(format!(
                        "pane seq {} ({reason}) is followed by pane seq {} ({}): a window's \
                         {reason} pane is its last",
                        pane.seq, next.seq, next.reason
                    ));
                }
                if pane.ids.is_empty() {
                    return Err(format!(
                        "pane seq {} ({reason}) is empty: an empty pane is never emitted",
                        pane.seq
                    ));
                }
                if let Some(n) = max_events
                    && pane.ids.len() >= n as usize
                {
                    return Err(format!(
                        "pane seq {} ({reason}) holds {} ids; under --max-events {n} a pane fires \
                         by length when it reaches {n}, so a last pane holds 1 to {}",
                        pane.seq,
                        pane.ids.len(),
                        n - 1
                    ));
                }
            }
            other => {
                return Err(format!(
                    "pane seq {} has reason {other:?}; expected length, watermark or flush",
                    pane.seq
                ));
            }
        }
    }
    if length != full {
        return Err(format!(
            "{length} length pane(s), expected {full} ({count} distinct ids / --max-events {})",
            max_events.map_or_else(|| "none".to_owned(), |n| n.to_string())
        ));
    }

    Ok(())
}

/// The last pane: there exactly when the reference emitted one, with its reason and size.
fn check_last(want: &ExpectedWindow, rest: usize, panes: &[&EmittedPane]) -> Result<(), String> {
    let last = panes.last().filter(|p| p.reason != "length");
    match (want.last, last) {
        (Some(reason), Some(pane)) => {
            if pane.reason != reason {
                return Err(format!(
                    "its last pane (seq {}) fired by {}, expected {reason}",
                    pane.seq, pane.reason
                ));
            }
            if pane.ids.len() != rest {
                return Err(format!(
                    "its last pane (seq {}, {reason}) holds {} ids, expected {rest}",
                    pane.seq,
                    pane.ids.len()
                ));
            }
        }
        (Some(reason), None) => {
            return Err(format!(
                "no {reason} pane: expected one holding the last {rest} ids"
            ));
        }
        (None, Some(pane)) => {
            return Err(format!(
                "pane seq {} ({}) holds {} ids, but the window {}",
                pane.seq,
                pane.reason,
                pane.ids.len(),
                if rest == 0 {
                    "ends with a length pane: its id count is a multiple of --max-events"
                } else {
                    "is still open: its last ids stay buffered"
                }
            ));
        }
        (None, None) => {}
    }

    Ok(())
}

/// Checks every window: each one the reference knows against the panes the node emitted for it
/// (none is fine when the rule expects none), and no panes of windows the reference never
/// opened. Fails naming the first window that breaks the rule, what was expected of it and
/// what differed, and how many windows broke it.
pub fn check_panes(
    reference: &Reference,
    want: &Expected,
    got: &BTreeMap<WindowOf, Vec<EmittedPane>>,
) -> anyhow::Result<()> {
    let want = want.windows();
    let max_events = reference.config().max_events;
    let name = |(start, key): &WindowOf| match key {
        Some(key) => format!("{} key {key:?}", reference.window_id(*start)),
        None => format!("{} (no key)", reference.window_id(*start)),
    };
    let mut failures = Vec::new();
    for (window, expected) in want {
        let panes = got.get(window).map_or(&[][..], Vec::as_slice);
        if let Err(what) = check_window(max_events, expected, panes) {
            failures.push(format!(
                "window {} ({}; the node emitted {} pane(s)): {what}",
                name(window),
                expected.expectation(max_events),
                panes.len()
            ));
        }
    }
    let mut windows = want.len();
    for (window, panes) in got {
        if !want.contains_key(window) {
            windows += 1;
            failures.push(format!(
                "window {}: the node emitted {} pane(s) of a window the reference never opened",
                name(window),
                panes.len()
            ));
        }
    }
    if let Some(first) = failures.first() {
        bail!(
            "{} of {} windows break the pane rule; the first: {first}",
            failures.len(),
            windows
        );
    }
    Ok(())
}
