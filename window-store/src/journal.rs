//! The journal: one record per committed batch, compacted into the store's layout in the
//! background, so that what a commit costs the backend does not grow with the windows it
//! touches.
//!
//! # How a batch travels
//! `KvStore::commit` builds the batch's ops as always (one chunk per touched window, the removals,
//! the fired windows' output records, the remembered requests, the groups, the meta), but writes
//! them to the backend as **one** record, `J` + the journal number (big-endian), holding the ops'
//! encoding ([`encode`]). That is one key per batch whatever the batch touched: for Redis one
//! `HSET` and one `ZADD` of a binary value in the fenced script, for sled one insert. The ops
//! themselves go to the compactor thread.
//!
//! The compactor collects the batches that arrive within [`Policy::delay`] (or until
//! [`Policy::round_bytes`] of them), merges them ([`Merger`]: a key written twice is written once,
//! a window's records removed later in the round are never written, a window's consecutive chunks
//! become one), and applies the merged ops together with the removal of the journal records they
//! came from, as **one** atomic batch of the backend (its own handle: a sled tree shared across
//! threads, a second Redis connection with the same fencing epoch).
//!
//! # Why it is safe
//! - A batch is durable once its journal record is: `sync` covers it exactly as it covered the
//!   batch's own records before.
//! - A compaction round applies the effect of its journal records and removes them in one atomic
//!   backend batch, so after any crash each journal record is either still there (its effect is
//!   not in the layout) or gone (its effect is). Recovery ([`replay`]) applies every record still
//!   there, in order, the same way, before reading the layout: the state read is the state of
//!   every committed batch, in order.
//! - The merged ops of a round have the effect of its batches' ops applied one after another:
//!   merging only drops writes a later op of the round overwrites or removes, and joins chunks
//!   that follow each other.
//! - Output records not yet compacted are served from memory (the compactor forgets them only
//!   after its round is applied), so a reader never misses one.
//! - Fencing is unchanged: the journal record is written by the same fenced call that wrote the
//!   batch before, and the compactor writes with the same epoch, so a fenced writer's compactor is
//!   refused too. A new holder replays (and removes) the journal before its first batch.
//! - A compaction that fails stops the store: the next commit or sync returns its error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use window_core::EventId;

use crate::codec::{self, Header, StoredPayload, WINDOW_PREFIX};
use crate::error::StoreError;
use crate::kv::{KvBackend, KvOp};

/// The prefix of journal records.
pub const JOURNAL_PREFIX: u8 = b'J';
/// The version byte of a journal record.
const VERSION: u8 = 1;

/// The key of journal record `n`.
pub fn journal_key(n: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(JOURNAL_PREFIX);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

fn journal_number(key: &[u8]) -> Result<u64, StoreError> {
    match key {
        [JOURNAL_PREFIX, n @ ..] if n.len() == 8 => {
            Ok(u64::from_be_bytes(n.try_into().expect("8 bytes")))
        }
        _ => Err(StoreError::corrupt(key, "not a journal key")),
    }
}

/// When the compactor applies what it collected.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// How long the compactor collects batches after the first of a round.
    pub delay: Duration,
    /// A round is applied at once when its batches' journal records hold this many bytes.
    pub round_bytes: usize,
    /// Batches the foreground may hand the compactor before it waits for it.
    pub backlog: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            delay: Duration::from_millis(200),
            round_bytes: 32 << 20,
            backlog: 512,
        }
    }
}

// ---- encoding ----

const PUT: u8 = 0;
const PUT_NEW: u8 = 1;
const DELETE_PREFIX: u8 = 2;
const APPEND: u8 = 3;

/// A journal record: the version, the number of ops, then each op (a tag, then its key or
/// sequence number and its value, each length-prefixed).
pub fn encode(ops: &[KvOp]) -> Vec<u8> {
    let size: usize = ops
        .iter()
        .map(|op| {
            9 + match op {
                KvOp::Put(k, v) | KvOp::PutNew(k, v) => k.len() + v.len() + 8,
                KvOp::DeletePrefix(p) => p.len() + 4,
                KvOp::Append(_, v) => v.len() + 12,
            }
        })
        .sum();
    let mut out = Vec::with_capacity(5 + size);
    out.push(VERSION);
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    let bytes = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    };
    for op in ops {
        match op {
            KvOp::Put(k, v) | KvOp::PutNew(k, v) => {
                out.push(if matches!(op, KvOp::Put(..)) {
                    PUT
                } else {
                    PUT_NEW
                });
                bytes(&mut out, k);
                bytes(&mut out, v);
            }
            KvOp::DeletePrefix(p) => {
                out.push(DELETE_PREFIX);
                bytes(&mut out, p);
            }
            KvOp::Append(seq, v) => {
                out.push(APPEND);
                out.extend_from_slice(&seq.to_le_bytes());
                bytes(&mut out, v);
            }
        }
    }
    out
}

/// The ops of journal record `key`.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Vec<KvOp>, StoreError> {
    let mut r = Cursor { key, at: value };
    match r.take(1)?[0] {
        VERSION => {}
        other => {
            return Err(StoreError::corrupt(
                key,
                format!(
                    "journal record version {other}, this build reads {VERSION}: written by a newer build?"
                ),
            ));
        }
    }
    let count = r.u32()? as usize;
    let mut ops = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        ops.push(match r.take(1)?[0] {
            PUT => KvOp::Put(r.bytes()?, r.bytes()?),
            PUT_NEW => KvOp::PutNew(r.bytes()?, r.bytes()?),
            DELETE_PREFIX => KvOp::DeletePrefix(r.bytes()?),
            APPEND => {
                let seq = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
                KvOp::Append(seq, r.bytes()?)
            }
            other => return Err(r.corrupt(&format!("unknown op {other}"))),
        });
    }
    if !r.at.is_empty() {
        return Err(r.corrupt("bytes after the last op"));
    }
    Ok(ops)
}

/// Reads a journal record.
struct Cursor<'a> {
    key: &'a [u8],
    at: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn corrupt(&self, what: &str) -> StoreError {
        StoreError::corrupt(self.key, format!("journal record: {what}"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.at.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, rest) = self.at.split_at(n);
        self.at = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, StoreError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
}

// ---- merging ----

/// A window's chunk being joined with the chunks that follow it in the round.
struct Tail {
    /// Where its op is in `Merger::ops`.
    at: usize,
    key: Vec<u8>,
    header: Header,
    ids: Vec<EventId>,
    payloads: Vec<Option<StoredPayload>>,
}

/// The ops of several batches, in order, merged into ops with the same effect.
#[derive(Default)]
pub struct Merger {
    /// The merged ops; `None` where a later op made one unnecessary, a placeholder `Put` where a
    /// [`Tail`] goes.
    ops: Vec<Option<KvOp>>,
    /// Overwritable records written in the round, by key: where their op is.
    puts: BTreeMap<Vec<u8>, usize>,
    /// Per window (its key prefix): its last chunk in the round, still growing.
    tails: HashMap<Vec<u8>, Tail>,
    /// Output records of consecutive seqs being gathered into one block: where its op goes, the
    /// last seq, the records.
    block: Option<(usize, u64, Vec<Vec<u8>>)>,
}

/// Output records per block, at most (so that a reader who wants one reads few others).
const BLOCK_RECORDS: usize = 1024;
/// Bytes of output records per block, at most (a block of one record may hold more).
const BLOCK_BYTES: usize = 1 << 20;

/// A chunk key's window prefix and first index.
fn split_chunk_key(key: &[u8]) -> Option<(&[u8], u64)> {
    if key.first() != Some(&WINDOW_PREFIX) || key.len() < 10 {
        return None;
    }
    let (prefix, rest) = key.split_at(key.len() - 9);
    Some((prefix, u64::from_be_bytes(rest[1..].try_into().ok()?)))
}

impl Merger {
    /// Adds the next op.
    pub fn push(&mut self, op: KvOp) -> Result<(), StoreError> {
        match op {
            KvOp::Put(key, value) => self.put(key, value),
            KvOp::DeletePrefix(prefix) => {
                let doomed: Vec<Vec<u8>> = self
                    .puts
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in doomed {
                    if let Some(at) = self.puts.remove(&key) {
                        self.ops[at] = None;
                    }
                }
                if split_chunk_key(&[prefix.as_slice(), &[0; 9]].concat()).is_some() {
                    // A window's prefix (what removals name): its tail alone.
                    self.tails.remove(&prefix);
                } else {
                    self.tails.retain(|window, _| !window.starts_with(&prefix));
                }
                self.ops.push(Some(KvOp::DeletePrefix(prefix)));
                Ok(())
            }
            KvOp::Append(seq, value) => {
                if let Some((_, last, records)) = &mut self.block
                    && last.checked_add(1) == Some(seq)
                    && records.len() < BLOCK_RECORDS
                    && records.iter().map(Vec::len).sum::<usize>() + value.len() <= BLOCK_BYTES
                {
                    *last = seq;
                    records.push(value);
                    return Ok(());
                }
                self.close_block();
                self.block = Some((self.ops.len(), seq, vec![value]));
                self.ops.push(None);
                Ok(())
            }
            other => {
                self.ops.push(Some(other));
                Ok(())
            }
        }
    }

    /// Writes the block being gathered into its place: one record as itself, several as an
    /// output block under the last one's seq.
    fn close_block(&mut self) {
        if let Some((at, last, mut records)) = self.block.take() {
            let value = if records.len() == 1 {
                records.pop().expect("one record")
            } else {
                codec::encode_output_block(&records)
            };
            self.ops[at] = Some(KvOp::Append(last, value));
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        if let Some((window, first)) = split_chunk_key(&key) {
            let (header, (ids, payloads)) = codec::decode_chunk(&key, &value)?;
            if let Some(tail) = self.tails.get_mut(window)
                && tail.header.id_count == first
                && tail.header.id_count + ids.len() as u64 == header.id_count
            {
                // The next chunk of the same window: joined to the tail.
                if !payloads.is_empty() || !tail.payloads.is_empty() {
                    tail.payloads.resize(tail.ids.len(), None);
                    if payloads.is_empty() {
                        tail.payloads.resize(tail.ids.len() + ids.len(), None);
                    } else {
                        tail.payloads.extend(payloads);
                    }
                }
                tail.ids.extend(ids);
                tail.header = header;
                return Ok(());
            }
            // A new tail (the first chunk of the window in this round, or one that does not
            // follow the last): the earlier tail, if any, is written as it stands.
            let window = window.to_vec();
            if let Some(old) = self.tails.remove(&window)
                && self.puts.get(&old.key) == Some(&old.at)
            {
                self.ops[old.at] = Some(KvOp::Put(old.key.clone(), encode_tail(&old)?));
            }
            if let Some(old) = self.puts.remove(&key) {
                self.ops[old] = None;
            }
            let at = self.ops.len();
            self.ops.push(None);
            self.puts.insert(key.clone(), at);
            self.tails.insert(
                window,
                Tail {
                    at,
                    key,
                    header,
                    ids,
                    payloads,
                },
            );
            return Ok(());
        }
        if let Some(old) = self.puts.remove(&key) {
            self.ops[old] = None;
        }
        self.puts.insert(key.clone(), self.ops.len());
        self.ops.push(Some(KvOp::Put(key, value)));
        Ok(())
    }

    /// The merged ops.
    pub fn finish(mut self) -> Result<Vec<KvOp>, StoreError> {
        self.close_block();
        let mut tails: HashMap<usize, Tail> = self
            .tails
            .drain()
            .map(|(_, tail)| (tail.at, tail))
            .collect();
        let mut out = Vec::with_capacity(self.ops.len());
        for (at, op) in self.ops.into_iter().enumerate() {
            if let Some(op) = op {
                out.push(op);
            } else if let Some(tail) = tails.remove(&at) {
                let value = encode_tail(&tail)?;
                out.push(KvOp::Put(tail.key, value));
            }
        }
        Ok(out)
    }
}

fn encode_tail(tail: &Tail) -> Result<Vec<u8>, StoreError> {
    codec::encode_chunk_stored(&tail.header, &tail.ids, &tail.payloads).ok_or_else(|| {
        StoreError::corrupt(
            &tail.key,
            "chunks of one window hold both payload texts and payload log references",
        )
    })
}

/// Merges the ops of journal records (their numbers and ops, in order) and adds the removal of
/// those records: the one backend batch that compacts them.
///
/// `stored`, when known, is every window the backend holds records of (by key prefix): a
/// window's removal is then left out when the backend holds nothing of it (a window opened and
/// removed within the round, the common case with many short windows), and the set is kept up to
/// date with the ops returned.
pub fn compaction(
    records: Vec<(u64, Vec<KvOp>)>,
    stored: &mut Option<HashSet<Vec<u8>>>,
) -> Result<Vec<KvOp>, StoreError> {
    let mut merger = Merger::default();
    let mut numbers = Vec::with_capacity(records.len());
    for (n, ops) in records {
        numbers.push(n);
        for op in ops {
            merger.push(op)?;
        }
    }
    let mut ops = merger.finish()?;
    if let Some(stored) = stored {
        ops.retain(|op| match op {
            KvOp::Put(key, _) => {
                if let Some((window, _)) = split_chunk_key(key)
                    && !stored.contains(window)
                {
                    stored.insert(window.to_vec());
                }
                true
            }
            KvOp::DeletePrefix(prefix) if prefix.first() == Some(&WINDOW_PREFIX) => {
                stored.remove(prefix.as_slice())
            }
            _ => true,
        });
    }
    // A journal key is a fixed length, so as a prefix it covers that key alone.
    ops.extend(
        numbers
            .into_iter()
            .map(|n| KvOp::DeletePrefix(journal_key(n))),
    );
    Ok(ops)
}

/// Records read per page when replaying: they can be large.
const REPLAY_PAGE: usize = 16;
/// Journal bytes replayed in one backend batch.
const REPLAY_BYTES: usize = 64 << 20;

/// Applies every journal record still in `backend`, in order, removing them as it goes (each
/// group of records and its removal one atomic batch, as a compaction round). Returns the number
/// the next journal record gets.
pub fn replay(backend: &mut dyn KvBackend) -> Result<u64, StoreError> {
    let prefix = [JOURNAL_PREFIX];
    let mut next = 0;
    loop {
        let mut records = Vec::new();
        let mut bytes = 0;
        let mut start = prefix.to_vec();
        while bytes < REPLAY_BYTES {
            let page = backend.scan(&prefix, &start, REPLAY_PAGE)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            start = last.clone();
            start.push(0);
            for (key, value) in page {
                let n = journal_number(&key)?;
                bytes += value.len();
                next = n + 1;
                records.push((n, decode(&key, &value)?));
            }
        }
        if records.is_empty() {
            return Ok(next);
        }
        backend.apply(compaction(records, &mut None)?)?;
    }
}

// ---- the compactor ----

/// What the foreground and the compactor share.
#[derive(Debug, Default)]
struct Shared {
    /// Output records committed but not yet compacted, by seq (encoded).
    outputs: Mutex<BTreeMap<u64, Vec<u8>>>,
    /// Why the compactor stopped, once it failed.
    failure: Mutex<Option<StoreError>>,
}

enum Job {
    Batch {
        n: u64,
        ops: Vec<KvOp>,
        bytes: usize,
    },
    /// Answered once everything sent before is compacted.
    Drain(mpsc::Sender<()>),
}

/// The foreground's side of the journal.
#[derive(Debug)]
pub struct Journal {
    policy: Policy,
    /// The number the next record gets; `None` until the journal was replayed.
    next: Option<u64>,
    shared: Arc<Shared>,
    compactor: Option<Compactor>,
    /// The windows the backend holds records of (their key prefixes), when recovery listed
    /// them: handed to the compactor, which keeps it up to date.
    stored: Option<HashSet<Vec<u8>>>,
}

#[derive(Debug)]
struct Compactor {
    tx: mpsc::SyncSender<Job>,
    thread: JoinHandle<()>,
}

impl Journal {
    pub fn new(policy: Policy) -> Journal {
        Journal {
            policy,
            next: None,
            shared: Arc::default(),
            compactor: None,
            stored: None,
        }
    }

    /// Replays what the backend's journal holds, once; before anything reads the layout.
    pub fn replay(&mut self, backend: &mut dyn KvBackend) -> Result<(), StoreError> {
        if self.next.is_none() {
            self.next = Some(replay(backend)?);
        }
        Ok(())
    }

    /// Tells the journal every window the backend holds records of (recovery listed them),
    /// before the first commit.
    pub fn stored_windows(&mut self, windows: HashSet<Vec<u8>>) {
        if self.compactor.is_none() {
            self.stored = Some(windows);
        }
    }

    /// The compactor's error, once it failed.
    pub fn check(&self) -> Result<(), StoreError> {
        match &*self.shared.failure.lock().expect("journal lock") {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Writes `ops` as one journal record through `backend`, and hands them to the compactor
    /// (started at the first record, with the backend's [`KvBackend::twin`]).
    pub fn commit(
        &mut self,
        backend: &mut dyn KvBackend,
        ops: Vec<KvOp>,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.replay(backend)?;
        let n = self.next.unwrap_or(0);
        let record = encode(&ops);
        let bytes = record.len();
        {
            let mut outputs = self.shared.outputs.lock().expect("journal lock");
            for op in &ops {
                if let KvOp::Append(seq, value) = op {
                    outputs.insert(*seq, value.clone());
                }
            }
        }
        backend.apply(vec![KvOp::PutNew(journal_key(n), record)])?;
        self.next = Some(n + 1);
        if self.compactor.is_none() {
            let twin = backend.twin().unwrap_or_else(|| {
                Err(StoreError::InvalidBatch(
                    "this backend cannot be shared with a compactor: open it without a journal"
                        .to_owned(),
                ))
            })?;
            self.compactor = Some(Compactor::start(
                twin,
                self.policy,
                &self.shared,
                self.stored.take(),
            )?);
        }
        let compactor = self.compactor.as_ref().expect("started above");
        if compactor.tx.send(Job::Batch { n, ops, bytes }).is_err() {
            self.check()?;
            return Err(StoreError::Backend(
                "the journal's compactor thread is gone".to_owned(),
            ));
        }
        Ok(())
    }

    /// Output records from `from` on that are not compacted yet, at most `limit`, and the lowest
    /// seq held here (every record below it that was committed is in the backend).
    pub fn outputs(&self, from: u64, limit: usize) -> (Vec<(u64, Vec<u8>)>, Option<u64>) {
        let outputs = self.shared.outputs.lock().expect("journal lock");
        let lowest = outputs.keys().next().copied();
        let page = outputs
            .range(from..)
            .take(limit)
            .map(|(seq, value)| (*seq, value.clone()))
            .collect();
        (page, lowest)
    }

    /// Waits until everything committed so far is compacted.
    pub fn drain(&self) -> Result<(), StoreError> {
        if let Some(compactor) = &self.compactor {
            let (tx, rx) = mpsc::channel();
            if compactor.tx.send(Job::Drain(tx)).is_ok() {
                let _ = rx.recv();
            }
        }
        self.check()
    }

    /// Stops the compactor after it compacted everything sent to it (unless it failed).
    pub fn stop(&mut self) {
        if let Some(compactor) = self.compactor.take() {
            drop(compactor.tx);
            let _ = compactor.thread.join();
        }
    }
}

impl Compactor {
    fn start(
        backend: Box<dyn KvBackend>,
        policy: Policy,
        shared: &Arc<Shared>,
        stored: Option<HashSet<Vec<u8>>>,
    ) -> Result<Compactor, StoreError> {
        let (tx, rx) = mpsc::sync_channel(policy.backlog);
        let shared = Arc::clone(shared);
        let thread = std::thread::Builder::new()
            .name("journal-compactor".into())
            .spawn(move || compact(backend, rx, policy, &shared, stored))
            .map_err(|e| {
                StoreError::Backend(format!("starting the journal's compactor thread: {e}"))
            })?;
        Ok(Compactor { tx, thread })
    }
}

/// The compactor thread: rounds of batches, each applied as one backend batch, until the
/// foreground is gone (then a last round) or a round fails.
fn compact(
    mut backend: Box<dyn KvBackend>,
    rx: mpsc::Receiver<Job>,
    policy: Policy,
    shared: &Shared,
    mut stored: Option<HashSet<Vec<u8>>>,
) {
    let mut open = true;
    while open {
        let Ok(first) = rx.recv() else {
            return;
        };
        let deadline = Instant::now() + policy.delay;
        let mut records = Vec::new();
        let mut drains = Vec::new();
        let mut bytes = 0;
        let mut job = Some(first);
        loop {
            match job.take() {
                Some(Job::Batch { n, ops, bytes: b }) => {
                    bytes += b;
                    records.push((n, ops));
                }
                Some(Job::Drain(reply)) => drains.push(reply),
                None => {}
            }
            if bytes >= policy.round_bytes || !drains.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(next) => job = Some(next),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !records.is_empty() {
            let highest = records
                .iter()
                .flat_map(|(_, ops)| ops.iter())
                .filter_map(|op| match op {
                    KvOp::Append(seq, _) => Some(*seq),
                    _ => None,
                })
                .max();
            let applied = compaction(records, &mut stored).and_then(|ops| backend.apply(ops));
            if let Err(error) = applied {
                *shared.failure.lock().expect("journal lock") = Some(error);
                return;
            }
            if let Some(highest) = highest {
                let mut outputs = shared.outputs.lock().expect("journal lock");
                let kept = outputs.split_off(&(highest + 1));
                *outputs = kept;
            }
        }
        for reply in drains {
            let _ = reply.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use window_core::{SizeMs, Timestamp, WindowKey};

    use super::*;
    use crate::memory::MemoryBackend;

    /// What one batch does to one of a few windows.
    #[derive(Clone, Debug)]
    enum Step {
        /// Appends this many ids (0: rewrites the header only).
        Append(usize),
        /// Removes the window (it fired whole, or was purged).
        Remove,
    }

    fn window(n: usize) -> WindowKey {
        WindowKey {
            start: Timestamp::from_millis(n as i64 * 10),
            size: SizeMs::new(10).expect("size"),
            key: (n % 2 == 1).then(|| format!("k{n}").into()),
        }
    }

    /// The ops of a run of batches as `KvStore::commit` writes them: per batch, each window's
    /// step, the meta record, and one output record per removal.
    fn batches(
        plan: &[Vec<(usize, Step)>],
        counts: &mut [u64],
        seq: &mut u64,
    ) -> Vec<(u64, Vec<KvOp>)> {
        let mut out = Vec::new();
        for (n, batch) in plan.iter().enumerate() {
            let mut ops = Vec::new();
            for (w, step) in batch {
                let w = *w % counts.len();
                match step {
                    Step::Remove => {
                        ops.push(KvOp::DeletePrefix(codec::window_prefix(&window(w))));
                        ops.push(KvOp::Append(*seq, format!("record {seq}").into_bytes()));
                        *seq += 1;
                        counts[w] = 0;
                    }
                    Step::Append(k) => {
                        let first = counts[w];
                        if first == 0 {
                            ops.push(KvOp::DeletePrefix(codec::window_prefix(&window(w))));
                        }
                        counts[w] += *k as u64;
                        let ids: Vec<EventId> =
                            (first..counts[w]).map(|i| EventId::Int(i as i64)).collect();
                        let header = Header {
                            pane_start: 0,
                            id_count: counts[w],
                            aggregate: None,
                            pane_opened_at: Some(Timestamp::from_millis(n as i64)),
                        };
                        ops.push(KvOp::Put(
                            codec::chunk_key(&window(w), first),
                            codec::encode_chunk(&header, &ids, codec::Payloads::Texts(&[])),
                        ));
                    }
                }
            }
            ops.push(KvOp::Put(b"M".to_vec(), format!("meta {n}").into_bytes()));
            out.push((n as u64, ops));
        }
        out
    }

    /// Every window's ids and header, the other records, and the output records one by one:
    /// what recovery and readers see, whatever the chunking and blocking.
    fn state(backend: &MemoryBackend) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut windows: BTreeMap<Vec<u8>, (Header, Vec<EventId>)> = BTreeMap::new();
        for (key, value) in backend.scan(&[], &[], usize::MAX).expect("scan") {
            if let Some((window, _)) = split_chunk_key(&key) {
                let (header, (ids, _)) = codec::decode_chunk(&key, &value).expect("chunk");
                let entry = windows
                    .entry(window.to_vec())
                    .or_insert((header, Vec::new()));
                entry.0 = header;
                entry.1.extend(ids);
            } else if key.first() == Some(&codec::OUTPUT_PREFIX) {
                let last = codec::decode_output_key(&key).expect("output key");
                for (seq, record) in codec::split_output(&key, last, &value).expect("block") {
                    out.push((codec::output_key(seq), record.to_vec()));
                }
            } else {
                out.push((key, value));
            }
        }
        for (window, (header, ids)) in windows {
            out.push((window, format!("{header:?} {ids:?}").into_bytes()));
        }
        out.sort();
        out
    }

    /// Applies `ops` as sled does a batch: a removal by prefix covers the keys stored before
    /// the batch (not those the batch itself writes), and the last write of a key wins.
    fn apply_like_sled(backend: &mut MemoryBackend, ops: Vec<KvOp>) {
        let before = backend.scan(&[], &[], usize::MAX).expect("scan");
        let mut batch: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for op in ops {
            match op {
                KvOp::Put(key, value) | KvOp::PutNew(key, value) => {
                    batch.insert(key, Some(value));
                }
                KvOp::Append(seq, value) => {
                    batch.insert(codec::output_key(seq), Some(value));
                }
                KvOp::DeletePrefix(prefix) => {
                    for (key, _) in before.iter().filter(|(k, _)| k.starts_with(&prefix)) {
                        batch.insert(key.clone(), None);
                    }
                }
            }
        }
        let ops = batch
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => KvOp::Put(key, value),
                // Every key here is a whole key, none the prefix of another.
                None => KvOp::DeletePrefix(key),
            })
            .collect();
        backend.apply(ops).expect("apply");
    }

    fn step() -> impl Strategy<Value = (usize, Step)> {
        (
            0..4usize,
            prop_oneof![
                3 => (0..4usize).prop_map(Step::Append),
                1 => Just(Step::Remove),
            ],
        )
    }

    proptest! {
        /// Compacting a run of batches in one round leaves what applying them one by one leaves,
        /// with or without the windows the backend held before, known or not.
        #[test]
        fn a_round_has_the_effect_of_its_batches(
            before in prop::collection::vec(prop::collection::vec(step(), 0..4), 0..4),
            plan in prop::collection::vec(prop::collection::vec(step(), 0..6), 1..12),
            known in any::<bool>(),
        ) {
            let mut counts = [0u64; 4];
            let mut seq = 0;
            let mut one_by_one = MemoryBackend::default();
            for (_, ops) in batches(&before, &mut counts, &mut seq) {
                one_by_one.apply(ops).expect("apply");
            }
            let mut compacted = one_by_one.clone();
            // What recovery lists: every window with a record in the backend.
            let mut stored: Option<HashSet<Vec<u8>>> = known.then(|| {
                one_by_one
                    .scan(&[], &[], usize::MAX)
                    .expect("scan")
                    .iter()
                    .filter_map(|(key, _)| Some(split_chunk_key(key)?.0.to_vec()))
                    .collect()
            });
            let records = batches(&plan, &mut counts, &mut seq);
            for (n, ops) in &records {
                one_by_one.apply(ops.clone()).expect("apply");
                one_by_one.apply(vec![KvOp::PutNew(journal_key(*n), Vec::new())]).expect("journal");
            }
            for (n, _) in &records {
                compacted.apply(vec![KvOp::PutNew(journal_key(*n), Vec::new())]).expect("journal");
            }
            apply_like_sled(&mut compacted, compaction(records.clone(), &mut stored)?);
            // The round removed its journal records; the batches applied one by one left theirs.
            for (n, _) in &records {
                one_by_one.apply(vec![KvOp::DeletePrefix(journal_key(*n))]).expect("forget");
            }
            prop_assert_eq!(state(&compacted), state(&one_by_one));
        }

        /// A journal record reads back as the ops it was written from.
        #[test]
        fn a_record_decodes_to_its_ops(plan in prop::collection::vec(prop::collection::vec(step(), 0..6), 1..4)) {
            let mut counts = [0u64; 4];
            let mut seq = 0;
            for (n, ops) in batches(&plan, &mut counts, &mut seq) {
                prop_assert_eq!(decode(&journal_key(n), &encode(&ops))?, ops);
            }
        }
    }

    #[test]
    fn a_truncated_record_is_corrupt_not_a_panic() {
        let ops = vec![
            KvOp::Put(b"a".to_vec(), b"b".to_vec()),
            KvOp::Append(3, b"r".to_vec()),
        ];
        let record = encode(&ops);
        for cut in 0..record.len() {
            assert!(matches!(
                decode(&journal_key(0), &record[..cut]),
                Err(StoreError::Corrupt { .. })
            ));
        }
    }
}
