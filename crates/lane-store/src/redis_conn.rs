//! Connections to Redis, single node or Cluster, behind one type: a deadpool pool for ordinary
//! commands and dedicated connections for blocking waits.
//!
//! redis-rs gives async connections a 500 ms response timeout by default; a blocking command
//! that waits longer would fail, and on a shared multiplexed connection it would delay every
//! command queued behind it. So blocking waits get their own connection, with a response timeout
//! longer than the block.

use std::fmt;
use std::time::Duration;

use deadpool_redis::redis::aio::ConnectionLike;
use deadpool_redis::redis::{self, Cmd, Pipeline, RedisError, RedisFuture, Value};
use queue_core::{QueueError, QueueResult};

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

#[derive(Clone)]
enum PoolInner {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

/// A pool of Redis connections for one target. Cheap to clone.
#[derive(Clone)]
pub struct RedisPool {
    inner: PoolInner,
    target: RedisTarget,
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool").field("target", &self.target).finish_non_exhaustive()
    }
}

/// Longest wait for a pooled connection before the operation fails as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(2);

impl RedisPool {
    /// A pool of at most `max_size` connections to `target`. Connects lazily.
    ///
    /// # Errors
    /// `QueueError::Config` when the URL cannot be used.
    pub fn new(target: RedisTarget, max_size: usize) -> QueueResult<Self> {
        let timeouts = deadpool_redis::Timeouts {
            wait: Some(POOL_WAIT),
            create: Some(POOL_WAIT),
            recycle: Some(POOL_WAIT),
        };
        let inner = match &target {
            RedisTarget::Single(url) => {
                let mut cfg = deadpool_redis::Config::from_url(url.clone());
                cfg.pool = Some(deadpool_redis::PoolConfig { max_size, timeouts, ..Default::default() });
                PoolInner::Single(
                    cfg.create_pool(Some(deadpool_redis::Runtime::Tokio1))
                        .map_err(|e| QueueError::Config(format!("REDIS_URL: {e}")))?,
                )
            }
            RedisTarget::Cluster(urls) => {
                let mut cfg = deadpool_redis::cluster::Config::from_urls(urls.clone());
                cfg.pool = Some(deadpool_redis::PoolConfig { max_size, timeouts, ..Default::default() });
                PoolInner::Cluster(
                    cfg.create_pool(Some(deadpool_redis::Runtime::Tokio1))
                        .map_err(|e| QueueError::Config(format!("REDIS_URL: {e}")))?,
                )
            }
        };
        Ok(Self { inner, target })
    }

    /// Parses `url` and builds a pool.
    ///
    /// # Errors
    /// As [`RedisTarget::parse`] and [`RedisPool::new`].
    pub fn from_url(url: &str, max_size: usize) -> QueueResult<Self> {
        Self::new(RedisTarget::parse(url)?, max_size)
    }

    /// The target.
    #[must_use]
    pub const fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// A pooled connection.
    ///
    /// # Errors
    /// `QueueError::Unavailable` when no connection can be had within the pool's wait.
    pub async fn get(&self) -> QueueResult<RedisConn> {
        match &self.inner {
            PoolInner::Single(p) => p
                .get()
                .await
                .map(RedisConn::Single)
                .map_err(|e| QueueError::Unavailable(format!("redis: {e}"))),
            PoolInner::Cluster(p) => p
                .get()
                .await
                .map(RedisConn::Cluster)
                .map_err(|e| QueueError::Unavailable(format!("redis: {e}"))),
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
                    .set_connection_timeout(Some(POOL_WAIT));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| redis_error(&e))?;
                Ok(RedisConn::Dedicated(conn))
            }
            RedisTarget::Cluster(urls) => {
                let client = redis::cluster::ClusterClientBuilder::new(urls.clone())
                    .response_timeout(timeout)
                    .connection_timeout(POOL_WAIT)
                    .build()
                    .map_err(|e| redis_error(&e))?;
                let conn = client.get_async_connection().await.map_err(|e| redis_error(&e))?;
                Ok(RedisConn::DedicatedCluster(conn))
            }
        }
    }
}

/// One connection: pooled or dedicated, single node or Cluster.
pub enum RedisConn {
    /// From the single-node pool.
    Single(deadpool_redis::Connection),
    /// From the Cluster pool.
    Cluster(deadpool_redis::cluster::Connection),
    /// Dedicated, for blocking waits on a single node.
    Dedicated(redis::aio::MultiplexedConnection),
    /// Dedicated, for blocking waits on a Cluster.
    DedicatedCluster(redis::cluster_async::ClusterConnection),
}

impl fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConn::Single",
            Self::Cluster(_) => "RedisConn::Cluster",
            Self::Dedicated(_) => "RedisConn::Dedicated",
            Self::DedicatedCluster(_) => "RedisConn::DedicatedCluster",
        })
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Dedicated(c) => c.req_packed_command(cmd),
            Self::DedicatedCluster(c) => c.req_packed_command(cmd),
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
            Self::DedicatedCluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Dedicated(c) => c.get_db(),
            Self::DedicatedCluster(c) => c.get_db(),
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
