//! `RedisQueueBackend`: the `QueueBackend` on Redis. Producers enqueue through Lua scripts;
//! workers (in `laneway serve` or `laneway worker` processes) claim batches atomically with the
//! state change and a lease, renew leases while jobs run, record outcomes fenced by epoch, and a
//! reaper in every process returns expired leases and due retries to the ready lists.
//!
//! Idle workers wait on a blocking `BLPOP` of a wake-up list, on a dedicated connection whose
//! response timeout exceeds the block; everything else goes through the pool.
//!
//! A process that runs workers registers itself in the tenant's worker registry
//! ([`RedisWorkerRegistry`]): its entry is written at start, refreshed by every heartbeat and
//! removed at stop; entries whose heartbeat is older than three heartbeat intervals are stale,
//! and the reaper of any live process prunes them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lane_store::redis::{self, Value};
use lane_store::{RedisConn, RedisLaneStore, RedisPool, TenantKeys, redis_error};
use queue_core::{
    ChatEnqueueReceipt, ChatLaneStore, HandlerError, HandlerSet, JobId, JobKind, JobMetrics, JobRecord,
    JobStatus, JobStore, LaneClaim, LaneEnqueue, LaneId, LimitClass, Limiter, NewJob, PermitSet,
    ProfileUpdate, QueueBackend, QueueError, QueueResult, SharedClock, Submitted, TenantId,
    acquisition_order, check_batch,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::combine::{Combiner, Lead, Waiter, answer_each};
use crate::scripts;
use crate::store::{CLAIM_FIELDS, parse_claimed, parse_handed};

/// How the Redis backend behaves.
#[derive(Debug, Clone)]
pub struct RedisBackendConfig {
    /// Whether this process runs workers (a producer-only process sets it false).
    pub run_workers: bool,
    /// Chat jobs run at once by this process.
    pub chat_concurrency: usize,
    /// Uploads run at once by this process.
    pub upload_concurrency: usize,
    /// Exams run at once by this process.
    pub exam_concurrency: usize,
    /// Profile-update batches run at once by this process.
    pub profile_concurrency: usize,
    /// Most profile updates merged into one handler call.
    pub profile_batch_max: usize,
    /// Most jobs claimed in one round trip.
    pub claim_batch_max: usize,
    /// A slot (chat or not; profile-update batches excepted) whose handler ran for less than this
    /// does not wait for its outcome's call (which claims the slot's next job) before it runs a
    /// next job: its calls claim up to two jobs ahead, so it has one to run while a call is on its
    /// way, and it keeps up to two calls in flight. For handlers that run no longer than a round
    /// trip, waiting for each call would take most of a slot's time. Jobs claimed ahead are
    /// leased to this process (renewed, handed back at stop, re-queued by the reaper if it dies)
    /// but not running: with quick handlers a process holds up to three jobs per slot. A slower
    /// handler's slot waits for each call and claims only its next job. `Duration::ZERO` turns
    /// claiming ahead off.
    pub claim_ahead_below: Duration,
    /// Attempts before a failing job is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Lease of a non-chat job held by a worker (a chat job's lease is its lane's claim, under the
    /// lane store's claim TTL, [`RedisLaneStore::claim_ttl_ms`]).
    pub lease: Duration,
    /// How often running jobs renew their leases.
    pub heartbeat_interval: Duration,
    /// How often the reaper runs.
    pub reaper_interval: Duration,
    /// How long an idle worker blocks waiting for work before looking again.
    pub block: Duration,
    /// The short lease a non-chat job is first claimed under, by a worker's own claim (its fetch
    /// loop's, or an outcome call's claim of the slot's next jobs) or by a submit that hands it
    /// straight to an idle worker (a worker whose last claim found too few jobs registers as
    /// idle, and the next submit claims its job for it, so that it starts without a claim round
    /// trip of its own). The worker that holds the job lengthens it to [`Self::lease`] within a
    /// third of it: every third of it for the jobs it claimed (one call for all of them), a third
    /// of the way for a job handed to it. It bounds how long a job waits for the reaper when the
    /// answer of the call that claimed it is lost (a call that timed out but that Redis ran), or
    /// when its worker dies before it lengthens the lease: a worker claims up to two jobs ahead
    /// of the one it runs. A hand-off's is set by the submitting process; a claim's is at most
    /// [`Self::lease`].
    pub short_lease: Duration,
    /// How long `stop` lets running jobs finish before handing them back.
    pub stop_deadline: Duration,
    /// How long finished records are kept. A record its workers finish gets no TTL: the
    /// retention loop deletes it, so it is gone within `retention + purge_interval`.
    pub retention: Duration,
    /// How often retention runs (`purge_finished(now - retention)`, in every process: at start
    /// and then at this interval where workers run, from one interval after start where they
    /// do not; the orphan sweep rides along in worker processes only).
    pub purge_interval: Duration,
    /// The host name this process registers its workers under; `None` reads the machine's
    /// ([`local_host_name`]).
    pub worker_host: Option<String>,
    /// Where this process counts job events (the tenant's metrics; a fresh set by default).
    pub metrics: Arc<JobMetrics>,
}

impl Default for RedisBackendConfig {
    fn default() -> Self {
        Self {
            run_workers: true,
            chat_concurrency: 4,
            upload_concurrency: 2,
            exam_concurrency: 2,
            profile_concurrency: 1,
            profile_batch_max: 64,
            claim_batch_max: 32,
            claim_ahead_below: Duration::from_millis(1),
            max_attempts: 3,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            lease: Duration::from_secs(600),
            heartbeat_interval: Duration::from_secs(60),
            reaper_interval: Duration::from_secs(1),
            block: Duration::from_secs(1),
            short_lease: Duration::from_secs(30),
            stop_deadline: Duration::from_secs(10),
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(600),
            worker_host: None,
            metrics: Arc::default(),
        }
    }
}

/// What the backend works on.
#[derive(Debug, Clone)]
pub struct RedisBackendDeps {
    /// Connections.
    pub pool: RedisPool,
    /// The tenant.
    pub tenant: TenantId,
    /// Job records (a `RedisJobStore` on the same Redis).
    pub store: Arc<dyn JobStore>,
    /// Chat lanes, on the same Redis, with dispatch on: a chat submit runs the store's enqueue Lua
    /// inside the backend's own script, under the store's configuration (hence the concrete type).
    pub lanes: Arc<RedisLaneStore>,
    /// Capacity caps (a `RedisLimiter`, so they hold across processes).
    pub limiter: Arc<dyn Limiter>,
    /// What runs each kind.
    pub handlers: HandlerSet,
    /// Time for leases.
    pub clock: SharedClock,
}

/// Pending ids one round trip of the orphan sweep reads.
const SWEEP_PAGE: usize = 1_000;

/// Counters of this process.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct RedisBackendStats {
    /// Jobs this process enqueued.
    pub enqueued: u64,
    /// Attempts this process started.
    pub started: u64,
    /// Jobs this process finished `done`.
    pub completed: u64,
    /// Jobs this process dead-lettered.
    pub failed: u64,
    /// Attempts this process scheduled again.
    pub retried: u64,
    /// Results of this process rejected because their lease was no longer current.
    pub fenced: u64,
    /// Expired leases this process's reaper re-dispatched.
    pub lease_expiries: u64,
    /// Jobs handed back by a stop.
    pub handed_back: u64,
    /// Jobs this process's idle workers were handed by a submit (claimed for them; read by the
    /// worker's block, or by its next claim when the block did not read them), rather than
    /// claimed themselves.
    pub handed_over: u64,
}

#[derive(Debug, Default)]
struct Stats {
    enqueued: AtomicU64,
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    fenced: AtomicU64,
    lease_expiries: AtomicU64,
    handed_back: AtomicU64,
    handed_over: AtomicU64,
}

#[derive(Debug)]
struct Held {
    kind: JobKind,
    epoch: u64,
    /// The attempt the claim started (the fence's fast path, see `complete_many.lua`).
    attempt: u32,
    claim: Option<LaneClaim>,
    permits: Option<PermitSet>,
    /// Claimed by this process under the short lease and not lengthened yet
    /// (`lengthen_loop`).
    short: bool,
}

impl Held {
    /// A non-chat job of `kind` claimed under the epoch `record` carries (its lease in
    /// `inflight`), under the short lease when `short`.
    const fn plain(kind: JobKind, record: &JobRecord, short: bool) -> Self {
        Self { kind, epoch: record.lease_epoch, attempt: record.attempt, claim: None, permits: None, short }
    }
}

#[derive(Debug, Default)]
struct Lifecycle {
    shutdown: Option<watch::Sender<bool>>,
    fetchers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

struct Inner {
    config: RedisBackendConfig,
    deps: RedisBackendDeps,
    keys: TenantKeys,
    stats: Stats,
    accepting: AtomicBool,
    held: Mutex<HashMap<JobId, Held>>,
    /// Timers of held jobs: chat jobs waiting out a retry's backoff before their heads are
    /// claimed again, and the lengthening of handed-over jobs' short leases (a stop or a kill
    /// aborts them: the stop hands the jobs back, a crash leaves them to their leases).
    timers: Mutex<JoinSet<()>>,
    lifecycle: tokio::sync::Mutex<Lifecycle>,
    /// This process's entry in the worker registry.
    worker_id: String,
    worker_host: String,
    started_ms: AtomicU64,
    /// Whether heartbeats may (re-)register the entry: true from start until stop or kill.
    registered: AtomicBool,
    registry: RedisWorkerRegistry,
    /// Outcomes on their way to Redis, sent together in `complete_many` calls
    /// (`complete_batched`).
    completions: Combiner<Completion, QueueResult<CompleteAnswer>>,
    /// Single non-chat submits on their way to Redis, sent together in `submit_plain` calls
    /// (`submit_combined`).
    submits: Combiner<NewJob, QueueResult<Submitted>>,
    /// Single chat submits on their way to Redis, sent together in `submit_chat` calls
    /// (`submit_combined`).
    chat_submits: Combiner<NewJob, QueueResult<Submitted>>,
    /// This value itself, to spawn the flush of what arrived during a flush.
    me: Weak<Self>,
}

/// One outcome to record.
struct Completion {
    job: JobId,
    epoch: u64,
    /// The attempt the worker's claim started: with the epoch, what the record's state must
    /// begin with for the outcome's fast fence (`complete_many.lua`).
    attempt: u32,
    kind: JobKind,
    /// A chat job's lane.
    lane: Option<LaneId>,
    outcome: &'static str,
    value: String,
    due_ms: u64,
    claim_next: usize,
}

/// A completion's answer as the script gives it: `ok`, `notfound` or `stale:<epoch>`, the
/// records of the non-chat jobs claimed next (each the values of `CLAIM_FIELDS`, see
/// [`parse_claimed`]), and the chat jobs started next for the slot (`start_chat` answers).
type CompleteAnswer = (String, Vec<Vec<Option<String>>>, Vec<Vec<Value>>);

/// An outcome waiting to be sent, and where its answer goes.
type Waiting = Waiter<Completion, QueueResult<CompleteAnswer>>;

/// Which of the backend's combiners a flush serves.
type Pick<T, R> = fn(&Inner) -> &Combiner<T, R>;
/// What sends one batch of a combiner and answers each request.
type SendBatch<T, R> =
    for<'a> fn(&'a Inner, Vec<Waiter<T, R>>) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Most outcomes one `complete_many` call carries.
const COMPLETE_BATCH_MAX: usize = 64;

/// Most single submits one combined `submit_plain` call carries.
const SUBMIT_BATCH_MAX: usize = 64;

/// Most `complete_many` (or combined `submit_plain`) calls in flight at once, per combiner.
/// With two, Redis runs one batch while this process handles the answer of the other (starts
/// the jobs claimed next, collects their outcomes): with one, each side waits for the other and
/// neither is busy all the time.
const FLUSHES_IN_FLIGHT: usize = 2;

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueueBackend").field("tenant", &self.deps.tenant).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Single-operation critical sections: a poisoned map is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How many jobs a slot's outcome call claims for the slot: none once the process
/// stops taking work; otherwise enough that the slot has two jobs ahead of the one that just
/// finished when its handler is `quick`, one when it is not, counting the jobs it has ahead
/// already (`ahead`: claimed and not run, or coming with calls on their way).
fn slot_claims(accepting: bool, quick: bool, ahead: usize) -> usize {
    if !accepting {
        return 0;
    }
    let hold = if quick { 2 } else { 1 };
    hold - ahead.min(hold)
}

/// The jobs an outcome call claimed, from its task; none when the task failed (their leases
/// run out and the reaper queues them again).
fn claims_of(call: Result<Vec<Claimed>, tokio::task::JoinError>) -> Vec<Claimed> {
    call.unwrap_or_else(|e| {
        warn!(error = %e, "an outcome call's task failed; the jobs it claimed wait for their leases to run out");
        Vec::new()
    })
}

/// The `lane` field of a job's log lines: empty for kinds without lanes.
fn lane_of(record: &JobRecord) -> &str {
    record.lane.as_ref().map_or("", LaneId::as_str)
}

/// What an idle fetch loop's wait ended with.
enum Wake {
    /// The process stops.
    Stop,
    /// A wake-up token, a block that timed out or failed: claim again.
    Look,
    /// A job a submit claimed for this worker, and when its short lease runs out (ms).
    Handed(Box<Claimed>, u64),
}

/// One claimed piece of work.
enum Claimed {
    Plain(JobRecord),
    Chat(LaneClaim, JobRecord),
    /// A current chat claim whose job is already finished or gone: move the lane on.
    FinishLane(LaneClaim),
}

/// The Redis backend of one tenant. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisQueueBackend {
    inner: Arc<Inner>,
}

impl RedisQueueBackend {
    /// A stopped backend.
    #[must_use]
    pub fn new(config: RedisBackendConfig, deps: RedisBackendDeps) -> Self {
        let keys = TenantKeys::new(&deps.tenant);
        let worker_host = config.worker_host.clone().unwrap_or_else(local_host_name);
        let worker_id = new_worker_id(&worker_host);
        let registry = RedisWorkerRegistry::new(deps.pool.clone(), &deps.tenant);
        Self {
            inner: Arc::new_cyclic(|me| Inner {
                config,
                deps,
                keys,
                stats: Stats::default(),
                accepting: AtomicBool::new(false),
                held: Mutex::new(HashMap::new()),
                timers: Mutex::new(JoinSet::new()),
                lifecycle: tokio::sync::Mutex::new(Lifecycle::default()),
                worker_id,
                worker_host,
                started_ms: AtomicU64::new(0),
                registered: AtomicBool::new(false),
                registry,
                completions: Combiner::new(COMPLETE_BATCH_MAX, FLUSHES_IN_FLIGHT),
                submits: Combiner::new(SUBMIT_BATCH_MAX, FLUSHES_IN_FLIGHT),
                chat_submits: Combiner::new(SUBMIT_BATCH_MAX, FLUSHES_IN_FLIGHT),
                me: me.clone(),
            }),
        }
    }

    /// This process's id in the tenant's worker registry (`host:pid:random`), registered while
    /// its workers run.
    #[must_use]
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// The counters of this process.
    #[must_use]
    pub fn stats(&self) -> RedisBackendStats {
        let s = &self.inner.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RedisBackendStats {
            enqueued: g(&s.enqueued),
            started: g(&s.started),
            completed: g(&s.completed),
            failed: g(&s.failed),
            retried: g(&s.retried),
            fenced: g(&s.fenced),
            lease_expiries: g(&s.lease_expiries),
            handed_back: g(&s.handed_back),
            handed_over: g(&s.handed_over),
        }
    }

    /// Jobs this process holds now.
    #[must_use]
    pub fn held(&self) -> usize {
        lock(&self.inner.held).len()
    }

    /// Ends every task at once, handing nothing back, as a crash would (tests). Leases then
    /// expire and the reaper of a live process re-dispatches the jobs.
    pub async fn kill(&self) {
        let mut life = self.inner.lifecycle.lock().await;
        self.inner.accepting.store(false, Ordering::SeqCst);
        // A crash leaves its registry entry behind: it turns stale and a live reaper prunes it.
        self.inner.registered.store(false, Ordering::SeqCst);
        life.shutdown = None;
        let life = &mut *life;
        for t in life.fetchers.drain(..).chain(life.background.drain(..)) {
            t.abort();
        }
        lock(&self.inner.timers).abort_all();
        lock(&self.inner.held).clear();
    }

    fn ensure_running(&self) -> QueueResult<()> {
        if self.inner.accepting.load(Ordering::SeqCst) { Ok(()) } else { Err(QueueError::NotRunning) }
    }

    async fn enqueue_plain(&self, kind: JobKind, job_id: JobId) -> QueueResult<()> {
        self.ensure_running()?;
        let keys = &self.inner.keys;
        let mut conn = self.inner.deps.pool.get().await?;
        let outcome: String = scripts::ENQUEUE_PLAIN
            .key(keys.job(&job_id))
            .key(keys.ready(kind))
            .key(keys.signal(kind))
            .arg(job_id.as_str())
            .arg(kind.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(&e))?;
        match outcome.as_str() {
            "ok" => {
                self.inner.stats.enqueued.fetch_add(1, Ordering::Relaxed);
                self.inner.config.metrics.record_enqueued(kind);
                info!(tenant = %self.inner.deps.tenant, lane = "", job = %job_id, kind = kind.as_str(), "job enqueued");
                Ok(())
            }
            "notfound" => Err(QueueError::NotFound { job: job_id }),
            other => match other.split_once(':') {
                Some(("kind", actual)) => Err(QueueError::invalid(
                    "job_id",
                    format!("job {job_id} is a {actual} job, not a {kind} job"),
                )),
                Some(("status", actual)) => Err(QueueError::InvalidTransition {
                    from: JobStatus::parse(actual)?,
                    to: JobStatus::Queued,
                }),
                _ => Err(QueueError::Storage(format!("enqueue script answered {other:?}"))),
            },
        }
    }

    /// Puts an existing chat job in `lane` (the lane store's script claims an idle lane and
    /// pushes the dispatch in one step).
    async fn enqueue_in_lane(&self, job_id: &JobId, lane: &LaneId) -> QueueResult<ChatEnqueueReceipt> {
        let outcome = self.inner.deps.lanes.enqueue(job_id, lane).await?;
        self.inner.enqueued_in_lane(job_id, lane, &outcome);
        Ok(outcome.receipt)
    }

    /// Puts back on its ready list every pending job of `kind` that no list or lease holds.
    ///
    /// It reads the ready list, the in-flight and delayed sets and the last sequence number
    /// once, then walks the pending index by sequence number, [`SWEEP_PAGE`] ids a round trip,
    /// up to that last number: memory stays bounded by the lists, not by the records, and a job
    /// submitted during the sweep is left alone.
    async fn scan_plain(&self, kind: JobKind) -> QueueResult<usize> {
        self.ensure_running()?;
        let keys = &self.inner.keys;
        let mut conn = self.inner.deps.pool.get().await?;
        let (ready, inflight, delayed, last): (Vec<String>, Vec<String>, Vec<String>, Option<u64>) =
            redis::pipe()
                .lrange(keys.ready(kind), 0, -1)
                .zrange(keys.inflight(), 0, -1)
                .zrange(keys.delayed(), 0, -1)
                .get(keys.seq())
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(&e))?;
        let Some(last) = last else { return Ok(0) };
        let held: HashSet<String> = ready
            .into_iter()
            .chain(inflight)
            .chain(delayed.into_iter().filter_map(|m| m.split_once('|').map(|(_, id)| id.to_owned())))
            .collect();
        let mut n = 0;
        let mut from = 0_u64;
        loop {
            let page: Vec<(String, u64)> = redis::cmd("ZRANGE")
                .arg(keys.pending(kind))
                .arg(from)
                .arg(last)
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(SWEEP_PAGE)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(&e))?;
            let Some(&(_, top)) = page.last() else { break };
            let orphans: Vec<&str> =
                page.iter().map(|(id, _)| id.as_str()).filter(|id| !held.contains(*id)).collect();
            if !orphans.is_empty() {
                // Orphaned: in no list and under no lease. The claim script takes a `processing`
                // record without a live lease over under a new epoch, and drops an entry of a job
                // that finished or that a live worker holds meanwhile.
                let _: () = redis::pipe()
                    .rpush(keys.ready(kind), &orphans)
                    .lpush(keys.signal(kind), "1")
                    .ltrim(keys.signal(kind), 0, 63)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| redis_error(&e))?;
                n += orphans.len();
            }
            if page.len() < SWEEP_PAGE || top >= last {
                break;
            }
            from = top + 1;
        }
        Ok(n)
    }

    /// Whether a non-chat job may be orphaned: [`scripts::ORPHAN_GAP`] counts, in one O(1) call,
    /// the pending jobs that no list or lease accounts for.
    async fn plain_orphans_possible(&self) -> QueueResult<bool> {
        let keys = &self.inner.keys;
        let plain = [JobKind::Upload, JobKind::Exam, JobKind::ProfileUpdate];
        let mut call = scripts::ORPHAN_GAP.prepare_invoke();
        for kind in plain {
            call.key(keys.pending(kind));
        }
        for kind in plain {
            call.key(keys.ready(kind));
        }
        call.key(keys.inflight()).key(keys.delayed());
        let mut conn = self.inner.deps.pool.get().await?;
        let gap: i64 = call.invoke_async(&mut conn).await.map_err(|e| redis_error(&e))?;
        Ok(gap > 0)
    }

    /// Whether a chat job may be orphaned: [`scripts::CHAT_ORPHAN_GAP`] counts, in one call
    /// over the active lanes, the pending chat jobs that no lane accounts for.
    async fn chat_orphans_possible(&self) -> QueueResult<bool> {
        let keys = &self.inner.keys;
        let mut conn = self.inner.deps.pool.get().await?;
        let gap: i64 = scripts::CHAT_ORPHAN_GAP
            .key(keys.pending(JobKind::Chat))
            .key(keys.lanes())
            .arg(keys.prefix())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(&e))?;
        Ok(gap > 0)
    }
}

impl RedisQueueBackend {
    /// Re-dispatches pending jobs that no list, lane or lease holds (see `scan_pending_*`);
    /// returns how many.
    ///
    /// # Errors
    /// A Redis error.
    pub async fn sweep_orphans(&self) -> QueueResult<usize> {
        // Each half counts first and walks the pending jobs only when some are unaccounted for:
        // a worker that starts behind a million queued jobs starts at once.
        let mut n = 0;
        if self.chat_orphans_possible().await? {
            n += self.scan_pending_chat_jobs().await?;
        }
        if self.plain_orphans_possible().await? {
            for kind in [JobKind::Upload, JobKind::Exam, JobKind::ProfileUpdate] {
                n += self.scan_plain(kind).await?;
            }
        }
        Ok(n)
    }
}

#[async_trait]
impl QueueBackend for RedisQueueBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn enqueue_upload_job(&self, job_id: JobId) -> QueueResult<()> {
        self.enqueue_plain(JobKind::Upload, job_id).await
    }

    async fn enqueue_exam_job(&self, job_id: JobId) -> QueueResult<()> {
        self.enqueue_plain(JobKind::Exam, job_id).await
    }

    async fn enqueue_profile_update(&self, payload: ProfileUpdate) -> QueueResult<()> {
        self.enqueue_plain(JobKind::ProfileUpdate, payload.job_id).await
    }

    async fn enqueue_chat_job(
        &self,
        job_id: JobId,
        lane_id: Option<LaneId>,
    ) -> QueueResult<ChatEnqueueReceipt> {
        self.ensure_running()?;
        let record = self
            .inner
            .deps
            .store
            .get(&job_id)
            .await?
            .ok_or_else(|| QueueError::NotFound { job: job_id.clone() })?;
        if record.kind != JobKind::Chat {
            return Err(QueueError::invalid(
                "job_id",
                format!("job {job_id} is a {} job, not a chat job", record.kind),
            ));
        }
        let Some(lane) = lane_id.or(record.lane) else {
            return Err(QueueError::invalid("lane_id", "required for a chat job without a lane"));
        };
        self.enqueue_in_lane(&job_id, &lane).await
    }

    /// Every job goes through a submit combiner, one for chat jobs and one for the others: one
    /// `submit_chat` call (each job's record and lane, all or nothing per job) or one
    /// `submit_plain` call carries the submits that arrive together (from concurrent producers),
    /// one round trip when alone. Either script writes the record where this backend's own job
    /// store reads: `store` is not used.
    async fn submit(&self, _store: Arc<dyn JobStore>, job: NewJob) -> QueueResult<Submitted> {
        self.ensure_running()?;
        if job.kind == JobKind::Chat {
            chat_lane(&job)?;
            return self.inner.submit_combined(job, |inner| &inner.chat_submits).await;
        }
        self.inner.submit_combined(job, |inner| &inner.submits).await
    }

    /// Non-chat jobs: one `submit_plain` call for all of them (records, ready lists, one
    /// wake-up per kind): one round trip for the batch. Chat jobs: one `submit_chat` call for
    /// all of them, which takes them one after the other, so that a lane takes them in the
    /// batch's order (a chat job without a lane gets its error alone). As in `submit`, `store`
    /// is not used.
    async fn submit_many(
        &self,
        _store: Arc<dyn JobStore>,
        jobs: Vec<NewJob>,
    ) -> QueueResult<Vec<QueueResult<Submitted>>> {
        check_batch(jobs.len())?;
        self.ensure_running()?;
        let mut results: Vec<Option<QueueResult<Submitted>>> = Vec::with_capacity(jobs.len());
        let (mut plain, mut chat) = (Vec::new(), Vec::new());
        for (at, job) in jobs.into_iter().enumerate() {
            results.push(None);
            if job.kind == JobKind::Chat { chat.push((at, job)) } else { plain.push((at, job)) }
        }
        if !plain.is_empty() {
            for ((at, _), result) in plain.iter().zip(self.inner.submit_plain(&plain).await?) {
                results[*at] = Some(result);
            }
        }
        // A chat job without a lane gets its error; the others go in one call.
        chat.retain(|(at, job)| match chat_lane(job) {
            Ok(_) => true,
            Err(e) => {
                results[*at] = Some(Err(e));
                false
            }
        });
        if !chat.is_empty() {
            match self.inner.submit_chats(&chat).await {
                Ok(answers) => {
                    for ((at, _), result) in chat.iter().zip(answers) {
                        results[*at] = Some(result);
                    }
                }
                // The batch's non-chat jobs may be accepted already: the chat call's error is
                // each chat job's result, not the whole batch's.
                Err(e) => {
                    for (at, _) in &chat {
                        results[*at] = Some(Err(e.clone()));
                    }
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(QueueError::Storage("a job of the batch got no result".into()))))
            .collect())
    }

    async fn scan_pending_upload_jobs(&self) -> QueueResult<usize> {
        self.scan_plain(JobKind::Upload).await
    }

    async fn scan_pending_exam_jobs(&self) -> QueueResult<usize> {
        self.scan_plain(JobKind::Exam).await
    }

    async fn scan_pending_chat_jobs(&self) -> QueueResult<usize> {
        self.ensure_running()?;
        let mut n = 0;
        for record in self.inner.deps.store.scan_pending(JobKind::Chat).await? {
            let Some(lane) = record.lane.clone() else { continue };
            if self.inner.deps.lanes.restore(&record.id, &lane).await?.added {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn start(&self) -> QueueResult<()> {
        let mut life = self.inner.lifecycle.lock().await;
        if life.shutdown.is_some() {
            return Ok(());
        }
        let (tx, rx) = watch::channel(false);
        // Before the fetch loops: a slot that finds the backend not accepting claims no next job
        // with its outcome, and the jobs claimed at once would each take a claim of their own.
        self.inner.accepting.store(true, Ordering::SeqCst);
        let c = &self.inner.config;
        if c.run_workers {
            for (kind, n) in [
                (JobKind::Chat, c.chat_concurrency),
                (JobKind::Upload, c.upload_concurrency),
                (JobKind::Exam, c.exam_concurrency),
                (JobKind::ProfileUpdate, c.profile_concurrency),
            ] {
                let span = info_span!("fetcher", tenant = %self.inner.deps.tenant, kind = kind.as_str());
                life.fetchers.push(tokio::spawn(
                    Inner::fetch_loop(self.inner.clone(), kind, n.max(1), rx.clone()).instrument(span),
                ));
            }
            life.background.push(tokio::spawn(Inner::heartbeat_loop(self.inner.clone())));
            if self.inner.claims_short() {
                life.background.push(tokio::spawn(Inner::lengthen_loop(self.inner.clone())));
            }
            let span = info_span!("reaper", tenant = %self.inner.deps.tenant);
            life.background
                .push(tokio::spawn(Inner::reaper_loop(self.inner.clone(), rx.clone()).instrument(span)));
            self.inner.started_ms.store(self.inner.deps.clock.now_ms(), Ordering::SeqCst);
            self.inner.registered.store(true, Ordering::SeqCst);
            if let Err(e) = self.inner.registry.register(&self.inner.worker_id, &self.inner.entry()).await {
                // Not fatal: the next heartbeat registers the entry again.
                warn!(error = %e, "could not register this worker; the next heartbeat retries");
            }
        }
        // Retention runs in every process, with workers or without: the records the workers
        // finish have no TTL, so a tenant served by producer-only processes while its workers are
        // down still sees them deleted on time.
        life.background.push(tokio::spawn(Inner::purge_loop(self.inner.clone(), rx)));
        life.shutdown = Some(tx);
        info!(tenant = %self.inner.deps.tenant, workers = c.run_workers, "redis backend started");
        let run_workers = c.run_workers;
        drop(life);
        if run_workers {
            // A caller of the two-step API (`JobStore::create`, then `enqueue_*`) that died
            // between the two leaves a pending job in no list and under no lease; a worker
            // process picks such orphans up when it starts (and the retention loop sweeps again
            // periodically). Idempotent.
            if let Err(e) = self.sweep_orphans().await {
                warn!(error = %e, "orphan sweep at start failed; the periodic sweep retries");
            }
        }
        Ok(())
    }

    async fn stop(&self) -> QueueResult<()> {
        let mut life = self.inner.lifecycle.lock().await;
        let Some(shutdown) = life.shutdown.take() else {
            return Ok(());
        };
        self.inner.accepting.store(false, Ordering::SeqCst);
        let _ = shutdown.send(true);
        // Each fetcher waits for its own running jobs up to the deadline, then aborts them.
        let margin = self.inner.config.stop_deadline + Duration::from_secs(2);
        for f in life.fetchers.drain(..) {
            let abort = f.abort_handle();
            if tokio::time::timeout(margin, f).await.is_err() {
                abort.abort();
            }
        }
        // No heartbeat may register the entry again once the stop removes it.
        let was_registered = self.inner.registered.swap(false, Ordering::SeqCst);
        for b in life.background.drain(..) {
            b.abort();
        }
        lock(&self.inner.timers).abort_all();
        self.inner.hand_back().await;
        if was_registered && let Err(e) = self.inner.registry.remove(&self.inner.worker_id).await {
            warn!(error = %e, "could not remove this worker from the registry; it will turn stale");
        }
        info!(tenant = %self.inner.deps.tenant, "redis backend stopped");
        Ok(())
    }
}

impl Inner {
    /// Creates and queues non-chat jobs, one or many, in one `submit_plain` call.
    async fn submit_plain(&self, jobs: &[(usize, NewJob)]) -> QueueResult<Vec<QueueResult<Submitted>>> {
        let keys = &self.keys;
        let tenant = &self.deps.tenant;
        let now = self.deps.clock.now_ms();
        let mut conn = self.deps.pool.get().await?;
        // One script call for one job or a whole batch: one wake-up per kind, not per job. A lone
        // job goes through the lighter `submit_one`, with the same arguments, answering its seq
        // alone (a table answer costs Redis seven field lookups to convert).
        let lone = jobs.len() == 1;
        let mut call =
            if lone { scripts::SUBMIT_ONE.prepare_invoke() } else { scripts::SUBMIT_PLAIN.prepare_invoke() };
        call.key(keys.seq())
            .arg(tenant.as_str())
            .arg(now)
            .arg(keys.prefix())
            .arg(ms(self.config.short_lease));
        for (_, job) in jobs {
            let payload = serde_json::to_string(&job.payload).map_err(QueueError::storage)?;
            call.arg(job.id.as_str())
                .arg(job.kind.as_str())
                .arg(job.lane.as_ref().map_or("", LaneId::as_str))
                .arg(job.request_id.as_ref().map_or("", queue_core::RequestId::as_str))
                .arg(payload);
        }
        let seqs: Vec<u64> = if lone {
            vec![call.invoke_async(&mut conn).await.map_err(|e| redis_error(&e))?]
        } else {
            call.invoke_async(&mut conn).await.map_err(|e| redis_error(&e))?
        };
        if seqs.len() != jobs.len() {
            return Err(QueueError::Storage(format!(
                "the submit script answered {} jobs for {}",
                seqs.len(),
                jobs.len()
            )));
        }
        Ok(jobs
            .iter()
            .zip(seqs)
            .map(|((_, job), seq)| {
                if seq == 0 {
                    return Err(QueueError::AlreadyExists { job: job.id.clone() });
                }
                self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
                self.config.metrics.record_enqueued(job.kind);
                info!(tenant = %tenant, lane = "", job = %job.id, kind = job.kind.as_str(), "job enqueued");
                Ok(Submitted {
                    record: JobRecord::from_new(tenant.clone(), job.clone(), seq, now),
                    lane: None,
                })
            })
            .collect())
    }

    /// Submits one job through a submit combiner (`pick`: the non-chat or the chat one): submits
    /// that arrive while a call is on its way go together in the next call (one `submit_plain`
    /// or `submit_chat` call for all of them).
    async fn submit_combined(
        &self,
        job: NewJob,
        pick: Pick<NewJob, QueueResult<Submitted>>,
    ) -> QueueResult<Submitted> {
        let (answer, lead) = pick(self).push(job);
        if let Some(lead) = lead {
            self.lead_flush(pick, |inner, batch| Box::pin(inner.send_submits(batch)), lead).await;
        }
        answer.await.unwrap_or_else(|_| Err(QueueError::Storage("a submit got no answer".into())))
    }

    /// Sends one batch of combined submits (of one combiner: all chat jobs or none) and answers
    /// each.
    async fn send_submits(&self, batch: Vec<Waiter<NewJob, QueueResult<Submitted>>>) {
        if batch.is_empty() {
            return;
        }
        let (jobs, replies): (Vec<(usize, NewJob)>, Vec<_>) =
            batch.into_iter().enumerate().map(|(at, (job, reply))| ((at, job), reply)).unzip();
        let results = if jobs[0].1.kind == JobKind::Chat {
            self.submit_chats(&jobs).await
        } else {
            self.submit_plain(&jobs).await
        };
        answer_each(replies, results);
    }

    /// Counts and logs a chat job that `outcome` says was added to `lane`.
    fn enqueued_in_lane(&self, job_id: &JobId, lane: &LaneId, outcome: &LaneEnqueue) {
        if outcome.added {
            self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
            self.config.metrics.record_enqueued(JobKind::Chat);
            info!(
                tenant = %self.deps.tenant,
                lane = %lane,
                job = %job_id,
                kind = "chat",
                position = outcome.receipt.lane_queue_position,
                "job enqueued"
            );
        }
    }

    /// Creates chat jobs, one or many, each in its lane, in one `submit_chat` call: per job, all
    /// or nothing (a taken id or a full lane writes nothing for it; the others go on), in the
    /// order of `jobs` (jobs of one lane take it in that order). Every job must have a lane
    /// (`chat_lane`). The records are written in this backend's tenant keyspace, where its own
    /// job store reads.
    async fn submit_chats(&self, jobs: &[(usize, NewJob)]) -> QueueResult<Vec<QueueResult<Submitted>>> {
        let (keys, lanes) = (&self.keys, &self.deps.lanes);
        let now = self.deps.clock.now_ms();
        let terms = lanes.enqueue_terms();
        let mut call = scripts::SUBMIT_CHAT.prepare_invoke();
        call.key(keys.seq())
            .key(keys.pending(JobKind::Chat))
            .key(keys.lanes())
            .key(keys.leases())
            .key(keys.epoch())
            .key(keys.chat_ready())
            .key(keys.signal(JobKind::Chat))
            .arg(self.deps.tenant.as_str())
            .arg(now)
            .arg(terms.lease_deadline_ms)
            .arg(terms.max_queue)
            .arg(terms.dispatch)
            .arg(keys.prefix())
            .arg(ms(self.config.short_lease));
        for (_, job) in jobs {
            let payload = serde_json::to_string(&job.payload).map_err(QueueError::storage)?;
            call.arg(job.id.as_str())
                .arg(chat_lane(job)?.as_str())
                .arg(job.request_id.as_ref().map_or("", queue_core::RequestId::as_str))
                .arg(payload);
        }
        let mut conn = self.deps.pool.get().await?;
        let out: Vec<String> = call.invoke_async(&mut conn).await.map_err(|e| redis_error(&e))?;
        let mut rest = out.as_slice();
        let mut results = Vec::with_capacity(jobs.len());
        for (_, job) in jobs {
            let (answer, tail) = split_counted(rest).ok_or_else(|| {
                QueueError::Storage(format!(
                    "the chat submit script answered {} values for {} jobs",
                    out.len(),
                    jobs.len()
                ))
            })?;
            rest = tail;
            results.push(self.chat_submitted(job, answer, now, &terms));
        }
        if !rest.is_empty() {
            return Err(QueueError::Storage(format!(
                "the chat submit script answered {} values more than its {} jobs",
                rest.len(),
                jobs.len()
            )));
        }
        Ok(results)
    }

    /// The result of one chat job of a `submit_chat` call from its answer: the seq, then the lane
    /// store's enqueue answer (none when the id was taken), or `error` and Redis's message.
    fn chat_submitted(
        &self,
        job: &NewJob,
        answer: &[String],
        now: u64,
        terms: &lane_store::EnqueueTerms,
    ) -> QueueResult<Submitted> {
        let Some((seq, answer)) = answer.split_first() else {
            return Err(QueueError::Storage("the chat submit script answered nothing for a job".into()));
        };
        if seq == "error" {
            let message = answer.first().map_or("", String::as_str);
            return Err(QueueError::Storage(format!(
                "redis: the chat submit of job {} failed: {message}",
                job.id
            )));
        }
        if answer.is_empty() {
            return Err(QueueError::AlreadyExists { job: job.id.clone() });
        }
        let lane = chat_lane(job)?;
        // A full lane: the lane store's own error (and log line), as its `enqueue` gives it.
        let outcome = self.deps.lanes.enqueue_answered(answer, &job.id, lane, terms)?;
        let seq: u64 = seq.parse().map_err(|_| {
            QueueError::Storage(format!("the chat submit script answered {seq:?} as the seq"))
        })?;
        self.enqueued_in_lane(&job.id, lane, &outcome);
        Ok(Submitted {
            record: JobRecord::from_new(self.deps.tenant.clone(), job.clone(), seq, now),
            lane: Some(outcome.receipt),
        })
    }

    /// This process's registry entry as of now.
    fn entry(&self) -> WorkerRecord {
        WorkerRecord {
            host: self.worker_host.clone(),
            pid: std::process::id(),
            started_ms: self.started_ms.load(Ordering::SeqCst),
            last_heartbeat_ms: self.deps.clock.now_ms(),
            heartbeat_ms: ms(self.config.heartbeat_interval).max(1),
            in_flight: lock(&self.held).len(),
        }
    }

    /// Refreshes this process's registry entry; puts it back if a reaper pruned it while this
    /// process was alive (a long pause), unless a stop or kill has begun.
    async fn beat_registry(&self) {
        if !self.registered.load(Ordering::SeqCst) {
            return;
        }
        let entry = self.entry();
        let beat = async {
            if !self.registry.refresh(&self.worker_id, &entry).await?
                && self.registered.load(Ordering::SeqCst)
            {
                self.registry.register(&self.worker_id, &entry).await?;
            }
            Ok::<(), QueueError>(())
        };
        if let Err(e) = beat.await {
            warn!(error = %e, "worker registry heartbeat failed; will retry");
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        self.config.backoff_base.saturating_mul(1 << exp).min(self.config.backoff_max)
    }

    /// Claims up to `n` jobs of `kind` for the fetch loop. A non-chat claim first withdraws this
    /// worker's idle registration and takes the jobs handed to it since (`take_handed_fn.lua`), and
    /// with `register`, registers it again when all it gets is fewer than `n` jobs, so that the
    /// next submit claims a job for it (until two blocks and a second from now: past that, the
    /// worker is taken for dead or gone).
    async fn claim(&self, kind: JobKind, n: usize, register: bool) -> QueueResult<Vec<Claimed>> {
        let keys = &self.keys;
        let now = self.deps.clock.now_ms();
        let mut conn = self.deps.pool.get().await?;
        let until = now.saturating_add(ms(self.config.block).saturating_mul(2)).saturating_add(1_000);
        if kind == JobKind::Chat {
            let raw: Vec<Value> = scripts::CLAIM_CHAT
                .key(keys.chat_ready())
                .key(keys.stats())
                .key(keys.leases())
                .key(keys.idle(kind))
                .key(keys.handoff(kind, &self.worker_id))
                .arg(n)
                .arg(now)
                .arg(keys.prefix())
                .arg(self.deps.lanes.claim_ttl_ms())
                .arg(&self.worker_id)
                .arg(if register { "1" } else { "0" })
                .arg(until)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error(&e))?;
            let mut raw = raw.into_iter().peekable();
            let handed = handed_count(raw.next().as_ref())?;
            self.stats.handed_over.fetch_add(handed, Ordering::Relaxed);
            let mut claimed = Vec::new();
            while raw.peek().is_some() {
                claimed.push(chat_claim_from_parts(take_chat_parts(&mut raw)?, &self.deps.tenant)?);
            }
            Ok(claimed)
        } else {
            let raw: Vec<Value> = scripts::CLAIM_PLAIN
                .key(keys.ready(kind))
                .key(keys.inflight())
                .key(keys.stats())
                .key(keys.idle(kind))
                .key(keys.handoff(kind, &self.worker_id))
                .arg(n)
                .arg(now)
                .arg(ms(self.claim_lease()))
                .arg(keys.prefix())
                .arg(kind.as_str())
                .arg(&self.worker_id)
                .arg(if register { "1" } else { "0" })
                .arg(until)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error(&e))?;
            let mut raw = raw.into_iter();
            let handed = handed_count(raw.next().as_ref())?;
            // Jobs handed to this worker that its block did not read: handed over all the same.
            self.stats.handed_over.fetch_add(handed, Ordering::Relaxed);
            claimed_records(raw)?
                .into_iter()
                .map(|v| parse_claimed(v, &self.deps.tenant, kind).map(Claimed::Plain))
                .collect()
        }
    }

    async fn fetch_loop(
        self: Arc<Self>,
        kind: JobKind,
        concurrency: usize,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut blocking: Option<RedisConn> = None;
        let mut retry_delay = Duration::from_millis(50);
        let batch_max = if kind == JobKind::ProfileUpdate {
            self.config.profile_batch_max
        } else {
            self.config.claim_batch_max
        };
        loop {
            while tasks.try_join_next().is_some() {}
            let first = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let n = if kind == JobKind::ProfileUpdate {
                batch_max
            } else {
                (1 + slots.available_permits()).min(batch_max)
            };
            let claimed = match self.claim(kind, n, true).await {
                Ok(c) => {
                    retry_delay = Duration::from_millis(50);
                    c
                }
                Err(e) => {
                    drop(first);
                    warn!(error = %e, "cannot claim work; retrying");
                    if sleep_or_stop(&mut shutdown, retry_delay).await {
                        break;
                    }
                    retry_delay = (retry_delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(first);
                if self.idle(kind, &slots, &mut tasks, &mut blocking, &mut shutdown).await {
                    break;
                }
                continue;
            }
            // Fewer than asked: the ready list is empty now, so the next claim would find
            // nothing. Wait for a wake-up token instead (every push leaves one, so a job that
            // arrives in between wakes the wait at once).
            let drained = claimed.len() < n;
            if kind == JobKind::ProfileUpdate {
                let records: Vec<JobRecord> = claimed
                    .into_iter()
                    .filter_map(|c| match c {
                        Claimed::Plain(r) => Some(r),
                        _ => None,
                    })
                    .collect();
                let inner = self.clone();
                tasks.spawn(async move {
                    inner.run_batch(kind, records).await;
                    drop(first);
                });
                if drained && self.idle(kind, &slots, &mut tasks, &mut blocking, &mut shutdown).await {
                    break;
                }
                continue;
            }
            let mut permit = Some(first);
            for c in claimed {
                let slot = match permit.take() {
                    Some(p) => p,
                    None => match slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        // Claimed more than slots free: run it anyway rather than drop a claim.
                        Err(_) => match slots.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                    },
                };
                self.spawn_slot(kind, c, slot, &mut tasks);
            }
            if drained && self.idle(kind, &slots, &mut tasks, &mut blocking, &mut shutdown).await {
                break;
            }
        }
        // No more hand-offs: what was handed over and not read is held, for the stop to hand
        // back with the rest.
        match self.claim(kind, 0, false).await {
            Ok(left) => self.hold(kind, &left),
            Err(e) => {
                warn!(error = %e, "cannot withdraw the idle registration; jobs handed over meanwhile wait for their leases")
            }
        }
        // Stopping: let running jobs finish within the deadline, then abort them (the stop hands
        // them back).
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.config.stop_deadline, drain).await.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Runs one claimed piece of work in `slot`, as a task of the fetch loop.
    fn spawn_slot(
        self: &Arc<Self>,
        kind: JobKind,
        c: Claimed,
        slot: OwnedSemaphorePermit,
        tasks: &mut JoinSet<()>,
    ) {
        let inner = self.clone();
        tasks.spawn(async move {
            match c {
                Claimed::FinishLane(claim) => inner.advance_lane(&claim).await,
                Claimed::Plain(record) if kind == JobKind::ProfileUpdate => {
                    inner.run_batch(kind, vec![record]).await
                }
                job => inner.run_slot(kind, job).await,
            }
            drop(slot);
        });
    }

    /// The fetch loop of `kind` with nothing to claim: waits for work, and starts a job handed
    /// over meanwhile in a slot of its own (held from the moment it arrives, so that a stop
    /// while all slots are busy hands it back). Returns true when stopping.
    async fn idle(
        self: &Arc<Self>,
        kind: JobKind,
        slots: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
        blocking: &mut Option<RedisConn>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let (job, until) = match self.wait_for_work(kind, blocking, shutdown).await {
            Wake::Stop => return true,
            Wake::Look => return false,
            Wake::Handed(job, until) => (*job, until),
        };
        self.stats.handed_over.fetch_add(1, Ordering::Relaxed);
        let short_lease = match &job {
            Claimed::Plain(record) => Some((record.id.clone(), record.lease_epoch)),
            Claimed::Chat(claim, _) => Some((claim.job_id.clone(), claim.epoch)),
            Claimed::FinishLane(_) => None,
        };
        self.hold(kind, std::slice::from_ref(&job));
        let slot = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => None,
            p = slots.clone().acquire_owned() => p.ok(),
        };
        let stopping = slot.is_none();
        if let Some(slot) = slot {
            self.spawn_slot(kind, job, slot, tasks);
            // The job first: the slot's task runs up to the handler's first wait before this
            // loop sends its next claim (which an idle worker's job would otherwise wait for).
            tokio::task::yield_now().await;
        }
        if let Some((id, epoch)) = short_lease {
            self.lengthen_lease(id, epoch, until);
        }
        stopping
    }

    /// Blocks until a wake-up token or a job handed to this worker arrives, the block times out,
    /// or the stop signal.
    async fn wait_for_work(
        &self,
        kind: JobKind,
        blocking: &mut Option<RedisConn>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Wake {
        if blocking.is_none() {
            match self.deps.pool.blocking(self.config.block).await {
                Ok(c) => *blocking = Some(c),
                Err(e) => {
                    warn!(error = %e, "cannot open a blocking connection; retrying");
                    return if sleep_or_stop(shutdown, Duration::from_millis(200)).await {
                        Wake::Stop
                    } else {
                        Wake::Look
                    };
                }
            }
        }
        let Some(conn) = blocking.as_mut() else { return Wake::Look };
        let block_secs = self.config.block.as_secs_f64();
        let handoff = self.keys.handoff(kind, &self.worker_id);
        let mut cmd = redis::cmd("BLPOP");
        cmd.arg(&handoff).arg(self.keys.signal(kind)).arg(block_secs);
        let outcome = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => None,
            r = cmd.query_async::<Option<(String, String)>>(conn) => Some(r),
        };
        match outcome {
            None => Wake::Stop,
            Some(Ok(Some((key, handed)))) if key == handoff => {
                let parsed = if kind == JobKind::Chat {
                    parse_handed_chat(&handed, &self.deps.tenant)
                } else {
                    parse_handed(&handed, &self.deps.tenant, kind)
                        .map(|(r, until)| (Claimed::Plain(r), until))
                };
                match parsed {
                    Ok((job, until)) => Wake::Handed(Box::new(job), until),
                    Err(e) => {
                        warn!(error = %e, "unreadable job handed over; its lease will lapse and the reaper queues it again");
                        Wake::Look
                    }
                }
            }
            Some(Ok(_)) => Wake::Look,
            Some(Err(e)) => {
                debug!(error = %e, "blocking wait failed; reconnecting");
                *blocking = None;
                if sleep_or_stop(shutdown, Duration::from_millis(100)).await {
                    Wake::Stop
                } else {
                    Wake::Look
                }
            }
        }
    }

    /// Lengthens the short lease of a job handed to this worker (which runs out at `until`, ms)
    /// to a full lease (a chat job's: its lane's claim, to the claim TTL), a third of the way to
    /// `until`, if this process still holds the job under the same epoch then (a quick job has
    /// settled long before); after a failed renewal, tries again a third of what is left later
    /// (at least 100 ms) while it holds the job.
    fn lengthen_lease(self: &Arc<Self>, id: JobId, epoch: u64, until: u64) {
        let me = self.clone();
        let mut timers = lock(&self.timers);
        while timers.try_join_next().is_some() {}
        timers.spawn(async move {
            loop {
                // `until` is the submitter's clock: past already when this one is ahead of it,
                // and then the lease is lengthened at once (retries at least 100 ms apart).
                let left = until.saturating_sub(me.deps.clock.now_ms());
                tokio::time::sleep(Duration::from_millis(left.div_ceil(3).max(100))).await;
                let claim = match lock(&me.held).get(&id) {
                    Some(h) if h.epoch == epoch => h.claim.clone(),
                    _ => return,
                };
                let renewed = match claim {
                    // A chat job's lease is its lane's claim: renewed to the claim TTL.
                    Some(claim) => me.deps.lanes.renew_many(std::slice::from_ref(&claim)).await.and_then(|mut r| {
                        r.pop()
                            .unwrap_or_else(|| Err(QueueError::Storage("no answer to a lease renewal".into())))
                            .map(drop)
                    }),
                    None => me.renew_plain(std::slice::from_ref(&id)).await.map(drop),
                };
                match renewed {
                    // A stale claim: the lane moved on, nothing to lengthen.
                    Ok(()) | Err(QueueError::StaleLease { .. }) => return,
                    Err(e) => warn!(job = %id, error = %e, "could not lengthen a handed-over job's lease; trying again"),
                }
            }
        });
    }

    /// Extends the leases of non-chat jobs this process holds to a full lease from now (those
    /// already reaped are left alone). Returns how many were extended.
    async fn renew_plain(&self, jobs: &[JobId]) -> QueueResult<i64> {
        let deadline = self.deps.clock.now_ms().saturating_add(ms(self.config.lease));
        let mut conn = self.deps.pool.get().await?;
        let mut inv = scripts::RENEW_PLAIN.key(self.keys.inflight());
        inv.arg(deadline);
        for id in jobs {
            inv.arg(id.as_str());
        }
        inv.invoke_async::<i64>(&mut conn).await.map_err(|e| redis_error(&e))
    }

    async fn acquire(&self, classes: &[LimitClass]) -> QueueResult<Option<PermitSet>> {
        if classes.is_empty() {
            return Ok(None);
        }
        let since = Instant::now();
        let permits = self.deps.limiter.acquire(classes).await;
        self.config.metrics.record_limiter_wait(ms(since.elapsed()));
        permits.map(Some)
    }

    /// Counts and logs the start of an attempt of `record` (claimed by a script).
    fn started(&self, record: &JobRecord) {
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        let first_wait =
            (record.attempt == 1).then(|| self.deps.clock.now_ms().saturating_sub(record.created_at_ms));
        self.config.metrics.record_started(record.kind, first_wait);
        info!(
            tenant = %self.deps.tenant,
            lane = lane_of(record),
            job = %record.id,
            kind = record.kind.as_str(),
            attempt = record.attempt,
            "job started"
        );
    }

    async fn release(&self, permits: Option<PermitSet>) {
        if let Some(p) = permits
            && let Err(e) = self.deps.limiter.release(p).await
        {
            warn!(error = %e, "could not release permits");
        }
    }

    fn note_permits(&self, jobs: &[JobId], permits: Option<&PermitSet>) {
        let mut held = lock(&self.held);
        for (i, j) in jobs.iter().enumerate() {
            if let Some(h) = held.get_mut(j) {
                // One permit set covers a batch: only the first job carries it, so a hand-back
                // releases it once.
                h.permits = if i == 0 { permits.cloned() } else { None };
            }
        }
    }

    /// Records an outcome (fenced) and, when `claim_next` > 0, claims that many more jobs of
    /// the kind in the same round trip. Returns whether the outcome was accepted, and the claims.
    // Mirrors the script's argument list one to one; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    async fn complete(
        &self,
        kind: JobKind,
        job: &JobId,
        (epoch, attempt): (u64, u32),
        lane: Option<&LaneId>,
        outcome: &'static str,
        value: &str,
        due_ms: u64,
        claim_next: usize,
    ) -> QueueResult<(bool, Vec<Claimed>)> {
        let claim_next = claim_next.min(self.config.claim_batch_max);
        let (answer, claimed, chat_next) = self
            .complete_batched(Completion {
                job: job.clone(),
                epoch,
                attempt,
                kind,
                lane: lane.cloned(),
                outcome,
                value: value.to_owned(),
                due_ms,
                claim_next,
            })
            .await?;
        let mut claimed = claimed
            .into_iter()
            .map(|v| parse_claimed(v, &self.deps.tenant, kind).map(Claimed::Plain))
            .collect::<QueueResult<Vec<_>>>()?;
        for start in chat_next {
            claimed.push(chat_claim_from_parts(start, &self.deps.tenant)?);
        }
        match answer.as_str() {
            "ok" => Ok((true, claimed)),
            "notfound" => {
                self.requeue_claims(kind, claimed).await;
                Err(QueueError::NotFound { job: job.clone() })
            }
            _ => {
                self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                self.config.metrics.record_fenced();
                warn!(
                    tenant = %self.deps.tenant,
                    lane = lane.map_or("", LaneId::as_str),
                    job = %job,
                    epoch,
                    answer = %answer,
                    "late result rejected: the lease is no longer current"
                );
                Ok((false, claimed))
            }
        }
    }

    /// An outcome, sent together with the others that finish at about the same time:
    /// a caller that finds fewer than [`FLUSHES_IN_FLIGHT`] flushes running sends everything
    /// waiting (its own outcome included) in one `complete_many` call; outcomes that arrive
    /// during that call are sent by a task spawned when it returns. An idle worker thus sends
    /// each outcome at once, and a busy one sends a few calls for many jobs.
    async fn complete_batched(&self, completion: Completion) -> QueueResult<CompleteAnswer> {
        let (answer, lead) = self.completions.push(completion);
        if let Some(lead) = lead {
            // One turn for the other slots: the answer of a call wakes all the slots it served at
            // once, and a leader that sent at once would send its own outcome nearly alone, then
            // the rest in the next call, while Redis sat idle in between. Yielding first lets the
            // slots that are ready push theirs, so the call carries them all (W2: 0.060 calls per
            // job instead of 0.066, Redis idle less often, +8 % jobs/s in six alternated pairs; a
            // second yield made it slower). An idle worker loses one turn of its own runtime.
            tokio::task::yield_now().await;
            self.lead_flush(
                |inner| &inner.completions,
                |inner, batch| Box::pin(inner.send_completions(batch)),
                lead,
            )
            .await;
        }
        answer.await.unwrap_or_else(|_| Err(QueueError::Storage("a completion got no answer".into())))
    }

    /// Leads a flush of the combiner `pick` gives: sends one batch (the caller's request among
    /// it) with `send`, then, if more wait, hands the lead to a spawned task that sends the rest,
    /// so that the caller goes on.
    async fn lead_flush<T, R>(&self, pick: Pick<T, R>, send: SendBatch<T, R>, mut lead: Lead<'_, T, R>)
    where
        T: Send + 'static,
        R: Send + 'static,
    {
        let combiner = pick(self);
        send(self, combiner.take(&lead)).await;
        if !combiner.more(&mut lead) {
            return;
        }
        match self.me.upgrade() {
            Some(me) => {
                lead.hand_over();
                tokio::spawn(async move {
                    let lead = pick(&me).adopt();
                    me.flush_until_empty(pick, send, lead).await;
                });
            }
            None => self.flush_until_empty(pick, send, lead).await,
        }
    }

    /// Sends batches of the combiner `pick` gives until nothing waits; the lead is given back
    /// then.
    async fn flush_until_empty<T, R>(
        &self,
        pick: Pick<T, R>,
        send: SendBatch<T, R>,
        mut lead: Lead<'_, T, R>,
    ) {
        let combiner = pick(self);
        loop {
            send(self, combiner.take(&lead)).await;
            if !combiner.more(&mut lead) {
                return;
            }
        }
    }

    async fn send_completions(&self, batch: Vec<Waiting>) {
        if batch.is_empty() {
            return;
        }
        let keys = &self.keys;
        let mut call = scripts::COMPLETE_MANY.prepare_invoke();
        call.key(keys.inflight())
            .key(keys.stats())
            .key(keys.delayed())
            .key(keys.lanes())
            .key(keys.leases())
            .key(keys.epoch())
            .key(keys.chat_ready())
            .key(keys.signal(JobKind::Chat))
            .arg(self.deps.clock.now_ms())
            .arg(ms(self.claim_lease()))
            .arg(keys.prefix())
            .arg(self.deps.lanes.claim_ttl_ms());
        // A stopping process claims nothing more.
        let accepting = self.accepting.load(Ordering::SeqCst);
        for (c, _) in &batch {
            call.arg(c.job.as_str())
                .arg(c.epoch)
                .arg(c.attempt)
                .arg(c.outcome)
                .arg(&c.value)
                .arg(c.due_ms)
                .arg(c.kind.as_str())
                .arg(if accepting { c.claim_next } else { 0 })
                .arg(c.lane.as_ref().map_or("", LaneId::as_str));
        }
        let count = batch.len();
        let answers: QueueResult<Vec<CompleteAnswer>> = match self.deps.pool.get().await {
            Ok(mut conn) => call
                .invoke_async::<Vec<Value>>(&mut conn)
                .await
                .map_err(|e| redis_error(&e))
                .and_then(|flat| parse_complete_answers(flat, count)),
            Err(e) => Err(e),
        };
        let replies = batch.into_iter().map(|(_, reply)| reply).collect();
        answer_each(replies, answers.map(|answers| answers.into_iter().map(Ok).collect()));
    }

    /// Jobs claimed but not going to be run here (an error path): their leases lapse and the
    /// reaper re-queues them; nothing else is needed, but say so.
    async fn requeue_claims(&self, kind: JobKind, claimed: Vec<Claimed>) {
        for c in claimed {
            let job = match &c {
                Claimed::Plain(r) => &r.id,
                Claimed::Chat(claim, _) | Claimed::FinishLane(claim) => &claim.job_id,
            };
            debug!(job = %job, kind = kind.as_str(), "claimed job left to its lease");
        }
    }

    /// Runs one slot's jobs (of one non-chat kind, or chat jobs of any lane), one after another,
    /// until none is ready or the process stops taking work. Each outcome's call claims the
    /// slot's next job (finish-and-claim-next; for a chat job, its lane's next or another lane's
    /// from `ready:chat`). While the handler runs for less than
    /// [`RedisBackendConfig::claim_ahead_below`], the slot does not wait for that call: its calls
    /// claim two jobs ahead, so it runs the next one and sends that one's outcome while the
    /// previous call is still on its way (its calls run as tasks of their own). A quick slot thus
    /// keeps up to two outcome calls in flight and holds up to two jobs besides the one it runs;
    /// a slow one waits for each call and holds one.
    async fn run_slot(self: &Arc<Self>, kind: JobKind, first: Claimed) {
        self.hold(kind, std::slice::from_ref(&first));
        let mut ready = VecDeque::from([first]);
        // Outcome calls on their way, oldest first, each with how many jobs it claims.
        let mut settling: VecDeque<(JoinHandle<Vec<Claimed>>, usize)> = VecDeque::new();
        loop {
            // What the calls that are back claimed, without waiting for the others.
            while let Some(at) = settling.iter().position(|(call, _)| call.is_finished()) {
                if let Some((call, _)) = settling.remove(at) {
                    ready.extend(claims_of(call.await));
                }
            }
            let Some(job) = ready.pop_front() else {
                if settling.is_empty() {
                    break;
                }
                // Whichever call comes back first (a chat retry's waits out its backoff).
                let (at, claimed) = std::future::poll_fn(|cx| {
                    for (at, (call, _)) in settling.iter_mut().enumerate() {
                        if let Poll::Ready(claimed) = Pin::new(call).poll(cx) {
                            return Poll::Ready((at, claimed));
                        }
                    }
                    Poll::Pending
                })
                .await;
                settling.remove(at);
                ready.extend(claims_of(claimed));
                continue;
            };
            let (claim, record) = match job {
                Claimed::Plain(record) => (None, record),
                Claimed::Chat(claim, record) => (Some(claim), record),
                Claimed::FinishLane(claim) => {
                    self.advance_lane(&claim).await;
                    continue;
                }
            };
            let (result, ran) = match &claim {
                Some(c) => {
                    let span = info_span!("chat_job", job = %c.job_id, lane = %c.lane_id, epoch = c.epoch);
                    self.run_one(&record).instrument(span).await
                }
                None => self.run_one(&record).await,
            };
            let quick = ran.is_some_and(|ran| ran < self.config.claim_ahead_below);
            let accepting = self.accepting.load(Ordering::SeqCst);
            let coming: usize = settling.iter().map(|(_, want)| want).sum();
            let want = slot_claims(accepting, quick, ready.len() + coming);
            let run_ms = ran.map_or(0, ms);
            if quick && accepting {
                let me = self.clone();
                let call =
                    tokio::spawn(
                        async move { me.settle_slot(kind, claim, &record, result, want, run_ms).await },
                    );
                settling.push_back((call, want));
            } else {
                ready.extend(self.settle_slot(kind, claim, &record, result, want, run_ms).await);
            }
        }
    }

    /// Records the outcome of a slot's job (`claim`: its lane's claim, for a chat job), claiming
    /// `want` next jobs in the same call, and lets the job go. A chat job to be retried keeps the
    /// head of its lane but not the slot: a task of its own waits out the backoff, holding the
    /// job (its claim renewed), and then claims the same head again under a new epoch (should
    /// this process die meanwhile, the lease lapses and the reaper does it). Returns the jobs
    /// claimed, held by this process from now on.
    async fn settle_slot(
        self: &Arc<Self>,
        kind: JobKind,
        claim: Option<LaneClaim>,
        record: &JobRecord,
        result: Result<serde_json::Value, HandlerError>,
        want: usize,
        run_ms: u64,
    ) -> Vec<Claimed> {
        let lane = claim.as_ref().map(|c| &c.lane_id);
        let (settled, claimed) = self.settle(kind, record, lane, result, want, run_ms).await;
        self.hold(kind, &claimed);
        match (settled, claim) {
            (Settled::Retry, Some(claim)) => {
                let (me, backoff) = (self.clone(), self.backoff(record.attempt));
                let mut timers = lock(&self.timers);
                while timers.try_join_next().is_some() {}
                timers.spawn(async move {
                    tokio::time::sleep(backoff).await;
                    me.move_lane("queue the lane's job again", &claim, || me.deps.lanes.reclaim(&claim))
                        .await;
                    lock(&me.held).remove(&claim.job_id);
                });
            }
            _ => {
                lock(&self.held).remove(&record.id);
            }
        }
        claimed
    }

    /// Registers claimed jobs as held by this process: their leases (a chat job's: its lane's
    /// claim) are renewed from now on, and a stop hands back those still held.
    fn hold(&self, kind: JobKind, claimed: &[Claimed]) {
        let mut held = lock(&self.held);
        for c in claimed {
            let (id, entry) = match c {
                Claimed::Plain(r) => (&r.id, Held::plain(kind, r, self.claims_short())),
                Claimed::Chat(claim, record) => (
                    &claim.job_id,
                    Held {
                        kind: JobKind::Chat,
                        epoch: claim.epoch,
                        attempt: record.attempt,
                        claim: Some(claim.clone()),
                        permits: None,
                        short: false,
                    },
                ),
                Claimed::FinishLane(_) => continue,
            };
            held.insert(id.clone(), entry);
        }
    }

    /// Runs one job under its permits. Returns its result and how long it took (`None` when the
    /// handler did not run: a job whose worker was lost on every attempt is dead-lettered
    /// instead of being run once more).
    async fn run_one(
        &self,
        record: &JobRecord,
    ) -> (Result<serde_json::Value, HandlerError>, Option<Duration>) {
        if let Some(gave_up) = queue_core::lost_too_often(record, self.config.max_attempts) {
            return (Err(gave_up), None);
        }
        self.started(record);
        let since = Instant::now();
        let handler = self.deps.handlers.get(record.kind);
        let result = match self.acquire(&acquisition_order(&handler.permits(record))).await {
            Ok(permits) => {
                self.note_permits(std::slice::from_ref(&record.id), permits.as_ref());
                let result = handler.handle(record).await;
                self.release(permits).await;
                result
            }
            Err(e) => Err(HandlerError::retryable(format!("limiter: {e}"))),
        };
        (result, Some(since.elapsed()))
    }

    /// Runs claimed jobs as one handler call (a profile-update batch), then records each outcome.
    async fn run_batch(self: &Arc<Self>, kind: JobKind, records: Vec<JobRecord>) {
        // A job whose worker was lost on every attempt (its lease expired each time) is
        // dead-lettered instead of being run once more.
        let max = self.config.max_attempts;
        let (lost, records): (Vec<JobRecord>, Vec<JobRecord>) =
            records.into_iter().partition(|r| queue_core::lost_too_often(r, max).is_some());
        for r in &lost {
            let gave_up = queue_core::lost_too_often(r, max).map_or_else(|| Ok(serde_json::Value::Null), Err);
            let _ = self.settle(kind, r, None, gave_up, 0, 0).await;
        }
        if records.is_empty() {
            return;
        }
        let ids: Vec<JobId> = records.iter().map(|r| r.id.clone()).collect();
        {
            let mut held = lock(&self.held);
            for r in &records {
                held.insert(r.id.clone(), Held::plain(kind, r, self.claims_short()));
            }
        }
        for r in &records {
            self.started(r);
        }
        let since = Instant::now();
        let handler = self.deps.handlers.get(kind).clone();
        let mut classes = Vec::new();
        for r in &records {
            classes.extend(handler.permits(r));
        }
        let results = match self.acquire(&acquisition_order(&classes)).await {
            Ok(permits) => {
                self.note_permits(&ids, permits.as_ref());
                let results = if records.len() == 1 {
                    vec![handler.handle(&records[0]).await]
                } else {
                    handler.handle_batch(&records).await
                };
                self.release(permits).await;
                results
            }
            Err(e) => records.iter().map(|_| Err(HandlerError::retryable(format!("limiter: {e}")))).collect(),
        };
        // The outcomes go at once, so that they share `complete_many` calls (one call for the
        // batch, where one after another made a call each).
        let (mut results, run_ms) = (results.into_iter(), ms(since.elapsed()));
        let mut settling = JoinSet::new();
        for r in records {
            let result =
                results.next().unwrap_or_else(|| Err(HandlerError::permanent("handler returned no result")));
            let me = self.clone();
            settling.spawn(async move {
                me.settle(kind, &r, None, result, 0, run_ms).await;
                lock(&me.held).remove(&r.id);
            });
        }
        while settling.join_next().await.is_some() {}
    }

    /// Records the outcome of one attempt. Returns whether the lane (chat) should move on.
    async fn settle(
        &self,
        kind: JobKind,
        record: &JobRecord,
        lane: Option<&LaneId>,
        result: Result<serde_json::Value, HandlerError>,
        claim_next: usize,
        run_ms: u64,
    ) -> (Settled, Vec<Claimed>) {
        let epoch = record.lease_epoch;
        let (outcome, value, due) = match &result {
            Ok(v) => ("done", v.to_string(), 0),
            Err(e) if e.retryable && record.attempt < self.config.max_attempts => {
                let due = self.deps.clock.now_ms().saturating_add(ms(self.backoff(record.attempt)));
                ("retry", e.message.clone(), due)
            }
            Err(e) => ("failed", e.message.clone(), 0),
        };
        // Outcomes are fenced: a call sent again after its first ran records nothing twice.
        // Given up after the short lease: then the job's lease lapses and it runs again.
        let answer = self
            .resend("record the outcome", &record.id, || {
                self.complete(
                    kind,
                    &record.id,
                    (epoch, record.attempt),
                    lane,
                    outcome,
                    &value,
                    due,
                    claim_next,
                )
            })
            .await;
        match answer {
            Ok((true, claimed)) => {
                let counter = match outcome {
                    "done" => &self.stats.completed,
                    "retry" => &self.stats.retried,
                    _ => &self.stats.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let (tenant, lane, job) = (&self.deps.tenant, lane_of(record), &record.id);
                match outcome {
                    "done" => {
                        self.config.metrics.record_completed(kind, run_ms);
                        info!(tenant = %tenant, lane, job = %job, kind = kind.as_str(), run_ms, "job completed");
                    }
                    "retry" => {
                        self.config.metrics.record_retried(kind, run_ms);
                        warn!(
                            tenant = %tenant,
                            lane,
                            job = %job,
                            kind = kind.as_str(),
                            attempt = record.attempt,
                            error = value,
                            "job failed; retrying"
                        );
                    }
                    _ => {
                        self.config.metrics.record_dead_lettered(kind, run_ms);
                        warn!(tenant = %tenant, lane, job = %job, kind = kind.as_str(), error = value, "job failed for good");
                    }
                }
                (if outcome == "retry" { Settled::Retry } else { Settled::Finished }, claimed)
            }
            Ok((false, claimed)) => (Settled::Fenced, claimed),
            Err(e) => {
                // Redis unreachable for the whole short lease: the lease lapses and the reaper
                // re-dispatches the job.
                warn!(job = %record.id, error = %e, "could not record the outcome; the lease will lapse");
                (Settled::Fenced, Vec::new())
            }
        }
    }

    /// The lease a worker's own claims of non-chat jobs are made under: the short lease, at most
    /// the full one.
    fn claim_lease(&self) -> Duration {
        self.config.short_lease.min(self.config.lease)
    }

    /// Whether this process's claims of non-chat jobs are made under a lease shorter than the
    /// full one (then `lengthen_loop` runs).
    fn claims_short(&self) -> bool {
        self.config.short_lease < self.config.lease
    }

    /// Every third of the short lease, lengthens to a full lease the non-chat jobs this process
    /// claimed under the short lease and still holds, running or claimed ahead (one script call
    /// for all of them; the heartbeat renews them from then on). A job is claimed under the short
    /// lease and lengthened within a third of it, or within two thirds when the first call
    /// fails: if the answer of the call that claimed it is lost, or the process dies first, the
    /// reaper queues it again once the short lease runs out, not the full one.
    async fn lengthen_loop(self: Arc<Self>) {
        let every = (self.config.short_lease / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (ids, epochs): (Vec<JobId>, Vec<u64>) =
                lock(&self.held).iter().filter(|(_, h)| h.short).map(|(id, h)| (id.clone(), h.epoch)).unzip();
            if ids.is_empty() {
                continue;
            }
            match self.renew_plain(&ids).await {
                Ok(_) => {
                    let mut held = lock(&self.held);
                    for (id, epoch) in ids.iter().zip(&epochs) {
                        if let Some(h) = held.get_mut(id)
                            && h.epoch == *epoch
                        {
                            h.short = false;
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, jobs = ids.len(), "could not lengthen the short leases of claimed jobs; trying again");
                }
            }
        }
    }

    /// One heartbeat for every job this process holds: chat leases renewed in one pipelined
    /// round trip, non-chat leases in one script call. It keeps beating while a stop lets running
    /// jobs finish, and is aborted after.
    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (claims, plain): (Vec<LaneClaim>, Vec<JobId>) = {
                let held = lock(&self.held);
                let claims = held.values().filter_map(|h| h.claim.clone()).collect();
                let plain =
                    held.iter().filter(|(_, h)| h.claim.is_none()).map(|(id, _)| id.clone()).collect();
                (claims, plain)
            };
            if !claims.is_empty() {
                match self.deps.lanes.renew_many(&claims).await {
                    Ok(results) => {
                        for (claim, r) in claims.iter().zip(results) {
                            if let Err(e) = r {
                                warn!(job = %claim.job_id, error = %e, "lease lost while running; the result will be rejected");
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "lease renewal failed; will retry"),
                }
            }
            if !plain.is_empty()
                && let Err(e) = self.renew_plain(&plain).await
            {
                warn!(error = %e, "lease renewal failed; will retry");
            }
            self.beat_registry().await;
        }
    }

    /// Makes a fenced call, and makes it again while it fails for want of Redis (no answer in
    /// time, a lost connection, an error reply such as `BUSY`): from 100 ms, doubling to 2 s, for
    /// up to the short lease. The call may have run and only its answer been lost; since it is
    /// fenced (on a job's epoch, or its lane's claim), a second run is rejected as late, not
    /// applied twice. Returns the last answer. `what` names the call in the warning.
    async fn resend<T, F: Future<Output = QueueResult<T>>>(
        &self,
        what: &str,
        job: &JobId,
        mut call: impl FnMut() -> F,
    ) -> QueueResult<T> {
        let give_up = Instant::now() + self.config.short_lease;
        let mut wait = Duration::from_millis(100);
        loop {
            match call().await {
                Err(e @ (QueueError::Unavailable(_) | QueueError::Storage(_)))
                    if Instant::now() + wait < give_up =>
                {
                    warn!(
                        job = %job,
                        error = %e,
                        retry_ms = ms(wait),
                        "could not {what}; sending it again (rejected as late if the first call ran)"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                answer => return answer,
            }
        }
    }

    /// Moves `claim`'s lane with `call`, a lane store call fenced on the claim (`what` names it),
    /// sent again while Redis does not answer ([`Self::resend`]): a lane whose move is lost waits
    /// for its claim to run out (the claim TTL, 10 minutes by default) before the reaper moves
    /// it on. A stale claim means the lane has moved on already (the reaper re-dispatched its
    /// job, or a first call ran and only its answer was lost).
    async fn move_lane<T, F: Future<Output = QueueResult<T>>>(
        &self,
        what: &str,
        claim: &LaneClaim,
        call: impl FnMut() -> F,
    ) {
        match self.resend(what, &claim.job_id, call).await {
            Ok(_) => {}
            Err(e @ QueueError::StaleLease { .. }) => {
                debug!(error = %e, "could not {what}: the lane moved on already")
            }
            Err(e) => warn!(
                lane = %claim.lane_id,
                job = %claim.job_id,
                error = %e,
                "could not {what}; the reaper will once its claim runs out"
            ),
        }
    }

    /// Moves a lane on past its finished head (a `FinishLane` claim): the lane store's script
    /// fences the claim and dispatches the next job.
    async fn advance_lane(&self, claim: &LaneClaim) {
        self.move_lane("move the lane on", claim, || self.deps.lanes.finish(claim)).await;
    }

    async fn reaper_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.reaper_interval);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            match self.deps.lanes.reap_expired().await {
                Ok(claims) => {
                    for c in &claims {
                        warn!(
                            tenant = %self.deps.tenant,
                            lane = %c.lane_id,
                            job = %c.job_id,
                            "chat lease expired; re-dispatched the head job"
                        );
                    }
                    self.stats.lease_expiries.fetch_add(claims.len() as u64, Ordering::Relaxed);
                    self.config.metrics.record_lease_expiries(claims.len() as u64);
                }
                Err(e) => warn!(error = %e, "reaper could not read lanes"),
            }
            let reaped = async {
                let mut conn = self.deps.pool.get().await?;
                scripts::REAP_PLAIN
                    .key(self.keys.inflight())
                    .key(self.keys.delayed())
                    .key(self.keys.stats())
                    .arg(self.deps.clock.now_ms())
                    .arg(self.keys.prefix())
                    .arg(500)
                    .invoke_async::<(u64, u64)>(&mut conn)
                    .await
                    .map_err(|e| redis_error(&e))
            };
            match reaped.await {
                Ok((expired, _released)) => {
                    self.stats.lease_expiries.fetch_add(expired, Ordering::Relaxed);
                    self.config.metrics.record_lease_expiries(expired);
                    if expired > 0 {
                        warn!(tenant = %self.deps.tenant, expired, "leases of running jobs expired; the jobs were queued again");
                    }
                }
                Err(e) => warn!(error = %e, "reaper could not reach Redis"),
            }
            match self.registry.prune(self.deps.clock.now_ms()).await {
                Ok(0) => {}
                Ok(n) => info!(pruned = n, "removed stale workers from the registry"),
                Err(e) => debug!(error = %e, "reaper could not prune the worker registry"),
            }
        }
    }

    async fn purge_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.purge_interval);
        if !self.config.run_workers {
            // A producer-only process does not purge at start: a worker process does that when
            // it starts, and a service restarting its producers need not sweep each time.
            tick.tick().await;
        }
        let mut swept_once = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            let before = self.deps.clock.now_ms().saturating_sub(ms(self.config.retention));
            if let Err(e) = self.deps.store.purge_finished(before).await {
                warn!(error = %e, "retention purge failed");
            }
            if swept_once && self.config.run_workers {
                let backend = RedisQueueBackend { inner: self.clone() };
                match backend.sweep_orphans().await {
                    Ok(0) => {}
                    Ok(n) => info!(n, "orphaned pending jobs re-dispatched"),
                    Err(e) => warn!(error = %e, "orphan sweep failed"),
                }
            }
            // The first tick fires at once, just after the sweep `start` made.
            swept_once = true;
        }
    }

    /// Gives every job this process still holds back to the queue: chat jobs re-claimed at the
    /// head of their lane (another worker takes them at once), others due again now.
    async fn hand_back(&self) {
        let held: Vec<(JobId, Held)> = lock(&self.held).drain().collect();
        for (job, h) in held {
            self.release(h.permits).await;
            let lane = h.claim.as_ref().map(|c| c.lane_id.clone());
            let now = self.deps.clock.now_ms();
            match self
                .complete(
                    h.kind,
                    &job,
                    (h.epoch, h.attempt),
                    lane.as_ref(),
                    "retry",
                    "handed back at stop",
                    now,
                    0,
                )
                .await
            {
                Ok((true, _)) => {
                    self.stats.handed_back.fetch_add(1, Ordering::Relaxed);
                    if let Some(claim) = &h.claim
                        && let Err(e) = self.deps.lanes.reclaim(claim).await
                    {
                        debug!(error = %e, "handed-back claim already superseded");
                    }
                    info!(job = %job, "running job handed back at stop");
                }
                Ok((false, _)) => {}
                Err(e) => warn!(job = %job, error = %e, "could not hand the job back; its lease will lapse"),
            }
        }
    }
}

enum Settled {
    Finished,
    Retry,
    Fenced,
}

async fn sleep_or_stop(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        biased;
        _ = shutdown.wait_for(|s| *s) => true,
        () = tokio::time::sleep(d) => false,
    }
}

fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A chat job handed to an idle chat worker (`hand_new_chat`, handoff_chat_fn.lua): the JSON of a
/// `start_chat` answer, read as [`parse_chat_claim`] reads one from a script's reply; with when
/// its lane's short lease runs out (ms).
fn parse_handed_chat(text: &str, tenant: &TenantId) -> QueueResult<(Claimed, u64)> {
    fn to_value(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::String(s) => Value::BulkString(s.into_bytes()),
            serde_json::Value::Array(items) => Value::Array(items.into_iter().map(to_value).collect()),
            serde_json::Value::Number(n) => Value::BulkString(n.to_string().into_bytes()),
            _ => Value::Nil,
        }
    }
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| QueueError::Storage(format!("redis: a chat job handed over is not JSON: {e}")))?;
    let claim = parse_chat_claim(to_value(json), tenant)?;
    match claim {
        Claimed::Chat(ref c, _) => {
            let until = c.lease_deadline_ms;
            Ok((claim, until))
        }
        _ => Err(QueueError::Storage("redis: a chat job handed over is not a started claim".into())),
    }
}

/// A chat job's lane, which it must have.
fn chat_lane(job: &NewJob) -> QueueResult<&LaneId> {
    job.lane.as_ref().ok_or_else(|| QueueError::invalid("lane", "required for a chat job"))
}

/// The first answer of a flat script reply made of counted answers (how many values, then the
/// values), and the rest of the reply; `None` when the count is missing, not a number, or more
/// than the reply holds.
fn split_counted(reply: &[String]) -> Option<(&[String], &[String])> {
    let (count, rest) = reply.split_first()?;
    let n: usize = count.parse().ok()?;
    (n <= rest.len()).then(|| rest.split_at(n))
}

/// The first value of a claim script's answer: how many of its jobs were handed to the worker.
///
/// # Errors
/// [`QueueError::Storage`] when it is missing or not a count.
fn handed_count(first: Option<&Value>) -> QueueResult<u64> {
    first
        .and_then(value_str)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| QueueError::Storage("redis: a claim answered without its handed-over count".into()))
}

/// The claimed records of a flat answer that holds their values one after the other, each
/// record the values of [`CLAIM_FIELDS`] in its order (nil for an absent field).
///
/// # Errors
/// [`QueueError::Storage`] when a value is not text or nil, or the values do not make whole
/// records.
fn claimed_records(values: impl Iterator<Item = Value>) -> QueueResult<Vec<Vec<Option<String>>>> {
    let values = values
        .map(|v| {
            redis::from_redis_value(v)
                .map_err(|e| QueueError::Storage(format!("redis: a record value that is not text: {e}")))
        })
        .collect::<QueueResult<Vec<Option<String>>>>()?;
    let per = CLAIM_FIELDS.len();
    if !values.len().is_multiple_of(per) {
        return Err(QueueError::Storage(format!(
            "redis: a claim answered {} record values, not whole records of {per}",
            values.len()
        )));
    }
    let mut values = values.into_iter();
    Ok((0..values.len() / per).map(|_| values.by_ref().take(per).collect()).collect())
}

/// Reads the flat answer of a `complete_many` call of `count` outcomes: for each, in order, its
/// answer, how many non-chat records and how many chat answers follow, then those (see the
/// script's header).
///
/// # Errors
/// [`QueueError::Storage`] when the answer does not have that shape.
fn parse_complete_answers(flat: Vec<Value>, count: usize) -> QueueResult<Vec<CompleteAnswer>> {
    let bad = |why: &str| QueueError::Storage(format!("redis: complete_many answered {why}"));
    let how_many = |v: Option<Value>| match v {
        Some(Value::Int(n)) => usize::try_from(n).map_err(|_| bad("a negative count")),
        _ => Err(bad("without a count where one belongs")),
    };
    let mut items = flat.into_iter();
    let mut answers = Vec::with_capacity(count);
    for _ in 0..count {
        let answer = match items.next() {
            Some(v @ (Value::BulkString(_) | Value::SimpleString(_))) => {
                value_str(&v).ok_or_else(|| bad("an answer that is not UTF-8"))?
            }
            Some(_) => return Err(bad("an answer that is not text")),
            None => return Err(bad(&format!("{} outcomes of {count}", answers.len()))),
        };
        let (plain, chat) = (how_many(items.next())?, how_many(items.next())?);
        let records = claimed_records(items.by_ref().take(plain * CLAIM_FIELDS.len()))?;
        let started = (0..chat).map(|_| take_chat_parts(&mut items)).collect::<QueueResult<Vec<_>>>()?;
        if records.len() != plain {
            return Err(bad("fewer claimed jobs than it counted"));
        }
        answers.push((answer, records, started));
    }
    if items.next().is_some() {
        return Err(bad(&format!("more than the {count} outcomes sent")));
    }
    Ok(answers)
}

/// The parts of the next flat `start_chat` answer in `items` (`append_chat_answers`,
/// start_chat_fn.lua): its verb, epoch, lane and deadline, then a `run`'s claimed record (the
/// values of [`CLAIM_FIELDS`]) or a `finish`'s job.
///
/// # Errors
/// [`QueueError::Storage`] when `items` ends before the answer does.
fn take_chat_parts(items: &mut impl Iterator<Item = Value>) -> QueueResult<Vec<Value>> {
    let mut parts: Vec<Value> = items.by_ref().take(4).collect();
    let rest =
        if parts.first().and_then(value_str).as_deref() == Some("run") { CLAIM_FIELDS.len() } else { 1 };
    parts.extend(items.by_ref().take(rest));
    if parts.len() == 4 + rest {
        Ok(parts)
    } else {
        Err(QueueError::Storage(format!(
            "redis: a chat claim's answer ended after {} of its {} parts",
            parts.len(),
            4 + rest
        )))
    }
}

/// A `start_chat` answer (start_chat_fn.lua) of a job of `tenant`, as a nested array (a chat job
/// handed over, decoded from its JSON): `{run, epoch, lane, deadline, claimed record}` or
/// `{finish, epoch, lane, deadline, job}`.
fn parse_chat_claim(v: Value, tenant: &TenantId) -> QueueResult<Claimed> {
    let Value::Array(mut parts) = v else {
        return Err(QueueError::Storage("unexpected chat claim reply".into()));
    };
    if let Some(Value::Array(record)) = parts.pop_if(|p| matches!(p, Value::Array(_))) {
        parts.extend(record);
    }
    chat_claim_from_parts(parts, tenant)
}

/// A `start_chat` answer from its parts, flat: `run, epoch, lane, deadline` and the claimed
/// record's [`CLAIM_FIELDS`] values, or `finish, epoch, lane, deadline, job`.
fn chat_claim_from_parts(parts: Vec<Value>, tenant: &TenantId) -> QueueResult<Claimed> {
    let bad = || QueueError::Storage("unexpected chat claim reply".into());
    if parts.len() < 5 {
        return Err(bad());
    }
    let verb = value_str(&parts[0]).ok_or_else(bad)?;
    let epoch: u64 = value_str(&parts[1]).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let lane = LaneId::new(value_str(&parts[2]).ok_or_else(bad)?)?;
    let deadline: u64 = value_str(&parts[3]).and_then(|s| s.parse().ok()).unwrap_or(0);
    match verb.as_str() {
        "run" => {
            let values = parts
                .into_iter()
                .skip(4)
                .map(redis::from_redis_value)
                .collect::<Result<Vec<Option<String>>, _>>()
                .map_err(|e| QueueError::Storage(format!("chat claim reply: {e}")))?;
            let record = parse_claimed(values, tenant, JobKind::Chat)?;
            let claim =
                LaneClaim { job_id: record.id.clone(), lane_id: lane, epoch, lease_deadline_ms: deadline };
            Ok(Claimed::Chat(claim, record))
        }
        "finish" if parts.len() == 5 => {
            let job = JobId::new(value_str(&parts[4]).ok_or_else(bad)?)?;
            Ok(Claimed::FinishLane(LaneClaim {
                job_id: job,
                lane_id: lane,
                epoch,
                lease_deadline_ms: deadline,
            }))
        }
        _ => Err(bad()),
    }
}

/// The machine's host name, as the kernel reports it (`/proc/sys/kernel/hostname`, else
/// `/etc/hostname`), or `localhost` when neither can be read.
#[must_use]
pub fn local_host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `host:pid:random`: distinct for every backend, even two in one process (tests).
fn new_worker_id(host: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    // A fresh `RandomState` is randomly keyed: enough to tell two backends of one process apart
    // without a random-number crate.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{host}:{}:{:08x}", std::process::id(), h.finish() & 0xffff_ffff)
}

/// Refreshes an entry only while it exists, so a heartbeat that arrives after the stop's `HDEL`
/// cannot bring a stopped worker back.
static REFRESH_WORKER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
",
    )
});

/// Removes the entries whose last heartbeat is older than three of their heartbeat intervals
/// (and any entry that does not parse); returns how many.
static PRUNE_WORKERS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local now = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local removed = 0
for i = 1, #all, 2 do
  local ok, w = pcall(cjson.decode, all[i + 1])
  local beat = ok and type(w) == 'table' and tonumber(w.last_heartbeat_ms) or nil
  local every = ok and type(w) == 'table' and tonumber(w.heartbeat_ms) or nil
  if not beat or not every or now - beat > 3 * every then
    redis.call('HDEL', KEYS[1], all[i])
    removed = removed + 1
  end
end
return removed
",
    )
});

/// A worker's registry entry as stored: the value of its field in the `workers` hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// The machine it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When its workers started (ms since the epoch).
    pub started_ms: u64,
    /// Its last heartbeat (ms since the epoch).
    pub last_heartbeat_ms: u64,
    /// Its heartbeat interval (ms): three of them without a beat make it stale.
    pub heartbeat_ms: u64,
    /// Jobs it held at its last heartbeat: running, or claimed ahead by a quick slot.
    pub in_flight: usize,
}

impl WorkerRecord {
    /// Whether, at `now_ms`, its last heartbeat is older than three heartbeat intervals.
    #[must_use]
    pub const fn is_stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_heartbeat_ms) > self.heartbeat_ms.saturating_mul(3)
    }
}

/// One registered worker process, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerEntry {
    /// `host:pid:random`.
    pub worker_id: String,
    /// What it registered.
    #[serde(flatten)]
    pub record: WorkerRecord,
    /// Whether its heartbeat is older than three intervals (dead, or cut off from Redis).
    pub stale: bool,
}

/// The worker processes of one tenant: a HASH `lw:{t}:workers`, worker id -> JSON
/// [`WorkerRecord`]. Written by each backend that runs workers; read by operators.
#[derive(Debug, Clone)]
pub struct RedisWorkerRegistry {
    pool: RedisPool,
    key: String,
}

impl RedisWorkerRegistry {
    /// The registry of `tenant`.
    #[must_use]
    pub fn new(pool: RedisPool, tenant: &TenantId) -> Self {
        Self { pool, key: TenantKeys::new(tenant).workers() }
    }

    fn encode(record: &WorkerRecord) -> QueueResult<String> {
        serde_json::to_string(record).map_err(QueueError::storage)
    }

    /// Writes (or overwrites) the entry of `worker_id`.
    ///
    /// # Errors
    /// `Unavailable` or `Storage` when Redis cannot be reached.
    pub async fn register(&self, worker_id: &str, record: &WorkerRecord) -> QueueResult<()> {
        let value = Self::encode(record)?;
        let mut conn = self.pool.get().await?;
        redis::cmd("HSET")
            .arg(&self.key)
            .arg(worker_id)
            .arg(value)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|e| redis_error(&e))?;
        Ok(())
    }

    /// Overwrites the entry of `worker_id` only if it exists; returns whether it did.
    ///
    /// # Errors
    /// As [`RedisWorkerRegistry::register`].
    pub async fn refresh(&self, worker_id: &str, record: &WorkerRecord) -> QueueResult<bool> {
        let value = Self::encode(record)?;
        let mut conn = self.pool.get().await?;
        let updated: i64 = REFRESH_WORKER
            .key(&self.key)
            .arg(worker_id)
            .arg(value)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(&e))?;
        Ok(updated == 1)
    }

    /// Removes the entry of `worker_id`; returns whether it was there.
    ///
    /// # Errors
    /// As [`RedisWorkerRegistry::register`].
    pub async fn remove(&self, worker_id: &str) -> QueueResult<bool> {
        let mut conn = self.pool.get().await?;
        let removed: i64 = redis::cmd("HDEL")
            .arg(&self.key)
            .arg(worker_id)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(&e))?;
        Ok(removed > 0)
    }

    /// Removes every entry that is stale at `now_ms`; returns how many.
    ///
    /// # Errors
    /// As [`RedisWorkerRegistry::register`].
    pub async fn prune(&self, now_ms: u64) -> QueueResult<u64> {
        let mut conn = self.pool.get().await?;
        PRUNE_WORKERS.key(&self.key).arg(now_ms).invoke_async(&mut conn).await.map_err(|e| redis_error(&e))
    }

    /// Every registered worker, by id, each marked stale or not at `now_ms`. An entry that does
    /// not parse is left out (the reaper prunes it).
    ///
    /// # Errors
    /// As [`RedisWorkerRegistry::register`].
    pub async fn list(&self, now_ms: u64) -> QueueResult<Vec<WorkerEntry>> {
        let mut conn = self.pool.get().await?;
        let all: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&self.key).query_async(&mut conn).await.map_err(|e| redis_error(&e))?;
        let mut out: Vec<WorkerEntry> = all
            .into_iter()
            .filter_map(|(worker_id, json)| {
                let record: WorkerRecord = serde_json::from_str(&json).ok()?;
                let stale = record.is_stale(now_ms);
                Some(WorkerEntry { worker_id, record, stale })
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_slot_keeps_two_jobs_ahead_a_slow_one_one_and_a_stopping_one_takes_none() {
        assert_eq!(slot_claims(true, true, 0), 2, "its next job and one more");
        assert_eq!(slot_claims(true, true, 1), 1, "one is ahead already");
        assert_eq!(slot_claims(true, true, 2), 0);
        assert_eq!(slot_claims(true, false, 0), 1, "a slow handler's slot claims its next only");
        assert_eq!(slot_claims(true, false, 1), 0, "and none while one is ahead");
        assert_eq!(slot_claims(false, true, 0), 0, "a stopping process takes no new job");
    }

    /// The values of `CLAIM_FIELDS` of a started chat job, as `hand_new_chat` pushes them.
    fn handed_values() -> serde_json::Value {
        let values: Vec<serde_json::Value> = crate::store::CLAIM_FIELDS
            .iter()
            .map(|f| match *f {
                "id" => "c1".into(),
                "state" => "processing|7|7|1000".into(),
                "fixed" => "3|1000|student:s1:main|".into(),
                "payload" => "{\"q\":1}".into(),
                _ => serde_json::Value::Null,
            })
            .collect();
        values.into()
    }

    #[test]
    fn a_handed_chat_job_is_read_as_a_claim_of_its_lane_with_its_lease() {
        let tenant = TenantId::new("t").expect("tenant");
        let text = serde_json::json!(["run", "7", "student:s1:main", "31000", handed_values()]).to_string();
        let (claim, until) = parse_handed_chat(&text, &tenant).expect("a handed chat job");
        assert_eq!(until, 31_000, "its lane's lease");
        let Claimed::Chat(claim, record) = claim else { panic!("a started claim") };
        assert_eq!(
            (claim.job_id.as_str(), claim.lane_id.as_str(), claim.epoch),
            ("c1", "student:s1:main", 7)
        );
        assert_eq!(
            (record.kind, record.status, record.lease_epoch),
            (JobKind::Chat, JobStatus::Processing, 7)
        );
        assert_eq!(record.payload, serde_json::json!({"q": 1}));
    }

    #[test]
    fn a_handed_chat_item_that_is_not_a_started_claim_is_refused() {
        let tenant = TenantId::new("t").expect("tenant");
        for text in [
            "not json".to_owned(),
            serde_json::json!(["finish", "7", "l", "31000", "c1"]).to_string(),
            serde_json::json!(["run", "x", "l", "31000", handed_values()]).to_string(),
            serde_json::json!(["run", "7", "l"]).to_string(),
        ] {
            assert!(
                matches!(parse_handed_chat(&text, &tenant), Err(QueueError::Storage(_))),
                "{text} is refused"
            );
        }
    }

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A claimed record as a script returns it: its values, in the answer itself, null for an
    /// absent field.
    fn record(id: &str) -> Vec<Value> {
        let mut values = vec![Value::Nil; CLAIM_FIELDS.len()];
        values[crate::store::claim_field("id")] = text(id);
        values[crate::store::claim_field("state")] = text("processing");
        values
    }

    #[test]
    fn a_flat_complete_answer_is_split_per_outcome_in_order() {
        let chat_start = vec![text("finish"), text("3"), text("l1"), text("0"), text("c9")];
        let flat = [
            vec![text("ok"), Value::Int(2), Value::Int(0)],
            record("a"),
            record("b"),
            vec![text("stale:4"), Value::Int(0), Value::Int(0)],
            vec![text("ok"), Value::Int(1), Value::Int(1)],
            record("c"),
            chat_start.clone(),
        ]
        .concat();
        let answers = parse_complete_answers(flat, 3).expect("parses");
        let some = |s: &str| Some(s.to_owned());
        let claimed = |id: &str| {
            let mut values = vec![None; CLAIM_FIELDS.len()];
            values[crate::store::claim_field("id")] = some(id);
            values[crate::store::claim_field("state")] = some("processing");
            values
        };
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[0], ("ok".to_owned(), vec![claimed("a"), claimed("b")], vec![]));
        assert_eq!(answers[1], ("stale:4".to_owned(), vec![], vec![]));
        assert_eq!(answers[2], ("ok".to_owned(), vec![claimed("c")], vec![chat_start]));
    }

    #[test]
    fn flat_chat_answers_are_taken_one_by_one_by_their_verb() {
        let tenant = TenantId::new("t").expect("tenant");
        let mut record = record("c1");
        record[crate::store::claim_field("state")] = text("processing|7|1|1000");
        record[crate::store::claim_field("fixed")] = text("3|1000|l1|");
        record[crate::store::claim_field("payload")] = text("{}");
        let run = [vec![text("run"), text("7"), text("l1"), text("31000")], record].concat();
        let finish = vec![text("finish"), text("8"), text("l2"), text("0"), text("c2")];
        let mut items = [run.clone(), finish.clone(), vec![text("run"), text("9")]].concat().into_iter();
        assert_eq!(take_chat_parts(&mut items).expect("a run"), run);
        assert_eq!(take_chat_parts(&mut items).expect("a finish"), finish);
        let err = take_chat_parts(&mut items).expect_err("a run cut short");
        assert!(err.to_string().contains("ended after 2 of its 9 parts"), "{err}");
        let Claimed::Chat(claim, started) = chat_claim_from_parts(run, &tenant).expect("run") else {
            panic!("a started claim")
        };
        assert_eq!((claim.job_id.as_str(), claim.epoch, started.attempt), ("c1", 7, 1));
        let Claimed::FinishLane(claim) = chat_claim_from_parts(finish, &tenant).expect("finish") else {
            panic!("a finish")
        };
        assert_eq!((claim.job_id.as_str(), claim.lane_id.as_str()), ("c2", "l2"));
    }

    #[test]
    fn a_complete_answer_of_another_shape_is_refused() {
        let short = vec![text("ok"), Value::Int(0), Value::Int(0)];
        let err = parse_complete_answers(short, 2).expect_err("one outcome of two");
        assert!(err.to_string().contains("1 outcomes of 2"), "{err}");

        let long = vec![text("ok"), Value::Int(0), Value::Int(0), text("ok"), Value::Int(0), Value::Int(0)];
        let err = parse_complete_answers(long, 1).expect_err("two outcomes for one");
        assert!(err.to_string().contains("more than the 1 outcomes"), "{err}");

        let missing_record = [vec![text("ok"), Value::Int(2), Value::Int(0)], record("a")].concat();
        let err = parse_complete_answers(missing_record, 1).expect_err("a record short");
        assert!(err.to_string().contains("fewer claimed jobs"), "{err}");

        let count_for_answer = vec![Value::Int(0), Value::Int(0), Value::Int(0)];
        let err = parse_complete_answers(count_for_answer, 1).expect_err("a count where the answer goes");
        assert!(err.to_string().contains("not text"), "{err}");

        let no_count = vec![text("ok"), text("x"), Value::Int(0)];
        let err = parse_complete_answers(no_count, 1).expect_err("text where a count goes");
        assert!(err.to_string().contains("without a count"), "{err}");

        let not_a_record = vec![text("ok"), Value::Int(1), Value::Int(0), text("a")];
        let err = parse_complete_answers(not_a_record, 1).expect_err("one value for a record");
        assert!(err.to_string().contains("1 record values, not whole records of"), "{err}");

        let nested = vec![text("ok"), Value::Int(1), Value::Int(0), Value::Array(record("a"))];
        let err = parse_complete_answers(nested, 1).expect_err("a record as a list");
        assert!(err.to_string().contains("a record value that is not text"), "{err}");
    }
}
