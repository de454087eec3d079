//! The distributed [`Limiter`]: permits are leases in Redis, so the caps hold across every process
//! of a tenant, and a process that dies without releasing leaks its permits for one lease at most.
//!
//! Each class has a ZSET `permits:<class>` of token -> lease deadline (ms). Acquiring is one
//! script that drops expired leases and then takes a permit of every asked class or of none. A
//! background task renews the deadlines of the tokens this limiter holds every third of a lease.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use lane_store::redis::{self, Script};
use lane_store::{RedisPool, TenantKeys, redis_error};
use queue_core::{
    Clock, LimitCaps, LimitClass, Limiter, PermitSet, PermitUsage, QueueResult, SystemClock, TenantId,
    acquisition_order,
};
use tokio::task::AbortHandle;

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/permits_acquire.lua")));

/// First wait after a refused acquire; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(2);
/// Longest wait between two tries of one acquire.
const MAX_BACKOFF: Duration = Duration::from_millis(50);
/// Shortest lease accepted; a shorter one could not be renewed in time.
const MIN_LEASE: Duration = Duration::from_millis(30);

/// Caps shared by every process of a tenant, enforced with leases in Redis.
///
/// - **Every process of a tenant must be configured with the same caps**: each acquire checks the
///   capacity it was given against the shared count, so a process with a larger cap would take
///   more than the others allow.
/// - Permits are leases of `lease` (at least 30 ms). This limiter renews the leases it holds every
///   `lease / 3` from one background task, started on the first acquire and ended when the
///   limiter is dropped. A process killed while holding permits stops renewing them, and they
///   are reclaimed by the next acquire after their deadline: a leak lasts one lease at most.
/// - Deadlines are read from each process's wall clock: the clocks of a tenant's processes must
///   agree to well within a lease.
/// - A capacity of 0 is treated as 1, as in the local limiter.
/// - A refused acquire waits and tries again (jittered backoff from 2 ms doubling to 50 ms), so
///   waiters are not served in arrival order. Dropping an acquire part-way holds nothing: permits
///   are taken all at once, and a try that was in flight when the future was dropped is undone.
/// - [`Limiter::release`] of a token that is not held is `Ok` and does nothing.
/// - Redis errors end the acquire with `QueueError::Unavailable` (or `Storage`), never a hang.
pub struct RedisLimiter {
    shared: Arc<Shared>,
    /// The renewal task, stopped when the limiter is dropped.
    renewer: Mutex<Option<AbortHandle>>,
}

struct Shared {
    pool: RedisPool,
    tenant: TenantId,
    keys: TenantKeys,
    caps: LimitCaps,
    lease: Duration,
    clock: SystemClock,
    /// Tokens this limiter holds, with their classes: what the renewal task renews.
    held: Mutex<HashMap<String, Vec<LimitClass>>>,
    /// Acquires that found a class full at least once.
    waits: AtomicU64,
    renewer_started: AtomicBool,
    /// Makes this limiter's tokens unique among every process of the tenant.
    instance: String,
    next_token: AtomicU64,
}

impl Shared {
    fn held(&self) -> MutexGuard<'_, HashMap<String, Vec<LimitClass>>> {
        // Single map operations only: a poisoned map is still consistent.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes every class in `classes` for `token`, or nothing: `Ok(None)` on success, else the
    /// first class that was full.
    async fn try_take(&self, classes: &[LimitClass], token: &str) -> QueueResult<Option<LimitClass>> {
        let now = self.clock.now_ms();
        let mut call = ACQUIRE.prepare_invoke();
        for &class in classes {
            call.key(self.keys.permits(class));
        }
        call.arg(now).arg(now.saturating_add(self.lease_ms())).arg(token);
        for &class in classes {
            call.arg(self.caps.of(class));
        }
        let mut conn = self.pool.get().await?;
        let full: usize = call.invoke_async(&mut conn).await.map_err(|e| redis_error(&e))?;
        Ok(full.checked_sub(1).and_then(|i| classes.get(i).copied()))
    }

    /// Removes `token` from the permits of `classes`.
    async fn give_back(&self, classes: &[LimitClass], token: &str) -> QueueResult<()> {
        if classes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for &class in classes {
            pipe.cmd("ZREM").arg(self.keys.permits(class)).arg(token).ignore();
        }
        let mut conn = self.pool.get().await?;
        pipe.exec_async(&mut conn).await.map_err(|e| redis_error(&e))
    }

    /// Pushes the deadline of every held token one lease ahead, in one pipeline.
    async fn renew(&self) -> QueueResult<()> {
        let held: Vec<(String, Vec<LimitClass>)> =
            self.held().iter().map(|(token, classes)| (token.clone(), classes.clone())).collect();
        if held.is_empty() {
            return Ok(());
        }
        let deadline = self.clock.now_ms().saturating_add(self.lease_ms());
        let mut pipe = redis::pipe();
        for (token, classes) in &held {
            for &class in classes {
                // XX: a lease that was already reclaimed is not brought back to life.
                pipe.cmd("ZADD").arg(self.keys.permits(class)).arg("XX").arg("CH").arg(deadline).arg(token);
            }
        }
        let mut conn = self.pool.get().await?;
        let changed: Vec<u64> = pipe.query_async(&mut conn).await.map_err(|e| redis_error(&e))?;
        let mut changed = changed.into_iter();
        for (token, classes) in &held {
            for &class in classes {
                if changed.next() == Some(0) && self.held().contains_key(token) {
                    tracing::warn!(
                        tenant = %self.tenant, %class, %token,
                        "a held permit's lease had expired before it was renewed; the cap may be exceeded"
                    );
                }
            }
        }
        Ok(())
    }
}

/// Renews the leases of the limiter behind `shared` until it is dropped.
async fn renew_until_dropped(shared: Weak<Shared>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        let Some(shared) = shared.upgrade() else { return };
        if let Err(e) = shared.renew().await {
            tracing::warn!(tenant = %shared.tenant, error = %e, "could not renew permit leases");
        }
    }
}

/// Undoes a try that may have taken permits when its acquire future is dropped mid-flight.
struct InFlight<'a> {
    shared: &'a Arc<Shared>,
    classes: &'a [LimitClass],
    token: &'a str,
    armed: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let shared = Arc::clone(self.shared);
        let classes = self.classes.to_vec();
        let token = self.token.to_owned();
        runtime.spawn(async move {
            if let Err(e) = shared.give_back(&classes, &token).await {
                tracing::debug!(tenant = %shared.tenant, error = %e, "could not undo a dropped acquire; its lease will expire");
            }
        });
    }
}

/// Jitter for backoff: a small xorshift generator, seeded randomly per acquire.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        Self(RandomState::new().build_hasher().finish() | 1)
    }

    /// A duration between half of `d` and `d`.
    fn spread(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let half = d / 2;
        let extra = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_micros(self.0 % extra)
    }
}

impl RedisLimiter {
    /// A limiter of `tenant`'s `caps` on `pool`, with permits leased for `lease` (at least
    /// 30 ms) and renewed while held.
    #[must_use]
    pub fn new(pool: RedisPool, tenant: &TenantId, caps: LimitCaps, lease: Duration) -> Self {
        let caps = LimitCaps {
            ocr: caps.ocr.max(1),
            llm: caps.llm.max(1),
            llm_student: caps.llm_student.max(1),
            llm_teacher: caps.llm_teacher.max(1),
        };
        let instance = format!(
            "{:x}-{:016x}",
            std::process::id(),
            RandomState::new().build_hasher().finish() ^ SystemClock.now_ms()
        );
        Self {
            shared: Arc::new(Shared {
                pool,
                tenant: tenant.clone(),
                keys: TenantKeys::new(tenant),
                caps,
                lease: lease.max(MIN_LEASE),
                clock: SystemClock,
                held: Mutex::new(HashMap::new()),
                waits: AtomicU64::new(0),
                renewer_started: AtomicBool::new(false),
                instance,
                next_token: AtomicU64::new(1),
            }),
            renewer: Mutex::new(None),
        }
    }

    /// The capacities in force, after clamping.
    #[must_use]
    pub fn caps(&self) -> LimitCaps {
        self.shared.caps
    }

    /// The lease of a permit, after clamping.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.shared.lease
    }

    /// How many acquires found a class full and had to wait (counted once per acquire).
    #[must_use]
    pub fn waits(&self) -> u64 {
        self.shared.waits.load(Ordering::Relaxed)
    }

    fn new_token(&self) -> String {
        format!("{}-{}", self.shared.instance, self.shared.next_token.fetch_add(1, Ordering::Relaxed))
    }

    /// Starts the renewal task once, on the runtime of the first acquire.
    fn ensure_renewer(&self) {
        if self.shared.renewer_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let task = tokio::spawn(renew_until_dropped(Arc::downgrade(&self.shared), self.shared.lease / 3));
        *self.renewer.lock().unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
    }
}

impl Drop for RedisLimiter {
    fn drop(&mut self) {
        if let Some(task) = self.renewer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            task.abort();
        }
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("tenant", &self.shared.tenant)
            .field("caps", &self.shared.caps)
            .field("lease", &self.shared.lease)
            .field("held", &self.shared.held().len())
            .field("waits", &self.waits())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn acquire(&self, classes: &[LimitClass]) -> QueueResult<PermitSet> {
        let classes = acquisition_order(classes);
        let token = self.new_token();
        if classes.is_empty() {
            return Ok(PermitSet { classes, token });
        }
        self.ensure_renewer();
        let mut backoff = FIRST_BACKOFF;
        let mut jitter = Jitter::new();
        let mut waited = false;
        loop {
            let outcome = {
                let mut in_flight =
                    InFlight { shared: &self.shared, classes: &classes, token: &token, armed: true };
                let outcome = self.shared.try_take(&classes, &token).await;
                // On an error the script may have run before its answer was lost: the guard
                // stays armed and undoes it.
                if let Ok(full) = &outcome {
                    if full.is_none() {
                        // No await between the script's answer and this insert: a held token is
                        // always known to the renewal task.
                        self.shared.held().insert(token.clone(), classes.clone());
                    }
                    in_flight.armed = false;
                }
                outcome?
            };
            let Some(full) = outcome else {
                return Ok(PermitSet { classes, token });
            };
            if !waited {
                waited = true;
                self.shared.waits.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(tenant = %self.shared.tenant, class = %full, "limiter waits");
            }
            tokio::time::sleep(jitter.spread(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn release(&self, permits: PermitSet) -> QueueResult<()> {
        // Forget it first: a token no longer renewed expires even if the removal below fails.
        self.shared.held().remove(&permits.token);
        self.shared.give_back(&permits.classes, &permits.token).await
    }

    async fn usage(&self) -> QueueResult<Vec<PermitUsage>> {
        let now = self.shared.clock.now_ms();
        let mut pipe = redis::pipe();
        for class in LimitClass::ALL {
            // Leases past their deadline are dead even before an acquire sweeps them.
            pipe.cmd("ZCOUNT").arg(self.shared.keys.permits(class)).arg(format!("({now}")).arg("+inf");
        }
        let mut conn = self.shared.pool.get().await?;
        let counts: Vec<usize> = pipe.query_async(&mut conn).await.map_err(|e| redis_error(&e))?;
        Ok(LimitClass::ALL
            .into_iter()
            .zip(counts)
            .map(|(class, in_use)| PermitUsage { class, in_use, capacity: self.shared.caps.of(class) })
            .collect())
    }
}
