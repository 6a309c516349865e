//! The members of a partitioned namespace against a real `redis-server` (see
//! `window_testkit::RedisServer`): the number of partitions is recorded once, an unpartitioned
//! store counts as one partition, announcements expire by Redis's clock, and a node that leaves
//! is gone at once.

use std::time::Duration;

use window_store::{Batch, RecordedPartitions, RedisMembership, RedisStore, WindowStore};
use window_testkit::RedisServer;

fn members(server: &RedisServer, namespace: &str) -> RedisMembership {
    RedisMembership::connect(&server.url(), namespace).expect("connect to redis")
}

/// The key recording the partitions of namespace `ns`.
fn record_key(ns: &str) -> String {
    format!("{{wn:{ns}}}:partitions")
}

/// A record of `count` partitions in the plain layout.
fn plain(count: u32) -> RecordedPartitions {
    RecordedPartitions {
        count,
        spread: false,
    }
}

/// A record of `count` partitions in the spread layout.
fn spread(count: u32) -> RecordedPartitions {
    RecordedPartitions {
        count,
        spread: true,
    }
}

#[test]
fn the_first_number_of_partitions_is_the_one_kept() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    let (mut a, mut b) = (members(&server, &ns), members(&server, &ns));
    assert_eq!(a.claim_partitions(4, true).unwrap(), spread(4));
    assert_eq!(
        b.claim_partitions(2, true).unwrap(),
        spread(4),
        "the recorded number wins"
    );
    assert_eq!(b.claim_partitions(4, true).unwrap(), spread(4));
    assert_eq!(
        server.command(&["GET", &record_key(&ns)]).unwrap(),
        ["4 spread"]
    );
}

#[test]
fn the_plain_layout_is_recorded_when_asked_and_stores_in_use_are_found() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    let mut a = members(&server, &ns);
    let namespaces = [format!("{ns}.0"), format!("{ns}.1")];
    assert!(!a.any_in_use(&namespaces).unwrap(), "nothing written yet");
    // A partition's store written (its fencing epoch exists): the namespace is in use.
    let mut store = RedisStore::connect(&server.url(), &namespaces[1]).unwrap();
    store.backend_mut().set_epoch(1);
    store.commit(&Batch::default()).unwrap();
    assert!(a.any_in_use(&namespaces).unwrap());
    assert!(!a.any_in_use(&[format!("{ns}.2")]).unwrap());
    assert_eq!(a.claim_partitions(2, false).unwrap(), plain(2));
    assert_eq!(
        a.claim_partitions(2, true).unwrap(),
        plain(2),
        "what is recorded stays"
    );
}

#[test]
fn a_namespace_recorded_by_an_earlier_build_keeps_its_plain_layout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    // What builds before the spread layout recorded: the bare number.
    server.command(&["SET", &record_key(&ns), "4"]).unwrap();
    assert_eq!(
        members(&server, &ns).claim_partitions(4, true).unwrap(),
        plain(4)
    );
    // One partition (no partitions) records the bare number, as before.
    let other = server.fresh_namespace();
    assert_eq!(
        members(&server, &other).claim_partitions(1, true).unwrap(),
        plain(1)
    );
    // A record that is neither is an error naming the key, not a guess.
    server
        .command(&["SET", &record_key(&other), "4 sideways"])
        .unwrap();
    let error = members(&server, &other)
        .claim_partitions(4, true)
        .unwrap_err();
    assert!(
        error.to_string().contains("partitions"),
        "the error names the record: {error}"
    );
}

#[test]
fn a_namespace_with_an_unpartitioned_store_counts_as_one_partition() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    // A store written before any number was recorded (an older release, or --partitions 1).
    let mut store = RedisStore::connect(&server.url(), &ns).unwrap();
    store.backend_mut().set_epoch(1);
    store.commit(&Batch::default()).unwrap();
    assert_eq!(
        members(&server, &ns).claim_partitions(4, true).unwrap(),
        plain(1)
    );
}

#[test]
fn announcements_expire_by_redis_time_and_leaving_is_at_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    let (mut a, mut b) = (members(&server, &ns), members(&server, &ns));
    assert_eq!(a.announce("a:1", Duration::from_secs(30)).unwrap(), 1);
    assert_eq!(b.announce("b:1", Duration::from_millis(200)).unwrap(), 2);
    // Announcing again counts a node once.
    assert_eq!(a.announce("a:1", Duration::from_secs(30)).unwrap(), 2);
    // b stops announcing: once its time has passed it is no longer counted.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(a.announce("a:1", Duration::from_secs(30)).unwrap(), 1);
    assert_eq!(b.announce("b:1", Duration::from_secs(30)).unwrap(), 2);
    b.leave("b:1").unwrap();
    assert_eq!(a.announce("a:1", Duration::from_secs(30)).unwrap(), 1);
}
