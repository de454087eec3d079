//! `MemoryLaneStore`: one tenant's chat lanes held in process memory, for the inline backend and
//! for tests.
//!
//! All state sits behind one `std::sync::Mutex`, taken only inside synchronous helpers so it is
//! never held across an `.await`: every trait method is then atomic with respect to the others,
//! as the [`ChatLaneStore`] contract requires.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use queue_core::{
    ChatEnqueueReceipt, ChatLaneStore, JobId, LaneClaim, LaneEnqueue, LaneId, LaneLoad, LaneSnapshot,
    LaneStoreConfig, QueueError, QueueResult, SharedClock,
};

/// The recent-fingerprint map is swept of expired entries once it reaches this many entries (or
/// twice its size after the last sweep, whichever is larger), so a busy tenant's memory stays
/// bounded by the live window while a sweep still costs O(1) amortised per registration.
const RECENT_SWEEP_FLOOR: usize = 1024;

/// One conversation: the running job's claim and the jobs waiting behind it, head first.
#[derive(Debug, Default)]
struct Lane {
    active: Option<Active>,
    waiting: VecDeque<JobId>,
}

/// A lane's current claim, without the lane id (the key it is stored under).
#[derive(Debug, Clone)]
struct Active {
    job_id: JobId,
    epoch: u64,
    lease_deadline_ms: u64,
}

impl Active {
    fn claim(&self, lane: &LaneId) -> LaneClaim {
        LaneClaim {
            job_id: self.job_id.clone(),
            lane_id: lane.clone(),
            epoch: self.epoch,
            lease_deadline_ms: self.lease_deadline_ms,
        }
    }
}

impl Lane {
    fn is_idle(&self) -> bool {
        self.active.is_none() && self.waiting.is_empty()
    }

    fn is_running(&self, job: &JobId) -> bool {
        self.active.as_ref().is_some_and(|claim| &claim.job_id == job)
    }

    /// 1-based place among waiting jobs.
    fn waiting_position(&self, job: &JobId) -> Option<usize> {
        self.waiting.iter().position(|waiting| waiting == job).map(|index| index + 1)
    }

    fn load(&self) -> LaneLoad {
        let queued = self.waiting.len();
        let active = usize::from(self.active.is_some());
        LaneLoad { queued, active, total: queued + active }
    }

    fn receipt(&self, job: &JobId, lane: &LaneId, position: usize, dispatched: bool) -> ChatEnqueueReceipt {
        ChatEnqueueReceipt {
            job_id: job.clone(),
            lane_id: lane.clone(),
            lane_queue_position: position,
            lane_queue_size: self.load().total,
            lane_active: self.active.is_some(),
            dispatched,
        }
    }

    fn holds(&self, claim: &LaneClaim) -> bool {
        self.active
            .as_ref()
            .is_some_and(|active| active.job_id == claim.job_id && active.epoch == claim.epoch)
    }
}

#[derive(Debug)]
struct RecentEntry {
    job: JobId,
    registered_at_ms: u64,
}

#[derive(Debug)]
struct State {
    /// Hashed: every dispatch renews and finishes its claim here, and a lookup by hash does not
    /// walk a tree of lane ids comparing each one's text on the way.
    lanes: HashMap<LaneId, Lane>,
    /// The ids of `lanes`, ordered so that `snapshot` can page by lane id without sorting. It
    /// changes only when a lane appears or empties, not at each of its jobs.
    order: BTreeSet<LaneId>,
    recent: HashMap<(LaneId, String), RecentEntry>,
    sweep_recent_at: usize,
    /// Store-wide and never reset, so an epoch handed out before a `reset` can never be current
    /// again afterwards.
    last_epoch: u64,
}

impl State {
    fn new() -> Self {
        Self {
            lanes: HashMap::new(),
            order: BTreeSet::new(),
            recent: HashMap::new(),
            sweep_recent_at: RECENT_SWEEP_FLOOR,
            last_epoch: 0,
        }
    }
}

/// Hands out the next epoch. Takes the counter alone so that a lane can stay borrowed meanwhile.
fn claim(last_epoch: &mut u64, job: JobId, lease_deadline_ms: u64) -> Active {
    *last_epoch += 1;
    Active { job_id: job, epoch: *last_epoch, lease_deadline_ms }
}

/// The lane of `claim` if `claim` is still its current claim; otherwise the fencing error.
fn fenced<'a>(lanes: &'a mut HashMap<LaneId, Lane>, claim: &LaneClaim) -> QueueResult<&'a mut Lane> {
    match lanes.get_mut(&claim.lane_id) {
        Some(lane) if lane.holds(claim) => Ok(lane),
        other => Err(stale(claim, other.map(|lane| &*lane))),
    }
}

/// The fencing error for `claim`, whose lane (if it still has one) is `lane`.
fn stale(claim: &LaneClaim, lane: Option<&Lane>) -> QueueError {
    QueueError::StaleLease {
        job: claim.job_id.clone(),
        epoch: claim.epoch,
        current: lane.and_then(|lane| lane.active.as_ref()).map_or(0, |active| active.epoch),
    }
}

fn is_within_window(entry: &RecentEntry, now_ms: u64, debounce_ms: u64) -> bool {
    now_ms.saturating_sub(entry.registered_at_ms) < debounce_ms
}

/// One tenant's chat lanes in process memory. See the crate docs for the semantics.
#[derive(Debug)]
pub struct MemoryLaneStore {
    config: LaneStoreConfig,
    clock: SharedClock,
    state: Mutex<State>,
}

impl MemoryLaneStore {
    /// An empty store that reads time from `clock`.
    #[must_use]
    pub fn new(config: LaneStoreConfig, clock: SharedClock) -> Self {
        Self { config, clock, state: Mutex::new(State::new()) }
    }

    /// The configuration the store was built with.
    #[must_use]
    pub const fn config(&self) -> &LaneStoreConfig {
        &self.config
    }

    /// Every operation finishes its writes without a panic point in between, so a panic elsewhere
    /// while the lock was held cannot have left half-applied state: carrying on is safe and beats
    /// failing every later call of the tenant.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The deadline of a lease taken now. A zero TTL still yields a deadline in the future, so a
    /// claim just made by the reaper is not expired again at the same instant.
    fn lease_deadline(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.config.claim_ttl_ms.max(1))
    }

    fn enqueue_now(&self, job: &JobId, lane_id: &LaneId, capped: bool) -> QueueResult<LaneEnqueue> {
        let deadline = self.lease_deadline(self.clock.now_ms());
        let mut state = self.state();
        let State { lanes, order, last_epoch, .. } = &mut *state;
        // One lookup: the clone `entry` takes is a count on the id's shared text, cheaper than
        // hashing the id a second time.
        let lane = match lanes.entry(lane_id.clone()) {
            Entry::Occupied(lane) => lane.into_mut(),
            Entry::Vacant(slot) => {
                order.insert(lane_id.clone());
                slot.insert(Lane::default())
            }
        };

        // A job already in the lane stays where it is: re-dispatching a running job would run it
        // twice, and re-appending a waiting one would let it lose or jump its place.
        let existing = if lane.is_running(job) { Some(0) } else { lane.waiting_position(job) };
        if let Some(position) = existing {
            let receipt = lane.receipt(job, lane_id, position, false);
            return Ok(LaneEnqueue { receipt, dispatch: None, added: false });
        }

        if lane.active.is_none() {
            // Invariant: a lane with waiting jobs always has an active one, so this lane is idle.
            let active = claim(last_epoch, job.clone(), deadline);
            let dispatch = active.claim(lane_id);
            lane.active = Some(active);
            let receipt = lane.receipt(job, lane_id, 0, true);
            return Ok(LaneEnqueue { receipt, dispatch: Some(dispatch), added: true });
        }

        if capped && lane.waiting.len() >= self.config.max_queue {
            return Err(QueueError::LaneFull { lane: lane_id.clone(), max: self.config.max_queue });
        }
        lane.waiting.push_back(job.clone());
        let receipt = lane.receipt(job, lane_id, lane.waiting.len(), false);
        Ok(LaneEnqueue { receipt, dispatch: None, added: true })
    }

    fn renew_claim(&self, held: &LaneClaim) -> QueueResult<u64> {
        let deadline = self.lease_deadline(self.clock.now_ms());
        let mut state = self.state();
        // A lease past its deadline but not yet reaped is still the lane's current claim: the
        // job may carry on, and renewing it is what keeps the reaper away.
        let lane = fenced(&mut state.lanes, held)?;
        if let Some(active) = lane.active.as_mut() {
            active.lease_deadline_ms = deadline;
        }
        Ok(deadline)
    }

    fn finish_claim(&self, held: &LaneClaim) -> QueueResult<Option<LaneClaim>> {
        let deadline = self.lease_deadline(self.clock.now_ms());
        let mut state = self.state();
        let State { lanes, order, last_epoch, .. } = &mut *state;
        // One lookup for the fence and, when the lane empties, its removal: the entry's key is a
        // count on the id's shared text, cheaper than hashing the id a second time.
        let Entry::Occupied(mut entry) = lanes.entry(held.lane_id.clone()) else {
            return Err(stale(held, None));
        };
        let lane = entry.get_mut();
        if !lane.holds(held) {
            return Err(stale(held, Some(lane)));
        }
        let next = lane.waiting.pop_front().map(|job| claim(last_epoch, job, deadline));
        let dispatch = next.as_ref().map(|active| active.claim(&held.lane_id));
        lane.active = next;
        if lane.is_idle() {
            entry.remove();
            order.remove(&held.lane_id);
        }
        Ok(dispatch)
    }

    /// `renew`, logged.
    fn renewed(&self, claim: &LaneClaim) -> QueueResult<u64> {
        let outcome = self.renew_claim(claim);
        if let Err(err) = &outcome {
            tracing::warn!(lane = %claim.lane_id, job = %claim.job_id, error = %err, "lease renewal rejected");
        }
        outcome
    }

    /// `finish`, logged.
    fn finished(&self, claim: &LaneClaim) -> QueueResult<Option<LaneClaim>> {
        let outcome = self.finish_claim(claim);
        match &outcome {
            Ok(next) => tracing::debug!(
                lane = %claim.lane_id,
                job = %claim.job_id,
                next = next.as_ref().map(|c| c.job_id.as_str()),
                "lane head finished",
            ),
            Err(err) => {
                tracing::warn!(lane = %claim.lane_id, job = %claim.job_id, error = %err, "late finish rejected");
            }
        }
        outcome
    }

    fn reclaim_now(&self, held: &LaneClaim) -> QueueResult<LaneClaim> {
        let deadline = self.lease_deadline(self.clock.now_ms());
        let mut state = self.state();
        let State { lanes, last_epoch, .. } = &mut *state;
        let lane = fenced(lanes, held)?;
        let active = claim(last_epoch, held.job_id.clone(), deadline);
        let new_claim = active.claim(&held.lane_id);
        lane.active = Some(active);
        Ok(new_claim)
    }

    fn reap_now(&self) -> Vec<LaneClaim> {
        let now = self.clock.now_ms();
        let deadline = self.lease_deadline(now);
        let mut state = self.state();
        let State { lanes, last_epoch, .. } = &mut *state;
        let mut reclaimed = Vec::new();
        for (lane_id, lane) in lanes.iter_mut() {
            let Some(active) = lane.active.as_mut() else { continue };
            if active.lease_deadline_ms > now {
                continue;
            }
            // The same head job runs again under a new epoch: it keeps its place, and whoever
            // still holds the old claim is fenced off.
            *last_epoch += 1;
            active.epoch = *last_epoch;
            active.lease_deadline_ms = deadline;
            reclaimed.push(active.claim(lane_id));
        }
        // In lane order, not the map's arbitrary one, so that a reap is repeatable; reaped claims
        // are rare, so the sort costs nothing in the steady state.
        reclaimed.sort_unstable_by(|a, b| a.lane_id.cmp(&b.lane_id));
        reclaimed
    }

    fn remove_waiting_now(&self, lane_id: &LaneId, job: &JobId) -> bool {
        let mut state = self.state();
        let State { lanes, order, .. } = &mut *state;
        let Some(lane) = lanes.get_mut(lane_id) else { return false };
        let Some(index) = lane.waiting.iter().position(|waiting| waiting == job) else { return false };
        lane.waiting.remove(index);
        if lane.is_idle() {
            lanes.remove(lane_id);
            order.remove(lane_id);
        }
        true
    }

    fn register_recent_now(&self, lane: &LaneId, fingerprint: &str, job: &JobId) {
        let debounce_ms = self.config.debounce_ms;
        if debounce_ms == 0 {
            // Nothing could ever coalesce onto the entry, so keeping it would only cost memory.
            return;
        }
        let now = self.clock.now_ms();
        let mut state = self.state();
        state.recent.insert(
            (lane.clone(), fingerprint.to_owned()),
            RecentEntry { job: job.clone(), registered_at_ms: now },
        );
        if state.recent.len() >= state.sweep_recent_at {
            state.recent.retain(|_, entry| is_within_window(entry, now, debounce_ms));
            state.sweep_recent_at = RECENT_SWEEP_FLOOR.max(state.recent.len().saturating_mul(2));
        }
    }

    fn recent_job_now(&self, lane: &LaneId, fingerprint: &str) -> Option<JobId> {
        let debounce_ms = self.config.debounce_ms;
        if debounce_ms == 0 {
            return None;
        }
        let now = self.clock.now_ms();
        let key = (lane.clone(), fingerprint.to_owned());
        let mut state = self.state();
        let entry = state.recent.get(&key)?;
        if is_within_window(entry, now, debounce_ms) {
            return Some(entry.job.clone());
        }
        state.recent.remove(&key);
        None
    }

    fn snapshot_now(&self, after: Option<&LaneId>, limit: usize) -> Vec<LaneSnapshot> {
        let state = self.state();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        state
            .order
            .range((lower, Bound::Unbounded))
            // Every id in `order` has its lane: they are added and removed together.
            .filter_map(|lane_id| Some((lane_id, state.lanes.get(lane_id)?)))
            .take(limit)
            .map(|(lane_id, lane)| LaneSnapshot {
                lane_id: lane_id.clone(),
                active: lane.active.as_ref().map(|active| active.claim(lane_id)),
                waiting: lane.waiting.iter().cloned().collect(),
            })
            .collect()
    }
}

#[async_trait]
impl ChatLaneStore for MemoryLaneStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn lane_load(&self, lane: &LaneId) -> QueueResult<LaneLoad> {
        Ok(self.state().lanes.get(lane).map(Lane::load).unwrap_or_default())
    }

    async fn find_position(&self, lane: &LaneId, job: &JobId) -> QueueResult<usize> {
        Ok(self.state().lanes.get(lane).and_then(|l| l.waiting_position(job)).unwrap_or(0))
    }

    async fn restore(&self, job: &JobId, lane: &LaneId) -> QueueResult<LaneEnqueue> {
        self.enqueue_now(job, lane, false)
    }

    async fn enqueue(&self, job: &JobId, lane: &LaneId) -> QueueResult<LaneEnqueue> {
        let outcome = self.enqueue_now(job, lane, true);
        crate::log_enqueue(None, job, lane, &outcome);
        outcome
    }

    async fn renew(&self, claim: &LaneClaim) -> QueueResult<u64> {
        self.renewed(claim)
    }

    async fn finish(&self, claim: &LaneClaim) -> QueueResult<Option<LaneClaim>> {
        self.finished(claim)
    }

    /// Always done at once: nothing here waits.
    fn renew_now(&self, claim: &LaneClaim) -> Option<QueueResult<u64>> {
        Some(self.renewed(claim))
    }

    /// Always done at once: nothing here waits.
    fn finish_now(&self, claim: &LaneClaim) -> Option<QueueResult<Option<LaneClaim>>> {
        Some(self.finished(claim))
    }

    async fn reclaim(&self, claim: &LaneClaim) -> QueueResult<LaneClaim> {
        let outcome = self.reclaim_now(claim);
        if let Err(err) = &outcome {
            tracing::warn!(lane = %claim.lane_id, job = %claim.job_id, error = %err, "reclaim rejected");
        }
        outcome
    }

    async fn reap_expired(&self) -> QueueResult<Vec<LaneClaim>> {
        let reclaimed = self.reap_now();
        for claim in &reclaimed {
            tracing::info!(lane = %claim.lane_id, job = %claim.job_id, epoch = claim.epoch, "expired lease reaped");
        }
        Ok(reclaimed)
    }

    async fn remove_waiting(&self, lane: &LaneId, job: &JobId) -> QueueResult<bool> {
        Ok(self.remove_waiting_now(lane, job))
    }

    async fn register_recent(&self, lane: &LaneId, fingerprint: &str, job: &JobId) -> QueueResult<()> {
        self.register_recent_now(lane, fingerprint, job);
        Ok(())
    }

    async fn recent_job(&self, lane: &LaneId, fingerprint: &str) -> QueueResult<Option<JobId>> {
        Ok(self.recent_job_now(lane, fingerprint))
    }

    async fn snapshot(&self, after: Option<LaneId>, limit: usize) -> QueueResult<Vec<LaneSnapshot>> {
        Ok(self.snapshot_now(after.as_ref(), limit))
    }

    async fn reset(&self) -> QueueResult<()> {
        let mut state = self.state();
        state.lanes.clear();
        state.order.clear();
        state.recent.clear();
        state.sweep_recent_at = RECENT_SWEEP_FLOOR;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use queue_core::ManualClock;

    use super::*;

    fn lane(id: &str) -> LaneId {
        LaneId::new(id).unwrap()
    }

    fn job(id: &str) -> JobId {
        JobId::new(id).unwrap()
    }

    #[tokio::test]
    async fn expired_fingerprints_are_swept_so_memory_stays_bounded() {
        let clock = ManualClock::new(0);
        let config = LaneStoreConfig { debounce_ms: 10, ..LaneStoreConfig::default() };
        let store = MemoryLaneStore::new(config, Arc::new(clock.clone()));
        let l = lane("student:s1:main");
        for i in 0..20 * RECENT_SWEEP_FLOOR {
            store.register_recent(&l, &format!("fp-{i}"), &job(&format!("j{i}"))).await.unwrap();
            clock.advance(1);
        }
        let held = store.state().recent.len();
        assert!(held <= 2 * RECENT_SWEEP_FLOOR, "{held} fingerprints held after 20 windows of churn");
        assert_eq!(
            store.recent_job(&l, &format!("fp-{}", 20 * RECENT_SWEEP_FLOOR - 1)).await.unwrap(),
            Some(job(&format!("j{}", 20 * RECENT_SWEEP_FLOOR - 1)))
        );
    }

    #[tokio::test]
    async fn a_zero_debounce_window_stores_no_fingerprints() {
        let store = MemoryLaneStore::new(
            LaneStoreConfig { debounce_ms: 0, ..LaneStoreConfig::default() },
            Arc::new(ManualClock::new(0)),
        );
        store.register_recent(&lane("l"), "fp", &job("j")).await.unwrap();
        assert!(store.state().recent.is_empty());
    }

    /// The ids of the lanes held, checking that the map and the order kept for `snapshot` agree.
    fn lane_ids(store: &MemoryLaneStore) -> Vec<String> {
        let state = store.state();
        let ordered: Vec<String> = state.order.iter().map(|l| l.as_str().to_owned()).collect();
        let mut hashed: Vec<String> = state.lanes.keys().map(|l| l.as_str().to_owned()).collect();
        hashed.sort();
        assert_eq!(hashed, ordered, "the lanes and their order disagree");
        ordered
    }

    #[tokio::test]
    async fn the_order_kept_for_snapshots_holds_exactly_the_lanes_with_jobs() {
        let store = MemoryLaneStore::new(LaneStoreConfig::default(), Arc::new(ManualClock::new(0)));
        let a1 = store.enqueue(&job("a1"), &lane("a")).await.unwrap().dispatch.unwrap();
        store.enqueue(&job("a2"), &lane("a")).await.unwrap();
        let c1 = store.enqueue(&job("c1"), &lane("c")).await.unwrap().dispatch.unwrap();
        let b1 = store.enqueue(&job("b1"), &lane("b")).await.unwrap().dispatch.unwrap();
        store.enqueue(&job("b2"), &lane("b")).await.unwrap();
        assert_eq!(lane_ids(&store), ["a", "b", "c"]);

        let a2 = store.finish(&a1).await.unwrap().unwrap();
        store.finish(&a2).await.unwrap();
        store.finish(&c1).await.unwrap();
        assert_eq!(lane_ids(&store), ["b"]);

        assert!(store.remove_waiting(&lane("b"), &job("b2")).await.unwrap());
        assert_eq!(lane_ids(&store), ["b"], "the running job keeps its lane");
        store.finish(&b1).await.unwrap();
        assert!(lane_ids(&store).is_empty());

        store.enqueue(&job("d1"), &lane("d")).await.unwrap();
        assert_eq!(lane_ids(&store), ["d"]);
        store.reset().await.unwrap();
        assert!(lane_ids(&store).is_empty());
    }

    #[tokio::test]
    async fn renew_now_and_finish_now_answer_at_once_as_renew_and_finish_do() {
        let clock = ManualClock::new(0);
        let config = LaneStoreConfig { claim_ttl_ms: 10, ..LaneStoreConfig::default() };
        let store = MemoryLaneStore::new(config, Arc::new(clock.clone()));
        let first = store.enqueue(&job("a1"), &lane("l")).await.unwrap().dispatch.unwrap();
        store.enqueue(&job("a2"), &lane("l")).await.unwrap();
        clock.advance(5);
        assert_eq!(store.renew_now(&first).map(Result::unwrap), Some(15), "the lease restarts now");
        let next = store.finish_now(&first).unwrap().unwrap().expect("a2 is claimed");
        assert_eq!(next.job_id, job("a2"));
        // The finished claim is fenced off, at once as with the async calls.
        assert!(matches!(store.renew_now(&first), Some(Err(QueueError::StaleLease { .. }))));
        assert!(matches!(store.finish_now(&first), Some(Err(QueueError::StaleLease { .. }))));
        assert_eq!(store.finish_now(&next).unwrap().unwrap(), None);
        assert!(lane_ids(&store).is_empty(), "the emptied lane is gone");
    }

    #[tokio::test]
    async fn expired_leases_are_reaped_in_lane_order() {
        let clock = ManualClock::new(0);
        let config = LaneStoreConfig { claim_ttl_ms: 10, ..LaneStoreConfig::default() };
        let store = MemoryLaneStore::new(config, Arc::new(clock.clone()));
        for (n, l) in ["m", "c", "x", "a", "k"].into_iter().enumerate() {
            store.enqueue(&job(&format!("j{n}")), &lane(l)).await.unwrap();
        }
        clock.advance(11);
        let reaped: Vec<String> =
            store.reap_expired().await.unwrap().iter().map(|c| c.lane_id.as_str().to_owned()).collect();
        assert_eq!(reaped, ["a", "c", "k", "m", "x"]);
    }

    #[tokio::test]
    async fn a_zero_claim_ttl_still_reaps_each_expiry_only_once() {
        let clock = ManualClock::new(100);
        let config = LaneStoreConfig { claim_ttl_ms: 0, ..LaneStoreConfig::default() };
        let store = MemoryLaneStore::new(config, Arc::new(clock.clone()));
        store.enqueue(&job("a"), &lane("l")).await.unwrap();
        clock.advance(1);
        assert_eq!(store.reap_expired().await.unwrap().len(), 1);
        assert!(store.reap_expired().await.unwrap().is_empty());
    }
}
