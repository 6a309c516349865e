//! The Redis backend: the window store in a Redis server that several machines can share.
//!
//! # Layout
//! One store lives in one *namespace*, in Redis keys that share the hash tag `{wn:NAME}`, so
//! Redis Cluster puts them in one slot and a script may touch them all:
//! - `{wn:NAME}:keys`: a sorted set whose members are our binary keys (open windows and the meta
//!   record), every score 0, so `ZRANGEBYLEX` walks them in byte order (the order of the memory
//!   and sled backends) and a key prefix is a lexicographic range;
//! - `{wn:NAME}:vals`: a hash from key to value;
//! - `{wn:NAME}:log`: the output log, a Redis Stream, id `0-(seq+1)` of the entry's (last)
//!   record. An entry holds one fired window, with the fields `seq`, `epoch`, `reason`,
//!   `start_ms`, `end_ms`, `count`, `key` (keyed windows only) and `record` (the exact encoding,
//!   which is what the store reads back), or a block of consecutive ones, with the fields
//!   `first`, `last`, `records` and `record` (the block's encoding, `codec::OUTPUT_BLOCK`).
//!   Other Redis clients can follow it with `XREAD BLOCK` or consumer groups. Appends are checked
//!   to rise (a block from its first record), so the log is append-only, and never trimmed by
//!   the store. Entries appear when the journal is compacted (within about 200 ms of the commit;
//!   `KvStore::compact` waits for it): the store itself reads not-yet-compacted records from
//!   its memory;
//! - journal records (`J` + number, see the `journal` module) among the keys above: each commit
//!   writes one, the compactor removes it with the merged effect it had;
//! - `{wn:NAME}:epoch`: the fencing epoch: the highest any batch has carried or any lease
//!   acquisition granted, in decimal;
//! - `{wn:NAME}:lease`: the coordinator lease (see the `redis_lease` module);
//! - `{wn:NAME}:id`: the namespace's identity, a random 128-bit id written once, beside the
//!   epoch, by the first lease acquisition or batch (see "Identity" below).
//!
//! # Redis Cluster
//! A URL `redis+cluster://HOST:PORT,HOST:PORT,...` (some of the cluster's masters) opens a
//! cluster connection (redis-rs's synchronous `ClusterConnection`), which sends each command to
//! the master of its first key's hash slot and follows the cluster's redirections. Every key of a
//! namespace shares the hash tag `{wn:NAME}`, so a namespace lives on one master and its scripts
//! run there whole; the partitions of a namespace (`NAME.0`, `NAME.1`, ...) have tags of their
//! own and spread over the masters. What a master's failover can lose is what its asynchronous
//! replication had not sent (see "Durability" below).
//!
//! # Atomicity
//! `apply` is one call of a Lua script (`EVALSHA` of its SHA-1, with `EVAL` as the fallback when
//! the server answers `NOSCRIPT`: the first call on a server, or after a restart or `SCRIPT
//! FLUSH`).
//! Redis runs a script with no other command in between, so other clients see all of a batch or
//! none of it. Redis does not roll back a script that fails halfway, so the script checks the
//! epoch and the whole batch before its first write; the writes that follow (`HSET`, `ZADD`,
//! `ZREM`, `HDEL`, and `XADD` with ids checked to rise) cannot fail on well-formed arguments, and a Redis over `maxmemory` refuses a
//! script before its first write, never after it. The scripts carry a `#!lua` shebang (Redis 7.0
//! or later, checked at connect): Redis then checks memory when the call starts and holds the
//! script to the keys it declares, as Redis Cluster needs. Reads (`scan`) run as a read-only
//! script (`no-writes`), so a page of keys and its values are one snapshot.
//!
//! # Fencing
//! Every batch carries an epoch: the one set with [`RedisBackend::set_epoch`], or 0 when none was
//! set. The script refuses, applying nothing, a batch whose epoch is lower than the highest it
//! has seen, which comes back as [`StoreError::Fenced`]; a higher epoch becomes the new highest.
//! A process that lost its lease while paused, and wakes up to write, is refused as soon as its
//! successor has written once with the next epoch. Equal epochs pass: the holder writes many
//! batches. Epochs are compared as decimal strings of digits, so they are exact for all of `u64`
//! (Lua's numbers are doubles).
//!
//! # Identity
//! A namespace wiped under running nodes (FLUSHALL, a Redis restarted without its data, a
//! replica promoted without the last writes) must not be started over by them as if it were new:
//! seq numbers would name other windows than before. So the backend learns the namespace's
//! identity (`{wn:NAME}:id`) when it connects (or is given the lease's,
//! [`RedisBackend::set_identity`]); the batch script then refuses, applying nothing, a batch of a
//! backend that knows an identity when the namespace holds none, another, or no fencing epoch,
//! and [`RedisBackend::check_writer`] does the same check; both come back as
//! [`StoreError::NamespaceLost`]. A backend that found no identity creates one with its first
//! batch (a new namespace, or one made by a build before identities). Reading the meta record
//! (recovery) checks the identity too, and that the output log holds exactly the seqs below
//! the meta record's `next_seq`, in one read-only script, whatever the log's length (see the
//! `redis_namespace` module); the batch script appends to the log densely (a block's first seq
//! right after the log's last one), so a log that lost its tail is refused too.
//!
//! # Durability: what `sync` means here
//! `sync` does nothing, and that is a choice: Redis has no per-call flush for a client to ask
//! for. Once `apply` returns, the batch is in the memory of the Redis server, so it survives this
//! process dying at any moment (the `WindowStore::sync` contract). What it survives beyond that
//! is the Redis server's configuration, not ours:
//! - `appendonly no` (the default) with RDB snapshots: a Redis restart or crash loses every write
//!   since the last snapshot; with `save ""` as well, it loses everything.
//! - `appendonly yes` with `appendfsync everysec` (the usual setting): Redis fsyncs the
//!   append-only file once a second, so a crash of the *machine* (power, kernel) can lose about
//!   the last second (two in the worst case) of acknowledged batches; a crash of the Redis
//!   *process* alone normally loses nothing, because Redis has written each batch to the file
//!   (the page cache) before it replies.
//! - `appendonly yes` with `appendfsync always`: Redis fsyncs the append-only file before it
//!   replies, so an acknowledged batch survives a crash of the Redis machine, as far as its disk
//!   keeps what it was told to keep.
//! - Replication is asynchronous. A replica promoted after the primary fails may lack the last
//!   batches the primary acknowledged; `WAIT n timeout` narrows that window (it waits until `n`
//!   replicas have received the writes) but does not close it, so `sync` does not pretend to by
//!   running it. The fencing epoch travels with the data: a promoted replica that lost batches
//!   also lost the epochs they raised, so fencing is as strong as the replication under it.
//!
//! Run Redis with `appendonly yes` (and `appendfsync always` where a machine crash must not lose
//! acknowledged events). The store neither reads nor changes the server's configuration;
//! [`require_fsync_always`] (what `serve --redis-fsync always` calls at start) checks
//! `appendonly yes` and sets `appendfsync always`.
//! Redis 7.2 added `WAITAOF` (block until this client's writes are fsynced locally and on `n`
//! replicas), which would let `sync` give sled's guarantee under `everysec`; it is not used yet,
//! because it fails outright on a server without `appendonly` and the Redis this project tests
//! against (Debian's 7.0) does not have it.
//!
//! # Failure
//! Every call has a 30 s I/O timeout. A server that cannot be reached (connection refused, lost,
//! timed out) or that refuses for now (out of memory under `maxmemory`, loading, busy) comes back
//! as [`StoreError::Unreachable`], another error the server answered (a read-only replica, ...)
//! as [`StoreError::Backend`], both naming the server; a batch whose call failed may or may not
//! have been applied, and the connection is not reopened behind the caller's back. The node
//! drops the holding whose commit failed and contends for the lease again: the next holding
//! recovers from what Redis holds.

use std::cell::RefCell;
use std::time::Duration;

use redis::{ErrorKind, ServerErrorKind};

use crate::backend::{KvBackend, KvOp, Record, changed_underneath, overwrite_refused};
use crate::codec;
use crate::error::StoreError;
use crate::kv::KvStore;
use crate::redis_namespace::{self, Identity, MetaState};

/// A window store in a Redis server.
pub type RedisStore = KvStore<RedisBackend>;

impl RedisStore {
    /// Connects to the Redis server at `url` (`redis://HOST:PORT/DB`) and opens the store in
    /// `namespace` (created on its first write). See [`RedisBackend::connect`].
    pub fn connect(url: &str, namespace: &str) -> Result<RedisStore, StoreError> {
        RedisStore::connect_with(url, namespace, crate::journal::Policy::redis())
    }

    /// [`RedisStore::connect`] with the journal's compaction `policy`.
    pub fn connect_with(
        url: &str,
        namespace: &str,
        policy: crate::journal::Policy,
    ) -> Result<RedisStore, StoreError> {
        Ok(KvStore::new(RedisBackend::connect(url, namespace)?).with_journal(policy))
    }
}

/// One namespace of a Redis server, used as an ordered key-value space.
pub struct RedisBackend {
    /// The connection. The backend's reads take `&self`; the synchronous client needs `&mut` for
    /// every command. Only one thread uses a backend at a time (it is `Send`, not `Sync`).
    con: RefCell<Con>,
    /// The URL, with any password hidden, for error messages.
    url: String,
    /// The URL as given, to open a second connection (never shown).
    given_url: String,
    namespace: String,
    keys_key: String,
    vals_key: String,
    epoch_key: String,
    log_key: String,
    id_key: String,
    /// How many entries the log's retention removed from the Stream (`XTRIM`), so that recovery
    /// can tell them from entries lost.
    trimmed_key: String,
    /// The fencing epoch this process writes with; `None` writes with epoch 0.
    epoch: Option<u64>,
    /// The namespace's identity as this backend knows it (see "Identity" in the module doc).
    identity: Identity,
    /// The SHA-1 of [`APPLY`] and [`SCAN`], as `SCRIPT LOAD` returned them.
    apply_sha: String,
    scan_sha: String,
    meta_sha: String,
    log_ids_sha: String,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .field("epoch", &self.epoch)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// How long one connection attempt and one command may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Keys per read script call: bounds how long one call holds the server.
const SCAN_PAGE: usize = 1024;

impl RedisBackend {
    /// Connects to the Redis server at `url` and uses `namespace` in it.
    ///
    /// Fails, with a message that names the server and says what to do, when the URL is not a
    /// Redis URL, the server cannot be reached or refuses us, it is older than Redis 7.0, or the
    /// namespace is empty or contains `{` or `}` (which would break the hash tag).
    ///
    /// Learns the namespace's identity if it has one: from then on, a batch is refused when the
    /// namespace no longer holds it (see "Identity" in the module doc).
    pub fn connect(url: &str, namespace: &str) -> Result<RedisBackend, StoreError> {
        let shown = redact(url);
        check_namespace(namespace)?;
        let mut con = open_connection(url)?;
        let id_key = namespaced(namespace, "id");
        let held: Option<String> = redis::cmd("GET")
            .arg(&id_key)
            .query(&mut *con)
            .map_err(|e| backend_error(&shown, "GET the namespace's identity", e))?;
        let mut backend = RedisBackend {
            con: RefCell::new(con),
            url: shown,
            given_url: url.to_owned(),
            namespace: namespace.to_owned(),
            keys_key: namespaced(namespace, "keys"),
            vals_key: namespaced(namespace, "vals"),
            epoch_key: namespaced(namespace, "epoch"),
            log_key: namespaced(namespace, "log"),
            id_key,
            trimmed_key: namespaced(namespace, "trimmed"),
            epoch: None,
            identity: Identity::from_held(held)?,
            apply_sha: String::new(),
            scan_sha: String::new(),
            meta_sha: String::new(),
            log_ids_sha: String::new(),
        };
        // The SHA-1s are computed here, not asked of `SCRIPT LOAD`: on a cluster that command
        // goes to every node (replicas too) and fails if any is down. The first `EVALSHA` on a
        // server without the script falls back to `EVAL`, which caches it there.
        backend.apply_sha = redis::Script::new(APPLY).get_hash().to_owned();
        backend.scan_sha = redis::Script::new(SCAN).get_hash().to_owned();
        backend.meta_sha = redis::Script::new(redis_namespace::META_STATE)
            .get_hash()
            .to_owned();
        backend.log_ids_sha = redis::Script::new(redis_namespace::LOG_IDS)
            .get_hash()
            .to_owned();
        Ok(backend)
    }

    /// Sets the namespace's identity this backend checks every batch against: the one the lease
    /// acquisition saw or created ([`crate::RedisLease::identity`]), so that a namespace wiped
    /// between the acquisition and the first batch is noticed too.
    pub fn set_identity(&mut self, identity: &str) {
        self.identity = Identity::Known(identity.to_owned());
    }

    /// The namespace's identity as this backend knows it: `None` until the namespace has one
    /// (this backend's first batch creates it).
    pub fn identity(&self) -> Option<&str> {
        self.identity.known()
    }

    /// The error for this namespace, lost or replaced.
    fn lost(&self, reason: impl Into<String>) -> StoreError {
        redis_namespace::lost(&self.namespace, reason)
    }

    /// Checks an identity and epoch read from the namespace against what this backend knows.
    fn check_identity(&self, held: Option<&str>, epoch: Option<&str>) -> Result<(), StoreError> {
        let Some(known) = self.identity.known() else {
            return Ok(());
        };
        match held {
            None => Err(self.lost(redis_namespace::missing_identity(&self.id_key, known))),
            Some(held) if held != known => {
                Err(self.lost(redis_namespace::other_identity(&self.id_key, known, held)))
            }
            Some(_) if epoch.is_none() => {
                Err(self.lost(redis_namespace::missing_epoch(&self.epoch_key)))
            }
            Some(_) => Ok(()),
        }
    }

    /// The meta record, after checking (in the same look) the identity and that the output log
    /// holds exactly the seqs below its `next_seq`.
    fn checked_meta(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let reply: Vec<Vec<u8>> = self
            .eval(
                redis_namespace::META_STATE,
                &self.meta_sha,
                &[codec::META_KEY],
            )
            .map_err(|e| self.error("the recovery check script", e))?;
        let state = MetaState::parse(reply).ok_or_else(|| {
            StoreError::Backend(format!(
                "Redis at {}: the recovery check script returned an unexpected reply",
                self.url
            ))
        })?;
        self.check_identity(state.identity.as_deref(), state.epoch.as_deref())?;
        let next_seq = match &state.meta {
            Some(value) => codec::decode_meta(codec::META_KEY, value)?.next_seq,
            None => 0,
        };
        if !state.log.holds_exactly(next_seq) {
            let gaps =
                redis_namespace::describe_gaps(&self.log_spans()?, state.log.start, next_seq);
            let said = match &state.meta {
                Some(_) => format!("its meta record says next_seq {next_seq}"),
                None => "it has no meta record (so no fired window)".to_owned(),
            };
            return Err(self.lost(format!(
                "{said}, so its output log {} should hold every seq below it and no other, but {gaps} ({})",
                self.log_key,
                state.log.describe()
            )));
        }
        Ok(state.meta)
    }

    /// Every entry of the output log as (first seq, last seq), without the records: read only
    /// to name what an inconsistent log lacks.
    fn log_spans(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        const PAGE: usize = 4096;
        let mut spans = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let count = PAGE.to_string();
            let reply: Vec<String> = self
                .eval(
                    redis_namespace::LOG_IDS,
                    &self.log_ids_sha,
                    &[start.as_bytes(), count.as_bytes()],
                )
                .map_err(|e| self.error("reading the output log's ids", e))?;
            let page = redis_namespace::parse_log_ids(reply).ok_or_else(|| {
                StoreError::corrupt(
                    self.log_key.as_bytes(),
                    "the output log holds an entry that is not 0-(seq+1)",
                )
            })?;
            let full = page.len() == PAGE;
            for (first, last, id) in page {
                spans.push((first, last));
                start = format!("({id}");
            }
            if !full {
                return Ok(spans);
            }
        }
    }
    /// Sets the fencing epoch every following batch carries (see the module doc).
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = Some(epoch);
    }

    /// The fencing epoch batches carry, if one was set.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// The highest epoch any batch in this namespace has carried; `None` before the first batch.
    pub fn highest_epoch(&self) -> Result<Option<u64>, StoreError> {
        let text: Option<String> = redis::cmd("GET")
            .arg(&self.epoch_key)
            .query(&mut **self.con.borrow_mut())
            .map_err(|e| self.error("GET epoch", e))?;
        text.map(|t| self.parse_epoch(&t)).transpose()
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn error(&self, what: &str, error: redis::RedisError) -> StoreError {
        backend_error(&self.url, what, error)
    }

    fn parse_epoch(&self, text: &str) -> Result<u64, StoreError> {
        text.parse().map_err(|_| {
            StoreError::corrupt(
                self.epoch_key.as_bytes(),
                format!("the fencing epoch {text:?} is not a number"),
            )
        })
    }

    /// Runs a script by its SHA-1, falling back to its source when the server lost it.
    fn eval<T: redis::FromRedisValue>(
        &self,
        source: &str,
        sha: &str,
        args: &[&[u8]],
    ) -> Result<T, redis::RedisError> {
        let keys = [
            &self.keys_key,
            &self.vals_key,
            &self.epoch_key,
            &self.log_key,
            &self.id_key,
            &self.trimmed_key,
        ];
        let call = |verb: &str, body: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(body).arg(keys.len()).arg(&keys[..]);
            for arg in args {
                cmd.arg(*arg);
            }
            cmd
        };
        let mut guard = self.con.borrow_mut();
        let con: &mut dyn redis::ConnectionLike = &mut **guard;
        match call("EVALSHA", sha).query(con) {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                // Also caches the script again on the server for the next EVALSHA.
                call("EVAL", source).query(con)
            }
            other => other,
        }
    }
}

impl KvBackend for RedisBackend {
    fn twin(&self) -> Option<Result<Box<dyn KvBackend>, StoreError>> {
        Some(
            RedisBackend::connect(&self.given_url, &self.namespace).map(|mut twin| {
                twin.epoch = self.epoch;
                // The compactor applies only what this backend wrote (its first write created
                // the identity if it was new), so the twin checks it from its first round.
                twin.identity = Identity::Known(self.identity.value().to_owned());
                Box::new(twin) as Box<dyn KvBackend>
            }),
        )
    }

    fn scan(&self, prefix: &[u8], start: &[u8], limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        let mut min = inclusive(start.max(prefix));
        let max = exclusive_upper(prefix);
        while out.len() < limit {
            let want = (limit - out.len()).min(SCAN_PAGE);
            let count = want.to_string();
            let reply: Vec<Option<Vec<u8>>> = self
                .eval(SCAN, &self.scan_sha, &[&min, &max, count.as_bytes()])
                .map_err(|e| self.error("the scan script", e))?;
            if !reply.len().is_multiple_of(2) {
                return Err(StoreError::Backend(format!(
                    "Redis at {}: the scan script returned {} items, expected key-value pairs",
                    self.url,
                    reply.len()
                )));
            }
            let got = reply.len() / 2;
            let mut items = reply.into_iter();
            while let (Some(key), Some(value)) = (items.next(), items.next()) {
                let Some(key) = key else {
                    return Err(StoreError::Backend(format!(
                        "Redis at {}: the scan script returned a nil key",
                        self.url
                    )));
                };
                let Some(value) = value else {
                    return Err(StoreError::corrupt(
                        &key,
                        format!(
                            "listed in {} but has no value in {}",
                            self.keys_key, self.vals_key
                        ),
                    ));
                };
                out.push((key, value));
            }
            if got < want {
                break;
            }
            // The next page starts after the last key.
            let (last, _) = out.last().expect("a full page is not empty");
            min = [b"(".as_slice(), last].concat();
        }
        Ok(out)
    }

    /// The meta record is read only by recovery: with it, the identity and the output log are
    /// checked against it in the same look (see "Identity" in the module doc).
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if key == codec::META_KEY {
            return self.checked_meta();
        }
        redis::cmd("HGET")
            .arg(&self.vals_key)
            .arg(key)
            .query(&mut **self.con.borrow_mut())
            .map_err(|e| self.error("HGET", e))
    }

    fn apply(&mut self, ops: Vec<KvOp>) -> Result<(), StoreError> {
        use std::borrow::Cow;
        let epoch = self.epoch.unwrap_or(0);
        let mut args: Vec<Cow<'_, [u8]>> = Vec::with_capacity(3 + 3 * ops.len());
        args.push(Cow::Owned(epoch.to_string().into_bytes()));
        args.push(Cow::Borrowed(self.identity.value().as_bytes()));
        args.push(Cow::Borrowed(match self.identity {
            Identity::Known(_) => b"known".as_slice(),
            Identity::Proposed(_) => b"new".as_slice(),
        }));
        for op in &ops {
            match op {
                KvOp::TrimLog(below) => args.extend([
                    Cow::Borrowed(b"T".as_slice()),
                    Cow::Owned(stream_id(*below).into_bytes()),
                    Cow::Borrowed(b"".as_slice()),
                ]),
                KvOp::Put(key, value) => args.extend([
                    Cow::Borrowed(b"P".as_slice()),
                    Cow::Borrowed(key.as_slice()),
                    Cow::Borrowed(value.as_slice()),
                ]),
                KvOp::PutNew(key, value) => args.extend([
                    Cow::Borrowed(b"N".as_slice()),
                    Cow::Borrowed(key.as_slice()),
                    Cow::Borrowed(value.as_slice()),
                ]),
                KvOp::DeletePrefix(prefix) => args.extend([
                    Cow::Borrowed(b"D".as_slice()),
                    Cow::Owned(inclusive(prefix)),
                    Cow::Owned(exclusive_upper(prefix)),
                ]),
                KvOp::Delete(key) => args.extend([
                    Cow::Borrowed(b"X".as_slice()),
                    Cow::Borrowed(key.as_slice()),
                    Cow::Borrowed(b"".as_slice()),
                ]),
                KvOp::Expect(key, value) => {
                    args.push(Cow::Borrowed(b"E".as_slice()));
                    args.push(Cow::Borrowed(key.as_slice()));
                    match value {
                        None => args.extend([
                            Cow::Borrowed(b"0".as_slice()),
                            Cow::Borrowed(b"".as_slice()),
                        ]),
                        Some(value) => args.extend([
                            Cow::Borrowed(b"1".as_slice()),
                            Cow::Borrowed(value.as_slice()),
                        ]),
                    }
                }
                KvOp::Append(seq, value) => {
                    let fields = stream_fields(*seq, value)?;
                    args.push(Cow::Borrowed(b"A".as_slice()));
                    args.push(Cow::Owned(stream_id(*seq).into_bytes()));
                    args.push(Cow::Owned((2 * fields.len() + 2).to_string().into_bytes()));
                    for (name, text) in fields {
                        args.push(Cow::Borrowed(name.as_bytes()));
                        args.push(Cow::Owned(text.into_bytes()));
                    }
                    args.push(Cow::Borrowed(b"record".as_slice()));
                    args.push(Cow::Borrowed(value.as_slice()));
                }
            }
        }
        let refs: Vec<&[u8]> = args.iter().map(|arg| arg.as_ref()).collect();
        let (applied, detail, extra): (i64, Vec<u8>, Vec<u8>) = self
            .eval(APPLY, &self.apply_sha, &refs)
            .map_err(|e| self.error("the batch script", e))?;
        let known = self.identity.value().to_owned();
        match applied {
            1 => {
                // A new namespace's identity is this backend's own from now on.
                self.identity = Identity::Known(known);
                Ok(())
            }
            5 => Err(self.lost(redis_namespace::missing_identity(&self.id_key, &known))),
            6 => Err(self.lost(redis_namespace::other_identity(
                &self.id_key,
                &known,
                &String::from_utf8_lossy(&detail),
            ))),
            7 => Err(self.lost(redis_namespace::missing_epoch(&self.epoch_key))),
            8 => {
                let seq = parse_stream_id(&String::from_utf8_lossy(&detail));
                let after = String::from_utf8_lossy(&extra)
                    .parse::<u64>()
                    .ok()
                    .and_then(|id| id.checked_sub(1));
                Err(self.lost(format!(
                    "the batch would append seq {} to the output log {}, whose last entry is {}: the seqs between are missing from the log; nothing of the batch was applied",
                    seq.map_or_else(|| "?".to_owned(), |s| s.to_string()),
                    self.log_key,
                    after.map_or_else(|| "none (the log is empty)".to_owned(), |s| format!("seq {s}")),
                )))
            }
            2 => Err(overwrite_refused(&detail)),
            4 => Err(changed_underneath(&detail)),
            3 => Err(StoreError::InvalidBatch(format!(
                "the batch would append output record {} to {}, which already holds it or a later one (a second writer on this store?); nothing of it was applied",
                String::from_utf8_lossy(&detail),
                self.log_key
            ))),
            _ => Err(StoreError::Fenced {
                epoch,
                highest: self.parse_epoch(&String::from_utf8_lossy(&detail))?,
            }),
        }
    }

    fn check_writer(&mut self) -> Result<(), StoreError> {
        let epoch = self.epoch.unwrap_or(0);
        let (held, highest): (Option<String>, Option<String>) = redis::cmd("MGET")
            .arg(&self.id_key)
            .arg(&self.epoch_key)
            .query(&mut **self.con.borrow_mut())
            .map_err(|e| self.error("MGET identity and epoch", e))?;
        self.check_identity(held.as_deref(), highest.as_deref())?;
        match highest.map(|t| self.parse_epoch(&t)).transpose()? {
            Some(highest) if highest > epoch => Err(StoreError::Fenced { epoch, highest }),
            _ => Ok(()),
        }
    }

    fn read_log(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        // Record u64::MAX would have stream id 0-(u64::MAX + 1), which cannot exist.
        if limit == 0 || from == u64::MAX {
            return Ok(Vec::new());
        }
        type Entry = (String, Vec<Vec<u8>>);
        let entries: Vec<Entry> = redis::cmd("XRANGE")
            .arg(&self.log_key)
            .arg(stream_id(from))
            .arg("+")
            .arg("COUNT")
            .arg(limit.min(i64::MAX as usize))
            .query(&mut **self.con.borrow_mut())
            .map_err(|e| self.error("XRANGE of the output log", e))?;
        entries
            .into_iter()
            .map(|(id, fields)| {
                let seq = parse_stream_id(&id).ok_or_else(|| {
                    StoreError::corrupt(
                        self.log_key.as_bytes(),
                        format!("the output log holds entry {id}, which is not 0-(seq+1)"),
                    )
                })?;
                let key = codec::output_key(seq);
                let record = fields
                    .chunks(2)
                    .find(|pair| pair[0] == b"record")
                    .and_then(|pair| pair.get(1).cloned())
                    .ok_or_else(|| {
                        StoreError::corrupt(&key, format!("entry {id} has no record field"))
                    })?;
                Ok((key, record))
            })
            .collect()
    }

    /// Nothing to do: see "Durability" in the module doc.
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Makes the Redis server (every master of a cluster) fsync its append-only file before it
/// answers (`CONFIG SET appendfsync always`), after checking that it keeps one (`appendonly
/// yes`): what `serve --redis-fsync always` asks for. Errors say what to change. The setting is
/// not written to the server's configuration file (no `CONFIG REWRITE`): a server restarted, or
/// a master added, runs with its own until a node starts with the flag again.
pub fn require_fsync_always(url: &str) -> Result<(), StoreError> {
    let shown = redact(url);
    let servers = match url.strip_prefix(CLUSTER_SCHEME) {
        // Each master asked itself: a cluster connection would send CONFIG GET to one node.
        Some(nodes) => cluster_masters(&shown, nodes)?,
        None => vec![url.to_owned()],
    };
    for server in &servers {
        let shown = redact(server);
        let mut con = open_connection(server)?;
        let con: &mut dyn redis::ConnectionLike = &mut *con;
        let reply: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query(con)
            .map_err(|e| refused_config(&shown, "CONFIG GET appendonly", e))?;
        if reply.get(1).map(String::as_str) != Some("yes") {
            return Err(StoreError::Backend(format!(
                "Redis at {shown} keeps no append-only file (appendonly is {:?}), so it cannot fsync what it acknowledges; start it with --appendonly yes, or leave --redis-fsync at everysec",
                reply.get(1)
            )));
        }
        let _: redis::Value = redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendfsync")
            .arg("always")
            .query(con)
            .map_err(|e| refused_config(&shown, "CONFIG SET appendfsync always", e))?;
    }
    Ok(())
}

/// The `redis://` URL of every master of the cluster whose nodes `nodes` lists (as `CLUSTER
/// NODES` on the first of them says).
fn cluster_masters(shown: &str, nodes: &str) -> Result<Vec<String>, StoreError> {
    let first = nodes.split(',').map(str::trim).find(|n| !n.is_empty()).ok_or_else(|| {
        StoreError::Backend(format!(
            "invalid Redis Cluster URL {shown}: no node; expected redis+cluster://HOST:PORT,HOST:PORT"
        ))
    })?;
    let (auth, _) = first.rsplit_once('@').unwrap_or(("", first));
    let mut con = open_connection(&format!("redis://{first}/"))?;
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut *con)
        .map_err(|e| backend_error(shown, "CLUSTER NODES", e))?;
    let masters: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                return None;
            }
            let address = fields.get(1)?.split('@').next()?;
            Some(if auth.is_empty() {
                format!("redis://{address}/")
            } else {
                format!("redis://{auth}@{address}/")
            })
        })
        .collect();
    if masters.is_empty() {
        return Err(StoreError::Backend(format!(
            "Redis Cluster at {shown}: CLUSTER NODES lists no live master"
        )));
    }
    Ok(masters)
}

fn refused_config(shown: &str, what: &str, e: redis::RedisError) -> StoreError {
    StoreError::Backend(format!(
        "Redis at {shown}: {what} failed: {e}; a server that refuses CONFIG (many managed services do) must be configured with appendfsync always by its operator, and this node started with --redis-fsync everysec"
    ))
}

/// Refuses a namespace that would break the hash tag.
pub(crate) fn check_namespace(namespace: &str) -> Result<(), StoreError> {
    if namespace.is_empty() || namespace.contains(['{', '}']) {
        return Err(StoreError::Backend(format!(
            "invalid Redis namespace {namespace:?}: it must be non-empty and contain neither '{{' nor '}}'"
        )));
    }
    Ok(())
}

/// The Redis key `name` of `namespace`: every key of a namespace shares the hash tag
/// `{wn:NAMESPACE}`, so Redis Cluster keeps them in one slot and one script may touch them all.
pub(crate) fn namespaced(namespace: &str, name: &str) -> String {
    format!("{{wn:{namespace}}}:{name}")
}

/// A connection that reopens itself after a failed call (Redis restarted, the connection was
/// killed, or a reply timed out). For callers whose every call is one atomic script or command,
/// so nothing is ever half done; a script the new server lacks is loaded again by
/// `Script::invoke`.
pub(crate) struct RedisLink {
    con: Con,
    /// The URL as given (it may hold a password), to reconnect.
    dial: String,
    /// The URL with any password hidden, for messages.
    pub(crate) url: String,
    /// A call failed: the connection may be dead or out of step, so the next call reconnects.
    broken: bool,
}

impl std::fmt::Debug for RedisLink {
    /// The URL with any password hidden, and whether the next call reconnects.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("url", &self.url)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    pub(crate) fn open(url: &str) -> Result<RedisLink, StoreError> {
        Ok(RedisLink {
            con: open_connection(url)?,
            dial: url.to_owned(),
            url: redact(url),
            broken: false,
        })
    }

    /// The connection, opened again first if the last call failed.
    pub(crate) fn ready(&mut self) -> Result<&mut (dyn redis::ConnectionLike + Send), StoreError> {
        if self.broken {
            self.con = open_connection(&self.dial)?;
            self.broken = false;
        }
        Ok(&mut *self.con)
    }

    /// The error of a failed call, after which the next call reconnects.
    pub(crate) fn failed(&mut self, what: &str, error: redis::RedisError) -> StoreError {
        self.broken = true;
        backend_error(&self.url, what, error)
    }
}

/// A connection to one Redis server, or to a Redis Cluster (which routes each command by the
/// hash slot of its first key: a namespace's keys share one hash tag, so its scripts run on
/// the master that holds that slot).
pub(crate) type Con = Box<dyn redis::ConnectionLike + Send>;

/// The URL scheme of a Redis Cluster: `redis+cluster://HOST:PORT,HOST:PORT,...` (any of its
/// masters; the client learns the others from them).
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Opens a connection to `url` with this crate's timeouts, and checks the server is Redis 7.0 or
/// later. Errors name the server (password hidden) and say what to do.
/// Whether the Redis server (or cluster) at `url` answers: `Ok` once a connection opens and the
/// server is recent enough; [`StoreError::Unreachable`] while it cannot be reached or is still
/// loading its data (worth waiting for); any other error for what waiting cannot mend (a bad URL,
/// refused credentials, an old server).
pub fn redis_reachable(url: &str) -> Result<(), StoreError> {
    match open_connection(url) {
        Ok(_) => Ok(()),
        Err(StoreError::Backend(text)) if text.contains("LOADING") => {
            Err(StoreError::Unreachable(text))
        }
        Err(error) => Err(error),
    }
}

pub(crate) fn open_connection(url: &str) -> Result<Con, StoreError> {
    if let Some(nodes) = url.strip_prefix(CLUSTER_SCHEME) {
        return open_cluster(url, nodes);
    }
    let shown = redact(url);
    let client = redis::Client::open(url).map_err(|e| {
        StoreError::Backend(format!(
            "invalid Redis URL {shown}: {e}; expected redis://HOST:PORT/, redis://HOST:PORT/DB or redis+cluster://HOST:PORT,HOST:PORT"
        ))
    })?;
    let mut con = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| cannot_connect(&shown, &e))?;
    con.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| con.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| backend_error(&shown, "setting socket timeouts", e))?;
    check_version(&mut con, &shown)?;
    Ok(Box::new(con))
}

/// A cluster connection through the masters listed in `nodes` (comma-separated `HOST:PORT`,
/// each with an optional `user:password@`).
fn open_cluster(url: &str, nodes: &str) -> Result<Con, StoreError> {
    let shown = redact(url);
    let nodes: Vec<String> = nodes
        .trim_end_matches('/')
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| format!("redis://{n}/"))
        .collect();
    if nodes.is_empty() {
        return Err(StoreError::Backend(format!(
            "invalid Redis Cluster URL {shown}: no node; expected redis+cluster://HOST:PORT,HOST:PORT"
        )));
    }
    // The version is each server's: ask the first node itself.
    let first = redis::Client::open(nodes[0].as_str())
        .and_then(|c| c.get_connection_with_timeout(CONNECT_TIMEOUT))
        .map_err(|e| cannot_connect(&shown, &e))?;
    let mut first = first;
    check_version(&mut first, &shown)?;
    let con = redis::cluster::ClusterClient::builder(nodes)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(IO_TIMEOUT)
        .build()
        .and_then(|client| client.get_connection())
        .map_err(|e| cannot_connect(&shown, &e))?;
    Ok(Box::new(con))
}

fn cannot_connect(shown: &str, e: &redis::RedisError) -> StoreError {
    let text = format!(
        "cannot connect to Redis at {shown}: {e}; check that redis-server is running there and reachable (try redis-cli -u URL ping)"
    );
    if unreachable(e) {
        StoreError::Unreachable(text)
    } else {
        StoreError::Backend(text)
    }
}

fn check_version(con: &mut dyn redis::ConnectionLike, shown: &str) -> Result<(), StoreError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(con)
        .map_err(|e| backend_error(shown, "INFO server", e))?;
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim();
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(major) if major >= 7 => Ok(()),
        _ => Err(StoreError::Backend(format!(
            "Redis at {shown} is version {version}; window-store needs Redis 7.0 or later (for script flags); upgrade the server"
        ))),
    }
}

pub(crate) fn backend_error(url: &str, what: &str, error: redis::RedisError) -> StoreError {
    let text = format!("Redis at {url}: {what} failed: {error}");
    if unreachable(&error) {
        StoreError::Unreachable(text)
    } else {
        StoreError::Backend(text)
    }
}

/// Whether `error` says the server could not be reached (rather than that it answered with an
/// error).
///
/// A refusal the server will lift by itself counts too: out of memory under `maxmemory` (a
/// script that may write is refused before it runs, so nothing was applied), still loading its
/// data, busy with a long script, a cluster resharding or without its master. The node answers
/// 11 meanwhile and serves again once Redis accepts writes.
fn unreachable(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || matches!(
            error.code(),
            Some("OOM" | "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN")
        )
}

/// Applies a batch. KEYS: the key set, the values, the epoch, the output log (a stream), the
/// namespace's identity.
/// ARGV[1]: the batch's epoch; ARGV[2]: the identity; ARGV[3]: `known` (refuse unless the
/// namespace holds that identity and an epoch) or `new` (create the identity if absent); then
/// per op `P key value`, `N key value` (a key that must not
/// exist), `D min max` (remove a `ZRANGEBYLEX` range), `X key ''` (remove the key) or
/// `A id n field value ...` (append an entry with
/// `n` field and value items to the log, whose ids must rise). Returns `{1, highest, ''}` when
/// applied, `{0, highest, ''}` when fenced, `{2, key, ''}` when an `N` key exists, `{3, id, ''}`
/// when the log already holds `id` or a later entry, `{4, key, ''}` when an expectation fails,
/// `{5, '', ''}` when the identity is missing, `{6, found, ''}` when it is another,
/// `{7, '', ''}` when the epoch is missing, and `{8, id, last}` when the append would leave a
/// gap after the log's last entry `last` ('0': none); nothing is written in all but the first
/// case.
const APPLY: &str = r#"#!lua
-- Epochs are decimal strings without leading zeros: compare by length, then by digits.
local function older(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function log_seq(id)
  return tonumber(string.match(id, '^0%-(%d+)$'))
end
local epoch = ARGV[1]
local identity = ARGV[2]
local held = redis.call('GET', KEYS[5])
local highest = redis.call('GET', KEYS[3])
-- A namespace lost or replaced under this writer: refused before anything else.
if ARGV[3] == 'known' then
  if not held then return {5, '', ''} end
  if held ~= identity then return {6, held, ''} end
  if not highest then return {7, '', ''} end
elseif held and held ~= identity then
  return {6, held, ''}
end
if highest and older(epoch, highest) then
  return {0, highest, ''}
end
-- Check the whole batch before the first write: Redis does not undo a script that fails halfway.
-- The log's last entry is read only by a batch that appends: XREVRANGE hands the script the
-- whole entry, the last fired window with all its ids and payloads, which would make every
-- batch as slow as the copy of the largest window.
local last = nil
local i = 4
while i <= #ARGV do
  local op = ARGV[i]
  local step = 3
  if op == 'A' then
    local n = tonumber(ARGV[i + 2])
    local seq = log_seq(ARGV[i + 1] or '')
    if not n or not seq or n % 2 ~= 0 or i + 2 + n > #ARGV then
      return redis.error_reply('ERR window-store: malformed append at argument ' .. i)
    end
    if last == nil then
      last = 0
      local tail = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
      if #tail > 0 then
        last = log_seq(tail[1][1])
        if not last then
          return redis.error_reply('ERR window-store: the output log holds a foreign entry ' .. tail[1][1])
        end
      end
    end
    -- The output log is append-only: never a record twice, never out of order (a block of
    -- records names its first one in a leading field).
    -- (In the Stream's terms: ids are 0-(seq+1).)
    local first = seq
    if ARGV[i + 3] == 'first' then
      first = tonumber(ARGV[i + 4])
      if first then first = first + 1 end
    end
    if not first or first <= last or first > seq then
      return {3, ARGV[i + 1], ''}
    end
    -- Densely: a record missing between the log's last entry and this one means the log lost
    -- its tail (so recovery can trust a log whose ends and count are right).
    if first ~= last + 1 then
      return {8, ARGV[i + 1], tostring(last)}
    end
    last = seq
    step = 3 + n
  elseif op == 'E' then
    if i + 3 > #ARGV then
      return redis.error_reply('ERR window-store: malformed expectation at argument ' .. i)
    end
    local held = redis.call('HGET', KEYS[2], ARGV[i + 1])
    if (ARGV[i + 2] == '0' and held) or (ARGV[i + 2] ~= '0' and held ~= ARGV[i + 3]) then
      return {4, ARGV[i + 1], ''}
    end
    step = 4
  elseif op == 'T' then
    if not log_seq(ARGV[i + 1] or '') then
      return redis.error_reply('ERR window-store: malformed trim at argument ' .. i)
    end
  elseif (op ~= 'P' and op ~= 'N' and op ~= 'D' and op ~= 'X') or i + 2 > #ARGV then
    return redis.error_reply('ERR window-store: malformed batch at argument ' .. i)
  elseif op == 'N' and redis.call('HEXISTS', KEYS[2], ARGV[i + 1]) == 1 then
    return {2, ARGV[i + 1], ''}
  end
  i = i + step
end
if not highest or older(highest, epoch) then
  redis.call('SET', KEYS[3], epoch)
  highest = epoch
end
if not held then
  redis.call('SET', KEYS[5], identity, 'NX')
end
-- unpack has a stack limit: call in slices (of an even length, so pairs stay together).
local function sliced(command, key, items)
  for j = 1, #items, 1000 do
    redis.call(command, key, unpack(items, j, math.min(j + 999, #items)))
  end
end
-- A run of ops of one kind is one call per key, not one per op (a batch touches a record per
-- window, so the calls, not the bytes, are the cost); runs keep the batch's order.
i = 4
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'A' then
    local n = tonumber(ARGV[i + 2])
    redis.call('XADD', KEYS[4], ARGV[i + 1], unpack(ARGV, i + 3, i + 2 + n))
    i = i + 3 + n
  elseif op == 'E' then
    i = i + 4
  elseif op == 'T' then
    -- The retention: entries whose last record is below the mark go, counted, so that recovery
    -- tells them from entries lost (entries-added = length + trimmed).
    local removed = redis.call('XTRIM', KEYS[4], 'MINID', ARGV[i + 1])
    if removed > 0 then redis.call('INCRBY', KEYS[6], removed) end
    i = i + 3
  elseif op == 'D' or op == 'X' then
    -- A removal by range looks its keys up; a removal of one key names it.
    local doomed = {}
    while ARGV[i] == 'D' or ARGV[i] == 'X' do
      if ARGV[i] == 'X' then
        doomed[#doomed + 1] = ARGV[i + 1]
      else
        for _, key in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], ARGV[i + 1], ARGV[i + 2])) do
          doomed[#doomed + 1] = key
        end
      end
      i = i + 3
    end
    sliced('ZREM', KEYS[1], doomed)
    sliced('HDEL', KEYS[2], doomed)
  else
    local values, members = {}, {}
    while ARGV[i] == 'P' or ARGV[i] == 'N' do
      values[#values + 1] = ARGV[i + 1]
      values[#values + 1] = ARGV[i + 2]
      members[#members + 1] = 0
      members[#members + 1] = ARGV[i + 1]
      i = i + 3
    end
    sliced('HSET', KEYS[2], values)
    sliced('ZADD', KEYS[1], members)
  end
end
return {1, highest, ''}
"#;

/// Reads a page. KEYS as for [`APPLY`] (it reads the first two); ARGV: min, max (a `ZRANGEBYLEX` range), count. Returns
/// key, value, key, value, ... (a value is nil when the hash lacks it).
const SCAN: &str = r#"#!lua flags=no-writes
local keys = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])
if #keys == 0 then
  return {}
end
local values = redis.call('HMGET', KEYS[2], unpack(keys))
local out = {}
for i = 1, #keys do
  out[2 * i - 1] = keys[i]
  out[2 * i] = values[i]
end
return out
"#;

/// The stream id of output record `seq`: `0-(seq+1)` (a stream id above `0-0` is needed).
fn stream_id(seq: u64) -> String {
    format!("0-{}", u128::from(seq) + 1)
}

fn parse_stream_id(id: &str) -> Option<u64> {
    let n: u64 = id.strip_prefix("0-")?.parse().ok()?;
    n.checked_sub(1)
}

/// The readable fields of a log entry, for other Redis clients (`XREAD`, consumer groups); the
/// store itself reads back only the `record` field, the exact encoding.
fn stream_fields(seq: u64, value: &[u8]) -> Result<Vec<(&'static str, String)>, StoreError> {
    if value.first() == Some(&codec::OUTPUT_BLOCK) {
        // A block: `first` leads, so that the script refuses a block reaching back into the log.
        let key = codec::output_key(seq);
        let records = codec::split_output(&key, seq, value)?;
        let first = records.first().map_or(seq, |(first, _)| *first);
        return Ok(vec![
            ("first", first.to_string()),
            ("last", seq.to_string()),
            ("records", records.len().to_string()),
        ]);
    }
    let record = codec::decode_output(&codec::output_key(seq), value, &|_| {
        Err(StoreError::Backend(
            "a Redis output record refers to a payload log, which only a sled store has".to_owned(),
        ))
    })?;
    let window = &record.window;
    let mut fields = vec![
        ("seq", record.seq.to_string()),
        ("epoch", record.epoch.to_string()),
        ("reason", window.reason.as_str().to_owned()),
        ("start_ms", window.window.start.as_millis().to_string()),
        ("end_ms", window.window.end().as_millis().to_string()),
        ("count", window.ids.len().to_string()),
    ];
    if let Some(key) = &window.window.key {
        fields.push(("key", key.to_string()));
    }
    Ok(fields)
}

/// The `ZRANGEBYLEX` bound that includes `key`.
fn inclusive(key: &[u8]) -> Vec<u8> {
    [b"[".as_slice(), key].concat()
}

/// The `ZRANGEBYLEX` upper bound just past every key that starts with `prefix`: the shortest
/// key greater than all of them, exclusive, which is the prefix without its trailing 0xff bytes
/// and with its last byte incremented; `+` (no bound) when no such key exists (the prefix is
/// empty or all 0xff).
fn exclusive_upper(prefix: &[u8]) -> Vec<u8> {
    let kept = prefix.len() - prefix.iter().rev().take_while(|&&b| b == 0xff).count();
    match prefix[..kept].split_last() {
        Some((last, head)) => [b"(".as_slice(), head, &[last + 1]].concat(),
        None => b"+".to_vec(),
    }
}

/// `url` with its password (or whole user part) replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bounds_cover_exactly_the_prefix() {
        assert_eq!(exclusive_upper(b"a"), b"(b");
        assert_eq!(exclusive_upper(b"ab"), b"(ac");
        assert_eq!(exclusive_upper(b"a\xff"), b"(b");
        assert_eq!(exclusive_upper(b"a\xfe\xff\xff"), b"(a\xff");
        assert_eq!(exclusive_upper(b"\x00"), b"(\x01");
        assert_eq!(exclusive_upper(b"\xff"), b"+");
        assert_eq!(exclusive_upper(b"\xff\xff"), b"+");
        assert_eq!(exclusive_upper(b""), b"+");
        // Every key with the prefix sorts below the bound; the first key past them does not.
        for prefix in [&b"a"[..], b"a\xff", b"W\x00\xff\x10", b"\x01\xff\xff"] {
            let bound = &exclusive_upper(prefix)[1..];
            let mut inside = prefix.to_vec();
            inside.extend([0xff; 8]);
            assert!(inside.as_slice() < bound, "{prefix:?}");
            assert!(!bound.starts_with(prefix), "{prefix:?}");
        }
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("redis://:secret@db.example:6379/0"),
            "redis://***@db.example:6379/0"
        );
        assert_eq!(redact("redis://u:p@h/"), "redis://***@h/");
        assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
        assert_eq!(redact("nonsense"), "nonsense");
    }
}
