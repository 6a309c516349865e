//! The check: every reply, every emitted window and the final stats and flush compared with
//! `window_bench`'s independent reference, before any figure counts. With one connection the
//! order of requests is known and everything is compared exactly; with several, only what any
//! order gives (totals, and every window's panes).

use std::collections::BTreeMap;
use std::time::Instant;
use window_proto::Kind;

use anyhow::{Context, bail, ensure};
use hdrhistogram::Histogram;
use serde_json::Value;
use window_bench::panes::{EmittedPane, Expected, WindowOf, check_panes};
use window_bench::{RefClosed, RefConfig, RefEvent, RefWindow, Reference};

use crate::client::{Received, histogram, micros};
use crate::options::{RequestKind, Transport};
use crate::workload::{Dataset, PayloadCheck, normalize_id};

/// What the node answered in one run.
pub(crate) struct Observed<'a> {
    /// The replies to the data requests, by request.
    pub(crate) replies: &'a [Received],
    /// When each data request was written, by request.
    pub(crate) sent: &'a [Instant],
    /// Every `window_closed`, in the order read (over TCP: the subscription's, flushed ones
    /// included).
    pub(crate) fired: &'a [Received],
    /// The `stats_ok` after the data.
    pub(crate) stats: &'a str,
    /// The reply to the final flush, unless `--no-flush`.
    pub(crate) flushed: Option<&'a str>,
}

/// What the check found, for the summary.
pub(crate) struct Checked {
    pub(crate) accepted: u64,
    pub(crate) duplicates: u64,
    pub(crate) late: u64,
    pub(crate) buffered_events: usize,
    pub(crate) open_windows: usize,
    pub(crate) emitted_windows: usize,
}

impl Checked {
    /// The reference's figures, as they stand before the final flush.
    fn of(reference: &Reference, emitted_windows: usize) -> Checked {
        let totals = reference.totals();
        Checked {
            accepted: totals.accepted,
            duplicates: totals.duplicates,
            late: totals.late,
            buffered_events: reference.buffered_events(),
            open_windows: reference.open_windows(),
            emitted_windows,
        }
    }
}

/// Compares every reply, every emitted window and the final stats and flush with the reference.
///
/// Also returns the fire latency of every window that fired on its own: from the write of the
/// request whose events made it fire (the reference knows which) to the read of its line.
pub(crate) fn verify(
    kind: RequestKind,
    transport: Transport,
    data: &Dataset,
    config: RefConfig,
    seen: &Observed<'_>,
) -> anyhow::Result<(Checked, Histogram<u64>)> {
    let mut reference = Reference::new(config);
    let payloads = data.payloads()?;
    let (expected_fired, fired_by) =
        check_replies(kind, data, &mut reference, seen.replies, &payloads)?;

    // Every window that fired on its own, in order, with dense seq numbers. Over TCP the
    // subscription also carries the flushed windows, after those.
    let fired = seen.fired;
    ensure!(
        fired.len() >= expected_fired.len(),
        "the node emitted {} windows, the reference {} on their own",
        fired.len(),
        expected_fired.len()
    );
    let (own, flush_lines) = fired.split_at(expected_fired.len());
    ensure!(
        transport == Transport::Tcp || flush_lines.is_empty(),
        "the node emitted {} windows on its own, the reference {}",
        fired.len(),
        expected_fired.len()
    );
    let mut fire = histogram();
    for (n, (line, want)) in own.iter().zip(&expected_fired).enumerate() {
        check_emitted(
            line,
            &want.window,
            want.reason,
            n as u64,
            &reference,
            &payloads,
        )?;
        let sent = seen.sent[fired_by[n]];
        fire.saturating_record(micros(line.at.saturating_duration_since(sent)));
    }

    let totals = reference.totals();
    check_stats(
        seen.stats,
        &[
            ("accepted", totals.accepted),
            ("duplicates", totals.duplicates),
            ("late", totals.late),
            ("buffered_events", reference.buffered_events() as u64),
            ("open_windows", reference.open_windows() as u64),
        ],
    )?;
    let checked = Checked::of(&reference, fired.len());
    let want = match seen.flushed {
        Some(flushed) => {
            let want = reference.flush();
            let got = windows_of(&body(flushed)?, "windows", &reference, &payloads)?;
            compare_windows(&got, &want, &reference, "the final flush")?;
            want
        }
        None => Vec::new(),
    };
    if transport == Transport::Tcp {
        ensure!(
            flush_lines.len() == want.len(),
            "the subscription carried {} flushed windows, the flush returned {}",
            flush_lines.len(),
            want.len()
        );
        for (n, (line, window)) in flush_lines.iter().zip(&want).enumerate() {
            let seq = (own.len() + n) as u64;
            check_emitted(line, window, "flush", seq, &reference, &payloads)?;
        }
    }
    Ok((checked, fire))
}

/// Checks every reply against the reference, admitting each request's events into it in
/// order; returns the windows the reference fired on their own and, for each, the request that
/// fired it.
fn check_replies(
    kind: RequestKind,
    data: &Dataset,
    reference: &mut Reference,
    replies: &[Received],
    payloads: &PayloadCheck,
) -> anyhow::Result<(Vec<RefClosed>, Vec<usize>)> {
    let mut expected_fired: Vec<RefClosed> = Vec::new();
    // The request whose events fired each expected window.
    let mut fired_by: Vec<usize> = Vec::new();
    ensure!(
        replies.len() == data.requests(),
        "{} replies to {} requests",
        replies.len(),
        data.requests()
    );
    for (i, reply) in replies.iter().enumerate() {
        let batch = data.reference_batch(i);
        let (body, what) = reply_body(reply, i)?;
        let msg_id = i as u64 + 1;
        ensure!(
            what != "error",
            "request {msg_id} failed: {:.500}",
            reply.text
        );
        match kind {
            RequestKind::ProcessWindow => {
                ensure!(
                    what == Kind::WindowResult.as_str(),
                    "reply {msg_id} is {what}"
                );
                let got = windows_of(&body, "windows", reference, payloads)?;
                let want = reference.group(&batch);
                let context = format!("window_result of request {msg_id}");
                compare_windows(&got, &want, reference, &context)?;
            }
            RequestKind::Assign => {
                ensure!(what == Kind::Assigned.as_str(), "reply {msg_id} is {what}");
                check_assigned(&body, &batch, reference, msg_id)?;
            }
            RequestKind::Ingest => {
                ensure!(what == Kind::IngestOk.as_str(), "reply {msg_id} is {what}");
            }
        }
        let admitted = reference.admit(&batch);
        if kind == RequestKind::Ingest {
            let counts = ingest_counts(&body);
            ensure!(
                counts
                    == [
                        Some(admitted.accepted),
                        Some(admitted.duplicates),
                        Some(admitted.late)
                    ],
                "ingest_ok of request {msg_id} counts {counts:?}, expected {admitted:?}"
            );
        }
        let emitted = reference.take_emitted();
        fired_by.extend(std::iter::repeat_n(i, emitted.len()));
        expected_fired.extend(emitted);
    }
    Ok((expected_fired, fired_by))
}

/// The check for several connections, where the order in which the daemon saw the requests is
/// unknown: every request answered with `ingest_ok`, the totals (replies and stats) equal the
/// reference's, the seq numbers are dense, and every window's panes keep the rule that holds in
/// any order ([`window_bench::panes`]): under `--max-events N` each `length` pane holds exactly
/// N ids, a window of C ids fires C / N of them and then, if it left the open state with ids
/// left, one last `watermark` or `flush` pane of C % N; the panes are disjoint and together the
/// window's ids. `Cli::check` only allows workloads where order cannot make an event late. No
/// fire latency: which request fired a window depends on the order.
pub(crate) fn verify_unordered(
    kind: RequestKind,
    data: &Dataset,
    config: RefConfig,
    seen: &Observed<'_>,
) -> anyhow::Result<(Checked, Histogram<u64>)> {
    ensure!(
        kind == RequestKind::Ingest,
        "several connections send ingest only"
    );
    let mut reference = Reference::new(config);
    let mut want = Expected::new();
    let mut summed = [0u64; 3];
    for (i, reply) in seen.replies.iter().enumerate() {
        let (body, what) = reply_body(reply, i)?;
        ensure!(
            what == Kind::IngestOk.as_str(),
            "request {} answered {:.500}",
            i + 1,
            reply.text
        );
        for (sum, count) in summed.iter_mut().zip(ingest_counts(&body)) {
            *sum += count.context("ingest_ok counts")?;
        }
        reference.admit(&data.reference_batch(i));
        for closed in reference.take_emitted() {
            want.fired(closed);
        }
    }
    let totals = reference.totals();
    ensure!(
        summed == [totals.accepted, totals.duplicates, totals.late],
        "ingest_ok counts add up to {summed:?}, the reference to {totals:?}"
    );
    check_stats(
        seen.stats,
        &[
            ("accepted", totals.accepted),
            ("duplicates", totals.duplicates),
            ("late", totals.late),
        ],
    )?;
    let checked = Checked::of(&reference, seen.fired.len());
    if seen.flushed.is_some() {
        for window in reference.flush() {
            want.fired(RefClosed {
                window,
                reason: "flush",
            });
        }
    } else {
        // Windows still open at the end: their buffered ids are theirs too, but not emitted.
        for pane in reference.open_panes() {
            want.buffered(pane);
        }
    }
    let got = emitted_panes(seen.fired, &reference, &data.payloads()?)?;
    // Every window's panes: sizes (exactly --max-events for a length pane), order (at most one
    // other pane, last), reason of the last one, and ids (disjoint, together the window's).
    check_panes(&reference, &want, &got)?;
    Ok((checked, histogram()))
}

/// The emitted windows grouped by window, after checking that their seq numbers are dense (per
/// partition: a partitioned namespace, `serve --partitions`, numbers each partition's log
/// apart).
fn emitted_panes(
    fired: &[Received],
    reference: &Reference,
    payloads: &PayloadCheck,
) -> anyhow::Result<BTreeMap<WindowOf, Vec<EmittedPane>>> {
    let mut got: BTreeMap<WindowOf, Vec<EmittedPane>> = BTreeMap::new();
    let mut seqs: BTreeMap<Option<u64>, Vec<u64>> = BTreeMap::new();
    for line in fired {
        let body = body(&line.text)?;
        let window = window_of(&body, reference, payloads)?;
        let seq = body.get("seq").and_then(Value::as_u64).context("seq")?;
        let partition = body.get("partition").and_then(Value::as_u64);
        let reason = body
            .get("reason")
            .and_then(Value::as_str)
            .context("reason")?;
        got.entry((window.start, window.key))
            .or_default()
            .push(EmittedPane {
                seq,
                reason: reason.to_owned(),
                ids: window.ids,
            });
        seqs.entry(partition).or_default().push(seq);
    }
    for (partition, seqs) in &mut seqs {
        seqs.sort_unstable();
        ensure!(
            seqs.iter().enumerate().all(|(i, &s)| s == i as u64),
            "the emitted windows' seq numbers{} are not 0..{}",
            partition.map_or(String::new(), |p| format!(" of partition {p}")),
            seqs.len()
        );
    }
    Ok(got)
}

/// The body of reply `i` and its type, after checking that it answers request `i` (msg_id
/// `i + 1`).
fn reply_body(reply: &Received, i: usize) -> anyhow::Result<(Value, String)> {
    let body = body(&reply.text)?;
    let msg_id = i as u64 + 1;
    ensure!(
        body.get("in_reply_to").and_then(Value::as_u64) == Some(msg_id),
        "reply {i} is not to msg_id {msg_id}: {:.300}",
        reply.text
    );
    let what = body
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok((body, what))
}

/// An `ingest_ok`'s accepted, duplicates and late.
fn ingest_counts(body: &Value) -> [Option<u64>; 3] {
    ["accepted", "duplicates", "late"].map(|k| body.get(k).and_then(Value::as_u64))
}

/// Checks the named counts of a `stats_ok`.
fn check_stats(stats: &str, want: &[(&str, u64)]) -> anyhow::Result<()> {
    let stats = body(stats)?;
    for &(name, value) in want {
        let got = stats.get(name).and_then(Value::as_u64);
        ensure!(
            got == Some(value),
            "stats {name} is {got:?}, expected {value}"
        );
    }
    Ok(())
}

/// Checks one `window_closed` the node emitted: content, reason and sequence number.
fn check_emitted(
    line: &Received,
    want: &RefWindow,
    reason: &str,
    seq: u64,
    reference: &Reference,
    payloads: &PayloadCheck,
) -> anyhow::Result<()> {
    let body = body(&line.text)?;
    let got = window_of(&body, reference, payloads)?;
    compare_windows(
        &[got],
        std::slice::from_ref(want),
        reference,
        &format!("emitted window {seq}"),
    )?;
    let got_reason = body.get("reason").and_then(Value::as_str);
    ensure!(
        got_reason == Some(reason),
        "emitted window {seq} has reason {got_reason:?}, expected {reason}"
    );
    let got_seq = body.get("seq").and_then(Value::as_u64);
    ensure!(
        got_seq == Some(seq),
        "emitted window {seq} has seq {got_seq:?}"
    );
    Ok(())
}

/// The body of a message line (bare, or inside an envelope).
pub(crate) fn body(line: &str) -> anyhow::Result<Value> {
    let mut value: Value =
        serde_json::from_str(line).with_context(|| format!("not JSON: {line:.300}"))?;
    Ok(match value.get_mut("body") {
        Some(body) => body.take(),
        None => value,
    })
}

/// A window entry as the node wrote it, in the reference's terms. The start comes from the
/// window id; ids are normalized as the reference writes them.
fn window_of(
    entry: &Value,
    reference: &Reference,
    payloads: &PayloadCheck,
) -> anyhow::Result<RefWindow> {
    let id = entry
        .get("window_id")
        .and_then(Value::as_str)
        .context("window_id")?;
    let label: i64 = id
        .strip_prefix("window-")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("window_id {id:?}"))?;
    let start = label + reference.config().frame_offset_ms;
    let ids = entry
        .get("events")
        .and_then(Value::as_array)
        .context("events")?;
    let ids: Vec<String> = ids.iter().map(normalize_id).collect();
    let count = entry
        .get("count")
        .and_then(Value::as_u64)
        .context("count")?;
    ensure!(
        count == ids.len() as u64,
        "window {id} says count {count} but lists {} ids",
        ids.len()
    );
    let listed = entry.get("payloads");
    match payloads {
        PayloadCheck::Unchecked => {}
        PayloadCheck::Absent => ensure!(
            listed.is_none(),
            "window {id} lists payloads, but no event had one"
        ),
        PayloadCheck::Every(want) => {
            let listed = listed
                .and_then(Value::as_array)
                .with_context(|| format!("window {id} lists no payloads"))?;
            ensure!(
                listed.len() == ids.len(),
                "window {id} lists {} payloads for {} ids",
                listed.len(),
                ids.len()
            );
            if let Some(at) = listed.iter().position(|p| p != want) {
                bail!(
                    "window {id}: the payload of event {} is {:.200}, not the one sent",
                    ids[at],
                    listed[at].to_string()
                );
            }
        }
    }
    Ok(RefWindow {
        start,
        key: entry.get("key").and_then(Value::as_str).map(str::to_owned),
        ids,
        sum: entry.get("sum").and_then(Value::as_f64),
    })
}

fn windows_of(
    body: &Value,
    field: &str,
    reference: &Reference,
    payloads: &PayloadCheck,
) -> anyhow::Result<Vec<RefWindow>> {
    body.get(field)
        .and_then(Value::as_array)
        .with_context(|| format!("no {field} array"))?
        .iter()
        .map(|w| window_of(w, reference, payloads))
        .collect()
}

fn compare_windows(
    got: &[RefWindow],
    want: &[RefWindow],
    reference: &Reference,
    what: &str,
) -> anyhow::Result<()> {
    if got == want {
        return Ok(());
    }
    let describe = |w: Option<&RefWindow>| match w {
        Some(w) => format!(
            "{} key {:?}: {} ids [{}{}] sum {:?}",
            reference.window_id(w.start),
            w.key,
            w.ids.len(),
            w.ids.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            if w.ids.len() > 5 { ", ..." } else { "" },
            w.sum
        ),
        None => "nothing".to_owned(),
    };
    let first = (0..got.len().max(want.len()))
        .find(|&i| got.get(i) != want.get(i))
        .unwrap_or(0);
    bail!(
        "{what} differs from the reference at window {first} ({} windows from the node, {} expected):\n  node:      {}\n  reference: {}",
        got.len(),
        want.len(),
        describe(got.get(first)),
        describe(want.get(first))
    )
}

fn check_assigned(
    body: &Value,
    batch: &[RefEvent],
    reference: &Reference,
    msg_id: u64,
) -> anyhow::Result<()> {
    let first = &batch[0];
    let want_first = reference.window_id(reference.start_of(first.ts_ms));
    let got_first = body.get("window_id").and_then(Value::as_str);
    ensure!(
        got_first == Some(want_first.as_str()),
        "assigned {msg_id}: window_id {got_first:?}, expected {want_first}"
    );
    if batch.len() == 1 {
        return Ok(());
    }
    let list = body
        .get("assignments")
        .and_then(Value::as_array)
        .context("assignments")?;
    ensure!(
        list.len() == batch.len(),
        "assigned {msg_id}: {} assignments for {} events",
        list.len(),
        batch.len()
    );
    for (n, (entry, event)) in list.iter().zip(batch).enumerate() {
        let want = reference.window_id(reference.start_of(event.ts_ms));
        let got = entry.get("window_id").and_then(Value::as_str);
        ensure!(
            got == Some(want.as_str()),
            "assigned {msg_id}, event {n}: window_id {got:?}, expected {want}"
        );
        let id = entry.get("id").map(normalize_id);
        ensure!(
            id.as_deref() == Some(event.id.as_str()),
            "assigned {msg_id}, event {n}: id {id:?}, expected {}",
            event.id
        );
    }
    Ok(())
}
