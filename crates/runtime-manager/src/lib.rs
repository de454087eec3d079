//! Runtime wiring, as the seed factored it: backend selection and caching
//! ([`QueueBackendCache::get_app_queue_backend`]), tenant runtime start and stop
//! ([`start_tenant_runtime`], [`stop_tenant_runtime`] over [`RuntimeManagerDeps`]), the master-key
//! policy, [`RuntimeState::reset_runtime_state`], and the [`TenantRegistry`] that runs many
//! tenants' runtimes in one process.
//!
//! Every cache is a value its owner passes down; nothing here is process-global.

mod backend_cache;
mod manager;
mod master_key;
mod registry;
mod state;

pub use backend_cache::{BackendRequest, GetBackendFn, InlineBackendFactory, QueueBackendCache};
pub use lane_store::{ChatLaneStoreFactory, MemoryLaneStore};
pub use manager::{
    BoxFuture, Getenv, RuntimeManagerDeps, StartRuntimeFn, StopRuntimeFn, ValidateMasterKeyFn,
    start_tenant_runtime, stop_tenant_runtime,
};
pub use master_key::{
    DEV_MASTER_KEY, MIN_MASTER_KEY_LEN, MasterKeyError, MasterKeyStatus, validate_master_key_policy,
};
pub use registry::{TenantBuilder, TenantRegistry, TenantRuntime};
pub use state::RuntimeState;
