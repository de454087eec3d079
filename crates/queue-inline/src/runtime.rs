//! The in-process runtime behind `InlineQueueBackend`: one tokio worker pool per job kind, chat
//! lanes dispatched through a [`ChatLaneStore`], capped work through a [`Limiter`], retries with
//! backoff, a lease reaper, retention, and a graceful stop that hands back unfinished work.
//!
//! The job store is the source of truth. Everything held here (queues, lanes, running set) is an
//! index over it that `start` rebuilds from the store's pending jobs, so a crash loses nothing
//! that the store accepted.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use queue_core::{
    ChatEnqueueReceipt, ChatLaneStore, HandlerError, HandlerSet, JobId, JobKind, JobMetrics, JobRecord,
    JobStatus, JobStore, JobUpdate, LaneClaim, LaneId, Limiter, PermitSet, ProfileUpdate, QueueError,
    QueueResult, SharedClock, TenantId, acquisition_order, duration_ms,
};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::held::HeldSeqs;
use crate::work_queue::WorkQueue;

/// How the runtime behaves. Real-time intervals (heartbeat, reaper) are wall-clock `Duration`s;
/// lease deadlines themselves are read from the injected clock.
#[derive(Debug, Clone)]
pub struct InlineRuntimeConfig {
    /// Chat workers (`CHAT_WORKER_POOL_SIZE`).
    pub chat_workers: usize,
    /// Upload workers.
    pub upload_workers: usize,
    /// Exam workers.
    pub exam_workers: usize,
    /// Profile-update workers (each takes a batch at a time).
    pub profile_workers: usize,
    /// Capacity of the upload and exam queues; a submit past it is refused.
    pub queue_capacity: usize,
    /// Capacity of the profile-update queue (`PROFILE_UPDATE_QUEUE_MAX`).
    pub profile_queue_capacity: usize,
    /// Most profile updates merged into one handler call.
    pub profile_batch_max: usize,
    /// Attempts before a failing job is dead-lettered (`failed`).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How often a running chat job renews its lease.
    pub heartbeat_interval: Duration,
    /// How often the reaper looks for expired leases.
    pub reaper_interval: Duration,
    /// How long `stop` lets running jobs finish before handing them back.
    pub stop_deadline: Duration,
    /// Finished records older than this are deleted.
    pub retention: Duration,
    /// How often retention runs.
    pub purge_interval: Duration,
    /// The tenant, for the `tenant` field of the runtime's spans and logs.
    pub tenant: TenantId,
    /// Where job events are counted (the tenant's metrics; a fresh set by default).
    pub metrics: Arc<JobMetrics>,
}

impl Default for InlineRuntimeConfig {
    fn default() -> Self {
        Self {
            chat_workers: 4,
            upload_workers: 2,
            exam_workers: 2,
            profile_workers: 1,
            queue_capacity: 10_000,
            profile_queue_capacity: 500,
            profile_batch_max: 64,
            max_attempts: 3,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(60),
            reaper_interval: Duration::from_secs(1),
            stop_deadline: Duration::from_secs(10),
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(600),
            tenant: TenantId::default_tenant(),
            metrics: Arc::default(),
        }
    }
}

impl InlineRuntimeConfig {
    /// The heartbeat that keeps a lease of `claim_ttl` alive: a third of it, so two renewals may
    /// be missed before the lease lapses.
    #[must_use]
    pub fn heartbeat_for_ttl(claim_ttl: Duration) -> Duration {
        (claim_ttl / 3).max(Duration::from_millis(10))
    }
}

/// What the runtime works on.
#[derive(Debug, Clone)]
pub struct InlineDeps {
    /// The durable (or ephemeral) job records.
    pub store: Arc<dyn JobStore>,
    /// The tenant's chat lanes.
    pub lanes: Arc<dyn ChatLaneStore>,
    /// Caps on expensive work.
    pub limiter: Arc<dyn Limiter>,
    /// What runs each kind.
    pub handlers: HandlerSet,
    /// Time for leases and retention.
    pub clock: SharedClock,
}

/// Counters since the runtime was built.
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
    recovered: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RuntimeStats {
    /// Jobs accepted by an enqueue call.
    pub enqueued: u64,
    /// Job attempts started.
    pub started: u64,
    /// Jobs finished `done`.
    pub completed: u64,
    /// Jobs dead-lettered (`failed`).
    pub failed: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Late results rejected because their lease was no longer current.
    pub fenced: u64,
    /// Leases that expired and were re-dispatched by the reaper.
    pub lease_expiries: u64,
    /// Running jobs handed back to the queue by a stop.
    pub handed_back: u64,
    /// Pending jobs re-enqueued by a scan.
    pub recovered: u64,
}

/// Jobs waiting in memory per pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct QueueDepths {
    /// Uploads waiting for a worker.
    pub upload: usize,
    /// Exams waiting for a worker.
    pub exam: usize,
    /// Profile updates waiting for a worker.
    pub profile_update: usize,
    /// Lanes whose head job waits for a chat worker.
    pub chat_ready: usize,
    /// Jobs this process has started: their records are `processing`, whether their handler
    /// runs yet or they still wait for permits (`llm`, `ocr`) before it does.
    pub running: usize,
}

#[derive(Debug)]
struct RunningJob {
    epoch: u64,
    permits: Option<PermitSet>,
    /// When the attempt started: its run time ends at the outcome. `None` while a non-chat job
    /// is only reserved (`begin`), before its record has moved.
    since: Option<Instant>,
    /// A chat job's lane: the heartbeat renews the claim `(job, lane, epoch)` while it runs.
    lane: Option<LaneId>,
}

/// The hasher of `running`'s ids: FxHash's step, 8 bytes of the id at a time, unkeyed.
///
/// `running` holds only the jobs this process has started (one or two per worker, a batch per
/// profile worker), so ids chosen to collide can cost a lookup that many comparisons at most;
/// std's SipHash cost about 250 instructions per lookup of a generated id, three lookups a job.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0; 8];
            w.copy_from_slice(word);
            self.add(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            // Byte by byte: a copy of a variable length would be a call to `memcpy`.
            self.add(rest.iter().rev().fold(0, |w, &b| w << 8 | u64::from(b)));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        // The table picks buckets by the low bits; the multiplication mixes the high ones best.
        self.0.rotate_left(26)
    }
}

/// The jobs this process has started, by id.
type Running = HashMap<JobId, RunningJob, BuildHasherDefault<IdHasher>>;

/// A non-chat job waiting in its pool's queue, with the epoch its next attempt starts under (one
/// past the record's when it was queued), so a worker can start it without reading it first.
///
/// A backlog is held whole in the queues; the id's text is the one the store holds too (a
/// `JobId` shares it between clones).
#[derive(Debug)]
struct PlainItem {
    id: JobId,
    epoch: u64,
    /// The `seq` of the record it was queued for: its key in `in_flight`.
    seq: u64,
}

impl PlainItem {
    /// The next attempt of `record`, under the epoch after the record's.
    fn next(record: &JobRecord) -> Self {
        Self { id: record.id.clone(), epoch: record.lease_epoch + 1, seq: record.seq }
    }
}

/// What a worker takes from its queue.
enum Work {
    Plain(PlainItem),
    Chat(LaneClaim),
}

/// A job a worker has started (its record is `processing` under `epoch`), ready to run.
struct Prepared {
    record: Box<JobRecord>,
    epoch: u64,
    /// Set for a chat job: the lane claim it runs under.
    claim: Option<LaneClaim>,
    /// For a plain job, its queue item's key in `in_flight`, let go when the job is settled.
    held: u64,
    span: tracing::Span,
}

/// The `lane` field of a job's log lines: empty for kinds without lanes.
fn lane_of(record: &JobRecord) -> &str {
    record.lane.as_ref().map_or("", LaneId::as_str)
}

#[derive(Debug, Default)]
struct Lifecycle {
    shutdown: Option<watch::Sender<bool>>,
    workers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

struct Inner {
    config: InlineRuntimeConfig,
    deps: InlineDeps,
    stats: Stats,
    upload: WorkQueue<PlainItem>,
    exam: WorkQueue<PlainItem>,
    profile: WorkQueue<PlainItem>,
    chat_ready: WorkQueue<LaneClaim>,
    /// The `seq` of every non-chat job held in a queue or by a worker: a rescan skips them.
    /// Keyed by `seq`, not by id, so that it is touched near its ends ([`HeldSeqs`]).
    in_flight: Mutex<HeldSeqs>,
    running: Mutex<Running>,
    /// Retry timers, aborted by `stop`.
    timers: Mutex<Vec<JoinHandle<()>>>,
    accepting: AtomicBool,
    /// Set when a rescan had to leave jobs pending (a full queue or lane): the reaper scans again.
    rescan_needed: AtomicBool,
    lifecycle: tokio::sync::Mutex<Lifecycle>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InlineRuntime")
            .field("accepting", &self.accepting.load(Ordering::Relaxed))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single map or vector operation, so a panic elsewhere
    // cannot leave the data half-updated: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A job a worker started, with the epoch it runs under.
///
/// Boxed as soon as the store has answered it: it then moves from the start through the
/// worker's queue of ready jobs to the outcome as a pointer, not as 192 bytes copied at each step.
type Started = (Box<JobRecord>, u64);

/// A plain job's attempt: the epoch it runs under and its queue item's key in `in_flight`.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    epoch: u64,
    held: u64,
}

/// The in-process runtime. Cheap to clone; clones share one runtime.
#[derive(Debug, Clone)]
pub struct InlineRuntime {
    inner: Arc<Inner>,
}

impl InlineRuntime {
    /// Builds a stopped runtime.
    #[must_use]
    pub fn new(config: InlineRuntimeConfig, deps: InlineDeps) -> Self {
        let inner = Inner {
            upload: WorkQueue::new(config.queue_capacity),
            exam: WorkQueue::new(config.queue_capacity),
            profile: WorkQueue::new(config.profile_queue_capacity),
            chat_ready: WorkQueue::new(usize::MAX),
            config,
            deps,
            stats: Stats::default(),
            in_flight: Mutex::new(HeldSeqs::default()),
            running: Mutex::new(Running::default()),
            timers: Mutex::new(Vec::new()),
            accepting: AtomicBool::new(false),
            rescan_needed: AtomicBool::new(false),
            lifecycle: tokio::sync::Mutex::new(Lifecycle::default()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The dependencies it runs on.
    #[must_use]
    pub fn deps(&self) -> &InlineDeps {
        &self.inner.deps
    }

    /// The metrics it records job events into.
    #[must_use]
    pub fn metrics(&self) -> &Arc<JobMetrics> {
        &self.inner.config.metrics
    }

    /// Whether it takes work.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.inner.accepting.load(Ordering::SeqCst)
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> RuntimeStats {
        let s = &self.inner.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RuntimeStats {
            enqueued: get(&s.enqueued),
            started: get(&s.started),
            completed: get(&s.completed),
            failed: get(&s.failed),
            retried: get(&s.retried),
            fenced: get(&s.fenced),
            lease_expiries: get(&s.lease_expiries),
            handed_back: get(&s.handed_back),
            recovered: get(&s.recovered),
        }
    }

    /// Jobs waiting in memory and running.
    #[must_use]
    pub fn depths(&self) -> QueueDepths {
        let i = &self.inner;
        QueueDepths {
            upload: i.upload.len(),
            exam: i.exam.len(),
            profile_update: i.profile.len(),
            chat_ready: i.chat_ready.len(),
            running: lock(&i.running).len(),
        }
    }

    /// Starts the worker pools, the reaper and retention, then re-enqueues every pending job of
    /// the store (recovery after a restart). Idempotent.
    ///
    /// # Errors
    /// A store error during the rescan (the workers keep running; call again to retry).
    pub async fn start(&self) -> QueueResult<()> {
        {
            let mut life = self.inner.lifecycle.lock().await;
            if life.shutdown.is_some() {
                return Ok(());
            }
            let (tx, rx) = watch::channel(false);
            let c = &self.inner.config;
            for (kind, n) in [
                (JobKind::Chat, c.chat_workers),
                (JobKind::Upload, c.upload_workers),
                (JobKind::Exam, c.exam_workers),
                (JobKind::ProfileUpdate, c.profile_workers),
            ] {
                for worker in 0..n.max(1) {
                    let inner = self.inner.clone();
                    let rx = rx.clone();
                    let span = info_span!("worker", tenant = %c.tenant, kind = kind.as_str(), worker);
                    life.workers.push(tokio::spawn(Inner::worker_loop(inner, kind, rx).instrument(span)));
                }
            }
            let span = info_span!("reaper", tenant = %c.tenant);
            life.background
                .push(tokio::spawn(Inner::reaper_loop(self.inner.clone(), rx.clone()).instrument(span)));
            let span = info_span!("heartbeat", tenant = %c.tenant);
            life.background.push(tokio::spawn(Inner::heartbeat_loop(self.inner.clone()).instrument(span)));
            let span = info_span!("retention", tenant = %c.tenant);
            life.background.push(tokio::spawn(Inner::purge_loop(self.inner.clone(), rx).instrument(span)));
            life.shutdown = Some(tx);
            self.inner.accepting.store(true, Ordering::SeqCst);
        }
        let recovered = self.scan_pending_chat_jobs().await?
            + self.scan_pending(JobKind::Upload).await?
            + self.scan_pending(JobKind::Exam).await?
            + self.scan_pending(JobKind::ProfileUpdate).await?;
        info!(recovered, "inline runtime started");
        Ok(())
    }

    /// Stops taking work, lets running jobs finish within `stop_deadline`, then hands back
    /// (re-queues in the store) what did not finish. The in-memory queues and lanes are dropped:
    /// the store still holds those jobs as pending and the next `start` re-enqueues them.
    /// Idempotent.
    ///
    /// # Errors
    /// Never fails today; the signature leaves room for backends that can.
    pub async fn stop(&self) -> QueueResult<()> {
        let mut life = self.inner.lifecycle.lock().await;
        let Some(shutdown) = life.shutdown.take() else {
            return Ok(());
        };
        self.inner.accepting.store(false, Ordering::SeqCst);
        let _ = shutdown.send(true);
        let workers = std::mem::take(&mut life.workers);
        let aborts: Vec<_> = workers.iter().map(JoinHandle::abort_handle).collect();
        let all_done = async {
            for w in workers {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(self.inner.config.stop_deadline, all_done).await.is_err() {
            warn!("stop deadline passed; handing back the jobs still running");
            for a in aborts {
                a.abort();
            }
        }
        for b in life.background.drain(..) {
            b.abort();
        }
        for t in lock(&self.inner.timers).drain(..) {
            t.abort();
        }
        self.inner.hand_back_running().await;
        self.inner.upload.drain();
        self.inner.exam.drain();
        self.inner.profile.drain();
        self.inner.chat_ready.drain();
        lock(&self.inner.in_flight).clear();
        if let Err(e) = self.inner.deps.lanes.reset().await {
            warn!(error = %e, "could not reset lanes at stop");
        }
        info!("inline runtime stopped");
        Ok(())
    }

    /// Ends every task at once, handing nothing back, as a crash of the process would: the
    /// store keeps whatever state the jobs were in. For crash-recovery tests; use [`stop`] to
    /// stop.
    ///
    /// [`stop`]: InlineRuntime::stop
    pub async fn kill(&self) {
        let mut life = self.inner.lifecycle.lock().await;
        self.inner.accepting.store(false, Ordering::SeqCst);
        life.shutdown = None;
        let life = &mut *life;
        let timers: Vec<_> = lock(&self.inner.timers).drain(..).collect();
        for task in life.workers.drain(..).chain(life.background.drain(..)).chain(timers) {
            task.abort();
        }
    }

    fn ensure_running(&self) -> QueueResult<()> {
        if self.is_running() { Ok(()) } else { Err(QueueError::NotRunning) }
    }

    async fn pending_record(&self, job_id: &JobId, kind: JobKind) -> QueueResult<JobRecord> {
        let record = self
            .inner
            .deps
            .store
            .get(job_id)
            .await?
            .ok_or_else(|| QueueError::NotFound { job: job_id.clone() })?;
        if record.kind != kind {
            return Err(QueueError::invalid(
                "job_id",
                format!("job {job_id} is a {} job, not a {kind} job", record.kind),
            ));
        }
        Ok(record)
    }

    /// Queues a non-chat job whose record exists.
    ///
    /// # Errors
    /// `NotRunning`, `NotFound`, `InvalidInput` (wrong kind), `QueueFull`.
    pub async fn enqueue(&self, kind: JobKind, job_id: JobId) -> QueueResult<()> {
        self.ensure_running()?;
        if kind == JobKind::Chat {
            return self.enqueue_chat(job_id, None).await.map(drop);
        }
        let record = self.pending_record(&job_id, kind).await?;
        self.enqueue_plain_record(&record)
    }

    /// Queues `record`, a job the caller has just created, without reading it back from the
    /// store: `InlineQueueBackend::submit` and `submit_many` hold the records they created. A chat
    /// job goes to the lane on its record and comes back with its receipt.
    ///
    /// # Errors
    /// As [`InlineRuntime::enqueue`] and [`InlineRuntime::enqueue_chat`].
    pub(crate) async fn enqueue_created(
        &self,
        record: &JobRecord,
    ) -> QueueResult<Option<ChatEnqueueReceipt>> {
        self.ensure_running()?;
        if record.kind == JobKind::Chat {
            self.enqueue_chat_record(record, None).await.map(Some)
        } else {
            self.enqueue_plain_record(record).map(|()| None)
        }
    }

    /// The part of [`InlineRuntime::enqueue`] after the record was found.
    fn enqueue_plain_record(&self, record: &JobRecord) -> QueueResult<()> {
        let kind = record.kind;
        if record.status.is_terminal() {
            return Err(QueueError::InvalidTransition { from: record.status, to: JobStatus::Queued });
        }
        if self.inner.push_plain(kind, PlainItem::next(record))? {
            self.inner.stats.enqueued.fetch_add(1, Ordering::Relaxed);
            self.inner.config.metrics.record_enqueued(kind);
            info!(tenant = %record.tenant, lane = lane_of(record), job = %record.id, kind = kind.as_str(), "job enqueued");
        }
        Ok(())
    }

    /// Queues a profile update.
    ///
    /// # Errors
    /// As [`InlineRuntime::enqueue`].
    pub async fn enqueue_profile_update(&self, update: ProfileUpdate) -> QueueResult<()> {
        self.enqueue(JobKind::ProfileUpdate, update.job_id).await
    }

    /// Puts a chat job in its lane and dispatches it if the lane is idle.
    ///
    /// # Errors
    /// `NotRunning`, `NotFound`, `InvalidInput`, `LaneFull`.
    pub async fn enqueue_chat(
        &self,
        job_id: JobId,
        lane_id: Option<LaneId>,
    ) -> QueueResult<ChatEnqueueReceipt> {
        self.ensure_running()?;
        let record = self.pending_record(&job_id, JobKind::Chat).await?;
        self.enqueue_chat_record(&record, lane_id).await
    }

    /// The part of [`InlineRuntime::enqueue_chat`] after the record was found.
    async fn enqueue_chat_record(
        &self,
        record: &JobRecord,
        lane_id: Option<LaneId>,
    ) -> QueueResult<ChatEnqueueReceipt> {
        let job_id = &record.id;
        let Some(lane) = lane_id.or_else(|| record.lane.clone()) else {
            return Err(QueueError::invalid("lane_id", "required for a chat job without a lane"));
        };
        let outcome = self.inner.deps.lanes.enqueue(job_id, &lane).await?;
        if outcome.added {
            self.inner.stats.enqueued.fetch_add(1, Ordering::Relaxed);
            self.inner.config.metrics.record_enqueued(JobKind::Chat);
            info!(
                tenant = %record.tenant,
                lane = %lane,
                job = %job_id,
                kind = "chat",
                position = outcome.receipt.lane_queue_position,
                "job enqueued"
            );
        }
        if let Some(claim) = outcome.dispatch {
            self.inner.chat_ready.push_owed(claim);
        }
        Ok(outcome.receipt)
    }

    /// Re-enqueues pending non-chat jobs of `kind` that no worker holds; returns how many.
    ///
    /// # Errors
    /// A store error.
    pub async fn scan_pending(&self, kind: JobKind) -> QueueResult<usize> {
        if kind == JobKind::Chat {
            return self.scan_pending_chat_jobs().await;
        }
        self.ensure_running()?;
        let mut n = 0;
        for record in self.inner.deps.store.scan_pending(kind).await? {
            if lock(&self.inner.in_flight).contains(record.seq) {
                continue;
            }
            self.inner.requeue_orphan(&record).await?;
            match self.inner.push_plain(kind, PlainItem::next(&record)) {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => {
                    // Full: the rest stay pending in the store; the reaper scans again later.
                    warn!(error = %e, "queue full during rescan; remaining jobs stay pending");
                    self.inner.rescan_needed.store(true, Ordering::SeqCst);
                    break;
                }
            }
        }
        self.inner.stats.recovered.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Rebuilds lanes from the store's pending chat jobs, in submission order; returns how many
    /// jobs were put back in a lane. Jobs already in their lane are left alone, so running it
    /// twice changes nothing.
    ///
    /// # Errors
    /// A store or lane-store error.
    pub async fn scan_pending_chat_jobs(&self) -> QueueResult<usize> {
        self.ensure_running()?;
        let mut n = 0;
        for record in self.inner.deps.store.scan_pending(JobKind::Chat).await? {
            if lock(&self.inner.running).contains_key(&record.id) {
                continue;
            }
            let Some(lane) = record.lane.clone() else {
                warn!(job = %record.id, "pending chat job without a lane; dead-lettering it");
                let _ = self
                    .inner
                    .deps
                    .store
                    .settle(
                        &record.id,
                        JobUpdate {
                            to: Some(JobStatus::Failed),
                            error: Some("chat job has no lane".into()),
                            ..JobUpdate::default()
                        },
                    )
                    .await;
                continue;
            };
            // Recovery restores accepted jobs whatever the lane cap is now: the cap limits new
            // submits, and a job left outside its lane could be overtaken by a newcomer.
            let outcome = self.inner.deps.lanes.restore(&record.id, &lane).await?;
            if outcome.added {
                n += 1;
            }
            if let Some(claim) = outcome.dispatch {
                self.inner.chat_ready.push_owed(claim);
            }
        }
        self.inner.stats.recovered.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Inner {
    fn queue(&self, kind: JobKind) -> &WorkQueue<PlainItem> {
        match kind {
            JobKind::Upload => &self.upload,
            JobKind::Exam => &self.exam,
            JobKind::ProfileUpdate | JobKind::Chat => &self.profile,
        }
    }

    /// `JobStore::transition`, done at once by a store that can (`transition_now`): a memory
    /// store's answer then costs no boxed future. The record comes boxed ([`Started`]).
    async fn store_transition(&self, id: &JobId, update: JobUpdate) -> QueueResult<Box<JobRecord>> {
        match self.deps.store.transition_now(id, update) {
            Ok(done) => done.map(Box::new),
            Err(update) => self.deps.store.transition(id, update).await.map(Box::new),
        }
    }

    /// `JobStore::settle`, done at once by a store that can (`settle_now`).
    async fn store_settle(&self, id: &JobId, update: JobUpdate) -> QueueResult<()> {
        match self.deps.store.settle_now(id, update) {
            Ok(done) => done,
            Err(update) => self.deps.store.settle(id, update).await,
        }
    }

    /// `ChatLaneStore::renew`, done at once by a lane store that can (`renew_now`).
    async fn lane_renew(&self, claim: &LaneClaim) -> QueueResult<u64> {
        match self.deps.lanes.renew_now(claim) {
            Some(done) => done,
            None => self.deps.lanes.renew(claim).await,
        }
    }

    /// `ChatLaneStore::finish`, done at once by a lane store that can (`finish_now`).
    async fn lane_finish(&self, claim: &LaneClaim) -> QueueResult<Option<LaneClaim>> {
        match self.deps.lanes.finish_now(claim) {
            Some(done) => done,
            None => self.deps.lanes.finish(claim).await,
        }
    }

    /// Pushes a non-chat job unless it is already held; `Ok(false)` when it was.
    fn push_plain(&self, kind: JobKind, item: PlainItem) -> QueueResult<bool> {
        if !lock(&self.in_flight).insert(item.seq) {
            return Ok(false);
        }
        let queue = self.queue(kind);
        if let Err(item) = queue.try_push(item) {
            lock(&self.in_flight).remove(item.seq);
            return Err(QueueError::QueueFull { kind, capacity: queue.capacity() });
        }
        Ok(true)
    }

    /// A record left `processing` by a worker that is gone goes back to `queued` first.
    async fn requeue_orphan(&self, record: &JobRecord) -> QueueResult<()> {
        if record.status == JobStatus::Processing {
            match self.store_settle(&record.id, JobUpdate::requeue(record.lease_epoch, None)).await {
                Ok(()) | Err(QueueError::StaleLease { .. } | QueueError::InvalidTransition { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn pop_work(&self, kind: JobKind) -> Work {
        if kind == JobKind::Chat {
            Work::Chat(self.chat_ready.pop().await)
        } else {
            Work::Plain(self.queue(kind).pop().await)
        }
    }

    fn try_pop_work(&self, kind: JobKind) -> Option<Work> {
        if kind == JobKind::Chat {
            self.chat_ready.try_pop().map(Work::Chat)
        } else {
            self.queue(kind).try_pop().map(Work::Plain)
        }
    }

    async fn worker_loop(self: Arc<Self>, kind: JobKind, mut shutdown: watch::Receiver<bool>) {
        if kind == JobKind::ProfileUpdate {
            return self.batch_worker_loop(kind, shutdown).await;
        }
        // A job started while the previous one's outcome was being recorded.
        let mut ready: Option<Prepared> = None;
        loop {
            // A turn for the thread's other tasks now and then: with a store and a handler that
            // never wait (the memory store, an instant job), nothing else in this loop would give
            // one, and a backlog would hold the thread (the HTTP server's, the heartbeat's, the
            // timers') until it is gone. Tokio's budget yields once every 128 jobs or so.
            tokio::task::consume_budget().await;
            let job = if let Some(job) = ready.take() {
                job
            } else {
                let work = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    work = self.pop_work(kind) => work,
                };
                match self.prepare(work).await {
                    Some(job) => job,
                    None => continue,
                }
            };
            let result = self.execute(&job).await;
            // Record this outcome and start the next waiting job at the same time: with a durable
            // store both ride in one group commit, so a worker waits for one commit per job, not
            // two. A stopping runtime starts nothing new.
            let next = if *shutdown.borrow() { None } else { self.try_pop_work(kind) };
            match next {
                Some(work) => {
                    // Pinned where they are made: `join!` then holds two references, not the two
                    // futures (about a kilobyte each, copied at each move).
                    let settle = std::pin::pin!(self.settle(job, result));
                    let prepare = std::pin::pin!(self.prepare(work));
                    let ((), next) = tokio::join!(settle, prepare);
                    ready = next;
                }
                None => self.settle(job, result).await,
            }
        }
    }

    /// Profile workers take several jobs at a time, for `JobHandler::handle_batch`.
    async fn batch_worker_loop(self: Arc<Self>, kind: JobKind, mut shutdown: watch::Receiver<bool>) {
        let max = self.config.profile_batch_max;
        let queue = self.queue(kind);
        loop {
            let batch = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                batch = queue.pop_batch(max) => batch,
            };
            self.run_plain_batch(kind, batch).await;
            // A turn for the thread's other tasks after each batch (as the worker loop gives one
            // every so many jobs): a batch that never waits would otherwise run the next at once.
            tokio::task::yield_now().await;
        }
    }

    /// Starts a job taken from a queue; `None` when there is nothing to run.
    async fn prepare(&self, work: Work) -> Option<Prepared> {
        match work {
            Work::Plain(item) => self.prepare_plain(item).await,
            Work::Chat(claim) => {
                let span =
                    info_span!("chat_job", job = %claim.job_id, lane = %claim.lane_id, epoch = claim.epoch);
                // Pinned where it is made, as in `execute`.
                std::pin::pin!(self.prepare_chat(claim, span.clone())).instrument(span).await
            }
        }
    }

    async fn prepare_plain(&self, item: PlainItem) -> Option<Prepared> {
        match self.begin(&item.id, item.epoch, None).await {
            Ok(Some((record, epoch))) => {
                Some(Prepared { record, epoch, claim: None, held: item.seq, span: tracing::Span::none() })
            }
            Ok(None) => {
                // Gone or finished meanwhile (cancelled): nothing to run.
                lock(&self.in_flight).remove(item.seq);
                None
            }
            Err(e) => {
                warn!(job = %item.id, error = %e, "could not start job; it stays pending for the next scan");
                lock(&self.in_flight).remove(item.seq);
                None
            }
        }
    }

    /// Starts the head job of a lane under `claim`.
    async fn prepare_chat(&self, claim: LaneClaim, span: tracing::Span) -> Option<Prepared> {
        // A dispatch can wait in the ready queue while every worker is busy; if its lease lapsed
        // meanwhile, the reaper has re-dispatched the job under a newer claim. Renewing first
        // both proves this claim is still current and restarts its lease for the run.
        match self.lane_renew(&claim).await {
            Ok(_) => {}
            Err(QueueError::StaleLease { .. }) => {
                self.fenced_job(
                    &self.config.tenant,
                    claim.lane_id.as_str(),
                    &claim.job_id,
                    claim.epoch,
                    "dispatch",
                );
                return None;
            }
            Err(e) => {
                warn!(error = %e, "could not renew the claim; leaving it to the reaper");
                return None;
            }
        }
        match self.begin(&claim.job_id, claim.epoch, Some(&claim.lane_id)).await {
            Ok(Some((record, epoch))) => {
                let held = record.seq;
                Some(Prepared { record, epoch, claim: Some(claim), held, span })
            }
            Ok(None) => {
                // Cancelled or already finished (a late re-delivery): move the lane on.
                self.advance_lane(&claim).await;
                None
            }
            Err(QueueError::StaleLease { .. } | QueueError::InvalidTransition { .. }) => {
                self.fenced_job(
                    &self.config.tenant,
                    claim.lane_id.as_str(),
                    &claim.job_id,
                    claim.epoch,
                    "start",
                );
                None
            }
            Err(e) => {
                // The store is unreachable: keep the claim; the lease lapses and the reaper
                // re-dispatches the job once the store answers again.
                warn!(error = %e, "could not start the chat job; leaving it to the reaper");
                None
            }
        }
    }

    /// Runs a started job's handler under its permits.
    async fn execute(&self, job: &Prepared) -> Result<Value, HandlerError> {
        let record = &job.record;
        // A job started more often than its budget allows was lost with its worker each time
        // (a crash, a hang past its lease): dead-letter it rather than run it forever.
        if let Some(gave_up) = queue_core::lost_too_often(record, self.config.max_attempts) {
            return Err(gave_up);
        }
        let handler = self.deps.handlers.get(record.kind);
        let classes = acquisition_order(&handler.permits(record));
        // Pinned where it is made: the span's wrapper then holds a reference, not a copy.
        let run = std::pin::pin!(async {
            match self.acquire(&classes).await {
                Ok(permits) => {
                    if permits.is_some() {
                        self.note_permits(&record.id, job.epoch, permits.as_ref());
                    }
                    let result = handler.handle(record).await;
                    self.release(permits).await;
                    result
                }
                Err(e) => Err(HandlerError::retryable(format!("limiter: {e}"))),
            }
        });
        run.instrument(job.span.clone()).await
    }

    /// Records a job's outcome; a chat job's lane moves on.
    async fn settle(self: &Arc<Self>, job: Prepared, result: Result<Value, HandlerError>) {
        let Prepared { record, epoch, claim, held, span } = job;
        if let Some(claim) = claim {
            let run_ms = self.end(&claim.job_id, claim.epoch);
            std::pin::pin!(self.settle_chat(&claim, &record, result, run_ms)).instrument(span).await;
        } else {
            self.settle_plain(record.kind, &record, Attempt { epoch, held }, result).await;
        }
    }

    async fn acquire(&self, classes: &[queue_core::LimitClass]) -> QueueResult<Option<PermitSet>> {
        if classes.is_empty() {
            return Ok(None);
        }
        let since = Instant::now();
        let permits = self.deps.limiter.acquire(classes).await;
        self.config.metrics.record_limiter_wait(duration_ms(since.elapsed()));
        permits.map(Some)
    }

    /// Counts a result or start rejected by the fence, and logs it.
    fn fenced(&self, record: &JobRecord, epoch: u64, what: &str) {
        self.fenced_job(&record.tenant, lane_of(record), &record.id, epoch, what);
    }

    fn fenced_job(&self, tenant: &TenantId, lane: &str, job: &JobId, epoch: u64, what: &str) {
        self.stats.fenced.fetch_add(1, Ordering::Relaxed);
        self.config.metrics.record_fenced();
        warn!(tenant = %tenant, lane, job = %job, epoch, "{what} rejected: the lease is no longer current");
    }

    async fn release(&self, permits: Option<PermitSet>) {
        if let Some(p) = permits
            && let Err(e) = self.deps.limiter.release(p).await
        {
            warn!(error = %e, "could not release permits");
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        self.config.backoff_base.saturating_mul(1 << exp).min(self.config.backoff_max)
    }

    /// Starts job `id` for a worker: `queued -> processing` under `epoch`, with no read first.
    /// A record left `processing` by a worker that is gone goes back to `queued` first; a plain
    /// job then takes the epoch after its record's (a chat job keeps its claim's). `Ok(None)`:
    /// the job is finished, cancelled or gone, or (not a chat job) this process runs it already.
    async fn begin(&self, id: &JobId, epoch: u64, lane: Option<&LaneId>) -> QueueResult<Option<Started>> {
        // A non-chat job is reserved in `running` before its record moves: a second queue item
        // for its id (`in_flight` is keyed by seq, so an id submitted again after its cancelled
        // record was purged, while the old item still waited, has two) finds it there and leaves
        // it, even while the first is between the store's answer and its own bookkeeping (where
        // the record already says `processing` and the job looked like an orphan).
        if lane.is_none() {
            match lock(&self.running).entry(id.clone()) {
                Entry::Occupied(_) => return Ok(None),
                Entry::Vacant(slot) => {
                    slot.insert(RunningJob { epoch, permits: None, since: None, lane: None });
                }
            }
        }
        let begun = self.begin_in_store(id, epoch, lane).await;
        if lane.is_none() && !matches!(begun, Ok(Some(_))) {
            lock(&self.running).remove(id);
        }
        begun
    }

    /// `begin`'s store side: the record's move to `processing`, and this process's bookkeeping.
    async fn begin_in_store(
        &self,
        id: &JobId,
        epoch: u64,
        lane: Option<&LaneId>,
    ) -> QueueResult<Option<Started>> {
        let (started, epoch) = match self.store_transition(id, JobUpdate::start(epoch)).await {
            Ok(started) => (started, epoch),
            Err(QueueError::NotFound { .. }) => return Ok(None),
            Err(QueueError::InvalidTransition { from, .. }) if from.is_terminal() => return Ok(None),
            Err(QueueError::InvalidTransition { from: JobStatus::Processing, .. }) => {
                // A non-chat job this process runs now never comes here: `begin` reserved its id
                // first. A chat job comes here under a new claim of its lane (its old attempt was
                // fenced off), which does restart it.
                let Some(record) = self.deps.store.get(id).await? else { return Ok(None) };
                if !record.status.is_pending() {
                    return Ok(None);
                }
                self.requeue_orphan(&record).await?;
                let epoch = if lane.is_some() { epoch } else { record.lease_epoch + 1 };
                (self.store_transition(id, JobUpdate::start(epoch)).await?, epoch)
            }
            Err(e) => return Err(e),
        };
        let since = Some(Instant::now());
        {
            let mut running = lock(&self.running);
            // A non-chat job fills in its reservation (`begin`); a chat job has none.
            if lane.is_none()
                && let Some(r) = running.get_mut(id)
            {
                (r.epoch, r.since) = (epoch, since);
            } else {
                running.insert(id.clone(), RunningJob { epoch, permits: None, since, lane: lane.cloned() });
            }
        }
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        // The store has just stamped the start: the wait is read off the record, both ends on the
        // store's clock, without reading a clock again.
        let first_wait =
            (started.attempt == 1).then(|| started.updated_at_ms.saturating_sub(started.created_at_ms));
        self.config.metrics.record_started(started.kind, first_wait);
        info!(
            tenant = %started.tenant,
            lane = lane_of(&started),
            job = %started.id,
            kind = started.kind.as_str(),
            attempt = started.attempt,
            "job started"
        );
        Ok(Some((started, epoch)))
    }

    /// Ends the attempt `epoch` of `job`; returns how long it ran (0 when it was not held).
    fn end(&self, job: &JobId, epoch: u64) -> u64 {
        let mut running = lock(&self.running);
        match running.remove(job) {
            Some(r) if r.epoch == epoch => r.since.map_or(0, |since| duration_ms(since.elapsed())),
            Some(other) => {
                // A newer attempt holds it (this one was fenced off): leave that one alone.
                running.insert(job.clone(), other);
                0
            }
            None => 0,
        }
    }

    fn note_permits(&self, job: &JobId, epoch: u64, permits: Option<&PermitSet>) {
        if let Some(r) = lock(&self.running).get_mut(job)
            && r.epoch == epoch
        {
            r.permits = permits.cloned();
        }
    }

    async fn run_plain_batch(self: &Arc<Self>, kind: JobKind, batch: Vec<PlainItem>) {
        let mut records = Vec::with_capacity(batch.len());
        for item in batch {
            if let Some(job) = self.prepare_plain(item).await {
                records.push((*job.record, Attempt { epoch: job.epoch, held: job.held }));
            }
        }
        // Jobs lost with their worker on every attempt are dead-lettered, not run once more.
        let max = self.config.max_attempts;
        let (lost, records): (Vec<_>, Vec<_>) =
            records.into_iter().partition(|(r, _)| queue_core::lost_too_often(r, max).is_some());
        for (r, attempt) in &lost {
            let gave_up = queue_core::lost_too_often(r, max).map_or_else(|| Ok(Value::Null), Err);
            self.settle_plain(kind, r, *attempt, gave_up).await;
        }
        if records.is_empty() {
            return;
        }
        let (jobs, attempts): (Vec<JobRecord>, Vec<Attempt>) = records.into_iter().unzip();
        let handler = self.deps.handlers.get(kind).clone();
        let mut classes = Vec::new();
        for r in &jobs {
            classes.extend(handler.permits(r));
        }
        let permits = match self.acquire(&acquisition_order(&classes)).await {
            Ok(p) => p,
            Err(e) => {
                for (r, attempt) in jobs.iter().zip(&attempts) {
                    self.settle_plain(
                        kind,
                        r,
                        *attempt,
                        Err(HandlerError::retryable(format!("limiter: {e}"))),
                    )
                    .await;
                }
                return;
            }
        };
        if permits.is_some() {
            for (r, attempt) in jobs.iter().zip(&attempts) {
                self.note_permits(&r.id, attempt.epoch, permits.as_ref());
            }
        }
        let results = if jobs.len() == 1 {
            vec![handler.handle(&jobs[0]).await]
        } else {
            handler.handle_batch(&jobs).await
        };
        self.release(permits).await;
        let mut results = results.into_iter();
        for (r, attempt) in jobs.iter().zip(&attempts) {
            let result =
                results.next().unwrap_or_else(|| Err(HandlerError::permanent("handler returned no result")));
            self.settle_plain(kind, r, *attempt, result).await;
        }
    }

    async fn settle_plain(
        self: &Arc<Self>,
        kind: JobKind,
        record: &JobRecord,
        Attempt { epoch, held }: Attempt,
        result: Result<Value, HandlerError>,
    ) {
        let id = &record.id;
        // The result moves into the update; only an error's message is kept, for the log.
        let (update, error) = match result {
            Ok(value) => (JobUpdate::done(epoch, value), None),
            Err(e) if e.retryable && record.attempt < self.config.max_attempts => {
                (JobUpdate::requeue(epoch, Some(e.message.clone())), Some(e.message))
            }
            Err(e) => (JobUpdate::failed(epoch, e.message.clone()), Some(e.message)),
        };
        let to = update.to;
        let run_ms = self.end(id, epoch);
        match self.store_settle(id, update).await {
            Ok(()) => {}
            Err(QueueError::StaleLease { .. }) => {
                self.fenced(record, epoch, "result");
                lock(&self.in_flight).remove(held);
                return;
            }
            Err(e) => {
                warn!(job = %id, error = %e, "could not record the outcome; the job stays pending");
                lock(&self.in_flight).remove(held);
                return;
            }
        }
        match to {
            Some(JobStatus::Queued) => {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                self.config.metrics.record_retried(kind, run_ms);
                let delay = self.backoff(record.attempt);
                warn!(
                    tenant = %record.tenant,
                    lane = lane_of(record),
                    job = %id,
                    kind = kind.as_str(),
                    attempt = record.attempt,
                    retry_in_ms = duration_ms(delay),
                    error = error.as_deref().unwrap_or(""),
                    "job failed; retrying"
                );
                let inner = self.clone();
                let item = PlainItem { id: id.clone(), epoch: epoch + 1, seq: held };
                self.add_timer(tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    inner.queue(kind).push_owed(item);
                }));
            }
            Some(JobStatus::Done) => {
                self.stats.completed.fetch_add(1, Ordering::Relaxed);
                self.config.metrics.record_completed(kind, run_ms);
                lock(&self.in_flight).remove(held);
                info!(tenant = %record.tenant, lane = lane_of(record), job = %id, kind = kind.as_str(), run_ms, "job completed");
            }
            _ => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.config.metrics.record_dead_lettered(kind, run_ms);
                lock(&self.in_flight).remove(held);
                warn!(
                    tenant = %record.tenant,
                    lane = lane_of(record),
                    job = %id,
                    kind = kind.as_str(),
                    error = error.as_deref().unwrap_or(""),
                    "job failed for good"
                );
            }
        }
    }

    fn add_timer(&self, handle: JoinHandle<()>) {
        let mut timers = lock(&self.timers);
        timers.retain(|t| !t.is_finished());
        timers.push(handle);
    }

    async fn settle_chat(
        self: &Arc<Self>,
        claim: &LaneClaim,
        record: &JobRecord,
        result: Result<Value, HandlerError>,
        run_ms: u64,
    ) {
        let retry = matches!(&result, Err(e) if e.retryable && record.attempt < self.config.max_attempts);
        if retry {
            let message = result.err().map(|e| e.message);
            let error = message.clone().unwrap_or_default();
            match self.store_settle(&claim.job_id, JobUpdate::requeue(claim.epoch, message)).await {
                Ok(()) => {}
                Err(QueueError::StaleLease { .. } | QueueError::InvalidTransition { .. }) => {
                    self.fenced(record, claim.epoch, "retry");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "could not record the retry; leaving it to the reaper");
                    return;
                }
            }
            self.stats.retried.fetch_add(1, Ordering::Relaxed);
            self.config.metrics.record_retried(JobKind::Chat, run_ms);
            let delay = self.backoff(record.attempt);
            warn!(
                tenant = %record.tenant,
                lane = %claim.lane_id,
                job = %claim.job_id,
                kind = "chat",
                attempt = record.attempt,
                retry_in_ms = duration_ms(delay),
                error,
                "job failed; retrying"
            );
            let inner = self.clone();
            let claim = claim.clone();
            // The job keeps the head of its lane while it waits: the retry re-claims the same
            // head under a new epoch.
            self.add_timer(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                match inner.deps.lanes.reclaim(&claim).await {
                    Ok(next) => inner.chat_ready.push_owed(next),
                    Err(e) => debug!(error = %e, "retry superseded (the reaper re-dispatched the job)"),
                }
            }));
            return;
        }
        // Fence at the lane first: a worker whose lease was reaped must not advance the lane nor
        // write its result.
        let next = match self.lane_finish(claim).await {
            Ok(next) => next,
            Err(QueueError::StaleLease { .. }) => {
                self.fenced(record, claim.epoch, "late result");
                return;
            }
            Err(e) => {
                warn!(error = %e, "could not finish the lane claim; leaving it to the reaper");
                return;
            }
        };
        let (update, error) = match result {
            Ok(value) => (JobUpdate::done(claim.epoch, value), None),
            Err(e) => (JobUpdate::failed(claim.epoch, e.message.clone()), Some(e.message)),
        };
        match self.store_settle(&claim.job_id, update).await {
            Ok(()) => match error {
                None => {
                    self.stats.completed.fetch_add(1, Ordering::Relaxed);
                    self.config.metrics.record_completed(JobKind::Chat, run_ms);
                    info!(tenant = %record.tenant, lane = %claim.lane_id, job = %claim.job_id, kind = "chat", run_ms, "job completed");
                }
                Some(error) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    self.config.metrics.record_dead_lettered(JobKind::Chat, run_ms);
                    warn!(
                        tenant = %record.tenant,
                        lane = %claim.lane_id,
                        job = %claim.job_id,
                        kind = "chat",
                        error,
                        "job failed for good; the lane moves on"
                    );
                }
            },
            Err(QueueError::StaleLease { .. }) => {
                self.fenced(record, claim.epoch, "result");
            }
            Err(e) => warn!(job = %claim.job_id, error = %e, "could not record the chat job's outcome"),
        }
        if let Some(next) = next {
            self.chat_ready.push_owed(next);
        }
    }

    async fn advance_lane(&self, claim: &LaneClaim) {
        match self.lane_finish(claim).await {
            Ok(Some(next)) => self.chat_ready.push_owed(next),
            Ok(None) => {}
            Err(e) => debug!(error = %e, "lane already moved on"),
        }
    }

    /// Renews the lease of every running chat job each `heartbeat_interval`, all in one call.
    /// It runs until `stop` has let the workers finish, so jobs finishing during a stop keep
    /// their leases.
    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: nothing runs yet. Skipped, so the first renewal comes one
        // interval after the start, as on Redis. (Taken late, on a busy machine, it renewed a
        // lease that a test had just let run out with a manual clock.)
        tick.tick().await;
        loop {
            tick.tick().await;
            let claims: Vec<LaneClaim> = lock(&self.running)
                .iter()
                .filter_map(|(job, r)| {
                    r.lane.as_ref().map(|lane| LaneClaim {
                        job_id: job.clone(),
                        lane_id: lane.clone(),
                        epoch: r.epoch,
                        lease_deadline_ms: 0,
                    })
                })
                .collect();
            if claims.is_empty() {
                continue;
            }
            let results = match self.deps.lanes.renew_many(&claims).await {
                Ok(results) => results,
                Err(e) => {
                    warn!(error = %e, "lease renewal failed; will retry");
                    continue;
                }
            };
            for (claim, renewed) in claims.iter().zip(results) {
                match renewed {
                    Ok(_) => {}
                    Err(QueueError::StaleLease { .. }) => {
                        warn!(job = %claim.job_id, "lease lost while running; the result will be rejected");
                        // Renewing it again cannot succeed.
                        if let Some(r) = lock(&self.running).get_mut(&claim.job_id)
                            && r.epoch == claim.epoch
                        {
                            r.lane = None;
                        }
                    }
                    Err(e) => warn!(job = %claim.job_id, error = %e, "lease renewal failed; will retry"),
                }
            }
        }
    }

    async fn reaper_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.reaper_interval);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tick.tick() => {}
            }
            match self.deps.lanes.reap_expired().await {
                Ok(claims) => {
                    for claim in claims {
                        warn!(
                            tenant = %self.config.tenant,
                            lane = %claim.lane_id,
                            job = %claim.job_id,
                            "lease expired; re-dispatching the head job"
                        );
                        self.stats.lease_expiries.fetch_add(1, Ordering::Relaxed);
                        self.config.metrics.record_lease_expiries(1);
                        self.chat_ready.push_owed(claim);
                    }
                }
                Err(e) => warn!(error = %e, "reaper could not read lanes"),
            }
            if self.rescan_needed.swap(false, Ordering::SeqCst) {
                let runtime = InlineRuntime { inner: self.clone() };
                let rescanned = async {
                    Ok::<usize, QueueError>(
                        runtime.scan_pending_chat_jobs().await?
                            + runtime.scan_pending(JobKind::Upload).await?
                            + runtime.scan_pending(JobKind::Exam).await?
                            + runtime.scan_pending(JobKind::ProfileUpdate).await?,
                    )
                };
                match rescanned.await {
                    Ok(n) => debug!(n, "rescan after a full queue"),
                    Err(e) => {
                        warn!(error = %e, "rescan failed; will retry");
                        self.rescan_needed.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    async fn purge_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.purge_interval);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tick.tick() => {}
            }
            let retention = u64::try_from(self.config.retention.as_millis()).unwrap_or(u64::MAX);
            let before = self.deps.clock.now_ms().saturating_sub(retention);
            match self.deps.store.purge_finished(before).await {
                Ok(0) => {}
                Ok(n) => info!(purged = n, "finished job records past retention deleted"),
                Err(e) => warn!(error = %e, "retention purge failed"),
            }
        }
    }

    /// Puts every job a worker still held back to `queued` and gives back its permits.
    async fn hand_back_running(&self) {
        let running: Vec<(JobId, RunningJob)> = lock(&self.running).drain().collect();
        for (job, r) in running {
            self.release(r.permits).await;
            match self
                .deps
                .store
                .settle(&job, JobUpdate::requeue(r.epoch, Some("handed back at stop".into())))
                .await
            {
                Ok(()) => {
                    self.stats.handed_back.fetch_add(1, Ordering::Relaxed);
                    info!(job = %job, "running job handed back at stop");
                }
                Err(e) => debug!(job = %job, error = %e, "job finished while stopping"),
            }
        }
    }
}
