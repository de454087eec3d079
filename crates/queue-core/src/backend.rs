//! The queue backend contract of the seed: enqueue by kind, rescan after a restart, start, stop.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{QueueError, QueueResult};
use crate::ids::{JobId, LaneId};
use crate::job::{JobKind, JobRecord, NewJob};
use crate::lane::ChatEnqueueReceipt;
use crate::store::JobStore;

/// A profile update to apply: the job that carries the notes, and the student it is for (updates
/// of one student are batched into one write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileUpdate {
    /// The job record holding the notes.
    pub job_id: JobId,
    /// The student whose profile changes.
    pub student_id: String,
}

/// A job accepted by [`QueueBackend::submit`]: its new record and, for a chat job, its place in
/// its lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The record as created (status `queued`).
    pub record: JobRecord,
    /// Where a chat job stands in its lane; `None` for other kinds.
    pub lane: Option<ChatEnqueueReceipt>,
}

/// Dispatches jobs to workers. Implementations: `InlineQueueBackend` (in-process) and
/// `RedisQueueBackend`. The job record must exist in the job store before it is enqueued.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait QueueBackend: Send + Sync + fmt::Debug {
    /// `inline`, `inline-test`, `redis`...
    fn name(&self) -> &'static str;

    /// Queues an assignment upload job.
    async fn enqueue_upload_job(&self, job_id: JobId) -> QueueResult<()>;

    /// Queues an exam upload job.
    async fn enqueue_exam_job(&self, job_id: JobId) -> QueueResult<()>;

    /// Queues a profile update.
    async fn enqueue_profile_update(&self, payload: ProfileUpdate) -> QueueResult<()>;

    /// Puts a chat job in its lane (`lane_id`, or the lane on its record) and dispatches it if the
    /// lane is idle.
    async fn enqueue_chat_job(
        &self,
        job_id: JobId,
        lane_id: Option<LaneId>,
    ) -> QueueResult<ChatEnqueueReceipt>;

    /// Creates `job`'s record in `store` and queues it, all or nothing: when the job cannot be
    /// queued (a full lane, a stopped backend, an unreachable store) no record is left behind.
    ///
    /// The default creates through `store`, enqueues by kind, and deletes the record again if the
    /// enqueue is refused: two steps, so a crash between them leaves a queued record for the next
    /// recovery scan. A backend whose queue and store live in one system overrides it with one
    /// atomic step (`RedisQueueBackend`: one script, one round trip); such a backend writes the
    /// record where its own job store reads, so `store` must be that store.
    ///
    /// A submit that fails for want of an answer (`Unavailable` or `Storage` from a backend
    /// across a network: a lost connection, no answer in time) may have made the job all the
    /// same, its answer lost on the way back. Submitting the same job again is then safe: its id
    /// is taken if it was made (`AlreadyExists`), and it is made once if not.
    ///
    /// # Errors
    /// As [`JobStore::create`] (`AlreadyExists` for a taken id) and the kind's `enqueue_*`.
    async fn submit(&self, store: Arc<dyn JobStore>, job: NewJob) -> QueueResult<Submitted> {
        create_then_enqueue(self, store, job).await
    }

    /// Submits several jobs in one call: each is accepted or refused on its own, and the
    /// results come back in the order of `jobs`. The call itself fails only when nothing could
    /// be attempted (`Unavailable`, `NotRunning`, a batch over [`MAX_SUBMIT_BATCH`]).
    ///
    /// The default submits one after the other; `RedisQueueBackend` sends the batch's non-chat
    /// jobs in one script call and its chat jobs in another, and `InlineQueueBackend` creates the batch with one
    /// [`JobStore::create_many`] (one SQLite transaction).
    ///
    /// # Errors
    /// `Invalid` naming `jobs` for a batch over [`MAX_SUBMIT_BATCH`].
    async fn submit_many(
        &self,
        store: Arc<dyn JobStore>,
        jobs: Vec<NewJob>,
    ) -> QueueResult<Vec<QueueResult<Submitted>>> {
        check_batch(jobs.len())?;
        Ok(submit_each(self, store, jobs).await)
    }

    /// Re-enqueues upload jobs the store holds as pending but no worker holds; returns how many.
    async fn scan_pending_upload_jobs(&self) -> QueueResult<usize>;

    /// The same for exam jobs.
    async fn scan_pending_exam_jobs(&self) -> QueueResult<usize>;

    /// The same for chat jobs, rebuilding each lane in submission order.
    async fn scan_pending_chat_jobs(&self) -> QueueResult<usize>;

    /// Starts the workers. Idempotent.
    async fn start(&self) -> QueueResult<()>;

    /// Stops taking work, lets running jobs finish within the deadline, hands back the rest.
    /// Idempotent.
    async fn stop(&self) -> QueueResult<()>;
}

/// Creates `job`'s record through `store`, enqueues it by kind through `backend`, and deletes
/// the record again if the enqueue is refused: the default [`QueueBackend::submit`], and the
/// fallback of a backend that overrides it only for some cases.
///
/// # Errors
/// As [`QueueBackend::submit`].
pub async fn create_then_enqueue<B: QueueBackend + ?Sized>(
    backend: &B,
    store: Arc<dyn JobStore>,
    job: NewJob,
) -> QueueResult<Submitted> {
    let record = store.create(job).await?;
    let id = record.id.clone();
    let lane = match record.kind {
        JobKind::Upload => backend.enqueue_upload_job(id.clone()).await.map(|()| None),
        JobKind::Exam => backend.enqueue_exam_job(id.clone()).await.map(|()| None),
        JobKind::ProfileUpdate => {
            let student_id =
                record.payload.get("student_id").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            backend
                .enqueue_profile_update(ProfileUpdate { job_id: id.clone(), student_id })
                .await
                .map(|()| None)
        }
        JobKind::Chat => backend.enqueue_chat_job(id.clone(), record.lane.clone()).await.map(Some),
    };
    submitted_or_deleted(&*store, record, lane).await
}

/// The answer of a submit whose record `create` made, once `queued` says how its enqueue went:
/// the record with its lane receipt (chat jobs), or, when the enqueue was refused, the enqueue's
/// error after the record is deleted again (best effort: the error the caller needs is the
/// enqueue's).
///
/// # Errors
/// The enqueue's error.
pub async fn submitted_or_deleted(
    store: &dyn JobStore,
    record: JobRecord,
    queued: QueueResult<Option<ChatEnqueueReceipt>>,
) -> QueueResult<Submitted> {
    match queued {
        Ok(lane) => Ok(Submitted { record, lane }),
        Err(e) => {
            let _ = store.delete(&record.id).await;
            Err(e)
        }
    }
}

/// Submits `jobs` one after the other through `backend.submit`, answering per job in order: the
/// default [`QueueBackend::submit_many`], and the fallback of a backend that overrides it only
/// for some cases.
pub async fn submit_each<B: QueueBackend + ?Sized>(
    backend: &B,
    store: Arc<dyn JobStore>,
    jobs: Vec<NewJob>,
) -> Vec<QueueResult<Submitted>> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        out.push(backend.submit(store.clone(), job).await);
    }
    out
}

/// The most jobs one [`QueueBackend::submit_many`] call takes.
pub const MAX_SUBMIT_BATCH: usize = 1_000;

/// Refuses a batch over [`MAX_SUBMIT_BATCH`], naming the field and the rule.
///
/// # Errors
/// `QueueError::Invalid` naming `jobs`.
pub fn check_batch(len: usize) -> QueueResult<()> {
    if len > MAX_SUBMIT_BATCH {
        return Err(QueueError::invalid(
            "jobs",
            format!("a batch holds at most {MAX_SUBMIT_BATCH} jobs (got {len})"),
        ));
    }
    Ok(())
}
