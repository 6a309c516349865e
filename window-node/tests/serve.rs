//! Loopback tests of `window-node serve` against the real binary.
//!
//! Each test starts its own daemon on a free loopback port (the daemon binds `127.0.0.1:0` and the
//! test reads the `address=` of the `listening` line it logs on stderr), with a temporary data
//! directory, and kills it when the test ends (see [`Node`]). Every read has a timeout and every
//! loop a bound, so a hung daemon fails a test instead of hanging it. Expected windows are
//! computed here from the events the test sends, never taken from the daemon.
//!
//! Timers are real (the daemon reads the wall clock), so timer tests use short durations
//! (`300ms`) and check lower bounds tightly and upper bounds loosely.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use window_testkit::calendar::utc as format_ts;
use window_testkit::{Conn, Next, Node, Signal, TempDir, WAIT, temp_dir, wait_for, wait_until};

/// 2024-01-15T08:00:00Z: the event time of the tests' first window.
const BASE: i64 = 1_705_305_600_000;
/// The window size every test daemon uses (`--window-size 1s`).
const SIZE: i64 = 1000;
/// How long a test listens to be sure that nothing more arrives.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// The daemon and its clients.
// ---------------------------------------------------------------------------------------------

/// Starts a daemon (`serve --listen 127.0.0.1:0`) with its store in `dir` and `args` after
/// `--data-dir DIR`; it is killed (SIGKILL) and reaped when dropped, so a failing test never
/// leaves a daemon behind.
fn start(dir: &Path, args: &[&str]) -> Node {
    try_start(dir, args).expect("the daemon starts")
}

fn try_start(dir: &Path, args: &[&str]) -> Result<Node, window_testkit::Error> {
    let data_dir = [OsStr::new("--data-dir"), dir.as_os_str()];
    let args = data_dir.into_iter().chain(args.iter().map(OsStr::new));
    Node::start(env!("CARGO_BIN_EXE_window-node"), args)
}

/// A new protocol connection to `daemon`.
fn connect(daemon: &Node) -> Conn {
    Conn::open(daemon.addr).expect("connect to the daemon")
}

/// Starts a daemon as [`start`] does, with `--metrics` on a free loopback port (the endpoint does
/// not report its address); returns it and that address. A port found free can be taken before
/// the daemon binds it: then it tries another.
fn start_with_metrics(dir: &Path, args: &[&str]) -> (Node, SocketAddr) {
    let mut failures = Vec::new();
    for _ in 0..3 {
        let metrics = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port");
        let metrics_text = metrics.to_string();
        let with_metrics: Vec<&str> = args
            .iter()
            .copied()
            .chain(["--metrics", &metrics_text])
            .collect();
        match try_start(dir, &with_metrics) {
            Ok(daemon) => return (daemon, metrics),
            Err(e) if e.to_string().contains("listening for metrics") => failures.push(e),
            Err(e) => panic!("the daemon starts: {e}"),
        }
    }
    panic!("no free port for the metrics endpoint: {failures:?}");
}

/// Sends `stats` and returns `stats_ok`.
fn stats_of(client: &mut Conn) -> Value {
    let reply = client.request(r#"{"type":"stats","msg_id":999}"#);
    assert_eq!(reply["type"], "stats_ok", "{reply}");
    reply
}

fn parse(line: &[u8]) -> Value {
    serde_json::from_slice(line).unwrap_or_else(|e| {
        panic!(
            "the daemon sent a line that is not JSON ({e}): {}",
            String::from_utf8_lossy(line)
        )
    })
}

/// A subscription: `subscribe` sent, `subscribe_ok` checked.
fn subscribe(daemon: &Node, from_seq: Option<u64>) -> Conn {
    let mut client = connect(daemon);
    let request = match from_seq {
        Some(seq) => format!(r#"{{"type":"subscribe","msg_id":1,"from_seq":{seq}}}"#),
        None => r#"{"type":"subscribe","msg_id":1}"#.to_owned(),
    };
    let ok = client.request(&request);
    assert_eq!(ok["type"], "subscribe_ok", "{ok}");
    assert_eq!(ok["in_reply_to"], 1, "{ok}");
    if let Some(seq) = from_seq {
        assert_eq!(ok["from_seq"], seq, "{ok}");
    }
    client
}

/// Reads `n` messages of type `kind` (failing on any other type).
fn read_n(sub: &mut Conn, n: usize, kind: &str) -> Vec<Value> {
    (0..n)
        .map(|_| {
            let message = sub.recv();
            assert_eq!(message["type"], kind, "{message}");
            message
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Events, and the windows they should make (computed independently of the daemon).
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Ev {
    id: u64,
    ts: i64,
    key: Option<&'static str>,
    value: Option<i64>,
}

impl Ev {
    fn new(id: u64, ts: i64) -> Ev {
        Ev {
            id,
            ts,
            key: None,
            value: None,
        }
    }

    fn keyed(self, key: &'static str) -> Ev {
        Ev {
            key: Some(key),
            ..self
        }
    }

    fn valued(self, value: i64) -> Ev {
        Ev {
            value: Some(value),
            ..self
        }
    }

    fn start(&self) -> i64 {
        self.ts.div_euclid(SIZE) * SIZE
    }

    fn json(&self) -> String {
        let mut out = format!(r#"{{"id":{},"timestamp":{}"#, self.id, self.ts);
        if let Some(key) = self.key {
            out.push_str(&format!(r#","key":"{key}""#));
        }
        if let Some(value) = self.value {
            out.push_str(&format!(r#","value":{value}"#));
        }
        out.push('}');
        out
    }
}

fn ingest(msg_id: u64, events: &[Ev]) -> String {
    let events: Vec<String> = events.iter().map(Ev::json).collect();
    format!(
        r#"{{"type":"ingest","msg_id":{msg_id},"events":[{}]}}"#,
        events.join(",")
    )
}

/// Sends an ingest and checks its `ingest_ok` counts.
fn ingest_ok(client: &mut Conn, msg_id: u64, events: &[Ev], expect: [u64; 3]) {
    let reply = client.request(&ingest(msg_id, events));
    assert_eq!(reply["type"], "ingest_ok", "{reply}");
    assert_eq!(reply["in_reply_to"], msg_id, "{reply}");
    let got = [&reply["accepted"], &reply["duplicates"], &reply["late"]];
    assert_eq!(
        got.map(|v| v.as_u64().expect("a count")),
        expect,
        "accepted, duplicates, late: {reply}"
    );
}

type WindowKey = (i64, Option<String>);

/// The windows `events` fill: (start, key) to the events, each id once per window.
fn expected_windows(events: &[Ev]) -> BTreeMap<WindowKey, Vec<Ev>> {
    let mut windows: BTreeMap<WindowKey, Vec<Ev>> = BTreeMap::new();
    for event in events {
        let window = windows
            .entry((event.start(), event.key.map(str::to_owned)))
            .or_default();
        if window.iter().all(|e| e.id != event.id) {
            window.push(*event);
        }
    }
    windows
}

/// The (start, key) of an emitted window, from its id (the `utc` frame: id = start).
fn window_key(window: &Value) -> WindowKey {
    let id = window["window_id"].as_str().expect("window_id");
    let start = id
        .strip_prefix("window-")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad window_id in {window}"));
    (start, window["key"].as_str().map(str::to_owned))
}

fn ids(window: &Value) -> Vec<u64> {
    window["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {window}"))
        .iter()
        .map(|id| id.as_u64().expect("numeric ids"))
        .collect()
}

/// Checks one emitted window against the events it should hold (in any order: concurrent
/// clients make the arrival order within a window nondeterministic).
fn check_window(window: &Value, events: &[Ev]) {
    let (start, key) = window_key(window);
    assert_eq!(window["window_start"], format_ts(start), "{window}");
    assert_eq!(window["window_end"], format_ts(start + SIZE), "{window}");
    assert_eq!(window["key"].as_str(), key.as_deref(), "{window}");
    assert_eq!(window["count"], events.len(), "{window}");
    let mut got = ids(window);
    got.sort_unstable();
    let mut want: Vec<u64> = events.iter().map(|e| e.id).collect();
    want.sort_unstable();
    assert_eq!(got, want, "{window}");
    let values: Vec<i64> = events.iter().filter_map(|e| e.value).collect();
    if values.is_empty() {
        assert!(window.get("sum").is_none(), "{window}");
    } else {
        let f = |v: i64| v as f64;
        assert_eq!(
            window["sum"].as_f64(),
            Some(f(values.iter().sum())),
            "{window}"
        );
        assert_eq!(
            window["min"].as_f64(),
            values.iter().min().copied().map(f),
            "{window}"
        );
        assert_eq!(
            window["max"].as_f64(),
            values.iter().max().copied().map(f),
            "{window}"
        );
    }
    // Each process that takes the lease raises the epoch: the first holder of a fresh directory
    // fires with epoch 1, a restarted one with a higher epoch.
    assert!(window["epoch"].as_u64() >= Some(1), "{window}");
}

/// Checks that `windows` carry the dense sequence numbers `first..` in order.
fn check_dense(windows: &[Value], first: u64) {
    let seqs: Vec<u64> = windows
        .iter()
        .map(|w| w["seq"].as_u64().expect("seq"))
        .collect();
    let want: Vec<u64> = (first..first + windows.len() as u64).collect();
    assert_eq!(seqs, want, "sequence numbers");
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

/// Four clients ingest interleaved events (with keys, values, and events every client sends) in
/// rounds, one window per round; the watermark fires each round's windows two rounds later and a
/// flush fires the rest. A subscriber from seq 0 sees each window once, in order, complete.
#[test]
fn interleaved_clients_and_a_subscriber_see_each_window_once() {
    assert_eq!(format_ts(BASE), "2024-01-15T08:00:00Z");
    assert_eq!(format_ts(BASE + 1_250), "2024-01-15T08:00:01.250Z");
    const CLIENTS: u64 = 4;
    const ROUNDS: u64 = 6;
    const PER_CLIENT: u64 = 20;
    const SHARED: u64 = 2;
    let dir = temp_dir();
    let daemon = start(
        dir.path(),
        &[
            "--window-size",
            "1s",
            "--allowed-lateness",
            "1s",
            "--idle-timeout",
            "0s",
        ],
    );
    let mut sub = subscribe(&daemon, Some(0));

    // Round r's events all lie in window r. The watermark (highest time minus 1 s) then stays
    // inside window r - 1: nothing is late, and window r - 2 fires.
    let round_events = |r: u64, c: u64| -> Vec<Ev> {
        let window = BASE + r as i64 * SIZE;
        let mut events: Vec<Ev> = (0..PER_CLIENT)
            .map(|j| {
                let id = 1000 * (r * CLIENTS + c) + j;
                let ev = Ev::new(id, window + ((j * 37 + c * 11) % 1000) as i64);
                match j % 3 {
                    0 => ev,
                    1 => ev.keyed("a").valued(id as i64 % 10 - 3),
                    _ => ev.keyed("b").valued(id as i64 % 7),
                }
            })
            .collect();
        // Every client also sends the same events: each is accepted once, a duplicate otherwise.
        let shared = (0..SHARED).map(|k| {
            Ev::new(900_000 + r * 10 + k, window + 500 + k as i64)
                .keyed("a")
                .valued(7)
        });
        if c.is_multiple_of(2) {
            events.splice(0..0, shared);
        } else {
            events.extend(shared);
        }
        events
    };

    let mut clients: Vec<Conn> = (0..CLIENTS).map(|_| connect(&daemon)).collect();
    let mut sent = Vec::new();
    let (mut accepted, mut duplicates) = (0, 0);
    for r in 0..ROUNDS {
        // Every client pipelines its round in two requests before any reply is read, so the
        // driver sees the four connections' requests interleaved.
        for (c, client) in clients.iter_mut().enumerate() {
            let events = round_events(r, c as u64);
            let (first, second) = events.split_at(events.len() / 2);
            client.send(&ingest(2 * r, first)).expect("send a request");
            client
                .send(&ingest(2 * r + 1, second))
                .expect("send a request");
            sent.extend(events);
        }
        for client in &mut clients {
            for msg_id in [2 * r, 2 * r + 1] {
                let reply = client.recv();
                assert_eq!(reply["type"], "ingest_ok", "{reply}");
                assert_eq!(reply["in_reply_to"], msg_id, "{reply}");
                assert_eq!(reply["late"], 0, "{reply}");
                accepted += reply["accepted"].as_u64().expect("accepted");
                duplicates += reply["duplicates"].as_u64().expect("duplicates");
            }
        }
    }
    assert_eq!(accepted, ROUNDS * (CLIENTS * PER_CLIENT + SHARED));
    assert_eq!(duplicates, ROUNDS * SHARED * (CLIENTS - 1));

    let expected = expected_windows(&sent);
    assert_eq!(expected.len() as u64, ROUNDS * 3);
    // The windows of the last two rounds are still open: a flush fires them.
    let flushed = clients[0].request(r#"{"type":"flush","msg_id":998}"#);
    assert_eq!(flushed["type"], "flushed", "{flushed}");
    let flushed = flushed["windows"].as_array().expect("windows").clone();
    assert_eq!(flushed.len(), 6, "{flushed:?}");

    let windows = read_n(&mut sub, expected.len(), "window_closed");
    sub.assert_quiet(QUIET);
    check_dense(&windows, 0);
    let mut seen = BTreeSet::new();
    let mut previous_start = i64::MIN;
    for window in &windows {
        let key = window_key(window);
        assert!(seen.insert(key.clone()), "fired twice: {window}");
        let events = expected
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected {window}"));
        check_window(window, events);
        assert!(key.0 >= previous_start, "windows out of order: {window}");
        previous_start = key.0;
        let round = (key.0 - BASE) / SIZE;
        let reason = if round < ROUNDS as i64 - 2 {
            "watermark"
        } else {
            "flush"
        };
        assert_eq!(window["reason"], reason, "{window}");
    }
    // The flush reply and the log agree (the reply's entries have no `type` of their own).
    for (logged, replied) in windows[windows.len() - 6..].iter().zip(&flushed) {
        let mut logged = logged.clone();
        logged.as_object_mut().expect("an object").remove("type");
        assert_eq!(&logged, replied);
    }
    let stats = stats_of(&mut clients[1]);
    assert_eq!(stats["emitted_windows"], expected.len());
    assert_eq!(stats["open_windows"], 0);
}

/// Fills window `k` (two events, one keyed); with lateness 0 this fires window `k - 1`.
fn window_events(k: i64) -> [Ev; 2] {
    let id = 2 * k as u64;
    [
        Ev::new(id, BASE + k * SIZE + 500),
        Ev::new(id + 1, BASE + k * SIZE + 600).keyed("x").valued(k),
    ]
}

/// One-second windows that fire by the watermark only (no lateness, no idle timeout).
const WATERMARK_ONLY: [&str; 6] = [
    "--window-size",
    "1s",
    "--allowed-lateness",
    "0s",
    "--idle-timeout",
    "0s",
];

/// Ingests the two events of each window in `windows` (see [`window_events`]).
fn fill(client: &mut Conn, windows: std::ops::RangeInclusive<i64>) {
    for k in windows {
        ingest_ok(client, k as u64, &window_events(k), [2, 0, 0]);
    }
}

/// A subscriber reads part of the log, goes away while more windows fire, and comes back with
/// `from_seq`: it gets the rest, backlog then live, with no gap and no duplicate. A subscriber
/// without `from_seq` gets only new windows.
#[test]
fn a_subscriber_resumes_with_from_seq() {
    let dir = temp_dir();
    let daemon = start(dir.path(), &WATERMARK_ONLY);
    let mut client = connect(&daemon);

    let mut first = subscribe(&daemon, Some(0));
    fill(&mut client, 0..=5); // Fires windows 0..=4: seq 0..10.
    let mut got = read_n(&mut first, 6, "window_closed");
    drop(first);

    fill(&mut client, 6..=10); // Fires windows 5..=9 while nobody listens: seq 10..20.
    let mut second = subscribe(&daemon, Some(6));
    got.extend(read_n(&mut second, 14, "window_closed"));
    fill(&mut client, 11..=12); // Live: seq 20..24.
    got.extend(read_n(&mut second, 4, "window_closed"));
    second.assert_quiet(QUIET);

    let mut new_only = subscribe(&daemon, None);
    fill(&mut client, 13..=13); // Seq 24 and 25, to both.
    let tail = read_n(&mut new_only, 2, "window_closed");
    check_dense(&tail, 24);
    new_only.assert_quiet(QUIET);
    got.extend(read_n(&mut second, 2, "window_closed"));
    second.assert_quiet(QUIET);

    check_dense(&got, 0);
    let all_events: Vec<Ev> = (0..=13).flat_map(window_events).collect();
    let expected = expected_windows(&all_events);
    for window in got.iter().chain(&tail) {
        check_window(window, &expected[&window_key(window)]);
        assert_eq!(window["reason"], "watermark", "{window}");
    }
    let keys: BTreeSet<WindowKey> = got.iter().map(window_key).collect();
    let fired: BTreeSet<WindowKey> = expected
        .keys()
        .filter(|(start, _)| *start < BASE + 13 * SIZE)
        .cloned()
        .collect();
    assert_eq!(keys, fired);

    // A subscriber asking for a sequence number the log has not reached yet gets nothing below
    // it: the contract is "every window_closed with seq >= from_seq".
    let mut ahead = subscribe(&daemon, Some(27));
    fill(&mut client, 14..=15); // Seq 26..30.
    let from_27 = read_n(&mut ahead, 3, "window_closed");
    check_dense(&from_27, 27);
    ahead.assert_quiet(QUIET);
}

/// With no new events for `--idle-timeout`, the watermark advances with the wall clock and the
/// open window fires (reason `watermark`), not before the timeout; and again for the next one.
#[test]
fn the_idle_timeout_closes_windows_without_new_data() {
    let dir = temp_dir();
    let daemon = start(
        dir.path(),
        &[
            "--window-size",
            "1s",
            "--allowed-lateness",
            "0s",
            "--idle-timeout",
            "300ms",
        ],
    );
    let mut sub = subscribe(&daemon, None);
    let mut client = connect(&daemon);
    // The watermark stops 1 ms short of the window's end: only the idle timeout can close it.
    let events = [Ev::new(1, BASE + 990), Ev::new(2, BASE + 999)];
    let sent = Instant::now();
    ingest_ok(&mut client, 1, &events, [2, 0, 0]);
    let stats = stats_of(&mut client);
    assert_eq!(stats["open_windows"], 1, "{stats}");
    assert_eq!(stats["watermark"], format_ts(BASE + 999), "{stats}");

    let window = sub.recv();
    let waited = sent.elapsed();
    assert_eq!(window["type"], "window_closed", "{window}");
    assert_eq!(window["reason"], "watermark", "{window}");
    assert_eq!(ids(&window), [1, 2], "{window}");
    assert!(
        waited >= Duration::from_millis(290),
        "fired after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "fired after {waited:?}");
    let stats = stats_of(&mut client);
    assert_eq!(stats["open_windows"], 0, "{stats}");

    // The advanced watermark is still behind the next window: its event is not late, and the
    // idle timeout closes that window in turn.
    let sent = Instant::now();
    ingest_ok(&mut client, 2, &[Ev::new(3, BASE + 1_900)], [1, 0, 0]);
    let window = sub.recv();
    assert!(
        sent.elapsed() >= Duration::from_millis(290),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(window["reason"], "watermark", "{window}");
    assert_eq!(ids(&window), [3], "{window}");
    check_dense(&[window], 1);
    sub.assert_quiet(QUIET);
}

/// `--max-events 3` fires a pane the moment it holds three events (reason `length`);
/// `--max-age 1s` fires the others 1 s after their first event (reason `time`). A later event
/// of the window opens a fresh pane; ids stay remembered across panes.
///
/// The age is a second, not 300 ms as elsewhere, because this test also bounds a time from
/// above (the length pane must not wait for the timer): a 300 ms timer left a loaded machine
/// under 300 ms for a round trip and a read, and the test failed now and then.
#[test]
fn max_events_and_max_age_fire_with_their_reason() {
    let dir = temp_dir();
    let daemon = start(
        dir.path(),
        &[
            "--window-size",
            "1s",
            "--allowed-lateness",
            "1h",
            "--idle-timeout",
            "0s",
            "--max-events",
            "3",
            "--max-age",
            "1s",
        ],
    );
    let mut sub = subscribe(&daemon, None);
    let mut client = connect(&daemon);
    let a: Vec<Ev> = (1..=5).map(|i| Ev::new(i, BASE + 100 + i as i64)).collect();
    let b = Ev::new(10, BASE + 1_100).keyed("k").valued(4);
    let events: Vec<Ev> = a.iter().copied().chain([b]).collect();
    let sent = Instant::now();
    ingest_ok(&mut client, 1, &events, [6, 0, 0]);

    let length = sub.recv();
    assert_eq!(length["reason"], "length", "{length}");
    check_window(&length, &a[..3]);
    assert!(
        sent.elapsed() < Duration::from_millis(900),
        "the length purge waited for the timer: {:?}",
        sent.elapsed()
    );
    let mut timed = read_n(&mut sub, 2, "window_closed");
    assert!(
        sent.elapsed() >= Duration::from_millis(990),
        "{:?}",
        sent.elapsed()
    );
    timed.sort_by_key(window_key);
    for window in &timed {
        assert_eq!(window["reason"], "time", "{window}");
    }
    check_window(&timed[0], &a[3..]);
    check_window(&timed[1], &[b]);

    // Id 1 is remembered after its pane fired; id 6 opens a fresh pane of window A.
    let sent = Instant::now();
    ingest_ok(&mut client, 2, &[a[0], Ev::new(6, BASE + 900)], [1, 1, 0]);
    let pane = sub.recv();
    assert!(
        sent.elapsed() >= Duration::from_millis(990),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(pane["reason"], "time", "{pane}");
    check_window(&pane, &[Ev::new(6, BASE + 900)]);
    let all = [length, timed[0].clone(), timed[1].clone(), pane];
    check_dense(&all, 0);
    sub.assert_quiet(QUIET);
    assert_eq!(stats_of(&mut client)["emitted_windows"], 4);
}

/// The length purge counts a pane's events across requests.
#[test]
fn max_events_counts_across_requests() {
    let dir = temp_dir();
    let daemon = start(
        dir.path(),
        &[
            "--allowed-lateness",
            "1h",
            "--idle-timeout",
            "0s",
            "--max-events",
            "2",
            "--window-size",
            "1s",
        ],
    );
    let mut sub = subscribe(&daemon, None);
    let mut client = connect(&daemon);
    ingest_ok(&mut client, 1, &[Ev::new(20, BASE)], [1, 0, 0]);
    assert_eq!(stats_of(&mut client)["buffered_events"], 1);
    ingest_ok(
        &mut client,
        2,
        &[Ev::new(20, BASE), Ev::new(21, BASE + 1)],
        [1, 1, 0],
    );
    let window = sub.recv();
    assert_eq!(window["reason"], "length", "{window}");
    check_window(&window, &[Ev::new(20, BASE), Ev::new(21, BASE + 1)]);
    sub.assert_quiet(QUIET);
}

/// Sends one on-time event and a batch with two late ones (their windows ended before the
/// watermark) and one on-time; returns the subscriber, which has seen nothing yet.
fn late_scenario(late: &str) -> (Node, Conn, Conn, TempDir) {
    let dir = temp_dir();
    let daemon = start(
        dir.path(),
        &[
            "--window-size",
            "1s",
            "--allowed-lateness",
            "0s",
            "--idle-timeout",
            "0s",
            "--late",
            late,
        ],
    );
    let mut client = connect(&daemon);
    ingest_ok(&mut client, 1, &[Ev::new(1, BASE + 5_500)], [1, 0, 0]);
    let sub = subscribe(&daemon, None);
    let batch = [
        Ev::new(2, BASE + 1_200),
        Ev::new(3, BASE + 5_600),
        Ev::new(4, BASE + 4_999).keyed("k").valued(1),
    ];
    ingest_ok(&mut client, 2, &batch, [1, 0, 2]);
    let stats = stats_of(&mut client);
    assert_eq!(stats["late"], 2, "{stats}");
    assert_eq!(stats["accepted"], 2, "{stats}");
    assert_eq!(stats["buffered_events"], 2, "{stats}");
    (daemon, client, sub, dir)
}

/// Late events are counted in `ingest_ok` and `stats`; with `--late emit` subscribers receive
/// them as `late_event`; with `--late drop` they do not.
#[test]
fn late_events_are_counted_and_emitted_on_request() {
    let (_daemon, _client, mut sub, _dir) = late_scenario("emit");
    let first = sub.recv();
    let second = sub.recv();
    sub.assert_quiet(QUIET);
    assert_eq!(first["type"], "late_event", "{first}");
    assert_eq!(first["id"], 2, "{first}");
    assert_eq!(first["timestamp"], format_ts(BASE + 1_200), "{first}");
    assert_eq!(
        first["window_id"],
        format!("window-{}", BASE + 1_000),
        "{first}"
    );
    assert!(first.get("key").is_none(), "{first}");
    assert_eq!(second["type"], "late_event", "{second}");
    assert_eq!(second["id"], 4, "{second}");
    assert_eq!(second["key"], "k", "{second}");
    assert_eq!(
        second["window_id"],
        format!("window-{}", BASE + 4_000),
        "{second}"
    );

    let (_daemon, mut client, mut sub, _dir) = late_scenario("drop");
    // The next window to fire is the first thing this subscriber sees: no late_event before it.
    ingest_ok(&mut client, 3, &[Ev::new(5, BASE + 6_000)], [1, 0, 0]);
    let window = sub.recv();
    assert_eq!(window["type"], "window_closed", "{window}");
    assert_eq!(ids(&window), [1, 3], "{window}");
    sub.assert_quiet(QUIET);
}

/// Bad lines get error replies (10 unknown type, 12 malformed, 20 not open), in request order,
/// and the connection goes on; a batch with one bad event changes nothing.
#[test]
fn bad_lines_get_errors_and_the_connection_goes_on() {
    let dir = temp_dir();
    let daemon = start(dir.path(), &["--window-size", "1s", "--idle-timeout", "0s"]);
    let mut client = connect(&daemon);
    let good = Ev::new(1, BASE);
    let bad_batch = format!(
        r#"{{"type":"ingest","msg_id":5,"events":[{},{{"id":2,"timestamp":"yesterday"}}]}}"#,
        good.json()
    );
    // Everything is pipelined at once; replies must come back one per line, in order.
    let mut bytes = Vec::new();
    for line in [
        "not json",
        r#"{"type":"bogus","msg_id":2}"#,
        r#"{"type":"ingest","msg_id":3}"#,
        r#"{"msg_id":4,"events":[]}"#,
        &bad_batch,
        r#"{"type":"assign","msg_id":6,"events":[{"id":1,"timestamp":0}],"window_size_ms":1000}"#,
        r#"{"type":"subscribe","msg_id":7,"from_seq":-1}"#,
        r#"{"type":"close","msg_id":8,"window_id":"window-0"}"#,
        r#"{"type":"ingest","msg_id":9,"events":[{"id":1,"timestamp":BAD"#,
        "",
        "[1,2]",
    ] {
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(b"{\"type\":\"stats\",\"msg_id\":10,\"x\":\"\xff\"}\n");
    bytes.extend_from_slice(format!("{}\r\n", ingest(11, &[good])).as_bytes());
    bytes.extend_from_slice(br#"{"src":"c1","dest":"n1","body":{"type":"stats","msg_id":12}}"#);
    bytes.push(b'\n');
    client.send_bytes(&bytes).expect("send the requests");

    let expect: [(Option<u64>, u64, &[&str]); 10] = [
        (None, 12, &["JSON"]),
        (Some(2), 10, &["bogus"]),
        (Some(3), 12, &["events"]),
        (Some(4), 12, &["type"]),
        (Some(5), 12, &["timestamp", "yesterday"]),
        (Some(6), 10, &["ingest"]),
        (Some(7), 12, &["from_seq", "-1"]),
        (Some(8), 20, &[]),
        (None, 12, &[]),
        (None, 12, &[]),
    ];
    for (in_reply_to, code, words) in expect {
        let reply = client.recv();
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
        assert_eq!(
            reply.get("in_reply_to").and_then(Value::as_u64),
            in_reply_to,
            "{reply}"
        );
        let text = reply["text"].as_str().expect("text");
        for word in words {
            assert!(text.contains(word), "{text:?} should name {word:?}");
        }
    }
    let not_utf8 = client.recv();
    assert_eq!(not_utf8["code"], 12, "{not_utf8}");
    assert!(not_utf8.get("in_reply_to").is_none(), "{not_utf8}");
    let ok = client.recv();
    assert_eq!(ok["type"], "ingest_ok", "{ok}");
    assert_eq!(ok["in_reply_to"], 11, "{ok}");
    // The rejected batch added nothing: event 1 is new here.
    assert_eq!(ok["accepted"], 1, "{ok}");
    let envelope = client.recv();
    assert_eq!(envelope["src"], "n1", "{envelope}");
    assert_eq!(envelope["dest"], "c1", "{envelope}");
    assert_eq!(envelope["body"]["type"], "stats_ok", "{envelope}");
    assert_eq!(envelope["body"]["in_reply_to"], 12, "{envelope}");
    assert_eq!(envelope["body"]["accepted"], 1, "{envelope}");
    client.assert_quiet(QUIET);
}

/// `--max-line-bytes 1024`: a line of 1024 bytes is served, 1025 bytes and a 200 kB line get
/// error 12 and the connection goes on. `--max-connections 2`: a third connection gets error 11
/// and is closed; once a slot is free, a new connection is served.
#[test]
fn the_line_and_connection_limits_hold() {
    let dir = temp_dir();
    let daemon = start(
        dir.path(),
        &[
            "--window-size",
            "1s",
            "--idle-timeout",
            "0s",
            "--max-line-bytes",
            "1024",
            "--max-connections",
            "2",
        ],
    );
    let padded = |len: usize, msg_id: u64| {
        let head = r#"{"type":"stats","#;
        let tail = format!(r#""msg_id":{msg_id}}}"#);
        format!("{head}{}{tail}", " ".repeat(len - head.len() - tail.len()))
    };
    let mut first = connect(&daemon);
    for (line, reply_to) in [
        (padded(1024, 1), Some(1)),
        (padded(1025, 2), None),
        ("x".repeat(200_000), None),
        (padded(1000, 4), Some(4)),
    ] {
        let reply = first.request(&line);
        match reply_to {
            Some(id) => {
                assert_eq!(reply["type"], "stats_ok", "{reply}");
                assert_eq!(reply["in_reply_to"], id, "{reply}");
            }
            None => {
                assert_eq!(reply["code"], 12, "{reply}");
                assert!(
                    reply["text"].as_str().expect("text").contains("1024"),
                    "{reply}"
                );
            }
        }
    }

    let mut second = connect(&daemon);
    assert_eq!(stats_of(&mut second)["connections"], 2);
    let mut third = connect(&daemon);
    let refused = third.recv();
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], 11, "{refused}");
    third.assert_closed();
    // The refusal took no slot from the two connections.
    assert_eq!(stats_of(&mut first)["connections"], 2);

    drop(second);
    // The slot comes free once the daemon has seen the disconnect. A connection made before
    // that is refused: it hears error 11 (unasked, before any reply) and is closed. A served one
    // answers `stats` and counts itself. Asking, rather than listening a while for an error,
    // keeps a slow refusal from passing for a served connection.
    let connections = wait_for(WAIT, "a slot free after a disconnect", || {
        let mut candidate = connect(&daemon);
        candidate.send(r#"{"type":"stats","msg_id":5}"#).ok()?;
        match candidate.next_line(WAIT) {
            Next::Line(line) => {
                let reply = parse(&line);
                if reply["type"] == "stats_ok" {
                    return Some(reply["connections"].clone());
                }
                assert_eq!(reply["code"], 11, "{reply}");
                None
            }
            Next::Closed => None,
            Next::Timeout => panic!("a new connection heard nothing within {WAIT:?}"),
        }
    })
    .expect("no slot came free after a disconnect");
    assert_eq!(connections, 2);
}

/// Event `j` of request `r` on connection `c` in the crash tests: unique ids, times spread over
/// 20 windows (well within the lateness, so none is late), two keys.
fn crash_event(c: u64, r: u64, j: u64) -> Ev {
    let id = c * 100_000 + r * 10 + j;
    Ev::new(id, BASE + (id * 7_919 % 20_000) as i64).keyed(["p", "q"][(j % 2) as usize])
}

/// Three connections pipeline ingests; the daemon gets `signal` while requests are in flight.
/// After a restart on the same data directory and a flush, every acknowledged event is in exactly
/// one window of the output log, and nothing there was never sent.
fn acknowledged_events_survive(signal: Signal) {
    const CLIENTS: u64 = 3;
    const SIGNAL_AT: u64 = 12;
    const MAX_ROUNDS: u64 = 40;
    let args = [
        "--window-size",
        "1s",
        "--allowed-lateness",
        "1h",
        "--idle-timeout",
        "0s",
        "--max-events",
        "7",
    ];
    let dir = temp_dir();
    let mut daemon = start(dir.path(), &args);
    let mut watcher = subscribe(&daemon, Some(0));
    let mut clients: Vec<Option<Conn>> = (0..CLIENTS).map(|_| Some(connect(&daemon))).collect();
    let mut sent = BTreeSet::new();
    let mut acked = BTreeSet::new();
    let mut refused = 0;
    // After the signal, rounds go on (a little apart) until the daemon has closed every
    // connection, for at most WAIT: a busy machine may take a while to stop.
    let mut signalled: Option<std::time::Instant> = None;
    for r in 0.. {
        if clients.iter().all(Option::is_none)
            || signalled.is_some_and(|at| at.elapsed() > WAIT)
            || (signalled.is_none() && r >= MAX_ROUNDS)
        {
            break;
        }
        if signalled.is_some() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let batches: Vec<Vec<Ev>> = (0..CLIENTS)
            .map(|c| (0..10).map(|j| crash_event(c, r, j)).collect())
            .collect();
        for (slot, batch) in clients.iter_mut().zip(&batches) {
            let Some(client) = slot else { continue };
            match client.send_bytes(format!("{}\n", ingest(r, batch)).as_bytes()) {
                Ok(()) => sent.extend(batch.iter().map(|e| e.id)),
                Err(_) => *slot = None,
            }
        }
        if r == SIGNAL_AT {
            daemon.process.signal(signal).expect("the signal");
            signalled = Some(std::time::Instant::now());
        }
        for (slot, batch) in clients.iter_mut().zip(&batches) {
            let Some(client) = slot else { continue };
            match client.next_line(WAIT) {
                Next::Line(line) => {
                    let reply = parse(&line);
                    if reply["type"] == "ingest_ok" {
                        assert_eq!(reply["in_reply_to"], r, "{reply}");
                        assert_eq!(reply["late"], 0, "{reply}");
                        acked.extend(batch.iter().map(|e| e.id));
                    } else {
                        // After SIGTERM: "shutting down", error 11.
                        assert_eq!(reply["code"], 11, "{reply}");
                        refused += 1;
                    }
                }
                Next::Closed => *slot = None,
                Next::Timeout => panic!("no reply within {WAIT:?} after SIGTERM"),
            }
        }
    }
    assert!(
        clients.iter().all(Option::is_none),
        "the daemon still served after the signal: {} acked, {refused} refused; stderr:\n{}",
        acked.len(),
        daemon.process.log_text()
    );
    assert!(
        acked.len() as u64 >= (SIGNAL_AT * CLIENTS * 10),
        "{} acked",
        acked.len()
    );
    let status = daemon.process.wait_exit(WAIT).expect("the daemon exits");
    if signal == Signal::Term {
        assert_eq!(
            status.code(),
            Some(0),
            "stderr:\n{}",
            daemon.process.log_text()
        );
        assert!(
            daemon.process.log_text().contains("stopped cleanly"),
            "{}",
            daemon.process.log_text()
        );
        // Subscribers are let go at shutdown.
        watcher.assert_closed();
    } else {
        assert!(!status.success(), "{status}");
    }
    drop(daemon);

    let daemon = start(dir.path(), &args);
    let mut client = connect(&daemon);
    let flushed = client.request(r#"{"type":"flush","msg_id":1}"#);
    assert_eq!(flushed["type"], "flushed", "{flushed}");
    let stats = stats_of(&mut client);
    assert_eq!(stats["open_windows"], 0, "{stats}");
    let total = stats["emitted_windows"].as_u64().expect("emitted_windows") as usize;
    let mut sub = subscribe(&daemon, Some(0));
    let log = read_n(&mut sub, total, "window_closed");
    sub.assert_quiet(QUIET);
    check_dense(&log, 0);
    let mut count: HashMap<u64, usize> = HashMap::new();
    for window in &log {
        assert!(
            ["length", "flush"].contains(&window["reason"].as_str().expect("reason")),
            "{window}"
        );
        for id in ids(window) {
            *count.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<_> = count.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "events in more than one window: {twice:?}"
    );
    let lost: Vec<_> = acked.iter().filter(|id| !count.contains_key(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost (of {}), e.g. {:?}; {refused} refused",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    let foreign: Vec<_> = count.keys().filter(|id| !sent.contains(id)).collect();
    assert!(foreign.is_empty(), "events never sent: {foreign:?}");
}

/// SIGTERM: stop accepting, answer and sync what was received, exit 0; nothing acknowledged is
/// lost.
#[test]
fn sigterm_loses_nothing_acknowledged() {
    acknowledged_events_survive(Signal::Term);
}

/// SIGKILL after acknowledgements: acknowledged means durable, so a restart has everything.
#[test]
fn sigkill_loses_nothing_acknowledged() {
    acknowledged_events_survive(Signal::Kill);
}

/// Fetches the metrics endpoint; returns the head and the body of the response.
fn scrape(addr: SocketAddr) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response to its end");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    (head.to_owned(), body.to_owned())
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (n, value) = line.split_once(' ')?;
            (n == name).then(|| value.parse().expect("a number"))
        })
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

/// `--metrics` serves the counters as Prometheus text.
#[test]
fn metrics_serve_prometheus_text() {
    let dir = temp_dir();
    let (daemon, metrics) = start_with_metrics(
        dir.path(),
        &[
            "--window-size",
            "1s",
            "--allowed-lateness",
            "0s",
            "--idle-timeout",
            "0s",
        ],
    );
    let (head, body) = scrape(metrics);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(metric(&body, "window_node_events_accepted_total"), 0.0);

    let mut client = connect(&daemon);
    ingest_ok(
        &mut client,
        1,
        &[Ev::new(1, BASE + 100), Ev::new(2, BASE + 200)],
        [2, 0, 0],
    );
    ingest_ok(&mut client, 2, &[Ev::new(1, BASE + 100)], [0, 1, 0]);
    ingest_ok(&mut client, 3, &[Ev::new(3, BASE + 1_500)], [1, 0, 0]); // Fires window 0.
    ingest_ok(&mut client, 4, &[Ev::new(4, BASE + 300)], [0, 0, 1]);

    let (head, body) = scrape(metrics);
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    for (name, value) in [
        // The first process on a fresh data directory: the coordinator, epoch 1.
        ("window_node_coordinating", 1.0),
        ("window_node_lease_epoch", 1.0),
        ("window_node_events_accepted_total", 3.0),
        ("window_node_events_duplicate_total", 1.0),
        ("window_node_events_late_total", 1.0),
        ("window_node_windows_fired_total", 1.0),
        ("window_node_ingest_requests_total", 4.0),
        ("window_node_connections_total", 1.0),
        ("window_node_connections_open", 1.0),
        ("window_node_subscribers_dropped_total", 0.0),
        ("window_node_fire_latency_seconds_count", 1.0),
        ("window_node_fire_latency_seconds_bucket{le=\"+Inf\"}", 1.0),
    ] {
        assert_eq!(metric(&body, name), value, "{name} in\n{body}");
    }
    assert!(metric(&body, "window_node_fire_latency_seconds_sum") >= 0.0);
    for counter in [
        "events_accepted",
        "windows_fired",
        "events_late",
        "events_duplicate",
    ] {
        let line = format!("# TYPE window_node_{counter}_total counter");
        assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    }
    assert!(
        body.lines()
            .any(|l| l == "# TYPE window_node_fire_latency_seconds histogram"),
        "{body}"
    );
}

/// `stats_ok` has every field, in the documented order, with the right values.
#[test]
fn stats_ok_reports_every_field() {
    let dir = temp_dir();
    let daemon = start(
        dir.path(),
        &[
            "--window-size",
            "1s",
            "--allowed-lateness",
            "0s",
            "--idle-timeout",
            "0s",
        ],
    );
    let mut client = connect(&daemon);
    client
        .send(r#"{"type":"stats","msg_id":1}"#)
        .expect("send a request");
    let Next::Line(raw) = client.next_line(WAIT) else {
        panic!("no stats_ok");
    };
    let raw = String::from_utf8(raw).expect("UTF-8");
    let fields = [
        "type",
        "in_reply_to",
        "open_windows",
        "buffered_events",
        "emitted_windows",
        "accepted",
        "duplicates",
        "late",
        "watermark",
        "lease_holder",
        "epoch",
        "connections",
        "refused_ahead",
        "refused_open_windows",
        "log_start",
        "config",
    ];
    let positions: Vec<usize> = fields
        .iter()
        .map(|f| {
            raw.find(&format!("\"{f}\":"))
                .unwrap_or_else(|| panic!("no {f} in {raw}"))
        })
        .collect();
    assert!(positions.is_sorted(), "fields out of order: {raw}");
    let empty = parse(raw.as_bytes());
    assert_eq!(
        empty.as_object().expect("an object").len(),
        fields.len(),
        "{raw}"
    );
    assert_eq!(
        empty,
        serde_json::json!({
            "type": "stats_ok", "in_reply_to": 1, "open_windows": 0, "buffered_events": 0,
            "emitted_windows": 0, "accepted": 0, "duplicates": 0, "late": 0, "watermark": null,
            "lease_holder": daemon.addr.to_string(), "epoch": 1, "connections": 1,
            "refused_ahead": 0, "refused_open_windows": 0, "log_start": 0, "config": {"window_size_ms": 1000, "time": "event", "allowed_lateness_ms": 0,
                       "max_events": null, "max_age_ms": null}
        })
    );

    let events = [
        Ev::new(1, BASE + 100),
        Ev::new(2, BASE + 200).keyed("k").valued(3),
        Ev::new(3, BASE + 1_100), // Moves the watermark past window 0: two windows fire.
    ];
    ingest_ok(&mut client, 2, &events, [3, 0, 0]);
    ingest_ok(&mut client, 3, &[Ev::new(3, BASE + 1_100)], [0, 1, 0]);
    ingest_ok(&mut client, 4, &[Ev::new(5, BASE + 10)], [0, 0, 1]);
    let _other = connect(&daemon);
    // The second connection counts once it is accepted: ask until it does (bounded). Past the
    // bound the assertion below shows what differs.
    let mut last = Value::Null;
    let _ = wait_until(WAIT, "the second connection counted", || {
        last = stats_of(&mut client);
        last["connections"] == 2
    });
    assert_eq!(
        last,
        serde_json::json!({
            "type": "stats_ok", "in_reply_to": 999, "open_windows": 1, "buffered_events": 1,
            "emitted_windows": 2, "accepted": 3, "duplicates": 1, "late": 1,
            "watermark": format_ts(BASE + 1_100), "lease_holder": daemon.addr.to_string(), "epoch": 1,
            "connections": 2, "refused_ahead": 0, "refused_open_windows": 0, "log_start": 0, "config": empty["config"]
        })
    );
}

#[test]
fn a_subscribed_connection_answers_requests_with_errors_and_frees_its_slot_on_close() {
    let dir = temp_dir();
    let daemon = start(
        dir.path(),
        &[
            "--window-size",
            "1s",
            "--idle-timeout",
            "0s",
            "--max-connections",
            "2",
        ],
    );
    let mut sub = subscribe(&daemon, None);
    // A request on the subscribed connection is not run: it gets an error on the stream.
    sub.send(r#"{"type":"stats","msg_id":2}"#)
        .expect("send a request");
    let refused = sub.recv();
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], 12, "{refused}");
    let mut other = connect(&daemon);
    assert_eq!(stats_of(&mut other)["connections"], 2);
    // A subscriber that goes away frees its slot without waiting for a window to fire.
    drop(sub);
    wait_until(WAIT, "the closed subscriber's slot free", || {
        stats_of(&mut other)["connections"] == 1
    })
    .expect("the closed subscriber kept its slot");
}

/// A request sent again with its `request_id` (as a follower does after a failover, or a client
/// that lost its connection) is answered from the record of the first, also after SIGKILL: a
/// resent ingest does not reopen a flushed window, a resent flush does not flush again.
#[test]
fn a_repeated_request_id_is_answered_from_its_record_across_sigkill() {
    let args = [
        "--window-size",
        "1s",
        "--allowed-lateness",
        "1h",
        "--idle-timeout",
        "0s",
    ];
    let dir = temp_dir();
    let mut daemon = start(dir.path(), &args);
    let mut client = connect(&daemon);
    let ingest_line = r#"{"type":"ingest","msg_id":1,"request_id":"client-7/1","events":[{"id":1,"timestamp":100},{"id":2,"timestamp":200}]}"#;
    let flush_line = r#"{"type":"flush","msg_id":2,"request_id":"client-7/2"}"#;
    let first_ingest = client.request(ingest_line);
    assert_eq!(first_ingest["accepted"], 2, "{first_ingest}");
    let first_flush = client.request(flush_line);
    assert_eq!(ids(&first_flush["windows"][0]), [1, 2], "{first_flush}");

    for round in 0..2 {
        assert_eq!(client.request(ingest_line), first_ingest, "round {round}");
        assert_eq!(client.request(flush_line), first_flush, "round {round}");
        let fresh = client.request(&format!(
            r#"{{"type":"flush","msg_id":3,"request_id":"client-7/fresh-{round}"}}"#
        ));
        assert_eq!(
            fresh["windows"],
            serde_json::json!([]),
            "the resent ingest reopened the window (round {round})"
        );
        // The envelope form of a forwarded line carries the id outside the body.
        let enveloped = client.request(&format!(
            r#"{{"request_id":"client-7/1","src":"c","dest":"n","body":{}}}"#,
            ingest_line.replace(r#""request_id":"client-7/1","#, "")
        ));
        assert_eq!(enveloped["body"]["accepted"], 2, "{enveloped}");
        daemon.process.signal(Signal::Kill).expect("SIGKILL");
        daemon.process.wait_exit(WAIT).expect("the daemon exits");
        daemon = start(dir.path(), &args);
        client = connect(&daemon);
    }
    let misused = client
        .request(r#"{"type":"close","msg_id":4,"window_id":"window-0","request_id":"client-7/1"}"#);
    assert_eq!(misused["code"], 12, "{misused}");
    assert!(
        misused["text"].as_str().unwrap_or("").contains("an ingest"),
        "{misused}"
    );
    let long = "x".repeat(257);
    for bad in ["5", "\"\"", &format!("\"{long}\"")] {
        let reply = client.request(&format!(
            r#"{{"type":"flush","msg_id":5,"request_id":{bad}}}"#
        ));
        assert_eq!(reply["code"], 12, "{reply}");
        assert!(
            reply["text"]
                .as_str()
                .unwrap_or("")
                .contains("request_id must be"),
            "{reply}"
        );
    }
}

/// A subscriber that stops reading is disconnected once the windows it has not taken hold more
/// than `--subscriber-buffer-bytes` (counted in the metrics), so it cannot make the daemon hold
/// the whole stream; nothing is lost: a subscriber from seq 0 then reads every window.
#[test]
fn a_subscriber_that_stops_reading_is_dropped_past_its_byte_limit() {
    let dir = temp_dir();
    let (daemon, metrics) = start_with_metrics(
        dir.path(),
        &[
            "--window-size",
            "1s",
            "--idle-timeout",
            "0s",
            "--max-events",
            "500",
            "--subscriber-buffer-bytes",
            "1000000",
        ],
    );
    // Subscribes, then never reads.
    let mut stalled = TcpStream::connect(daemon.addr).expect("connect the stalled subscriber");
    stalled
        .write_all(b"{\"type\":\"subscribe\",\"msg_id\":1}\n")
        .expect("subscribe");
    let mut client = connect(&daemon);
    // 200 windows of 500 ids of 200 bytes: 20 MB on the wire, far over what the loopback
    // socket's buffers take, and over 1 MB held for it once they are full.
    let requests = 400;
    let padding = "x".repeat(190);
    for r in 0..requests {
        let events: Vec<String> = (0..250)
            .map(|i| {
                let n = r * 250 + i;
                format!(r#"{{"id":"{padding}-{n:06}","timestamp":{}}}"#, BASE + n)
            })
            .collect();
        let reply = client.request(&format!(
            r#"{{"type":"ingest","msg_id":{},"events":[{}]}}"#,
            r + 1,
            events.join(",")
        ));
        assert_eq!(reply["type"], "ingest_ok", "{reply}");
    }
    let fired = (requests * 250 / 500) as usize;
    wait_until(WAIT, "the stalled subscriber dropped", || {
        metric(&scrape(metrics).1, "window_node_subscribers_dropped_total") == 1.0
    })
    .expect("a subscriber that does not read was not dropped");
    // Its connection ends: what it finds there is less than the stream.
    stalled.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut got = Vec::new();
    stalled
        .read_to_end(&mut got)
        .expect("the stalled subscriber's connection closed");
    let lines = got.iter().filter(|b| **b == b'\n').count();
    assert!(lines < fired, "it got {lines} lines of {fired} windows");
    // The log has every window.
    let mut again = subscribe(&daemon, Some(0));
    let windows = read_n(&mut again, fired, "window_closed");
    check_dense(&windows, 0);
}

/// `--log-retention` (issue 19 item 2): the output log keeps the newest windows it is told to
/// (and every window a consumer group has not acknowledged); a `subscribe` or a new group whose
/// `from_seq` is below the oldest kept gets error 12 naming it; `stats` and the metrics say where
/// the log starts; the mark survives a restart.
#[test]
fn the_output_log_keeps_what_its_retention_says() {
    let dir = temp_dir();
    let args: Vec<&str> = WATERMARK_ONLY
        .into_iter()
        .chain(["--log-retention", "6"])
        .collect();
    let (daemon, metrics) = start_with_metrics(dir.path(), &args);
    let mut client = connect(&daemon);
    fill(&mut client, 0..=10); // Fires windows 0..=9: seq 0..20; keeps 14..20.
    let stats = stats_of(&mut client);
    assert_eq!(
        (&stats["emitted_windows"], &stats["log_start"]),
        (&json!(20), &json!(14)),
        "{stats}"
    );
    let refused = |daemon: &Node, request: Value| {
        let mut conn = connect(daemon);
        let reply = conn.request(&request.to_string());
        assert_eq!(
            (&reply["type"], &reply["code"]),
            (&json!("error"), &json!(12)),
            "{reply}"
        );
        let text = reply["text"].as_str().expect("text").to_owned();
        assert!(
            text.contains("seq 14") && text.contains("from_seq 13"),
            "{text}"
        );
    };
    refused(
        &daemon,
        json!({"type": "subscribe", "msg_id": 1, "from_seq": 13}),
    );
    refused(
        &daemon,
        json!({"type": "subscribe", "msg_id": 1, "group": "late", "from_seq": 13}),
    );
    let mut kept = subscribe(&daemon, Some(14));
    let got = read_n(&mut kept, 6, "window_closed");
    check_dense(&got, 14);
    kept.assert_quiet(QUIET);
    let (_, body) = scrape(metrics);
    assert_eq!(
        metric(&body, "window_node_output_log_start"),
        14.0,
        "{body}"
    );

    // A group that has not acknowledged seq 16 keeps it (and what follows) in the log.
    let mut member = connect(&daemon);
    let ok = member.request(
        &json!({"type": "subscribe", "msg_id": 1, "group": "g", "from_seq": 16}).to_string(),
    );
    assert_eq!(ok["type"], "subscribe_ok", "{ok}");
    fill(&mut client, 11..=15); // Seq 20..30: six back would be 24.
    let stats = stats_of(&mut client);
    assert_eq!(
        (&stats["emitted_windows"], &stats["log_start"]),
        (&json!(30), &json!(16)),
        "{stats}"
    );
    drop(member);

    // The mark is durable: a restarted daemon starts its log there.
    drop(kept);
    drop(daemon);
    let daemon = start(dir.path(), &args);
    let mut client = connect(&daemon);
    assert_eq!(stats_of(&mut client)["log_start"], 16);
    let mut again = subscribe(&daemon, Some(16));
    check_dense(&read_n(&mut again, 14, "window_closed"), 16);
}

/// Issue 19 item 2, retention by age: `--log-retention-age` drops the windows fired longer ago
/// than the age as the next batches are written, never a younger one; a restart counts the
/// windows it recovered as fired then, so it keeps them one more age.
#[test]
fn the_output_log_drops_windows_older_than_its_retention_age() {
    let dir = temp_dir();
    let args: Vec<&str> = WATERMARK_ONLY
        .into_iter()
        .chain(["--log-retention-age", "1s"])
        .collect();
    let daemon = start(dir.path(), &args);
    let mut client = connect(&daemon);
    fill(&mut client, 0..=5); // Seq 0..10.
    assert_eq!(
        stats_of(&mut client)["log_start"],
        0,
        "nothing is a second old yet"
    );
    std::thread::sleep(Duration::from_millis(1500));
    fill(&mut client, 6..=7); // Seq 10..14; the first batch drops seq 0..10.
    let stats = stats_of(&mut client);
    assert_eq!(
        (&stats["emitted_windows"], &stats["log_start"]),
        (&json!(14), &json!(10)),
        "{stats}"
    );
    let mut conn = connect(&daemon);
    let reply = conn.request(r#"{"type":"subscribe","msg_id":1,"from_seq":9}"#);
    assert_eq!(reply["code"], 12, "{reply}");
    let text = reply["text"].as_str().expect("text");
    assert!(text.contains("seq 10"), "{text}");
    let mut kept = subscribe(&daemon, Some(10));
    check_dense(&read_n(&mut kept, 4, "window_closed"), 10);
    drop(kept);

    // A restart: what it recovered counts as fired now, so nothing more goes yet.
    drop(daemon);
    let daemon = start(dir.path(), &args);
    let mut client = connect(&daemon);
    fill(&mut client, 8..=8); // Seq 14..16.
    assert_eq!(stats_of(&mut client)["log_start"], 10);
    std::thread::sleep(Duration::from_millis(1500));
    fill(&mut client, 9..=9); // Seq 16..18; drops seq 10..16.
    assert_eq!(stats_of(&mut client)["log_start"], 16);
}
