//! Recovery tests against the real binary with `--data-dir` (in arroyo's style): the same input
//! run straight through, and run with SIGKILLs and restarts in the middle, must leave the same
//! durable output log; and every request that was answered before a kill is still there after.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use window_store::{OutputRecord, SledStore, WindowStore};
use window_testkit::{Lines, Process, Stderr, WAIT, run as run_to_end, temp_dir};

fn node() -> &'static str {
    env!("CARGO_BIN_EXE_window-node")
}

fn spawn(dir: &Path) -> Process {
    let mut command = Command::new(node());
    command
        .args([
            "--ids",
            "utc",
            "--compact",
            "--max-events",
            "5",
            "--allowed-lateness",
            "200ms",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    Process::spawn(&mut command, Stderr::Capture).expect("start window-node")
}

/// The next reply line (skipping the `window_closed` lines pushed before it), each line bounded
/// by `WAIT`.
fn next_reply(lines: &Lines) -> String {
    loop {
        let line = lines.next(WAIT).expect("a reply");
        if line.contains("\"in_reply_to\"") {
            return line;
        }
    }
}

/// Request `r`: 20 events with ids unique across requests, keys, and a little disorder.
fn request(r: usize) -> String {
    let events: Vec<String> = (0..20)
        .map(|i| {
            let n = r * 20 + i;
            let ts = 1_000_000 + n as i64 * 7 - (n as i64 * 13 % 50);
            let key = ["a", "b", "c"][n % 3];
            format!(
                r#"{{"id":{n},"timestamp":{ts},"key":"{key}","value":{}}}"#,
                n % 7
            )
        })
        .collect();
    format!(
        r#"{{"type":"assign","msg_id":{r},"events":[{}],"window_size_ms":100}}"#,
        events.join(",")
    )
}

const REQUESTS: usize = 60;

fn read_log(dir: &Path) -> Vec<OutputRecord> {
    let store =
        SledStore::open_waiting(dir, Duration::from_secs(3)).expect("open the store the node left");
    store
        .read_output(0, usize::MAX)
        .expect("read the output log")
}

/// Sends requests from `first` on; kills the node after `kill_after` replies (or runs to the end
/// and flushes). Returns the number of the first request that was not answered.
fn run(dir: &Path, first: usize, kill_after: Option<usize>) -> usize {
    let mut child = spawn(dir);
    let mut stdin = child.take_stdin().expect("stdin");
    let replies = child.stdout_lines().expect("stdout");
    let mut answered = first;
    for r in first..REQUESTS {
        writeln!(stdin, "{}", request(r)).expect("send");
        stdin.flush().expect("send");
        // One request in flight at a time, so "answered" is exact.
        let reply = next_reply(&replies);
        assert!(
            reply.contains(&format!("\"in_reply_to\":{r}")),
            "reply out of order: {reply}"
        );
        answered = r + 1;
        if kill_after == Some(answered - first) {
            child.kill().expect("SIGKILL");
            return answered;
        }
    }
    writeln!(stdin, r#"{{"type":"flush","msg_id":999}}"#).expect("send flush");
    drop(stdin);
    let flushed = next_reply(&replies);
    assert!(flushed.contains("\"in_reply_to\":999"), "{flushed}");
    let status = child
        .wait_exit(WAIT)
        .expect("the node stops at the end of its input");
    assert!(status.success(), "{}", child.failure("failed"));
    answered
}

#[test]
fn a_killed_node_restarts_with_the_same_output_log() {
    let straight = temp_dir();
    assert_eq!(run(straight.path(), 0, None), REQUESTS);
    let expected = read_log(straight.path());
    assert!(
        expected.len() > 50,
        "the workload fires windows ({})",
        expected.len()
    );

    let crashed = temp_dir();
    let mut next = 0;
    for kill_after in [7, 1, 13, 2] {
        next = run(crashed.path(), next, Some(kill_after));
        // Everything answered so far is durable: its windows are in the log or still open.
        let log = read_log(crashed.path());
        assert!(
            log.iter().enumerate().all(|(i, r)| r.seq == i as u64),
            "dense seq"
        );
        assert_eq!(
            windows(&log),
            windows(&expected[..log.len()]),
            "the log so far is a prefix of the straight run's"
        );
    }
    assert_eq!(run(crashed.path(), next, None), REQUESTS);
    let log = read_log(crashed.path());
    assert_eq!(windows(&log), windows(&expected));
    // Each restart took the lease with a higher epoch: epochs rise along the log, and the last
    // process (the fifth to open the directory) fired with epoch 5.
    assert!(
        log.windows(2).all(|w| w[0].epoch <= w[1].epoch),
        "epochs never go back"
    );
    assert_eq!(log.last().map(|r| r.epoch), Some(5));
    assert!(
        expected.iter().all(|r| r.epoch == 1),
        "one process, one epoch"
    );
}

/// The log without epochs: which windows fired, in which order, with what content.
fn windows(log: &[OutputRecord]) -> Vec<(u64, &window_core::ClosedWindow)> {
    log.iter().map(|r| (r.seq, &r.window)).collect()
}

#[test]
fn a_second_node_on_the_same_directory_is_refused_clearly() {
    let dir = temp_dir();
    let mut first = spawn(dir.path());
    // Wait until the first node has opened the store: it answers a request.
    let mut stdin = first.take_stdin().expect("stdin");
    writeln!(stdin, r#"{{"type":"stats","msg_id":1}}"#).expect("send");
    let line = first
        .stdout_lines()
        .expect("stdout")
        .next(WAIT)
        .expect("reply");
    assert!(line.contains("stats_ok"), "{line}");
    let second = run_to_end(
        Command::new(node()).arg("--data-dir").arg(dir.path()),
        b"",
        WAIT,
    )
    .expect("a second node stops");
    drop(stdin);
    first
        .wait_exit(WAIT)
        .expect("first node exits at end of input");
    assert!(!second.status.success(), "the second node must not start");
    let stderr = second.stderr;
    assert!(
        stderr.contains("in use by another process")
            && stderr.contains(&dir.path().display().to_string()),
        "stderr names the directory and the reason: {stderr}"
    );
}
