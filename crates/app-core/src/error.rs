//! The application's error: what went wrong, in terms an HTTP client or a CLI user can act on.

use queue_core::{IdError, QueueError};

/// What the application reports. The `app` crate maps each variant to a status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// Bad input: the field and the rule it broke (400).
    #[error("{field}: {message}")]
    BadRequest {
        /// The offending field (`messages[2].content`, `tenant_id`, ...).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// No such job or tenant (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The chat lane is full (429).
    #[error("{0}")]
    LaneFull(String),
    /// A queue is full or the runtime is not running (503).
    #[error("{0}")]
    NotReady(String),
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    /// Shorthand for [`AppError::BadRequest`].
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest { field: field.into(), message: message.into() }
    }

    /// A short machine-readable name (`bad_request`, `not_found`, ...).
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::LaneFull(_) => "lane_full",
            Self::NotReady(_) => "not_ready",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<IdError> for AppError {
    fn from(e: IdError) -> Self {
        Self::bad(e.field, e.rule)
    }
}

impl From<QueueError> for AppError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::InvalidId(id) => id.into(),
            QueueError::InvalidInput { field, rule } => Self::bad(field, rule),
            QueueError::LaneFull { .. } => Self::LaneFull(e.to_string()),
            QueueError::NotFound { .. } => Self::NotFound(e.to_string()),
            QueueError::AlreadyExists { .. }
            | QueueError::InvalidTransition { .. }
            | QueueError::StaleLease { .. } => Self::Conflict(e.to_string()),
            QueueError::QueueFull { .. } | QueueError::NotRunning | QueueError::Unavailable(_) => {
                Self::NotReady(e.to_string())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}
