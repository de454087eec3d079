//! The queue backend contract of the seed: enqueue by kind, rescan after a restart, start, stop.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::QueueResult;
use crate::ids::{JobId, LaneId};
use crate::lane::ChatEnqueueReceipt;

/// A profile update to apply: the job that carries the notes, and the student it is for (updates
/// of one student are batched into one write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileUpdate {
    /// The job record holding the notes.
    pub job_id: JobId,
    /// The student whose profile changes.
    pub student_id: String,
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
