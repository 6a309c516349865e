//! A real `redis-server` on a free loopback port, killed and reaped on drop.
//!
//! When `redis-server` is not installed, [`RedisServer::start`] (the tests' way in) says so on
//! the terminal, written past the test harness's output capture, and returns `None`; in CI (`CI`
//! set) it panics, because CI installs Redis (`.ci/run`) and a missing server there must not
//! look like a pass. Tools that decide for themselves use [`RedisServer::launch`].

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Error, Process, Stderr, TempDir, wait_until};

/// How long a server may take to answer its first `PING`.
const READY: Duration = Duration::from_secs(10);
/// Starts tried before giving up: a port found free can be taken by someone else before the
/// server binds it.
const TRIES: usize = 5;

/// What the server keeps on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing (`--save '' --appendonly no`): the tests' server.
    Off,
    /// An append-only file fsynced every second (`--appendonly yes --appendfsync everysec`).
    AppendOnlyEverySec,
    /// An append-only file fsynced before every reply (`--appendfsync always`): what survives a
    /// SIGKILL of the server is everything it answered.
    AppendOnlyAlways,
}

/// Why [`RedisServer::launch`] started no server.
#[derive(Debug)]
pub enum StartError {
    /// `redis-server` is not on `PATH`.
    NotInstalled,
    /// It is, but no start worked; the last failure.
    Failed(Error),
}

/// A `redis-server` child process on `127.0.0.1`, killed and reaped on drop.
#[derive(Debug)]
pub struct RedisServer {
    process: Process,
    port: u16,
    /// Where it runs and logs (`redis-PORT.log`), so nothing lands in the source tree.
    dir: PathBuf,
    /// The temporary directory `dir` is, when the caller gave none.
    _temp: Option<TempDir>,
}

impl RedisServer {
    /// The tests' server: no persistence, in a temporary directory. Returns `None` after a loud
    /// message when `redis-server` is missing and this is not CI; panics in CI, and when it is
    /// installed but will not start.
    pub fn start() -> Option<RedisServer> {
        match RedisServer::launch(Persistence::Off, None) {
            Ok(server) => Some(server),
            Err(StartError::NotInstalled) => {
                if std::env::var_os("CI").is_some() {
                    panic!(
                        "redis-server not found on PATH, and CI must run the Redis tests; .ci/run installs it with apt-get install -y redis-server"
                    );
                }
                // Straight to the terminal (the harness captures eprintln! of passing tests),
                // once per test binary.
                static SAID: Once = Once::new();
                SAID.call_once(|| {
                    let _ = writeln!(
                        std::io::stderr(),
                        "\n*** SKIPPING Redis tests: redis-server not found; install it with apt-get install -y redis-server ***\n"
                    );
                });
                None
            }
            Err(StartError::Failed(why)) => panic!("could not start redis-server: {why}"),
        }
    }

    /// Whether `redis-server` is on `PATH`.
    pub fn installed() -> bool {
        !matches!(
            Command::new("redis-server").arg("--version").output(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound
        )
    }

    /// Starts a server keeping `persistence`, running and logging in `dir` (a temporary
    /// directory when `None`), and waits until it answers `PING`.
    pub fn launch(persistence: Persistence, dir: Option<&Path>) -> Result<RedisServer, StartError> {
        RedisServer::launch_with(persistence, dir, &[])
    }

    /// [`RedisServer::launch`] with more `redis-server` arguments (a cluster node's).
    pub(crate) fn launch_with(
        persistence: Persistence,
        dir: Option<&Path>,
        extra: &[&str],
    ) -> Result<RedisServer, StartError> {
        let (dir, temp) = match dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(|e| {
                    StartError::Failed(Error::new(format!("creating {}: {e}", dir.display())))
                })?;
                (dir.to_owned(), None)
            }
            None => {
                let temp = tempfile::tempdir().map_err(|e| {
                    StartError::Failed(Error::new(format!("a temporary directory: {e}")))
                })?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        let mut last = Error::new("no start tried");
        for _ in 0..TRIES {
            match RedisServer::try_start_on(persistence, &dir, None, extra) {
                Ok((process, port)) => {
                    return Ok(RedisServer {
                        process,
                        port,
                        dir,
                        _temp: temp,
                    });
                }
                Err(e @ StartError::NotInstalled) => return Err(e),
                Err(StartError::Failed(why)) => last = why,
            }
        }
        Err(StartError::Failed(last))
    }

    /// Kills the server (SIGKILL: with [`Persistence::AppendOnlyAlways`] it keeps what it
    /// answered, and nothing more) and reaps it: unreachable until [`RedisServer::restart`].
    pub fn kill(&mut self) -> Result<(), Error> {
        self.process.kill()?;
        Ok(())
    }

    /// Stops the server (SIGTERM: it writes its append-only file first, as on a clean
    /// shutdown) and waits for its exit: from now on it is unreachable, until [`RedisServer::restart`].
    pub fn stop(&mut self) -> Result<(), Error> {
        self.process.signal(crate::Signal::Term)?;
        self.process.wait_exit(READY)?;
        Ok(())
    }

    /// Starts the server again on the same port and directory, keeping `persistence` (what it
    /// kept on disk is loaded again).
    pub fn restart(&mut self, persistence: Persistence) -> Result<(), Error> {
        let (process, _) = RedisServer::try_start_on(persistence, &self.dir, Some(self.port), &[])
            .map_err(|e| match e {
                StartError::NotInstalled => Error::new("redis-server is not installed"),
                StartError::Failed(why) => why,
            })?;
        self.process = process;
        Ok(())
    }

    fn try_start_on(
        persistence: Persistence,
        dir: &Path,
        port: Option<u16>,
        extra: &[&str],
    ) -> Result<(Process, u16), StartError> {
        let failed = |what: String| StartError::Failed(Error::new(what));
        let port = match port {
            Some(port) => port,
            None => TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map_err(|e| failed(format!("finding a free loopback port: {e}")))?
                .port(),
        };
        let log_path = dir.join(format!("redis-{port}.log"));
        let log = fs::File::create(&log_path)
            .map_err(|e| failed(format!("creating {}: {e}", log_path.display())))?;
        let kept: &[&str] = match persistence {
            Persistence::Off => &["--appendonly", "no"],
            Persistence::AppendOnlyEverySec => {
                &["--appendonly", "yes", "--appendfsync", "everysec"]
            }
            Persistence::AppendOnlyAlways => &["--appendonly", "yes", "--appendfsync", "always"],
        };
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no"])
            .args(kept)
            .args(extra)
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log));
        let mut process = match Process::spawn(&mut command, Stderr::Capture) {
            Ok(process) => process,
            Err(_) if !RedisServer::installed() => return Err(StartError::NotInstalled),
            Err(e) => return Err(StartError::Failed(e)),
        };
        process.set_name(format!("redis-server on port {port}"));
        let mut exited = None;
        let ready = wait_until(READY, "redis-server answering PING", || {
            if let Ok(Some(status)) = process.exited() {
                exited = Some(status);
                return true;
            }
            command_on(port, &["PING"]).is_ok_and(|reply| reply == ["PONG"])
        });
        let why = match (ready, exited) {
            (Ok(()), None) => return Ok((process, port)),
            (_, Some(status)) => format!("exited with {status}"),
            (Err(_), None) => format!("did not answer PING within {READY:?}"),
        };
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(StartError::Failed(Error::new(format!(
            "redis-server on port {port} {why}; its log ({}) ends:\n    {}",
            log_path.display(),
            tail.join("\n    ")
        ))))
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory it runs and logs in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server process (for its pid, see [`crate::procfs`]).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// A namespace no other caller in this process gets.
    pub fn fresh_namespace(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!("test-{}", NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// One command over a connection of its own, without a Redis client crate; the reply
    /// flattened to strings (`CONFIG GET appendonly` gives `["appendonly", "no"]`).
    pub fn command(&self, args: &[&str]) -> Result<Vec<String>, Error> {
        command_on(self.port, args)
            .map_err(|e| Error::new(format!("redis-server on port {}: {args:?}: {e}", self.port)))
    }

    /// The value of one configuration setting (`CONFIG GET name`).
    pub fn setting(&self, name: &str) -> Result<String, Error> {
        let reply = self.command(&["CONFIG", "GET", name])?;
        reply
            .get(1)
            .cloned()
            .ok_or_else(|| Error::new(format!("CONFIG GET {name} answered {reply:?}")))
    }

    /// The server's version (`redis_version` of `INFO server`).
    pub fn version(&self) -> Result<String, Error> {
        let info = self.command(&["INFO", "server"])?.concat();
        info.lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| Error::new("INFO server names no redis_version"))
    }

    /// A plain client connection, for checks that go around the store.
    #[cfg(feature = "redis-client")]
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection())
            .expect("connect to the test redis-server")
    }
}

/// One command to the server on `port`, each read and write bounded.
pub(crate) fn command_on(port: u16, args: &[&str]) -> std::io::Result<Vec<String>> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        let _ = write!(request, "${}\r\n{arg}\r\n", arg.len());
    }
    (&stream).write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    read_resp(&mut BufReader::new(&stream), &mut reply, 0)?;
    Ok(reply)
}

/// Reads one RESP2 value, appending its strings to `out`.
fn read_resp(
    reader: &mut impl BufRead,
    out: &mut Vec<String>,
    depth: usize,
) -> std::io::Result<()> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    if depth >= 8 {
        return Err(invalid("Redis reply nested too deep".to_owned()));
    }
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let rest = line.get(1..).unwrap_or_default();
    let length = |what: &str| {
        rest.parse::<i64>()
            .map_err(|_| invalid(format!("{what} {rest:?}")))
    };
    match line.as_bytes().first() {
        Some(b'+' | b':') => out.push(rest.to_owned()),
        Some(b'-') => return Err(invalid(format!("Redis answered an error: {rest}"))),
        Some(b'$') => {
            if let Ok(len) = usize::try_from(length("bulk string length")?) {
                let mut buf = vec![0; len + 2];
                reader.read_exact(&mut buf)?;
                out.push(String::from_utf8_lossy(&buf[..len]).into_owned());
            }
        }
        Some(b'*') => {
            for _ in 0..length("array length")?.max(0) {
                read_resp(reader, out, depth + 1)?;
            }
        }
        _ => return Err(invalid(format!("unexpected Redis reply {line:?}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_replies_flatten_to_strings() {
        let mut reply = Vec::new();
        let text = b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n";
        read_resp(&mut &text[..], &mut reply, 0).expect("a reply");
        assert_eq!(reply, ["appendonly", "no"]);
        let error = read_resp(&mut &b"-ERR unknown\r\n"[..], &mut Vec::new(), 0);
        assert!(error.is_err());
    }

    #[test]
    fn a_server_starts_answers_and_says_its_settings() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        assert_eq!(server.command(&["PING"]).expect("ping"), ["PONG"]);
        assert_eq!(server.setting("appendonly").expect("setting"), "no");
        assert!(!server.version().expect("version").is_empty());
        assert_ne!(server.fresh_namespace(), server.fresh_namespace());
    }
}
