//! The key-value backend contract: an ordered key-value space with atomic batches of
//! [`KvOp`]s, and the checks every backend runs before applying one.

use crate::codec::{self, OUTPUT_PREFIX};
use crate::error::StoreError;

/// A key and its value.
pub type Record = (Vec<u8>, Vec<u8>);

/// One write of an atomic batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Set a key.
    Put(Vec<u8>, Vec<u8>),
    /// Set a key that must not exist yet (the append-only output log): if it exists, the whole
    /// batch is refused with [`StoreError::InvalidBatch`] and nothing of it is applied.
    PutNew(Vec<u8>, Vec<u8>),
    /// Remove every key that starts with the prefix.
    DeletePrefix(Vec<u8>),
    /// Remove the key (nothing when it is absent). Only compaction rounds carry it: the
    /// compactor removes a window it wrote by the keys it wrote, where a removal by prefix would
    /// have the backend look for them (a sorted-set range per window in Redis).
    Delete(Vec<u8>),
    /// Refuse the whole batch, applying nothing, unless the key holds this value (`None`: unless
    /// it is absent): a writer's check that nobody else wrote since it last did.
    Expect(Vec<u8>, Option<Vec<u8>>),
    /// Append the encoded output record numbered `seq` to the output log. The log is
    /// append-only: if it already holds `seq`, the whole batch is refused with
    /// [`StoreError::InvalidBatch`]. Ordered key-value backends keep it as the key
    /// `codec::output_key(seq)`; Redis keeps it in a Stream.
    Append(u64, Vec<u8>),
    /// Remove the output log's values that hold only records below this seq (a value holding a
    /// block of records goes once its last record is below it): the log's retention. What stays
    /// below the seq is hidden by the store, which keeps where the log starts.
    TrimLog(u64),
}

/// An op as ordered key-value backends (memory, sled) carry it out: the output log is keys
/// among the others.
pub(crate) enum Plain {
    /// Set the key; `fresh`: refuse the batch if it exists.
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        fresh: bool,
    },
    DeletePrefix(Vec<u8>),
    Delete(Vec<u8>),
    /// Remove the keys from `from` (inclusive) to `to` (exclusive).
    DeleteRange {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// Refuse the batch unless the key holds the value (`None`: is absent).
    Expect {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
}

impl KvOp {
    pub(crate) fn plain(self) -> Plain {
        match self {
            KvOp::Put(key, value) => Plain::Put {
                key,
                value,
                fresh: false,
            },
            KvOp::PutNew(key, value) => Plain::Put {
                key,
                value,
                fresh: true,
            },
            KvOp::Append(seq, value) => Plain::Put {
                key: codec::output_key(seq),
                value,
                fresh: true,
            },
            KvOp::DeletePrefix(prefix) => Plain::DeletePrefix(prefix),
            KvOp::Delete(key) => Plain::Delete(key),
            KvOp::TrimLog(below) => Plain::DeleteRange {
                from: codec::output_key(0),
                to: codec::output_key(below),
            },
            KvOp::Expect(key, value) => Plain::Expect { key, value },
        }
    }
}

/// Refuses `ops` if a key an [`KvOp::Expect`] names does not hold what it expects (`get` looks
/// it up); the check memory and sled run before applying anything.
pub(crate) fn refuse_unexpected(
    ops: &[Plain],
    mut get: impl FnMut(&[u8]) -> Result<Option<Vec<u8>>, StoreError>,
) -> Result<(), StoreError> {
    for op in ops {
        if let Plain::Expect { key, value } = op
            && get(key)? != *value
        {
            return Err(changed_underneath(key));
        }
    }
    Ok(())
}

/// The error for a [`KvOp::Expect`] that does not hold.
pub(crate) fn changed_underneath(key: &[u8]) -> StoreError {
    StoreError::InvalidBatch(format!(
        "record {} changed since this writer last wrote it (a second writer on this store?); nothing of the batch was applied",
        crate::error::hex(key)
    ))
}

/// Refuses `ops` if a key that must be fresh exists already (`exists` looks it up); the check
/// memory and sled run before applying anything.
pub(crate) fn refuse_overwrites(
    ops: &[Plain],
    mut exists: impl FnMut(&[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    for op in ops {
        if let Plain::Put {
            key, fresh: true, ..
        } = op
            && exists(key)?
        {
            return Err(overwrite_refused(key));
        }
    }
    Ok(())
}

/// The error for a [`KvOp::PutNew`] whose key exists.
pub(crate) fn overwrite_refused(key: &[u8]) -> StoreError {
    StoreError::InvalidBatch(format!(
        "the batch would overwrite record {}, which is append-only (a second writer on this store?); nothing of it was applied",
        crate::error::hex(key)
    ))
}

/// An ordered key-value space with atomic multi-key writes.
pub trait KvBackend: Send {
    /// Every `(key, value)` whose key starts with `prefix`, in key order, from `start` (a key
    /// with that prefix) on, at most `limit`.
    fn scan(&self, prefix: &[u8], start: &[u8], limit: usize) -> Result<Vec<Record>, StoreError>;

    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies all of `ops`, in order, atomically.
    fn apply(&mut self, ops: Vec<KvOp>) -> Result<(), StoreError>;

    /// Makes every applied batch durable.
    fn sync(&mut self) -> Result<(), StoreError>;

    /// See [`crate::WindowStore::check_writer`].
    fn check_writer(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Another handle on the same store, with the same settings (the Redis fencing epoch), for
    /// the journal's compactor thread; `None` for a backend that cannot be shared (memory).
    fn twin(&self) -> Option<Result<Box<dyn KvBackend>, StoreError>> {
        None
    }

    /// The output log from record `from` on, at most `limit`, in order, as
    /// `(codec::output_key(seq), encoded record)`.
    fn read_log(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.scan(&[OUTPUT_PREFIX], &codec::output_key(from), limit)
    }
}
