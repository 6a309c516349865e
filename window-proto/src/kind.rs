//! The kinds of message a node writes, each `type` spelled once.

/// The kinds of message a node writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Answers `init`.
    InitOk,
    /// Answers `assign`.
    Assigned,
    /// Answers `process_window`.
    WindowResult,
    /// Answers `close`; also a fired window, unsolicited or streamed to a subscriber.
    WindowClosed,
    /// Answers `flush`.
    Flushed,
    /// Answers `stats`.
    StatsOk,
    /// Answers `ingest`.
    IngestOk,
    /// Answers `subscribe`; the windows follow.
    SubscribeOk,
    /// A late event, streamed to subscribers under `--late emit`.
    LateEvent,
    /// Answers `ack`.
    AckOk,
    /// Answers a request that failed.
    Error,
}

impl Kind {
    /// Every kind, for [`Kind::parse`].
    const ALL: [Kind; 11] = [
        Kind::InitOk,
        Kind::Assigned,
        Kind::WindowResult,
        Kind::WindowClosed,
        Kind::Flushed,
        Kind::StatsOk,
        Kind::IngestOk,
        Kind::SubscribeOk,
        Kind::LateEvent,
        Kind::AckOk,
        Kind::Error,
    ];

    /// The `type` the wire uses: the one place each is spelled.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::InitOk => "init_ok",
            Kind::Assigned => "assigned",
            Kind::WindowResult => "window_result",
            Kind::WindowClosed => "window_closed",
            Kind::Flushed => "flushed",
            Kind::StatsOk => "stats_ok",
            Kind::IngestOk => "ingest_ok",
            Kind::SubscribeOk => "subscribe_ok",
            Kind::LateEvent => "late_event",
            Kind::AckOk => "ack_ok",
            Kind::Error => "error",
        }
    }

    /// The kind a `type` names, if it is one a node writes.
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("ingest"), None);
    }
}
