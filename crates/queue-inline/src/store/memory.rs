//! An ephemeral [`JobStore`] held in memory, for tests and benchmarks: fast, and gone with the
//! process. Indexes keep `scan_pending`, `counts` and `purge_finished` from walking finished jobs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use queue_core::{
    JobId, JobKind, JobRecord, JobStatus, JobStore, JobUpdate, NewJob, QueueError, QueueResult, SharedClock,
    StatusCounts, TenantId,
};

use super::{kind_index, status_index};

/// One tenant's job records in a `HashMap` behind a mutex.
///
/// Every operation is a short critical section with no `.await` inside, so a std mutex is the
/// cheapest correct lock here.
pub struct MemoryJobStore {
    tenant: TenantId,
    clock: SharedClock,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The next sequence number to hand out; only ever grows.
    next_seq: u64,
    jobs: HashMap<JobId, JobRecord>,
    /// Queued and processing jobs per kind, by `seq`: what `scan_pending` returns.
    pending: [BTreeMap<u64, JobId>; JobKind::ALL.len()],
    /// Jobs per kind and state, kept up to date so `counts` is O(1).
    counts: [[u64; JobStatus::ALL.len()]; JobKind::ALL.len()],
    /// Terminal jobs by the time they finished: what `purge_finished` removes from the front.
    /// A terminal record never changes again, so its key never goes stale.
    finished: BTreeSet<(u64, JobId)>,
}

/// Where a record sits in the indexes: everything that decides its index entries.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Slot {
    kind: JobKind,
    status: JobStatus,
    seq: u64,
    updated_at_ms: u64,
}

impl Slot {
    const fn of(record: &JobRecord) -> Self {
        Self {
            kind: record.kind,
            status: record.status,
            seq: record.seq,
            updated_at_ms: record.updated_at_ms,
        }
    }
}

impl Inner {
    /// Adds `id` to the indexes of `slot`.
    fn index(&mut self, id: &JobId, slot: Slot) {
        let k = kind_index(slot.kind);
        self.counts[k][status_index(slot.status)] += 1;
        if slot.status.is_pending() {
            self.pending[k].insert(slot.seq, id.clone());
        } else {
            self.finished.insert((slot.updated_at_ms, id.clone()));
        }
    }

    /// Removes `id` from the indexes of `slot`.
    fn unindex(&mut self, id: &JobId, slot: Slot) {
        let k = kind_index(slot.kind);
        let count = &mut self.counts[k][status_index(slot.status)];
        *count = count.saturating_sub(1);
        if slot.status.is_pending() {
            self.pending[k].remove(&slot.seq);
        } else {
            self.finished.remove(&(slot.updated_at_ms, id.clone()));
        }
    }
}

impl MemoryJobStore {
    /// An empty store for `tenant`, reading time from `clock`.
    #[must_use]
    pub fn new(tenant: TenantId, clock: SharedClock) -> Self {
        Self {
            tenant,
            clock,
            inner: Mutex::new(Inner {
                next_seq: 1,
                jobs: HashMap::new(),
                pending: Default::default(),
                counts: Default::default(),
                finished: BTreeSet::new(),
            }),
        }
    }

    /// How many records the store holds, in every state.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Whether the store holds no record at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held cannot leave the maps half-updated in a way that
        // matters more than losing the whole store, so keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryJobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let jobs = self.inner.try_lock().map(|inner| inner.jobs.len()).ok();
        f.debug_struct("MemoryJobStore").field("tenant", &self.tenant).field("jobs", &jobs).finish()
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn create(&self, job: NewJob) -> QueueResult<JobRecord> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        if inner.jobs.contains_key(&job.id) {
            return Err(QueueError::AlreadyExists { job: job.id });
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let record = JobRecord::from_new(self.tenant.clone(), job, seq, now);
        inner.index(&record.id, Slot::of(&record));
        inner.jobs.insert(record.id.clone(), record.clone());
        Ok(record)
    }

    async fn get(&self, id: &JobId) -> QueueResult<Option<JobRecord>> {
        Ok(self.lock().jobs.get(id).cloned())
    }

    async fn transition(&self, id: &JobId, update: JobUpdate) -> QueueResult<JobRecord> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let Some(record) = inner.jobs.get_mut(id) else {
            return Err(QueueError::NotFound { job: id.clone() });
        };
        let before = Slot::of(record);
        // `apply` leaves the record untouched on error, so there is nothing to undo.
        record.apply(&update, now)?;
        let after = record.clone();
        if before.status != after.status {
            inner.unindex(id, before);
            inner.index(id, Slot::of(&after));
        }
        Ok(after)
    }

    async fn delete(&self, id: &JobId) -> QueueResult<bool> {
        let mut inner = self.lock();
        let Some(record) = inner.jobs.remove(id) else {
            return Ok(false);
        };
        inner.unindex(id, Slot::of(&record));
        Ok(true)
    }

    async fn scan_pending(&self, kind: JobKind) -> QueueResult<Vec<JobRecord>> {
        let inner = self.lock();
        Ok(inner.pending[kind_index(kind)].values().filter_map(|id| inner.jobs.get(id).cloned()).collect())
    }

    async fn list(
        &self,
        kind: Option<JobKind>,
        status: JobStatus,
        limit: usize,
    ) -> QueueResult<Vec<JobRecord>> {
        let inner = self.lock();
        let mut found: Vec<&JobRecord> = if status.is_pending() {
            // Pending jobs are indexed; walk only those.
            let kinds: Vec<JobKind> = kind.map_or_else(|| JobKind::ALL.to_vec(), |k| vec![k]);
            kinds
                .into_iter()
                .flat_map(|k| inner.pending[kind_index(k)].values())
                .filter_map(|id| inner.jobs.get(id))
                .filter(|r| r.status == status)
                .collect()
        } else {
            inner.jobs.values().filter(|r| r.status == status && kind.is_none_or(|k| r.kind == k)).collect()
        };
        found.sort_unstable_by_key(|r| std::cmp::Reverse(r.seq));
        Ok(found.into_iter().take(limit).cloned().collect())
    }

    async fn counts(&self, kind: JobKind) -> QueueResult<StatusCounts> {
        let inner = self.lock();
        let row = &inner.counts[kind_index(kind)];
        let mut counts = StatusCounts::default();
        for status in JobStatus::ALL {
            counts.add(status, row[status_index(status)]);
        }
        Ok(counts)
    }

    async fn purge_finished(&self, before_ms: u64) -> QueueResult<usize> {
        let mut inner = self.lock();
        let mut purged = 0;
        while let Some((updated, _)) = inner.finished.first()
            && *updated < before_ms
        {
            let Some((_, id)) = inner.finished.pop_first() else { break };
            if let Some(record) = inner.jobs.remove(&id) {
                let count = &mut inner.counts[kind_index(record.kind)][status_index(record.status)];
                *count = count.saturating_sub(1);
                purged += 1;
            }
        }
        Ok(purged)
    }
}
