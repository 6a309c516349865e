//! Several `serve` processes sharing one state, on one data directory (the file lease) or on one
//! Redis server (`--store redis://`, a real `redis-server` started on a free loopback port; see
//! `window_testkit::RedisServer`): the coordinator is SIGKILLed again and again under load from
//! a client connected to the others. Every acknowledged event must appear in exactly one fired
//! window, no window may fire twice, `seq` stays dense, and every takeover raises the epoch.
//! `FAILOVER_KILLS` sets the number of kills (default 3; `cargo xtask crash` runs 20).
//!
//! With Redis, a holder can also be paused (SIGSTOP) past its lease while the others go on: a
//! follower takes over, and when the old holder resumes it must not fire anything. It stops
//! (fail-stop); whatever it tried to commit is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use window_testkit::{
    Conn, Node, RedisServer, Signal, WAIT, count_from_env, run as run_to_end, temp_dir, wait_for,
    wait_until,
};

/// How many times the kill tests kill a coordinator: `FAILOVER_KILLS`, 3 by default.
fn kills() -> usize {
    count_from_env("FAILOVER_KILLS", 3)
}

/// Where the nodes keep their shared state.
#[derive(Clone, Debug)]
enum Shared {
    Dir(PathBuf),
    Redis(String),
}

/// Starts a node on `shared` with the tests' settings (1 s windows, no lateness, no idle
/// watermark; with Redis a 1 s lease ttl).
fn start(shared: &Shared) -> Node {
    start_with(shared, &[])
}

/// Starts a node on `shared` with `extra` options too (a `--lease-ttl` there replaces the 1 s).
fn start_with(shared: &Shared, extra: &[&str]) -> Node {
    let mut args: Vec<String> = [
        "--window-size",
        "1s",
        "--allowed-lateness",
        "0s",
        "--idle-timeout",
        "0s",
        "--failover-timeout",
        "15s",
    ]
    .map(str::to_owned)
    .to_vec();
    match shared {
        Shared::Dir(dir) => args.extend(["--data-dir".to_owned(), dir.display().to_string()]),
        Shared::Redis(url) if extra.contains(&"--lease-ttl") => {
            args.extend(["--store".to_owned(), url.clone()]);
        }
        Shared::Redis(url) => args.extend(["--store", url, "--lease-ttl", "1s"].map(str::to_owned)),
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Node::start(env!("CARGO_BIN_EXE_window-node"), &args).expect("a node starts")
}

/// Asks `addr` who coordinates, and with which epoch.
fn coordinator(addr: SocketAddr) -> Option<(String, u64)> {
    let stats = Conn::open(addr)
        .ok()?
        .call(r#"{"type":"stats","msg_id":1}"#)?;
    Some((
        stats["lease_holder"].as_str()?.to_owned(),
        stats["epoch"].as_u64()?,
    ))
}

#[test]
fn the_coordinator_dies_again_and_again_and_nothing_acknowledged_is_lost() {
    let dir = temp_dir();
    let report = run(
        &Shared::Dir(dir.path().to_owned()),
        Disruption::Kills(kills()),
    );
    eprintln!("failover (data directory): {report}");
}

#[test]
fn with_redis_the_coordinator_dies_again_and_again_and_nothing_acknowledged_is_lost() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let report = run(&Shared::Redis(server.url()), Disruption::Kills(kills()));
    eprintln!("failover (Redis): {report}");
}

#[test]
fn with_redis_a_holder_paused_past_its_lease_fires_nothing_when_it_wakes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let report = run(&Shared::Redis(server.url()), Disruption::Pause);
    eprintln!("failover (Redis, SIGSTOP): {report}");
}

/// SIGTERM gives the Redis lease back after the last commit, so a follower takes over at once
/// rather than after the ttl (30 s here, longer than the test waits).
#[test]
fn with_redis_a_clean_shutdown_hands_the_lease_over_at_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let shared = Shared::Redis(server.url());
    let a = start_with(&shared, &["--lease-ttl", "30s"]);
    let b = start_with(&shared, &["--lease-ttl", "30s"]);
    // Either may take the lease first (the second started can win the race): whichever holds
    // it is the one to stop, and the other the follower that must take over.
    let (first, epoch) = wait_for_coordinator(b.addr, |h| h == a.name() || h == b.name());
    let (mut holder, follower) = if first == a.name() { (a, b) } else { (b, a) };
    let mut conn = Conn::open(follower.addr).expect("connect");
    let ok = conn
        .call(r#"{"type":"ingest","msg_id":1,"events":[{"id":1,"timestamp":5}]}"#)
        .expect("reply");
    assert_eq!(ok["type"], "ingest_ok", "{ok}");
    holder.process.signal(Signal::Term).expect("SIGTERM");
    let status = holder.process.wait_exit(WAIT).expect("the holder stops");
    assert!(status.success(), "a clean shutdown exits 0: {status}");
    assert!(
        holder.process.log_has("released the lease"),
        "{}",
        holder.process.log_text()
    );
    let started = Instant::now();
    let (new, new_epoch) = wait_for_coordinator(follower.addr, |h| h != first);
    assert_eq!(new, follower.addr.to_string());
    assert_eq!(new_epoch, epoch + 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the takeover waited for the ttl: the lease was not released"
    );
    // The acknowledged event is still open in the new holder.
    let flushed = Conn::open(follower.addr)
        .expect("connect")
        .call(r#"{"type":"flush","msg_id":2}"#)
        .expect("flush");
    assert_eq!(
        flushed["windows"][0]["events"],
        serde_json::json!([1]),
        "{flushed}"
    );
}

/// Mistakes in the Redis options stop the node at once with a message that says what to do.
#[test]
fn redis_option_mistakes_are_explained() {
    let run = |args: &[&str]| {
        let out = run_to_end(
            Command::new(env!("CARGO_BIN_EXE_window-node"))
                .arg("serve")
                .args(args),
            b"",
            WAIT,
        )
        .expect("window-node stops");
        assert!(!out.status.success(), "{args:?} must fail");
        out.stderr
    };
    // Port 1 on loopback: nothing listens there. A Redis that is away is waited for (it may be
    // starting), saying why; SIGTERM ends the wait cleanly.
    let mut waiting = Node::start(
        env!("CARGO_BIN_EXE_window-node"),
        ["--store", "redis://127.0.0.1:1/"],
    )
    .expect("a node waiting for Redis");
    waiting.wait_logged("waiting for it");
    assert!(
        waiting
            .process
            .log_has("cannot connect to Redis at redis://127.0.0.1:1/"),
        "{}",
        waiting.process.log_text()
    );
    waiting.process.signal(Signal::Term).expect("SIGTERM");
    let status = waiting.process.wait_exit(WAIT).expect("it stops");
    assert!(status.success(), "{status}");
    let unspecified = run(&["--store", "redis://127.0.0.1:1/", "--listen", "0.0.0.0:0"]);
    assert!(unspecified.contains("--advertise"), "{unspecified}");
    let not_a_url = run(&["--store", "mysql://db/", "--listen", "127.0.0.1:0"]);
    assert!(not_a_url.contains("invalid Redis URL"), "{not_a_url}");
    let both = run(&["--store", "redis://127.0.0.1:1/", "--data-dir", "/tmp/x"]);
    assert!(both.contains("cannot be used with"), "{both}");
}

/// What happens to the coordinator.
#[derive(Clone, Copy, Debug)]
enum Disruption {
    /// SIGKILL it this many times (a new node joins after each).
    Kills(usize),
    /// SIGSTOP it until another node has taken over and fired, then SIGCONT it.
    Pause,
}

/// Runs three nodes under load through the followers, disrupts the coordinator, then checks the
/// whole output log. Returns a line for the test output.
fn run(shared: &Shared, disruption: Disruption) -> String {
    let nodes: Arc<Mutex<Vec<Node>>> =
        Arc::new(Mutex::new((0..3).map(|_| start(shared)).collect()));
    let addrs = || live(&nodes);
    let first = wait_for_coordinator(addrs()[0], |_| true);
    assert_eq!(first.1, 1, "the first holder's epoch");
    // The client ingests through followers, one request in flight, retrying on errors.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let client = {
        let (stop, acked, nodes) = (Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&nodes));
        std::thread::spawn(move || {
            let mut conn: Option<Conn> = None;
            let mut request = 0i64;
            let mut retries = 0;
            while !stop.load(Ordering::Relaxed) && retries < 2_000 {
                let events: Vec<String> = (0..20)
                    .map(|i| {
                        let id = request * 20 + i;
                        format!(r#"{{"id":{id},"timestamp":{}}}"#, id * 10)
                    })
                    .collect();
                // The request id makes the client's own resends safe: a batch whose window was
                // flushed after the lost reply is answered from its record, not taken again.
                let line = format!(
                    r#"{{"type":"ingest","msg_id":{request},"request_id":"ingest-{request}","events":[{}]}}"#,
                    events.join(",")
                );
                let reply = conn.as_mut().and_then(|c| c.call(&line));
                match reply {
                    Some(reply) if reply["type"] == "ingest_ok" => {
                        acked
                            .lock()
                            .expect("acked")
                            .extend((0..20).map(|i| request * 20 + i));
                        request += 1;
                    }
                    _ => {
                        // Reconnect to any live node (the list changes as nodes die) and resend.
                        retries += 1;
                        std::thread::sleep(Duration::from_millis(20));
                        let candidates = live(&nodes);
                        conn = candidates.iter().rev().find_map(|a| Conn::open(*a).ok());
                    }
                }
            }
        })
    };

    // Another client flushes all open windows every 100 ms through any node, without a request
    // id and without resending: followers mark its lines, so a flush they resend after a
    // takeover is not run twice. Flushes close windows that later events open again, which is
    // what makes a resent ingest dangerous.
    let flusher = {
        let (stop, nodes) = (Arc::clone(&stop), Arc::clone(&nodes));
        std::thread::spawn(move || {
            let mut conn: Option<Conn> = None;
            let mut flushed = 0u64;
            for msg_id in 0..2_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                let line = format!(r#"{{"type":"flush","msg_id":{msg_id}}}"#);
                match conn.as_mut().and_then(|c| c.call(&line)) {
                    Some(reply) if reply["type"] == "flushed" => {
                        flushed += reply["windows"].as_array().map_or(0, |w| w.len() as u64);
                    }
                    _ => {
                        conn = live(&nodes).iter().find_map(|a| Conn::open(*a).ok());
                    }
                }
            }
            flushed
        })
    };

    let mut takeovers = Vec::new();
    let mut woke = String::new();
    match disruption {
        Disruption::Kills(kills) => {
            for kill in 0..kills {
                std::thread::sleep(Duration::from_millis(300));
                let (holder, epoch) = coordinator(addrs()[0]).expect("stats before the kill");
                let victim = take_node(&nodes, &holder);
                let killed_at = Instant::now();
                drop(victim); // SIGKILL, and reap.
                let survivor = addrs()[0];
                let (_, new_epoch) = wait_for_coordinator(survivor, |h| h != holder);
                assert_eq!(
                    new_epoch,
                    epoch + 1,
                    "each takeover raises the epoch by one (kill {kill})"
                );
                takeovers.push(killed_at.elapsed());
                nodes.lock().expect("nodes").push(start(shared));
            }
        }
        Disruption::Pause => {
            std::thread::sleep(Duration::from_millis(300));
            let (holder, epoch) = coordinator(addrs()[0]).expect("stats before the pause");
            let mut sleeper = take_node(&nodes, &holder);
            sleeper.process.signal(Signal::Stop).expect("SIGSTOP");
            let stopped_at = Instant::now();
            let survivor = addrs()[0];
            let (new_holder, new_epoch) = wait_for_coordinator(survivor, |h| h != holder);
            assert_eq!(new_epoch, epoch + 1, "the takeover raises the epoch by one");
            takeovers.push(stopped_at.elapsed());
            // The new holder fires windows of its own before the old one wakes.
            wait_until(WAIT, "the new holder firing a window", || {
                fired_by(&new_holder) > 0
            })
            .expect("the new holder fires");
            sleeper.process.signal(Signal::Cont).expect("SIGCONT");
            // It wakes with windows and requests it still holds, sees it lost the lease, drops
            // that holding without committing anything, and goes on as a follower of the new
            // holder: asked through it, the coordinator is the new one.
            let (through_it, _) = wait_for_coordinator(sleeper.addr, |h| h == new_holder);
            assert_eq!(through_it, new_holder);
            assert!(
                sleeper.process.exited().expect("poll").is_none(),
                "the old holder keeps running as a follower: {:?}",
                sleeper.process.log_tail(10)
            );
            // The pause may also land inside a Redis call of the holder's, which then fails
            // when it wakes (EINTR): a store failure, which ends the holding just the same.
            let refused_by = [
                "lost the Redis lease",
                "lease lapsed",
                "batch refused",
                "Interrupted system call",
            ]
            .into_iter()
            .filter(|why| sleeper.process.log_has(why))
            .collect::<Vec<_>>();
            assert!(
                !refused_by.is_empty() && sleeper.process.log_has("stepped down"),
                "the old holder says why it stepped down: {:?}",
                sleeper.process.log_tail(10)
            );
            woke = format!(
                "; the old holder woke, stepped down ({}) and follows",
                refused_by.join(", ")
            );
            nodes.lock().expect("nodes").push(sleeper);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client");
    let flushed = flusher.join().expect("flusher");
    let acked = acked.lock().expect("acked").clone();
    assert!(
        acked.len() >= 200,
        "the client made progress ({} events)",
        acked.len()
    );
    let epochs = match disruption {
        Disruption::Kills(kills) => kills,
        Disruption::Pause => 1,
    };
    let (emitted, by_epoch) = check_log(&addrs(), &acked, 1 + epochs as u64);
    let slowest = takeovers.iter().max().copied().unwrap_or_default();
    format!(
        "{} acknowledged events all emitted exactly once in {emitted} windows ({flushed} of them by flushes during the run; per epoch {by_epoch:?}); takeover (disruption to new holder) max {slowest:?}, each {takeovers:?}{woke}",
        acked.len()
    )
}

/// The addresses of the nodes alive now (the list changes as nodes die and join).
fn live(nodes: &Mutex<Vec<Node>>) -> Vec<SocketAddr> {
    nodes
        .lock()
        .expect("nodes")
        .iter()
        .map(|n| n.addr)
        .collect()
}

/// Removes the node listening at `holder` from the list.
fn take_node(nodes: &Mutex<Vec<Node>>, holder: &str) -> Node {
    let mut nodes = nodes.lock().expect("nodes");
    let at = nodes
        .iter()
        .position(|n| n.addr.to_string() == holder)
        .expect("the holder is one of ours");
    nodes.remove(at)
}

/// Waits until `addr` names a coordinator that `accept` takes; returns it and its epoch.
fn wait_for_coordinator(addr: SocketAddr, accept: impl Fn(&str) -> bool) -> (String, u64) {
    wait_for(
        WAIT,
        &format!("a (new) coordinator named by {addr}"),
        || coordinator(addr).filter(|(holder, _)| accept(holder)),
    )
    .expect("a coordinator")
}

/// How many windows the coordinator at `holder` has emitted (0 if it cannot be asked).
fn fired_by(holder: &str) -> u64 {
    let Ok(addr) = holder.parse() else { return 0 };
    Conn::open(addr)
        .ok()
        .and_then(|mut c| c.call(r#"{"type":"stats","msg_id":1}"#))
        .and_then(|stats| stats["emitted_windows"].as_u64())
        .unwrap_or(0)
}

/// Flushes everything, reads the whole output log from the coordinator, and checks it: dense
/// `seq`, epochs that never go back and end at `final_epoch`, every acknowledged event exactly
/// once. Returns the number of windows and how many each epoch fired.
fn check_log(live: &[SocketAddr], acked: &[i64], final_epoch: u64) -> (u64, Vec<(u64, u64)>) {
    let (holder, epoch) = coordinator(live[0]).expect("stats");
    assert_eq!(epoch, final_epoch);
    let holder: SocketAddr = holder.parse().expect("holder address");
    let flushed = Conn::open(holder)
        .expect("connect")
        .call(r#"{"type":"flush","msg_id":1}"#)
        .expect("flush");
    assert_eq!(flushed["type"], "flushed", "{flushed}");
    let stats = Conn::open(holder)
        .expect("connect")
        .call(r#"{"type":"stats","msg_id":2}"#)
        .expect("stats");
    let emitted = stats["emitted_windows"].as_u64().expect("emitted");
    let mut sub = Conn::open(holder).expect("connect");
    let ok = sub
        .call(r#"{"type":"subscribe","msg_id":3,"from_seq":0}"#)
        .expect("subscribe");
    assert_eq!(ok["type"], "subscribe_ok", "{ok}");
    let mut seen: HashMap<i64, u64> = HashMap::new();
    let mut last_epoch = 0;
    let mut by_epoch: Vec<(u64, u64)> = Vec::new();
    for expected_seq in 0..emitted {
        let window = sub.read().expect("a window");
        assert_eq!(window["seq"], expected_seq, "seq is dense: {window}");
        let epoch = window["epoch"].as_u64().expect("epoch");
        assert!(
            epoch >= last_epoch,
            "epochs never go back along the log: {window}"
        );
        last_epoch = epoch;
        match by_epoch.last_mut() {
            Some((e, n)) if *e == epoch => *n += 1,
            _ => by_epoch.push((epoch, 1)),
        }
        for id in window["events"].as_array().expect("events") {
            let id = id.as_i64().expect("integer id");
            if let Some(earlier) = seen.insert(id, expected_seq) {
                panic!("event {id} emitted twice: seq {earlier} and seq {expected_seq}");
            }
        }
    }
    let lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|id| !seen.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    (emitted, by_epoch)
}
