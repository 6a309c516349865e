//! The coordinator lease across machines: the decisions of [`crate::lease`] carried out in Redis
//! ([`RedisLease`]'s compare-and-set scripts) by one thread per process.
//!
//! The keeper thread observes the lease, asks [`decide`] what to do, does it, and sleeps until
//! the decision says to look again. It reports its [`Role`] on a watch channel (the followers'
//! forwarding reads the holder's address from it) and keeps the held lease in a [`FireGate`],
//! which the driver asks before every group it commits ([`may_fire`]).
//!
//! Times are this process's monotonic clock (milliseconds since the keeper started), never the
//! wall clock: a holder's `expires_at` is the local time *before* the acquiring or renewing call
//! plus the ttl, so it ends no later than the key does in Redis (as long as the two clocks run at
//! about the same rate; the skew allowance covers the difference). A contender reads the lease's
//! remaining time (`PTTL`) from Redis rather than comparing clocks, and takes over only once Redis
//! has removed the key.
//!
//! Losing the lease (`StepDown`, or a renewal that did not succeed in time: a pause, Redis away)
//! closes the gate, reports [`Role::Lost`] and goes on as a contender: the next observations
//! report [`Role::Following`] and, once the lease is free (Redis back), [`Role::Holding`] with a
//! new epoch. The holding that ended is over for good: its driver, whose gate is bound to its
//! epoch ([`LeaseKeeper::gate_for`]), never commits again, and `serve` drops it with its
//! in-memory state (which may hold changes the store refused); a later holding recovers afresh
//! from Redis. Holders watch for the end of *their* holding ([`holding_ended`]), not for
//! `Lost`, which the next observation may replace before they look. A namespace wiped or
//! replaced under the process (`StoreError::NamespaceLost` from an observation, acquisition or
//! renewal: see `window_store::RedisLease`) is reported as [`Role::NamespaceLost`], never
//! retried: the keeper stops, and the process must not come back on that namespace. Whatever the
//! paused or partitioned holder still tries to write is refused by the fencing epoch, which the
//! new holder raised in the same script that took the lease.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use window_core::Timestamp;
use window_store::{LeaseView, RedisLease, RedisStore, StoreError};

use window_cluster::lease::{
    Decision, HeldLease, LeaseConfig, LeaseRecord, Observation, decide, may_fire,
};

/// What this process is, as far as the lease goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not decided yet (the first observation has not come back).
    Starting,
    /// Someone else holds the lease (`None`: no one, right now): its address and epoch.
    Following { holder: Option<(String, u64)> },
    /// This process holds the lease with this epoch.
    Holding { epoch: u64 },
    /// This process held the lease and lost it (its holding is over; the keeper goes on
    /// contending, so the next observation replaces this role).
    Lost { reason: String },
    /// The namespace's state in Redis was lost or replaced under this process (the error's text,
    /// which names the namespace and says what to do): it must stop, holding or following, and
    /// not start the namespace over.
    NamespaceLost { error: String },
}

/// Whether the holder may still commit: the lease with its margin, checked on this process's
/// monotonic clock.
#[derive(Debug)]
pub struct FireGate {
    held: Mutex<Option<HeldLease>>,
    clock: LeaseClock,
    config: LeaseConfig,
}

impl FireGate {
    /// True while this process holds the lease with the skew allowance still left.
    pub fn may_fire(&self) -> bool {
        self.may_fire_if(|_| true)
    }

    /// [`FireGate::may_fire`], for a held lease that `held` also accepts.
    fn may_fire_if(&self, held: impl FnOnce(&HeldLease) -> bool) -> bool {
        let lease = *self.held.lock().unwrap_or_else(|e| e.into_inner());
        lease.is_some_and(|lease| held(&lease) && may_fire(&lease, self.clock.now(), &self.config))
    }

    /// A gate that stays open for an hour, for tests of what the store's fence does alone.
    #[cfg(test)]
    pub fn always_open_for_tests() -> Arc<FireGate> {
        let config = LeaseConfig::new(
            Duration::from_secs(3600),
            Duration::from_secs(1200),
            Duration::from_secs(1),
        )
        .expect("valid");
        let clock = LeaseClock {
            start: Instant::now(),
        };
        Arc::new(FireGate {
            held: Mutex::new(Some(HeldLease {
                epoch: 1,
                expires_at: Timestamp::from_millis(3_600_000),
            })),
            clock,
            config,
        })
    }

    fn set(&self, held: Option<HeldLease>) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = held;
    }
}

impl crate::driver::Gate for FireGate {
    fn may_fire(&self) -> bool {
        FireGate::may_fire(self)
    }
}

/// The gate of one holding: open only while the lease is held with that epoch, so that a driver
/// of an ended holding stays shut when the keeper takes the lease again.
#[derive(Debug)]
struct HoldingGate {
    gate: Arc<FireGate>,
    epoch: u64,
}

impl crate::driver::Gate for HoldingGate {
    fn may_fire(&self) -> bool {
        self.gate.may_fire_if(|held| held.epoch == self.epoch)
    }
}

/// With `--partitions`: how many partition leases this process may hold at once (its fair share,
/// [`window_cluster::lease::fair_share`]), shared by its keepers. A keeper takes a free lease only after
/// reserving a place here, so that a node that starts first does not keep every partition.
#[derive(Debug)]
pub struct Quota {
    share: AtomicU32,
    held: AtomicU32,
}

impl Quota {
    /// A quota of `share` leases, none held.
    pub fn new(share: u32) -> Arc<Quota> {
        Arc::new(Quota {
            share: AtomicU32::new(share),
            held: AtomicU32::new(0),
        })
    }

    /// Changes the share (the number of live nodes changed).
    pub fn set_share(&self, share: u32) {
        self.share.store(share, Ordering::Relaxed);
    }

    /// The current share.
    pub fn share(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }

    /// Reserves a place for one more lease; false at the share.
    fn try_take(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.share.load(Ordering::Relaxed)).then_some(held + 1)
            })
            .is_ok()
    }

    /// Gives a place back (a lease released, lost, or not taken after all).
    fn give_back(&self) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(1))
            });
    }
}

/// Milliseconds since the keeper started, on the monotonic clock.
#[derive(Clone, Copy, Debug)]
struct LeaseClock {
    start: Instant,
}

impl LeaseClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX))
    }

    /// How long until `at` (zero if it has passed).
    fn until(&self, at: Timestamp) -> Duration {
        let wait = at.as_millis().saturating_sub(self.now().as_millis()).max(0);
        Duration::from_millis(wait.unsigned_abs())
    }
}

/// The running keeper. Dropping it stops the thread; [`LeaseKeeper::release`] also gives the
/// lease up.
#[derive(Debug)]
pub struct LeaseKeeper {
    role: watch::Receiver<Role>,
    gate: Arc<FireGate>,
    identity: Arc<Mutex<Option<String>>>,
    stop: Option<Sender<Stop>>,
    thread: Option<JoinHandle<()>>,
}

/// What the keeper is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Give the lease up and stop (a clean shutdown: everything acknowledged is durable).
    Release,
    /// Give the lease up and go on following (a partition handed over to another node, after its
    /// driver drained and synced).
    HandOver,
    /// Give up the holding with this epoch and contend again after a pause (its driver stopped
    /// on a store failure; the next holding recovers from Redis).
    StepDown(u64),
}

impl LeaseKeeper {
    /// Connects to Redis and starts competing for the lease of `namespace` as `me` (this node's
    /// advertised address, unique among live nodes). With a `quota`, it takes a free lease only
    /// while the quota has room.
    pub fn start(
        url: &str,
        namespace: &str,
        me: String,
        config: LeaseConfig,
        quota: Option<Arc<Quota>>,
    ) -> Result<LeaseKeeper, StoreError> {
        let lease = RedisLease::connect(url, namespace)?;
        let clock = LeaseClock {
            start: Instant::now(),
        };
        let gate = Arc::new(FireGate {
            held: Mutex::new(None),
            clock,
            config,
        });
        let (role_tx, role) = watch::channel(Role::Starting);
        let (stop, stopped) = channel();
        let identity = Arc::new(Mutex::new(None));
        let keeper = Keeper {
            lease,
            identity: Arc::clone(&identity),
            me,
            config,
            clock,
            gate: Arc::clone(&gate),
            role: role_tx,
            stopped,
            held: None,
            quota,
            shun_until: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("lease {namespace}"))
            .spawn(move || keeper.run())
            .map_err(|e| StoreError::Backend(format!("starting the lease thread: {e}")))?;
        Ok(LeaseKeeper {
            role,
            gate,
            identity,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The role, as it changes.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// The gate the driver of the holding with `epoch` asks before each commit.
    pub fn gate_for(&self, epoch: u64) -> Arc<dyn crate::driver::Gate> {
        Arc::new(HoldingGate {
            gate: Arc::clone(&self.gate),
            epoch,
        })
    }

    /// Opens the store of `namespace` for the holding with `epoch` (blocking I/O): its batches
    /// carry that epoch (the fence) and are checked against the namespace's identity as of the
    /// last acquisition (set before [`Role::Holding`] is reported), so a namespace wiped since is
    /// refused at recovery or at the first batch, never started over.
    pub fn open_store(
        &self,
        url: &str,
        namespace: &str,
        epoch: u64,
    ) -> Result<RedisStore, StoreError> {
        let identity = self
            .identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut store = RedisStore::connect(url, namespace)?;
        store.backend_mut().set_epoch(epoch);
        if let Some(identity) = &identity {
            store.backend_mut().set_identity(identity);
        }
        Ok(store)
    }

    /// Gives the lease up and goes on following: call it only after the driver that used the
    /// lease has stopped and synced.
    pub fn hand_over(&self) {
        if let Some(stop) = &self.stop {
            let _ = stop.send(Stop::HandOver);
        }
    }

    /// Ends the holding with `epoch` (ignored when the keeper no longer holds it, or holds a
    /// later one): reports following, gives the lease up (when Redis answers; otherwise it ends
    /// by its ttl), and contends again after [`STEP_DOWN_PAUSE`], so that another node may take
    /// it first. For a holding whose driver stopped because the store failed: call it only after
    /// that driver stopped. Resolves once the role has left `Holding { epoch }`, so that the next
    /// holding seen is a new one.
    pub async fn step_down(&self, epoch: u64) {
        if let Some(stop) = &self.stop {
            let _ = stop.send(Stop::StepDown(epoch));
        }
        let mut role = self.role();
        let _ = role.wait_for(|role| *role != Role::Holding { epoch }).await;
    }

    /// Gives the lease up and waits for the thread (a clean shutdown, after the last sync).
    pub fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Release);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread, which stops without releasing: the lease then
        // ends by its ttl, the safe default for a process that did not stop cleanly.
        self.stop.take();
    }
}

struct Keeper {
    lease: RedisLease,
    /// Shared with [`LeaseKeeper::open_store`].
    identity: Arc<Mutex<Option<String>>>,
    me: String,
    config: LeaseConfig,
    clock: LeaseClock,
    gate: Arc<FireGate>,
    role: watch::Sender<Role>,
    stopped: Receiver<Stop>,
    held: Option<HeldLease>,
    quota: Option<Arc<Quota>>,
    /// After a handover: the keeper leaves the lease alone until then (one ttl), so that another
    /// node takes it rather than this one taking it straight back.
    shun_until: Option<Timestamp>,
}

/// A follower looks at the lease at least this often.
const FOLLOWER_POLL: Duration = Duration::from_millis(200);

/// After stepping down, the keeper leaves the lease alone this long (a third of the ttl at most):
/// a follower, which looks every [`FOLLOWER_POLL`], may take it first, so a node whose holdings
/// keep failing does not keep the lease from a healthy one.
const STEP_DOWN_PAUSE: Duration = Duration::from_secs(1);

/// How long to wait before trying again after Redis failed to answer.
const RETRY_AFTER_ERROR: Duration = Duration::from_millis(100);

impl Keeper {
    fn run(mut self) {
        let mut failing = false;
        loop {
            let view = match self.lease.observe() {
                Err(error @ StoreError::NamespaceLost { .. }) => return self.namespace_lost(error),
                Ok(view) => {
                    if failing {
                        tracing::info!("Redis answers again");
                        failing = false;
                    }
                    view
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, held = ?self.held, "cannot read the lease; reconnecting and retrying");
                        failing = true;
                    }
                    // A holder that cannot renew is done once its own view of the lease ends,
                    // even if nothing else wakes its driver.
                    if self.held.is_some() && !self.gate.may_fire() {
                        self.lost(format!("it could not be renewed in time ({error})"));
                    }
                    if self.held.is_none() {
                        // Who holds the lease is not known while Redis does not answer (and a
                        // holder that cannot reach it cannot commit): followers answer 11 after
                        // their failover timeout rather than forward to a holder that may be gone.
                        self.follow(Role::Following { holder: None });
                    }
                    if self.sleep(RETRY_AFTER_ERROR) {
                        return;
                    }
                    continue;
                }
            };
            let now = self.clock.now();
            let observed = observation(&view, now);
            let wait = match decide(&self.me, self.held.as_ref(), &observed, now, &self.config) {
                Decision::Acquire { .. }
                    if self.shun_until.is_some_and(|until| now < until)
                        || self.quota.as_ref().is_some_and(|quota| !quota.try_take()) =>
                {
                    // This node holds its share already, or just handed this lease over: leave
                    // it to a node with room.
                    self.follow(Role::Following { holder: None });
                    FOLLOWER_POLL
                }
                Decision::Acquire {
                    epoch,
                    expires_at,
                    renew_at,
                } => match self
                    .lease
                    .try_acquire(&view, &self.me, epoch, self.config.ttl())
                {
                    Ok(true) => {
                        *self.identity.lock().unwrap_or_else(|e| e.into_inner()) =
                            self.lease.identity().map(str::to_owned);
                        self.hold(HeldLease { epoch, expires_at });
                        tracing::info!(epoch, "took the lease");
                        let _ = self.role.send(Role::Holding { epoch });
                        self.clock.until(renew_at)
                    }
                    // Someone else was faster: look again.
                    Ok(false) => {
                        self.give_back();
                        Duration::from_millis(5)
                    }
                    Err(error @ StoreError::NamespaceLost { .. }) => {
                        self.give_back();
                        return self.namespace_lost(error);
                    }
                    Err(error) => {
                        self.give_back();
                        // The script may or may not have run; the next look tells (a lease in
                        // this node's name that it does not hold is taken over with a new epoch).
                        tracing::warn!(%error, "taking the lease failed; looking again");
                        RETRY_AFTER_ERROR
                    }
                },
                Decision::Renew {
                    expires_at,
                    renew_at,
                } => {
                    let epoch = self.held.map_or(0, |held| held.epoch);
                    match self.lease.renew(&self.me, epoch, self.config.ttl()) {
                        Ok(true) => {
                            self.hold(HeldLease { epoch, expires_at });
                            self.clock.until(renew_at)
                        }
                        // Not ours any more: the next decision steps down.
                        Ok(false) => Duration::ZERO,
                        Err(error @ StoreError::NamespaceLost { .. }) => {
                            return self.namespace_lost(error);
                        }
                        Err(error) => {
                            // The gate keeps the old end: firing stops by itself if this lasts.
                            tracing::warn!(%error, "renewing the lease failed; retrying");
                            RETRY_AFTER_ERROR
                        }
                    }
                }
                Decision::Follow {
                    holder,
                    epoch,
                    retry_at,
                } => {
                    self.follow(Role::Following {
                        holder: Some((holder, epoch)),
                    });
                    // Looking more often than the decision asks is always safe, and it notices a
                    // released lease (a clean shutdown) soon.
                    self.clock.until(retry_at).min(FOLLOWER_POLL)
                }
                Decision::StepDown { reason } => {
                    self.lost(reason.to_string());
                    RETRY_AFTER_ERROR
                }
            };
            if self.sleep(wait) {
                return;
            }
        }
    }

    /// The holding ended without being given up: close the gate, say so, and go on contending.
    fn lost(&mut self, reason: String) {
        self.hold_nothing();
        tracing::error!(%reason, "lost the lease; contending for it again");
        let _ = self.role.send(Role::Lost { reason });
    }

    /// The namespace was lost or replaced: stop holding (the gate closes) and following, and
    /// say so; never retried.
    fn namespace_lost(&mut self, error: StoreError) {
        self.hold_nothing();
        let _ = self.role.send(Role::NamespaceLost {
            error: error.to_string(),
        });
    }

    fn hold(&mut self, held: HeldLease) {
        self.held = Some(held);
        self.gate.set(Some(held));
    }

    fn hold_nothing(&mut self) {
        self.gate.set(None);
        if self.held.take().is_some() {
            self.give_back();
        }
    }

    /// Gives the quota's place back (no-op without a quota).
    fn give_back(&self) {
        if let Some(quota) = &self.quota {
            quota.give_back();
        }
    }

    /// Reports `following` as the role, waking watchers only when it changed.
    fn follow(&self, following: Role) {
        self.role.send_if_modified(|role| {
            let changed = *role != following;
            if changed {
                *role = following;
            }
            changed
        });
    }

    /// Sleeps for `wait` unless told to stop; true when told to stop (after releasing the lease
    /// if asked to).
    fn sleep(&mut self, wait: Duration) -> bool {
        match self.stopped.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => false,
            Ok(order) => {
                if let Stop::StepDown(epoch) = order
                    && self.held.is_none_or(|held| held.epoch != epoch)
                {
                    // That holding ended already (and a later one is not this order's).
                    return false;
                }
                if let Some(held) = self.held {
                    self.hold_nothing();
                    if matches!(order, Stop::StepDown(_)) {
                        // Said before the release, which may wait for a Redis that is away.
                        self.follow(Role::Following { holder: None });
                    }
                    match self.lease.release(&self.me, held.epoch) {
                        Ok(true) => tracing::info!(epoch = held.epoch, "released the lease"),
                        Ok(false) => {
                            tracing::warn!(epoch = held.epoch, "the lease was already gone")
                        }
                        Err(error) => {
                            tracing::warn!(%error, "releasing the lease failed; it ends by its ttl")
                        }
                    }
                }
                match order {
                    Stop::Release => true,
                    Stop::StepDown(_) => {
                        let pause = self.config.renew_every().min(STEP_DOWN_PAUSE);
                        let pause = i64::try_from(pause.as_millis()).unwrap_or(i64::MAX);
                        self.shun_until = self.clock.now().checked_add(pause);
                        self.follow(Role::Following { holder: None });
                        false
                    }
                    Stop::HandOver => {
                        let ttl = i64::try_from(self.config.ttl().as_millis()).unwrap_or(i64::MAX);
                        self.shun_until = self.clock.now().checked_add(ttl);
                        self.follow(Role::Following { holder: None });
                        false
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.hold_nothing();
                true
            }
        }
    }
}

/// The pure module's view of what Redis holds, with the lease's end on this process's clock.
fn observation(view: &LeaseView, now: Timestamp) -> Observation {
    Observation {
        record: view.holding.as_ref().map(|holding| LeaseRecord {
            holder: holding.holder.clone(),
            epoch: holding.epoch,
            expires_at: Timestamp::from_millis(
                now.as_millis().saturating_add(
                    i64::try_from(holding.remaining.as_millis()).unwrap_or(i64::MAX),
                ),
            ),
        }),
        last_epoch: view.epoch,
    }
}

/// What a process says that met its Redis namespace lost or replaced (the error that follows
/// names the namespace and says what to do).
pub const NAMESPACE_LOST: &str = "the Redis namespace was lost or replaced under this node: it stops (coordinating or following) and exits without acknowledging anything more (requests in flight got error 13 or a closed connection); do not restart nodes on this namespace as it is";

/// Why a holding ended (see [`holding_ended`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEnded {
    /// The lease was lost (not renewed in time, taken by another node) or its keeper stopped:
    /// this holding is over; the keeper contends again.
    Lost(String),
    /// The namespace was lost or replaced (the error's text, which says what to do): the
    /// process stops and must not be restarted on that namespace as it is.
    NamespaceLost(String),
}

impl std::fmt::Display for LeaseEnded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseEnded::Lost(reason) | LeaseEnded::NamespaceLost(reason) => f.write_str(reason),
        }
    }
}

/// Resolves when this process no longer holds the lease with `epoch` (never without a Redis
/// lease), with why: lost (a role reported after the loss, such as following, says only that it
/// moved on) or the namespace lost.
pub async fn holding_ended(role: Option<&mut watch::Receiver<Role>>, epoch: u64) -> LeaseEnded {
    let Some(role) = role else {
        return std::future::pending().await;
    };
    match role.wait_for(|role| *role != Role::Holding { epoch }).await {
        Ok(role) => match &*role {
            Role::NamespaceLost { error } => LeaseEnded::NamespaceLost(error.clone()),
            Role::Lost { reason } => LeaseEnded::Lost(format!("lost the Redis lease: {reason}")),
            other => LeaseEnded::Lost(format!(
                "lost the Redis lease of epoch {epoch} (the keeper now reports {other:?})"
            )),
        },
        Err(_) => LeaseEnded::Lost("the Redis lease thread stopped".to_owned()),
    }
}

/// Resolves with the epoch once this process holds the lease, or with the namespace's loss
/// (never with a lost lease: the keeper contends again).
pub async fn holding(role: &mut watch::Receiver<Role>) -> Result<u64, LeaseEnded> {
    let role = role
        .wait_for(|role| matches!(role, Role::Holding { .. } | Role::NamespaceLost { .. }))
        .await
        .map_err(|_| LeaseEnded::Lost("the Redis lease thread stopped".to_owned()))?;
    match &*role {
        Role::Holding { epoch } => Ok(*epoch),
        Role::NamespaceLost { error } => Err(LeaseEnded::NamespaceLost(error.clone())),
        other => Err(LeaseEnded::Lost(format!(
            "the lease keeper reported {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    //! The keeper with a quota, against a real `redis-server` (`window_testkit::RedisServer`).

    use super::*;
    use window_testkit::RedisServer;

    #[test]
    fn a_quota_counts_places_taken_and_given_back() {
        let quota = Quota::new(2);
        assert!(quota.try_take());
        assert!(quota.try_take());
        assert!(!quota.try_take(), "at the share");
        quota.give_back();
        assert!(quota.try_take());
        quota.set_share(1);
        assert!(!quota.try_take(), "above a lowered share");
        quota.give_back();
        quota.give_back();
        quota.give_back();
        assert!(quota.try_take(), "giving back never goes below zero");
        assert!(!quota.try_take());
    }

    async fn wait_for(role: &mut watch::Receiver<Role>, want: impl Fn(&Role) -> bool) -> Role {
        tokio::time::timeout(Duration::from_secs(10), role.wait_for(want))
            .await
            .expect("within 10 s")
            .expect("the keeper runs")
            .clone()
    }

    #[tokio::test]
    async fn a_full_quota_leaves_a_free_lease_until_a_handover_makes_room() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let config = LeaseConfig::new(
            Duration::from_secs(3),
            Duration::from_secs(1),
            Duration::from_millis(300),
        )
        .unwrap();
        let quota = Quota::new(1);
        let (first, second) = (server.fresh_namespace(), server.fresh_namespace());
        let url = server.url();
        let a = LeaseKeeper::start(
            &url,
            &first,
            "me:1".into(),
            config,
            Some(Arc::clone(&quota)),
        )
        .unwrap();
        let mut a_role = a.role();
        assert_eq!(
            wait_for(&mut a_role, |r| matches!(r, Role::Holding { .. })).await,
            Role::Holding { epoch: 1 }
        );
        let b = LeaseKeeper::start(
            &url,
            &second,
            "me:1".into(),
            config,
            Some(Arc::clone(&quota)),
        )
        .unwrap();
        let mut b_role = b.role();
        // The second lease is free, but the quota is full: it is left alone.
        assert_eq!(
            wait_for(&mut b_role, |r| !matches!(r, Role::Starting)).await,
            Role::Following { holder: None }
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(*b_role.borrow(), Role::Following { holder: None });
        // Handing the first over gives its place to the second; the first is not taken back.
        a.hand_over();
        assert_eq!(
            wait_for(&mut b_role, |r| matches!(r, Role::Holding { .. })).await,
            Role::Holding { epoch: 1 }
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(*a_role.borrow(), Role::Following { holder: None });
        drop((a, b));
    }
}
