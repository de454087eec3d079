//! The in-process [`Limiter`]: one tokio semaphore per [`LimitClass`], taken in acquisition order
//! so two jobs can never wait on each other's permits.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use queue_core::{
    LimitCaps, LimitClass, Limiter, PermitSet, PermitUsage, QueueError, QueueResult, acquisition_order,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Caps for one process.
///
/// - A capacity of 0 is treated as 1: a class nobody could ever acquire would leave every job
///   that needs it waiting forever without a word, which is worse than running one at a time.
/// - Waiters of a class are served first come, first served (tokio semaphores are fair).
/// - [`Limiter::release`] of a token that is not held (already released, or never issued here)
///   is `Ok` and does nothing, so releasing twice can never free someone else's permits.
/// - Dropping an [`Limiter::acquire`] future part-way returns the permits it had already taken.
pub struct LocalLimiter {
    caps: LimitCaps,
    semaphores: [Arc<Semaphore>; LimitClass::ALL.len()],
    held: Mutex<HashMap<String, Vec<OwnedSemaphorePermit>>>,
    next_token: AtomicU64,
}

const fn class_index(class: LimitClass) -> usize {
    match class {
        LimitClass::Ocr => 0,
        LimitClass::Llm => 1,
        LimitClass::LlmStudent => 2,
        LimitClass::LlmTeacher => 3,
    }
}

impl LocalLimiter {
    /// A limiter enforcing `caps`, each clamped to `1..=Semaphore::MAX_PERMITS`.
    #[must_use]
    pub fn new(caps: LimitCaps) -> Self {
        let clamp = |n: usize| n.clamp(1, Semaphore::MAX_PERMITS);
        let caps = LimitCaps {
            ocr: clamp(caps.ocr),
            llm: clamp(caps.llm),
            llm_student: clamp(caps.llm_student),
            llm_teacher: clamp(caps.llm_teacher),
        };
        Self {
            caps,
            semaphores: LimitClass::ALL.map(|class| Arc::new(Semaphore::new(caps.of(class)))),
            held: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
        }
    }

    /// The capacities in force, after clamping.
    #[must_use]
    pub const fn caps(&self) -> LimitCaps {
        self.caps
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Vec<OwnedSemaphorePermit>>> {
        // Insert and remove are single map operations: a poisoned map is still consistent.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let in_use: Vec<usize> = LimitClass::ALL
            .iter()
            .map(|&c| self.caps.of(c).saturating_sub(self.semaphores[class_index(c)].available_permits()))
            .collect();
        f.debug_struct("LocalLimiter")
            .field("caps", &self.caps)
            .field("in_use", &in_use)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Limiter for LocalLimiter {
    async fn acquire(&self, classes: &[LimitClass]) -> QueueResult<PermitSet> {
        let classes = acquisition_order(classes);
        // Permits live in this local until the set is complete: if this future is dropped while
        // waiting for a later class, the earlier permits are dropped with it and go back.
        let mut permits = Vec::with_capacity(classes.len());
        for &class in &classes {
            let semaphore = Arc::clone(&self.semaphores[class_index(class)]);
            let permit = semaphore
                .acquire_owned()
                .await
                .map_err(|_| QueueError::Unavailable(format!("the {class} limiter is closed")))?;
            permits.push(permit);
        }
        let token = format!("local-{}", self.next_token.fetch_add(1, Ordering::Relaxed));
        // No await between the last permit and this insert, so nothing can be lost in between.
        // An empty set holds nothing and is not remembered.
        if !permits.is_empty() {
            self.held().insert(token.clone(), permits);
        }
        Ok(PermitSet { classes, token })
    }

    async fn release(&self, permits: PermitSet) -> QueueResult<()> {
        let released = self.held().remove(&permits.token);
        if released.is_none() && !permits.classes.is_empty() {
            tracing::debug!(token = %permits.token, "release of permits that are not held; ignored");
        }
        // Dropping the permits (outside the map's lock) returns them to their semaphores.
        drop(released);
        Ok(())
    }

    async fn usage(&self) -> QueueResult<Vec<PermitUsage>> {
        Ok(LimitClass::ALL
            .iter()
            .map(|&class| {
                let capacity = self.caps.of(class);
                let available = self.semaphores[class_index(class)].available_permits();
                PermitUsage { class, in_use: capacity.saturating_sub(available), capacity }
            })
            .collect())
    }
}
