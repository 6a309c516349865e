//! `window-node serve`: options, start-up and shutdown of the TCP daemon.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio::net::TcpListener;
use tokio::sync::watch;
use window_core::WindowSpec;
use window_store::{MemoryStore, SledStore, StoreError, WindowStore};

use crate::driver::{
    DriverConfig, DriverError, DriverStopped, Gate, RunningDriver, blocking, describe,
};
use crate::follower::{Forwarding, forward_connection};
use crate::lease_file::{FileLease, HolderKind, describe_holder};
use crate::lease_redis::{LeaseEnded, LeaseKeeper, NAMESPACE_LOST, Role, holding, holding_ended};
use crate::line_budget::LineBudget;
use crate::metrics::{self, Metrics};
use crate::options::{DEFAULT_LATENESS, EngineArgs, at_least_one, millis, parse_duration};
use crate::partitions::{self, Partitions};
use crate::redis_faults;
use crate::router::PartitionLinks;
use crate::tcp::{self, Route, Shared};
use crate::upstream::Coordinator;
use window_cluster::lease::LeaseConfig;
use window_proto::{Style, Timestamps};
use window_service::{Retention, TimeBase};

/// Options of `window-node serve`. Every option can also come from an environment variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on for protocol connections.
    #[arg(long, default_value = "127.0.0.1:7070", env = "WINDOW_NODE_LISTEN")]
    listen: SocketAddr,

    /// Directory of the embedded sled store: open windows, watermark and the output log.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "./data",
        env = "WINDOW_NODE_DATA_DIR"
    )]
    data_dir: PathBuf,

    /// Keep everything in memory instead (nothing survives a restart).
    #[arg(long, conflicts_with_all = ["data_dir", "store"], env = "WINDOW_NODE_MEMORY")]
    memory: bool,

    /// Keep everything in a Redis server shared by several machines (`redis://HOST:PORT/`,
    /// `redis://HOST:PORT/DB`, `redis://:PASSWORD@HOST:PORT/`) or in a Redis Cluster
    /// (`redis+cluster://HOST:PORT,HOST:PORT,...`: some of its masters; with --partitions each
    /// partition lands on the master of its own hash tag) instead of --data-dir. Every node on
    /// the same server and --namespace competes for one lease: the holder fires windows, the
    /// others forward their clients to it.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "data_dir",
        env = "WINDOW_NODE_STORE"
    )]
    store: Option<String>,

    /// With --store: when Redis makes an acknowledged batch durable on its disk. `everysec`
    /// (the default) leaves the server's configuration alone: with `appendonly yes` and
    /// `appendfsync everysec` (Redis's usual setting) a crash of the machine can lose about the
    /// last second. `always` sets the server's `appendfsync always` at start (CONFIG SET, on
    /// every master of a cluster): Redis fsyncs before it answers, so nothing acknowledged is
    /// lost; the server must run with `appendonly yes`. Its cost is in bench/report.md.
    #[arg(
        long,
        value_name = "POLICY",
        value_enum,
        default_value = "everysec",
        env = "WINDOW_NODE_REDIS_FSYNC"
    )]
    redis_fsync: RedisFsync,

    /// With --store: the name of this pipeline's keys in Redis (one lease, one output log).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "window-node",
        env = "WINDOW_NODE_NAMESPACE"
    )]
    namespace: String,

    /// With --store: the address other nodes reach this one at (its lease holder id). Defaults to
    /// the listening address, which must then not be 0.0.0.0 or [::].
    #[arg(long, value_name = "ADDR", env = "WINDOW_NODE_ADVERTISE")]
    advertise: Option<SocketAddr>,

    /// With --store: how long the Redis lease lasts unless renewed. The holder renews every third
    /// of it and stops firing a tenth of it before the end (the clock skew allowance); a follower
    /// takes over within about this long after the holder dies.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, env = "WINDOW_NODE_LEASE_TTL")]
    lease_ttl: Duration,

    /// With --store: split the namespace into this many partitions by a hash of the event key,
    /// each with its own lease, epoch and output log (its own dense `seq`), so that several
    /// nodes fire in parallel: each takes about its share (partitions / live nodes) and routes
    /// every client request to the partitions' holders. Unkeyed events share one partition.
    /// Every node of a namespace must give the same number; the first one records it.
    #[arg(long, value_name = "N", default_value_t = NonZeroU32::MIN, env = "WINDOW_NODE_PARTITIONS")]
    partitions: NonZeroU32,

    /// Window length, lateness, purge, id frame and late events: the engine's options, shared
    /// with `aggregate`.
    #[command(flatten)]
    engine: EngineArgs,

    /// With event time, a request with an event more than this far ahead of this node's clock
    /// is refused (error 12), so that a typo (the year 9999) cannot move the watermark past
    /// every real event. `0s` turns the check off.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration, env = "WINDOW_NODE_MAX_EVENT_AHEAD")]
    max_event_ahead: Duration,

    /// At most this many windows open at once (a window costs about 100 bytes plus its ids and
    /// payloads): a request that would open more is refused whole with error 11 and may be
    /// sent again once windows have fired. Raise it for many keys per window.
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = at_least_one, env = "WINDOW_NODE_MAX_OPEN_WINDOWS")]
    max_open_windows: usize,

    /// Keep at least this many of the newest fired windows in the output log (unless
    /// --log-retention-age drops them first); older ones are dropped as new ones fire (a window
    /// some consumer group has not acknowledged is kept, with every later one), and a
    /// `subscribe` or group join with a `from_seq` below the oldest kept gets error 12 naming it.
    /// `0` keeps the whole log. Default: 1000000 with --memory (about 200 MB of fired windows),
    /// the whole log with --data-dir and --store (with Redis, give it to bound Redis's memory;
    /// with --partitions, per partition).
    #[arg(long, value_name = "WINDOWS", env = "WINDOW_NODE_LOG_RETENTION")]
    log_retention: Option<u64>,

    /// Drop fired windows from the output log once they are older than this (`10m`, `24h`, `7d`
    /// is `168h`), by this node's clock when they fired, as the node writes its next batches (a
    /// window some consumer group has not acknowledged is kept, with every later one). With
    /// --log-retention too, a window goes when either says so. `0s` (the default): no age limit.
    /// Fire times are not stored: after a restart the windows recovered count as fired then.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration, env = "WINDOW_NODE_LOG_RETENTION_AGE")]
    log_retention_age: Duration,

    /// How long a consumer group's member may hold a window unacknowledged before it goes to
    /// another member (with `delivery` raised).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, env = "WINDOW_NODE_ACK_TIMEOUT")]
    ack_timeout: Duration,

    /// Which clock puts events in windows: `event`, each event's own `timestamp`; `ingest`, this
    /// node's clock when it applies the request (windows aligned to the epoch fire when the
    /// clock passes their end, with no further event; `timestamp` may then be left out).
    #[arg(long, value_enum, default_value_t = Time::Event, env = "WINDOW_NODE_TIME")]
    time: Time,

    /// When no events arrive for this long, event time advances with the wall clock so that
    /// windows still close. `0s` turns it off.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, env = "WINDOW_NODE_IDLE_TIMEOUT")]
    idle_timeout: Duration,

    /// Most connections served at once; more are refused with error 11.
    #[arg(long, default_value_t = 1024, value_parser = at_least_one, env = "WINDOW_NODE_MAX_CONNECTIONS")]
    max_connections: usize,

    /// Longest request line in bytes; a longer line gets error 12.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, value_parser = at_least_one, env = "WINDOW_NODE_MAX_LINE_BYTES")]
    max_line_bytes: usize,

    /// Most bytes of unfinished request lines held over all connections at once (each line is
    /// bounded by --max-line-bytes on its own); a connection whose line would take the sum over
    /// this gets error 11 and is closed, its line dropped.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20, value_parser = at_least_one, env = "WINDOW_NODE_MAX_BUFFERED_LINE_BYTES")]
    max_buffered_line_bytes: usize,

    /// Largest payload an event may carry, in bytes of JSON text; a request with a larger one
    /// is refused whole with error 12.
    #[arg(long, value_name = "BYTES", default_value_t = window_proto::DEFAULT_MAX_PAYLOAD_BYTES, env = "WINDOW_NODE_MAX_PAYLOAD_BYTES")]
    max_payload_bytes: usize,

    /// Close a connection that sends nothing for this long (subscribers are exempt). `0s` turns
    /// it off.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration, env = "WINDOW_NODE_CONNECTION_IDLE_TIMEOUT")]
    connection_idle_timeout: Duration,

    /// Fired windows a subscriber may fall behind before it is disconnected (it resumes with
    /// `from_seq`; the log is durable).
    #[arg(long, default_value_t = 65_536, env = "WINDOW_NODE_SUBSCRIBER_BUFFER")]
    subscriber_buffer: usize,

    /// Bytes of fired windows a subscriber may leave unread before it is disconnected (it
    /// resumes with `from_seq`): what a subscriber that stops reading can make this process hold.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, value_parser = at_least_one, env = "WINDOW_NODE_SUBSCRIBER_BUFFER_BYTES")]
    subscriber_buffer_bytes: usize,

    /// Several processes may share one --data-dir: one holds the lease and coordinates, the
    /// others forward their clients to it. When the coordinator is gone, a follower waits this
    /// long for a new one before answering the requests it holds with error 11.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, env = "WINDOW_NODE_FAILOVER_TIMEOUT")]
    failover_timeout: Duration,

    /// Serve Prometheus metrics as text on this address (e.g. 127.0.0.1:9090).
    #[arg(long, value_name = "ADDR", env = "WINDOW_NODE_METRICS")]
    metrics: Option<SocketAddr>,

    /// Write replies with spaces after `,` and `:` (the stdin node's style); compact by default.
    #[arg(long, env = "WINDOW_NODE_SPACED")]
    spaced: bool,
}

/// The `--time` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Time {
    /// Event time: each event's `timestamp`.
    Event,
    /// Ingest time: the coordinator's clock when it applies the request.
    Ingest,
}

/// See `--redis-fsync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisFsync {
    /// The server's own setting (appendfsync everysec, as Redis is usually run).
    Everysec,
    /// `appendfsync always`, set at start: Redis fsyncs every batch before it answers.
    Always,
}

/// Runs the daemon until SIGINT or SIGTERM; then stops accepting, makes everything acknowledged
/// durable, and returns.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("window-node")
        .build()
        .context("starting the tokio runtime")?;
    let served = runtime.block_on(serve(args));
    // A task stuck in a store call must not keep a failed process alive.
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    served
}

/// How long the runtime waits for its tasks when the daemon returns.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);
/// After the first SIGTERM or SIGINT the process exits within this long, however stuck: the
/// driver's orderly stop (answer what is queued, sync) takes milliseconds unless the store does
/// not answer, and this bounds it then (`driver::STOP_WITHIN`, 30 s, would be too long). A
/// second signal exits at once. (With partitions the backstop is longer: see `serve`.)
const FORCED_EXIT_AFTER: Duration = Duration::from_secs(10);
/// How long a failed holder gives its connections to send the error answers the driver gave
/// before it exits.
const REPLY_GRACE: Duration = Duration::from_millis(500);

/// Waits until the Redis server at `url` answers, trying again with backoff (up to
/// [`REDIS_RETRY_MAX`] apart) and saying so every [`REDIS_WAIT_LOG`]: a node started before its
/// Redis (or while Redis restarts) comes up once Redis does, without a supervisor. An error
/// waiting cannot mend (a bad URL, refused credentials, an old server) ends the wait at once;
/// so does a stop signal (`false`).
async fn wait_for_redis(url: &str, stopped: &mut watch::Receiver<bool>) -> anyhow::Result<bool> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut said: Option<Instant> = None;
    loop {
        let url_owned = url.to_owned();
        match tokio::task::spawn_blocking(move || window_store::redis_reachable(&url_owned))
            .await
            .context("the Redis check's thread")?
        {
            Ok(()) => {
                if said.is_some() {
                    tracing::info!(waited = ?started.elapsed(), "Redis answers; starting");
                }
                return Ok(true);
            }
            Err(StoreError::Unreachable(reason)) => {
                if said.is_none_or(|at| at.elapsed() >= REDIS_WAIT_LOG) {
                    tracing::warn!(
                        waited = ?started.elapsed(),
                        "{reason}; waiting for it (stop with SIGTERM)"
                    );
                    said = Some(Instant::now());
                }
            }
            Err(other) => return Err(anyhow::Error::new(other)),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stopped.wait_for(|stop| *stop) => return Ok(false),
        }
        delay = (delay * 2).min(REDIS_RETRY_MAX);
    }
}

/// The longest pause between two tries of an unreachable Redis at start.
const REDIS_RETRY_MAX: Duration = Duration::from_secs(2);
/// How often a node waiting for Redis at start says so.
const REDIS_WAIT_LOG: Duration = Duration::from_secs(5);

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = driver_config(&args)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener
        .local_addr()
        .context("reading the listening address")?;
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = args.metrics {
        let metrics_listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
        if let Ok(bound) = metrics_listener.local_addr() {
            tracing::info!(address = %bound, "serving metrics");
        }
        tokio::spawn(metrics::serve(metrics_listener, Arc::clone(&metrics)));
    }
    // The one line a supervisor (or a test) waits for, on stderr like every log.
    tracing::info!(address = %local, "listening; {}", describe(&config));
    let (stop, mut stopped) = watch::channel(false);
    // Handing partitions over takes longer (`partitions::stop_within`).
    let backstop = if args.partitions.get() > 1 {
        args.lease_ttl / 3 + Duration::from_secs(40)
    } else {
        FORCED_EXIT_AFTER
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
        // The orderly stop may be stuck (a store call that does not return): a second signal,
        // or the backstop, ends the process.
        std::thread::spawn(move || {
            std::thread::sleep(backstop);
            exit_now(&format!(
                "the orderly stop did not finish within {backstop:?} of the signal"
            ));
        });
        shutdown_signal().await;
        exit_now("a second signal");
    });

    if let Some(url) = &args.store {
        // What waiting cannot mend is said before it.
        advertised(local, args.advertise)?;
        if !wait_for_redis(url, &mut stopped).await? {
            tracing::info!("stopped while waiting for Redis");
            return Ok(());
        }
        if args.redis_fsync == RedisFsync::Always {
            blocking(|| window_store::require_fsync_always(url)).context("--redis-fsync always")?;
            tracing::info!("the Redis server fsyncs before it answers (appendfsync always)");
        }
    }
    // With a data directory or Redis, several processes share the state: the lease holder
    // coordinates, the others forward their clients to it until they take over.
    let mut config = config;
    if args.partitions.get() > 1 {
        return serve_partitions(&args, config, listener, local, metrics, stopped).await;
    }
    if let Some(url) = args.store.clone() {
        return serve_redis(&args, &url, config, &listener, local, metrics, stopped).await;
    }
    let Some((tenure, store, epoch)) = take_tenure(&args, &listener, &mut stopped).await? else {
        tracing::info!("stopped while following");
        return Ok(());
    };
    config.epoch = epoch;
    if let Tenure::File(lease) = &tenure {
        lease
            .publish(local)
            .context("publishing the coordinator's address in the data directory")?;
    }
    let held = Holding {
        config,
        store,
        gate: None,
        role: None,
        announce: !matches!(tenure, Tenure::Alone),
    };
    match hold(&args, held, &listener, &metrics, local, &stopped).await? {
        Ended::Stopped => {}
        Ended::SteppedDown { why, .. } => {
            // Only a Redis holding steps down; the others fail-stop inside `hold`.
            return Err(anyhow::anyhow!("{why}").context(STOPPED_EARLY));
        }
    }
    // The file lease is let go when `tenure` is dropped.
    drop(tenure);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// One holding of the lease: the driver's configuration (its epoch set), its store, and, with
/// Redis, the gate bound to the epoch and the keeper's role (whose change ends the holding).
struct Holding {
    config: DriverConfig,
    store: Box<dyn WindowStore>,
    gate: Option<Arc<dyn Gate>>,
    role: Option<watch::Receiver<Role>>,
    /// Whether to say "coordinating" (not for a lone `--memory` node).
    announce: bool,
}

/// How a holding ended.
enum Ended {
    /// Told to stop: the driver answered what it held, synced and stopped.
    Stopped,
    /// A Redis holding ended by itself (the lease lost, or the store failed in a way Redis may
    /// mend): its driver and connections are gone, and the process contends again. After a
    /// store failure the lease may still be held, and is given up.
    SteppedDown { why: String, store_failed: bool },
}

/// Serves clients as the holder until told to stop (`Ended::Stopped`) or the holding ends by
/// itself: with Redis that is `Ended::SteppedDown` (except a namespace lost: an error); with a
/// data directory, an error (fail-stop).
async fn hold(
    args: &ServeArgs,
    held: Holding,
    listener: &TcpListener,
    metrics: &Arc<Metrics>,
    holder: SocketAddr,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<Ended> {
    let Holding {
        config,
        store,
        gate,
        mut role,
        announce,
    } = held;
    let redis = role.is_some();
    let mut driver = RunningDriver::start(
        config,
        store,
        args.subscriber_buffer,
        Arc::clone(metrics),
        gate,
    )
    .context("recovering the open state")?;
    metrics.lease_epoch.store(config.epoch, Ordering::Relaxed);
    metrics.coordinating.store(1, Ordering::Relaxed);
    if announce {
        tracing::info!(
            epoch = config.epoch,
            "coordinating: this process holds the lease"
        );
    }
    // Closes this holding's connections when it steps down: their requests went to its driver.
    let (retire, retired) = watch::channel(false);
    let shared = shared(
        args,
        &config,
        Route::Single(driver.commands()),
        Arc::clone(metrics),
        holder,
        retired,
    );
    let mut stopping = stopped.clone();
    let accepting = tcp::accept_loop(
        listener,
        Arc::clone(&shared),
        tcp::Slots::new(args.max_connections),
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        },
    );
    let ended = tokio::select! {
        () = accepting => None,
        // The driver stops early only when the store failed or the lease lapsed.
        stopped = driver.stopped_by_itself() => {
            // The driver has answered every request it held (error 13 or 11); the connections'
            // writers send those answers now. Give them a moment.
            tokio::time::sleep(REPLY_GRACE).await;
            if !redis || !redis_faults::mendable(&stopped) {
                // Fail-stop: the file lease is let go when the process returns.
                let advice = stopped_early(&stopped);
                return Err(anyhow::Error::new(stopped).context(advice));
            }
            Some((format!("{:#}", anyhow::Error::new(stopped)), true))
        }
        ended = holding_ended(role.as_mut(), config.epoch) => match ended {
            LeaseEnded::NamespaceLost(error) => {
                return Err(anyhow::anyhow!("{error}").context(NAMESPACE_LOST));
            }
            LeaseEnded::Lost(reason) => Some((reason, false)),
        },
    };
    metrics.coordinating.store(0, Ordering::Relaxed);
    if let Some((why, store_failed)) = ended {
        // Its gate is shut for good (bound to its epoch): dropped, it answers nothing more, and
        // the next holding recovers from Redis.
        drop(driver);
        let _ = retire.send(true);
        return Ok(Ended::SteppedDown { why, store_failed });
    }
    tracing::info!("stopping: no new connections; finishing what was received");
    // The driver answers what is queued, syncs, and stops; later requests get error 11.
    driver
        .stop()
        .await
        .context("the driver failed while stopping")?;
    Ok(Ended::Stopped)
}

/// `serve --store redis://...` without partitions: one lease keeper for the life of the process;
/// it follows (forwarding its clients to the holder) until it holds the lease, serves as the
/// holder, and when a holding ends by itself (the lease lost to a pause or to Redis going away,
/// Redis failing a write) it steps down and contends again, so a node outlives a Redis restart.
async fn serve_redis(
    args: &ServeArgs,
    url: &str,
    mut config: DriverConfig,
    listener: &TcpListener,
    local: SocketAddr,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let me = advertised(local, args.advertise)?;
    let lease_config = LeaseConfig::new(args.lease_ttl, args.lease_ttl / 3, args.lease_ttl / 10)
        .map_err(|e| anyhow::anyhow!("--lease-ttl: {e}"))?;
    tracing::info!(
        namespace = %args.namespace,
        advertise = %me,
        ttl = ?lease_config.ttl(),
        renew_every = ?lease_config.renew_every(),
        clock_skew_allowance = ?lease_config.clock_skew_allowance(),
        "Redis store and lease"
    );
    blocking(|| partitions::claim_partitions(url, &args.namespace, 1))?;
    let keeper = blocking(|| {
        LeaseKeeper::start(url, &args.namespace, me.to_string(), lease_config, None)
    })
    .with_context(|| format!("starting the Redis lease in namespace {:?}", args.namespace))?;
    let forwarding = forwarding(
        args,
        Coordinator::Redis {
            role: keeper.role(),
            me,
        },
    );
    loop {
        let mut role = keeper.role();
        let held = async move {
            holding(&mut role).await.map_err(|ended| match ended {
                LeaseEnded::NamespaceLost(error) => {
                    anyhow::anyhow!("{error}").context(NAMESPACE_LOST)
                }
                LeaseEnded::Lost(reason) => anyhow::anyhow!("{reason}"),
            })
        };
        let Some(epoch) = follow_until(
            listener,
            args.max_connections,
            Arc::clone(&forwarding),
            &mut stopped,
            held,
        )
        .await?
        else {
            blocking(|| keeper.release());
            tracing::info!("stopped while following");
            return Ok(());
        };
        let store = match blocking(|| keeper.open_store(url, &args.namespace, epoch)) {
            Ok(store) => store,
            Err(error @ StoreError::NamespaceLost { .. }) => {
                return Err(anyhow::Error::new(error).context(NAMESPACE_LOST));
            }
            Err(error) => {
                tracing::warn!(
                    epoch,
                    "opening the Redis store failed; stepping down and contending again: {error}"
                );
                if !step_down(&keeper, epoch, &mut stopped).await {
                    blocking(|| keeper.release());
                    return Ok(());
                }
                continue;
            }
        };
        config.epoch = epoch;
        let held = Holding {
            config,
            store: Box::new(store),
            gate: Some(keeper.gate_for(epoch)),
            role: Some(keeper.role()),
            announce: true,
        };
        let ended = match hold(args, held, listener, &metrics, me, &stopped).await {
            Ok(ended) => ended,
            Err(error) if redis_faults::mendable_error(&error) && !*stopped.borrow() => {
                // Recovery failed (Redis went away again): contend again.
                Ended::SteppedDown {
                    why: format!("{error:#}"),
                    store_failed: true,
                }
            }
            Err(error) => return Err(error),
        };
        match ended {
            Ended::Stopped => {
                // Everything acknowledged is in Redis: let a follower take over at once.
                blocking(|| keeper.release());
                tracing::info!("stopped cleanly");
                return Ok(());
            }
            Ended::SteppedDown { why, store_failed } => {
                tracing::warn!(
                    epoch,
                    "stepped down: {why}; nothing unacknowledged was kept (clients resend); contending for the lease again, and following meanwhile"
                );
                // A lost lease ended the holding already; a failed store leaves it to end here.
                if store_failed && !step_down(&keeper, epoch, &mut stopped).await {
                    blocking(|| keeper.release());
                    return Ok(());
                }
            }
        }
    }
}

/// Ends the holding with `epoch` and waits until the keeper has left it; false when told to
/// stop first.
async fn step_down(keeper: &LeaseKeeper, epoch: u64, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = keeper.step_down(epoch) => true,
        _ = stopped.wait_for(|stop| *stop) => false,
    }
}

/// The daemon's windows and firing rules, from its options (epoch 0 until a lease is held).
fn driver_config(args: &ServeArgs) -> anyhow::Result<DriverConfig> {
    // With ingest time the watermark follows the clock, so no lateness unless asked for.
    let lateness = match args.time {
        Time::Event => DEFAULT_LATENESS,
        Time::Ingest => Duration::ZERO,
    };
    let (engine, size) = args.engine.config(lateness).context("--window-size")?;
    Ok(DriverConfig {
        engine,
        size,
        // With ingest time the watermark follows the clock already.
        idle_timeout: (!args.idle_timeout.is_zero() && args.time == Time::Event)
            .then_some(args.idle_timeout),
        time: match args.time {
            Time::Event => TimeBase::Event,
            Time::Ingest => TimeBase::Ingest,
        },
        ack_timeout_ms: millis(args.ack_timeout),
        max_event_ahead_ms: (!args.max_event_ahead.is_zero()).then(|| millis(args.max_event_ahead)),
        max_open_windows: Some(args.max_open_windows),
        log_retention: log_retention(args),
        epoch: 0,
    })
}

/// `--log-retention` (or its default for the store) and `--log-retention-age`.
fn log_retention(args: &ServeArgs) -> Retention {
    let keep = match args.log_retention {
        Some(keep) => keep,
        None if args.memory => DEFAULT_MEMORY_LOG_RETENTION,
        None => 0,
    };
    Retention {
        windows: (keep > 0).then_some(keep),
        age_ms: (!args.log_retention_age.is_zero()).then(|| millis(args.log_retention_age)),
    }
}

/// `--log-retention` with `--memory` unless told otherwise: about 200 MB of fired windows.
const DEFAULT_MEMORY_LOG_RETENTION: u64 = 1_000_000;

/// The lease this process coordinates under, its store and its epoch: at once in memory;
/// otherwise after following the holder until this process takes the lease (`None` when the
/// process was stopped first). (A Redis lease is `serve_redis`'s.)
async fn take_tenure(
    args: &ServeArgs,
    listener: &TcpListener,
    stopped: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<Held>> {
    let held: Held = if args.memory {
        (Tenure::Alone, Box::new(MemoryStore::in_memory()), 0)
    } else {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
        let forwarding = forwarding(args, Coordinator::Dir(args.data_dir.clone()));
        let dir = args.data_dir.clone();
        let held = async move {
            let mut retry = tokio::time::interval(Duration::from_millis(100));
            loop {
                retry.tick().await;
                let lease = FileLease::try_acquire(&dir, HolderKind::Serve)
                    .with_context(|| format!("taking the lease in {}", dir.display()))?;
                if let Some(lease) = lease {
                    return Ok(lease);
                }
            }
        };
        let Some(lease) =
            follow_until(listener, args.max_connections, forwarding, stopped, held).await?
        else {
            return Ok(None);
        };
        let epoch = lease.epoch();
        let store = SledStore::open_waiting(&args.data_dir, Duration::from_secs(5))
            .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
        (Tenure::File(lease), Box::new(store), epoch)
    };
    Ok(Some(held))
}

/// A tenure, its store, and the epoch it fires under.
type Held = (Tenure, Box<dyn WindowStore>, u64);

/// `serve --partitions N` (N > 1, with --store): every node routes clients, and serves the
/// partitions whose leases it holds.
async fn serve_partitions(
    args: &ServeArgs,
    config: DriverConfig,
    listener: TcpListener,
    local: SocketAddr,
    metrics: Arc<Metrics>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(url) = &args.store else {
        anyhow::bail!(
            "--partitions {} needs --store redis://HOST:PORT/: partitions are for several nodes sharing one Redis; one --data-dir is served by one process at a time, so partitions would gain nothing there",
            args.partitions
        );
    };
    let me = advertised(local, args.advertise)?;
    let lease = LeaseConfig::new(args.lease_ttl, args.lease_ttl / 3, args.lease_ttl / 10)
        .map_err(|e| anyhow::anyhow!("--lease-ttl: {e}"))?;
    let setup = Arc::new(partitions::Setup {
        url: url.clone(),
        namespace: args.namespace.clone(),
        me,
        count: args.partitions.get(),
        lease,
        driver: config,
        subscriber_buffer: args.subscriber_buffer,
        metrics: Arc::clone(&metrics),
    });
    tracing::info!(
        namespace = %args.namespace,
        partitions = setup.count,
        advertise = %me,
        ttl = ?lease.ttl(),
        "Redis store with partitions"
    );
    let running = blocking(|| Partitions::start(&setup))
        .with_context(|| format!("joining the partitions of namespace {:?}", args.namespace))?;
    let links = Arc::new(PartitionLinks::new(running.table(), args.failover_timeout));
    let route = Route::Partitioned {
        table: running.table(),
        links: Arc::clone(&links),
    };
    // The partitions' connections outlive every holding (each request finds its partition's
    // driver anew), so nothing retires them.
    let (_never, retired) = watch::channel(false);
    let shared = shared(args, &config, route, metrics, me, retired);
    // The router serves the partitions held here in process (not over loopback). Weak: the
    // connections' settings hold the router.
    let weak = Arc::downgrade(&shared);
    links.serve_here(Box::new(move |line| match weak.upgrade() {
        Some(shared) => tcp::answer_here(&shared, line),
        None => tcp::answer_stopped(),
    }));
    let mut stopping = stopped.clone();
    let slots = tcp::Slots::new(args.max_connections);
    let accepting = tcp::accept_loop(&listener, shared, slots, async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    let serving = running.run(Arc::clone(&setup), stopped);
    tokio::pin!(serving);
    tokio::select! {
        () = accepting => {}
        result = &mut serving => {
            return match result {
                Ok(()) => Err(anyhow::anyhow!("the partitions stopped unexpectedly")),
                Err(error) => Err(error.context(STOPPED_EARLY)),
            };
        }
    }
    tracing::info!("stopping: no new connections; handing every held partition over");
    let within = partitions::stop_within(&lease);
    match tokio::time::timeout(within, serving).await {
        Ok(result) => result.context("stopping the partitions")?,
        Err(_) => {
            anyhow::bail!("the partitions did not stop within {within:?} of the shutdown signal")
        }
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// What the daemon's connections share, from the options.
fn shared(
    args: &ServeArgs,
    config: &DriverConfig,
    route: Route,
    metrics: Arc<Metrics>,
    holder: SocketAddr,
    retired: watch::Receiver<bool>,
) -> Arc<Shared> {
    let frame = config.engine.frame;
    Arc::new(Shared {
        route,
        frame,
        spec: WindowSpec {
            size: config.size,
            frame,
        },
        style: style(args),
        max_line_bytes: args.max_line_bytes,
        max_payload_bytes: args.max_payload_bytes,
        timestamps: match args.time {
            Time::Event => Timestamps::Required,
            Time::Ingest => Timestamps::Optional,
        },
        idle_timeout: (!args.connection_idle_timeout.is_zero())
            .then_some(args.connection_idle_timeout),
        metrics,
        holder: holder.to_string(),
        line_budget: LineBudget::new(args.max_buffered_line_bytes),
        subscriber_buffer_bytes: args.subscriber_buffer_bytes as u64,
        retired,
    })
}

/// How a follower forwards its clients to the holder `coordinator` names.
fn forwarding(args: &ServeArgs, coordinator: Coordinator) -> Arc<Forwarding> {
    Arc::new(Forwarding::new(
        coordinator,
        args.max_line_bytes,
        args.failover_timeout,
        style(args),
        LineBudget::new(args.max_buffered_line_bytes),
    ))
}

fn style(args: &ServeArgs) -> Style {
    if args.spaced {
        Style::Spaced
    } else {
        Style::Compact
    }
}

/// What a process that stopped coordinating says (then it exits: fail-stop).
const STOPPED_EARLY: &str = "stopped coordinating and exiting, without acknowledging anything that was not committed (requests in flight get an error or a closed connection; retrying them is safe); restart this process to rejoin as a follower";

/// What a process whose driver stopped by itself says: what to do depends on why.
fn stopped_early(stopped: &DriverStopped) -> &'static str {
    match stopped {
        DriverStopped::Failed(DriverError::Store(StoreError::NamespaceLost { .. })) => {
            NAMESPACE_LOST
        }
        DriverStopped::Failed(DriverError::Store(
            StoreError::Backend(_) | StoreError::Corrupt { .. },
        )) => {
            "the store failed: stopped coordinating and exiting; the requests not made durable were answered with error 13 and nothing else was acknowledged (sending them again is safe); free space on the disk or fix the storage (with Redis: its maxmemory, or a read-only replica), then restart this process"
        }
        _ => STOPPED_EARLY,
    }
}

/// Ends the process at once, saying why.
fn exit_now(why: &str) -> ! {
    tracing::error!("exiting at once: {why}; anything not acknowledged was not made durable");
    std::process::exit(1)
}

/// The lease this process coordinates under.
enum Tenure {
    /// `--memory`: no lease, no one else.
    Alone,
    /// The file lock on the data directory.
    File(FileLease),
}

/// The address this node is reached at by the others.
fn advertised(local: SocketAddr, advertise: Option<SocketAddr>) -> anyhow::Result<SocketAddr> {
    match advertise {
        Some(address) => Ok(address),
        None if local.ip().is_unspecified() => Err(anyhow::anyhow!(
            "listening on {local}, which other nodes cannot connect to; give --advertise HOST:PORT (this node's address as the others reach it)"
        )),
        None => Ok(local),
    }
}

/// Follows (forwarding clients to the holder) until `held` resolves with the lease. `None`
/// when told to stop first.
///
/// The follower keeps `max_connections` itself. Once it holds the lease its own accept loop
/// counts afresh: the clients it accepted while following forward to it over the listener, so
/// their forwarded connections are what count then.
async fn follow_until<T>(
    listener: &TcpListener,
    max_connections: usize,
    forwarding: Arc<Forwarding>,
    stopped: &mut watch::Receiver<bool>,
    held: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<Option<T>> {
    let mut held = std::pin::pin!(held);
    let slots = tcp::Slots::new(max_connections);
    // The first look is quick: a free lease is taken before anyone is told "following".
    if let Ok(result) = tokio::time::timeout(Duration::from_millis(500), held.as_mut()).await {
        return result.map(Some);
    }
    if let Coordinator::Dir(dir) = &*forwarding.coordinator
        && let Some(holder) = describe_holder(dir)
    {
        tracing::info!(
            "following: {holder} holds the lease in {}; forwarding requests to it",
            dir.display()
        );
    } else if let Some(holder) = forwarding.coordinator.holder() {
        tracing::info!(
            coordinator = ?holder,
            "following: another process holds the lease; forwarding requests to it"
        );
    } else {
        tracing::info!(
            "following: no process holds the lease now (Redis away, or a takeover under way); requests wait for one up to --failover-timeout, then get error 11"
        );
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Some((stream, permit)) = slots.take(stream, peer, forwarding.style) {
                        let forwarding = Arc::clone(&forwarding);
                        tokio::spawn(async move {
                            forward_connection(stream, forwarding).await;
                            drop(permit);
                        });
                    }
                }
                Err(error) => tracing::warn!(%error, "accept failed"),
            },
            result = held.as_mut() => {
                let lease = result?;
                tracing::info!("took over the lease");
                return Ok(Some(lease));
            }
            _ = stopped.wait_for(|stop| *stop) => return Ok(None),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
