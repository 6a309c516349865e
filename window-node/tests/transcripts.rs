//! Transcript tests: every `tests/data/*.jsonl` file is a conversation with the real binary.
//!
//! Format, one item per line:
//! - `#! --flag value ...`: command-line arguments for the node (first lines only);
//! - `# text`: a comment;
//! - `> {...}`: a request line sent to stdin (sent as is, after the `> `);
//! - `< {...}`: a line the node must write to stdout, in order, byte for byte.
//!
//! All requests are written to stdin, stdin is closed, and the whole stdout must equal the `<`
//! lines. With `UPDATE_TRANSCRIPTS=1` the `<` lines are rewritten from what the node wrote
//! (review the diff before committing it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use window_testkit::{WAIT, run as run_to_end};

fn node() -> &'static str {
    env!("CARGO_BIN_EXE_window-node")
}

struct Transcript {
    args: Vec<String>,
    requests: Vec<String>,
    expected: Vec<String>,
}

fn read(path: &Path) -> Transcript {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut t = Transcript {
        args: Vec::new(),
        requests: Vec::new(),
        expected: Vec::new(),
    };
    for (n, line) in text.lines().enumerate() {
        if let Some(args) = line.strip_prefix("#!") {
            t.args.extend(args.split_whitespace().map(str::to_owned));
        } else if let Some(request) = line.strip_prefix("> ") {
            t.requests.push(request.to_owned());
        } else if let Some(reply) = line.strip_prefix("< ") {
            t.expected.push(reply.to_owned());
        } else if !(line.starts_with('#') || line.trim().is_empty()) {
            panic!("{}:{}: unknown line {line:?}", path.display(), n + 1);
        }
    }
    t
}

/// Runs the node on the transcript's requests to its end (bounded by `WAIT`); its stdout lines.
fn run(t: &Transcript) -> Vec<String> {
    let input: String = t.requests.iter().map(|r| format!("{r}\n")).collect();
    let output = run_to_end(
        Command::new(node()).args(&t.args).env("RUST_LOG", "off"),
        input.as_bytes(),
        WAIT,
    )
    .expect("window-node runs the transcript");
    assert!(
        output.status.success(),
        "window-node exited with {}; stderr:\n{}",
        output.status,
        output.stderr
    );
    String::from_utf8(output.stdout)
        .expect("stdout is UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Rewrites the `<` lines of `path` with `actual`, keeping everything else in place: each
/// request is followed by its reply and the unsolicited messages (with a `seq`) that follow it.
fn update(path: &Path, actual: &[String]) {
    let text = fs::read_to_string(path).expect("read transcript");
    let mut out = String::new();
    let mut replies = actual.iter().peekable();
    let push = |out: &mut String, line: &str| {
        out.push_str(line);
        out.push('\n');
    };
    for line in text.lines().filter(|l| !l.starts_with("< ")) {
        push(&mut out, line);
        if line.starts_with("> ") {
            if let Some(reply) = replies.next() {
                push(&mut out, &format!("< {reply}"));
            }
            while let Some(next) = replies.next_if(|r| is_unsolicited(r)) {
                push(&mut out, &format!("< {next}"));
            }
        }
    }
    for reply in replies {
        push(&mut out, &format!("< {reply}"));
    }
    fs::write(path, out).expect("write transcript");
}

fn is_unsolicited(line: &str) -> bool {
    !line.contains("\"in_reply_to\"") && line.contains("\"seq\"")
}

#[test]
fn transcripts() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("tests/data")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no transcripts in {}", dir.display());
    let updating = std::env::var_os("UPDATE_TRANSCRIPTS").is_some();
    let mut failures = Vec::new();
    for path in &paths {
        let t = read(path);
        let actual = run(&t);
        if actual != t.expected {
            if updating {
                update(path, &actual);
                continue;
            }
            let mut report = format!("{}:\n", path.display());
            for i in 0..actual.len().max(t.expected.len()) {
                let a = actual.get(i).map_or("<nothing>", String::as_str);
                let e = t.expected.get(i).map_or("<nothing>", String::as_str);
                if a != e {
                    report.push_str(&format!(
                        "  line {}\n    expected {e}\n    actual   {a}\n",
                        i + 1
                    ));
                }
            }
            failures.push(report);
        }
    }
    assert!(
        failures.is_empty(),
        "transcripts differ:\n{}",
        failures.join("\n")
    );
}
