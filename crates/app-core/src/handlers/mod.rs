//! The concrete job handlers, one per job kind, and the [`HandlerSet`] that wires them up.

mod chat;
mod exam;
mod profile;
mod upload;

use std::path::PathBuf;
use std::sync::Arc;

use queue_core::{HandlerError, HandlerSet, JobRecord};
use serde::de::DeserializeOwned;

pub use chat::ChatHandler;
pub use exam::{ExamHandler, ExamSummary, QuestionStats, StudentTotal, parse_exam};
pub use profile::{ProfileUpdateHandler, validate_student_id};
pub use upload::{Assignment, Question, UploadHandler, parse_assignment};

use crate::responder::ChatResponder;

/// The handlers of every kind: chats answered by `responder`, profiles kept in `profiles_dir`
/// (which should be scoped to one tenant).
#[must_use]
pub fn handler_set(responder: Arc<dyn ChatResponder>, profiles_dir: PathBuf) -> HandlerSet {
    HandlerSet {
        upload: Arc::new(UploadHandler),
        exam: Arc::new(ExamHandler),
        profile_update: Arc::new(ProfileUpdateHandler::new(profiles_dir)),
        chat: Arc::new(ChatHandler::new(responder)),
    }
}

/// The job's payload as `T`; a payload that does not fit can never succeed, so the error is
/// permanent and says what is wrong.
fn parse_payload<T: DeserializeOwned>(job: &JobRecord, what: &str) -> Result<T, HandlerError> {
    T::deserialize(&job.payload)
        .map_err(|e| HandlerError::permanent(format!("invalid {what} payload for job {}: {e}", job.id)))
}
