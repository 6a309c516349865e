//! Benchmarks of window-node: seeded workloads, an independent reference, and process probes.
//!
//! Processes, Redis and timestamps written independently of the core come from
//! `window-testkit` (its child-process harness, `procfs` readers and `calendar`).
//!
//! This crate is where everything that measures lives, so the measured crates carry none of it:
//! - `benches/core.rs` and `benches/store.rs` (criterion): the engine and the stores through
//!   their public APIs only;
//! - `src/bin/loadgen/`: drives a real `window-node` process and writes a JSON summary (split
//!   by concern: options, workload, client, timed phase, verify, report, scenario);
//! - `src/bin/probe.rs`: single-shot measurements for the report (memory per buffered event,
//!   restart time) and the report's SVG chart;
//! - `cargo xtask bench` runs all of them and writes `bench/report.md`.
//!
//! # Main types
//! - [`Workload`]: the shape of a seeded event stream (events per window, keys, disorder, late
//!   and duplicate fractions, values, id kind); [`Generator`] yields its events and [`Render`]
//!   writes them as `window_core::Event`s or as `process_window` / `assign` / `ingest` lines.
//! - [`Reference`]: an independent computation of what a node must answer, a plain
//!   `BTreeMap<(window start, key), ids>`, used to check every scenario before its speed counts.
//! - [`panes`]: the order-independent check of each window's panes (their sizes under a length
//!   purge, their order and their ids), for runs where the node's order of requests is unknown.
//!
//! # What it does not do
//! No speed thresholds anywhere: figures are reported, compared as ratios measured in the same
//! run, and never asserted. It changes nothing in the crates it measures.

pub mod panes;
mod reference;
mod workload;

pub use crate::reference::{RefAdmission, RefClosed, RefConfig, RefEvent, RefWindow, Reference};
pub use crate::workload::{
    DEFAULT_START_MS, GenEvent, Generator, IdKind, Origin, RECENT, Render, TimestampForm, Values,
    Workload,
};

/// The offset of the `grader` id frame (see the wire protocol): 2 h.
pub const GRADER_OFFSET_MS: i64 = 7_200_000;

/// How big the benches' inputs are: `Full` by default, `Quick` when the environment variable
/// `WINDOW_BENCH_QUICK` is set (as `cargo xtask bench --quick` does), so a smoke run only checks
/// that everything runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Smoke-test sizes.
    Quick,
    /// The sizes the report quotes.
    Full,
}

impl Scale {
    /// The scale the environment asks for.
    pub fn from_env() -> Scale {
        if std::env::var_os("WINDOW_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0") {
            Scale::Quick
        } else {
            Scale::Full
        }
    }

    /// `full` at full scale, `quick` otherwise.
    pub fn pick<T>(self, quick: T, full: T) -> T {
        match self {
            Scale::Quick => quick,
            Scale::Full => full,
        }
    }
}

#[cfg(test)]
mod tests;
