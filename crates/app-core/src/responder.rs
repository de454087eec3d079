//! What writes a chat reply: an OpenAI-compatible provider over HTTP, or a deterministic
//! stand-in that needs no network (development, tests, crash drills).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use queue_core::HandlerError;
use serde_json::{Value, json};

use crate::payloads::ChatPayload;

/// Writes the reply to a chat.
#[async_trait]
pub trait ChatResponder: Send + Sync + fmt::Debug {
    /// The reply to `chat`. Transient failures (timeouts, 429, 5xx) are retryable; the rest are
    /// permanent.
    async fn reply(&self, chat: &ChatPayload) -> Result<String, HandlerError>;
}

/// Why a responder could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponderError {
    /// The configuration is unusable.
    #[error("invalid LLM configuration: {0}")]
    InvalidConfig(String),
    /// The HTTP client could not be created.
    #[error("could not create the HTTP client: {0}")]
    Client(String),
}

/// Answers without a network: the same chat always gets the same reply, after an optional
/// artificial delay (crash tests use it to keep jobs running long enough to kill a worker).
#[derive(Debug, Clone, Default)]
pub struct DeterministicResponder {
    delay: Duration,
}

impl DeterministicResponder {
    /// A responder that waits `delay` before each reply.
    #[must_use]
    pub const fn new(delay: Duration) -> Self {
        Self { delay }
    }
}

#[async_trait]
impl ChatResponder for DeterministicResponder {
    async fn reply(&self, chat: &ChatPayload) -> Result<String, HandlerError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let who = match (chat.role.as_str(), &chat.student_id, &chat.teacher_id) {
            ("student", Some(id), _) => format!("student {id}"),
            ("teacher", _, Some(id)) => format!("teacher {id}"),
            ("student" | "teacher", _, _) => chat.role.clone(),
            _ => "there".to_owned(),
        };
        let said = chat.last_user_message().map_or("", |m| m.content.trim());
        let attached = match chat.attachments.len() {
            0 => String::new(),
            1 => " with 1 attachment".to_owned(),
            n => format!(" with {n} attachments"),
        };
        Ok(format!(
            "Hello {who} — you said: \"{said}\"{attached}. (deterministic responder; set LLM_BASE_URL to use a real model)"
        ))
    }
}

/// How to reach an OpenAI-compatible chat completions API.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// E.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// The model name.
    pub model: String,
    /// Limit on a whole request, connect to last byte.
    pub timeout: Duration,
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Asks an OpenAI-compatible provider (`POST {base_url}/chat/completions`).
#[derive(Debug, Clone)]
pub struct OpenAiResponder {
    // Holds the key; its Debug hides it.
    config: OpenAiConfig,
    url: String,
    client: reqwest::Client,
}

impl OpenAiResponder {
    /// A responder for `config`.
    ///
    /// # Errors
    /// [`ResponderError::InvalidConfig`] when the base URL is not `http(s)://` or the timeout is
    /// zero; [`ResponderError::Client`] when the HTTP client cannot be built.
    pub fn new(config: OpenAiConfig) -> Result<Self, ResponderError> {
        let base = config.base_url.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ResponderError::InvalidConfig(format!(
                "base URL must start with http:// or https://, got {:?}",
                config.base_url
            )));
        }
        if config.timeout.is_zero() {
            return Err(ResponderError::InvalidConfig("timeout must be more than zero".into()));
        }
        let url = format!("{base}/chat/completions");
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| ResponderError::Client(error_chain(&e)))?;
        Ok(Self { config, url, client })
    }

    /// The endpoint requests go to.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// An error with its sources, which carry the useful part (`connection refused`, ...).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The provider's own words for an error body: OpenAI's `error.message` when the body is such
/// JSON, otherwise the start of the body.
fn provider_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let msg = v.pointer("/error/message").or_else(|| v.get("message")).or_else(|| v.get("error"));
        if let Some(Value::String(s)) = msg {
            return s.clone();
        }
    }
    let body = body.trim();
    match body.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None if body.is_empty() => "(empty body)".to_owned(),
        None => body.to_owned(),
    }
}

#[async_trait]
impl ChatResponder for OpenAiResponder {
    async fn reply(&self, chat: &ChatPayload) -> Result<String, HandlerError> {
        let messages: Vec<Value> =
            chat.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
        let body = json!({"model": self.config.model, "messages": messages});
        let mut request = self.client.post(&self.url).json(&body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        tracing::debug!(url = %self.url, model = %self.config.model, messages = messages.len(), "LLM request");

        let timeout = self.config.timeout;
        let transport = |e: &reqwest::Error| {
            if e.is_timeout() {
                HandlerError::retryable(format!("LLM request to {} timed out after {timeout:?}", self.url))
            } else {
                HandlerError::retryable(format!("LLM request failed: {}", error_chain(e)))
            }
        };
        let response = request.send().await.map_err(|e| transport(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| transport(&e))?;

        if status.as_u16() == 429 || status.is_server_error() {
            return Err(HandlerError::retryable(format!(
                "LLM provider returned HTTP {status}: {}",
                provider_message(&text)
            )));
        }
        if !status.is_success() {
            return Err(HandlerError::permanent(format!(
                "LLM provider returned HTTP {status}: {}",
                provider_message(&text)
            )));
        }
        let parsed: Value = serde_json::from_str(&text).map_err(|e| {
            HandlerError::permanent(format!("provider returned no reply: the body is not JSON ({e})"))
        })?;
        match parsed.pointer("/choices/0/message/content") {
            Some(Value::String(reply)) => Ok(reply.clone()),
            _ => Err(HandlerError::permanent("provider returned no reply")),
        }
    }
}
