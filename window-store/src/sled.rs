//! The sled backend: the embedded, durable default.
//!
//! One sled tree holds every record; a step is one `sled::Batch` applied with `apply_batch`,
//! which sled makes atomic (after a crash, all of a batch or none of it), and `sync` is
//! `Db::flush`, which writes and fsyncs everything applied so far. Acknowledge only after it.

use std::path::Path;

use crate::error::StoreError;
use crate::kv::{KvBackend, KvOp, KvStore, Plain, Record, refuse_overwrites};
use crate::payload_log::PayloadLog;

/// A window store in a sled directory.
pub type SledStore = KvStore<SledBackend>;

impl SledStore {
    /// Opens (or creates) the store in `dir`. Fails with [`StoreError::Locked`] when another
    /// process holds the directory.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            // We flush before every acknowledgement; sled's own timer would only add fsyncs.
            .flush_every_ms(None)
            .open()
            .map_err(|e| open_error(dir, e))?;
        // Opened once sled holds the directory's lock: one writer appends to it.
        let payloads = PayloadLog::open(&dir.join("payloads"))?;
        Ok(KvStore::new(SledBackend { db }).with_payload_log(payloads))
    }
}

impl SledStore {
    /// Opens the store in `dir`, waiting up to `patience` for another holder of the directory to
    /// let go (a process that is still exiting, or a handle being dropped in this process: sled
    /// releases its lock when its last background thread does).
    pub fn open_waiting(
        dir: &Path,
        patience: std::time::Duration,
    ) -> Result<SledStore, StoreError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match SledStore::open(dir) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }
}

/// A sled database used as an ordered key-value space.
#[derive(Debug)]
pub struct SledBackend {
    db: sled::Db,
}

fn open_error(dir: &Path, error: sled::Error) -> StoreError {
    let text = error.to_string();
    let locked = matches!(&error, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock)
        || text.contains("lock");
    if locked {
        StoreError::Locked {
            dir: dir.display().to_string(),
        }
    } else {
        StoreError::Backend(format!("opening {}: {text}", dir.display()))
    }
}

fn backend(error: sled::Error) -> StoreError {
    match error {
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            key: format!("sled log offset {at:?}"),
            reason: "sled reports corruption in its log".to_owned(),
        },
        other => StoreError::Backend(other.to_string()),
    }
}

impl KvBackend for SledBackend {
    fn scan(&self, prefix: &[u8], start: &[u8], limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.range(start..).take(limit) {
            let (key, value) = item.map_err(backend)?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn apply(&mut self, ops: Vec<KvOp>) -> Result<(), StoreError> {
        let ops: Vec<Plain> = ops.into_iter().map(KvOp::plain).collect();
        // One process holds a sled directory, so a look before the batch is as good as a look
        // inside it.
        refuse_overwrites(&ops, |key| self.db.contains_key(key).map_err(backend))?;
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Plain::Put { key, value, .. } => batch.insert(key, value),
                Plain::DeletePrefix(prefix) => {
                    for item in self.db.scan_prefix(&prefix) {
                        let (key, _) = item.map_err(backend)?;
                        batch.remove(key);
                    }
                }
            }
        }
        self.db.apply_batch(batch).map_err(backend)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(backend)
    }
}
