//! `KvStore`: the window store over any ordered key-value backend with atomic batches.
//!
//! The memory and sled stores are this one type over two backends, so they share the layout,
//! the codec and the recovery code, and the conformance suite checks both the same way.

use window_core::{EngineSnapshot, WindowSnapshot};

use crate::codec::{
    self, GROUP_PREFIX, Header, META_KEY, Meta, OUTPUT_PREFIX, REQUEST_PREFIX, WINDOW_PREFIX,
};
use crate::error::StoreError;
use crate::store::{Batch, OutputRecord, Recovered, RememberedRequest, WindowStore};

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
    /// Append the encoded output record numbered `seq` to the output log. The log is
    /// append-only: if it already holds `seq`, the whole batch is refused with
    /// [`StoreError::InvalidBatch`]. Ordered key-value backends keep it as the key
    /// `codec::output_key(seq)`; Redis keeps it in a Stream.
    Append(u64, Vec<u8>),
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
        }
    }
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

    /// See [`WindowStore::check_writer`].
    fn check_writer(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The output log from record `from` on, at most `limit`, in order, as
    /// `(codec::output_key(seq), encoded record)`.
    fn read_log(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.scan(&[OUTPUT_PREFIX], &codec::output_key(from), limit)
    }
}

/// The window store over a key-value backend.
#[derive(Debug)]
pub struct KvStore<B> {
    backend: B,
    /// The meta record as last committed (read once at recovery).
    meta: Option<Meta>,
}

impl<B: KvBackend> KvStore<B> {
    /// A store over `backend`.
    pub fn new(backend: B) -> KvStore<B> {
        KvStore {
            backend,
            meta: None,
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, to change its settings (the Redis backend's fencing epoch).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Every remembered request, in order of number.
    fn recover_requests(&self) -> Result<Vec<RememberedRequest>, StoreError> {
        let mut requests = self.read_all(REQUEST_PREFIX, codec::decode_request)?;
        requests.sort_by_key(|r| r.n);
        Ok(requests)
    }

    /// Every record under `prefix`, decoded, in key order.
    fn read_all<T>(
        &self,
        prefix: u8,
        decode: impl Fn(&[u8], &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let prefix = [prefix];
        let mut start = prefix.to_vec();
        let mut records = Vec::new();
        loop {
            let page = self.backend.scan(&prefix, &start, 4096)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            start = last.clone();
            start.push(0);
            for (key, value) in &page {
                records.push(decode(key, value)?);
            }
        }
        Ok(records)
    }

    fn meta(&mut self) -> Result<Meta, StoreError> {
        if let Some(meta) = self.meta {
            return Ok(meta);
        }
        let meta = match self.backend.get(META_KEY)? {
            Some(value) => codec::decode_meta(META_KEY, &value)?,
            None => Meta::default(),
        };
        self.meta = Some(meta);
        Ok(meta)
    }
}

impl<B: KvBackend> WindowStore for KvStore<B> {
    fn recover(&mut self) -> Result<Option<Recovered>, StoreError> {
        let Some(value) = self.backend.get(META_KEY)? else {
            return Ok(None);
        };
        let meta = codec::decode_meta(META_KEY, &value)?;
        self.meta = Some(meta);
        let mut windows = Vec::new();
        let mut current: Option<WindowSnapshot> = None;
        let prefix = [WINDOW_PREFIX];
        let mut start = prefix.to_vec();
        loop {
            let page = self.backend.scan(&prefix, &start, 4096)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            let mut next = last.clone();
            next.push(0);
            for (key, value) in &page {
                let (window, first_index) = codec::decode_chunk_key(key)?;
                let snap = match &mut current {
                    Some(snap) if snap.window == window => snap,
                    _ => {
                        windows.extend(current.take());
                        current.insert(WindowSnapshot {
                            window,
                            ids: Vec::new(),
                            payloads: Vec::new(),
                            pane_start: 0,
                            aggregate: None,
                            pane_opened_at: None,
                        })
                    }
                };
                if first_index != snap.ids.len() as u64 {
                    return Err(StoreError::corrupt(
                        key,
                        format!(
                            "id chunk starts at {first_index}, expected {}",
                            snap.ids.len()
                        ),
                    ));
                }
                let (header, (ids, payloads)): (Header, _) = codec::decode_chunk(key, value)?;
                if !payloads.is_empty() {
                    // Payloads line up with the ids: the chunks before had none.
                    snap.payloads.resize(snap.ids.len(), None);
                    snap.payloads.extend(payloads);
                } else if !snap.payloads.is_empty() {
                    snap.payloads.resize(snap.ids.len() + ids.len(), None);
                }
                snap.ids.extend(ids);
                if header.id_count != snap.ids.len() as u64 {
                    return Err(StoreError::corrupt(
                        key,
                        format!(
                            "chunk counts {} ids, the chunks hold {}",
                            header.id_count,
                            snap.ids.len()
                        ),
                    ));
                }
                // The last chunk's header is the window's.
                snap.pane_start = header.pane_start as usize;
                snap.aggregate = header.aggregate;
                snap.pane_opened_at = header.pane_opened_at;
            }
            start = next;
        }
        windows.extend(current);
        for snap in &mut windows {
            keep_pane_payloads(snap);
        }
        // Windows come out by end; the engine's snapshot order is (start, size, key).
        windows.sort_by(|a, b| a.window.cmp(&b.window));
        let requests = self.recover_requests()?;
        let groups = self.read_all(GROUP_PREFIX, codec::decode_group)?;
        Ok(Some(Recovered {
            snapshot: EngineSnapshot {
                windows,
                max_event_time: meta.max_event_time,
                watermark: meta.watermark,
                counters: meta.counters,
            },
            next_seq: meta.next_seq,
            requests,
            groups,
        }))
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let mut meta = self.meta()?;
        let mut ops = Vec::with_capacity(
            2 + batch.dirty.removed.len()
                + 2 * batch.dirty.windows.len()
                + batch.fired.len()
                + batch.requests.len(),
        );
        for window in &batch.dirty.removed {
            ops.push(KvOp::DeletePrefix(codec::window_prefix(window)));
        }
        // Every removal before every write: a window's prefix covers no other window's keys
        // (the key is length-prefixed), so this is the order of window by window, and it gives
        // backends long runs of one kind of op (Redis makes a run one call).
        for delta in &batch.dirty.windows {
            if delta.first_index == 0 {
                // A window that (re)opened in this step: nothing of an earlier one may remain.
                ops.push(KvOp::DeletePrefix(codec::window_prefix(&delta.window)));
            }
        }
        for delta in &batch.dirty.windows {
            // One record per touched window: the appended ids with the window's header. A step
            // that appended nothing rewrites an empty chunk at the current count (see codec).
            let header = Header {
                pane_start: delta.pane_start as u64,
                id_count: (delta.first_index + delta.appended.len()) as u64,
                aggregate: delta.aggregate,
                pane_opened_at: delta.pane_opened_at,
            };
            ops.push(KvOp::Put(
                codec::chunk_key(&delta.window, delta.first_index as u64),
                codec::encode_chunk(&header, &delta.appended, &delta.payloads),
            ));
        }
        for group in &batch.groups {
            ops.push(KvOp::Put(
                codec::group_key(&group.name),
                codec::encode_group(group),
            ));
        }
        for request in &batch.requests {
            ops.push(KvOp::Put(
                codec::request_key(request.n),
                codec::encode_request(request),
            ));
        }
        for record in &batch.fired {
            if record.seq != meta.next_seq {
                return Err(StoreError::InvalidBatch(format!(
                    "fired window has seq {}, the output log expects {}",
                    record.seq, meta.next_seq
                )));
            }
            meta.next_seq += 1;
            ops.push(KvOp::Append(record.seq, codec::encode_output(record)));
        }
        meta.max_event_time = batch.dirty.max_event_time;
        meta.watermark = batch.dirty.watermark;
        meta.counters = batch.dirty.counters;
        ops.push(KvOp::Put(META_KEY.to_vec(), codec::encode_meta(&meta)));
        self.backend.apply(ops)?;
        self.meta = Some(meta);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.backend.sync()
    }

    fn check_writer(&mut self) -> Result<(), StoreError> {
        self.backend.check_writer()
    }

    fn read_output(&self, from: u64, limit: usize) -> Result<Vec<OutputRecord>, StoreError> {
        let page = self.backend.read_log(from, limit)?;
        page.iter()
            .map(|(key, value)| codec::decode_output(key, value))
            .collect()
    }
}

/// Keeps the payloads of the current pane only, as the engine's snapshot holds them: the
/// chunks keep those of panes that fired since, which nothing reads again.
fn keep_pane_payloads(snap: &mut WindowSnapshot) {
    let pane_start = snap.pane_start.min(snap.payloads.len());
    for payload in &mut snap.payloads[..pane_start] {
        *payload = None;
    }
    if snap.payloads.iter().all(Option::is_none) {
        snap.payloads = Vec::new();
    }
}
