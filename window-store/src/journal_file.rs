//! The journal of a sled store, in files of its own beside sled's (`journal/<first>.log`, the
//! number of the segment's first record in 16 hex digits).
//!
//! Why not records in the sled tree: sled keeps values inside its tree nodes and rewrites a whole
//! node (up to 16 records) when it consolidates one; a node over an eighth of sled's segment
//! (128 KiB) goes to a file of its own (`blobs/`) that sled writes and never syncs. A batch's
//! journal record is often hundreds of kilobytes, so it cost several copies of itself on every
//! commit, and a power loss could leave sled pointing at a blob that was never made durable.
//! Here each record is written once, at the end of a segment, and `fdatasync`ed by the sync that
//! acknowledges it.
//!
//! A record is `len` (u32 LE, of the body), `crc` (CRC-32 of the number and the body), the
//! number (u64 LE), then the body (the journal's encoding of the batch's ops).
//!
//! What is compacted: the compactor writes the number of the last record it applied under
//! [`COMPACTED_KEY`] in the same sled batch as their effect, and syncs sled before it tells the
//! writer ([`JournalFiles::append`]'s `compacted`), which removes a segment only once every record
//! in it is compacted. Recovery reads the records after that number.
//!
//! After a crash the last segment may end in a torn record (written, never synced, so never
//! acknowledged): reading stops there, and the next writer cuts it off before it appends, always
//! to a segment of its own. A bad record anywhere else is corruption.
//!
//! A segment is written with zeros ahead of its records (see the `prefilled` module), which end
//! them: reading stops at a header of zeros, which no record has (a record's CRC covers its
//! number), in the newest segment as the torn end it cuts, in another when zeros run to the end
//! of the file. A segment is cut to its last record when it is closed, so closed segments hold
//! records only, as before the zeros.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::payload_log::{io_error, sync_dir};
use crate::prefilled::Prefilled;

/// The sled key holding the number of the last journal record compacted (8 bytes, big-endian).
pub const COMPACTED_KEY: &[u8] = b"C";

/// A segment is closed and the next one started once it holds this many bytes.
const SEGMENT_BYTES: u64 = 64 << 20;

/// Bytes before a record's body.
const HEADER: usize = 16;

/// A segment: its path, the number of its first record, and of its last (none when empty).
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first: u64,
    last: Option<u64>,
}

/// The segment being appended to.
#[derive(Debug)]
struct Current {
    segment: Segment,
    file: Prefilled,
}

/// Appends journal records to segment files, and reads them back.
#[derive(Debug)]
pub struct JournalFiles {
    dir: PathBuf,
    segment_bytes: u64,
    /// The segments before the current one, oldest first.
    closed: Vec<Segment>,
    current: Option<Current>,
    /// The newest segment found, when it ends in a torn record: where its whole records end.
    torn: Option<(PathBuf, u64)>,
    /// A segment was created since the directory was last synced.
    dir_dirty: bool,
    /// A write or sync failed: nothing more is written.
    failed: bool,
}

/// The number of the last record compacted, as the compactor writes it.
pub fn compacted_value(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

/// Reads [`COMPACTED_KEY`]'s value.
pub fn compacted_number(value: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(value.try_into().map_err(|_| {
        StoreError::corrupt(COMPACTED_KEY, "the compacted journal number is not 8 bytes")
    })?))
}

impl JournalFiles {
    /// Opens the journal in `dir` (created when missing). Nothing is written until the first
    /// append.
    pub fn open(dir: &Path) -> Result<JournalFiles, StoreError> {
        JournalFiles::open_with(dir, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, segment_bytes: u64) -> Result<JournalFiles, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, &e))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(JournalFiles {
            dir: dir.to_path_buf(),
            segment_bytes,
            closed: Vec::new(),
            current: None,
            torn: None,
            dir_dirty: false,
            failed: false,
        })
    }

    /// Every record after number `after` (all with `None`), in order: (number, body). Before
    /// the first append this also learns the segments there are, for the writer to cut a torn
    /// end and remove compacted segments.
    pub fn read(&mut self, after: Option<u64>) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_error("listing", &self.dir, &e))? {
            let entry = entry.map_err(|e| io_error("listing", &self.dir, &e))?;
            if let Some(first) = segment_number(&entry.file_name().to_string_lossy()) {
                names.push((first, entry.path()));
            }
        }
        names.sort();
        let writing = self.current.as_ref().map(|c| c.segment.first);
        let mut records = Vec::new();
        let mut segments = Vec::new();
        let mut torn = None;
        let mut previous: Option<u64> = None;
        let count = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let bytes = fs::read(&path).map_err(|e| io_error("reading", &path, &e))?;
            let newest = i + 1 == count;
            let mut at = 0;
            let mut last = None;
            while at < bytes.len() {
                let Some((n, body, end)) = record_at(&bytes, at) else {
                    if newest && writing != Some(first) {
                        torn = Some((path.clone(), at as u64));
                        break;
                    }
                    if bytes[at..].iter().all(|&b| b == 0) {
                        // The zeros a writer reserved after its records (this writer's, or one's
                        // that stopped before it cut them).
                        break;
                    }
                    return Err(corrupt(&path, at, "a record whose length or CRC is wrong"));
                };
                if previous.is_some_and(|p| n <= p) || (last.is_none() && n < first) {
                    return Err(corrupt(&path, at, "journal numbers out of order"));
                }
                if after.is_none_or(|after| n > after) {
                    records.push((n, body.to_vec()));
                }
                previous = Some(n);
                last = Some(n);
                at = end;
            }
            segments.push(Segment { path, first, last });
        }
        if self.current.is_none() {
            self.closed = segments;
            self.torn = torn;
        }
        Ok(records)
    }

    /// Appends record `n` (written now, durable at the next [`sync`](Self::sync)). The first
    /// append cuts off a torn end and starts a segment of this writer's own; a full segment is
    /// synced and closed, and the closed segments whose records are all compacted (every number
    /// up to `compacted`) are removed.
    pub fn append(
        &mut self,
        n: u64,
        body: &[u8],
        compacted: Option<u64>,
    ) -> Result<(), StoreError> {
        self.refuse_after_failure()?;
        let full = self
            .current
            .as_ref()
            .is_none_or(|c| c.file.len() >= self.segment_bytes);
        if full {
            let started = self.next_segment(n, compacted);
            if started.is_err() {
                self.failed = true;
            }
            started?;
        }
        let current = self.current.as_mut().expect("a segment was started above");
        let len = u32::try_from(body.len())
            .map_err(|_| StoreError::InvalidBatch("a journal record over 4 GiB".to_owned()))?;
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..8].copy_from_slice(&crc(n, body).to_le_bytes());
        header[8..].copy_from_slice(&n.to_le_bytes());
        let written = current.file.write(&[&header, body]);
        if let Err(e) = written {
            self.failed = true;
            return Err(io_error("writing", &current.segment.path, &e));
        }
        current.segment.last = Some(n);
        Ok(())
    }

    /// Makes every record appended durable.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.refuse_after_failure()?;
        if let Some(current) = &self.current
            && let Err(e) = current.file.sync_data()
        {
            self.failed = true;
            return Err(io_error("syncing", &current.segment.path, &e));
        }
        if self.dir_dirty {
            if let Err(e) = sync_dir(&self.dir) {
                self.failed = true;
                return Err(e);
            }
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Closes the current segment (synced), or cuts the torn end of the newest one found, then
    /// removes the compacted segments and starts the next at record `n`.
    fn next_segment(&mut self, n: u64, compacted: Option<u64>) -> Result<(), StoreError> {
        if let Some(current) = self.current.take() {
            // Cut to its records (its zeros go) and synced, size included, before the next
            // segment exists: a segment before the newest holds records only.
            current
                .file
                .close()
                .map_err(|e| io_error("closing", &current.segment.path, &e))?;
            self.closed.push(current.segment);
        }
        if let Some((path, end)) = self.torn.take() {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_error("opening", &path, &e))?;
            file.set_len(end)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error("cutting the torn end of", &path, &e))?;
        }
        let mut removed = false;
        // A segment with no whole record (a writer that stopped right after starting it, or
        // whose first record was torn) holds nothing, and may bear the name the next one takes.
        for empty in self.closed.iter().filter(|s| s.last.is_none()) {
            fs::remove_file(&empty.path).map_err(|e| io_error("removing", &empty.path, &e))?;
            removed = true;
        }
        self.closed.retain(|s| s.last.is_some());
        while let Some(oldest) = self.closed.first() {
            let done = match (oldest.last, compacted) {
                (Some(last), Some(compacted)) => last <= compacted,
                _ => false,
            };
            if !done {
                break;
            }
            let oldest = self.closed.remove(0);
            fs::remove_file(&oldest.path).map_err(|e| io_error("removing", &oldest.path, &e))?;
            removed = true;
        }
        let path = self.dir.join(format!("{n:016x}.log"));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error("creating", &path, &e))?;
        if removed {
            sync_dir(&self.dir)?;
        }
        self.dir_dirty = true;
        self.current = Some(Current {
            segment: Segment {
                path,
                first: n,
                last: None,
            },
            file: Prefilled::new(file, 0, 0, self.segment_bytes),
        });
        Ok(())
    }

    fn refuse_after_failure(&self) -> Result<(), StoreError> {
        match self.failed {
            true => Err(StoreError::Backend(format!(
                "the journal in {} failed a write before: nothing more is written to it; restart the process",
                self.dir.display()
            ))),
            false => Ok(()),
        }
    }
}

/// The record at `at`: its number, its body and where the next begins; `None` when the bytes
/// there are not a whole record with the right CRC.
fn record_at(bytes: &[u8], at: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let sum = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let n = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
    let end = (at + HEADER).checked_add(len)?;
    let body = bytes.get(at + HEADER..end)?;
    (crc(n, body) == sum).then_some((n, body, end))
}

fn crc(n: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&n.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

fn corrupt(path: &Path, at: usize, reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: format!("{} at byte {at}", path.display()),
        reason: reason.to_owned(),
    }
}

fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 16 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(digits, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::prefilled::RESERVE;

    fn bodies(records: &[(u64, Vec<u8>)]) -> Vec<(u64, String)> {
        records
            .iter()
            .map(|(n, b)| (*n, String::from_utf8(b.clone()).unwrap()))
            .collect()
    }

    #[test]
    fn records_round_trip_across_segments_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = JournalFiles::open_with(dir.path(), 40).unwrap();
        for n in 0..5 {
            journal
                .append(n, format!("batch {n}").as_bytes(), None)
                .unwrap();
            journal.sync().unwrap();
        }
        // 40-byte segments: a record and a half each, so several segments.
        assert!(fs::read_dir(dir.path()).unwrap().count() >= 3);
        let mut again = JournalFiles::open_with(dir.path(), 40).unwrap();
        let all = again.read(None).unwrap();
        assert_eq!(
            bodies(&all),
            (0..5)
                .map(|n| (n, format!("batch {n}")))
                .collect::<Vec<_>>()
        );
        assert_eq!(bodies(&again.read(Some(2)).unwrap()), bodies(&all[3..]));
    }

    #[test]
    fn a_torn_end_is_cut_and_compacted_segments_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = JournalFiles::open_with(dir.path(), 1 << 20).unwrap();
        journal.append(7, b"seven", None).unwrap();
        journal.append(8, b"eight", None).unwrap();
        journal.sync().unwrap();
        let path = dir.path().join(format!("{:016x}.log", 7));
        // A crash in the middle of the next record's write.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(journal);

        let mut next = JournalFiles::open_with(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            bodies(&next.read(None).unwrap()),
            vec![(7, "seven".to_owned()), (8, "eight".to_owned())]
        );
        // Record 7 alone is compacted: the old segment stays, cut at its last whole record.
        next.append(9, b"nine", Some(7)).unwrap();
        next.sync().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 2 * 16 + 10);
        let mut reader = JournalFiles::open_with(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            bodies(&reader.read(Some(7)).unwrap()),
            vec![(8, "eight".to_owned()), (9, "nine".to_owned())]
        );
        drop(next);

        // Once 8 is compacted too, the next writer removes that segment.
        let mut last = JournalFiles::open_with(dir.path(), 1 << 20).unwrap();
        last.read(Some(8)).unwrap();
        last.append(10, b"ten", Some(8)).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_segment_left_empty_is_replaced_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = JournalFiles::open_with(dir.path(), 1 << 20).unwrap();
        journal.append(0, b"zero", None).unwrap();
        journal.sync().unwrap();
        drop(journal);
        // A writer that created its segment for record 1 and stopped before writing to it.
        fs::write(dir.path().join(format!("{:016x}.log", 1)), b"").unwrap();
        let mut next = JournalFiles::open_with(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            bodies(&next.read(None).unwrap()),
            vec![(0, "zero".to_owned())]
        );
        next.append(1, b"one", None).unwrap();
        next.sync().unwrap();
        let mut reader = JournalFiles::open_with(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            bodies(&reader.read(None).unwrap()),
            vec![(0, "zero".to_owned()), (1, "one".to_owned())]
        );
    }

    #[test]
    fn a_bad_record_before_the_end_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = JournalFiles::open_with(dir.path(), 1 << 20).unwrap();
        journal.append(1, b"one", None).unwrap();
        journal.sync().unwrap();
        drop(journal);
        let mut second = JournalFiles::open_with(dir.path(), 1 << 20).unwrap();
        second.read(None).unwrap();
        second.append(2, b"two", None).unwrap();
        second.sync().unwrap();
        // Flip a byte of the first segment's body: it is no longer the newest.
        let path = dir.path().join(format!("{:016x}.log", 1));
        let mut bytes = fs::read(&path).unwrap();
        bytes[17] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let error = JournalFiles::open_with(dir.path(), 1 << 20)
            .unwrap()
            .read(None)
            .unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn zeros_are_written_ahead_of_the_records_and_cut_when_a_segment_closes() {
        let dir = tempfile::tempdir().unwrap();
        // Segments close once they hold 100 bytes: the third record starts the second.
        let mut journal = JournalFiles::open_with(dir.path(), 100).unwrap();
        let body = [7u8; 40];
        journal.append(0, &body, None).unwrap();
        journal.sync().unwrap();
        let first = dir.path().join(format!("{:016x}.log", 0));
        let record = (HEADER + body.len()) as u64;
        // Zeros after the record, up to where the segment closes.
        assert_eq!(fs::metadata(&first).unwrap().len(), 100);
        // The writer reads its own segment up to its zeros, which are no torn end for it.
        assert_eq!(journal.read(None).unwrap().len(), 1);
        journal.append(1, &body, None).unwrap();
        journal.append(2, &body, None).unwrap();
        journal.sync().unwrap();
        // The first segment closed: cut to its two records.
        assert_eq!(fs::metadata(&first).unwrap().len(), 2 * record);
        let second = dir.path().join(format!("{:016x}.log", 2));
        assert_eq!(fs::metadata(&second).unwrap().len(), 100);
        drop(journal);

        // A crash: the next reader stops at the zeros, and its writer cuts them off.
        let mut next = JournalFiles::open_with(dir.path(), 100).unwrap();
        let numbers: Vec<u64> = next.read(None).unwrap().iter().map(|r| r.0).collect();
        assert_eq!(numbers, vec![0, 1, 2]);
        next.append(3, &body, None).unwrap();
        next.sync().unwrap();
        assert_eq!(fs::metadata(&second).unwrap().len(), record);
        let mut reader = JournalFiles::open_with(dir.path(), 100).unwrap();
        let numbers: Vec<u64> = reader.read(None).unwrap().iter().map(|r| r.0).collect();
        assert_eq!(numbers, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_record_torn_inside_the_zeros_is_cut_and_a_large_one_extends_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = JournalFiles::open_with(dir.path(), 64 << 20).unwrap();
        journal.append(0, b"zero", None).unwrap();
        // A record larger than the reserve extends it past itself.
        let large = vec![1u8; RESERVE as usize + 10];
        journal.append(1, &large, None).unwrap();
        journal.sync().unwrap();
        let path = dir.path().join(format!("{:016x}.log", 0));
        let end = (2 * HEADER + 4 + large.len()) as u64;
        assert!(fs::metadata(&path).unwrap().len() >= end + RESERVE);
        drop(journal);
        // A crash in the middle of record 2's write: half a header over the zeros.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[9, 0, 0, 0, 1, 2], end).unwrap();
        drop(file);

        let mut next = JournalFiles::open_with(dir.path(), 64 << 20).unwrap();
        let read = next.read(None).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].1, large);
        next.append(2, b"two", None).unwrap();
        next.sync().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), end);
    }
}
