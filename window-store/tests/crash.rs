//! Crash test in the manner of sled's own: this binary re-runs itself as a child that ingests a
//! steady stream into a sled store and reports each acknowledgement (after `sync`) on stdout; the
//! parent SIGKILLs it at random moments, restarts it, and at the end checks the store against the
//! acknowledgements: no acknowledged event lost, no event emitted twice, a dense output log.
//! Every other child runs its journal's compactor with no delay between rounds, so that its kill
//! lands inside a compaction (and the next child's recovery replays what that round left).
//!
//! `CRASH_CYCLES` sets the number of kills (default 5; `cargo xtask crash` runs 50).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::num::NonZeroU32;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use window_core::{
    Engine, EngineConfig, Event, EventId, IdFrame, LatePolicy, PurgePolicy, SizeMs, Timestamp,
    WindowKey,
};
use window_store::{Batch, CompactionPolicy, OutputRecord, SledStore, WindowStore, open_engine};
use window_testkit::{Process, Stderr, count_from_env, temp_dir};

const CHILD_DIR: &str = "WINDOW_STORE_CRASH_DIR";
/// Set for the retention child (see [`retention_child`]).
const CHILD_RETENTION: &str = "WINDOW_STORE_CRASH_RETENTION";
const CHILD_START: &str = "WINDOW_STORE_CRASH_START";
/// Set for a child whose events carry payloads, in small payload segments, and whose every sync
/// moves the output log's start to [`PAYLOAD_KEEP`] windows back (see [`payloads_under_retention`]).
const CHILD_PAYLOADS: &str = "WINDOW_STORE_CRASH_PAYLOADS";
/// The payload child's segments, and the windows its log keeps.
const PAYLOAD_SEGMENT_BYTES: u64 = 4096;
const PAYLOAD_KEEP: u64 = 100;
/// Set for a child whose journal compactor runs rounds back to back, so that most kills land
/// inside a compaction.
const CHILD_COMPACTING: &str = "WINDOW_STORE_CRASH_COMPACTING";
/// Events per engine step, and steps per sync (group commit).
const STEP_EVENTS: u64 = 50;
const STEPS_PER_SYNC: u64 = 4;
/// Events are at most this far out of order, well inside the allowed lateness, so no event is
/// ever late the first time it is sent: every event must come out exactly once.
const DISORDER_MS: i64 = 40;
const LATENESS_MS: u64 = 200;
const SIZE_MS: i64 = 100;

fn config() -> EngineConfig {
    EngineConfig {
        frame: IdFrame::Utc,
        purge: PurgePolicy {
            max_events: NonZeroU32::new(7),
            max_age_ms: None,
        },
        allowed_lateness_ms: Some(LATENESS_MS),
        late: LatePolicy::Drop,
    }
}

/// The event with id `n`: time moves 3 ms per event, with a deterministic jitter.
fn event(n: u64) -> Event<'static> {
    let jitter = (n.wrapping_mul(2_654_435_761) % (DISORDER_MS as u64)) as i64;
    let keys = ["a", "b", "c"];
    Event {
        id: EventId::Int(n as i64),
        ts: Timestamp::from_millis(n as i64 * 3 + jitter),
        key: (!n.is_multiple_of(4)).then(|| keys[(n % 3) as usize]),
        value: Some((n % 10) as f64),
        payload: None,
    }
}

/// The payload the payload child gives event `n`.
fn payload_of(n: u64) -> String {
    format!("{{\"n\":{n}}}")
}

fn commit(
    engine: &mut Engine,
    store: &mut dyn WindowStore,
    next_seq: &mut u64,
    extra: Vec<window_core::ClosedWindow>,
) {
    commit_trimming(engine, store, next_seq, extra, None);
}

/// [`commit`], moving the output log's start to `trim` in the same batch.
fn commit_trimming(
    engine: &mut Engine,
    store: &mut dyn WindowStore,
    next_seq: &mut u64,
    extra: Vec<window_core::ClosedWindow>,
    trim: Option<u64>,
) {
    let fired = extra
        .into_iter()
        .chain(std::iter::from_fn(|| engine.poll_closed()))
        .map(|window| {
            let record = OutputRecord {
                seq: *next_seq,
                epoch: 0,
                window,
            };
            *next_seq += 1;
            record
        })
        .collect();
    store
        .commit(&Batch {
            dirty: engine.take_dirty(),
            fired,
            requests: Vec::new(),
            groups: Vec::new(),
            trim_log_below: trim,
        })
        .expect("commit");
}

/// The child: ingest from `start` on, forever, acknowledging after each sync.
#[allow(clippy::print_stdout)] // The child reports acknowledgements to the parent on stdout.
fn child(dir: &Path, start: u64, compacting_constantly: bool, payloads: bool) {
    let mut store = if payloads {
        SledStore::open_with_payload_segments(
            dir,
            CompactionPolicy::default(),
            PAYLOAD_SEGMENT_BYTES,
        )
    } else if compacting_constantly {
        SledStore::open_with(
            dir,
            CompactionPolicy {
                delay: Duration::ZERO,
                ..CompactionPolicy::default()
            },
        )
    } else {
        SledStore::open(dir)
    }
    .expect("child opens the store");
    let (mut engine, mut next_seq) = open_engine(&mut store, config()).expect("child recovers");
    let size = SizeMs::new(SIZE_MS).expect("size");
    let mut stdout = std::io::stdout().lock();
    let mut n = start;
    loop {
        for step in 0..STEPS_PER_SYNC {
            let batch: Vec<Event<'_>> = (n..n + STEP_EVENTS)
                .map(|n| Event {
                    payload: payloads.then(|| payload_of(n).into()),
                    ..event(n)
                })
                .collect();
            engine
                .handle_events(Timestamp::from_millis(n as i64), size, batch)
                .expect("events");
            let trim = (payloads && step == STEPS_PER_SYNC - 1)
                .then(|| next_seq.saturating_sub(PAYLOAD_KEEP));
            commit_trimming(&mut engine, &mut store, &mut next_seq, Vec::new(), trim);
            n += STEP_EVENTS;
        }
        store.sync().expect("sync");
        // Everything below `n` is now durable.
        writeln!(stdout, "acked {n}").expect("report");
        stdout.flush().expect("report");
    }
}

/// Runs the child until a SIGKILL after `lifetime`; returns the highest acknowledged bound, or
/// `None` when the kill came before its first acknowledgement (while it was still recovering:
/// replaying its journal, say, which is a moment worth killing it at too).
fn run_child(
    dir: &Path,
    start: u64,
    lifetime: Duration,
    compacting: bool,
    payloads: bool,
) -> Option<u64> {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    if compacting {
        command.env(CHILD_COMPACTING, "1");
    }
    if payloads {
        command.env(CHILD_PAYLOADS, "1");
    }
    command
        .env(CHILD_DIR, dir)
        .env(CHILD_START, start.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = Process::spawn(&mut command, Stderr::Capture).expect("spawn the child");
    let stdout = child.take_stdout().expect("stdout");
    // Reads to the end of the child's output, which the kill brings.
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| line.strip_prefix("acked ")?.parse::<u64>().ok())
            .max()
    });
    // The moment of the kill is the point of the test, not a wait for anything.
    std::thread::sleep(lifetime);
    // The child never stops by itself: one that did failed, and its stderr says why.
    if let Some(status) = child.exited().expect("poll the child") {
        panic!(
            "{}",
            child.failure(&format!("stopped by itself with {status}"))
        );
    }
    child.kill().expect("SIGKILL the child");
    reader.join().expect("reader")
}

/// The retention child: fires 30 windows, moves the log's start to 20 and lets that compact;
/// then, with a compactor that waits an hour, commits one more batch that moves no mark, syncs
/// it (in the journal only), says `ready` and waits for its SIGKILL.
#[allow(clippy::print_stdout)] // The child reports to the parent on stdout.
fn retention_child(dir: &Path) {
    let size = SizeMs::new(SIZE_MS).expect("size");
    let one_each = EngineConfig {
        purge: PurgePolicy {
            max_events: NonZeroU32::new(1),
            max_age_ms: None,
        },
        ..config()
    };
    let step = |engine: &mut Engine, store: &mut SledStore, next_seq: &mut u64, n: u64, trim| {
        engine
            .handle_events(Timestamp::from_millis(n as i64), size, vec![event(n)])
            .expect("events");
        commit_trimming(engine, store, next_seq, Vec::new(), trim);
        store.sync().expect("sync");
    };
    {
        let mut store = SledStore::open(dir).expect("open");
        let (mut engine, mut next_seq) = open_engine(&mut store, one_each).expect("recover");
        for n in 0..30 {
            step(&mut engine, &mut store, &mut next_seq, n, None);
        }
        step(&mut engine, &mut store, &mut next_seq, 30, Some(20));
        // Dropped: the compactor applies everything (the mark and the trim) before it goes.
    }
    let mut store = SledStore::open_with(
        dir,
        CompactionPolicy {
            delay: Duration::from_secs(3600),
            ..CompactionPolicy::default()
        },
    )
    .expect("reopen");
    let (mut engine, mut next_seq) = open_engine(&mut store, one_each).expect("recover");
    assert_eq!(next_seq, 31);
    step(&mut engine, &mut store, &mut next_seq, 31, None);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready").expect("report");
    stdout.flush().expect("report");
    std::thread::sleep(Duration::from_secs(600));
}

/// A crash with journal records left over, after the output log's start was moved: recovery
/// lays the leftovers over the compacted layout, mark included, and opens from the mark.
fn retention_survives_a_crash_with_leftovers() {
    let dir = temp_dir();
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command
        .env(CHILD_RETENTION, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = Process::spawn(&mut command, Stderr::Capture).expect("spawn the child");
    let ready = child
        .stdout_lines()
        .expect("stdout")
        .next(Duration::from_secs(60));
    assert_eq!(
        ready.as_deref().ok(),
        Some("ready"),
        "{}",
        child.failure("did not get ready")
    );
    child.kill().expect("SIGKILL the child");
    let mut store = SledStore::open(dir.path()).expect("reopen after the crash");
    let opened = window_store::open(&mut store, config()).expect("recover from the mark");
    assert_eq!((opened.log_start, opened.next_seq), (20, 32));
    assert!(store.read_output(19, 1).is_err(), "below the mark");
    assert_eq!(store.read_output(20, 100).expect("kept").len(), 12);
    eprintln!("retention: a crash with leftovers recovers the mark (20) and seqs 20..32");
}

/// Payload segments go while a child that trims its log every sync is SIGKILLed again and again:
/// after the last kill, the recovery reads every open window's payloads back, every window the
/// log keeps has the payloads of its ids, and the log's older segments are gone.
fn payloads_under_retention(cycles: u64) {
    let dir = temp_dir();
    let mut acked = 0_u64;
    for cycle in 0..cycles {
        let lifetime = Duration::from_millis(150 + 50 * cycle);
        let start = acked.saturating_sub(STEP_EVENTS * 3);
        if let Some(now_acked) = run_child(dir.path(), start, lifetime, false, true) {
            acked = acked.max(now_acked);
        }
    }
    assert!(acked > 0, "the payload child never acknowledged anything");
    let mut store = SledStore::open(dir.path()).expect("reopen");
    // Recovery reads the open windows' payloads: a segment removed too early fails it here.
    let opened = window_store::open(&mut store, config()).expect("recover with payloads");
    let log = store
        .read_output(opened.log_start, usize::MAX)
        .expect("read what the log keeps");
    assert!(opened.log_start > 0, "the child moved the log's start");
    assert_eq!(log.len() as u64, opened.next_seq - opened.log_start);
    for record in &log {
        let texts: Vec<Option<String>> = record
            .window
            .payloads
            .iter()
            .map(|p| p.as_deref().map(str::to_owned))
            .collect();
        let want: Vec<Option<String>> = record
            .window
            .ids
            .iter()
            .map(|id| match id {
                EventId::Int(n) => Some(payload_of(*n as u64)),
                other => panic!("unexpected id {other:?}"),
            })
            .collect();
        assert_eq!(texts, want, "seq {}", record.seq);
    }
    let segments = std::fs::read_dir(dir.path().join("payloads"))
        .expect("the payload log")
        .count();
    let written: u64 = (0..acked).map(|n| payload_of(n).len() as u64).sum();
    assert!(
        (segments as u64) < written / PAYLOAD_SEGMENT_BYTES,
        "{segments} segments left of {} written at least",
        written / PAYLOAD_SEGMENT_BYTES
    );
    eprintln!(
        "payloads: {cycles} SIGKILLs under retention; {acked} acknowledged, the log keeps seq {}..{} with their payloads; {segments} payload segments left of {} written",
        opened.log_start,
        opened.next_seq,
        written / PAYLOAD_SEGMENT_BYTES
    );
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_RETENTION) {
        retention_child(Path::new(&dir));
        return;
    }
    if let (Ok(dir), Ok(start)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_START)) {
        let constantly = std::env::var(CHILD_COMPACTING).is_ok();
        let payloads = std::env::var(CHILD_PAYLOADS).is_ok();
        child(
            Path::new(&dir),
            start.parse().expect("start"),
            constantly,
            payloads,
        );
        return;
    }
    retention_survives_a_crash_with_leftovers();
    payloads_under_retention(count_from_env("CRASH_CYCLES", 5).min(3) as u64);
    let cycles = count_from_env("CRASH_CYCLES", 5) as u64;
    let dir = temp_dir();
    let started = Instant::now();
    let mut acked = 0u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for cycle in 0..cycles {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let lifetime = Duration::from_millis(60 + seed % 240);
        // Resend a little of what was acknowledged: ingestion must be idempotent.
        let start = acked.saturating_sub(STEP_EVENTS * 3);
        // Every other child compacts constantly: its kill lands inside a compaction round.
        let compacting = cycle % 2 == 1;
        let Some(now_acked) = run_child(dir.path(), start, lifetime, compacting, false) else {
            eprintln!(
                "crash cycle {cycle}: killed after {lifetime:?}, before its first acknowledgement"
            );
            continue;
        };
        assert!(now_acked >= acked, "acknowledgements went backwards");
        eprintln!("crash cycle {cycle}: killed after {lifetime:?}, acknowledged below {now_acked}");
        acked = now_acked;
    }
    assert!(acked > 0, "the child never acknowledged anything");

    // Recover, flush everything, and account for every event.
    let mut store = SledStore::open(dir.path()).expect("reopen");
    let (mut engine, mut next_seq) = open_engine(&mut store, config()).expect("recover");
    let flushed = engine.flush(None);
    commit(&mut engine, &mut store, &mut next_seq, flushed);
    store.sync().expect("sync");
    let log = store
        .read_output(0, usize::MAX)
        .expect("read the output log");
    let mut seen: HashMap<i64, (WindowKey, u64)> = HashMap::new();
    for (i, record) in log.iter().enumerate() {
        assert_eq!(record.seq, i as u64, "the output log is not dense");
        for id in &record.window.ids {
            let EventId::Int(n) = id else {
                panic!("unexpected id {id:?}")
            };
            if let Some((window, seq)) = seen.insert(*n, (record.window.window.clone(), record.seq))
            {
                panic!(
                    "event {n} emitted twice: seq {seq} ({window:?}) and seq {} ({:?})",
                    record.seq, record.window.window
                );
            }
        }
    }
    let missing: Vec<u64> = (0..acked)
        .filter(|n| !seen.contains_key(&(*n as i64)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "crash test: {cycles} SIGKILLs, {acked} acknowledged events all emitted exactly once in {} windows (seq dense), {:.1}s",
        log.len(),
        started.elapsed().as_secs_f64()
    );
}
