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
pub use redis_conn::{RedisConn, RedisPool, RedisTarget, redis_error};
pub use redis_store::{ENQUEUE_FN, EnqueueTerms, FINISH_FN, LANE_COMMON_LUA, RedisLaneStore, parse_dispatch};

/// The redis-rs crate as this crate uses it, so layers above share one version.
pub use redis;
