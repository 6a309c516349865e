//! Hostile or clumsy input against the real daemon (issue 19): each case gets a clear error and
//! changes nothing, and the daemon goes on.

use serde_json::json;
use window_testkit::{Conn, Node, temp_dir};

fn start(dir: &std::path::Path, extra: &[&str]) -> Node {
    let mut args = vec![
        "--window-size".to_owned(),
        "1s".to_owned(),
        "--data-dir".to_owned(),
        dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Node::start(env!("CARGO_BIN_EXE_window-node"), args).expect("the daemon starts")
}

/// Epoch milliseconds now (the daemon's clock is this machine's).
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

fn ingest(client: &mut Conn, msg_id: u64, events: serde_json::Value) -> serde_json::Value {
    client.request(&json!({"type": "ingest", "msg_id": msg_id, "events": events}).to_string())
}

#[test]
fn one_far_future_typo_is_refused_and_cannot_poison_the_watermark() {
    let dir = temp_dir();
    let node = start(dir.path(), &[]);
    let mut client = Conn::open(node.addr).expect("connect");
    let now = now_ms();
    let typo =
        json!([{"id": 1, "timestamp": now}, {"id": "typo", "timestamp": "9999-01-01T00:00:00Z"}]);
    let refused = ingest(&mut client, 1, typo);
    assert_eq!(refused["code"], 12, "{refused}");
    let text = refused["text"].as_str().expect("text");
    assert!(
        text.contains("events[1].timestamp") && text.contains("--max-event-ahead"),
        "{text}"
    );
    // Nothing of it was taken: the real events that follow are on time, not late.
    let ok = ingest(
        &mut client,
        2,
        json!([{"id": 1, "timestamp": now}, {"id": 2, "timestamp": now - 2000}]),
    );
    assert_eq!(
        [&ok["accepted"], &ok["late"]],
        [&json!(2), &json!(0)],
        "{ok}"
    );
    let stats = client.request(r#"{"type":"stats","msg_id":3}"#);
    assert_eq!(stats["refused_ahead"], 1, "{stats}");
    assert_eq!(stats["accepted"], 2, "{stats}");

    // `0s` turns the check off: the same typo is taken.
    drop(client);
    drop(node);
    let dir = temp_dir();
    let node = start(dir.path(), &["--max-event-ahead", "0s"]);
    let mut client = Conn::open(node.addr).expect("connect");
    let taken = ingest(
        &mut client,
        1,
        json!([{"id": "typo", "timestamp": "9999-01-01T00:00:00Z"}]),
    );
    assert_eq!(taken["accepted"], 1, "{taken}");
}

#[test]
fn limits_of_zero_are_refused_at_start_with_a_message() {
    for args in [
        &["serve", "--max-connections", "0"][..],
        &["serve", "--max-line-bytes", "0"],
        &["--max-line-bytes", "0"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_window-node"))
            .args(args)
            .env("RUST_LOG", "off")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run window-node");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("at least 1"), "{args:?}: {stderr}");
        assert!(
            stderr.contains(args[args.len() - 2]),
            "{args:?} names the option: {stderr}"
        );
    }
}

/// Issue 19 item 4: a request id used again for other content is refused with error 12 naming
/// the id (its events are not silently dropped), through a follower and after a restart; the
/// exact resend is answered from the record, and the id's first events are all that is stored.
#[test]
fn a_request_id_reused_for_other_events_is_refused_not_dropped() {
    let dir = temp_dir();
    let mut holder = start(dir.path(), &[]);
    let t = 1_705_305_600_000_i64;
    let line = |msg_id: u64, events: serde_json::Value| {
        json!({"type": "ingest", "msg_id": msg_id, "request_id": "r1", "events": events})
            .to_string()
    };
    let first = json!([{"id": 1, "timestamp": t}]);
    let other = json!([{"id": 2, "timestamp": t + 1}, {"id": 3, "timestamp": t + 2}]);
    let mut client = Conn::open(holder.addr).expect("connect");
    assert_eq!(client.request(&line(1, first.clone()))["accepted"], 1);
    let refused = client.request(&line(2, other.clone()));
    assert_eq!(refused["code"], 12, "{refused}");
    let text = refused["text"].as_str().expect("text");
    assert!(
        text.contains("\"r1\"") && text.contains("other content"),
        "{text}"
    );
    drop(client);

    // After a restart (the record and its fingerprint are durable), through the second node
    // started (a follower, unless it won the lease).
    holder.process.kill().expect("SIGKILL");
    let holder = start(dir.path(), &[]);
    let follower = start(dir.path(), &[]);
    let mut client = Conn::open(follower.addr).expect("connect");
    let refused = client.request(&line(3, other));
    assert_eq!(refused["code"], 12, "{refused}");
    let repeat = client.request(&line(4, first));
    assert_eq!(
        repeat["accepted"], 1,
        "the exact resend is answered from the record: {repeat}"
    );
    let flushed = client.request(r#"{"type":"flush","msg_id":5}"#);
    let ids: Vec<&serde_json::Value> = flushed["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .flat_map(|w| w["events"].as_array().expect("events"))
        .collect();
    assert_eq!(ids, [&json!(1)], "{flushed}");
    drop(holder);
}

/// Issue 19 item 5 (its first half): a follower keeps `--max-connections` too (it served any
/// number before), and its clients are served on when it takes over.
#[test]
fn a_follower_keeps_the_connection_limit() {
    let dir = temp_dir();
    let holder = start(dir.path(), &["--max-connections", "3"]);
    holder.wait_logged("coordinating");
    let follower = start(dir.path(), &["--max-connections", "3"]);
    let stats = r#"{"type":"stats","msg_id":1}"#;
    let mut open: Vec<Conn> = (0..3)
        .map(|n| {
            let mut conn = Conn::open(follower.addr).expect("connect");
            let reply = conn.request(stats);
            assert_eq!(reply["type"], "stats_ok", "connection {n}: {reply}");
            conn
        })
        .collect();
    let refused = |addr| {
        let mut conn = Conn::open(addr).expect("connect");
        let reply = conn.recv();
        assert_eq!(reply["code"], 11, "{reply}");
        let text = reply["text"].as_str().expect("text").to_owned();
        assert!(text.contains("at most 3 connections"), "{text}");
    };
    refused(follower.addr);
    // A slot freed is a slot for the next client.
    drop(open.pop());
    let mut again = window_testkit::wait_for(window_testkit::WAIT, "a freed slot", || {
        let mut conn = Conn::open(follower.addr).ok()?;
        (conn.call(stats)?["type"] == "stats_ok").then_some(conn)
    })
    .expect("a slot after one closed");
    assert_eq!(open.len(), 2, "two kept open, and `again`: three");
    // The holder dies; the follower takes over and its clients go on.
    drop(holder);
    let reply = window_testkit::wait_for(window_testkit::WAIT, "the takeover", || {
        let reply = again.call(r#"{"type":"flush","msg_id":2}"#)?;
        (reply["type"] == "flushed").then_some(reply)
    })
    .expect("the follower serves");
    assert_eq!(reply["windows"], json!([]), "{reply}");
}

/// Issue 19 item 5 (its second half): a follower forwards its clients over a few shared links,
/// so many idle clients of a follower do not use up the coordinator's `--max-connections`, and
/// one client's pipelined requests are answered in order while others share its link.
#[test]
fn a_follower_shares_a_few_links_to_the_coordinator_among_its_clients() {
    let dir = temp_dir();
    // Room for the follower's links and one client of its own, not for the follower's clients.
    let holder = start(dir.path(), &["--max-connections", "6"]);
    holder.wait_logged("coordinating");
    let follower = start(dir.path(), &["--max-connections", "100"]);
    let stats = r#"{"type":"stats","msg_id":1}"#;
    let mut idle: Vec<Conn> = (0..24)
        .map(|n| {
            let mut conn = Conn::open(follower.addr).expect("connect");
            let reply =
                window_testkit::wait_for(window_testkit::WAIT, "the follower serves", || {
                    conn.call(stats)
                })
                .expect("a reply");
            assert_eq!(
                reply["type"], "stats_ok",
                "client {n} of the follower: {reply}"
            );
            conn
        })
        .collect();
    // The holder still has room for a client of its own.
    let mut own = Conn::open(holder.addr).expect("connect");
    let reply = own.request(stats);
    assert_eq!(
        reply["type"], "stats_ok",
        "the holder's own client: {reply}"
    );
    // One client pipelines 40 requests; the others' requests share the links meanwhile.
    let t = 1_705_305_600_000_i64;
    let mut busy = Conn::open(follower.addr).expect("connect");
    for n in 0..40_u64 {
        let events = json!([{"id": n, "timestamp": t + n as i64}]);
        busy.send(&json!({"type": "ingest", "msg_id": n, "events": events}).to_string())
            .expect("send");
    }
    for (n, conn) in idle.iter_mut().enumerate() {
        let reply = conn.request(stats);
        assert_eq!(reply["type"], "stats_ok", "client {n}: {reply}");
    }
    for n in 0..40_u64 {
        let reply = busy.recv();
        assert_eq!(reply["type"], "ingest_ok", "{reply}");
        assert_eq!(
            reply["in_reply_to"], n,
            "replies in the order asked: {reply}"
        );
        assert_eq!(reply["accepted"], 1, "{reply}");
    }
    let reply = own.request(stats);
    assert_eq!(
        reply["accepted"], 40,
        "every event reached the holder once: {reply}"
    );
    drop(idle);
}

/// Issue 19 item 2, its first limit: `--max-open-windows`. A request that would open more
/// windows is refused whole with error 11 (nothing of it taken) and counted in stats; once
/// windows have fired the same request goes in.
#[test]
fn a_request_over_the_open_window_limit_is_refused_whole_until_windows_fire() {
    let dir = temp_dir();
    let node = start(dir.path(), &["--max-open-windows", "2"]);
    let mut client = Conn::open(node.addr).expect("connect");
    let t = 1_705_305_600_000_i64;
    let event = |id: u64, key: &str| json!({"id": id, "timestamp": t, "key": key});
    let ok = ingest(&mut client, 1, json!([event(1, "a"), event(2, "b")]));
    assert_eq!(ok["accepted"], 2, "{ok}");
    let over = json!([event(3, "a"), event(4, "c")]);
    let refused = ingest(&mut client, 2, over.clone());
    assert_eq!(refused["code"], 11, "{refused}");
    let text = refused["text"].as_str().expect("text");
    assert!(text.contains("--max-open-windows"), "{text}");
    let stats = client.request(r#"{"type":"stats","msg_id":3}"#);
    assert_eq!(
        [
            &stats["refused_open_windows"],
            &stats["open_windows"],
            &stats["accepted"]
        ],
        [&json!(1), &json!(2), &json!(2)],
        "refused whole, counted: {stats}"
    );
    let flushed = client.request(r#"{"type":"flush","msg_id":4}"#);
    assert_eq!(
        flushed["windows"].as_array().map(Vec::len),
        Some(2),
        "{flushed}"
    );
    let again = ingest(&mut client, 5, over);
    assert_eq!(again["accepted"], 2, "{again}");
}

/// Runs the stdin node (`window-node ARGS`) on `input` to its end, through the harness.
fn stdin_node(args: &[&str], input: &[u8]) -> window_testkit::Finished {
    window_testkit::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_window-node"))
            .args(args)
            .env("RUST_LOG", "off"),
        input,
        window_testkit::WAIT,
    )
    .expect("the stdin node runs to its end")
}

/// Issue 19 item 6, point 1: `--connection-idle-timeout` counts bytes, not lines: a client that
/// sends one long line slowly (a piece every 300 ms, for three times the timeout) is served; one
/// that sends nothing is cut off.
#[test]
fn a_client_slowly_sending_one_long_line_is_not_idle() {
    let dir = temp_dir();
    let node = start(dir.path(), &["--connection-idle-timeout", "1s"]);
    let mut slow = Conn::open(node.addr).expect("connect");
    let line = json!({"type": "ingest", "msg_id": 1, "events":
        (0..30).map(|i| json!({"id": i, "timestamp": 1_705_305_600_000_i64 + i})).collect::<Vec<_>>()})
    .to_string();
    let pieces: Vec<&[u8]> = line.as_bytes().chunks(line.len().div_ceil(10)).collect();
    for piece in &pieces {
        slow.send_bytes(piece).expect("send a piece");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let answer = slow.request("");
    assert_eq!(answer["accepted"], 30, "{answer}");

    // The check can fail: a connection that sends nothing is closed after the timeout.
    let mut silent = Conn::open(node.addr)
        .expect("connect")
        .with_wait(std::time::Duration::from_secs(5));
    silent.assert_closed();
}

/// Point 4: the line limit counts a line's content, not its terminator: with
/// `--max-line-bytes N`, N bytes then `\r\n` are served, N + 1 bytes then `\r\n` are not.
#[test]
fn the_cr_of_crlf_does_not_count_toward_the_line_limit() {
    let line = |msg_id: u64, pad: usize| {
        let id = "x".repeat(pad);
        format!(
            "{{\"type\": \"assign\", \"msg_id\": {msg_id}, \"events\": [{{\"id\": \"{id}\", \"timestamp\": \"2024-01-15T10:00:10Z\"}}], \"window_size_ms\": 60000}}"
        )
    };
    let limit = line(1, 40).len();
    let input = format!("{}\r\n{}\r\n", line(1, 40), line(2, 41));
    let done = stdin_node(&["--max-line-bytes", &limit.to_string()], input.as_bytes());
    let out = String::from_utf8_lossy(&done.stdout);
    let replies: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(replies.len(), 2, "{out}");
    assert_eq!(replies[0]["type"], "assigned", "exactly the limit: {out}");
    assert_eq!(replies[1]["code"], 12, "one byte over: {out}");
    let text = replies[1]["text"].as_str().expect("text");
    assert!(
        text.contains(&format!("limit of {limit} bytes")) && text.contains("--max-line-bytes"),
        "{text}"
    );
}

/// Point 6: an absurd `--window-size` or `--allowed-lateness` stops the start with exit 2 and a
/// message naming the option and its range, for the stdin node, `serve` and `aggregate`.
#[test]
fn absurd_window_sizes_and_lateness_are_refused_at_start() {
    let cases: &[(&[&str], &str)] = &[
        (&["--window-size", "0s"], "from 1ms to 100 years"),
        (&["--window-size", "500us"], "from 1ms to 100 years"),
        (&["--window-size=-5s"], "cannot be negative"),
        (&["--window-size", "101years"], "from 1ms to 100 years"),
        (&["--window-size", "300000000000years"], "--window-size"),
        (&["--allowed-lateness", "1000years"], "from 0s to 100 years"),
        (&["serve", "--window-size", "0s"], "from 1ms to 100 years"),
        (
            &["serve", "--window-size", "200years"],
            "from 1ms to 100 years",
        ),
        (
            &["serve", "--allowed-lateness", "290000years"],
            "from 0s to 100 years",
        ),
        (
            &["aggregate", "--window-size", "0s"],
            "from 1ms to 100 years",
        ),
    ];
    for (args, says) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_window-node"))
            .args(*args)
            .env("RUST_LOG", "off")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run window-node");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let option = args
            .iter()
            .find(|a| a.starts_with("--"))
            .and_then(|a| a.split('=').next())
            .expect("an option");
        assert!(
            stderr.contains(option) && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }
}

/// Point 7: a large legal lateness puts the watermark before year 0000 for early events; stats
/// then show no watermark (`null`), never an `@<ms>` text, and a watermark that can be written
/// is written as a timestamp.
#[test]
fn a_watermark_before_year_zero_is_null_not_an_at_number() {
    let dir = temp_dir();
    let node = start(dir.path(), &["--allowed-lateness", "36500d"]);
    let mut client = Conn::open(node.addr).expect("connect");
    let ok = ingest(
        &mut client,
        1,
        json!([{"id": 1, "timestamp": "0050-01-01T00:00:00Z"}]),
    );
    assert_eq!(ok["accepted"], 1, "{ok}");
    let stats = client.request(r#"{"type":"stats","msg_id":2}"#);
    assert!(!stats.to_string().contains('@'), "{stats}");
    assert_eq!(stats["watermark"], serde_json::Value::Null, "{stats}");
    let ok = ingest(
        &mut client,
        3,
        json!([{"id": 2, "timestamp": "2024-01-15T10:00:00Z"}]),
    );
    assert_eq!(ok["accepted"], 1, "{ok}");
    let stats = client.request(r#"{"type":"stats","msg_id":4}"#);
    // 2024-01-15T10:00:00Z minus 36500 days.
    assert_eq!(stats["watermark"], "1924-02-09T10:00:00Z", "{stats}");
}

/// Point 8: a data directory whose `epoch` file was deleted, with a store beside it, is not
/// started at epoch 1 again (its windows would look like a stale writer's while `seq` goes on):
/// `serve` and the stdin node refuse to start, naming the file and what to do.
#[test]
fn a_deleted_epoch_file_beside_a_store_stops_the_start() {
    let dir = temp_dir();
    let node = start(dir.path(), &[]);
    let mut client = Conn::open(node.addr).expect("connect");
    let ok = ingest(&mut client, 1, json!([{"id": 1, "timestamp": now_ms()}]));
    assert_eq!(ok["accepted"], 1, "{ok}");
    let flushed = client.request(r#"{"type":"flush","msg_id":2}"#);
    assert_eq!(flushed["windows"][0]["epoch"], 1, "{flushed}");
    drop(client);
    drop(node);
    let epoch = dir.path().join("epoch");
    std::fs::remove_file(&epoch).expect("delete the epoch file");
    let data_dir = dir.path().to_str().expect("path");
    for args in [
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir][..],
        &["--data-dir", data_dir],
    ] {
        let done = window_testkit::run(
            std::process::Command::new(env!("CARGO_BIN_EXE_window-node"))
                .args(args)
                .env("RUST_LOG", "error"),
            b"",
            window_testkit::WAIT,
        )
        .expect("it exits");
        assert!(!done.status.success(), "{args:?} started: {}", done.stderr);
        assert!(
            done.stderr
                .contains(&format!("{} is missing", epoch.display()))
                && done.stderr.contains("holds a store")
                && done.stderr.contains("move the directory away"),
            "{args:?}: {}",
            done.stderr
        );
        assert!(!epoch.exists(), "{args:?} wrote a new epoch");
    }
}

/// Point 9: a `serve` on a directory a stdin node holds answers error 11 naming the stdin node
/// and its pid (not "the lease holder died"), and takes over once the stdin node ends.
#[test]
fn a_serve_behind_a_stdin_node_names_it() {
    let dir = temp_dir();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_window-node"));
    command
        .args(["--data-dir", dir.path().to_str().expect("path")])
        .env("RUST_LOG", "off")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut stdin_node =
        window_testkit::Process::spawn(&mut command, window_testkit::Stderr::Capture)
            .expect("start the stdin node");
    let mut input = stdin_node.take_stdin().expect("its stdin");
    let output = stdin_node.stdout_lines().expect("its stdout");
    // Once it answers, it holds the lease.
    use std::io::Write as _;
    writeln!(input, r#"{{"type": "stats", "msg_id": 1}}"#).expect("write");
    let answer = output.next(window_testkit::WAIT).expect("an answer");
    assert!(answer.contains("stats_ok"), "{answer}");

    let serve = start(dir.path(), &["--failover-timeout", "1s"]);
    let mut client = Conn::open(serve.addr).expect("connect");
    let refused = client.request(r#"{"type":"stats","msg_id":2}"#);
    assert_eq!(refused["code"], 11, "{refused}");
    let text = refused["text"].as_str().expect("text");
    assert!(
        text.contains(&format!(
            "stdin node (window-node --data-dir without serve, pid {})",
            stdin_node.id()
        )) && text.contains("another --data-dir"),
        "{text}"
    );

    // End its input: it exits and the serve takes over.
    drop(input);
    stdin_node
        .wait_exit(window_testkit::WAIT)
        .expect("the stdin node exits at the end of its input");
    let served = window_testkit::wait_for(window_testkit::WAIT, "the serve to take over", || {
        client
            .call(r#"{"type":"stats","msg_id":3}"#)
            .filter(|r| r["type"] == "stats_ok")
    })
    .expect("the serve takes over");
    assert_eq!(served["epoch"], 2, "{served}");
}

/// The first 60 kB of an ingest line whose one event carries a payload of that many `x`: its end
/// is `"}]}` and a line end.
fn half_line(msg_id: u64) -> String {
    let t = 1_705_305_600_000_i64;
    format!(
        r#"{{"type":"ingest","msg_id":{msg_id},"events":[{{"id":{msg_id},"timestamp":{t},"payload":"{}"#,
        "x".repeat(60_000)
    )
}

/// Two connections to `addr`, A and B, each holding a 60 kB unfinished line, A's read first
/// (B's takes the sum to 120 kB).
fn two_half_lines(addr: std::net::SocketAddr) -> (Conn, Conn) {
    let mut a = Conn::open(addr).expect("connect");
    a.send_bytes(half_line(1).as_bytes())
        .expect("A's first part");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut b = Conn::open(addr).expect("connect");
    b.send_bytes(half_line(2).as_bytes())
        .expect("B's first part");
    (a, b)
}

/// Issue 19 item 2: the bytes of unfinished lines over all connections are bounded
/// (`--max-buffered-line-bytes`): the connection whose line would take the sum over the limit
/// gets error 11 and is closed; the others go on, and the budget it held is free again.
#[test]
fn unfinished_lines_over_all_connections_are_bounded() {
    let dir = temp_dir();
    let node = start(dir.path(), &["--max-buffered-line-bytes", "100000"]);
    // It accepts clients once it holds the lease: A's bytes must be read before B's.
    node.wait_logged("coordinating");
    let (mut a, mut b) = two_half_lines(node.addr);
    let refused = b.recv();
    assert_eq!(refused["code"], 11, "{refused}");
    let text = refused["text"].as_str().expect("text");
    assert!(text.contains("--max-buffered-line-bytes"), "{text}");
    assert!(
        matches!(
            b.next_line(window_testkit::WAIT),
            window_testkit::Next::Closed
        ),
        "B is closed"
    );
    // A finishes its line: taken.
    a.send_bytes(b"\"}]}\n").expect("A's end");
    let ok = a.recv();
    assert_eq!(ok["accepted"], 1, "{ok}");
    // B's bytes were let go: another 60 kB line fits again.
    let mut c = Conn::open(node.addr).expect("connect");
    let ok = c.request(&format!("{}\"}}]}}", half_line(3)));
    assert_eq!(ok["accepted"], 1, "{ok}");
}

/// The same bound on a follower's own connections: the client whose unfinished line would cross
/// it is disconnected; the other's line goes through to the holder.
#[test]
fn a_follower_bounds_unfinished_lines_too() {
    let dir = temp_dir();
    let holder = start(dir.path(), &[]);
    holder.wait_logged("coordinating");
    let follower = start(dir.path(), &["--max-buffered-line-bytes", "100000"]);
    // It accepts clients once it knows it follows: A's bytes must be read before B's.
    follower.wait_logged("following");
    let (mut a, mut b) = two_half_lines(follower.addr);
    assert!(
        matches!(
            b.next_line(window_testkit::WAIT),
            window_testkit::Next::Closed
        ),
        "B is disconnected; the follower's log:\n{}",
        follower.process.log_text()
    );
    a.send_bytes(b"\"}]}\n").expect("A's end");
    let ok = a.recv();
    assert_eq!(ok["accepted"], 1, "{ok}");
}
