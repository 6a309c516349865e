//! Consumer groups with the real binary: members are connections that `subscribe` with a
//! `"group"` and `ack` what they processed. Every window goes to exactly one member; a member
//! that goes away (its connection dropped, as a SIGKILLed client's is) gives what it held to
//! another with `delivery` raised; a holder SIGKILLed and restarted loses nothing acknowledged
//! and redelivers nothing acknowledged. What must arrive is computed from what the test sent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use window_testkit::{Conn, Node, WAIT, temp_dir};

/// 2024-01-15T08:00:00Z.
const BASE: i64 = 1_705_305_600_000;

/// A node whose every event fires its own window at once (`--max-events 1`).
fn start(dir: &std::path::Path) -> Node {
    let args = [
        "--window-size",
        "1s",
        "--max-events",
        "1",
        "--idle-timeout",
        "0s",
        "--ack-timeout",
        "30s",
        "--data-dir",
        &dir.display().to_string(),
    ]
    .map(str::to_owned);
    Node::start(env!("CARGO_BIN_EXE_window-node"), args).expect("the daemon starts")
}

/// Ingests events `ids` (one window each): they fire at once.
fn ingest(node: &Node, ids: std::ops::Range<u64>) {
    let mut client = Conn::open(node.addr).expect("connect");
    let events: Vec<Value> = ids
        .map(|id| json!({"id": id, "timestamp": BASE + id as i64 * 1000, "payload": {"n": id}}))
        .collect();
    let reply =
        client.request(&json!({"type": "ingest", "msg_id": 1, "events": events}).to_string());
    assert_eq!(reply["type"], "ingest_ok", "{reply}");
}

/// A member of group `g` holding at most `max` windows unacknowledged.
fn member(node: &Node, max: u32) -> Conn {
    let mut conn = Conn::open(node.addr).expect("connect");
    let ok = conn.request(
        &json!({"type": "subscribe", "msg_id": 1, "group": "g", "max_unacked": max}).to_string(),
    );
    assert_eq!(ok["type"], "subscribe_ok", "{ok}");
    assert_eq!(ok["group"], "g", "{ok}");
    conn
}

/// A window: its partition (with `--partitions`) and its seq there.
type Win = (Option<u64>, u64);

/// What one member saw: each window with its delivery number, in arrival order.
#[derive(Default)]
struct Seen {
    windows: Vec<(Win, u64)>,
    acked: BTreeSet<Win>,
    /// `ack_ok` replies received: an ack counts once it is answered (durable).
    answered: usize,
}

/// Reads from every member in turn until `done` holds or nothing arrives for a while; members
/// whose index is in `acking` acknowledge each window as it comes.
fn pump(members: &mut [Conn], seen: &mut [Seen], acking: &[usize], done: impl Fn(&[Seen]) -> bool) {
    let deadline = Instant::now() + WAIT;
    let mut msg_id = 100;
    while !done(seen) {
        assert!(
            Instant::now() < deadline,
            "the windows did not all arrive in time"
        );
        for (i, conn) in members.iter_mut().enumerate() {
            while let Some(message) = conn.try_recv(Duration::from_millis(20)) {
                match message["type"].as_str() {
                    Some("window_closed") => {
                        let seq = message["seq"].as_u64().expect("seq");
                        let partition = message["partition"].as_u64();
                        let delivery = message["delivery"].as_u64().expect("delivery");
                        let id = message["events"][0].as_u64().expect("one event");
                        assert_eq!(message["payloads"][0], json!({"n": id}), "{message}");
                        seen[i].windows.push(((partition, seq), delivery));
                        if acking.contains(&i) {
                            msg_id += 1;
                            let mut ack = json!({"type": "ack", "msg_id": msg_id, "seqs": [seq]});
                            if let Some(p) = partition {
                                ack["partition"] = json!(p);
                            }
                            conn.send(&ack.to_string()).expect("send ack");
                            seen[i].acked.insert((partition, seq));
                        }
                    }
                    Some("ack_ok") => {
                        assert_eq!(message["acked"], 1, "{message}");
                        seen[i].answered += 1;
                    }
                    _ => panic!("unexpected on a member's connection: {message}"),
                }
            }
        }
    }
}

/// Every window acknowledged by some member, with how many members acknowledged it.
fn acked(seen: &[Seen]) -> BTreeMap<Win, usize> {
    let mut acked = BTreeMap::new();
    for s in seen {
        for &seq in &s.acked {
            *acked.entry(seq).or_default() += 1;
        }
    }
    acked
}

/// Three members share `count` windows (fired by `fire`): members 0 and 1 acknowledge, member
/// 2 holds its share and then dies. Checks each window went to exactly one member the first
/// time, and that what member 2 held came again (delivery 2) to the others, and nothing else.
/// Returns the two live members, what they saw, and what member 2 held.
fn share_and_redeliver(
    mut members: Vec<Conn>,
    count: usize,
    fire: impl FnOnce(),
) -> (Vec<Conn>, Vec<Seen>, BTreeSet<Win>) {
    let mut seen: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
    fire();
    pump(&mut members, &mut seen, &[0, 1], |seen| {
        seen.iter().map(|s| s.windows.len()).sum::<usize>() >= count
    });
    let held: BTreeSet<Win> = seen[2].windows.iter().map(|&(win, _)| win).collect();
    assert!(!held.is_empty(), "member 2 got its share");
    let mut first: BTreeMap<Win, usize> = BTreeMap::new();
    for s in &seen {
        for &(win, delivery) in &s.windows {
            assert_eq!(delivery, 1, "{win:?}");
            *first.entry(win).or_default() += 1;
        }
    }
    assert_eq!(first.len(), count, "{first:?}");
    assert!(first.values().all(|&n| n == 1), "{first:?}");
    drop(members.pop());
    seen.pop();
    pump(&mut members, &mut seen, &[0, 1], |seen| {
        acked(seen).len() == count
    });
    let again: Vec<(Win, u64)> = seen
        .iter()
        .flat_map(|s| s.windows.iter().copied())
        .filter(|&(_, delivery)| delivery > 1)
        .collect();
    let again_wins: BTreeSet<Win> = again.iter().map(|&(win, _)| win).collect();
    assert_eq!(again_wins, held, "{again:?}");
    assert!(again.iter().all(|&(_, d)| d == 2), "{again:?}");
    assert!(acked(&seen).values().all(|&n| n == 1));
    (members, seen, held)
}

#[test]
fn each_window_goes_to_one_member_and_a_dead_members_go_to_another() {
    let dir = temp_dir();
    let node = start(dir.path());
    let members = vec![member(&node, 4), member(&node, 4), member(&node, 4)];
    let (mut members, mut seen, held) = share_and_redeliver(members, 12, || ingest(&node, 0..12));
    assert!(held.iter().all(|(partition, _)| partition.is_none()));
    // Bad requests get error 12 and the member goes on.
    let conn = &mut members[0];
    for bad in [
        json!({"type": "ack", "msg_id": 7, "seqs": [999]}),
        json!({"type": "ack", "msg_id": 8, "seqs": []}),
        json!({"type": "stats", "msg_id": 9}),
    ] {
        let reply = conn.request(&bad.to_string());
        assert_eq!(reply["code"], 12, "{bad} -> {reply}");
    }
    let mut plain = Conn::open(node.addr).expect("connect");
    for bad in [
        json!({"type": "ack", "msg_id": 1, "seqs": [0]}),
        json!({"type": "subscribe", "msg_id": 2, "group": "has space"}),
        json!({"type": "subscribe", "msg_id": 3, "group": ""}),
        json!({"type": "subscribe", "msg_id": 4, "group": "x".repeat(129)}),
        json!({"type": "subscribe", "msg_id": 5, "group": "g", "max_unacked": 0}),
        json!({"type": "subscribe", "msg_id": 6, "group": "g", "max_unacked": -1}),
    ] {
        let reply = plain.request(&bad.to_string());
        assert_eq!(reply["code"], 12, "{bad} -> {reply}");
    }
    let ok = plain.request(&json!({"type": "ack", "msg_id": 9, "seqs": [1]}).to_string());
    assert_eq!(ok["code"], 12, "still not a member: {ok}");
    ingest(&node, 12..13);
    pump(&mut members, &mut seen, &[0, 1], |seen| {
        acked(seen).len() == 13 && seen.iter().all(|s| s.answered == s.acked.len())
    });
    let stats = plain.request(r#"{"type":"stats","msg_id":20}"#);
    let group = &stats["groups"][0];
    assert_eq!(group["group"], "g", "{stats}");
    assert_eq!(
        [
            &group["members"],
            &group["pending"],
            &group["acked"],
            &group["lag"]
        ],
        [&json!(2), &json!(0), &json!(13), &json!(0)],
        "{stats}"
    );
    assert_eq!(group["redelivered"], held.len(), "{stats}");
    let config = &stats["config"];
    assert_eq!(
        [
            &config["window_size_ms"],
            &config["time"],
            &config["max_events"]
        ],
        [&json!(1000), &json!("event"), &json!(1)],
        "{stats}"
    );
}

#[test]
fn over_partitions_on_three_nodes_each_window_goes_to_one_member() {
    let Some(server) = window_testkit::RedisServer::start() else {
        return;
    };
    let namespace = server.fresh_namespace();
    let args: Vec<String> = [
        "--store",
        &server.url(),
        "--namespace",
        &namespace,
        "--partitions",
        "3",
        "--lease-ttl",
        "1s",
        "--window-size",
        "1s",
        "--max-events",
        "1",
        "--idle-timeout",
        "0s",
    ]
    .map(str::to_owned)
    .to_vec();
    let nodes: Vec<Node> = (0..3)
        .map(|_| Node::start(env!("CARGO_BIN_EXE_window-node"), &args).expect("a node starts"))
        .collect();
    // Every partition held before the members join (a join waits for every partition).
    window_testkit::wait_until(WAIT, "every partition to be held", || {
        Conn::open(nodes[0].addr)
            .ok()
            .and_then(|mut c| c.call(r#"{"type":"stats","msg_id":1}"#))
            .and_then(|s| s["partitions"].as_array().cloned())
            .is_some_and(|ps| ps.iter().all(|p| p["lease_holder"] != ""))
    })
    .expect("the partitions are held");
    let members: Vec<Conn> = nodes.iter().map(|node| member(node, 4)).collect();
    let fire = || {
        let mut client = Conn::open(nodes[0].addr).expect("connect");
        let keys = ["k0", "k1", "k2", "k3", "k4", "k5"];
        let events: Vec<Value> = (0..18u64)
            .map(|id| {
                json!({"id": id, "timestamp": BASE + id as i64 * 1000,
                       "key": keys[id as usize % 6], "payload": {"n": id}})
            })
            .collect();
        let line = json!({"type": "ingest", "msg_id": 1, "events": events}).to_string();
        window_testkit::wait_until(WAIT, "the ingest to be taken", || {
            client.call(&line).is_some_and(|r| r["type"] == "ingest_ok")
        })
        .expect("ingest");
    };
    let (_members, _, held) = share_and_redeliver(members, 18, fire);
    assert!(held.iter().all(|(partition, _)| partition.is_some()));
    // The merged stats: the group over every partition, and the settings.
    let stats = Conn::open(nodes[1].addr)
        .expect("connect")
        .request(r#"{"type":"stats","msg_id":5}"#);
    let group = &stats["groups"][0];
    assert_eq!(group["group"], "g", "{stats}");
    assert_eq!(
        [&group["members"], &group["acked"]],
        [&json!(2), &json!(18)],
        "{stats}"
    );
    assert_eq!(stats["config"]["max_events"], 1, "{stats}");
}

#[test]
fn a_holder_sigkilled_loses_no_ack_and_redelivers_no_acked_window() {
    let dir = temp_dir();
    let mut seen: Vec<Seen> = (0..2).map(|_| Seen::default()).collect();
    {
        let node = start(dir.path());
        let mut members = vec![member(&node, 3), member(&node, 3)];
        ingest(&node, 0..10);
        // Member 0 acknowledges (each ack_ok means durable); member 1 does not. Wait until
        // every ack sent was answered.
        pump(&mut members, &mut seen, &[0], |seen| {
            seen[0].acked.len() >= 3
                && seen[1].windows.len() >= 3
                && seen[0].answered == seen[0].acked.len()
        });
    }
    // The node was SIGKILLed (dropped); a new one recovers the group.
    let node = start(dir.path());
    let mut members = vec![member(&node, 20)];
    let before = seen[0].acked.clone();
    let mut after = vec![Seen::default()];
    pump(&mut members, &mut after, &[0], |s| {
        s[0].acked.len() + before.len() >= 10
    });
    let redelivered: BTreeSet<Win> = after[0].windows.iter().map(|&(win, _)| win).collect();
    assert!(
        redelivered.is_disjoint(&before),
        "acknowledged before the kill, delivered again: {:?}",
        redelivered.intersection(&before).collect::<Vec<_>>()
    );
    let all: BTreeSet<Win> = before.union(&redelivered).copied().collect();
    let every: BTreeSet<Win> = (0..10).map(|seq| (None, seq)).collect();
    assert_eq!(all, every, "every window acknowledged once");
    for &(win, delivery) in &after[0].windows {
        let was_out = seen
            .iter()
            .any(|s| s.windows.iter().any(|&(w, _)| w == win));
        if was_out {
            assert!(delivery >= 2, "{win:?} was delivered before the kill");
        }
    }
}

#[test]
fn a_member_on_a_follower_goes_on_when_the_holder_dies() {
    let dir = temp_dir();
    let mut nodes = vec![start(dir.path()), start(dir.path())];
    let stats = |node: &Node| {
        Conn::open(node.addr)
            .ok()?
            .call(r#"{"type":"stats","msg_id":1}"#)
    };
    let holder_of = |node: &Node| {
        stats(node)?["lease_holder"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
    };
    // Whichever took the lease (the order of start says nothing): both must name it.
    let name = window_testkit::wait_for(WAIT, "a holder both nodes name", || {
        let a = holder_of(&nodes[0])?;
        (holder_of(&nodes[1])? == a).then_some(a)
    })
    .expect("a holder");
    let at = nodes
        .iter()
        .position(|n| n.name() == name)
        .expect("one of them");
    let holder = nodes.remove(at);
    let follower = nodes.pop().expect("the other");
    let mut members = vec![member(&follower, 100)];
    let mut seen = vec![Seen::default()];
    ingest(&follower, 0..10);
    pump(&mut members, &mut seen, &[0], |s| {
        s[0].acked.len() == 10 && s[0].answered == 10
    });
    let before = seen[0].acked.clone();
    drop(holder);
    // The follower takes over; its member joins again through it and goes on.
    window_testkit::wait_until(WAIT, "the follower to take over", || {
        stats(&follower).is_some_and(|s| s["lease_holder"] == follower.name())
    })
    .expect("the follower takes over");
    ingest(&follower, 10..20);
    let mut after = vec![Seen::default()];
    pump(&mut members, &mut after, &[0], |s| s[0].acked.len() >= 10);
    let redelivered: BTreeSet<Win> = after[0].windows.iter().map(|&(win, _)| win).collect();
    assert!(redelivered.is_disjoint(&before), "{redelivered:?}");
    let every: BTreeSet<Win> = (0..20).map(|seq| (None, seq)).collect();
    assert_eq!(
        before
            .union(&after[0].acked)
            .copied()
            .collect::<BTreeSet<_>>(),
        every
    );
}
