//! The workloads are what they say, the reference agrees with the engine on them, and the
//! order-independent pane check passes what the engine does in any order and nothing else.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use window_core::{
    Engine, EngineConfig, EventId, IdFrame, LatePolicy, PurgePolicy, SizeMs, Timestamp, WindowSpec,
    group_by_window,
};

use crate::panes::{EmittedPane, Expected, WindowOf, check_panes};
use crate::{
    GRADER_OFFSET_MS, GenEvent, IdKind, Origin, RefClosed, RefConfig, RefWindow, Reference,
    TimestampForm, Values, Workload,
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

/// A reference under `--max-events 4`, for the hand-made pane sets.
fn four_per_pane() -> Reference {
    Reference::new(RefConfig {
        size_ms: 60_000,
        frame_offset_ms: GRADER_OFFSET_MS,
        allowed_lateness_ms: Some(5_000),
        max_events: Some(4),
    })
}

fn ref_window(start: i64, key: Option<&str>, ids: &[u32]) -> RefWindow {
    RefWindow {
        start,
        key: key.map(str::to_owned),
        ids: ids.iter().map(u32::to_string).collect(),
        sum: None,
    }
}

fn pane(seq: u64, reason: &str, ids: &[u32]) -> EmittedPane {
    EmittedPane {
        seq,
        reason: reason.to_owned(),
        ids: ids.iter().map(u32::to_string).collect(),
    }
}

/// What the reference saw (in its order) of three windows under `--max-events 4`: one of 10 ids
/// closed by the watermark, one of 8 flushed (its last pane fired by length), one of 6 still
/// open at the end.
fn three_windows() -> Expected {
    let (a, b) = (GRADER_OFFSET_MS, GRADER_OFFSET_MS + 60_000);
    let mut want = Expected::new();
    let fired = |window, reason| RefClosed { window, reason };
    want.fired(fired(ref_window(a, None, &[1, 2, 3, 4]), "length"));
    want.fired(fired(ref_window(a, None, &[5, 6, 7, 8]), "length"));
    want.fired(fired(ref_window(a, None, &[9, 10]), "watermark"));
    want.fired(fired(ref_window(a, Some("k"), &[11, 12, 13, 14]), "length"));
    want.fired(fired(ref_window(a, Some("k"), &[15, 16, 17, 18]), "length"));
    want.fired(fired(ref_window(b, None, &[21, 22, 23, 24]), "length"));
    want.buffered(ref_window(b, None, &[25, 26]));
    want
}

/// The same windows as a node that saw the events in another order emitted them: other ids
/// share a pane, the sizes and the order of reasons are the same.
fn three_windows_emitted() -> BTreeMap<WindowOf, Vec<EmittedPane>> {
    let (a, b) = (GRADER_OFFSET_MS, GRADER_OFFSET_MS + 60_000);
    BTreeMap::from([
        (
            (a, None),
            vec![
                pane(4, "watermark", &[3, 8]),
                pane(0, "length", &[1, 5, 9, 2]),
                pane(2, "length", &[10, 4, 6, 7]),
            ],
        ),
        (
            (a, Some("k".to_owned())),
            vec![
                pane(1, "length", &[18, 17, 16, 15]),
                pane(5, "length", &[14, 13, 12, 11]),
            ],
        ),
        ((b, None), vec![pane(3, "length", &[26, 25, 24, 23])]),
    ])
}

#[test]
fn the_pane_check_passes_panes_of_the_right_size_in_any_grouping() {
    let reference = four_per_pane();
    let (want, got) = (three_windows(), three_windows_emitted());
    check_panes(&reference, &want, &got).expect("a right set of panes");
    // Without a length purge the same windows come out whole.
    let whole = Reference::new(RefConfig {
        max_events: None,
        ..reference.config()
    });
    let mut want = Expected::new();
    let all: Vec<u32> = (1..=10).collect();
    want.fired(RefClosed {
        window: ref_window(GRADER_OFFSET_MS, None, &all),
        reason: "flush",
    });
    let got = BTreeMap::from([(
        (GRADER_OFFSET_MS, None),
        vec![pane(0, "flush", &[10, 9, 8, 7, 6, 5, 4, 3, 2, 1])],
    )]);
    check_panes(&whole, &want, &got).expect("one whole pane");
}

#[test]
fn the_pane_check_fails_a_pane_of_the_wrong_size() {
    let reference = four_per_pane();
    let want = three_windows();
    // What a node under --max-events 5 emits for the first window: the ids are all there, once
    // each (a set-only check passes it), but the length pane holds 5.
    let mut got = three_windows_emitted();
    got.insert(
        (GRADER_OFFSET_MS, None),
        vec![
            pane(0, "length", &[1, 2, 3, 4, 5]),
            pane(2, "length", &[6, 7, 8, 9, 10]),
        ],
    );
    let error = check_panes(&reference, &want, &got)
        .expect_err("a length pane of 5 under --max-events 4")
        .to_string();
    assert!(
        error.contains("1 of 3 windows")
            && error.contains("window window-0 (no key)")
            && error.contains("pane seq 0 (length) holds 5 ids")
            && error.contains("exactly 4"),
        "{error}"
    );
}

/// Every other way a window can break the pane rule is named too.
#[test]
fn the_pane_check_names_every_other_broken_rule() {
    let reference = four_per_pane();
    let want = three_windows();
    let broken: [(WindowOf, Vec<EmittedPane>, &str); 10] = [
        // A smaller length pane, the rest in the last one.
        (
            (GRADER_OFFSET_MS, None),
            vec![
                pane(0, "length", &[1, 2, 3]),
                pane(2, "length", &[4, 5, 6]),
                pane(4, "watermark", &[7, 8, 9, 10]),
            ],
            "pane seq 0 (length) holds 3 ids",
        ),
        // No length purge at all: one pane of everything.
        (
            (GRADER_OFFSET_MS, None),
            vec![pane(4, "watermark", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])],
            "pane seq 4 (watermark) holds 10 ids",
        ),
        // The last pane before a length pane.
        (
            (GRADER_OFFSET_MS, None),
            vec![
                pane(0, "length", &[1, 2, 3, 4]),
                pane(2, "watermark", &[9, 10]),
                pane(4, "length", &[5, 6, 7, 8]),
            ],
            "pane seq 2 (watermark) is followed by pane seq 4 (length)",
        ),
        // A retry counted twice.
        (
            (GRADER_OFFSET_MS, None),
            vec![
                pane(0, "length", &[1, 2, 3, 4]),
                pane(2, "length", &[5, 6, 7, 4]),
                pane(4, "watermark", &[9, 10]),
            ],
            "id 4 is in pane seq 0 and again in pane seq 2",
        ),
        // An id lost.
        (
            (GRADER_OFFSET_MS, None),
            vec![
                pane(0, "length", &[1, 2, 3, 4]),
                pane(2, "length", &[5, 6, 7, 8]),
                pane(4, "watermark", &[9]),
            ],
            "its last pane (seq 4, watermark) holds 1 ids, expected 2",
        ),
        // The wrong reason for the last pane.
        (
            (GRADER_OFFSET_MS, None),
            vec![
                pane(0, "length", &[1, 2, 3, 4]),
                pane(2, "length", &[5, 6, 7, 8]),
                pane(4, "flush", &[9, 10]),
            ],
            "fired by flush, expected watermark",
        ),
        // Too few length panes (and an id lost): a window of 8 ends with its second one.
        (
            (GRADER_OFFSET_MS, Some("k".to_owned())),
            vec![
                pane(1, "length", &[11, 12, 13, 14]),
                pane(5, "flush", &[15, 16, 17]),
            ],
            "1 length pane(s), expected 2",
        ),
        // A last pane as big as a length pane.
        (
            (GRADER_OFFSET_MS, Some("k".to_owned())),
            vec![
                pane(1, "length", &[11, 12, 13, 14]),
                pane(5, "flush", &[15, 16, 17, 18]),
            ],
            "a last pane holds 1 to 3",
        ),
        // A window still open that emitted its buffered ids.
        (
            (GRADER_OFFSET_MS + 60_000, None),
            vec![
                pane(3, "length", &[21, 22, 23, 24]),
                pane(4, "flush", &[25, 26]),
            ],
            "is still open",
        ),
        // A window the reference never opened.
        (
            (GRADER_OFFSET_MS + 120_000, None),
            vec![pane(6, "flush", &[30])],
            "never opened",
        ),
    ];
    for (window, panes, what) in broken {
        let mut got = three_windows_emitted();
        got.insert(window, panes);
        let error = check_panes(&reference, &want, &got)
            .expect_err(what)
            .to_string();
        assert!(error.contains(what), "expected {what:?} in: {error}");
    }
}

/// The rule is the engine's: an engine that sees the batches in another order (and so groups
/// other ids into panes, and fires by watermark at other moments) passes it against the
/// reference run in the original order, and an engine with one more event per pane fails it.
#[test]
fn the_pane_rule_holds_for_the_engine_in_any_order() {
    let w = Workload {
        late_fraction: 0.0,
        ..mixed()
    };
    let render = w.render();
    let size = SizeMs::new(w.size_ms).unwrap();
    // Batches of 700 events span about 84 s of event time; four of them reversed, plus the
    // disorder, stay well within the lateness, so no event is late in either order.
    let lateness = 600_000;
    let batches = w.batches(700);
    let mut reordered: Vec<&Vec<GenEvent>> = Vec::new();
    for chunk in batches.chunks(4) {
        reordered.extend(chunk.iter().rev());
    }

    let mut reference = Reference::new(RefConfig {
        size_ms: w.size_ms,
        frame_offset_ms: GRADER_OFFSET_MS,
        allowed_lateness_ms: Some(lateness),
        max_events: Some(40),
    });
    let mut want = Expected::new();
    // The reference's panes as sets, to show the engine grouped ids otherwise.
    let mut reference_panes = std::collections::BTreeSet::new();
    for batch in &batches {
        reference.admit(&render.reference_events(batch));
        for closed in reference.take_emitted() {
            let mut ids = closed.window.ids.clone();
            ids.sort_unstable();
            reference_panes.insert(ids);
            want.fired(closed);
        }
    }
    for window in reference.flush() {
        want.fired(RefClosed {
            window,
            reason: "flush",
        });
    }
    let lasts: Vec<_> = want.windows().values().filter_map(|w| w.last).collect();
    assert!(lasts.contains(&"watermark") && lasts.contains(&"flush"));

    for (engine_max, passes) in [(40, true), (41, false)] {
        let mut engine = Engine::new(EngineConfig {
            frame: IdFrame::Grader,
            purge: PurgePolicy {
                max_events: NonZeroU32::new(engine_max),
                max_age_ms: None,
            },
            allowed_lateness_ms: Some(lateness as u64),
            late: LatePolicy::Drop,
        });
        let mut closed = Vec::new();
        let mut accepted = 0;
        for batch in &reordered {
            let admission = engine
                .handle_events(Timestamp::EPOCH, size, render.core_events(batch))
                .unwrap();
            assert_eq!(admission.late_count, 0);
            accepted += admission.accepted as u64;
            while let Some(window) = engine.poll_closed() {
                closed.push(window);
            }
        }
        assert_eq!(accepted, reference.totals().accepted);
        closed.extend(engine.flush(None));
        let mut got: BTreeMap<WindowOf, Vec<EmittedPane>> = BTreeMap::new();
        for (seq, window) in closed.iter().enumerate() {
            got.entry((
                window.window.start.as_millis(),
                window.window.key.as_deref().map(str::to_owned),
            ))
            .or_default()
            .push(EmittedPane {
                seq: seq as u64,
                reason: window.reason.as_str().to_owned(),
                ids: window.ids.iter().map(id_text).collect(),
            });
        }
        let regrouped = got
            .values()
            .flatten()
            .filter(|p| p.reason == "length")
            .filter(|p| {
                let mut ids = p.ids.clone();
                ids.sort_unstable();
                !reference_panes.contains(&ids)
            })
            .count();
        assert!(
            regrouped > 10,
            "only {regrouped} panes differ from the reference's"
        );
        let result = check_panes(&reference, &want, &got);
        assert_eq!(
            result.is_ok(),
            passes,
            "engine --max-events {engine_max}: {result:?}"
        );
    }
}
