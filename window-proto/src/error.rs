//! Errors a request can end in, each with its stable wire code and class.

use window_core::{BatchError, Timestamp, WindowBounds, WindowSpec};

/// What went wrong with a request, as the client is told.
///
/// Every variant maps to one Maelstrom error code (see `docs/protocol.md`) and to a [`Class`]
/// that says what the receiver does next. The text is for people: nobody parses it; code that
/// must tell errors apart matches the variant or [`ProtoError::code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Code 10: the request's `type` is not one this node serves.
    #[error("{0}")]
    UnknownType(String),
    /// Code 11: the request cannot be served right now; retrying is safe.
    #[error("{0}")]
    Unavailable(String),
    /// Code 12: bad JSON, a line too long, or a missing or invalid field.
    #[error("{0}")]
    Malformed(String),
    /// Code 13: a fault inside the node; the request may be retried.
    #[error("{0}")]
    Internal(String),
    /// Code 20: `close` of a window that is not open.
    #[error("{0}")]
    NotOpen(String),
}

/// What the receiver of an error does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The request was wrong: answer and go on; sending it again gives the same answer.
    Client,
    /// The node could not serve it now: retry, with backoff or against another node.
    Transient,
    /// Something inside the node failed.
    Fault,
}

impl ProtoError {
    /// The code of [`ProtoError::UnknownType`].
    pub const UNKNOWN_TYPE: u32 = 10;
    /// The code of [`ProtoError::Unavailable`]: the request was not run and may be sent again.
    pub const UNAVAILABLE: u32 = 11;
    /// The code of [`ProtoError::Malformed`].
    pub const MALFORMED: u32 = 12;
    /// The code of [`ProtoError::Internal`].
    pub const INTERNAL: u32 = 13;
    /// The code of [`ProtoError::NotOpen`].
    pub const NOT_OPEN: u32 = 20;

    /// The Maelstrom error code.
    pub fn code(&self) -> u32 {
        match self {
            ProtoError::UnknownType(_) => ProtoError::UNKNOWN_TYPE,
            ProtoError::Unavailable(_) => ProtoError::UNAVAILABLE,
            ProtoError::Malformed(_) => ProtoError::MALFORMED,
            ProtoError::Internal(_) => ProtoError::INTERNAL,
            ProtoError::NotOpen(_) => ProtoError::NOT_OPEN,
        }
    }

    /// What the receiver does next.
    pub fn class(&self) -> Class {
        match self {
            ProtoError::UnknownType(_) | ProtoError::Malformed(_) | ProtoError::NotOpen(_) => {
                Class::Client
            }
            ProtoError::Unavailable(_) => Class::Transient,
            ProtoError::Internal(_) => Class::Fault,
        }
    }

    /// The error a wire `code` stands for, with its `text` (a reply another node sent). An
    /// unknown code is an internal error.
    pub fn from_code(code: u32, text: String) -> ProtoError {
        match code {
            ProtoError::UNKNOWN_TYPE => ProtoError::UnknownType(text),
            ProtoError::UNAVAILABLE => ProtoError::Unavailable(text),
            ProtoError::MALFORMED => ProtoError::Malformed(text),
            ProtoError::NOT_OPEN => ProtoError::NotOpen(text),
            _ => ProtoError::Internal(text),
        }
    }

    /// A malformed-request error.
    pub fn malformed(text: impl Into<String>) -> ProtoError {
        ProtoError::Malformed(text.into())
    }

    /// An `ack` on a connection that is not a consumer group's member.
    pub fn not_a_group_member() -> ProtoError {
        ProtoError::malformed(
            "ack is for a group member: subscribe with a \"group\" on this connection first, and ack there",
        )
    }
}

/// The window of the event at `index`, or the error that rejects its request: the window must
/// fit in 64-bit milliseconds and be writable as RFC 3339 (years 0000..=9999).
pub fn window_bounds(
    spec: WindowSpec,
    index: usize,
    ts: Timestamp,
) -> Result<WindowBounds, ProtoError> {
    let bounds = spec.bounds(ts).ok_or_else(|| {
        ProtoError::from(BatchError::WindowOverflow {
            index,
            ts,
            size: spec.size,
        })
    })?;
    check_formattable(bounds, index)?;
    Ok(bounds)
}

/// The error for a window (of the event at `index`) that reaches outside years 0000..=9999.
pub fn check_formattable(bounds: WindowBounds, index: usize) -> Result<(), ProtoError> {
    if bounds.start.check_formattable().is_err() || bounds.end.check_formattable().is_err() {
        return Err(ProtoError::malformed(format!(
            "events[{index}].timestamp: its window [{} ms, {} ms) reaches outside years 0000..=9999; use a smaller window_size_ms",
            bounds.start.as_millis(),
            bounds.end.as_millis()
        )));
    }
    Ok(())
}

impl From<BatchError> for ProtoError {
    fn from(error: BatchError) -> ProtoError {
        match error {
            BatchError::WindowOverflow { index, ts, size } => ProtoError::malformed(format!(
                "events[{index}].timestamp: the window of size {size} ms around {} ms does not fit in 64-bit milliseconds; use a smaller window_size_ms",
                ts.as_millis()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_its_variant() {
        for error in [
            ProtoError::UnknownType("a".into()),
            ProtoError::Unavailable("b".into()),
            ProtoError::Malformed("c".into()),
            ProtoError::Internal("d".into()),
            ProtoError::NotOpen("e".into()),
        ] {
            let back = ProtoError::from_code(error.code(), error.to_string());
            assert_eq!(back, error);
        }
        assert_eq!(
            ProtoError::from_code(99, "x".into()),
            ProtoError::Internal("x".into())
        );
        assert_eq!(
            ProtoError::Unavailable(String::new()).class(),
            Class::Transient
        );
    }
}
