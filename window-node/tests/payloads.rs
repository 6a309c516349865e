//! Payloads through the daemon, with the real binary: ingest -> fire -> flush and subscribe, a
//! SIGKILL and restart on a real sled directory, a failover between two nodes on a real
//! `redis-server`, and routing over `--partitions`. What each window must carry is computed here
//! from what the test sent (the first payload of each id, in admission order), never taken from
//! the daemon.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use window_testkit::{Conn, Node, RedisServer, WAIT, temp_dir, wait_for, wait_until};

/// 2024-01-15T08:00:00Z, the first window's start.
const BASE: i64 = 1_705_305_600_000;

/// The options every node of these tests runs with: 1 s windows that fire only by flush (no
/// watermark, no idle timeout), so a restart in the middle changes nothing.
const WINDOWS: [&str; 4] = ["--window-size", "1s", "--idle-timeout", "0s"];

/// One event as sent: id, milliseconds after `BASE`, key, payload.
#[derive(Clone, Debug)]
struct Ev {
    id: u64,
    at: i64,
    key: Option<&'static str>,
    payload: Option<Value>,
}

fn ev(id: u64, at: i64, key: Option<&'static str>, payload: Option<Value>) -> Ev {
    Ev {
        id,
        at,
        key,
        payload,
    }
}

/// Payloads of every JSON kind: objects, strings with escapes and unicode, nested arrays,
/// numbers, booleans, and a large one under the default limit.
fn payload(n: u64) -> Option<Value> {
    match n % 7 {
        0 => Some(json!({"user": "ä ✓", "tags": ["a", {"deep": [1, 2.5, null, true]}]})),
        1 => Some(json!("a \"quoted\" \\ slash\nand a line break")),
        2 => Some(json!([[1, [2, [3, []]]], {}, ""])),
        3 => None,
        4 => Some(json!(-12.5e-3)),
        5 => Some(json!(false)),
        _ => Some(json!({ "big": "x".repeat(60_000) })),
    }
}

fn ingest(msg_id: u64, events: &[Ev]) -> String {
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut event = json!({"id": e.id, "timestamp": BASE + e.at});
            if let Some(key) = e.key {
                event["key"] = json!(key);
            }
            if let Some(payload) = &e.payload {
                event["payload"] = payload.clone();
            }
            event
        })
        .collect();
    json!({"type": "ingest", "msg_id": msg_id, "events": events}).to_string()
}

/// Sends `events`; checks `ingest_ok` counts `[accepted, duplicates]`.
fn send(client: &mut Conn, msg_id: u64, events: &[Ev], expect: [u64; 2]) {
    let reply = client.request(&ingest(msg_id, events));
    assert_eq!(reply["type"], "ingest_ok", "{reply}");
    assert_eq!(
        [reply["accepted"].as_u64(), reply["duplicates"].as_u64()],
        expect.map(Some),
        "{reply}"
    );
}

/// A window's ids and payloads (`null` for an event without one).
type Content = (Vec<u64>, Vec<Value>);

/// What each window must hold: per (start, key), the ids and payloads of its events in the order
/// they were sent, each id once (its first payload counts).
fn expected(sent: &[Ev]) -> BTreeMap<(i64, Option<String>), Content> {
    let mut windows: BTreeMap<(i64, Option<String>), Content> = BTreeMap::new();
    for e in sent {
        let start = BASE + e.at.div_euclid(1000) * 1000;
        let (ids, payloads) = windows
            .entry((start, e.key.map(str::to_owned)))
            .or_default();
        if !ids.contains(&e.id) {
            ids.push(e.id);
            payloads.push(e.payload.clone().unwrap_or(Value::Null));
        }
    }
    windows
}

/// Checks that `windows` (from `flushed` or `window_closed`) are exactly the expected ones, each
/// with its payloads, or without the field when none of its events had one.
fn check(windows: &[Value], sent: &[Ev]) {
    let mut want = expected(sent);
    assert_eq!(windows.len(), want.len(), "windows: {windows:?}");
    for window in windows {
        let start = window["window_id"].as_str().expect("window_id")["window-".len()..]
            .parse::<i64>()
            .expect("a numeric window id");
        let key = window["key"].as_str().map(str::to_owned);
        let (ids, payloads) = want
            .remove(&(start, key))
            .unwrap_or_else(|| panic!("an unexpected window {window}"));
        let got_ids: Vec<u64> = window["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|id| id.as_u64().expect("an integer id"))
            .collect();
        assert_eq!(got_ids, ids, "{window}");
        if payloads.iter().all(Value::is_null) {
            assert!(window.get("payloads").is_none(), "no payloads: {window}");
        } else {
            assert_eq!(window["payloads"], Value::Array(payloads), "{window}");
        }
    }
}

fn flush(client: &mut Conn) -> Vec<Value> {
    let reply = client.request(r#"{"type":"flush","msg_id":900}"#);
    assert_eq!(reply["type"], "flushed", "{reply}");
    reply["windows"].as_array().expect("windows").clone()
}

fn start(args: &[String]) -> Node {
    Node::start(env!("CARGO_BIN_EXE_window-node"), args).expect("the daemon starts")
}

fn sled_args(dir: &std::path::Path) -> Vec<String> {
    let mut args: Vec<String> = WINDOWS.map(str::to_owned).to_vec();
    args.extend(["--data-dir".to_owned(), dir.display().to_string()]);
    args
}

#[test]
fn payloads_round_trip_and_survive_a_sigkill() {
    let dir = temp_dir();
    let node = start(&sled_args(dir.path()));
    let mut client = Conn::open(node.addr).expect("connect");
    let first: Vec<Ev> = (0..14)
        .map(|n| ev(n, (n as i64 % 3) * 1000 + 10, None, payload(n)))
        .collect();
    send(&mut client, 1, &first, [14, 0]);
    // A repeated id with another payload is a duplicate: its payload is ignored.
    let again = [
        ev(0, 20, None, Some(json!("ignored"))),
        ev(20, 2500, None, None),
    ];
    send(&mut client, 2, &again, [1, 1]);
    // Over --max-payload-bytes: refused whole, naming the event; nothing of it is kept.
    let over = [
        ev(30, 100, None, Some(json!(1))),
        ev(31, 100, None, Some(json!("y".repeat(70_000)))),
    ];
    let refused = client.request(&ingest(3, &over));
    assert_eq!(refused["code"], 12, "{refused}");
    let text = refused["text"].as_str().expect("text");
    assert!(text.contains("events[1].payload"), "{text}");
    // Everything above was acknowledged: a SIGKILL loses none of it.
    drop(client);
    drop(node);
    let node = start(&sled_args(dir.path()));
    let mut client = Conn::open(node.addr).expect("connect");
    let mut sub = Conn::open(node.addr).expect("connect");
    let ok = sub.request(r#"{"type":"subscribe","msg_id":1,"from_seq":0}"#);
    assert_eq!(ok["type"], "subscribe_ok", "{ok}");
    let sent: Vec<Ev> = first.iter().chain(&again).cloned().collect();
    check(&flush(&mut client), &sent);
    let streamed: Vec<Value> = (0..expected(&sent).len()).map(|_| sub.recv()).collect();
    check(&streamed, &sent);
}

#[test]
fn payloads_survive_a_redis_failover_and_are_routed_to_partitions() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Two nodes on one namespace: the one that holds the lease dies after acknowledging.
    let mut args: Vec<String> = WINDOWS.map(str::to_owned).to_vec();
    args.extend(
        [
            "--store",
            &server.url(),
            "--namespace",
            &server.fresh_namespace(),
            "--lease-ttl",
            "1s",
        ]
        .map(str::to_owned),
    );
    let a = start(&args);
    let b = start(&args);
    let holder_of = |node: &Node| {
        Conn::open(node.addr)
            .ok()?
            .call(r#"{"type":"stats","msg_id":1}"#)?["lease_holder"]
            .as_str()
            .map(str::to_owned)
    };
    let holder = wait_for(WAIT, "a node to take the lease", || {
        holder_of(&a).filter(|h| !h.is_empty())
    })
    .expect("a node takes the lease");
    let (holding, other) = if holder == a.name() { (a, b) } else { (b, a) };
    // Sent through the follower, which forwards to the holder.
    let mut client = Conn::open(other.addr).expect("connect");
    let sent: Vec<Ev> = (0..21)
        .map(|n| ev(n, (n as i64 % 2) * 1000, None, payload(n)))
        .collect();
    send(&mut client, 1, &sent, [21, 0]);
    drop(holding);
    wait_until(WAIT * 3, "the survivor to take over", || {
        holder_of(&other) == Some(other.name())
    })
    .expect("the survivor takes over");
    check(&flush(&mut client), &sent);

    // Three partitions on one node: each event goes to its key's partition with its payload.
    let mut args: Vec<String> = WINDOWS.map(str::to_owned).to_vec();
    args.extend(
        [
            "--store",
            &server.url(),
            "--namespace",
            &server.fresh_namespace(),
            "--partitions",
            "3",
        ]
        .map(str::to_owned),
    );
    let node = start(&args);
    let mut client = Conn::open(node.addr).expect("connect");
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let sent: Vec<Ev> = (0..35)
        .map(|n| {
            ev(
                n,
                (n as i64 % 2) * 1000,
                Some(keys[n as usize % 5]),
                payload(n),
            )
        })
        .collect();
    // Until the node holds every partition, a part may be refused (error 11); a resend counts
    // what an earlier part applied as duplicates.
    let reply = wait_for(WAIT, "every partition to be served", || {
        let reply = client.call(&ingest(1, &sent))?;
        (reply["type"] == "ingest_ok").then_some(reply)
    })
    .expect("every partition is served");
    let counted = reply["accepted"].as_u64().zip(reply["duplicates"].as_u64());
    assert_eq!(counted.map(|(a, d)| a + d), Some(35), "{reply}");
    check(&flush(&mut client), &sent);
}
