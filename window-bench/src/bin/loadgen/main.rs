//! `loadgen`: drives a real `window-node` with a generated or given dataset, checks every answer
//! against an independent reference, and writes a JSON summary of how fast it went.
//!
//! ```text
//! loadgen --events 1000000 --batch 1000 --output summary.json -- --data-dir /tmp/wn
//! ```
//!
//! The node is spawned as a child and spoken to over stdin/stdout (arguments after `--` go to
//! it as they are). A request line is timed from the moment loadgen starts writing it to the
//! moment its reply line is read (ack latency, in an HDR histogram); an unsolicited
//! `window_closed` is timed from the request whose reply it follows (fire latency). CPU seconds
//! and peak memory are read from `/proc/<pid>` of the child just before its input is closed.
//! Nothing is reported unless every request was answered and every answer is what the reference
//! computes.
//!
//! The transport is a seam: [`client::Connection`] is a line writer, a line reader and, when
//! loadgen started the process, the process. The same code drives the stdin node and the daemon
//! (`--serve` starts `window-node serve`, `--tcp` joins a running one, or several nodes sharing
//! one state, spreading the connections over them).

//!
//! Modules, by concern: [`options`] (the command line), [`workload`] (the requests),
//! [`client`] (the node, connections, the subscriber), [`timed`] (the timed phase),
//! [`verify`] (the check against the reference), [`report`] (the JSON summary), and
//! [`scenario`], which runs one from start to summary.

mod client;
mod options;
mod report;
mod scenario;
mod timed;
mod verify;
mod workload;

use clap::Parser;

/// jemalloc, like the node: with glibc's malloc about a quarter of loadgen's time went to its
/// free lists when a run fires hundreds of thousands of windows, and loadgen, not the node, bound
/// the 1000-key rows.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = options::Cli::parse();
    match scenario::run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
