//! The runtime state an application owns: the backend cache, the lane-store factory and the
//! idempotency store, with the seed's `reset_runtime_state`.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use lane_store::ChatLaneStoreFactory;
use queue_core::{IdempotencyStore, QueueResult};

use crate::backend_cache::QueueBackendCache;

/// Caches and stores shared by one process's request handling.
pub struct RuntimeState {
    /// One backend per tenant.
    pub backends: QueueBackendCache,
    /// One lane store per tenant.
    pub lane_stores: ChatLaneStoreFactory,
    idempotency: Mutex<Arc<dyn IdempotencyStore>>,
}

impl fmt::Debug for RuntimeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeState")
            .field("backends", &self.backends)
            .field("lane_stores", &self.lane_stores)
            .finish_non_exhaustive()
    }
}

impl RuntimeState {
    /// Fresh caches around `idempotency`.
    #[must_use]
    pub fn new(idempotency: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            backends: QueueBackendCache::new(),
            lane_stores: ChatLaneStoreFactory::new(),
            idempotency: Mutex::new(idempotency),
        }
    }

    /// The current idempotency store.
    #[must_use]
    pub fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        self.idempotency.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Empties the in-process queues (every cached backend is stopped, which drops its queues and
    /// hands running jobs back), installs a fresh idempotency store, and resets both caches.
    ///
    /// # Errors
    /// The first backend stop error; the caches are reset regardless.
    pub async fn reset_runtime_state(
        &self,
        create_idempotency_store: impl FnOnce() -> Arc<dyn IdempotencyStore>,
    ) -> QueueResult<()> {
        let mut first_error = None;
        for backend in self.backends.all() {
            if let Err(e) = backend.stop().await {
                first_error.get_or_insert(e);
            }
        }
        *self.idempotency.lock().unwrap_or_else(PoisonError::into_inner) = create_idempotency_store();
        self.lane_stores.reset_chat_lane_stores();
        self.backends.reset_queue_backend();
        first_error.map_or(Ok(()), Err)
    }
}
