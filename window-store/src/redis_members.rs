//! The members of a partitioned Redis namespace: which nodes are alive, so that each takes its
//! fair share of the partitions, and how many partitions the namespace was made with.
//!
//! Two keys under the namespace's own hash tag (`{wn:NAME}`; every partition lives in a
//! namespace of its own, `NAME.i~t` or `NAME.i` as recorded below, with its own tag, lease and
//! store):
//! - `{wn:NAME}:nodes`: a sorted set of node ids scored by when their membership ends, in
//!   milliseconds of *Redis's* clock (`TIME`), so no node compares its clock with another's. A
//!   node re-announces itself well before its score passes; every announcement first drops the
//!   members whose score has passed (nodes that died).
//! - `{wn:NAME}:partitions`: the number of partitions, set by the first node and never changed
//!   (1 for a namespace whose unpartitioned store exists already). A node started with another
//!   number refuses to run: keys hash to partitions by that number, so two numbers at once would
//!   put one key's windows in two places. A namespace of more than one partition made by this
//!   build records `N spread`: its partitions' namespaces are named so that their hash tags
//!   spread over a cluster's slots (`window_cluster::partition::PartitionLayout::Spread`); a
//!   bare `N` (made by an earlier build) keeps the plain names `NAME.i`. Builds before the
//!   spread layout refuse a namespace that records it (not a number), rather than look for its
//!   partitions under the wrong names.

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

    /// Records `count` as the namespace's number of partitions if none is recorded yet (with
    /// the spread layout when `count` is above 1 and `spread` says so), and returns what is
    /// recorded: the number (another than `count` when the namespace was made with another) and
    /// whether its partitions use the spread layout.
    ///
    /// A namespace that holds an unpartitioned store already (from before the number was
    /// recorded) counts as one partition: its windows must not be left behind unseen.
    pub fn claim_partitions(&mut self, count: u32, spread: bool) -> Result<Recorded, StoreError> {
        // Read first: once recorded, the number is only read, so a node restarting while Redis
        // refuses writes (maxmemory) is not stopped by a write it does not need.
        if let Some(recorded) = self.recorded()? {
            return Ok(recorded);
        }
        let asked = Recorded {
            count,
            spread: count > 1 && spread,
        };
        let con = self.link.ready()?;
        let reply = self
            .claim
            .key(&self.partitions_key)
            .key(&self.epoch_key)
            .arg(asked.to_string())
            .invoke(con);
        let recorded: String =
            reply.map_err(|e| self.link.failed("recording the number of partitions", e))?;
        self.parse(&recorded)
    }

    /// What the namespace records of its partitions, if anything (one read).
    pub fn recorded(&mut self) -> Result<Option<Recorded>, StoreError> {
        let known: Result<Option<String>, _> = redis::cmd("GET")
            .arg(&self.partitions_key)
            .query(self.link.ready()?);
        let known = known.map_err(|e| self.link.failed("reading the number of partitions", e))?;
        known.map(|text| self.parse(&text)).transpose()
    }

    fn parse(&self, recorded: &str) -> Result<Recorded, StoreError> {
        Recorded::parse(recorded).ok_or_else(|| {
            StoreError::corrupt(
                self.partitions_key.as_bytes(),
                format!(
                    "the number of partitions {recorded:?} is not a number, or a number and \"{SPREAD}\""
                ),
            )
        })
    }

    /// Whether any of `namespaces` was ever written or leased (its fencing epoch exists): one
    /// read each, so on a cluster each goes to the master of that namespace.
    pub fn any_in_use(&mut self, namespaces: &[String]) -> Result<bool, StoreError> {
        for namespace in namespaces {
            let epoch = namespaced(namespace, "epoch");
            let found: Result<bool, _> = redis::cmd("EXISTS").arg(&epoch).query(self.link.ready()?);
            if found.map_err(|e| self.link.failed("looking for the partitions' stores", e))? {
                return Ok(true);
            }
        }
        Ok(false)
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

/// The word after the number of partitions of a namespace with the spread layout.
const SPREAD: &str = "spread";

/// What `{wn:NAME}:partitions` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The number of partitions.
    pub count: u32,
    /// The partitions' namespaces use the spread layout (else the plain one, `NAME.i`).
    pub spread: bool,
}

impl std::fmt::Display for Recorded {
    /// The record's text: the number, then ` spread` with the spread layout.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.spread {
            true => write!(f, "{} {SPREAD}", self.count),
            false => write!(f, "{}", self.count),
        }
    }
}

impl Recorded {
    /// Reads what [`Display`](std::fmt::Display) writes (and nothing else).
    fn parse(text: &str) -> Option<Recorded> {
        let mut words = text.split(' ');
        let count = words
            .next()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))?;
        let count: u32 = count.parse().ok()?;
        let spread = match words.next() {
            None => false,
            Some(SPREAD) => true,
            Some(_) => return None,
        };
        (words.next().is_none() && !(spread && count < 2)).then_some(Recorded { count, spread })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_a_number_and_maybe_the_spread_layout() {
        let plain = |count| {
            Some(Recorded {
                count,
                spread: false,
            })
        };
        assert_eq!(Recorded::parse("6"), plain(6));
        assert_eq!(Recorded::parse("1"), plain(1));
        assert_eq!(
            Recorded::parse("6 spread"),
            Some(Recorded {
                count: 6,
                spread: true
            })
        );
        for bad in [
            "",
            "six",
            "6 plain",
            "6 spread x",
            "6  spread",
            " 6",
            "-1",
            "+6",
            "1 spread",
        ] {
            assert_eq!(Recorded::parse(bad), None, "{bad:?}");
        }
    }
}
