//! Connections to Redis, single node or Cluster, behind one type: one shared multiplexed
//! connection for ordinary commands and scripts, and dedicated connections for blocking waits.
//!
//! redis-rs gives async connections a 500 ms response timeout by default; a blocking command
//! that waits longer would fail, and on a shared multiplexed connection it would delay every
//! command queued behind it. So blocking waits get their own connection, with a response timeout
//! longer than the block.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use queue_core::{QueueError, QueueResult};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::OnceCell;

/// Where Redis is: one node, or the seed nodes of a Cluster.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://host:port/db` or `rediss://...`.
    Single(String),
    /// Seed nodes of a Cluster, each `redis://host:port`.
    Cluster(Vec<String>),
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs may carry passwords: show hosts only.
        let redact = |u: &str| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***@{}", &u[..s + 3], &u[at + 1..]),
            _ => u.to_owned(),
        };
        match self {
            Self::Single(u) => write!(f, "Single({})", redact(u)),
            Self::Cluster(us) => write!(f, "Cluster({:?})", us.iter().map(|u| redact(u)).collect::<Vec<_>>()),
        }
    }
}

impl RedisTarget {
    /// Parses `REDIS_URL`:
    ///
    /// - `redis://host:port/db` or `rediss://host:port/db` (TLS): one node;
    /// - `redis+cluster://host1:port1,host2:port2,...`: a Cluster, given by seed nodes;
    /// - `redis://host1:port1,redis://host2:port2,...`: a Cluster too (a list of seed URLs).
    ///
    /// # Errors
    /// `QueueError::Config` naming `REDIS_URL` and the accepted forms.
    pub fn parse(url: &str) -> QueueResult<Self> {
        let url = url.trim();
        let bad = || {
            QueueError::Config(
                "REDIS_URL: expected redis://host:port/db, rediss://..., redis+cluster://host:port,host:port \
                 or a comma-separated list of redis:// seed URLs"
                    .into(),
            )
        };
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> = rest
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| format!("redis://{n}"))
                .collect();
            if nodes.is_empty() {
                return Err(bad());
            }
            return Ok(Self::Cluster(nodes));
        }
        let parts: Vec<&str> = url.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
        if parts.is_empty() || !parts.iter().all(|p| p.starts_with("redis://") || p.starts_with("rediss://"))
        {
            return Err(bad());
        }
        if parts.len() == 1 {
            Ok(Self::Single(parts[0].to_owned()))
        } else {
            Ok(Self::Cluster(parts.into_iter().map(ToOwned::to_owned).collect()))
        }
    }

    /// Whether this is a Cluster.
    #[must_use]
    pub const fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// Maps a redis-rs error: anything that means "Redis is not reachable now" becomes
/// `QueueError::Unavailable` (the caller refuses the operation), the rest `Storage`.
#[must_use]
pub fn redis_error(e: &RedisError) -> QueueError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        QueueError::Unavailable(format!("redis: {e}"))
    } else {
        QueueError::Storage(format!("redis: {e}"))
    }
}

/// The shared connection of a [`RedisPool`]: one multiplexed connection that every caller
/// clones. Concurrent requests from many tasks are pipelined on it by redis-rs.
#[derive(Clone)]
enum Shared {
    /// Single node: reconnects by itself after an I/O error.
    Single(ConnectionManager),
    /// Cluster: one connection per node inside, routed by slot; created on first use.
    Cluster(Arc<(OnceCell<ClusterConnection>, ClusterClient)>),
}

/// The connections to one Redis target. Cheap to clone: clones share the connection.
///
/// Ordinary commands and scripts go through one shared, multiplexed connection
/// ([`RedisPool::get`]): redis-rs pipelines the requests of concurrent tasks on it, and a request
/// costs one round trip — there is no per-checkout health check (a pool such as deadpool-redis
/// sends `UNWATCH` + `PING` before handing out a connection, one extra round trip per call).
/// Blocking waits get a dedicated connection ([`RedisPool::blocking`]).
#[derive(Clone)]
pub struct RedisPool {
    shared: Shared,
    target: RedisTarget,
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool").field("target", &self.target).finish_non_exhaustive()
    }
}

/// Longest wait to connect before the operation fails as unavailable.
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// Longest wait for a reply to an ordinary command or script on the shared connection.
const RESPONSE_WAIT: Duration = Duration::from_secs(2);

impl RedisPool {
    /// The connections to `target`. Connects lazily, on the first request.
    ///
    /// While Redis is unreachable every request fails at once with `QueueError::Unavailable`
    /// (after one connection attempt and one retry), and the next request tries again.
    ///
    /// # Errors
    /// `QueueError::Config` when the URL cannot be used.
    pub fn new(target: RedisTarget) -> QueueResult<Self> {
        let config_error = |e: &RedisError| QueueError::Config(format!("REDIS_URL: {e}"));
        let shared = match &target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| config_error(&e))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_WAIT))
                    .set_response_timeout(Some(RESPONSE_WAIT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(200));
                Shared::Single(
                    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| config_error(&e))?,
                )
            }
            RedisTarget::Cluster(urls) => {
                let client = redis::cluster::ClusterClientBuilder::new(urls.clone())
                    .connection_timeout(CONNECT_WAIT)
                    .response_timeout(RESPONSE_WAIT)
                    .retries(2)
                    .build()
                    .map_err(|e| config_error(&e))?;
                Shared::Cluster(Arc::new((OnceCell::new(), client)))
            }
        };
        Ok(Self { shared, target })
    }

    /// Parses `url` and builds the connections.
    ///
    /// # Errors
    /// As [`RedisTarget::parse`] and [`RedisPool::new`].
    pub fn from_url(url: &str) -> QueueResult<Self> {
        Self::new(RedisTarget::parse(url)?)
    }

    /// The target.
    #[must_use]
    pub const fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// A handle on the shared connection. Costs no round trip.
    ///
    /// # Errors
    /// `QueueError::Unavailable` when a Cluster cannot be reached for its first connection.
    pub async fn get(&self) -> QueueResult<RedisConn> {
        match &self.shared {
            Shared::Single(c) => Ok(RedisConn::Single(c.clone())),
            Shared::Cluster(cluster) => cluster
                .0
                .get_or_try_init(|| cluster.1.get_async_connection())
                .await
                .map(|c| RedisConn::Cluster(c.clone()))
                .map_err(|e| redis_error(&e)),
        }
    }

    /// A dedicated connection for blocking commands that wait up to `block`: its response timeout
    /// is `block` plus a margin.
    ///
    /// # Errors
    /// `QueueError::Unavailable` when Redis cannot be reached.
    pub async fn blocking(&self, block: Duration) -> QueueResult<RedisConn> {
        let timeout = block + Duration::from_secs(5);
        match &self.target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| redis_error(&e))?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(CONNECT_WAIT));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| redis_error(&e))?;
                Ok(RedisConn::Dedicated(conn))
            }
            RedisTarget::Cluster(urls) => {
                let client = redis::cluster::ClusterClientBuilder::new(urls.clone())
                    .response_timeout(timeout)
                    .connection_timeout(CONNECT_WAIT)
                    .build()
                    .map_err(|e| redis_error(&e))?;
                let conn = client.get_async_connection().await.map_err(|e| redis_error(&e))?;
                Ok(RedisConn::Cluster(conn))
            }
        }
    }
}

/// One connection handle: the shared one of a single node or a Cluster, or a dedicated one for
/// blocking waits.
#[derive(Clone)]
pub enum RedisConn {
    /// The shared connection to a single node.
    Single(ConnectionManager),
    /// A connection to a Cluster (shared, or dedicated for blocking waits).
    Cluster(ClusterConnection),
    /// Dedicated, for blocking waits on a single node.
    Dedicated(MultiplexedConnection),
}

impl fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConn::Single",
            Self::Cluster(_) => "RedisConn::Cluster",
            Self::Dedicated(_) => "RedisConn::Dedicated",
        })
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Dedicated(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Self::Dedicated(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Dedicated(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_url_is_one_node() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:7000/0").unwrap(),
            RedisTarget::Single("redis://127.0.0.1:7000/0".into())
        );
        assert!(!RedisTarget::parse("rediss://h:1").unwrap().is_cluster());
    }

    #[test]
    fn cluster_urls_take_both_documented_forms() {
        let a = RedisTarget::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert_eq!(
            a,
            RedisTarget::Cluster(vec!["redis://127.0.0.1:7000".into(), "redis://127.0.0.1:7001".into()])
        );
        let b = RedisTarget::parse("redis://127.0.0.1:7000, redis://127.0.0.1:7001").unwrap();
        assert!(b.is_cluster());
    }

    #[test]
    fn other_urls_are_refused_naming_redis_url() {
        for bad in ["", "http://x", "redis+cluster://", "redis://a,http://b"] {
            let err = RedisTarget::parse(bad).unwrap_err();
            assert!(err.to_string().contains("REDIS_URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_output_hides_passwords() {
        let t = RedisTarget::parse("redis://user:secret@h:1/0").unwrap();
        assert!(!format!("{t:?}").contains("secret"));
    }
}
