//! The store trait and what goes through it.

use window_core::{ClosedWindow, Dirty, EngineSnapshot};

use crate::error::StoreError;

/// Persists the open state and the output log of one engine.
///
/// The caller `commit`s a [`Batch`] holding the engine's [`Dirty`] change and the windows fired
/// since its last batch (one engine step or several), then `sync`s before acknowledging anything
/// those steps accepted. Several commits may share one sync (group commit).
pub trait WindowStore: Send {
    /// Reads what was persisted; `None` for a store that never committed anything.
    fn recover(&mut self) -> Result<Option<Recovered>, StoreError>;

    /// Writes one step atomically: after a crash the store holds all of it or none of it.
    /// Durable only after the next [`sync`](WindowStore::sync).
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError>;

    /// Makes every committed batch durable (survives a crash of this process).
    fn sync(&mut self) -> Result<(), StoreError>;

    /// Checks, without writing, that this writer may still write: for Redis, that no process with
    /// a higher fencing epoch has taken over ([`StoreError::Fenced`] otherwise). A holder calls it
    /// before answering a group that wrote nothing, so that it never answers from a state it no
    /// longer owns. Single-writer stores (memory, sled) always may.
    fn check_writer(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Output records with `seq >= from`, in order, at most `limit`;
    /// [`StoreError::Trimmed`] when `from` is below the oldest record the log keeps.
    fn read_output(&self, from: u64, limit: usize) -> Result<Vec<OutputRecord>, StoreError>;
}

/// One engine step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// The change to the open state.
    pub dirty: Dirty,
    /// Windows fired in the step, with dense sequence numbers continuing the output log.
    pub fired: Vec<OutputRecord>,
    /// Outcomes of requests that carried a request id, numbered on from the last batch's.
    pub requests: Vec<RememberedRequest>,
    /// Consumer groups whose state changed, each written whole.
    pub groups: Vec<GroupRecord>,
    /// The output log's retention: from this batch on the log starts at this seq (records below
    /// it are dropped or hidden). Ignored unless it is above where the log starts now.
    pub trim_log_below: Option<u64>,
}

/// The durable state of one consumer group: where it is in the output log and what its members
/// acknowledged. Written in the batches of the log it reads, under the same fencing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupRecord {
    /// The group's name (1-128 printable ASCII characters, no spaces).
    pub name: String,
    /// The first seq the group was to deliver (its `from_seq` when it was created).
    pub first: u64,
    /// Every seq below this is acknowledged.
    pub acked_below: u64,
    /// Acknowledged seqs at or above `acked_below`, ascending.
    pub acked: Vec<u64>,
    /// The first seq never handed to a member: every seq from `acked_below` to here that is not
    /// acknowledged was delivered at least once.
    pub next: u64,
}

/// How many remembered requests a store keeps: the newest, by number. Enough for every request a
/// follower or client could still resend after a failover (at a thousand requests a second, over
/// a minute of them).
pub const REMEMBERED_REQUESTS: u64 = 65_536;

/// The outcome of a request that carried a request id, kept with the change the request made so
/// that a repeat of it (a resend after a failover) is answered from this record instead of being
/// run again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RememberedRequest {
    /// The order in which requests were remembered, dense from 0: the store keeps the newest
    /// [`REMEMBERED_REQUESTS`].
    pub n: u64,
    /// The request id, as the request gave it.
    pub id: String,
    /// What the request did.
    pub outcome: RequestOutcome,
    /// A stable hash of what the request asked for, so that the id used again for other
    /// content is refused; `None` in records written before fingerprints were kept.
    pub fingerprint: Option<u64>,
}

/// What a remembered request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// An `ingest`, with its reply's counts.
    Ingest {
        accepted: u64,
        duplicates: u64,
        late: u64,
    },
    /// A `close`: the output record it returned.
    Close { seq: u64 },
    /// A `flush`: the output records it returned, `count` of them from `first_seq` on.
    Flush { first_seq: u64, count: u64 },
}

/// One entry of the durable output log.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputRecord {
    /// Position in the log: dense, starting at 0.
    pub seq: u64,
    /// The lease epoch of the process that fired it.
    pub epoch: u64,
    /// The fired window.
    pub window: ClosedWindow,
}

/// Everything a store recovers.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovered {
    /// The open state, for `Engine::restore`.
    pub snapshot: EngineSnapshot,
    /// The sequence number the next fired window gets.
    pub next_seq: u64,
    /// The newest remembered requests (at most [`REMEMBERED_REQUESTS`]), in order of `n`.
    pub requests: Vec<RememberedRequest>,
    /// Every consumer group, by name.
    pub groups: Vec<GroupRecord>,
    /// The oldest seq the output log keeps (0 unless a retention trimmed it).
    pub log_start: u64,
}
