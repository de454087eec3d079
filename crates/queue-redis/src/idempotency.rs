//! The Redis [`IdempotencyStore`]: one STRING per request id (`idem:<request>` -> job id), set
//! if absent with a TTL, so every process of a tenant sees the same mapping.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use lane_store::redis::{self, Script, Value};
use lane_store::{RedisPool, TenantKeys, redis_error};
use queue_core::{IdempotencyClaim, IdempotencyStore, JobId, QueueError, QueueResult, RequestId, TenantId};

/// Compare-and-delete: forgets the key only while it still maps to the given job.
/// KEYS[1] the request's key; ARGV[1] the job id. Returns 1 when deleted, else 0.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
});

/// Maps one tenant's request ids to the jobs they created, in Redis.
///
/// A key is remembered for `ttl` after it was claimed (millisecond precision, enforced by Redis
/// itself). A zero `ttl` remembers nothing: every claim is [`IdempotencyClaim::Claimed`] and
/// nothing is written, which turns idempotency off.
pub struct RedisIdempotencyStore {
    pool: RedisPool,
    tenant: TenantId,
    keys: TenantKeys,
    ttl_ms: u64,
}

impl fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIdempotencyStore")
            .field("tenant", &self.tenant)
            .field("target", self.pool.target())
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl RedisIdempotencyStore {
    /// The idempotency keys of `tenant` on `pool`, each remembered for `ttl` (zero: never).
    #[must_use]
    pub fn new(pool: RedisPool, tenant: &TenantId, ttl: Duration) -> Self {
        Self {
            pool,
            tenant: tenant.clone(),
            keys: TenantKeys::new(tenant),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    async fn claim(&self, request: &RequestId, job: &JobId) -> QueueResult<IdempotencyClaim> {
        if self.ttl_ms == 0 {
            return Ok(IdempotencyClaim::Claimed);
        }
        let key = self.keys.idempotency(request);
        let mut conn = self.pool.get().await?;
        // Two tries: the key seen by a failed SET may expire before the GET that reads it, and
        // then the next SET finds it free.
        for _ in 0..2 {
            let set: Value = redis::cmd("SET")
                .arg(&key)
                .arg(job.as_str())
                .arg("NX")
                .arg("PX")
                .arg(self.ttl_ms)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(&e))?;
            if set != Value::Nil {
                return Ok(IdempotencyClaim::Claimed);
            }
            let existing: Option<String> =
                redis::cmd("GET").arg(&key).query_async(&mut conn).await.map_err(|e| redis_error(&e))?;
            if let Some(existing) = existing {
                let existing = JobId::new(existing).map_err(|e| {
                    QueueError::Storage(format!("redis: idempotency key of request {request}: {e}"))
                })?;
                return Ok(IdempotencyClaim::Existing(existing));
            }
        }
        Err(QueueError::Storage(format!(
            "redis: the idempotency key of request {request} kept changing while it was claimed"
        )))
    }

    async fn release(&self, request: &RequestId, job: &JobId) -> QueueResult<()> {
        if self.ttl_ms == 0 {
            return Ok(());
        }
        let mut conn = self.pool.get().await?;
        let _deleted: u64 = RELEASE
            .key(self.keys.idempotency(request))
            .arg(job.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(&e))?;
        Ok(())
    }
}
