//! Store errors. Corrupt data is kept apart from backend I/O: recovery treats them differently
//! (corruption refuses to start and names the record; I/O may be retried). A Redis namespace
//! whose state was lost or replaced under the process is a third kind ([`StoreError::NamespaceLost`]):
//! neither retried nor started over.

/// What can go wrong in a store.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// A record could not be decoded: unknown version, truncated, or inconsistent.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// The record's key, in hex.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The directory is held by another process.
    #[error(
        "the data directory {dir} is in use by another process (sled holds an exclusive lock on it); stop that process or choose another --data-dir"
    )]
    Locked {
        /// The directory.
        dir: String,
    },
    /// A batch was refused because a writer with a higher fencing epoch has written: this
    /// process no longer holds the lease and must stop writing. Nothing of the batch was applied.
    #[error(
        "batch refused: it carries fencing epoch {epoch}, but the store has already seen epoch {highest}; another process has taken over, so this one must stop writing"
    )]
    Fenced {
        /// The epoch of the refused batch.
        epoch: u64,
        /// The highest epoch the store has seen.
        highest: u64,
    },
    /// The backend failed: a write or sync failed, or the server refused it. Nothing written
    /// since the last successful sync can be relied on; the caller stops.
    #[error("storage I/O failed: {0}")]
    Backend(String),
    /// The backend could not be reached (a network store: connection refused, lost or timed
    /// out). A batch sent may or may not have been applied; the server may come back.
    #[error("storage unreachable: {0}")]
    Unreachable(String),
    /// The namespace's state in Redis is not the one this process knew: its identity key or its
    /// fencing epoch is missing or different (FLUSHALL, a Redis restarted without its data, a
    /// replica promoted without the last writes), or its output log lacks records its meta record
    /// says it holds. Nothing of the refused write was applied; the process must stop, and no node
    /// may carry on in the namespace as if nothing happened (`seq` numbers would name other
    /// windows than before). Never transient.
    #[error(
        "Redis namespace {namespace:?}: {reason}; the namespace's state in Redis was lost or replaced (FLUSHALL, a Redis restarted without its data, a replica promoted without the last writes); acknowledged events may be gone; stop every node of this namespace, inspect Redis, and start over on a new --namespace or restore the data"
    )]
    NamespaceLost {
        /// The namespace.
        namespace: String,
        /// What was found: a missing identity, a different identity, a missing or lowered
        /// epoch, or the seqs missing from the output log.
        reason: String,
    },
    /// The output log no longer holds the records asked for: its retention dropped every record
    /// below `oldest`.
    #[error(
        "the output log keeps seq {oldest} and later (its retention dropped the older windows); seq {from} is gone: read from seq {oldest} or later"
    )]
    Trimmed {
        /// The first seq asked for.
        from: u64,
        /// The oldest seq the log keeps.
        oldest: u64,
    },
    /// A batch broke the store's rules (a bug in the caller, not bad data).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
}

impl StoreError {
    pub(crate) fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            key: hex(key),
            reason: reason.into(),
        }
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
