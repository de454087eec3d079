//! A local Redis Cluster of three primaries, for tests of the cluster code paths.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::binaries::{REDIS_CLI, REDIS_CLI_HINT, require_redis_cli, require_redis_server};
use crate::ports::PortUse;
use crate::resp::Reply;
use crate::server::RedisServer;

/// Primaries in the cluster; no replicas.
const PRIMARIES: usize = 3;
/// Hash slots a Redis Cluster must cover.
const SLOTS: i64 = 16_384;
/// How long `redis-cli --cluster create` plus agreement on the slot map may take.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Between two checks of the cluster state; each check costs two requests per node.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Log lines of each node quoted in a panic message.
const PANIC_LOG_LINES: usize = 15;

/// A local Redis Cluster: three primaries on free loopback ports (each with its cluster bus port
/// free too), every slot assigned, every node agreeing on the slot map. Dropping it kills every
/// node.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// One slot range of `CLUSTER SLOTS`: first slot, last slot, port of the primary serving it.
type SlotRange = (i64, i64, i64);

impl RedisCluster {
    /// Starts three `redis-server`s in cluster mode, joins them with
    /// `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`, and waits (up to 30 s)
    /// until every node reports `cluster_state:ok` and all agree on a slot map covering every slot.
    ///
    /// # Panics
    /// When `redis-server` or `redis-cli` is not on `PATH` (with how to install it), when a node
    /// does not start, when `redis-cli` fails (with its output), or when the cluster is not ready
    /// by the deadline (with what was missing and each node's log tail).
    #[must_use]
    pub fn start() -> Self {
        require_redis_server();
        require_redis_cli();
        let nodes = (0..PRIMARIES)
            .map(|_| {
                RedisServer::start_on(PortUse::ClusterNode, None, |port| {
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{port}.conf"),
                        "--cluster-node-timeout",
                        "2000",
                        "--appendonly",
                        "no",
                    ]
                    .map(str::to_owned)
                    .to_vec()
                })
            })
            .collect();
        let cluster = Self { nodes };
        let deadline = Instant::now() + READY_DEADLINE;
        cluster.create(deadline);
        cluster.wait_until_ready(deadline);
        cluster
    }

    /// The nodes, in the order given to `redis-cli --cluster create`.
    #[must_use]
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// `redis://127.0.0.1:<port>/` for every node: seed URLs for a cluster client.
    #[must_use]
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The cluster as Laneway's `REDIS_URL` names one:
    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    #[must_use]
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self.nodes.iter().map(RedisServer::addr).collect();
        format!("redis+cluster://{}", addrs.join(","))
    }

    /// Runs `redis-cli --cluster create`, killing it if it has not finished by `deadline`.
    fn create(&self, deadline: Instant) {
        // Output goes to a file rather than a pipe, so polling for exit cannot block on a full pipe.
        let output_path = self.nodes[0].dir().join("cluster-create.log");
        let output = File::create(&output_path)
            .and_then(|file| Ok((file.try_clone()?, file)))
            .unwrap_or_else(|err| panic!("could not create {}: {err}", output_path.display()));
        let mut child = Command::new(REDIS_CLI)
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(RedisServer::addr))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(output.0)
            .stderr(output.1)
            .spawn()
            .unwrap_or_else(|err| {
                if err.kind() == io::ErrorKind::NotFound {
                    panic!("{REDIS_CLI_HINT}");
                }
                panic!("could not run redis-cli: {err}");
            });
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!("did not finish within {READY_DEADLINE:?}"));
                }
                Err(err) => break Err(format!("could not be waited for: {err}")),
            }
        };
        if !status.as_ref().is_ok_and(std::process::ExitStatus::success) {
            let printed = fs::read_to_string(&output_path).unwrap_or_default();
            panic!(
                "redis-cli --cluster create {} failed ({status:?}); its output:\n{printed}\n{}",
                self.url(),
                self.logs()
            );
        }
    }

    fn wait_until_ready(&self, deadline: Instant) {
        loop {
            let Some(why_not) = self.not_ready() else { return };
            if Instant::now() >= deadline {
                panic!(
                    "Redis Cluster {} not ready within {READY_DEADLINE:?}: {why_not}\n{}",
                    self.url(),
                    self.logs()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Why the cluster is not ready yet, or `None` when every node reports `cluster_state:ok` and
    /// all report the same slot map covering every slot.
    fn not_ready(&self) -> Option<String> {
        let mut agreed: Option<BTreeSet<SlotRange>> = None;
        for node in &self.nodes {
            let info = match node.try_request(&["CLUSTER", "INFO"]) {
                Ok(info) => info.render(),
                Err(err) => return Some(format!("{}: CLUSTER INFO failed: {err}", node.addr())),
            };
            if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
                let state = info
                    .lines()
                    .find(|line| line.starts_with("cluster_state:"))
                    .unwrap_or("no cluster_state");
                return Some(format!("{} reports {}", node.addr(), state.trim()));
            }
            let slots = match node.try_request(&["CLUSTER", "SLOTS"]) {
                Ok(reply) => slot_map(&reply),
                Err(err) => return Some(format!("{}: CLUSTER SLOTS failed: {err}", node.addr())),
            };
            let covered: i64 = slots.iter().map(|(first, last, _)| last - first + 1).sum();
            if covered != SLOTS {
                return Some(format!("{} sees {covered} of {SLOTS} slots assigned: {slots:?}", node.addr()));
            }
            match &agreed {
                None => agreed = Some(slots),
                Some(first) if *first != slots => {
                    return Some(format!(
                        "{} sees slot map {slots:?}, {} sees {first:?}",
                        node.addr(),
                        self.nodes[0].addr()
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// The log tail of every node, for panic messages.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("--- log tail of {}:\n{}", node.addr(), node.log_tail(PANIC_LOG_LINES)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `CLUSTER SLOTS` as a set of `(first, last, primary port)`; malformed entries are left out,
/// which leaves the coverage short.
fn slot_map(reply: &Reply) -> BTreeSet<SlotRange> {
    reply
        .as_array()
        .unwrap_or_default()
        .iter()
        .filter_map(|range| {
            let [first, last, primary, ..] = range.as_array()? else { return None };
            let port = primary.as_array()?.get(1)?.as_integer()?;
            Some((first.as_integer()?, last.as_integer()?, port))
        })
        .collect()
}
