//! The workloads are what they say, and the reference agrees with the engine on them.

use std::num::NonZeroU32;

use window_core::{
    Engine, EngineConfig, EventId, IdFrame, LatePolicy, PurgePolicy, SizeMs, Timestamp, WindowSpec,
    group_by_window,
};

use crate::{
    GRADER_OFFSET_MS, IdKind, Origin, RefConfig, RefWindow, Reference, TimestampForm, Values,
    Workload,
};

fn mixed() -> Workload {
    Workload {
        events: 20_000,
        events_per_window: 500,
        keys: 7,
        disorder_ms: 30_000,
        late_fraction: 0.05,
        duplicate_fraction: 0.1,
        values: Values::Present,
        ids: IdKind::Text,
        ..Workload::default()
    }
}

#[test]
fn the_same_seed_gives_the_same_events() {
    let w = mixed();
    assert_eq!(w.generate(), w.generate());
    let other = Workload { seed: 7, ..mixed() };
    assert_ne!(w.generate(), other.generate());
    let batches = w.batches(3_000);
    assert_eq!(batches.len(), 7);
    assert_eq!(batches.concat(), w.generate());
}

#[test]
fn fractions_and_disorder_are_as_asked() {
    let w = mixed();
    let events = w.generate();
    let n = events.len() as f64;
    let repeats = events.iter().filter(|e| e.origin == Origin::Repeat).count() as f64;
    let behind = events.iter().filter(|e| e.origin == Origin::Behind).count() as f64;
    assert!((repeats / n - 0.1).abs() < 0.02, "repeats {}", repeats / n);
    assert!((behind / n - 0.05).abs() < 0.02, "behind {}", behind / n);
    let mut max_fresh = i64::MIN;
    let mut out_of_order = 0;
    for e in events.iter().filter(|e| e.origin == Origin::Fresh) {
        if e.ts_ms < max_fresh {
            out_of_order += 1;
        }
        max_fresh = max_fresh.max(e.ts_ms);
        assert!(max_fresh - e.ts_ms <= 30_000 + 60_000 / 500);
    }
    assert!(out_of_order > 1000);
    assert!(events.iter().all(|e| e.key.is_some_and(|k| k < 7)));
    assert!(events.iter().all(|e| e.value.is_some()));
    // In order and without disorder, the stream holds exactly `events_per_window` per window.
    let plain = Workload {
        events: 5_000,
        ..Workload::default()
    };
    let starts: Vec<i64> = plain
        .generate()
        .iter()
        .map(|e| e.ts_ms.div_euclid(60_000))
        .collect();
    assert!(starts.chunks(1_000).all(|c| c.iter().all(|&s| s == c[0])));
}

#[test]
fn rendered_lines_are_json_the_node_reads_alike() {
    for form in [
        TimestampForm::Utc,
        TimestampForm::Offset,
        TimestampForm::EpochMs,
    ] {
        let w = Workload {
            events: 500,
            timestamps: form,
            // Before 1970 too: the renderer floors like the parser.
            start_ms: -3_000_000,
            ..mixed()
        };
        let render = w.render();
        let batch = w.generate();
        for line in [
            render.process_window_line(3, &batch, w.size_ms),
            render.assign_line(4, &batch, w.size_ms),
            render.ingest_line(5, &batch),
        ] {
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            let value: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
            let events = value["events"].as_array().expect("events");
            assert_eq!(events.len(), batch.len());
            for (json, e) in events.iter().zip(&batch) {
                let ts = match &json["timestamp"] {
                    serde_json::Value::String(s) => {
                        Timestamp::parse_rfc3339(s).expect("parses").as_millis()
                    }
                    other => other.as_i64().expect("epoch ms"),
                };
                assert_eq!(ts, e.ts_ms, "{json}");
                assert_eq!(json["id"].to_string(), render.id_json(e.id));
                assert_eq!(json["key"].as_str(), render.key_name(e));
                assert_eq!(json["value"].as_f64(), e.value);
            }
        }
    }
}

fn id_text(id: &EventId) -> String {
    match id {
        EventId::Int(n) => n.to_string(),
        EventId::Text(s) => format!("\"{s}\""),
        EventId::Number(s) => s.to_string(),
    }
}

/// The reference is only useful if it is right: on a workload with everything in it, it must
/// agree with the engine batch by batch, window by window, id by id.
#[test]
fn the_reference_agrees_with_the_engine() {
    for (lateness, max_events) in [(None, None), (Some(45_000), None), (Some(0), Some(40))] {
        let w = mixed();
        let render = w.render();
        let config = EngineConfig {
            frame: IdFrame::Grader,
            purge: PurgePolicy {
                max_events: max_events.and_then(NonZeroU32::new),
                max_age_ms: None,
            },
            allowed_lateness_ms: lateness.map(|l: i64| l as u64),
            late: LatePolicy::Drop,
        };
        let mut engine = Engine::new(config);
        let mut reference = Reference::new(RefConfig {
            size_ms: w.size_ms,
            frame_offset_ms: GRADER_OFFSET_MS,
            allowed_lateness_ms: lateness,
            max_events,
        });
        let size = SizeMs::new(w.size_ms).unwrap();
        let spec = WindowSpec {
            size,
            frame: IdFrame::Grader,
        };
        let to_ref = |window: &window_core::ClosedWindow| RefWindow {
            start: window.window.start.as_millis(),
            key: window.window.key.as_deref().map(str::to_owned),
            ids: window.ids.iter().map(id_text).collect(),
            sum: window.aggregate.map(|a| a.sum),
        };
        let mut fired = 0;
        for batch in w.batches(700) {
            let events = render.core_events(&batch);
            let ref_events = render.reference_events(&batch);
            let groups: Vec<RefWindow> = group_by_window(spec, &events)
                .unwrap()
                .into_iter()
                .map(|g| RefWindow {
                    start: g.bounds.start.as_millis(),
                    key: g.key.map(str::to_owned),
                    ids: g.events.iter().map(|&i| id_text(&events[i].id)).collect(),
                    sum: g
                        .events
                        .iter()
                        .filter_map(|&i| events[i].value)
                        .reduce(|a, b| a + b),
                })
                .collect();
            assert_eq!(groups, reference.group(&ref_events));
            let admission = engine
                .handle_events(Timestamp::EPOCH, size, events)
                .unwrap();
            let expected = reference.admit(&ref_events);
            assert_eq!(admission.accepted as u64, expected.accepted);
            assert_eq!(admission.duplicates as u64, expected.duplicates);
            assert_eq!(admission.late_count as u64, expected.late);
            let mut from_engine = Vec::new();
            while let Some(closed) = engine.poll_closed() {
                from_engine.push((to_ref(&closed), closed.reason.as_str()));
            }
            let from_reference: Vec<_> = reference
                .take_emitted()
                .into_iter()
                .map(|c| (c.window, c.reason))
                .collect();
            fired += from_engine.len();
            assert_eq!(from_engine, from_reference);
        }
        let stats = engine.stats();
        assert_eq!(stats.buffered_events, reference.buffered_events());
        assert_eq!(stats.open_windows, reference.open_windows());
        let flushed: Vec<RefWindow> = engine.flush(None).iter().map(to_ref).collect();
        assert_eq!(flushed, reference.flush());
        let totals = reference.totals();
        assert!(totals.duplicates > 0);
        if lateness.is_some() {
            assert!(totals.late > 0 && fired > 0);
        }
    }
}
