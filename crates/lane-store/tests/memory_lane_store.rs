//! `MemoryLaneStore` against the lane-store battery (lane order, caps, fencing, lease expiry,
//! debounce, cleanup, reset), plus what only the memory store is asked: its kind and a heavier
//! concurrency smoke test. Driven by a `ManualClock` (no sleeping).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use lane_store::MemoryLaneStore;
use queue_core::conformance::LaneStoreFactory;
use queue_core::{ChatLaneStore, JobId, LaneId, LaneStoreConfig, ManualClock};

/// Each build is a new, empty store.
struct MemoryLaneStores;

#[async_trait]
impl LaneStoreFactory for MemoryLaneStores {
    async fn build(&self, config: LaneStoreConfig, clock: ManualClock) -> Arc<dyn ChatLaneStore> {
        Arc::new(MemoryLaneStore::new(config, Arc::new(clock)))
    }
}

queue_core::lane_store_conformance_tests!(MemoryLaneStores);

fn lane(id: &str) -> LaneId {
    LaneId::new(id).unwrap()
}

fn job(id: &str) -> JobId {
    JobId::new(id).unwrap()
}

#[tokio::test]
async fn the_store_reports_its_kind_as_memory() {
    let store = MemoryLaneStore::new(LaneStoreConfig::default(), Arc::new(ManualClock::default()));
    assert_eq!(store.kind(), "memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_get_distinct_positions_and_lose_no_job() {
    const LANES: usize = 8;
    const PER_LANE: usize = 50;
    let config = LaneStoreConfig { max_queue: PER_LANE, ..LaneStoreConfig::default() };
    let store = Arc::new(MemoryLaneStore::new(config, Arc::new(ManualClock::new(1_000_000))));

    let tasks: Vec<_> = (0..LANES * PER_LANE)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let l = lane(&format!("lane-{}", i % LANES));
                let out = store.enqueue(&job(&format!("job-{i}")), &l).await.unwrap();
                (l, out)
            })
        })
        .collect();

    let mut positions: Vec<Vec<usize>> = vec![Vec::new(); LANES];
    let mut dispatched = 0;
    for task in tasks {
        let (l, out) = task.await.unwrap();
        assert!(out.added);
        assert_eq!(out.dispatch.is_some(), out.receipt.lane_queue_position == 0);
        dispatched += usize::from(out.receipt.dispatched);
        let index: usize = l.as_str().trim_start_matches("lane-").parse().unwrap();
        positions[index].push(out.receipt.lane_queue_position);
    }

    assert_eq!(dispatched, LANES, "exactly one dispatch per lane");
    for lane_positions in &mut positions {
        lane_positions.sort_unstable();
        assert_eq!(*lane_positions, (0..PER_LANE).collect::<Vec<_>>());
    }
    let snapshot = store.snapshot(None, usize::MAX).await.unwrap();
    assert_eq!(snapshot.len(), LANES);
    let mut seen = HashSet::new();
    for lane_snapshot in &snapshot {
        assert!(lane_snapshot.active.is_some());
        assert_eq!(lane_snapshot.waiting.len(), PER_LANE - 1);
        seen.insert(lane_snapshot.active.as_ref().unwrap().job_id.clone());
        seen.extend(lane_snapshot.waiting.iter().cloned());
    }
    assert_eq!(seen.len(), LANES * PER_LANE, "every job is in its lane exactly once");
}
