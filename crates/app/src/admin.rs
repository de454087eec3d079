//! The admin API: tenants (`PUT`/`GET`/`DELETE /admin/tenants...`) and their API keys, every
//! route behind `X-Admin-Key`, which must equal `TENANT_ADMIN_KEY` (compared in constant time).

use std::collections::HashMap;
use std::sync::Arc;

use app_core::tenants::{IssuedKey, KeyView, TenantPage, TenantRequest, TenantView};
use app_core::{AppError, Laneway};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};

use crate::auth::refuse;
use crate::http::ApiError;

type AppState = Arc<Laneway>;

/// The header carrying the admin key.
pub const ADMIN_KEY_HEADER: &str = "x-admin-key";

/// The admin routes, to merge into the main router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/tenants", get(list_tenants))
        .route("/admin/tenants/{id}", put(put_tenant).delete(delete_tenant))
        .route("/admin/tenants/{id}/keys", post(issue_key))
        .route("/admin/tenants/{id}/keys/{key_id}", axum::routing::delete(revoke_key))
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths: every byte pair is
/// XORed and folded, with no early exit on content. A length mismatch is `false` at once (the
/// length of the admin key is not the secret).
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// Proof that the request carries the admin key. As the first extractor of every admin handler,
/// it runs before anything reads the path or the body.
#[derive(Debug)]
pub struct AdminKey;

impl FromRequestParts<AppState> for AdminKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let Some(expected) = app.settings().tenant_admin_key.as_ref() else {
            return Err(refuse(StatusCode::UNAUTHORIZED, "unauthorized", "admin key not configured"));
        };
        match parts.headers.get(ADMIN_KEY_HEADER) {
            None => Err(refuse(StatusCode::UNAUTHORIZED, "unauthorized", "missing X-Admin-Key header")),
            Some(presented) if constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) => {
                Ok(Self)
            }
            Some(_) => Err(refuse(StatusCode::UNAUTHORIZED, "unauthorized", "wrong X-Admin-Key")),
        }
    }
}

fn path_error(r: &PathRejection) -> ApiError {
    AppError::bad("path", r.body_text()).into()
}

async fn list_tenants(
    _admin: AdminKey,
    State(app): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<TenantPage>, ApiError> {
    let Query(q) = query?;
    if let Some(unknown) = q.keys().find(|k| !matches!(k.as_str(), "limit" | "after")) {
        return Err(AppError::bad(unknown.clone(), "unknown query parameter; expected limit or after").into());
    }
    Ok(Json(app.list_tenants(q.get("limit").map(String::as_str), q.get("after").map(String::as_str))?))
}

async fn put_tenant(
    _admin: AdminKey,
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<TenantRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|r| path_error(&r))?;
    let Json(req) = body?;
    let (view, created): (TenantView, bool) = app.put_tenant(&id, req).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view)).into_response())
}

async fn delete_tenant(
    _admin: AdminKey,
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TenantView>, ApiError> {
    let Path(id) = id.map_err(|r| path_error(&r))?;
    Ok(Json(app.disable_tenant(&id).await?))
}

async fn issue_key(
    _admin: AdminKey,
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    let Path(id) = id.map_err(|r| path_error(&r))?;
    Ok((StatusCode::CREATED, Json(app.issue_api_key(&id).await?)))
}

async fn revoke_key(
    _admin: AdminKey,
    State(app): State<AppState>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<KeyView>, ApiError> {
    let Path((id, key_id)) = ids.map_err(|r| path_error(&r))?;
    Ok(Json(app.revoke_api_key(&id, &key_id).await?))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_is_true_only_for_equal_bytes() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret-key", b"secret-key"));
        assert!(!constant_time_eq(b"secret-key", b"secret-kez"));
        assert!(!constant_time_eq(b"secret-key", b"Secret-key"));
        assert!(!constant_time_eq(b"secret-key", b"secret-key-longer"));
        assert!(!constant_time_eq(b"secret", b""));
    }
}
