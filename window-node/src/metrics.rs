//! Counters of the daemon, and the optional Prometheus text endpoint that shows them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds (in microseconds) of the fire-latency histogram buckets.
const LATENCY_BUCKETS_US: [u64; 10] = [
    500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 500_000, 1_000_000,
];

/// Monotonic counters, updated with relaxed atomics (they are statistics, not synchronisation).
#[derive(Debug, Default)]
pub struct Metrics {
    pub events_accepted: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_late: AtomicU64,
    pub windows_fired: AtomicU64,
    pub ingest_requests: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub subscribers_dropped: AtomicU64,
    /// Requests answered from the record of an earlier request with the same request id.
    pub requests_repeated: AtomicU64,
    /// 1 while this process coordinates (holds the lease, or needs none), 0 while it follows;
    /// with `--partitions`, the number of partitions it serves.
    pub coordinating: AtomicU64,
    /// The lease epoch this process coordinates with (0 while following or without a lease).
    pub lease_epoch: AtomicU64,
    /// The oldest seq the output log keeps (`--log-retention`); with `--partitions`, the last
    /// partition's to change.
    pub log_start: AtomicU64,
    fire_latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    fire_latency_count: AtomicU64,
    fire_latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records the time from a trigger (events or a timer) to the fired window's publication.
    pub fn observe_fire_latency(&self, micros: u64) {
        for (bucket, &bound) in self.fire_latency_buckets.iter().zip(&LATENCY_BUCKETS_US) {
            if micros <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.fire_latency_count.fetch_add(1, Ordering::Relaxed);
        self.fire_latency_sum_us
            .fetch_add(micros, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "window_node_events_accepted_total",
                "Events added to a window.",
                get(&self.events_accepted),
            ),
            (
                "window_node_events_duplicate_total",
                "Events ignored as duplicates.",
                get(&self.events_duplicate),
            ),
            (
                "window_node_events_late_total",
                "Events behind the watermark.",
                get(&self.events_late),
            ),
            (
                "window_node_windows_fired_total",
                "Windows fired and logged.",
                get(&self.windows_fired),
            ),
            (
                "window_node_ingest_requests_total",
                "Ingest requests answered.",
                get(&self.ingest_requests),
            ),
            (
                "window_node_connections_total",
                "Connections accepted.",
                get(&self.connections_total),
            ),
            (
                "window_node_subscribers_dropped_total",
                "Subscribers disconnected for falling behind.",
                get(&self.subscribers_dropped),
            ),
            (
                "window_node_requests_repeated_total",
                "Requests answered from the record of an earlier one with the same request_id (resends after a failover).",
                get(&self.requests_repeated),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        for (name, help, value) in [
            (
                "window_node_connections_open",
                "Connections open now.",
                get(&self.connections_open),
            ),
            (
                "window_node_coordinating",
                "1 while this process coordinates (holds the lease), 0 while it follows; with --partitions, the number of partitions it serves.",
                get(&self.coordinating),
            ),
            (
                "window_node_lease_epoch",
                "The lease epoch this process coordinates with; 0 while it follows.",
                get(&self.lease_epoch),
            ),
            (
                "window_node_output_log_start",
                "The oldest seq the output log keeps (--log-retention dropped the windows below it; 0 while it keeps everything).",
                get(&self.log_start),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let name = "window_node_fire_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From trigger to publication of a fired window.\n# TYPE {name} histogram"
        );
        for (bucket, bound) in self.fire_latency_buckets.iter().zip(LATENCY_BUCKETS_US) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {}",
                bound as f64 / 1e6,
                get(bucket)
            );
        }
        let count = get(&self.fire_latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            get(&self.fire_latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut request))
                    .await;
            let body = metrics.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
