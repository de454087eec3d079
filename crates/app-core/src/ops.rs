//! The operations API of one tenant: what is queued and running (depths per kind and state,
//! lanes with their active and waiting jobs, workers, limiter permits, dead-lettered jobs) and
//! what an operator may do about it (retry a dead job, cancel a queued one, drain a lane).
//!
//! Reached through [`Laneway::ops`]. Every input arrives as the raw text of a request and is
//! validated here, naming its field; a refused action writes nothing.

use std::sync::Arc;

use queue_core::{
    Clock, IdempotencyClaim, JobId, JobKind, JobRecord, JobStatus, JobUpdate, LaneId, NewJob, PermitUsage,
    ProfileUpdate, QueueError, RequestId, StatusCounts, SystemClock,
};
use queue_inline::QueueDepths;
use queue_redis::{RedisWorkerRegistry, WorkerRecord};
use runtime_manager::TenantRuntime;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::AppError;
use crate::service::Laneway;

/// Items in a page when the request names no `limit`.
pub const DEFAULT_PAGE_LIMIT: usize = 50;
/// Most items in one page.
pub const MAX_PAGE_LIMIT: usize = 500;
/// Deepest `offset` into the dead letters (they are read newest first, up to `offset + limit`).
pub const MAX_DEAD_OFFSET: usize = 10_000;

/// Who this process is, for the worker listing of an embedded (inline) tenant, whose workers all
/// run in this process. The binary builds it once at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessIdentity {
    /// The machine.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// When the process started serving (ms since the epoch).
    pub started_ms: u64,
}

impl ProcessIdentity {
    /// This process, on this machine ([`queue_redis::local_host_name`]), started at `started_ms`.
    #[must_use]
    pub fn this_process(started_ms: u64) -> Self {
        Self { host: queue_redis::local_host_name(), pid: std::process::id(), started_ms }
    }

    /// `host:pid`.
    #[must_use]
    pub fn worker_id(&self) -> String {
        format!("{}:{}", self.host, self.pid)
    }
}

/// `GET /ops/lanes` query.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanesQuery {
    /// Lanes after this lane id (the previous page's `next_after`).
    #[serde(default)]
    pub after: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[serde(default)]
    pub limit: Option<String>,
}

/// `GET /ops/dead` query.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    /// Only this kind (`upload`, `exam`, `profile_update`, `chat`); all kinds when absent.
    #[serde(default)]
    pub kind: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[serde(default)]
    pub limit: Option<String>,
    /// Jobs to skip, newest first (the previous page's `next_offset`).
    #[serde(default)]
    pub offset: Option<String>,
}

/// Depths of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindDepths {
    /// The kind.
    pub kind: JobKind,
    /// Jobs per state.
    #[serde(flatten)]
    pub counts: StatusCounts,
}

/// `GET /ops/queues`.
#[derive(Debug, Clone, Serialize)]
pub struct QueuesView {
    /// The tenant.
    pub tenant: String,
    /// Its backend (`inline`, `inline-test`, `redis`).
    pub backend: &'static str,
    /// Jobs per kind and state, from the job store (every kind, always in the same order).
    pub kinds: Vec<KindDepths>,
    /// The in-process queues (inline backend only): jobs waiting per pool, lanes ready for a
    /// chat worker, and jobs running.
    pub memory: Option<QueueDepths>,
}

/// The running job of a lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveJob {
    /// The job.
    pub job_id: JobId,
    /// Its claim's epoch (fencing token).
    pub epoch: u64,
    /// When its lease runs out unless renewed (ms, by the runtime's clock).
    pub lease_deadline_ms: u64,
}

/// A waiting job of a lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingJob {
    /// The job.
    pub job_id: JobId,
    /// Its 1-based place among the waiting jobs (as `GET /chat/status` reports it).
    pub position: usize,
}

/// One lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneView {
    /// The lane.
    pub lane_id: LaneId,
    /// The job running (or dispatched, or retrying) at its head.
    pub active: Option<ActiveJob>,
    /// Jobs waiting, head first.
    pub waiting: Vec<WaitingJob>,
}

/// `GET /ops/lanes`.
#[derive(Debug, Clone, Serialize)]
pub struct LanesView {
    /// The tenant.
    pub tenant: String,
    /// Lanes holding any job, ordered by lane id.
    pub lanes: Vec<LaneView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<LaneId>,
}

/// One worker process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerView {
    /// `host:pid` (inline) or `host:pid:random` (Redis).
    pub worker_id: String,
    /// The machine.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// When its workers started (ms since the epoch).
    pub started_ms: u64,
    /// Its last heartbeat (ms since the epoch); an inline tenant's workers are this process,
    /// alive now.
    pub last_heartbeat_ms: u64,
    /// Jobs it holds.
    pub in_flight: usize,
    /// `alive`, or `stale` when its last heartbeat is older than three heartbeat intervals.
    pub state: &'static str,
}

/// `GET /ops/workers`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkersView {
    /// The tenant.
    pub tenant: String,
    /// Its backend.
    pub backend: &'static str,
    /// The processes running its jobs.
    pub workers: Vec<WorkerView>,
}

/// `GET /ops/permits`.
#[derive(Debug, Clone, Serialize)]
pub struct PermitsView {
    /// The tenant.
    pub tenant: String,
    /// Per class, in acquisition order: permits in use and capacity.
    pub permits: Vec<PermitUsage>,
}

/// A dead-lettered job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadJob {
    /// The job.
    pub job_id: JobId,
    /// Its kind.
    pub kind: JobKind,
    /// Its lane (chat).
    pub lane_id: Option<LaneId>,
    /// Attempts it had.
    pub attempt: u32,
    /// The error it was dead-lettered with.
    pub error: Option<String>,
    /// Created (ms since the epoch).
    pub created_at_ms: u64,
    /// Dead-lettered (ms since the epoch).
    pub updated_at_ms: u64,
}

/// `GET /ops/dead`.
#[derive(Debug, Clone, Serialize)]
pub struct DeadView {
    /// The tenant.
    pub tenant: String,
    /// The kind asked for (all when absent).
    pub kind: Option<JobKind>,
    /// Dead-lettered jobs of that kind (or all kinds) in total.
    pub total: u64,
    /// This page, newest first.
    pub jobs: Vec<DeadJob>,
    /// Pass as `offset` for the next page; absent on the last page.
    pub next_offset: Option<usize>,
}

/// `POST /ops/jobs/{job_id}/retry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryView {
    /// The new job (the same one again when this dead job was already retried).
    pub job_id: JobId,
    /// The dead job it retries; that one stays `failed`.
    pub retry_of: JobId,
    /// The new job's kind.
    pub kind: JobKind,
    /// The new job's status now.
    pub status: JobStatus,
    /// Its lane (chat).
    pub lane_id: Option<LaneId>,
}

/// `POST /ops/jobs/{job_id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelView {
    /// The job.
    pub job_id: JobId,
    /// Always `cancelled`.
    pub status: JobStatus,
    /// Its lane (chat).
    pub lane_id: Option<LaneId>,
}

/// `POST /ops/lanes/{lane_id}/drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainView {
    /// The lane.
    pub lane_id: LaneId,
    /// How many waiting jobs were cancelled.
    pub cancelled: usize,
    /// Those jobs, in lane order.
    pub job_ids: Vec<JobId>,
}

/// What the error of a cancel or drain says about a cancelled job.
const CANCEL_ERROR: &str = "cancelled by an operator";

/// Parses a page size: absent or empty means the default; otherwise 1 to [`MAX_PAGE_LIMIT`].
///
/// # Errors
/// `BadRequest` naming `limit`.
pub fn parse_limit(raw: Option<&str>) -> Result<usize, AppError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(DEFAULT_PAGE_LIMIT);
    };
    let rule = || format!("expected an integer from 1 to {MAX_PAGE_LIMIT}, got {raw:?}");
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => Ok(n),
        _ => Err(AppError::bad("limit", rule())),
    }
}

fn parse_offset(raw: Option<&str>) -> Result<usize, AppError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    match raw.parse::<usize>() {
        Ok(n) if n <= MAX_DEAD_OFFSET => Ok(n),
        _ => Err(AppError::bad(
            "offset",
            format!("expected an integer from 0 to {MAX_DEAD_OFFSET}, got {raw:?}"),
        )),
    }
}

fn parse_kind(raw: Option<&str>) -> Result<Option<JobKind>, AppError> {
    raw.map(str::trim).filter(|s| !s.is_empty()).map(JobKind::parse).transpose().map_err(AppError::from)
}

fn backend_name(rt: &TenantRuntime) -> &'static str {
    rt.backend.name()
}

impl Laneway {
    /// The operations API of this application's tenants.
    #[must_use]
    pub const fn ops(&self) -> Ops<'_> {
        Ops { app: self }
    }
}

/// The operations API: see the module documentation. Every method takes the tenant as the
/// other routes do (`None` = the default tenant).
#[derive(Debug, Clone, Copy)]
pub struct Ops<'a> {
    app: &'a Laneway,
}

impl Ops<'_> {
    fn tenant(&self, tenant: Option<&str>) -> Result<Arc<TenantRuntime>, AppError> {
        self.app.tenant(tenant)
    }

    /// Jobs per kind and state, plus the in-process queues of an inline tenant.
    ///
    /// # Errors
    /// `NotFound`/`NotReady` for the tenant; a store error.
    pub async fn queues(&self, tenant: Option<&str>) -> Result<QueuesView, AppError> {
        let rt = self.tenant(tenant)?;
        let mut kinds = Vec::with_capacity(JobKind::ALL.len());
        for kind in JobKind::ALL {
            kinds.push(KindDepths { kind, counts: rt.store.counts(kind).await? });
        }
        Ok(QueuesView {
            tenant: rt.tenant.to_string(),
            backend: backend_name(&rt),
            kinds,
            memory: rt.inline.as_ref().map(queue_inline::InlineRuntime::depths),
        })
    }

    /// One page of lanes: the active job with its lease deadline, and the waiting jobs with their
    /// positions.
    ///
    /// # Errors
    /// `BadRequest` naming `after` or `limit`; `NotFound`/`NotReady` for the tenant.
    pub async fn lanes(&self, tenant: Option<&str>, query: &LanesQuery) -> Result<LanesView, AppError> {
        let limit = parse_limit(query.limit.as_deref())?;
        let after = query
            .after
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| LaneId::for_field("after", s))
            .transpose()?;
        let rt = self.tenant(tenant)?;
        let snapshots = rt.lanes.snapshot(after, limit).await?;
        let next_after =
            if snapshots.len() == limit { snapshots.last().map(|s| s.lane_id.clone()) } else { None };
        let lanes = snapshots
            .into_iter()
            .map(|s| LaneView {
                lane_id: s.lane_id,
                active: s.active.map(|c| ActiveJob {
                    job_id: c.job_id,
                    epoch: c.epoch,
                    lease_deadline_ms: c.lease_deadline_ms,
                }),
                waiting: s
                    .waiting
                    .into_iter()
                    .enumerate()
                    .map(|(i, job_id)| WaitingJob { job_id, position: i + 1 })
                    .collect(),
            })
            .collect();
        Ok(LanesView { tenant: rt.tenant.to_string(), lanes, next_after })
    }

    /// The processes running the tenant's jobs: this one for an inline tenant (`me`), the
    /// registered worker processes for a Redis tenant.
    ///
    /// # Errors
    /// `NotFound`/`NotReady` for the tenant; Redis unreachable.
    pub async fn workers(&self, tenant: Option<&str>, me: &ProcessIdentity) -> Result<WorkersView, AppError> {
        let rt = self.tenant(tenant)?;
        let now = SystemClock.now_ms();
        let workers = if let Some(inline) = &rt.inline {
            vec![WorkerView {
                worker_id: me.worker_id(),
                host: me.host.clone(),
                pid: me.pid,
                started_ms: me.started_ms,
                last_heartbeat_ms: now,
                in_flight: inline.depths().running,
                state: "alive",
            }]
        } else {
            let url = self.app.settings().redis_url.as_deref().ok_or_else(|| {
                AppError::Internal("REDIS_URL is not set, so the worker registry cannot be read".into())
            })?;
            // An operator's read: a small pool of its own, dropped with the answer.
            let pool = lane_store::RedisPool::from_url(url)?;
            RedisWorkerRegistry::new(pool, &rt.tenant)
                .list(now)
                .await?
                .into_iter()
                .map(|w| {
                    let WorkerRecord { host, pid, started_ms, last_heartbeat_ms, in_flight, .. } = w.record;
                    WorkerView {
                        worker_id: w.worker_id,
                        host,
                        pid,
                        started_ms,
                        last_heartbeat_ms,
                        in_flight,
                        state: if w.stale { "stale" } else { "alive" },
                    }
                })
                .collect()
        };
        Ok(WorkersView { tenant: rt.tenant.to_string(), backend: backend_name(&rt), workers })
    }

    /// Limiter permits in use per class.
    ///
    /// # Errors
    /// `NotFound`/`NotReady` for the tenant; the limiter's error.
    pub async fn permits(&self, tenant: Option<&str>) -> Result<PermitsView, AppError> {
        let rt = self.tenant(tenant)?;
        let permits = rt.limiter.usage().await?;
        Ok(PermitsView { tenant: rt.tenant.to_string(), permits })
    }

    /// One page of dead-lettered (`failed`) jobs with their errors, newest first.
    ///
    /// # Errors
    /// `BadRequest` naming `kind`, `limit` or `offset`; `NotFound`/`NotReady` for the tenant.
    pub async fn dead(&self, tenant: Option<&str>, query: &DeadQuery) -> Result<DeadView, AppError> {
        let kind = parse_kind(query.kind.as_deref())?;
        let limit = parse_limit(query.limit.as_deref())?;
        let offset = parse_offset(query.offset.as_deref())?;
        let rt = self.tenant(tenant)?;
        let mut total = 0;
        for k in kind.map_or_else(|| JobKind::ALL.to_vec(), |k| vec![k]) {
            total += rt.store.counts(k).await?.failed;
        }
        let jobs: Vec<DeadJob> = rt
            .store
            .list(kind, JobStatus::Failed, offset + limit)
            .await?
            .into_iter()
            .skip(offset)
            .map(|r| DeadJob {
                job_id: r.id,
                kind: r.kind,
                lane_id: r.lane,
                attempt: r.attempt,
                error: r.error,
                created_at_ms: r.created_at_ms,
                updated_at_ms: r.updated_at_ms,
            })
            .collect();
        let seen = offset + jobs.len();
        let next_offset = (jobs.len() == limit && (seen as u64) < total).then_some(seen);
        Ok(DeadView { tenant: rt.tenant.to_string(), kind, total, jobs, next_offset })
    }

    /// Retries a dead-lettered job: terminal states are final, so a new job with the same kind,
    /// lane and payload is created and enqueued as any submit would be; the dead one keeps its
    /// record. Retrying the same dead job again returns the same new job (while its idempotency
    /// key lives), so a double click runs it once.
    ///
    /// # Errors
    /// `BadRequest` naming `job_id`; `NotFound`; `Conflict` naming the status of a job that is
    /// not `failed`; `LaneFull`/`NotReady` when the new job cannot be enqueued (nothing is left
    /// behind then).
    pub async fn retry(&self, tenant: Option<&str>, job_id: &str) -> Result<RetryView, AppError> {
        let old_id = JobId::new(job_id)?;
        let rt = self.tenant(tenant)?;
        let old = get_job(&rt, &old_id).await?;
        if old.status != JobStatus::Failed {
            return Err(AppError::Conflict(format!(
                "job {old_id} is {}; only a dead-lettered (failed) job can be retried",
                old.status
            )));
        }
        // Ids are at most 200 bytes, so the key fits unless the dead job's id is very long; such a
        // retry is simply not deduplicated.
        let key = RequestId::new(format!("retry:{old_id}")).ok();
        let new_id = JobId::generate();
        if let Some(key) = &key
            && let IdempotencyClaim::Existing(earlier) = rt.idempotency.claim(key, &new_id).await?
        {
            let record = get_job(&rt, &earlier).await?;
            return Ok(retry_view(&record, old_id));
        }
        let undo = |created: bool| {
            let rt = rt.clone();
            let key = key.clone();
            let new_id = new_id.clone();
            async move {
                if created && let Err(e) = rt.store.delete(&new_id).await {
                    warn!(job = %new_id, error = %e, "could not roll back a refused retry's record");
                }
                if let Some(key) = key
                    && let Err(e) = rt.idempotency.release(&key, &new_id).await
                {
                    warn!(error = %e, "could not release a refused retry's idempotency key");
                }
            }
        };
        let new_job = NewJob {
            id: new_id.clone(),
            kind: old.kind,
            lane: old.lane.clone(),
            request_id: key.clone(),
            payload: old.payload.clone(),
        };
        let record = match rt.store.create(new_job).await {
            Ok(r) => r,
            Err(e) => {
                undo(false).await;
                return Err(e.into());
            }
        };
        let enqueued = match old.kind {
            JobKind::Chat => rt.backend.enqueue_chat_job(new_id.clone(), old.lane.clone()).await.map(drop),
            JobKind::Upload => rt.backend.enqueue_upload_job(new_id.clone()).await,
            JobKind::Exam => rt.backend.enqueue_exam_job(new_id.clone()).await,
            JobKind::ProfileUpdate => {
                let student_id =
                    old.payload.get("student_id").and_then(serde_json::Value::as_str).unwrap_or_default();
                rt.backend
                    .enqueue_profile_update(ProfileUpdate {
                        job_id: new_id.clone(),
                        student_id: student_id.into(),
                    })
                    .await
            }
        };
        if let Err(e) = enqueued {
            undo(true).await;
            return Err(e.into());
        }
        info!(tenant = %rt.tenant, job = %new_id, retry_of = %old_id, kind = old.kind.as_str(), "dead job retried as a new job");
        Ok(retry_view(&record, old_id))
    }

    /// Cancels a queued job: it becomes `cancelled` and never runs. A chat job must be waiting in
    /// its lane (not at the lane's head, where it is dispatched to a worker or waiting out a
    /// retry's backoff); it leaves the lane, and the jobs behind it move up.
    ///
    /// # Errors
    /// `BadRequest` naming `job_id`; `NotFound`; `Conflict` naming the status of a job that is
    /// not queued, or saying that the job is at its lane's head.
    pub async fn cancel(&self, tenant: Option<&str>, job_id: &str) -> Result<CancelView, AppError> {
        let id = JobId::new(job_id)?;
        let rt = self.tenant(tenant)?;
        let record = get_job(&rt, &id).await?;
        if record.status != JobStatus::Queued {
            return Err(not_queued(&id, record.status));
        }
        // Not waiting: the lane's head (dispatched, or waiting out a retry's backoff) must run; a
        // job outside its lane while the lane is idle can go.
        if let Some(lane) = &record.lane
            && !rt.lanes.remove_waiting(lane, &id).await?
            && rt.lanes.lane_load(lane).await?.active > 0
        {
            return Err(AppError::Conflict(format!(
                "job {id} is not waiting in lane {lane}: it is the lane's head (dispatched to a worker, or \
                 waiting to retry); only a waiting job can be cancelled"
            )));
        }
        let cancelled = cancel_record(&rt, &id).await.map_err(|e| {
            if let Some(lane) = &record.lane {
                warn!(job = %id, lane = %lane, error = %e, "a job left its lane but could not be marked cancelled");
            }
            e
        })?;
        info!(tenant = %rt.tenant, job = %id, "job cancelled");
        Ok(CancelView { job_id: cancelled.id, status: cancelled.status, lane_id: cancelled.lane })
    }

    /// Cancels every job waiting in `lane`; the running one finishes. Returns how many were
    /// cancelled (0 for an idle or unknown lane).
    ///
    /// # Errors
    /// `BadRequest` naming `lane_id`; `NotFound`/`NotReady` for the tenant; a store error.
    pub async fn drain(&self, tenant: Option<&str>, lane: &str) -> Result<DrainView, AppError> {
        let lane = LaneId::new(lane)?;
        let rt = self.tenant(tenant)?;
        let mut job_ids = Vec::new();
        // The store is the source of truth: its pending chat jobs of the lane, in lane order.
        for record in rt.store.scan_pending(JobKind::Chat).await? {
            if record.lane.as_ref() != Some(&lane) || record.status != JobStatus::Queued {
                continue;
            }
            if !rt.lanes.remove_waiting(&lane, &record.id).await? {
                continue; // The head: it runs (or retries) to the end.
            }
            match cancel_record(&rt, &record.id).await {
                Ok(_) => job_ids.push(record.id),
                Err(e) => {
                    warn!(job = %record.id, lane = %lane, error = %e, "a drained job could not be marked cancelled")
                }
            }
        }
        info!(tenant = %rt.tenant, lane = %lane, cancelled = job_ids.len(), "lane drained");
        Ok(DrainView { lane_id: lane, cancelled: job_ids.len(), job_ids })
    }
}

async fn get_job(rt: &TenantRuntime, id: &JobId) -> Result<JobRecord, AppError> {
    rt.store.get(id).await?.ok_or_else(|| AppError::NotFound(format!("job {id} not found")))
}

fn not_queued(id: &JobId, status: JobStatus) -> AppError {
    AppError::Conflict(format!("job {id} is {status}; only a queued job can be cancelled"))
}

/// `queued -> cancelled` in the store; a job that a worker took meanwhile is a conflict naming
/// its new status.
async fn cancel_record(rt: &TenantRuntime, id: &JobId) -> Result<JobRecord, AppError> {
    let update = JobUpdate {
        to: Some(JobStatus::Cancelled),
        error: Some(CANCEL_ERROR.into()),
        ..JobUpdate::default()
    };
    match rt.store.transition(id, update).await {
        Ok(r) => Ok(r),
        Err(QueueError::InvalidTransition { from, .. }) => Err(not_queued(id, from)),
        Err(e) => Err(e.into()),
    }
}

fn retry_view(record: &JobRecord, retry_of: JobId) -> RetryView {
    RetryView {
        job_id: record.id.clone(),
        retry_of,
        kind: record.kind,
        status: record.status,
        lane_id: record.lane.clone(),
    }
}
