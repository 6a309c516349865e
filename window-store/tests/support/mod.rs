//! A real `redis-server` for the tests, on a free loopback port, killed on drop.
//!
//! When `redis-server` is not installed, a test outside CI says so on the terminal (written past
//! the test harness's output capture) and returns; in CI (`CI` set) it fails, because CI installs
//! Redis (`.ci/run`) and a missing server there must not look like a pass.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` child process, killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    /// Its working directory, so nothing it might write lands in the source tree.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server, or returns `None` after a loud message when `redis-server` is missing and
    /// this is not CI.
    pub fn start() -> Option<RedisServer> {
        let mut last_error = String::new();
        // A port found free can be taken by someone else before the server binds it: try again.
        for _ in 0..5 {
            match RedisServer::try_start() {
                Ok(server) => return Some(server),
                Err(StartError::NotInstalled) => {
                    if std::env::var_os("CI").is_some() {
                        panic!(
                            "redis-server not found on PATH, and CI must run the Redis tests; .ci/run installs it with apt-get install -y redis-server"
                        );
                    }
                    // Straight to the terminal (the harness captures eprintln! of passing
                    // tests), once per test binary.
                    static SAID: Once = Once::new();
                    SAID.call_once(|| {
                        let _ = writeln!(
                            std::io::stderr(),
                            "\n*** SKIPPING Redis tests: redis-server not found; install it with apt-get install -y redis-server ***\n"
                        );
                    });
                    return None;
                }
                Err(StartError::Failed(why)) => last_error = why,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A namespace no other caller in this process gets.
    pub fn fresh_namespace(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!("test-{}", NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// A plain client connection, for checks that go around the store.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection())
            .expect("connect to the test redis-server")
    }

    fn try_start() -> Result<RedisServer, StartError> {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
            listener.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StartError::NotInstalled);
            }
            Err(e) => return Err(StartError::Failed(format!("spawning redis-server: {e}"))),
        };
        let mut server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(StartError::Failed(format!(
                    "redis-server on port {port} exited with {status}"
                )));
            }
            if ping(port) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(StartError::Failed(format!(
            "redis-server on port {port} did not answer PING within 10 s"
        )))
        // `server` is dropped here, which kills it.
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum StartError {
    NotInstalled,
    Failed(String),
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
