//! Many tenants' runtimes in one process: each built with its own stores and data dir, started
//! and stopped on its own, without blocking the others.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use queue_core::{
    ChatLaneStore, IdempotencyStore, JobMetrics, JobStore, Limiter, QueueBackend, QueueResult, TenantId,
};
use queue_inline::InlineRuntime;

use crate::manager::BoxFuture;

/// One tenant's running runtime and the stores it works on.
#[derive(Debug, Clone)]
pub struct TenantRuntime {
    /// The tenant.
    pub tenant: TenantId,
    /// Its data directory (None for ephemeral runtimes).
    pub data_dir: Option<PathBuf>,
    /// Its backend.
    pub backend: Arc<dyn QueueBackend>,
    /// Its job records.
    pub store: Arc<dyn JobStore>,
    /// Its chat lanes.
    pub lanes: Arc<dyn ChatLaneStore>,
    /// Its request-id map.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Its capacity limiter.
    pub limiter: Arc<dyn Limiter>,
    /// The in-process runtime, when the backend is inline (stats, depths).
    pub inline: Option<InlineRuntime>,
    /// The job metrics its runtime records (this process's share, on Redis).
    pub metrics: Arc<JobMetrics>,
}

/// Builds a tenant's runtime (not started).
pub type TenantBuilder = Arc<dyn Fn(TenantId) -> BoxFuture<QueueResult<TenantRuntime>> + Send + Sync>;

/// The running tenants of this process.
pub struct TenantRegistry {
    builder: TenantBuilder,
    running: RwLock<HashMap<TenantId, Arc<TenantRuntime>>>,
    /// Serialises start and stop per tenant, so two callers never build one tenant twice.
    transitions: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for TenantRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantRegistry").field("running", &self.tenants()).finish_non_exhaustive()
    }
}

impl TenantRegistry {
    /// An empty registry that builds tenants with `builder`.
    #[must_use]
    pub fn new(builder: TenantBuilder) -> Self {
        Self { builder, running: RwLock::new(HashMap::new()), transitions: Mutex::new(HashMap::new()) }
    }

    fn gate(&self, tenant: &TenantId) -> Arc<tokio::sync::Mutex<()>> {
        // Each operation on these maps is a single insert or lookup: poisoning cannot leave them
        // inconsistent.
        self.transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.clone())
            .or_default()
            .clone()
    }

    /// The tenant's runtime, if it runs. Never waits for another tenant's start or stop.
    #[must_use]
    pub fn get(&self, tenant: &TenantId) -> Option<Arc<TenantRuntime>> {
        self.running.read().unwrap_or_else(PoisonError::into_inner).get(tenant).cloned()
    }

    /// Running tenants, sorted.
    #[must_use]
    pub fn tenants(&self) -> Vec<TenantId> {
        let mut v: Vec<TenantId> =
            self.running.read().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        v.sort();
        v
    }

    /// Builds and starts the tenant's runtime unless it runs already; returns it.
    ///
    /// # Errors
    /// The builder's or the backend's error; the tenant is not registered then.
    pub async fn start(&self, tenant: &TenantId) -> QueueResult<Arc<TenantRuntime>> {
        let gate = self.gate(tenant);
        let _held = gate.lock().await;
        if let Some(rt) = self.get(tenant) {
            return Ok(rt);
        }
        let rt = Arc::new((self.builder)(tenant.clone()).await?);
        rt.backend.start().await?;
        self.running.write().unwrap_or_else(PoisonError::into_inner).insert(tenant.clone(), rt.clone());
        tracing::info!(tenant = %tenant, backend = rt.backend.name(), "tenant runtime started");
        Ok(rt)
    }

    /// Stops the tenant's runtime (graceful: running jobs finish or are handed back). Returns
    /// whether it was running.
    ///
    /// # Errors
    /// The backend's stop error (the tenant is unregistered all the same).
    pub async fn stop(&self, tenant: &TenantId) -> QueueResult<bool> {
        let gate = self.gate(tenant);
        let _held = gate.lock().await;
        let removed = self.running.write().unwrap_or_else(PoisonError::into_inner).remove(tenant);
        match removed {
            Some(rt) => {
                rt.backend.stop().await?;
                tracing::info!(tenant = %tenant, "tenant runtime stopped");
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Stops every tenant, all at once.
    pub async fn stop_all(&self) {
        let tenants = self.tenants();
        let stops = tenants.iter().map(|t| async move {
            if let Err(e) = self.stop(t).await {
                tracing::warn!(tenant = %t, error = %e, "tenant did not stop cleanly");
            }
        });
        join_all(stops).await;
    }
}

/// Runs futures concurrently on this task and waits for all (no futures crate needed).
async fn join_all<F: std::future::Future<Output = ()>>(futs: impl IntoIterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
}
