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
    window_testkit::wait_until(window_testkit::WAIT, "the holder coordinating", || {
        holder.process.log_has("coordinating")
    })
    .expect("coordinating");
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
