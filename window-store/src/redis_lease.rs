//! The coordinator lease of one Redis namespace: the shared place several `window-node serve`
//! processes on different machines compete in.
//!
//! This module only carries decisions out; which one to take is the node's pure `lease` module.
//! Two keys of the namespace, under its hash tag so one script may touch both (and Redis Cluster
//! keeps them with the store's keys):
//! - `{wn:NAME}:lease`: `"EPOCH HOLDER"`, set with `PX` so that Redis removes it when its holder
//!   stops renewing. Its remaining time (`PTTL`) is read with it.
//! - `{wn:NAME}:epoch`: the fencing epoch, shared with the store. An acquisition raises it to the
//!   new holder's epoch in the same script that takes the lease, so from that moment the store
//!   refuses every batch of an older holder (see the `redis` module's "Fencing"), whether or not
//!   the new holder has written yet.
//!
//! Every write is a compare-and-set in one Lua script: [`RedisLease::try_acquire`] against the
//! whole [`LeaseView`] it was decided on (lease value and epoch), [`RedisLease::renew`] and
//! [`RedisLease::release`] against the holder's own value.

use std::time::Duration;

use crate::error::StoreError;
use crate::redis::{RedisLink, check_namespace, namespaced};

/// What the lease keys held, in one atomic look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// The current holding; `None` when the lease key is absent (never taken, released, or
    /// expired by Redis).
    pub holding: Option<Holding>,
    /// The fencing epoch: the highest any holder was granted or any batch carried; 0 before the
    /// first.
    pub epoch: u64,
    /// The raw values the view was read from, for the compare-and-set.
    raw_lease: String,
    raw_epoch: String,
}

/// A live lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    /// The holder's node id (its advertised address).
    pub holder: String,
    /// The epoch granted to this holding.
    pub epoch: u64,
    /// How long Redis keeps the lease unless it is renewed (its `PTTL`).
    pub remaining: Duration,
}

/// A connection to the lease keys of one namespace.
#[derive(Debug)]
pub struct RedisLease {
    link: RedisLink,
    lease_key: String,
    epoch_key: String,
    observe: redis::Script,
    acquire: redis::Script,
    renew: redis::Script,
    release: redis::Script,
}

impl RedisLease {
    /// Connects to the Redis server at `url` for the lease of `namespace` (the namespace of the
    /// store it guards). Errors as for [`crate::RedisStore::connect`].
    pub fn connect(url: &str, namespace: &str) -> Result<RedisLease, StoreError> {
        check_namespace(namespace)?;
        Ok(RedisLease {
            link: RedisLink::open(url)?,
            lease_key: namespaced(namespace, "lease"),
            epoch_key: namespaced(namespace, "epoch"),
            observe: redis::Script::new(OBSERVE),
            acquire: redis::Script::new(ACQUIRE),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
        })
    }

    /// Reads the lease and the fencing epoch in one look.
    pub fn observe(&mut self) -> Result<LeaseView, StoreError> {
        let con = self.link.ready()?;
        let reply = self
            .observe
            .key(&self.lease_key)
            .key(&self.epoch_key)
            .invoke(con);
        let (raw_lease, pttl, raw_epoch): (String, i64, String) =
            reply.map_err(|e| self.link.failed("reading the lease", e))?;
        let epoch = if raw_epoch.is_empty() {
            0
        } else {
            parse_epoch(&self.epoch_key, &raw_epoch)?
        };
        let holding = if raw_lease.is_empty() {
            None
        } else {
            let (epoch, holder) = raw_lease.split_once(' ').ok_or_else(|| {
                StoreError::corrupt(
                    self.lease_key.as_bytes(),
                    format!("the lease {raw_lease:?} is not \"EPOCH HOLDER\""),
                )
            })?;
            Some(Holding {
                holder: holder.to_owned(),
                epoch: parse_epoch(&self.lease_key, epoch)?,
                // -1 (no expiry) cannot happen through this module (only by a hand-made key):
                // such a lease never ends by itself, and a holder renewing it gives it a ttl.
                remaining: if pttl < 0 {
                    Duration::MAX
                } else {
                    Duration::from_millis(pttl.unsigned_abs())
                },
            })
        };
        Ok(LeaseView {
            holding,
            epoch,
            raw_lease,
            raw_epoch,
        })
    }

    /// Takes the lease for `holder` with `epoch` for `ttl`, if the keys still hold what `seen`
    /// read; raises the fencing epoch to `epoch` in the same step. `false` when they changed:
    /// observe and decide again.
    pub fn try_acquire(
        &mut self,
        seen: &LeaseView,
        holder: &str,
        epoch: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        if epoch <= seen.epoch {
            return Err(StoreError::InvalidBatch(format!(
                "a lease must take an epoch above {}, not {epoch}",
                seen.epoch
            )));
        }
        let con = self.link.ready()?;
        let reply = self
            .acquire
            .key(&self.lease_key)
            .key(&self.epoch_key)
            .arg(&seen.raw_lease)
            .arg(&seen.raw_epoch)
            .arg(value(holder, epoch))
            .arg(epoch.to_string())
            .arg(millis(ttl))
            .invoke(con);
        let taken: i64 = reply.map_err(|e| self.link.failed("taking the lease", e))?;
        Ok(taken == 1)
    }

    /// Extends the lease of `holder` at `epoch` to `ttl` from now (by Redis's clock). `false`
    /// when the lease is no longer theirs.
    pub fn renew(&mut self, holder: &str, epoch: u64, ttl: Duration) -> Result<bool, StoreError> {
        let con = self.link.ready()?;
        let reply = self
            .renew
            .key(&self.lease_key)
            .key(&self.epoch_key)
            .arg(value(holder, epoch))
            .arg(millis(ttl))
            .invoke(con);
        let renewed: i64 = reply.map_err(|e| self.link.failed("renewing the lease", e))?;
        Ok(renewed == 1)
    }

    /// Gives the lease up (a clean shutdown), so that a follower takes over without waiting for
    /// it to expire. `false` when it was no longer theirs.
    pub fn release(&mut self, holder: &str, epoch: u64) -> Result<bool, StoreError> {
        let con = self.link.ready()?;
        let reply = self
            .release
            .key(&self.lease_key)
            .key(&self.epoch_key)
            .arg(value(holder, epoch))
            .invoke(con);
        let released: i64 = reply.map_err(|e| self.link.failed("releasing the lease", e))?;
        Ok(released == 1)
    }
}

fn value(holder: &str, epoch: u64) -> String {
    format!("{epoch} {holder}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn parse_epoch(key: &str, text: &str) -> Result<u64, StoreError> {
    text.parse().map_err(|_| {
        StoreError::corrupt(
            key.as_bytes(),
            format!("the fencing epoch {text:?} is not a number"),
        )
    })
}

/// KEYS: lease, epoch. Returns the lease value ('' when absent), its PTTL, the epoch ('' when
/// absent).
const OBSERVE: &str = r#"#!lua flags=no-writes
return {redis.call('GET', KEYS[1]) or '', redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2]) or ''}
"#;

/// KEYS: lease, epoch. ARGV: the lease value and epoch seen ('' for absent), the new value, the
/// new epoch, the ttl in ms. Returns 1 when taken, 0 when the keys changed since they were seen.
const ACQUIRE: &str = r#"#!lua
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] or (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[4])
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[5])
return 1
"#;

/// KEYS: lease, epoch (unused; declared so the script names every key it may touch). ARGV: the
/// holder's value, the ttl in ms. Returns 1 when renewed, 0 when the lease is not the holder's.
const RENEW: &str = r#"#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: lease, epoch (unused). ARGV: the holder's value. Returns 1 when released. It runs even
/// when Redis is over `maxmemory` (`allow-oom`: it only deletes), so a holder that stops because
/// Redis refused its writes can still let a follower take over at once.
const RELEASE: &str = r#"#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;
