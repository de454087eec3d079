//! Requests and responses of the service, with their validation. Every check names the field and
//! the rule; nothing is written before every check has passed.

use queue_core::{JobId, JobRecord, LaneId, RequestId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::AppError;
use crate::handlers::validate_student_id;
use crate::payloads::{
    ChatMessage, ChatPayload, ExamPayload, ProfileUpdatePayload, UploadPayload, default_lane,
};

/// Most messages in one chat request.
pub const MAX_MESSAGES: usize = 200;
/// Longest message content, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Longest upload or exam document, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 2 * 1024 * 1024;
/// Longest file name, in bytes.
pub const MAX_FILENAME_BYTES: usize = 255;
/// Most notes in one profile update.
pub const MAX_NOTES: usize = 100;
/// Longest participant id (student, teacher, session), in bytes.
pub const MAX_PARTICIPANT_ID: usize = 64;

const MESSAGE_ROLES: [&str; 3] = ["user", "assistant", "system"];

/// `POST /chat/start`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatStartRequest {
    /// The client's idempotency key.
    pub request_id: String,
    /// `student`, `teacher` or another role.
    pub role: String,
    /// Required for students.
    #[serde(default)]
    pub student_id: Option<String>,
    /// Required for teachers.
    #[serde(default)]
    pub teacher_id: Option<String>,
    /// The conversation within the participant's lanes (default `main`).
    #[serde(default)]
    pub session_id: Option<String>,
    /// An explicit lane; wins over the derived one.
    #[serde(default)]
    pub lane_id: Option<String>,
    /// The conversation so far, last message last.
    pub messages: Vec<ChatMessage>,
    /// Ids of attached documents (part of the coalescing fingerprint).
    #[serde(default)]
    pub attachments: Vec<String>,
}

/// `POST /chat/start`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatStartResponse {
    /// The job (an earlier one when coalesced or repeated).
    pub job_id: JobId,
    /// Its status now.
    pub status: String,
    /// Its lane.
    pub lane_id: LaneId,
    /// 0 = running or about to; otherwise the 1-based place among waiting jobs.
    pub lane_queue_position: usize,
    /// Jobs in the lane, the running one included.
    pub lane_queue_size: usize,
    /// Whether a job of the lane is running.
    pub lane_active: bool,
    /// Whether this request was coalesced onto an earlier job with the same message.
    pub debounced: bool,
}

/// `GET /chat/status`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatStatusResponse {
    /// The job.
    pub job_id: JobId,
    /// Its status.
    pub status: String,
    /// Its lane.
    pub lane_id: Option<LaneId>,
    /// Its live place among the lane's waiting jobs (0 = running or finished).
    pub lane_queue_position: usize,
    /// The reply, once done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// The error, once failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /uploads`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    /// Optional idempotency key.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The document's name.
    pub filename: String,
    /// Its text or Markdown.
    pub content: String,
}

/// `POST /exams`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExamRequest {
    /// Optional idempotency key.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The score sheet's name.
    pub filename: String,
    /// `student_id,q1,q2,...` then one row per student.
    pub csv: String,
}

/// `POST /profile-updates`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdateRequest {
    /// Optional idempotency key.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The student.
    pub student_id: String,
    /// Notes to append.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Fields to set.
    #[serde(default)]
    pub fields: Map<String, Value>,
}

/// The answer to a non-chat submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAccepted {
    /// The job.
    pub job_id: JobId,
    /// Its status now.
    pub status: String,
    /// Its kind.
    pub kind: String,
}

/// `GET /jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// The job.
    pub job_id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its status.
    pub status: String,
    /// Its lane (chat).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lane_id: Option<LaneId>,
    /// Attempts started.
    pub attempt: u32,
    /// Created, ms since the epoch.
    pub created_at_ms: u64,
    /// Last change, ms since the epoch.
    pub updated_at_ms: u64,
    /// The result, once done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<JobRecord> for JobView {
    fn from(r: JobRecord) -> Self {
        Self {
            job_id: r.id,
            kind: r.kind.as_str().to_owned(),
            status: r.status.as_str().to_owned(),
            lane_id: r.lane,
            attempt: r.attempt,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
            result: r.result,
            error: r.error,
        }
    }
}

fn participant(field: &'static str, value: Option<&str>) -> Result<Option<String>, AppError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else { return Ok(None) };
    let ok = v.len() <= MAX_PARTICIPANT_ID
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'));
    if ok {
        Ok(Some(v.to_owned()))
    } else {
        Err(AppError::bad(field, format!("must be 1-{MAX_PARTICIPANT_ID} bytes of [A-Za-z0-9_.@-]")))
    }
}

fn request_id(value: &str) -> Result<RequestId, AppError> {
    Ok(RequestId::new(value)?)
}

fn optional_request_id(value: Option<&str>) -> Result<Option<RequestId>, AppError> {
    value.map(request_id).transpose()
}

fn filename(value: &str) -> Result<(), AppError> {
    if value.trim().is_empty() {
        return Err(AppError::bad("filename", "must not be empty"));
    }
    if value.len() > MAX_FILENAME_BYTES {
        return Err(AppError::bad(
            "filename",
            format!("is {} bytes; at most {MAX_FILENAME_BYTES}", value.len()),
        ));
    }
    if value.contains(['/', '\\', '\0']) || value.chars().any(char::is_control) {
        return Err(AppError::bad(
            "filename",
            "must be a plain file name (no path separators or control characters)",
        ));
    }
    Ok(())
}

fn document(field: &'static str, value: &str) -> Result<(), AppError> {
    if value.trim().is_empty() {
        return Err(AppError::bad(field, "must not be empty"));
    }
    if value.len() > MAX_DOCUMENT_BYTES {
        return Err(AppError::bad(field, format!("is {} bytes; at most {MAX_DOCUMENT_BYTES}", value.len())));
    }
    Ok(())
}

/// A validated chat request.
#[derive(Debug, Clone)]
pub struct ValidChat {
    /// The idempotency key.
    pub request_id: RequestId,
    /// The lane it runs in.
    pub lane: LaneId,
    /// The payload the job carries.
    pub payload: ChatPayload,
    /// The coalescing fingerprint.
    pub fingerprint: String,
}

impl ChatStartRequest {
    /// Checks every field; derives the lane when none is given.
    ///
    /// # Errors
    /// [`AppError::BadRequest`] naming the first field that breaks its rule.
    pub fn validate(self) -> Result<ValidChat, AppError> {
        let request_id = request_id(&self.request_id)?;
        let role = self.role.trim().to_owned();
        if role.is_empty() || role.len() > 32 || !role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(AppError::bad(
                "role",
                "must be 1-32 characters of [A-Za-z0-9_] (student, teacher, ...)",
            ));
        }
        let student_id = participant("student_id", self.student_id.as_deref())?;
        let teacher_id = participant("teacher_id", self.teacher_id.as_deref())?;
        let session_id = participant("session_id", self.session_id.as_deref())?;
        if role == "student" && student_id.is_none() {
            return Err(AppError::bad("student_id", "required when role is student"));
        }
        if role == "teacher" && teacher_id.is_none() {
            return Err(AppError::bad("teacher_id", "required when role is teacher"));
        }
        if self.messages.is_empty() {
            return Err(AppError::bad("messages", "must hold at least one message"));
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(AppError::bad(
                "messages",
                format!("holds {} messages; at most {MAX_MESSAGES}", self.messages.len()),
            ));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if !MESSAGE_ROLES.contains(&m.role.as_str()) {
                return Err(AppError::bad(
                    format!("messages[{i}].role"),
                    "must be user, assistant or system",
                ));
            }
            if m.content.trim().is_empty() {
                return Err(AppError::bad(format!("messages[{i}].content"), "must not be empty"));
            }
            if m.content.len() > MAX_MESSAGE_BYTES {
                return Err(AppError::bad(
                    format!("messages[{i}].content"),
                    format!("is {} bytes; at most {MAX_MESSAGE_BYTES}", m.content.len()),
                ));
            }
        }
        for (i, a) in self.attachments.iter().enumerate() {
            JobId::for_field("attachments", a.as_str())
                .map_err(|e| AppError::bad(format!("attachments[{i}]"), e.rule))?;
        }
        let lane = match self.lane_id.as_deref() {
            Some(l) => LaneId::new(l)?,
            None => LaneId::new(default_lane(
                &role,
                student_id.as_deref(),
                teacher_id.as_deref(),
                session_id.as_deref(),
                request_id.as_str(),
            ))?,
        };
        let payload = ChatPayload {
            role,
            student_id,
            teacher_id,
            session_id,
            messages: self.messages,
            attachments: self.attachments,
        };
        let fingerprint = payload.fingerprint();
        Ok(ValidChat { request_id, lane, payload, fingerprint })
    }
}

impl UploadRequest {
    /// Checks every field.
    ///
    /// # Errors
    /// [`AppError::BadRequest`] naming the field.
    pub fn validate(self) -> Result<(Option<RequestId>, UploadPayload), AppError> {
        let request_id = optional_request_id(self.request_id.as_deref())?;
        filename(&self.filename)?;
        document("content", &self.content)?;
        Ok((request_id, UploadPayload { filename: self.filename, content: self.content }))
    }
}

impl ExamRequest {
    /// Checks every field.
    ///
    /// # Errors
    /// [`AppError::BadRequest`] naming the field.
    pub fn validate(self) -> Result<(Option<RequestId>, ExamPayload), AppError> {
        let request_id = optional_request_id(self.request_id.as_deref())?;
        filename(&self.filename)?;
        document("csv", &self.csv)?;
        Ok((request_id, ExamPayload { filename: self.filename, csv: self.csv }))
    }
}

impl ProfileUpdateRequest {
    /// Checks every field.
    ///
    /// # Errors
    /// [`AppError::BadRequest`] naming the field.
    pub fn validate(self) -> Result<(Option<RequestId>, ProfileUpdatePayload), AppError> {
        let request_id = optional_request_id(self.request_id.as_deref())?;
        validate_student_id(&self.student_id)?;
        if self.notes.is_empty() && self.fields.is_empty() {
            return Err(AppError::bad("notes", "give at least one note or one field"));
        }
        if self.notes.len() > MAX_NOTES {
            return Err(AppError::bad(
                "notes",
                format!("holds {} notes; at most {MAX_NOTES}", self.notes.len()),
            ));
        }
        for (i, n) in self.notes.iter().enumerate() {
            if n.len() > MAX_MESSAGE_BYTES {
                return Err(AppError::bad(
                    format!("notes[{i}]"),
                    format!("is {} bytes; at most {MAX_MESSAGE_BYTES}", n.len()),
                ));
            }
        }
        let fields_len = serde_json::to_string(&self.fields).map_or(0, |s| s.len());
        if fields_len > MAX_MESSAGE_BYTES {
            return Err(AppError::bad(
                "fields",
                format!("is {fields_len} bytes as JSON; at most {MAX_MESSAGE_BYTES}"),
            ));
        }
        Ok((
            request_id,
            ProfileUpdatePayload { student_id: self.student_id, notes: self.notes, fields: self.fields },
        ))
    }
}
