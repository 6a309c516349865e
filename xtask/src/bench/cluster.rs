//! The scenarios with several `window-node serve` processes sharing one state: on one
//! `--data-dir` (the file lease) or on one Redis server (`--store redis://`, a `redis-server`
//! started here on a free loopback port, with a fresh namespace per run).
//!
//! xtask starts the nodes itself (`--listen 127.0.0.1:0`, the address read from the node's
//! `address=` log line), one at a time: the first must become the coordinator, each later one
//! must name it as `lease_holder` before the next starts. Then loadgen runs with `--tcp` over
//! the chosen nodes, the same workload as the single-daemon scenarios, and checks everything as
//! they do: every ack, every fired window (a subscription through the first address) and the
//! final flush. Afterwards the coordinator must still hold the lease with the same epoch (a
//! takeover during the run would make it a failover test, not a throughput figure).
//!
//! Every process started here is killed and reaped on drop, so an error anywhere leaves none
//! behind, and every wait has a deadline.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use window_testkit::{
    Conn, Node, Persistence, RedisCluster, RedisServer, Signal, StartError, procfs, wait_for,
};

use super::{NODE, Outcome, Results, human, loadgen, ratio};

/// How long a node may take to settle its role or the partitions, or to stop after SIGTERM
/// (and, as `Node::START`, to listen).
const PATIENCE: Duration = Duration::from_secs(30);
/// The project's aim for ingest through Redis on the benchmark machine, in events/s.
pub(super) const REDIS_AIM: f64 = 200_000.0;
/// node-apparatus `DistributedTimeWindow` (JavaScript, windows shared through Redis): the
/// figure the project compares with. Quoted, not measured here.
pub(super) const APPARATUS_QUOTED: f64 = 5_000.0;

/// Scenario names (the report and the ratios look them up).
pub(super) const SLED_FOLLOWERS: &str =
    "daemon ingest, --data-dir, 3 processes (clients on the 2 followers), 4 connections x 4";
pub(super) const SLED_ONE: &str = "daemon ingest, --data-dir, 4 connections x 4 in flight";
pub(super) fn redis_name(nodes: usize) -> String {
    format!(
        "daemon ingest, Redis, {nodes} node{}, 4 connections x 4 in flight",
        if nodes == 1 { "" } else { "s" }
    )
}

/// The partitions of the partitioned scenarios: two per node with three nodes.
pub(super) const PARTITIONS: u32 = 6;
/// Keys of the partitioned scenarios' workload (the daemon rows' 10 keys would fill only some
/// of the partitions, and unevenly).
pub(super) const PARTITION_KEYS: &str = "100";
pub(super) fn partitioned_name(nodes: usize) -> String {
    format!(
        "daemon ingest, Redis --partitions {PARTITIONS}, {nodes} node{}, {PARTITION_KEYS} keys, 4 connections x 4 in flight",
        if nodes == 1 { "" } else { "s" }
    )
}
/// The unpartitioned baseline of the partitioned scenarios: their workload on one node.
pub(super) fn keyed_baseline_name() -> String {
    format!("daemon ingest, Redis, 1 node, {PARTITION_KEYS} keys, 4 connections x 4 in flight")
}

/// What became of the Redis scenarios.
#[derive(Default)]
pub(super) enum RedisStatus {
    /// The daemon scenarios did not run at all.
    #[default]
    NotRun,
    /// Skipped, and why (said loudly in the report).
    Skipped(String),
    /// Ran against this server with this durability setting.
    Ran { version: String, durability: String },
}

/// In CI (`CI` set) a missing `redis-server` fails the bench, before anything runs.
pub(super) fn require_redis_in_ci() -> anyhow::Result<()> {
    if std::env::var_os("CI").is_none() {
        return Ok(());
    }
    ensure!(
        RedisServer::installed(),
        "redis-server is not installed (not found on PATH), and CI must run the Redis \
         benchmarks; install it with `apt-get install -y redis-server`"
    );
    Ok(())
}

/// Runs the multi-process scenarios into `results`. `workload` is the single-daemon scenarios'
/// loadgen workload (without `--serve`), `serve_help` the node's `serve --help`.
pub(super) fn run(
    work: &Path,
    workload: &[&str],
    serve_help: &str,
    results: &mut Results,
) -> anyhow::Result<()> {
    let extra = ["--in-flight", "4", "--connections", "4"];
    let args: Vec<&str> = workload.iter().chain(&extra).copied().collect();
    let options = node_options(workload)?;

    if serve_help.contains("--failover-timeout") {
        let dir = work.join("cluster-sled");
        let store = vec!["--data-dir".to_owned(), dir.display().to_string()];
        let outcome = scenario(
            work,
            SLED_FOLLOWERS,
            &args,
            &options,
            &store,
            3,
            Clients::FollowersOnly,
            None,
            "one coordinator and two followers on one sled --data-dir; the 4 connections, the \
             subscription and the flush all go through the followers, which forward to the \
             coordinator",
        )?;
        results.outcomes.push(outcome);
    } else {
        results.notes.push(
            "Skipped: several processes on one --data-dir (this build's `serve` has no \
             --failover-timeout, so no followers)."
                .to_owned(),
        );
    }

    if !serve_help.contains("--store") {
        let why = "this build's `window-node serve` has no --store".to_owned();
        results
            .notes
            .push(format!("Skipped: the Redis scenarios ({why})."));
        results.redis = RedisStatus::Skipped(why);
        return Ok(());
    }
    let Some(server) = Redis::start(work)? else {
        let why = "redis-server is not installed (not found on PATH); install it with \
                   `apt-get install -y redis-server` and run the bench again"
            .to_owned();
        if std::env::var_os("CI").is_some() {
            bail!("{why}: CI must run the Redis benchmarks");
        }
        eprintln!("\nxtask: *** SKIPPING the Redis benchmarks: {why} ***\n");
        results.notes.push(format!(
            "**SKIPPED: every Redis scenario**, because {why}. The Redis rows, ratios and the \
             200K events/s aim are not measured in this report."
        ));
        results.redis = RedisStatus::Skipped(why);
        return Ok(());
    };
    for nodes in 1..=3 {
        let store = server.store_options(&nodes.to_string());
        let through = match nodes {
            1 => "the one node holds the lease".to_owned(),
            2 => "2 of the 4 connections, the subscription and the flush go through the follower"
                .to_owned(),
            _ => format!(
                "3 of the 4 connections, the subscription and the flush go through the {} \
                 followers",
                nodes - 1
            ),
        };
        let outcome = scenario(
            work,
            &redis_name(nodes),
            &args,
            &options,
            &store,
            nodes,
            Clients::All,
            Some(&server),
            &format!(
                "--store redis://127.0.0.1 ({}), fresh namespace; {through}",
                server.durability
            ),
        )?;
        results.outcomes.push(outcome);
    }
    if serve_help.contains("--redis-fsync") {
        fsync_always(work, &args, &options, results)?;
    }
    many_keys(work, &args, &options, &server, results)?;
    one_event(work, &args, &options, &server, results)?;
    partitioned(work, &args, &options, serve_help, &server, results)?;
    results.redis = RedisStatus::Ran {
        version: server.version.clone(),
        durability: server.durability.clone(),
    };
    Ok(())
}

/// The one-node Redis row again with `--redis-fsync always` (on a server of its own, which the
/// node sets to `appendfsync always`), beside the everysec row of the same run: what the
/// stronger promise costs.
fn fsync_always(
    work: &Path,
    args: &[&str],
    options: &[String],
    results: &mut Results,
) -> anyhow::Result<()> {
    let Some(server) = Redis::start(&work.join("fsync-always"))? else {
        return Ok(());
    };
    let mut store = server.store_options("always");
    store.extend(["--redis-fsync".to_owned(), "always".to_owned()]);
    let outcome = scenario(
        work,
        "daemon ingest, Redis --redis-fsync always, 1 node, 4 connections x 4 in flight",
        args,
        options,
        &store,
        1,
        Clients::All,
        Some(&server),
        "--store redis://127.0.0.1 (appendonly yes; the node sets appendfsync always: Redis fsyncs each batch before it answers), fresh namespace; the one node holds the lease",
    )?;
    if let Some(everysec) = results.outcomes.iter().find(|o| o.name == redis_name(1)) {
        results.notes.push(format!(
            "Redis --redis-fsync always / everysec, one node, same run: {:.2} ({:.0} vs {:.0} events/s): the cost of an fsync before every answer.",
            outcome.events_per_s() / everysec.events_per_s().max(1e-9),
            outcome.events_per_s(),
            everysec.events_per_s(),
        ));
    }
    results.outcomes.push(outcome);
    Ok(())
}

/// The loadgen arguments `args` with `--keys` set to `keys`.
fn with_keys<'a>(args: &[&'a str], keys: &'a str) -> Vec<&'a str> {
    with_args(args, &[("--keys", keys)])
}

/// The loadgen arguments `args` with each `(flag, value)` of `set` set (replaced, or added).
fn with_args<'a>(args: &[&'a str], set: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    let mut out = args.to_vec();
    for (flag, value) in set {
        match out.iter().position(|a| a == flag) {
            Some(at) => out[at + 1] = value,
            None => out.extend([*flag, *value]),
        }
    }
    out
}

/// Scenario name of the one-event requests (the report's latency budget looks it up).
pub(super) const ONE_EVENT: &str = "daemon ingest, Redis, 1 node, one-event requests, 1 in flight";

/// One-event requests with one in flight through Redis (how node-apparatus users push: one
/// element, awaited), beside the round trip of a Redis `PING` from a blocking client on this
/// machine in the same run. An acknowledged request is two such hops at least (the client's to
/// the node, the node's script call to Redis), so the PING says how far from the machine's floor
/// the node is (issue 18, item 6).
fn one_event(
    work: &Path,
    args: &[&str],
    options: &[String],
    server: &Redis,
    results: &mut Results,
) -> anyhow::Result<()> {
    // A hundredth of the workload's events: a few seconds at a few thousand requests a second.
    let events = args
        .iter()
        .position(|a| *a == "--events")
        .and_then(|at| args.get(at + 1)?.parse::<u64>().ok())
        .map_or(10_000, |n| (n / 100).max(200))
        .to_string();
    let one = with_args(
        args,
        &[
            ("--events", &events),
            ("--batch", "1"),
            ("--in-flight", "1"),
            ("--connections", "1"),
        ],
    );
    let store = server.store_options("one-event");
    let outcome = scenario(
        work,
        ONE_EVENT,
        &one,
        options,
        &store,
        1,
        Clients::All,
        Some(server),
        &format!(
            "--store redis://127.0.0.1 ({}): each request one event, the next written when its ack is read",
            server.durability
        ),
    )?;
    let pings = if events.parse::<u64>().unwrap_or(0) >= 10_000 {
        5_000
    } else {
        500
    };
    let ping = ping_round_trip(server.server.port(), pings)?;
    let per_request = 1e6 / outcome.events_per_s().max(1e-9);
    let ping_us = ping.as_secs_f64() * 1e6;
    results.notes.push(format!(
        "One-event requests through Redis, one in flight: {:.0} events/s, {per_request:.0} µs a \
         request. A Redis PING from a blocking client on this machine, same run: {ping_us:.0} µs \
         a round trip (median of {pings}), so a request took {:.1} PING round trips. Its floor \
         is 2 (the client's round trip to the node, the node's script call to Redis): {:.0} \
         requests/s here; the rest is the node's hand-offs between threads and the script \
         (docs/latency.md). Issue 18 aims at >= 15K events/s and >= 3x node-apparatus (its \
         one-in-flight figure: the DistributedTimeWindow section).",
        outcome.events_per_s(),
        per_request / ping_us.max(1e-9),
        1e6 / (2.0 * ping_us).max(1e-9),
    ));
    results.outcomes.push(outcome);
    Ok(())
}

/// The median round trip of `count` Redis `PING`s on one blocking connection to `port`.
fn ping_round_trip(port: u16, count: usize) -> anyhow::Result<Duration> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to redis-server on port {port}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = std::time::Instant::now();
        writer.write_all(b"PING\r\n")?;
        line.clear();
        reader.read_line(&mut line)?;
        times.push(started.elapsed());
        ensure!(
            line == "+PONG\r\n",
            "redis-server answered PING with {line:?}"
        );
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Keys of the many-keys Redis row: with loadgen's 1000 fresh events per window, about one
/// event per window and key, so nearly every event opens a window of its own and fires it.
pub(super) const MANY_KEYS: &str = "1000";

/// One node on Redis with [`MANY_KEYS`] keys beside the 10-key row of the same run: issue 18's
/// store whose cost per batch does not grow with the windows it touches.
fn many_keys(
    work: &Path,
    args: &[&str],
    options: &[String],
    server: &Redis,
    results: &mut Results,
) -> anyhow::Result<()> {
    let keyed = with_keys(args, MANY_KEYS);
    let store = server.store_options("many");
    let outcome = scenario(
        work,
        &format!("daemon ingest, Redis, 1 node, {MANY_KEYS} keys, 4 connections x 4 in flight"),
        &keyed,
        options,
        &store,
        1,
        Clients::All,
        Some(server),
        &format!(
            "--store redis://127.0.0.1 ({}), {MANY_KEYS} keys: nearly every event its own window",
            server.durability
        ),
    )?;
    if let Some(ten) = results.outcomes.iter().find(|o| o.name == redis_name(1)) {
        results.notes.push(format!(
            "Redis with {MANY_KEYS} keys / with 10 keys, one node, same run: {:.2} ({:.0} vs {:.0} \
             events/s; issue 18 aims at >= 0.8 and >= 1M events/s with {MANY_KEYS} keys).",
            outcome.events_per_s() / ten.events_per_s().max(1e-9),
            outcome.events_per_s(),
            ten.events_per_s(),
        ));
    }
    results.outcomes.push(outcome);
    Ok(())
}

/// The partitioned Redis scenarios and their unpartitioned baseline, with more keys so that
/// every partition gets some.
fn partitioned(
    work: &Path,
    args: &[&str],
    options: &[String],
    serve_help: &str,
    server: &Redis,
    results: &mut Results,
) -> anyhow::Result<()> {
    if serve_help.contains("--partitions") {
        // The same workload with more keys, so that every partition gets some; its
        // unpartitioned baseline runs too, for a ratio within this run.
        let keyed = with_keys(args, PARTITION_KEYS);
        let store = server.store_options("keyed");
        results.outcomes.push(scenario(
            work,
            &keyed_baseline_name(),
            &keyed,
            options,
            &store,
            1,
            Clients::All,
            Some(server),
            &format!(
                "--store redis://127.0.0.1 ({}), no partitions: the baseline of the partitioned rows",
                server.durability
            ),
        )?);
        // On one Redis: its namespace `tag`, `nodes` nodes; the outcome and redis-server's CPU.
        let on_one = |tag: &str, nodes: usize| {
            let mut store = server.store_options(tag);
            store.extend(["--partitions".to_owned(), PARTITIONS.to_string()]);
            partitioned_scenario(
                work,
                &partitioned_name(nodes),
                &keyed,
                options,
                &store,
                nodes,
                &[&server.server],
                &format!("--store redis://127.0.0.1 ({})", server.durability),
            )
        };
        for nodes in 1..=3 {
            let (outcome, _) = on_one(&format!("p{nodes}"), nodes)?;
            results.outcomes.push(outcome);
        }
        let baseline = |round: usize| {
            on_one(&format!("p3-round{round}"), 3).map(|(outcome, cpu)| Round {
                per_s: outcome.events_per_s(),
                cpu,
            })
        };
        clustered(work, &keyed, options, baseline, results)?;
    } else {
        results.notes.push(
            "Skipped: the partitioned Redis scenarios (this build's `serve` has no --partitions)."
                .to_owned(),
        );
    }
    Ok(())
}

/// Masters of the cluster row.
const MASTERS: usize = 3;

/// Rounds of the cluster row and of its baseline on one Redis, run in turn: the ratio compares
/// their medians (single runs of a second and a half vary by tens of percent here).
const CLUSTER_ROUNDS: usize = 3;

/// One round of a partitioned scenario: events/s, and the CPU seconds of each Redis server
/// whose CPU time could be read (fewer entries than servers when some could not).
struct Round {
    per_s: f64,
    cpu: Vec<f64>,
}

/// The partitioned workload on 3 nodes over a Redis Cluster of [`MASTERS`] masters (no
/// persistence: cluster nodes run without an append-only file here), beside the same workload
/// on one Redis (`baseline(n)` runs its round `n`, on a fresh namespace). Once the cluster is
/// up the rounds alternate, one Redis first; the row is the cluster's first round, the note
/// compares medians.
fn clustered(
    work: &Path,
    keyed: &[&str],
    options: &[String],
    mut baseline: impl FnMut(usize) -> anyhow::Result<Round>,
    results: &mut Results,
) -> anyhow::Result<()> {
    let cluster = match RedisCluster::launch(MASTERS) {
        Ok(cluster) => cluster,
        Err(StartError::NotInstalled) => {
            results
                .notes
                .push("Skipped: the Redis Cluster row (redis-server is not installed).".to_owned());
            return Ok(());
        }
        Err(StartError::Failed(why)) => bail!("starting a Redis Cluster: {why}"),
    };
    let masters: Vec<&RedisServer> = cluster.masters().iter().collect();
    let name = format!(
        "daemon ingest, Redis Cluster ({MASTERS} masters) --partitions {PARTITIONS}, 3 nodes, {PARTITION_KEYS} keys, 4 connections x 4 in flight"
    );
    let mut singles = Vec::new();
    let mut cluster_rounds = Vec::new();
    let mut row = None;
    for round in 0..CLUSTER_ROUNDS {
        singles.push(baseline(round)?);
        let store = vec![
            "--store".to_owned(),
            cluster.url(),
            "--namespace".to_owned(),
            format!("bench-{}-cluster-{round}", std::process::id()),
            "--partitions".to_owned(),
            PARTITIONS.to_string(),
        ];
        let (outcome, cpu) = partitioned_scenario(
            work,
            &name,
            keyed,
            options,
            &store,
            3,
            &masters,
            &format!("--store redis+cluster:// ({MASTERS} masters on 127.0.0.1, no persistence)"),
        )?;
        cluster_rounds.push(Round {
            per_s: outcome.events_per_s(),
            cpu,
        });
        row.get_or_insert(outcome);
    }
    let rates = |rounds: &[Round]| -> (f64, String) {
        let all: Vec<f64> = rounds.iter().map(|r| r.per_s).collect();
        let listed: Vec<String> = all.iter().map(|&r| human(r)).collect();
        (super::median(&all), listed.join(", "))
    };
    // A median over the rounds in which every server's CPU seconds were read (`servers` of
    // them), `None` without any.
    let cpu = |rounds: &[Round], servers: usize, of: fn(&[f64]) -> f64| {
        let read: Vec<f64> = rounds
            .iter()
            .filter(|r| r.cpu.len() == servers)
            .map(|r| of(&r.cpu))
            .collect();
        (!read.is_empty()).then(|| super::median(&read))
    };
    let (single_rate, single_rates) = rates(&singles);
    let (cluster_rate, cluster_rates) = rates(&cluster_rounds);
    let cpu_note = match (
        cpu(&cluster_rounds, MASTERS, |c| {
            c.iter().copied().fold(0.0, f64::max)
        }),
        cpu(&singles, 1, |c| c.iter().sum()),
    ) {
        (Some(busiest), Some(one)) => format!(
            "the busiest master spent {busiest:.2} CPU s (medians), {:.2} of the single redis-server's {one:.2} (aim: at most 0.5)",
            busiest / one.max(1e-9)
        ),
        (Some(busiest), None) => format!("the busiest master spent {busiest:.2} CPU s (median)"),
        _ => "the servers' CPU seconds could not be read".to_owned(),
    };
    results.notes.push(format!(
        "Redis Cluster ({MASTERS} masters) / one Redis, --partitions {PARTITIONS} on 3 nodes, medians of {CLUSTER_ROUNDS} alternating rounds: {:.3} of its events/s ({} vs {}; aim: at least 1.0; rounds: cluster {cluster_rates}, one Redis {single_rates}); {cpu_note}. One machine's 2 cores run every master, node and loadgen, so the spread, not the total, is what this shows. The table shows the cluster's first round and the one-Redis row measured before the cluster started.",
        cluster_rate / single_rate.max(1e-9),
        human(cluster_rate),
        human(single_rate),
    ));
    if let Some(row) = row {
        results.outcomes.push(row);
    }
    Ok(())
}

/// Starts `nodes` processes on one partitioned namespace, waits until the partitions are
/// spread over all of them (each holds its share), runs loadgen with a connection to every
/// node, checks that no partition moved during the run, and stops them.
#[allow(clippy::too_many_arguments)] // One scenario's settings, as `scenario` takes them.
fn partitioned_scenario(
    work: &Path,
    name: &str,
    args: &[&str],
    options: &[String],
    store: &[String],
    nodes: usize,
    redis: &[&RedisServer],
    store_note: &str,
) -> anyhow::Result<(Outcome, Vec<f64>)> {
    eprintln!("xtask: starting {nodes} window-node serve process(es) for {name:?}");
    let mut started: Vec<Node> = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        started.push(start_node(options, store)?);
    }
    let share = PARTITIONS.div_ceil(nodes as u32) as usize;
    let mut holders = Vec::new();
    let spread = wait_for(PATIENCE, "the partitions spread over the nodes", || {
        if let Some(exited) = exited_early(&mut started, "while the partitions spread") {
            return Some(Err(exited));
        }
        holders = stats(started[0].addr).map_or_else(|_| Vec::new(), |s| partition_holders(&s));
        let spread = holders.len() == PARTITIONS as usize
            && started.iter().all(|node| {
                let held = holders.iter().filter(|(h, _)| *h == node.name()).count();
                held > 0 && held <= share
            });
        spread.then_some(Ok(()))
    });
    match spread {
        Ok(Ok(())) => {}
        Ok(Err(exited)) => bail!(exited),
        Err(timeout) => bail!("{name}: {timeout} (last holders {holders:?})"),
    }
    let before = holders;
    let targets: Vec<SocketAddr> = started.iter().map(|n| n.addr).collect();
    let run = measured(work, name, args, &started, &targets, redis)?;
    let after = partition_holders(&stats(started[0].addr)?);
    ensure!(
        after == before,
        "{name}: partitions moved during the run (before: {before:?}; after: {after:?})"
    );
    stop(started)?;
    let redis_note = run.redis_note();
    let cpu = run.redis_cpu.clone();
    let outcome = run.outcome(&format!(
        "{store_note}, --partitions {PARTITIONS} over {nodes} node(s) ({share} each at most), a connection to every node, each routing to the partitions' holders. Node CPU: all {nodes} node processes' during the run{redis_note}; peak RSS: the first node's"
    ))?;
    Ok((outcome, cpu))
}

/// A loadgen run over `targets`, with the CPU seconds `nodes` and redis-server spent in it and
/// the first node's peak memory.
struct Measured {
    summary: super::Summary,
    node_cpu: f64,
    /// Each Redis server's CPU seconds during the run.
    redis_cpu: Vec<f64>,
    peak_rss_kib: Option<u64>,
}

fn measured(
    work: &Path,
    name: &str,
    args: &[&str],
    nodes: &[Node],
    targets: &[SocketAddr],
    redis: &[&RedisServer],
) -> anyhow::Result<Measured> {
    let tcp = targets
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let node_cpu = || -> f64 {
        nodes
            .iter()
            .filter_map(|n| procfs::cpu_seconds(n.process.pid()))
            .sum()
    };
    let redis_cpu = || -> Vec<Option<f64>> {
        redis
            .iter()
            .map(|r| procfs::cpu_seconds(r.process().pid()))
            .collect()
    };
    let (cpu_before, redis_before) = (node_cpu(), redis_cpu());
    let mut loadgen_args = vec!["--tcp", tcp.as_str()];
    loadgen_args.extend_from_slice(args);
    let summary = loadgen(work, name, &loadgen_args, &[])?;
    let (cpu_after, redis_after) = (node_cpu(), redis_cpu());
    Ok(Measured {
        summary,
        node_cpu: cpu_after - cpu_before,
        redis_cpu: redis_before
            .iter()
            .zip(&redis_after)
            .filter_map(|(a, b)| Some((*b)? - (*a)?))
            .collect(),
        peak_rss_kib: procfs::peak_rss_kib(nodes[0].process.pid()),
    })
}

impl Measured {
    /// `; redis-server N CPU s`, or nothing without Redis.
    fn redis_note(&self) -> String {
        match self.redis_cpu.as_slice() {
            [] => String::new(),
            [one] => format!("; redis-server {one:.2} CPU s"),
            many => format!(
                "; redis-server masters {} CPU s",
                many.iter()
                    .map(|s| format!("{s:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
        }
    }

    fn outcome(self, note: &str) -> anyhow::Result<Outcome> {
        let mut outcome = self.summary.outcome(note)?;
        outcome.cpu_seconds = Some(self.node_cpu);
        outcome.peak_rss_kib = self.peak_rss_kib;
        Ok(outcome)
    }
}

/// Each partition's lease holder and epoch, from a partitioned node's `stats_ok`.
fn partition_holders(stats: &Value) -> Vec<(String, u64)> {
    let Some(entries) = stats["partitions"].as_array() else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            Some((
                entry["lease_holder"].as_str()?.to_owned(),
                entry["epoch"].as_u64()?,
            ))
        })
        .collect()
}

/// The node options that make a `serve` process match what loadgen's reference assumes: what
/// `loadgen --serve` passes to the daemon it starts (its default window size and frame, no idle
/// timeout) and the workload's lateness and length purge.
fn node_options(workload: &[&str]) -> anyhow::Result<Vec<String>> {
    let value = |flag: &str| {
        workload
            .iter()
            .position(|a| *a == flag)
            .and_then(|at| workload.get(at + 1))
            .copied()
    };
    ensure!(
        value("--window-size-ms").is_none() && value("--frame").is_none(),
        "the multi-node scenarios assume loadgen's default window size and frame"
    );
    let mut options: Vec<String> = [
        "--window-size",
        "60000ms",
        "--ids",
        "grader",
        "--idle-timeout",
        "0s",
    ]
    .map(str::to_owned)
    .to_vec();
    let lateness = value("--allowed-lateness-ms").context("the workload's lateness")?;
    options.extend(["--allowed-lateness".to_owned(), format!("{lateness}ms")]);
    if let Some(n) = value("--max-events") {
        options.extend(["--max-events".to_owned(), n.to_owned()]);
    }
    Ok(options)
}

/// Which nodes the clients connect to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clients {
    /// The followers only.
    FollowersOnly,
    /// Every node, followers first (so loadgen's first connection, its subscription and its
    /// control requests go through a follower when there is one).
    All,
}

/// Starts `nodes` processes on one store, runs loadgen over them, stops them.
#[allow(clippy::too_many_arguments)]
fn scenario(
    work: &Path,
    name: &str,
    args: &[&str],
    options: &[String],
    store: &[String],
    nodes: usize,
    clients: Clients,
    redis: Option<&Redis>,
    note: &str,
) -> anyhow::Result<Outcome> {
    eprintln!("xtask: starting {nodes} window-node serve process(es) for {name:?}");
    let mut started: Vec<Node> = Vec::with_capacity(nodes);
    let mut first = start_node(options, store)?;
    let coordinator = first.addr;
    let epoch = wait_for_holder(&mut first, coordinator)?;
    started.push(first);
    // One at a time: each later node must name the first as holder before the next starts, so
    // the first stays the coordinator.
    for _ in 1..nodes {
        let mut node = start_node(options, store)?;
        wait_for_holder(&mut node, coordinator)?;
        started.push(node);
    }
    let mut targets: Vec<SocketAddr> = started[1..].iter().map(|n| n.addr).collect();
    if clients == Clients::All || targets.is_empty() {
        targets.push(coordinator);
    }
    let servers: Vec<&RedisServer> = redis.iter().map(|r| &r.server).collect();
    let run = measured(work, name, args, &started, &targets, &servers)?;

    // The lease must not have moved: a takeover would make this a failover run.
    let line = stats(coordinator)?;
    let holder = line["lease_holder"].as_str();
    let after = line["epoch"].as_u64();
    ensure!(
        holder == Some(coordinator.to_string().as_str()) && after == Some(epoch),
        "{name}: the lease moved during the run (before: {coordinator}, epoch {epoch}; after: \
         {holder:?}, epoch {after:?})"
    );
    stop(started)?;

    let whose = if nodes == 1 {
        "the node's during the run".to_owned()
    } else {
        format!("all {nodes} node processes' during the run")
    };
    let redis_note = run.redis_note();
    run.outcome(&format!(
        "{note}. Node CPU: {whose}{redis_note}; peak RSS: the coordinator's"
    ))
}

/// Starts `window-node serve` with `options` and `store` (killed and reaped on drop).
fn start_node(options: &[String], store: &[String]) -> anyhow::Result<Node> {
    Ok(Node::start(NODE, options.iter().chain(store))?)
}

/// Waits until `node`'s `stats` names `holder` as the lease holder; returns the epoch.
fn wait_for_holder(node: &mut Node, holder: SocketAddr) -> anyhow::Result<u64> {
    let (addr, want) = (node.addr, holder.to_string());
    let mut last = String::new();
    let what = format!("{want} named as the lease holder");
    let settled = wait_for(PATIENCE, &what, || {
        if let Some(exited) = exited_early(std::slice::from_mut(node), "while settling its role") {
            return Some(Err(exited));
        }
        match stats(addr) {
            Ok(stats) if stats["lease_holder"] == want.as_str() => stats["epoch"].as_u64().map(Ok),
            Ok(stats) => {
                last = stats.to_string();
                None
            }
            Err(e) => {
                last = format!("{e:#}");
                None
            }
        }
    });
    match settled {
        Ok(Ok(epoch)) => Ok(epoch),
        Ok(Err(exited)) => bail!(exited),
        Err(timeout) => bail!(node.process.failure(&format!(
            "did not settle its role: {timeout} (last stats: {last})"
        ))),
    }
}

/// The failure of the first of `nodes` that has exited, `what` saying while doing what.
fn exited_early(nodes: &mut [Node], what: &str) -> Option<window_testkit::Error> {
    nodes
        .iter_mut()
        .find_map(|node| match node.process.exited() {
            Ok(None) => None,
            Ok(Some(status)) => Some(
                node.process
                    .failure(&format!("exited with {status} {what}")),
            ),
            Err(e) => Some(e),
        })
}

/// Stops the nodes with SIGTERM, the last started first: the coordinator (the first) goes last,
/// so the lease never moves. Each must exit cleanly within the patience.
fn stop(mut nodes: Vec<Node>) -> anyhow::Result<()> {
    while let Some(mut node) = nodes.pop() {
        node.process.signal(Signal::Term)?;
        let status = node.process.wait_exit(PATIENCE)?;
        ensure!(
            status.success(),
            node.process
                .failure(&format!("exited with {status} after SIGTERM"))
        );
    }
    Ok(())
}

/// One `stats` request on a connection of its own; the reply.
fn stats(addr: SocketAddr) -> anyhow::Result<Value> {
    let mut conn = Conn::open(addr)
        .with_context(|| format!("connecting to {addr}"))?
        .with_wait(Duration::from_secs(5));
    conn.call(r#"{"type":"stats","msg_id":1}"#)
        .with_context(|| format!("no stats reply from {addr}"))
}

/// The benchmarks' `redis-server` (window-testkit's, in the work directory), with what the
/// report says of it.
pub(super) struct Redis {
    pub(super) server: RedisServer,
    version: String,
    /// The durability setting it runs with, as the report says it.
    pub(super) durability: String,
}

impl Redis {
    /// Starts one with an append-only file fsynced every second; without the append-only file
    /// if that cannot start (the report then says so). `None` when redis-server is missing.
    pub(super) fn start(work: &Path) -> anyhow::Result<Option<Redis>> {
        let dir = work.join("redis");
        let mut failures = Vec::new();
        for persistence in [Persistence::AppendOnlyEverySec, Persistence::Off] {
            match RedisServer::launch(persistence, Some(&dir)) {
                Ok(server) => {
                    if persistence == Persistence::Off {
                        eprintln!(
                            "xtask: note: redis-server would not run with --appendonly yes \
                             ({}); the Redis scenarios run without persistence",
                            failures.join("; ")
                        );
                    }
                    return Redis::describe(server, persistence).map(Some);
                }
                Err(StartError::NotInstalled) => return Ok(None),
                Err(StartError::Failed(e)) => failures.push(e.to_string()),
            }
        }
        bail!("could not start redis-server: {}", failures.join("; "))
    }

    fn describe(server: RedisServer, persistence: Persistence) -> anyhow::Result<Redis> {
        let (appendonly, appendfsync) = (
            server.setting("appendonly")?,
            server.setting("appendfsync")?,
        );
        let durability = if appendonly == "yes" {
            format!("appendonly yes, appendfsync {appendfsync}")
        } else {
            "appendonly no, save \"\": no persistence at all".to_owned()
        };
        ensure!(
            persistence == Persistence::Off || (appendonly == "yes" && appendfsync == "everysec"),
            "redis-server runs with {durability}, not the append-only file asked for"
        );
        Ok(Redis {
            version: server.version()?,
            server,
            durability,
        })
    }

    /// Its `redis://127.0.0.1:PORT/` URL, for clients other than the node.
    pub(super) fn url(&self) -> String {
        self.server.url()
    }

    /// The `serve` options for a node on this server, in a namespace of this run's own.
    pub(super) fn store_options(&self, scenario: &str) -> Vec<String> {
        vec![
            "--store".to_owned(),
            self.server.url(),
            "--namespace".to_owned(),
            format!("bench-{}-{scenario}", std::process::id()),
        ]
    }
}

/// The report's section on these scenarios.
pub(super) fn section(out: &mut String, results: &Results) {
    let _ = writeln!(out, "## Several nodes, and Redis\n");
    let figure = |name: &str| {
        results
            .outcomes
            .iter()
            .find(|o| o.name == name)
            .map(Outcome::events_per_s)
    };
    match &results.redis {
        RedisStatus::NotRun => {}
        RedisStatus::Skipped(why) => {
            let _ = writeln!(
                out,
                "**⚠ THE REDIS SCENARIOS WERE SKIPPED: {why}.** Nothing in this report measures \
                 the Redis store, and whether the 200K events/s aim is met is not known from it.\n"
            );
        }
        RedisStatus::Ran {
            version,
            durability,
        } => {
            let _ = writeln!(
                out,
                "Redis: a `redis-server` {version} started by xtask on a free loopback port, \
                 with `--save '' {}`, killed afterwards; each run uses a fresh `--namespace`. \
                 **Durability: {durability}.** {}\n",
                if durability.starts_with("appendonly yes") {
                    "--appendonly yes --appendfsync everysec"
                } else {
                    "--appendonly no"
                },
                if durability.contains("everysec") {
                    "Redis writes each committed batch to its append-only file before it \
                     replies and fsyncs that file once a second, so a crash of redis-server \
                     loses nothing acknowledged but a crash of the machine can lose about the \
                     last second. The sled rows fsync every group before they acknowledge: \
                     they promise more."
                } else {
                    "Redis keeps everything in memory only: a crash of redis-server loses \
                     everything. These figures are an upper bound."
                }
            );
        }
    }
    let _ = writeln!(
        out,
        "Every process runs on this one machine (the nodes, redis-server and loadgen share its \
         cores). The workload is the daemon rows' (500-event ingest requests, 10 keys, \
         --max-events 64, 1% retries), 4 connections x 4 in flight, checked the same way. \
         Clients of a follower reach the coordinator through it (one more hop). The partitioned \
         rows use the same workload with 100 keys (10 would leave partitions empty), next to \
         their own unpartitioned baseline: more keys mean more open windows and more records \
         per batch, so compare them with that row, not with the 10-key rows. Every partitioned \
         node routes its clients' requests to the partitions' holders, itself included, over \
         loopback; all of them share one single-threaded redis-server, so on one machine \
         partitions spread the nodes' work but not Redis's (its CPU seconds are in the notes).\n"
    );
    let _ = writeln!(
        out,
        "| setup | events/s | / node-apparatus (quoted ~5K) | above the 200K aim |"
    );
    let _ = writeln!(out, "|---|---:|---:|---|");
    // (setup, events/s, through Redis); the first three Redis rows are the aim's workload, the
    // rest the 100-key one.
    let mut rows: Vec<(String, Option<f64>, bool)> = vec![
        ("sled, 1 process".to_owned(), figure(SLED_ONE), false),
        (
            "sled, coordinator + 2 followers, clients on the followers".to_owned(),
            figure(SLED_FOLLOWERS),
            false,
        ),
    ];
    for nodes in 1..=3 {
        rows.push((
            format!("Redis, {nodes} node{}", if nodes == 1 { "" } else { "s" }),
            figure(&redis_name(nodes)),
            true,
        ));
    }
    rows.push((
        format!("Redis, 1 node, {PARTITION_KEYS} keys (baseline of the partitioned rows)"),
        figure(&keyed_baseline_name()),
        true,
    ));
    for nodes in 1..=3 {
        rows.push((
            format!(
                "Redis --partitions {PARTITIONS}, {nodes} node{}, {PARTITION_KEYS} keys",
                if nodes == 1 { "" } else { "s" }
            ),
            figure(&partitioned_name(nodes)),
            true,
        ));
    }
    for (setup, value, redis) in &rows {
        let Some(v) = value else { continue };
        let _ = writeln!(
            out,
            "| {setup} | {} | {:.0}x | {} |",
            human(*v),
            v / APPARATUS_QUOTED,
            if *redis {
                if *v > REDIS_AIM { "yes" } else { "**no**" }
            } else {
                "(not Redis)"
            }
        );
    }
    let _ = writeln!(
        out,
        "| node-apparatus `DistributedTimeWindow` (JavaScript, windows shared through Redis) | \
         ~5K elements/s | 1x | quoted, **not measured** here or on this machine |\n"
    );
    aim_verdict(out, results, &rows);
}

/// Whether the Redis rows met the aim, and the lowest of the keyed (partitioned) rows.
fn aim_verdict(out: &mut String, results: &Results, rows: &[(String, Option<f64>, bool)]) {
    let measured: Vec<(String, f64)> = rows
        .iter()
        .filter(|(_, _, redis)| *redis)
        .filter_map(|(setup, v, _)| Some((setup.clone(), (*v)?)))
        .collect();
    let (redis, keyed) = measured.split_at(measured.len().min(3));
    let cores = thread::available_parallelism().map_or(0, usize::from);
    if let Some((setup, lowest)) = redis
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|_| redis.len() == 3)
    {
        let met = *lowest > REDIS_AIM;
        let _ = writeln!(
            out,
            "**Aim: above {} events/s through Redis on this {cores}-core machine: {}.** The \
             lowest of the three Redis runs is {} events/s ({setup}).{}\n",
            human(REDIS_AIM),
            if met { "met" } else { "NOT met" },
            human(*lowest),
            if results.quick {
                " (Quick mode: 50k events per run, a fraction of a second each; the full run \
                 decides.)"
            } else {
                ""
            }
        );
        if let Some((setup, lowest)) = keyed.iter().min_by(|a, b| a.1.total_cmp(&b.1)) {
            let _ = writeln!(
                out,
                "With {PARTITION_KEYS} keys (the partitioned rows and their baseline) the lowest is \
                 {} events/s ({setup}): {} the aim. Those runs are bound by the one redis-server \
                 (the CPU seconds in their notes), so partitions cannot raise them on one machine.\n",
                human(*lowest),
                if *lowest > REDIS_AIM {
                    "above"
                } else {
                    "**below**"
                }
            );
        }
    } else {
        let _ = writeln!(
            out,
            "**Aim: above {} events/s through Redis: not measured in this run.**\n",
            human(REDIS_AIM)
        );
    }
}

/// Ratio lines for the ratios table.
pub(super) fn ratio_lines(results: &Results) -> Vec<(String, Option<f64>)> {
    let figure = |name: &str| {
        results
            .outcomes
            .iter()
            .find(|o| o.name == name)
            .map(Outcome::events_per_s)
    };
    let one = figure(&redis_name(1));
    vec![
        (
            "Redis 1 node / sled 1 node, 4 connections x 4 (events/s)".to_owned(),
            ratio(one, figure(SLED_ONE)),
        ),
        (
            "Redis 2 nodes / Redis 1 node (events/s)".to_owned(),
            ratio(figure(&redis_name(2)), one),
        ),
        (
            "Redis 3 nodes / Redis 1 node (events/s)".to_owned(),
            ratio(figure(&redis_name(3)), one),
        ),
        (
            "sled: coordinator + 2 followers (clients on followers) / 1 process (events/s)"
                .to_owned(),
            ratio(figure(SLED_FOLLOWERS), figure(SLED_ONE)),
        ),
        (
            format!(
                "Redis --partitions {PARTITIONS}, 1 node / no partitions, 1 node, {PARTITION_KEYS} keys (events/s)"
            ),
            ratio(figure(&partitioned_name(1)), figure(&keyed_baseline_name())),
        ),
        (
            format!(
                "Redis --partitions {PARTITIONS}, 3 nodes / no partitions, 1 node, {PARTITION_KEYS} keys (events/s)"
            ),
            ratio(figure(&partitioned_name(3)), figure(&keyed_baseline_name())),
        ),
    ]
}
