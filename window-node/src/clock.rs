//! The only place that reads wall time; also where the link shells read the monotonic time
//! `window_cluster::link` decides on.
//!
//! The stdin node reads the wall clock per request. The daemon uses a [`Clock`]: the wall time at
//! start plus tokio's monotonic time since, so its timers cannot be fooled by a wall-clock jump
//! while it runs, and tests can drive them with paused tokio time.

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

/// Processing time for the daemon: wall time at start, advanced by tokio's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    anchor_wall: Timestamp,
    anchor: tokio::time::Instant,
}

impl Clock {
    /// A clock that reads the wall time now and counts on from it.
    pub fn start() -> Clock {
        Clock {
            anchor_wall: now(),
            anchor: tokio::time::Instant::now(),
        }
    }

    /// Processing time now.
    pub fn now(&self) -> Timestamp {
        let elapsed = i64::try_from(self.anchor.elapsed().as_millis()).unwrap_or(i64::MAX);
        Timestamp::from_millis(self.anchor_wall.as_millis().saturating_add(elapsed))
    }

    /// The monotonic instant at which processing time reaches `at` (now, if it already has).
    pub fn instant_at(&self, at: Timestamp) -> tokio::time::Instant {
        let wait = at.as_millis().saturating_sub(self.now().as_millis()).max(0);
        tokio::time::Instant::now() + std::time::Duration::from_millis(wait.unsigned_abs())
    }
}

/// The monotonic time a link decides on: tokio's, so tests can drive it with paused time.
pub fn monotonic() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
