//! The dashboard: one self-contained HTML page (inline CSS and vanilla JS, no build step) served
//! at `/` for the default tenant and at `/t/{tenant}/` for every tenant. The page carries no data;
//! its script polls the operations API (`ops/...`, by relative URL, so one page serves every
//! tenant) every second and sends the operator's tenant key when one was typed in.

use std::sync::Arc;

use app_core::Laneway;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("dashboard/index.html");

/// The dashboard routes, at the root of the router: the tenant page is registered with its
/// trailing slash, which the page's relative URLs need (a nested `/` would serve `/t/{tenant}`).
pub fn routes() -> Router<Arc<Laneway>> {
    Router::new().route("/", get(page)).route("/t/{tenant}/", get(page))
}

/// The same page for every tenant: it does not say whether the tenant exists (with
/// `AUTH_REQUIRED` that is for its key to tell), the API calls it makes do.
async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], PAGE)
}
