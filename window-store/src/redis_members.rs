//! The members of a partitioned Redis namespace: which nodes are alive, so that each takes its
//! fair share of the partitions, and how many partitions the namespace was made with.
//!
//! Two keys under the namespace's own hash tag (`{wn:NAME}`; every partition `i` lives in the
//! namespace `NAME.i`, with its own tag, lease and store):
//! - `{wn:NAME}:nodes`: a sorted set of node ids scored by when their membership ends, in
//!   milliseconds of *Redis's* clock (`TIME`), so no node compares its clock with another's. A
//!   node re-announces itself well before its score passes; every announcement first drops the
//!   members whose score has passed (nodes that died).
//! - `{wn:NAME}:partitions`: the number of partitions, set by the first node and never changed
//!   (1 for a namespace whose unpartitioned store exists already). A node started with another
//!   number refuses to run: keys hash to partitions by that number, so two numbers at once would
//!   put one key's windows in two places.

use std::time::Duration;

use crate::error::StoreError;
use crate::redis::{RedisLink, check_namespace, namespaced};

/// A connection to the membership keys of one namespace.
#[derive(Debug)]
pub struct RedisMembership {
    link: RedisLink,
    nodes_key: String,
    partitions_key: String,
    /// The unpartitioned store's fencing epoch, which exists once it was ever written.
    epoch_key: String,
    announce: redis::Script,
    claim: redis::Script,
}

impl RedisMembership {
    /// Connects to the Redis server at `url` for the members of `namespace`. Errors as for
    /// [`crate::RedisStore::connect`].
    pub fn connect(url: &str, namespace: &str) -> Result<RedisMembership, StoreError> {
        check_namespace(namespace)?;
        Ok(RedisMembership {
            link: RedisLink::open(url)?,
            nodes_key: namespaced(namespace, "nodes"),
            partitions_key: namespaced(namespace, "partitions"),
            epoch_key: namespaced(namespace, "epoch"),
            announce: redis::Script::new(ANNOUNCE),
            claim: redis::Script::new(CLAIM),
        })
    }

    /// Records `count` as the namespace's number of partitions if none is recorded yet, and
    /// returns the recorded number (another than `count` when the namespace was made with
    /// another).
    ///
    /// A namespace that holds an unpartitioned store already (from before the number was
    /// recorded) counts as one partition: its windows must not be left behind unseen.
    pub fn claim_partitions(&mut self, count: u32) -> Result<u32, StoreError> {
        // Read first: once recorded, the number is only read, so a node restarting while Redis
        // refuses writes (maxmemory) is not stopped by a write it does not need.
        let known: Result<Option<String>, _> = redis::cmd("GET")
            .arg(&self.partitions_key)
            .query(self.link.ready()?);
        let known = known.map_err(|e| self.link.failed("reading the number of partitions", e))?;
        let reply = match known {
            Some(recorded) => Ok(recorded),
            None => {
                let con = self.link.ready()?;
                self.claim
                    .key(&self.partitions_key)
                    .key(&self.epoch_key)
                    .arg(count)
                    .invoke(con)
            }
        };
        let recorded: String =
            reply.map_err(|e| self.link.failed("recording the number of partitions", e))?;
        recorded.parse().map_err(|_| {
            StoreError::corrupt(
                self.partitions_key.as_bytes(),
                format!("the number of partitions {recorded:?} is not a number"),
            )
        })
    }

    /// Announces `node` as alive for `ttl` (by Redis's clock), drops members whose time has
    /// passed, and returns how many members are alive, `node` included.
    pub fn announce(&mut self, node: &str, ttl: Duration) -> Result<u32, StoreError> {
        let con = self.link.ready()?;
        let reply = self
            .announce
            .key(&self.nodes_key)
            .arg(node)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke(con);
        let live: u32 = reply.map_err(|e| self.link.failed("announcing this node", e))?;
        Ok(live)
    }

    /// Removes `node` from the members (a clean shutdown), so the others take its share at once.
    pub fn leave(&mut self, node: &str) -> Result<(), StoreError> {
        let con = self.link.ready()?;
        let reply: redis::RedisResult<i64> =
            redis::cmd("ZREM").arg(&self.nodes_key).arg(node).query(con);
        reply
            .map(drop)
            .map_err(|e| self.link.failed("leaving the members", e))
    }
}

/// KEYS: the number of partitions, the unpartitioned store's epoch. ARGV: the number asked for.
/// Returns the recorded number.
const CLAIM: &str = r#"#!lua
local n = redis.call('GET', KEYS[1])
if not n then
  if redis.call('EXISTS', KEYS[2]) == 1 then n = '1' else n = ARGV[1] end
  redis.call('SET', KEYS[1], n)
end
return n
"#;

/// KEYS: the members. ARGV: the node, its ttl in ms. Returns the number of live members.
const ANNOUNCE: &str = r#"#!lua
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZCARD', KEYS[1])
"#;
