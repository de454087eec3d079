//! `MemoryLaneStore` against the lane-store battery (lane order, caps, fencing, lease expiry,
//! debounce, cleanup, reset, concurrent enqueues), plus what only the memory store is asked: its
//! kind. Driven by a `ManualClock` (no sleeping).

use std::sync::Arc;

use async_trait::async_trait;
use lane_store::MemoryLaneStore;
use queue_core::conformance::LaneStoreFactory;
use queue_core::{ChatLaneStore, LaneStoreConfig, ManualClock};

/// Each build is a new, empty store.
struct MemoryLaneStores;

#[async_trait]
impl LaneStoreFactory for MemoryLaneStores {
    async fn build(&self, config: LaneStoreConfig, clock: ManualClock) -> Arc<dyn ChatLaneStore> {
        Arc::new(MemoryLaneStore::new(config, Arc::new(clock)))
    }
}

queue_core::lane_store_conformance_tests!(MemoryLaneStores);

#[tokio::test]
async fn the_store_reports_its_kind_as_memory() {
    let store = MemoryLaneStore::new(LaneStoreConfig::default(), Arc::new(ManualClock::default()));
    assert_eq!(store.kind(), "memory");
}
