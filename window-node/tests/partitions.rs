//! Several `serve` processes sharing one Redis namespace split into `--partitions N`: each
//! partition has its own lease, epoch, output log and dense `seq`, and the live nodes share the
//! partitions out between them (about ceil(N / live nodes) each). Any node accepts a client and
//! routes its requests to the partitions' holders.
//!
//! The tests run the real binary against a real `redis-server` on a free loopback port (see
//! `window_testkit::RedisServer`; without it they return early outside CI). They check that the
//! partitions spread over the nodes and move to the survivors when a holder is SIGKILLed, that
//! under load through one node every acknowledged event still appears in exactly one fired
//! window while holders die again and again (`FAILOVER_KILLS`, default 3), and that mistakes in
//! the option are explained.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
// `WAIT` (20 s) is longer than `--failover-timeout` (15 s), so a node that retries a request for
// that long before answering error 11 is not mistaken for a dead one.
use window_testkit::{
    Conn, Node, Persistence, RedisCluster, RedisServer, Signal, WAIT, count_from_env, run, temp_dir,
};

/// How many times the kill test kills a holder: `FAILOVER_KILLS`, 3 by default.
fn kills() -> usize {
    count_from_env("FAILOVER_KILLS", 3)
}

/// How long the leases may take to settle: a takeover waits for the dead holder's ttl (1 s),
/// and balancing hands partitions over one by one, so this is generous on purpose.
const SETTLE: Duration = Duration::from_secs(30);

/// The first event's timestamp (ms). Event `id` has timestamp `BASE_TS + id`, so with 1 s
/// windows every thousand ids the watermark passes a window boundary and windows fire by
/// themselves, not only by the final flush.
const BASE_TS: i64 = 1_700_000_000_000;

/// Events per ingest request.
const BATCH: i64 = 200;

/// Event `id` has key `k{id % KEYS}`: enough keys that every partition gets some.
const KEYS: i64 = 32;

/// One Redis namespace and the partition count every node of a test is started with.
struct Place {
    url: String,
    namespace: String,
    partitions: usize,
}

impl Place {
    fn new(server: &RedisServer, partitions: usize) -> Place {
        Place {
            url: server.url(),
            namespace: server.fresh_namespace(),
            partitions,
        }
    }

    /// On a Redis Cluster: the partitions' namespaces (`NS.i~t`, each its own hash tag) spread
    /// over its masters, two of six on each.
    fn on_cluster(cluster: &RedisCluster, partitions: usize) -> Place {
        Place {
            url: cluster.url(),
            namespace: "clustered".to_owned(),
            partitions,
        }
    }

    /// The arguments after `serve --listen 127.0.0.1:0` of a node of this place, with
    /// `partitions` instead of the place's own count (to try a node that disagrees with the
    /// namespace).
    fn serve_args(&self, partitions: usize) -> Vec<String> {
        [
            "--store",
            &self.url,
            "--namespace",
            &self.namespace,
            "--partitions",
            &partitions.to_string(),
            "--lease-ttl",
            "1s",
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
        .to_vec()
    }
}

/// Starts a node of `place` (see [`Place::serve_args`]).
fn start(place: &Place) -> Node {
    Node::start(
        env!("CARGO_BIN_EXE_window-node"),
        place.serve_args(place.partitions),
    )
    .expect("a node starts")
}

/// Starts `count` nodes of `place` and waits until its partitions are spread over them.
fn spread(place: &Place, count: usize) -> Vec<Node> {
    let nodes: Vec<Node> = (0..count).map(|_| start(place)).collect();
    wait_for(
        &nodes,
        place.partitions,
        &format!("{} partitions spread over {count} nodes", place.partitions),
        balanced,
    );
    nodes
}

/// One partition's entry in `stats`: who holds its lease (if anyone), its epoch, and how many
/// windows it has fired.
#[derive(Clone, Debug)]
struct Lease {
    holder: Option<String>,
    epoch: u64,
    emitted: u64,
}

/// Asks `addr` for `stats` and returns its partition entries, or `None` if it cannot answer
/// right now. A reply of the wrong shape is a failure, not a "not yet": the entries must be one
/// per partition, in partition order.
fn leases(addr: SocketAddr, partitions: usize) -> Option<Vec<Lease>> {
    let stats = Conn::open(addr)
        .ok()?
        .call(r#"{"type":"stats","msg_id":3}"#)?;
    if stats["type"] != "stats_ok" {
        return None;
    }
    let entries = stats["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("stats has a partitions array: {stats}"));
    assert_eq!(
        entries.len(),
        partitions,
        "one entry per partition: {stats}"
    );
    let leases = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            assert_eq!(entry["partition"], i, "entries in partition order: {stats}");
            Lease {
                holder: entry["lease_holder"]
                    .as_str()
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned),
                epoch: entry["epoch"].as_u64().unwrap_or(0),
                emitted: entry["emitted_windows"].as_u64().unwrap_or(0),
            }
        })
        .collect();
    Some(leases)
}

/// How many partitions each holder holds.
fn holdings(leases: &[Lease]) -> BTreeMap<String, usize> {
    let mut held = BTreeMap::new();
    for holder in leases.iter().filter_map(|l| l.holder.clone()) {
        *held.entry(holder).or_default() += 1;
    }
    held
}

/// Every partition is held, and only by live nodes.
fn all_held_by(leases: &[Lease], live: &[String]) -> bool {
    leases
        .iter()
        .all(|l| l.holder.as_ref().is_some_and(|h| live.contains(h)))
}

/// Every partition is held by a live node and no node holds more than its share,
/// ceil(N / live nodes). With all partitions held, that also means nobody holds too few by
/// more than the rounding allows.
fn balanced(leases: &[Lease], live: &[String]) -> bool {
    let share = leases.len().div_ceil(live.len());
    all_held_by(leases, live) && holdings(leases).values().all(|&n| n <= share)
}

/// Polls `stats` on `nodes[0]` until `accept` takes the partition entries (given the live nodes'
/// addresses), and returns them. On timeout it fails with the last entries seen and the tail of
/// every live node's log, since a lease that does not settle is best explained by the nodes.
fn wait_for(
    nodes: &[Node],
    partitions: usize,
    what: &str,
    accept: impl Fn(&[Lease], &[String]) -> bool,
) -> Vec<Lease> {
    let live: Vec<String> = nodes.iter().map(Node::name).collect();
    let mut last = None;
    window_testkit::wait_for(SETTLE, what, || {
        let leases = leases(nodes[0].addr, partitions)?;
        if accept(&leases, &live) {
            return Some(leases);
        }
        last = Some(leases);
        None
    })
    .unwrap_or_else(|e| {
        let logs: Vec<(String, Vec<String>)> = nodes
            .iter()
            .map(|n| (n.name(), n.process.log_tail(10)))
            .collect();
        panic!("{e}; live nodes {live:?}; last partitions seen {last:#?}; logs {logs:#?}");
    })
}

/// The partitions `holder` holds.
fn held_by(leases: &[Lease], holder: &str) -> Vec<usize> {
    (0..leases.len())
        .filter(|&p| leases[p].holder.as_deref() == Some(holder))
        .collect()
}

/// Three nodes share six partitions two each, and after one of them is SIGKILLed the two
/// survivors take its partitions over, three each, each taken partition under a higher epoch
/// (so the dead holder's late writes, if any, would be fenced).
#[test]
fn partitions_spread_over_the_nodes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let place = Place::new(&server, 6);
    let mut nodes: Vec<Node> = (0..3).map(|_| start(&place)).collect();
    let before = wait_for(
        &nodes,
        place.partitions,
        "six partitions spread two to a node over three nodes",
        balanced,
    );
    let expected: BTreeMap<String, usize> = nodes.iter().map(|n| (n.name(), 2)).collect();
    assert_eq!(holdings(&before), expected, "{before:#?}");

    // Kill a node other than the one `wait_for` asks, so the question can still be asked.
    let victim = nodes.remove(2);
    let orphans = held_by(&before, &victim.name());
    assert_eq!(orphans.len(), 2, "{before:#?}");
    let killed_at = Instant::now();
    drop(victim); // SIGKILL, and reap.
    let after = wait_for(
        &nodes,
        place.partitions,
        "the dead node's partitions taken over by the survivors, three each",
        balanced,
    );
    let took = killed_at.elapsed();
    let expected: BTreeMap<String, usize> = nodes.iter().map(|n| (n.name(), 3)).collect();
    assert_eq!(holdings(&after), expected, "{after:#?}");
    for p in 0..place.partitions {
        assert!(
            after[p].epoch >= before[p].epoch,
            "partition {p}'s epoch went back: {before:#?} then {after:#?}"
        );
    }
    for &p in &orphans {
        assert!(
            after[p].epoch > before[p].epoch,
            "the takeover of partition {p} raises its epoch: {before:#?} then {after:#?}"
        );
    }
    eprintln!("partitions: {orphans:?} taken over {took:?} after the kill; now {after:?}");
}

/// What the ingesting client did.
#[derive(Debug, Default)]
struct Load {
    /// The ids of every event in a batch that got `ingest_ok`.
    acked: Vec<i64>,
    /// Acknowledged batches.
    batches: u64,
    /// Times a batch was sent again (after error 11 or a lost connection).
    resends: u64,
    /// The reply counts, summed over the acknowledged batches.
    duplicates: u64,
    late: u64,
}

/// Ingests batches through `addr` until `stop` is set, one request in flight. Every batch has
/// its own `request_id`, and on error 11 or a lost connection the same line is sent again
/// (reconnecting if need be), which the interface promises is safe: a batch that was committed
/// after all is answered from its record rather than taken twice. Any other reply, or a batch
/// that cannot be placed for a whole minute, ends the load with an error.
fn ingest(addr: SocketAddr, stop: &AtomicBool) -> Result<Load, String> {
    let mut load = Load::default();
    let mut conn: Option<Conn> = None;
    // A bound on the whole run, however fast the nodes are.
    for batch in 0..50_000i64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let ids: Vec<i64> = (batch * BATCH..(batch + 1) * BATCH).collect();
        let events: Vec<String> = ids
            .iter()
            .map(|id| {
                format!(
                    r#"{{"id":{id},"timestamp":{},"key":"k{}"}}"#,
                    BASE_TS + id,
                    id % KEYS
                )
            })
            .collect();
        let line = format!(
            r#"{{"type":"ingest","msg_id":{batch},"request_id":"load-{batch}","events":[{}]}}"#,
            events.join(",")
        );
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            if conn.is_none() {
                conn = Conn::open(addr).ok();
            }
            match conn.as_mut().and_then(|c| c.call(&line)) {
                Some(reply) if reply["type"] == "ingest_ok" => {
                    let count = |field: &str| reply[field].as_u64();
                    let (Some(accepted), Some(duplicates), Some(late)) =
                        (count("accepted"), count("duplicates"), count("late"))
                    else {
                        return Err(format!("batch {batch}: counts missing in {reply}"));
                    };
                    // The counts are summed over the partitions, so each event is in one.
                    if accepted + duplicates + late != BATCH as u64 {
                        return Err(format!(
                            "batch {batch}: the counts do not add up to {BATCH}: {reply}"
                        ));
                    }
                    load.duplicates += duplicates;
                    load.late += late;
                    load.acked.extend(&ids);
                    load.batches += 1;
                    break;
                }
                Some(reply) if reply["type"] == "error" && reply["code"] == 11 => {}
                Some(reply) => return Err(format!("batch {batch}: unexpected reply {reply}")),
                None => conn = None,
            }
            // Not acknowledged: the batch may or may not have been taken. Abandoning it at the
            // end is fine, since only acknowledged events must come out.
            if stop.load(Ordering::Relaxed) {
                return Ok(load);
            }
            if Instant::now() >= give_up {
                return Err(format!("batch {batch}: not acknowledged within a minute"));
            }
            load.resends += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(load)
}

/// The loading client: a thread ingesting through one node (see [`ingest`]).
struct Client {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Load, String>>,
    _stop_on_drop: StopOnDrop,
}

impl Client {
    fn start(entry: SocketAddr) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || ingest(entry, &stop))
        };
        Client {
            _stop_on_drop: StopOnDrop(Arc::clone(&stop)),
            stop,
            thread,
        }
    }

    /// Lets the load run a little longer (the last disruption's aftermath), stops it, and checks
    /// the whole output log, read back through `nodes[0]` once every partition is held: returns
    /// the load, the windows, the windows per partition and the final leases.
    fn finish(self, nodes: &[Node], place: &Place) -> (Load, Vec<Value>, Vec<u64>, Vec<Lease>) {
        std::thread::sleep(Duration::from_millis(500));
        self.stop.store(true, Ordering::Relaxed);
        let load = self
            .thread
            .join()
            .expect("the client thread")
            .unwrap_or_else(|why| panic!("the client failed: {why}"));
        assert!(
            load.acked.len() >= 10 * BATCH as usize,
            "the client made progress: {} events",
            load.acked.len()
        );
        // Timestamps only ever advance, so with no lateness allowed none may be late: a late
        // event is acknowledged but fires in no window, and would look lost below.
        assert_eq!(load.late, 0, "no event is late: {load:?}");
        let leases = wait_for(
            nodes,
            place.partitions,
            "every partition held before reading the log",
            all_held_by,
        );
        let windows = read_log(nodes[0].addr, place.partitions);
        let per_partition = check_log(&windows, &load.acked, place.partitions);
        (load, windows, per_partition, leases)
    }
}

/// Sets the flag when dropped, so the client thread stops even when the test fails half way.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Three nodes share six partitions while a client ingests through node 0; a node holding
/// partitions (never node 0, so the client's node stays) is SIGKILLed `FAILOVER_KILLS` times
/// and replaced each time. Then the whole output log, read back through node 0, must hold every
/// acknowledged event exactly once, with each partition's `seq` dense from 0 and its epochs
/// never going back, and every key in one partition only.
#[test]
fn with_partitions_a_holder_dies_again_and_again_and_nothing_acknowledged_is_lost() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Six over three: after a kill the two survivors hold three each, so every replacement
    // gets its two by handovers, under load.
    holders_die_and_nothing_acknowledged_is_lost(&Place::new(&server, 6), kills());
}

/// The same on a Redis Cluster of three masters (`--store redis+cluster://...`): the six
/// partitions' namespaces on the masters of their hash tags, one holder killed under load.
#[test]
fn on_a_redis_cluster_a_holder_dies_and_nothing_acknowledged_is_lost() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let place = Place::on_cluster(&cluster, 6);
    holders_die_and_nothing_acknowledged_is_lost(&place, 1);
    // The partitions' namespaces are spread over the masters by construction (the spread
    // layout): each of the three masters holds the keys of two of the six.
    let per_master: Vec<BTreeSet<String>> = cluster
        .masters()
        .iter()
        .map(|master| {
            let keys = master.command(&["KEYS", "*"]).expect("KEYS");
            keys.iter()
                .filter_map(|key| {
                    let tag = key.strip_prefix("{wn:")?.split('}').next()?;
                    tag.strip_prefix(&format!("{}.", place.namespace))
                        .map(str::to_owned)
                })
                .collect()
        })
        .collect();
    assert!(
        per_master.iter().all(|partitions| partitions.len() == 2),
        "the six partitions' namespaces, per master: {per_master:?}"
    );
}

/// Three nodes on `place`, a client ingesting through the first, `kills` times the node (not
/// the first) holding the most partitions SIGKILLed and replaced; then every acknowledged
/// event must come out exactly once.
fn holders_die_and_nothing_acknowledged_is_lost(place: &Place, kills: usize) {
    let mut nodes = spread(place, 3);
    let client = Client::start(nodes[0].addr);

    let mut takeovers = Vec::new();
    for kill in 0..kills {
        // Let the load run, and let the replacement of the last kill get its share.
        std::thread::sleep(Duration::from_millis(500));
        let before = wait_for(
            &nodes,
            place.partitions,
            &format!("balanced before kill {kill}"),
            balanced,
        );
        // The node (not node 0) holding the most partitions; when balanced, node 0 holds at
        // most ceil(6 / 3) = 2 of the 6, so another node holds at least one.
        let victim_at = (1..nodes.len())
            .max_by_key(|&i| held_by(&before, &nodes[i].name()).len())
            .expect("three nodes");
        let victim = nodes.remove(victim_at);
        let orphans = held_by(&before, &victim.name());
        assert!(!orphans.is_empty(), "kill {kill}: {before:#?}");
        let killed_at = Instant::now();
        drop(victim); // SIGKILL, and reap.
        let after = wait_for(
            &nodes,
            place.partitions,
            &format!("kill {kill}: every partition held by a survivor"),
            all_held_by,
        );
        takeovers.push(killed_at.elapsed());
        for &p in &orphans {
            assert!(
                after[p].epoch > before[p].epoch,
                "kill {kill}: the takeover of partition {p} raises its epoch: {before:#?} then {after:#?}"
            );
        }
        nodes.push(start(place));
    }
    let (load, windows, per_partition, final_leases) = client.finish(&nodes, place);
    let epochs: Vec<u64> = final_leases.iter().map(|l| l.epoch).collect();
    let slowest = takeovers.iter().max().copied().unwrap_or_default();
    eprintln!(
        "partitions: {} acknowledged events ({} batches, {} resends, {} duplicates) all emitted exactly once in {} windows (per partition {per_partition:?}, final epochs {epochs:?}); takeover (kill to every partition held) max {slowest:?}, each {takeovers:?}",
        load.acked.len(),
        load.batches,
        load.resends,
        load.duplicates,
        windows.len(),
    );
}

/// What happens to Redis under the partitioned nodes (issue 19 item 7).
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILLed, and restarted two seconds later (append-only, fsynced before every reply, so
    /// it keeps everything it answered).
    Killed,
    /// SIGSTOPped for two and a half seconds (past every lease's ttl of one second), then
    /// SIGCONTinued.
    Paused,
    /// Refusing every write (`maxmemory 1`, OOM) for two seconds, then taking them again.
    RefusingWrites,
}

/// Redis fails under two nodes that each hold partitions while a client ingests through one of
/// them: meanwhile requests wait at the routers (up to `--failover-timeout`, then error 11) and
/// no node exits; once Redis is back the nodes take the partitions again by themselves, under new
/// epochs, and serve within a few seconds, and the output log holds every acknowledged event
/// exactly once, each partition's `seq` dense from 0 (never reused).
fn a_redis_fault_under_partitioned_nodes_heals_without_a_restart(fault: Fault) {
    let Ok(mut server) = RedisServer::launch(Persistence::AppendOnlyAlways, None) else {
        let _ = RedisServer::start();
        return;
    };
    let place = Place::new(&server, 4);
    let mut nodes = spread(&place, 2);
    let client = Client::start(nodes[0].addr);
    std::thread::sleep(Duration::from_millis(800));
    match fault {
        Fault::Killed => server.kill().expect("SIGKILL redis"),
        Fault::Paused => server
            .process()
            .signal(Signal::Stop)
            .expect("SIGSTOP redis"),
        Fault::RefusingWrites => {
            server
                .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
                .expect("noeviction");
            server
                .command(&["CONFIG", "SET", "maxmemory", "1"])
                .expect("maxmemory 1");
        }
    }
    std::thread::sleep(match fault {
        Fault::Paused => Duration::from_millis(2500),
        Fault::Killed | Fault::RefusingWrites => Duration::from_secs(2),
    });
    for node in &mut nodes {
        assert!(
            node.process.exited().expect("poll").is_none(),
            "{fault:?}: a node exited while Redis was away: {:?}",
            node.process.log_tail(10)
        );
    }
    match fault {
        Fault::Killed => server
            .restart(Persistence::AppendOnlyAlways)
            .expect("restart redis"),
        Fault::Paused => server
            .process()
            .signal(Signal::Cont)
            .expect("SIGCONT redis"),
        Fault::RefusingWrites => {
            server
                .command(&["CONFIG", "SET", "maxmemory", "0"])
                .expect("maxmemory 0");
        }
    }
    let back = Instant::now();
    // Served again: a flush through each node is answered.
    for node in &nodes {
        call_until(node.addr, r#"{"type":"flush","msg_id":9}"#, "flushed");
    }
    let served_after = back.elapsed();
    for node in &nodes {
        assert!(
            node.process.log_has("contend"),
            "{fault:?}: each node stepped down from its partitions and contended again: {:?}",
            node.process.log_tail(10)
        );
    }
    let (load, windows, per_partition, leases) = client.finish(&nodes, &place);
    let epochs: Vec<u64> = leases.iter().map(|l| l.epoch).collect();
    assert!(
        epochs.iter().all(|&e| e >= 2),
        "{fault:?}: every partition was taken again, under a new epoch: {leases:#?}"
    );
    eprintln!(
        "Redis {fault:?} under partitions: {} acknowledged events ({} resends) all emitted exactly once in {} windows (per partition {per_partition:?}, epochs {epochs:?}); served again {served_after:?} after Redis came back",
        load.acked.len(),
        load.resends,
        windows.len(),
    );
}

#[test]
fn redis_killed_and_restarted_under_partitioned_nodes_heals_without_a_restart() {
    a_redis_fault_under_partitioned_nodes_heals_without_a_restart(Fault::Killed);
}

#[test]
fn redis_paused_past_the_leases_under_partitioned_nodes_heals_without_a_restart() {
    a_redis_fault_under_partitioned_nodes_heals_without_a_restart(Fault::Paused);
}

#[test]
fn redis_refusing_writes_under_partitioned_nodes_heals_without_a_restart() {
    a_redis_fault_under_partitioned_nodes_heals_without_a_restart(Fault::RefusingWrites);
}

/// A node's router serves the partitions the node holds in process (issue 18 item 5): its
/// requests reach the partitions' drivers directly, not over connections to itself, so the
/// node's connections are its clients only.
#[test]
fn a_node_serves_the_partitions_it_holds_in_process() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let place = Place::new(&server, 4);
    let node = start(&place);
    // Waited for in its log: a `stats` through the router before the node holds a partition
    // would open a link to the partition's holder, which stays open.
    window_testkit::wait_for(SETTLE, "four partitions on one node", || {
        let held = node
            .process
            .log_text()
            .matches("coordinating partition")
            .count();
        (held == place.partitions).then_some(())
    })
    .expect("the node holds every partition");
    let nodes = [node];
    let mut client = Conn::open(nodes[0].addr).expect("connect");
    let events: Vec<Value> = (0..KEYS)
        .map(|n| json!({"id": n, "timestamp": BASE_TS, "key": format!("k{n}")}))
        .collect();
    let ok = client.request(&json!({"type": "ingest", "msg_id": 1, "events": events}).to_string());
    assert_eq!(ok["accepted"], KEYS, "{ok}");
    let flushed = client.request(r#"{"type":"flush","msg_id":2}"#);
    let windows = flushed["windows"].as_array().expect("windows");
    assert_eq!(windows.len() as i64, KEYS, "{flushed}");
    let partitions: std::collections::BTreeSet<u64> = windows
        .iter()
        .map(|w| w["partition"].as_u64().expect("partition"))
        .collect();
    assert_eq!(partitions.len(), 4, "every partition took part: {flushed}");
    let stats = client.request(r#"{"type":"stats","msg_id":3,"partition":0}"#);
    assert_eq!(stats["type"], "stats_ok", "{stats}");
    assert_eq!(
        stats["connections"], 1,
        "the client's is the node's only connection: {stats}"
    );
}

/// The namespace wiped (FLUSHALL) under two nodes that each hold partitions (issue 19 item 7):
/// no node starts a partition over at epoch 1 and seq 0; each stops, non-zero, saying the
/// namespace's state was lost, and nothing of the namespace is made anew.
#[test]
fn a_wiped_namespace_stops_every_partitioned_node() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let place = Place::new(&server, 4);
    let mut nodes = spread(&place, 2);
    let events: Vec<Value> = (0..KEYS)
        .map(|n| json!({"id": n, "timestamp": BASE_TS, "key": format!("k{n}")}))
        .collect();
    let ingest = json!({"type": "ingest", "msg_id": 1, "events": events}).to_string();
    let ok = call_until(nodes[0].addr, &ingest, "ingest_ok");
    assert_eq!(ok["accepted"], KEYS, "{ok}");

    server.command(&["FLUSHALL"]).expect("FLUSHALL");
    // A request after the wipe cannot be applied; whatever it is answered, the nodes stop.
    if let Ok(mut conn) = Conn::open(nodes[0].addr) {
        let _ = conn.call(&ingest.replace("\"msg_id\":1", "\"msg_id\":2"));
    }
    for (n, node) in nodes.iter_mut().enumerate() {
        let status = node
            .process
            .wait_exit(SETTLE)
            .unwrap_or_else(|e| panic!("node {n} exits after the wipe: {e}"));
        assert!(!status.success(), "node {n}: {status}");
        let log = node.process.log_text();
        assert!(
            log.contains(&place.namespace) && log.contains("new --namespace"),
            "node {n} names the namespace and what to do: {log}"
        );
    }
    let left = server.command(&["KEYS", "*"]).expect("KEYS");
    assert!(
        left.iter()
            .all(|key| !key.ends_with(":epoch") && !key.ends_with(":id")),
        "nothing of the namespace made anew: {left:?}"
    );
}

/// A namespace made with the plain layout (by an earlier build) whose record of its partitions
/// was lost while the partitions' stores kept their data (a Redis failover without the last
/// writes): a node records the plain layout again, finds every window where it was, and does not
/// start the partitions afresh under the spread names.
#[test]
fn a_lost_record_of_the_partitions_keeps_the_layout_their_stores_use() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let place = Place::new(&server, 2);
    let record = format!("{{wn:{}}}:partitions", place.namespace);
    // What builds before the spread layout recorded: the bare number.
    server.command(&["SET", &record, "2"]).expect("SET");
    let events: Vec<Value> = (0..KEYS)
        .map(|n| json!({"id": n, "timestamp": BASE_TS, "key": format!("k{n}")}))
        .collect();
    let ingest = json!({"type": "ingest", "msg_id": 1, "events": events}).to_string();
    {
        let node = start(&place);
        let ok = call_until(node.addr, &ingest, "ingest_ok");
        assert_eq!(ok["accepted"], KEYS, "{ok}");
    } // SIGKILL, and reap.
    let plain: Vec<String> = server
        .command(&["KEYS", &format!("{{wn:{}.?}}:epoch", place.namespace)])
        .expect("KEYS");
    assert_eq!(
        plain.len(),
        2,
        "both plain partitions hold a store: {plain:?}"
    );

    server.command(&["DEL", &record]).expect("DEL");
    let node = start(&place);
    let flushed = call_until(node.addr, r#"{"type":"flush","msg_id":2}"#, "flushed");
    let windows = flushed["windows"].as_array().expect("windows");
    let found: usize = windows
        .iter()
        .map(|w| w["events"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        found, KEYS as usize,
        "every acknowledged event found: {flushed}"
    );
    assert_eq!(
        server.command(&["GET", &record]).expect("GET"),
        ["2"],
        "the plain layout recorded again"
    );
}

/// Sends `line` to `addr` until the reply has type `wanted` (bounded by `SETTLE`), since a
/// request can meet a partition in the middle of a handover and get error 11, which is safe to
/// retry. A flush sent twice is harmless: the second finds nothing open.
fn call_until(addr: SocketAddr, line: &str, wanted: &str) -> Value {
    let mut last = None;
    window_testkit::wait_for(SETTLE, &format!("a {wanted} reply to {line}"), || {
        let reply = Conn::open(addr).ok().and_then(|mut c| c.call(line));
        match reply {
            Some(reply) if reply["type"] == wanted => Some(reply),
            reply => {
                last = reply;
                None
            }
        }
    })
    .unwrap_or_else(|e| panic!("{e}; last {last:?}"))
}

/// Flushes every open window through `addr`, then reads the whole output log back from it:
/// as many `window_closed` lines as `stats` says were emitted, over all partitions.
fn read_log(addr: SocketAddr, partitions: usize) -> Vec<Value> {
    call_until(addr, r#"{"type":"flush","msg_id":2}"#, "flushed");
    let stats = call_until(addr, r#"{"type":"stats","msg_id":3}"#, "stats_ok");
    let emitted = stats["emitted_windows"]
        .as_u64()
        .unwrap_or_else(|| panic!("emitted_windows in {stats}"));
    let mut sub = Conn::open(addr).expect("connect to subscribe");
    let ok = sub
        .call(r#"{"type":"subscribe","msg_id":4,"from_seq":0}"#)
        .expect("a reply to subscribe");
    assert_eq!(ok["type"], "subscribe_ok", "{ok}");
    assert_eq!(
        ok["from_seq"],
        json!(vec![0; partitions]),
        "one start per partition: {ok}"
    );
    // Each read is bounded by the connection's timeout, and the whole by this deadline.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut windows = Vec::with_capacity(emitted as usize);
    while (windows.len() as u64) < emitted {
        assert!(
            Instant::now() < deadline,
            "read {} of {emitted} windows in time",
            windows.len()
        );
        let window = sub.read().unwrap_or_else(|| {
            panic!(
                "the subscription ended after {} of {emitted} windows",
                windows.len()
            )
        });
        windows.push(window);
    }
    windows
}

/// Checks the output log: per partition, windows come in `seq` order and the seqs are exactly
/// 0, 1, 2, ... with epochs that never go back; a key's windows are all in one partition; every
/// event fires once at most, under its own key, and every acknowledged one fires. Returns how
/// many windows each partition fired.
fn check_log(windows: &[Value], acked: &[i64], partitions: usize) -> Vec<u64> {
    let mut next_seq = vec![0u64; partitions];
    let mut last_epoch = vec![0u64; partitions];
    let mut partition_of_key: HashMap<String, usize> = HashMap::new();
    let mut seen: HashMap<i64, (usize, u64)> = HashMap::new();
    for window in windows {
        assert_eq!(window["type"], "window_closed", "{window}");
        let p = window["partition"]
            .as_u64()
            .unwrap_or_else(|| panic!("partition in {window}")) as usize;
        assert!(p < partitions, "partition in range: {window}");
        let seq = window["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("seq in {window}"));
        assert_eq!(
            seq, next_seq[p],
            "partition {p}'s seqs come dense and in order from 0: {window}"
        );
        next_seq[p] += 1;
        let epoch = window["epoch"]
            .as_u64()
            .unwrap_or_else(|| panic!("epoch in {window}"));
        assert!(
            epoch >= last_epoch[p],
            "partition {p}'s epochs never go back along its log: {window}"
        );
        last_epoch[p] = epoch;
        let key = window["key"]
            .as_str()
            .unwrap_or_else(|| panic!("key in {window}"));
        if let Some(other) = partition_of_key.insert(key.to_owned(), p) {
            assert_eq!(other, p, "key {key} fired in two partitions: {window}");
        }
        for id in window["events"]
            .as_array()
            .unwrap_or_else(|| panic!("events in {window}"))
        {
            let id = id.as_i64().expect("integer event id");
            assert_eq!(
                key,
                format!("k{}", id % KEYS),
                "event {id} fired under another key: {window}"
            );
            if let Some((other, other_seq)) = seen.insert(id, (p, seq)) {
                panic!(
                    "event {id} fired twice: partition {other} seq {other_seq}, and partition {p} seq {seq}"
                );
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
    next_seq
}

/// Runs `window-node serve --listen 127.0.0.1:0 ARGS` to its end, bounded by `WAIT` (a node
/// that should have refused to start but serves instead is killed and reported), and returns how
/// it exited and its stderr.
fn run_to_exit(args: &[String]) -> (ExitStatus, String) {
    let finished = run(
        Command::new(env!("CARGO_BIN_EXE_window-node"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info"),
        b"",
        WAIT,
    )
    .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    (finished.status, finished.stderr)
}

/// Mistakes in `--partitions` stop the node at once with a message that names what is wrong:
/// zero partitions, partitions without a shared Redis store (the partition leases live in
/// Redis), and a partition count other than the one the namespace already runs with (the key
/// hash would send a key's events to another partition than before).
#[test]
fn partition_options_are_explained() {
    let args = |extra: &[&str]| -> Vec<String> { extra.iter().map(|a| (*a).to_owned()).collect() };
    // Port 1 on loopback: nothing listens there, so a node that got past its options would fail
    // to connect instead; the options must be checked first.
    let (status, zero) = run_to_exit(&args(&[
        "--store",
        "redis://127.0.0.1:1/",
        "--partitions",
        "0",
    ]));
    assert!(!status.success(), "--partitions 0 must fail");
    assert!(zero.contains("--partitions"), "{zero}");

    let dir = temp_dir();
    let dir_arg = dir.path().to_str().expect("a UTF-8 temp dir").to_owned();
    let (status, no_store) = run_to_exit(&args(&["--data-dir", &dir_arg, "--partitions", "4"]));
    assert!(!status.success(), "--partitions without --store must fail");
    assert!(no_store.contains("--store"), "{no_store}");

    let Some(server) = RedisServer::start() else {
        return;
    };
    let place = Place::new(&server, 4);
    let running = [start(&place)];
    // Once it holds all four partitions, the namespace has its count recorded.
    wait_for(
        &running,
        place.partitions,
        "the first node holding all four partitions",
        all_held_by,
    );
    let (status, other_count) = run_to_exit(&place.serve_args(2));
    assert!(
        !status.success(),
        "--partitions 2 on a namespace of 4 must fail"
    );
    assert!(other_count.contains("partitions"), "{other_count}");
    // The refused node changed nothing: the first still holds every partition.
    let leases = wait_for(
        &running,
        place.partitions,
        "the first node still holding all four partitions",
        all_held_by,
    );
    assert_eq!(
        holdings(&leases),
        BTreeMap::from([(running[0].name(), 4)]),
        "{leases:#?}"
    );
}

/// A request addressed to one partition (what routers send each other) must belong there: a
/// key of another partition, a partition that does not exist, and a `from_seq` of the wrong
/// length are refused with error 12 and change nothing. A client in an envelope gets its
/// subscription's windows in envelopes too, each with its partition.
#[test]
fn requests_for_one_partition_are_checked_and_envelopes_kept() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let place = Place::new(&server, 4);
    let running = [start(&place)];
    wait_for(
        &running,
        place.partitions,
        "one node holding all four partitions",
        all_held_by,
    );
    let mut conn = Conn::open(running[0].addr).expect("connect");
    // Find a key of partition 0 and one of another partition by asking the node itself: close
    // an open window and read the partition on the reply.
    let mut home = BTreeMap::new();
    let mut partition_of = BTreeMap::new();
    for k in 0..16 {
        let key = format!("key-{k}");
        let line =
            json!({"type":"ingest","msg_id":1,"events":[{"id":k,"timestamp":1000,"key":key}]});
        assert_eq!(
            conn.call(&line.to_string()).expect("ingest_ok")["accepted"],
            1
        );
        let closed = conn
            .call(
                &json!({"type":"close","msg_id":2,"window_id":"window-1000","key":key}).to_string(),
            )
            .expect("window_closed");
        assert_eq!(closed["type"], "window_closed", "{closed}");
        let partition = closed["partition"].as_u64().expect("partition");
        partition_of.insert(key.clone(), partition);
        home.insert(partition, key);
    }
    let other = home
        .iter()
        .find(|(p, _)| **p != 0)
        .map(|(_, k)| k.clone())
        .expect("two partitions among 16 keys");
    let misplaced = json!({"type":"ingest","msg_id":3,"partition":0,"events":[{"id":99,"timestamp":5000,"key":other}]});
    let refused = conn.call(&misplaced.to_string()).expect("a reply");
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_u64()),
        (Some("error"), Some(12)),
        "{refused}"
    );
    let beyond = conn
        .call(r#"{"type":"stats","msg_id":4,"partition":9}"#)
        .expect("a reply");
    assert_eq!(beyond["code"], 12, "{beyond}");
    let stats = conn.call(r#"{"type":"stats","msg_id":5}"#).expect("stats");
    assert_eq!(
        stats["accepted"], 16,
        "the refused event was not taken: {stats}"
    );
    let short = conn
        .call(r#"{"type":"subscribe","msg_id":6,"from_seq":[0,0]}"#)
        .expect("a reply");
    assert_eq!(short["code"], 12, "{short}");

    let mut sub = Conn::open(running[0].addr).expect("connect");
    let ok = sub
        .call(r#"{"src":"c1","dest":"n1","body":{"type":"subscribe","msg_id":7,"from_seq":[0,0,0,0]}}"#)
        .expect("subscribe_ok");
    assert_eq!(ok["dest"], "c1", "{ok}");
    assert_eq!(ok["body"]["type"], "subscribe_ok", "{ok}");
    assert_eq!(ok["body"]["from_seq"], json!([0, 0, 0, 0]), "{ok}");
    for _ in 0..16 {
        let window = sub.read().expect("a window");
        assert_eq!(
            (window["src"].as_str(), window["dest"].as_str()),
            (Some("n1"), Some("c1")),
            "{window}"
        );
        let body = &window["body"];
        assert_eq!(body["type"], "window_closed", "{window}");
        let partition = body["partition"].as_u64().expect("partition");
        let key = body["key"].as_str().expect("key");
        assert_eq!(
            partition_of.get(key),
            Some(&partition),
            "the key's partition: {window}"
        );
        assert!(
            body.get("in_reply_to").is_none(),
            "streamed windows answer no request: {window}"
        );
    }
}

/// A holder paused (SIGSTOP) past its leases while a client ingests through node 0: the others
/// take its partitions over with raised epochs; resumed (SIGCONT), it finds its leases gone and
/// exits non-zero (fail-stop) without firing anything, so the log read back afterwards still
/// holds every acknowledged event exactly once, each partition's epochs never going back.
#[test]
fn with_partitions_a_holder_paused_past_its_leases_fires_nothing_when_it_wakes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let place = Place::new(&server, 6);
    let mut nodes: Vec<Node> = (0..3).map(|_| start(&place)).collect();
    let client = Client::start(nodes[0].addr);
    std::thread::sleep(Duration::from_millis(500));
    let before = wait_for(
        &nodes,
        place.partitions,
        "six partitions over three nodes",
        balanced,
    );
    let paused = nodes.remove(1);
    let orphans = held_by(&before, &paused.name());
    assert!(
        !orphans.is_empty(),
        "balanced, so node 1 holds some: {before:#?}"
    );
    paused.process.signal(Signal::Stop).expect("SIGSTOP");
    let paused_at = Instant::now();
    let after = wait_for(
        &nodes,
        place.partitions,
        "the two others holding every partition while node 1 is paused",
        all_held_by,
    );
    let takeover = paused_at.elapsed();
    for &p in &orphans {
        assert!(
            after[p].epoch > before[p].epoch,
            "the takeover of partition {p} raises its epoch: {before:#?} then {after:#?}"
        );
    }
    // The new holders fire windows of the taken partitions under their epochs before the old
    // one wakes.
    wait_for(
        &nodes,
        place.partitions,
        "every taken partition firing windows under its new holder",
        |leases, live| {
            all_held_by(leases, live)
                && orphans
                    .iter()
                    .all(|&p| leases[p].emitted > after[p].emitted)
        },
    );
    paused.process.signal(Signal::Cont).expect("SIGCONT");
    // It wakes holding drivers of partitions it lost: it drops them (they commit nothing: their
    // gates are bound to the old epochs) and contends again, still a member; with three nodes
    // live again the partitions rebalance onto it.
    let name = paused.name();
    nodes.push(paused);
    let rebalanced = wait_for(
        &nodes,
        place.partitions,
        "the woken node back in the balance",
        |leases, live| balanced(leases, live) && !held_by(leases, &name).is_empty(),
    );
    let woken = nodes.last_mut().expect("the woken node");
    assert!(
        woken.process.exited().expect("poll").is_none() && woken.process.log_has("lost the lease"),
        "the woken node says it lost its leases and keeps running: {:?}",
        woken.process.log_tail(10)
    );
    let status = format!(
        "stepped down and rejoined, holding {:?}",
        held_by(&rebalanced, &name)
    );
    let (load, windows, per_partition, _) = client.finish(&nodes, &place);
    eprintln!(
        "partitions, paused holder: {} acknowledged events all emitted exactly once in {} windows (per partition {per_partition:?}); takeover of its partitions {orphans:?} after {takeover:?}; it woke, {status}",
        load.acked.len(),
        windows.len(),
    );
}
