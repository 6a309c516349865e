//! The Redis backend against a real `redis-server` (see `window_testkit::RedisServer`): it
//! behaves as the memory backend does on any sequence of batches, fences old epochs, deletes
//! exactly a prefix, survives a lost script cache, and explains what went wrong when it cannot
//! connect.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use window_core::{
    Engine, EngineConfig, Event, EventId, SizeMs, Timestamp, WindowKey, WindowSelector,
};
use window_store::{
    Batch, KvBackend, KvOp, MemoryBackend, OutputRecord, RedisBackend, RedisStore, StoreError,
    WindowStore, open_engine,
};
use window_testkit::RedisServer;

fn backend(server: &RedisServer, namespace: &str) -> RedisBackend {
    RedisBackend::connect(&server.url(), namespace).expect("connect to redis")
}

fn put(key: &[u8], value: &[u8]) -> KvOp {
    KvOp::Put(key.to_vec(), value.to_vec())
}

fn delete(prefix: &[u8]) -> KvOp {
    KvOp::DeletePrefix(prefix.to_vec())
}

fn all(backend: &impl KvBackend) -> Vec<(Vec<u8>, Vec<u8>)> {
    backend.scan(b"", b"", usize::MAX).expect("scan")
}

fn keys(backend: &impl KvBackend) -> Vec<Vec<u8>> {
    all(backend).into_iter().map(|(k, _)| k).collect()
}

// ---- the same answers as the memory backend ----

/// Keys over a few bytes that stress the range bounds (0x00, 0xff, and bytes next to each
/// other), few enough that keys often extend one another, sometimes with a run of 0xff and a
/// byte after it (which a bound of "prefix + 0xff..." would miss).
fn key() -> impl Strategy<Value = Vec<u8>> {
    let head = prop::collection::vec(
        prop::sample::select(vec![0x00u8, b'a', b'b', 0xfe, 0xff]),
        0..4,
    );
    let run = prop_oneof![3 => Just(0usize), 1 => 1usize..6];
    (
        head,
        run,
        prop::option::of(prop::sample::select(vec![0x00u8, 0x01, 0xff])),
    )
        .prop_map(|(mut key, run, tail)| {
            if run > 0 {
                key.extend(std::iter::repeat_n(0xff, run));
                key.extend(tail);
            }
            key
        })
}

fn kv_op() -> impl Strategy<Value = KvOp> {
    let short = prop::collection::vec(prop::sample::select(vec![b'a', 0xfe, 0xff]), 1..3);
    prop_oneof![
        4 => (key(), prop::collection::vec(any::<u8>(), 0..4)).prop_map(|(k, v)| KvOp::Put(k, v)),
        1 => key().prop_map(KvOp::DeletePrefix),
        1 => short.prop_map(KvOp::DeletePrefix),
        1 => key().prop_map(KvOp::Delete),
    ]
}

/// A scan: a prefix, a start (the prefix and more), a limit.
fn query() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, usize)> {
    (key(), key(), 0usize..5).prop_map(|(prefix, more, limit)| {
        let start = [prefix.as_slice(), &more].concat();
        (prefix, start, limit)
    })
}

#[test]
fn the_backend_answers_as_the_memory_backend_does() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let batches = prop::collection::vec(
        (prop::collection::vec(kv_op(), 1..12), query(), key()),
        1..8,
    );
    runner
        .run(&batches, |batches| {
            let mut redis = backend(&server, &server.fresh_namespace());
            let mut memory = MemoryBackend::default();
            for (ops, (prefix, start, limit), probe) in batches {
                redis.apply(ops.clone()).expect("apply");
                memory.apply(ops).unwrap();
                prop_assert_eq!(all(&redis), all(&memory));
                prop_assert_eq!(
                    redis.scan(&prefix, &start, limit).expect("scan"),
                    memory.scan(&prefix, &start, limit).unwrap()
                );
                prop_assert_eq!(redis.get(&probe).expect("get"), memory.get(&probe).unwrap());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn scans_page_through_more_keys_than_one_script_call_returns() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut redis = backend(&server, "paging");
    let mut memory = MemoryBackend::default();
    let ops: Vec<KvOp> = (0u32..2500)
        .map(|i| {
            put(
                &[b"k".as_slice(), &i.to_be_bytes()].concat(),
                &i.to_le_bytes(),
            )
        })
        .chain([put(b"j", b"before"), put(b"l", b"after")])
        .collect();
    redis.apply(ops.clone()).unwrap();
    memory.apply(ops).unwrap();
    assert_eq!(all(&redis).len(), 2502);
    assert_eq!(all(&redis), all(&memory));
    let start = [b"k".as_slice(), &100u32.to_be_bytes()].concat();
    for limit in [0, 1, 1024, 1025, 1500, 2400, 5000] {
        assert_eq!(
            redis.scan(b"k", &start, limit).unwrap(),
            memory.scan(b"k", &start, limit).unwrap(),
            "limit {limit}"
        );
    }
    // One deletion removes more members than the script removes per slice.
    redis.apply(vec![delete(b"k")]).unwrap();
    assert_eq!(keys(&redis), vec![b"j".to_vec(), b"l".to_vec()]);
}

// ---- prefixes that share bytes ----

#[test]
fn prefix_deletion_spares_keys_that_only_share_bytes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut redis = backend(&server, "prefixes");
    let every: [&[u8]; 13] = [
        b"",
        b"a",
        b"ab",
        b"a\xff",
        b"a\xff\x00",
        b"a\xff\xff",
        b"a\xff\xff\x01",
        b"a\xff\xff\xff\xff\x01",
        b"b",
        b"\xfe\xff",
        b"\xff",
        b"\xff\x01",
        b"\xff\xff\xff",
    ];
    redis
        .apply(every.iter().map(|k| put(k, b"v")).collect())
        .unwrap();
    let left = |redis: &RedisBackend| keys(redis);

    // A prefix ending in 0xff: its range takes every longer key, however many 0xff bytes follow
    // (a bound of "[a\xff\xff" would miss "a\xff\xff\x01"), and does not run into "b".
    redis.apply(vec![delete(b"a\xff")]).unwrap();
    let expect: Vec<&[u8]> = vec![
        b"",
        b"a",
        b"ab",
        b"b",
        b"\xfe\xff",
        b"\xff",
        b"\xff\x01",
        b"\xff\xff\xff",
    ];
    assert_eq!(left(&redis), expect);

    // "ab" takes "ab" and leaves "a", a prefix of it.
    redis.apply(vec![delete(b"ab")]).unwrap();
    let expect: Vec<&[u8]> = vec![
        b"",
        b"a",
        b"b",
        b"\xfe\xff",
        b"\xff",
        b"\xff\x01",
        b"\xff\xff\xff",
    ];
    assert_eq!(left(&redis), expect);

    // An all-0xff prefix has no upper bound; "\xfe\xff" sorts below it and stays.
    redis.apply(vec![delete(b"\xff")]).unwrap();
    let expect: Vec<&[u8]> = vec![b"", b"a", b"b", b"\xfe\xff"];
    assert_eq!(left(&redis), expect);

    // Put after delete in one batch: order within a batch holds.
    redis
        .apply(vec![delete(b"a"), put(b"a2", b"new"), delete(b"b")])
        .unwrap();
    assert_eq!(
        all(&redis),
        vec![
            (b"".to_vec(), b"v".to_vec()),
            (b"a2".to_vec(), b"new".to_vec()),
            (b"\xfe\xff".to_vec(), b"v".to_vec()),
        ]
    );

    // The empty prefix is everything.
    redis.apply(vec![delete(b"")]).unwrap();
    assert!(all(&redis).is_empty());
}

#[test]
fn closing_window_a_leaves_window_ab_open() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let namespace = "windows-a-ab";
    let mut store = RedisStore::connect(&server.url(), namespace).unwrap();
    let (mut engine, mut next_seq) = open_engine(&mut store, EngineConfig::default()).unwrap();
    let size = SizeMs::new(10).unwrap();
    let events = ["a", "ab", "a", "ab"]
        .iter()
        .enumerate()
        .map(|(i, &key)| Event {
            id: EventId::Int(i as i64),
            ts: Timestamp::from_millis(5),
            key: Some(key),
            value: None,
            payload: None,
        })
        .collect();
    engine
        .handle_events(Timestamp::EPOCH, size, events)
        .unwrap();
    commit(&mut engine, &mut store, &mut next_seq, Vec::new()).unwrap();
    let closed = engine
        .close(WindowSelector {
            start: Timestamp::EPOCH,
            size: None,
            key: Some("a"),
        })
        .unwrap();
    commit(&mut engine, &mut store, &mut next_seq, vec![closed]).unwrap();
    drop(store);

    let mut reopened = RedisStore::connect(&server.url(), namespace).unwrap();
    let recovered = reopened.recover().unwrap().unwrap();
    let open: Vec<&WindowKey> = recovered
        .snapshot
        .windows
        .iter()
        .map(|w| &w.window)
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].key.as_deref(), Some("ab"));
    assert_eq!(recovered.snapshot.windows[0].ids.len(), 2);
    assert_eq!(recovered.snapshot, engine.snapshot());
    let log = reopened.read_output(0, 10).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].window.window.key.as_deref(), Some("a"));
}

// ---- fencing ----

#[test]
fn a_batch_from_a_lower_epoch_is_refused_and_changes_nothing() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut holder = backend(&server, "fenced");
    holder.set_epoch(5);
    holder
        .apply(vec![put(b"a", b"1"), put(b"ab", b"2")])
        .unwrap();
    let before = all(&holder);

    let mut stale = backend(&server, "fenced");
    stale.set_epoch(4);
    let refused = stale.apply(vec![put(b"a", b"stale"), delete(b"ab"), put(b"new", b"x")]);
    match refused {
        Err(StoreError::Fenced { epoch, highest }) => assert_eq!((epoch, highest), (4, 5)),
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(all(&holder), before);
    assert_eq!(holder.highest_epoch().unwrap(), Some(5));

    // A backend that never set an epoch writes at epoch 0: fenced too.
    let mut unfenced = backend(&server, "fenced");
    assert_eq!(unfenced.epoch(), None);
    assert!(matches!(
        unfenced.apply(vec![delete(b"")]),
        Err(StoreError::Fenced {
            epoch: 0,
            highest: 5
        })
    ));
    assert_eq!(all(&holder), before);
    let message = stale
        .apply(vec![put(b"a", b"stale")])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("epoch 4") && message.contains("epoch 5"),
        "{message}"
    );
}

#[test]
fn a_batch_at_a_higher_epoch_raises_the_fence() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut first = backend(&server, "raise");
    assert_eq!(first.highest_epoch().unwrap(), None);
    first.set_epoch(5);
    first.apply(vec![put(b"k", b"1")]).unwrap();
    // The same epoch again: the holder writes many batches.
    first.apply(vec![put(b"k", b"2")]).unwrap();
    assert_eq!(first.highest_epoch().unwrap(), Some(5));

    let mut second = backend(&server, "raise");
    second.set_epoch(6);
    second.apply(vec![put(b"k", b"3")]).unwrap();
    assert_eq!(second.highest_epoch().unwrap(), Some(6));
    assert!(matches!(
        first.apply(vec![put(b"k", b"late")]),
        Err(StoreError::Fenced {
            epoch: 5,
            highest: 6
        })
    ));
    assert_eq!(first.get(b"k").unwrap(), Some(b"3".to_vec()));

    // Exact beyond 2^53, where a Lua number (a double) could not tell the two apart.
    let big = 1u64 << 53;
    second.set_epoch(big + 1);
    second.apply(vec![put(b"k", b"4")]).unwrap();
    first.set_epoch(big);
    assert!(matches!(
        first.apply(vec![put(b"k", b"late")]),
        Err(StoreError::Fenced { epoch, highest }) if epoch == big && highest == big + 1
    ));
    first.set_epoch(u64::MAX);
    first.apply(vec![put(b"k", b"5")]).unwrap();
    assert_eq!(first.highest_epoch().unwrap(), Some(u64::MAX));

    // Namespaces do not share a fence.
    let mut other = backend(&server, "raise-other");
    other.set_epoch(1);
    other.apply(vec![put(b"k", b"1")]).unwrap();
    assert_eq!(other.highest_epoch().unwrap(), Some(1));
    assert_eq!(all(&other), vec![(b"k".to_vec(), b"1".to_vec())]);
}

#[test]
fn an_old_holder_cannot_fire_after_a_takeover() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let namespace = "takeover";
    let size = SizeMs::new(10).unwrap();
    let event = |id: i64| Event {
        id: EventId::Int(id),
        ts: Timestamp::from_millis(5),
        key: None,
        value: None,
        payload: None,
    };
    // The old holder, epoch 1, commits an open window.
    let mut old = RedisStore::connect(&server.url(), namespace).unwrap();
    old.backend_mut().set_epoch(1);
    let (mut old_engine, mut old_seq) = open_engine(&mut old, EngineConfig::default()).unwrap();
    old_engine
        .handle_events(Timestamp::EPOCH, size, vec![event(1)])
        .unwrap();
    commit(&mut old_engine, &mut old, &mut old_seq, Vec::new()).unwrap();

    // The new holder, epoch 2, recovers it, adds an event and writes once.
    let mut new = RedisStore::connect(&server.url(), namespace).unwrap();
    new.backend_mut().set_epoch(2);
    let (mut new_engine, mut new_seq) = open_engine(&mut new, EngineConfig::default()).unwrap();
    new_engine
        .handle_events(Timestamp::EPOCH, size, vec![event(2)])
        .unwrap();
    commit(&mut new_engine, &mut new, &mut new_seq, Vec::new()).unwrap();

    // The old holder wakes up and fires the window it remembers: refused, nothing logged.
    let fired = old_engine.flush(None);
    assert_eq!(fired.len(), 1);
    let refused = commit(&mut old_engine, &mut old, &mut old_seq, fired);
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
    let mut check = RedisStore::connect(&server.url(), namespace).unwrap();
    assert!(check.read_output(0, 10).unwrap().is_empty());
    let recovered = check.recover().unwrap().unwrap();
    assert_eq!(recovered.snapshot, new_engine.snapshot());
    assert_eq!(recovered.snapshot.windows[0].ids.len(), 2);
}

// ---- the script cache, the layout, corruption, connection errors ----

#[test]
fn a_lost_script_cache_falls_back_to_eval() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut redis = backend(&server, "noscript");
    redis.apply(vec![put(b"a", b"1")]).unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut server.client())
        .unwrap();
    redis.apply(vec![put(b"b", b"2")]).unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut server.client())
        .unwrap();
    assert_eq!(
        all(&redis),
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec())
        ]
    );
}

#[test]
fn the_keys_are_hash_tagged_by_namespace() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut redis = backend(&server, "layout");
    redis.set_epoch(3);
    redis
        .apply(vec![put(b"x\x00y", b"1"), put(b"w", b"2")])
        .unwrap();
    let mut client = server.client();
    let mut names: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut client).unwrap();
    names.sort();
    assert_eq!(
        names,
        [
            "{wn:layout}:epoch",
            "{wn:layout}:id",
            "{wn:layout}:keys",
            "{wn:layout}:vals"
        ]
    );
    let members: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
        .arg("{wn:layout}:keys")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut client)
        .unwrap();
    assert_eq!(
        members,
        vec![(b"w".to_vec(), 0.0), (b"x\x00y".to_vec(), 0.0)]
    );
    let epoch: String = redis::cmd("GET")
        .arg("{wn:layout}:epoch")
        .query(&mut client)
        .unwrap();
    assert_eq!(epoch, "3");
}

#[test]
fn a_listed_key_without_a_value_is_corrupt_and_named() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut redis = backend(&server, "corrupt");
    redis.apply(vec![put(b"a", b"1"), put(b"b", b"2")]).unwrap();
    let _: () = redis::cmd("HDEL")
        .arg("{wn:corrupt}:vals")
        .arg("b")
        .query(&mut server.client())
        .unwrap();
    match redis.scan(b"", b"", 10) {
        Err(StoreError::Corrupt { key, reason }) => {
            assert_eq!(key, "62");
            assert!(reason.contains("{wn:corrupt}:vals"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn connection_errors_name_the_server_and_say_what_to_do() {
    // None of these needs a server.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("redis://127.0.0.1:{port}/");
    let message = RedisStore::connect(&url, "ns").unwrap_err().to_string();
    assert!(
        message.contains(&format!("cannot connect to Redis at {url}"))
            && message.contains("redis-server is running"),
        "{message}"
    );

    let secret = format!("redis://:hunter2@127.0.0.1:{port}/");
    let message = RedisStore::connect(&secret, "ns").unwrap_err().to_string();
    assert!(
        !message.contains("hunter2") && message.contains("redis://***@127.0.0.1"),
        "{message}"
    );

    let message = RedisStore::connect("http://127.0.0.1/", "ns")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("invalid Redis URL http://127.0.0.1/")
            && message.contains("redis://HOST:PORT/"),
        "{message}"
    );

    for namespace in ["", "a{b", "a}b"] {
        let message = RedisStore::connect(&url, namespace)
            .unwrap_err()
            .to_string();
        assert!(message.contains("invalid Redis namespace"), "{message}");
    }
}

/// Commits what the engine did; `extra` are windows fired by `close` or `flush`.
fn commit(
    engine: &mut Engine,
    store: &mut dyn WindowStore,
    next_seq: &mut u64,
    extra: Vec<window_core::ClosedWindow>,
) -> Result<(), StoreError> {
    let mut seq = *next_seq;
    let fired: Vec<OutputRecord> = extra
        .into_iter()
        .chain(std::iter::from_fn(|| engine.poll_closed()))
        .map(|window| {
            seq += 1;
            OutputRecord {
                seq: seq - 1,
                epoch: 1,
                window,
            }
        })
        .collect();
    store.commit(&Batch {
        dirty: engine.take_dirty(),
        fired,
        requests: Vec::new(),
        groups: Vec::new(),
        trim_log_below: None,
    })?;
    store.sync()?;
    *next_seq = seq;
    Ok(())
}

/// The output log is a Redis Stream: other clients read it with `XRANGE`/`XREAD`, one entry per
/// fired window with readable fields; and it is append-only, so a second writer that believes it
/// owns the same sequence number is refused whole.
#[test]
fn the_output_log_is_a_stream_other_clients_can_read() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let namespace = server.fresh_namespace();
    let size = SizeMs::new(10).unwrap();
    let event = |id: i64, key: Option<&'static str>| Event {
        id: EventId::Int(id),
        ts: Timestamp::from_millis(25),
        key,
        value: None,
        payload: None,
    };
    let mut store = RedisStore::connect(&server.url(), &namespace).unwrap();
    let (mut engine, mut seq) = open_engine(&mut store, EngineConfig::default()).unwrap();
    engine
        .handle_events(
            Timestamp::EPOCH,
            size,
            vec![event(1, Some("k")), event(2, Some("k"))],
        )
        .unwrap();
    commit(&mut engine, &mut store, &mut seq, Vec::new()).unwrap();
    // The twin recovers now, before the fire: it believes record 0 is still free.
    let mut twin = RedisStore::connect(&server.url(), &namespace).unwrap();
    let (mut twin_engine, mut twin_seq) = open_engine(&mut twin, EngineConfig::default()).unwrap();
    let fired = engine.flush(None);
    commit(&mut engine, &mut store, &mut seq, fired).unwrap();
    // The Stream gets the record when the journal is compacted.
    store.compact().unwrap();

    let mut client = server.client();
    type Entry = (String, Vec<(String, Vec<u8>)>);
    let entries: Vec<Entry> = redis::cmd("XRANGE")
        .arg(format!("{{wn:{namespace}}}:log"))
        .arg("-")
        .arg("+")
        .query(&mut client)
        .unwrap();
    assert_eq!(entries.len(), 1);
    let (id, fields) = &entries[0];
    assert_eq!(id, "0-1");
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(field("seq").as_deref(), Some("0"));
    assert_eq!(field("reason").as_deref(), Some("flush"));
    assert_eq!(field("start_ms").as_deref(), Some("20"));
    assert_eq!(field("end_ms").as_deref(), Some("30"));
    assert_eq!(field("count").as_deref(), Some("2"));
    assert_eq!(field("key").as_deref(), Some("k"));
    assert!(field("record").is_some());

    twin_engine
        .handle_events(Timestamp::EPOCH, size, vec![event(3, None)])
        .unwrap();
    let twin_fired = twin_engine.flush(None);
    // Refused at once, whole: the journal's head moved since the twin read it.
    let refused = commit(&mut twin_engine, &mut twin, &mut twin_seq, twin_fired);
    match refused {
        Err(StoreError::InvalidBatch(text)) => assert!(text.contains("changed since"), "{text}"),
        other => panic!("a second record 0 was not refused: {other:?}"),
    }
    drop(twin);
    let mut reader = RedisStore::connect(&server.url(), &namespace).unwrap();
    let log = reader.read_output(0, 10).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].window.ids, vec![EventId::Int(1), EventId::Int(2)]);
    // And the namespace still recovers: the refused batch left nothing behind.
    let recovered = reader.recover().unwrap().unwrap();
    assert_eq!(recovered.next_seq, 1);
    assert_eq!(recovered.snapshot, engine.snapshot());
}

/// Batches a holder journaled but never compacted (it died first) are read by recovery without
/// writing anything (a reader without the holder's epoch recovers them), and compacted by the
/// next holder's compactor, in its first round.
#[test]
fn journaled_batches_are_recovered_read_only_and_compacted_by_the_next_holder() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let namespace = server.fresh_namespace();
    let size = SizeMs::new(10).unwrap();
    let event = |id: i64, ts: i64| Event {
        id: EventId::Int(id),
        ts: Timestamp::from_millis(ts),
        key: Some("k"),
        value: None,
        payload: None,
    };
    let never = window_store::CompactionPolicy {
        delay: std::time::Duration::from_secs(3600),
        round_bytes: usize::MAX,
        ..window_store::CompactionPolicy::default()
    };
    let journal = |server: &RedisServer| {
        let keys: Vec<Vec<u8>> = redis::cmd("ZRANGEBYLEX")
            .arg(format!("{{wn:{namespace}}}:keys"))
            .arg("[J")
            .arg("(K")
            .query(&mut server.client())
            .unwrap();
        keys.len()
    };
    // The holder, epoch 1: three batches, the second fires a window; its compactor waits an
    // hour, and the holder is never dropped (as if killed).
    let mut holder = RedisStore::connect_with(&server.url(), &namespace, never).unwrap();
    holder.backend_mut().set_epoch(1);
    let (mut engine, mut seq) = open_engine(&mut holder, EngineConfig::default()).unwrap();
    engine
        .handle_events(Timestamp::EPOCH, size, vec![event(1, 5), event(2, 6)])
        .unwrap();
    commit(&mut engine, &mut holder, &mut seq, Vec::new()).unwrap();
    let flushed = engine.flush(None);
    engine
        .handle_events(Timestamp::EPOCH, size, vec![event(3, 15), event(4, 95)])
        .unwrap();
    commit(&mut engine, &mut holder, &mut seq, flushed).unwrap();
    engine
        .handle_events(Timestamp::EPOCH, size, vec![event(5, 96)])
        .unwrap();
    commit(&mut engine, &mut holder, &mut seq, Vec::new()).unwrap();
    let fired = holder.read_output(0, 10).unwrap();
    assert!(!fired.is_empty(), "a window fired");
    std::mem::forget(holder);
    assert_eq!(journal(&server), 3, "the batches wait in the journal");

    // A reader with no epoch recovers all of it, and the journal is as it was.
    let mut reader = RedisStore::connect(&server.url(), &namespace).unwrap();
    let recovered = reader.recover().unwrap().unwrap();
    assert_eq!(recovered.snapshot, engine.snapshot());
    assert_eq!(recovered.next_seq, seq);
    assert_eq!(reader.read_output(0, 10).unwrap(), fired);
    assert_eq!(journal(&server), 3, "recovery wrote nothing");

    // The next holder, epoch 2, compacts them with its first batch.
    let mut next = RedisStore::connect(&server.url(), &namespace).unwrap();
    next.backend_mut().set_epoch(2);
    let (mut next_engine, mut next_seq) = open_engine(&mut next, EngineConfig::default()).unwrap();
    next_engine
        .handle_events(Timestamp::from_millis(200), size, vec![event(6, 97)])
        .unwrap();
    commit(&mut next_engine, &mut next, &mut next_seq, Vec::new()).unwrap();
    next.compact().unwrap();
    assert_eq!(journal(&server), 0, "compacted");
    let mut after = RedisStore::connect(&server.url(), &namespace).unwrap();
    let recovered = after.recover().unwrap().unwrap();
    assert_eq!(recovered.snapshot, next_engine.snapshot());
    assert_eq!(after.read_output(0, 10).unwrap(), fired);
}

/// `serve --redis-fsync always`: refused by a server without an append-only file (it could not
/// keep the promise), and on one with it, the server fsyncs before it answers from then on.
#[test]
fn fsync_always_needs_an_append_only_file_and_sets_the_server() {
    let Some(plain) = RedisServer::start() else {
        return;
    };
    match window_store::require_fsync_always(&plain.url()) {
        Err(StoreError::Backend(text)) => assert!(text.contains("--appendonly yes"), "{text}"),
        other => panic!("a server without appendonly was accepted: {other:?}"),
    }
    let durable =
        window_testkit::RedisServer::launch(window_testkit::Persistence::AppendOnlyEverySec, None)
            .expect("redis-server with appendonly");
    assert_eq!(durable.setting("appendfsync").unwrap(), "everysec");
    window_store::require_fsync_always(&durable.url()).unwrap();
    assert_eq!(durable.setting("appendfsync").unwrap(), "always");
}

// ---- a namespace lost or replaced under the store ----

/// One window fired per commit, each compacted on its own (one Stream entry per seq); returns
/// the store, its engine and its next seq.
fn fire_windows(server: &RedisServer, namespace: &str, count: i64) -> (RedisStore, Engine, u64) {
    let size = SizeMs::new(10).unwrap();
    let mut store = RedisStore::connect(&server.url(), namespace).unwrap();
    store.backend_mut().set_epoch(1);
    let (mut engine, mut seq) = open_engine(&mut store, EngineConfig::default()).unwrap();
    for i in 0..count {
        engine
            .handle_events(
                Timestamp::EPOCH,
                size,
                vec![Event {
                    id: EventId::Int(i),
                    ts: Timestamp::from_millis(10 * i + 5),
                    key: None,
                    value: None,
                    payload: None,
                }],
            )
            .unwrap();
        let fired = engine.flush(None);
        commit(&mut engine, &mut store, &mut seq, fired).unwrap();
        store.compact().unwrap();
    }
    (store, engine, seq)
}

fn lost_reason(result: Result<impl std::fmt::Debug, StoreError>, namespace: &str) -> String {
    match result {
        Err(error @ StoreError::NamespaceLost { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(&format!("{namespace:?}"))
                    && message.contains("FLUSHALL")
                    && message.contains("new --namespace"),
                "{message}"
            );
            let StoreError::NamespaceLost { reason, .. } = error else {
                unreachable!()
            };
            reason
        }
        other => panic!("expected NamespaceLost, got {other:?}"),
    }
}

fn all_keys(server: &RedisServer) -> Vec<String> {
    server.command(&["KEYS", "*"]).unwrap()
}

/// FLUSHALL under a running store: its next commit (and the check of a group that writes
/// nothing) is refused with `NamespaceLost`, and nothing is written, so the namespace stays
/// empty; a store that never saw the namespace makes it afresh, with a new identity.
#[test]
fn a_flushall_under_a_store_refuses_its_next_commit_and_writes_nothing() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let namespace = server.fresh_namespace();
    let (mut store, mut engine, mut seq) = fire_windows(&server, &namespace, 3);
    let identity = store.backend().identity().expect("created").to_owned();
    assert_eq!(
        server
            .command(&["GET", &format!("{{wn:{namespace}}}:id")])
            .unwrap(),
        std::slice::from_ref(&identity)
    );

    server.command(&["FLUSHALL"]).unwrap();
    let refused = store.check_writer();
    assert!(lost_reason(refused, &namespace).contains("missing"));
    engine
        .handle_events(
            Timestamp::EPOCH,
            SizeMs::new(10).unwrap(),
            vec![Event {
                id: EventId::Int(100),
                ts: Timestamp::from_millis(1005),
                key: None,
                value: None,
                payload: None,
            }],
        )
        .unwrap();
    let fired = engine.flush(None);
    let reason = lost_reason(commit(&mut engine, &mut store, &mut seq, fired), &namespace);
    assert!(
        reason.contains("identity") && reason.contains("missing"),
        "{reason}"
    );
    drop(store);
    assert_eq!(
        all_keys(&server),
        Vec::<String>::new(),
        "nothing was written"
    );

    // A store that never saw the namespace creates it as new.
    let (fresh, _, next) = fire_windows(&server, &namespace, 1);
    assert_eq!(next, 1);
    assert_ne!(fresh.backend().identity(), Some(identity.as_str()));
}

/// A namespace replaced under the store (another identity, or its epoch gone) is refused too.
#[test]
fn a_replaced_identity_or_a_missing_epoch_is_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let namespace = server.fresh_namespace();
    let mut redis = backend(&server, &namespace);
    assert_eq!(
        redis.identity(),
        None,
        "a new namespace has no identity yet"
    );
    redis.apply(vec![put(b"a", b"1")]).unwrap();
    let identity = redis
        .identity()
        .expect("created by the first batch")
        .to_owned();
    let id_key = format!("{{wn:{namespace}}}:id");
    server.command(&["SET", &id_key, "someone-else"]).unwrap();
    let reason = lost_reason(redis.apply(vec![put(b"a", b"2")]), &namespace);
    assert!(
        reason.contains("someone-else") && reason.contains(&identity),
        "{reason}"
    );
    // A backend that connects now learns the namespace as it is.
    assert_eq!(
        backend(&server, &namespace).identity(),
        Some("someone-else")
    );
    server.command(&["SET", &id_key, &identity]).unwrap();
    server
        .command(&["DEL", &format!("{{wn:{namespace}}}:epoch")])
        .unwrap();
    let reason = lost_reason(redis.apply(vec![put(b"a", b"3")]), &namespace);
    assert!(
        reason.contains("epoch") && reason.contains("missing"),
        "{reason}"
    );
    assert_eq!(redis.get(b"a").unwrap(), Some(b"1".to_vec()));
}

/// Recovery checks the output log against the meta record: entries deleted from the Stream
/// (XDEL, XTRIM), at its head, in its middle or at its tail, are refused with the seqs missing;
/// and a running holder whose log lost its tail cannot append after the hole.
#[test]
fn recovery_refuses_an_output_log_that_lost_entries() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let recover = |namespace: &str| {
        let mut store = RedisStore::connect(&server.url(), namespace).unwrap();
        open_engine(&mut store, EngineConfig::default()).map(|(_, seq)| seq)
    };
    let log = |namespace: &str| format!("{{wn:{namespace}}}:log");

    // Intact: recovered as it is.
    let whole = server.fresh_namespace();
    drop(fire_windows(&server, &whole, 10));
    assert_eq!(recover(&whole).unwrap(), 10);

    // A record from the middle.
    let middle = server.fresh_namespace();
    drop(fire_windows(&server, &middle, 10));
    server.command(&["XDEL", &log(&middle), "0-5"]).unwrap();
    let reason = lost_reason(recover(&middle), &middle);
    assert!(
        reason.contains("next_seq 10") && reason.contains("lacks seqs 4 ("),
        "{reason}"
    );
    assert!(reason.contains("XDEL or XTRIM"), "{reason}");

    // The head, trimmed.
    let head = server.fresh_namespace();
    drop(fire_windows(&server, &head, 10));
    server
        .command(&["XTRIM", &log(&head), "MAXLEN", "3"])
        .unwrap();
    let reason = lost_reason(recover(&head), &head);
    assert!(reason.contains("lacks seqs 0-6 ("), "{reason}");

    // The tail, while its holder still runs: recovery refuses it, and so does the holder's
    // next append (its compactor's round), which would leave a hole.
    let tail = server.fresh_namespace();
    let (mut holder, mut engine, mut seq) = fire_windows(&server, &tail, 10);
    server.command(&["XDEL", &log(&tail), "0-10"]).unwrap();
    let reason = lost_reason(recover(&tail), &tail);
    assert!(reason.contains("lacks seqs 9 ("), "{reason}");
    engine
        .handle_events(
            Timestamp::EPOCH,
            SizeMs::new(10).unwrap(),
            vec![Event {
                id: EventId::Int(10),
                ts: Timestamp::from_millis(105),
                key: None,
                value: None,
                payload: None,
            }],
        )
        .unwrap();
    let fired = engine.flush(None);
    commit(&mut engine, &mut holder, &mut seq, fired).unwrap();
    let reason = lost_reason(holder.compact(), &tail);
    assert!(
        reason.contains("append seq 10") && reason.contains("last entry is seq 8"),
        "{reason}"
    );
    drop(holder);
    let entries = server.command(&["XLEN", &log(&tail)]).unwrap();
    assert_eq!(entries, ["9"], "nothing appended after the hole");
}
