//! The HTTP API: routes for the default tenant and the same under `/t/{tenant}/`, JSON in and
//! out, errors as `{error, detail}` with the status that fits.

use std::sync::Arc;

use app_core::api::{ChatStartRequest, ExamRequest, ProfileUpdateRequest, UploadRequest};
use app_core::{AppError, Laneway};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, RawPathParams, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// Largest request body: a 2 MiB document plus its JSON envelope.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

type AppState = Arc<Laneway>;

/// The router: every route at `/` for the default tenant and under `/t/{tenant}/`.
///
/// **Every route must have its row in `routes::ROUTES`** (the table `GET /openapi.json` is
/// generated from): tests fail on a route registered in these sources that the table lacks, and on
/// a documented path the router does not serve.
pub fn router(app: AppState) -> Router {
    let routes = || {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/chat/start", post(chat_start))
            .route("/chat/status", get(chat_status))
            .route("/uploads", post(upload))
            .route("/exams", post(exam))
            .route("/profile-updates", post(profile_update))
            .route("/jobs/{job_id}", get(job))
            .merge(crate::ops::routes())
    };
    Router::new()
        .merge(routes())
        .nest("/t/{tenant}", routes())
        .merge(crate::admin::routes())
        .merge(crate::openapi::routes())
        .merge(crate::metrics::routes())
        .merge(crate::dashboard::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
    field: Option<String>,
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let status = match &e {
            AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::LaneFull(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let field = match &e {
            AppError::BadRequest { field, .. } => Some(field.clone()),
            _ => None,
        };
        Self { status, error: e.code(), detail: e.to_string(), field }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let text = r.body_text();
        let (status, error, field) = match &r {
            // A body that parses as JSON but does not fit the request is bad input like any
            // other: 400, naming the field serde points at.
            JsonRejection::JsonDataError(_) => {
                (StatusCode::BAD_REQUEST, "bad_request", json_error_field(&text))
            }
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => (r.status(), "payload_too_large", None),
            _ => (r.status(), "bad_request", None),
        };
        Self { status, error, detail: format!("body: {text}"), field }
    }
}

/// The field a serde error names: `missing field `x``, `unknown field `x``, or the path before
/// the message (`messages[0].content: invalid type ...`).
fn json_error_field(text: &str) -> Option<String> {
    let detail = text.split_once("target type: ").map_or(text, |(_, d)| d);
    // serde_path_to_error puts the path of the failing value first: `messages[0]: missing ...`.
    let (path, message) = match detail.split_once(": ") {
        Some((p, m))
            if !p.is_empty()
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']')) =>
        {
            (p, m)
        }
        _ => ("", detail),
    };
    for marker in ["missing field `", "unknown field `"] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            let name = &rest[..rest.find('`')?];
            // For an unknown field the path already ends with it; for a missing one it is the
            // parent.
            let named = path == name || path.ends_with(&format!(".{name}"));
            return Some(if path.is_empty() {
                name.to_owned()
            } else if named {
                path.to_owned()
            } else {
                format!("{path}.{name}")
            });
        }
    }
    (!path.is_empty()).then(|| path.to_owned())
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            detail: format!("query: {}", r.body_text()),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.error, "detail": self.detail});
        if let Some(field) = self.field {
            body["field"] = field.into();
        }
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The `{tenant}` path segment, when the route has one.
#[derive(Debug)]
pub struct Tenant(Option<String>);

impl Tenant {
    pub(crate) fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state).await.ok();
        Ok(Self(params.and_then(|p| p.iter().find(|(k, _)| *k == "tenant").map(|(_, v)| v.to_owned()))))
    }
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        error: "not_found",
        detail: "no such route".into(),
        field: None,
    }
}

async fn healthz(State(app): State<AppState>, tenant: Tenant) -> Result<Response, ApiError> {
    if tenant.as_deref().is_some() {
        let rt = app.tenant(tenant.as_deref())?;
        return Ok(Json(json!({"status": "ok", "tenant": rt.tenant.as_str(), "backend": rt.backend.name()}))
            .into_response());
    }
    let health = app.health();
    let status = if health.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Json(health)).into_response())
}

async fn chat_start(
    State(app): State<AppState>,
    tenant: Tenant,
    body: Result<Json<ChatStartRequest>, JsonRejection>,
) -> ApiResult<app_core::api::ChatStartResponse> {
    let Json(req) = body?;
    Ok(Json(app.chat_start(tenant.as_deref(), req).await?))
}

#[derive(Debug, Deserialize)]
struct StatusQuery {
    job_id: Option<String>,
}

async fn chat_status(
    State(app): State<AppState>,
    tenant: Tenant,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> ApiResult<app_core::api::ChatStatusResponse> {
    let Query(q) = query?;
    let job_id =
        q.job_id.ok_or_else(|| AppError::bad("job_id", "required as a query parameter (?job_id=...)"))?;
    Ok(Json(app.chat_status(tenant.as_deref(), &job_id).await?))
}

async fn upload(
    State(app): State<AppState>,
    tenant: Tenant,
    body: Result<Json<UploadRequest>, JsonRejection>,
) -> ApiResult<app_core::api::JobAccepted> {
    let Json(req) = body?;
    Ok(Json(app.submit_upload(tenant.as_deref(), req).await?))
}

async fn exam(
    State(app): State<AppState>,
    tenant: Tenant,
    body: Result<Json<ExamRequest>, JsonRejection>,
) -> ApiResult<app_core::api::JobAccepted> {
    let Json(req) = body?;
    Ok(Json(app.submit_exam(tenant.as_deref(), req).await?))
}

async fn profile_update(
    State(app): State<AppState>,
    tenant: Tenant,
    body: Result<Json<ProfileUpdateRequest>, JsonRejection>,
) -> ApiResult<app_core::api::JobAccepted> {
    let Json(req) = body?;
    Ok(Json(app.submit_profile_update(tenant.as_deref(), req).await?))
}

async fn job(
    State(app): State<AppState>,
    tenant: Tenant,
    params: RawPathParams,
) -> ApiResult<app_core::api::JobView> {
    let job_id = params.iter().find(|(k, _)| *k == "job_id").map(|(_, v)| v.to_owned()).unwrap_or_default();
    Ok(Json(app.job(tenant.as_deref(), &job_id).await?))
}

#[cfg(test)]
mod tests {
    use super::json_error_field;

    #[test]
    fn serde_errors_name_their_field() {
        assert_eq!(json_error_field("Failed to deserialize the JSON body into the target type: missing field `messages` at line 1 column 2").as_deref(), Some("messages"));
        assert_eq!(json_error_field("Failed to deserialize the JSON body into the target type: unknown field `extra`, expected one of").as_deref(), Some("extra"));
        assert_eq!(
            json_error_field("Failed to deserialize the JSON body into the target type: messages[0].content: invalid type: integer `5`, expected a string").as_deref(),
            Some("messages[0].content")
        );
        assert_eq!(json_error_field("EOF while parsing an object at line 1 column 17"), None);
        assert_eq!(
            json_error_field("Failed to deserialize the JSON body into the target type: messages[0]: missing field `content` at line 1 column 9").as_deref(),
            Some("messages[0].content")
        );
        assert_eq!(
            json_error_field("Failed to deserialize the JSON body into the target type: messages[0].mood: unknown field `mood`, expected `role` or `content`").as_deref(),
            Some("messages[0].mood")
        );
        assert_eq!(
            json_error_field("Failed to deserialize the JSON body into the target type: colour: unknown field `colour`, expected one of `request_id`").as_deref(),
            Some("colour")
        );
    }
}
