//! Service scenarios: a script of requests, timers, commits and restarts in, the answers and the
//! store batches out, compared with an inline snapshot. Only `check` (through `Harness`) calls
//! the service's API, so a change to it is made in one place.
//!
//! Script lines (times are milliseconds of processing time; window size 1000 ms, UTC frame):
//! - `config lateness=MS max_events=N idle=MS ingest_time=1`: the firing rules and, with
//!   `ingest_time`, events stamped with the time their request is applied; `ahead=MS` refuses
//!   events further ahead of `now`, `max_open=N` refuses requests that would open more than N
//!   windows (first line, optional)
//! - `at T ingest ID@TS[/KEY] ... [rid=R]`: one ingest request
//! - `close START [key=K] [rid=R]`, `flush [until=TS] [rid=R]`: close and flush
//! - `timeout at T`: the timer fired
//! - `commit at T`: the group's batch is committed and synced
//! - `restart at T`: the process dies and a new service recovers from the store (what was not
//!   committed is lost, as it was never acknowledged)
//! - `stats`, `log`: the counters, and the whole output log

use std::num::NonZeroU32;

use expect_test::{Expect, expect};
use window_core::{
    ClosedWindow, EngineConfig, Event, EventId, IdFrame, LatePolicy, PurgePolicy, SizeMs,
    Timestamp, WindowId,
};
use window_proto::ProtoError;
use window_service::{Answer, Config, NoLog, OutputLog, Service, TimeBase};
use window_store::{MemoryStore, OutputRecord, StoreError, WindowStore};

const SIZE: i64 = 1000;

struct Harness {
    config: Config,
    store: MemoryStore,
    service: Service,
    out: String,
}

/// The store's output log, as the service reads it for a repeat.
struct Log<'a>(&'a MemoryStore);

impl OutputLog for Log<'_> {
    fn read_output(&self, from: u64, limit: usize) -> Result<Vec<OutputRecord>, StoreError> {
        self.0.read_output(from, limit)
    }
}

fn check(script: &str, expect: Expect) {
    expect.assert_eq(&run(script));
}

fn run(script: &str) -> String {
    let mut lines = script.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut config = plain_config(7);
    let mut peeked = lines.next();
    if let Some(line) = peeked
        && let Some(options) = line.strip_prefix("config ")
    {
        for option in options.split_whitespace() {
            let (name, value) = option.split_once('=').expect("name=value");
            let n: u64 = value.parse().expect("a number");
            match name {
                "lateness" => config.engine.allowed_lateness_ms = Some(n),
                "max_events" => config.engine.purge.max_events = NonZeroU32::new(n as u32),
                "max_age" => config.engine.purge.max_age_ms = Some(n),
                "idle" => config.idle_timeout_ms = Some(n),
                "ingest_time" => config.time = TimeBase::Ingest,
                "max_open" => config.max_open_windows = Some(n as usize),
                "ahead" => config.max_event_ahead_ms = Some(n),
                other => panic!("unknown option {other}"),
            }
        }
        peeked = lines.next();
    }
    let mut harness = Harness::open(config, MemoryStore::in_memory(), Timestamp::from_millis(0));
    for line in peeked.into_iter().chain(lines) {
        harness.out.push_str(&format!("> {line}\n"));
        harness.step(line);
    }
    harness.out
}

impl Harness {
    fn open(config: Config, mut store: MemoryStore, now: Timestamp) -> Harness {
        let opened = window_store::open(&mut store, config.engine).expect("recover");
        Harness {
            service: Service::restore(config, opened, now),
            config,
            store,
            out: String::new(),
        }
    }

    fn step(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let rid = words
            .iter()
            .find_map(|w| w.strip_prefix("rid="))
            .map(str::to_owned);
        let option = |name: &str| {
            words
                .iter()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        };
        match words.as_slice() {
            ["at", t, "ingest", events @ ..] => {
                let events: Vec<(EventId, i64, Option<String>)> = events
                    .iter()
                    .filter(|w| !w.starts_with("rid="))
                    .map(|w| parse_event(w))
                    .collect();
                let events = events
                    .iter()
                    .map(|(id, ts, key)| Event {
                        id: id.clone(),
                        ts: Timestamp::from_millis(*ts),
                        key: key.as_deref(),
                        value: None,
                        payload: None,
                    })
                    .collect();
                let answer = self.service.ingest(ms(t), size(), events, rid);
                self.answer(answer, |out, counts| {
                    out.push_str(&format!(
                        "ingest_ok accepted={} duplicates={} late={}\n",
                        counts.accepted, counts.duplicates, counts.late
                    ));
                });
            }
            ["close", start, ..] => {
                let log = Log(&self.store);
                let id = WindowId(start.parse().expect("a window start"));
                let answer = self.service.close(&log, id, None, option("key"), rid);
                self.answer(answer, |out, record| show_record(out, &record));
            }
            ["flush", ..] => {
                let log = Log(&self.store);
                let until = option("until").map(ms);
                let answer = self.service.flush(&log, until, rid);
                self.answer(answer, |out, records| {
                    out.push_str(&format!("flushed {}\n", records.len()));
                    records.iter().for_each(|r| show_record(out, r));
                });
            }
            ["timeout", "at", t] => {
                let fired = self.service.handle_timeout(ms(t));
                self.show_fired(fired);
            }
            ["next", "timeout", "at", t] => {
                let next = self.service.next_timeout(ms(t));
                let text = next.map_or("none".to_owned(), |t| t.as_millis().to_string());
                self.out.push_str(&format!("next timeout {text}\n"));
            }
            ["commit", "at", t] => self.commit(ms(t)),
            ["restart", "at", t] => {
                let store = std::mem::replace(&mut self.store, MemoryStore::in_memory());
                let out = std::mem::take(&mut self.out);
                *self = Harness::open(self.config, store, ms(t));
                self.out = out;
                self.out
                    .push_str(&format!("recovered next_seq={}\n", self.service.next_seq()));
            }
            ["stats"] => {
                let s = self.service.stats();
                self.out.push_str(&format!(
                    "open={} buffered={} next_seq={} accepted={} duplicates={} late={} watermark={}\n",
                    s.open_windows,
                    s.buffered_events,
                    s.next_seq,
                    s.counters.accepted,
                    s.counters.duplicates,
                    s.counters.late,
                    s.watermark.map_or("none".to_owned(), |w| w.as_millis().to_string()),
                ));
            }
            ["log"] => {
                let records = self.store.read_output(0, usize::MAX).expect("log");
                records.iter().for_each(|r| show_record(&mut self.out, r));
            }
            _ if self.group_step(&words) => {}
            _ => panic!("unknown script line {line:?}"),
        }
    }

    /// The consumer-group lines; false for any other line.
    fn group_step(&mut self, words: &[&str]) -> bool {
        let option = |name: &str| {
            words
                .iter()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .map(|v| v.parse::<u64>().expect("a number"))
        };
        match words {
            ["join", group, "member", m, ..] => {
                let max = option("max").unwrap_or(1000) as u32;
                let joined = self.service.join_group(group, num(m), max, option("from"));
                match joined {
                    Ok(from) => self
                        .out
                        .push_str(&format!("{m} joined {group} at {from}\n")),
                    Err(e) => self.out.push_str(&format!("error {}: {e}\n", e.code())),
                }
            }
            ["leave", m] => self.service.leave_group(num(m)),
            ["ack", m, seqs @ ..] => {
                let seqs: Vec<u64> = seqs.iter().map(|s| num(s)).collect();
                match self.service.ack(num(m), &seqs) {
                    Ok(n) => self.out.push_str(&format!("ack_ok acked={n}\n")),
                    Err(e) => self.out.push_str(&format!("error {}: {e}\n", e.code())),
                }
            }
            ["deliver", "at", t] => {
                for d in self.service.poll_deliveries(ms(t)) {
                    self.out.push_str(&format!(
                        "#{} to {} (delivery {})\n",
                        d.seq, d.member, d.delivery
                    ));
                }
            }
            ["groups"] => {
                for g in self.service.group_stats() {
                    self.out.push_str(&format!(
                        "group {}: members={} pending={} acked={} redelivered={} lag={}\n",
                        g.name, g.members, g.pending, g.acked, g.redelivered, g.lag
                    ));
                }
            }
            _ => return false,
        }
        true
    }

    fn answer<T>(&mut self, answer: Answer<T>, show: impl FnOnce(&mut String, T)) {
        match answer.result {
            Ok(value) => {
                if answer.repeated {
                    self.out.push_str("(repeated) ");
                }
                show(&mut self.out, value);
            }
            Err(error) => show_error(&mut self.out, &error),
        }
        self.show_fired(answer.fired);
    }

    fn show_fired(&mut self, fired: std::ops::Range<u64>) {
        let records = self.service.fired(fired).to_vec();
        for record in &records {
            self.out.push_str("fired ");
            show_record(&mut self.out, record);
        }
    }

    fn commit(&mut self, now: Timestamp) {
        match self.service.poll_batch(now) {
            None => self.out.push_str("nothing to write\n"),
            Some(batch) => {
                self.out.push_str(&format!(
                    "batch: {} windows, {} removed, fired {:?}, {} requests, watermark {}\n",
                    batch.dirty.windows.len(),
                    batch.dirty.removed.len(),
                    batch.fired.iter().map(|r| r.seq).collect::<Vec<_>>(),
                    batch.requests.len(),
                    batch
                        .dirty
                        .watermark
                        .map_or("none".to_owned(), |w| w.as_millis().to_string()),
                ));
                for g in &batch.groups {
                    self.out.push_str(&format!(
                        "  group {}: first={} acked_below={} acked={:?} next={}\n",
                        g.name, g.first, g.acked_below, g.acked, g.next
                    ));
                }
                self.store.commit(&batch).expect("commit");
                self.store.sync().expect("sync");
                self.service.on_committed(now, batch);
            }
        }
    }
}

/// UTC windows, no watermark, no purge, no idle timeout: what a script's `config` line changes.
fn plain_config(epoch: u64) -> Config {
    Config {
        engine: EngineConfig {
            frame: IdFrame::Utc,
            purge: PurgePolicy::default(),
            allowed_lateness_ms: None,
            late: LatePolicy::Drop,
        },
        epoch,
        idle_timeout_ms: None,
        ack_timeout_ms: window_service::DEFAULT_ACK_TIMEOUT_MS,
        max_event_ahead_ms: None,
        max_open_windows: None,
        log_retention: window_service::Retention::KEEP_ALL,
        time: TimeBase::Event,
    }
}

fn show_record(out: &mut String, record: &OutputRecord) {
    out.push_str(&format!("#{} epoch {} ", record.seq, record.epoch));
    show_window(out, &record.window);
}

fn show_window(out: &mut String, window: &ClosedWindow) {
    let ids: Vec<String> = window.ids.iter().map(ToString::to_string).collect();
    let key = window
        .window
        .key
        .as_deref()
        .map_or(String::new(), |k| format!("/{k}"));
    out.push_str(&format!(
        "[{}{key}) [{}] {}\n",
        window.window.start.as_millis(),
        ids.join(" "),
        window.reason.as_str()
    ));
}

fn show_error(out: &mut String, error: &ProtoError) {
    out.push_str(&format!("error {}: {error}\n", error.code()));
}

fn parse_event(word: &str) -> (EventId, i64, Option<String>) {
    let (id, rest) = word.split_once('@').expect("ID@TS");
    let (ts, key) = match rest.split_once('/') {
        Some((ts, key)) => (ts, Some(key.to_owned())),
        None => (rest, None),
    };
    (
        EventId::Int(id.parse().expect("an integer id")),
        ts.parse().expect("a millisecond timestamp"),
        key,
    )
}

fn ms(text: &str) -> Timestamp {
    Timestamp::from_millis(text.parse().expect("milliseconds"))
}

fn size() -> SizeMs {
    SizeMs::new(SIZE).expect("size")
}

#[test]
fn ingest_close_and_flush_number_every_window_once() {
    check(
        r"
        at 10 ingest 1@100 2@200 3@1100
        at 11 ingest 2@250 4@2100
        close 0
        close 0
        flush until=2000
        flush
        stats
        ",
        expect![[r#"
            > at 10 ingest 1@100 2@200 3@1100
            ingest_ok accepted=3 duplicates=0 late=0
            > at 11 ingest 2@250 4@2100
            ingest_ok accepted=1 duplicates=1 late=0
            > close 0
            #0 epoch 7 [0) [1 2] close
            > close 0
            error 20: no open window window-0: it was never opened, or was already closed
            > flush until=2000
            flushed 1
            #1 epoch 7 [1000) [3] flush
            > flush
            flushed 1
            #2 epoch 7 [2000) [4] flush
            > stats
            open=0 buffered=0 next_seq=3 accepted=4 duplicates=1 late=0 watermark=none
        "#]],
    );
}

#[test]
fn the_rules_fire_windows_on_their_own_after_the_reply() {
    check(
        r"
        config lateness=500 max_events=2
        at 0 ingest 1@100 2@150 3@160
        at 1 ingest 4@1700
        at 2 ingest 5@300
        stats
        ",
        expect![[r#"
            > at 0 ingest 1@100 2@150 3@160
            ingest_ok accepted=3 duplicates=0 late=0
            fired #0 epoch 7 [0) [1 2] length
            > at 1 ingest 4@1700
            ingest_ok accepted=1 duplicates=0 late=0
            fired #1 epoch 7 [0) [3] watermark
            > at 2 ingest 5@300
            ingest_ok accepted=0 duplicates=0 late=1
            > stats
            open=1 buffered=1 next_seq=2 accepted=4 duplicates=0 late=1 watermark=1200
        "#]],
    );
}

#[test]
fn one_group_commits_several_requests_in_one_batch() {
    check(
        r"
        at 0 ingest 1@100
        at 0 ingest 2@1100
        close 0
        commit at 5
        commit at 6
        ",
        expect![[r#"
            > at 0 ingest 1@100
            ingest_ok accepted=1 duplicates=0 late=0
            > at 0 ingest 2@1100
            ingest_ok accepted=1 duplicates=0 late=0
            > close 0
            #0 epoch 7 [0) [1] close
            > commit at 5
            batch: 1 windows, 1 removed, fired [0], 0 requests, watermark none
            > commit at 6
            nothing to write
        "#]],
    );
}

#[test]
fn a_repeated_request_id_is_answered_from_its_record() {
    check(
        r"
        at 0 ingest 1@100 2@200 rid=a
        close 0 rid=c
        commit at 1
        at 2 ingest 1@100 2@200 rid=a
        close 0 rid=c
        flush rid=a
        at 3 ingest 3@300 rid=c
        commit at 4
        restart at 5
        close 0 rid=c
        at 6 ingest 1@100 2@200 rid=a
        log
        ",
        expect![[r#"
            > at 0 ingest 1@100 2@200 rid=a
            ingest_ok accepted=2 duplicates=0 late=0
            > close 0 rid=c
            #0 epoch 7 [0) [1 2] close
            > commit at 1
            batch: 0 windows, 1 removed, fired [0], 2 requests, watermark none
            > at 2 ingest 1@100 2@200 rid=a
            (repeated) ingest_ok accepted=2 duplicates=0 late=0
            > close 0 rid=c
            (repeated) #0 epoch 7 [0) [1 2] close
            > flush rid=a
            error 12: request_id "a" was used for an ingest already; give every request its own id
            > at 3 ingest 3@300 rid=c
            error 12: request_id "c" was used for a close already; give every request its own id
            > commit at 4
            nothing to write
            > restart at 5
            recovered next_seq=1
            > close 0 rid=c
            (repeated) #0 epoch 7 [0) [1 2] close
            > at 6 ingest 1@100 2@200 rid=a
            (repeated) ingest_ok accepted=2 duplicates=0 late=0
            > log
            #0 epoch 7 [0) [1 2] close
        "#]],
    );
}

/// `--max-open-windows`: a request that would open more windows than allowed is refused whole
/// (error 11, nothing taken, counted), events for windows already open still go in, and the same
/// request succeeds once windows have fired.
#[test]
fn a_request_that_would_open_too_many_windows_is_refused_whole() {
    check(
        r"
        config max_open=2
        at 0 ingest 1@100 2@1100
        at 1 ingest 3@150 4@2100
        at 2 ingest 5@200 6@1200
        flush until=1000
        at 3 ingest 3@150 4@2100
        at 4 ingest 3@150
        stats
        ",
        expect![[r#"
            > at 0 ingest 1@100 2@1100
            ingest_ok accepted=2 duplicates=0 late=0
            > at 1 ingest 3@150 4@2100
            error 11: this request would open 1 windows while 2 are open, over the limit of 2 (--max-open-windows); nothing of it was taken: send it again once windows have fired, or raise --max-open-windows
            > at 2 ingest 5@200 6@1200
            ingest_ok accepted=2 duplicates=0 late=0
            > flush until=1000
            flushed 1
            #0 epoch 7 [0) [1 5] flush
            > at 3 ingest 3@150 4@2100
            error 11: this request would open 2 windows while 1 are open, over the limit of 2 (--max-open-windows); nothing of it was taken: send it again once windows have fired, or raise --max-open-windows
            > at 4 ingest 3@150
            ingest_ok accepted=1 duplicates=0 late=0
            > stats
            open=2 buffered=3 next_seq=1 accepted=5 duplicates=0 late=0 watermark=none
        "#]],
    );
}

/// A request id used again for other content is refused (answering it from the record would drop
/// the new events), also after a restart; the exact resend is still answered from the record.
#[test]
fn a_request_id_used_again_for_other_content_is_refused() {
    check(
        r"
        at 0 ingest 1@100 rid=r1
        at 1 ingest 2@200 3@300 rid=r1
        flush until=0 rid=f
        flush until=5000 rid=f
        commit at 2
        restart at 3
        at 4 ingest 1@100 2@200 rid=r1
        at 5 ingest 1@100 rid=r1
        flush until=5000 rid=f
        flush until=0 rid=f
        ",
        expect![[r#"
            > at 0 ingest 1@100 rid=r1
            ingest_ok accepted=1 duplicates=0 late=0
            > at 1 ingest 2@200 3@300 rid=r1
            error 12: request_id "r1" was used already for an ingest with other content; a resend must repeat its request exactly, and a new request needs an id of its own
            > flush until=0 rid=f
            flushed 0
            > flush until=5000 rid=f
            error 12: request_id "f" was used already for a flush with other content; a resend must repeat its request exactly, and a new request needs an id of its own
            > commit at 2
            batch: 1 windows, 0 removed, fired [], 2 requests, watermark none
            > restart at 3
            recovered next_seq=0
            > at 4 ingest 1@100 2@200 rid=r1
            error 12: request_id "r1" was used already for an ingest with other content; a resend must repeat its request exactly, and a new request needs an id of its own
            > at 5 ingest 1@100 rid=r1
            (repeated) ingest_ok accepted=1 duplicates=0 late=0
            > flush until=5000 rid=f
            error 12: request_id "f" was used already for a flush with other content; a resend must repeat its request exactly, and a new request needs an id of its own
            > flush until=0 rid=f
            (repeated) flushed 0
        "#]],
    );
}

#[test]
fn a_repeat_within_its_group_reads_the_records_not_yet_written() {
    check(
        r"
        at 0 ingest 1@100 2@1200
        flush rid=f
        flush rid=f
        commit at 1
        flush rid=f
        ",
        expect![[r#"
            > at 0 ingest 1@100 2@1200
            ingest_ok accepted=2 duplicates=0 late=0
            > flush rid=f
            flushed 2
            #0 epoch 7 [0) [1] flush
            #1 epoch 7 [1000) [2] flush
            > flush rid=f
            (repeated) flushed 2
            #0 epoch 7 [0) [1] flush
            #1 epoch 7 [1000) [2] flush
            > commit at 1
            batch: 0 windows, 2 removed, fired [0, 1], 1 requests, watermark none
            > flush rid=f
            (repeated) flushed 2
            #0 epoch 7 [0) [1] flush
            #1 epoch 7 [1000) [2] flush
        "#]],
    );
}

#[test]
fn a_rejected_request_changes_nothing() {
    check(
        r"
        at 0 ingest 1@100
        commit at 0
        at 1 ingest 2@200 3@9223372036854775807
        close 5000
        commit at 2
        stats
        ",
        expect![[r#"
            > at 0 ingest 1@100
            ingest_ok accepted=1 duplicates=0 late=0
            > commit at 0
            batch: 1 windows, 0 removed, fired [], 0 requests, watermark none
            > at 1 ingest 2@200 3@9223372036854775807
            error 12: events[1].timestamp: the window of size 1000 ms around 9223372036854775807 ms does not fit in 64-bit milliseconds; use a smaller window_size_ms
            > close 5000
            error 20: no open window window-5000: it was never opened, or was already closed
            > commit at 2
            nothing to write
            > stats
            open=1 buffered=1 next_seq=0 accepted=1 duplicates=0 late=0 watermark=none
        "#]],
    );
}

#[test]
fn the_idle_watermark_moves_with_processing_time_and_its_writes_are_throttled() {
    check(
        r"
        config lateness=5000 idle=1000
        at 0 ingest 1@50100
        commit at 0
        next timeout at 0
        timeout at 999
        next timeout at 999
        timeout at 1000
        commit at 1000
        timeout at 1500
        commit at 1500
        timeout at 2000
        commit at 2000
        timeout at 7000
        commit at 7000
        next timeout at 7000
        ",
        expect![[r#"
            > at 0 ingest 1@50100
            ingest_ok accepted=1 duplicates=0 late=0
            > commit at 0
            batch: 1 windows, 0 removed, fired [], 0 requests, watermark 45100
            > next timeout at 0
            next timeout 1000
            > timeout at 999
            > next timeout at 999
            next timeout 1049
            > timeout at 1000
            > commit at 1000
            batch: 0 windows, 0 removed, fired [], 0 requests, watermark 46100
            > timeout at 1500
            > commit at 1500
            nothing to write
            > timeout at 2000
            > commit at 2000
            batch: 0 windows, 0 removed, fired [], 0 requests, watermark 47100
            > timeout at 7000
            fired #0 epoch 7 [50000) [1] watermark
            > commit at 7000
            batch: 0 windows, 1 removed, fired [0], 0 requests, watermark 52100
            > next timeout at 7000
            next timeout none
        "#]],
    );
}

/// The log of `script` with and without a restart after every commit: a restart from the store
/// continues exactly as an uninterrupted service.
#[test]
fn a_restart_after_a_commit_gives_the_same_log() {
    let script = "
        config lateness=200 max_events=3
        at 0 ingest 1@100 2@150 3@170 4@180
        commit at 0
        at 1 ingest 5@1100/a 6@1150/b 4@190
        commit at 1
        close 1000 key=a rid=x
        commit at 2
        at 3 ingest 7@2500 8@120
        commit at 3
        close 1000 key=a rid=x
        flush rid=y
        commit at 4
        log
    ";
    let with_restarts = script.replace("commit at 1\n", "commit at 1\nrestart at 1\n");
    let with_restarts = with_restarts.replace("commit at 3\n", "commit at 3\nrestart at 3\n");
    let log = |out: &str| out.split("> log\n").nth(1).expect("a log").to_owned();
    let plain = run(script);
    assert!(with_restarts.matches("restart").count() == 2);
    assert_eq!(log(&run(&with_restarts)), log(&plain));
    expect![[r#"
        #0 epoch 7 [0) [1 2 3] length
        #1 epoch 7 [1000/a) [5] close
        #2 epoch 7 [0) [4 8] watermark
        #3 epoch 7 [1000/b) [6] watermark
        #4 epoch 7 [2000) [7] flush
    "#]]
    .assert_eq(&log(&plain));
}

/// A service without a store answers the same; its batches are simply not kept.
#[test]
fn a_service_without_a_store_answers_alike() {
    let config = plain_config(0);
    let mut service = Service::new(config, Timestamp::from_millis(0));
    let event = Event {
        id: EventId::Int(1),
        ts: Timestamp::from_millis(5),
        key: None,
        value: None,
        payload: None,
    };
    let answer = service.ingest(Timestamp::from_millis(0), size(), vec![event], None);
    assert_eq!(answer.result.expect("accepted").accepted, 1);
    let closed = service.close(&NoLog, WindowId(0), None, None, None);
    assert_eq!(closed.result.expect("closed").seq, 0);
    let batch = service
        .poll_batch(Timestamp::from_millis(1))
        .expect("a batch");
    assert_eq!(batch.fired.len(), 1);
    assert_eq!(
        batch.dirty.windows.len(),
        0,
        "an untracked engine lists no change"
    );
}

#[test]
fn with_ingest_time_events_are_stamped_with_now_and_windows_fire_at_their_end() {
    // The events' own times (99999, -5) are ignored: each lands in the window of the time its
    // request was applied. A window fires when the timer reaches its end plus the lateness,
    // with no further event, and a restart keeps every event in the window it was stamped into.
    check(
        r"
        config lateness=100 ingest_time=1
        at 10 ingest 1@99999 2@-5
        at 990 ingest 3@0/k
        commit at 990
        next timeout at 990
        at 1020 ingest 4@0
        commit at 1020
        restart at 1050
        next timeout at 1050
        timeout at 1099
        timeout at 1100
        commit at 1100
        next timeout at 1100
        timeout at 2099
        timeout at 2100
        commit at 2100
        log
        ",
        expect![[r#"
            > at 10 ingest 1@99999 2@-5
            ingest_ok accepted=2 duplicates=0 late=0
            > at 990 ingest 3@0/k
            ingest_ok accepted=1 duplicates=0 late=0
            > commit at 990
            batch: 2 windows, 0 removed, fired [], 0 requests, watermark 890
            > next timeout at 990
            next timeout 1100
            > at 1020 ingest 4@0
            ingest_ok accepted=1 duplicates=0 late=0
            > commit at 1020
            batch: 1 windows, 0 removed, fired [], 0 requests, watermark 920
            > restart at 1050
            recovered next_seq=0
            > next timeout at 1050
            next timeout 1100
            > timeout at 1099
            > timeout at 1100
            fired #0 epoch 7 [0) [1 2] watermark
            fired #1 epoch 7 [0/k) [3] watermark
            > commit at 1100
            batch: 0 windows, 2 removed, fired [0, 1], 0 requests, watermark 1000
            > next timeout at 1100
            next timeout 2100
            > timeout at 2099
            > timeout at 2100
            fired #2 epoch 7 [1000) [4] watermark
            > commit at 2100
            batch: 0 windows, 1 removed, fired [2], 0 requests, watermark 2000
            > log
            #0 epoch 7 [0) [1 2] watermark
            #1 epoch 7 [0/k) [3] watermark
            #2 epoch 7 [1000) [4] watermark
        "#]],
    );
}

fn num<T: std::str::FromStr>(text: &str) -> T {
    text.parse()
        .unwrap_or_else(|_| panic!("not a number: {text}"))
}

#[test]
fn a_group_hands_each_window_to_one_member_and_redelivers_what_is_not_acknowledged() {
    // Four windows fire; two members share them in turn, one window each at most. An ack of a
    // window another member holds is refused. A member that leaves gives its window back (the
    // other may still acknowledge it: the work was done); an ack timeout gives it to another
    // with delivery 2; a restart forgets who held what, so everything delivered and not
    // acknowledged goes out again with delivery 2; acknowledged windows never come back.
    check(
        r"
        config max_events=1
        join workers member 1 max=1
        join workers member 2 max=1
        at 0 ingest 1@100 2@1100 3@2100 4@3100
        deliver at 0
        commit at 0
        deliver at 0
        ack 1 0
        ack 2 0
        ack 2 1 7
        ack 1 1
        deliver at 10
        leave 2
        deliver at 20
        groups
        timeout at 30009
        deliver at 30009
        ack 1 1
        timeout at 30010
        deliver at 30010
        ack 1 1
        deliver at 30010
        commit at 30010
        groups
        restart at 30020
        join workers member 3 max=5
        deliver at 30020
        ack 3 2 3
        ack 3 2
        commit at 30030
        groups
        ",
        expect![[r#"
            > join workers member 1 max=1
            1 joined workers at 0
            > join workers member 2 max=1
            2 joined workers at 0
            > at 0 ingest 1@100 2@1100 3@2100 4@3100
            ingest_ok accepted=4 duplicates=0 late=0
            fired #0 epoch 7 [0) [1] length
            fired #1 epoch 7 [1000) [2] length
            fired #2 epoch 7 [2000) [3] length
            fired #3 epoch 7 [3000) [4] length
            > deliver at 0
            #0 to 1 (delivery 1)
            #1 to 2 (delivery 1)
            > commit at 0
            batch: 4 windows, 0 removed, fired [0, 1, 2, 3], 0 requests, watermark none
              group workers: first=0 acked_below=0 acked=[] next=2
            > deliver at 0
            > ack 1 0
            ack_ok acked=1
            > ack 2 0
            ack_ok acked=0
            > ack 2 1 7
            error 12: seq 7 is not held by this member: it was never delivered to it, or went to another member after --ack-timeout
            > ack 1 1
            error 12: seq 1 is not held by this member: it was never delivered to it, or went to another member after --ack-timeout
            > deliver at 10
            #2 to 1 (delivery 1)
            > leave 2
            > deliver at 20
            > groups
            group workers: members=1 pending=2 acked=1 redelivered=0 lag=1
            > timeout at 30009
            > deliver at 30009
            > ack 1 1
            ack_ok acked=1
            > timeout at 30010
            > deliver at 30010
            #2 to 1 (delivery 2)
            > ack 1 1
            ack_ok acked=0
            > deliver at 30010
            > commit at 30010
            batch: 0 windows, 0 removed, fired [], 0 requests, watermark none
              group workers: first=0 acked_below=2 acked=[] next=3
            > groups
            group workers: members=1 pending=1 acked=2 redelivered=1 lag=1
            > restart at 30020
            recovered next_seq=4
            > join workers member 3 max=5
            3 joined workers at 0
            > deliver at 30020
            #2 to 3 (delivery 2)
            #3 to 3 (delivery 1)
            > ack 3 2 3
            ack_ok acked=2
            > ack 3 2
            ack_ok acked=0
            > commit at 30030
            batch: 0 windows, 0 removed, fired [], 0 requests, watermark none
              group workers: first=0 acked_below=4 acked=[] next=4
            > groups
            group workers: members=1 pending=0 acked=4 redelivered=1 lag=0
        "#]],
    );
}

#[test]
fn bad_group_requests_are_refused_and_change_nothing() {
    check(
        r"
        join work-ers member 1 max=0
        join wörk member 1
        join xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx member 1
        join workers member 1 max=2 from=5
        ack 9 0
        ack 1 0
        groups
        commit at 0
        ",
        expect![[r#"
            > join work-ers member 1 max=0
            error 12: max_unacked must be at least 1 (windows a member may hold unacknowledged)
            > join wörk member 1
            error 12: group must be 1 to 128 printable ASCII characters without spaces, got "wörk"
            > join xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx member 1
            error 12: group must be 1 to 128 printable ASCII characters without spaces, got "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (131 bytes)
            > join workers member 1 max=2 from=5
            1 joined workers at 5
            > ack 9 0
            error 12: ack is for a group member: subscribe with a "group" on this connection first, and ack there
            > ack 1 0
            ack_ok acked=0
            > groups
            group workers: members=1 pending=0 acked=0 redelivered=0 lag=0
            > commit at 0
            batch: 0 windows, 0 removed, fired [], 0 requests, watermark none
              group workers: first=5 acked_below=5 acked=[] next=5
        "#]],
    );
}

#[test]
fn an_event_far_ahead_of_the_clock_refuses_its_request_and_moves_nothing() {
    // A typo in the year would move the watermark past every real event: refused whole (event
    // 1 is not taken either), and the next event is on time. The limit is inclusive.
    check(
        r"
        config lateness=0 ahead=60000
        at 1000 ingest 1@500 2@253402300799000
        at 1000 ingest 5@900
        at 1000 ingest 4@61001
        at 1000 ingest 3@61000
        stats
        ",
        expect![[r#"
            > at 1000 ingest 1@500 2@253402300799000
            error 12: events[1].timestamp 9999-12-31T23:59:59Z is more than 60000 ms ahead of this node's clock (1970-01-01T00:00:01Z): it would move the watermark past every real event; fix the timestamp, or raise --max-event-ahead (0s turns the check off)
            > at 1000 ingest 5@900
            ingest_ok accepted=1 duplicates=0 late=0
            > at 1000 ingest 4@61001
            error 12: events[0].timestamp 1970-01-01T00:01:01.001Z is more than 60000 ms ahead of this node's clock (1970-01-01T00:00:01Z): it would move the watermark past every real event; fix the timestamp, or raise --max-event-ahead (0s turns the check off)
            > at 1000 ingest 3@61000
            ingest_ok accepted=1 duplicates=0 late=0
            fired #0 epoch 7 [0) [5] watermark
            > stats
            open=1 buffered=1 next_seq=1 accepted=2 duplicates=0 late=0 watermark=61000
        "#]],
    );
}
