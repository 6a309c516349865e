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
