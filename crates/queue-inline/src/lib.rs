//! The in-process queue backend: tokio worker pools per job kind, lane-aware dispatch, a local
//! limiter, and job stores (embedded SQLite with group commit, or ephemeral memory).
//!
//! Assembly: build an [`InlineRuntime`] from [`InlineDeps`] (job store, lane store, limiter,
//! handlers, clock) and wrap it in [`InlineQueueBackend::over_runtime`].

mod backend;
mod held;
mod idempotency;
mod limiter;
mod runtime;
mod store;
mod work_queue;

pub use backend::{BoxFuture, ChatFn, Fn0, Fn1, InlineBackendFns, InlineQueueBackend};
pub use idempotency::MemoryIdempotencyStore;
pub use limiter::LocalLimiter;
pub use runtime::{InlineDeps, InlineRuntime, InlineRuntimeConfig, QueueDepths, RuntimeStats};
pub use store::{MemoryJobStore, SqliteJobStore, SqliteStoreConfig};
