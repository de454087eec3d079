//! Tenant auth (`AUTH_REQUIRED=1`): every request for a tenant's data needs
//! `Authorization: Bearer <key>` with a live key of that tenant. `/t/{tenant}/...` needs a key of
//! `{tenant}`; the unprefixed routes serve `TENANT_ID`, so they need one of `TENANT_ID`. Open are
//! the process's own routes: `GET /healthz` at the root, `/metrics`, `/openapi.json`,
//! `/admin/...` (which has its own key), and the dashboard page (`/`, `/t/{tenant}/`), which
//! carries no data.
//!
//! No key → 401, a key of another tenant → 403, a revoked or unknown key → 401. Neither the key
//! nor the header is ever logged or echoed: only the key's id is, once it is known.

use std::borrow::Cow;
use std::sync::Arc;

use app_core::{KeyCheck, Laneway};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer in the API's shape, `{error, detail}`; a 401 also says how to authenticate.
pub fn refuse(status: StatusCode, error: &'static str, detail: &str) -> Response {
    let mut response = (status, Json(json!({"error": error, "detail": detail}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// `router` behind tenant auth when `AUTH_REQUIRED` is on; unchanged otherwise.
pub fn require_tenant_keys(router: axum::Router, app: Arc<Laneway>) -> axum::Router {
    if !app.settings().auth_required {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(app, check_tenant_key))
}

/// Whose key a path needs: `None` for the process's open routes.
fn tenant_of<'a>(path: &'a str, default_tenant: &'a str) -> Option<Cow<'a, str>> {
    if let Some(rest) = path.strip_prefix("/t/") {
        let segment = rest.split('/').next().unwrap_or_default();
        // The dashboard page carries no data: the API calls it makes send the key.
        if rest.len() == segment.len() + 1 {
            return None;
        }
        // The router percent-decodes `{tenant}`; decode the same way so both see one tenant.
        return Some(percent_decode(segment));
    }
    let open = matches!(path, "/" | "/healthz" | "/metrics" | "/openapi.json" | "/admin")
        || path.starts_with("/admin/");
    (!open).then_some(Cow::Borrowed(default_tenant))
}

fn percent_decode(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push(u8::try_from(hi * 16 + lo).unwrap_or_default());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The key of an `Authorization: Bearer <key>` header; `Err` with what is wrong.
fn bearer(request: &Request) -> Result<&str, &'static str> {
    let value =
        request.headers().get(header::AUTHORIZATION).ok_or("missing Authorization: Bearer <key> header")?;
    let value = value.to_str().map_err(|_| "the Authorization header must be `Bearer <key>`")?;
    let (scheme, key) = value.split_once(' ').ok_or("the Authorization header must be `Bearer <key>`")?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() {
        return Err("the Authorization header must be `Bearer <key>`");
    }
    Ok(key)
}

async fn check_tenant_key(State(app): State<Arc<Laneway>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let Some(tenant) = tenant_of(&path, app.settings().tenant_id.as_str()) else {
        return next.run(request).await;
    };
    let key = match bearer(&request) {
        Ok(key) => key,
        Err(why) => return refuse(StatusCode::UNAUTHORIZED, "unauthorized", why),
    };
    match app.check_tenant_key(&tenant, key).await {
        Ok(KeyCheck::Valid { key_id }) => {
            tracing::debug!(tenant = %tenant, key_id = %key_id, "tenant key accepted");
            next.run(request).await
        }
        Ok(KeyCheck::WrongTenant) => refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!("this key does not belong to tenant {tenant}"),
        ),
        Ok(KeyCheck::Revoked) => refuse(StatusCode::UNAUTHORIZED, "unauthorized", "this key was revoked"),
        Ok(KeyCheck::Unknown) => refuse(StatusCode::UNAUTHORIZED, "unauthorized", "unknown key"),
        Err(e) => {
            tracing::error!(tenant = %tenant, error = %e, "cannot check a tenant key");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", "cannot check the key")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tenant_of;

    #[test]
    fn every_tenant_route_needs_its_tenants_key_and_process_routes_are_open() {
        let of = |p| tenant_of(p, "default").map(|t| t.into_owned());
        assert_eq!(of("/t/t1/chat/start").as_deref(), Some("t1"));
        assert_eq!(of("/t/t1/healthz").as_deref(), Some("t1"));
        assert_eq!(of("/t/t%31/healthz").as_deref(), Some("t1"));
        assert_eq!(of("/t/t1").as_deref(), Some("t1"));
        assert_eq!(of("/chat/start").as_deref(), Some("default"));
        assert_eq!(of("/jobs/j-1").as_deref(), Some("default"));
        assert_eq!(of("/healthz"), None);
        assert_eq!(of("/metrics"), None);
        assert_eq!(of("/openapi.json"), None);
        assert_eq!(of("/admin/tenants"), None);
        assert_eq!(of("/admin/tenants/t1/keys"), None);
        assert_eq!(of("/administrator").as_deref(), Some("default"));
        // The dashboard page (its API calls need the key).
        assert_eq!(of("/"), None);
        assert_eq!(of("/t/t1/"), None);
        assert_eq!(of("/t/t1/ops/queues").as_deref(), Some("t1"));
    }
}
