//! Probes for `laneway doctor`: is Redis reachable and which version is it, does the LLM
//! provider answer, does the master key pass the production policy. Each answers in words an
//! operator can act on; none of them starts a runtime.

use std::time::Duration;

use lane_store::{RedisPool, redis};
use runtime_manager::validate_master_key_policy;
pub use runtime_manager::{MasterKeyError, MasterKeyStatus};

/// How long a probe may take before it counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the Redis probe may take: the pool's two connection attempts of 2 s each, then, for
/// `rediss://`, its check of whether the port answers without TLS, which says why TLS failed.
pub const REDIS_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Redis answered `PING`; what `INFO server` says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisReport {
    /// `redis_version` from `INFO server` (`unknown` when absent).
    pub version: String,
    /// `redis_mode` (`standalone`, `cluster`, ...) when present.
    pub mode: Option<String>,
}

/// Why Redis could not be probed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedisProbeError {
    /// `REDIS_URL` cannot be used.
    #[error("REDIS_URL cannot be used: {0}")]
    BadUrl(String),
    /// No connection within [`REDIS_PROBE_TIMEOUT`], the connection was refused, or TLS failed.
    #[error("Redis unreachable: {0}")]
    Unreachable(String),
    /// Connected, but a command failed (e.g. authentication).
    #[error("Redis answered with an error: {0}")]
    Command(String),
}

/// Connects to `redis_url`, sends `PING` and reads `INFO server`.
///
/// # Errors
/// [`RedisProbeError`] saying whether the URL, the connection or a command failed.
pub async fn probe_redis(redis_url: &str) -> Result<RedisReport, RedisProbeError> {
    let pool = RedisPool::from_url(redis_url).map_err(|e| RedisProbeError::BadUrl(e.to_string()))?;
    let work = async {
        let mut conn = pool.get().await.map_err(|e| RedisProbeError::Unreachable(e.to_string()))?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| classify(&e))?;
        if pong != "PONG" {
            return Err(RedisProbeError::Command(format!("PING answered {pong:?}")));
        }
        let info: String =
            redis::cmd("INFO").arg("server").query_async(&mut conn).await.map_err(|e| classify(&e))?;
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(|v| v.trim().to_owned()))
        };
        Ok(RedisReport {
            version: field("redis_version").unwrap_or_else(|| "unknown".to_owned()),
            mode: field("redis_mode"),
        })
    };
    match tokio::time::timeout(REDIS_PROBE_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(RedisProbeError::Unreachable(format!("no answer within {REDIS_PROBE_TIMEOUT:?}"))),
    }
}

fn classify(e: &redis::RedisError) -> RedisProbeError {
    if let Some(why) = lane_store::tls_failure(e) {
        RedisProbeError::Unreachable(why)
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout() {
        RedisProbeError::Unreachable(e.to_string())
    } else {
        RedisProbeError::Command(e.to_string())
    }
}

/// What an HTTP endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpProbe {
    /// It answered with this status.
    Status(u16),
    /// It did not answer: why.
    Unreachable(String),
}

/// `GET url` with [`PROBE_TIMEOUT`]: any status counts as reachable.
pub async fn probe_http(url: &str) -> HttpProbe {
    let client = match reqwest::Client::builder().timeout(PROBE_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => return HttpProbe::Unreachable(format!("cannot build the HTTP client: {e}")),
    };
    match client.get(url).send().await {
        Ok(response) => HttpProbe::Status(response.status().as_u16()),
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            HttpProbe::Unreachable(message)
        }
    }
}

/// The master-key policy `laneway serve` applies at start, on the environment `getenv` reads.
///
/// # Errors
/// [`MasterKeyError`] when production would refuse to start.
pub fn master_key_policy(getenv: &dyn Fn(&str) -> Option<String>) -> Result<MasterKeyStatus, MasterKeyError> {
    validate_master_key_policy(getenv)
}
