//! The bytes of unfinished request lines held across all of a process's connections
//! (`--max-buffered-line-bytes`). Each line is bounded by `--max-line-bytes` on its own; this
//! bounds their sum, so that many connections each holding most of a long line cannot take the
//! process's memory. A connection whose line would take the sum over the limit is answered with
//! error 11 and closed (its bytes are let go); the client sends the request again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The shared count and its limit.
#[derive(Debug)]
pub struct LineBudget {
    held: AtomicUsize,
    max: usize,
}

impl LineBudget {
    pub fn new(max: usize) -> Arc<LineBudget> {
        Arc::new(LineBudget {
            held: AtomicUsize::new(0),
            max,
        })
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes of unfinished lines held now, over all connections.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// One connection's part of the count, given back when it is dropped.
    pub fn share(self: &Arc<LineBudget>) -> Share {
        Share {
            budget: Arc::clone(self),
            held: 0,
        }
    }
}

/// What one connection holds of the budget.
#[derive(Debug)]
pub struct Share {
    budget: Arc<LineBudget>,
    held: usize,
}

impl Share {
    /// Notes that the connection now holds `now` bytes of an unfinished line; `false` when that
    /// takes the sum over the limit (the connection must then let its line go).
    pub fn hold(&mut self, now: usize) -> bool {
        if now >= self.held {
            let more = now - self.held;
            self.held = now;
            let total = self.budget.held.fetch_add(more, Ordering::Relaxed) + more;
            total <= self.budget.max
        } else {
            self.budget
                .held
                .fetch_sub(self.held - now, Ordering::Relaxed);
            self.held = now;
            true
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.held, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_are_given_back() {
        let budget = LineBudget::new(100);
        let mut a = budget.share();
        let mut b = budget.share();
        assert!(a.hold(60));
        assert!(b.hold(40), "exactly the limit is within it");
        assert!(!b.hold(41), "one byte over");
        assert!(a.hold(10), "giving back is always fine");
        assert_eq!(budget.held(), 51);
        assert!(b.hold(90));
        drop(b);
        assert_eq!(
            budget.held(),
            10,
            "a dropped connection gives its bytes back"
        );
        assert!(a.hold(0));
        assert_eq!(budget.held(), 0);
    }
}
