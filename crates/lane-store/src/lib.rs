//! Chat lane stores: [`MemoryLaneStore`] and the per-tenant [`ChatLaneStoreFactory`], plus the
//! Redis plumbing shared with `queue-redis`: connections ([`RedisPool`]) and the key layout
//! ([`TenantKeys`]).
//!
#![doc = include_str!("../README.md")]

mod factory;
mod keys;
mod memory;
mod redis_conn;
mod redis_store;

pub use factory::ChatLaneStoreFactory;
pub use keys::TenantKeys;
pub use memory::MemoryLaneStore;
pub use redis_conn::{RedisConn, RedisPool, RedisTarget, redis_error, tls_failure};
pub use redis_store::{ENQUEUE_FN, EnqueueTerms, FINISH_FN, LANE_COMMON_LUA, RedisLaneStore, parse_dispatch};

/// The redis-rs crate as this crate uses it, so layers above share one version.
pub use redis;

use queue_core::{JobId, LaneEnqueue, LaneId, QueueResult, TenantId};

/// Logs what an enqueue of `job` into `lane` answered, the same way for every store: the outcome
/// at debug level, a refusal (a full lane) at warn. `tenant` is given by the stores that know it.
fn log_enqueue(tenant: Option<&TenantId>, job: &JobId, lane: &LaneId, outcome: &QueueResult<LaneEnqueue>) {
    let tenant = tenant.map(tracing::field::display);
    match outcome {
        Ok(out) => tracing::debug!(
            tenant,
            lane = %lane,
            job = %job,
            added = out.added,
            position = out.receipt.lane_queue_position,
            epoch = out.dispatch.as_ref().map(|c| c.epoch),
            "chat job enqueued in lane",
        ),
        Err(err) => {
            tracing::warn!(tenant, lane = %lane, job = %job, error = %err, "chat job refused by lane")
        }
    }
}
