//! The payload log: the payload texts of a sled store, each written once, outside the tree.
//!
//! sled rewrites a whole tree node (up to 16 records) on every change to it, so records that
//! carry 100-byte payloads for every id cost several times their own size on each write, and a
//! payload went into two of them (its window's chunk, then the fired window's output record).
//! Here a payload's text is appended once to a segment file (`payloads/NNNNNNNN.log`), and both
//! records hold a [`PayloadRef`] to it: where it is, its length and its CRC-32.
//!
//! Durability: [`PayloadLog::write_durable`] writes and `fdatasync`s what was appended before
//! the store applies the batch that refers to it, so no durable record can point at bytes that
//! are not. Bytes appended by a batch that then failed or was lost in a crash are never referred
//! to and stay as dead space; a reopened log appends after them. The segment being appended to
//! is written with zeros ahead of its texts (see the `prefilled` module); a reopened log finds
//! where they end by its last byte that is not zero (a JSON text holds none), and a segment is
//! cut to its texts when it is closed.
//!
//! Removal: a closed segment goes once no record that can still be read refers to it (the store
//! decides which, see `kv::LoggedPayloads`): the output log's retention dropped every output
//! record that did, and no open window's pane holds a payload in it. Removal happens after the
//! batch that dropped those records is durable, so no record a recovery can read refers to a
//! removed segment.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use window_core::Payload;

use crate::error::StoreError;
use crate::prefilled::{Prefilled, end_of_nonzero_data};

/// Where a payload's text is: which segment, at which offset, how long, and its CRC-32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadRef {
    pub segment: u32,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

/// A segment is closed and the next one started once it holds this many bytes.
pub(crate) const SEGMENT_BYTES: u64 = 256 << 20;

/// Appends payload texts to segment files and reads them back.
#[derive(Debug)]
pub struct PayloadLog {
    dir: PathBuf,
    /// The segment being appended to.
    segment: u32,
    /// The closed segments on disk (every one below `segment` not removed).
    closed: BTreeSet<u32>,
    file: Prefilled,
    /// A segment is closed once it holds this many bytes.
    segment_bytes: u64,
    /// Appended since the last write, starting where `file`'s data ends.
    pending: Vec<u8>,
    /// Read handles, by segment.
    readers: Mutex<HashMap<u32, Arc<File>>>,
    /// A write or sync failed: where the file ends is no longer known, so nothing more is
    /// appended (the process stops; a reopened log finds the end again).
    failed: bool,
}

impl PayloadLog {
    /// Opens the log in `dir` (created when missing), appending after the newest segment's end.
    pub fn open(dir: &Path) -> Result<PayloadLog, StoreError> {
        PayloadLog::open_with(dir, SEGMENT_BYTES)
    }

    /// [`PayloadLog::open`], closing segments at `segment_bytes`.
    pub(crate) fn open_with(dir: &Path, segment_bytes: u64) -> Result<PayloadLog, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, &e))?;
        let mut closed = BTreeSet::new();
        for entry in fs::read_dir(dir).map_err(|e| io_error("listing", dir, &e))? {
            let entry = entry.map_err(|e| io_error("listing", dir, &e))?;
            if let Some(n) = segment_number(&entry.file_name().to_string_lossy()) {
                closed.insert(n);
            }
        }
        let newest = closed.pop_last().unwrap_or(0);
        let file = open_segment(dir, newest, segment_bytes)?;
        // The directory and the segment's name must be durable before anything refers to them.
        sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(PayloadLog {
            dir: dir.to_path_buf(),
            segment: newest,
            closed,
            file,
            segment_bytes,
            pending: Vec::new(),
            readers: Mutex::new(HashMap::new()),
            failed: false,
        })
    }

    /// Appends `text` (written by the next [`write_durable`](PayloadLog::write_durable)).
    pub fn append(&mut self, text: &str) -> Result<PayloadRef, StoreError> {
        self.refuse_after_failure()?;
        let len = u32::try_from(text.len())
            .map_err(|_| StoreError::InvalidBatch("a payload over 4 GiB".to_owned()))?;
        if self.end() > 0 && self.end() + u64::from(len) > self.segment_bytes {
            self.next_segment()?;
        }
        let at = PayloadRef {
            segment: self.segment,
            offset: self.end(),
            len,
            crc: crc32fast::hash(text.as_bytes()),
        };
        self.pending.extend_from_slice(text.as_bytes());
        Ok(at)
    }

    /// Writes everything appended and makes it durable.
    pub fn write_durable(&mut self) -> Result<(), StoreError> {
        self.refuse_after_failure()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = segment_path(&self.dir, self.segment);
        if let Err(e) = self
            .file
            .write(&[&self.pending])
            .and_then(|()| self.file.sync_data())
        {
            self.failed = true;
            return Err(io_error("writing", &path, &e));
        }
        self.pending.clear();
        Ok(())
    }

    /// Bytes in the segment, written or not: where the next payload goes.
    fn end(&self) -> u64 {
        self.file.len() + self.pending.len() as u64
    }

    fn refuse_after_failure(&self) -> Result<(), StoreError> {
        match self.failed {
            true => Err(StoreError::Backend(format!(
                "the payload log in {} failed a write before: nothing more is written to it; restart the process",
                self.dir.display()
            ))),
            false => Ok(()),
        }
    }

    /// Closes the current segment (durably, cut to its texts) and starts the next.
    fn next_segment(&mut self) -> Result<(), StoreError> {
        self.write_durable()?;
        if let Err(e) = self.file.close() {
            self.failed = true;
            return Err(io_error(
                "closing",
                &segment_path(&self.dir, self.segment),
                &e,
            ));
        }
        let file = open_segment(&self.dir, self.segment + 1, self.segment_bytes)?;
        // The new file's name must be durable before anything refers to it.
        sync_dir(&self.dir)?;
        self.closed.insert(self.segment);
        self.segment += 1;
        self.file = file;
        Ok(())
    }

    /// The segment being appended to.
    pub fn segment(&self) -> u32 {
        self.segment
    }

    /// The closed segments on disk, oldest first.
    pub fn closed(&self) -> impl Iterator<Item = u32> + '_ {
        self.closed.iter().copied()
    }

    /// Removes closed segment `n`, which nothing refers to any more. A failed removal leaves
    /// the file (a reopened log finds it again, and it is removed then).
    pub fn remove(&mut self, n: u32) -> Result<(), StoreError> {
        if !self.closed.remove(&n) {
            return Ok(());
        }
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&n);
        let path = segment_path(&self.dir, n);
        fs::remove_file(&path).map_err(|e| io_error("removing", &path, &e))
    }

    /// Reads the payload at `at`, checking its length and CRC.
    pub fn read(&self, at: &PayloadRef) -> Result<Payload, StoreError> {
        let file = self.reader(at.segment)?;
        let mut buf = vec![0; at.len as usize];
        let path = segment_path(&self.dir, at.segment);
        file.read_exact_at(&mut buf, at.offset).map_err(|e| {
            StoreError::corrupt(
                path.to_string_lossy().as_bytes(),
                format!(
                    "payload of {} bytes at offset {} cannot be read: {e}",
                    at.len, at.offset
                ),
            )
        })?;
        if crc32fast::hash(&buf) != at.crc {
            return Err(StoreError::corrupt(
                path.to_string_lossy().as_bytes(),
                format!("payload at offset {} fails its CRC", at.offset),
            ));
        }
        let text = String::from_utf8(buf).map_err(|_| {
            StoreError::corrupt(
                path.to_string_lossy().as_bytes(),
                format!("payload at offset {} is not UTF-8", at.offset),
            )
        })?;
        Ok(Payload::from(text))
    }

    fn reader(&self, segment: u32) -> Result<Arc<File>, StoreError> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = readers.get(&segment) {
            return Ok(Arc::clone(file));
        }
        let path = segment_path(&self.dir, segment);
        let file = Arc::new(File::open(&path).map_err(|e| io_error("opening", &path, &e))?);
        readers.insert(segment, Arc::clone(&file));
        Ok(file)
    }
}

/// Segment `n`, created when missing, its texts' end found; it closes at about `segment_bytes`.
fn open_segment(dir: &Path, n: u32, segment_bytes: u64) -> Result<Prefilled, StoreError> {
    let path = segment_path(dir, n);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("opening", &path, &e))?;
    let size = file
        .metadata()
        .map_err(|e| io_error("reading the size of", &path, &e))?
        .len();
    let len = end_of_nonzero_data(&file).map_err(|e| io_error("reading", &path, &e))?;
    Ok(Prefilled::new(file, len, size, segment_bytes))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing", dir, &e))
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.log"))
}

fn segment_number(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

pub(crate) fn io_error(what: &str, path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_across_a_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PayloadLog::open(dir.path()).unwrap();
        let a = log.append(r#"{"a":1}"#).unwrap();
        let b = log.append("\"ünïcode\"").unwrap();
        log.write_durable().unwrap();
        assert_eq!(&*log.read(&a).unwrap(), r#"{"a":1}"#);
        assert_eq!(&*log.read(&b).unwrap(), "\"ünïcode\"");
        // Appended but never written (a batch that failed): nothing refers to it.
        log.append("lost").unwrap();
        drop(log);
        // A torn tail from a crash, over the zeros ahead: the reopened log appends after it.
        let seg = segment_path(dir.path(), 0);
        let end = u64::from(a.len + b.len);
        assert!(fs::metadata(&seg).unwrap().len() > end, "zeros ahead");
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"torn", end).unwrap();
        let mut log = PayloadLog::open(dir.path()).unwrap();
        let c = log.append("[1,2]").unwrap();
        log.write_durable().unwrap();
        assert_eq!(c.offset, a.len as u64 + b.len as u64 + 4);
        assert_eq!(&*log.read(&c).unwrap(), "[1,2]");
        assert_eq!(&*log.read(&a).unwrap(), r#"{"a":1}"#);
    }

    #[test]
    fn a_damaged_payload_is_refused_by_its_crc() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PayloadLog::open(dir.path()).unwrap();
        let a = log.append("\"hello\"").unwrap();
        log.write_durable().unwrap();
        let seg = segment_path(dir.path(), 0);
        fs::write(&seg, b"\"hellp\"").unwrap();
        let err = log.read(&a).unwrap_err().to_string();
        assert!(err.contains("CRC"), "{err}");
        let past = PayloadRef { offset: 100, ..a };
        assert!(
            log.read(&past)
                .unwrap_err()
                .to_string()
                .contains("cannot be read")
        );
    }

    #[test]
    fn a_full_segment_is_closed_and_the_next_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PayloadLog::open_with(dir.path(), 10).unwrap();
        let refs: Vec<PayloadRef> = (0..5)
            .map(|i| log.append(&format!("\"{i}{i}{i}\"")).unwrap())
            .collect();
        log.write_durable().unwrap();
        assert_eq!(
            refs.iter()
                .map(|r| (r.segment, r.offset))
                .collect::<Vec<_>>(),
            [(0, 0), (0, 5), (1, 0), (1, 5), (2, 0)]
        );
        drop(log);
        let log = PayloadLog::open_with(dir.path(), 10).unwrap();
        for (i, r) in refs.iter().enumerate() {
            assert_eq!(&*log.read(r).unwrap(), format!("\"{i}{i}{i}\""));
        }
        assert_eq!((log.segment, log.end()), (2, 5));
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_number("00000012.log"), Some(12));
        assert_eq!(segment_number("12.log"), None);
        assert_eq!(segment_number("0000001x.log"), None);
        assert_eq!(segment_path(Path::new("d"), 3), Path::new("d/00000003.log"));
    }
}
