//! `--partitions N`: one Redis namespace split into N partitions that fire in parallel on
//! several nodes.
//!
//! A window belongs to the partition of its key (`window_cluster::partition::partition_of`: xxh3 of the key's bytes
//! modulo N; unkeyed events share the partition of the empty key). Partition `i` of namespace
//! `NS` is a namespace of its own, `NS.i~t` (`PartitionLayout::Spread`: its hash tag in the
//! `i`-th of N equal ranges of a cluster's slots, so partitions spread evenly over the masters
//! of a Redis Cluster; `NS.i` in namespaces made before that layout), with its own lease,
//! fencing epoch, open state and output log with its own dense `seq`.
//! So each partition is exactly the one-namespace design of `ARCHITECTURE.md`, and every
//! guarantee there holds per partition.
//!
//! Every node runs one lease keeper per partition. A keeper takes a free lease only while its
//! node holds fewer than its fair share (`lease::fair_share` of N over the live nodes, which the
//! nodes announce in `{wn:NS}:nodes`); a node above its share hands its highest partition over
//! cleanly: new requests for it are refused with error 11, its driver answers what it has,
//! syncs and stops, and only then is the lease released. While a node holds a partition it runs
//! a driver for it ([`keep_partition`]); requests addressed to that partition (`"partition": i`,
//! sent by the routers of all nodes, `router.rs`) go to that driver.
//!
//! Losing a partition's lease, or its driver stopping on a store failure (Redis away, refusing
//! writes), ends that holding only: the driver is dropped with its in-memory state, requests for
//! the partition go to whoever holds it next (error 11 meanwhile), and the keeper contends again,
//! so a node that held partitions through a Redis restart serves them again once Redis is back,
//! recovering each from what Redis holds. What Redis cannot mend (a namespace lost or replaced, a
//! broken record or batch, a driver that panicked: `redis_faults.rs`) stops the process.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use window_store::RedisMembership;

use crate::driver::{Command, DriverConfig, DriverStopped, RunningDriver, blocking};
use crate::lease_redis::{
    LeaseEnded, LeaseKeeper, NAMESPACE_LOST, Quota, Role, holding, holding_ended,
};
use crate::metrics::Metrics;
use crate::redis_faults::{mendable, mendable_error, namespace_lost};
use crate::upstream::Coordinator;
use window_cluster::lease::{LeaseConfig, fair_share, hand_over};
use window_cluster::partition::{PartitionLayout, partition_of};

/// Checks that `namespace` is (or now becomes) a namespace of `count` partitions; a node started
/// with another count is refused, since keys would hash to other partitions. Returns the
/// namespaces of its partitions, by the layout the namespace was made with.
pub fn claim_partitions(url: &str, namespace: &str, count: u32) -> anyhow::Result<Vec<String>> {
    let mut members = RedisMembership::connect(url, namespace)?;
    let recorded = match members.recorded()? {
        Some(recorded) => recorded,
        None => {
            // A namespace whose record of its partitions was lost (a Redis failover without the
            // last writes) while partitions in the plain layout hold data keeps that layout:
            // recording the spread one would leave their windows behind, unseen. Looked for
            // only while nothing is recorded, so a start needs no master but the namespace's.
            let plain = PartitionLayout::Plain.namespaces(namespace, count);
            let spread = count > 1 && !members.any_in_use(&plain)?;
            members.claim_partitions(count, spread)?
        }
    };
    if recorded.count != count {
        let recorded = recorded.count;
        anyhow::bail!(
            "namespace {namespace:?} was made with {recorded} partitions (--partitions {recorded}), not {count}: keys hash to partitions by that number, so every node must use it; start this node with --partitions {recorded}, or use another --namespace"
        );
    }
    let layout = if recorded.spread {
        PartitionLayout::Spread
    } else {
        PartitionLayout::Plain
    };
    Ok(layout.namespaces(namespace, count))
}

/// How long a clean stop of the partitions may take: one announcement period (the others learn
/// that this node left), then the drivers drain (30 s at most each, in parallel).
pub fn stop_within(lease: &LeaseConfig) -> Duration {
    lease.renew_every() + Duration::from_secs(35)
}

/// Where each partition is served: by a driver in this process, or by another node.
#[derive(Debug)]
pub struct PartitionTable {
    slots: Vec<Slot>,
}

#[derive(Debug)]
struct Slot {
    /// The partition's driver, while this process holds its lease and serves it.
    local: RwLock<Option<mpsc::Sender<Command>>>,
    /// The partition's lease holder, as this process's keeper of it sees it.
    coordinator: Arc<Coordinator>,
}

impl PartitionTable {
    /// The number of partitions.
    pub fn count(&self) -> u32 {
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    /// The partition of a window with `key`.
    pub fn of(&self, key: Option<&str>) -> u32 {
        partition_of(key, self.count())
    }

    /// The partition's driver, when this process serves it.
    pub fn local(&self, partition: u32) -> Option<mpsc::Sender<Command>> {
        let slot = self.slots.get(partition as usize)?;
        slot.local.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Where the partition's holder is found.
    pub fn coordinator(&self, partition: u32) -> Option<&Arc<Coordinator>> {
        self.slots
            .get(partition as usize)
            .map(|slot| &slot.coordinator)
    }

    fn set_local(&self, partition: u32, driver: Option<mpsc::Sender<Command>>) {
        if let Some(slot) = self.slots.get(partition as usize) {
            *slot.local.write().unwrap_or_else(|e| e.into_inner()) = driver;
        }
    }

    /// The partitions this process serves now.
    fn held(&self) -> BTreeSet<u32> {
        (0..self.count())
            .filter(|&p| self.local(p).is_some())
            .collect()
    }
}

/// What the partitions need to run.
#[derive(Debug, Clone)]
pub struct Setup {
    pub url: String,
    pub namespace: String,
    /// This node's advertised address: its id in the leases and the members.
    pub me: SocketAddr,
    pub count: u32,
    pub lease: LeaseConfig,
    pub driver: DriverConfig,
    pub subscriber_buffer: usize,
    pub metrics: Arc<Metrics>,
}

/// The running partitions: keepers competing for every partition, and this node's membership.
#[derive(Debug)]
pub struct Partitions {
    table: Arc<PartitionTable>,
    keepers: Vec<LeaseKeeper>,
    /// Each partition's namespace, by the namespace's layout.
    namespaces: Vec<String>,
    quota: Arc<Quota>,
    membership: Membership,
}

impl Partitions {
    /// Joins the namespace's members and starts competing for its partitions (blocking I/O).
    pub fn start(setup: &Setup) -> anyhow::Result<Partitions> {
        let namespaces = claim_partitions(&setup.url, &setup.namespace, setup.count)?;
        let quota = Quota::new(0);
        let membership = Membership::start(setup, Arc::clone(&quota))?;
        let me = setup.me.to_string();
        let mut keepers = Vec::new();
        let mut slots = Vec::new();
        for (partition, namespace) in (0..).zip(&namespaces) {
            let keeper = LeaseKeeper::start(
                &setup.url,
                namespace,
                me.clone(),
                setup.lease,
                Some(Arc::clone(&quota)),
            )
            .with_context(|| format!("starting the Redis lease of partition {partition}"))?;
            slots.push(Slot {
                local: RwLock::new(None),
                coordinator: Arc::new(Coordinator::Redis {
                    role: keeper.role(),
                    me: setup.me,
                }),
            });
            keepers.push(keeper);
        }
        Ok(Partitions {
            table: Arc::new(PartitionTable { slots }),
            keepers,
            namespaces,
            quota,
            membership,
        })
    }

    /// Where each partition is served.
    pub fn table(&self) -> Arc<PartitionTable> {
        Arc::clone(&self.table)
    }

    /// Serves the partitions this node holds, hands over what is above its share, and takes
    /// what others hand over, until `stopped` turns true (then every held partition drains,
    /// syncs and is released, and the node leaves the members) or a partition meets what Redis
    /// cannot mend (a namespace lost, a broken record or batch, a driver that panicked: an
    /// error, and the process stops). A lost lease or a Redis fault ends that holding only.
    pub async fn run(
        self,
        setup: Arc<Setup>,
        stopped: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let Partitions {
            table,
            keepers,
            namespaces,
            quota,
            membership,
        } = self;
        let mut tasks = JoinSet::new();
        let mut handovers = Vec::new();
        // Told to the partitions only after this node left the members, so that the others'
        // shares have grown by the time its partitions are free.
        let (release, released) = watch::channel(false);
        for ((partition, keeper), namespace) in (0..).zip(keepers).zip(namespaces) {
            let (tx, rx) = mpsc::channel(1);
            handovers.push(tx);
            tasks.spawn(keep_partition(
                partition,
                namespace,
                keeper,
                Arc::clone(&setup),
                Arc::clone(&table),
                rx,
                released.clone(),
            ));
        }
        let mut stopping = stopped.clone();
        let mut balance = tokio::time::interval(Duration::from_millis(250));
        let result = loop {
            tokio::select! {
                _ = balance.tick() => {
                    if let Some(partition) = hand_over(&table.held(), quota.share())
                        && let Some(tx) = handovers.get(partition as usize)
                    {
                        // A full channel means a handover is under way already.
                        let _ = tx.try_send(());
                    }
                }
                done = tasks.join_next() => match done {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(error))) => break Err(error),
                    Some(Err(join)) => break Err(anyhow::anyhow!("a partition task failed: {join}")),
                    None => break Ok(()),
                },
                _ = stopping.wait_for(|stop| *stop) => {
                    blocking(|| membership.leave());
                    // The others take this node's share on their next announcement.
                    tokio::time::sleep(setup.lease.renew_every() + Duration::from_millis(100)).await;
                    let _ = release.send(true);
                    // Every task drains and releases its partition; one that failed instead
                    // (its lease lost meanwhile) makes the stop a failure.
                    let mut failed = Ok(());
                    while let Some(done) = tasks.join_next().await {
                        match done {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => failed = failed.and(Err(error)),
                            Err(join) => failed = failed.and(Err(anyhow::anyhow!("a partition task failed: {join}"))),
                        }
                    }
                    return failed;
                }
            }
        };
        // Stopping on an error: the process exits; its membership and leases end by their ttl.
        drop(release);
        result
    }
}

/// Serves one partition for as long as this process holds its lease, again each time it takes
/// it; hands it over when told to; stops when `stopped` turns true.
async fn keep_partition(
    partition: u32,
    namespace: String,
    keeper: LeaseKeeper,
    setup: Arc<Setup>,
    table: Arc<PartitionTable>,
    mut handover: mpsc::Receiver<()>,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut role = keeper.role();
    loop {
        let epoch = tokio::select! {
            held = holding(&mut role) => match held {
                Ok(epoch) => epoch,
                Err(LeaseEnded::NamespaceLost(error)) => {
                    return Err(anyhow::anyhow!("{error}")
                        .context(format!("partition {partition}: {NAMESPACE_LOST}")));
                }
                Err(LeaseEnded::Lost(reason)) => anyhow::bail!("partition {partition}: {reason}"),
            },
            _ = stopped.wait_for(|stop| *stop) => {
                blocking(|| keeper.release());
                return Ok(());
            }
        };
        // A handover asked for before this holding began is out of date.
        while handover.try_recv().is_ok() {}
        let opened = blocking(|| -> anyhow::Result<RunningDriver> {
            let store = keeper.open_store(&setup.url, &namespace, epoch)?;
            let config = DriverConfig {
                epoch,
                ..setup.driver
            };
            Ok(RunningDriver::start(
                config,
                Box::new(store),
                setup.subscriber_buffer,
                Arc::clone(&setup.metrics),
                Some(keeper.gate_for(epoch)),
            )?)
        });
        let mut running = match opened {
            Ok(running) => running,
            Err(error) if mendable_error(&error) => {
                // Redis went away (or refused) between the lease and the recovery: contend again.
                tracing::warn!(
                    partition,
                    epoch,
                    "recovering partition {partition} failed; stepping down and contending again: {error:#}"
                );
                keeper.step_down(epoch).await;
                continue;
            }
            Err(error) => {
                return Err(error.context(format!("recovering partition {partition}")));
            }
        };
        table.set_local(partition, Some(running.commands()));
        setup.metrics.coordinating.fetch_add(1, Ordering::Relaxed);
        tracing::info!(partition, epoch, "coordinating partition {partition}");
        enum Next {
            HandOver,
            Stop,
            Failed(DriverStopped),
            Lost(LeaseEnded),
        }
        let next = tokio::select! {
            stopped = running.stopped_by_itself() => Next::Failed(stopped),
            ended = holding_ended(Some(&mut role), epoch) => Next::Lost(ended),
            Some(()) = handover.recv() => Next::HandOver,
            _ = stopped.wait_for(|stop| *stop) => Next::Stop,
        };
        match next {
            Next::Failed(stopped) => {
                table.set_local(partition, None);
                setup.metrics.coordinating.fetch_sub(1, Ordering::Relaxed);
                let may_mend = mendable(&stopped);
                let error = anyhow::Error::new(stopped);
                if namespace_lost(&error) {
                    return Err(
                        error.context(format!("partition {partition} stopped: {NAMESPACE_LOST}"))
                    );
                }
                if !may_mend {
                    return Err(error.context(format!("partition {partition} stopped")));
                }
                tracing::warn!(
                    partition,
                    epoch,
                    "partition {partition} stopped; stepping down and contending again (the next holding recovers from Redis): {error:#}"
                );
                keeper.step_down(epoch).await;
                continue;
            }
            Next::Lost(LeaseEnded::NamespaceLost(error)) => {
                table.set_local(partition, None);
                return Err(anyhow::anyhow!("{error}")
                    .context(format!("partition {partition}: {NAMESPACE_LOST}")));
            }
            Next::Lost(LeaseEnded::Lost(reason)) => {
                table.set_local(partition, None);
                setup.metrics.coordinating.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(
                    partition,
                    epoch,
                    "partition {partition}: {reason}; its driver is dropped and this node contends again"
                );
                // Its gate is shut for good: it commits nothing more.
                drop(running);
                continue;
            }
            Next::HandOver | Next::Stop => {}
        }
        // New requests get error 11 (the routers send them again to the next holder); the
        // driver answers what it has, syncs, and stops; only then does the lease go.
        table.set_local(partition, None);
        setup.metrics.coordinating.fetch_sub(1, Ordering::Relaxed);
        if let Err(stopped) = running.stop().await {
            if !mendable(&stopped) || matches!(next, Next::Stop) {
                return Err(anyhow::Error::new(stopped)
                    .context(format!("partition {partition} failed while stopping")));
            }
            // A handover whose last sync failed on Redis: the partition is not handed over
            // cleanly, but its holding ends all the same, and the next holder recovers it.
            tracing::warn!(
                partition,
                epoch,
                "partition {partition} failed while handing over; stepping down instead: {stopped}"
            );
            keeper.step_down(epoch).await;
            continue;
        }
        match next {
            Next::HandOver => {
                keeper.hand_over();
                // This holding's end (a later holding of this node has another epoch).
                tokio::select! {
                    _ = role.wait_for(|r| *r != Role::Holding { epoch }) => {}
                    _ = stopped.wait_for(|stop| *stop) => {
                        blocking(|| keeper.release());
                        return Ok(());
                    }
                }
                tracing::info!(partition, epoch, "handed partition {partition} over");
            }
            Next::Stop | Next::Failed(_) | Next::Lost(_) => {
                blocking(|| keeper.release());
                return Ok(());
            }
        }
    }
}

/// This node's membership: a thread that announces it every third of the lease ttl and sets the
/// quota's share from the number of live members.
#[derive(Debug)]
struct Membership {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Membership {
    fn start(setup: &Setup, quota: Arc<Quota>) -> anyhow::Result<Membership> {
        let mut members = RedisMembership::connect(&setup.url, &setup.namespace)?;
        let me = setup.me.to_string();
        // One lease ttl, announced every third of it like a renewal: a dead node's share is
        // given out again when its leases end, so its partitions are not left waiting.
        let ttl = setup.lease.ttl();
        let every = setup.lease.renew_every();
        let count = setup.count;
        let live = members
            .announce(&me, ttl)
            .context("announcing this node to the others")?;
        quota.set_share(fair_share(count, live));
        let (stop, stopped) = channel();
        let thread = std::thread::Builder::new()
            .name("members".to_owned())
            .spawn(move || {
                let mut last = live;
                loop {
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) => {
                            if let Err(error) = members.leave(&me) {
                                tracing::warn!(%error, "leaving the members failed; this node's membership ends by itself");
                            }
                            return;
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    match members.announce(&me, ttl) {
                        Ok(live) => {
                            if live != last {
                                tracing::info!(
                                    live,
                                    share = fair_share(count, live),
                                    "the number of live nodes changed"
                                );
                                last = live;
                            }
                            quota.set_share(fair_share(count, live));
                        }
                        Err(error) => {
                            tracing::warn!(%error, "announcing this node failed; retrying")
                        }
                    }
                }
            })
            .context("starting the membership thread")?;
        Ok(Membership {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Leaves the members (a clean shutdown) and waits for the thread.
    fn leave(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
