//! Connections to Redis, single node or Cluster, behind one type: one shared multiplexed
//! connection for ordinary commands and scripts, and dedicated connections for blocking waits.
//!
//! redis-rs gives async connections a 500 ms response timeout by default; a blocking command
//! that waits longer would fail, and on a shared multiplexed connection it would delay every
//! command queued behind it. So blocking waits get their own connection, with a response timeout
//! longer than the block.
//!
//! `rediss://` connects over TLS (rustls with the ring provider; the roots are the system CA
//! store, or only the file named by `SSL_CERT_FILE` when it is set). A TLS failure is reported in
//! words an operator can act on, naming `REDIS_URL` ([`tls_failure`]): an untrusted certificate,
//! or a port that answers without TLS.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use queue_core::{QueueError, QueueResult};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionAddr, Pipeline, RedisError, RedisFuture, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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

    /// Whether any of its URLs connects over TLS (`rediss://`): then rustls reads the CA
    /// certificates `SSL_CERT_FILE` / `SSL_CERT_DIR` name, if set, instead of the system's.
    #[must_use]
    pub fn uses_tls(&self) -> bool {
        match self {
            Self::Single(url) => url.starts_with("rediss://"),
            Self::Cluster(urls) => urls.iter().any(|u| u.starts_with("rediss://")),
        }
    }
}

/// Maps a redis-rs error: anything that means "Redis is not reachable now" becomes
/// `QueueError::Unavailable` (the caller refuses the operation), the rest `Storage`. A failed TLS
/// connection is unavailable too, with the words of [`tls_failure`].
#[must_use]
pub fn redis_error(e: &RedisError) -> QueueError {
    if let Some(why) = tls_failure(e) {
        QueueError::Unavailable(why)
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        QueueError::Unavailable(format!("redis: {e}"))
    } else {
        QueueError::Storage(format!("redis: {e}"))
    }
}

/// What went wrong when `e` is a failed TLS connection (`rediss://`), in words that name
/// `REDIS_URL` and say what to do; `None` for any other error.
///
/// rustls's reasons are matched as text: redis-rs wraps the `rustls::Error` in an I/O error whose
/// message is all that reaches this crate (rustls's `Display`, e.g. "invalid peer certificate:
/// UnknownIssuer" or "received corrupt message of type InvalidContentType").
#[must_use]
pub fn tls_failure(e: &RedisError) -> Option<String> {
    let text = e.to_string();
    if text.starts_with(TLS_PREFIX) {
        // Already explained, by the plain-port check of a TLS connection.
        return Some(text);
    }
    const UNTRUSTED: &str = "invalid peer certificate: ";
    if let Some((_, rest)) = text.split_once(UNTRUSTED) {
        // rustls names the reason after the colon: UnknownIssuer, certificate expired, ...
        let why = rest.split(['\n', ';']).next().map_or("", str::trim);
        let why = if why.is_empty() { "verification failed" } else { why };
        return Some(format!(
            "{TLS_PREFIX} the server's certificate is not trusted ({why}); trust the CA that signed it: \
             the system CA store, or SSL_CERT_FILE=/path/to/ca.pem"
        ));
    }
    // What rustls says when the first bytes back are not a TLS record (a plain Redis reply, an
    // HTTP answer): the record's content type or length is not one TLS allows.
    const NOT_TLS: [&str; 2] = ["received corrupt message", "peer sent excess record size"];
    if let Some(reason) = NOT_TLS.iter().find(|reason| text.contains(*reason)) {
        return Some(format!(
            "{TLS_PREFIX} the server answered without TLS (rustls: {reason}); {NOT_TLS_ADVICE}"
        ));
    }
    None
}

/// How every TLS failure message starts.
const TLS_PREFIX: &str = "REDIS_URL: TLS handshake failed:";
/// What to do when a port answered without TLS.
const NOT_TLS_ADVICE: &str = "use redis:// for a plain-TCP port, or the server's TLS port with rediss://";
/// How long the plain-port check may take.
const PLAIN_CHECK_WAIT: Duration = Duration::from_millis(500);

/// The host and port of a `rediss://` URL, for the plain-port check; `None` for other URLs.
fn tls_addr(url: &str) -> Option<Arc<(String, u16)>> {
    let client = redis::Client::open(url).ok()?;
    match client.get_connection_info().addr() {
        ConnectionAddr::TcpTls { host, port, .. } => Some(Arc::new((host.clone(), *port))),
        _ => None,
    }
}

/// Whether `host:port` answers a plain-text `PING` the way Redis without TLS does (`+PONG`, or
/// an error such as `-NOAUTH`). A TLS port closes the connection instead.
async fn answers_without_tls(host: &str, port: u16) -> bool {
    let check = async {
        let mut stream = TcpStream::connect((host, port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut first = [0_u8; 1];
        stream.read_exact(&mut first).await.ok()?;
        Some(matches!(first[0], b'+' | b'-'))
    };
    tokio::time::timeout(PLAIN_CHECK_WAIT, check).await.ok().flatten().unwrap_or(false)
}

/// `e`, or, when `e` is an I/O failure or timeout on a TLS connection to a port that answers
/// plain Redis, an error saying so. A plain Redis port buffers a TLS hello as an unfinished
/// inline command and answers nothing, so the handshake only times out: this check says why.
async fn explain_tls_timeout(e: RedisError, addr: &(String, u16)) -> RedisError {
    if tls_failure(&e).is_none()
        && (e.is_timeout() || e.is_io_error() || e.is_connection_dropped())
        && answers_without_tls(&addr.0, addr.1).await
    {
        let why =
            format!("{TLS_PREFIX} {}:{} answers plain Redis, without TLS; {NOT_TLS_ADVICE}", addr.0, addr.1);
        return RedisError::from(io::Error::new(io::ErrorKind::InvalidData, why));
    }
    e
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
    /// Host and port of a single-node `rediss://` target, for the plain-port check.
    tls_addr: Option<Arc<(String, u16)>>,
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
        let tls_addr = match &target {
            RedisTarget::Single(url) => tls_addr(url),
            RedisTarget::Cluster(_) => None,
        };
        Ok(Self { shared, target, tls_addr })
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
            Shared::Single(c) => {
                Ok(RedisConn { link: Link::Single(c.clone()), tls_addr: self.tls_addr.clone() })
            }
            Shared::Cluster(cluster) => cluster
                .0
                .get_or_try_init(|| cluster.1.get_async_connection())
                .await
                .map(|c| RedisConn { link: Link::Cluster(c.clone()), tls_addr: None })
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
                let conn = match client.get_multiplexed_async_connection_with_config(&config).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        let e = match &self.tls_addr {
                            Some(addr) => explain_tls_timeout(e, addr).await,
                            None => e,
                        };
                        return Err(redis_error(&e));
                    }
                };
                Ok(RedisConn { link: Link::Dedicated(conn), tls_addr: self.tls_addr.clone() })
            }
            RedisTarget::Cluster(urls) => {
                let client = redis::cluster::ClusterClientBuilder::new(urls.clone())
                    .response_timeout(timeout)
                    .connection_timeout(CONNECT_WAIT)
                    .build()
                    .map_err(|e| redis_error(&e))?;
                let conn = client.get_async_connection().await.map_err(|e| redis_error(&e))?;
                Ok(RedisConn { link: Link::Cluster(conn), tls_addr: None })
            }
        }
    }
}

/// One connection handle: the shared one of a single node or a Cluster, or a dedicated one for
/// blocking waits.
#[derive(Clone)]
pub struct RedisConn {
    link: Link,
    /// Host and port of a single-node `rediss://` target: a failed request checks whether the
    /// port answers without TLS. `None` for plain targets, whose requests are not wrapped.
    tls_addr: Option<Arc<(String, u16)>>,
}

#[derive(Clone)]
enum Link {
    /// The shared connection to a single node.
    Single(ConnectionManager),
    /// A connection to a Cluster (shared, or dedicated for blocking waits).
    Cluster(ClusterConnection),
    /// Dedicated, for blocking waits on a single node.
    Dedicated(MultiplexedConnection),
}

impl fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.link {
            Link::Single(_) => "RedisConn::Single",
            Link::Cluster(_) => "RedisConn::Cluster",
            Link::Dedicated(_) => "RedisConn::Dedicated",
        })
    }
}

impl RedisConn {
    /// `request`, with a TLS timeout explained when this is a TLS connection.
    fn explained<'a, T: Send + 'a>(
        tls_addr: Option<&Arc<(String, u16)>>,
        request: RedisFuture<'a, T>,
    ) -> RedisFuture<'a, T> {
        match tls_addr {
            // Plain connections return redis-rs's future as it is: no extra allocation.
            None => request,
            Some(addr) => {
                let addr = Arc::clone(addr);
                Box::pin(async move {
                    match request.await {
                        Ok(value) => Ok(value),
                        Err(e) => Err(explain_tls_timeout(e, &addr).await),
                    }
                })
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let request = match &mut self.link {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
            Link::Dedicated(c) => c.req_packed_command(cmd),
        };
        Self::explained(self.tls_addr.as_ref(), request)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let request = match &mut self.link {
            Link::Single(c) => c.req_packed_commands(cmd, offset, count),
            Link::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Link::Dedicated(c) => c.req_packed_commands(cmd, offset, count),
        };
        Self::explained(self.tls_addr.as_ref(), request)
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
            Link::Dedicated(c) => c.get_db(),
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
    fn tls_is_read_from_each_urls_scheme() {
        let tls = |u: &str| RedisTarget::parse(u).unwrap().uses_tls();
        assert!(tls("rediss://h:1/0"));
        assert!(tls("redis://a:1, rediss://b:2"));
        assert!(!tls("redis://h:1/0"));
        assert!(!tls("redis+cluster://a:1,b:2"));
        // A password may spell the scheme's name: only the scheme counts.
        assert!(!tls("redis://user:rediss%3A%2F%2F@h:1/0"));
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
