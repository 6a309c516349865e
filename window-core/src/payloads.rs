//! The payloads of a window's current pane: nothing is stored while none of its events had one,
//! so windows without payloads cost nothing extra.

/// The payloads of one pane, one per event in admission order; empty while none had one.
#[derive(Debug, Default)]
pub(crate) struct PanePayloads(Vec<Option<Box<str>>>);

impl PanePayloads {
    /// Records the payload of the pane's event number `at`; the pane's earlier events are
    /// recorded already.
    pub(crate) fn push(&mut self, at: usize, payload: Option<&str>) {
        match payload {
            Some(payload) => {
                self.0.resize(at, None);
                self.0.push(Some(payload.into()));
            }
            None if self.0.is_empty() => {}
            None => self.0.push(None),
        }
    }

    /// The payloads of the pane's events `from..to`, one each; empty when none of them had one.
    pub(crate) fn range(&self, from: usize, to: usize) -> Vec<Option<Box<str>>> {
        let held = to.min(self.0.len());
        if from >= held || self.0[from..held].iter().all(Option::is_none) {
            return Vec::new();
        }
        let mut out = self.0[from..held].to_vec();
        out.resize(to - from, None);
        out
    }

    /// The payloads of the pane's `len` events, leaving none: the pane fired.
    pub(crate) fn take(&mut self, len: usize) -> Vec<Option<Box<str>>> {
        let mut out = std::mem::take(&mut self.0);
        if !out.is_empty() {
            out.resize(len, None);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_kept_until_an_event_has_a_payload_then_every_event_has_a_place() {
        let mut pane = PanePayloads::default();
        pane.push(0, None);
        pane.push(1, None);
        assert!(pane.range(0, 2).is_empty());
        pane.push(2, Some("{\"a\":1}"));
        pane.push(3, None);
        assert_eq!(
            pane.range(1, 5),
            vec![None, Some("{\"a\":1}".into()), None, None]
        );
        assert!(pane.range(3, 5).is_empty(), "none of 3..5 had one");
        assert_eq!(pane.take(5).len(), 5);
        assert!(pane.take(2).is_empty(), "taken: the next pane starts empty");
    }
}
