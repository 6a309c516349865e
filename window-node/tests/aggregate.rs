//! `window-node aggregate` against the real binary: its windows equal a simple model's over
//! random event orders and lateness (cut into many small chunks on several threads), and the
//! input cases: bad lines, `--strict` (and `--fsync`), empty input, no trailing newline, CRLF,
//! CSV in and out, nested fields, missing files and bad option values.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use serde_json::Value;
use window_testkit::{Finished, WAIT, calendar, run, temp_dir};

fn node() -> &'static str {
    env!("CARGO_BIN_EXE_window-node")
}

/// Runs `window-node aggregate ARGS` with `input` on stdin.
fn aggregate(args: &[&str], input: &str) -> Finished {
    run(
        Command::new(node())
            .arg("aggregate")
            .args(args)
            .env("RUST_LOG", "off"),
        input.as_bytes(),
        WAIT,
    )
    .expect("window-node aggregate runs")
}

fn stdout(done: &Finished) -> String {
    assert!(
        done.status.success(),
        "exit {}; stderr:\n{}",
        done.status,
        done.stderr
    );
    String::from_utf8(done.stdout.clone()).expect("UTF-8")
}

/// The windows of NDJSON output, each as (start ms, key, ids, reason).
type Window = (i64, Option<String>, Vec<Value>, String);

fn windows(output: &str) -> Vec<Window> {
    output
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("an output line is JSON");
            let ids = v["ids"].as_array().expect("ids").clone();
            assert_eq!(v["count"].as_u64(), Some(ids.len() as u64), "{line}");
            assert_eq!(
                v["window_start"].as_str(),
                Some(calendar::utc(v["window_start_ms"].as_i64().expect("ms")).as_str()),
                "{line}"
            );
            (
                v["window_start_ms"].as_i64().expect("window_start_ms"),
                v["key"].as_str().map(str::to_owned),
                ids,
                v["reason"].as_str().expect("reason").to_owned(),
            )
        })
        .collect()
}

/// One generated event: id, time in ms, key.
#[derive(Clone, Debug)]
struct Ev {
    id: u8,
    ts: i64,
    key: Option<&'static str>,
    /// 0: RFC 3339 in UTC, 1: at +02:00, 2: at -05:30, 3: epoch milliseconds.
    form: u8,
}

impl Ev {
    fn line(&self) -> String {
        let time = match self.form {
            0 => format!("\"{}\"", calendar::utc(self.ts)),
            1 | 2 => {
                let mut text = String::new();
                let offset = if self.form == 1 { 120 } else { -330 };
                calendar::write_rfc3339(&mut text, self.ts, offset);
                format!("\"{text}\"")
            }
            _ => self.ts.to_string(),
        };
        let key = self
            .key
            .map(|k| format!(", \"key\": \"{k}\""))
            .unwrap_or_default();
        format!("{{\"timestamp\": {time}, \"id\": {}{key}}}", self.id)
    }
}

/// The model's open windows: by (start, key), the ids in order and as a set.
type Open = BTreeMap<(i64, Option<String>), (Vec<Value>, HashSet<u8>)>;

/// One event at a time: a window fires when the highest admitted time minus the
/// lateness reaches its end; an event whose window has ended by then is late; an id counts once
/// per window; at the end every window fires. Firing order: by start, then key (none first).
fn model(events: &[Ev], size: i64, lateness: i64) -> Vec<Window> {
    let mut open: Open = BTreeMap::new();
    let mut watermark: Option<i64> = None;
    let mut fired = Vec::new();
    let fire = |open: &mut Open, fired: &mut Vec<Window>, until: i64, reason: &str| {
        let due: Vec<_> = open
            .keys()
            .filter(|(start, _)| start + size <= until)
            .cloned()
            .collect();
        for k in due {
            let (ids, _) = open.remove(&k).expect("open");
            fired.push((k.0, k.1, ids, reason.to_owned()));
        }
    };
    for e in events {
        let start = e.ts.div_euclid(size) * size;
        if watermark.is_some_and(|wm| start + size <= wm) {
            continue;
        }
        let (ids, seen) = open.entry((start, e.key.map(str::to_owned))).or_default();
        if !seen.insert(e.id) {
            continue;
        }
        ids.push(Value::from(e.id));
        let candidate = e.ts - lateness;
        if watermark.is_none_or(|wm| candidate > wm) {
            watermark = Some(candidate);
            fire(&mut open, &mut fired, candidate, "watermark");
        }
    }
    fire(&mut open, &mut fired, i64::MAX, "end_of_input");
    fired
}

fn event() -> impl Strategy<Value = (u8, i64, Option<&'static str>, u8)> {
    (
        0u8..40,
        -30_000i64..30_000,
        prop_oneof![Just(None), Just(Some("a")), Just(Some("b"))],
        0u8..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random disorder, duplicates, keys, time forms, window sizes and lateness; inputs cut
    /// into blocks of a few lines, parsed on 1 to 3 threads.
    #[test]
    fn the_pipe_fires_what_the_model_fires(
        raw in prop::collection::vec(event(), 0..120),
        size_s in 1i64..20,
        lateness_s in 0i64..15,
        block in 16usize..400,
        threads in 1usize..4,
    ) {
        let base = 1_705_312_800_000i64;
        let events: Vec<Ev> = raw
            .iter()
            .enumerate()
            .map(|(i, &(id, jitter, key, form))| Ev {
                id,
                // Mostly forward in time, by jitter out of order and sometimes late.
                ts: base + i as i64 * 700 + jitter,
                key,
                form,
            })
            .collect();
        let input: String = events.iter().map(|e| e.line() + "\n").collect();
        let (size, lateness) = (format!("{size_s}s"), format!("{lateness_s}s"));
        let (block, threads) = (block.to_string(), threads.to_string());
        let done = aggregate(
            &[
                "--window-size", &size, "--allowed-lateness", &lateness,
                "--block-bytes", &block, "--threads", &threads,
            ],
            &input,
        );
        let got = windows(&stdout(&done));
        prop_assert_eq!(got, model(&events, size_s * 1000, lateness_s * 1000));
    }
}

#[test]
fn bad_lines_are_reported_with_their_number_and_skipped() {
    let input = concat!(
        "{\"id\": 1, \"timestamp\": \"2024-01-15T10:00:10Z\"}\n",
        "not json\n",
        "\n",
        "[1, 2]\n",
        "{\"id\": 2}\n",
        "{\"id\": [2], \"timestamp\": \"2024-01-15T10:00:11Z\"}\n",
        "{\"id\": 3, \"timestamp\": \"yesterday\"}\n",
        "{\"id\": 4, \"timestamp\": \"2024-01-15T10:00:12Z\", \"value\": \"big\"}\n",
        "{\"id\": 5, \"timestamp\": \"2024-01-15T10:00:13Z\"} trailing\n",
        "{\"id\": 6, \"timestamp\": \"2024-01-15T10:00:14Z\", \"key\": {}}\n",
        "{\"id\": 7, \"timestamp\": \"2024-01-15T10:00:15Z\"}\n",
    );
    let done = aggregate(&["--threads", "2", "--block-bytes", "40"], input);
    let out = stdout(&done);
    let got = windows(&out);
    assert_eq!(got.len(), 1, "{out}");
    assert_eq!(got[0].2, vec![Value::from(1), Value::from(7)]);
    let reported: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.ends_with("; skipped"))
        .collect();
    let expected = [
        ("stdin:2:", "not a JSON object"),
        ("stdin:4:", "not a JSON object"),
        ("stdin:5:", "no time field (name it with --time-field)"),
        (
            "stdin:6:",
            "the id field must be a number or a string, got [2]",
        ),
        ("stdin:7:", "invalid timestamp \"yesterday\""),
        (
            "stdin:8:",
            "the value field must be a finite number, got \"big\"",
        ),
        ("stdin:9:", "trailing characters"),
        (
            "stdin:10:",
            "the key field must be a string or a number, got {}",
        ),
    ];
    assert_eq!(reported.len(), expected.len(), "{}", done.stderr);
    for (line, (at, why)) in reported.iter().zip(expected) {
        assert!(
            line.contains(at) && line.contains(why),
            "{line:?} should name {at} {why}"
        );
    }
    assert!(
        done.stderr.contains(
            "10 events read (8 bad lines skipped): 2 accepted, 0 duplicate, 0 late; 1 windows"
        ),
        "{}",
        done.stderr
    );
}

#[test]
fn strict_stops_at_the_first_bad_line_and_leaves_no_file() {
    let dir = temp_dir();
    let out = dir.path().join("windows.jsonl");
    let input = concat!(
        "{\"id\": 1, \"timestamp\": \"2024-01-15T10:00:10Z\"}\n",
        "{\"id\": 2, \"timestamp\": \"2024-01-15T10:01:10Z\"}\n",
        "{\"id\": 3, \"timestamp\": \"2024-01-15T10:02:10Z\"}\n",
        "{\"id\": 4, \"timestamp\": 12.5.3}\n",
        "{\"id\": 5, \"timestamp\": \"2024-01-15T10:03:10Z\"}\n",
    );
    let path = out.to_str().expect("path");
    let done = aggregate(&["--strict", "--allowed-lateness", "0s", "-o", path], input);
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(done.stderr.contains("stdin:4:"), "{}", done.stderr);
    assert!(done.stderr.contains("--strict"), "{}", done.stderr);
    let left: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
    assert!(left.is_empty(), "nothing may be left behind: {left:?}");

    // On stdout: the windows the lines before it fired, nothing after, no end of input.
    let done = aggregate(&["--strict", "--allowed-lateness", "0s"], input);
    assert_eq!(done.status.code(), Some(1));
    let got = windows(&String::from_utf8(done.stdout).expect("UTF-8"));
    let starts: Vec<(i64, &str)> = got.iter().map(|w| (w.0, w.3.as_str())).collect();
    assert_eq!(
        starts,
        [
            (1_705_312_800_000, "watermark"),
            (1_705_312_860_000, "watermark")
        ]
    );

    // Without a bad line the file appears whole.
    let good: String = input
        .lines()
        .filter(|l| !l.contains("12.5.3"))
        .map(|l| format!("{l}\n"))
        .collect();
    let done = aggregate(&["--strict", "-o", path], &good);
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(windows(&fs::read_to_string(&out).expect("output")).len(), 4);
    // Readable as a file made by any tool would be, not the temporary file's owner-only mode.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&out).expect("meta").permissions());
    assert_eq!(mode & 0o777, 0o644);
    assert_eq!(
        fs::read_dir(dir.path()).expect("dir").count(),
        1,
        "only the output is left"
    );

    // --fsync writes the same file (flushed to the disk, then its directory), and asks for
    // --output.
    let synced = dir.path().join("synced.jsonl");
    let done = aggregate(
        &["--strict", "--fsync", "-o", synced.to_str().expect("path")],
        &good,
    );
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(
        fs::read(&synced).expect("synced"),
        fs::read(&out).expect("output")
    );
    let done = aggregate(&["--fsync"], &good);
    assert_eq!(done.status.code(), Some(2));
    assert!(done.stderr.contains("--output <FILE>"), "{}", done.stderr);
}

#[test]
fn empty_input_gives_no_windows() {
    for input in ["", "\n\n", "\r\n"] {
        let done = aggregate(&[], input);
        assert_eq!(stdout(&done), "");
        assert!(done.stderr.contains("0 events read"), "{}", done.stderr);
    }
    let dir = temp_dir();
    let csv = dir.path().join("empty.csv");
    fs::write(&csv, "").expect("write");
    let done = aggregate(&[csv.to_str().expect("path")], "");
    assert_eq!(stdout(&done), "");
}

#[test]
fn the_last_line_needs_no_newline_and_crlf_is_a_line_end() {
    let lf = "{\"id\": 1, \"timestamp\": \"2024-01-15T10:00:10Z\"}\n{\"id\": 2, \"timestamp\": \"2024-01-15T10:00:20Z\", \"key\": \"k\"}\n";
    let expected = stdout(&aggregate(&[], lf));
    assert_eq!(windows(&expected).len(), 2);
    let unterminated = lf.trim_end();
    assert_eq!(stdout(&aggregate(&[], unterminated)), expected);
    let crlf = lf.replace('\n', "\r\n");
    assert_eq!(
        stdout(&aggregate(&["--block-bytes", "16"], &crlf)),
        expected
    );
    assert_eq!(
        stdout(&aggregate(&["--block-bytes", "16"], crlf.trim_end())),
        expected
    );
}

/// The same events as NDJSON and as CSV (quoted cells, an empty key, epoch times), and the
/// output as CSV.
#[test]
fn csv_in_and_out() {
    let ndjson = concat!(
        "{\"id\": \"a,1\", \"timestamp\": \"2024-01-15T10:00:10Z\", \"key\": \"x\", \"value\": 2}\n",
        "{\"id\": 2, \"timestamp\": 1705312815000, \"value\": 3.5}\n",
        "{\"id\": 3, \"timestamp\": \"2024-01-15T12:01:20+02:00\", \"key\": \"x\"}\n",
    );
    let csv = concat!(
        "key,timestamp,id,value,note\n",
        "x,2024-01-15T10:00:10Z,\"a,1\",2,\"two\nlines\"\n",
        ",1705312815000,2,3.5,\n",
        "x,2024-01-15T12:01:20+02:00,3,,\n",
        "x,2024-01-15T10:01:30Z,4\n",
    );
    let dir = temp_dir();
    let path = dir.path().join("events.csv");
    fs::write(&path, csv).expect("write");
    let path = path.to_str().expect("path");
    let from_json = stdout(&aggregate(&[], ndjson));
    let done = aggregate(&[path], "");
    assert_eq!(stdout(&done), from_json);
    assert!(
        done.stderr.contains("events.csv:6: bad CSV record"),
        "{}",
        done.stderr
    );
    // The extension decides, unless --input-format says otherwise.
    assert_eq!(
        stdout(&aggregate(&["--input-format", "csv"], csv)),
        from_json
    );

    let out = stdout(&aggregate(&["--output-format", "csv", path], ""));
    assert_eq!(
        out.lines().next(),
        Some(
            "window_id,window_start,window_end,window_start_ms,window_end_ms,key,count,sum,min,max,ids,reason"
        )
    );
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.expect("row").iter().map(str::to_owned).collect())
        .collect();
    let expected_json = windows(&from_json);
    assert_eq!(rows.len(), expected_json.len());
    for (row, (start, key, ids, reason)) in rows.iter().zip(&expected_json) {
        assert_eq!(row[3], start.to_string());
        assert_eq!(row[5], key.clone().unwrap_or_default());
        assert_eq!(row[6], ids.len().to_string());
        assert_eq!(
            serde_json::from_str::<Vec<Value>>(&row[10]).expect("ids"),
            *ids
        );
        assert_eq!(&row[11], reason);
    }
    // The unkeyed window first, then key x (whose id holds a comma: the cell is quoted).
    assert_eq!(rows[0][10], "[2]");
    assert_eq!(rows[1][10], "[\"a,1\"]");
    assert_eq!(
        (
            rows[0][7].as_str(),
            rows[0][8].as_str(),
            rows[0][9].as_str()
        ),
        ("3.5", "3.5", "3.5")
    );
    assert!(out.contains("\"[\"\"a,1\"\"]\""), "{out}");
}

#[test]
fn a_csv_header_without_the_named_column_is_an_error() {
    let done = aggregate(
        &["--input-format", "csv", "--time-field", "at"],
        "id,timestamp\n1,5\n",
    );
    usage_error(
        &done,
        &["no column \"at\" for --time-field; name one of id, timestamp"],
    );
}

#[test]
fn nested_fields_epoch_seconds_and_no_ids() {
    let input = concat!(
        "{\"event\": {\"id\": 1, \"at\": 1705312810.25}, \"user\": {\"name\": \"ann\"}, \"amount\": {\"v\": 4}}\n",
        "{\"event\": {\"id\": 2, \"at\": 1705312811}, \"user\": {\"name\": \"ann\"}, \"amount\": {\"v\": -1}}\n",
    );
    let args = [
        "--id-field",
        "event.id",
        "--time-field",
        "event.at",
        "--time-unit",
        "s",
        "--key-field",
        "user.name",
        "--value-field",
        "amount.v",
    ];
    let out = stdout(&aggregate(&args, input));
    let v: Value = serde_json::from_str(out.trim()).expect("one line");
    assert_eq!(v["key"], "ann");
    assert_eq!(v["window_start_ms"], 1_705_312_800_000i64);
    assert_eq!(
        (v["count"].as_u64(), v["sum"].as_f64(), v["min"].as_f64()),
        (Some(2), Some(3.0), Some(-1.0))
    );
    assert_eq!(v["ids"], serde_json::json!([1, 2]));
    let mut no_ids = args.to_vec();
    no_ids.push("--no-ids");
    let out = stdout(&aggregate(&no_ids, input));
    assert!(!out.contains("\"ids\""), "{out}");
}

#[test]
fn files_are_read_in_order_and_dash_is_stdin() {
    let dir = temp_dir();
    let first = dir.path().join("a.jsonl");
    fs::write(
        &first,
        "{\"id\": 1, \"timestamp\": \"2024-01-15T10:00:10Z\"}",
    )
    .expect("write");
    let path = first.to_str().expect("path");
    let done = aggregate(
        &[path, "-"],
        "{\"id\": 2, \"timestamp\": \"2024-01-15T10:00:20Z\"}\n",
    );
    let got = windows(&stdout(&done));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, vec![Value::from(1), Value::from(2)]);
}

#[test]
fn usage_errors_exit_2_with_one_line_saying_what_to_do() {
    let missing = Path::new("/nonexistent/events.jsonl");
    let done = aggregate(&[missing.to_str().expect("path")], "");
    usage_error(
        &done,
        &["cannot open /nonexistent/events.jsonl", "check the path"],
    );
    assert!(done.stdout.is_empty());
    // clap's own errors: exit 2 too, with a usage hint after the error line.
    let done = aggregate(&["--window-size", "0s"], "");
    assert_eq!(done.status.code(), Some(2));
    assert!(
        done.stderr.contains("--window-size") && done.stderr.contains("from 1ms to 100 years"),
        "{}",
        done.stderr
    );
    let done = aggregate(&["--late", "sometimes"], "");
    assert_eq!(done.status.code(), Some(2));
    assert!(
        done.stderr.contains("possible values: drop, emit"),
        "{}",
        done.stderr
    );
    let done = aggregate(&["--id-field", "a..b"], "");
    assert_eq!(done.status.code(), Some(2));
    assert!(done.stderr.contains("not a field path"), "{}", done.stderr);
}

/// Exit code 2 and one line on stderr holding every one of `texts`.
fn usage_error(done: &Finished, texts: &[&str]) {
    assert_eq!(done.status.code(), Some(2), "{}", done.stderr);
    assert_eq!(done.stderr.lines().count(), 1, "{}", done.stderr);
    for text in texts {
        assert!(
            done.stderr.contains(text),
            "{text:?} not in {}",
            done.stderr
        );
    }
}

#[test]
fn late_events_are_written_with_late_emit() {
    let input = concat!(
        "{\"id\": 1, \"timestamp\": \"2024-01-15T10:00:10Z\"}\n",
        "{\"id\": 2, \"timestamp\": \"2024-01-15T10:01:10Z\"}\n",
        "{\"id\": 3, \"timestamp\": \"2024-01-15T10:00:50Z\", \"key\": \"k\"}\n",
    );
    let out = stdout(&aggregate(
        &["--allowed-lateness", "0s", "--late", "emit"],
        input,
    ));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[1]["reason"], "late");
    assert_eq!(lines[1]["id"], 3);
    assert_eq!(lines[1]["key"], "k");
    assert_eq!(lines[1]["window_start_ms"], 1_705_312_800_000i64);
    assert_eq!(lines[1]["timestamp_ms"], 1_705_312_850_000i64);
}
