//! The Redis backend of Laneway: every state change one Lua script over one tenant's keys (one
//! Cluster slot), leases with fencing, a reaper, a Redis job store, idempotency store and a
//! distributed limiter. Runs on one Redis node or a Redis Cluster.

mod backend;
mod combine;
mod idempotency;
mod limiter;
mod scripts;
mod store;

pub use backend::{
    RedisBackendConfig, RedisBackendDeps, RedisBackendStats, RedisQueueBackend, RedisWorkerRegistry,
    WorkerEntry, WorkerRecord, local_host_name,
};
pub use idempotency::RedisIdempotencyStore;
pub use limiter::RedisLimiter;
pub use store::RedisJobStore;
