//! Criterion benches of `window-store` through its public API: the cost of making engine steps
//! durable, and the time a restart takes.
//!
//! - `commit`: events/s through engine step + `take_dirty` + `commit`, for the memory store and
//!   for sled with one `sync` per round of steps (group commit) or per step. Measured in the same
//!   run, so the report can give durable/memory as a ratio.
//! - `restart`: `SledStore::open` + `open_engine` over a store holding a large open state, and
//!   the same recovery from a memory store (decoding and restoring only, no disk).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use window_bench::{Generator, Render, Scale, Workload};
use window_core::{Engine, EngineConfig, IdFrame, LatePolicy, PurgePolicy, SizeMs, Timestamp};
use window_store::{Batch, MemoryStore, OutputRecord, SledStore, WindowStore, open_engine};

fn config() -> Criterion {
    let scale = Scale::from_env();
    Criterion::default()
        .sample_size(10)
        .warm_up_time(scale.pick(Duration::from_millis(200), Duration::from_secs(1)))
        .measurement_time(scale.pick(Duration::from_millis(500), Duration::from_secs(4)))
        .nresamples(scale.pick(2_000, 20_000))
        .without_plots()
}

const SIZE_MS: i64 = 60_000;
/// Events per engine step (one request's worth).
const STEP_EVENTS: usize = 100;
/// Steps per round: group commit syncs once per round.
const ROUND_STEPS: usize = 32;

fn size() -> SizeMs {
    SizeMs::new(SIZE_MS).expect("positive")
}

/// How often a durable pipeline syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sync {
    /// After every step, as a node acknowledging each request on its own would.
    EveryStep,
    /// Once per round of steps, as a node acknowledging a batch of requests together would.
    EveryRound,
}

/// An engine driven by the crate-doc contract over a store, on an endless in-order stream whose
/// watermark keeps the open state small (windows fire and move to the output log).
struct Pipeline<S> {
    engine: Engine,
    store: S,
    next_seq: u64,
    stream: Generator,
    render: Render,
    accepted: usize,
}

impl<S: WindowStore> Pipeline<S> {
    fn new(mut store: S) -> Pipeline<S> {
        let w = Workload {
            events_per_window: 2_000,
            keys: 4,
            ..Workload::default()
        };
        let config = EngineConfig {
            frame: IdFrame::Utc,
            purge: PurgePolicy::default(),
            allowed_lateness_ms: Some(0),
            late: LatePolicy::Drop,
        };
        let (engine, next_seq) = open_engine(&mut store, config).expect("open");
        Pipeline {
            engine,
            store,
            next_seq,
            stream: w.stream(),
            render: w.render(),
            accepted: 0,
        }
    }

    /// One round of steps; returns the time spent in engine and store (generating the events is
    /// left out).
    fn round(&mut self, sync: Sync) -> Duration {
        let batches: Vec<Vec<_>> = (0..ROUND_STEPS)
            .map(|_| self.stream.by_ref().take(STEP_EVENTS).collect())
            .collect();
        let start = Instant::now();
        for batch in &batches {
            let admitted = self
                .engine
                .handle_events(Timestamp::EPOCH, size(), self.render.core_events(batch))
                .expect("fits");
            self.accepted += admitted.accepted;
            let mut fired = Vec::new();
            while let Some(window) = self.engine.poll_closed() {
                fired.push(OutputRecord {
                    seq: self.next_seq,
                    epoch: 1,
                    window,
                });
                self.next_seq += 1;
            }
            let dirty = self.engine.take_dirty();
            self.store
                .commit(&Batch {
                    dirty,
                    fired,
                    requests: Vec::new(),
                    groups: Vec::new(),
                    trim_log_below: None,
                })
                .expect("commit");
            if sync == Sync::EveryStep {
                self.store.sync().expect("sync");
            }
        }
        if sync == Sync::EveryRound {
            self.store.sync().expect("sync");
        }
        start.elapsed()
    }

    /// Checks the store against the engine: recovering it must give the engine's open state,
    /// and the output log must hold every fired window.
    fn check(&mut self) {
        let recovered = self.store.recover().expect("recover").expect("committed");
        assert_eq!(recovered.snapshot, self.engine.snapshot());
        assert_eq!(recovered.next_seq, self.next_seq);
        let log = self.store.read_output(0, usize::MAX).expect("read");
        let logged: usize = log.iter().map(|r| r.window.ids.len()).sum();
        let open = self.engine.stats().buffered_events;
        assert_eq!(logged + open, self.accepted);
    }
}

fn commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit");
    group.throughput(Throughput::Elements((ROUND_STEPS * STEP_EVENTS) as u64));
    group.sampling_mode(SamplingMode::Flat);

    let mut memory = Pipeline::new(MemoryStore::in_memory());
    group.bench_function("memory", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| memory.round(Sync::EveryStep)).sum());
    });
    memory.check();
    drop(memory);

    for (name, sync) in [
        ("sled_group_commit_32_steps", Sync::EveryRound),
        ("sled_sync_every_step", Sync::EveryStep),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sled = Pipeline::new(SledStore::open(dir.path()).expect("open sled"));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| sled.round(sync)).sum());
        });
        sled.check();
    }
    group.finish();
}

/// Fills `store` with `events` open events: 1000 per window, no watermark, steps of 10 000.
fn fill(store: &mut dyn WindowStore, config: EngineConfig, events: usize) -> Engine {
    let w = Workload {
        events,
        events_per_window: 1_000,
        ..Workload::default()
    };
    let render = w.render();
    let (mut engine, _) = open_engine(store, config).expect("open");
    for batch in w.batches(10_000) {
        engine
            .handle_events(Timestamp::EPOCH, size(), render.core_events(&batch))
            .expect("fits");
        let dirty = engine.take_dirty();
        store
            .commit(&Batch {
                dirty,
                fired: Vec::new(),
                requests: Vec::new(),
                groups: Vec::new(),
                trim_log_below: None,
            })
            .expect("commit");
    }
    store.sync().expect("sync");
    engine
}

fn restart(c: &mut Criterion) {
    let scale = Scale::from_env();
    let events = scale.pick(100_000, 1_000_000);
    let config = EngineConfig {
        frame: IdFrame::Utc,
        ..EngineConfig::default()
    };
    let mut group = c.benchmark_group("restart");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(events as u64));

    let dir = tempfile::tempdir().expect("tempdir");
    let expected = {
        let mut store = SledStore::open(dir.path()).expect("open sled");
        fill(&mut store, config, events).snapshot()
    };
    let reopen = |path: &Path| {
        let mut store = SledStore::open(path).expect("reopen sled");
        let (engine, _) = open_engine(&mut store, config).expect("recover");
        (store, engine)
    };
    // Check before measuring: the reopened engine holds exactly what was committed.
    let (_, engine) = reopen(dir.path());
    assert_eq!(engine.snapshot(), expected);
    assert_eq!(engine.stats().buffered_events, events);
    drop(engine);
    group.bench_function(format!("sled_open_{events}_open_events"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let opened = reopen(dir.path());
                total += start.elapsed();
                // Closing sled (and freeing the engine) is not part of a restart.
                black_box(opened);
            }
            total
        });
    });

    let mut memory = MemoryStore::in_memory();
    drop(fill(&mut memory, config, events));
    group.bench_function(format!("memory_recover_{events}_open_events"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let engine = open_engine(&mut memory, config).expect("recover");
                total += start.elapsed();
                black_box(engine);
            }
            total
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = commit, restart
}
criterion_main!(benches);
