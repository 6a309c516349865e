//! The client against real `window-node serve` processes (loopback, temp data dirs): every
//! window once, a subscription resumed on another node without gaps or repeats, a consumer
//! group, a bad event as a typed error, and the holder SIGKILLed mid-stream with the client
//! carrying on, nothing lost or doubled. What must arrive is computed from what was sent.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;
use window_client::{Client, ClientError, Event};
use window_testkit::{Conn, Node, WAIT, temp_dir, window_node_binary};

/// 2024-01-15T08:00:00Z.
const BASE: i64 = 1_705_305_600_000;

/// A node on `dir` whose every event fires its own window (`--max-events 1`).
fn start(dir: &Path) -> Node {
    let args = [
        "--window-size",
        "1s",
        "--max-events",
        "1",
        "--idle-timeout",
        "0s",
        "--data-dir",
        &dir.display().to_string(),
    ]
    .map(str::to_owned);
    Node::start(window_node_binary(), args).expect("a node starts")
}

fn events(ids: std::ops::Range<u64>) -> Vec<Event> {
    ids.map(|id| Event::new(id, BASE + id as i64 * 1000).payload(json!({"n": id})))
        .collect()
}

/// Who holds the lease, as `node` says.
fn holder(node: &Node) -> Option<String> {
    let stats = Conn::open(node.addr)
        .ok()?
        .call(r#"{"type":"stats","msg_id":1}"#)?;
    stats["lease_holder"].as_str().map(str::to_owned)
}

/// Of two nodes sharing one state, the one holding the lease (once both name it) and the other.
fn holder_and_other(mut nodes: Vec<Node>) -> (Node, Node) {
    let name = window_testkit::wait_for(WAIT, "a holder both nodes name", || {
        let a = holder(&nodes[0]).filter(|h| !h.is_empty())?;
        (holder(&nodes[1])? == a).then_some(a)
    })
    .expect("a holder");
    let at = nodes
        .iter()
        .position(|n| n.name() == name)
        .expect("one of them");
    let holding = nodes.remove(at);
    let other = nodes.pop().expect("the other");
    (holding, other)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn every_window_once_and_a_bad_event_is_a_typed_error() {
    let dir = temp_dir();
    let node = start(dir.path());
    runtime().block_on(async {
        let client = Client::connect([node.addr]).await.expect("connect");
        let mut sub = client.subscribe(Some(0)).await.expect("subscribe");
        let counts = client.ingest(&events(0..10)).await.expect("ingest");
        assert_eq!(counts.accepted, 10);
        // Sent again: nothing counts twice (duplicates of open windows, late behind the
        // watermark).
        let again = client.ingest(&events(0..10)).await.expect("ingest again");
        assert_eq!(again.accepted, 0, "{again:?}");
        assert_eq!(again.duplicates + again.late, 10, "{again:?}");
        for seq in 0..10u64 {
            let window = tokio::time::timeout(WAIT, sub.next())
                .await
                .expect("in time")
                .expect("a window");
            assert_eq!(window.seq, seq);
            assert_eq!(window.events, [json!(seq)]);
            assert_eq!(window.payloads, Some(vec![json!({"n": seq})]));
        }
        let bad = client
            .ingest(&[Event::new("x", "not a time")])
            .await
            .expect_err("a bad timestamp");
        assert_eq!(bad.code(), Some(12), "{bad}");
        assert!(matches!(bad, ClientError::Daemon { .. }));
        let stats = client.stats().await.expect("stats");
        assert_eq!(stats["emitted_windows"], 10);
    });
}

#[test]
fn a_group_member_acks_and_the_holder_dying_loses_nothing() {
    let dir = temp_dir();
    let (holding, other) = holder_and_other(vec![start(dir.path()), start(dir.path())]);
    // The client tries the holder first, so the kill below takes its connection away.
    let addrs = [holding.addr, other.addr];
    let rt = runtime();
    let (client, mut sub, mut group) = rt.block_on(async {
        let client = Client::connect(addrs).await.expect("connect");
        let sub = client.subscribe(Some(0)).await.expect("subscribe");
        let group = client.subscribe_group("g", 100).await.expect("join");
        (client, sub, group)
    });
    rt.block_on(async {
        client.ingest(&events(0..10)).await.expect("ingest");
        for _ in 0..10 {
            let window = tokio::time::timeout(WAIT, group.next())
                .await
                .expect("in time")
                .expect("a window");
            assert_eq!(window.delivery, Some(1));
            let acked = group.ack(&[window.seq], None).await.expect("ack");
            assert_eq!(acked, 1);
        }
    });
    // The holder dies mid-stream; the client and its subscriptions go on at the other node.
    drop(holding);
    rt.block_on(async {
        client
            .ingest(&events(10..20))
            .await
            .expect("ingest after the kill");
        let mut seen = BTreeSet::new();
        while seen.len() < 20 {
            let window = tokio::time::timeout(WAIT * 2, sub.next())
                .await
                .expect("in time")
                .expect("a window");
            assert!(seen.insert(window.seq), "seq {} twice", window.seq);
        }
        assert_eq!(
            seen,
            (0..20).collect::<BTreeSet<u64>>(),
            "no gap, no repeat"
        );
        let mut acked = BTreeSet::new();
        while acked.len() < 10 {
            let window = tokio::time::timeout(WAIT * 2, group.next())
                .await
                .expect("in time")
                .expect("a window");
            assert!(
                window.seq >= 10,
                "acknowledged before the kill: {}",
                window.seq
            );
            group.ack(&[window.seq], None).await.expect("ack");
            acked.insert(window.seq);
        }
        let flushed = client.flush(None).await.expect("flush");
        assert!(flushed.is_empty(), "every window fired by length");
        let stats = client.stats().await.expect("stats");
        assert_eq!(stats["emitted_windows"], 20, "nothing doubled: {stats}");
    });
}

/// Events a millisecond apart: in any arrival order none is late (each still fires a window of
/// its own, by `--max-events 1`).
fn close_events(ids: std::ops::Range<u64>) -> Vec<Event> {
    ids.map(|id| Event::new(id, BASE + id as i64)).collect()
}

/// The ids of every window a subscription yields until `count` windows came.
async fn ids_of(sub: &mut window_client::Subscription, count: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut seqs = BTreeSet::new();
    while seqs.len() < count {
        let window = tokio::time::timeout(WAIT * 2, sub.next())
            .await
            .expect("in time")
            .expect("a window");
        assert!(seqs.insert(window.seq), "seq {} twice", window.seq);
        ids.extend(
            window
                .events
                .iter()
                .map(|id| id.as_u64().expect("a numeric id")),
        );
    }
    ids
}

/// The `window_node_ingest_requests_total` of a node started with `--metrics 127.0.0.1:0`.
fn ingest_requests(node: &Node) -> u64 {
    let line = node
        .process
        .log_text()
        .lines()
        .find(|l| l.contains("serving metrics"))
        .map(str::to_owned)
        .expect("the metrics address in the log");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("address="))
        .expect("address=");
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("ask");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    text.lines()
        .find_map(|l| l.strip_prefix("window_node_ingest_requests_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ingest counter in {text}"))
}

/// Many tasks pushing at once through two request slots: their events are merged into far
/// fewer requests than pushes, and every event lands exactly once; `ingest` beside them keeps its
/// own counts.
#[test]
fn concurrent_pushes_are_merged_and_every_event_lands_once() {
    let dir = temp_dir();
    let args = [
        "--window-size",
        "1s",
        "--max-events",
        "1",
        "--idle-timeout",
        "0s",
        "--metrics",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path().display().to_string(),
    ];
    let node = Node::start(window_node_binary(), args).expect("a node starts");
    const PUSHES: u64 = 200;
    const EACH: u64 = 5;
    runtime().block_on(async {
        let options = window_client::Options {
            max_in_flight: 2,
            ..window_client::Options::default()
        };
        let client = std::sync::Arc::new(
            Client::connect_with([node.addr], options)
                .await
                .expect("connect"),
        );
        let mut sub = client.subscribe(Some(0)).await.expect("subscribe");
        let tasks: Vec<_> = (0..PUSHES)
            .map(|p| {
                let client = std::sync::Arc::clone(&client);
                tokio::spawn(async move {
                    client
                        .push(close_events(p * EACH..(p + 1) * EACH))
                        .await
                        .expect("push")
                })
            })
            .collect();
        let counts = client
            .ingest(&close_events(PUSHES * EACH..PUSHES * EACH + 3))
            .await
            .expect("ingest");
        assert_eq!(counts.accepted, 3, "an ingest's own counts: {counts:?}");
        for task in tasks {
            task.await.expect("a push task");
        }
        let total = (PUSHES * EACH + 3) as usize;
        let mut ids = ids_of(&mut sub, total).await;
        ids.sort_unstable();
        assert_eq!(ids, (0..total as u64).collect::<Vec<_>>(), "each once");
    });
    let requests = ingest_requests(&node);
    assert!(
        requests < PUSHES / 2,
        "{requests} ingest requests for {PUSHES} pushes and an ingest: not merged"
    );
}

/// Pushes pipelined from several tasks while the holder is SIGKILLed: the unanswered requests go
/// again to the other node with their ids, and every acknowledged event lands exactly once.
#[test]
fn pipelined_pushes_carry_on_when_the_holder_dies() {
    let dir = temp_dir();
    let (holding, other) = holder_and_other(vec![start(dir.path()), start(dir.path())]);
    let rt = runtime();
    let client = std::sync::Arc::new(
        rt.block_on(Client::connect([holding.addr, other.addr]))
            .expect("connect"),
    );
    let mut sub = rt.block_on(client.subscribe(Some(0))).expect("subscribe");
    const TASKS: u64 = 4;
    const ROUNDS: u64 = 25;
    const EACH: u64 = 4;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let client = std::sync::Arc::clone(&client);
            rt.spawn(async move {
                for r in 0..ROUNDS {
                    let first = (t * ROUNDS + r) * EACH;
                    client
                        .push(close_events(first..first + EACH))
                        .await
                        .expect("a push, across the kill");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(150));
    drop(holding);
    rt.block_on(async {
        for task in tasks {
            task.await.expect("a push task");
        }
        let total = TASKS * ROUNDS * EACH;
        let mut ids = ids_of(&mut sub, total as usize).await;
        ids.sort_unstable();
        assert_eq!(ids, (0..total).collect::<Vec<_>>(), "each once");
        let stats = client.stats().await.expect("stats");
        assert_eq!(stats["emitted_windows"], total, "nothing doubled: {stats}");
    });
}

/// An error the daemon gives without naming a request (a line over its `--max-line-bytes`)
/// answers the oldest request, at once and typed, instead of sending the line round the nodes
/// until the failover time runs out; the connection serves on.
#[test]
fn a_line_over_the_limit_is_a_typed_error_at_once() {
    let dir = temp_dir();
    let args = [
        "--window-size",
        "1s",
        "--max-line-bytes",
        "2000",
        "--data-dir",
        &dir.path().display().to_string(),
    ];
    let node = Node::start(window_node_binary(), args).expect("a node starts");
    runtime().block_on(async {
        let client = Client::connect([node.addr]).await.expect("connect");
        let started = std::time::Instant::now();
        let error = client
            .ingest(&events(0..100))
            .await
            .expect_err("a line over the limit");
        assert_eq!(error.code(), Some(12), "{error}");
        assert!(
            started.elapsed() < window_client::DEFAULT_FAILOVER / 2,
            "answered at once, not after the failover time: {:?}",
            started.elapsed()
        );
        let counts = client.ingest(&events(0..2)).await.expect("the next ingest");
        assert_eq!(counts.accepted, 2);
    });
}

/// A holder that stops answering (SIGSTOP) with the client's requests on it: after an
/// attempt's time the requests go to the next node, which took the Redis lease over, and take
/// effect once.
#[test]
fn requests_move_on_from_a_holder_that_stopped_answering() {
    let Some(redis) = window_testkit::RedisServer::start() else {
        return;
    };
    let ns = redis.fresh_namespace();
    let url = redis.url();
    let args = [
        "--window-size",
        "1s",
        "--max-events",
        "1",
        "--idle-timeout",
        "0s",
        "--store",
        url.as_str(),
        "--namespace",
        ns.as_str(),
        "--lease-ttl",
        "1s",
    ];
    let (stopped, other) = holder_and_other(vec![
        Node::start(window_node_binary(), args).expect("a node"),
        Node::start(window_node_binary(), args).expect("a node"),
    ]);
    runtime().block_on(async {
        let options = window_client::Options {
            failover: std::time::Duration::from_secs(12),
            ..window_client::Options::default()
        };
        let client = Client::connect_with([stopped.addr, other.addr], options)
            .await
            .expect("connect");
        assert_eq!(
            client
                .ingest(&close_events(0..3))
                .await
                .expect("ingest")
                .accepted,
            3
        );
        stopped
            .process
            .signal(window_testkit::Signal::Stop)
            .expect("SIGSTOP");
        let counts = tokio::time::timeout(WAIT, client.ingest(&close_events(3..6)))
            .await
            .expect("answered in time, not held by the stopped node")
            .expect("the ingest moves on to the other node");
        assert_eq!(counts.accepted, 3, "{counts:?}");
        let stats = client.stats().await.expect("stats");
        assert_eq!(stats["accepted"], 6, "{stats}");
    });
    drop(stopped);
}
