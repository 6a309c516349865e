//! The store, the lease and the membership on a real Redis Cluster of three masters (see
//! `window_testkit::RedisCluster`): `redis+cluster://` URLs, each namespace on the master of its
//! hash tag, so that the partitions of a namespace (each a namespace of its own) spread over the
//! masters.

use std::collections::HashSet;
use std::time::Duration;

use window_core::{Engine, EngineConfig, Event, EventId, SizeMs, Timestamp};
use window_store::{
    Batch, OutputRecord, RedisLease, RedisMembership, RedisStore, WindowStore, open_engine,
};
use window_testkit::RedisCluster;

fn commit(
    engine: &mut Engine,
    store: &mut RedisStore,
    seq: &mut u64,
    extra: Vec<window_core::ClosedWindow>,
) {
    let fired = extra
        .into_iter()
        .chain(std::iter::from_fn(|| engine.poll_closed()))
        .map(|window| {
            *seq += 1;
            OutputRecord {
                seq: *seq - 1,
                epoch: 1,
                window,
            }
        })
        .collect();
    store
        .commit(&Batch {
            dirty: engine.take_dirty(),
            fired,
            requests: Vec::new(),
            groups: Vec::new(),
            trim_log_below: None,
        })
        .expect("commit");
    store.sync().expect("sync");
}

#[test]
fn partitions_of_a_namespace_spread_over_the_masters_and_recover() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let size = SizeMs::new(10).unwrap();
    let mut homes = HashSet::new();
    for partition in 0..6 {
        let namespace = format!("spread.{partition}");
        let mut store = RedisStore::connect(&cluster.url(), &namespace).expect("connect");
        store.backend_mut().set_epoch(1);
        let (mut engine, mut seq) = open_engine(&mut store, EngineConfig::default()).unwrap();
        let event = |id: i64, ts: i64| Event {
            id: EventId::Int(id),
            ts: Timestamp::from_millis(ts),
            key: Some("k"),
            value: None,
            payload: None,
        };
        engine
            .handle_events(Timestamp::EPOCH, size, vec![event(1, 5), event(2, 6)])
            .unwrap();
        commit(&mut engine, &mut store, &mut seq, Vec::new());
        let flushed = engine.flush(None);
        engine
            .handle_events(Timestamp::EPOCH, size, vec![event(3, 15)])
            .unwrap();
        commit(&mut engine, &mut store, &mut seq, flushed);
        store.compact().expect("compact");
        let fired = store.read_output(0, 10).unwrap();
        assert_eq!(fired.len(), 1);

        // Another connection, through another master's address first, reads it all back.
        let mut reader = RedisStore::connect(&cluster.url(), &namespace).expect("connect");
        let recovered = reader.recover().unwrap().expect("state");
        assert_eq!(recovered.snapshot, engine.snapshot());
        assert_eq!(recovered.next_seq, seq);
        assert_eq!(reader.read_output(0, 10).unwrap(), fired);

        // Its keys live on the master of its hash tag.
        let tag = format!("{{wn:{namespace}}}:keys");
        let home = cluster.master_of(&tag).expect("slot owner");
        let held = home.command(&["EXISTS", &tag]).unwrap().concat();
        assert_eq!(held, "1", "{namespace} on its master");
        homes.insert(home.port());
    }
    assert!(
        homes.len() >= 2,
        "six partitions all on one master: {homes:?}"
    );
}

#[test]
fn the_lease_and_the_membership_work_on_a_cluster() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let mut a = RedisLease::connect(&cluster.url(), "leased").expect("lease");
    let mut b = RedisLease::connect(&cluster.url(), "leased").expect("lease");
    let seen = a.observe().unwrap();
    let ttl = Duration::from_secs(30);
    assert!(a.try_acquire(&seen, "a:1", 1, ttl).unwrap());
    assert!(!b.try_acquire(&seen, "b:1", 1, ttl).unwrap());
    assert_eq!(b.observe().unwrap().holding.unwrap().holder, "a:1");

    let mut members = RedisMembership::connect(&cluster.url(), "members").expect("members");
    assert_eq!(members.claim_partitions(4, true).unwrap().count, 4);
    assert_eq!(members.claim_partitions(5, true).unwrap().count, 4);
}

/// `--redis-fsync always` on a cluster asks every master: refused while any keeps no
/// append-only file, and once all do, every master fsyncs before it answers.
#[test]
fn fsync_always_is_checked_and_set_on_every_master() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let set = |server: &window_testkit::RedisServer, value: &str| {
        server
            .command(&["CONFIG", "SET", "appendonly", value])
            .unwrap();
    };
    // Two of three keep an append-only file: still refused.
    for master in &cluster.masters()[..2] {
        set(master, "yes");
    }
    match window_store::require_fsync_always(&cluster.url()) {
        Err(window_store::StoreError::Backend(text)) => {
            assert!(text.contains("--appendonly yes"), "{text}")
        }
        other => panic!("a master without appendonly was let through: {other:?}"),
    }
    set(&cluster.masters()[2], "yes");
    window_store::require_fsync_always(&cluster.url()).unwrap();
    for master in cluster.masters() {
        assert_eq!(master.setting("appendfsync").unwrap(), "always");
    }
}
