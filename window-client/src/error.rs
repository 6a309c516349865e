//! What can go wrong, with the daemon's wire code when it said so.

use serde_json::Value;
use window_proto::{Kind, ProtoError};

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error: its wire code (11 unavailable, 12 malformed, 20 not
    /// open, ...) and text.
    #[error("the daemon answered error {code}: {text}")]
    Daemon { code: u32, text: String },
    /// No node could be reached.
    #[error("{0}")]
    NoNode(String),
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A line that is not the JSON the protocol says.
    #[error("a reply that is not what the protocol says: {0}")]
    Protocol(#[from] serde_json::Error),
}

impl ClientError {
    /// The error a reply carries, if it is an error.
    pub(crate) fn of_reply(reply: &Value) -> Option<ClientError> {
        let body = reply.get("body").unwrap_or(reply);
        (body["type"] == Kind::Error.as_str()).then(|| ClientError::Daemon {
            code: body["code"].as_u64().unwrap_or(0) as u32,
            text: body["text"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Whether another node may succeed where this failed: a lost connection, or error 11.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Daemon { code, .. } => *code == ProtoError::UNAVAILABLE,
            ClientError::Io(_) | ClientError::NoNode(_) => true,
            ClientError::Protocol(_) => false,
        }
    }

    /// The same error again, for another request that failed with it.
    pub(crate) fn duplicate(&self) -> ClientError {
        match self {
            ClientError::Daemon { code, text } => ClientError::Daemon {
                code: *code,
                text: text.clone(),
            },
            ClientError::NoNode(text) => ClientError::NoNode(text.clone()),
            ClientError::Io(e) => ClientError::Io(std::io::Error::new(e.kind(), e.to_string())),
            ClientError::Protocol(e) => ClientError::Io(std::io::Error::other(e.to_string())),
        }
    }

    /// The daemon's wire code, when the daemon answered.
    pub fn code(&self) -> Option<u32> {
        match self {
            ClientError::Daemon { code, .. } => Some(*code),
            _ => None,
        }
    }
}
