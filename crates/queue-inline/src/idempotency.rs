//! The in-memory [`IdempotencyStore`]: maps a client's `request_id` to the job it created,
//! set-if-absent with a TTL, with expired keys pruned so memory stays bounded.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use queue_core::{IdempotencyClaim, IdempotencyStore, JobId, QueueResult, RequestId, SharedClock};

/// Idempotency keys of one process, each live for `ttl_ms` after it was claimed.
///
/// A key is live while `now < claimed_at + ttl_ms`; an expired key is treated as absent and
/// taken over by the next claim. A TTL of 0 therefore turns deduplication off. Every claim first
/// drops the keys that have expired, oldest first, so the map holds only live keys (plus those
/// that expired since the last claim).
pub struct MemoryIdempotencyStore {
    clock: SharedClock,
    ttl_ms: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<RequestId, Entry>,
    /// Every key by expiry, so pruning reads only the expired front.
    expiry: BTreeSet<(u64, RequestId)>,
}

struct Entry {
    job: JobId,
    expires_at_ms: u64,
}

impl Inner {
    fn prune(&mut self, now_ms: u64) {
        while let Some((expires, _)) = self.expiry.first()
            && *expires <= now_ms
        {
            if let Some((_, request)) = self.expiry.pop_first() {
                self.keys.remove(&request);
            }
        }
    }

    fn remove(&mut self, request: &RequestId) {
        if let Some(entry) = self.keys.remove(request) {
            self.expiry.remove(&(entry.expires_at_ms, request.clone()));
        }
    }
}

impl MemoryIdempotencyStore {
    /// An empty store whose keys live `ttl_ms` by `clock`.
    #[must_use]
    pub fn new(clock: SharedClock, ttl_ms: u64) -> Self {
        Self { clock, ttl_ms, inner: Mutex::new(Inner::default()) }
    }

    /// How many keys are held (live ones, and any that expired since the last claim).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The two maps are updated together before any panic point, so a poisoned lock still
        // guards consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.inner.try_lock().map(|inner| inner.keys.len()).ok();
        f.debug_struct("MemoryIdempotencyStore").field("ttl_ms", &self.ttl_ms).field("keys", &keys).finish()
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(&self, request: &RequestId, job: &JobId) -> QueueResult<IdempotencyClaim> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        // After pruning, every key left is live.
        inner.prune(now);
        if let Some(entry) = inner.keys.get(request) {
            return Ok(IdempotencyClaim::Existing(entry.job.clone()));
        }
        let expires_at_ms = now.saturating_add(self.ttl_ms);
        // A key that would be born expired (TTL 0) is not kept at all.
        if expires_at_ms > now {
            inner.keys.insert(request.clone(), Entry { job: job.clone(), expires_at_ms });
            inner.expiry.insert((expires_at_ms, request.clone()));
        }
        Ok(IdempotencyClaim::Claimed)
    }

    async fn release(&self, request: &RequestId, job: &JobId) -> QueueResult<()> {
        let mut inner = self.lock();
        if inner.keys.get(request).is_some_and(|entry| &entry.job == job) {
            inner.remove(request);
        }
        Ok(())
    }
}
