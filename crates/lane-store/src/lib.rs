//! Chat lane stores: [`MemoryLaneStore`] and the per-tenant [`ChatLaneStoreFactory`].
//!
#![doc = include_str!("../README.md")]

mod factory;
mod memory;

pub use factory::ChatLaneStoreFactory;
pub use memory::MemoryLaneStore;
