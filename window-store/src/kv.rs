//! `KvStore`: the window store over any ordered key-value backend with atomic batches.
//!
//! The memory, sled and Redis stores are this one type over three backends, so they share the
//! layout, the codec and the recovery code, and the conformance suite checks them the same way.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use window_core::{ClosedWindow, EngineSnapshot, Payload, WindowKey, WindowSnapshot};

use crate::backend::{KvBackend, KvOp};
use crate::codec::{
    self, GROUP_PREFIX, Header, LOG_START_KEY, META_KEY, Meta, Payloads, REQUEST_PREFIX,
    StoredPayload, WINDOW_PREFIX,
};
use crate::error::StoreError;
use crate::journal::{self, Journal, Policy};
use crate::journal_file::JournalFiles;
use crate::memory::MemoryBackend;
use crate::payload_log::{PayloadLog, PayloadRef};
use crate::store::{Batch, OutputRecord, Recovered, RememberedRequest, WindowStore};

/// The window store over a key-value backend.
#[derive(Debug)]
pub struct KvStore<B> {
    backend: B,
    /// The meta record as last committed (read once at recovery).
    meta: Option<Meta>,
    /// The oldest seq the output log keeps (its retention's mark; read at recovery).
    log_start: u64,
    /// Where payload texts go, when the store keeps them apart from its records.
    payloads: Option<LoggedPayloads>,
    /// With a journal, each batch is one record, compacted in the background (see `journal`).
    journal: Option<Journal>,
    /// During a recovery that found journal records: the layout with them applied, in memory
    /// (recovery reads it instead of the backend, and writes nothing).
    overlay: Option<MemoryBackend>,
}

impl<B> Drop for KvStore<B> {
    fn drop(&mut self) {
        // The compactor holds a handle on the backend: it finishes (and lets go) first.
        if let Some(journal) = &mut self.journal {
            journal.stop();
        }
    }
}

/// A payload log and what is in it of the open windows: per window, the payloads its chunks
/// refer to that have not fired yet, oldest first, each with where the log holds it. A fired
/// pane's payloads are found here by identity (the same allocation the engine fired), so its
/// output record refers to the text its chunks wrote instead of writing it again; a payload not
/// found here (it fired in the step that admitted it) is appended then. Holding the payload keeps
/// its allocation alive, so identity cannot be mistaken.
///
/// It also knows which segments of the log can still be read, so that the others are removed:
/// those holding a payload of an open window's pane (`open_refs`), and those an output record the
/// log still keeps refers to (`output_refs`, by the newest such record). The output records
/// written before this process opened the store are not read at recovery, so the segments that
/// existed then are kept until the log's start passes every record of that time.
#[derive(Debug)]
struct LoggedPayloads {
    log: PayloadLog,
    open: HashMap<WindowKey, VecDeque<(Payload, PayloadRef)>>,
    /// Within one commit: what `open` held of the windows the batch removed, so that a window
    /// removed and opened again in the same batch keeps both instances' payloads apart.
    retiring: HashMap<WindowKey, VecDeque<(Payload, PayloadRef)>>,
    /// Per segment: the payloads of `open` and `retiring` in it.
    open_refs: BTreeMap<u32, u64>,
    /// Per segment: the newest output record written by this process that refers to it.
    output_refs: BTreeMap<u32, u64>,
    /// The segment appended to when the store was opened: it and those before may be referred
    /// to by output records written before.
    opened_segment: u32,
    /// Every output record written before the store was opened is below this seq (set at the
    /// first commit, from the meta record).
    opened_next_seq: Option<u64>,
}

impl LoggedPayloads {
    /// Appends the payloads of a chunk, remembering them for when their pane fires.
    fn chunk(
        &mut self,
        window: &WindowKey,
        payloads: &[Option<Payload>],
    ) -> Result<Vec<Option<PayloadRef>>, StoreError> {
        let open = match self.open.get_mut(window) {
            Some(open) => open,
            None => self.open.entry(window.clone()).or_default(),
        };
        // Counted per run of one segment (a chunk's payloads lie in one or two), on every way out.
        let mut held = Run::new(&mut self.open_refs, hold);
        let mut refs = Vec::with_capacity(payloads.len());
        for p in payloads {
            refs.push(match p {
                Some(p) => {
                    let at = self.log.append(p)?;
                    open.push_back((Arc::clone(p), at));
                    held.add(at.segment);
                    Some(at)
                }
                None => None,
            });
        }
        Ok(refs)
    }

    /// Where the payloads of output record `seq`, a fired pane, are: those its chunks wrote, the
    /// rest appended now.
    fn fired(
        &mut self,
        seq: u64,
        window: &ClosedWindow,
    ) -> Result<Vec<Option<PayloadRef>>, StoreError> {
        let mut retiring = self.retiring.get_mut(&window.window);
        let mut open = self.open.get_mut(&window.window);
        let mut released = Run::new(&mut self.open_refs, release);
        let mut refs = Vec::with_capacity(window.payloads.len());
        'payloads: for p in &window.payloads {
            let Some(p) = p else {
                refs.push(None);
                continue;
            };
            for written in [retiring.as_mut(), open.as_mut()].into_iter().flatten() {
                if let Some((front, at)) = written.front()
                    && Arc::ptr_eq(front, p)
                {
                    let at = *at;
                    written.pop_front();
                    released.add(at.segment);
                    refs.push(Some(at));
                    continue 'payloads;
                }
            }
            refs.push(Some(self.log.append(p)?));
        }
        drop(released);
        // A pane's payloads lie in one segment or a few in a row: one entry per run of them.
        let mut last = None;
        for at in refs.iter().flatten() {
            if last != Some(at.segment) {
                self.output_refs.insert(at.segment, seq);
                last = Some(at.segment);
            }
        }
        Ok(refs)
    }

    /// The end of a commit: what the removed windows held and did not fire is referred to no
    /// more.
    fn retired(&mut self) {
        for (_, written) in self.retiring.drain() {
            let mut released = Run::new(&mut self.open_refs, release);
            for (_, at) in written {
                released.add(at.segment);
            }
        }
    }

    /// Removes the closed segments nothing readable refers to once the output log starts at
    /// `log_start` (durably: call after a sync). A segment that cannot be removed is left.
    fn remove_unreferenced(&mut self, log_start: u64) {
        let before_open_dropped = self.opened_next_seq.is_some_and(|next| log_start >= next);
        let dead: Vec<u32> = self
            .log
            .closed()
            .filter(|s| {
                !self.open_refs.contains_key(s)
                    && self.output_refs.get(s).is_none_or(|&seq| seq < log_start)
                    && (*s > self.opened_segment || before_open_dropped)
            })
            .collect();
        for segment in dead {
            // A failure leaves the file, found again (and removed) by a later process.
            let _ = self.log.remove(segment);
            self.output_refs.remove(&segment);
        }
    }
}

/// `n` payloads of `segment` more are referred to.
fn hold(refs: &mut BTreeMap<u32, u64>, segment: u32, n: u64) {
    *refs.entry(segment).or_default() += n;
}

/// `n` payloads of `segment` less are referred to.
fn release(refs: &mut BTreeMap<u32, u64>, segment: u32, n: u64) {
    if let Some(count) = refs.get_mut(&segment) {
        *count -= n;
        if *count == 0 {
            refs.remove(&segment);
        }
    }
}

/// Payloads held or released one by one, counted into the per-segment map once per run of one
/// segment (and what is counted when it is dropped, so an early return counts too): a map
/// update per run instead of per payload, on the driver's hot path.
struct Run<'a> {
    refs: &'a mut BTreeMap<u32, u64>,
    apply: fn(&mut BTreeMap<u32, u64>, u32, u64),
    segment: u32,
    n: u64,
}

impl<'a> Run<'a> {
    fn new(refs: &'a mut BTreeMap<u32, u64>, apply: fn(&mut BTreeMap<u32, u64>, u32, u64)) -> Self {
        Run {
            refs,
            apply,
            segment: 0,
            n: 0,
        }
    }

    fn add(&mut self, segment: u32) {
        if self.n > 0 && segment != self.segment {
            (self.apply)(self.refs, self.segment, self.n);
            self.n = 0;
        }
        self.segment = segment;
        self.n += 1;
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            (self.apply)(self.refs, self.segment, self.n);
        }
    }
}

impl<B: KvBackend> KvStore<B> {
    /// A store over `backend`.
    pub fn new(backend: B) -> KvStore<B> {
        KvStore {
            backend,
            meta: None,
            log_start: 0,
            payloads: None,
            journal: None,
            overlay: None,
        }
    }

    /// The store, writing each batch as one journal record that a background thread compacts
    /// into the layout (see the `journal` module). The backend must be able to give the
    /// compactor a handle of its own ([`KvBackend::twin`]); without one, the first commit fails
    /// and says so (sled and Redis can; the memory store is opened without a journal).
    pub fn with_journal(mut self, policy: Policy) -> KvStore<B> {
        self.journal = Some(Journal::new(policy));
        self
    }

    /// [`with_journal`](Self::with_journal), the records in `files` instead of the backend (sled:
    /// see the `journal_file` module). A sync then syncs the files; the backend is synced by the
    /// compactor after each round.
    pub fn with_journal_files(mut self, policy: Policy, files: JournalFiles) -> KvStore<B> {
        self.journal = Some(Journal::in_files(policy, files));
        self
    }

    /// Waits until every committed batch is compacted into the layout (with a journal; at once
    /// without one). What readers of the backend's own records (a Redis client following the
    /// output Stream) see then is every committed batch.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        match &self.journal {
            Some(journal) => journal.drain(),
            None => Ok(()),
        }
    }

    /// The store, keeping payload texts in `log` (each written once) and records referring to
    /// them, instead of in the records.
    pub fn with_payload_log(mut self, log: PayloadLog) -> KvStore<B> {
        self.payloads = Some(LoggedPayloads {
            opened_segment: log.segment(),
            log,
            open: HashMap::new(),
            retiring: HashMap::new(),
            open_refs: BTreeMap::new(),
            output_refs: BTreeMap::new(),
            opened_next_seq: None,
        });
        self
    }

    /// Reads a payload a record refers to.
    fn resolve(&self, at: &PayloadRef) -> Result<Payload, StoreError> {
        match &self.payloads {
            Some(logged) => logged.log.read(at),
            None => Err(StoreError::Backend(
                "a record refers to the payload log, which this store does not have (a sled data directory's records read through another backend?)"
                    .to_owned(),
            )),
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
            let page = self.source().scan(&prefix, &start, 4096)?;
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

    /// A recovered window with the payloads of its current pane (those of panes that fired
    /// since are in their output records; nothing reads them here again), each read from the
    /// payload log when its chunk refers to it there, and remembered as written.
    fn recovered_window(
        &mut self,
        mut snap: WindowSnapshot,
        stored: Vec<Option<StoredPayload>>,
    ) -> Result<WindowSnapshot, StoreError> {
        let pane_start = snap.pane_start.min(stored.len());
        if stored[pane_start..].iter().all(Option::is_none) {
            return Ok(snap);
        }
        let mut payloads = vec![None; pane_start];
        let mut written = VecDeque::new();
        for stored in stored.into_iter().skip(pane_start) {
            payloads.push(match stored {
                None => None,
                Some(StoredPayload::Text(text)) => Some(text),
                Some(StoredPayload::At(at)) => {
                    let payload = self.resolve(&at)?;
                    written.push_back((Arc::clone(&payload), at));
                    Some(payload)
                }
            });
        }
        if let Some(logged) = &mut self.payloads
            && !written.is_empty()
        {
            let mut held = Run::new(&mut logged.open_refs, hold);
            for (_, at) in &written {
                held.add(at.segment);
            }
            drop(held);
            logged.open.insert(snap.window.clone(), written);
        }
        snap.payloads = payloads;
        Ok(snap)
    }

    fn meta(&mut self) -> Result<Meta, StoreError> {
        if let Some(meta) = self.meta {
            return Ok(meta);
        }
        if self.journal.is_some() {
            // The meta record may be in the journal: recovery reads it, with the rest.
            self.recover()?;
            let meta = self.meta.unwrap_or_default();
            self.meta = Some(meta);
            return Ok(meta);
        }
        let meta = match self.backend.get(META_KEY)? {
            Some(value) => codec::decode_meta(META_KEY, &value)?,
            None => Meta::default(),
        };
        self.meta = Some(meta);
        Ok(meta)
    }

    /// Where recovery reads: the backend, or the overlay while there is one.
    fn source(&self) -> &dyn KvBackend {
        match &self.overlay {
            Some(overlay) => overlay,
            None => &self.backend,
        }
    }

    /// With a journal: lets the compactor catch up, reads the journal records the backend
    /// still holds, and when there are some, lays them over a copy of the layout in memory
    /// (`overlay`), which recovery then reads. Returns the windows the backend itself holds
    /// records of, when it listed them (for the compactor), or `None` when recovery's own list
    /// is the backend's.
    fn overlay_journal(&mut self) -> Result<Option<HashSet<Vec<u8>>>, StoreError> {
        let Some(journal) = &mut self.journal else {
            return Ok(None);
        };
        journal.settle()?;
        let leftovers = journal.leftovers(&self.backend)?;
        if leftovers.is_empty() {
            return Ok(None);
        }
        let mut overlay = MemoryBackend::default();
        let mut stored = HashSet::new();
        let mut copied = Vec::new();
        for key in [META_KEY, LOG_START_KEY] {
            if let Some(value) = self.backend.get(key)? {
                copied.push(KvOp::Put(key.to_vec(), value));
            }
        }
        for prefix in [WINDOW_PREFIX, REQUEST_PREFIX, GROUP_PREFIX] {
            let prefix = [prefix];
            let mut start = prefix.to_vec();
            loop {
                let page = self.backend.scan(&prefix, &start, 4096)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                start = last.clone();
                start.push(0);
                for (key, value) in page {
                    if key[0] == WINDOW_PREFIX {
                        let (window, _) = codec::decode_chunk_key(&key)?;
                        stored.insert(codec::window_prefix(&window));
                    }
                    copied.push(KvOp::Put(key, value));
                }
            }
        }
        overlay.apply(copied)?;
        overlay.apply(journal::compaction(leftovers, &mut None)?)?;
        self.overlay = Some(overlay);
        Ok(Some(stored))
    }
}

impl<B: KvBackend> WindowStore for KvStore<B> {
    fn recover(&mut self) -> Result<Option<Recovered>, StoreError> {
        let listed = self.overlay_journal()?;
        let recovered = self.recover_layout();
        self.overlay = None;
        let recovered = recovered?;
        if let Some(journal) = &mut self.journal {
            journal.stored_windows(match (listed, &recovered) {
                (Some(listed), _) => listed,
                (None, Some(recovered)) => recovered
                    .snapshot
                    .windows
                    .iter()
                    .map(|w| codec::window_prefix(&w.window))
                    .collect(),
                // Every batch writes the meta record: without it, the store holds no window.
                (None, None) => HashSet::new(),
            });
        }
        Ok(recovered)
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        self.commit_batch(batch)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.sync_all()
    }

    fn check_writer(&mut self) -> Result<(), StoreError> {
        self.backend.check_writer()
    }

    fn read_output(&self, from: u64, limit: usize) -> Result<Vec<OutputRecord>, StoreError> {
        self.read_log(from, limit)
    }
}

impl<B: KvBackend> KvStore<B> {
    /// Recovery proper, from [`Self::source`].
    fn recover_layout(&mut self) -> Result<Option<Recovered>, StoreError> {
        let Some(value) = self.source().get(META_KEY)? else {
            return Ok(None);
        };
        let meta = codec::decode_meta(META_KEY, &value)?;
        self.meta = Some(meta);
        let mut windows = Vec::new();
        // The window being read, and its payloads as its chunks hold them.
        let mut current: Option<(WindowSnapshot, Vec<Option<StoredPayload>>)> = None;
        let prefix = [WINDOW_PREFIX];
        let mut start = prefix.to_vec();
        loop {
            let page = self.source().scan(&prefix, &start, 4096)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            let mut next = last.clone();
            next.push(0);
            for (key, value) in &page {
                let (window, first_index) = codec::decode_chunk_key(key)?;
                let (snap, stored) = match &mut current {
                    Some((snap, stored)) if snap.window == window => (snap, stored),
                    _ => {
                        if let Some((snap, stored)) = current.take() {
                            windows.push(self.recovered_window(snap, stored)?);
                        }
                        let fresh = WindowSnapshot {
                            window,
                            ids: Vec::new(),
                            payloads: Vec::new(),
                            pane_start: 0,
                            aggregate: None,
                            pane_opened_at: None,
                        };
                        let (snap, stored) = current.insert((fresh, Vec::new()));
                        (snap, stored)
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
                    stored.resize(snap.ids.len(), None);
                    stored.extend(payloads);
                } else if !stored.is_empty() {
                    stored.resize(snap.ids.len() + ids.len(), None);
                }
                if snap.ids.is_empty() {
                    // A window's first chunk (often its only one) moves in without a copy.
                    snap.ids = ids;
                } else {
                    snap.ids.extend(ids);
                }
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
        if let Some((snap, stored)) = current.take() {
            windows.push(self.recovered_window(snap, stored)?);
        }
        // Windows come out by end; the engine's snapshot order is (start, size, key).
        windows.sort_by(|a, b| a.window.cmp(&b.window));
        let requests = self.recover_requests()?;
        let groups = self.read_all(GROUP_PREFIX, codec::decode_group)?;
        let log_start = match self.source().get(LOG_START_KEY)? {
            None => 0,
            Some(value) => u64::from_be_bytes(value.as_slice().try_into().map_err(|_| {
                StoreError::corrupt(LOG_START_KEY, "the log start is not 8 bytes".to_owned())
            })?),
        };
        self.log_start = log_start;
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
            log_start,
        }))
    }

    fn commit_batch(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let mut meta = self.meta()?;
        if let Some(logged) = &mut self.payloads {
            logged.opened_next_seq.get_or_insert(meta.next_seq);
        }
        let mut ops = Vec::with_capacity(
            2 + batch.dirty.removed.len()
                + 2 * batch.dirty.windows.len()
                + batch.fired.len()
                + batch.requests.len(),
        );
        for window in &batch.dirty.removed {
            ops.push(KvOp::DeletePrefix(codec::window_prefix(window)));
        }
        if let Some(logged) = &mut self.payloads {
            // A removed window's payloads are found in `retiring` by its last panes' records;
            // an instance opened again in this batch starts afresh in `open`.
            for window in &batch.dirty.removed {
                if let Some(written) = logged.open.remove(window) {
                    logged.retiring.insert(window.clone(), written);
                }
            }
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
            let value = match &mut self.payloads {
                Some(logged) if !delta.payloads.is_empty() => {
                    let refs = logged.chunk(&delta.window, &delta.payloads)?;
                    codec::encode_chunk(&header, &delta.appended, Payloads::Refs(&refs))
                }
                _ => {
                    codec::encode_chunk(&header, &delta.appended, Payloads::Texts(&delta.payloads))
                }
            };
            ops.push(KvOp::Put(
                codec::chunk_key(&delta.window, delta.first_index as u64),
                value,
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
            let payloads = &record.window.payloads;
            let value = match &mut self.payloads {
                Some(logged) if !payloads.is_empty() => {
                    let refs = logged.fired(record.seq, &record.window)?;
                    codec::encode_output(record, Payloads::Refs(&refs))
                }
                _ => codec::encode_output(record, Payloads::Texts(payloads)),
            };
            ops.push(KvOp::Append(record.seq, value));
        }
        if let Some(logged) = &mut self.payloads {
            logged.retired();
            // The texts are durable before any record that refers to them can be.
            logged.log.write_durable()?;
        }
        meta.max_event_time = batch.dirty.max_event_time;
        meta.watermark = batch.dirty.watermark;
        meta.counters = batch.dirty.counters;
        ops.push(KvOp::Put(META_KEY.to_vec(), codec::encode_meta(&meta)));
        // The retention: the mark first (what reads obey), then the records below it go.
        let log_start = match batch.trim_log_below {
            Some(below) if below > self.log_start && below < meta.next_seq => {
                ops.push(KvOp::Put(
                    LOG_START_KEY.to_vec(),
                    below.to_be_bytes().to_vec(),
                ));
                ops.push(KvOp::TrimLog(below));
                below
            }
            _ => self.log_start,
        };
        match &mut self.journal {
            Some(journal) => journal.commit(&mut self.backend, ops)?,
            None => self.backend.apply(ops)?,
        }
        self.meta = Some(meta);
        self.log_start = log_start;
        Ok(())
    }

    fn sync_all(&mut self) -> Result<(), StoreError> {
        self.sync_records()?;
        // Every batch committed is durable now, its retention's mark too: the payload segments
        // only the dropped records referred to can go.
        if let Some(logged) = &mut self.payloads {
            logged.remove_unreferenced(self.log_start);
        }
        Ok(())
    }

    fn sync_records(&mut self) -> Result<(), StoreError> {
        if let Some(journal) = &mut self.journal {
            journal.check()?;
            if let Some(synced) = journal.sync_files() {
                return synced;
            }
        }
        let synced = self.backend.sync();
        if let (Err(_), Some(journal)) = (&synced, &self.journal) {
            journal.abandon();
        }
        synced
    }

    fn read_log(&self, from: u64, limit: usize) -> Result<Vec<OutputRecord>, StoreError> {
        if from < self.log_start {
            return Err(StoreError::Trimmed {
                from,
                oldest: self.log_start,
            });
        }
        // Records not compacted yet first: every committed record below the lowest of them is
        // in the backend's log (the compactor forgets a record only once it is there).
        let (pending, lowest) = match &self.journal {
            Some(journal) => journal.outputs(from, limit),
            None => (Vec::new(), None),
        };
        let below = lowest.unwrap_or(u64::MAX);
        let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut next = from;
        // A log value holds one record or a block of them: read a few values at a time.
        while next < below && records.len() < limit {
            let page = self
                .backend
                .read_log(next, (limit - records.len()).min(64))?;
            if page.is_empty() {
                break;
            }
            for (key, value) in &page {
                let last = codec::decode_output_key(key)?;
                for (seq, record) in codec::split_output(key, last, value)? {
                    if seq >= next && seq < below {
                        records.push((seq, record.to_vec()));
                    }
                }
                next = next.max(last.saturating_add(1));
            }
        }
        records.extend(pending);
        records.truncate(limit);
        let resolve = |at: &PayloadRef| self.resolve(at);
        records
            .iter()
            .map(|(seq, value)| codec::decode_output(&codec::output_key(*seq), value, &resolve))
            .collect()
    }
}

/// A window store in memory. `sync` is a no-op: nothing survives the process.
pub type MemoryStore = KvStore<MemoryBackend>;

impl MemoryStore {
    /// An empty memory store.
    pub fn in_memory() -> MemoryStore {
        KvStore::new(MemoryBackend::default())
    }
}
