//! The only place that reads wall time.

use std::time::{SystemTime, UNIX_EPOCH};

use window_core::Timestamp;

/// Processing time now, in milliseconds since the epoch.
pub fn now() -> Timestamp {
    let ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    };
    Timestamp::from_millis(ms)
}
