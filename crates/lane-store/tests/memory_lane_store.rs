//! Behaviour of `MemoryLaneStore`: lane order, caps, fencing, lease expiry, debounce, cleanup and
//! concurrency, driven by a `ManualClock` (no sleeping).

use std::collections::HashSet;
use std::sync::Arc;

use lane_store::MemoryLaneStore;
use queue_core::{
    ChatLaneStore, Clock, JobId, LaneClaim, LaneId, LaneLoad, LaneStoreConfig, ManualClock, QueueError,
};

const TTL_MS: u64 = 1_000;

fn lane(id: &str) -> LaneId {
    LaneId::new(id).unwrap()
}

fn job(id: &str) -> JobId {
    JobId::new(id).unwrap()
}

fn store_with(config: LaneStoreConfig) -> (MemoryLaneStore, ManualClock) {
    let clock = ManualClock::new(1_000_000);
    (MemoryLaneStore::new(config, Arc::new(clock.clone())), clock)
}

fn store() -> (MemoryLaneStore, ManualClock) {
    store_with(LaneStoreConfig { debounce_ms: 500, claim_ttl_ms: TTL_MS, max_queue: 3 })
}

/// Enqueues into an idle lane and returns the claim it dispatched.
async fn claim_head(store: &MemoryLaneStore, j: &str, l: &LaneId) -> LaneClaim {
    store.enqueue(&job(j), l).await.unwrap().dispatch.expect("an idle lane dispatches at once")
}

async fn waiting(store: &MemoryLaneStore, l: &LaneId) -> Vec<JobId> {
    let snap = store.snapshot(None, usize::MAX).await.unwrap();
    snap.into_iter().find(|s| &s.lane_id == l).map(|s| s.waiting).unwrap_or_default()
}

#[tokio::test]
async fn the_store_reports_its_kind_as_memory() {
    let (store, _) = store();
    assert_eq!(store.kind(), "memory");
}

#[tokio::test]
async fn jobs_wait_in_fifo_order_with_one_based_positions() {
    let (store, clock) = store();
    let l = lane("student:s1:main");

    let first = store.enqueue(&job("a"), &l).await.unwrap();
    assert!(first.added);
    assert!(first.receipt.dispatched);
    assert_eq!(first.receipt.lane_queue_position, 0);
    assert_eq!(first.receipt.lane_queue_size, 1);
    assert!(first.receipt.lane_active);
    let claim = first.dispatch.unwrap();
    assert_eq!(claim.job_id, job("a"));
    assert_eq!(claim.lane_id, l);
    assert_eq!(claim.lease_deadline_ms, clock.now_ms() + TTL_MS);

    for (i, name) in ["b", "c"].iter().enumerate() {
        let out = store.enqueue(&job(name), &l).await.unwrap();
        assert!(out.added);
        assert!(out.dispatch.is_none());
        assert!(!out.receipt.dispatched);
        assert_eq!(out.receipt.lane_queue_position, i + 1);
        assert_eq!(out.receipt.lane_queue_size, i + 2);
        assert!(out.receipt.lane_active);
    }

    assert_eq!(store.find_position(&l, &job("a")).await.unwrap(), 0);
    assert_eq!(store.find_position(&l, &job("b")).await.unwrap(), 1);
    assert_eq!(store.find_position(&l, &job("c")).await.unwrap(), 2);
    assert_eq!(store.find_position(&l, &job("nobody")).await.unwrap(), 0);
    assert_eq!(store.lane_load(&l).await.unwrap(), LaneLoad { queued: 2, active: 1, total: 3 });
    assert_eq!(waiting(&store, &l).await, vec![job("b"), job("c")]);
}

#[tokio::test]
async fn a_full_lane_refuses_with_lane_full_and_changes_nothing() {
    let (store, _) = store();
    let l = lane("student:s1:main");
    claim_head(&store, "a", &l).await;
    for name in ["b", "c", "d"] {
        store.enqueue(&job(name), &l).await.unwrap();
    }
    let before = store.snapshot(None, 10).await.unwrap();

    let err = store.enqueue(&job("e"), &l).await.unwrap_err();

    assert_eq!(err, QueueError::LaneFull { lane: l.clone(), max: 3 });
    assert!(err.to_string().contains("lane full"), "{err}");
    assert_eq!(store.snapshot(None, 10).await.unwrap(), before);
    assert_eq!(store.find_position(&l, &job("e")).await.unwrap(), 0);
    assert_eq!(store.lane_load(&l).await.unwrap().total, 4);
}

#[tokio::test]
async fn re_enqueueing_the_running_job_is_a_no_op_without_a_second_dispatch() {
    let (store, _) = store();
    let l = lane("student:s1:main");
    let claim = claim_head(&store, "a", &l).await;
    store.enqueue(&job("b"), &l).await.unwrap();

    let again = store.enqueue(&job("a"), &l).await.unwrap();

    assert!(!again.added);
    assert!(again.dispatch.is_none());
    assert!(!again.receipt.dispatched);
    assert_eq!(again.receipt.lane_queue_position, 0);
    assert_eq!(again.receipt.lane_queue_size, 2);
    assert!(again.receipt.lane_active);
    assert_eq!(waiting(&store, &l).await, vec![job("b")]);
    // The original claim is still the current one.
    assert!(store.renew(&claim).await.is_ok());
}

#[tokio::test]
async fn re_enqueueing_a_waiting_job_keeps_its_place() {
    let (store, _) = store();
    let l = lane("student:s1:main");
    claim_head(&store, "a", &l).await;
    store.enqueue(&job("b"), &l).await.unwrap();
    store.enqueue(&job("c"), &l).await.unwrap();

    let again = store.enqueue(&job("b"), &l).await.unwrap();

    assert!(!again.added);
    assert!(!again.receipt.dispatched);
    assert_eq!(again.receipt.lane_queue_position, 1);
    assert_eq!(again.receipt.lane_queue_size, 3);
    assert_eq!(waiting(&store, &l).await, vec![job("b"), job("c")]);
}

#[tokio::test]
async fn re_enqueueing_a_waiting_job_into_a_full_lane_is_still_a_no_op_not_an_error() {
    let (store, _) = store();
    let l = lane("l");
    claim_head(&store, "a", &l).await;
    for name in ["b", "c", "d"] {
        store.enqueue(&job(name), &l).await.unwrap();
    }
    let again = store.enqueue(&job("d"), &l).await.unwrap();
    assert!(!again.added);
    assert_eq!(again.receipt.lane_queue_position, 3);
}

#[tokio::test]
async fn an_expired_lease_is_reaped_to_the_same_head_and_the_old_claim_is_fenced() {
    let (store, clock) = store();
    let l = lane("student:s1:main");
    let old = claim_head(&store, "a", &l).await;
    store.enqueue(&job("b"), &l).await.unwrap();

    clock.advance(TTL_MS);
    let reaped = store.reap_expired().await.unwrap();

    assert_eq!(reaped.len(), 1);
    let new = &reaped[0];
    assert_eq!(new.job_id, job("a"));
    assert_eq!(new.lane_id, l);
    assert!(new.epoch > old.epoch);
    assert_eq!(new.lease_deadline_ms, clock.now_ms() + TTL_MS);
    assert!(store.reap_expired().await.unwrap().is_empty(), "the same expiry is reaped only once");

    let before = store.snapshot(None, 10).await.unwrap();
    let stale = QueueError::StaleLease { job: job("a"), epoch: old.epoch, current: new.epoch };
    assert_eq!(store.finish(&old).await.unwrap_err(), stale);
    assert_eq!(store.renew(&old).await.unwrap_err(), stale);
    assert_eq!(store.reclaim(&old).await.unwrap_err(), stale);
    assert_eq!(store.snapshot(None, 10).await.unwrap(), before, "a stale claim leaves the lane untouched");

    let next = store.finish(new).await.unwrap().unwrap();
    assert_eq!(next.job_id, job("b"));
}

#[tokio::test]
async fn renewing_a_lease_keeps_the_reaper_away() {
    let (store, clock) = store();
    let l = lane("l");
    let claim = claim_head(&store, "a", &l).await;

    clock.advance(TTL_MS - 1);
    let deadline = store.renew(&claim).await.unwrap();
    assert_eq!(deadline, clock.now_ms() + TTL_MS);
    clock.advance(TTL_MS - 1);

    assert!(store.reap_expired().await.unwrap().is_empty());
    clock.advance(1);
    assert_eq!(store.reap_expired().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_lease_past_its_deadline_but_not_yet_reaped_can_still_be_renewed() {
    let (store, clock) = store();
    let l = lane("l");
    let claim = claim_head(&store, "a", &l).await;
    clock.advance(TTL_MS * 5);

    let deadline = store.renew(&claim).await.unwrap();

    assert_eq!(deadline, clock.now_ms() + TTL_MS);
    assert!(store.reap_expired().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_newcomer_enqueued_after_lease_expiry_never_jumps_ahead() {
    let (store, clock) = store();
    let l = lane("student:s1:main");
    claim_head(&store, "a", &l).await;
    store.enqueue(&job("b"), &l).await.unwrap();
    clock.advance(TTL_MS * 2);

    let newcomer = store.enqueue(&job("c"), &l).await.unwrap();
    assert!(newcomer.dispatch.is_none(), "an expired lease is repaired by the reaper, not by enqueue");
    assert_eq!(newcomer.receipt.lane_queue_position, 2);

    let reaped = store.reap_expired().await.unwrap();
    assert_eq!(reaped.iter().map(|c| c.job_id.clone()).collect::<Vec<_>>(), vec![job("a")]);
    let second = store.finish(&reaped[0]).await.unwrap().unwrap();
    assert_eq!(second.job_id, job("b"));
    let third = store.finish(&second).await.unwrap().unwrap();
    assert_eq!(third.job_id, job("c"));
}

#[tokio::test]
async fn finish_hands_the_lane_to_the_next_job_in_order_with_rising_epochs() {
    let (store, clock) = store();
    let l = lane("l");
    let mut claim = claim_head(&store, "a", &l).await;
    for name in ["b", "c", "d"] {
        store.enqueue(&job(name), &l).await.unwrap();
    }

    let mut order = vec![claim.job_id.clone()];
    while let Some(next) = store.finish(&claim).await.unwrap() {
        assert!(next.epoch > claim.epoch);
        assert_eq!(next.lease_deadline_ms, clock.now_ms() + TTL_MS);
        assert_eq!(store.find_position(&l, &next.job_id).await.unwrap(), 0);
        order.push(next.job_id.clone());
        clock.advance(10);
        claim = next;
    }

    assert_eq!(order, vec![job("a"), job("b"), job("c"), job("d")]);
    assert_eq!(store.lane_load(&l).await.unwrap(), LaneLoad::default());
}

#[tokio::test]
async fn idle_lanes_leave_nothing_behind() {
    let (store, _) = store();
    let l1 = lane("l1");
    let l2 = lane("l2");
    let c1 = claim_head(&store, "a", &l1).await;
    let c2 = claim_head(&store, "b", &l2).await;
    store.enqueue(&job("c"), &l2).await.unwrap();

    assert!(store.finish(&c1).await.unwrap().is_none());
    let c3 = store.finish(&c2).await.unwrap().unwrap();
    assert!(store.finish(&c3).await.unwrap().is_none());

    assert!(store.snapshot(None, 10).await.unwrap().is_empty());
    assert_eq!(store.lane_load(&l1).await.unwrap(), LaneLoad { queued: 0, active: 0, total: 0 });
    // The next job into the now-idle lane is dispatched at once.
    assert!(store.enqueue(&job("d"), &l1).await.unwrap().dispatch.is_some());
}

#[tokio::test]
async fn removing_a_waiting_job_cancels_it_but_never_the_running_one() {
    let (store, _) = store();
    let l = lane("l");
    let claim = claim_head(&store, "a", &l).await;
    store.enqueue(&job("b"), &l).await.unwrap();
    store.enqueue(&job("c"), &l).await.unwrap();

    assert!(store.remove_waiting(&l, &job("b")).await.unwrap());
    assert!(!store.remove_waiting(&l, &job("b")).await.unwrap());
    assert!(!store.remove_waiting(&l, &job("a")).await.unwrap());
    assert!(!store.remove_waiting(&lane("other"), &job("c")).await.unwrap());

    assert_eq!(store.find_position(&l, &job("c")).await.unwrap(), 1);
    assert_eq!(store.finish(&claim).await.unwrap().unwrap().job_id, job("c"));
}

#[tokio::test]
async fn a_fingerprint_coalesces_only_within_the_debounce_window() {
    let (store, clock) = store();
    let l = lane("l");
    store.register_recent(&l, "hello", &job("a")).await.unwrap();

    clock.advance(499);
    assert_eq!(store.recent_job(&l, "hello").await.unwrap(), Some(job("a")));
    assert_eq!(store.recent_job(&l, "other").await.unwrap(), None);
    assert_eq!(store.recent_job(&lane("l2"), "hello").await.unwrap(), None, "windows are per lane");

    clock.advance(1);
    assert_eq!(store.recent_job(&l, "hello").await.unwrap(), None, "the window's end is exclusive");
    clock.advance(1_000);
    assert_eq!(store.recent_job(&l, "hello").await.unwrap(), None);

    store.register_recent(&l, "hello", &job("b")).await.unwrap();
    assert_eq!(store.recent_job(&l, "hello").await.unwrap(), Some(job("b")));
}

#[tokio::test]
async fn a_zero_debounce_never_coalesces() {
    let (store, _) = store_with(LaneStoreConfig { debounce_ms: 0, ..LaneStoreConfig::default() });
    let l = lane("l");
    store.register_recent(&l, "hello", &job("a")).await.unwrap();
    assert_eq!(store.recent_job(&l, "hello").await.unwrap(), None);
}

#[tokio::test]
async fn reclaim_keeps_the_head_under_a_new_epoch_and_fences_the_old_claim() {
    let (store, clock) = store();
    let l = lane("l");
    let old = claim_head(&store, "a", &l).await;
    store.enqueue(&job("b"), &l).await.unwrap();
    clock.advance(300);

    let new = store.reclaim(&old).await.unwrap();

    assert_eq!(new.job_id, job("a"));
    assert!(new.epoch > old.epoch);
    assert_eq!(new.lease_deadline_ms, clock.now_ms() + TTL_MS);
    assert!(matches!(
        store.finish(&old).await.unwrap_err(),
        QueueError::StaleLease { epoch, current, .. } if epoch == old.epoch && current == new.epoch
    ));
    assert_eq!(store.find_position(&l, &job("b")).await.unwrap(), 1);
    assert_eq!(store.finish(&new).await.unwrap().unwrap().job_id, job("b"));
}

#[tokio::test]
async fn a_claim_on_an_idle_lane_is_stale_with_current_epoch_zero() {
    let (store, _) = store();
    let l = lane("l");
    let claim = claim_head(&store, "a", &l).await;
    assert!(store.finish(&claim).await.unwrap().is_none());

    let err = store.finish(&claim).await.unwrap_err();

    assert_eq!(err, QueueError::StaleLease { job: job("a"), epoch: claim.epoch, current: 0 });
    assert!(store.snapshot(None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn reset_drops_every_lane_but_never_reuses_an_epoch() {
    let (store, _) = store();
    let l = lane("l");
    let before = claim_head(&store, "a", &l).await;
    store.enqueue(&job("b"), &l).await.unwrap();
    store.register_recent(&l, "hello", &job("a")).await.unwrap();

    store.reset().await.unwrap();

    assert!(store.snapshot(None, 10).await.unwrap().is_empty());
    assert_eq!(store.recent_job(&l, "hello").await.unwrap(), None);
    let after = claim_head(&store, "a", &l).await;
    assert!(after.epoch > before.epoch);
    assert!(matches!(store.renew(&before).await, Err(QueueError::StaleLease { .. })));
}

#[tokio::test]
async fn snapshot_pages_lanes_in_lane_id_order() {
    let (store, _) = store();
    for name in ["c", "a", "d", "b"] {
        claim_head(&store, name, &lane(name)).await;
    }
    store.enqueue(&job("x"), &lane("b")).await.unwrap();

    let first = store.snapshot(None, 2).await.unwrap();
    let ids: Vec<_> = first.iter().map(|s| s.lane_id.clone()).collect();
    assert_eq!(ids, vec![lane("a"), lane("b")]);
    assert_eq!(first[1].waiting, vec![job("x")]);
    assert_eq!(first[1].active.as_ref().map(|c| c.job_id.clone()), Some(job("b")));

    let rest = store.snapshot(Some(lane("b")), 10).await.unwrap();
    let ids: Vec<_> = rest.iter().map(|s| s.lane_id.clone()).collect();
    assert_eq!(ids, vec![lane("c"), lane("d")]);
    assert!(store.snapshot(Some(lane("d")), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn epochs_rise_strictly_across_lanes_and_kinds_of_claim() {
    let (store, clock) = store();
    let mut epochs = Vec::new();
    let a = claim_head(&store, "a", &lane("l1")).await;
    epochs.push(a.epoch);
    store.enqueue(&job("b"), &lane("l1")).await.unwrap();
    epochs.push(claim_head(&store, "c", &lane("l2")).await.epoch);
    let a = store.reclaim(&a).await.unwrap();
    epochs.push(a.epoch);
    clock.advance(TTL_MS);
    let reaped = store.reap_expired().await.unwrap();
    assert_eq!(reaped.len(), 2);
    let a = reaped.iter().find(|c| c.job_id == job("a")).unwrap().clone();
    epochs.extend(reaped.iter().map(|c| c.epoch));
    epochs.push(store.finish(&a).await.unwrap().unwrap().epoch);

    let distinct: HashSet<_> = epochs.iter().collect();
    assert_eq!(distinct.len(), epochs.len());
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_get_distinct_positions_and_lose_no_job() {
    const LANES: usize = 8;
    const PER_LANE: usize = 50;
    let (store, _) = store_with(LaneStoreConfig { max_queue: PER_LANE, ..LaneStoreConfig::default() });
    let store = Arc::new(store);

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
