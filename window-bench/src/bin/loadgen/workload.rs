//! The workload: the events to send (generated from a seeded `window_bench::Workload`, or read
//! from a JSONL file), cut into requests, and the reference's view of each request.

use std::fs;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use window_bench::{GenEvent, IdKind, RefEvent, Render, TimestampForm, Values, Workload};

use crate::options::{Cli, Ids, RequestKind, Timestamps};

/// What the windows a node lists must say of payloads.
pub(crate) enum PayloadCheck {
    /// No `payloads` list (no event had one: the window looks as it did before payloads).
    Absent,
    /// One per id, each this value (every generated event carries the same payload).
    Every(Value),
    /// Not checked (events read from a file).
    Unchecked,
}

/// The events to send, in requests.
pub(crate) enum Dataset {
    Generated {
        batches: Vec<Vec<GenEvent>>,
        render: Render,
    },
    File {
        /// Each event's JSON text (as given) and its reference view.
        batches: Vec<Vec<(String, RefEvent)>>,
    },
}

impl Dataset {
    pub(crate) fn requests(&self) -> usize {
        match self {
            Dataset::Generated { batches, .. } => batches.len(),
            Dataset::File { batches } => batches.len(),
        }
    }

    pub(crate) fn events_in(&self, request: usize) -> usize {
        match self {
            Dataset::Generated { batches, .. } => batches[request].len(),
            Dataset::File { batches } => batches[request].len(),
        }
    }

    pub(crate) fn line(
        &self,
        kind: RequestKind,
        msg_id: u64,
        request: usize,
        size_ms: i64,
    ) -> String {
        match self {
            Dataset::Generated { batches, render } => {
                let batch = &batches[request];
                match kind {
                    RequestKind::ProcessWindow => {
                        render.process_window_line(msg_id, batch, size_ms)
                    }
                    RequestKind::Assign => render.assign_line(msg_id, batch, size_ms),
                    RequestKind::Ingest => render.ingest_line(msg_id, batch),
                }
            }
            Dataset::File { batches } => {
                let (name, size) = match kind {
                    RequestKind::ProcessWindow => ("process_window", Some(size_ms)),
                    RequestKind::Assign => ("assign", Some(size_ms)),
                    RequestKind::Ingest => ("ingest", None),
                };
                let events: Vec<&str> = batches[request].iter().map(|(t, _)| t.as_str()).collect();
                let size = size.map_or(String::new(), |s| format!(",\"window_size_ms\":{s}"));
                format!(
                    "{{\"type\":\"{name}\",\"msg_id\":{msg_id},\"events\":[{}]{size}}}\n",
                    events.join(",")
                )
            }
        }
    }

    /// What every window the node lists must carry as its `payloads`.
    pub(crate) fn payloads(&self) -> anyhow::Result<PayloadCheck> {
        Ok(match self {
            Dataset::Generated { render, .. } => match &render.payload {
                Some(text) => PayloadCheck::Every(
                    serde_json::from_str(text).context("the workload's payload is not JSON")?,
                ),
                None => PayloadCheck::Absent,
            },
            // A file's events carry what they carry: the reference does not model it.
            Dataset::File { .. } => PayloadCheck::Unchecked,
        })
    }

    pub(crate) fn reference_batch(&self, request: usize) -> Vec<RefEvent> {
        match self {
            Dataset::Generated { batches, render } => render.reference_events(&batches[request]),
            Dataset::File { batches } => batches[request].iter().map(|(_, e)| e.clone()).collect(),
        }
    }
}

pub(crate) fn dataset(cli: &Cli) -> anyhow::Result<Dataset> {
    let Some(path) = &cli.input else {
        let workload = Workload {
            events: cli.events,
            events_per_window: cli.events_per_window,
            keys: cli.keys,
            disorder_ms: cli.disorder_ms,
            late_fraction: cli.late_fraction,
            duplicate_fraction: cli.duplicate_fraction,
            values: if cli.values {
                Values::Present
            } else {
                Values::Absent
            },
            ids: match cli.ids {
                Ids::Int => IdKind::Int,
                Ids::Text => IdKind::Text,
            },
            timestamps: match cli.timestamps {
                Timestamps::Utc => TimestampForm::Utc,
                Timestamps::Offset => TimestampForm::Offset,
                Timestamps::EpochMs => TimestampForm::EpochMs,
            },
            size_ms: cli.window_size_ms,
            seed: cli.seed,
            payload_bytes: cli.payload_bytes,
            ..Workload::default()
        };
        return Ok(Dataset::Generated {
            batches: workload.batches(cli.batch),
            render: workload.render(),
        });
    };
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let event = file_event(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        events.push((line.to_owned(), event));
    }
    ensure!(!events.is_empty(), "{} holds no events", path.display());
    let batches = events.chunks(cli.batch.max(1)).map(<[_]>::to_vec).collect();
    Ok(Dataset::File { batches })
}

/// The reference's view of one event of a given dataset.
fn file_event(line: &str) -> anyhow::Result<RefEvent> {
    let event: Value = serde_json::from_str(line).context("not JSON")?;
    let id = event.get("id").context("no id")?;
    let ts_ms = match event.get("timestamp").context("no timestamp")? {
        Value::Number(n) => n.as_i64().context("timestamp is not an integer")?,
        Value::String(s) => {
            // Parsed with the `time` crate, not the core's parser: the reference stays apart.
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("timestamp {s:?}"))?;
            i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000))?
        }
        other => bail!("timestamp {other} is neither a string nor a number"),
    };
    Ok(RefEvent {
        id: normalize_id(id),
        ts_ms,
        key: event.get("key").and_then(Value::as_str).map(str::to_owned),
        value: event.get("value").and_then(Value::as_f64),
    })
}

/// An id as compared: its JSON text as serde_json writes it, so both sides of a comparison
/// escape strings and write numbers the same way (`17`, `"e000000017"`).
pub(crate) fn normalize_id(id: &Value) -> String {
    id.to_string()
}
