//! The coordinator lease on one machine: an exclusive OS file lock in the data directory.
//!
//! Every `window-node serve` on the same `--data-dir` competes for `DIR/lease` with
//! `File::try_lock`. The kernel releases the lock when its holder dies, however it dies, so the
//! lease needs no expiry and no clock: a holder that is alive holds it (even while paused), and a
//! dead one cannot. The holder raises the durable epoch in `DIR/epoch` at every takeover, stamps
//! it on every fired window, and publishes its address and epoch in `DIR/coordinator` for the
//! followers, which forward their clients' requests there.
//!
//! The holder also writes who it is into `DIR/lease` (`serve pid N` or `stdin pid N`), so that
//! a `serve` that cannot reach a coordinator can say why: a stdin node holds the directory and
//! serves no TCP clients. The text is only for messages; the lock alone decides.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What kind of process holds the lease, as written into `DIR/lease`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderKind {
    /// `window-node serve`: it publishes its address in `DIR/coordinator`.
    Serve,
    /// The stdin node (`window-node --data-dir DIR`): it serves no TCP clients.
    Stdin,
}

impl HolderKind {
    fn as_str(self) -> &'static str {
        match self {
            HolderKind::Serve => "serve",
            HolderKind::Stdin => "stdin",
        }
    }
}

/// The held lease. Dropping it (or dying) releases the lock.
#[derive(Debug)]
pub struct FileLease {
    _file: File,
    dir: PathBuf,
    epoch: u64,
}

impl FileLease {
    /// Takes the lease if no other process holds it; on success raises the epoch durably and
    /// writes `kind` and this process's id into `DIR/lease`.
    pub fn try_acquire(dir: &Path, kind: HolderKind) -> io::Result<Option<FileLease>> {
        let mut file = OpenOptions::new()
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
        // The last holder's address is stale (it let go of the lock): followers must not chase
        // it, nor, for a stdin node that publishes none, take it for this holder's.
        match fs::remove_file(dir.join("coordinator")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        file.set_len(0)?;
        file.write_all(format!("{} pid {}\n", kind.as_str(), std::process::id()).as_bytes())?;
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

/// Who holds (or last held) the lease, as it wrote into `DIR/lease`: its kind and process id.
pub fn read_holder(dir: &Path) -> Option<(HolderKind, u32)> {
    let text = fs::read_to_string(dir.join("lease")).ok()?;
    let mut parts = text.split_whitespace();
    let kind = match parts.next()? {
        "serve" => HolderKind::Serve,
        "stdin" => HolderKind::Stdin,
        _ => return None,
    };
    (parts.next()? == "pid").then_some(())?;
    Some((kind, parts.next()?.parse().ok()?))
}

/// The lease's holder in words, for messages: `a stdin node (window-node --data-dir, pid N)`
/// or `a serve (pid N) on ADDRESS, epoch E`; `None` when nothing says.
pub fn describe_holder(dir: &Path) -> Option<String> {
    let coordinator = read_coordinator(dir);
    match read_holder(dir) {
        Some((HolderKind::Stdin, pid)) => Some(format!(
            "a stdin node (window-node --data-dir without serve, pid {pid}), which serves no TCP clients"
        )),
        Some((HolderKind::Serve, pid)) => Some(match coordinator {
            Some((address, epoch)) => format!("a serve (pid {pid}) on {address}, epoch {epoch}"),
            None => format!("a serve (pid {pid})"),
        }),
        None => coordinator.map(|(address, epoch)| format!("a serve on {address}, epoch {epoch}")),
    }
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
        // No epoch yet: a fresh directory, unless a store is already there (sled's `db`, which
        // is only ever made after the epoch file). Starting again at epoch 1 would stamp new
        // windows with an epoch their subscribers already saw, or a lower one, while `seq` goes
        // on: they would drop them as a stale writer's.
        Err(e) if e.kind() == io::ErrorKind::NotFound => match dir.join("db").try_exists()? {
            false => Ok(0),
            true => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is missing but {} holds a store, whose windows carry the epochs of earlier holders; restore the file, or write into it a number above the highest epoch the store's windows carry (the last \"epoch\" subscribers saw), or move the directory away to start afresh",
                    dir.join("epoch").display(),
                    dir.display()
                ),
            )),
        },
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
        let first = FileLease::try_acquire(dir.path(), HolderKind::Serve)
            .expect("io")
            .expect("free lease");
        assert_eq!(first.epoch(), 1);
        // Another open file description cannot take it while the first holds it (the lock is per
        // open file, as between processes).
        assert!(
            FileLease::try_acquire(dir.path(), HolderKind::Serve)
                .expect("io")
                .is_none()
        );
        first
            .publish("127.0.0.1:7070".parse().expect("addr"))
            .expect("publish");
        assert_eq!(
            read_coordinator(dir.path()),
            Some(("127.0.0.1:7070".parse().expect("addr"), 1))
        );
        drop(first);
        let second = FileLease::try_acquire(dir.path(), HolderKind::Serve)
            .expect("io")
            .expect("released");
        assert_eq!(second.epoch(), 2);
    }

    #[test]
    fn the_holder_says_who_it_is_and_a_stale_address_is_withdrawn() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("coordinator"), "127.0.0.1:1 4\n").expect("write");
        let lease = FileLease::try_acquire(dir.path(), HolderKind::Stdin)
            .expect("io")
            .expect("free lease");
        assert_eq!(
            read_holder(dir.path()),
            Some((HolderKind::Stdin, std::process::id()))
        );
        assert_eq!(read_coordinator(dir.path()), None);
        drop(lease);
    }

    #[test]
    fn a_missing_epoch_beside_a_store_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("db"), "").expect("write");
        let error = FileLease::try_acquire(dir.path(), HolderKind::Serve).expect_err("refused");
        let text = error.to_string();
        assert!(
            text.contains("epoch is missing") && text.contains("holds a store"),
            "{text}"
        );
        assert!(!dir.path().join("epoch").exists(), "nothing was written");
    }

    #[test]
    fn a_damaged_epoch_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("epoch"), "seven").expect("write");
        let error = FileLease::try_acquire(dir.path(), HolderKind::Serve).expect_err("refused");
        assert!(error.to_string().contains("not an epoch number"), "{error}");
    }
}
