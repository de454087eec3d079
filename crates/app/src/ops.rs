//! The operations API over HTTP (`/ops/...`): queue depths, lanes, workers, permits and dead
//! letters of a tenant, and the retry, cancel and drain actions. Mounted inside the per-tenant
//! routes, so it answers at `/` for the default tenant and under `/t/{tenant}/`. The work and the
//! validation are `app_core::ops`'s; this file only maps requests and answers.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use app_core::ops::{
    CancelView, DeadQuery, DeadView, DrainView, LanesQuery, LanesView, PermitsView, QueuesView, RetryView,
    WorkersView,
};
use app_core::{AppError, Laneway, ProcessIdentity};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, RawPathParams, State};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::http::{ApiError, Tenant};

type AppState = Arc<Laneway>;
type ApiResult<T> = Result<Json<T>, ApiError>;

/// The operations routes, relative to a tenant's root.
pub fn routes() -> Router<AppState> {
    // Fix this process's identity (and start time) when the router is built.
    let _ = identity();
    Router::new()
        .route("/ops/queues", get(queues))
        .route("/ops/lanes", get(lanes))
        .route("/ops/workers", get(workers))
        .route("/ops/permits", get(permits))
        .route("/ops/dead", get(dead))
        .route("/ops/jobs/{job_id}/retry", post(retry))
        .route("/ops/jobs/{job_id}/cancel", post(cancel))
        .route("/ops/lanes/{lane_id}/drain", post(drain))
}

/// This process, as an inline tenant's worker listing shows it.
fn identity() -> &'static ProcessIdentity {
    static ME: OnceLock<ProcessIdentity> = OnceLock::new();
    ME.get_or_init(|| {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        ProcessIdentity::this_process(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    })
}

/// A query that does not parse: name the parameter when serde does (`unknown field `x``).
fn query_error(r: QueryRejection) -> ApiError {
    let text = r.body_text();
    let named = ["unknown field `", "missing field `"].iter().find_map(|marker| {
        let rest = &text[text.find(marker)? + marker.len()..];
        Some(rest[..rest.find('`')?].to_owned())
    });
    match named {
        Some(field) => AppError::bad(field, format!("query: {text}")).into(),
        None => ApiError::from(r),
    }
}

fn path_param(params: &RawPathParams, name: &str) -> String {
    params.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_owned()).unwrap_or_default()
}

async fn queues(State(app): State<AppState>, tenant: Tenant) -> ApiResult<QueuesView> {
    Ok(Json(app.ops().queues(tenant.as_deref()).await?))
}

async fn lanes(
    State(app): State<AppState>,
    tenant: Tenant,
    query: Result<Query<LanesQuery>, QueryRejection>,
) -> ApiResult<LanesView> {
    let Query(q) = query.map_err(query_error)?;
    Ok(Json(app.ops().lanes(tenant.as_deref(), &q).await?))
}

async fn workers(State(app): State<AppState>, tenant: Tenant) -> ApiResult<WorkersView> {
    Ok(Json(app.ops().workers(tenant.as_deref(), identity()).await?))
}

async fn permits(State(app): State<AppState>, tenant: Tenant) -> ApiResult<PermitsView> {
    Ok(Json(app.ops().permits(tenant.as_deref()).await?))
}

async fn dead(
    State(app): State<AppState>,
    tenant: Tenant,
    query: Result<Query<DeadQuery>, QueryRejection>,
) -> ApiResult<DeadView> {
    let Query(q) = query.map_err(query_error)?;
    Ok(Json(app.ops().dead(tenant.as_deref(), &q).await?))
}

async fn retry(State(app): State<AppState>, tenant: Tenant, params: RawPathParams) -> ApiResult<RetryView> {
    Ok(Json(app.ops().retry(tenant.as_deref(), &path_param(&params, "job_id")).await?))
}

async fn cancel(State(app): State<AppState>, tenant: Tenant, params: RawPathParams) -> ApiResult<CancelView> {
    Ok(Json(app.ops().cancel(tenant.as_deref(), &path_param(&params, "job_id")).await?))
}

async fn drain(State(app): State<AppState>, tenant: Tenant, params: RawPathParams) -> ApiResult<DrainView> {
    Ok(Json(app.ops().drain(tenant.as_deref(), &path_param(&params, "lane_id")).await?))
}
