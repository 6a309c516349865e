//! `window-node aggregate [FILE...]`: the pipe mode. Events from files or stdin (NDJSON, or CSV
//! with a header) go through the same engine as `serve`'s, and every fired window comes out as
//! one line (NDJSON or CSV) in firing order; at the end of input every open window fires with
//! reason `end_of_input`. A summary goes to stderr.
//!
//! Modules, each depending only on those listed before it: `role` (the four fields: id, time,
//! key, value), `error` (bad lines and the errors that stop a run), `fields` (field paths,
//! picking them out of a line with `window_proto::flat` or serde_json, what their text means),
//! `input` (reading, splitting into lines, parsing on several threads, in order),
//! `output` (the NDJSON or CSV writer), `progress` (the bar on a terminal), `options` (the
//! command line), `run` (engine and output, chunk by chunk).
//!
//! What it does not do: no store and no protocol. A run holds only the open windows and a few
//! blocks of input; it is not durable (run it again on the same input for the same output).

mod error;
mod fields;
mod input;
mod options;
mod output;
mod progress;
mod role;
mod run;

pub use error::Error;
pub use options::AggregateArgs;

/// Runs the pipe and writes its summary to stderr.
pub fn run(args: &AggregateArgs) -> Result<(), Error> {
    let summary = run::run(args)?;
    eprintln!("window-node aggregate: {summary}");
    Ok(())
}
