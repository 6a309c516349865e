//! Criterion benches of `window-core` through its public API: timestamp parsing, grouping a
//! batch, admitting events, flushing, and snapshot plus restore of a large open state.
//!
//! Short by design (the machine is small and shared): ten samples, a few seconds each. With
//! `WINDOW_BENCH_QUICK` set the inputs shrink too, so `cargo xtask bench --quick` only checks that
//! everything runs.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use window_bench::{IdKind, Scale, Workload};
use window_core::{
    Engine, EngineConfig, IdFrame, LatePolicy, PurgePolicy, SizeMs, Timestamp, WindowSpec,
    group_by_window,
};
use window_testkit::calendar::write_rfc3339;

fn config() -> Criterion {
    let scale = Scale::from_env();
    Criterion::default()
        .sample_size(10)
        .warm_up_time(scale.pick(Duration::from_millis(200), Duration::from_secs(1)))
        .measurement_time(scale.pick(Duration::from_millis(500), Duration::from_secs(3)))
        .nresamples(scale.pick(2_000, 20_000))
        .without_plots()
}

const SIZE_MS: i64 = 60_000;

fn engine_config(max_events: Option<u32>) -> EngineConfig {
    EngineConfig {
        frame: IdFrame::Utc,
        purge: PurgePolicy {
            max_events: max_events.and_then(NonZeroU32::new),
            max_age_ms: None,
        },
        allowed_lateness_ms: None,
        late: LatePolicy::Drop,
    }
}

fn size() -> SizeMs {
    SizeMs::new(SIZE_MS).expect("positive")
}

/// RFC 3339 text of 1000 timestamps, 37 ms apart, in UTC (`Z`, the fast path) or at +02:00 (the
/// general path).
fn timestamps(offset_min: i64) -> Vec<String> {
    (0..1000)
        .map(|i| {
            let mut s = String::new();
            write_rfc3339(&mut s, window_bench::DEFAULT_START_MS + i * 37, offset_min);
            s
        })
        .collect()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("timestamp_parse");
    for (name, texts) in [
        ("utc_fast_path", timestamps(0)),
        ("offset_general_path", timestamps(120)),
    ] {
        // Check before measuring: both forms must give the same instants.
        for (i, text) in texts.iter().enumerate() {
            let ms = Timestamp::parse_rfc3339(text).expect("valid").as_millis();
            assert_eq!(ms, window_bench::DEFAULT_START_MS + i as i64 * 37, "{text}");
        }
        group.throughput(Throughput::Elements(texts.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                for text in &texts {
                    black_box(Timestamp::parse_rfc3339(black_box(text)).ok());
                }
            });
        });
    }
    group.finish();
}

fn group_batch(c: &mut Criterion) {
    let scale = Scale::from_env();
    let w = Workload {
        events: scale.pick(10_000, 100_000),
        events_per_window: 1_000,
        keys: 10,
        duplicate_fraction: 0.01,
        ..Workload::default()
    };
    let render = w.render();
    let generated = w.generate();
    let events = render.core_events(&generated);
    let spec = WindowSpec {
        size: size(),
        frame: IdFrame::Utc,
    };
    let windows = group_by_window(spec, &events).expect("fits");
    // Check before measuring: one group per (minute, key) the stream touches.
    let distinct: std::collections::BTreeSet<(i64, Option<u32>)> = generated
        .iter()
        .map(|e| (e.ts_ms.div_euclid(SIZE_MS), e.key))
        .collect();
    assert_eq!(windows.len(), distinct.len());
    let mut group = c.benchmark_group("group_by_window");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function(format!("{}_events_10_keys", events.len()), |b| {
        b.iter(|| group_by_window(spec, black_box(&events)));
    });
    group.finish();
}

fn handle_events(c: &mut Criterion) {
    let scale = Scale::from_env();
    let events = scale.pick(10_000, 50_000);
    let mut group = c.benchmark_group("handle_events");
    group.throughput(Throughput::Elements(events as u64));
    // (name, keys, id kind, length purge). Windows hold 10 000 events over all keys, so each of
    // 1000 keys sees about 10 per window: both purges fire a pane per half window's events.
    let cases = [
        ("1_key", 0, IdKind::Int, None),
        ("1_key_text_ids", 0, IdKind::Text, None),
        ("1000_keys", 1000, IdKind::Int, None),
        ("1_key_max_events_5000", 0, IdKind::Int, Some(5000)),
        ("1000_keys_max_events_5", 1000, IdKind::Int, Some(5)),
    ];
    for (name, keys, ids, max_events) in cases {
        let w = Workload {
            events,
            events_per_window: 10_000,
            keys,
            ids,
            ..Workload::default()
        };
        let render = w.render();
        let batch = w.generate();
        let config = engine_config(max_events);
        // Check before measuring: every event is admitted, and the purge fires.
        let mut engine = Engine::new(config);
        let admitted = engine
            .handle_events(Timestamp::EPOCH, size(), render.core_events(&batch))
            .expect("fits");
        assert_eq!(admitted.accepted, events);
        let mut fired = 0;
        while engine.poll_closed().is_some() {
            fired += 1;
        }
        assert_eq!(fired > 0, max_events.is_some(), "{name}");
        group.bench_function(name, |b| {
            b.iter_batched(
                || (Engine::new(config), render.core_events(&batch)),
                |(mut engine, events)| {
                    let admitted = engine.handle_events(Timestamp::EPOCH, size(), events);
                    while let Some(closed) = engine.poll_closed() {
                        black_box(closed);
                    }
                    black_box(admitted.ok());
                    engine
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// An engine holding `windows` open windows of `per_window` events each.
fn filled(windows: usize, per_window: u32) -> Engine {
    let w = Workload {
        events: windows * per_window as usize,
        events_per_window: per_window,
        ..Workload::default()
    };
    let render = w.render();
    let mut engine = Engine::new(engine_config(None));
    for batch in w.batches(10_000) {
        engine
            .handle_events(Timestamp::EPOCH, size(), render.core_events(&batch))
            .expect("fits");
    }
    engine
}

fn flush(c: &mut Criterion) {
    let scale = Scale::from_env();
    let windows = scale.pick(1_000, 10_000);
    let template = filled(windows, 4);
    assert_eq!(template.stats().open_windows, windows);
    let snapshot = template.snapshot();
    let config = *template.config();
    let mut group = c.benchmark_group("flush");
    group.throughput(Throughput::Elements(windows as u64));
    group.bench_function(format!("{windows}_windows_of_4_events"), |b| {
        b.iter_batched(
            || Engine::restore(config, snapshot.clone()),
            |mut engine| {
                let out = engine.flush(None);
                assert_eq!(out.len(), windows);
                out
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn snapshot_restore(c: &mut Criterion) {
    let scale = Scale::from_env();
    let events = scale.pick(100_000, 1_000_000);
    let engine = filled(events / 1_000, 1_000);
    assert_eq!(engine.stats().buffered_events, events);
    let snapshot = engine.snapshot();
    let config = *engine.config();
    let restored = Engine::restore(config, snapshot.clone());
    assert_eq!(restored.snapshot(), snapshot);
    drop(restored);
    let mut group = c.benchmark_group("snapshot_restore");
    group.throughput(Throughput::Elements(events as u64));
    group.bench_function(format!("snapshot_{events}_events"), |b| {
        b.iter_with_large_drop(|| engine.snapshot());
    });
    group.bench_function(format!("restore_{events}_events"), |b| {
        b.iter_batched(
            || snapshot.clone(),
            |snapshot| Engine::restore(config, snapshot),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = parse, group_batch, handle_events, flush, snapshot_restore
}
criterion_main!(benches);
