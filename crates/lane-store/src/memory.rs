//! `MemoryLaneStore`: one tenant's chat lanes held in process memory, for the inline backend and
//! for tests.
//!
//! All state sits behind one `std::sync::Mutex`, taken only inside synchronous helpers so it is
//! never held across an `.await`: every trait method is then atomic with respect to the others,
//! as the [`ChatLaneStore`] contract requires.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
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

/// Emptied lanes stay held (parked) until this many are, or as many as the lanes with jobs,
/// whichever is larger: then they all go in one sweep. A lane's removal from `order` one at a
/// time cost about 950 instructions (a walk down a tree of lane ids); a sweep costs each lane
/// far less, and memory stays within twice the lanes with jobs (plus this floor).
const PARKED_SWEEP_FLOOR: usize = 1024;

/// The smallest length of [`State::by_epoch`].
const EPOCH_TABLE_MIN: usize = 64;

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
        self.active.as_ref().is_some_and(|active| {
            active.epoch == claim.epoch && same_text(active.job_id.as_str(), claim.job_id.as_str())
        })
    }
}

/// `a == b`, at once when both are the same text (clones of one id share it, as a claim's and
/// its lane's do), else compared byte by byte.
fn same_text(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

#[derive(Debug)]
struct RecentEntry {
    job: JobId,
    registered_at_ms: u64,
}

/// A lane with its id, in its slot of [`State::slots`].
#[derive(Debug)]
struct Held {
    id: LaneId,
    lane: Lane,
}

#[derive(Debug)]
struct State {
    /// The lanes, each in a slot that stays its own while the lane has jobs; freed slots are
    /// reused (`free`).
    slots: Vec<Option<Held>>,
    free: Vec<usize>,
    /// Each lane's slot by its id. Hashed with std's keyed SipHash: lane ids come from users.
    by_id: HashMap<LaneId, usize>,
    /// The slot a claim was handed out for, at its epoch modulo the length (a power of two, at
    /// least twice the lanes held): a claim's renewal and finish find their lane here, by a
    /// number, without hashing its id's text (SipHash over a lane id cost about 200
    /// instructions, twice per chat job). Only a hint: the lane in that slot is taken only if
    /// its id and current claim are the caller's; an entry a later epoch took over, or a slot
    /// reused since, sends the caller to `by_id`. Epochs come from this store's counter, never
    /// from a caller, so nobody can pick colliding ones.
    by_epoch: Vec<usize>,
    /// The ids of the lanes held, with their slots, ordered so that `snapshot` can page by lane
    /// id without sorting. It changes only when a lane appears or a sweep drops parked ones, not
    /// at each of its jobs.
    order: BTreeMap<LaneId, usize>,
    /// How many lanes held are idle (parked): emptied, kept until the next sweep. An idle lane
    /// answers as a lane without jobs does (no load, no position, no claim, not in a snapshot).
    parked: usize,
    recent: HashMap<(LaneId, String), RecentEntry>,
    sweep_recent_at: usize,
    /// Store-wide and never reset, so an epoch handed out before a `reset` can never be current
    /// again afterwards.
    last_epoch: u64,
}

impl State {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            by_epoch: vec![usize::MAX; EPOCH_TABLE_MIN],
            order: BTreeMap::new(),
            parked: 0,
            recent: HashMap::new(),
            sweep_recent_at: RECENT_SWEEP_FLOOR,
            last_epoch: 0,
        }
    }

    /// The lane in `slot`, which an index named.
    fn held_mut(&mut self, slot: usize) -> &mut Held {
        self.slots[slot].as_mut().unwrap_or_else(|| unreachable!("an indexed slot holds a lane"))
    }

    /// Where [`State::by_epoch`] keeps the slot of the claim with `epoch`.
    fn epoch_index(&self, epoch: u64) -> usize {
        // The length is a power of two: the low bits of the epoch, consecutive epochs apart.
        epoch_index(epoch, self.by_epoch.len())
    }

    /// Keeps `by_epoch` at least twice as long as the lanes held (rebuilt from their claims).
    fn fit_epoch_table(&mut self) {
        if self.by_id.len() * 2 <= self.by_epoch.len() {
            return;
        }
        self.by_epoch = vec![usize::MAX; (self.by_id.len() * 2).next_power_of_two()];
        let live: Vec<(u64, usize)> = self
            .by_id
            .values()
            .filter_map(|&slot| Some((self.slots[slot].as_ref()?.lane.active.as_ref()?.epoch, slot)))
            .collect();
        for (epoch, slot) in live {
            point_epoch(&mut self.by_epoch, epoch, slot);
        }
    }

    /// The lane `id`, if it has jobs.
    fn lane(&self, id: &LaneId) -> Option<&Lane> {
        let slot = *self.by_id.get(id)?;
        self.slots[slot].as_ref().map(|held| &held.lane)
    }

    /// The slot of the lane `id`, made (idle) if the lane had no jobs.
    fn slot_for(&mut self, id: &LaneId) -> usize {
        let Self { slots, free, by_id, order, parked, .. } = self;
        // One lookup: the clone `entry` takes is a count on the id's shared text, cheaper than
        // hashing the id a second time.
        let slot = match by_id.entry(id.clone()) {
            Entry::Occupied(slot) => {
                let slot = *slot.get();
                if slots[slot].as_ref().is_some_and(|held| held.lane.is_idle()) {
                    // The caller gives an idle lane a job: it is no longer parked.
                    *parked -= 1;
                }
                slot
            }
            Entry::Vacant(vacant) => {
                let held = Some(Held { id: id.clone(), lane: Lane::default() });
                let slot = if let Some(slot) = free.pop() {
                    slots[slot] = held;
                    slot
                } else {
                    slots.push(held);
                    slots.len() - 1
                };
                order.insert(id.clone(), slot);
                *vacant.insert(slot)
            }
        };
        self.fit_epoch_table();
        slot
    }

    /// The slot of `claim`'s lane if `claim` is still its current claim; otherwise the fencing
    /// error.
    fn fenced(&self, claim: &LaneClaim) -> QueueResult<usize> {
        let hinted = self.by_epoch[self.epoch_index(claim.epoch)];
        if let Some(Some(held)) = self.slots.get(hinted)
            && same_text(held.id.as_str(), claim.lane_id.as_str())
            && held.lane.holds(claim)
        {
            return Ok(hinted);
        }
        // Not where its epoch points: looked up by its id's hash.
        if let Some(&slot) = self.by_id.get(&claim.lane_id)
            && let Some(held) = &self.slots[slot]
            && held.lane.holds(claim)
        {
            return Ok(slot);
        }
        // The error names the lane's current epoch: found by its id, as only a fenced-off caller
        // pays for.
        Err(stale(claim, self.lane(&claim.lane_id)))
    }

    /// Makes `active` the claim of the lane in `slot` (none: the lane runs nothing) and returns
    /// it as a claim on `lane_id`.
    fn set_active(&mut self, slot: usize, active: Option<Active>, lane_id: &LaneId) -> Option<LaneClaim> {
        let claim = active.as_ref().map(|active| active.claim(lane_id));
        if let Some(active) = &active {
            point_epoch(&mut self.by_epoch, active.epoch, slot);
        }
        self.held_mut(slot).lane.active = active;
        claim
    }

    /// A claim for `job` under the next epoch.
    fn next_claim(&mut self, job: JobId, lease_deadline_ms: u64) -> Active {
        self.last_epoch += 1;
        Active { job_id: job, epoch: self.last_epoch, lease_deadline_ms }
    }

    /// Parks the lane in `slot` if it has no jobs left; sweeps the parked lanes once there are
    /// enough of them ([`PARKED_SWEEP_FLOOR`]).
    fn park_if_idle(&mut self, slot: usize) {
        if !self.held_mut(slot).lane.is_idle() {
            return;
        }
        self.parked += 1;
        if self.parked >= PARKED_SWEEP_FLOOR.max(self.by_id.len() / 2) {
            self.sweep();
        }
    }

    /// Removes every parked lane: O(lanes held), once per as many parked lanes as held with jobs.
    fn sweep(&mut self) {
        let Self { slots, free, by_id, order, parked, .. } = self;
        let idle = |slot: usize| slots[slot].as_ref().is_some_and(|held| held.lane.is_idle());
        order.retain(|_, slot| !idle(*slot));
        let first_freed = free.len();
        by_id.retain(|_, slot| {
            let keep = !idle(*slot);
            if !keep {
                free.push(*slot);
            }
            keep
        });
        for &slot in &free[first_freed..] {
            slots[slot] = None;
        }
        *parked = 0;
    }
}

/// Where a table of `len` (a power of two) entries keeps the claim with `epoch`: the epoch's low
/// bits, so consecutive epochs take different entries.
fn epoch_index(epoch: u64, len: usize) -> usize {
    usize::try_from(epoch & (len as u64 - 1)).unwrap_or_default()
}

/// Points the entry of `by_epoch` (see [`State::by_epoch`]) for the claim with `epoch` at the
/// lane in `slot`.
fn point_epoch(by_epoch: &mut [usize], epoch: u64, slot: usize) {
    by_epoch[epoch_index(epoch, by_epoch.len())] = slot;
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
        let slot = state.slot_for(lane_id);
        let lane = &state.held_mut(slot).lane;

        // A job already in the lane stays where it is: re-dispatching a running job would run it
        // twice, and re-appending a waiting one would let it lose or jump its place.
        let existing = if lane.is_running(job) { Some(0) } else { lane.waiting_position(job) };
        if let Some(position) = existing {
            let receipt = lane.receipt(job, lane_id, position, false);
            return Ok(LaneEnqueue { receipt, dispatch: None, added: false });
        }

        if lane.active.is_none() {
            // Invariant: a lane with waiting jobs always has an active one, so this lane is idle.
            let active = state.next_claim(job.clone(), deadline);
            let dispatch = state.set_active(slot, Some(active), lane_id);
            let receipt = state.held_mut(slot).lane.receipt(job, lane_id, 0, true);
            return Ok(LaneEnqueue { receipt, dispatch, added: true });
        }

        if capped && lane.waiting.len() >= self.config.max_queue {
            return Err(QueueError::LaneFull { lane: lane_id.clone(), max: self.config.max_queue });
        }
        let lane = &mut state.held_mut(slot).lane;
        lane.waiting.push_back(job.clone());
        let receipt = lane.receipt(job, lane_id, lane.waiting.len(), false);
        Ok(LaneEnqueue { receipt, dispatch: None, added: true })
    }

    fn renew_claim(&self, held: &LaneClaim) -> QueueResult<u64> {
        let deadline = self.lease_deadline(self.clock.now_ms());
        let mut state = self.state();
        // A lease past its deadline but not yet reaped is still the lane's current claim: the
        // job may carry on, and renewing it is what keeps the reaper away.
        let slot = state.fenced(held)?;
        if let Some(active) = state.held_mut(slot).lane.active.as_mut() {
            active.lease_deadline_ms = deadline;
        }
        Ok(deadline)
    }

    fn finish_claim(&self, held: &LaneClaim) -> QueueResult<Option<LaneClaim>> {
        let deadline = self.lease_deadline(self.clock.now_ms());
        let mut state = self.state();
        let slot = state.fenced(held)?;
        let next = state.held_mut(slot).lane.waiting.pop_front();
        let next = next.map(|job| state.next_claim(job, deadline));
        let dispatch = state.set_active(slot, next, &held.lane_id);
        state.park_if_idle(slot);
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
        let slot = state.fenced(held)?;
        let active = state.next_claim(held.job_id.clone(), deadline);
        let new_claim = state.set_active(slot, Some(active), &held.lane_id);
        Ok(new_claim.unwrap_or_else(|| unreachable!("a claim was just set")))
    }

    fn reap_now(&self) -> Vec<LaneClaim> {
        let now = self.clock.now_ms();
        let deadline = self.lease_deadline(now);
        let mut state = self.state();
        let State { slots, by_id, by_epoch, last_epoch, .. } = &mut *state;
        let mut reclaimed = Vec::new();
        // Over the lanes held (`by_id`), not over every slot: slots freed stay allocated.
        for &slot in by_id.values() {
            let Some(Held { id, lane }) = &mut slots[slot] else { continue };
            let Some(active) = lane.active.as_mut() else { continue };
            if active.lease_deadline_ms > now {
                continue;
            }
            // The same head job runs again under a new epoch: it keeps its place, and whoever
            // still holds the old claim is fenced off.
            *last_epoch += 1;
            active.epoch = *last_epoch;
            active.lease_deadline_ms = deadline;
            point_epoch(by_epoch, active.epoch, slot);
            reclaimed.push(active.claim(id));
        }
        // In lane order, not the slots' arbitrary one, so that a reap is repeatable; reaped claims
        // are rare, so the sort costs nothing in the steady state.
        reclaimed.sort_unstable_by(|a, b| a.lane_id.cmp(&b.lane_id));
        reclaimed
    }

    fn remove_waiting_now(&self, lane_id: &LaneId, job: &JobId) -> bool {
        let mut state = self.state();
        let Some(&slot) = state.by_id.get(lane_id) else { return false };
        let lane = &mut state.held_mut(slot).lane;
        let Some(index) = lane.waiting.iter().position(|waiting| waiting == job) else { return false };
        lane.waiting.remove(index);
        state.park_if_idle(slot);
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
            .range::<LaneId, _>((lower, Bound::Unbounded))
            // Every id in `order` has its lane: they are added and removed together. A parked
            // lane has no jobs: it is not shown.
            .filter_map(|(lane_id, &slot)| Some((lane_id, &state.slots[slot].as_ref()?.lane)))
            .filter(|(_, lane)| !lane.is_idle())
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
        Ok(self.state().lane(lane).map(Lane::load).unwrap_or_default())
    }

    async fn find_position(&self, lane: &LaneId, job: &JobId) -> QueueResult<usize> {
        Ok(self.state().lane(lane).and_then(|l| l.waiting_position(job)).unwrap_or(0))
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
        // A new state but for the epoch counter, which is never reset (see `last_epoch`).
        *state = State { last_epoch: state.last_epoch, ..State::new() };
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
        let busy = |slot: usize| state.slots[slot].as_ref().is_some_and(|held| !held.lane.is_idle());
        let parked = state.by_id.values().filter(|&&slot| !busy(slot)).count();
        assert_eq!(parked, state.parked, "parked lanes counted");
        let ordered: Vec<String> =
            state.order.iter().filter(|(_, slot)| busy(**slot)).map(|(l, _)| l.as_str().to_owned()).collect();
        assert_eq!(state.order.len(), state.by_id.len(), "every lane held is ordered");
        let mut hashed: Vec<String> =
            state.by_id.iter().filter(|(_, slot)| busy(**slot)).map(|(l, _)| l.as_str().to_owned()).collect();
        hashed.sort();
        assert_eq!(hashed, ordered, "the lanes and their order disagree");
        let mut held: Vec<String> = state
            .slots
            .iter()
            .flatten()
            .filter(|held| !held.lane.is_idle())
            .map(|held| held.id.as_str().to_owned())
            .collect();
        held.sort();
        assert_eq!(held, ordered, "the lanes held and their order disagree");
        // Every lane is found by its id, in its own slot.
        for (id, &slot) in &state.by_id {
            let held = state.slots[slot].as_ref().expect("an indexed slot holds a lane");
            assert_eq!(&held.id, id, "slot {slot}");
        }
        assert!(state.by_epoch.len() >= 2 * state.by_id.len(), "the epoch table is long enough");
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

    /// A pure speed structure, guarded: a claim whose entry in the epoch table a later epoch took
    /// over is found by its lane's id instead, and still renews and finishes.
    #[tokio::test]
    async fn a_claim_whose_epoch_entry_was_taken_over_is_found_by_its_lane_id() {
        let store = MemoryLaneStore::new(LaneStoreConfig::default(), Arc::new(ManualClock::new(0)));
        let held = store.enqueue(&job("a1"), &lane("a")).await.unwrap().dispatch.unwrap();
        let slot = store.state().by_id[&lane("a")];
        let hint = |store: &MemoryLaneStore| {
            let state = store.state();
            state.by_epoch[state.epoch_index(held.epoch)]
        };
        assert_eq!(hint(&store), slot);
        // As many later claims on another lane as the table has entries: one takes `held`'s.
        let len = store.state().by_epoch.len();
        let mut other = store.enqueue(&job("b0"), &lane("b")).await.unwrap().dispatch.unwrap();
        for n in 1..=len {
            store.enqueue(&job(&format!("b{n}")), &lane("b")).await.unwrap();
            other = store.finish(&other).await.unwrap().expect("the next job of b");
        }
        assert_ne!(hint(&store), slot, "taken over");
        assert_eq!(store.renew(&held).await.unwrap(), LaneStoreConfig::default().claim_ttl_ms);
        assert_eq!(store.finish(&held).await.unwrap(), None);
        assert!(matches!(store.renew(&held).await, Err(QueueError::StaleLease { .. })));
        assert_eq!(lane_ids(&store), ["b"]);
    }

    /// A pure speed structure, guarded: emptied lanes stay parked until a sweep, which keeps the
    /// lanes held within the floor (here, with one busy lane), and meanwhile answer as lanes
    /// without jobs do.
    #[tokio::test]
    async fn emptied_lanes_are_parked_hidden_and_swept() {
        let store = MemoryLaneStore::new(LaneStoreConfig::default(), Arc::new(ManualClock::new(0)));
        let busy = store.enqueue(&job("busy"), &lane("a-busy")).await.unwrap().dispatch.unwrap();
        for n in 0..3 * PARKED_SWEEP_FLOOR + 5 {
            let l = lane(&format!("l{n:05}"));
            let claim = store.enqueue(&job(&format!("j{n}")), &l).await.unwrap().dispatch.unwrap();
            assert_eq!(store.finish(&claim).await.unwrap(), None);
            assert_eq!(store.lane_load(&l).await.unwrap(), LaneLoad::default());
            let held = store.state().by_id.len();
            assert!(held <= PARKED_SWEEP_FLOOR + 1, "{held} lanes held after {n} emptied");
        }
        assert!(store.state().parked > 0, "some emptied lanes are parked");
        let shown: Vec<LaneId> =
            store.snapshot(None, usize::MAX).await.unwrap().into_iter().map(|s| s.lane_id).collect();
        assert_eq!(shown, [lane("a-busy")]);
        assert_eq!(lane_ids(&store), ["a-busy"]);
        // A parked lane taking a job again runs it at once.
        let again = store.enqueue(&job("again"), &lane("l00001")).await.unwrap();
        assert!(again.dispatch.is_some());
        assert_eq!(lane_ids(&store), ["a-busy", "l00001"]);
        store.finish(&busy).await.unwrap();
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
