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
    let mut nodes = vec![start(dir.path()), start(dir.path())];
    // Whichever took the lease: both must name it.
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
