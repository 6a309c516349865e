//! Error types of the core: one small enum per operation.

use crate::spec::SizeMs;
use crate::time::Timestamp;
use crate::window::WindowKey;

/// A timestamp that could not be parsed or has no RFC 3339 form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The text is not an RFC 3339 date-time.
    #[error("invalid timestamp {text:?}: {reason}")]
    Invalid {
        /// The text as given.
        text: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The value is outside years 0000..=9999.
    #[error("timestamp {ms} ms is outside years 0000..=9999")]
    OutOfRange {
        /// Milliseconds since the epoch.
        ms: i64,
    },
}

/// A window size or policy value that is not allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Window sizes are positive whole milliseconds.
    #[error("window size must be a positive number of milliseconds, got {0}")]
    NonPositiveSize(i64),
}

/// Why a batch of events was rejected. A rejected batch changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The event's window would start or end outside the range of `i64` milliseconds.
    #[error(
        "event {index}: the window of size {size} ms around {ts} ms does not fit in i64 milliseconds"
    )]
    WindowOverflow {
        /// Position of the event in the batch.
        index: usize,
        /// Its timestamp.
        ts: Timestamp,
        /// The window size.
        size: SizeMs,
    },
}

/// Why `close` could not close a window.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    /// No open window matches.
    #[error("no open window matches")]
    NotOpen,
    /// Several open windows match; the caller must say which (size or key).
    #[error("{} open windows match", .0.len())]
    Ambiguous(Vec<WindowKey>),
}
