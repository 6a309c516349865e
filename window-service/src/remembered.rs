//! Requests remembered by id, so that a repeat is answered from the record instead of being run
//! again.
//!
//! A follower marks every line it forwards with a request id, and so may a client. When the
//! coordinator dies after committing a request but before its reply arrived, the follower sends
//! the line again to the next coordinator. Without the record, a resent `close` or `flush` would
//! run again, and a resent `ingest` whose window was closed meanwhile would open the window
//! afresh and emit its events a second time. With it, the resend gets the first reply.
//!
//! The driver remembers an outcome in the same batch as the change the request made (so after a
//! crash both are there or neither is), keeps the newest [`REMEMBERED_REQUESTS`] like the store
//! does, and forgets nothing that a store recovered.

use std::collections::{HashMap, VecDeque};

use window_store::{REMEMBERED_REQUESTS, RememberedRequest, RequestOutcome};

/// The newest remembered requests, by id.
#[derive(Debug, Default)]
pub struct Remembered {
    by_id: HashMap<Box<str>, (RequestOutcome, Option<u64>)>,
    /// Ids in the order they were remembered (oldest first), for forgetting the oldest.
    order: VecDeque<Box<str>>,
    /// The number the next remembered request gets.
    next_n: u64,
}

impl Remembered {
    /// What a store recovered, in order of number.
    pub fn restore(requests: Vec<RememberedRequest>) -> Remembered {
        let mut remembered = Remembered::default();
        for request in requests {
            remembered.next_n = request.n;
            remembered.remember(request.id, request.outcome, request.fingerprint);
        }
        remembered
    }

    /// The outcome of the request `id` and its fingerprint (`None` for a request remembered
    /// before fingerprints were kept), if it is remembered.
    pub fn get(&self, id: &str) -> Option<(RequestOutcome, Option<u64>)> {
        self.by_id.get(id).copied()
    }

    /// Remembers `outcome` for `id` (a request with that fingerprint) and returns the record to
    /// write with the request's batch.
    pub fn remember(
        &mut self,
        id: String,
        outcome: RequestOutcome,
        fingerprint: Option<u64>,
    ) -> RememberedRequest {
        let n = self.next_n;
        self.next_n += 1;
        let key: Box<str> = id.as_str().into();
        if self
            .by_id
            .insert(key.clone(), (outcome, fingerprint))
            .is_none()
        {
            self.order.push_back(key);
        }
        while self.order.len() as u64 > REMEMBERED_REQUESTS {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
        RememberedRequest {
            n,
            id,
            outcome,
            fingerprint,
        }
    }

    /// How many requests are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest(accepted: u64) -> RequestOutcome {
        RequestOutcome::Ingest {
            accepted,
            duplicates: 0,
            late: 0,
        }
    }

    #[test]
    fn numbers_continue_after_what_was_restored() {
        let restored = Remembered::restore(vec![
            RememberedRequest {
                n: 41,
                id: "a".into(),
                outcome: ingest(1),
                fingerprint: Some(7),
            },
            RememberedRequest {
                n: 42,
                id: "b".into(),
                outcome: RequestOutcome::Close { seq: 3 },
                fingerprint: None,
            },
        ]);
        let mut remembered = restored;
        assert_eq!(remembered.get("a"), Some((ingest(1), Some(7))));
        assert_eq!(
            remembered.get("b"),
            Some((RequestOutcome::Close { seq: 3 }, None))
        );
        assert_eq!(remembered.get("c"), None);
        let record = remembered.remember("c".into(), ingest(2), Some(9));
        assert_eq!(record.n, 43, "numbers go on densely from the store's");
        assert_eq!(record.fingerprint, Some(9));
        assert_eq!(remembered.get("c"), Some((ingest(2), Some(9))));
    }

    #[test]
    fn the_oldest_is_forgotten_once_the_store_would_have_overwritten_it() {
        let mut remembered = Remembered::default();
        for i in 0..=REMEMBERED_REQUESTS {
            remembered.remember(format!("r{i}"), ingest(i), Some(i));
        }
        assert_eq!(remembered.len() as u64, REMEMBERED_REQUESTS);
        assert_eq!(remembered.get("r0"), None, "its slot now holds the newest");
        assert_eq!(remembered.get("r1"), Some((ingest(1), Some(1))));
        assert_eq!(
            remembered.get(&format!("r{REMEMBERED_REQUESTS}")),
            Some((ingest(REMEMBERED_REQUESTS), Some(REMEMBERED_REQUESTS)))
        );
    }
}
