//! The Redis lease against a real `redis-server` (see `window_testkit::RedisServer`):
//! compare-and-set acquisition, renewal and release only by the holder, expiry by Redis's clock,
//! and the fence an acquisition raises before the new holder has written anything.

use std::time::Duration;

use window_core::{Engine, EngineConfig, Event, EventId, SizeMs, Timestamp};
use window_store::{Batch, RedisLease, RedisStore, StoreError, WindowStore, open_engine};
use window_testkit::{RedisServer, wait_until};

const TTL: Duration = Duration::from_secs(30);

fn lease(server: &RedisServer, namespace: &str) -> RedisLease {
    RedisLease::connect(&server.url(), namespace).expect("connect to redis")
}

#[test]
fn one_contender_wins_a_free_lease_and_the_epoch_rises_by_one() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    let (mut a, mut b) = (lease(&server, &ns), lease(&server, &ns));
    let seen_a = a.observe().unwrap();
    let seen_b = b.observe().unwrap();
    assert_eq!(seen_a.holding, None);
    assert_eq!(seen_a.epoch, 0);
    // Both decided on the same free lease: the compare-and-set lets exactly one in.
    assert!(a.try_acquire(&seen_a, "a:1", 1, TTL).unwrap());
    assert!(!b.try_acquire(&seen_b, "b:1", 1, TTL).unwrap());
    let now = b.observe().unwrap();
    let holding = now.holding.clone().expect("held");
    assert_eq!((holding.holder.as_str(), holding.epoch), ("a:1", 1));
    assert!(holding.remaining > Duration::from_secs(25), "{holding:?}");
    assert_eq!(now.epoch, 1);
    // An epoch that does not rise is refused before Redis is asked.
    assert!(matches!(
        b.try_acquire(&now, "b:1", 1, TTL),
        Err(StoreError::InvalidBatch(_))
    ));
}

#[test]
fn only_the_holder_renews_or_releases_and_a_release_frees_the_lease() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    let mut a = lease(&server, &ns);
    let seen = a.observe().unwrap();
    assert!(
        a.try_acquire(&seen, "a:1", 1, Duration::from_secs(2))
            .unwrap()
    );
    assert!(a.renew("a:1", 1, TTL).unwrap());
    assert!(a.observe().unwrap().holding.unwrap().remaining > Duration::from_secs(25));
    // The right holder with the wrong epoch is someone else: an older holding of the same id.
    assert!(!a.renew("a:1", 0, TTL).unwrap());
    assert!(!a.renew("b:1", 1, TTL).unwrap());
    assert!(!a.release("b:1", 1).unwrap());
    assert!(a.release("a:1", 1).unwrap());
    let after = a.observe().unwrap();
    assert_eq!(after.holding, None);
    // The epoch outlives the lease, so the next holder still gets a higher one.
    assert_eq!(after.epoch, 1);
    assert!(a.try_acquire(&after, "b:1", 2, TTL).unwrap());
}

#[test]
fn redis_removes_a_lease_that_is_not_renewed() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    let mut a = lease(&server, &ns);
    let seen = a.observe().unwrap();
    assert!(
        a.try_acquire(&seen, "a:1", 1, Duration::from_millis(100))
            .unwrap()
    );
    // Bounded wait: ten times the ttl.
    wait_until(
        Duration::from_secs(1),
        "the lease gone after its ttl",
        || a.observe().unwrap().holding.is_none(),
    )
    .expect("the lease outlived its ttl");
    assert!(
        !a.renew("a:1", 1, TTL).unwrap(),
        "an expired lease is not renewed"
    );
}

#[test]
fn a_changed_lease_or_epoch_defeats_a_stale_decision() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    let mut a = lease(&server, &ns);
    let stale = a.observe().unwrap();
    assert!(a.try_acquire(&stale, "a:1", 1, TTL).unwrap());
    assert!(a.release("a:1", 1).unwrap());
    // The lease is free again, as `stale` saw it, but the epoch moved on: refused.
    assert!(!a.try_acquire(&stale, "b:1", 2, TTL).unwrap());
    // A batch that raises the epoch also defeats a decision taken before it.
    let before_batch = a.observe().unwrap();
    let mut store = RedisStore::connect(&server.url(), &ns).unwrap();
    store.backend_mut().set_epoch(5);
    store.commit(&Batch::default()).unwrap();
    assert!(!a.try_acquire(&before_batch, "b:1", 2, TTL).unwrap());
    let now = a.observe().unwrap();
    assert_eq!(now.epoch, 5);
    assert!(a.try_acquire(&now, "b:1", 6, TTL).unwrap());
}

/// The fence rises with the acquisition itself: the old holder's next batch is refused even
/// though the new holder has not written anything yet, so the new holder's recovery cannot miss
/// a late write of the old one.
#[test]
fn an_acquisition_fences_the_old_holder_before_the_new_one_writes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    let mut lease_a = lease(&server, &ns);
    let seen = lease_a.observe().unwrap();
    assert!(
        lease_a
            .try_acquire(&seen, "a:1", 1, Duration::from_millis(50))
            .unwrap()
    );
    let mut old = RedisStore::connect(&server.url(), &ns).unwrap();
    old.backend_mut().set_epoch(1);
    let (mut engine, _) = open_engine(&mut old, EngineConfig::default()).unwrap();
    ingest(&mut engine, 1);
    commit(&mut engine, &mut old).unwrap();

    // The old holder is paused past its ttl; a contender observes the lease free and takes it.
    std::thread::sleep(Duration::from_millis(120));
    let mut lease_b = lease(&server, &ns);
    let seen = lease_b.observe().unwrap();
    assert_eq!(seen.holding, None, "expired");
    assert!(lease_b.try_acquire(&seen, "b:1", 2, TTL).unwrap());

    // The old holder wakes and writes: refused whole.
    ingest(&mut engine, 2);
    let refused = commit(&mut engine, &mut old);
    assert!(
        matches!(
            refused,
            Err(StoreError::Fenced {
                epoch: 1,
                highest: 2
            })
        ),
        "{refused:?}"
    );
    // The new holder recovers exactly what the old one wrote before the takeover.
    let mut new = RedisStore::connect(&server.url(), &ns).unwrap();
    new.backend_mut().set_epoch(2);
    let recovered = new.recover().unwrap().expect("state");
    assert_eq!(recovered.snapshot.windows.len(), 1);
    assert_eq!(recovered.snapshot.windows[0].ids, vec![EventId::Int(1)]);
}

fn ingest(engine: &mut Engine, id: i64) {
    let event = Event {
        id: EventId::Int(id),
        ts: Timestamp::from_millis(5),
        key: None,
        value: None,
        payload: None,
    };
    engine
        .handle_events(Timestamp::EPOCH, SizeMs::new(10).unwrap(), vec![event])
        .unwrap();
}

fn commit(engine: &mut Engine, store: &mut dyn WindowStore) -> Result<(), StoreError> {
    store.commit(&Batch {
        dirty: engine.take_dirty(),
        fired: Vec::new(),
        requests: Vec::new(),
        groups: Vec::new(),
        trim_log_below: None,
    })
}

/// A killed connection (or a restarted Redis) costs one failed call: the next one reconnects.
#[test]
fn a_lost_connection_is_reopened_on_the_next_call() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    let mut a = lease(&server, &ns);
    let seen = a.observe().unwrap();
    assert!(a.try_acquire(&seen, "a:1", 1, TTL).unwrap());
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut server.client())
        .unwrap();
    assert!(
        a.renew("a:1", 1, TTL).is_err(),
        "the killed connection fails once"
    );
    assert!(a.renew("a:1", 1, TTL).unwrap(), "then a new one works");
    assert_eq!(a.observe().unwrap().holding.unwrap().epoch, 1);
}

fn lost_reason<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::NamespaceLost { reason, .. }) => reason,
        other => panic!("expected NamespaceLost, got {other:?}"),
    }
}

/// FLUSHALL under a holder and a follower: whoever knew the namespace's identity is refused
/// (observing, renewing, acquiring) and writes nothing; a process that never saw it creates the
/// namespace afresh, with another identity, which the others then see as a replaced namespace.
#[test]
fn a_wiped_namespace_refuses_the_lease_to_those_that_knew_it() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    let (mut holder, mut follower) = (lease(&server, &ns), lease(&server, &ns));
    let seen = holder.observe().unwrap();
    assert_eq!((seen.identity.clone(), holder.identity()), (None, None));
    assert!(holder.try_acquire(&seen, "a:1", 1, TTL).unwrap());
    let identity = holder
        .identity()
        .expect("created with the lease")
        .to_owned();
    let before = follower.observe().unwrap();
    assert_eq!(before.identity.as_deref(), Some(identity.as_str()));
    assert_eq!(follower.identity(), Some(identity.as_str()));

    server.command(&["FLUSHALL"]).unwrap();
    let reason = lost_reason(holder.renew("a:1", 1, TTL));
    assert!(
        reason.contains("identity") && reason.contains("missing"),
        "{reason}"
    );
    lost_reason(holder.observe());
    lost_reason(follower.observe());
    // The follower's last view still showed the old holding: taking over at the next epoch is
    // refused too, and writes nothing (no lease at the same epoch as the live holder's).
    let reason = lost_reason(follower.try_acquire(&before, "b:1", 2, TTL));
    assert!(reason.contains(&identity), "{reason}");
    assert_eq!(
        server.command(&["KEYS", "*"]).unwrap(),
        Vec::<String>::new()
    );

    // A process that never saw the namespace makes it anew.
    let mut newcomer = lease(&server, &ns);
    let fresh = newcomer.observe().unwrap();
    assert_eq!((fresh.epoch, fresh.identity.clone()), (0, None));
    assert!(newcomer.try_acquire(&fresh, "c:1", 1, TTL).unwrap());
    let new_identity = newcomer.identity().unwrap().to_owned();
    assert_ne!(new_identity, identity);
    let reason = lost_reason(follower.observe());
    assert!(
        reason.contains(&new_identity) && reason.contains(&identity),
        "{reason}"
    );
}

/// A holder whose fencing epoch went back (a replica promoted without the writes that raised
/// it) or disappeared cannot renew.
#[test]
fn a_holder_cannot_renew_when_the_epoch_went_back_or_is_gone() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ns = server.fresh_namespace();
    let mut holder = lease(&server, &ns);
    let seen = holder.observe().unwrap();
    assert!(holder.try_acquire(&seen, "a:1", 5, TTL).unwrap());
    let epoch_key = format!("{{wn:{ns}}}:epoch");
    server.command(&["SET", &epoch_key, "4"]).unwrap();
    let reason = lost_reason(holder.renew("a:1", 5, TTL));
    assert!(
        reason.contains("went back from 5") && reason.contains("to 4"),
        "{reason}"
    );
    server.command(&["DEL", &epoch_key]).unwrap();
    let reason = lost_reason(holder.renew("a:1", 5, TTL));
    assert!(
        reason.contains("epoch") && reason.contains("missing"),
        "{reason}"
    );
}
