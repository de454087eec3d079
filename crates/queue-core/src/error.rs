//! The one error type of the queue layers. Backend errors (SQLite, Redis) are wrapped into a
//! message here, never leaked as their own types.

use crate::ids::{IdError, JobId, LaneId};
use crate::job::{JobKind, JobStatus};

/// Shorthand for results of the queue layers.
pub type QueueResult<T> = Result<T, QueueError>;

/// Everything that can go wrong below the application.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// An id broke its rule.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// Some other input broke a rule.
    #[error("{field}: {rule}")]
    InvalidInput {
        /// The offending field.
        field: String,
        /// The rule it broke.
        rule: String,
    },
    /// The state machine forbids this move.
    #[error("invalid transition {from} -> {to}")]
    InvalidTransition {
        /// Current state.
        from: JobStatus,
        /// Requested state.
        to: JobStatus,
    },
    /// The lane already holds `max` waiting jobs.
    #[error("lane full: lane {lane} already has {max} waiting jobs (CHAT_LANE_MAX_QUEUE={max})")]
    LaneFull {
        /// The lane.
        lane: LaneId,
        /// Its cap.
        max: usize,
    },
    /// An in-process queue is at capacity.
    #[error("queue full: the {kind} queue holds {capacity} jobs already")]
    QueueFull {
        /// Which queue.
        kind: JobKind,
        /// Its capacity.
        capacity: usize,
    },
    /// No such job.
    #[error("job {job} not found")]
    NotFound {
        /// The id asked for.
        job: JobId,
    },
    /// A job with this id exists already.
    #[error("job {job} already exists")]
    AlreadyExists {
        /// The id.
        job: JobId,
    },
    /// The caller's lease is no longer current: its result is rejected (fencing).
    #[error("stale lease for job {job}: epoch {epoch} is no longer current (now {current})")]
    StaleLease {
        /// The job.
        job: JobId,
        /// The epoch the caller holds.
        epoch: u64,
        /// The current epoch.
        current: u64,
    },
    /// The runtime is stopped or stopping and takes no work.
    #[error("the queue runtime is not running")]
    NotRunning,
    /// The backend cannot be reached now, or did not answer. The operation was not performed,
    /// unless its request reached the backend and only the answer was lost (a connection
    /// dropped, or no answer in time): a caller that must know asks again (a submit of the same
    /// job answers `AlreadyExists` if it was made).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The storage layer failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// A setting is wrong.
    #[error("configuration error: {0}")]
    Config(String),
    /// The operation is not available in this build or mode.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl QueueError {
    /// Shorthand for [`QueueError::InvalidInput`].
    #[must_use]
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::InvalidInput { field: field.into(), rule: rule.into() }
    }

    /// Shorthand for [`QueueError::Storage`] from any displayable error.
    pub fn storage(err: impl std::fmt::Display) -> Self {
        Self::Storage(err.to_string())
    }
}
