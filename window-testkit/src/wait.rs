//! Bounded polling: the one way the tests and tools wait for a condition that nothing signals.

use std::time::{Duration, Instant};

use crate::Error;

/// The first pause between two looks, and the longest: short at first, so a condition that
/// holds soon is seen soon; longer later, so a long wait does not flood the awaited process
/// with questions.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_millis(50);

/// Calls `probe` until it returns `Some`, for at most `limit`; returns what it returned. `what`
/// names the awaited thing in the error (`"a new coordinator at 127.0.0.1:4000"`). A caller that
/// wants the last value seen in its failure message keeps it in a variable `probe` updates.
pub fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T, Error> {
    let deadline = Instant::now() + limit;
    let mut pause = FIRST_PAUSE;
    loop {
        if let Some(found) = probe() {
            return Ok(found);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::new(format!("not within {limit:?}: {what}")));
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 3 / 2).min(LONGEST_PAUSE);
    }
}

/// Calls `holds` until it returns `true`, for at most `limit` (see [`wait_for`]).
pub fn wait_until(
    limit: Duration,
    what: &str,
    mut holds: impl FnMut() -> bool,
) -> Result<(), Error> {
    wait_for(limit, what, || holds().then_some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_comes_true_is_seen_and_one_that_does_not_times_out() {
        let mut calls = 0;
        let found = wait_for(Duration::from_secs(5), "the third call", || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(found.expect("found"), 3);

        let started = Instant::now();
        let error = wait_until(Duration::from_millis(100), "never", || false)
            .expect_err("a condition that never holds times out");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(error.to_string(), "not within 100ms: never");
    }
}
