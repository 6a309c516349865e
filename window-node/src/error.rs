//! Errors a request can end in, each with its stable wire code.

/// What went wrong with a request, as the client is told.
///
/// Every variant maps to a Maelstrom error code (see `docs/protocol.md`) and is a client error:
/// the node replies and goes on serving; its open state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// Code 10: the request's `type` is not one this node serves.
    #[error("{0}")]
    UnknownType(String),
    /// Code 12: bad JSON, a line too long, or a missing or invalid field.
    #[error("{0}")]
    Malformed(String),
    /// Code 20: `close` of a window that is not open.
    #[error("{0}")]
    NotOpen(String),
    /// Code 11: the request cannot be served right now; retrying is safe.
    #[error("{0}")]
    Unavailable(String),
    /// Code 13: a fault inside the node; the request may be retried.
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    /// The Maelstrom error code.
    /// The code of [`NodeError::Unavailable`]: the request was not run and may be sent again.
    pub const UNAVAILABLE: u32 = 11;

    pub fn code(&self) -> u32 {
        match self {
            NodeError::UnknownType(_) => 10,
            NodeError::Unavailable(_) => NodeError::UNAVAILABLE,
            NodeError::Malformed(_) => 12,
            NodeError::Internal(_) => 13,
            NodeError::NotOpen(_) => 20,
        }
    }

    /// The error a wire `code` stands for, with its `text` (a reply another node sent). An
    /// unknown code is an internal error.
    pub fn from_code(code: u32, text: String) -> NodeError {
        match code {
            10 => NodeError::UnknownType(text),
            12 => NodeError::Malformed(text),
            20 => NodeError::NotOpen(text),
            NodeError::UNAVAILABLE => NodeError::Unavailable(text),
            _ => NodeError::Internal(text),
        }
    }

    /// A malformed-request error.
    pub fn malformed(text: impl Into<String>) -> NodeError {
        NodeError::Malformed(text.into())
    }
}
