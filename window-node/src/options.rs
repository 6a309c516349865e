//! Option values shared by the stdin node's and the daemon's command lines.

use std::time::Duration;

use clap::ValueEnum;
use window_core::{IdFrame, SizeMs, SpecError};

/// The `--ids` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Frame {
    /// id = floor((t - 7200000) / size) * size, as the published exercise expects.
    Grader,
    /// id = floor(t / size) * size: the window's UTC start.
    Utc,
}

impl From<Frame> for IdFrame {
    fn from(frame: Frame) -> IdFrame {
        match frame {
            Frame::Grader => IdFrame::Grader,
            Frame::Utc => IdFrame::Utc,
        }
    }
}

/// Parses `500ms`, `10s`, `5m`, `1h` (and combinations such as `1m30s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}: expected a duration such as 500ms, 10s, 5m or 1h"))
}

/// A window length in whole milliseconds (`--window-size`); zero is refused.
pub fn size_ms(length: Duration) -> Result<SizeMs, SpecError> {
    SizeMs::new(i64::try_from(length.as_millis()).unwrap_or(i64::MAX))
}
