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
//! - `{wn:NAME}:id`: the namespace's identity (see the `redis_namespace` module), created by the
//!   first acquisition in a namespace that has none, beside the epoch.
//!
//! Every write is a compare-and-set in one Lua script: [`RedisLease::try_acquire`] against the
//! whole [`LeaseView`] it was decided on (lease value, epoch and identity), [`RedisLease::renew`]
//! and [`RedisLease::release`] against the holder's own value.
//!
//! A connection learns the namespace's identity the first time it sees one (an observation or
//! its own acquisition). From then on an observation, an acquisition or a renewal that finds the
//! identity missing or another, or the fencing epoch missing (or, renewing, below the holder's
//! own), is refused with [`StoreError::NamespaceLost`]: the namespace was wiped or replaced under
//! this process, which must stop rather than take a lease in the namespace as if it were new.

use std::time::Duration;

use crate::error::StoreError;
use crate::redis::{RedisLink, check_namespace, namespaced};
use crate::redis_namespace;

/// What the lease keys held, in one atomic look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// The current holding; `None` when the lease key is absent (never taken, released, or
    /// expired by Redis).
    pub holding: Option<Holding>,
    /// The fencing epoch: the highest any holder was granted or any batch carried; 0 before the
    /// first.
    pub epoch: u64,
    /// The namespace's identity; `None` before the first acquisition (or batch) in it.
    pub identity: Option<String>,
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
    namespace: String,
    lease_key: String,
    epoch_key: String,
    id_key: String,
    /// The namespace's identity, once this connection has seen it.
    identity: Option<String>,
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
            namespace: namespace.to_owned(),
            lease_key: namespaced(namespace, "lease"),
            epoch_key: namespaced(namespace, "epoch"),
            id_key: namespaced(namespace, "id"),
            identity: None,
            observe: redis::Script::new(OBSERVE),
            acquire: redis::Script::new(ACQUIRE),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
        })
    }

    /// The namespace's identity, once this connection has seen it (after an observation that
    /// found one, or its own acquisition): what the store of a holder checks its batches against
    /// ([`crate::RedisBackend::set_identity`]).
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The error for this namespace, lost or replaced.
    fn lost(&self, reason: String) -> StoreError {
        redis_namespace::lost(&self.namespace, reason)
    }

    /// Reads the lease, the fencing epoch and the identity in one look. Refused with
    /// [`StoreError::NamespaceLost`] when this connection knew the namespace's identity and it
    /// is missing or another, or the epoch is missing.
    pub fn observe(&mut self) -> Result<LeaseView, StoreError> {
        let con = self.link.ready()?;
        let reply = self
            .observe
            .key(&self.lease_key)
            .key(&self.epoch_key)
            .key(&self.id_key)
            .invoke(con);
        let (raw_lease, pttl, raw_epoch, raw_id): (String, i64, String, String) =
            reply.map_err(|e| self.link.failed("reading the lease", e))?;
        if let Some(known) = &self.identity {
            if raw_id.is_empty() {
                return Err(self.lost(redis_namespace::missing_identity(&self.id_key, known)));
            }
            if raw_id != *known {
                return Err(self.lost(redis_namespace::other_identity(
                    &self.id_key,
                    known,
                    &raw_id,
                )));
            }
            if raw_epoch.is_empty() {
                return Err(self.lost(redis_namespace::missing_epoch(&self.epoch_key)));
            }
        }
        let identity = (!raw_id.is_empty()).then_some(raw_id);
        if identity.is_some() {
            self.identity.clone_from(&identity);
        }
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
            identity,
            raw_lease,
            raw_epoch,
        })
    }

    /// Takes the lease for `holder` with `epoch` for `ttl`, if the keys still hold what `seen`
    /// read; raises the fencing epoch to `epoch` in the same step, and creates the namespace's
    /// identity if it has none. `false` when they changed: observe and decide again.
    /// [`StoreError::NamespaceLost`] when this connection knew the identity and the namespace
    /// no longer holds it.
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
        let known = self.identity.clone().unwrap_or_default();
        let proposed = match &seen.identity {
            Some(identity) => identity.clone(),
            None => redis_namespace::fresh()?,
        };
        let con = self.link.ready()?;
        let reply = self
            .acquire
            .key(&self.lease_key)
            .key(&self.epoch_key)
            .key(&self.id_key)
            .arg(&seen.raw_lease)
            .arg(&seen.raw_epoch)
            .arg(value(holder, epoch))
            .arg(epoch.to_string())
            .arg(millis(ttl))
            .arg(seen.identity.as_deref().unwrap_or(""))
            .arg(&proposed)
            .arg(&known)
            .invoke(con);
        let (taken, found): (i64, String) =
            reply.map_err(|e| self.link.failed("taking the lease", e))?;
        match taken {
            1 => {
                self.identity = Some(proposed);
                Ok(true)
            }
            -3..=-1 => Err(self.identity_refused(taken, &known, &found)),
            _ => Ok(false),
        }
    }

    /// The error of a script that found the namespace without the identity this connection
    /// knew (-1), with another (-2), or without a fencing epoch (-3).
    fn identity_refused(&self, code: i64, known: &str, found: &str) -> StoreError {
        self.lost(match code {
            -1 => redis_namespace::missing_identity(&self.id_key, known),
            -2 => redis_namespace::other_identity(&self.id_key, known, found),
            _ => redis_namespace::missing_epoch(&self.epoch_key),
        })
    }

    /// Extends the lease of `holder` at `epoch` to `ttl` from now (by Redis's clock). `false`
    /// when the lease is no longer theirs. [`StoreError::NamespaceLost`] when the namespace no
    /// longer holds the identity this connection knew, or holds no fencing epoch, or one below
    /// `epoch` (a replica promoted without the writes that raised it).
    pub fn renew(&mut self, holder: &str, epoch: u64, ttl: Duration) -> Result<bool, StoreError> {
        let known = self.identity.clone().unwrap_or_default();
        let con = self.link.ready()?;
        let reply = self
            .renew
            .key(&self.lease_key)
            .key(&self.epoch_key)
            .key(&self.id_key)
            .arg(value(holder, epoch))
            .arg(millis(ttl))
            .arg(&known)
            .arg(epoch.to_string())
            .invoke(con);
        let (renewed, found): (i64, String) =
            reply.map_err(|e| self.link.failed("renewing the lease", e))?;
        match renewed {
            1 => Ok(true),
            -3..=-1 => Err(self.identity_refused(renewed, &known, &found)),
            -4 => Err(self.lost(format!(
                "its fencing epoch {} went back from {epoch} (this holder's) to {found}",
                self.epoch_key
            ))),
            _ => Ok(false),
        }
    }

    /// Gives the lease up (a clean shutdown), so that a follower takes over without waiting for
    /// it to expire. `false` when it was no longer theirs.
    pub fn release(&mut self, holder: &str, epoch: u64) -> Result<bool, StoreError> {
        let con = self.link.ready()?;
        let reply = self
            .release
            .key(&self.lease_key)
            .key(&self.epoch_key)
            .key(&self.id_key)
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

/// KEYS: lease, epoch, identity. Returns the lease value ('' when absent), its PTTL, the epoch
/// and the identity ('' when absent).
const OBSERVE: &str = r#"#!lua flags=no-writes
return {redis.call('GET', KEYS[1]) or '', redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2]) or '', redis.call('GET', KEYS[3]) or ''}
"#;

/// KEYS: lease, epoch, identity. ARGV: the lease value and epoch seen ('' for absent), the new
/// value, the new epoch, the ttl in ms, the identity seen ('' for absent), the identity to
/// create if absent, the identity this connection knew ('' for none). Returns `{1, ''}` when
/// taken, `{0, ''}` when the keys changed since they were seen, and, when a known identity is
/// missing `{-1, ''}`, another `{-2, found}`, or the epoch missing `{-3, ''}` (nothing written).
const ACQUIRE: &str = r#"#!lua
local id = redis.call('GET', KEYS[3])
local epoch = redis.call('GET', KEYS[2])
if ARGV[8] ~= '' then
  if not id then return {-1, ''} end
  if id ~= ARGV[8] then return {-2, id} end
  if not epoch then return {-3, ''} end
end
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] or (epoch or '') ~= ARGV[2] or (id or '') ~= ARGV[6] then
  return {0, ''}
end
redis.call('SET', KEYS[2], ARGV[4])
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[5])
if not id then
  redis.call('SET', KEYS[3], ARGV[7], 'NX')
end
return {1, ''}
"#;

/// KEYS: lease, epoch, identity. ARGV: the holder's value, the ttl in ms, the identity known
/// ('' for none: not checked), the holder's epoch. Returns `{1, ''}` when renewed, `{0, ''}`
/// when the lease is not the holder's, and (nothing written) `{-1, ''}` when the known identity
/// is missing, `{-2, found}` when it is another, `{-3, ''}` when the epoch is missing, `{-4,
/// epoch}` when the epoch is below the holder's (epochs are decimal strings without leading
/// zeros, compared by length, then by digits: exact for all of `u64`, which Lua's doubles are
/// not).
const RENEW: &str = r#"#!lua
if ARGV[3] ~= '' then
  local id = redis.call('GET', KEYS[3])
  if not id then return {-1, ''} end
  if id ~= ARGV[3] then return {-2, id} end
  local epoch = redis.call('GET', KEYS[2])
  if not epoch then return {-3, ''} end
  if #epoch < #ARGV[4] or (#epoch == #ARGV[4] and epoch < ARGV[4]) then return {-4, epoch} end
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, ''}
end
return {0, ''}
"#;

/// KEYS: lease, epoch, identity (both unused). ARGV: the holder's value. Returns 1 when released. It runs even
/// when Redis is over `maxmemory` (`allow-oom`: it only deletes), so a holder that stops because
/// Redis refused its writes can still let a follower take over at once.
const RELEASE: &str = r#"#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;
