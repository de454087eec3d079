//! The per-tenant queue backend cache (`get_app_queue_backend` / `reset_queue_backend`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use queue_core::{Mode, QueueBackend, QueueResult, TenantId};

/// Builds the in-test backend.
pub type InlineBackendFactory = dyn Fn() -> Arc<dyn QueueBackend> + Send + Sync;

/// What `get_backend` is asked for.
#[derive(Clone, Copy)]
pub struct BackendRequest<'a> {
    /// The tenant (None = the default tenant).
    pub tenant_id: Option<&'a TenantId>,
    /// How the process is wired.
    pub mode: Mode,
    /// The in-test backend factory, for callers that want it.
    pub inline_backend_factory: &'a InlineBackendFactory,
}

impl fmt::Debug for BackendRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendRequest")
            .field("tenant_id", &self.tenant_id)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Builds the backend outside test mode (inline over SQLite, or Redis).
pub type GetBackendFn = dyn Fn(BackendRequest<'_>) -> QueueResult<Arc<dyn QueueBackend>> + Send + Sync;

/// One backend per tenant, created once.
#[derive(Default)]
pub struct QueueBackendCache {
    backends: Mutex<HashMap<String, Arc<dyn QueueBackend>>>,
}

impl fmt::Debug for QueueBackendCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("QueueBackendCache").field("tenants", &keys).finish()
    }
}

fn tenant_key(tenant_id: Option<&TenantId>) -> String {
    tenant_id.map_or_else(|| "default".to_owned(), ToString::to_string)
}

impl QueueBackendCache {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn QueueBackend>>> {
        // Inserts and clears are single operations: a poisoned map is still consistent.
        self.backends.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tenant's cached backend, created on first use: `inline_backend_factory` in test mode,
    /// `get_backend` otherwise.
    ///
    /// # Errors
    /// Whatever `get_backend` returns; nothing is cached then.
    pub fn get_app_queue_backend(
        &self,
        tenant_id: Option<&TenantId>,
        mode: Mode,
        inline_backend_factory: &InlineBackendFactory,
        get_backend: &GetBackendFn,
    ) -> QueueResult<Arc<dyn QueueBackend>> {
        let key = tenant_key(tenant_id);
        if let Some(b) = self.lock().get(&key) {
            return Ok(b.clone());
        }
        // Built outside the lock: a builder may take time (opening a database) and must not
        // block other tenants. If two callers race, the first insert wins and both get it.
        let built = if mode == Mode::Test {
            inline_backend_factory()
        } else {
            get_backend(BackendRequest { tenant_id, mode, inline_backend_factory })?
        };
        Ok(self.lock().entry(key).or_insert(built).clone())
    }

    /// The tenant's backend if one was created.
    #[must_use]
    pub fn cached(&self, tenant_id: Option<&TenantId>) -> Option<Arc<dyn QueueBackend>> {
        self.lock().get(&tenant_key(tenant_id)).cloned()
    }

    /// Every cached backend.
    #[must_use]
    pub fn all(&self) -> Vec<Arc<dyn QueueBackend>> {
        self.lock().values().cloned().collect()
    }

    /// Forgets the tenant's backend, if cached; returns it.
    pub fn remove(&self, tenant_id: Option<&TenantId>) -> Option<Arc<dyn QueueBackend>> {
        self.lock().remove(&tenant_key(tenant_id))
    }

    /// Forgets every backend (`reset_queue_backend`).
    pub fn reset_queue_backend(&self) {
        self.lock().clear();
    }
}
