//! The one child-process harness: a spawned command whose stderr is kept line by line, with
//! bounded waits for a log line and for its exit, signals, and kill and reap on drop.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::Error;
use crate::procfs::Pid;

/// How many of a process's last stderr lines a failure message shows.
const TAIL: usize = 20;
/// How long an exited process's stderr may take to reach its end (the reader thread takes the
/// last lines after the exit).
const LOG_END: Duration = Duration::from_secs(5);
/// How often a wait looks whether the process exited: the bench times processes of a tenth of
/// a second by their exit, so this bounds the error of those figures (a pause of 10 ms made
/// them up to 10 ms long, 5 on average).
pub const EXIT_POLL: Duration = Duration::from_millis(1);

/// What becomes of a process's stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stderr {
    /// Kept line by line (a thread drains it, so a full pipe never blocks the process): for
    /// [`Process::log_has`], [`Process::wait_for_line`] and failure messages.
    Capture,
    /// Written where the caller's stderr goes (for a tool whose progress a person watches); the
    /// process then has no log.
    Inherit,
}

/// A signal [`Process::signal`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Kill,
    Term,
    Stop,
    Cont,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Kill => "KILL",
            Signal::Term => "TERM",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        }
    }
}

/// A running child process. Dropping it SIGKILLs it (if it still runs) and reaps it, so no
/// error path and no failing test leaves a process behind.
#[derive(Debug)]
pub struct Process {
    child: Child,
    /// Names the process in messages: `window-node serve at 127.0.0.1:4000`.
    name: String,
    /// Its exit status, once reaped; a reaped process is never signalled (its pid may be reused).
    status: Option<ExitStatus>,
    log: Arc<Log>,
}

impl Process {
    /// Spawns `command` with stderr as `stderr` says; stdin and stdout are as `command` sets them
    /// (std's default inherits them: set them). The name in messages is the program's file name
    /// and its first argument when that is a subcommand (`window-node serve`).
    pub fn spawn(command: &mut Command, stderr: Stderr) -> Result<Process, Error> {
        let name = name_of(command);
        command.stderr(match stderr {
            Stderr::Capture => Stdio::piped(),
            Stderr::Inherit => Stdio::inherit(),
        });
        let mut child = command
            .spawn()
            .map_err(|e| Error::new(format!("starting {name}: {e}")))?;
        let log = Arc::new(Log::default());
        match child.stderr.take() {
            Some(pipe) => {
                let sink = Arc::clone(&log);
                thread::spawn(move || sink.read_to_end(pipe));
            }
            None => log.end(),
        }
        Ok(Process {
            child,
            name,
            status: None,
            log,
        })
    }

    /// The name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn set_name(&mut self, name: String) {
        self.name = name;
    }

    /// The process id (for `/proc`, see [`crate::procfs`]).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The process for [`crate::procfs`]'s readers.
    pub fn pid(&self) -> Pid {
        Pid::Other(self.child.id())
    }

    /// Its stdin, if the command made it a pipe (once).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// Its stdout, if the command made it a pipe (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Its stdout read line by line by a thread of its own, for bounded reads (see [`Lines`]).
    pub fn stdout_lines(&mut self) -> Option<Lines> {
        let stdout = self.take_stdout()?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Some(Lines {
            rx,
            name: self.name.clone(),
        })
    }

    /// Waits until a stderr line, from the first on, gives `Some` to `find`, for at most
    /// `limit`; returns what `find` returned. `what` names the awaited line in the error. A
    /// process that exits first fails at once rather than after the whole wait.
    pub fn wait_for_line<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut find: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, Error> {
        let deadline = Instant::now() + limit;
        let mut next = 0;
        let mut log = self.log.lock();
        loop {
            while let Some(line) = log.lines.get(next) {
                if let Some(found) = find(line) {
                    return Ok(found);
                }
                next += 1;
            }
            if log.ended {
                drop(log);
                let how = match self.wait_exit(LOG_END) {
                    Ok(status) => format!("exited with {status}"),
                    Err(_) => "closed its stderr".to_owned(),
                };
                return Err(self.failure(&format!("{how} before it logged {what}")));
            }
            let now = Instant::now();
            if now >= deadline {
                drop(log);
                return Err(self.failure(&format!("did not log {what} within {limit:?}")));
            }
            log = self
                .log
                .grew
                .wait_timeout(log, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sends `signal` with the `kill` command.
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        if self.status.is_some() {
            return Err(Error::new(format!(
                "{} has already exited: no SIG{} sent",
                self.name,
                signal.name()
            )));
        }
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{}", signal.name()), &pid])
            .status()
            .map_err(|e| Error::new(format!("running kill: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::new(format!(
                "kill -{} {pid} ({}) failed: {status}",
                signal.name(),
                self.name
            )))
        }
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs. (A non-blocking
    /// `waitpid`: cheap enough to call every [`EXIT_POLL`].)
    pub fn exited(&mut self) -> Result<Option<ExitStatus>, Error> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .map_err(|e| Error::new(format!("waiting for {}: {e}", self.name)))?;
        }
        Ok(self.status)
    }

    /// Waits at most `limit` for the process to exit, and then for the end of its stderr, so
    /// that [`Process::log_has`] sees its last lines. A process still running after `limit` is
    /// an error (it keeps running; dropping it kills it).
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus, Error> {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.exited()? {
                break status;
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!("did not exit within {limit:?}")));
            }
            thread::sleep(EXIT_POLL);
        };
        self.log.wait_end(LOG_END);
        Ok(status)
    }

    /// SIGKILLs the process (if it still runs) and reaps it; returns how it ended.
    pub fn kill(&mut self) -> Result<ExitStatus, Error> {
        if let Some(status) = self.exited()? {
            return Ok(status);
        }
        // An error here means it exited meanwhile; the wait below tells.
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map_err(|e| Error::new(format!("reaping {}: {e}", self.name)))?;
        self.status = Some(status);
        self.log.wait_end(LOG_END);
        Ok(status)
    }

    /// True when the process wrote a stderr line containing `text`.
    pub fn log_has(&self, text: &str) -> bool {
        self.log.lock().lines.iter().any(|l| l.contains(text))
    }

    /// Every stderr line so far, joined with newlines.
    pub fn log_text(&self) -> String {
        let log = self.log.lock();
        let mut text = log.lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text
    }

    /// The last `n` stderr lines, for a failure message.
    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let log = self.log.lock();
        log.lines[log.lines.len().saturating_sub(n)..].to_vec()
    }

    /// An error: `NAME WHAT; its stderr ends:` and the last lines, indented.
    pub fn failure(&self, what: &str) -> Error {
        let tail = self.log_tail(TAIL);
        let log = if tail.is_empty() {
            "; it wrote nothing on stderr (or stderr was not captured)".to_owned()
        } else {
            let lines: Vec<String> = tail.iter().map(|l| format!("    {l}")).collect();
            format!("; its stderr ends:\n{}", lines.join("\n"))
        };
        Error::new(format!("{} {what}{log}", self.name))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process's stdout, line by line, with a bound on each read.
#[derive(Debug)]
pub struct Lines {
    rx: Receiver<String>,
    name: String,
}

impl Lines {
    /// The next line (without its newline), waiting at most `limit`.
    pub fn next(&self, limit: Duration) -> Result<String, Error> {
        self.rx.recv_timeout(limit).map_err(|e| match e {
            RecvTimeoutError::Timeout => {
                Error::new(format!("{} wrote no line within {limit:?}", self.name))
            }
            RecvTimeoutError::Disconnected => {
                Error::new(format!("{} closed its stdout", self.name))
            }
        })
    }
}

/// How a process run by [`run`] ended, and what it wrote.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// Its stderr, every line.
    pub stderr: String,
}

/// Runs `command` to its end: writes `input` to its stdin and closes it, reads its stdout and
/// stderr, and waits at most `limit` for it to exit (past that it is killed, and the error
/// shows its stderr).
pub fn run(command: &mut Command, input: &[u8], limit: Duration) -> Result<Finished, Error> {
    command.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut process = Process::spawn(command, Stderr::Capture)?;
    let mut stdin = process.take_stdin();
    let input = input.to_vec();
    // A thread writes, so a process that answers before it has read everything cannot
    // deadlock against us; a process that exits early makes the write fail, which is fine.
    let writer = thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&input);
        }
    });
    let mut stdout = process.take_stdout();
    let reader = thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(stdout) = stdout.as_mut() {
            let _ = stdout.read_to_end(&mut out);
        }
        out
    });
    let status = process.wait_exit(limit)?;
    let _ = writer.join();
    let stdout = reader
        .join()
        .map_err(|_| Error::new("the stdout reader panicked"))?;
    Ok(Finished {
        status,
        stdout,
        stderr: process.log_text(),
    })
}

/// The program's file name, and its first argument when that is a subcommand.
fn name_of(command: &Command) -> String {
    let program = Path::new(command.get_program())
        .file_name()
        .unwrap_or_else(|| OsStr::new("a process"))
        .to_string_lossy()
        .into_owned();
    match command.get_args().next().map(OsStr::to_string_lossy) {
        Some(first) if !first.starts_with('-') && !first.contains('/') => {
            format!("{program} {first}")
        }
        _ => program,
    }
}

/// A process's stderr lines, and whether they reached their end.
#[derive(Debug, Default)]
struct Log {
    state: Mutex<LogState>,
    grew: Condvar,
}

#[derive(Debug, Default)]
struct LogState {
    lines: Vec<String>,
    /// The stderr pipe reached its end (the process exited), or was never captured.
    ended: bool,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads `pipe` to its end, a line at a time (invalid UTF-8 replaced, not fatal).
    fn read_to_end(&self, pipe: impl Read) {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    self.lock()
                        .lines
                        .push(text.trim_end_matches(['\n', '\r']).to_owned());
                    self.grew.notify_all();
                }
            }
        }
        self.end();
    }

    fn end(&self) {
        self.lock().ended = true;
        self.grew.notify_all();
    }

    /// Waits at most `limit` for the end of the stderr.
    fn wait_end(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut log = self.lock();
        while !log.ended {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            log = self
                .grew
                .wait_timeout(log, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    #[test]
    fn stderr_is_kept_and_a_line_can_be_awaited() {
        let mut process = Process::spawn(
            &mut sh("echo starting >&2; echo 'ready port=7' >&2; exec sleep 30"),
            Stderr::Capture,
        )
        .expect("spawn");
        let port = process
            .wait_for_line(Duration::from_secs(10), "its port", |line| {
                line.strip_prefix("ready port=")?.parse::<u16>().ok()
            })
            .expect("the port line");
        assert_eq!(port, 7);
        assert!(process.log_has("starting"));
        process.signal(Signal::Term).expect("SIGTERM");
        let status = process.wait_exit(Duration::from_secs(10)).expect("exit");
        assert!(!status.success());
        assert!(process.signal(Signal::Kill).is_err(), "a reaped process");
    }

    #[test]
    fn a_process_that_exits_before_its_line_fails_at_once_with_its_log() {
        let mut process = Process::spawn(&mut sh("echo 'bad option' >&2; exit 3"), Stderr::Capture)
            .expect("spawn");
        let started = Instant::now();
        let error = process
            .wait_for_line(Duration::from_secs(30), "its port", |_| None::<()>)
            .expect_err("no such line");
        assert!(started.elapsed() < Duration::from_secs(10));
        let message = error.to_string();
        assert!(message.starts_with("sh exited with exit status: 3 before it logged its port"));
        assert!(message.ends_with("    bad option"), "{message}");
    }

    #[test]
    fn waits_are_bounded_and_run_gives_the_output() {
        let mut process = Process::spawn(&mut sh("exec sleep 30"), Stderr::Capture).expect("spawn");
        let error = process
            .wait_exit(Duration::from_millis(50))
            .expect_err("still running");
        assert!(
            error.to_string().contains("did not exit within 50ms"),
            "{error}"
        );
        assert!(!process.kill().expect("killed").success());

        let finished = run(
            Command::new("sh").args(["-c", "cat; echo done >&2"]),
            b"hello\n",
            Duration::from_secs(10),
        )
        .expect("run");
        assert!(finished.status.success());
        assert_eq!(finished.stdout, b"hello\n");
        assert_eq!(finished.stderr, "done\n");
        let error = run(
            Command::new("sh").args(["-c", "exec sleep 30"]),
            b"",
            Duration::from_millis(50),
        )
        .expect_err("too slow");
        assert!(error.to_string().contains("did not exit"), "{error}");
    }
}
