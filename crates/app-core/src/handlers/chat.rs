//! The `chat` handler: asks the [`ChatResponder`] for a reply to the conversation on the job.

use std::sync::Arc;

use async_trait::async_trait;
use queue_core::{Clock, HandlerError, JobHandler, JobRecord, LimitClass, SystemClock};
use serde_json::{Value, json};
use tracing::Instrument;

use super::parse_payload;
use crate::payloads::ChatPayload;
use crate::responder::ChatResponder;

/// Runs `chat` jobs; the result is `{"reply": text, "started_at_ms", "finished_at_ms"}` (the
/// run's wall-clock span, which shows how long the reply took and lets anyone check that the jobs
/// of a lane never overlapped).
#[derive(Debug, Clone)]
pub struct ChatHandler {
    responder: Arc<dyn ChatResponder>,
}

impl ChatHandler {
    /// A handler that answers through `responder`.
    #[must_use]
    pub fn new(responder: Arc<dyn ChatResponder>) -> Self {
        Self { responder }
    }
}

#[async_trait]
impl JobHandler for ChatHandler {
    fn permits(&self, job: &JobRecord) -> Vec<LimitClass> {
        // Only the role matters here; a payload that fails to parse still takes the generic LLM
        // permit and then fails at once in `handle`.
        match job.payload.get("role").and_then(Value::as_str) {
            Some("student") => vec![LimitClass::Llm, LimitClass::LlmStudent],
            Some("teacher") => vec![LimitClass::Llm, LimitClass::LlmTeacher],
            _ => vec![LimitClass::Llm],
        }
    }

    async fn handle(&self, job: &JobRecord) -> Result<Value, HandlerError> {
        let chat: ChatPayload = parse_payload(job, "chat")?;
        if chat.messages.is_empty() {
            return Err(HandlerError::permanent(format!("chat job {} has no messages to reply to", job.id)));
        }
        let lane = job.lane.as_ref().map_or("", |l| l.as_str());
        let span = tracing::info_span!("chat_reply", tenant = %job.tenant, lane, job = %job.id);
        let started = SystemClock.now_ms();
        let reply = self.responder.reply(&chat).instrument(span).await?;
        Ok(json!({ "reply": reply, "started_at_ms": started, "finished_at_ms": SystemClock.now_ms() }))
    }
}
