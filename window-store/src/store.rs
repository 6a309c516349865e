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

    /// Output records with `seq >= from`, in order, at most `limit`.
    fn read_output(&self, from: u64, limit: usize) -> Result<Vec<OutputRecord>, StoreError>;
}

/// One engine step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// The change to the open state.
    pub dirty: Dirty,
    /// Windows fired in the step, with dense sequence numbers continuing the output log.
    pub fired: Vec<OutputRecord>,
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
}
