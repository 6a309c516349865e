//! Option values shared by the command lines: the stdin node's, the daemon's and the pipe's.

use std::num::NonZeroU32;
use std::time::Duration;

use clap::{Args, ValueEnum};
use window_core::{EngineConfig, IdFrame, LatePolicy, PurgePolicy, SizeMs, SpecError};

/// The engine's options, the same for `serve` and `aggregate`: window length, lateness, purge
/// policy, id frame and what becomes of late events.
#[derive(Clone, Debug, Args)]
pub struct EngineArgs {
    /// Window length (`500ms`, `10s`, `5m`, `1h`), from 1ms to 100 years.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_window_size, env = "WINDOW_NODE_WINDOW_SIZE")]
    pub window_size: Duration,

    /// The watermark trails the highest event time seen (with `serve --time ingest`: the clock)
    /// by this much; a window fires when the watermark passes its end, and later events of it
    /// are late. Default: 5s (0s with `serve --time ingest`); at most 100 years.
    #[arg(long, value_name = "DURATION", value_parser = parse_lateness, env = "WINDOW_NODE_ALLOWED_LATENESS")]
    pub allowed_lateness: Option<Duration>,

    /// Fire a window (pane) the moment it holds this many events.
    #[arg(long, value_name = "N", env = "WINDOW_NODE_MAX_EVENTS")]
    pub max_events: Option<NonZeroU32>,

    /// Fire a window (pane) this long (wall time) after its first event.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "WINDOW_NODE_MAX_AGE")]
    pub max_age: Option<Duration>,

    /// Window-id frame: `utc` labels a window by its UTC start; `grader` as the stdin node does.
    #[arg(long, value_enum, default_value_t = Frame::Utc, env = "WINDOW_NODE_IDS")]
    pub ids: Frame,

    /// Late events (their window already fired by the watermark): `drop` counts them; `emit`
    /// also sends them on (to subscribers as `late_event` messages; in `aggregate`, as output
    /// lines with reason `late`).
    #[arg(long, value_enum, default_value_t = Late::Drop, env = "WINDOW_NODE_LATE")]
    pub late: Late,
}

impl EngineArgs {
    /// The engine's configuration and the window size, with `lateness` when no
    /// `--allowed-lateness` is given; the size is refused when zero.
    pub fn config(&self, lateness: Duration) -> Result<(EngineConfig, SizeMs), SpecError> {
        let config = EngineConfig {
            frame: self.ids.into(),
            purge: PurgePolicy {
                max_events: self.max_events,
                max_age_ms: self.max_age.map(millis),
            },
            allowed_lateness_ms: Some(millis(self.allowed_lateness.unwrap_or(lateness))),
            late: match self.late {
                Late::Drop => LatePolicy::Drop,
                Late::Emit => LatePolicy::Emit,
            },
        };
        Ok((config, size_ms(self.window_size)?))
    }
}

/// `--allowed-lateness` when none is given (except with `serve --time ingest`).
pub const DEFAULT_LATENESS: Duration = Duration::from_secs(5);

/// The `--late` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Late {
    /// Count late events and drop them.
    Drop,
    /// Count them and send them on.
    Emit,
}

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
    if text.trim_start().starts_with('-') {
        return Err(
            "a duration cannot be negative: give one such as 500ms, 10s, 5m or 1h".to_owned(),
        );
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}: expected a duration such as 500ms, 10s, 5m or 1h"))
}

/// The longest `--window-size` and `--allowed-lateness`: 100 years of 365.25 days. Longer is a
/// typo (a window that never fires, a watermark before year 0), and far longer overflows the
/// millisecond arithmetic.
pub const MAX_SPAN: Duration = Duration::from_secs(36_525 * 86_400);

/// `--window-size`: a duration from 1ms to 100 years.
pub fn parse_window_size(text: &str) -> Result<Duration, String> {
    let size = parse_duration(text)?;
    if size < Duration::from_millis(1) || size > MAX_SPAN {
        return Err(format!(
            "{text} is out of range: a window size is from 1ms to 100 years (36525d); give e.g. 500ms, 10s, 5m or 1h"
        ));
    }
    Ok(size)
}

/// `--allowed-lateness`: a duration from 0s to 100 years.
pub fn parse_lateness(text: &str) -> Result<Duration, String> {
    let lateness = parse_duration(text)?;
    if lateness > MAX_SPAN {
        return Err(format!(
            "{text} is out of range: the allowed lateness is from 0s to 100 years (36525d); give e.g. 0s, 5s or 1m"
        ));
    }
    Ok(lateness)
}

/// A window length in whole milliseconds (`--window-size`); zero is refused.
pub fn size_ms(length: Duration) -> Result<SizeMs, SpecError> {
    SizeMs::new(i64::try_from(length.as_millis()).unwrap_or(i64::MAX))
}

/// Whole milliseconds of `d`, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A count that must be at least 1 (`--max-connections`, `--max-line-bytes`): 0 would make the
/// node refuse everything.
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (0 would refuse everything it limits)".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}: give a whole number of at least 1")),
    }
}
