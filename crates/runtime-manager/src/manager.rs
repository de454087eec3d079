//! `start_tenant_runtime` / `stop_tenant_runtime`: validate the master-key policy, get the
//! tenant's backend, start or stop it — each step injected, as the seed's `RuntimeManagerDeps`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use queue_core::{Mode, QueueBackend, QueueError, QueueResult, TenantId};

use crate::backend_cache::{BackendRequest, InlineBackendFactory};
use crate::master_key::{MasterKeyError, MasterKeyStatus};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// Reads one environment variable.
pub type Getenv = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;
/// The master-key policy.
pub type ValidateMasterKeyFn =
    Arc<dyn Fn(&dyn Fn(&str) -> Option<String>) -> Result<MasterKeyStatus, MasterKeyError> + Send + Sync>;
/// Starts a backend's runtime.
pub type StartRuntimeFn =
    Arc<dyn Fn(Arc<dyn QueueBackend>, Mode) -> BoxFuture<QueueResult<()>> + Send + Sync>;
/// Stops a backend's runtime.
pub type StopRuntimeFn = Arc<dyn Fn(Arc<dyn QueueBackend>) -> BoxFuture<QueueResult<()>> + Send + Sync>;
/// Gets (from a cache, usually) the tenant's backend.
pub type GetBackendDep = Arc<dyn Fn(BackendRequest<'_>) -> QueueResult<Arc<dyn QueueBackend>> + Send + Sync>;

/// Everything starting or stopping a tenant's runtime needs (the seed's dataclass).
#[derive(Clone)]
pub struct RuntimeManagerDeps {
    /// The tenant (None = default).
    pub tenant_id: Option<TenantId>,
    /// How the process is wired.
    pub mode: Mode,
    /// The master-key policy.
    pub validate_master_key_policy: ValidateMasterKeyFn,
    /// The in-test backend factory.
    pub inline_backend_factory: Arc<InlineBackendFactory>,
    /// Gets the tenant's backend (usually `QueueBackendCache::get_app_queue_backend`).
    pub get_backend: GetBackendDep,
    /// Starts it (default: `backend.start()`).
    pub start_runtime: StartRuntimeFn,
    /// Stops it (default: `backend.stop()`).
    pub stop_runtime: StopRuntimeFn,
    /// Reads the environment.
    pub getenv: Getenv,
}

impl fmt::Debug for RuntimeManagerDeps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeManagerDeps")
            .field("tenant_id", &self.tenant_id)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl RuntimeManagerDeps {
    /// The default `start_runtime`: `backend.start()`.
    #[must_use]
    pub fn default_start_runtime() -> StartRuntimeFn {
        Arc::new(|backend, _mode| Box::pin(async move { backend.start().await }))
    }

    /// The default `stop_runtime`: `backend.stop()`.
    #[must_use]
    pub fn default_stop_runtime() -> StopRuntimeFn {
        Arc::new(|backend| Box::pin(async move { backend.stop().await }))
    }

    fn backend(&self) -> QueueResult<Arc<dyn QueueBackend>> {
        (self.get_backend)(BackendRequest {
            tenant_id: self.tenant_id.as_ref(),
            mode: self.mode,
            inline_backend_factory: &*self.inline_backend_factory,
        })
    }
}

/// Validates the master-key policy first, then gets the tenant's backend and starts it.
///
/// # Errors
/// `QueueError::Config` when the policy refuses (nothing is built or started then), or the
/// backend's own error.
pub async fn start_tenant_runtime(deps: &RuntimeManagerDeps) -> QueueResult<Arc<dyn QueueBackend>> {
    let getenv = deps.getenv.clone();
    (deps.validate_master_key_policy)(&move |k| getenv(k)).map_err(|e| QueueError::Config(e.to_string()))?;
    let backend = deps.backend()?;
    (deps.start_runtime)(backend.clone(), deps.mode).await?;
    Ok(backend)
}

/// Stops the tenant's backend (the same one `start_tenant_runtime` started, through the cache).
///
/// # Errors
/// The backend's own error.
pub async fn stop_tenant_runtime(deps: &RuntimeManagerDeps) -> QueueResult<()> {
    let backend = deps.backend()?;
    (deps.stop_runtime)(backend).await
}
