//! Durable job records and idempotency keys.

use std::fmt;

use async_trait::async_trait;

use crate::error::QueueResult;
use crate::ids::{JobId, RequestId};
use crate::job::{JobKind, JobRecord, JobStatus, JobUpdate, NewJob};

/// Counts of one kind's jobs per state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct StatusCounts {
    /// Waiting.
    pub queued: u64,
    /// Running.
    pub processing: u64,
    /// Finished well.
    pub done: u64,
    /// Dead-lettered.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

impl StatusCounts {
    /// Adds `n` to the counter of `status`.
    pub fn add(&mut self, status: JobStatus, n: u64) {
        match status {
            JobStatus::Queued => self.queued += n,
            JobStatus::Processing => self.processing += n,
            JobStatus::Done => self.done += n,
            JobStatus::Failed => self.failed += n,
            JobStatus::Cancelled => self.cancelled += n,
        }
    }
}

/// One tenant's job records. The source of truth for what was accepted.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait JobStore: Send + Sync + fmt::Debug {
    /// Records a new queued job, assigning its per-tenant sequence number. Durable when it returns.
    ///
    /// # Errors
    /// `QueueError::AlreadyExists` when the id is taken.
    async fn create(&self, job: NewJob) -> QueueResult<JobRecord>;

    /// Records several new queued jobs, each as [`JobStore::create`] would, and answers per job
    /// in the order of `jobs`: one job's refusal leaves the others alone. The jobs are created
    /// in the order given, so their sequence numbers rise in that order, and an id that occurs
    /// twice in `jobs` is created by its first occurrence and refused (`AlreadyExists`) at the
    /// second. Every record answered `Ok` is durable when it returns.
    ///
    /// The default creates one job after the other. A store that pays for each write (a durable
    /// commit) overrides it to write the whole batch at once: `SqliteJobStore` commits it in
    /// one transaction, so a batch costs one fsync instead of one per job.
    ///
    /// # Errors
    /// Per job: as [`JobStore::create`] (`AlreadyExists` for a taken id). The call itself fails
    /// only when no job could be attempted (the store cannot be reached, its write failed as a
    /// whole); then no job of the batch was created.
    async fn create_many(&self, jobs: Vec<NewJob>) -> QueueResult<Vec<QueueResult<JobRecord>>> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.create(job).await);
        }
        Ok(out)
    }

    /// The record of `id`, if any.
    async fn get(&self, id: &JobId) -> QueueResult<Option<JobRecord>>;

    /// Applies `update` atomically, checking the fence and the transition table.
    ///
    /// # Errors
    /// `QueueError::NotFound`, `QueueError::StaleLease`, `QueueError::InvalidTransition`; on error
    /// nothing is written.
    async fn transition(&self, id: &JobId, update: JobUpdate) -> QueueResult<JobRecord>;

    /// Applies `update` as [`JobStore::transition`] does (the same checks, the same record
    /// afterwards) but answers no record: for a caller that would not read it, such as a worker
    /// recording a job's outcome.
    ///
    /// The default calls `transition`. A store that pays to read the record back overrides it:
    /// `SqliteJobStore` reads only the state and lease epoch the checks need, and neither reads
    /// nor decodes the payload and result; `MemoryJobStore` does not decode them.
    ///
    /// # Errors
    /// As [`JobStore::transition`]; on error nothing is written.
    async fn settle(&self, id: &JobId, update: JobUpdate) -> QueueResult<()> {
        self.transition(id, update).await.map(drop)
    }

    /// [`JobStore::transition`] done at once, by a store whose operations never wait (one held
    /// in process memory): a caller on a hot path tries it first, and so skips the boxed future
    /// an `async` trait method costs (an allocation per call). `Err` hands the update back: the
    /// default, for a store that waits (a file, a server); the caller then calls `transition`.
    ///
    /// # Errors
    /// Inside `Ok`: as [`JobStore::transition`].
    fn transition_now(&self, _id: &JobId, update: JobUpdate) -> Result<QueueResult<JobRecord>, JobUpdate> {
        Err(update)
    }

    /// [`JobStore::settle`] done at once, as [`JobStore::transition_now`] is `transition`.
    ///
    /// # Errors
    /// Inside `Ok`: as [`JobStore::settle`].
    fn settle_now(&self, _id: &JobId, update: JobUpdate) -> Result<QueueResult<()>, JobUpdate> {
        Err(update)
    }

    /// Deletes a record outright (only to roll back a submit that was refused).
    async fn delete(&self, id: &JobId) -> QueueResult<bool>;

    /// Queued and processing jobs of `kind`, in submission order (`seq`).
    async fn scan_pending(&self, kind: JobKind) -> QueueResult<Vec<JobRecord>>;

    /// Jobs of `kind` in `status`, newest first, at most `limit` (for operators).
    async fn list(
        &self,
        kind: Option<JobKind>,
        status: JobStatus,
        limit: usize,
    ) -> QueueResult<Vec<JobRecord>>;

    /// Counts per state of `kind`.
    async fn counts(&self, kind: JobKind) -> QueueResult<StatusCounts>;

    /// Deletes finished (terminal) records last updated before `before_ms`; returns how many.
    async fn purge_finished(&self, before_ms: u64) -> QueueResult<usize>;
}

/// What [`IdempotencyStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key was free and now maps to the given job.
    Claimed,
    /// The key already maps to this job.
    Existing(JobId),
}

/// Maps a client's `request_id` to the job it created, set-if-absent with a TTL.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync + fmt::Debug {
    /// Maps `request` to `job` unless it already maps to a job.
    async fn claim(&self, request: &RequestId, job: &JobId) -> QueueResult<IdempotencyClaim>;

    /// Forgets `request` if it maps to `job` (rollback of a refused submit).
    async fn release(&self, request: &RequestId, job: &JobId) -> QueueResult<()>;
}
