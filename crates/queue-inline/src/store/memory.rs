//! An ephemeral [`JobStore`] held in memory, for tests and benchmarks: fast, and gone with the
//! process. Indexes keep `scan_pending`, `counts` and `purge_finished` from walking finished jobs.
//!
//! Records are kept compact, since a backlog is held whole: the tenant is stored once per store,
//! ids are shared between the map and the indexes, JSON is held as [`Compact`] values rather
//! than `serde_json::Value`s (a one-key object takes about 80 bytes instead of about 700), and the
//! fields most records leave empty (lane, request id, error) are boxed apart.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use queue_core::{
    JobId, JobKind, JobRecord, JobStatus, JobStore, JobUpdate, LaneId, NewJob, QueueError, QueueResult,
    RequestId, SharedClock, StatusCounts, TenantId,
};
use serde_json::{Map, Number, Value};

use super::{kind_index, status_index};

/// A JSON value in as little memory as it takes: objects and arrays are boxed slices, with no
/// spare capacity and no tree nodes. It converts back to exactly the value it was made from
/// (numbers are kept as `serde_json::Number`s, object entries in their order).
#[derive(Debug, Clone, PartialEq)]
enum Compact {
    Null,
    Bool(bool),
    Number(Number),
    String(Box<str>),
    Array(Box<[Self]>),
    Object(Box<[(Box<str>, Self)]>),
}

impl From<Value> for Compact {
    fn from(value: Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(b),
            Value::Number(n) => Self::Number(n),
            Value::String(s) => Self::String(s.into_boxed_str()),
            Value::Array(items) => Self::Array(items.into_iter().map(Self::from).collect()),
            Value::Object(map) => {
                Self::Object(map.into_iter().map(|(k, v)| (k.into_boxed_str(), Self::from(v))).collect())
            }
        }
    }
}

impl From<&Value> for Compact {
    fn from(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => Self::Number(n.clone()),
            Value::String(s) => Self::String(s.as_str().into()),
            Value::Array(items) => Self::Array(items.iter().map(Self::from).collect()),
            Value::Object(map) => {
                Self::Object(map.iter().map(|(k, v)| (k.as_str().into(), Self::from(v))).collect())
            }
        }
    }
}

impl Compact {
    fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Number(n) => Value::Number(n.clone()),
            Self::String(s) => Value::String(s.to_string()),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_value).collect()),
            Self::Object(entries) => {
                // Inserting one by one allocates only the map's nodes; collecting would first
                // gather the entries in a vector and sort it.
                let mut map = Map::new();
                for (k, v) in entries {
                    map.insert(k.to_string(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }
}

/// A record without its id (the map's key) and tenant (the store's).
///
/// It sits inline in the map's table, which has room for up to twice as many records as it
/// holds, so every byte here counts about 1.3 to 2 times per job: the fields most records leave
/// empty live in a box of their own ([`Rare`]).
#[derive(Debug)]
struct Stored {
    kind: JobKind,
    status: JobStatus,
    attempt: u32,
    lease_epoch: u64,
    seq: u64,
    created_at_ms: u64,
    updated_at_ms: u64,
    payload: Compact,
    result: Option<Compact>,
    /// `None` when the record has no lane, request id nor error (most upload jobs).
    rare: Option<Box<Rare>>,
}

/// The fields of a record that most records leave empty.
#[derive(Debug, Default)]
struct Rare {
    lane: Option<LaneId>,
    request_id: Option<RequestId>,
    error: Option<Box<str>>,
}

impl Rare {
    /// `rare` boxed, or `None` when it holds nothing.
    fn boxed(rare: Self) -> Option<Box<Self>> {
        let empty = rare.lane.is_none() && rare.request_id.is_none() && rare.error.is_none();
        (!empty).then(|| Box::new(rare))
    }
}

impl Stored {
    /// The record, with `null` as payload and no result: what a transition checks and changes.
    fn head(&self, id: JobId, tenant: &TenantId) -> JobRecord {
        let rare = self.rare.as_deref();
        JobRecord {
            id,
            kind: self.kind,
            tenant: tenant.clone(),
            lane: rare.and_then(|r| r.lane.clone()),
            request_id: rare.and_then(|r| r.request_id.clone()),
            status: self.status,
            attempt: self.attempt,
            lease_epoch: self.lease_epoch,
            seq: self.seq,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            payload: Value::Null,
            result: None,
            error: rare.and_then(|r| r.error.as_deref()).map(str::to_owned),
        }
    }

    fn record(&self, id: JobId, tenant: &TenantId) -> JobRecord {
        let mut record = self.head(id, tenant);
        record.payload = self.payload.to_value();
        record.result = self.result.as_ref().map(Compact::to_value);
        record
    }

    fn set_error(&mut self, error: Option<&str>) {
        let mut rare = self.rare.take().map_or_else(Rare::default, |b| *b);
        rare.error = error.map(Into::into);
        self.rare = Rare::boxed(rare);
    }
}

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
    /// Keyed by id; the indexes share the key's allocation.
    jobs: HashMap<Arc<str>, Stored>,
    /// Queued and processing jobs per kind, by `seq`: what `scan_pending` returns.
    pending: [BTreeMap<u64, Arc<str>>; JobKind::ALL.len()],
    /// Jobs per kind and state, kept up to date so `counts` is O(1).
    counts: [[u64; JobStatus::ALL.len()]; JobKind::ALL.len()],
    /// Terminal jobs by the time they finished (then `seq`): what `purge_finished` removes from
    /// the front. A terminal record never changes again, so its key never goes stale.
    finished: BTreeMap<(u64, u64), Arc<str>>,
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
    const fn of(record: &Stored) -> Self {
        Self {
            kind: record.kind,
            status: record.status,
            seq: record.seq,
            updated_at_ms: record.updated_at_ms,
        }
    }
}

impl Inner {
    fn recount(&mut self, before: Option<Slot>, after: Option<Slot>) {
        if let Some(slot) = before {
            let count = &mut self.counts[kind_index(slot.kind)][status_index(slot.status)];
            *count = count.saturating_sub(1);
        }
        if let Some(slot) = after {
            self.counts[kind_index(slot.kind)][status_index(slot.status)] += 1;
        }
    }

    /// Removes the index entry of `slot`, returning its id.
    fn unindex(&mut self, slot: Slot) -> Option<Arc<str>> {
        if slot.status.is_pending() {
            self.pending[kind_index(slot.kind)].remove(&slot.seq)
        } else {
            self.finished.remove(&(slot.updated_at_ms, slot.seq))
        }
    }

    fn index(&mut self, slot: Slot, id: Arc<str>) {
        if slot.status.is_pending() {
            self.pending[kind_index(slot.kind)].insert(slot.seq, id);
        } else {
            self.finished.insert((slot.updated_at_ms, slot.seq), id);
        }
    }

    /// Stores `job` as a new queued record created at `now`; returns its sequence number.
    fn insert(&mut self, job: &NewJob, payload: Compact, now: u64) -> QueueResult<u64> {
        let key: Arc<str> = Arc::from(job.id.as_str());
        if self.jobs.contains_key(&key) {
            return Err(QueueError::AlreadyExists { job: job.id.clone() });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let stored = Stored {
            kind: job.kind,
            status: JobStatus::Queued,
            attempt: 0,
            lease_epoch: 0,
            seq,
            created_at_ms: now,
            updated_at_ms: now,
            payload,
            result: None,
            rare: Rare::boxed(Rare {
                lane: job.lane.clone(),
                request_id: job.request_id.clone(),
                error: None,
            }),
        };
        let slot = Slot::of(&stored);
        self.recount(None, Some(slot));
        self.index(slot, Arc::clone(&key));
        self.jobs.insert(key, stored);
        Ok(seq)
    }

    /// Moves a record's index entry after a transition; its id comes from the old entry.
    fn move_index(&mut self, before: Slot, after: Slot) {
        self.recount(Some(before), Some(after));
        // A job that stays pending keeps its entry: its seq does not change.
        if before.status.is_pending() && after.status.is_pending() {
            return;
        }
        if let Some(id) = self.unindex(before) {
            self.index(after, id);
        }
    }
}

/// The id of a stored record: it was a valid `JobId` when it was stored.
fn job_id(key: &str) -> JobId {
    JobId::new(key).unwrap_or_else(|e| unreachable!("a stored job id is valid: {e}"))
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
                finished: BTreeMap::new(),
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
        // Built outside the lock: the caller gets its payload back as given, the store keeps a
        // compact copy.
        let payload = Compact::from(&job.payload);
        let seq = self.lock().insert(&job, payload, now)?;
        Ok(JobRecord::from_new(self.tenant.clone(), job, seq, now))
    }

    /// The whole batch under one lock: its jobs get consecutive sequence numbers.
    async fn create_many(&self, jobs: Vec<NewJob>) -> QueueResult<Vec<QueueResult<JobRecord>>> {
        let now = self.clock.now_ms();
        let payloads: Vec<Compact> = jobs.iter().map(|job| Compact::from(&job.payload)).collect();
        let seqs: Vec<QueueResult<u64>> = {
            let mut inner = self.lock();
            jobs.iter().zip(payloads).map(|(job, payload)| inner.insert(job, payload, now)).collect()
        };
        Ok(jobs
            .into_iter()
            .zip(seqs)
            .map(|(job, seq)| seq.map(|seq| JobRecord::from_new(self.tenant.clone(), job, seq, now)))
            .collect())
    }

    async fn get(&self, id: &JobId) -> QueueResult<Option<JobRecord>> {
        Ok(self.lock().jobs.get(id.as_str()).map(|stored| stored.record(id.clone(), &self.tenant)))
    }

    async fn transition(&self, id: &JobId, mut update: JobUpdate) -> QueueResult<JobRecord> {
        let now = self.clock.now_ms();
        // The new result is kept aside: the record returned gets it by move, the store a compact
        // copy, and `apply` has nothing to clone.
        let result = update.result.take();
        let compact_result = result.as_ref().map(Compact::from);
        let mut inner = self.lock();
        let Some(stored) = inner.jobs.get_mut(id.as_str()) else {
            return Err(QueueError::NotFound { job: id.clone() });
        };
        let before = Slot::of(stored);
        let mut record = stored.head(id.clone(), &self.tenant);
        // `apply` leaves the record untouched on error, so there is nothing to undo.
        record.apply(&update, now)?;
        stored.status = record.status;
        stored.attempt = record.attempt;
        stored.lease_epoch = record.lease_epoch;
        stored.updated_at_ms = record.updated_at_ms;
        if update.error.is_some() {
            stored.set_error(record.error.as_deref());
        }
        if compact_result.is_some() {
            stored.result = compact_result;
        }
        record.payload = stored.payload.to_value();
        record.result = match result {
            Some(result) => Some(result),
            None => stored.result.as_ref().map(Compact::to_value),
        };
        let after = Slot::of(stored);
        inner.move_index(before, after);
        Ok(record)
    }

    async fn delete(&self, id: &JobId) -> QueueResult<bool> {
        let mut inner = self.lock();
        let Some(stored) = inner.jobs.remove(id.as_str()) else {
            return Ok(false);
        };
        let slot = Slot::of(&stored);
        inner.recount(Some(slot), None);
        inner.unindex(slot);
        Ok(true)
    }

    async fn scan_pending(&self, kind: JobKind) -> QueueResult<Vec<JobRecord>> {
        let inner = self.lock();
        Ok(inner.pending[kind_index(kind)]
            .values()
            .filter_map(|id| inner.jobs.get(id).map(|stored| stored.record(job_id(id), &self.tenant)))
            .collect())
    }

    async fn list(
        &self,
        kind: Option<JobKind>,
        status: JobStatus,
        limit: usize,
    ) -> QueueResult<Vec<JobRecord>> {
        let inner = self.lock();
        let mut found: Vec<(&Arc<str>, &Stored)> = if status.is_pending() {
            // Pending jobs are indexed; walk only those.
            let kinds: Vec<JobKind> = kind.map_or_else(|| JobKind::ALL.to_vec(), |k| vec![k]);
            kinds
                .into_iter()
                .flat_map(|k| inner.pending[kind_index(k)].values())
                .filter_map(|id| inner.jobs.get_key_value(id))
                .filter(|(_, r)| r.status == status)
                .collect()
        } else {
            inner
                .jobs
                .iter()
                .filter(|(_, r)| r.status == status && kind.is_none_or(|k| r.kind == k))
                .collect()
        };
        found.sort_unstable_by_key(|(_, r)| std::cmp::Reverse(r.seq));
        Ok(found
            .into_iter()
            .take(limit)
            .map(|(id, stored)| stored.record(job_id(id), &self.tenant))
            .collect())
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
        while let Some(((updated, _), _)) = inner.finished.first_key_value()
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    // The map's table holds records inline: a field added here costs every queued job.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_stored_record_takes_at_most_96_bytes() {
        assert!(std::mem::size_of::<Stored>() <= 96, "{} bytes", std::mem::size_of::<Stored>());
    }

    #[test]
    fn compact_json_converts_back_to_the_same_value() {
        let values = [
            json!(null),
            json!(true),
            json!(0.1),
            json!(-7),
            json!(u64::MAX),
            json!(1e300),
            json!("text with \"quotes\" and ünïcode"),
            json!([1, [2, {}], []]),
            json!({ "z": 1, "a": { "nested": [null, false] }, "": "" }),
        ];
        for value in values {
            assert_eq!(Compact::from(&value).to_value(), value);
            assert_eq!(Compact::from(value.clone()).to_value(), value);
        }
    }
}
