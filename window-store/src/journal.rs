//! The journal: one record per committed batch, compacted into the store's layout in the
//! background, so that what a commit costs the backend does not grow with the windows it
//! touches.
//!
//! # How a batch travels
//! `KvStore::commit` builds the batch's ops as always (one chunk per touched window, the removals,
//! the fired windows' output records, the remembered requests, the groups, the meta), but writes
//! them to the backend as **one** record, `J` + the journal number (big-endian), holding the ops'
//! encoding ([`encode`]), and moves the head record ([`HEAD_KEY`]) in the same write. That is two
//! keys per batch whatever the batch touched: for Redis one fenced script call (a `HGET` of the
//! head, `HSET`s and `ZADD`s of the two), for sled one batch of two inserts. The ops themselves go
//! to the compactor thread.
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
//!   not in the layout) or gone (its effect is). Recovery (`KvStore::recover`) lays the records
//!   still there over a copy of the layout in memory, merged the same way, and reads that: the
//!   state of every committed batch, in order. It writes nothing; those records are the first
//!   round of the compactor of the next writer.
//! - The merged ops of a round have the effect of its batches' ops applied one after another:
//!   merging only drops writes a later op of the round overwrites or removes, and joins chunks
//!   that follow each other.
//! - Output records not yet compacted are served from memory (the compactor forgets them only
//!   after its round is applied), so a reader never misses one.
//! - Fencing is unchanged: the journal record is written by the same fenced call that wrote the
//!   batch before, and the compactor writes with the same epoch, so a fenced writer's compactor is
//!   refused too. Each journal write also expects the head record ([`HEAD_KEY`]) as its writer
//!   left it, so a second writer that the fence does not stop is refused at its first write.
//! - A compaction that fails stops the store: the next commit or sync returns its error. A
//!   store whose commit or sync failed has its compactor apply nothing more.

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use window_core::EventId;

use crate::backend::{KvBackend, KvOp};
use crate::codec::{self, Header, StoredPayload, WINDOW_PREFIX};
use crate::error::StoreError;
use crate::handoff;
use crate::journal_file::{self, COMPACTED_KEY, JournalFiles};

/// The prefix of journal records.
pub const JOURNAL_PREFIX: u8 = b'J';
/// The version byte of the journal records this build writes: varint lengths, each key as the
/// length it shares with the key before it in the record and the rest, each output record's seq as
/// the step from the one before. A batch's keys are mostly windows of a few time buckets, whose
/// keys share their first 26 bytes, so this holds about 40 % of the bytes of version 1 (whose
/// records this build still reads) where nearly every event opens a window of its own.
const VERSION: u8 = 2;
/// Fixed-width lengths and seqs, whole keys.
const VERSION_1: u8 = 1;

/// The head record: the number of the last journal record written, never removed. Each journal
/// write expects it as the writer left it, so a second writer on the store (one the fence does
/// not stop: the same epoch, or a sled directory copied) is refused at its first write.
pub const HEAD_KEY: &[u8] = b"H";

fn head_number(head: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(head.try_into().map_err(|_| {
        StoreError::corrupt(HEAD_KEY, "the journal head is not 8 bytes")
    })?))
}

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
    /// Rounds of about 200 ms (sled's): a crash leaves little journal for the restart to read.
    fn default() -> Policy {
        Policy {
            delay: Duration::from_millis(200),
            round_bytes: 32 << 20,
            backlog: 512,
        }
    }
}

impl Policy {
    /// Rounds of about a second, for Redis: one server carries the rounds of every node, and a
    /// window opened and removed within a round costs it nothing, so the longer rounds leave it
    /// less to do where windows are short (1000 keys, nearly every event its own window:
    /// redis-server 0.33-0.37 CPU-seconds per million events against 0.54-0.67 with 200 ms).
    /// A failover reads up to that second of journal (or `round_bytes` of it).
    pub fn redis() -> Policy {
        Policy {
            delay: Duration::from_secs(1),
            ..Policy::default()
        }
    }
}

// ---- encoding ----

const PUT: u8 = 0;
const PUT_NEW: u8 = 1;
const DELETE_PREFIX: u8 = 2;
const APPEND: u8 = 3;
const EXPECT: u8 = 4;
const TRIM_LOG: u8 = 5;
const DELETE: u8 = 6;

/// A journal record: the version, the number of ops, then each op (a tag, then its key, sequence
/// number and value as [`VERSION`] says).
pub fn encode(ops: &[KvOp]) -> Vec<u8> {
    let size: usize = ops
        .iter()
        .map(|op| {
            4 + match op {
                KvOp::Put(k, v) | KvOp::PutNew(k, v) => k.len() + v.len() + 8,
                KvOp::DeletePrefix(p) | KvOp::Delete(p) => p.len() + 4,
                KvOp::Append(_, v) => v.len() + 8,
                KvOp::TrimLog(_) => 10,
                KvOp::Expect(k, v) => k.len() + v.as_ref().map_or(0, Vec::len) + 9,
            }
        })
        .sum();
    let mut out = Vec::with_capacity(6 + size);
    out.push(VERSION);
    codec::put_varint(&mut out, ops.len() as u64);
    let mut w = Writer {
        out,
        key: &[],
        seq: 0,
    };
    for op in ops {
        match op {
            KvOp::Put(k, v) | KvOp::PutNew(k, v) => {
                w.out.push(if matches!(op, KvOp::Put(..)) {
                    PUT
                } else {
                    PUT_NEW
                });
                w.key(k);
                w.bytes(v);
            }
            KvOp::DeletePrefix(p) => {
                w.out.push(DELETE_PREFIX);
                w.key(p);
            }
            KvOp::Delete(k) => {
                w.out.push(DELETE);
                w.key(k);
            }
            KvOp::TrimLog(below) => {
                w.out.push(TRIM_LOG);
                codec::put_varint(&mut w.out, *below);
            }
            KvOp::Append(seq, v) => {
                w.out.push(APPEND);
                codec::put_varint(&mut w.out, seq.wrapping_sub(w.seq));
                w.seq = *seq;
                w.bytes(v);
            }
            KvOp::Expect(k, v) => {
                w.out.push(EXPECT);
                w.key(k);
                match v {
                    None => w.out.push(0),
                    Some(v) => {
                        w.out.push(1);
                        w.bytes(v);
                    }
                }
            }
        }
    }
    w.out
}

/// Writes a record's ops, remembering the last key and seq written.
struct Writer<'a> {
    out: Vec<u8>,
    key: &'a [u8],
    seq: u64,
}

impl<'a> Writer<'a> {
    fn bytes(&mut self, b: &[u8]) {
        codec::put_varint(&mut self.out, b.len() as u64);
        self.out.extend_from_slice(b);
    }

    fn key(&mut self, key: &'a [u8]) {
        let shared = shared_prefix(self.key, key);
        codec::put_varint(&mut self.out, shared as u64);
        self.bytes(&key[shared..]);
        self.key = key;
    }
}

/// How many bytes `a` and `b` start with alike: eight at a time (keys share 26 or more).
fn shared_prefix(a: &[u8], b: &[u8]) -> usize {
    let len = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= len {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != y {
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + a[i..len]
        .iter()
        .zip(&b[i..len])
        .take_while(|(x, y)| x == y)
        .count()
}

/// The ops of journal record `key`.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Vec<KvOp>, StoreError> {
    let mut r = Cursor {
        key,
        at: value,
        v1: false,
        last_key: Vec::new(),
        seq: 0,
    };
    let version = r.take(1)?[0];
    if version != VERSION && version != VERSION_1 {
        return Err(StoreError::corrupt(
            key,
            format!(
                "journal record version {version}, this build reads {VERSION_1} and {VERSION}: written by a newer build?"
            ),
        ));
    }
    r.v1 = version == VERSION_1;
    let count = match r.v1 {
        true => r.u32()? as usize,
        false => r.len()?,
    };
    let mut ops = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let tag = r.take(1)?[0];
        ops.push(r.op(tag)?);
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
    /// A [`VERSION_1`] record.
    v1: bool,
    /// The last key read ([`VERSION`]).
    last_key: Vec<u8>,
    /// The last output record's seq read ([`VERSION`]).
    seq: u64,
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

    /// An op, after its tag.
    fn op(&mut self, tag: u8) -> Result<KvOp, StoreError> {
        Ok(match tag {
            PUT => KvOp::Put(self.key()?, self.bytes()?),
            PUT_NEW => KvOp::PutNew(self.key()?, self.bytes()?),
            DELETE_PREFIX => KvOp::DeletePrefix(self.key()?),
            // Version 1 had no removal of a single key.
            DELETE if !self.v1 => KvOp::Delete(self.key()?),
            APPEND => {
                self.seq = match self.v1 {
                    true => self.u64()?,
                    false => self.seq.wrapping_add(self.varint()?),
                };
                KvOp::Append(self.seq, self.bytes()?)
            }
            TRIM_LOG => KvOp::TrimLog(match self.v1 {
                true => self.u64()?,
                false => self.varint()?,
            }),
            EXPECT => {
                let key = self.key()?;
                let value = match self.take(1)?[0] {
                    0 => None,
                    _ => Some(self.bytes()?),
                };
                KvOp::Expect(key, value)
            }
            other => return Err(self.corrupt(&format!("unknown op {other}"))),
        })
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        codec::take_varint(&mut self.at).ok_or_else(|| self.corrupt("truncated"))
    }

    fn len(&mut self) -> Result<usize, StoreError> {
        usize::try_from(self.varint()?).map_err(|_| self.corrupt("a length over the address space"))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, StoreError> {
        let len = match self.v1 {
            true => self.u32()? as usize,
            false => self.len()?,
        };
        Ok(self.take(len)?.to_vec())
    }

    /// A key: the part it shares with the last one, then the rest (in version 1: whole).
    fn key(&mut self) -> Result<Vec<u8>, StoreError> {
        if self.v1 {
            return self.bytes();
        }
        let shared = self.len()?;
        if shared > self.last_key.len() {
            return Err(self.corrupt("a key sharing more than the key before it holds"));
        }
        let rest = self.len()?;
        let mut key = Vec::with_capacity(shared + rest);
        key.extend_from_slice(&self.last_key[..shared]);
        key.extend_from_slice(self.take(rest)?);
        self.last_key.clone_from(&key);
        Ok(key)
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

// ---- merging ----

/// A window's chunk being joined with the chunks that follow it in the round.
struct Tail {
    /// Where its op goes in `Merger::ops`.
    at: usize,
    key: Vec<u8>,
    /// Its header, once known: read from `raw` when a chunk of its window comes after it, set
    /// by a join (most windows get one chunk a round: nothing of it is ever decoded).
    header: Option<Header>,
    /// The chunk as it was written, until another one joins it.
    raw: Option<Vec<u8>>,
    ids: Vec<EventId>,
    payloads: Vec<Option<StoredPayload>>,
}

impl Tail {
    /// The number of ids the window has with the tail's chunks.
    fn id_count(&mut self) -> Result<u64, StoreError> {
        if self.header.is_none()
            && let Some(raw) = &self.raw
        {
            self.header = Some(codec::decode_chunk_header(&self.key, raw)?);
        }
        Ok(self.header()?.id_count)
    }

    fn header(&self) -> Result<&Header, StoreError> {
        self.header
            .as_ref()
            .ok_or_else(|| StoreError::corrupt(&self.key, "a joined chunk without its header"))
    }

    /// The tail's value, as written or joined.
    fn value(self) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let value = match self.raw {
            Some(raw) => raw,
            None => codec::encode_chunk_stored(self.header()?, &self.ids, &self.payloads)
                .ok_or_else(|| {
                    StoreError::corrupt(
                        &self.key,
                        "chunks of one window hold both payload texts and payload log references",
                    )
                })?,
        };
        Ok((self.key, value))
    }

    /// Joins the next chunk (`ids`, `payloads`, ending with `header`).
    fn join(
        &mut self,
        header: Header,
        ids: Vec<EventId>,
        payloads: Vec<Option<StoredPayload>>,
    ) -> Result<(), StoreError> {
        if let Some(raw) = self.raw.take() {
            let (_, (own_ids, own_payloads)) = codec::decode_chunk(&self.key, &raw)?;
            self.ids = own_ids;
            self.payloads = own_payloads;
        }
        if !payloads.is_empty() || !self.payloads.is_empty() {
            self.payloads.resize(self.ids.len(), None);
            if payloads.is_empty() {
                self.payloads.resize(self.ids.len() + ids.len(), None);
            } else {
                self.payloads.extend(payloads);
            }
        }
        self.ids.extend(ids);
        self.header = Some(header);
        Ok(())
    }
}

/// What a round writes of one window: its growing last chunk, and the earlier chunks of the
/// round that the last one does not follow (their keys and where their ops are).
#[derive(Default)]
struct WindowWrites {
    tail: Option<Tail>,
    written: Vec<(Vec<u8>, usize)>,
}

/// The ops of several batches, in order, merged into ops with the same effect.
#[derive(Default)]
pub struct Merger {
    /// The merged ops; `None` where a later op made one unnecessary, or where a window's tail
    /// or an output block goes once complete.
    ops: Vec<Option<KvOp>>,
    /// Overwritable records other than chunks written in the round, by key: where their op is.
    puts: BTreeMap<Vec<u8>, usize>,
    /// Per window (its key prefix): its chunks in the round.
    windows: foldhash::HashMap<Vec<u8>, WindowWrites>,
    /// Output records of consecutive seqs being gathered into one block.
    block: Option<Block>,
}

/// Output records of consecutive seqs gathered into one block.
struct Block {
    /// Where its op goes.
    at: usize,
    /// The last seq.
    last: u64,
    records: Vec<Vec<u8>>,
    /// The records' bytes.
    bytes: usize,
}

/// Output records per block, at most (so that a reader who wants one reads few others).
const BLOCK_RECORDS: usize = 1024;
/// Bytes of output records per block, at most (a block of one record may hold more). Small on
/// purpose: sled rewrites a whole leaf (up to 16 keys) when it consolidates one, and a leaf of
/// blocks of 1 MiB went to a blob file of its own each time (with 100-byte payloads the
/// compactor spent about twice the CPU it does with blocks of 8 KiB, whose leaves stay inline).
const BLOCK_BYTES: usize = 8 << 10;

/// A chunk key's window prefix and first index.
fn split_chunk_key(key: &[u8]) -> Option<(&[u8], u64)> {
    if key.first() != Some(&WINDOW_PREFIX) || key.len() < 10 {
        return None;
    }
    let (prefix, rest) = key.split_at(key.len() - 9);
    Some((prefix, u64::from_be_bytes(rest[1..].try_into().ok()?)))
}

/// Whether `prefix` is a whole window's prefix (`codec::window_prefix`), not a shorter one
/// covering several windows.
fn is_window_prefix(prefix: &[u8]) -> bool {
    // 'W', end, start, size (8 bytes each), then 0 or 1, a length and the key.
    match prefix.get(25) {
        Some(0) => prefix.len() == 26,
        Some(1) => prefix.get(26..30).is_some_and(|len| {
            let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
            prefix.len() == 30 + len
        }),
        _ => false,
    }
}

impl Merger {
    /// Adds the next op.
    pub fn push(&mut self, op: KvOp) -> Result<(), StoreError> {
        match op {
            KvOp::Put(key, value) => self.put(key, value),
            KvOp::DeletePrefix(prefix) => {
                if let Some(writes) = self.windows.remove(&prefix) {
                    // A window's prefix (what removals name): its chunks alone, none of which
                    // is among `puts`.
                    self.cancel(writes);
                    self.ops.push(Some(KvOp::DeletePrefix(prefix)));
                    return Ok(());
                } else if prefix.first() == Some(&WINDOW_PREFIX) && is_window_prefix(&prefix) {
                    // A window with no chunk in the round (nor in `puts`: every key under a
                    // window's prefix is a chunk's).
                    self.ops.push(Some(KvOp::DeletePrefix(prefix)));
                    return Ok(());
                } else {
                    let doomed: Vec<Vec<u8>> = self
                        .windows
                        .keys()
                        .filter(|window| window.starts_with(&prefix))
                        .cloned()
                        .collect();
                    for window in doomed {
                        if let Some(writes) = self.windows.remove(&window) {
                            self.cancel(writes);
                        }
                    }
                }
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
                self.ops.push(Some(KvOp::DeletePrefix(prefix)));
                Ok(())
            }
            KvOp::Delete(key) => Err(StoreError::corrupt(
                &key,
                "a journaled batch removes a single key: only compaction rounds do",
            )),
            KvOp::Append(seq, value) => {
                if let Some(block) = &mut self.block
                    && block.last.checked_add(1) == Some(seq)
                    && block.records.len() < BLOCK_RECORDS
                    && block.bytes + value.len() <= BLOCK_BYTES
                {
                    block.last = seq;
                    block.bytes += value.len();
                    block.records.push(value);
                    return Ok(());
                }
                self.close_block();
                self.block = Some(Block {
                    at: self.ops.len(),
                    last: seq,
                    bytes: value.len(),
                    records: vec![value],
                });
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
        if let Some(Block {
            at,
            last,
            mut records,
            ..
        }) = self.block.take()
        {
            let value = if records.len() == 1 {
                records.pop().expect("one record")
            } else {
                codec::encode_output_block(&records)
            };
            self.ops[at] = Some(KvOp::Append(last, value));
        }
    }

    /// Drops every write of a window's chunks in the round (the window was removed after them).
    fn cancel(&mut self, writes: WindowWrites) {
        for at in writes
            .tail
            .map(|t| t.at)
            .into_iter()
            .chain(writes.written.into_iter().map(|(_, at)| at))
        {
            self.ops[at] = None;
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        let Some((window, first)) = split_chunk_key(&key) else {
            if let Some(old) = self.puts.remove(&key) {
                self.ops[old] = None;
            }
            self.puts.insert(key.clone(), self.ops.len());
            self.ops.push(Some(KvOp::Put(key, value)));
            return Ok(());
        };
        let writes = match self.windows.get_mut(window) {
            Some(writes) => writes,
            None => self.windows.entry(window.to_vec()).or_default(),
        };
        if let Some(tail) = &mut writes.tail
            && tail.id_count()? == first
        {
            let (header, (ids, payloads)) = codec::decode_chunk(&key, &value)?;
            if first + ids.len() as u64 == header.id_count {
                // The next chunk of the same window: joined to the tail.
                return tail.join(header, ids, payloads);
            }
        }
        // A new tail (the window's first chunk in the round, or one that does not follow the
        // last): the earlier tail is written as it stands, unless this one replaces it.
        if let Some(old) = writes.tail.take() {
            let at = old.at;
            let (old_key, old_value) = old.value()?;
            self.ops[at] = Some(KvOp::Put(old_key.clone(), old_value));
            writes.written.push((old_key, at));
        }
        if let Some(i) = writes.written.iter().position(|(k, _)| *k == key) {
            let (_, at) = writes.written.swap_remove(i);
            self.ops[at] = None;
        }
        writes.tail = Some(Tail {
            at: self.ops.len(),
            key,
            header: None,
            raw: Some(value),
            ids: Vec::new(),
            payloads: Vec::new(),
        });
        self.ops.push(None);
        Ok(())
    }

    /// The merged ops.
    pub fn finish(mut self) -> Result<Vec<KvOp>, StoreError> {
        self.close_block();
        for (_, writes) in self.windows.drain() {
            if let Some(tail) = writes.tail {
                let at = tail.at;
                let (key, value) = tail.value()?;
                self.ops[at] = Some(KvOp::Put(key, value));
            }
        }
        Ok(self.ops.into_iter().flatten().collect())
    }
}

/// Every window the backend holds records of, by key prefix, with the first indexes of its chunks
/// when the compactor wrote every one of them (empty when recovery listed the window: its chunks
/// are not known here).
pub type StoredWindows = foldhash::HashMap<Vec<u8>, Vec<u64>>;

/// The windows recovery found in the backend (by key prefix), their chunks unknown.
pub fn listed_windows(prefixes: HashSet<Vec<u8>>) -> StoredWindows {
    prefixes.into_iter().map(|p| (p, Vec::new())).collect()
}

/// Merges the ops of journal records (their numbers and ops, in order) and adds the removal of
/// those records: the one backend batch that compacts them.
///
/// `stored`, when known, is what the backend holds ([`StoredWindows`]): a window's removal is
/// then left out when the backend holds nothing of it (a window opened and removed within the
/// round, the common case with many short windows), is the removal of its chunks' keys when the
/// compactor wrote them all, and stays a removal by prefix otherwise; `stored` is kept up to date
/// with the ops returned.
pub fn compaction(
    records: Vec<(u64, Vec<KvOp>)>,
    stored: &mut Option<StoredWindows>,
) -> Result<Vec<KvOp>, StoreError> {
    compaction_below(records, stored, u64::MAX)
}

/// [`compaction`], removing only the records numbered below `in_backend_below` (the rest are
/// in journal files, which the compactor marks compacted instead).
fn compaction_below(
    records: Vec<(u64, Vec<KvOp>)>,
    stored: &mut Option<StoredWindows>,
    in_backend_below: u64,
) -> Result<Vec<KvOp>, StoreError> {
    let mut merger = Merger {
        ops: Vec::with_capacity(records.iter().map(|(_, ops)| ops.len()).sum()),
        ..Merger::default()
    };
    let mut numbers = Vec::with_capacity(records.len());
    for (n, ops) in records {
        numbers.push(n);
        for op in ops {
            merger.push(op)?;
        }
    }
    let mut ops = merger.finish()?;
    if let Some(stored) = stored {
        ops = known_removals(ops, stored);
    }
    // A journal key is a fixed length, so as a prefix it covers that key alone.
    ops.extend(
        numbers
            .into_iter()
            .filter(|n| *n < in_backend_below)
            .map(|n| KvOp::DeletePrefix(journal_key(n))),
    );
    Ok(ops)
}

/// `ops` (merged) with each window's removal as `stored` has it, and `stored` updated with them.
fn known_removals(ops: Vec<KvOp>, stored: &mut StoredWindows) -> Vec<KvOp> {
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            KvOp::Put(ref key, _) => {
                if let Some((window, first)) = split_chunk_key(key) {
                    match stored.get_mut(window) {
                        // Chunks unknown stay unknown: the removal stays by prefix.
                        Some(firsts) if firsts.is_empty() || firsts.contains(&first) => {}
                        Some(firsts) => firsts.push(first),
                        None => {
                            stored.insert(window.to_vec(), vec![first]);
                        }
                    }
                }
                out.push(op);
            }
            KvOp::DeletePrefix(prefix)
                if prefix.first() == Some(&WINDOW_PREFIX) && is_window_prefix(&prefix) =>
            {
                match stored.remove(prefix.as_slice()) {
                    None => {}
                    Some(firsts) if firsts.is_empty() => out.push(KvOp::DeletePrefix(prefix)),
                    Some(firsts) => out.extend(
                        firsts
                            .into_iter()
                            .map(|first| KvOp::Delete(codec::chunk_key_under(&prefix, first))),
                    ),
                }
            }
            KvOp::DeletePrefix(prefix) if prefix.first() == Some(&WINDOW_PREFIX) => {
                // Several windows' prefix (no batch writes one today): what it covers is gone,
                // whatever `stored` says of it.
                stored.retain(|window, _| !window.starts_with(&prefix));
                out.push(KvOp::DeletePrefix(prefix));
            }
            other => out.push(other),
        }
    }
    out
}

/// Records read per page: they can be large.
const READ_PAGE: usize = 16;

/// Every journal record `backend` holds, in order, decoded: the batches committed but not yet
/// compacted (left behind by a crash, or by a writer that stopped before its compactor ran).
pub fn read_all(backend: &dyn KvBackend) -> Result<Vec<(u64, Vec<KvOp>)>, StoreError> {
    let prefix = [JOURNAL_PREFIX];
    let mut records = Vec::new();
    let mut start = prefix.to_vec();
    loop {
        let page = backend.scan(&prefix, &start, READ_PAGE)?;
        let Some((last, _)) = page.last() else {
            return Ok(records);
        };
        start = last.clone();
        start.push(0);
        for (key, value) in page {
            records.push((journal_number(&key)?, decode(&key, &value)?));
        }
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
    /// The foreground failed: the compactor applies nothing more (what it holds stays in the
    /// journal for the next recovery), so that a failed store is not written on its way out.
    abandoned: std::sync::atomic::AtomicBool,
    /// With journal files: the number of the last record compacted and synced, plus one (0:
    /// none yet), for the writer to remove the segments that hold nothing else.
    compacted: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
enum Job {
    Batch {
        n: u64,
        ops: Vec<KvOp>,
    },
    /// Answered once everything sent before is compacted.
    Drain(mpsc::Sender<()>),
}

/// The foreground's side of the journal.
#[derive(Debug)]
pub struct Journal {
    policy: Policy,
    /// The number the next record gets; `None` until the journal was read.
    next: Option<u64>,
    /// What the head record held after this writer's last write (or at recovery): every
    /// journal write expects it unchanged, so a second writer is refused at once.
    head: Option<Vec<u8>>,
    shared: Arc<Shared>,
    compactor: Option<Compactor>,
    /// The windows the backend holds records of (their key prefixes), when recovery listed
    /// them: handed to the compactor, which keeps it up to date.
    stored: Option<StoredWindows>,
    /// Journal records found at recovery: the compactor's first round.
    initial: Vec<(u64, Vec<KvOp>)>,
    /// The records are in these files instead of the backend (sled; see `journal_file`).
    files: Option<JournalFiles>,
    /// Records numbered below this are in the backend (all of them without files; with files,
    /// those a build that kept them in the sled tree left behind), removed by key when compacted.
    in_backend_below: u64,
}

#[derive(Debug)]
struct Compactor {
    queue: handoff::Writer<Job>,
    thread: JoinHandle<()>,
    /// Disconnected when the thread ends.
    ended: mpsc::Receiver<()>,
}

/// How long a stop waits for the compactor's last round: a backend that does not answer (a
/// paused Redis) must not hold the process that is stopping (its commits failed already, or
/// its last round waits in the journal for the next recovery).
const STOP_PATIENCE: Duration = Duration::from_secs(10);

impl Journal {
    pub fn new(policy: Policy) -> Journal {
        Journal {
            policy,
            next: None,
            head: None,
            shared: Arc::default(),
            compactor: None,
            stored: None,
            initial: Vec::new(),
            files: None,
            in_backend_below: u64::MAX,
        }
    }

    /// The journal, its records in `files` instead of the backend: a commit appends to them and
    /// a sync syncs them; the compactor records in the backend how far it compacted
    /// ([`COMPACTED_KEY`]) and syncs the backend after each round.
    pub fn in_files(policy: Policy, files: JournalFiles) -> Journal {
        Journal {
            files: Some(files),
            ..Journal::new(policy)
        }
    }

    /// With files: makes every record appended durable (the backend is not written by commits).
    /// `None` without files: the backend's own sync covers the records.
    pub fn sync_files(&mut self) -> Option<Result<(), StoreError>> {
        let files = self.files.as_mut()?;
        let synced = files.sync();
        if synced.is_err() {
            self.abandon();
        }
        Some(synced)
    }

    /// Waits until the compactor (if it runs) applied every batch committed so far, so that
    /// the backend's layout and journal are what recovery should read.
    pub fn settle(&self) -> Result<(), StoreError> {
        self.drain()
    }

    /// Reads the journal records `backend` holds (see [`read_all`]) and the head, and sets this
    /// writer's numbering after them. Until the compactor starts, they are kept for its first
    /// round (the holder's compactor applies them, never a reader), and their output records
    /// are served from memory. Returns them, for recovery to lay over the layout.
    pub fn leftovers(
        &mut self,
        backend: &dyn KvBackend,
    ) -> Result<Vec<(u64, Vec<KvOp>)>, StoreError> {
        let mut records = read_all(backend)?;
        let mut compacted_after = 0;
        if let Some(files) = &mut self.files {
            let compacted = match backend.get(COMPACTED_KEY)? {
                Some(value) => Some(journal_file::compacted_number(&value)?),
                None => None,
            };
            compacted_after = compacted.map_or(0, |c| c + 1);
            if self.compactor.is_none() {
                self.in_backend_below = records.last().map_or(0, |(n, _)| n + 1);
            }
            for (n, body) in files.read(compacted)? {
                if records.last().is_some_and(|(last, _)| n <= *last) {
                    return Err(StoreError::corrupt(
                        &journal_key(n),
                        "a journal record in the files is numbered before one in the sled tree",
                    ));
                }
                records.push((n, decode(&journal_key(n), &body)?));
            }
        }
        if self.compactor.is_some() {
            // Settled: every record of this writer is compacted, so any left is another's.
            if let Some((n, _)) = records.first() {
                return Err(StoreError::InvalidBatch(format!(
                    "the journal holds record {n}, which this writer did not write (a second writer on this store?)"
                )));
            }
            return Ok(records);
        }
        self.head = backend.get(HEAD_KEY)?;
        let written = match &self.head {
            Some(head) => head_number(head)?.saturating_add(1),
            None => 0,
        };
        let after = records.last().map_or(0, |(n, _)| n + 1);
        self.next = Some(
            written
                .max(after)
                .max(compacted_after)
                .max(self.next.unwrap_or(0)),
        );
        if self.compactor.is_none() {
            self.shared
                .compacted
                .store(compacted_after, std::sync::atomic::Ordering::SeqCst);
            let mut outputs = self.shared.outputs.lock().expect("journal lock");
            for op in records.iter().flat_map(|(_, ops)| ops) {
                if let KvOp::Append(seq, value) = op {
                    outputs.insert(*seq, value.clone());
                }
            }
            self.initial = records.clone();
        }
        Ok(records)
    }

    /// Tells the journal every window the backend holds records of (recovery listed them),
    /// before the first commit.
    pub fn stored_windows(&mut self, windows: HashSet<Vec<u8>>) {
        if self.compactor.is_none() {
            self.stored = Some(listed_windows(windows));
        }
    }

    /// The compactor's error, once it failed.
    pub fn check(&self) -> Result<(), StoreError> {
        if let Some(error) = &*self.shared.failure.lock().expect("journal lock") {
            return Err(error.clone());
        }
        if self
            .shared
            .abandoned
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(StoreError::Backend(
                "an earlier write or sync of this store failed; it takes no more".to_owned(),
            ));
        }
        Ok(())
    }

    /// Writes `ops` as one journal record through `backend`, and hands them to the compactor
    /// (started before the first record, with the backend's [`KvBackend::twin`]). The write
    /// expects the head record as this writer left it and moves it on, in the same batch.
    pub fn commit(
        &mut self,
        backend: &mut dyn KvBackend,
        ops: Vec<KvOp>,
    ) -> Result<(), StoreError> {
        self.check()?;
        if self.next.is_none() {
            self.leftovers(backend)?;
        }
        // The compactor's handle first: a batch is never journaled without a compactor to take
        // it; its thread starts once this writer's first record is in.
        let twin = match &self.compactor {
            Some(_) => None,
            None => Some(backend.twin().unwrap_or_else(|| {
                Err(StoreError::InvalidBatch(
                    "this backend cannot be shared with a compactor: open it without a journal"
                        .to_owned(),
                ))
            })?),
        };
        let n = self.next.unwrap_or(0);
        let record = encode(&ops);
        let bytes = record.len();
        let written = match &mut self.files {
            Some(files) => {
                let compacted = self
                    .shared
                    .compacted
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .checked_sub(1);
                files.append(n, &record, compacted)
            }
            None => {
                let head = n.to_be_bytes().to_vec();
                let written = backend.apply(vec![
                    KvOp::Expect(HEAD_KEY.to_vec(), self.head.clone()),
                    KvOp::Put(HEAD_KEY.to_vec(), head.clone()),
                    KvOp::PutNew(journal_key(n), record),
                ]);
                if written.is_ok() {
                    self.head = Some(head);
                }
                written
            }
        };
        if let Err(error) = written {
            self.abandon();
            return Err(error);
        }
        self.next = Some(n + 1);
        {
            let mut outputs = self.shared.outputs.lock().expect("journal lock");
            for op in &ops {
                if let KvOp::Append(seq, value) = op {
                    outputs.insert(*seq, value.clone());
                }
            }
        }
        if let Some(twin) = twin {
            let started = Compactor::start(
                twin,
                Rounds {
                    policy: self.policy,
                    in_backend_below: self.in_backend_below,
                    files: self.files.is_some(),
                },
                &self.shared,
                self.stored.take(),
                std::mem::take(&mut self.initial),
            );
            match started {
                Ok(compactor) => self.compactor = Some(compactor),
                Err(error) => {
                    // Its records stay in the journal, for the next writer's first round.
                    self.abandon();
                    return Err(error);
                }
            }
        }
        let compactor = self.compactor.as_ref().expect("started above");
        if compactor
            .queue
            .push(Job::Batch { n, ops }, bytes, false)
            .is_err()
        {
            self.check()?;
            return Err(StoreError::Backend(
                "the journal's compactor thread is gone".to_owned(),
            ));
        }
        Ok(())
    }

    /// The store failed: the compactor applies nothing more.
    pub fn abandon(&self) {
        self.shared
            .abandoned
            .store(true, std::sync::atomic::Ordering::SeqCst);
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
            if compactor.queue.push(Job::Drain(tx), 0, true).is_err() || rx.recv().is_err() {
                self.check()?;
                return Err(StoreError::Backend(
                    "the journal's compactor thread is gone".to_owned(),
                ));
            }
        }
        self.check()
    }

    /// Stops the compactor after it compacted everything sent to it (unless it failed).
    pub fn stop(&mut self) {
        if let Some(compactor) = self.compactor.take() {
            drop(compactor.queue);
            match compactor.ended.recv_timeout(STOP_PATIENCE) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Left to end with the process: what it did not apply is in the journal.
                }
                _ => {
                    let _ = compactor.thread.join();
                }
            }
        }
    }
}

impl Compactor {
    fn start(
        backend: Box<dyn KvBackend>,
        rounds: Rounds,
        shared: &Arc<Shared>,
        stored: Option<StoredWindows>,
        initial: Vec<(u64, Vec<KvOp>)>,
    ) -> Result<Compactor, StoreError> {
        let (queue, rx) = handoff::channel(rounds.policy.backlog, rounds.policy.round_bytes);
        let (ended_tx, ended) = mpsc::channel::<()>();
        let shared = Arc::clone(shared);
        let thread = std::thread::Builder::new()
            .name("journal-compactor".into())
            .spawn(move || {
                let _ended = ended_tx;
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    compact(backend, &rx, rounds, &shared, stored, initial);
                }));
                // Whichever way it ended: a writer must not wait for it.
                drop(rx);
                if ran.is_err() {
                    *shared.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(
                        StoreError::Backend("the journal's compactor thread panicked".to_owned()),
                    );
                }
            })
            .map_err(|e| {
                StoreError::Backend(format!("starting the journal's compactor thread: {e}"))
            })?;
        Ok(Compactor {
            queue,
            thread,
            ended,
        })
    }
}

/// How the compactor runs its rounds.
#[derive(Clone, Copy, Debug)]
struct Rounds {
    policy: Policy,
    /// Records numbered below this are in the backend, removed by key.
    in_backend_below: u64,
    /// The others are in journal files: each round marks how far it compacted
    /// ([`COMPACTED_KEY`]) and syncs the backend before the files may be removed.
    files: bool,
}

/// The compactor thread: rounds of batches, each applied as one backend batch, until the
/// foreground is gone (then a last round) or a round fails.
fn compact(
    mut backend: Box<dyn KvBackend>,
    rx: &handoff::Reader<Job>,
    rounds: Rounds,
    shared: &Shared,
    mut stored: Option<StoredWindows>,
    initial: Vec<(u64, Vec<KvOp>)>,
) {
    let policy = rounds.policy;
    // The records recovery found, in rounds of `round_bytes` or so (a long journal left by a
    // crash must not become one backend call too large for it).
    let mut round = Vec::new();
    let mut bytes = 0;
    let mut initial = initial.into_iter().peekable();
    while let Some((n, ops)) = initial.next() {
        bytes += ops.iter().map(op_bytes).sum::<usize>();
        round.push((n, ops));
        if bytes >= policy.round_bytes || initial.peek().is_none() {
            if shared.abandoned.load(std::sync::atomic::Ordering::SeqCst)
                || !apply_round(
                    &mut *backend,
                    std::mem::take(&mut round),
                    &mut stored,
                    shared,
                    rounds,
                )
            {
                return;
            }
            bytes = 0;
        }
    }
    while rx.first() {
        let jobs = rx.gather(Instant::now() + policy.delay);
        let mut records = Vec::new();
        let mut drains = Vec::new();
        for job in jobs {
            match job {
                Job::Batch { n, ops } => records.push((n, ops)),
                Job::Drain(reply) => drains.push(reply),
            }
        }
        if shared.abandoned.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if !records.is_empty() && !apply_round(&mut *backend, records, &mut stored, shared, rounds)
        {
            return;
        }
        for reply in drains {
            let _ = reply.send(());
        }
    }
}

/// About how many bytes an op carries.
fn op_bytes(op: &KvOp) -> usize {
    match op {
        KvOp::Put(k, v) | KvOp::PutNew(k, v) => k.len() + v.len(),
        KvOp::DeletePrefix(p) | KvOp::Delete(p) => p.len(),
        KvOp::Append(_, v) => v.len(),
        KvOp::Expect(k, v) => k.len() + v.as_ref().map_or(0, Vec::len),
        KvOp::TrimLog(_) => 8,
    }
}

/// Applies one round; false once it failed (the failure is recorded for the foreground).
fn apply_round(
    backend: &mut dyn KvBackend,
    records: Vec<(u64, Vec<KvOp>)>,
    stored: &mut Option<StoredWindows>,
    shared: &Shared,
    rounds: Rounds,
) -> bool {
    let highest = records
        .iter()
        .flat_map(|(_, ops)| ops.iter())
        .filter_map(|op| match op {
            KvOp::Append(seq, _) => Some(*seq),
            _ => None,
        })
        .max();
    let in_files = records
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n >= rounds.in_backend_below)
        .max()
        .filter(|_| rounds.files);
    let applied = compaction_below(records, stored, rounds.in_backend_below).and_then(|mut ops| {
        if let Some(last) = in_files {
            ops.push(KvOp::Put(
                COMPACTED_KEY.to_vec(),
                journal_file::compacted_value(last),
            ));
        }
        backend.apply(ops)?;
        if rounds.files {
            // Before the writer may remove the files these records are in.
            backend.sync()?;
        }
        Ok(())
    });
    if let Err(error) = applied {
        *shared.failure.lock().expect("journal lock") = Some(error);
        return false;
    }
    if let Some(last) = in_files {
        shared
            .compacted
            .store(last + 1, std::sync::atomic::Ordering::SeqCst);
    }
    if let Some(highest) = highest {
        let mut outputs = shared.outputs.lock().expect("journal lock");
        let kept = outputs.split_off(&(highest + 1));
        *outputs = kept;
    }
    true
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

    fn window_key(n: usize) -> WindowKey {
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
                        ops.push(KvOp::DeletePrefix(codec::window_prefix(&window_key(w))));
                        ops.push(KvOp::Append(*seq, format!("record {seq}").into_bytes()));
                        *seq += 1;
                        counts[w] = 0;
                    }
                    Step::Append(k) => {
                        let first = counts[w];
                        if first == 0 {
                            ops.push(KvOp::DeletePrefix(codec::window_prefix(&window_key(w))));
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
                            codec::chunk_key(&window_key(w), first),
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
                KvOp::Delete(key) => {
                    batch.insert(key, None);
                }
                KvOp::TrimLog(below) => {
                    let (from, to) = (codec::output_key(0), codec::output_key(below));
                    for (key, _) in before.iter().filter(|(k, _)| *k >= from && *k < to) {
                        batch.insert(key.clone(), None);
                    }
                }
                KvOp::Expect(..) => panic!("a round carries no expectation"),
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
        /// Compacting a run of batches in rounds leaves what applying them one by one leaves,
        /// with or without the windows the backend held before, known or not (a later round
        /// removes by their keys the windows an earlier one wrote).
        #[test]
        fn rounds_have_the_effect_of_their_batches(
            before in prop::collection::vec(prop::collection::vec(step(), 0..4), 0..4),
            plan in prop::collection::vec(prop::collection::vec(step(), 0..6), 1..12),
            known in any::<bool>(),
            ends in prop::collection::vec(any::<bool>(), 12),
        ) {
            let mut counts = [0u64; 4];
            let mut seq = 0;
            let mut one_by_one = MemoryBackend::default();
            for (_, ops) in batches(&before, &mut counts, &mut seq) {
                one_by_one.apply(ops).expect("apply");
            }
            let mut compacted = one_by_one.clone();
            // What recovery lists: every window with a record in the backend.
            let mut stored = known.then(|| {
                listed_windows(
                    one_by_one
                        .scan(&[], &[], usize::MAX)
                        .expect("scan")
                        .iter()
                        .filter_map(|(key, _)| Some(split_chunk_key(key)?.0.to_vec()))
                        .collect(),
                )
            });
            let records = batches(&plan, &mut counts, &mut seq);
            for (n, ops) in &records {
                one_by_one.apply(ops.clone()).expect("apply");
                one_by_one.apply(vec![KvOp::PutNew(journal_key(*n), Vec::new())]).expect("journal");
            }
            for (n, _) in &records {
                compacted.apply(vec![KvOp::PutNew(journal_key(*n), Vec::new())]).expect("journal");
            }
            let mut round = Vec::new();
            for (i, record) in records.iter().enumerate() {
                round.push(record.clone());
                if ends[i] || i + 1 == records.len() {
                    let ops = compaction(std::mem::take(&mut round), &mut stored)?;
                    apply_like_sled(&mut compacted, ops);
                }
            }
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
                prop_assert_eq!(decode(&journal_key(n), &encode(&ops))?, ops.clone());
                prop_assert_eq!(decode(&journal_key(n), &encode_v1(&ops))?, ops);
            }
        }
    }

    /// A record as builds before [`VERSION`] wrote it (they still have to be read).
    fn encode_v1(ops: &[KvOp]) -> Vec<u8> {
        let mut out = vec![VERSION_1];
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
                KvOp::TrimLog(below) => {
                    out.push(TRIM_LOG);
                    out.extend_from_slice(&below.to_le_bytes());
                }
                KvOp::Append(seq, v) => {
                    out.push(APPEND);
                    out.extend_from_slice(&seq.to_le_bytes());
                    bytes(&mut out, v);
                }
                KvOp::Delete(_) => panic!("version 1 had no removal of a single key"),
                KvOp::Expect(k, v) => {
                    out.push(EXPECT);
                    bytes(&mut out, k);
                    match v {
                        None => out.push(0),
                        Some(v) => {
                            out.push(1);
                            bytes(&mut out, v);
                        }
                    }
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn shared_prefix_counts_the_bytes_alike(
            a in prop::collection::vec(0u8..3, 0..40),
            b in prop::collection::vec(0u8..3, 0..40),
        ) {
            let slow = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            prop_assert_eq!(shared_prefix(&a, &b), slow);
            let longer = [a.as_slice(), &b].concat();
            prop_assert_eq!(shared_prefix(&a, &longer), a.len());
        }
    }

    #[test]
    fn keys_of_one_time_bucket_share_their_prefix_in_the_record() {
        // Two windows of one bucket: the second key is written as what differs.
        let ops: Vec<KvOp> = ["sensor-1", "sensor-2"]
            .map(|key| {
                KvOp::DeletePrefix(codec::window_prefix(&WindowKey {
                    start: Timestamp::from_millis(60_000),
                    size: SizeMs::new(60_000).expect("size"),
                    key: Some(key.into()),
                }))
            })
            .into();
        let record = encode(&ops);
        assert_eq!(decode(&journal_key(0), &record).unwrap(), ops);
        let full: usize = ops
            .iter()
            .map(|op| match op {
                KvOp::DeletePrefix(p) => p.len(),
                _ => 0,
            })
            .sum();
        assert!(
            record.len() < full - 20,
            "{} bytes for keys of {full}",
            record.len()
        );
    }

    /// What makes a round cheaper than its batches: one chunk per window, nothing of a window
    /// opened and removed within it, one block of output records.
    #[test]
    fn a_round_writes_one_chunk_per_live_window_and_one_block() {
        let plan = vec![
            vec![(0, Step::Append(2)), (1, Step::Append(1))],
            vec![(0, Step::Append(3)), (1, Step::Remove)],
            vec![
                (0, Step::Append(0)),
                (2, Step::Append(1)),
                (2, Step::Remove),
            ],
            vec![(0, Step::Append(1)), (3, Step::Remove)],
        ];
        let mut counts = [0u64; 4];
        let mut seq = 0;
        let records = batches(&plan, &mut counts, &mut seq);
        let ops = compaction(records, &mut Some(StoredWindows::default())).expect("merge");
        let chunks: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                KvOp::Put(key, value) => Some((split_chunk_key(key)?, value)),
                _ => None,
            })
            .collect();
        assert_eq!(chunks.len(), 1, "{ops:?}");
        let ((window, first), value) = &chunks[0];
        assert_eq!(*window, codec::window_prefix(&window_key(0)).as_slice());
        assert_eq!(*first, 0);
        let (header, (ids, _)) = codec::decode_chunk(b"k", value).expect("chunk");
        assert_eq!(header.id_count, 6);
        assert_eq!(ids, (0..6).map(EventId::Int).collect::<Vec<_>>());
        // Only window 0 was ever stored, and it was never removed: no removal is written.
        assert!(
            !ops.iter()
                .any(|op| matches!(op, KvOp::DeletePrefix(p) if p[0] == WINDOW_PREFIX))
        );
        let appends: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                KvOp::Append(last, value) => Some((*last, value)),
                _ => None,
            })
            .collect();
        assert_eq!(appends.len(), 1);
        let (last, block) = appends[0];
        assert_eq!(last, 2);
        let key = codec::output_key(last);
        let records = codec::split_output(&key, last, block).expect("block");
        assert_eq!(
            records.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [0, 1, 2]
        );
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
