//! The lane-store battery: the [`ChatLaneStore`] contract (lane order, caps, fencing, lease
//! expiry, debounce, cleanup, reset, epochs) checked through the trait only, so that every lane
//! store — memory and Redis — must agree. Every lane-store crate runs it unchanged:
//!
//! ```text
//! queue_core::lane_store_conformance_tests!(MyLaneStoreFactory::default());
//! ```
//!
//! Time comes from the [`ManualClock`] a scenario hands to the factory; nothing sleeps.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    ChatLaneStore, Clock, JobId, LaneClaim, LaneId, LaneLoad, LaneStoreConfig, ManualClock, QueueError,
};

/// Builds lane stores for one implementation.
#[async_trait]
pub trait LaneStoreFactory: Send + Sync {
    /// A new, EMPTY store (no lane, no fingerprint, as if for a tenant never seen before) with
    /// `config`, reading time from `clock`. Stores on a shared server use a fresh tenant per build.
    async fn build(&self, config: LaneStoreConfig, clock: ManualClock) -> Arc<dyn ChatLaneStore>;
}

/// Generates one `#[tokio::test]` per lane-store scenario for `$factory` (an expression building
/// a [`LaneStoreFactory`]).
#[macro_export]
macro_rules! lane_store_conformance_tests {
    ($factory:expr) => {
        $crate::lane_store_conformance_tests!(@each $factory;
            jobs_wait_in_fifo_order_with_one_based_positions,
            a_full_lane_refuses_with_lane_full_and_changes_nothing,
            re_enqueueing_the_running_job_is_a_no_op_without_a_second_dispatch,
            re_enqueueing_a_waiting_job_keeps_its_place,
            re_enqueueing_a_waiting_job_into_a_full_lane_is_still_a_no_op_not_an_error,
            an_expired_lease_is_reaped_to_the_same_head_and_the_old_claim_is_fenced,
            renewing_a_lease_keeps_the_reaper_away,
            renewing_many_claims_at_once_renews_each_and_reports_stale_ones,
            a_lease_past_its_deadline_but_not_yet_reaped_can_still_be_renewed,
            a_newcomer_enqueued_after_lease_expiry_never_jumps_ahead,
            a_zero_claim_ttl_still_reaps_each_expiry_only_once,
            reaping_many_expired_lanes_reclaims_each_exactly_once,
            finish_hands_the_lane_to_the_next_job_in_order_with_rising_epochs,
            idle_lanes_leave_nothing_behind,
            every_way_a_lane_drains_leaves_nothing_behind,
            removing_a_waiting_job_cancels_it_but_never_the_running_one,
            a_fingerprint_coalesces_only_within_the_debounce_window,
            a_zero_debounce_never_coalesces,
            fingerprints_are_free_text_kept_apart_per_lane,
            reclaim_keeps_the_head_under_a_new_epoch_and_fences_the_old_claim,
            a_claim_on_an_idle_lane_is_stale_with_current_epoch_zero,
            reset_drops_every_lane_but_never_reuses_an_epoch,
            reset_drops_hundreds_of_lanes_and_fingerprints_and_leaves_no_lease_to_reap,
            epochs_keep_rising_across_resets,
            snapshot_pages_lanes_in_lane_id_order,
            snapshot_shows_each_lanes_current_claim_and_waiting_jobs,
            epochs_rise_strictly_across_lanes_and_kinds_of_claim,
            concurrent_enqueues_dispatch_once_per_lane_and_lose_no_job,
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let factory = $factory;
                $crate::conformance::lanes::$name(&factory).await;
            }
        )*
    };
}

/// The lease length every scenario uses unless it says otherwise.
const TTL_MS: u64 = 1_000;

fn lane(id: &str) -> LaneId {
    LaneId::new(id).expect("valid lane id")
}

fn job(id: &str) -> JobId {
    JobId::new(id).expect("valid job id")
}

async fn store_with(
    factory: &dyn LaneStoreFactory,
    config: LaneStoreConfig,
) -> (Arc<dyn ChatLaneStore>, ManualClock) {
    let clock = ManualClock::new(1_000_000);
    (factory.build(config, clock.clone()).await, clock)
}

/// A store with a 1 s lease, a 500 ms debounce window and at most 3 waiting jobs per lane.
async fn store(factory: &dyn LaneStoreFactory) -> (Arc<dyn ChatLaneStore>, ManualClock) {
    store_with(factory, LaneStoreConfig { debounce_ms: 500, claim_ttl_ms: TTL_MS, max_queue: 3 }).await
}

/// Enqueues into an idle lane and returns the claim it dispatched.
async fn claim_head(store: &dyn ChatLaneStore, j: &str, l: &LaneId) -> LaneClaim {
    store.enqueue(&job(j), l).await.expect("enqueue").dispatch.expect("an idle lane dispatches at once")
}

async fn waiting(store: &dyn ChatLaneStore, l: &LaneId) -> Vec<JobId> {
    let snap = store.snapshot(None, usize::MAX).await.expect("snapshot");
    snap.into_iter().find(|s| &s.lane_id == l).map(|s| s.waiting).unwrap_or_default()
}

/// Asserts that the store holds no lane at all and nothing for the reaper, even much later.
async fn assert_empty(store: &dyn ChatLaneStore, clock: &ManualClock, lanes: &[LaneId]) {
    assert!(store.snapshot(None, usize::MAX).await.expect("snapshot").is_empty(), "a lane is left behind");
    for l in lanes {
        assert_eq!(store.lane_load(l).await.expect("load"), LaneLoad::default(), "lane {l} is not idle");
    }
    clock.advance(TTL_MS * 10);
    assert!(store.reap_expired().await.expect("reap").is_empty(), "a lease is left behind");
}

/// Jobs wait in arrival order; positions are 1-based among waiting jobs, 0 for the running one.
pub async fn jobs_wait_in_fifo_order_with_one_based_positions(factory: &dyn LaneStoreFactory) {
    let (store, clock) = store(factory).await;
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
    assert_eq!(store.find_position(&lane("elsewhere"), &job("b")).await.unwrap(), 0);
    assert_eq!(store.lane_load(&l).await.unwrap(), LaneLoad { queued: 2, active: 1, total: 3 });
    assert_eq!(store.lane_load(&lane("elsewhere")).await.unwrap(), LaneLoad::default());
    assert_eq!(waiting(&*store, &l).await, vec![job("b"), job("c")]);
}

/// G6: past `max_queue` waiting jobs an enqueue fails with `LaneFull` and the lane is unchanged.
pub async fn a_full_lane_refuses_with_lane_full_and_changes_nothing(factory: &dyn LaneStoreFactory) {
    let (store, _) = store(factory).await;
    let l = lane("student:s1:main");
    claim_head(&*store, "a", &l).await;
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

/// G5: enqueueing the running job again changes nothing and dispatches nothing.
pub async fn re_enqueueing_the_running_job_is_a_no_op_without_a_second_dispatch(
    factory: &dyn LaneStoreFactory,
) {
    let (store, _) = store(factory).await;
    let l = lane("student:s1:main");
    let claim = claim_head(&*store, "a", &l).await;
    store.enqueue(&job("b"), &l).await.unwrap();

    let again = store.enqueue(&job("a"), &l).await.unwrap();

    assert!(!again.added);
    assert!(again.dispatch.is_none());
    assert!(!again.receipt.dispatched);
    assert_eq!(again.receipt.lane_queue_position, 0);
    assert_eq!(again.receipt.lane_queue_size, 2);
    assert!(again.receipt.lane_active);
    assert_eq!(waiting(&*store, &l).await, vec![job("b")]);
    // The original claim is still the current one.
    assert!(store.renew(&claim).await.is_ok());
}

/// G5: enqueueing a waiting job again leaves it where it is.
pub async fn re_enqueueing_a_waiting_job_keeps_its_place(factory: &dyn LaneStoreFactory) {
    let (store, _) = store(factory).await;
    let l = lane("student:s1:main");
    claim_head(&*store, "a", &l).await;
    store.enqueue(&job("b"), &l).await.unwrap();
    store.enqueue(&job("c"), &l).await.unwrap();

    let again = store.enqueue(&job("b"), &l).await.unwrap();

    assert!(!again.added);
    assert!(!again.receipt.dispatched);
    assert_eq!(again.receipt.lane_queue_position, 1);
    assert_eq!(again.receipt.lane_queue_size, 3);
    assert_eq!(waiting(&*store, &l).await, vec![job("b"), job("c")]);
}

/// A job already waiting in a full lane is not refused again: it is simply there.
pub async fn re_enqueueing_a_waiting_job_into_a_full_lane_is_still_a_no_op_not_an_error(
    factory: &dyn LaneStoreFactory,
) {
    let (store, _) = store(factory).await;
    let l = lane("l");
    claim_head(&*store, "a", &l).await;
    for name in ["b", "c", "d"] {
        store.enqueue(&job(name), &l).await.unwrap();
    }
    let again = store.enqueue(&job("d"), &l).await.unwrap();
    assert!(!again.added);
    assert_eq!(again.receipt.lane_queue_position, 3);
}

/// G3 + G4: the reaper re-claims the same head under a new epoch, once; the old claim is fenced.
pub async fn an_expired_lease_is_reaped_to_the_same_head_and_the_old_claim_is_fenced(
    factory: &dyn LaneStoreFactory,
) {
    let (store, clock) = store(factory).await;
    let l = lane("student:s1:main");
    let old = claim_head(&*store, "a", &l).await;
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

/// G2: a renewed lease is not reaped until its new deadline.
pub async fn renewing_a_lease_keeps_the_reaper_away(factory: &dyn LaneStoreFactory) {
    let (store, clock) = store(factory).await;
    let l = lane("l");
    let claim = claim_head(&*store, "a", &l).await;

    clock.advance(TTL_MS - 1);
    let deadline = store.renew(&claim).await.unwrap();
    assert_eq!(deadline, clock.now_ms() + TTL_MS);
    clock.advance(TTL_MS - 1);

    assert!(store.reap_expired().await.unwrap().is_empty());
    clock.advance(1);
    assert_eq!(store.reap_expired().await.unwrap().len(), 1);
}

/// The heartbeat renews every held claim in one call; a claim the reaper took is reported
/// stale without stopping the others.
pub async fn renewing_many_claims_at_once_renews_each_and_reports_stale_ones(factory: &dyn LaneStoreFactory) {
    let (store, clock) = store(factory).await;
    let a = claim_head(&*store, "a", &lane("la")).await;
    let b = claim_head(&*store, "b", &lane("lb")).await;
    let c = claim_head(&*store, "c", &lane("lc")).await;
    clock.advance(TTL_MS);
    // Only b's lease is reaped (a and c are renewed first, one by one).
    store.renew(&a).await.unwrap();
    store.renew(&c).await.unwrap();
    assert_eq!(store.reap_expired().await.unwrap().len(), 1);
    clock.advance(1);

    let results = store.renew_many(&[a.clone(), b.clone(), c.clone()]).await.unwrap();

    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().copied().unwrap(), clock.now_ms() + TTL_MS);
    assert!(matches!(results[1], Err(QueueError::StaleLease { .. })), "{:?}", results[1]);
    assert_eq!(results[2].as_ref().copied().unwrap(), clock.now_ms() + TTL_MS);
    assert!(store.renew_many(&[]).await.unwrap().is_empty());
}

/// A lease past its deadline that the reaper has not taken is still the lane's current claim.
pub async fn a_lease_past_its_deadline_but_not_yet_reaped_can_still_be_renewed(
    factory: &dyn LaneStoreFactory,
) {
    let (store, clock) = store(factory).await;
    let l = lane("l");
    let claim = claim_head(&*store, "a", &l).await;
    clock.advance(TTL_MS * 5);

    let deadline = store.renew(&claim).await.unwrap();

    assert_eq!(deadline, clock.now_ms() + TTL_MS);
    assert!(store.reap_expired().await.unwrap().is_empty());
}

/// G2 + G4: an expired lease is repaired by the reaper, not by the next enqueue, and the newcomer
/// waits behind the jobs already there.
pub async fn a_newcomer_enqueued_after_lease_expiry_never_jumps_ahead(factory: &dyn LaneStoreFactory) {
    let (store, clock) = store(factory).await;
    let l = lane("student:s1:main");
    claim_head(&*store, "a", &l).await;
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

/// A zero lease length still gives a deadline after the claim's instant, so one expiry is reaped
/// once.
pub async fn a_zero_claim_ttl_still_reaps_each_expiry_only_once(factory: &dyn LaneStoreFactory) {
    let config = LaneStoreConfig { claim_ttl_ms: 0, ..LaneStoreConfig::default() };
    let (store, clock) = store_with(factory, config).await;
    let first = claim_head(&*store, "a", &lane("l")).await;
    assert!(first.lease_deadline_ms > clock.now_ms());
    clock.advance(1);
    assert_eq!(store.reap_expired().await.unwrap().len(), 1);
    assert!(store.reap_expired().await.unwrap().is_empty());
}

/// G4 at scale: every one of many expired lanes is re-claimed exactly once in one call.
pub async fn reaping_many_expired_lanes_reclaims_each_exactly_once(factory: &dyn LaneStoreFactory) {
    const LANES: usize = 250;
    let (store, clock) = store(factory).await;
    let mut first_epochs = Vec::new();
    for i in 0..LANES {
        first_epochs.push(claim_head(&*store, &format!("j{i}"), &lane(&format!("l{i:03}"))).await.epoch);
    }
    clock.advance(TTL_MS);

    let reaped = store.reap_expired().await.unwrap();

    assert_eq!(reaped.len(), LANES);
    let lanes: HashSet<_> = reaped.iter().map(|c| c.lane_id.clone()).collect();
    assert_eq!(lanes.len(), LANES, "a lane was reaped twice");
    let highest_first = first_epochs.iter().max().copied().unwrap_or_default();
    for claim in &reaped {
        let i: usize = claim.lane_id.as_str()[1..].parse().unwrap();
        assert_eq!(claim.job_id, job(&format!("j{i}")), "the same head is re-claimed");
        assert!(claim.epoch > highest_first);
        assert_eq!(claim.lease_deadline_ms, clock.now_ms() + TTL_MS);
    }
    let epochs: HashSet<_> = reaped.iter().map(|c| c.epoch).collect();
    assert_eq!(epochs.len(), LANES, "two claims share an epoch");
    assert!(store.reap_expired().await.unwrap().is_empty());
}

/// G2: `finish` hands the lane over in order, each claim with a higher epoch and a fresh lease.
pub async fn finish_hands_the_lane_to_the_next_job_in_order_with_rising_epochs(
    factory: &dyn LaneStoreFactory,
) {
    let (store, clock) = store(factory).await;
    let l = lane("l");
    let mut claim = claim_head(&*store, "a", &l).await;
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

/// G6: a lane whose last job finished is gone; the next job into it runs at once.
pub async fn idle_lanes_leave_nothing_behind(factory: &dyn LaneStoreFactory) {
    let (store, _) = store(factory).await;
    let l1 = lane("l1");
    let l2 = lane("l2");
    let c1 = claim_head(&*store, "a", &l1).await;
    let c2 = claim_head(&*store, "b", &l2).await;
    store.enqueue(&job("c"), &l2).await.unwrap();

    assert!(store.finish(&c1).await.unwrap().is_none());
    let c3 = store.finish(&c2).await.unwrap().unwrap();
    assert!(store.finish(&c3).await.unwrap().is_none());

    assert!(store.snapshot(None, 10).await.unwrap().is_empty());
    assert_eq!(store.lane_load(&l1).await.unwrap(), LaneLoad { queued: 0, active: 0, total: 0 });
    // The next job into the now-idle lane is dispatched at once.
    assert!(store.enqueue(&job("d"), &l1).await.unwrap().dispatch.is_some());
}

/// G6: whatever path empties a lane — finish after a reap, after a reclaim, after a cancel — it
/// leaves no lane, no load and no lease behind.
pub async fn every_way_a_lane_drains_leaves_nothing_behind(factory: &dyn LaneStoreFactory) {
    let (store, clock) = store(factory).await;
    let reaped_lane = lane("drain:reaped");
    let reclaimed_lane = lane("drain:reclaimed");
    let cancelled_lane = lane("drain:cancelled");

    claim_head(&*store, "r1", &reaped_lane).await;
    let reclaimed = claim_head(&*store, "c1", &reclaimed_lane).await;
    let cancelled = claim_head(&*store, "x1", &cancelled_lane).await;
    store.enqueue(&job("x2"), &cancelled_lane).await.unwrap();
    store.enqueue(&job("x3"), &cancelled_lane).await.unwrap();

    let reclaimed = store.reclaim(&reclaimed).await.unwrap();
    assert!(store.remove_waiting(&cancelled_lane, &job("x2")).await.unwrap());
    assert!(store.remove_waiting(&cancelled_lane, &job("x3")).await.unwrap());
    assert_eq!(store.lane_load(&cancelled_lane).await.unwrap(), LaneLoad { queued: 0, active: 1, total: 1 });
    clock.advance(TTL_MS);
    let reaped = store.reap_expired().await.unwrap();
    assert_eq!(reaped.len(), 3, "every lease expired");
    for claim in &reaped {
        assert!(store.finish(claim).await.unwrap().is_none());
    }
    // The claims taken before the reap are stale and cannot resurrect their lanes.
    for old in [&reclaimed, &cancelled] {
        assert!(matches!(store.finish(old).await, Err(QueueError::StaleLease { current: 0, .. })));
    }

    assert_empty(&*store, &clock, &[reaped_lane, reclaimed_lane, cancelled_lane]).await;
}

/// Cancelling removes a waiting job only; the running one and other lanes are untouched.
pub async fn removing_a_waiting_job_cancels_it_but_never_the_running_one(factory: &dyn LaneStoreFactory) {
    let (store, _) = store(factory).await;
    let l = lane("l");
    let claim = claim_head(&*store, "a", &l).await;
    store.enqueue(&job("b"), &l).await.unwrap();
    store.enqueue(&job("c"), &l).await.unwrap();

    assert!(store.remove_waiting(&l, &job("b")).await.unwrap());
    assert!(!store.remove_waiting(&l, &job("b")).await.unwrap());
    assert!(!store.remove_waiting(&l, &job("a")).await.unwrap());
    assert!(!store.remove_waiting(&lane("other"), &job("c")).await.unwrap());

    assert_eq!(store.find_position(&l, &job("c")).await.unwrap(), 1);
    assert_eq!(store.finish(&claim).await.unwrap().unwrap().job_id, job("c"));
}

/// G5: a fingerprint maps to its job for `debounce_ms` (end exclusive), per lane; a newer
/// registration replaces it.
pub async fn a_fingerprint_coalesces_only_within_the_debounce_window(factory: &dyn LaneStoreFactory) {
    let (store, clock) = store(factory).await;
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

/// A zero debounce window never coalesces.
pub async fn a_zero_debounce_never_coalesces(factory: &dyn LaneStoreFactory) {
    let (store, _) =
        store_with(factory, LaneStoreConfig { debounce_ms: 0, ..LaneStoreConfig::default() }).await;
    let l = lane("l");
    store.register_recent(&l, "hello", &job("a")).await.unwrap();
    assert_eq!(store.recent_job(&l, "hello").await.unwrap(), None);
}

/// Fingerprints are free text (spaces, braces, globs, separators, non-ASCII): each is its own
/// entry, and the same text in another lane is another entry.
pub async fn fingerprints_are_free_text_kept_apart_per_lane(factory: &dyn LaneStoreFactory) {
    let (store, _) = store(factory).await;
    let l1 = lane("student:s1:main");
    let l2 = lane("student:s2:main");
    let fingerprints = [
        "what is 2 + 2?",
        "{l1}:*",
        "job|123",
        "a|b|c",
        "",
        "naïve café ∑ 👋",
        "line one\nline two\ttab",
        "lw:{other}:lane:x:active",
    ];
    for (i, fp) in fingerprints.iter().enumerate() {
        store.register_recent(&l1, fp, &job(&format!("one-{i}"))).await.unwrap();
        store.register_recent(&l2, fp, &job(&format!("two-{i}"))).await.unwrap();
    }
    for (i, fp) in fingerprints.iter().enumerate() {
        assert_eq!(store.recent_job(&l1, fp).await.unwrap(), Some(job(&format!("one-{i}"))), "{fp:?}");
        assert_eq!(store.recent_job(&l2, fp).await.unwrap(), Some(job(&format!("two-{i}"))), "{fp:?}");
    }
    assert_eq!(store.recent_job(&l1, "what is 2 + 2").await.unwrap(), None, "no prefix match");
    assert_eq!(store.recent_job(&l1, "*").await.unwrap(), None, "no glob match");
    assert!(store.snapshot(None, 10).await.unwrap().is_empty(), "a fingerprint is not a job");
}

/// G2 + G3: a reclaim (retry) keeps the head under a new epoch and fences the old claim.
pub async fn reclaim_keeps_the_head_under_a_new_epoch_and_fences_the_old_claim(
    factory: &dyn LaneStoreFactory,
) {
    let (store, clock) = store(factory).await;
    let l = lane("l");
    let old = claim_head(&*store, "a", &l).await;
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

/// G3: a claim on a lane that has gone idle is stale, with current epoch 0, and changes nothing.
pub async fn a_claim_on_an_idle_lane_is_stale_with_current_epoch_zero(factory: &dyn LaneStoreFactory) {
    let (store, _) = store(factory).await;
    let l = lane("l");
    let claim = claim_head(&*store, "a", &l).await;
    assert!(store.finish(&claim).await.unwrap().is_none());

    let err = store.finish(&claim).await.unwrap_err();

    assert_eq!(err, QueueError::StaleLease { job: job("a"), epoch: claim.epoch, current: 0 });
    assert_eq!(store.renew(&claim).await.unwrap_err(), err);
    assert_eq!(store.reclaim(&claim).await.unwrap_err(), err);
    assert!(store.snapshot(None, 10).await.unwrap().is_empty());
}

/// `reset` drops lanes and fingerprints; an epoch handed out before it is never current again.
pub async fn reset_drops_every_lane_but_never_reuses_an_epoch(factory: &dyn LaneStoreFactory) {
    let (store, _) = store(factory).await;
    let l = lane("l");
    let before = claim_head(&*store, "a", &l).await;
    store.enqueue(&job("b"), &l).await.unwrap();
    store.register_recent(&l, "hello", &job("a")).await.unwrap();

    store.reset().await.unwrap();

    assert!(store.snapshot(None, 10).await.unwrap().is_empty());
    assert_eq!(store.recent_job(&l, "hello").await.unwrap(), None);
    let after = claim_head(&*store, "a", &l).await;
    assert!(after.epoch > before.epoch);
    assert!(matches!(store.renew(&before).await, Err(QueueError::StaleLease { .. })));
}

/// `reset` of many lanes (running, waiting, holding only fingerprints) drops them all; nothing is
/// left for the reaper; resetting an empty store is fine.
pub async fn reset_drops_hundreds_of_lanes_and_fingerprints_and_leaves_no_lease_to_reap(
    factory: &dyn LaneStoreFactory,
) {
    const LANES: usize = 230;
    let (store, clock) = store(factory).await;
    let mut lanes = Vec::new();
    for i in 0..LANES {
        let l = lane(&format!("busy:{i:03}"));
        claim_head(&*store, &format!("a{i}"), &l).await;
        if i % 2 == 0 {
            store.enqueue(&job(&format!("b{i}")), &l).await.unwrap();
        }
        store.register_recent(&l, "hello", &job(&format!("a{i}"))).await.unwrap();
        lanes.push(l);
    }
    // Lanes that hold a fingerprint but no job.
    let quiet: Vec<LaneId> = (0..LANES).map(|i| lane(&format!("quiet:{i:03}"))).collect();
    for (i, l) in quiet.iter().enumerate() {
        store.register_recent(l, "hi", &job(&format!("q{i}"))).await.unwrap();
    }

    store.reset().await.unwrap();

    for l in lanes.iter().step_by(37) {
        assert_eq!(store.recent_job(l, "hello").await.unwrap(), None, "lane {l} kept its fingerprint");
    }
    for l in quiet.iter().step_by(37) {
        assert_eq!(store.recent_job(l, "hi").await.unwrap(), None, "lane {l} kept its fingerprint");
    }
    store.reset().await.unwrap();
    lanes.extend(quiet);
    assert_empty(&*store, &clock, &lanes).await;
}

/// Epochs are store-wide and never reused, whatever resets happen in between.
pub async fn epochs_keep_rising_across_resets(factory: &dyn LaneStoreFactory) {
    let (store, clock) = store(factory).await;
    let l = lane("l");
    let mut epochs = Vec::new();
    for round in 0..3 {
        let first = claim_head(&*store, &format!("a{round}"), &l).await;
        store.enqueue(&job(&format!("b{round}")), &l).await.unwrap();
        let reclaimed = store.reclaim(&first).await.unwrap();
        clock.advance(TTL_MS);
        let reaped = store.reap_expired().await.unwrap().remove(0);
        let next = store.finish(&reaped).await.unwrap().unwrap();
        epochs.extend([first.epoch, reclaimed.epoch, reaped.epoch, next.epoch]);
        store.reset().await.unwrap();
        assert!(matches!(store.finish(&next).await, Err(QueueError::StaleLease { current: 0, .. })));
    }
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
}

/// Operators page lanes by lane id.
pub async fn snapshot_pages_lanes_in_lane_id_order(factory: &dyn LaneStoreFactory) {
    let (store, _) = store(factory).await;
    for name in ["c", "a", "d", "b"] {
        claim_head(&*store, name, &lane(name)).await;
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
    assert!(store.snapshot(None, 0).await.unwrap().is_empty());
    let between = store.snapshot(Some(lane("a0")), 1).await.unwrap();
    assert_eq!(between.iter().map(|s| s.lane_id.clone()).collect::<Vec<_>>(), vec![lane("b")]);
}

/// A snapshot shows the exact current claim (epoch and renewed deadline) and the waiting jobs.
pub async fn snapshot_shows_each_lanes_current_claim_and_waiting_jobs(factory: &dyn LaneStoreFactory) {
    let (store, clock) = store(factory).await;
    let l = lane("teacher:t1:main");
    let claim = claim_head(&*store, "a", &l).await;
    store.enqueue(&job("b"), &l).await.unwrap();
    store.enqueue(&job("c"), &l).await.unwrap();
    clock.advance(250);
    let deadline = store.renew(&claim).await.unwrap();

    let snap = store.snapshot(None, 10).await.unwrap();

    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].lane_id, l);
    assert_eq!(snap[0].active, Some(LaneClaim { lease_deadline_ms: deadline, ..claim }));
    assert_eq!(snap[0].waiting, vec![job("b"), job("c")]);
}

/// G3: every kind of claim (enqueue, reclaim, reap, finish) draws from one rising counter.
pub async fn epochs_rise_strictly_across_lanes_and_kinds_of_claim(factory: &dyn LaneStoreFactory) {
    let (store, clock) = store(factory).await;
    let mut epochs = Vec::new();
    let a = claim_head(&*store, "a", &lane("l1")).await;
    epochs.push(a.epoch);
    store.enqueue(&job("b"), &lane("l1")).await.unwrap();
    epochs.push(claim_head(&*store, "c", &lane("l2")).await.epoch);
    let a = store.reclaim(&a).await.unwrap();
    epochs.push(a.epoch);
    clock.advance(TTL_MS);
    let mut reaped = store.reap_expired().await.unwrap();
    assert_eq!(reaped.len(), 2);
    reaped.sort_by_key(|c| c.epoch);
    let a = reaped.iter().find(|c| c.job_id == job("a")).unwrap().clone();
    epochs.extend(reaped.iter().map(|c| c.epoch));
    epochs.push(store.finish(&a).await.unwrap().unwrap().epoch);

    let distinct: HashSet<_> = epochs.iter().collect();
    assert_eq!(distinct.len(), epochs.len());
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
}

/// G2 under contention: concurrent enqueues into a few lanes dispatch exactly one job per lane,
/// hand out distinct positions, and lose no job.
pub async fn concurrent_enqueues_dispatch_once_per_lane_and_lose_no_job(factory: &dyn LaneStoreFactory) {
    const LANES: usize = 4;
    const PER_LANE: usize = 12;
    let config = LaneStoreConfig { max_queue: PER_LANE, ..LaneStoreConfig::default() };
    let (store, _) = store_with(factory, config).await;

    let tasks: Vec<_> = (0..LANES * PER_LANE)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let l = lane(&format!("lane-{}", i % LANES));
                let out = store.enqueue(&job(&format!("job-{i}")), &l).await.unwrap();
                (i % LANES, out)
            })
        })
        .collect();

    let mut positions: Vec<Vec<usize>> = vec![Vec::new(); LANES];
    let mut dispatched = 0;
    for task in tasks {
        let (index, out) = task.await.unwrap();
        assert!(out.added);
        assert_eq!(out.dispatch.is_some(), out.receipt.lane_queue_position == 0);
        dispatched += usize::from(out.receipt.dispatched);
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
        seen.insert(lane_snapshot.active.as_ref().expect("a running job").job_id.clone());
        assert_eq!(lane_snapshot.waiting.len(), PER_LANE - 1, "lane {}", lane_snapshot.lane_id);
        seen.extend(lane_snapshot.waiting.iter().cloned());
    }
    assert_eq!(seen.len(), LANES * PER_LANE, "every job is in its lane exactly once");
}
