//! Noticing a Redis namespace that was lost or replaced under running nodes (FLUSHALL, a Redis
//! restarted without its data, a replica promoted without the last writes, entries deleted from
//! the output log by hand).
//!
//! Two things tell:
//! - **The identity.** `{wn:NAME}:id` holds a random 128-bit id (32 hex digits), written once,
//!   if absent, by the first lease acquisition or the first batch of a namespace, beside the
//!   fencing epoch. A process learns it the first time it looks (a lease observation, a store's
//!   connect) and from then on every write it makes, the store's batch script and the lease's
//!   acquire and renew scripts, first checks that the identity and the epoch are still there
//!   and the identity is the one it learned. A wiped namespace has neither, a replaced one
//!   another, so its next write is refused with [`StoreError::NamespaceLost`] instead of starting
//!   the namespace over under the nodes' feet. A namespace with no identity (new, or made by a
//!   build before identities) gets one from its next writer.
//! - **The output log against the meta record.** With `next_seq = N` in the compacted meta
//!   record the Stream must hold exactly the seqs `S..N`, `S` the retention's mark (0 without
//!   one): its first entry holds seq `S`, its last ends at `N-1`, and no entry was deleted from
//!   it but those the retention removed, all below `S` and counted in `{wn:NS}:trimmed` (Redis
//!   counts the entries ever added; the batch script only appends, densely). That is one read-only script at recovery,
//!   whatever the log's length; only when it fails is the log's list of ids read, to name the
//!   missing seqs.

use crate::error::StoreError;

/// What a connection knows of its namespace's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    /// Read from the namespace, given by the lease, or written by this connection: every write
    /// is refused unless the namespace still holds it (and a fencing epoch).
    Known(String),
    /// The namespace had none when this connection looked (new, or made by an older build): the
    /// first write creates this one, unless the namespace got another meanwhile.
    Proposed(String),
}

impl Identity {
    /// The identity to check or to create.
    pub(crate) fn value(&self) -> &str {
        match self {
            Identity::Known(id) | Identity::Proposed(id) => id,
        }
    }

    /// The known identity, if any.
    pub(crate) fn known(&self) -> Option<&str> {
        match self {
            Identity::Known(id) => Some(id),
            Identity::Proposed(_) => None,
        }
    }

    /// What a connection that read `held` from the namespace knows.
    pub(crate) fn from_held(held: Option<String>) -> Result<Identity, StoreError> {
        Ok(match held {
            Some(id) => Identity::Known(id),
            None => Identity::Proposed(fresh()?),
        })
    }
}

/// A fresh random identity: 128 bits from the OS, in hex.
pub(crate) fn fresh() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        StoreError::Backend(format!(
            "cannot draw a random namespace identity from the OS: {e}"
        ))
    })?;
    Ok(crate::error::hex(&bytes))
}

/// The error for `namespace`, whose state is not what this process knew.
pub(crate) fn lost(namespace: &str, reason: impl Into<String>) -> StoreError {
    StoreError::NamespaceLost {
        namespace: namespace.to_owned(),
        reason: reason.into(),
    }
}

/// The reason for a missing identity key.
pub(crate) fn missing_identity(id_key: &str, known: &str) -> String {
    format!("its identity {id_key} is missing (this process knew it as {known})")
}

/// The reason for another identity than the one known.
pub(crate) fn other_identity(id_key: &str, known: &str, found: &str) -> String {
    format!("its identity {id_key} is {found}, not {known} as this process knew it")
}

/// The reason for a missing fencing epoch.
pub(crate) fn missing_epoch(epoch_key: &str) -> String {
    format!("its fencing epoch {epoch_key} is missing although its identity is there")
}

/// What recovery reads in one look ([`META_STATE`]): the meta record, the identity, the epoch
/// and the shape of the output log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MetaState {
    pub(crate) meta: Option<Vec<u8>>,
    pub(crate) identity: Option<String>,
    pub(crate) epoch: Option<String>,
    pub(crate) log: LogShape,
}

/// The output Stream's shape, as `XINFO STREAM` says it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogShape {
    /// Entries in the Stream now.
    pub(crate) length: u64,
    /// Entries ever added to it (Redis 7.0 keeps the count, and an RDB or AOF with it).
    pub(crate) added: u64,
    /// The highest id ever deleted (`0-0`: none).
    pub(crate) max_deleted: String,
    /// The first entry's first seq, when the Stream has entries.
    pub(crate) first: Option<u64>,
    /// The last entry's last seq.
    pub(crate) last: Option<u64>,
    /// The first entry's last seq (a block's; a single record's own).
    pub(crate) first_last: Option<u64>,
    /// Entries the retention removed (`{wn:NS}:trimmed`).
    pub(crate) trimmed: u64,
    /// Where the retention says the log starts (the `L` record; 0 without one).
    pub(crate) start: u64,
}

impl MetaState {
    /// Reads the script's reply: meta flag and value, identity, epoch, length, added,
    /// max-deleted id, first entry id and its `first` field, last entry id ('' for absent).
    pub(crate) fn parse(reply: Vec<Vec<u8>>) -> Option<MetaState> {
        let [
            has_meta,
            meta,
            identity,
            epoch,
            length,
            added,
            max_deleted,
            first_id,
            first_field,
            last_id,
            trimmed,
            start,
        ] = <[Vec<u8>; 12]>::try_from(reply).ok()?;
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).ok();
        let present = |bytes: Vec<u8>| text(bytes).filter(|t| !t.is_empty());
        let number = |bytes: Vec<u8>| text(bytes).and_then(|t| t.parse::<u64>().ok());
        // An absent id is `None`; one that is not `0-(seq+1)` makes the reply unreadable.
        let seq_of = |id: Option<String>| match id {
            Some(id) => stream_seq(&id).map(Some),
            None => Some(None),
        };
        let first_last = seq_of(present(first_id.clone()))?;
        let first = match present(first_field) {
            Some(field) => Some(field.parse().ok()?),
            None => first_last,
        };
        let start = match start.len() {
            0 => 0,
            _ => u64::from_be_bytes(start.try_into().ok()?),
        };
        let last = seq_of(present(last_id))?;
        Some(MetaState {
            meta: (has_meta == b"1").then_some(meta),
            identity: present(identity),
            epoch: present(epoch),
            log: LogShape {
                length: number(length)?,
                added: number(added)?,
                max_deleted: text(max_deleted)?,
                first,
                last,
                first_last,
                trimmed: number(trimmed)?,
                start,
            },
        })
    }
}

impl LogShape {
    /// Whether the Stream holds exactly the seqs `start..next_seq` (`start` the retention's
    /// mark, 0 without one), as far as its shape tells: the batch script appends densely, so a
    /// Stream that lost no entry but those its retention removed (all below the mark, and
    /// counted), and whose first entry holds the mark and last ends at `next_seq - 1`, holds
    /// them all.
    pub(crate) fn holds_exactly(&self, next_seq: u64) -> bool {
        let deleted_below_mark = match stream_seq(&self.max_deleted) {
            None => self.max_deleted.is_empty() || self.max_deleted == "0-0",
            Some(seq) => seq < self.start,
        };
        let nothing_lost = self.added == self.length + self.trimmed && deleted_below_mark;
        let spans = match next_seq.checked_sub(1) {
            None => self.length == 0,
            Some(last) => {
                self.length > 0
                    && self.first.is_some_and(|first| first <= self.start)
                    && self
                        .first_last
                        .is_some_and(|first_last| first_last >= self.start)
                    && self.last == Some(last)
            }
        };
        nothing_lost && spans
    }

    /// What the shape says, for the reason of an error.
    pub(crate) fn describe(&self) -> String {
        let mut text = format!(
            "the log has {} entries, {} were ever added",
            self.length, self.added
        );
        if self.trimmed > 0 {
            text.push_str(&format!(
                ", {} removed by the retention below seq {}",
                self.trimmed, self.start
            ));
        }
        if self.added != self.length + self.trimmed {
            text.push_str(" (entries were deleted from it: XDEL or XTRIM)");
        }
        text
    }
}

/// The seq of stream id `0-(seq+1)`.
fn stream_seq(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse::<u64>().ok()?.checked_sub(1)
}

/// The seqs below `next_seq` missing from a log whose entries span `entries` (first, last seq
/// each, in order), and those it holds at or above `next_seq`, in words.
pub(crate) fn describe_gaps(entries: &[(u64, u64)], start: u64, next_seq: u64) -> String {
    let mut missing: Vec<(u64, u64)> = Vec::new();
    let mut expected = start;
    let mut beyond: Option<(u64, u64)> = None;
    for &(first, last) in entries {
        if first > expected && expected < next_seq {
            missing.push((expected, first.min(next_seq) - 1));
        }
        if last >= next_seq {
            let from = first.max(next_seq);
            beyond = Some(beyond.map_or((from, last), |(low, _)| (low, last)));
        }
        expected = expected.max(last.saturating_add(1));
    }
    if expected < next_seq {
        missing.push((expected, next_seq - 1));
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        const SHOWN: usize = 8;
        let mut list: Vec<String> = missing.iter().take(SHOWN).map(range).collect();
        if missing.len() > SHOWN {
            list.push(format!("and {} more ranges", missing.len() - SHOWN));
        }
        parts.push(format!("it lacks seqs {}", list.join(", ")));
    }
    if let Some(held) = beyond {
        parts.push(format!(
            "it holds seqs {} at or above next_seq",
            range(&held)
        ));
    }
    if parts.is_empty() {
        "its entries span every seq below it".to_owned()
    } else {
        parts.join("; ")
    }
}

fn range(&(low, high): &(u64, u64)) -> String {
    if low == high {
        low.to_string()
    } else {
        format!("{low}-{high}")
    }
}

/// Reads, in one look, what recovery checks: the meta record (ARGV[1] is its key), the identity,
/// the epoch and the output log's shape. KEYS as for the batch script (keys, values, epoch, log,
/// identity). See [`MetaState::parse`] for the reply. `XINFO STREAM` copies the first and last
/// entries inside the server; only their ids and `first` fields come back.
pub(crate) const META_STATE: &str = r#"#!lua flags=no-writes
local meta = redis.call('HGET', KEYS[2], ARGV[1])
local has_meta, value = '0', ''
if meta then has_meta, value = '1', meta end
local length, added, deleted, first_id, first_field, last_id = '0', '0', '0-0', '', '', ''
if redis.call('EXISTS', KEYS[4]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[4])
  for i = 1, #info, 2 do
    local name, v = info[i], info[i + 1]
    if name == 'length' then length = tostring(v)
    elseif name == 'entries-added' then added = tostring(v)
    elseif name == 'max-deleted-entry-id' then deleted = v
    elseif name == 'first-entry' and v then
      first_id = v[1]
      local fields = v[2]
      for j = 1, #fields, 2 do
        if fields[j] == 'first' then first_field = fields[j + 1] end
      end
    elseif name == 'last-entry' and v then
      last_id = v[1]
    end
  end
end
return {has_meta, value, redis.call('GET', KEYS[5]) or '', redis.call('GET', KEYS[3]) or '',
  length, added, deleted, first_id, first_field, last_id, redis.call('GET', KEYS[6]) or '0',
  redis.call('HGET', KEYS[2], 'L') or ''}
"#;

/// A page of the output log's entries without their records: id, `first` field ('' for a single
/// record), id, ... KEYS as for the batch script; ARGV: the (exclusive or inclusive) start id,
/// the count.
pub(crate) const LOG_IDS: &str = r#"#!lua flags=no-writes
local out = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[4], ARGV[1], '+', 'COUNT', ARGV[2])) do
  local first = ''
  local fields = entry[2]
  for j = 1, #fields, 2 do
    if fields[j] == 'first' then first = fields[j + 1] end
  end
  out[#out + 1] = entry[1]
  out[#out + 1] = first
end
return out
"#;

/// The entries of a [`LOG_IDS`] page as (first seq, last seq, id), or `None` for a foreign one.
pub(crate) fn parse_log_ids(reply: Vec<String>) -> Option<Vec<(u64, u64, String)>> {
    reply
        .chunks(2)
        .map(|pair| {
            let [id, first] = pair else { return None };
            let last = stream_seq(id)?;
            let first = if first.is_empty() {
                last
            } else {
                first.parse().ok()?
            };
            Some((first, last, id.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_named_as_ranges() {
        // The brief's example: the log holds 45-50 and 75-84.
        let held = [(45, 50), (75, 84)];
        assert_eq!(describe_gaps(&held, 0, 85), "it lacks seqs 0-44, 51-74");
        assert_eq!(
            describe_gaps(&held, 0, 48),
            "it lacks seqs 0-44; it holds seqs 48-84 at or above next_seq"
        );
        assert_eq!(
            describe_gaps(&[(0, 3), (5, 5)], 0, 9),
            "it lacks seqs 4, 6-8"
        );
        assert_eq!(describe_gaps(&[], 0, 1), "it lacks seqs 0");
        assert_eq!(
            describe_gaps(&[(0, 9)], 0, 10),
            "its entries span every seq below it"
        );
        let many: Vec<(u64, u64)> = (0..20).map(|i| (2 * i + 1, 2 * i + 1)).collect();
        assert!(describe_gaps(&many, 0, 40).ends_with("and 12 more ranges"));
    }

    #[test]
    fn a_shape_holds_exactly_the_seqs_below_next_seq_or_not() {
        let whole = LogShape {
            length: 3,
            added: 3,
            max_deleted: "0-0".into(),
            first: Some(0),
            last: Some(84),
            first_last: Some(30),
            trimmed: 0,
            start: 0,
        };
        assert!(whole.holds_exactly(85));
        assert!(!whole.holds_exactly(48), "ends above");
        assert!(!whole.holds_exactly(90), "ends below");
        let trimmed = LogShape {
            added: 4,
            ..whole.clone()
        };
        assert!(!trimmed.holds_exactly(85));
        assert!(trimmed.describe().contains("XDEL or XTRIM"));
        let late_start = LogShape {
            first: Some(45),
            ..whole.clone()
        };
        assert!(!late_start.holds_exactly(85));
        assert!(LogShape::default().holds_exactly(0));
        assert!(!LogShape::default().holds_exactly(1));
        // The retention removed two entries, every record below seq 40: the log holds 40..85.
        let retained = LogShape {
            length: 2,
            added: 4,
            max_deleted: "0-35".into(),
            first: Some(35),
            first_last: Some(50),
            trimmed: 2,
            start: 40,
            ..whole.clone()
        };
        assert!(retained.holds_exactly(85));
        assert!(
            retained
                .describe()
                .contains("2 removed by the retention below seq 40")
        );
        assert!(
            !LogShape {
                trimmed: 1,
                ..retained.clone()
            }
            .holds_exactly(85),
            "one lost"
        );
        assert!(
            !LogShape {
                max_deleted: "0-45".into(),
                ..retained.clone()
            }
            .holds_exactly(85),
            "a deletion at or above the mark"
        );
        assert!(
            !LogShape {
                first: Some(41),
                ..retained.clone()
            }
            .holds_exactly(85),
            "the mark's record is gone"
        );
        assert!(
            !LogShape {
                first_last: Some(39),
                ..retained
            }
            .holds_exactly(85),
            "the first entry ends below the mark"
        );
    }

    #[test]
    fn identities_are_random_and_128_bits() {
        let (a, b) = (fresh().unwrap(), fresh().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
