//! The pipe's output: one line per fired window (and per late event with `--late emit`), NDJSON
//! or CSV, through one buffered writer, to stdout or to a file that appears only when complete.

use std::fs::File;
use std::io::{self, BufWriter, StdoutLock, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;
use window_core::{CloseReason, ClosedWindow, EventId, IdFrame, Timestamp, WindowBounds};
use window_proto::{JsonWriter, Style};

use crate::aggregate::error::Error;

/// Bytes buffered before a write.
const BUFFER: usize = 1 << 20;

/// The output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per line.
    Ndjson,
    /// Comma-separated with a header row; `ids` as a JSON array in one cell.
    Csv,
}

/// The CSV columns, in order (NDJSON writes the same names, leaving out what is absent).
const COLUMNS: [&str; 12] = [
    "window_id",
    "window_start",
    "window_end",
    "window_start_ms",
    "window_end_ms",
    "key",
    "count",
    "sum",
    "min",
    "max",
    "ids",
    "reason",
];

/// How the output looks.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// NDJSON or CSV.
    pub format: OutputFormat,
    /// Window ids in this frame.
    pub frame: IdFrame,
    /// List each window's ids (`--no-ids` turns it off).
    pub ids: bool,
}

/// Where the lines go, buffered.
#[derive(Debug)]
pub struct Output {
    shape: Shape,
    /// `stdout` or the file's name, for errors.
    name: String,
    encoder: Encoder,
    /// The NDJSON line being built.
    line: Vec<u8>,
    /// The CSV cells of the row being built.
    cells: Vec<Vec<u8>>,
}

/// The one buffered writer: NDJSON lines as built, or CSV rows through the `csv` crate (which
/// quotes cells and buffers).
#[derive(Debug)]
enum Encoder {
    Ndjson(BufWriter<Sink>),
    Csv(Box<csv::Writer<Sink>>),
}

/// stdout, or a temporary file beside the named one, renamed onto it by [`Output::finish`].
#[derive(Debug)]
enum Sink {
    Stdout(StdoutLock<'static>),
    /// `fsync`: flush the file to the disk before it is renamed into place, and its directory
    /// after.
    File {
        temp: NamedTempFile,
        path: PathBuf,
        fsync: bool,
    },
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(out) => out.write(buf),
            Sink::File { temp, .. } => temp.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.write_all(buf),
            Sink::File { temp, .. } => temp.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.flush(),
            Sink::File { temp, .. } => temp.flush(),
        }
    }
}

/// The directory a file named `path` is in (`.` for a bare name).
fn output_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

impl Output {
    /// Output to `path` (through a temporary file in its directory, renamed into place; when
    /// `fsync`, the file is flushed to the disk before and its directory after), or to stdout.
    pub fn create(path: Option<&Path>, shape: Shape, fsync: bool) -> Result<Output, Error> {
        let sink = match path {
            None => Sink::Stdout(io::stdout().lock()),
            Some(path) => {
                let dir = output_dir(path);
                let temp = tempfile::Builder::new()
                    .prefix(".window-node-aggregate-")
                    .permissions(permissions(path))
                    .tempfile_in(dir)
                    .map_err(|source| Error::Write {
                        name: path.display().to_string(),
                        source,
                    })?;
                Sink::File {
                    temp,
                    path: path.to_owned(),
                    fsync,
                }
            }
        };
        let encoder = match shape.format {
            OutputFormat::Ndjson => Encoder::Ndjson(BufWriter::with_capacity(BUFFER, sink)),
            OutputFormat::Csv => Encoder::Csv(Box::new(
                csv::WriterBuilder::new()
                    .buffer_capacity(BUFFER)
                    .from_writer(sink),
            )),
        };
        let mut output = Output {
            shape,
            name: path.map_or_else(|| "stdout".to_owned(), |p| p.display().to_string()),
            encoder,
            line: Vec::with_capacity(4096),
            cells: vec![Vec::new(); COLUMNS.len()],
        };
        if shape.format == OutputFormat::Csv {
            for (cell, name) in output.cells.iter_mut().zip(COLUMNS) {
                cell.extend_from_slice(name.as_bytes());
            }
            output.end_csv_row()?;
        }
        Ok(output)
    }

    /// Writes one fired window. The engine's `flush` is the pipe's end of input.
    pub fn window(&mut self, window: &ClosedWindow) -> Result<(), Error> {
        let bounds = WindowBounds {
            start: window.window.start,
            end: window.window.end(),
        };
        let reason = match window.reason {
            CloseReason::Flush => "end_of_input",
            other => other.as_str(),
        };
        let key = window.window.key.as_deref();
        match self.shape.format {
            OutputFormat::Ndjson => {
                let mut w = JsonWriter::new(&mut self.line, Style::Compact);
                w.begin_object();
                bounds_json(&mut w, self.shape.frame, bounds, key);
                w.key("count").int(window.ids.len());
                w.aggregate(window.aggregate);
                if self.shape.ids {
                    w.key("ids").event_ids(&window.ids);
                }
                w.key("reason").str(reason);
                w.end_object();
                self.end_json_line()
            }
            OutputFormat::Csv => {
                self.bounds_csv(bounds, key);
                let count = itoa::Buffer::new()
                    .format(window.ids.len())
                    .as_bytes()
                    .to_vec();
                self.cells[6] = count;
                if let Some(a) = window.aggregate {
                    for (cell, v) in [(7, a.sum), (8, a.min), (9, a.max)] {
                        JsonWriter::new(&mut self.cells[cell], Style::Compact).float(v);
                    }
                }
                if self.shape.ids {
                    ids_json(&mut self.cells[10], &window.ids);
                }
                self.cells[11].extend_from_slice(reason.as_bytes());
                self.end_csv_row()
            }
        }
    }

    /// Writes one late event (`--late emit`): its window, its id and time, reason `late`.
    pub fn late(
        &mut self,
        id: &EventId,
        ts: Timestamp,
        bounds: WindowBounds,
        key: Option<&str>,
    ) -> Result<(), Error> {
        match self.shape.format {
            OutputFormat::Ndjson => {
                let mut w = JsonWriter::new(&mut self.line, Style::Compact);
                w.begin_object();
                bounds_json(&mut w, self.shape.frame, bounds, key);
                w.key("id").event_id(id);
                w.key("timestamp_ms").int(ts.as_millis());
                w.key("reason").str("late");
                w.end_object();
                self.end_json_line()
            }
            OutputFormat::Csv => {
                self.bounds_csv(bounds, key);
                ids_json(&mut self.cells[10], std::slice::from_ref(id));
                self.cells[11].extend_from_slice(b"late");
                self.end_csv_row()
            }
        }
    }

    /// Writes out what is buffered and, for a file, renames it onto its name: the file appears
    /// whole or not at all.
    pub fn finish(self) -> Result<(), Error> {
        let name = self.name;
        let failed = |source| Error::Write {
            name: name.clone(),
            source,
        };
        let sink = match self.encoder {
            Encoder::Ndjson(writer) => writer.into_inner().map_err(|e| e.into_error()),
            Encoder::Csv(writer) => writer.into_inner().map_err(|e| e.into_error()),
        }
        .map_err(failed)?;
        match sink {
            Sink::Stdout(mut out) => out.flush().map_err(failed),
            Sink::File { temp, path, fsync } => {
                if fsync {
                    temp.as_file().sync_all().map_err(failed)?;
                }
                temp.persist(&path).map_err(|e| failed(e.error))?;
                if fsync {
                    // The rename is durable once the directory is.
                    File::open(output_dir(&path))
                        .and_then(|dir| dir.sync_all())
                        .map_err(failed)?;
                }
                Ok(())
            }
        }
    }

    fn end_json_line(&mut self) -> Result<(), Error> {
        self.line.push(b'\n');
        let written = match &mut self.encoder {
            Encoder::Ndjson(writer) => writer.write_all(&self.line),
            Encoder::Csv(_) => Ok(()),
        };
        self.line.clear();
        written.map_err(|source| self.write_error(source))
    }

    fn end_csv_row(&mut self) -> Result<(), Error> {
        let written = match &mut self.encoder {
            Encoder::Csv(writer) => writer.write_record(&self.cells).map_err(io::Error::other),
            Encoder::Ndjson(_) => Ok(()),
        };
        for cell in &mut self.cells {
            cell.clear();
        }
        written.map_err(|source| self.write_error(source))
    }

    fn bounds_csv(&mut self, bounds: WindowBounds, key: Option<&str>) {
        use std::io::Write as _;
        let id = self.shape.frame.id_of(bounds.start);
        let _ = write!(self.cells[0], "{id}");
        let _ = write!(self.cells[1], "{}", bounds.start);
        let _ = write!(self.cells[2], "{}", bounds.end);
        let mut buffer = itoa::Buffer::new();
        self.cells[3].extend_from_slice(buffer.format(bounds.start.as_millis()).as_bytes());
        self.cells[4].extend_from_slice(buffer.format(bounds.end.as_millis()).as_bytes());
        if let Some(key) = key {
            self.cells[5].extend_from_slice(key.as_bytes());
        }
    }

    fn write_error(&self, source: io::Error) -> Error {
        Error::Write {
            name: self.name.clone(),
            source,
        }
    }
}

/// The output file's permissions: those of the file it replaces, else read-write for its owner
/// and readable by all (a temporary file would be the owner's alone).
fn permissions(path: &Path) -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).map_or_else(
        |_| std::fs::Permissions::from_mode(0o644),
        |m| m.permissions(),
    )
}

/// `"window_id", "window_start", "window_end", "window_start_ms", "window_end_ms", "key"?`.
fn bounds_json(w: &mut JsonWriter<'_>, frame: IdFrame, bounds: WindowBounds, key: Option<&str>) {
    w.key("window_id").window_id(frame.id_of(bounds.start));
    w.key("window_start").timestamp(bounds.start);
    w.key("window_end").timestamp(bounds.end);
    w.key("window_start_ms").int(bounds.start.as_millis());
    w.key("window_end_ms").int(bounds.end.as_millis());
    if let Some(key) = key {
        w.key("key").str(key);
    }
}

/// The ids as a compact JSON array.
fn ids_json(out: &mut Vec<u8>, ids: &[EventId]) {
    JsonWriter::new(out, Style::Compact).event_ids(ids);
}
