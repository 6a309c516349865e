//! One conformance suite for every `WindowStore`: memory, sled (in a temp dir) and Redis (a real
//! `redis-server` the test starts on a free loopback port; see `window_testkit::RedisServer`).
//!
//! The central property: drive an engine with random steps, commit each step's batch, and at any
//! point a store reopened from what was committed restores the engine's exact open state, the
//! next sequence number, and the output log of every fired window, once each, densely numbered.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use window_core::{
    Engine, EngineConfig, Event, EventId, IdFrame, LatePolicy, PurgePolicy, SizeMs, Timestamp,
    WindowSelector,
};
use window_store::{
    Batch, MemoryStore, OutputRecord, RedisStore, SledStore, StoreError, WindowStore, open_engine,
};
use window_testkit::{RedisServer, TempDir, temp_dir, wait_for};

/// Makes stores of one kind; `reopen` gives a store over what the previous one committed.
trait Harness {
    fn fresh(&mut self) -> Box<dyn WindowStore>;
    fn reopen(&mut self, old: Box<dyn WindowStore>) -> Box<dyn WindowStore>;
}

struct Memory;

impl Harness for Memory {
    fn fresh(&mut self) -> Box<dyn WindowStore> {
        Box::new(MemoryStore::in_memory())
    }

    fn reopen(&mut self, old: Box<dyn WindowStore>) -> Box<dyn WindowStore> {
        // Nothing to reopen in memory: the same store, read again from scratch by `recover`.
        old
    }
}

struct Sled {
    dir: TempDir,
}

impl Sled {
    fn new() -> Sled {
        Sled { dir: temp_dir() }
    }
}

impl Harness for Sled {
    fn fresh(&mut self) -> Box<dyn WindowStore> {
        self.dir = temp_dir();
        Box::new(SledStore::open(self.dir.path()).expect("open sled"))
    }

    fn reopen(&mut self, old: Box<dyn WindowStore>) -> Box<dyn WindowStore> {
        drop(old);
        Box::new(open_sled(self.dir.path()))
    }
}

/// One server for the whole property test, a fresh namespace per case.
struct Redis {
    server: RedisServer,
    namespace: String,
}

impl Redis {
    fn connect(&self) -> RedisStore {
        RedisStore::connect(&self.server.url(), &self.namespace).expect("connect to redis")
    }
}

impl Harness for Redis {
    fn fresh(&mut self) -> Box<dyn WindowStore> {
        self.namespace = self.server.fresh_namespace();
        Box::new(self.connect())
    }

    fn reopen(&mut self, old: Box<dyn WindowStore>) -> Box<dyn WindowStore> {
        // A new connection that knows nothing but the namespace, as a restarted process would.
        drop(old);
        Box::new(self.connect())
    }
}

/// An event: id, time, key, value, payload (indices into `KEYS` and `PAYLOADS`).
type Ev = (i64, i64, Option<u8>, Option<i32>, Option<u8>);

#[derive(Clone, Debug)]
enum Op {
    Events(Vec<Ev>),
    Deadline(i64),
    Close(i64),
    Flush(Option<i64>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0i64..6, -30i64..60, prop::option::of(0u8..3), prop::option::of(-5i32..5), prop::option::weighted(0.3, 0u8..3)), 1..6)
            .prop_map(Op::Events),
        1 => (0i64..30).prop_map(Op::Deadline),
        1 => (-30i64..60).prop_map(Op::Close),
        1 => prop::option::of(-30i64..60).prop_map(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn config() -> impl Strategy<Value = EngineConfig> {
    (
        prop::option::of(1u32..4),
        prop::option::of(0u64..10),
        prop::option::of(0u64..20),
    )
        .prop_map(|(max_events, max_age_ms, lateness)| EngineConfig {
            frame: IdFrame::Utc,
            purge: PurgePolicy {
                max_events: max_events.and_then(NonZeroU32::new),
                max_age_ms,
            },
            allowed_lateness_ms: lateness,
            late: LatePolicy::Drop,
        })
}

const KEYS: [&str; 3] = ["a", "b", "c"];
const PAYLOADS: [&str; 3] = ["{\"a\":[1,{\"b\":null}]}", "\"é ✓ \\\"q\\\"\"", "-0.5e3"];

/// Commits what the engine did in one step; returns the fired records.
fn commit(
    engine: &mut Engine,
    store: &mut dyn WindowStore,
    next_seq: &mut u64,
    extra: Vec<window_core::ClosedWindow>,
) -> Vec<OutputRecord> {
    commit_trimming(engine, store, next_seq, extra, None)
}

/// [`commit`], moving the output log's start to `trim` in the same batch.
fn commit_trimming(
    engine: &mut Engine,
    store: &mut dyn WindowStore,
    next_seq: &mut u64,
    extra: Vec<window_core::ClosedWindow>,
    trim: Option<u64>,
) -> Vec<OutputRecord> {
    let mut fired = Vec::new();
    for window in extra
        .into_iter()
        .chain(std::iter::from_fn(|| engine.poll_closed()))
    {
        fired.push(OutputRecord {
            seq: *next_seq,
            epoch: 1,
            window,
        });
        *next_seq += 1;
    }
    store
        .commit(&Batch {
            dirty: engine.take_dirty(),
            fired: fired.clone(),
            requests: Vec::new(),
            groups: Vec::new(),
            trim_log_below: trim,
        })
        .expect("commit");
    store.sync().expect("sync");
    fired
}

fn run_case(h: &mut dyn Harness, config: EngineConfig, ops: &[Op]) -> Result<(), TestCaseError> {
    let size = SizeMs::new(10).unwrap();
    let mut store = h.fresh();
    let (mut engine, mut next_seq) = open_engine(&mut *store, config).expect("open");
    prop_assert_eq!(next_seq, 0);
    let mut log: Vec<OutputRecord> = Vec::new();
    let mut now = 0;
    for op in ops {
        match op {
            Op::Events(events) => {
                now += 1;
                let batch: Vec<Event<'_>> = events
                    .iter()
                    .map(|&(id, ts, key, value, payload)| Event {
                        id: EventId::Int(id),
                        ts: Timestamp::from_millis(ts),
                        key: key.map(|k| KEYS[k as usize]),
                        value: value.map(f64::from),
                        payload: payload.map(|p| PAYLOADS[p as usize].into()),
                    })
                    .collect();
                engine
                    .handle_events(Timestamp::from_millis(now), size, batch)
                    .expect("events");
                log.extend(commit(&mut engine, &mut *store, &mut next_seq, Vec::new()));
            }
            Op::Deadline(dt) => {
                now += dt;
                engine.handle_deadline(Timestamp::from_millis(now));
                log.extend(commit(&mut engine, &mut *store, &mut next_seq, Vec::new()));
            }
            Op::Close(ts) => {
                let start = Timestamp::from_millis(ts.div_euclid(10) * 10);
                let closed = engine.close(WindowSelector {
                    start,
                    size: None,
                    key: None,
                });
                log.extend(commit(
                    &mut engine,
                    &mut *store,
                    &mut next_seq,
                    closed.into_iter().collect(),
                ));
            }
            Op::Flush(until) => {
                let flushed = engine.flush(until.map(Timestamp::from_millis));
                log.extend(commit(&mut engine, &mut *store, &mut next_seq, flushed));
            }
            Op::Reopen => {
                store = h.reopen(store);
                let (restored, seq) = open_engine(&mut *store, config).expect("recover");
                prop_assert_eq!(seq, next_seq);
                prop_assert_eq!(restored.snapshot(), engine.snapshot());
                engine = restored;
            }
        }
    }
    // The recovered state equals the live one, and the log holds every fired window once.
    store = h.reopen(store);
    let Some(recovered) = store.recover().expect("recover") else {
        // Only a script of reopens commits nothing: then there is nothing to recover.
        prop_assert!(
            ops.iter().all(|op| matches!(op, Op::Reopen)),
            "nothing recovered"
        );
        return Ok(());
    };
    prop_assert_eq!(recovered.next_seq, next_seq);
    prop_assert_eq!(recovered.snapshot, engine.snapshot());
    let stored = store.read_output(0, usize::MAX).expect("read output");
    prop_assert_eq!(&stored, &log);
    for (i, record) in stored.iter().enumerate() {
        prop_assert_eq!(record.seq, i as u64);
    }
    if let Some(mid) = stored.get(stored.len() / 2) {
        prop_assert_eq!(&store.read_output(mid.seq, 2).expect("read")[0], mid);
    }
    Ok(())
}

fn check_store(h: &mut dyn Harness, cases: u32) {
    let runner_config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        runner_config,
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let h = std::cell::RefCell::new(h);
    runner
        .run(
            &(config(), prop::collection::vec(op(), 1..40)),
            |(engine_config, ops)| run_case(&mut **h.borrow_mut(), engine_config, &ops),
        )
        .unwrap();
}

#[test]
fn memory_store_restores_exactly_what_was_committed() {
    check_store(&mut Memory, 256);
}

#[test]
fn sled_store_restores_exactly_what_was_committed() {
    check_store(&mut Sled::new(), 24);
}

#[test]
fn redis_store_restores_exactly_what_was_committed() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    check_store(
        &mut Redis {
            server,
            namespace: String::new(),
        },
        24,
    );
}

/// Opens a store the test itself closed a moment ago. sled releases its directory lock when its
/// background threads let go of the database, shortly after the last handle is dropped, so a
/// reopen within the same process retries for a bounded time.
fn open_sled(dir: &Path) -> SledStore {
    SledStore::open_waiting(dir, std::time::Duration::from_secs(3)).expect("reopen sled")
}

fn retry_while_locked<T, E: std::fmt::Debug>(mut open: impl FnMut() -> Result<T, E>) -> T {
    let mut last = None;
    wait_for(Duration::from_secs(3), "the directory unlocked", || {
        open().map_err(|error| last = Some(error)).ok()
    })
    .unwrap_or_else(|e| panic!("{e}: {last:?}"))
}

fn first_window_key(dir: &Path) -> Vec<u8> {
    let db = retry_while_locked(|| sled::open(dir));
    db.scan_prefix(b"W")
        .next()
        .expect("a window record")
        .expect("read")
        .0
        .to_vec()
}

#[test]
fn corrupt_and_unknown_version_records_refuse_to_start() {
    let dir = temp_dir();
    {
        let mut store = SledStore::open(dir.path()).unwrap();
        let (mut engine, mut seq) = open_engine(&mut store, EngineConfig::default()).unwrap();
        let event = Event {
            id: EventId::Int(1),
            ts: Timestamp::from_millis(5),
            key: None,
            value: None,
            payload: None,
        };
        engine
            .handle_events(Timestamp::EPOCH, SizeMs::new(10).unwrap(), vec![event])
            .unwrap();
        commit(&mut engine, &mut store, &mut seq, Vec::new());
    }
    let key = first_window_key(dir.path());
    {
        let db = retry_while_locked(|| sled::open(dir.path()));
        let mut value = db.get(&key).unwrap().unwrap().to_vec();
        value[0] = 42;
        db.insert(&key, value).unwrap();
        db.flush().unwrap();
    }
    let mut store = open_sled(dir.path());
    let err = store.recover().unwrap_err();
    match &err {
        StoreError::Corrupt { key: named, reason } => {
            assert_eq!(
                named,
                &key.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            assert!(reason.contains("unknown format version 42"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    drop(store);
    {
        let db = retry_while_locked(|| sled::open(dir.path()));
        db.insert(&key, vec![1u8, 0xff]).unwrap();
        db.flush().unwrap();
    }
    let err = open_sled(dir.path()).recover().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_by_name() {
    let dir = temp_dir();
    let _first = SledStore::open(dir.path()).unwrap();
    // sled's lock is per process (an OS file lock): a second process is refused. Within one
    // process sled refuses too, which is what this checks.
    match SledStore::open(dir.path()) {
        Err(StoreError::Locked { dir: named }) => {
            assert_eq!(named, dir.path().display().to_string())
        }
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second open of a locked directory succeeded"),
    }
}

#[test]
fn a_batch_that_breaks_the_sequence_is_rejected() {
    let mut store = MemoryStore::in_memory();
    let (mut engine, _) = open_engine(&mut store, EngineConfig::default()).unwrap();
    let event = Event {
        id: EventId::Int(1),
        ts: Timestamp::from_millis(5),
        key: None,
        value: None,
        payload: None,
    };
    engine
        .handle_events(Timestamp::EPOCH, SizeMs::new(10).unwrap(), vec![event])
        .unwrap();
    let window = engine.flush(None).pop().unwrap();
    let batch = Batch {
        dirty: engine.take_dirty(),
        fired: vec![OutputRecord {
            seq: 5,
            epoch: 1,
            window,
        }],
        requests: Vec::new(),
        groups: Vec::new(),
        trim_log_below: None,
    };
    assert!(matches!(
        store.commit(&batch),
        Err(StoreError::InvalidBatch(_))
    ));
}

/// The output log is append-only in every backend: a batch holding a `PutNew` of an existing key
/// is refused whole, so a second writer that believes it owns the same sequence number can
/// neither overwrite a fired window nor half-apply its batch.
#[test]
fn a_batch_that_would_overwrite_a_log_record_is_refused_whole() {
    use window_store::{KvBackend, KvOp};

    fn check(backend: &mut dyn KvBackend, name: &str) {
        let put = |k: &str, v: &str| KvOp::Put(k.into(), v.into());
        let put_new = |k: &str, v: &str| KvOp::PutNew(k.into(), v.into());
        backend
            .apply(vec![put("a", "1"), put_new("O1", "first")])
            .unwrap_or_else(|e| panic!("{name}: first batch: {e}"));
        let refused = backend.apply(vec![put("a", "2"), put_new("O1", "second")]);
        match refused {
            Err(StoreError::InvalidBatch(text)) => {
                assert!(text.contains("append-only"), "{name}: {text}");
                // The key in hex, so the message names the record.
                assert!(text.contains("4f31"), "{name}: {text}");
            }
            other => panic!("{name}: an overwrite was not refused: {other:?}"),
        }
        assert_eq!(
            backend.get(b"a").unwrap().as_deref(),
            Some(&b"1"[..]),
            "{name}"
        );
        assert_eq!(
            backend.get(b"O1").unwrap().as_deref(),
            Some(&b"first"[..]),
            "{name}"
        );
        backend
            .apply(vec![put_new("O2", "next")])
            .unwrap_or_else(|e| panic!("{name}: a new key: {e}"));
    }

    check(MemoryStore::in_memory().backend_mut(), "memory");
    let dir = temp_dir();
    check(open_sled(dir.path()).backend_mut(), "sled");
    if let Some(server) = RedisServer::start() {
        let mut store =
            RedisStore::connect(&server.url(), &server.fresh_namespace()).expect("connect");
        check(store.backend_mut(), "redis");
    }
}

/// Remembered requests are kept with the batch that made them, come back in order of number
/// after a reopen, and the newest overwrite the oldest once the ring is full.
#[test]
fn remembered_requests_survive_a_reopen_and_the_ring_keeps_the_newest() {
    use window_store::{REMEMBERED_REQUESTS, RememberedRequest, RequestOutcome};

    fn remembered(n: u64, id: &str, outcome: RequestOutcome) -> RememberedRequest {
        RememberedRequest {
            n,
            id: id.to_owned(),
            outcome,
            fingerprint: n.is_multiple_of(2).then_some(n * 31),
        }
    }

    fn check(h: &mut dyn Harness, name: &str) {
        let mut store = h.fresh();
        let mut engine = Engine::new(EngineConfig::default());
        engine.track_changes();
        let first = [
            remembered(
                0,
                "a",
                RequestOutcome::Ingest {
                    accepted: 2,
                    duplicates: 1,
                    late: 0,
                },
            ),
            remembered(1, "b", RequestOutcome::Close { seq: 0 }),
            remembered(
                2,
                "c",
                RequestOutcome::Flush {
                    first_seq: 1,
                    count: 3,
                },
            ),
        ];
        store
            .commit(&Batch {
                dirty: engine.take_dirty(),
                fired: Vec::new(),
                requests: first.to_vec(),
                groups: Vec::new(),
                trim_log_below: None,
            })
            .unwrap_or_else(|e| panic!("{name}: commit: {e}"));
        store.sync().unwrap();
        let mut store = h.reopen(store);
        let recovered = store.recover().unwrap().expect("committed");
        assert_eq!(recovered.requests, first, "{name}");
        // Number RING + 1 takes the slot of number 1: "b" is forgotten, the others stay.
        let wrapped = remembered(
            REMEMBERED_REQUESTS + 1,
            "d",
            RequestOutcome::Close { seq: 7 },
        );
        store
            .commit(&Batch {
                dirty: engine.take_dirty(),
                fired: Vec::new(),
                requests: vec![wrapped.clone()],
                groups: Vec::new(),
                trim_log_below: None,
            })
            .unwrap_or_else(|e| panic!("{name}: commit: {e}"));
        store.sync().unwrap();
        let mut store = h.reopen(store);
        let ids: Vec<_> = store
            .recover()
            .unwrap()
            .expect("committed")
            .requests
            .into_iter()
            .map(|r| (r.n, r.id))
            .collect();
        assert_eq!(
            ids,
            [
                (0, "a".to_owned()),
                (2, "c".to_owned()),
                (wrapped.n, "d".to_owned())
            ],
            "{name}"
        );
    }

    check(&mut Memory, "memory");
    check(&mut Sled::new(), "sled");
    if let Some(server) = RedisServer::start() {
        check(
            &mut Redis {
                server,
                namespace: String::new(),
            },
            "redis",
        );
    }
}

#[test]
fn consumer_groups_survive_a_reopen_each_written_whole() {
    use window_store::GroupRecord;

    fn group(name: &str, acked_below: u64, acked: &[u64], next: u64) -> GroupRecord {
        GroupRecord {
            name: name.to_owned(),
            first: 0,
            acked_below,
            acked: acked.to_vec(),
            next,
        }
    }

    fn commit(store: &mut dyn WindowStore, engine: &mut Engine, groups: Vec<GroupRecord>) {
        store
            .commit(&Batch {
                dirty: engine.take_dirty(),
                fired: Vec::new(),
                requests: Vec::new(),
                groups,
                trim_log_below: None,
            })
            .expect("commit");
        store.sync().expect("sync");
    }

    fn check(h: &mut dyn Harness, name: &str) {
        let mut store = h.fresh();
        let mut engine = Engine::new(EngineConfig::default());
        engine.track_changes();
        let (a, b) = (group("a", 3, &[5, 9], 12), group("b-2", 0, &[], 0));
        commit(&mut *store, &mut engine, vec![a.clone(), b.clone()]);
        let mut store = h.reopen(store);
        let recovered = store.recover().expect("recover").expect("committed");
        assert_eq!(recovered.groups, [a, b.clone()], "{name}");
        // A later write of one group replaces it whole; the other stays.
        let a = group("a", 10, &[], 12);
        commit(&mut *store, &mut engine, vec![a.clone()]);
        let mut store = h.reopen(store);
        let recovered = store.recover().expect("recover").expect("committed");
        assert_eq!(recovered.groups, [a, b], "{name}");
    }

    check(&mut Memory, "memory");
    check(&mut Sled::new(), "sled");
    if let Some(server) = RedisServer::start() {
        check(
            &mut Redis {
                server,
                namespace: String::new(),
            },
            "redis",
        );
    }
}

/// Windows whose panes fire at three events (`--max-events 3`).
fn panes_of_three() -> EngineConfig {
    EngineConfig {
        purge: PurgePolicy {
            max_events: NonZeroU32::new(3),
            max_age_ms: None,
        },
        ..EngineConfig::default()
    }
}

/// A sled store and its engine, one event per committed batch.
struct OneByOne {
    store: SledStore,
    engine: Engine,
    next_seq: u64,
    size: SizeMs,
    /// What fired, since opened.
    fired: Vec<OutputRecord>,
}

impl OneByOne {
    fn open(mut store: SledStore, config: EngineConfig, size: SizeMs) -> OneByOne {
        let (engine, next_seq) = open_engine(&mut store, config).unwrap();
        OneByOne {
            store,
            engine,
            next_seq,
            size,
            fired: Vec::new(),
        }
    }

    /// Commits `event`, moving the log's start to `trim` in the same batch.
    fn step(&mut self, event: Event<'_>, trim: Option<u64>) {
        self.engine
            .handle_events(Timestamp::EPOCH, self.size, vec![event])
            .unwrap();
        let fired = commit_trimming(
            &mut self.engine,
            &mut self.store,
            &mut self.next_seq,
            Vec::new(),
            trim,
        );
        self.fired.extend(fired);
    }
}

/// sled keeps payload texts in its payload log, each written once: the chunk that admitted it and
/// the output record of its pane both refer to the same bytes, also across a reopen (the
/// recovered window's payloads are still known as written), and a payload that fires in the step
/// that admitted it is written once too. The log's size is exactly the payloads' bytes.
#[test]
fn sled_writes_each_payload_once_and_reads_it_back_after_a_reopen() {
    let dir = temp_dir();
    let config = panes_of_three();
    let size = SizeMs::new(1_000).unwrap();
    let event = |id: i64| Event {
        id: EventId::Int(id),
        ts: Timestamp::from_millis(id),
        key: None,
        value: None,
        payload: (id % 4 != 3).then(|| format!("{{\"n\":{id},\"text\":\"é{id}\"}}").into()),
    };
    let mut written = 0;
    let mut fired = Vec::new();
    // Steps of 2, 1, 4 and 2 events: panes of 3 fire across steps and within one.
    let steps: [&[i64]; 4] = [&[0, 1], &[2], &[3, 4, 5, 6], &[7, 8]];
    for (n, step) in steps.iter().enumerate() {
        // Reopen before every step but the first: the open payloads come back from the log.
        let mut store = if n == 0 {
            SledStore::open(dir.path()).unwrap()
        } else {
            open_sled(dir.path())
        };
        let (mut engine, mut seq) = open_engine(&mut store, config).unwrap();
        let events: Vec<Event> = step.iter().map(|&id| event(id)).collect();
        written += events
            .iter()
            .filter_map(|e| e.payload.as_ref().map(|p| p.len()))
            .sum::<usize>();
        engine
            .handle_events(Timestamp::EPOCH, size, events)
            .unwrap();
        fired.extend(commit(&mut engine, &mut store, &mut seq, Vec::new()));
        store.sync().unwrap();
    }
    let log_bytes = payload_log_bytes(dir.path());
    assert_eq!(
        log_bytes, written as u64,
        "every payload written exactly once"
    );
    assert_eq!(fired.len(), 3, "three full panes of three");
    let store = open_sled(dir.path());
    let read = store.read_output(0, 10).unwrap();
    assert_eq!(
        read, fired,
        "the output log reads its payloads back from the log"
    );
    let texts: Vec<Option<String>> = read
        .iter()
        .flat_map(|r| {
            r.window
                .payloads
                .iter()
                .map(|p| p.as_deref().map(str::to_owned))
        })
        .collect();
    let want: Vec<Option<String>> = (0..9)
        .map(|id| event(id).payload.map(|p| p.to_string()))
        .collect();
    assert_eq!(texts, want);
}

/// A window closed and opened again in one batch (a flush, then new events for the same window):
/// the old instance's payloads are found for its record and the new one's for its own later,
/// each written once.
#[test]
fn sled_writes_payloads_once_when_a_window_is_closed_and_opened_again_in_one_batch() {
    let dir = temp_dir();
    let size = SizeMs::new(1_000).unwrap();
    let event = |id: i64| Event {
        id: EventId::Int(id),
        ts: Timestamp::from_millis(id),
        key: None,
        value: None,
        payload: Some(format!("{{\"n\":{id}}}").into()),
    };
    let bytes = |ids: std::ops::Range<i64>| -> u64 {
        ids.map(|id| event(id).payload.map_or(0, |p| p.len() as u64))
            .sum()
    };
    let mut store = SledStore::open(dir.path()).unwrap();
    let (mut engine, mut seq) = open_engine(&mut store, EngineConfig::default()).unwrap();
    engine
        .handle_events(Timestamp::EPOCH, size, (0..3).map(event).collect())
        .unwrap();
    commit(&mut engine, &mut store, &mut seq, Vec::new());
    // One batch: the window is flushed (its record refers to what its chunk wrote), then opened
    // again with new events.
    let flushed = engine.flush(None);
    engine
        .handle_events(Timestamp::EPOCH, size, (3..5).map(event).collect())
        .unwrap();
    commit(&mut engine, &mut store, &mut seq, flushed);
    // The new instance fires in a later batch: its payloads were written by its chunk.
    let flushed = engine.flush(None);
    commit(&mut engine, &mut store, &mut seq, flushed);
    store.sync().unwrap();
    let log_bytes = payload_log_bytes(dir.path());
    assert_eq!(log_bytes, bytes(0..5), "every payload written exactly once");
    drop(store);
    let store = open_sled(dir.path());
    let read = store.read_output(0, 10).unwrap();
    let texts: Vec<Vec<String>> = read
        .iter()
        .map(|r| {
            r.window
                .payloads
                .iter()
                .map(|p| p.as_deref().unwrap_or("-").to_owned())
                .collect()
        })
        .collect();
    assert_eq!(
        texts,
        [
            (0..3)
                .map(|id| format!("{{\"n\":{id}}}"))
                .collect::<Vec<_>>(),
            (3..5)
                .map(|id| format!("{{\"n\":{id}}}"))
                .collect::<Vec<_>>(),
        ]
    );
}

/// The bytes of a sled store's payload log, over its segments.
/// The bytes of payload texts in the payload log's segments: each up to its last byte that is
/// not zero (the zeros after it are space written ahead, and JSON holds no zero byte).
fn payload_log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("payloads"))
        .unwrap()
        .map(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            bytes
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |last| last + 1) as u64
        })
        .sum()
}

/// Windows of one event each (`--max-events 1`): each event fires its window at once.
fn config_of_one() -> EngineConfig {
    EngineConfig {
        frame: IdFrame::Utc,
        purge: PurgePolicy {
            max_events: NonZeroU32::new(1),
            max_age_ms: None,
        },
        allowed_lateness_ms: None,
        late: LatePolicy::Drop,
    }
}

/// The output log's retention (`Batch::trim_log_below`): reads below the mark are refused,
/// naming the oldest seq kept, the records from the mark on are all there, and the mark survives
/// a reopen, whose checks start at it.
fn the_log_retention_trims_and_survives_a_reopen(h: &mut dyn Harness) {
    let config = config_of_one();
    let size = SizeMs::new(10).unwrap();
    let mut store = h.fresh();
    let (mut engine, mut next_seq) = open_engine(&mut *store, config).expect("open");
    let mut fire = |engine: &mut Engine, store: &mut dyn WindowStore, id: i64, trim| {
        engine
            .handle_events(
                Timestamp::from_millis(id),
                size,
                vec![Event {
                    id: EventId::Int(id),
                    ts: Timestamp::from_millis(id * 10),
                    key: None,
                    value: None,
                    payload: None,
                }],
            )
            .expect("events");
        let fired = commit_trimming(engine, store, &mut next_seq, Vec::new(), trim);
        assert_eq!(fired.len(), 1, "one event, one window (--max-events 1)");
    };
    for id in 0..30 {
        fire(&mut engine, &mut *store, id, None);
    }
    assert_eq!(store.read_output(0, 100).expect("whole log").len(), 30);
    // Seq 30 fires in the batch that moves the mark to 20.
    fire(&mut engine, &mut *store, 30, Some(20));
    let refused = store.read_output(5, 10).expect_err("below the mark");
    assert!(
        matches!(
            refused,
            StoreError::Trimmed {
                from: 5,
                oldest: 20
            }
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("seq 20"), "{refused}");
    let kept: Vec<u64> = store
        .read_output(20, 100)
        .expect("from the mark")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(kept, (20..=30).collect::<Vec<_>>());
    // A mark at or below the current one changes nothing.
    fire(&mut engine, &mut *store, 31, Some(10));
    assert!(store.read_output(19, 1).is_err());
    store = h.reopen(store);
    let opened = window_store::open(&mut *store, config).expect("reopen from the mark");
    assert_eq!((opened.log_start, opened.next_seq), (20, 32));
    let kept = store.read_output(0, 100);
    assert!(matches!(kept, Err(StoreError::Trimmed { oldest: 20, .. })));
    assert_eq!(store.read_output(20, 100).expect("kept").len(), 12);
}

#[test]
fn memory_store_keeps_its_log_from_the_retention_mark() {
    the_log_retention_trims_and_survives_a_reopen(&mut Memory);
}

#[test]
fn sled_store_keeps_its_log_from_the_retention_mark() {
    the_log_retention_trims_and_survives_a_reopen(&mut Sled::new());
}

#[test]
fn redis_store_keeps_its_log_from_the_retention_mark() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut redis = Redis {
        server,
        namespace: String::new(),
    };
    the_log_retention_trims_and_survives_a_reopen(&mut redis);
    // Whole entries of the Stream go once their last record is below the mark: fire four more
    // windows in a compaction round of their own, then move the mark into them.
    let mut store: Box<dyn WindowStore> = Box::new(redis.connect());
    let (mut engine, mut next_seq) = open_engine(&mut *store, config_of_one()).expect("open");
    assert_eq!(next_seq, 32);
    let size = SizeMs::new(10).unwrap();
    let mut fire = |store: &mut dyn WindowStore, id: i64, trim| {
        let event = Event {
            id: EventId::Int(id),
            ts: Timestamp::from_millis(id * 10),
            key: None,
            value: None,
            payload: None,
        };
        engine
            .handle_events(Timestamp::from_millis(id), size, vec![event])
            .expect("events");
        commit_trimming(&mut engine, store, &mut next_seq, Vec::new(), trim);
    };
    for id in 32..36 {
        fire(&mut *store, id, None);
    }
    // The journal's compactor gathers a round for 200 ms.
    std::thread::sleep(Duration::from_millis(600));
    fire(&mut *store, 36, Some(33));
    drop(store); // The compactor applies what is left before it goes.
    let log = format!("{{wn:{}}}:log", redis.namespace);
    let count = |args: &[&str]| -> u64 {
        let reply = redis.server.command(args).expect("redis");
        reply.first().map_or(0, |n| n.parse().expect("a number"))
    };
    let trimmed = count(&["GET", &format!("{{wn:{}}}:trimmed", redis.namespace)]);
    let length = count(&["XLEN", &log]);
    assert!(
        trimmed >= 1 && length >= 1,
        "the entries below seq 33 went, counted: {length} left, {trimmed} trimmed"
    );
    let mut store: Box<dyn WindowStore> = Box::new(redis.connect());
    let opened = window_store::open(&mut *store, config_of_one()).expect("reopen");
    assert_eq!((opened.log_start, opened.next_seq), (33, 37));
    let kept: Vec<u64> = store
        .read_output(33, 100)
        .expect("kept")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(kept, (33..37).collect::<Vec<_>>());
    drop(store);
    // An entry deleted by hand at or above the mark is still noticed.
    redis
        .server
        .command(&["XTRIM", &log, "MAXLEN", "0"])
        .expect("XTRIM by hand");
    let mut store = redis.connect();
    let refused = window_store::open(&mut store, config_of_one()).expect_err("entries lost");
    assert!(
        matches!(refused, StoreError::NamespaceLost { .. }),
        "{refused}"
    );
}

/// The files of a sled store's payload log, by segment number.
fn payload_segments(dir: &Path) -> Vec<u32> {
    let mut segments: Vec<u32> = std::fs::read_dir(dir.join("payloads"))
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log").unwrap().parse().unwrap()
        })
        .collect();
    segments.sort_unstable();
    segments
}

/// sled's payload log keeps only what can still be read: a closed segment goes, once its batch
/// is durable, when the retention dropped every output record that referred to it and no open
/// window's pane holds a payload in it; what is kept reads back, also after a reopen, whose
/// store keeps the segments from before it until the log's start passes every record of then.
#[test]
fn sled_removes_the_payload_segments_nothing_readable_refers_to() {
    let dir = temp_dir();
    let config = panes_of_three();
    let size = SizeMs::new(1_000_000).unwrap();
    // 40-byte payloads in 64-byte segments: payload n is alone in segment n.
    let event = |id: i64, key: Option<&'static str>| Event {
        id: EventId::Int(id),
        ts: Timestamp::from_millis(id),
        key,
        value: None,
        payload: Some(format!("\"{id:038}\"").into()),
    };
    let open = |dir: &Path| {
        retry_while_locked(|| {
            SledStore::open_with_payload_segments(
                dir,
                window_store::CompactionPolicy::default(),
                64,
            )
        })
    };
    let mut run = OneByOne::open(open(dir.path()), config, size);
    // Id 0 opens a window of key "old" that stays open; ids 1-30 fill ten panes of three:
    // seq k holds ids 3k+1..3k+3.
    run.step(event(0, Some("old")), None);
    for id in 1..=30 {
        run.step(event(id, None), (id == 30).then_some(9));
    }
    assert_eq!(run.fired.len(), 10);
    // Kept: segment 0 (the open window's), 28-30 (seq 9's; 30 is the one appended to).
    assert_eq!(payload_segments(dir.path()), [0, 28, 29, 30]);
    let kept = run.store.read_output(9, 10).unwrap();
    assert_eq!(kept, run.fired[9..], "what the log keeps reads back");

    // Reopened: the segments from before stay until the log's start passes seq 9.
    drop(run);
    let mut run = OneByOne::open(open(dir.path()), config, size);
    assert_eq!(run.next_seq, 10);
    run.step(event(31, None), None);
    run.step(event(32, None), None);
    assert_eq!(payload_segments(dir.path()), [0, 28, 29, 30, 31, 32]);
    run.step(event(33, None), Some(10));
    // Seq 10 (ids 31-33) is the log; the window "old" still holds segment 0.
    assert_eq!(payload_segments(dir.path()), [0, 31, 32, 33]);
    // The window "old" fills its pane (seq 11: ids 0, 34, 35), then seq 12 passes it.
    run.step(event(34, Some("old")), None);
    run.step(event(35, Some("old")), None);
    for id in 36..=38 {
        run.step(event(id, None), (id == 38).then_some(12));
    }
    assert_eq!(payload_segments(dir.path()), [36, 37, 38]);
    let fired = std::mem::take(&mut run.fired);
    drop(run);
    let old = &fired[1];
    assert_eq!(old.seq, 11);
    assert_eq!(old.window.window.key.as_deref(), Some("old"));
    assert_eq!(old.window.payloads.len(), 3, "{old:?}");
    let store = open(dir.path());
    assert_eq!(store.read_output(12, 10).unwrap(), fired[2..]);
}
