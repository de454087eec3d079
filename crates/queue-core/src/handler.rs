//! What a worker runs: one [`JobHandler`] per job kind.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::job::{JobKind, JobRecord};
use crate::limiter::LimitClass;

/// A handler's failure. `retryable` errors are retried with backoff up to the budget; others
/// fail the job at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// What went wrong, kept on the job record.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl HandlerError {
    /// An error worth retrying (a timeout, a 5xx from a provider).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }

    /// An error no retry can fix (a malformed payload).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }
}

/// The error that dead-letters `job` when it has already been started more than `max_attempts`
/// times: only a lost worker (a lease that expired, a crash) starts a job again without a
/// recorded failure, so a job that keeps killing or hanging its worker ends here instead of
/// running forever. `None` while the job is within its budget.
#[must_use]
pub fn lost_too_often(job: &JobRecord, max_attempts: u32) -> Option<HandlerError> {
    (job.attempt > max_attempts).then(|| {
        let last = job.error.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default();
        HandlerError::permanent(format!(
            "gave up after {max_attempts} attempts: the worker running it was lost each time (lease expired){last}"
        ))
    })
}

/// Runs jobs of one kind.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait JobHandler: Send + Sync + fmt::Debug {
    /// The capacity classes `job` needs while it runs; the runtime takes them before calling
    /// [`JobHandler::handle`] and gives them back after.
    fn permits(&self, job: &JobRecord) -> Vec<LimitClass>;

    /// Runs one job; the value is stored as its result.
    async fn handle(&self, job: &JobRecord) -> Result<Value, HandlerError>;

    /// Runs several jobs that were waiting together (profile updates of one student are merged
    /// into one write). Returns one result per job, in order. The default runs them one by one.
    async fn handle_batch(&self, jobs: &[JobRecord]) -> Vec<Result<Value, HandlerError>> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.handle(job).await);
        }
        out
    }
}

/// The handler of every kind.
#[derive(Debug, Clone)]
pub struct HandlerSet {
    /// Assignment uploads.
    pub upload: Arc<dyn JobHandler>,
    /// Exam uploads.
    pub exam: Arc<dyn JobHandler>,
    /// Profile updates.
    pub profile_update: Arc<dyn JobHandler>,
    /// Chat replies.
    pub chat: Arc<dyn JobHandler>,
}

impl HandlerSet {
    /// One handler for every kind (tests and benchmarks).
    #[must_use]
    pub fn uniform(handler: Arc<dyn JobHandler>) -> Self {
        Self {
            upload: handler.clone(),
            exam: handler.clone(),
            profile_update: handler.clone(),
            chat: handler,
        }
    }

    /// The handler of `kind`.
    #[must_use]
    pub fn get(&self, kind: JobKind) -> &Arc<dyn JobHandler> {
        match kind {
            JobKind::Upload => &self.upload,
            JobKind::Exam => &self.exam,
            JobKind::ProfileUpdate => &self.profile_update,
            JobKind::Chat => &self.chat,
        }
    }
}
