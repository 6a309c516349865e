//! One link to a holder: the requests a node forwards to another node (a follower to the lease's
//! coordinator, the partition router to a partition's holder) and what becomes of them when that
//! holder goes away.
//!
//! A [`Link`] keeps every request line it was given, in order, until its reply comes. Replies come
//! in the order the lines were sent (a holder answers one connection in order), so each reply
//! answers the oldest waiting line. When the holder goes away (its connection ends, the lease
//! moves, or it answers error 11 because it is stopping or handing the partition over) the link
//! keeps the unanswered lines and sends them again, with the same request ids, to the next holder
//! once connected: the ids make the resends safe (ingest is idempotent by event id; `close` and
//! `flush` are answered from their record). Only when no holder is reachable for the failover
//! timeout does the link give the waiting lines up, for the caller to answer with error 11.
//!
//! The link does no I/O and reads no clock: the shell that owns the connection tells it what
//! happened ([`Link::push`], [`Link::connected`], [`Link::lost`], [`Link::reply`]) with the time
//! on its monotonic clock, writes the lines it returns, and calls [`Link::give_up`] once
//! [`Link::give_up_at`] has passed without a connection.
//!
//! In flight: a shell takes a new line only while [`Link::may_take`], that is, while fewer than
//! [`IN_FLIGHT`] lines wait, fewer than the holder queues replies for ([`PIPELINE`]). So the
//! holder's reader never stops, and a shell busy writing (not reading replies) cannot deadlock
//! with it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Replies a holder's connection may have pending before it stops reading.
pub const PIPELINE: usize = 64;

/// Lines a link keeps in flight on one connection: fewer than the holder's [`PIPELINE`].
pub const IN_FLIGHT: usize = PIPELINE - 16;

/// How long a shell waits before sending again what a stopping holder refused.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long a shell waits before connecting again after its connection closed: a holder that
/// closes every connection (at its connection limit, or stopping) must not make it spin.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// A link's settings.
#[derive(Clone, Copy, Debug)]
pub struct LinkConfig {
    /// Lines kept in flight at most (see [`IN_FLIGHT`]).
    pub in_flight: usize,
    /// How long the waiting lines wait for a holder, and how long a run of refusals (error 11)
    /// is retried, before the callers get error 11.
    pub failover_timeout: Duration,
    /// How long lines wait for a holder after the link gave up once and before any holder
    /// answered again: the requests queued behind an unreachable holder get their error 11
    /// soon, not one failover timeout each.
    pub unreachable_patience: Duration,
}

impl LinkConfig {
    /// The settings for a failover timeout: [`IN_FLIGHT`], and the full timeout after a give-up
    /// too.
    pub fn new(failover_timeout: Duration) -> LinkConfig {
        LinkConfig {
            in_flight: IN_FLIGHT,
            failover_timeout,
            unreachable_patience: failover_timeout,
        }
    }
}

/// What a reply line does (see [`Link::reply`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<T> {
    /// It answers the request tagged `T`: pass it on.
    Answer(T),
    /// The holder refused (error 11) and the run of refusals is younger than the failover
    /// timeout: drop the connection, wait [`RETRY_PAUSE`] and connect again; the request keeps
    /// waiting.
    Retry,
    /// Nothing waits for it (a refusal at the holder's connection limit, say): drop it.
    Unsolicited,
}

/// The connection, as far as the link knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Connection {
    /// Connected: lines pushed now are sent now.
    Up,
    /// Not connected since `since` (or since the first line waiting for a connection).
    Down { since: Instant },
}

/// The lines forwarded to one holder and not yet answered, each with the caller's tag `T` (where
/// its reply goes).
#[derive(Debug)]
pub struct Link<T> {
    config: LinkConfig,
    waiting: VecDeque<(String, T)>,
    connection: Connection,
    /// Set by a give-up, cleared by a connection: waits are [`LinkConfig::unreachable_patience`].
    unreachable: bool,
    /// The run of refusals: when it began and when its latest refusal came.
    refusals: Option<(Instant, Instant)>,
}

impl<T> Link<T> {
    /// A link with nothing waiting, not connected.
    pub fn new(config: LinkConfig, now: Instant) -> Link<T> {
        Link {
            config,
            waiting: VecDeque::new(),
            connection: Connection::Down { since: now },
            unreachable: false,
            refusals: None,
        }
    }

    /// Whether nothing waits for a reply.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty()
    }

    /// How many lines wait for a reply.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether a shell may take another line (fewer than [`LinkConfig::in_flight`] wait).
    pub fn may_take(&self) -> bool {
        self.waiting.len() < self.config.in_flight
    }

    /// Takes `line`, tagged `tag`; returns it when it is to be sent now (the link is connected).
    /// A line taken while not connected is sent by [`Link::connected`].
    pub fn push(&mut self, now: Instant, line: String, tag: T) -> Option<&str> {
        if self.waiting.is_empty()
            && let Connection::Down { since } = &mut self.connection
        {
            // The wait for a holder starts with the first line that needs one.
            *since = now;
        }
        self.waiting.push_back((line, tag));
        match self.connection {
            Connection::Up => self.waiting.back().map(|(line, _)| line.as_str()),
            Connection::Down { .. } => None,
        }
    }

    /// Puts `line` before every waiting line, to be sent first on the next connection (a
    /// follower's resubscription). Only while not connected.
    pub fn push_front(&mut self, line: String, tag: T) {
        debug_assert!(
            self.connection != Connection::Up,
            "push_front while connected"
        );
        self.waiting.push_front((line, tag));
    }

    /// Keeps only the waiting lines whose tag `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &T) -> bool) {
        self.waiting.retain(|(line, tag)| keep(line, tag));
    }

    /// Whether a waiting line and its tag satisfy `test`.
    pub fn any(&self, mut test: impl FnMut(&str, &T) -> bool) -> bool {
        self.waiting.iter().any(|(line, tag)| test(line, tag))
    }

    /// A connection to a holder is open: every waiting line, in order, is to be sent on it (the
    /// resend to a new holder, with the same request ids).
    pub fn connected(&mut self) -> impl Iterator<Item = &str> {
        self.connection = Connection::Up;
        self.unreachable = false;
        self.waiting.iter().map(|(line, _)| line.as_str())
    }

    /// The connection ended (end of stream, a failed write, or the lease moved to another
    /// holder). What waits is sent again on the next connection.
    pub fn lost(&mut self, now: Instant) {
        if self.connection == Connection::Up {
            self.connection = Connection::Down { since: now };
        }
    }

    /// A reply line came; `refused` when it is error 11. Says what to do with it.
    pub fn reply(&mut self, now: Instant, refused: bool) -> Reply<T> {
        if refused && !self.waiting.is_empty() && self.may_retry(now) {
            self.note(now, true);
            // A handover or a stop: the next holder gets everything unanswered.
            self.connection = Connection::Down { since: now };
            return Reply::Retry;
        }
        self.note(now, refused);
        match self.waiting.pop_front() {
            Some((_, tag)) => Reply::Answer(tag),
            None => Reply::Unsolicited,
        }
    }

    /// When the waiting lines are given up if no connection opens before; `None` while
    /// connected.
    pub fn give_up_at(&self) -> Option<Instant> {
        match self.connection {
            Connection::Up => None,
            Connection::Down { since } => Some(since + self.patience()),
        }
    }

    /// No holder was reachable until [`Link::give_up_at`]: every waiting line, for the caller
    /// to answer with error 11. Until a connection opens, later lines wait only
    /// [`LinkConfig::unreachable_patience`].
    pub fn give_up(&mut self, now: Instant) -> std::collections::vec_deque::IntoIter<(String, T)> {
        self.unreachable = true;
        self.connection = Connection::Down { since: now };
        std::mem::take(&mut self.waiting).into_iter()
    }

    fn patience(&self) -> Duration {
        if self.unreachable {
            self.config.unreachable_patience
        } else {
            self.config.failover_timeout
        }
    }

    /// Whether a refusal now may be retried: while the run of refusals is younger than the
    /// failover timeout. A run ends with any other reply, or when no refusal came for a failover
    /// timeout.
    fn may_retry(&mut self, now: Instant) -> bool {
        let timeout = self.config.failover_timeout;
        if self.refusals.is_some_and(|(_, last)| now - last > timeout) {
            self.refusals = None;
        }
        self.refusals.is_none_or(|(first, _)| now - first < timeout)
    }

    /// Notes a reply in the run of refusals.
    fn note(&mut self, now: Instant, refused: bool) {
        self.refusals = match (refused, self.refusals) {
            (false, _) => None,
            (true, Some((first, _))) => Some((first, now)),
            (true, None) => Some((now, now)),
        };
    }
}
