//! The per-tenant lane-store cache (the seed's `get_chat_lane_store` / `reset_chat_lane_stores`),
//! as a value the application owns and passes down instead of a process-wide singleton.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use queue_core::{ChatLaneStore, LaneStoreConfig, Mode, QueueError, QueueResult, SharedClock, TenantId};

use crate::memory::MemoryLaneStore;
use crate::redis_conn::RedisPool;
use crate::redis_store::RedisLaneStore;

/// The cache key of a request that names no tenant (the seed's `default`).
const DEFAULT_TENANT_KEY: &str = "default";

/// A cached store, kept as its concrete type so the Redis backend can get its `RedisLaneStore`.
#[derive(Debug, Clone)]
enum Cached {
    Memory(Arc<MemoryLaneStore>),
    Redis(Arc<RedisLaneStore>),
}

impl Cached {
    fn shared(&self) -> Arc<dyn ChatLaneStore> {
        match self {
            Self::Memory(store) => store.clone(),
            Self::Redis(store) => store.clone(),
        }
    }
}

/// One chat lane store per tenant, created on first use and kept until
/// [`reset_chat_lane_stores`](Self::reset_chat_lane_stores).
#[derive(Debug, Default)]
pub struct ChatLaneStoreFactory {
    stores: Mutex<HashMap<String, Cached>>,
    /// One pool per Redis URL, shared by the tenants' Redis stores and kept across resets (a
    /// reset drops stores, not connections).
    redis_pools: Mutex<HashMap<String, RedisPool>>,
}

impl ChatLaneStoreFactory {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The map holds only `Arc`s and is never left half-updated, so a poisoned lock is safe to
    /// reuse.
    fn stores(&self) -> MutexGuard<'_, HashMap<String, Cached>> {
        self.stores.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pool for `redis_url`, created (lazily connecting) on first use.
    fn redis_pool(&self, redis_url: &str) -> QueueResult<RedisPool> {
        let mut pools = self.redis_pools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(redis_url) {
            return Ok(pool.clone());
        }
        let pool = RedisPool::from_url(redis_url)?;
        pools.insert(redis_url.to_owned(), pool.clone());
        Ok(pool)
    }

    /// The lane store of `tenant_id` (`default` when `None`), created on the first call for that
    /// tenant and shared by every later one; `mode`, `redis_url`, `config` and `clock` only
    /// matter then.
    ///
    /// `Mode::Test` and `Mode::Inline` use a [`MemoryLaneStore`]; `Mode::Redis` a
    /// [`RedisLaneStore`] on `redis_url` (connecting lazily), with dispatch on: every claim it
    /// makes is pushed to the tenant's ready list that the Redis backend's workers consume.
    ///
    /// # Errors
    /// `QueueError::Config` naming `REDIS_URL` when `Mode::Redis` gets a URL it cannot use
    /// (nothing is cached then).
    pub fn get_chat_lane_store(
        &self,
        tenant_id: Option<&TenantId>,
        mode: Mode,
        redis_url: &str,
        config: LaneStoreConfig,
        clock: SharedClock,
    ) -> QueueResult<Arc<dyn ChatLaneStore>> {
        self.cached(tenant_id, mode, redis_url, config, clock).map(|store| store.shared())
    }

    /// The Redis lane store of `tenant_id`, as [`get_chat_lane_store`](Self::get_chat_lane_store)
    /// with `Mode::Redis` hands it out (the same cached store), typed: the Redis backend runs its
    /// enqueue Lua inside its own submit script.
    ///
    /// # Errors
    /// `QueueError::Config` naming `REDIS_URL` for a URL it cannot use, or when the tenant's
    /// cached store is a memory one (it was first asked for in another mode).
    pub fn get_redis_lane_store(
        &self,
        tenant_id: Option<&TenantId>,
        redis_url: &str,
        config: LaneStoreConfig,
        clock: SharedClock,
    ) -> QueueResult<Arc<RedisLaneStore>> {
        match self.cached(tenant_id, Mode::Redis, redis_url, config, clock)? {
            Cached::Redis(store) => Ok(store),
            Cached::Memory(_) => Err(QueueError::Config(format!(
                "tenant {}: its chat lane store was created in memory, not on Redis; \
                 reset the lane stores before switching the tenant to JOB_QUEUE_BACKEND=redis",
                tenant_id.map_or(DEFAULT_TENANT_KEY, TenantId::as_str)
            ))),
        }
    }

    /// The cached store of `tenant_id`, created for `mode` on the first call.
    fn cached(
        &self,
        tenant_id: Option<&TenantId>,
        mode: Mode,
        redis_url: &str,
        config: LaneStoreConfig,
        clock: SharedClock,
    ) -> QueueResult<Cached> {
        let tenant_key = tenant_id.map_or(DEFAULT_TENANT_KEY, TenantId::as_str);
        let mut stores = self.stores();
        if let Some(store) = stores.get(tenant_key) {
            return Ok(store.clone());
        }
        let store = match mode {
            Mode::Test | Mode::Inline => Cached::Memory(Arc::new(MemoryLaneStore::new(config, clock))),
            Mode::Redis => {
                let tenant = tenant_id.cloned().unwrap_or_else(TenantId::default_tenant);
                Cached::Redis(Arc::new(
                    RedisLaneStore::new(self.redis_pool(redis_url)?, &tenant, config, clock)
                        .with_dispatch(true),
                ))
            }
        };
        tracing::debug!(tenant = tenant_key, mode = %mode, kind = store.shared().kind(), "chat lane store created");
        stores.insert(tenant_key.to_owned(), store.clone());
        Ok(store)
    }

    /// Drops every cached store: the next call for a tenant builds a fresh one. Holders of an
    /// earlier `Arc` keep their store; it is simply no longer handed out.
    pub fn reset_chat_lane_stores(&self) {
        self.stores().clear();
    }

    /// How many tenants have a cached store.
    #[must_use]
    pub fn len(&self) -> usize {
        self.stores().len()
    }

    /// Whether no tenant has a cached store.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.stores().is_empty()
    }
}
