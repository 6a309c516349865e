//! The members of a partitioned namespace against a real `redis-server` (see
//! `window_testkit::RedisServer`): the number of partitions is recorded once, an unpartitioned
//! store counts as one partition, announcements expire by Redis's clock, and a node that leaves
//! is gone at once.

use std::time::Duration;

use window_store::{Batch, RedisMembership, RedisStore, WindowStore};
use window_testkit::RedisServer;

fn members(server: &RedisServer, namespace: &str) -> RedisMembership {
    RedisMembership::connect(&server.url(), namespace).expect("connect to redis")
}

#[test]
fn the_first_number_of_partitions_is_the_one_kept() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    let (mut a, mut b) = (members(&server, &ns), members(&server, &ns));
    assert_eq!(a.claim_partitions(4).unwrap(), 4);
    assert_eq!(
        b.claim_partitions(2).unwrap(),
        4,
        "the recorded number wins"
    );
    assert_eq!(b.claim_partitions(4).unwrap(), 4);
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
    assert_eq!(members(&server, &ns).claim_partitions(4).unwrap(), 1);
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
