//! Raw ingest through the Rust client (`window-client`), for `cargo xtask bench`: `--events`
//! events (ids 0.., 10 keys, one millisecond apart, so none is late or a duplicate) in requests
//! of `--batch`, `--in-flight` of them awaited at once, against the daemon at `--addr`. Prints
//! one JSON line: events, seconds (first request to last reply), accepted.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Parser;
use window_client::{Client, Event, Options};

/// 2024-01-15T08:00:00Z.
const BASE: i64 = 1_705_305_600_000;

#[derive(Parser)]
#[command(about = "Raw ingest through window-client against a running daemon")]
struct Cli {
    /// The daemon.
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, default_value_t = 500)]
    batch: u64,
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ensure!(
        cli.batch > 0 && cli.in_flight > 0,
        "--batch and --in-flight must be at least 1"
    );
    let batches: Vec<Vec<Event>> = (0..cli.events)
        .collect::<Vec<u64>>()
        .chunks(cli.batch as usize)
        .map(|ids| {
            ids.iter()
                .map(|&i| Event::new(i, BASE + i as i64).key(format!("k{}", i % 10)))
                .collect()
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("a tokio runtime")?;
    let (seconds, accepted) = runtime.block_on(async {
        let options = Options {
            max_in_flight: cli.in_flight,
            ..Options::default()
        };
        let client = Arc::new(Client::connect_with([cli.addr], options).await?);
        let batches = Arc::new(batches);
        let next = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..cli.in_flight)
            .map(|_| {
                let (client, batches, next, accepted) = (
                    Arc::clone(&client),
                    Arc::clone(&batches),
                    Arc::clone(&next),
                    Arc::clone(&accepted),
                );
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(batch) = batches.get(i) else {
                            return Ok::<(), window_client::ClientError>(());
                        };
                        let counts = client.ingest(batch).await?;
                        accepted.fetch_add(counts.accepted, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.context("a worker")??;
        }
        let seconds = started.elapsed().as_secs_f64();
        anyhow::Ok((seconds, accepted.load(Ordering::Relaxed)))
    })?;
    let summary =
        serde_json::json!({"events": cli.events, "seconds": seconds, "accepted": accepted});
    writeln!(std::io::stdout(), "{summary}").context("writing the summary")?;
    Ok(())
}
