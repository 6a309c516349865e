//! The coordinator lease on one machine: an exclusive OS file lock in the data directory.
//!
//! Every `window-node serve` on the same `--data-dir` competes for `DIR/lease` with
//! `File::try_lock`. The kernel releases the lock when its holder dies, however it dies, so the
//! lease needs no expiry and no clock: a holder that is alive holds it (even while paused), and a
//! dead one cannot. The holder raises the durable epoch in `DIR/epoch` at every takeover, stamps
//! it on every fired window, and publishes its address and epoch in `DIR/coordinator` for the
//! followers, which forward their clients' requests there.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The held lease. Dropping it (or dying) releases the lock.
#[derive(Debug)]
pub struct FileLease {
    _file: File,
    dir: PathBuf,
    epoch: u64,
}

impl FileLease {
    /// Takes the lease if no other process holds it; on success raises the epoch durably.
    pub fn try_acquire(dir: &Path) -> io::Result<Option<FileLease>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lease"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(e),
        }
        let epoch = read_epoch(dir)? + 1;
        write_atomically(dir, "epoch", format!("{epoch}\n").as_bytes())?;
        Ok(Some(FileLease {
            _file: file,
            dir: dir.to_owned(),
            epoch,
        }))
    }

    /// The epoch of this tenure: higher than every earlier holder's.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Tells the followers where the coordinator listens.
    pub fn publish(&self, address: SocketAddr) -> io::Result<()> {
        let text = format!("{address} {}\n", self.epoch);
        write_atomically(&self.dir, "coordinator", text.as_bytes())
    }
}

/// The coordinator's address and epoch as last published, if any.
pub fn read_coordinator(dir: &Path) -> Option<(SocketAddr, u64)> {
    let text = fs::read_to_string(dir.join("coordinator")).ok()?;
    let mut parts = text.split_whitespace();
    let address = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.parse().ok()?;
    Some((address, epoch))
}

fn read_epoch(dir: &Path) -> io::Result<u64> {
    match fs::read_to_string(dir.join("epoch")) {
        Ok(text) => text.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {:?}, not an epoch number; restore it or remove it to start at 1",
                    dir.join("epoch").display(),
                    text.trim()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Replaces `DIR/name` with `bytes` so that a reader (or a crash) sees the old or the new
/// content, never a torn one, and the new content is durable when this returns.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_each_takeover_raises_the_epoch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = FileLease::try_acquire(dir.path())
            .expect("io")
            .expect("free lease");
        assert_eq!(first.epoch(), 1);
        // Another open file description cannot take it while the first holds it (the lock is per
        // open file, as between processes).
        assert!(FileLease::try_acquire(dir.path()).expect("io").is_none());
        first
            .publish("127.0.0.1:7070".parse().expect("addr"))
            .expect("publish");
        assert_eq!(
            read_coordinator(dir.path()),
            Some(("127.0.0.1:7070".parse().expect("addr"), 1))
        );
        drop(first);
        let second = FileLease::try_acquire(dir.path())
            .expect("io")
            .expect("released");
        assert_eq!(second.epoch(), 2);
    }

    #[test]
    fn a_damaged_epoch_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("epoch"), "seven").expect("write");
        let error = FileLease::try_acquire(dir.path()).expect_err("refused");
        assert!(error.to_string().contains("not an epoch number"), "{error}");
    }
}
