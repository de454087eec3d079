//! The per-tenant lane-store cache (the seed's `get_chat_lane_store` / `reset_chat_lane_stores`),
//! as a value the application owns and passes down instead of a process-wide singleton.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use queue_core::{ChatLaneStore, LaneStoreConfig, Mode, QueueError, QueueResult, SharedClock, TenantId};

use crate::memory::MemoryLaneStore;

/// The cache key of a request that names no tenant (the seed's `default`).
const DEFAULT_TENANT_KEY: &str = "default";

/// One chat lane store per tenant, created on first use and kept until
/// [`reset_chat_lane_stores`](Self::reset_chat_lane_stores).
#[derive(Debug, Default)]
pub struct ChatLaneStoreFactory {
    stores: Mutex<HashMap<String, Arc<dyn ChatLaneStore>>>,
}

impl ChatLaneStoreFactory {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The map holds only `Arc`s and is never left half-updated, so a poisoned lock is safe to
    /// reuse.
    fn stores(&self) -> MutexGuard<'_, HashMap<String, Arc<dyn ChatLaneStore>>> {
        self.stores.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lane store of `tenant_id` (`default` when `None`), created on the first call for that
    /// tenant and shared by every later one; `mode`, `config` and `clock` only matter then.
    ///
    /// `Mode::Test` and `Mode::Inline` use a [`MemoryLaneStore`]. `redis_url` is for the Redis
    /// lane store, which is not built yet.
    ///
    /// # Errors
    /// [`QueueError::Unsupported`] for `Mode::Redis` (nothing is cached then).
    pub fn get_chat_lane_store(
        &self,
        tenant_id: Option<&TenantId>,
        mode: Mode,
        _redis_url: &str,
        config: LaneStoreConfig,
        clock: SharedClock,
    ) -> QueueResult<Arc<dyn ChatLaneStore>> {
        let tenant_key = tenant_id.map_or(DEFAULT_TENANT_KEY, TenantId::as_str);
        let mut stores = self.stores();
        if let Some(store) = stores.get(tenant_key) {
            return Ok(Arc::clone(store));
        }
        let store: Arc<dyn ChatLaneStore> = match mode {
            Mode::Test | Mode::Inline => Arc::new(MemoryLaneStore::new(config, clock)),
            Mode::Redis => {
                return Err(QueueError::Unsupported(
                    "the Redis chat lane store arrives with the Redis backend (issue #3); \
                     set JOB_QUEUE_BACKEND=inline for now"
                        .to_owned(),
                ));
            }
        };
        tracing::debug!(tenant = tenant_key, mode = %mode, kind = store.kind(), "chat lane store created");
        stores.insert(tenant_key.to_owned(), Arc::clone(&store));
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
