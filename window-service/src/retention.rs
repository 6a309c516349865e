//! The output log's retention (`--log-retention`, `--log-retention-age`): where the log may
//! start now.
//!
//! By count, the newest `windows` fired windows are kept. By age, a window that fired more than
//! `age_ms` ago (by the holder's clock) is dropped. With both, a window goes when either says so.
//! Either way a window some consumer group has not acknowledged is kept, with every later one
//! (the service applies that), and the mark only ever moves forward.
//!
//! When each window fired is known coarsely, without a time per window: [`FiredTimes`] keeps runs
//! of seqs, each with the time the last of them fired, a new run begun every 1/64 of the age.
//! So a window is dropped at most that much later than its age says, never earlier, and the runs
//! kept number about 64 however many windows fire. Fire times are not stored: the windows a
//! process recovered count as fired when it started, so a restart keeps them one age longer.

use std::collections::VecDeque;

use window_core::Timestamp;

/// How much of the output log to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many of the newest fired windows; `None`: no count limit.
    pub windows: Option<u64>,
    /// Drop windows that fired longer ago than this (ms of the holder's clock); `None`: no age
    /// limit.
    pub age_ms: Option<u64>,
}

impl Retention {
    /// Keeps the whole log.
    pub const KEEP_ALL: Retention = Retention {
        windows: None,
        age_ms: None,
    };
}

/// Runs of the output log's seqs with when they fired (see the module doc).
#[derive(Debug)]
pub(crate) struct FiredTimes {
    runs: VecDeque<Run>,
    /// A run is closed, and the next fired window begins a new one, once it is this old.
    run_ms: i64,
}

/// The windows below `end` (and above the previous run's end) fired at or before `last`; the
/// first of them at or after `opened`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    opened: Timestamp,
    end: u64,
    last: Timestamp,
}

/// Runs kept per age, about.
const RUNS_PER_AGE: u64 = 64;

impl FiredTimes {
    /// Fire times for an age limit of `age_ms`, the windows below `recovered_end` counting as
    /// fired at `now`.
    pub(crate) fn new(age_ms: u64, recovered_end: u64, now: Timestamp) -> FiredTimes {
        let run_ms = i64::try_from((age_ms / RUNS_PER_AGE).max(1)).unwrap_or(i64::MAX);
        let mut times = FiredTimes {
            runs: VecDeque::new(),
            run_ms,
        };
        if recovered_end > 0 {
            times.fired(recovered_end, now);
        }
        times
    }

    /// The windows below `end` have fired, by `now`.
    pub(crate) fn fired(&mut self, end: u64, now: Timestamp) {
        match self.runs.back_mut() {
            _ if end == 0 => {}
            Some(run) if end <= run.end => {}
            Some(run) if now.as_millis().saturating_sub(run.opened.as_millis()) < self.run_ms => {
                run.end = end;
                run.last = run.last.max(now);
            }
            _ => self.runs.push_back(Run {
                opened: now,
                end,
                last: now,
            }),
        }
    }

    /// The seq below which every window fired at or before `before`; `None` when none did.
    pub(crate) fn fired_by(&self, before: Timestamp) -> Option<u64> {
        self.runs
            .iter()
            .take_while(|run| run.last <= before)
            .last()
            .map(|run| run.end)
    }

    /// Forgets the runs wholly below `start` (the log no longer holds them).
    pub(crate) fn trimmed(&mut self, start: u64) {
        while self.runs.front().is_some_and(|run| run.end <= start) {
            self.runs.pop_front();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn a_window_is_dropped_no_earlier_than_its_age_and_at_most_a_run_later() {
        // Age 6400 ms: runs of 100 ms.
        let mut times = FiredTimes::new(6_400, 0, at(0));
        // One window fires every 10 ms, seq n at 10 n ms.
        for n in 0..1_000_u64 {
            times.fired(n + 1, at(10 * n as i64));
        }
        for now in (6_400..16_000).step_by(7) {
            let before = at(now - 6_400);
            let below = times.fired_by(before).unwrap_or(0);
            // Never too early: every window below the mark fired at or before `before`.
            if below > 0 {
                assert!(
                    10 * (below as i64 - 1) <= before.as_millis(),
                    "now {now}: {below}"
                );
            }
            // At most one run late: the windows fired more than 100 ms before `before` are gone.
            let since = before.as_millis() - 100;
            let due = if since >= 0 { since / 10 + 1 } else { 0 };
            assert!(below as i64 >= due.min(1_000), "now {now}: {below} < {due}");
        }
        assert!(
            times.len() <= 101,
            "{} runs for 10 s of one window every 10 ms",
            times.len()
        );
        times.trimmed(500);
        assert!(times.fired_by(at(i64::MAX)).unwrap() == 1_000);
        assert!(times.runs.front().unwrap().end > 500);
    }

    #[test]
    fn recovered_windows_count_as_fired_at_the_start() {
        let times = FiredTimes::new(60_000, 42, at(1_000));
        assert_eq!(times.fired_by(at(999)), None);
        assert_eq!(times.fired_by(at(1_000)), Some(42));
        let empty = FiredTimes::new(60_000, 0, at(1_000));
        assert_eq!(empty.fired_by(at(i64::MAX)), None);
    }
}
