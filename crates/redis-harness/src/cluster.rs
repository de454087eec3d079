//! A local Redis Cluster of three primaries, for tests of the cluster code paths.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::binaries::{REDIS_CLI, REDIS_CLI_HINT, require_redis_cli, require_redis_server};
use crate::ports::PortUse;
use crate::resp::Reply;
use crate::server::RedisServer;
use crate::tls::TestCa;

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
    /// The CA certificate `redis-cli` trusts, when the cluster serves TLS.
    ca_cert: Option<PathBuf>,
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
        Self::start_on(None)
    }

    /// As [`start`](Self::start), with every node serving TLS too, with a certificate signed by
    /// `ca` (`--tls-cluster yes --tls-replication yes`: the cluster bus runs over TLS, and a TLS
    /// client is told the nodes' TLS ports). The cluster is created over TLS
    /// (`redis-cli --tls --cacert`); the harness still checks readiness on the plain ports.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    #[must_use]
    pub fn start_tls(ca: &TestCa) -> Self {
        Self::start_on(Some(ca))
    }

    fn start_on(ca: Option<&TestCa>) -> Self {
        require_redis_server();
        require_redis_cli();
        let cert = ca.map(TestCa::issue_server_cert);
        let tls_args: &[&str] =
            if ca.is_some() { &["--tls-cluster", "yes", "--tls-replication", "yes"] } else { &[] };
        let nodes = (0..PRIMARIES)
            .map(|_| {
                RedisServer::start_on(PortUse::ClusterNode, cert.as_ref(), |port| {
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
                    .iter()
                    .chain(tls_args)
                    .map(|arg| (*arg).to_owned())
                    .collect()
                })
            })
            .collect();
        let cluster = Self { nodes, ca_cert: ca.map(|ca| ca.cert().to_path_buf()) };
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

    /// The cluster as Laneway's `REDIS_URL` names one over TLS: the `rediss://` seed URL of every
    /// node, comma-separated.
    ///
    /// # Panics
    /// When the cluster was not started with TLS.
    #[must_use]
    pub fn tls_url(&self) -> String {
        self.nodes.iter().map(RedisServer::tls_url).collect::<Vec<_>>().join(",")
    }

    /// Runs `redis-cli --cluster create`, killing it if it has not finished by `deadline`.
    fn create(&self, deadline: Instant) {
        // Output goes to a file rather than a pipe, so polling for exit cannot block on a full pipe.
        let output_path = self.nodes[0].dir().join("cluster-create.log");
        let output = File::create(&output_path)
            .and_then(|file| Ok((file.try_clone()?, file)))
            .unwrap_or_else(|err| panic!("could not create {}: {err}", output_path.display()));
        let mut command = Command::new(REDIS_CLI);
        let addrs: Vec<String> = match &self.ca_cert {
            None => self.nodes.iter().map(RedisServer::addr).collect(),
            Some(ca_cert) => {
                command.arg("--tls").arg("--cacert").arg(ca_cert);
                self.nodes
                    .iter()
                    .map(|node| format!("127.0.0.1:{}", node.tls_port().unwrap_or_default()))
                    .collect()
            }
        };
        let mut child = command
            .arg("--cluster")
            .arg("create")
            .args(addrs)
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
