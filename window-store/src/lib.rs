//! Durable open windows, watermarks and the output log of window-node.
//!
//! # The durability contract
//! A [`WindowStore`] takes [`Batch`]es: the engine's change to its open state since the last
//! batch (`Engine::take_dirty`) and the windows fired meanwhile, each with the next dense
//! sequence number of the output log. A batch may cover one engine step or many (the node writes
//! one per group of requests). `commit` applies a batch atomically; `sync` makes every committed
//! batch durable. So, for a caller that acknowledges a request only after the `sync` that
//! follows its batch:
//! - nothing acknowledged is lost: every acknowledged event is in an open window or in a fired
//!   window's output record;
//! - nothing fires twice: firing a window and appending its output record are one batch, so after
//!   any crash a window is either still open or fired exactly once, with its record in the log;
//! - the output log's sequence numbers are dense.
//!
//! What a crash can lose is what was committed but not yet synced, and it was never acknowledged.
//! `sync` is sled's `flush`: it survives the process dying (SIGKILL, panic, OOM kill). It does
//! not promise more than the file system and disk do about power loss: sled calls `fsync`, but a
//! disk that lies about its write cache, or a file system mounted without barriers, can still
//! lose the last writes on power loss.
//!
//! With Redis a committed batch is already in the Redis server's memory, so it survives this
//! process dying, and `sync` does nothing; what survives a crash of Redis itself depends on the
//! server's `appendonly` / `appendfsync` settings and on asynchronous replication, which the
//! `redis` module spells out. Batches there carry a fencing epoch: a batch from a process whose
//! epoch is below the highest the store has seen is refused whole ([`StoreError::Fenced`]).
//!
//! # Main types
//! [`WindowStore`] (the trait), [`MemoryStore`], [`SledStore`] and [`RedisStore`] (one
//! [`KvStore`] over three backends), [`StoreError`]. The encoding is versioned (`codec`): a store
//! that finds a record it cannot read refuses to start and names the record; it never drops data
//! silently.
//!
//! # Features
//! `sled` and `redis` (both on by default) bring the two durable backends. Without them the
//! crate is the trait, the records and the memory store, with no I/O crate: what
//! `window-service` builds on.
//!
//! # What it does not do
//! It does not decide anything: what fires and when is the engine's business. It holds one
//! writer per directory (sled locks it). It decides no lease: with Redis, who may write is the
//! caller's lease. [`RedisLease`] only carries the caller's decisions out in Redis (atomic
//! compare-and-set scripts, and the fencing epoch raised at every acquisition); the store refuses
//! batches from an epoch older than the highest it has seen. [`RedisMembership`] keeps a
//! partitioned namespace's live nodes (by Redis's clock) and its recorded number of partitions;
//! which partitions a node takes is, again, the caller's decision.

mod backend;
mod codec;
mod error;
mod handoff;
mod journal;
mod journal_file;
mod kv;
mod memory;
mod payload_log;
mod prefilled;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_lease;
#[cfg(feature = "redis")]
mod redis_members;
#[cfg(feature = "redis")]
mod redis_namespace;
#[cfg(feature = "sled")]
mod sled;
mod store;

pub use crate::backend::{KvBackend, KvOp, Record};
pub use crate::error::StoreError;
pub use crate::journal::Policy as CompactionPolicy;
pub use crate::kv::{KvStore, MemoryStore};
pub use crate::memory::MemoryBackend;
#[cfg(feature = "redis")]
pub use crate::redis::{RedisBackend, RedisStore, redis_reachable, require_fsync_always};
#[cfg(feature = "redis")]
pub use crate::redis_lease::{Holding, LeaseView, RedisLease};
#[cfg(feature = "redis")]
pub use crate::redis_members::{Recorded as RecordedPartitions, RedisMembership};
#[cfg(feature = "sled")]
pub use crate::sled::{SledBackend, SledStore};
pub use crate::store::{
    Batch, GroupRecord, OutputRecord, REMEMBERED_REQUESTS, Recovered, RememberedRequest,
    RequestOutcome, WindowStore,
};

/// Restores an engine from `store`, or makes a fresh one, with change tracking on. Returns the
/// engine and the next output sequence number.
pub fn open_engine(
    store: &mut dyn WindowStore,
    config: window_core::EngineConfig,
) -> Result<(window_core::Engine, u64), StoreError> {
    let opened = open(store, config)?;
    Ok((opened.engine, opened.next_seq))
}

/// What [`open`] restores.
#[derive(Debug)]
pub struct Opened {
    /// The engine, with change tracking on.
    pub engine: window_core::Engine,
    /// The sequence number the next fired window gets.
    pub next_seq: u64,
    /// The newest remembered requests, in order of number.
    pub requests: Vec<RememberedRequest>,
    /// Every consumer group's durable state.
    pub groups: Vec<GroupRecord>,
    /// The oldest seq the output log keeps (0 unless a retention trimmed it).
    pub log_start: u64,
}

/// Restores an engine and the remembered requests from `store`, or starts afresh.
///
/// Checks first that the output log ends where the recovered `next_seq` says (its last record
/// is `next_seq - 1`, none above) and starts where its retention left it (seq 0 without one): a
/// log that lost records (its tail, or its head) is an error, never a state to carry on from. Two short reads, whatever the log's
/// length; the Redis backend also checks, while recovering, that nothing is missing between.
pub fn open(
    store: &mut dyn WindowStore,
    config: window_core::EngineConfig,
) -> Result<Opened, StoreError> {
    let recovered = store.recover()?;
    if let Some(recovered) = &recovered {
        check_output_log(store, recovered.log_start, recovered.next_seq)?;
    }
    let mut opened = match recovered {
        Some(recovered) => Opened {
            engine: window_core::Engine::restore(config, recovered.snapshot),
            next_seq: recovered.next_seq,
            requests: recovered.requests,
            groups: recovered.groups,
            log_start: recovered.log_start,
        },
        None => Opened {
            engine: window_core::Engine::new(config),
            next_seq: 0,
            requests: Vec::new(),
            groups: Vec::new(),
            log_start: 0,
        },
    };
    opened.engine.track_changes();
    Ok(opened)
}

/// Checks that the output log holds `start` (seq 0 unless a retention trimmed it) and
/// `next_seq - 1` and nothing at or above `next_seq` (see [`open`]).
fn check_output_log(store: &dyn WindowStore, start: u64, next_seq: u64) -> Result<(), StoreError> {
    let corrupt = |seq: u64, reason: String| {
        Err(StoreError::corrupt(
            &codec::output_key(seq),
            format!(
                "the meta record says next_seq {next_seq} (the output log holds every seq below it), but {reason}"
            ),
        ))
    };
    let Some(last) = next_seq.checked_sub(1) else {
        return match store.read_output(start, 1)?.first() {
            Some(record) => corrupt(record.seq, format!("the log holds seq {}", record.seq)),
            None => Ok(()),
        };
    };
    match store.read_output(start, 1)?.first() {
        Some(record) if record.seq == start => {}
        Some(record) => {
            return corrupt(
                start,
                format!(
                    "the log starts at seq {}: seqs {start}-{} are missing",
                    record.seq,
                    record.seq - 1
                ),
            );
        }
        None => return corrupt(start, "the log is empty".to_owned()),
    }
    let tail: Vec<u64> = store
        .read_output(last, 2)?
        .iter()
        .map(|record| record.seq)
        .collect();
    match tail.as_slice() {
        [] => corrupt(last, format!("the log ends below seq {last}")),
        [seq, ..] if *seq != last => corrupt(
            last,
            format!("the log has no seq {last} (the next record it holds is {seq})"),
        ),
        [_, above, ..] => corrupt(
            *above,
            format!("the log holds seq {above}, at or above next_seq"),
        ),
        _ => Ok(()),
    }
}
