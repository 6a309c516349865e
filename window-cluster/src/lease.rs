//! Pure lease decisions: which process is the coordinator, and when it may fire.
//!
//! Several processes compete for one lease: the holder fires windows, the others follow it. This
//! module decides, from what a process observed in the shared place (the lease file or Redis) and
//! the time on its own clock, what it should do next. It does no I/O and reads no clock, so every
//! rule here is tested with explicit timestamps. The mechanisms carry the decisions out.
//!
//! Main items: [`decide`] (an [`Observation`] + now -> a [`Decision`]), [`may_fire`] (the holder's
//! check before each fire) and `accept_fire` (the storage side's fencing rule, which the store's
//! Lua script applies; here as the model the tests check against), with [`LeaseConfig`],
//! [`LeaseRecord`] and [`HeldLease`].
//!
//! What it deliberately does not do: it is not the mutual exclusion. Two contenders that observe
//! the same absent or expired lease both decide [`Decision::Acquire`] with the same epoch; the
//! shared place's compare-and-set (or the kernel's file lock) lets one of them win.
//!
//! # The contract for a mechanism
//!
//! 1. Observe the lease record and the highest epoch granted so far in one atomic look.
//! 2. Read the clock after the observation and before any write, and call [`decide`].
//! 3. Carry out `Acquire` and `Renew` as a compare-and-set against the whole observation: holder,
//!    epoch, `expires_at` and the last epoch. Comparing the holder and epoch alone is not enough: a
//!    contender that decided on a record read just before a renewal would overwrite the renewed
//!    lease. A failed compare-and-set means: observe again and decide again.
//! 4. After a successful `Acquire`, restore from storage before firing: every acquisition is a new
//!    epoch, even for a process that held the previous one. After `StepDown`, stop firing, drop
//!    in-memory state and decide again at once with `held = None`.
//! 5. Before each fire call [`may_fire`], and tag the fire with the held epoch; the storage applies
//!    `accept_fire` in the same atomic step as the fire.
//! 6. Decide again at `renew_at` (holder) or `retry_at` (follower).
//!
//! # The two mechanisms
//!
//! - The file lease (`lease_file.rs`, one machine) needs no expiry and no clock: the kernel
//!   releases the lock when its holder dies and never while it lives, even paused. Its
//!   `try_lock` is the compare-and-set; a successful one means the lease is observed absent, with
//!   the last epoch from `DIR/epoch`, so [`decide`] says `Acquire` with that epoch + 1; a failed
//!   one means follow the published coordinator. The ttl rules below never come into play there.
//!   The epoch stamped on fired windows is what `accept_fire` checks.
//! - The Redis lease (`lease_redis.rs`, many machines) is where the ttl, the clock rules and the
//!   fence all matter: a holder can be paused while the others go on. The lease key is set with
//!   `PX`, so Redis's own clock removes it; the mechanism then observes `record: None` and the
//!   last epoch from the fencing epoch key, which every acquisition raises in the same script
//!   (a compare-and-set increment). While the key lives it reports `expires_at` as the local now
//!   plus `PTTL`, so a contender never compares its clock with the holder's.
//!
//! # Whose clock, and the residual risk
//!
//! The holder writes `expires_at` by its own clock; a contender compares it with its own clock.
//! [`LeaseConfig::clock_skew_allowance`] (`A`) is the assumed bound on how far any node's clock is
//! from true time. The holder fires only while `now < expires_at - A` and a contender takes over
//! only when `now > expires_at + A`. If every clock is within `A` of true time, the holder's last
//! fire decision comes before the true `expires_at` and a contender's takeover after it, so the two
//! never overlap. A contender whose clock is ahead of the holder's by less than `A` therefore never
//! takes over before the holder's lease has ended by the holder's clock.
//!
//! Two things are not covered by clocks, and that is the residual risk:
//! - A clock further off than `A`. A contender ahead of the holder by more than `A` takes over
//!   before the lease has ended by the holder's clock; ahead by more than `2A` it takes over while
//!   the holder still believes it may fire.
//! - A pause between [`may_fire`] and the storage applying the fire (a stopped process, a long
//!   network delay): the margin was checked, the fire lands later.
//!
//! Both are handled by the fencing epoch, not by the lease: the storage refuses any fire whose
//! epoch is lower than the highest it has seen. When the storage takes the highest granted epoch
//! (the counter an acquisition raises) as "highest seen", an old holder is fenced from the moment
//! of the takeover rather than from the new holder's first fire, and safety of what goes through
//! the storage does not depend on clocks at all; clocks only decide how often a holder is unseated
//! early. Effects that bypass the storage (anything published from memory) are not fenced.
//!
//! # Why an `Observation` rather than `Option<LeaseRecord>`
//!
//! The epoch must survive the lease record: a Redis `SET NX PX` key vanishes when it expires, and
//! an acquisition must still take an epoch above every earlier one, or the fence would refuse the
//! new holder's fires. So the observation carries the highest epoch granted (the `INCR` counter,
//! or the epoch in the lease file) next to the record, which is `None` when no one holds the lease.
//!
//! # Why `decide` takes the held lease
//!
//! A process that holds the lease and observes a record naming someone else must step down, while
//! one that never held it follows; a process whose id is in the record but that does not hold it
//! (it restarted with the same id, lost the reply to its own write, or just stepped down) owns an
//! orphan and takes it over at once with a new epoch, which fences whatever the earlier holding
//! still has in flight. Only the held lease tells these apart. Node ids must be unique among live
//! processes (the advertised address is): two live processes with one id would unseat each other.
//!
//! Times are [`Timestamp`]s (what the binary's clock hands out) and intervals
//! [`Duration`]s, as elsewhere in the node. Arithmetic saturates rather than panics; that only
//! matters at the ends of `i64` milliseconds, far from any real clock.

use std::fmt;
use std::time::Duration;

use window_core::Timestamp;

/// A lease as stored in the shared place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The holder's node id, unique among live processes.
    pub holder: String,
    /// The fencing epoch granted to this holding; no two holdings share one.
    pub epoch: u64,
    /// When the lease ends, by the holder's clock when it last wrote the record.
    pub expires_at: Timestamp,
}

/// What a process read from the shared place, in one atomic look.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// The current lease; `None` when no one holds it (never taken, released, or removed by the
    /// store at its expiry).
    pub record: Option<LeaseRecord>,
    /// The highest epoch ever granted here, 0 before the first; never below `record`'s epoch.
    pub last_epoch: u64,
}

impl Observation {
    /// The epoch the next acquisition takes: one above every epoch granted so far.
    pub fn next_epoch(&self) -> u64 {
        let recorded = self.record.as_ref().map_or(0, |record| record.epoch);
        // A u64 counter raised once per takeover does not run out.
        self.last_epoch.max(recorded).saturating_add(1)
    }
}

/// The lease this process holds, as its last successful acquire or renew wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLease {
    /// The epoch its fires are tagged with.
    pub epoch: u64,
    /// When the lease ends by this process's clock.
    pub expires_at: Timestamp,
}

/// Lease timings, shared by every process competing for one lease.
///
/// Invariant (checked by [`LeaseConfig::new`]): `0 < renew_every`, `0 < ttl` and
/// `renew_every + clock_skew_allowance < ttl`, so that a holder renews while it still has a
/// margin to fire in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    ttl_ms: i64,
    renew_every_ms: i64,
    skew_ms: i64,
}

impl LeaseConfig {
    /// Lease timings; a third of the ttl is a good `renew_every` (two renewals may fail before
    /// the lease ends).
    pub fn new(
        ttl: Duration,
        renew_every: Duration,
        clock_skew_allowance: Duration,
    ) -> Result<LeaseConfig, LeaseConfigError> {
        let ttl_ms = millis(ttl, "ttl")?;
        let renew_every_ms = millis(renew_every, "renew interval")?;
        let skew_ms = millis(clock_skew_allowance, "clock skew allowance")?;
        if ttl_ms == 0 {
            return Err(LeaseConfigError::ZeroTtl);
        }
        if renew_every_ms == 0 {
            return Err(LeaseConfigError::ZeroRenewInterval);
        }
        if renew_every_ms.saturating_add(skew_ms) >= ttl_ms {
            return Err(LeaseConfigError::NoFiringMargin {
                ttl_ms,
                renew_every_ms,
                skew_ms,
            });
        }
        Ok(LeaseConfig {
            ttl_ms,
            renew_every_ms,
            skew_ms,
        })
    }

    /// How long an acquisition or renewal holds the lease (Redis's `PX`).
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.unsigned_abs())
    }

    /// How often the holder renews, and how often a follower looks again at most.
    pub fn renew_every(&self) -> Duration {
        Duration::from_millis(self.renew_every_ms.unsigned_abs())
    }

    /// The assumed bound on any node's clock error.
    pub fn clock_skew_allowance(&self) -> Duration {
        Duration::from_millis(self.skew_ms.unsigned_abs())
    }
}

/// Lease timings that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseConfigError {
    /// An interval does not fit in `i64` milliseconds.
    TooLong { what: &'static str },
    /// A zero ttl: the lease would end as it is taken.
    ZeroTtl,
    /// A zero renew interval: the holder would renew in a busy loop.
    ZeroRenewInterval,
    /// `renew_every + clock_skew_allowance >= ttl`: the holder would stop firing before it renews.
    NoFiringMargin {
        ttl_ms: i64,
        renew_every_ms: i64,
        skew_ms: i64,
    },
}

impl fmt::Display for LeaseConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseConfigError::TooLong { what } => write!(f, "lease {what} is too long"),
            LeaseConfigError::ZeroTtl => f.write_str("lease ttl must be above zero"),
            LeaseConfigError::ZeroRenewInterval => {
                f.write_str("lease renew interval must be above zero")
            }
            LeaseConfigError::NoFiringMargin {
                ttl_ms,
                renew_every_ms,
                skew_ms,
            } => write!(
                f,
                "lease renew interval ({renew_every_ms} ms) plus clock skew allowance \
                 ({skew_ms} ms) must be below the ttl ({ttl_ms} ms)"
            ),
        }
    }
}

impl std::error::Error for LeaseConfigError {}

/// What a process should do about the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Take the lease with a new epoch (compare-and-set against the observation), restore from
    /// storage, then fire; decide again at `renew_at`.
    Acquire {
        epoch: u64,
        expires_at: Timestamp,
        renew_at: Timestamp,
    },
    /// Extend the held lease (compare-and-set against the observation); decide again at
    /// `renew_at`.
    Renew {
        expires_at: Timestamp,
        renew_at: Timestamp,
    },
    /// Someone else holds the lease: forward to it, and decide again at `retry_at`.
    Follow {
        holder: String,
        epoch: u64,
        retry_at: Timestamp,
    },
    /// Stop firing at once, drop in-memory state, and decide again with no held lease.
    StepDown { reason: StepDownReason },
}

/// Why a holder must step down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepDownReason {
    /// The lease ended by this process's clock before it renewed (it may have been paused past
    /// its ttl, and a contender may already hold the lease).
    Expired { expires_at: Timestamp },
    /// The record names another holding.
    Superseded { holder: String, epoch: u64 },
    /// The record is gone (the store removed it at its expiry, or it was released).
    Vanished,
}

impl fmt::Display for StepDownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepDownReason::Expired { expires_at } => {
                write!(f, "lease expired at {} ms", expires_at.as_millis())
            }
            StepDownReason::Superseded { holder, epoch } => {
                write!(f, "lease taken over by {holder} at epoch {epoch}")
            }
            StepDownReason::Vanished => f.write_str("lease record vanished"),
        }
    }
}

/// The storage side's fencing verdict on a fire. The rule lives in the store's Lua script
/// (`window-store`'s `redis` module); this is its model, which the tests below check the lease
/// decisions against.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceDecision {
    /// Apply the fire, and store `highest_epoch` as the highest epoch seen.
    Accept { highest_epoch: u64 },
    /// Refuse the fire: it comes from a holding older than `highest_epoch`.
    Refuse { highest_epoch: u64 },
}

/// What process `me` should do, holding `held`, having observed `observed` at `now` by its clock.
///
/// - Holding the lease: renew while `now < expires_at`; step down once the lease has ended by its
///   clock, or when the record names another holding or is gone.
/// - Not holding it: acquire (epoch [`Observation::next_epoch`]) when the record is absent, names
///   `me` (an orphan of this id), or has expired with the allowance (`now > expires_at + A`);
///   follow otherwise, looking again after `renew_every` or when the lease can be taken, whichever
///   comes first.
pub fn decide(
    me: &str,
    held: Option<&HeldLease>,
    observed: &Observation,
    now: Timestamp,
    config: &LeaseConfig,
) -> Decision {
    if let Some(held) = held {
        return match &observed.record {
            Some(record) if record.holder == me && record.epoch == held.epoch => {
                // If the two differ, a renewal's outcome was not seen; the earlier end is the safe
                // one to judge by.
                let expires_at = record.expires_at.min(held.expires_at);
                if now < expires_at {
                    Decision::Renew {
                        expires_at: after(now, config.ttl_ms),
                        renew_at: after(now, config.renew_every_ms),
                    }
                } else {
                    Decision::StepDown {
                        reason: StepDownReason::Expired { expires_at },
                    }
                }
            }
            Some(record) => Decision::StepDown {
                reason: StepDownReason::Superseded {
                    holder: record.holder.clone(),
                    epoch: record.epoch,
                },
            },
            None => Decision::StepDown {
                reason: StepDownReason::Vanished,
            },
        };
    }
    match &observed.record {
        Some(record) if record.holder != me => {
            let last_safe = after(record.expires_at, config.skew_ms);
            if now > last_safe {
                acquire(observed, now, config)
            } else {
                Decision::Follow {
                    holder: record.holder.clone(),
                    epoch: record.epoch,
                    retry_at: after(last_safe, 1).min(after(now, config.renew_every_ms)),
                }
            }
        }
        _ => acquire(observed, now, config),
    }
}

/// Whether the holder of `held` may fire at `now` by its clock: only while a margin of the skew
/// allowance is left (`now < expires_at - A`).
pub fn may_fire(held: &HeldLease, now: Timestamp, config: &LeaseConfig) -> bool {
    now < before(held.expires_at, config.skew_ms)
}

/// The storage's fencing rule for a fire tagged `fire_epoch`, given the highest epoch it has seen.
///
/// The storage applies this in the same atomic step as the fire and stores the accepted
/// `highest_epoch`. It should count the epoch counter an acquisition raises as seen, so an old
/// holder is fenced from the takeover on. Fencing does not make a fire idempotent: refusing a
/// window that has already fired is the storage's own check.
#[cfg(test)]
pub fn accept_fire(highest_epoch_seen: u64, fire_epoch: u64) -> FenceDecision {
    if fire_epoch < highest_epoch_seen {
        FenceDecision::Refuse {
            highest_epoch: highest_epoch_seen,
        }
    } else {
        FenceDecision::Accept {
            highest_epoch: fire_epoch,
        }
    }
}

/// With `--partitions`: the most partitions one node should hold while `live` nodes share
/// `partitions` of them, rounded up so that the shares always cover every partition.
///
/// A node takes a free partition only while it holds fewer than its share, and hands over its
/// highest partition while it holds more ([`hand_over`]); so a node that joins gets partitions
/// from the others without anyone firing a window twice (a handover drains the driver and
/// releases the lease; the taker's acquisition raises that partition's epoch).
pub fn fair_share(partitions: u32, live: u32) -> u32 {
    partitions.div_ceil(live.max(1))
}

/// Which held partition to hand over, if any: the highest one while more than `share` are held
/// (one at a time, so that the others take it before the next goes).
pub fn hand_over(held: &std::collections::BTreeSet<u32>, share: u32) -> Option<u32> {
    (held.len() > share as usize)
        .then(|| held.last().copied())
        .flatten()
}

fn acquire(observed: &Observation, now: Timestamp, config: &LeaseConfig) -> Decision {
    Decision::Acquire {
        epoch: observed.next_epoch(),
        expires_at: after(now, config.ttl_ms),
        renew_at: after(now, config.renew_every_ms),
    }
}

fn after(at: Timestamp, ms: i64) -> Timestamp {
    Timestamp::from_millis(at.as_millis().saturating_add(ms))
}

fn before(at: Timestamp, ms: i64) -> Timestamp {
    Timestamp::from_millis(at.as_millis().saturating_sub(ms))
}

fn millis(interval: Duration, what: &'static str) -> Result<i64, LeaseConfigError> {
    i64::try_from(interval.as_millis()).map_err(|_| LeaseConfigError::TooLong { what })
}

#[cfg(test)]
mod tests {
    //! Every test spells out its times: ttl 3000 ms, renew every 1000 ms, skew allowance 200 ms.
    //! `Shared` models the shared place the way the contract requires a mechanism to run it.

    use super::*;

    const TTL: i64 = 3000;
    const SKEW: i64 = 200;

    fn config() -> LeaseConfig {
        LeaseConfig::new(
            Duration::from_millis(3000),
            Duration::from_millis(1000),
            Duration::from_millis(200),
        )
        .expect("valid test config")
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn record(holder: &str, epoch: u64, expires_at: i64) -> Observation {
        Observation {
            record: Some(LeaseRecord {
                holder: holder.to_owned(),
                epoch,
                expires_at: t(expires_at),
            }),
            last_epoch: epoch,
        }
    }

    /// The shared place: writes are compare-and-set against the whole observation they were
    /// decided on, and the fence counts the granted epoch as seen.
    #[derive(Debug, Default)]
    struct Shared {
        state: Observation,
        highest_fired_epoch: u64,
    }

    impl Shared {
        fn holding(holder: &str, epoch: u64, expires_at: i64) -> Shared {
            Shared {
                state: record(holder, epoch, expires_at),
                highest_fired_epoch: 0,
            }
        }

        fn observe(&self) -> Observation {
            self.state.clone()
        }

        /// Carries out an `Acquire` or `Renew`; the new held lease, or `None` when the state is
        /// no longer the one decided on (or there is nothing to write).
        fn write(
            &mut self,
            me: &str,
            seen: &Observation,
            decision: &Decision,
        ) -> Option<HeldLease> {
            if self.state != *seen {
                return None;
            }
            let (epoch, expires_at) = match (decision, &self.state.record) {
                (
                    Decision::Acquire {
                        epoch, expires_at, ..
                    },
                    _,
                ) => (*epoch, *expires_at),
                (Decision::Renew { expires_at, .. }, Some(current)) => (current.epoch, *expires_at),
                _ => return None,
            };
            self.state = Observation {
                record: Some(LeaseRecord {
                    holder: me.to_owned(),
                    epoch,
                    expires_at,
                }),
                last_epoch: self.state.last_epoch.max(epoch),
            };
            Some(HeldLease { epoch, expires_at })
        }

        fn fire(&mut self, epoch: u64) -> FenceDecision {
            let seen = self.highest_fired_epoch.max(self.state.last_epoch);
            let verdict = accept_fire(seen, epoch);
            if let FenceDecision::Accept { highest_epoch } = verdict {
                self.highest_fired_epoch = highest_epoch;
            }
            verdict
        }
    }

    #[test]
    fn two_contenders_race_for_an_absent_lease_and_the_compare_and_set_picks_one() {
        let cfg = config();
        let mut shared = Shared::default();
        let seen_by_a = shared.observe();
        let seen_by_b = shared.observe();

        // Both decide to acquire, with the same epoch: the decision is not the mutual exclusion.
        let a = decide("a", None, &seen_by_a, t(1000), &cfg);
        let b = decide("b", None, &seen_by_b, t(1005), &cfg);
        assert_eq!(
            a,
            Decision::Acquire {
                epoch: 1,
                expires_at: t(4000),
                renew_at: t(2000)
            }
        );
        assert_eq!(
            b,
            Decision::Acquire {
                epoch: 1,
                expires_at: t(4005),
                renew_at: t(2005)
            }
        );

        // The shared place's compare-and-set is: the first write wins, the second finds the state
        // changed under it.
        let held_by_a = shared.write("a", &seen_by_a, &a);
        assert_eq!(
            held_by_a,
            Some(HeldLease {
                epoch: 1,
                expires_at: t(4000)
            })
        );
        assert_eq!(shared.write("b", &seen_by_b, &b), None);

        // B looks again and follows A.
        let b = decide("b", None, &shared.observe(), t(1010), &cfg);
        assert_eq!(
            b,
            Decision::Follow {
                holder: "a".to_owned(),
                epoch: 1,
                retry_at: t(2010)
            }
        );
    }

    #[test]
    fn a_lapsed_lease_is_taken_over_with_a_higher_epoch() {
        let cfg = config();
        let mut shared = Shared::holding("a", 4, 10_000);

        // Up to expires_at + allowance, B follows, and looks again when the lease can be taken.
        for now in [10_000, 10_200] {
            assert_eq!(
                decide("b", None, &shared.observe(), t(now), &cfg),
                Decision::Follow {
                    holder: "a".to_owned(),
                    epoch: 4,
                    retry_at: t(10_201)
                },
                "at {now}"
            );
        }

        let seen = shared.observe();
        let b = decide("b", None, &seen, t(10_201), &cfg);
        assert_eq!(
            b,
            Decision::Acquire {
                epoch: 5,
                expires_at: t(13_201),
                renew_at: t(11_201)
            }
        );
        assert!(shared.write("b", &seen, &b).is_some());

        // B dies without renewing; C takes over from it with the next epoch, once B's lease has
        // ended (13201) with the allowance.
        assert!(matches!(
            decide("c", None, &shared.observe(), t(13_401), &cfg),
            Decision::Follow { epoch: 5, .. }
        ));
        let c = decide("c", None, &shared.observe(), t(13_402), &cfg);
        assert!(matches!(c, Decision::Acquire { epoch: 6, .. }), "{c:?}");
    }

    #[test]
    fn the_epoch_outlives_a_record_the_store_removed() {
        // A Redis `PX` key vanished at its expiry; the epoch counter still says 7.
        let observed = Observation {
            record: None,
            last_epoch: 7,
        };
        let a = decide("a", None, &observed, t(50_000), &config());
        assert!(matches!(a, Decision::Acquire { epoch: 8, .. }), "{a:?}");
    }

    #[test]
    fn a_holder_renews_before_expiry_and_a_stale_contender_loses_to_the_renewal() {
        let cfg = config();
        let mut shared = Shared::default();
        let seen = shared.observe();
        let held = shared
            .write("a", &seen, &decide("a", None, &seen, t(1000), &cfg))
            .expect("uncontended acquire");
        assert_eq!(held.expires_at, t(4000));

        let seen = shared.observe();
        let renew = decide("a", Some(&held), &seen, t(2000), &cfg);
        assert_eq!(
            renew,
            Decision::Renew {
                expires_at: t(5000),
                renew_at: t(3000)
            }
        );
        let held = shared.write("a", &seen, &renew).expect("renewal");
        assert_eq!(
            held,
            HeldLease {
                epoch: 1,
                expires_at: t(5000)
            }
        );

        // B reads the record and then stalls. A's renewals at 3000 and 4000 fail, the one at 4801
        // lands. B resumes at 5201 and, from what it read, decides to take over.
        let seen_by_b = shared.observe();
        let b = decide("b", None, &seen_by_b, t(5201), &cfg);
        assert!(matches!(b, Decision::Acquire { epoch: 2, .. }), "{b:?}");
        let seen_by_a = shared.observe();
        let renew = decide("a", Some(&held), &seen_by_a, t(4801), &cfg);
        assert_eq!(
            renew,
            Decision::Renew {
                expires_at: t(7801),
                renew_at: t(5801)
            }
        );
        assert!(shared.write("a", &seen_by_a, &renew).is_some());
        // B's write compares the whole record, expiry included, so it fails and B follows.
        assert_eq!(shared.write("b", &seen_by_b, &b), None);
        assert!(matches!(
            decide("b", None, &shared.observe(), t(5202), &cfg),
            Decision::Follow { epoch: 1, .. }
        ));

        // The last instant a holder renews is just before its lease ends by its own clock.
        let held = HeldLease {
            epoch: 1,
            expires_at: t(7801),
        };
        assert!(matches!(
            decide("a", Some(&held), &shared.observe(), t(7800), &cfg),
            Decision::Renew { .. }
        ));
        assert_eq!(
            decide("a", Some(&held), &shared.observe(), t(7801), &cfg),
            Decision::StepDown {
                reason: StepDownReason::Expired {
                    expires_at: t(7801)
                }
            }
        );
    }

    #[test]
    fn a_holder_paused_past_its_ttl_steps_down_and_its_late_fire_is_fenced() {
        let cfg = config();
        let mut shared = Shared::holding("a", 1, 4000);
        let held_by_a = HeldLease {
            epoch: 1,
            expires_at: t(4000),
        };
        let stale_view_of_a = shared.observe();

        // At 1500 A may fire, and does; then it is stopped (SIGSTOP) until 9000.
        assert!(may_fire(&held_by_a, t(1500), &cfg));
        assert_eq!(shared.fire(1), FenceDecision::Accept { highest_epoch: 1 });

        // B takes over at 4201 with epoch 2 and keeps renewing.
        let seen = shared.observe();
        let b = decide("b", None, &seen, t(4201), &cfg);
        let mut held_by_b = shared.write("b", &seen, &b).expect("takeover");
        assert_eq!(held_by_b.epoch, 2);
        for now in [5201, 6201, 7201, 8201] {
            let seen = shared.observe();
            let renew = decide("b", Some(&held_by_b), &seen, t(now), &cfg);
            held_by_b = shared.write("b", &seen, &renew).expect("renewal");
        }
        assert_eq!(held_by_b.expires_at, t(11_201));

        // A wakes at 9000 and sends the fire it had prepared before the pause: the storage
        // refuses it, even before B has fired anything, because epoch 2 was granted.
        assert_eq!(shared.fire(1), FenceDecision::Refuse { highest_epoch: 2 });
        // Its own checks agree, whatever it looks at.
        assert!(!may_fire(&held_by_a, t(9000), &cfg));
        assert_eq!(
            decide("a", Some(&held_by_a), &stale_view_of_a, t(9000), &cfg),
            Decision::StepDown {
                reason: StepDownReason::Expired {
                    expires_at: t(4000)
                }
            }
        );
        assert_eq!(
            decide("a", Some(&held_by_a), &shared.observe(), t(9000), &cfg),
            Decision::StepDown {
                reason: StepDownReason::Superseded {
                    holder: "b".to_owned(),
                    epoch: 2
                }
            }
        );
        // Stepped down, it follows B; B's fires go through.
        assert!(matches!(
            decide("a", None, &shared.observe(), t(9000), &cfg),
            Decision::Follow { epoch: 2, .. }
        ));
        assert_eq!(shared.fire(2), FenceDecision::Accept { highest_epoch: 2 });
    }

    #[test]
    fn a_holder_that_wakes_before_anyone_took_over_still_steps_down_and_returns_with_a_new_epoch() {
        let cfg = config();
        let mut shared = Shared::holding("a", 1, 4000);
        let held = HeldLease {
            epoch: 1,
            expires_at: t(4000),
        };

        let seen = shared.observe();
        assert_eq!(
            decide("a", Some(&held), &seen, t(4100), &cfg),
            Decision::StepDown {
                reason: StepDownReason::Expired {
                    expires_at: t(4000)
                }
            }
        );
        // The record still names A, which no longer holds it: an orphan, taken over at once with
        // a new epoch that fences whatever epoch 1 still has in flight.
        let again = decide("a", None, &seen, t(4100), &cfg);
        assert_eq!(
            again,
            Decision::Acquire {
                epoch: 2,
                expires_at: t(7100),
                renew_at: t(5100)
            }
        );
        assert!(shared.write("a", &seen, &again).is_some());
        assert_eq!(shared.fire(1), FenceDecision::Refuse { highest_epoch: 2 });
    }

    #[test]
    fn a_restarted_process_with_the_same_id_takes_its_orphan_over_at_once() {
        // The record is live (expires at 4000), but this incarnation of "a" holds nothing.
        let a = decide("a", None, &record("a", 3, 4000), t(2000), &config());
        assert_eq!(
            a,
            Decision::Acquire {
                epoch: 4,
                expires_at: t(5000),
                renew_at: t(3000)
            }
        );
    }

    #[test]
    fn a_holder_steps_down_when_the_record_vanished_or_names_another_holding() {
        let cfg = config();
        let held = HeldLease {
            epoch: 3,
            expires_at: t(4000),
        };
        let vanished = Observation {
            record: None,
            last_epoch: 3,
        };
        assert_eq!(
            decide("a", Some(&held), &vanished, t(2000), &cfg),
            Decision::StepDown {
                reason: StepDownReason::Vanished
            }
        );
        // The same id with another epoch is another holding (an incarnation of this id).
        assert_eq!(
            decide("a", Some(&held), &record("a", 4, 5000), t(2000), &cfg),
            Decision::StepDown {
                reason: StepDownReason::Superseded {
                    holder: "a".to_owned(),
                    epoch: 4
                }
            }
        );
    }

    /// The first true time at which B, whose clock is `ahead_ms` ahead of A's, decides to take
    /// over A's lease (A's clock is true time; A last wrote expires_at 4000).
    fn first_takeover(ahead_ms: i64) -> i64 {
        let cfg = config();
        let observed = record("a", 1, 4000);
        (1000..6000)
            .find(|&now| {
                matches!(
                    decide("b", None, &observed, t(now + ahead_ms), &cfg),
                    Decision::Acquire { .. }
                )
            })
            .expect("b takes over eventually")
    }

    /// The last true time at which A may still fire on the lease that ends at 4000.
    fn last_fire_of_a() -> i64 {
        let held = HeldLease {
            epoch: 1,
            expires_at: t(4000),
        };
        (1000..6000)
            .rev()
            .find(|&now| may_fire(&held, t(now), &config()))
            .expect("a fires at first")
    }

    #[test]
    fn a_contender_ahead_by_less_than_the_allowance_does_not_take_over_early() {
        assert_eq!(last_fire_of_a(), 4000 - SKEW - 1);
        // On time, and 150 ms ahead: the takeover comes after the lease ended by A's clock.
        assert_eq!(first_takeover(0), 4000 + SKEW + 1);
        assert_eq!(first_takeover(150), 4051);
        assert!(first_takeover(SKEW) > 4000);
    }

    #[test]
    fn a_contender_ahead_by_more_than_the_allowance_can_take_over_early_and_the_fence_is_what_is_left()
     {
        let cfg = config();
        // 300 ms ahead (between A and 2A): B takes over before 4000, A's lease end by its own
        // clock, but after A's last fire, so they still do not overlap.
        assert_eq!(first_takeover(300), 3901);
        assert!(first_takeover(300) > last_fire_of_a());

        // 500 ms ahead (beyond 2A): B takes over at 3701 while A may still fire until 3799.
        // This is the residual risk; only the fence stands between them.
        assert_eq!(first_takeover(500), 3701);
        let mut shared = Shared::holding("a", 1, 4000);
        let seen = shared.observe();
        let b = decide("b", None, &seen, t(3701 + 500), &cfg);
        assert!(shared.write("b", &seen, &b).is_some());
        let held_by_a = HeldLease {
            epoch: 1,
            expires_at: t(4000),
        };
        assert!(may_fire(&held_by_a, t(3750), &cfg));
        assert_eq!(shared.fire(1), FenceDecision::Refuse { highest_epoch: 2 });
    }

    #[test]
    fn may_fire_keeps_a_margin_of_the_allowance_before_expiry() {
        let cfg = config();
        let held = HeldLease {
            epoch: 1,
            expires_at: t(4000),
        };
        assert!(may_fire(&held, t(1000), &cfg));
        assert!(may_fire(&held, t(3799), &cfg));
        assert!(!may_fire(&held, t(3800), &cfg));
        assert!(!may_fire(&held, t(4000), &cfg));

        // With no allowance the margin is gone: fire up to the last millisecond.
        let exact = LeaseConfig::new(
            Duration::from_millis(3000),
            Duration::from_millis(1000),
            Duration::ZERO,
        )
        .expect("valid config");
        assert!(may_fire(&held, t(3999), &exact));
        assert!(!may_fire(&held, t(4000), &exact));
    }

    #[test]
    fn a_follower_looks_again_after_the_renew_interval_or_at_takeover_whichever_is_first() {
        let cfg = config();
        let observed = record("a", 2, 4000);
        let retry_at = |now| match decide("b", None, &observed, t(now), &cfg) {
            Decision::Follow { retry_at, .. } => retry_at,
            other => panic!("expected follow, got {other:?}"),
        };
        assert_eq!(retry_at(1000), t(2000));
        assert_eq!(retry_at(3500), t(4000 + SKEW + 1));
    }

    #[test]
    fn the_fence_refuses_only_fires_from_an_older_epoch() {
        assert_eq!(
            accept_fire(0, 1),
            FenceDecision::Accept { highest_epoch: 1 }
        );
        assert_eq!(
            accept_fire(3, 3),
            FenceDecision::Accept { highest_epoch: 3 }
        );
        assert_eq!(
            accept_fire(3, 5),
            FenceDecision::Accept { highest_epoch: 5 }
        );
        assert_eq!(
            accept_fire(3, 2),
            FenceDecision::Refuse { highest_epoch: 3 }
        );
    }

    #[test]
    fn config_rejects_timings_that_leave_no_firing_margin() {
        let ms = Duration::from_millis;
        assert_eq!(
            LeaseConfig::new(ms(0), ms(0), ms(0)),
            Err(LeaseConfigError::ZeroTtl)
        );
        assert_eq!(
            LeaseConfig::new(ms(3000), ms(0), ms(0)),
            Err(LeaseConfigError::ZeroRenewInterval)
        );
        let no_margin = LeaseConfig::new(ms(3000), ms(2800), ms(200));
        assert_eq!(
            no_margin,
            Err(LeaseConfigError::NoFiringMargin {
                ttl_ms: 3000,
                renew_every_ms: 2800,
                skew_ms: 200
            })
        );
        assert_eq!(
            no_margin.map_err(|e| e.to_string()),
            Err(
                "lease renew interval (2800 ms) plus clock skew allowance (200 ms) must be below \
                 the ttl (3000 ms)"
                    .to_owned()
            )
        );
        assert!(LeaseConfig::new(ms(3000), ms(2799), ms(200)).is_ok());
        assert_eq!(
            LeaseConfig::new(Duration::MAX, ms(1), ms(0)),
            Err(LeaseConfigError::TooLong { what: "ttl" })
        );
        assert_eq!(config().ttl(), ms(TTL.unsigned_abs()));
    }

    #[test]
    fn fair_shares_cover_every_partition() {
        for partitions in 1..=16 {
            for live in 1..=8 {
                let share = fair_share(partitions, live);
                assert!(
                    share * live >= partitions,
                    "{partitions} over {live}: {share}"
                );
                assert!(
                    (share - 1) * live < partitions,
                    "no smaller share would do: {partitions} over {live}: {share}"
                );
            }
        }
        // No live node seen yet (the first announcement failed): this node counts itself.
        assert_eq!(fair_share(4, 0), 4);
    }

    #[test]
    fn the_highest_partition_above_the_share_is_handed_over() {
        let held: std::collections::BTreeSet<u32> = [0, 2, 5].into();
        assert_eq!(hand_over(&held, 3), None);
        assert_eq!(hand_over(&held, 2), Some(5));
        assert_eq!(hand_over(&held, 0), Some(5));
        assert_eq!(hand_over(&std::collections::BTreeSet::new(), 0), None);
    }
}
