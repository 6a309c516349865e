//! Events as the engine sees them.

use std::fmt;

use crate::time::Timestamp;

/// An event id, echoed back exactly as given. Ingestion is idempotent by id within a window.
///
/// Integers that fit `i64` are stored as such (the common, compact case); other JSON numbers keep
/// their text (`1.5`, `1e3`, `18446744073709551616`), so `1` and `1.0` are different ids.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventId {
    /// An integer id.
    Int(i64),
    /// A string id (the decoded string, not its JSON text).
    Text(Box<str>),
    /// A non-integer or out-of-range number id, as its JSON text.
    Number(Box<str>),
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventId::Int(n) => n.fmt(f),
            EventId::Text(s) => write!(f, "{s:?}"),
            EventId::Number(s) => f.write_str(s),
        }
    }
}

/// One event of a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<'a> {
    /// Its id.
    pub id: EventId,
    /// Its event time.
    pub ts: Timestamp,
    /// With a key, windows are per key.
    pub key: Option<&'a str>,
    /// With a value, windows keep its sum, minimum and maximum.
    pub value: Option<f64>,
    /// What the event carries, as JSON text (a caller's parser checked it is JSON); the engine
    /// keeps it with the event and hands it out with its window, untouched.
    pub payload: Option<&'a str>,
}
