//! `probe`: single-shot measurements for `cargo xtask bench`, and its chart.
//!
//! - `probe memory`: fills an engine (in this process, no node, no JSON) and reports the growth
//!   of resident memory per buffered event and per open window, as JSON on stdout.
//! - `probe chart`: draws a bar chart of events/s per scenario (SVG, plotters) from a TSV file
//!   of `label<TAB>events per second` lines.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, ensure};
use clap::{Parser, Subcommand, ValueEnum};
use plotters::prelude::*;
use window_bench::{IdKind, Workload};
use window_core::{Engine, EngineConfig, IdFrame, SizeMs, Timestamp};
use window_testkit::procfs::{self as proc, Pid};

#[derive(Debug, Parser)]
#[command(
    name = "probe",
    version,
    about = "Single-shot measurements and the report chart"
)]
struct Cli {
    #[command(subcommand)]
    command: Probe,
}

#[derive(Debug, Subcommand)]
enum Probe {
    /// Resident memory an engine grows by, per buffered event and per open window, as JSON.
    /// One measurement per process: memory freed by an earlier one would be reused.
    Memory {
        /// Events to buffer.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Events per window (1 measures what a window costs).
        #[arg(long, default_value_t = 1_000)]
        per_window: u32,
        /// How ids are made.
        #[arg(long, value_enum, default_value_t = Ids::Int)]
        ids: Ids,
    },
    /// A bar chart of events/s per scenario.
    Chart {
        /// `label<TAB>events per second` lines.
        #[arg(long)]
        input: PathBuf,
        /// Where the SVG goes.
        #[arg(long)]
        output: PathBuf,
        /// Its title.
        #[arg(long, default_value = "window-node: events/s per scenario")]
        title: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Ids {
    Int,
    Text,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Probe::Memory {
            events,
            per_window,
            ids,
        } => {
            let ids = match ids {
                Ids::Int => IdKind::Int,
                Ids::Text => IdKind::Text,
            };
            let grown = resident_growth(events, per_window, ids)?;
            let windows = events.div_ceil(per_window.max(1) as usize);
            let summary = serde_json::json!({
                "ids": format!("{ids:?}"),
                "buffered_events": events,
                "events_per_window": per_window,
                "open_windows": windows,
                "resident_growth_bytes": grown,
                "bytes_per_buffered_event": grown as f64 / events as f64,
                "bytes_per_open_window": grown as f64 / windows as f64,
            });
            let text = serde_json::to_string_pretty(&summary)? + "\n";
            io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
        Probe::Chart {
            input,
            output,
            title,
        } => chart(&input, &output, &title),
    }
}

/// Bytes of resident memory an engine grows by when it buffers `events` events at `per_window`
/// to a window. Events are made and admitted 10 000 at a time, so the input is not
/// what is measured; the engine is checked to hold them all.
fn resident_growth(events: usize, per_window: u32, ids: IdKind) -> anyhow::Result<u64> {
    ensure!(events > 0, "nothing to measure");
    let w = Workload {
        events,
        events_per_window: per_window,
        ids,
        ..Workload::default()
    };
    let render = w.render();
    let size = SizeMs::new(w.size_ms)?;
    let mut stream = w.stream();
    let mut engine = Engine::new(EngineConfig {
        frame: IdFrame::Utc,
        ..EngineConfig::default()
    });
    let before = proc::rss_kib(Pid::This).context("no /proc/self/status VmRSS")?;
    let mut left = events;
    while left > 0 {
        let n = left.min(10_000);
        let batch: Vec<_> = stream.by_ref().take(n).collect();
        engine.handle_events(Timestamp::EPOCH, size, render.core_events(&batch))?;
        left -= n;
    }
    let after = proc::rss_kib(Pid::This).context("no VmRSS")?;
    let stats = engine.stats();
    ensure!(
        stats.buffered_events == events,
        "the engine holds {} of {events} events",
        stats.buffered_events
    );
    let expected_windows = events.div_ceil(per_window as usize);
    ensure!(
        stats.open_windows == expected_windows,
        "{} windows open, expected {expected_windows}",
        stats.open_windows
    );
    drop(engine);
    Ok(after.saturating_sub(before) * 1024)
}

fn chart(input: &PathBuf, output: &PathBuf, title: &str) -> anyhow::Result<()> {
    let text = fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    let mut bars: Vec<(String, f64)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (label, value) = line
            .rsplit_once('\t')
            .with_context(|| format!("no tab in {line:?}"))?;
        let value: f64 = value
            .trim()
            .parse()
            .with_context(|| format!("value in {line:?}"))?;
        ensure!(value > 0.0, "{label}: events/s must be positive");
        bars.push((label.to_owned(), value));
    }
    ensure!(!bars.is_empty(), "{} holds no bars", input.display());
    let lo = bars.iter().map(|b| b.1).fold(f64::INFINITY, f64::min);
    let hi = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    // Whole decades around the data, so the log axis reads in powers of ten.
    let (x0, x1) = (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil() + 0.3),
    );
    let n = bars.len();
    let height = 90 + 34 * u32::try_from(n).unwrap_or(u32::MAX / 64);
    {
        let root = SVGBackend::new(output, (960, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .build_cartesian_2d((x0..x1).log_scale(), 0f64..n as f64)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc("events per second (log scale)")
            .x_label_formatter(&|v| human(*v))
            .draw()
            .map_err(plot_error)?;
        let colour = RGBColor(70, 110, 170);
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let y = (n - i) as f64;
                Rectangle::new([(x0, y - 0.85), (*v, y - 0.15)], colour.mix(0.55).filled())
            }))
            .map_err(plot_error)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (label, v))| {
                let y = (n - i) as f64;
                Text::new(
                    format!("{label}: {}/s", human(*v)),
                    (x0 * 1.08, y - 0.3),
                    ("sans-serif", 14).into_font().color(&BLACK),
                )
            }))
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(())
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

/// 1.2M, 350k, 12.
fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}
