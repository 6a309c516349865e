//! A real Redis Cluster of `redis-server` masters on free loopback ports, made with
//! `redis-cli --cluster create`, killed and reaped on drop.

use std::process::Command;
use std::time::Duration;

use crate::redis_server::command_on;
use crate::{Error, Persistence, RedisServer, StartError, wait_until};

/// How long the cluster may take to agree that every slot is served.
const FORMED: Duration = Duration::from_secs(30);

/// Masters on loopback ports, one hash-slot range each, no replicas.
#[derive(Debug)]
pub struct RedisCluster {
    masters: Vec<RedisServer>,
    _dir: crate::TempDir,
}

impl RedisCluster {
    /// `masters` servers (at least 3, as `redis-cli --cluster create` wants), formed into a
    /// cluster. `None` after a loud message when `redis-server` is missing and this is not CI
    /// (as [`RedisServer::start`]); panics in CI, and when it is installed but will not form.
    pub fn start(masters: usize) -> Option<RedisCluster> {
        match RedisCluster::launch(masters) {
            Ok(cluster) => Some(cluster),
            Err(StartError::NotInstalled) => {
                // Says so (and fails in CI) the way the single server does.
                let _ = RedisServer::start();
                None
            }
            Err(StartError::Failed(why)) => panic!("could not start a Redis Cluster: {why}"),
        }
    }

    /// Starts `masters` servers and forms them into a cluster; for tools that decide for
    /// themselves what a missing `redis-server` means.
    pub fn launch(masters: usize) -> Result<RedisCluster, StartError> {
        let dir = tempfile::tempdir()
            .map_err(|e| StartError::Failed(Error::new(format!("a temporary directory: {e}"))))?;
        let mut servers = Vec::with_capacity(masters);
        for n in 0..masters {
            let node_dir = dir.path().join(format!("node-{n}"));
            let server = RedisServer::launch_with(
                Persistence::Off,
                Some(&node_dir),
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ],
            )?;
            servers.push(server);
        }
        let addresses: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(|e| {
                StartError::Failed(Error::new(format!(
                    "running redis-cli --cluster create (it comes with redis-server): {e}"
                )))
            })?;
        if !created.status.success() {
            return Err(StartError::Failed(Error::new(format!(
                "redis-cli --cluster create {} failed ({}): {}",
                addresses.join(" "),
                created.status,
                String::from_utf8_lossy(&created.stdout)
            ))));
        }
        let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
        wait_until(
            FORMED,
            "every cluster node reporting cluster_state:ok",
            || {
                ports.iter().all(|port| {
                    command_on(*port, &["CLUSTER", "INFO"])
                        .is_ok_and(|reply| reply.concat().contains("cluster_state:ok"))
                })
            },
        )
        .map_err(StartError::Failed)?;
        Ok(RedisCluster {
            masters: servers,
            _dir: dir,
        })
    }

    /// The store URL: `redis+cluster://` and every master.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .masters
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The masters.
    pub fn masters(&self) -> &[RedisServer] {
        &self.masters
    }

    /// The master serving the hash slot of `key` (`CLUSTER KEYSLOT`, then `CLUSTER SLOTS`'s
    /// ranges, asked of the first master).
    pub fn master_of(&self, key: &str) -> Result<&RedisServer, Error> {
        let first = &self.masters[0];
        let slot: u16 = first
            .command(&["CLUSTER", "KEYSLOT", key])?
            .concat()
            .trim()
            .parse()
            .map_err(|e| Error::new(format!("CLUSTER KEYSLOT {key}: {e}")))?;
        // `CLUSTER NODES` lines: id addr flags master ping pong epoch state slots...
        let nodes = first.command(&["CLUSTER", "NODES"])?.concat();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(port) = fields
                .get(1)
                .and_then(|addr| addr.split('@').next())
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            let serves = fields.iter().skip(8).any(|range| {
                let mut ends = range.splitn(2, '-');
                let low = ends.next().and_then(|l| l.parse::<u16>().ok());
                let high = ends.next().map_or(low, |h| h.parse::<u16>().ok());
                matches!((low, high), (Some(l), Some(h)) if l <= slot && slot <= h)
            });
            if serves && let Some(server) = self.masters.iter().find(|s| s.port() == port) {
                return Ok(server);
            }
        }
        Err(Error::new(format!("no master serves slot {slot} of {key}")))
    }
}
