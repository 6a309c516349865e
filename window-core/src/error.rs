//! Errors of the engine's operations: one small enum per operation. (Errors of parsing a
//! timestamp or a window size live next to those types, in `time` and `spec`.)

use crate::spec::SizeMs;
use crate::time::Timestamp;
use crate::window::WindowKey;

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
