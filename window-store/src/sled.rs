//! The sled backend: the embedded, durable default.
//!
//! One sled tree holds every record; a commit is one journal record (see the `journal` module)
//! and a compaction round one `sled::Batch` applied with `apply_batch`, which sled makes atomic
//! (after a crash, all of a batch or none of it), and `sync` is `Db::flush`, which writes and
//! fsyncs everything applied so far. Acknowledge only after it.
//!
//! A failed write or sync is final: sled keeps the error and every later call fails with it, and
//! its flush can wait forever once a write failed (a waiter can miss the failure's wake-up, sled
//! 0.34). So the flush runs on a helper thread that the caller waits for a bounded time, poking
//! sled with a second flush so a missed wake-up cannot hold it; and a store that failed is never
//! closed (closing flushes again): it stays open until the process exits, which a failed store
//! must do anyway. Errors name the directory.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::backend::{KvBackend, KvOp, Plain, Record, refuse_overwrites, refuse_unexpected};
use crate::error::StoreError;
use crate::journal_file::JournalFiles;
use crate::kv::KvStore;
use crate::payload_log::PayloadLog;

/// A window store in a sled directory.
pub type SledStore = KvStore<SledBackend>;

impl SledStore {
    /// Opens (or creates) the store in `dir`. Fails with [`StoreError::Locked`] when another
    /// process holds the directory.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_with(dir, crate::journal::Policy::default())
    }

    /// [`SledStore::open`] with the journal's compaction `policy` (tests and benchmarks: a
    /// compactor that runs rounds back to back, say).
    pub fn open_with(dir: &Path, policy: crate::journal::Policy) -> Result<SledStore, StoreError> {
        SledStore::open_with_payload_segments(dir, policy, crate::payload_log::SEGMENT_BYTES)
    }

    /// [`SledStore::open_with`], the payload log's segments closed at `segment_bytes` (tests:
    /// small segments, to see them rotate and go).
    pub fn open_with_payload_segments(
        dir: &Path,
        policy: crate::journal::Policy,
        segment_bytes: u64,
    ) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            // We flush before every acknowledgement; sled's own timer would only add fsyncs.
            .flush_every_ms(None)
            .open()
            .map_err(|e| open_error(dir, e))?;
        // Opened once sled holds the directory's lock: one writer appends to it.
        let payloads = PayloadLog::open_with(&dir.join("payloads"), segment_bytes)?;
        Ok(KvStore::new(SledBackend {
            db,
            dir: dir.to_path_buf(),
            failed: false,
            flushes: 0,
            flushed: None,
            flusher: None,
            blobs_synced: None,
        })
        .with_payload_log(payloads)
        .with_journal_files(policy, JournalFiles::open(&dir.join("journal"))?))
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
    /// The directory, named in every error.
    dir: PathBuf,
    /// A write or sync failed: every later one fails too, and dropping leaves sled open.
    failed: bool,
    /// Flushes started, so a late answer of an earlier one is told apart.
    flushes: u64,
    /// Where the flush threads answer (number of the flush, its result).
    flushed: Option<Flushed>,
    /// The thread that runs every sync's flush (started at the first).
    flusher: Option<Flusher>,
    /// The newest file in `blobs/` synced (see `sync_blobs`).
    blobs_synced: Option<u64>,
}

/// The flush thread: it flushes once per number it is sent.
#[derive(Debug)]
struct Flusher {
    tx: mpsc::Sender<u64>,
    thread: std::thread::JoinHandle<()>,
}

/// The answers of flush threads: every flush thread holds a sender.
#[derive(Debug)]
struct Flushed {
    tx: mpsc::Sender<(u64, Result<(), String>)>,
    rx: mpsc::Receiver<(u64, Result<(), String>)>,
}

/// A flush that has not answered after this long gets a second flush beside it: if sled has
/// failed, that one returns the error at once and wakes the first.
const POKE_AFTER: Duration = Duration::from_millis(200);
/// A flush that has not answered after this long is a failure: the disk does not answer.
pub const SYNC_LIMIT: Duration = Duration::from_secs(20);

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

impl SledBackend {
    /// The error of a failed write or sync, naming the directory; the store is failed from now
    /// on.
    fn write_failed(&mut self, action: &str, reason: impl std::fmt::Display) -> StoreError {
        self.failed = true;
        StoreError::Backend(format!(
            "{action} the sled store in {}: {reason}",
            self.dir.display()
        ))
    }

    /// Where flush threads answer.
    fn answers(&mut self) -> mpsc::Sender<(u64, Result<(), String>)> {
        let flushed = self.flushed.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel();
            Flushed { tx, rx }
        });
        flushed.tx.clone()
    }

    /// Asks the flush thread (started at the first sync) for flush number `number`.
    fn start_flush(&mut self, number: u64) -> Result<(), StoreError> {
        if self.flusher.is_none() {
            let answers = self.answers();
            let (tx, rx) = mpsc::channel::<u64>();
            let db = self.db.clone();
            let spawned = std::thread::Builder::new()
                .name("sled-flush".into())
                .spawn(move || {
                    while let Ok(number) = rx.recv() {
                        let result = flush(&db);
                        let failed = result.is_err();
                        let _ = answers.send((number, result));
                        if failed {
                            // This handle must not close sled either (see the module doc).
                            std::mem::forget(db);
                            return;
                        }
                    }
                });
            match spawned {
                Ok(thread) => self.flusher = Some(Flusher { tx, thread }),
                Err(e) => return Err(self.write_failed("starting a thread to sync", e)),
            }
        }
        let sent = self
            .flusher
            .as_ref()
            .is_some_and(|flusher| flusher.tx.send(number).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self.write_failed("syncing", "the flush thread is gone"))
        }
    }

    /// A second `db.flush()` beside a slow one, on a thread of its own: if sled has failed it
    /// returns the error at once and wakes the first; otherwise it ends when the first does.
    fn poke(&mut self, number: u64) {
        let answers = self.answers();
        let db = self.db.clone();
        let _ = std::thread::Builder::new()
            .name("sled-flush-poke".into())
            .spawn(move || {
                let result = flush(&db);
                if result.is_err() {
                    std::mem::forget(db);
                }
                let _ = answers.send((number, result));
            });
    }

    /// `db.flush()`, waited for at most `SYNC_LIMIT`; see the module doc.
    fn bounded_flush(&mut self) -> Result<(), StoreError> {
        self.flushes += 1;
        let number = self.flushes;
        let start = Instant::now();
        self.start_flush(number)?;
        let mut poked = start;
        loop {
            let waited = start.elapsed();
            if waited >= SYNC_LIMIT {
                return Err(self.write_failed(
                    "syncing",
                    format_args!("no answer from the disk within {SYNC_LIMIT:?}"),
                ));
            }
            let wait = POKE_AFTER.min(SYNC_LIMIT - waited);
            let received = match &self.flushed {
                Some(flushed) => flushed.rx.recv_timeout(wait),
                None => Err(mpsc::RecvTimeoutError::Disconnected),
            };
            match received {
                // A flush started after this one's start covers what this one covers.
                Ok((answered, Ok(()))) if answered == number => return Ok(()),
                Ok((answered, Err(reason))) if answered == number => {
                    return Err(self.write_failed("syncing", reason));
                }
                // A late answer of an earlier sync's poke.
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if poked.elapsed() >= POKE_AFTER {
                        poked = Instant::now();
                        self.poke(number);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(self.write_failed("syncing", "the flush threads are gone"));
                }
            }
        }
    }
}

impl SledBackend {
    /// Syncs the files sled wrote to `blobs/` since the last sync (named by their log sequence
    /// number), and the directory: sled writes a value or tree node over an eighth of its
    /// segment size to a file of its own and never syncs it, while its log, which `flush`
    /// syncs, points at it. Run before the flush, so that no durable log entry can point at a
    /// blob that is not.
    fn sync_blobs(&mut self) -> std::io::Result<()> {
        let dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut newest = self.blobs_synced;
        for entry in entries {
            let entry = entry?;
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok())
            else {
                continue;
            };
            if self.blobs_synced.is_some_and(|synced| lsn <= synced) {
                continue;
            }
            match std::fs::File::open(entry.path()).and_then(|file| file.sync_all()) {
                Ok(()) => newest = newest.max(Some(lsn)),
                // Removed by sled's collection of blobs nothing points at any more.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if newest != self.blobs_synced {
            std::fs::File::open(&dir)?.sync_all()?;
            self.blobs_synced = newest;
        }
        Ok(())
    }
}

impl Drop for SledBackend {
    fn drop(&mut self) {
        if self.failed {
            // Closing sled flushes, which can wait forever after a failed write: keep one
            // handle alive instead, so it is never closed; the process is about to exit.
            std::mem::forget(self.db.clone());
        } else if let Some(flusher) = self.flusher.take() {
            // Its handle is closed before this one, so sled is closed (and its directory lock
            // let go) when the drop returns.
            drop(flusher.tx);
            let _ = flusher.thread.join();
        }
    }
}

/// One `Db::flush`, its error as text.
fn flush(db: &sled::Db) -> Result<(), String> {
    db.flush().map(drop).map_err(|e| e.to_string())
}

impl KvBackend for SledBackend {
    fn twin(&self) -> Option<Result<Box<dyn KvBackend>, StoreError>> {
        Some(Ok(Box::new(SledBackend {
            db: self.db.clone(),
            dir: self.dir.clone(),
            failed: false,
            flushes: 0,
            flushed: None,
            flusher: None,
            blobs_synced: None,
        })))
    }

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
        refuse_unexpected(&ops, |key| {
            Ok(self.db.get(key).map_err(backend)?.map(|v| v.to_vec()))
        })?;
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Plain::Put { key, value, .. } => batch.insert(key, value),
                Plain::Expect { .. } => {}
                Plain::Delete(key) => batch.remove(key),
                Plain::DeleteRange { from, to } => {
                    for item in self.db.range(from..to) {
                        let (key, _) = item.map_err(backend)?;
                        batch.remove(key);
                    }
                }
                Plain::DeletePrefix(prefix) => {
                    for item in self.db.scan_prefix(&prefix) {
                        let (key, _) = item.map_err(backend)?;
                        batch.remove(key);
                    }
                }
            }
        }
        if self.failed {
            return Err(self.write_failed("writing to", "an earlier write or sync failed"));
        }
        self.db
            .apply_batch(batch)
            .map_err(|e| self.write_failed("writing to", e))
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if self.failed {
            return Err(self.write_failed("syncing", "an earlier write or sync failed"));
        }
        if let Err(e) = self.sync_blobs() {
            return Err(self.write_failed("syncing", e));
        }
        self.bounded_flush()
    }
}
