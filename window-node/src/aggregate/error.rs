//! What goes wrong in `aggregate`: a bad line (reported and skipped, or with `--strict` the
//! end of the run), and the errors that stop it, each with what to do and its exit code.

use std::io;
use std::path::PathBuf;

use crate::aggregate::role::Role;

/// Why one input line is not an event.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line's bytes are not UTF-8.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// Not one JSON object.
    #[error("not a JSON object: {0}")]
    Json(serde_json::Error),
    /// A CSV record that cannot be read (e.g. a different number of fields than the header).
    #[error("bad CSV record: {0}")]
    Csv(String),
    /// The id or the time is not there.
    #[error("no {} field (name it with {})", .0.name(), .0.option())]
    Missing(Role),
    /// A field holds something it cannot.
    #[error("the {} field must be {expected}, got {got}", role.name())]
    Invalid {
        /// Which field.
        role: Role,
        /// What it must be.
        expected: &'static str,
        /// What it was (shortened).
        got: String,
    },
    /// The time is not RFC 3339 or lies outside years 0000..=9999.
    #[error("{0}")]
    Time(String),
    /// The event's window does not fit in years 0000..=9999.
    #[error("its window reaches outside years 0000..=9999 (a smaller --window-size may fit)")]
    WindowOutOfRange,
}

/// What stops `aggregate`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file cannot be opened.
    #[error("cannot open {}: {source}; check the path, or give - to read stdin", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// An input cannot be read to its end.
    #[error("reading {name}: {source}")]
    Read {
        /// The file, or `stdin`.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// A CSV input's first row cannot be read as its header.
    #[error(
        "{name}: the CSV header cannot be read ({reason}); the first row must name the columns"
    )]
    CsvHeader {
        /// The file, or `stdin`.
        name: String,
        /// Why.
        reason: String,
    },
    /// A CSV input has no column for a field option.
    #[error("{name}: the CSV header has no column {column:?} for {}; name one of {columns} with {}", role.option(), role.option())]
    UnknownColumn {
        /// The file, or `stdin`.
        name: String,
        /// The option's field.
        role: Role,
        /// The column asked for.
        column: String,
        /// The columns there are.
        columns: String,
    },
    /// `--strict` and a line that is not an event.
    #[error(
        "{name}:{line}: {reason} (--strict stops at the first bad line; without it bad lines are reported and skipped)"
    )]
    Strict {
        /// The file, or `stdin`.
        name: String,
        /// Its line number, from 1.
        line: u64,
        /// Why.
        reason: LineError,
    },
    /// The output cannot be written.
    #[error("writing {name}: {source}")]
    Write {
        /// The file, or `stdout`.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// An option value the engine refuses.
    #[error("--window-size: {0}")]
    Spec(#[from] window_core::SpecError),
    /// The engine refused a batch (the parsers check every event's window first: a bug).
    #[error("the engine refused a batch: {0}")]
    Engine(#[from] window_core::BatchError),
}

impl Error {
    /// The process's exit code: 2 when the command line or the input's shape needs fixing
    /// (a missing file, a CSV header without the named column), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Open { .. }
            | Error::CsvHeader { .. }
            | Error::UnknownColumn { .. }
            | Error::Spec(_) => 2,
            Error::Read { .. } | Error::Strict { .. } | Error::Write { .. } | Error::Engine(_) => 1,
        }
    }
}
