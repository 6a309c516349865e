//! A request's fingerprint: a stable 64-bit hash of what it asks for, kept with its remembered
//! outcome, so that a request id used again for other content is refused instead of being
//! answered with the first request's outcome (which would silently drop the new events).
//!
//! Stable across processes and builds (XXH3, fixed seed, a fixed byte layout of the parsed
//! request), so a resend after a restart or a failover matches; `msg_id` is not part of it (a
//! follower renumbers what it forwards).

use window_core::{Event, EventId, SizeMs, Timestamp, WindowId};
use xxhash_rust::xxh3::Xxh3;

/// The fingerprint of an `ingest` of `events` into windows of `size`, as given (before any
/// stamping with ingest time).
pub fn ingest(size: SizeMs, events: &[Event<'_>]) -> u64 {
    let mut h = Hasher::new(b'I');
    h.i64(size.get());
    h.u64(events.len() as u64);
    for event in events {
        match &event.id {
            EventId::Int(n) => {
                h.tag(0);
                h.i64(*n);
            }
            EventId::Text(text) => {
                h.tag(1);
                h.bytes(text.as_bytes());
            }
            EventId::Number(text) => {
                h.tag(2);
                h.bytes(text.as_bytes());
            }
        }
        h.i64(event.ts.as_millis());
        h.opt_bytes(event.key.map(str::as_bytes));
        match event.value {
            None => h.tag(0),
            Some(v) => {
                h.tag(1);
                h.u64(v.to_bits());
            }
        }
        h.opt_bytes(event.payload.as_deref().map(str::as_bytes));
    }
    h.finish()
}

/// The fingerprint of a `close` of one window.
pub fn close(window_id: WindowId, size: Option<SizeMs>, key: Option<&str>) -> u64 {
    let mut h = Hasher::new(b'C');
    h.i64(window_id.0);
    h.i64(size.map_or(0, SizeMs::get));
    h.opt_bytes(key.map(str::as_bytes));
    h.finish()
}

/// The fingerprint of a `flush` up to `until` (everything when `None`).
pub fn flush(until: Option<Timestamp>) -> u64 {
    let mut h = Hasher::new(b'F');
    match until {
        None => h.tag(0),
        Some(until) => {
            h.tag(1);
            h.i64(until.as_millis());
        }
    }
    h.finish()
}

/// XXH3 over length-prefixed fields, so that no two different requests give the same bytes.
struct Hasher(Xxh3);

impl Hasher {
    fn new(kind: u8) -> Hasher {
        let mut h = Hasher(Xxh3::new());
        h.tag(kind);
        h
    }

    fn tag(&mut self, tag: u8) {
        self.0.update(&[tag]);
    }

    fn u64(&mut self, n: u64) {
        self.0.update(&n.to_le_bytes());
    }

    fn i64(&mut self, n: i64) {
        self.0.update(&n.to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.0.update(bytes);
    }

    fn opt_bytes(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.tag(0),
            Some(bytes) => {
                self.tag(1);
                self.bytes(bytes);
            }
        }
    }

    fn finish(&self) -> u64 {
        self.0.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(id: i64, key: Option<&'a str>, payload: Option<&str>) -> Event<'a> {
        Event {
            id: EventId::Int(id),
            ts: Timestamp::from_millis(1_000),
            key,
            value: None,
            payload: payload.map(Into::into),
        }
    }

    #[test]
    fn the_same_request_has_the_same_fingerprint_and_any_change_another() {
        let size = SizeMs::new(60_000).unwrap();
        let base = ingest(size, &[event(1, Some("k"), Some("{}"))]);
        assert_eq!(base, ingest(size, &[event(1, Some("k"), Some("{}"))]));
        let others = [
            ingest(size, &[event(2, Some("k"), Some("{}"))]),
            ingest(size, &[event(1, Some("j"), Some("{}"))]),
            ingest(size, &[event(1, None, Some("{}"))]),
            ingest(size, &[event(1, Some("k"), Some("[]"))]),
            ingest(size, &[event(1, Some("k"), None)]),
            ingest(
                SizeMs::new(1_000).unwrap(),
                &[event(1, Some("k"), Some("{}"))],
            ),
            ingest(
                size,
                &[event(1, Some("k"), Some("{}")), event(2, None, None)],
            ),
            ingest(size, &[]),
        ];
        for (n, other) in others.iter().enumerate() {
            assert_ne!(base, *other, "change {n}");
        }
        // A text id and a numeric id with the same digits differ; so do the field borders.
        let text = Event {
            id: EventId::Text("7".into()),
            ..event(0, None, None)
        };
        let number = Event {
            id: EventId::Number("7".into()),
            ..event(0, None, None)
        };
        assert_ne!(ingest(size, &[text]), ingest(size, &[number]));
        assert_ne!(
            ingest(size, &[event(1, Some("ab"), Some("c"))]),
            ingest(size, &[event(1, Some("a"), Some("bc"))])
        );
        assert_ne!(flush(None), flush(Some(Timestamp::from_millis(0))));
        assert_ne!(
            close(WindowId(1), None, None),
            close(WindowId(2), None, None)
        );
        assert_ne!(
            close(WindowId(1), None, None),
            close(WindowId(1), None, Some("k"))
        );
    }

    #[test]
    fn fingerprints_are_stable_across_builds() {
        // Written into stores: a change here makes every remembered request look reused.
        assert_eq!(format!("{:016x}", flush(None)), "d49ed42b6d54e5bf");
        let size = SizeMs::new(60_000).unwrap();
        let one = ingest(size, &[event(1, Some("k"), Some("{}"))]);
        assert_eq!(format!("{one:016x}"), "635e5aa2b2f784ab");
    }
}
