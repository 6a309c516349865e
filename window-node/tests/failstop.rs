//! A failed write or sync is fail-stop (issue 19 item 1), against the real binary and real files:
//! the requests not made durable get error 13 naming the OS error and the directory, one log line
//! says what happened and what to do, the lease is let go, and the process exits non-zero within
//! a few seconds. SIGTERM ends a process whose store does not answer. A Redis that goes away or
//! refuses writes is error 11 instead, and the node steps down and serves again once Redis is
//! back (issue 19 item 7): all the state is in Redis, so a later holding recovers it.
//!
//! The disk is made "full" without root: the node runs under `ulimit -f` with SIGXFSZ ignored, so
//! a write past the limit fails with EFBIG (`File too large`). Where `mount` works (root), a real
//! 2 MB tmpfs gives ENOSPC too; elsewhere that test says why it skips.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use window_testkit::{
    Conn, Next, Node, Persistence, Process, RedisServer, Signal, Stderr, TempDir, temp_dir,
};

/// How long a failed process may take to answer and exit (the issue asks for a second or two;
/// the machine is shared).
const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// `serve` arguments for a node on the Redis at `url`, namespace `ns`: one-minute windows, a
/// lease of `ttl`, then `extra`.
fn on_redis<'a>(url: &'a str, ns: &'a str, ttl: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    [
        "--window-size",
        "60s",
        "--store",
        url,
        "--namespace",
        ns,
        "--lease-ttl",
        ttl,
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect()
}

/// A script that runs window-node with files limited to about 2 MB, writes past the limit
/// failing with EFBIG instead of killing the process (SIGXFSZ ignored survives the exec).
fn limited_binary(dir: &Path) -> PathBuf {
    let script = dir.join("window-node-2mb");
    let text = format!(
        "#!/bin/sh\ntrap '' XFSZ\nulimit -f 4096\nexec '{}' \"$@\"\n",
        env!("CARGO_BIN_EXE_window-node")
    );
    // Written by a child, not by this process: a file this process had open for writing can be
    // inherited by another test's child between its fork and exec, and executing it then fails
    // with ETXTBSY.
    let status = Command::new("sh")
        .args(["-c", "printf '%s' \"$1\" > \"$0\" && chmod 755 \"$0\""])
        .arg(&script)
        .arg(text)
        .status()
        .expect("sh");
    assert!(status.success(), "writing {}: {status}", script.display());
    script
}

/// One `assign` line of about 4 MB (events with payloads), more than the limit.
fn big_assign(msg_id: u64) -> String {
    let events: Vec<Value> = (0..25_000)
        .map(|i| json!({"id": i, "timestamp": 1_705_305_600_000_i64 + i, "payload": "x".repeat(100)}))
        .collect();
    json!({"type": "assign", "msg_id": msg_id, "events": events, "window_size_ms": 60000})
        .to_string()
}

/// The stdin node on `dir` run by `binary`, its stdin kept open.
fn stdin_node(binary: &Path, dir: &Path) -> Process {
    let mut command = Command::new(binary);
    command
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    Process::spawn(&mut command, Stderr::Capture).expect("spawn the stdin node")
}

/// Checks an error 13 reply to `msg_id` that names the OS error and the directory.
fn assert_storage_failed(reply: &Value, msg_id: u64, dir: &Path, os_error: &str) {
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["in_reply_to"], msg_id, "{reply}");
    assert_eq!(reply["code"], 13, "{reply}");
    let text = reply["text"].as_str().expect("text");
    assert!(
        text.contains(&dir.display().to_string()) && text.contains(os_error),
        "the text names neither the directory nor the OS error: {text}"
    );
}

/// The one error line a failed process logs, which says what to do.
fn assert_one_error_line(process: &Process, advice: &str) {
    let log = process.log_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error line expected, log:\n{log}");
    assert!(errors[0].contains(advice), "no advice in: {}", errors[0]);
}

/// A stdin node on a dir ends at once with exit 0 when the dir is free (its lease taken and
/// released) and gives the replies to `input`.
fn run_stdin(dir: &Path, input: &str) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_window-node"));
    command.arg("--data-dir").arg(dir);
    let finished =
        window_testkit::run(&mut command, input.as_bytes(), Duration::from_secs(20)).expect("run");
    assert!(finished.status.success(), "{}", finished.stderr);
    String::from_utf8(finished.stdout).expect("utf-8")
}

fn stdin_node_fails_on_a_full_disk(
    binary: &Path,
    dir: &Path,
    os_error: &str,
    make_room: impl FnOnce(),
) {
    let mut node = stdin_node(binary, dir);
    let lines = node.stdout_lines().expect("stdout");
    let mut stdin = node.take_stdin().expect("stdin");
    // A small request that is made durable, then one the disk cannot take, then one behind it;
    // stdin stays open (a client waiting for its replies).
    let small = r#"{"type": "assign", "msg_id": 1, "events": [{"id": "kept", "timestamp": 1705305600000}], "window_size_ms": 60000}"#;
    writeln!(stdin, "{small}").expect("write");
    stdin.flush().expect("flush");
    let first: Value =
        serde_json::from_str(&lines.next(EXIT_WITHIN).expect("reply 1")).expect("json");
    assert_eq!(first["type"], "assigned", "{first}");
    let started = Instant::now();
    writeln!(stdin, "{}", big_assign(2)).expect("write");
    writeln!(stdin, r#"{{"type": "stats", "msg_id": 3}}"#).expect("write");
    stdin.flush().expect("flush");
    let second: Value =
        serde_json::from_str(&lines.next(EXIT_WITHIN).expect("reply 2")).expect("json");
    assert_storage_failed(&second, 2, dir, os_error);
    let status = node
        .wait_exit(EXIT_WITHIN)
        .expect("exits with stdin still open");
    assert!(!status.success(), "{status}");
    assert!(started.elapsed() < EXIT_WITHIN, "{:?}", started.elapsed());
    // The stats line behind it was read with it: answered 13 too, never acknowledged.
    if let Ok(third) = lines.next(Duration::from_secs(1)) {
        let third: Value = serde_json::from_str(&third).expect("json");
        assert_eq!(
            [&third["in_reply_to"], &third["code"]],
            [&json!(3), &json!(13)],
            "{third}"
        );
    }
    assert_one_error_line(&node, "free space");
    drop(stdin);

    // The lease is free, and what was acknowledged is there.
    make_room();
    let out = run_stdin(dir, "{\"type\": \"flush\", \"msg_id\": 9}\n");
    assert!(
        out.contains("\"kept\""),
        "the acknowledged event is gone: {out}"
    );
}

#[test]
fn a_full_disk_stops_the_stdin_node_with_error_13() {
    let dir = temp_dir();
    let binary = limited_binary(dir.path());
    let data = dir.path().join("d");
    stdin_node_fails_on_a_full_disk(&binary, &data, "File too large", || {});
}

#[test]
fn a_full_tmpfs_stops_the_stdin_node_with_error_13() {
    let Some(mounted) = Tmpfs::mount() else {
        return;
    };
    let data = mounted.dir.path().join("d");
    stdin_node_fails_on_a_full_disk(
        Path::new(env!("CARGO_BIN_EXE_window-node")),
        &data,
        "No space left on device",
        || mounted.grow(),
    );
}

/// A 2 MB tmpfs, unmounted when dropped; `None` (after saying why) where mounting is not allowed.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Room for the node that checks what was kept.
    fn grow(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,size=16m"])
            .arg(self.dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "remounting the tmpfs larger: {status}");
    }

    fn mount() -> Option<Tmpfs> {
        let dir = temp_dir();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::piped())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            Ok(out) => {
                skip(&String::from_utf8_lossy(&out.stderr));
                None
            }
            Err(e) => {
                skip(&e.to_string());
                None
            }
        }
    }
}

fn skip(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPING the tmpfs test: cannot mount a tmpfs here ({}); the ulimit test covers a full disk ***\n",
        why.trim()
    );
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_stops_the_daemon_and_a_follower_takes_over() {
    let dir = temp_dir();
    let binary = limited_binary(dir.path());
    let data = dir.path().join("d");
    let args = [
        "--window-size".to_owned(),
        "60s".to_owned(),
        "--data-dir".to_owned(),
        data.display().to_string(),
    ];
    let mut holder = Node::start(&binary, &args).expect("the limited daemon starts");
    // The limited one must be the holder: the follower starts once it coordinates.
    holder.wait_logged("coordinating");
    let follower = Node::start(env!("CARGO_BIN_EXE_window-node"), &args).expect("the follower");
    let mut client = Conn::open(holder.addr).expect("connect");
    let kept = client.request(
        r#"{"type":"ingest","msg_id":1,"events":[{"id":"kept","timestamp":1705305600000}]}"#,
    );
    assert_eq!(kept["accepted"], 1, "{kept}");

    let started = Instant::now();
    let big = big_assign(2).replace("\"assign\"", "\"ingest\"");
    client.send(&big).expect("send");
    client
        .send(
            r#"{"type":"ingest","msg_id":3,"events":[{"id":"behind","timestamp":1705305600001}]}"#,
        )
        .expect("send");
    let refused = client.recv();
    assert_storage_failed(&refused, 2, &data, "File too large");
    // The request queued behind it was not acknowledged either.
    if let Some(behind) = next_message(&mut client, Duration::from_secs(2)) {
        assert_eq!(behind["type"], "error", "{behind}");
    }
    let status = holder
        .process
        .wait_exit(EXIT_WITHIN)
        .expect("the holder exits");
    assert!(!status.success(), "{status}");
    assert!(started.elapsed() < EXIT_WITHIN, "{:?}", started.elapsed());
    assert_one_error_line(&holder.process, "free space");

    // The lease was let go: the follower takes over and has what was acknowledged.
    let mut client = Conn::open(follower.addr).expect("connect");
    let flushed = window_testkit::wait_for(window_testkit::WAIT, "the follower serving", || {
        let reply = client.call(r#"{"type":"flush","msg_id":4,"request_id":"f"}"#)?;
        (reply["type"] == "flushed").then_some(reply)
    })
    .expect("the follower takes over");
    let windows = flushed["windows"].as_array().expect("windows");
    assert!(
        windows.iter().any(|w| w["events"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("kept")))),
        "the acknowledged event is gone: {flushed}"
    );
    assert!(
        !windows.iter().any(|w| w["events"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("behind")))),
        "a refused request took effect: {flushed}"
    );
}

/// A Redis whose memory is full refuses the holder's batch (issue 19 item 7): error 11 naming
/// the server and the refusal (nothing was applied: a script that may write is refused before it
/// runs), one warning, and the node keeps running: it steps down, contends again, and once Redis
/// takes writes it holds the lease again at once (not after the 30 s ttl), with everything
/// acknowledged and nothing of the refused request.
#[test]
fn a_redis_that_refuses_writes_is_error_11_and_the_node_serves_again_when_it_takes_them() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (url, ns) = (server.url(), server.fresh_namespace());
    let args = on_redis(&url, &ns, "30s", &["--failover-timeout", "1s"]);
    let mut holder = Node::start(env!("CARGO_BIN_EXE_window-node"), &args).expect("holder");
    let mut client = Conn::open(holder.addr).expect("connect");
    let kept = client.request(
        r#"{"type":"ingest","msg_id":1,"events":[{"id":"kept","timestamp":1705305600000}]}"#,
    );
    assert_eq!(kept["accepted"], 1, "{kept}");

    server
        .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .expect("config");
    server
        .command(&["CONFIG", "SET", "maxmemory", "1"])
        .expect("config");
    let refused = client.request(
        r#"{"type":"ingest","msg_id":2,"events":[{"id":"refused","timestamp":1705305600001}]}"#,
    );
    assert_eq!(
        [&refused["in_reply_to"], &refused["code"]],
        [&json!(2), &json!(11)],
        "{refused}"
    );
    let text = refused["text"].as_str().expect("text");
    assert!(text.contains(&url) && text.contains("OOM"), "{text}");
    // Still refusing: the node answers 11 (its clients reconnect; it follows while no one holds).
    std::thread::sleep(Duration::from_millis(500));
    let mut client = Conn::open(holder.addr).expect("connect again");
    let waiting = client.request(
        r#"{"type":"ingest","msg_id":3,"events":[{"id":"refused","timestamp":1705305600001}]}"#,
    );
    assert_eq!(waiting["code"], 11, "{waiting}");
    assert!(
        holder.process.exited().expect("poll").is_none(),
        "the node keeps running while Redis refuses writes: {}",
        holder.process.log_text()
    );
    assert!(
        holder.process.log_has("stepped down"),
        "{}",
        holder.process.log_text()
    );

    // Redis takes writes again: the same node serves at once (its own stale lease is taken over
    // under a new epoch) and has what was acknowledged.
    server
        .command(&["CONFIG", "SET", "maxmemory", "0"])
        .expect("config");
    let back = Instant::now();
    let flushed =
        window_testkit::wait_for(Duration::from_secs(10), "the node serving again", || {
            let mut client = Conn::open(holder.addr).ok()?;
            let reply = client.call(r#"{"type":"flush","msg_id":4}"#)?;
            (reply["type"] == "flushed").then_some(reply)
        })
        .unwrap_or_else(|e| panic!("{e}\nthe node's log:\n{}", holder.process.log_text()));
    let text = flushed.to_string();
    assert!(text.contains("\"kept\""), "{text}");
    assert!(!text.contains("\"refused\""), "{text}");
    eprintln!("served again {:?} after Redis took writes", back.elapsed());
}

/// SIGTERM ends a holder whose store does not answer (a paused Redis: every call waits for its
/// 30 s timeout): the orderly stop is bounded.
#[test]
fn sigterm_ends_a_holder_whose_store_does_not_answer() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (url, ns) = (server.url(), server.fresh_namespace());
    let args = [
        "--store",
        url.as_str(),
        "--namespace",
        &ns,
        "--lease-ttl",
        "60s",
    ];
    let mut holder = Node::start(env!("CARGO_BIN_EXE_window-node"), args).expect("holder");
    holder.wait_logged("coordinating");
    let mut client = Conn::open(holder.addr).expect("connect");
    server.process().signal(Signal::Stop).expect("pause redis");
    client
        .send(r#"{"type":"ingest","msg_id":1,"events":[{"id":1,"timestamp":1705305600000}]}"#)
        .expect("send");
    // The driver is now waiting for Redis.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    holder.process.signal(Signal::Term).expect("SIGTERM");
    let status = holder.process.wait_exit(Duration::from_secs(15));
    server.process().signal(Signal::Cont).expect("resume redis");
    let status = status.expect("the holder exits after SIGTERM");
    assert!(!status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // Nothing was acknowledged meanwhile.
    if let Some(reply) = next_message(&mut client, Duration::from_millis(100)) {
        assert_eq!(reply["type"], "error", "{reply}");
    }
}

/// The next message on `client`, `None` when none comes within `within` or it was closed.
fn next_message(client: &mut Conn, within: Duration) -> Option<Value> {
    match client.next_line(within) {
        Next::Line(line) => Some(serde_json::from_slice(&line).expect("a JSON line")),
        Next::Closed | Next::Timeout => None,
    }
}

/// A Redis that goes away (issue 19 item 7): the holder answers error 11 (not 13: the server
/// may come back) and steps down without exiting; both nodes answer 11 while no holder can be
/// reached; when Redis is back one of them takes the lease by itself, and through either the
/// acknowledged event is there.
#[test]
fn an_unreachable_redis_is_error_11_and_the_nodes_serve_again_when_it_returns() {
    let Ok(mut server) = RedisServer::launch(Persistence::AppendOnlyEverySec, None) else {
        // Not installed (or not startable): `RedisServer::start` says so for the other tests.
        let _ = RedisServer::start();
        return;
    };
    let (url, ns) = (server.url(), server.fresh_namespace());
    let args = on_redis(&url, &ns, "2s", &["--failover-timeout", "1s"]);
    let mut holder = Node::start(env!("CARGO_BIN_EXE_window-node"), &args).expect("holder");
    holder.wait_logged("coordinating");
    let mut follower = Node::start(env!("CARGO_BIN_EXE_window-node"), &args).expect("follower");
    let mut client = Conn::open(holder.addr).expect("connect");
    let kept = client.request(
        r#"{"type":"ingest","msg_id":1,"request_id":"k","events":[{"id":"kept","timestamp":1705305600000}]}"#,
    );
    assert_eq!(kept["accepted"], 1, "{kept}");

    server.stop().expect("stop redis");
    let away = client.request(
        r#"{"type":"ingest","msg_id":2,"request_id":"a","events":[{"id":"away","timestamp":1705305600001}]}"#,
    );
    assert_eq!(
        [&away["in_reply_to"], &away["code"]],
        [&json!(2), &json!(11)],
        "{away}"
    );
    holder.wait_logged("stepped down");
    // Both answer 11 while Redis is away, and neither exits.
    for (name, node) in [("old holder", &mut holder), ("follower", &mut follower)] {
        let mut client = Conn::open(node.addr).expect("connect");
        let waiting = client.request(r#"{"type":"flush","msg_id":3,"request_id":"f1"}"#);
        assert_eq!(waiting["code"], 11, "{name}: {waiting}");
        assert!(
            node.process.exited().expect("poll").is_none(),
            "the {name} exited while Redis was away: {}",
            node.process.log_text()
        );
    }
    // ... and they serve again by themselves once it is back.
    server
        .restart(Persistence::AppendOnlyEverySec)
        .expect("restart redis");
    for (name, node) in [("old holder", &holder), ("follower", &follower)] {
        let flushed = window_testkit::wait_for(window_testkit::WAIT, "serving again", || {
            let mut client = Conn::open(node.addr).ok()?;
            let reply = client.call(r#"{"type":"flush","msg_id":4,"request_id":"f2"}"#)?;
            (reply["type"] == "flushed").then_some(reply)
        })
        .unwrap_or_else(|e| panic!("{e}\nthe {name}'s log:\n{}", node.process.log_text()));
        let text = flushed.to_string();
        assert!(
            text.contains("\"kept\""),
            "an acknowledged event is lost (through the {name}): {text}"
        );
    }
}

/// A node started while its Redis is away waits for it (saying so) instead of exiting, and
/// serves once Redis is back, without a supervisor (issue 19 item 7).
#[test]
fn a_node_started_before_its_redis_waits_and_serves_once_it_is_up() {
    let Ok(mut server) = RedisServer::launch(Persistence::AppendOnlyEverySec, None) else {
        let _ = RedisServer::start();
        return;
    };
    let (url, ns) = (server.url(), server.fresh_namespace());
    server.stop().expect("stop redis");
    let args = on_redis(&url, &ns, "2s", &[]);
    let mut node = Node::start(env!("CARGO_BIN_EXE_window-node"), &args).expect("the node");
    node.wait_logged("waiting for it");
    assert!(
        node.process.exited().expect("its status").is_none(),
        "the node exited while Redis was away:\n{}",
        node.process.log_text()
    );
    server
        .restart(Persistence::AppendOnlyEverySec)
        .expect("start redis");
    node.wait_logged("coordinating");
    let mut client = Conn::open(node.addr).expect("connect");
    let reply = client.request(
        r#"{"type":"ingest","msg_id":1,"events":[{"id":"late-start","timestamp":1705305600000}]}"#,
    );
    assert_eq!(reply["accepted"], 1, "{reply}");
}

/// A Redis namespace wiped under running nodes (FLUSHALL; issue 19 item 7): the holder's next
/// batch is refused, the request gets error 13 naming the namespace, and the holder exits
/// non-zero with one error line that says what to do; the follower, which knew the namespace
/// too, exits the same way instead of taking the lease; nobody starts the namespace over at
/// epoch 1 and seq 0.
#[test]
fn a_wiped_namespace_stops_the_holder_and_the_follower() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (url, ns) = (server.url(), server.fresh_namespace());
    let args = on_redis(&url, &ns, "30s", &[]);
    let mut holder = Node::start(env!("CARGO_BIN_EXE_window-node"), &args).expect("holder");
    holder.wait_logged("coordinating");
    let mut follower = Node::start(env!("CARGO_BIN_EXE_window-node"), &args).expect("follower");
    follower.wait_logged("following");
    let mut client = Conn::open(holder.addr).expect("connect");
    let kept = client.request(
        r#"{"type":"ingest","msg_id":1,"events":[{"id":"kept","timestamp":1705305600000}]}"#,
    );
    assert_eq!(kept["accepted"], 1, "{kept}");

    server.command(&["FLUSHALL"]).expect("FLUSHALL");
    let refused = client.request(
        r#"{"type":"ingest","msg_id":2,"events":[{"id":"after","timestamp":1705305600001}]}"#,
    );
    assert_eq!(
        [&refused["in_reply_to"], &refused["code"]],
        [&json!(2), &json!(13)],
        "{refused}"
    );
    let text = refused["text"].as_str().expect("text");
    assert!(text.contains(&ns) && text.contains("FLUSHALL"), "{text}");
    for (name, node) in [("holder", &mut holder), ("follower", &mut follower)] {
        let status = node
            .process
            .wait_exit(EXIT_WITHIN)
            .unwrap_or_else(|e| panic!("the {name} exits: {e}"));
        assert!(!status.success(), "{name}: {status}");
        assert_one_error_line(&node.process, "new --namespace");
        let log = node.process.log_text();
        assert!(log.contains(&format!("Redis namespace \"{ns}\"")), "{log}");
    }
    // Nobody made the namespace anew (no epoch, no identity, no log).
    let left = server.command(&["KEYS", "*"]).expect("KEYS");
    assert!(
        left.iter()
            .all(|key| !key.ends_with(":epoch") && !key.ends_with(":id")),
        "{left:?}"
    );
}
