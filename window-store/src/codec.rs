//! The versioned, compact encoding of every record, and the key layout.
//!
//! One ordered keyspace:
//! - `M`: the meta record (next output seq, max event time, watermark, counters);
//! - `W` + window + `C` + first index: a chunk of a window's ids, as appended in one write, with
//!   the window's header as of that write (pane start, id count, aggregate, pane open time): the
//!   last chunk's header is the window's. A write that changes only the header rewrites an empty
//!   chunk at the current id count, which the next append then overwrites.
//! - `O` + seq: one output record.
//! - `R` + slot: a remembered request (its number, id and outcome); slot = number modulo
//!   `REMEMBERED_REQUESTS`, so the newest overwrite the oldest and the space stays bounded.
//! - `G` + name: a consumer group's state (first seq, acknowledged below, the acknowledged seqs
//!   above that, the next seq never delivered).
//!
//! A window is `end, start, size` (order-preserving big-endian) then its key with a length, so
//! a range scan from `W` meets windows in order of their end (what is due first) and a window's
//! records share a prefix no other window's records start with. Every value starts with a
//! version byte; a reader that meets a version it does not know refuses it.
//!
//! Versions: 1 is every record as first written. A chunk or an output record whose events carry
//! payloads is written as version 2: version 1's fields, then the payloads (a count, then per id
//! a flag and the payload's JSON text). Records without payloads are still written as version 1,
//! byte for byte as before, so a store without payloads stays readable by older builds.
//! Version 3 is version 2 with each payload's text replaced by where the store's payload log
//! holds it (segment, offset, length, CRC-32; see `payload_log`): what the sled store writes.

use window_core::{
    Aggregate, CloseReason, ClosedWindow, Counters, EventId, Payload, SizeMs, Timestamp, WindowKey,
};

use crate::error::StoreError;
use crate::payload_log::PayloadRef;
use crate::store::{
    GroupRecord, OutputRecord, REMEMBERED_REQUESTS, RememberedRequest, RequestOutcome,
};

/// The version byte of every value without payloads.
pub const VERSION: u8 = 1;
/// The version byte of a chunk or an output record with payloads.
pub const VERSION_PAYLOADS: u8 = 2;
/// The version byte of a chunk or an output record whose payloads are in the payload log.
pub const VERSION_PAYLOAD_REFS: u8 = 3;
/// The version byte of a remembered request with its fingerprint.
pub const VERSION_FINGERPRINT: u8 = 2;

/// The payloads a record is written with: their texts, or where the payload log holds them. One
/// per id (`None` for an event without one), or empty when no event has one.
#[derive(Clone, Copy, Debug)]
pub enum Payloads<'a> {
    Texts(&'a [Option<Payload>]),
    Refs(&'a [Option<PayloadRef>]),
}

/// A payload as a record holds it.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredPayload {
    Text(Payload),
    At(PayloadRef),
}

/// Key of the meta record.
pub const META_KEY: &[u8] = b"M";
/// Key of where the output log starts (the retention's mark; absent: seq 0), a big-endian u64.
pub const LOG_START_KEY: &[u8] = b"L";
/// Prefix of window records.
pub const WINDOW_PREFIX: u8 = b'W';
/// Prefix of output records.
pub const OUTPUT_PREFIX: u8 = b'O';
/// Prefix of remembered requests.
pub const REQUEST_PREFIX: u8 = b'R';
/// Prefix of consumer groups.
pub const GROUP_PREFIX: u8 = b'G';
const CHUNK: u8 = b'C';

/// The meta record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub next_seq: u64,
    pub max_event_time: Option<Timestamp>,
    pub watermark: Option<Timestamp>,
    pub counters: Counters,
}

/// A window's header, as carried by each of its chunks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Header {
    pub pane_start: u64,
    pub id_count: u64,
    pub aggregate: Option<Aggregate>,
    pub pane_opened_at: Option<Timestamp>,
}

// ---- keys ----

/// The prefix shared by all records of `window`.
pub fn window_prefix(window: &WindowKey) -> Vec<u8> {
    window_prefix_with_room(window, 0)
}

/// [`window_prefix`] in a Vec with room for `more` bytes after it: one allocation where the
/// caller appends (a chunk key), and no slack in the prefixes that are kept.
fn window_prefix_with_room(window: &WindowKey, more: usize) -> Vec<u8> {
    let key_bytes = window.key.as_ref().map_or(0, |k| 4 + k.len());
    let mut key = Vec::with_capacity(1 + 3 * 8 + 1 + key_bytes + more);
    key.push(WINDOW_PREFIX);
    put_ordered_i64(&mut key, window.end().as_millis());
    put_ordered_i64(&mut key, window.start.as_millis());
    put_ordered_i64(&mut key, window.size.get());
    match &window.key {
        None => key.push(0),
        Some(k) => {
            key.push(1);
            key.extend_from_slice(&u32::try_from(k.len()).unwrap_or(u32::MAX).to_be_bytes());
            key.extend_from_slice(k.as_bytes());
        }
    }
    key
}

pub fn chunk_key(window: &WindowKey, first_index: u64) -> Vec<u8> {
    // The tag and the first index.
    let mut key = window_prefix_with_room(window, 1 + 8);
    push_chunk_tag(&mut key, first_index);
    key
}

/// [`chunk_key`] of the window whose key prefix ([`window_prefix`]) is `prefix`.
pub fn chunk_key_under(prefix: &[u8], first_index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 1 + 8);
    key.extend_from_slice(prefix);
    push_chunk_tag(&mut key, first_index);
    key
}

fn push_chunk_tag(key: &mut Vec<u8>, first_index: u64) {
    key.push(CHUNK);
    key.extend_from_slice(&first_index.to_be_bytes());
}

pub fn output_key(seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(OUTPUT_PREFIX);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The key of remembered request number `n`: its slot in the bounded ring.
pub fn request_key(n: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(REQUEST_PREFIX);
    key.extend_from_slice(&(n % REMEMBERED_REQUESTS).to_be_bytes());
    key
}

/// Splits a chunk key into its window and the index of the chunk's first id.
pub fn decode_chunk_key(key: &[u8]) -> Result<(WindowKey, u64), StoreError> {
    let mut r = Reader::new(key);
    if r.u8()? != WINDOW_PREFIX {
        return Err(StoreError::corrupt(key, "not a window key"));
    }
    let end = r.ordered_i64()?;
    let start = r.ordered_i64()?;
    let size = r.ordered_i64()?;
    let size = SizeMs::new(size).map_err(|e| StoreError::corrupt(key, e.to_string()))?;
    if start.checked_add(size.get()) != Some(end) {
        return Err(StoreError::corrupt(key, "window end is not start + size"));
    }
    let window_key = match r.u8()? {
        0 => None,
        1 => {
            let len = u32::from_be_bytes(r.array()?) as usize;
            let bytes = r.bytes(len)?;
            Some(
                std::str::from_utf8(bytes)
                    .map_err(|_| StoreError::corrupt(key, "window key is not UTF-8"))?
                    .into(),
            )
        }
        other => return Err(StoreError::corrupt(key, format!("bad key flag {other}"))),
    };
    let first_index = match r.u8()? {
        CHUNK => u64::from_be_bytes(r.array()?),
        other => return Err(StoreError::corrupt(key, format!("bad record kind {other}"))),
    };
    r.finish()?;
    let window = WindowKey {
        start: Timestamp::from_millis(start),
        size,
        key: window_key,
    };
    Ok((window, first_index))
}

pub fn decode_output_key(key: &[u8]) -> Result<u64, StoreError> {
    match key {
        [OUTPUT_PREFIX, seq @ ..] => seq
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::corrupt(key, "output key is not 9 bytes")),
        _ => Err(StoreError::corrupt(key, "not an output key")),
    }
}

// ---- values ----

pub fn encode_meta(meta: &Meta) -> Vec<u8> {
    let mut out = vec![VERSION];
    put_varint(&mut out, meta.next_seq);
    put_opt_ts(&mut out, meta.max_event_time);
    put_opt_ts(&mut out, meta.watermark);
    for n in [
        meta.counters.accepted,
        meta.counters.duplicates,
        meta.counters.late,
        meta.counters.fired,
    ] {
        put_varint(&mut out, n);
    }
    out
}

pub fn decode_meta(key: &[u8], value: &[u8]) -> Result<Meta, StoreError> {
    let mut r = Reader::versioned(key, value, VERSION)?;
    let meta = Meta {
        next_seq: r.varint()?,
        max_event_time: r.opt_ts()?,
        watermark: r.opt_ts()?,
        counters: Counters {
            accepted: r.varint()?,
            duplicates: r.varint()?,
            late: r.varint()?,
            fired: r.varint()?,
        },
    };
    r.finish()?;
    Ok(meta)
}

/// The ids of a chunk and their payloads (one per id, or empty when none has one).
pub type ChunkIds = (Vec<EventId>, Vec<Option<StoredPayload>>);

/// A chunk: the window's header, then the ids appended from the chunk's first index on, then
/// their payloads when any has one.
pub fn encode_chunk(header: &Header, ids: &[EventId], payloads: Payloads<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + ids.len() * 4 + payload_bytes(payloads));
    out.push(version_for(payloads));
    put_varint(&mut out, header.pane_start);
    put_varint(&mut out, header.id_count);
    put_opt_aggregate(&mut out, header.aggregate);
    put_opt_ts(&mut out, header.pane_opened_at);
    put_ids(&mut out, ids);
    put_payloads(&mut out, payloads);
    out
}

/// A chunk whose payloads are as a record holds them ([`decode_chunk`]'s form), or `None` when
/// they mix texts and references (no record written by one store does).
pub fn encode_chunk_stored(
    header: &Header,
    ids: &[EventId],
    stored: &[Option<StoredPayload>],
) -> Option<Vec<u8>> {
    if stored
        .iter()
        .all(|p| !matches!(p, Some(StoredPayload::Text(_))))
    {
        let refs: Vec<Option<PayloadRef>> = stored
            .iter()
            .map(|p| match p {
                Some(StoredPayload::At(at)) => Some(*at),
                _ => None,
            })
            .collect();
        let refs = if refs.iter().all(Option::is_none) {
            Vec::new()
        } else {
            refs
        };
        return Some(encode_chunk(header, ids, Payloads::Refs(&refs)));
    }
    if stored
        .iter()
        .all(|p| !matches!(p, Some(StoredPayload::At(_))))
    {
        let texts: Vec<Option<Payload>> = stored
            .iter()
            .map(|p| match p {
                Some(StoredPayload::Text(text)) => Some(text.clone()),
                _ => None,
            })
            .collect();
        return Some(encode_chunk(header, ids, Payloads::Texts(&texts)));
    }
    None
}

/// A chunk's header alone (what a merge needs to know whether chunks follow each other).
pub fn decode_chunk_header(key: &[u8], value: &[u8]) -> Result<Header, StoreError> {
    let mut r = Reader::versioned(key, value, VERSION_PAYLOAD_REFS)?;
    Ok(Header {
        pane_start: r.varint()?,
        id_count: r.varint()?,
        aggregate: r.opt_aggregate()?,
        pane_opened_at: r.opt_ts()?,
    })
}

pub fn decode_chunk(key: &[u8], value: &[u8]) -> Result<(Header, ChunkIds), StoreError> {
    let mut r = Reader::versioned(key, value, VERSION_PAYLOAD_REFS)?;
    let header = Header {
        pane_start: r.varint()?,
        id_count: r.varint()?,
        aggregate: r.opt_aggregate()?,
        pane_opened_at: r.opt_ts()?,
    };
    let ids = r.ids()?;
    let payloads = r.payloads(ids.len())?;
    r.finish()?;
    if header.pane_start > header.id_count {
        return Err(StoreError::corrupt(key, "pane start beyond the id count"));
    }
    Ok((header, (ids, payloads)))
}

/// An output record, its payloads as `payloads` says (the window's own texts, or where the
/// payload log holds them).
pub fn encode_output(record: &OutputRecord, payloads: Payloads<'_>) -> Vec<u8> {
    let w = &record.window;
    let mut out = Vec::with_capacity(48 + w.ids.len() * 4 + payload_bytes(payloads));
    out.push(version_for(payloads));
    put_varint(&mut out, record.epoch);
    put_i64(&mut out, w.window.start.as_millis());
    put_i64(&mut out, w.window.size.get());
    match &w.window.key {
        None => out.push(0),
        Some(k) => {
            out.push(1);
            put_bytes(&mut out, k.as_bytes());
        }
    }
    out.push(reason_code(w.reason));
    put_opt_aggregate(&mut out, w.aggregate);
    put_ids(&mut out, &w.ids);
    put_payloads(&mut out, payloads);
    out
}

/// The first byte of an output block: several consecutive output records in one value, kept
/// under the key (or Stream id) of the last of them. Record versions are small numbers, so a
/// block is told from a single record by this byte.
pub const OUTPUT_BLOCK: u8 = 0xb0;

/// An output block of `records` (encoded output records of consecutive seqs, oldest first).
pub fn encode_output_block(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + records.iter().map(|r| r.len() + 3).sum::<usize>());
    out.push(OUTPUT_BLOCK);
    put_varint(&mut out, records.len() as u64);
    for record in records {
        put_bytes(&mut out, record);
    }
    out
}

/// The output records a log value holds, with their seqs: the value is one record, or a block
/// whose last record has seq `last`.
pub fn split_output<'a>(
    key: &'a [u8],
    last: u64,
    value: &'a [u8],
) -> Result<Vec<(u64, &'a [u8])>, StoreError> {
    if value.first() != Some(&OUTPUT_BLOCK) {
        return Ok(vec![(last, value)]);
    }
    let mut r = Reader {
        key,
        buf: &value[1..],
        version: VERSION,
    };
    let count = r.varint()?;
    if count == 0 || count - 1 > last {
        return Err(StoreError::corrupt(
            key,
            format!("an output block of {count} records ending at seq {last}"),
        ));
    }
    let first = last - (count - 1);
    let mut records = Vec::with_capacity(count.min(1 << 16) as usize);
    for seq in first..=last {
        let len = r.varint()?;
        let len = usize::try_from(len).map_err(|_| r.err("record length"))?;
        records.push((seq, r.bytes(len)?));
    }
    r.finish()?;
    Ok(records)
}

/// An output record; `resolve` reads a payload the record holds as a reference.
pub fn decode_output(
    key: &[u8],
    value: &[u8],
    resolve: &dyn Fn(&PayloadRef) -> Result<Payload, StoreError>,
) -> Result<OutputRecord, StoreError> {
    let seq = decode_output_key(key)?;
    let mut r = Reader::versioned(key, value, VERSION_PAYLOAD_REFS)?;
    let epoch = r.varint()?;
    let start = Timestamp::from_millis(r.i64()?);
    let size = SizeMs::new(r.i64()?).map_err(|e| StoreError::corrupt(key, e.to_string()))?;
    let window_key = match r.u8()? {
        0 => None,
        1 => Some(r.string()?.into()),
        other => return Err(StoreError::corrupt(key, format!("bad key flag {other}"))),
    };
    let reason = reason_from(r.u8()?).ok_or_else(|| StoreError::corrupt(key, "bad reason"))?;
    let aggregate = r.opt_aggregate()?;
    let ids = r.ids()?;
    let payloads = r
        .payloads(ids.len())?
        .into_iter()
        .map(|p| {
            p.map(|p| match p {
                StoredPayload::Text(text) => Ok(text),
                StoredPayload::At(at) => resolve(&at),
            })
            .transpose()
        })
        .collect::<Result<_, _>>()?;
    r.finish()?;
    Ok(OutputRecord {
        seq,
        epoch,
        window: ClosedWindow {
            window: WindowKey {
                start,
                size,
                key: window_key,
            },
            ids,
            payloads,
            aggregate,
            reason,
        },
    })
}

/// A remembered request: version 1 without a fingerprint, version 2 with one (after the outcome).
pub fn encode_request(request: &RememberedRequest) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + request.id.len());
    out.push(match request.fingerprint {
        None => VERSION,
        Some(_) => VERSION_FINGERPRINT,
    });
    put_varint(&mut out, request.n);
    put_bytes(&mut out, request.id.as_bytes());
    let (kind, numbers) = match request.outcome {
        RequestOutcome::Ingest {
            accepted,
            duplicates,
            late,
        } => (b'I', [accepted, duplicates, late]),
        RequestOutcome::Close { seq } => (b'C', [seq, 1, 0]),
        RequestOutcome::Flush { first_seq, count } => (b'F', [first_seq, count, 0]),
    };
    out.push(kind);
    for n in numbers {
        put_varint(&mut out, n);
    }
    if let Some(fingerprint) = request.fingerprint {
        out.extend_from_slice(&fingerprint.to_le_bytes());
    }
    out
}

pub fn decode_request(key: &[u8], value: &[u8]) -> Result<RememberedRequest, StoreError> {
    let mut r = Reader::versioned(key, value, VERSION_FINGERPRINT)?;
    let n = r.varint()?;
    let id = r.string()?.to_owned();
    let kind = r.u8()?;
    let [a, b, c] = [r.varint()?, r.varint()?, r.varint()?];
    let fingerprint = match r.version {
        VERSION => None,
        _ => Some(u64::from_le_bytes(r.array()?)),
    };
    r.finish()?;
    let outcome = match kind {
        b'I' => RequestOutcome::Ingest {
            accepted: a,
            duplicates: b,
            late: c,
        },
        b'C' => RequestOutcome::Close { seq: a },
        b'F' => RequestOutcome::Flush {
            first_seq: a,
            count: b,
        },
        other => {
            return Err(StoreError::corrupt(
                key,
                format!("unknown request outcome kind {other}"),
            ));
        }
    };
    if request_key(n) != key {
        return Err(StoreError::corrupt(
            key,
            format!("remembered request {n} is not in its slot"),
        ));
    }
    Ok(RememberedRequest {
        n,
        id,
        outcome,
        fingerprint,
    })
}

/// The key of consumer group `name`.
pub fn group_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(GROUP_PREFIX);
    key.extend_from_slice(name.as_bytes());
    key
}

pub fn encode_group(group: &GroupRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + group.acked.len() * 2);
    out.push(VERSION);
    put_varint(&mut out, group.first);
    put_varint(&mut out, group.acked_below);
    put_varint(&mut out, group.next);
    put_varint(&mut out, group.acked.len() as u64);
    // Ascending: each as its distance from the one before (from `acked_below`).
    let mut last = group.acked_below;
    for &seq in &group.acked {
        put_varint(&mut out, seq.saturating_sub(last));
        last = seq;
    }
    out
}

pub fn decode_group(key: &[u8], value: &[u8]) -> Result<GroupRecord, StoreError> {
    let name = match key {
        [GROUP_PREFIX, name @ ..] => std::str::from_utf8(name)
            .map_err(|_| StoreError::corrupt(key, "group name is not UTF-8"))?,
        _ => return Err(StoreError::corrupt(key, "not a group key")),
    };
    let mut r = Reader::versioned(key, value, VERSION)?;
    let (first, acked_below, next) = (r.varint()?, r.varint()?, r.varint()?);
    let n = usize::try_from(r.varint()?).map_err(|_| r.err("acked count"))?;
    let mut acked = Vec::with_capacity(n.min(value.len()));
    let mut last = acked_below;
    for _ in 0..n {
        last = last
            .checked_add(r.varint()?)
            .ok_or_else(|| r.err("acked seq"))?;
        acked.push(last);
    }
    r.finish()?;
    if acked_below > next || acked.last().is_some_and(|&seq| seq >= next) {
        return Err(StoreError::corrupt(
            key,
            "acknowledged seqs beyond the group's next seq",
        ));
    }
    Ok(GroupRecord {
        name: name.to_owned(),
        first,
        acked_below,
        acked,
        next,
    })
}

fn reason_code(reason: CloseReason) -> u8 {
    match reason {
        CloseReason::Length => 1,
        CloseReason::Time => 2,
        CloseReason::Watermark => 3,
        CloseReason::Close => 4,
        CloseReason::Flush => 5,
    }
}

fn reason_from(code: u8) -> Option<CloseReason> {
    Some(match code {
        1 => CloseReason::Length,
        2 => CloseReason::Time,
        3 => CloseReason::Watermark,
        4 => CloseReason::Close,
        5 => CloseReason::Flush,
        _ => return None,
    })
}

// ---- primitives ----

fn put_ordered_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint (as [`put_varint`] writes it) at the start of `buf`, which moves past it; `None`
/// when `buf` ends first or it runs over 64 bits.
pub(crate) fn take_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_opt_ts(out: &mut Vec<u8>, ts: Option<Timestamp>) {
    match ts {
        None => out.push(0),
        Some(ts) => {
            out.push(1);
            put_i64(out, ts.as_millis());
        }
    }
}

fn put_opt_aggregate(out: &mut Vec<u8>, agg: Option<Aggregate>) {
    match agg {
        None => out.push(0),
        Some(a) => {
            out.push(1);
            for v in [a.sum, a.min, a.max] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// About how many bytes `payloads` take in a record.
fn payload_bytes(payloads: Payloads<'_>) -> usize {
    match payloads {
        Payloads::Texts(texts) => texts
            .iter()
            .map(|p| 1 + p.as_ref().map_or(0, |t| t.len() + 5))
            .sum(),
        Payloads::Refs(refs) => refs.len() * 16,
    }
}

/// The version a record with these payloads is written as.
fn version_for(payloads: Payloads<'_>) -> u8 {
    match payloads {
        Payloads::Texts([]) | Payloads::Refs([]) => VERSION,
        Payloads::Texts(_) => VERSION_PAYLOADS,
        Payloads::Refs(_) => VERSION_PAYLOAD_REFS,
    }
}

/// The payload section of a version 2 or 3 record (nothing for version 1): a count, then per id
/// a flag and the text (version 2) or the reference (version 3).
fn put_payloads(out: &mut Vec<u8>, payloads: Payloads<'_>) {
    match payloads {
        Payloads::Texts([]) | Payloads::Refs([]) => {}
        Payloads::Texts(texts) => {
            put_varint(out, texts.len() as u64);
            for payload in texts {
                match payload {
                    None => out.push(0),
                    Some(text) => {
                        out.push(1);
                        put_bytes(out, text.as_bytes());
                    }
                }
            }
        }
        Payloads::Refs(refs) => {
            put_varint(out, refs.len() as u64);
            for at in refs {
                match at {
                    None => out.push(0),
                    Some(at) => {
                        out.push(1);
                        put_varint(out, u64::from(at.segment));
                        put_varint(out, at.offset);
                        put_varint(out, u64::from(at.len));
                        out.extend_from_slice(&at.crc.to_le_bytes());
                    }
                }
            }
        }
    }
}

fn put_ids(out: &mut Vec<u8>, ids: &[EventId]) {
    put_varint(out, ids.len() as u64);
    for id in ids {
        match id {
            EventId::Int(n) => {
                out.push(0);
                put_i64(out, *n);
            }
            EventId::Text(s) => {
                out.push(1);
                put_bytes(out, s.as_bytes());
            }
            EventId::Number(s) => {
                out.push(2);
                put_bytes(out, s.as_bytes());
            }
        }
    }
}

/// Reads primitives, turning every shortfall into a `Corrupt` error naming the key.
struct Reader<'a> {
    key: &'a [u8],
    buf: &'a [u8],
    /// The value's version byte.
    version: u8,
}

impl<'a> Reader<'a> {
    fn new(key: &'a [u8]) -> Reader<'a> {
        Reader {
            key,
            buf: key,
            version: VERSION,
        }
    }

    /// A reader of a value of a kind written in versions `VERSION..=newest`.
    fn versioned(key: &'a [u8], value: &'a [u8], newest: u8) -> Result<Reader<'a>, StoreError> {
        let mut r = Reader {
            key,
            buf: value,
            version: VERSION,
        };
        match r.u8()? {
            v if (VERSION..=newest).contains(&v) => {
                r.version = v;
                Ok(r)
            }
            v => Err(StoreError::corrupt(
                key,
                format!(
                    "unknown format version {v} (this build reads versions {VERSION} to {newest} of this record); use the window-node release that wrote it"
                ),
            )),
        }
    }

    fn err(&self, what: &str) -> StoreError {
        StoreError::corrupt(self.key, format!("truncated or malformed: {what}"))
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| self.err("byte"))?;
        self.buf = rest;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(self.err("bytes"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let bytes = self.bytes(N)?;
        bytes.try_into().map_err(|_| self.err("array"))
    }

    fn ordered_i64(&mut self) -> Result<i64, StoreError> {
        Ok((u64::from_be_bytes(self.array()?) ^ (1 << 63)) as i64)
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        take_varint(&mut self.buf).ok_or_else(|| self.err("varint"))
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn string(&mut self) -> Result<&'a str, StoreError> {
        let len = usize::try_from(self.varint()?).map_err(|_| self.err("length"))?;
        let bytes = self.bytes(len)?;
        std::str::from_utf8(bytes).map_err(|_| self.err("UTF-8 string"))
    }

    fn opt_ts(&mut self) -> Result<Option<Timestamp>, StoreError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(Timestamp::from_millis(self.i64()?))),
            _ => Err(self.err("optional timestamp flag")),
        }
    }

    fn opt_aggregate(&mut self) -> Result<Option<Aggregate>, StoreError> {
        match self.u8()? {
            0 => Ok(None),
            1 => {
                let mut f = || self.array().map(f64::from_le_bytes);
                Ok(Some(Aggregate {
                    sum: f()?,
                    min: f()?,
                    max: f()?,
                }))
            }
            _ => Err(self.err("optional aggregate flag")),
        }
    }

    fn ids(&mut self) -> Result<Vec<EventId>, StoreError> {
        let n = usize::try_from(self.varint()?).map_err(|_| self.err("id count"))?;
        // Never trust a count to size an allocation: each id takes at least two bytes.
        let mut ids = Vec::with_capacity(n.min(self.buf.len() / 2));
        for _ in 0..n {
            ids.push(match self.u8()? {
                0 => EventId::Int(self.i64()?),
                1 => EventId::Text(self.string()?.into()),
                2 => EventId::Number(self.string()?.into()),
                _ => return Err(self.err("id tag")),
            });
        }
        Ok(ids)
    }

    /// The payloads of `ids` ids: a version 2 or 3 record's payload section, nothing in
    /// version 1.
    fn payloads(&mut self, ids: usize) -> Result<Vec<Option<StoredPayload>>, StoreError> {
        if self.version == VERSION {
            return Ok(Vec::new());
        }
        let n = usize::try_from(self.varint()?).map_err(|_| self.err("payload count"))?;
        if n != ids {
            return Err(StoreError::corrupt(
                self.key,
                format!("{n} payloads for {ids} ids"),
            ));
        }
        let mut payloads = Vec::with_capacity(n.min(self.buf.len()));
        for _ in 0..n {
            payloads.push(match (self.u8()?, self.version) {
                (0, _) => None,
                (1, VERSION_PAYLOADS) => Some(StoredPayload::Text(self.string()?.into())),
                (1, _) => Some(StoredPayload::At(self.payload_ref()?)),
                _ => return Err(self.err("payload flag")),
            });
        }
        Ok(payloads)
    }

    fn payload_ref(&mut self) -> Result<PayloadRef, StoreError> {
        Ok(PayloadRef {
            segment: u32::try_from(self.varint()?).map_err(|_| self.err("payload segment"))?,
            offset: self.varint()?,
            len: u32::try_from(self.varint()?).map_err(|_| self.err("payload length"))?,
            crc: u32::from_le_bytes(self.array()?),
        })
    }

    fn finish(&self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(StoreError::corrupt(
                self.key,
                format!("{} unexpected trailing bytes", self.buf.len()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: i64, size: i64, key: Option<&str>) -> WindowKey {
        WindowKey {
            start: Timestamp::from_millis(start),
            size: SizeMs::new(size).unwrap(),
            key: key.map(Into::into),
        }
    }

    #[test]
    fn window_keys_round_trip_and_sort_by_end() {
        let windows = [
            window(-120_000, 60_000, None),
            window(-60_000, 60_000, Some("a")),
            window(0, 60_000, None),
            window(0, 60_000, Some("")),
            window(0, 60_000, Some("ab")),
            window(0, 120_000, None),
        ];
        let keys: Vec<_> = windows.iter().map(|w| chunk_key(w, 3)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "keys sort by end, then start, size, key");
        for w in &windows {
            assert_eq!(
                decode_chunk_key(&chunk_key(w, 77)).unwrap(),
                (w.clone(), 77)
            );
        }
        // A key that is a prefix of another does not share its records' prefix.
        let a = window_prefix(&window(0, 60_000, Some("a")));
        assert!(!chunk_key(&window(0, 60_000, Some("ab")), 0).starts_with(&a));
    }

    #[test]
    fn values_round_trip() {
        let ids = vec![
            EventId::Int(0),
            EventId::Int(-1),
            EventId::Int(i64::MIN),
            EventId::Int(i64::MAX),
            EventId::Text("é\"x".into()),
            EventId::Number("1.5e3".into()),
        ];
        let meta = Meta {
            next_seq: 300,
            max_event_time: Some(Timestamp::from_millis(-5)),
            watermark: None,
            counters: Counters {
                accepted: 1,
                duplicates: 2,
                late: 3,
                fired: 4,
            },
        };
        assert_eq!(decode_meta(META_KEY, &encode_meta(&meta)).unwrap(), meta);
        let header = Header {
            pane_start: 2,
            id_count: 9,
            aggregate: Some(Aggregate {
                sum: 1.5,
                min: -2.0,
                max: 3.0,
            }),
            pane_opened_at: Some(Timestamp::from_millis(1_000)),
        };
        let none = Vec::new();
        let chunk = encode_chunk(&header, &ids, Payloads::Texts(&none));
        assert_eq!(chunk[0], VERSION, "no payloads: written as before");
        assert_eq!(
            decode_chunk(b"c", &chunk).unwrap(),
            (header, (ids.clone(), Vec::new()))
        );
        let payloads: Vec<Option<Payload>> = (0..ids.len())
            .map(|i| (i % 2 == 0).then(|| format!("{{\"n\":[{i},\"é\"]}}").into()))
            .collect();
        let stored = |p: &Option<Payload>| p.clone().map(StoredPayload::Text);
        let chunk = encode_chunk(&header, &ids, Payloads::Texts(&payloads));
        assert_eq!(chunk[0], VERSION_PAYLOADS);
        assert_eq!(
            decode_chunk(b"c", &chunk).unwrap(),
            (header, (ids.clone(), payloads.iter().map(stored).collect()))
        );
        let refs: Vec<Option<PayloadRef>> = (0..ids.len())
            .map(|i| {
                (i % 3 != 1).then_some(PayloadRef {
                    segment: i as u32,
                    offset: (1 << 40) + i as u64,
                    len: 100 + i as u32,
                    crc: 0xdead_beef ^ i as u32,
                })
            })
            .collect();
        let chunk = encode_chunk(&header, &ids, Payloads::Refs(&refs));
        assert_eq!(chunk[0], VERSION_PAYLOAD_REFS);
        assert_eq!(
            decode_chunk(b"c", &chunk).unwrap(),
            (
                header,
                (
                    ids.clone(),
                    refs.iter().map(|r| r.map(StoredPayload::At)).collect()
                )
            )
        );
        let mut record = OutputRecord {
            seq: 7,
            epoch: 3,
            window: ClosedWindow {
                window: window(-60_000, 60_000, Some("k")),
                ids,
                payloads: none,
                aggregate: None,
                reason: CloseReason::Watermark,
            },
        };
        let no_log = |_: &PayloadRef| -> Result<Payload, StoreError> { unreachable!() };
        let inline = |r: &OutputRecord| encode_output(r, Payloads::Texts(&r.window.payloads));
        assert_eq!(inline(&record)[0], VERSION);
        assert_eq!(
            decode_output(&output_key(7), &inline(&record), &no_log).unwrap(),
            record
        );
        record.window.payloads = payloads;
        assert_eq!(inline(&record)[0], VERSION_PAYLOADS);
        assert_eq!(
            decode_output(&output_key(7), &inline(&record), &no_log).unwrap(),
            record
        );
        // By reference: each payload read back through the log.
        let by_ref = encode_output(&record, Payloads::Refs(&refs));
        assert_eq!(by_ref[0], VERSION_PAYLOAD_REFS);
        let log = |at: &PayloadRef| Ok(Payload::from(format!("{}", at.len)));
        let read = decode_output(&output_key(7), &by_ref, &log).unwrap();
        let want: Vec<Option<Payload>> = refs
            .iter()
            .map(|r| r.map(|r| Payload::from(format!("{}", r.len))))
            .collect();
        assert_eq!(read.window.payloads, want);
    }

    #[test]
    fn bad_values_are_corrupt_not_panics() {
        let header = Header {
            pane_start: 0,
            id_count: 1,
            aggregate: None,
            pane_opened_at: None,
        };
        let good = encode_chunk(
            &header,
            &[EventId::Text("abc".into())],
            Payloads::Texts(&[]),
        );
        for cut in 0..good.len() {
            assert!(matches!(
                decode_chunk(b"k", &good[..cut]),
                Err(StoreError::Corrupt { .. })
            ));
        }
        let mut future = good.clone();
        future[0] = 9;
        let err = decode_chunk(b"\x01", &future).unwrap_err().to_string();
        assert!(
            err.contains("unknown format version 9") && err.contains("01"),
            "{err}"
        );
        let mut trailing = good;
        trailing.push(0);
        assert!(decode_chunk(b"k", &trailing).is_err());
        assert!(decode_chunk_key(b"Wshort").is_err());
        // A huge id count must not allocate before failing.
        assert!(decode_chunk(b"k", &[VERSION, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        // A pane that starts past the ids is inconsistent.
        let bad = Header {
            pane_start: 2,
            ..header
        };
        assert!(decode_chunk(b"k", &encode_chunk(&bad, &[], Payloads::Texts(&[]))).is_err());
    }

    #[test]
    fn groups_round_trip() {
        let group = GroupRecord {
            name: "workers-1".to_owned(),
            first: 3,
            acked_below: 10,
            acked: vec![11, 12, 400],
            next: 401,
        };
        let key = group_key(&group.name);
        assert_eq!(decode_group(&key, &encode_group(&group)).unwrap(), group);
        let beyond = GroupRecord { next: 400, ..group };
        assert!(decode_group(&key, &encode_group(&beyond)).is_err());
    }

    #[test]
    fn remembered_requests_round_trip_in_their_ring_slot() {
        let outcomes = [
            RequestOutcome::Ingest {
                accepted: 5,
                duplicates: 1,
                late: 0,
            },
            RequestOutcome::Close { seq: u64::MAX },
            RequestOutcome::Flush {
                first_seq: 9,
                count: 0,
            },
        ];
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let n = REMEMBERED_REQUESTS * 3 + i as u64;
            // Old records had no fingerprint (version 1); new ones have one (version 2).
            let fingerprint = (i != 1).then_some(0xfeed_beef_0000 + i as u64);
            let request = RememberedRequest {
                n,
                id: format!("f-é-{i}"),
                outcome,
                fingerprint,
            };
            let key = request_key(n);
            assert_eq!(key, request_key(i as u64), "the ring wraps around");
            let value = encode_request(&request);
            let version = if fingerprint.is_some() {
                VERSION_FINGERPRINT
            } else {
                VERSION
            };
            assert_eq!(value[0], version);
            assert_eq!(decode_request(&key, &value).unwrap(), request);
            // A record read from another slot than its number's is corrupt, not trusted.
            assert!(decode_request(&request_key(n + 1), &value).is_err());
            for cut in 0..value.len() {
                assert!(decode_request(&key, &value[..cut]).is_err());
            }
        }
    }
}
