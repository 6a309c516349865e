//! The one error of the harness: a message that says what was awaited or what failed.

use std::fmt;

/// What went wrong, in words: a deadline that passed (and what was awaited), a process that
/// exited too early or could not be started, a failed signal. For a process, the message ends
/// with the tail of its stderr.
///
/// `Debug` writes the message as `Display` does, so that a test's `.expect("...")` shows it
/// readably rather than as an escaped string.
pub struct Error {
    message: String,
}

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
