//! A typed client for laneway's own HTTP API, for the `laneway` CLI and for scripts: one base URL,
//! an optional tenant (requests go under `/t/{tenant}/`), an optional bearer key and an optional
//! admin key. Refusals come back as [`ClientError::Refused`] with the server's `{error, detail,
//! field}`, so the caller can show what the server said.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{ChatStartResponse, ChatStatusResponse, JobAccepted, JobView};

/// Where the server is and who is asking.
#[derive(Clone, Default)]
pub struct ClientConfig {
    /// `http://host:port`, no trailing slash needed.
    pub base_url: String,
    /// The tenant whose routes to use (`/t/{tenant}/...`); the default tenant when `None`.
    pub tenant: Option<String>,
    /// Sent as `Authorization: Bearer <key>` on tenant routes.
    pub api_key: Option<String>,
    /// Sent as `X-Admin-Key` on admin routes.
    pub admin_key: Option<String>,
    /// Per-request timeout (30 s when `None`).
    pub timeout: Option<Duration>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("tenant", &self.tenant)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("admin_key", &self.admin_key.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server could not be reached, or the answer could not be read.
    #[error("cannot reach {url}: {message}")]
    Transport {
        /// The URL called.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered with an error status.
    #[error("{status} {error}: {detail}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error code (`bad_request`, `not_found`, ...).
        error: String,
        /// The server's explanation.
        detail: String,
        /// The request field at fault, when the server named one.
        field: Option<String>,
    },
    /// A success answer that does not have the expected shape.
    #[error("unexpected answer from {url}: {message}")]
    BadAnswer {
        /// The URL called.
        url: String,
        /// What did not fit.
        message: String,
    },
    /// A client-side problem (the HTTP client could not be built, a missing admin key).
    #[error("{0}")]
    Config(String),
}

/// Routes a request belongs to: the tenant's, or the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Tenant,
    Admin,
}

/// The client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LanewayClient {
    http: reqwest::Client,
    config: ClientConfig,
}

impl LanewayClient {
    /// A client for `config`.
    ///
    /// # Errors
    /// [`ClientError::Config`] when the HTTP client cannot be built.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout.unwrap_or(Duration::from_secs(30)))
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, config })
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn url(&self, scope: Scope, path: &str) -> String {
        let base = self.config.base_url.trim_end_matches('/');
        match (scope, &self.config.tenant) {
            (Scope::Tenant, Some(t)) => format!("{base}/t/{t}{path}"),
            _ => format!("{base}{path}"),
        }
    }

    fn request(
        &self,
        scope: Scope,
        method: Method,
        path: &str,
    ) -> Result<(String, RequestBuilder), ClientError> {
        let url = self.url(scope, path);
        let mut request = self.http.request(method, &url);
        match scope {
            Scope::Tenant => {
                if let Some(key) = &self.config.api_key {
                    request = request.bearer_auth(key);
                }
            }
            Scope::Admin => {
                let key = self.config.admin_key.as_ref().ok_or_else(|| {
                    ClientError::Config(
                        "the admin API needs the admin key: pass --admin-key or set TENANT_ADMIN_KEY".into(),
                    )
                })?;
                request = request.header("x-admin-key", key);
            }
        }
        Ok((url, request))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        scope: Scope,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let (url, mut request) = self.request(scope, method, path)?;
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::Transport { url: url.clone(), message: transport_message(&e) })?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Transport { url: url.clone(), message: transport_message(&e) })?;
        if !(200..300).contains(&status) {
            let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let str_of = |k: &str| parsed.get(k).and_then(Value::as_str).map(ToOwned::to_owned);
            return Err(ClientError::Refused {
                status,
                error: str_of("error").unwrap_or_else(|| "error".to_owned()),
                detail: str_of("detail").unwrap_or_else(|| text.trim().to_owned()),
                field: str_of("field"),
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::BadAnswer { url, message: e.to_string() })
    }

    /// `GET /ops/queues`: jobs per kind and state.
    ///
    /// # Errors
    /// [`ClientError`] as the server or the transport reports it.
    pub async fn queues(&self) -> Result<Value, ClientError> {
        self.call(Scope::Tenant, Method::GET, "/ops/queues", None).await
    }

    /// `GET /ops/lanes` (the first `limit` lanes).
    ///
    /// # Errors
    /// As [`LanewayClient::queues`].
    pub async fn lanes(&self, limit: usize) -> Result<Value, ClientError> {
        self.call(Scope::Tenant, Method::GET, &format!("/ops/lanes?limit={limit}"), None).await
    }

    /// `GET /ops/workers`.
    ///
    /// # Errors
    /// As [`LanewayClient::queues`].
    pub async fn workers(&self) -> Result<Value, ClientError> {
        self.call(Scope::Tenant, Method::GET, "/ops/workers", None).await
    }

    /// `POST /chat/start` with `request` (a `ChatStartRequest` as JSON).
    ///
    /// # Errors
    /// As [`LanewayClient::queues`].
    pub async fn start_chat(&self, request: &Value) -> Result<ChatStartResponse, ClientError> {
        self.call(Scope::Tenant, Method::POST, "/chat/start", Some(request)).await
    }

    /// `GET /chat/status?job_id=...`.
    ///
    /// # Errors
    /// As [`LanewayClient::queues`].
    pub async fn chat_status(&self, job_id: &str) -> Result<ChatStatusResponse, ClientError> {
        let path = format!("/chat/status?job_id={}", encode(job_id));
        self.call(Scope::Tenant, Method::GET, &path, None).await
    }

    /// `POST /uploads`.
    ///
    /// # Errors
    /// As [`LanewayClient::queues`].
    pub async fn submit_upload(&self, filename: &str, content: &str) -> Result<JobAccepted, ClientError> {
        let body = json!({"filename": filename, "content": content});
        self.call(Scope::Tenant, Method::POST, "/uploads", Some(&body)).await
    }

    /// `POST /exams`.
    ///
    /// # Errors
    /// As [`LanewayClient::queues`].
    pub async fn submit_exam(&self, filename: &str, csv: &str) -> Result<JobAccepted, ClientError> {
        let body = json!({"filename": filename, "csv": csv});
        self.call(Scope::Tenant, Method::POST, "/exams", Some(&body)).await
    }

    /// `POST /profile-updates`.
    ///
    /// # Errors
    /// As [`LanewayClient::queues`].
    pub async fn submit_profile_update(
        &self,
        student_id: &str,
        notes: &[String],
    ) -> Result<JobAccepted, ClientError> {
        let body = json!({"student_id": student_id, "notes": notes});
        self.call(Scope::Tenant, Method::POST, "/profile-updates", Some(&body)).await
    }

    /// `GET /jobs/{id}`.
    ///
    /// # Errors
    /// As [`LanewayClient::queues`].
    pub async fn job(&self, job_id: &str) -> Result<JobView, ClientError> {
        self.call(Scope::Tenant, Method::GET, &format!("/jobs/{}", encode(job_id)), None).await
    }

    /// `GET /admin/tenants`.
    ///
    /// # Errors
    /// As [`LanewayClient::queues`]; [`ClientError::Config`] without an admin key.
    pub async fn list_tenants(&self) -> Result<Value, ClientError> {
        self.call(Scope::Admin, Method::GET, "/admin/tenants?limit=500", None).await
    }

    /// `PUT /admin/tenants/{id}` with `request` (a `TenantRequest` as JSON).
    ///
    /// # Errors
    /// As [`LanewayClient::list_tenants`].
    pub async fn put_tenant(&self, id: &str, request: &Value) -> Result<Value, ClientError> {
        self.call(Scope::Admin, Method::PUT, &format!("/admin/tenants/{}", encode(id)), Some(request)).await
    }

    /// `DELETE /admin/tenants/{id}`: disable it.
    ///
    /// # Errors
    /// As [`LanewayClient::list_tenants`].
    pub async fn disable_tenant(&self, id: &str) -> Result<Value, ClientError> {
        self.call(Scope::Admin, Method::DELETE, &format!("/admin/tenants/{}", encode(id)), None).await
    }

    /// `POST /admin/tenants/{id}/keys`: a new API key (shown once).
    ///
    /// # Errors
    /// As [`LanewayClient::list_tenants`].
    pub async fn issue_key(&self, id: &str) -> Result<Value, ClientError> {
        self.call(Scope::Admin, Method::POST, &format!("/admin/tenants/{}/keys", encode(id)), None).await
    }

    /// `DELETE /admin/tenants/{id}/keys/{key_id}`.
    ///
    /// # Errors
    /// As [`LanewayClient::list_tenants`].
    pub async fn revoke_key(&self, id: &str, key_id: &str) -> Result<Value, ClientError> {
        let path = format!("/admin/tenants/{}/keys/{}", encode(id), encode(key_id));
        self.call(Scope::Admin, Method::DELETE, &path, None).await
    }
}

/// The error and its causes, without reqwest's `Debug` noise.
fn transport_message(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Percent-encodes everything but unreserved characters, for a path segment or a query value.
fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{ClientConfig, LanewayClient, Scope, encode};

    #[test]
    fn tenant_routes_go_under_the_tenant_and_admin_routes_do_not() {
        let client = LanewayClient::new(ClientConfig {
            base_url: "http://h:1/".into(),
            tenant: Some("t1".into()),
            ..ClientConfig::default()
        })
        .expect("client");
        assert_eq!(client.url(Scope::Tenant, "/ops/queues"), "http://h:1/t/t1/ops/queues");
        assert_eq!(client.url(Scope::Admin, "/admin/tenants"), "http://h:1/admin/tenants");
    }

    #[test]
    fn encoding_keeps_unreserved_characters_only() {
        assert_eq!(encode("student:s-1:main"), "student%3As-1%3Amain");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
