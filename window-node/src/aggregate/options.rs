//! The command line of `window-node aggregate`.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::Args;

use crate::aggregate::fields::{FieldPath, Fields, TimeUnit};
use crate::aggregate::input::InputFormat;
use crate::aggregate::output::OutputFormat;
use crate::options::EngineArgs;

/// Options of `window-node aggregate`.
#[derive(Debug, Args)]
pub struct AggregateArgs {
    /// Input files, read one after the other; none, or `-`, reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// The engine's options, as `serve` takes them.
    #[command(flatten)]
    pub engine: EngineArgs,

    /// The field holding the event id (a number or a string). Nested fields by a dotted path
    /// (`event.id`); for CSV, the column name.
    #[arg(long, value_name = "PATH", default_value = "id")]
    pub id_field: FieldPath,

    /// The field holding the event time: an RFC 3339 string, or a number of --time-unit since
    /// the Unix epoch.
    #[arg(long, value_name = "PATH", default_value = "timestamp")]
    pub time_field: FieldPath,

    /// The unit of a numeric time.
    #[arg(long, value_enum, default_value_t = TimeUnit::Ms)]
    pub time_unit: TimeUnit,

    /// The field whose value keys the windows (a string or number); default `key`, used when
    /// present.
    #[arg(long, value_name = "PATH")]
    pub key_field: Option<FieldPath>,

    /// The numeric field whose sum, min and max each window reports; default `value`, used
    /// when present.
    #[arg(long, value_name = "PATH")]
    pub value_field: Option<FieldPath>,

    /// The input format; by default from the file's extension (`.csv` is CSV, anything else
    /// and stdin NDJSON).
    #[arg(long, value_enum)]
    pub input_format: Option<InputFormat>,

    /// The output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Ndjson)]
    pub output_format: OutputFormat,

    /// Write the windows to this file instead of stdout. It appears only once complete (written
    /// beside it, then renamed).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// With --output: flush the file to the disk (fsync) before it is renamed into place, and
    /// its directory after, so that it survives a power loss right after the command ends. Off
    /// by default, as for other tools that write files (cp, sort -o, DuckDB's COPY): either way
    /// the file appears only complete, whatever happens to this process.
    #[arg(long, requires = "output")]
    pub fsync: bool,

    /// Leave each window's list of ids out.
    #[arg(long)]
    pub no_ids: bool,

    /// Stop at the first line that is not an event, with exit code 1. With --output nothing is
    /// written; on stdout the windows fired by the lines before it may already be out (a stream
    /// cannot be taken back), but nothing after it, and no end-of-input windows.
    #[arg(long)]
    pub strict: bool,

    /// Parsing threads (default: the machine's cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<NonZeroUsize>,

    /// Bytes read at a time (the tests make it small to cut inputs into many chunks).
    #[arg(long, value_name = "BYTES", default_value_t = NonZeroUsize::new(1 << 20).unwrap_or(NonZeroUsize::MIN), hide = true)]
    pub block_bytes: NonZeroUsize,
}

impl AggregateArgs {
    /// The fields to read, and which of them were named on the command line.
    pub fn fields(&self) -> (Fields, [bool; 4]) {
        let fields = Fields {
            paths: [
                self.id_field.clone(),
                self.time_field.clone(),
                self.key_field
                    .clone()
                    .unwrap_or_else(|| FieldPath::named("key")),
                self.value_field
                    .clone()
                    .unwrap_or_else(|| FieldPath::named("value")),
            ],
            time_unit: self.time_unit,
        };
        let named = [
            true,
            true,
            self.key_field.is_some(),
            self.value_field.is_some(),
        ];
        (fields, named)
    }
}
