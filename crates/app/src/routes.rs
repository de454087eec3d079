//! The one table of the HTTP routes the router serves. `GET /openapi.json` is generated from it
//! (`openapi.rs`), and tests hold the router to it: a unit test below reads every
//! `.route("...", ...)` in this crate's sources and fails on one the table lacks, and the scenario
//! `tests/scenarios/openapi.rs` calls every documented path on the real binary and fails on one
//! that answers "no such route" (or 405).
//!
//! **Adding a route:** add its row here, in the same change. A body or answer with a schema of
//! its own also gets an entry in `openapi::schemas()` (a unit test checks that every name used
//! here has one).

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// PATCH.
    #[allow(dead_code)] // No route uses PATCH yet; the table and its source check know it.
    Patch,
}

impl Method {
    /// Lower case, as OpenAPI and axum's `get`/`post`/... spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Put => "put",
            Self::Delete => "delete",
            Self::Patch => "patch",
        }
    }
}

/// Where a route is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// At `/` for the default tenant and under `/t/{tenant}/` for every tenant.
    Tenant,
    /// Once, at the root: the process's own routes.
    Root,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Open,
    /// A tenant's bearer key when `AUTH_REQUIRED` is on (anyone otherwise).
    TenantKey,
    /// The `X-Admin-Key` header.
    AdminKey,
}

/// A query parameter.
#[derive(Debug, Clone, Copy)]
pub struct QueryParam {
    /// Its name.
    pub name: &'static str,
    /// `string` or `integer`.
    pub schema: &'static str,
    /// Whether it must be given.
    pub required: bool,
    /// What it means.
    pub description: &'static str,
}

/// One route (one method on one path).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path in axum's syntax (`/jobs/{job_id}`); for [`Scope::Tenant`], the path under the
    /// tenant prefix.
    pub path: &'static str,
    /// Where it is mounted.
    pub scope: Scope,
    /// Who may call it.
    pub access: Access,
    /// Its group in the document.
    pub tag: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Its query parameters.
    pub query: &'static [QueryParam],
    /// The schema of its JSON body, if it takes one (a name in `openapi::schemas()`).
    pub request: Option<&'static str>,
    /// The schema of its success answer (a name in `openapi::schemas()`).
    pub response: &'static str,
    /// Its success statuses.
    pub success: &'static [u16],
    /// Its error statuses (each answered as the `Error` schema).
    pub errors: &'static [u16],
}

const fn q(name: &'static str, schema: &'static str, description: &'static str) -> QueryParam {
    QueryParam { name, schema, required: false, description }
}

const LIMIT: QueryParam = q("limit", "integer", "Page size, 1 to 500 (default 50); empty means the default.");

/// The statuses any tenant route may answer besides its own: unknown tenant, tenant not running,
/// missing or wrong tenant key.
const TENANT_ERRORS: &[u16] = &[400, 401, 403, 404, 503];
const SUBMIT_ERRORS: &[u16] = &[400, 401, 403, 404, 413, 415, 503];
const ADMIN_ERRORS: &[u16] = &[400, 401, 404, 409, 503];

const fn tenant(
    method: Method,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    response: &'static str,
) -> Route {
    Route {
        method,
        path,
        scope: Scope::Tenant,
        access: Access::TenantKey,
        tag,
        summary,
        query: &[],
        request: None,
        response,
        success: &[200],
        errors: TENANT_ERRORS,
    }
}

const fn admin(method: Method, path: &'static str, summary: &'static str, response: &'static str) -> Route {
    Route {
        method,
        path,
        scope: Scope::Root,
        access: Access::AdminKey,
        tag: "admin",
        summary,
        query: &[],
        request: None,
        response,
        success: &[200],
        errors: ADMIN_ERRORS,
    }
}

use Method::{Delete, Get, Post, Put};

/// The `response` of a route that answers an HTML page (`text/html`) rather than JSON.
pub const HTML_PAGE: &str = "HtmlPage";

/// Every route the router serves.
pub const ROUTES: &[Route] = &[
    // The tenant API (http.rs).
    Route {
        access: Access::Open,
        ..tenant(
            Get,
            "/healthz",
            "service",
            "Health: at the root, every configured tenant running (503 when one is not); under \
             /t/{tenant}/, that tenant's runtime",
            "Health",
        )
    },
    Route {
        request: Some("ChatStartRequest"),
        errors: &[400, 401, 403, 404, 413, 415, 429, 503],
        ..tenant(
            Post,
            "/chat/start",
            "jobs",
            "Start a chat job in its lane (idempotent by request_id; a repeat within the debounce \
             window coalesces)",
            "ChatStartResponse",
        )
    },
    Route {
        query: &[QueryParam {
            name: "job_id",
            schema: "string",
            required: true,
            description: "The chat job.",
        }],
        ..tenant(
            Get,
            "/chat/status",
            "jobs",
            "A chat job's status, live lane position and, once done, its reply",
            "ChatStatusResponse",
        )
    },
    Route {
        request: Some("UploadRequest"),
        errors: SUBMIT_ERRORS,
        ..tenant(Post, "/uploads", "jobs", "Submit an assignment upload", "JobAccepted")
    },
    Route {
        request: Some("ExamRequest"),
        errors: SUBMIT_ERRORS,
        ..tenant(Post, "/exams", "jobs", "Submit an exam score sheet", "JobAccepted")
    },
    Route {
        request: Some("ProfileUpdateRequest"),
        errors: SUBMIT_ERRORS,
        ..tenant(Post, "/profile-updates", "jobs", "Submit a student profile update", "JobAccepted")
    },
    tenant(Get, "/jobs/{job_id}", "jobs", "Any job's record", "JobView"),
    // The operations API (ops.rs).
    tenant(Get, "/ops/queues", "ops", "Jobs per kind and state, and the in-process queues", "QueuesView"),
    Route {
        query: &[q("after", "string", "Lanes after this lane id (the previous page's next_after)."), LIMIT],
        ..tenant(
            Get,
            "/ops/lanes",
            "ops",
            "Lanes: the active job with its lease deadline, the waiting jobs with their positions",
            "LanesView",
        )
    },
    tenant(
        Get,
        "/ops/workers",
        "ops",
        "Worker processes: id, host, jobs in flight, last heartbeat, alive or stale",
        "WorkersView",
    ),
    tenant(Get, "/ops/permits", "ops", "Limiter permits in use per class", "PermitsView"),
    Route {
        query: &[
            q("kind", "string", "upload, exam, profile_update or chat; all kinds when absent or empty."),
            LIMIT,
            q(
                "offset",
                "integer",
                "Jobs to skip, newest first (the previous page's next_offset), 0 to 10000.",
            ),
        ],
        ..tenant(
            Get,
            "/ops/dead",
            "ops",
            "Dead-lettered (failed) jobs with their errors, newest first",
            "DeadView",
        )
    },
    Route {
        errors: &[400, 401, 403, 404, 409, 429, 503],
        ..tenant(
            Post,
            "/ops/jobs/{job_id}/retry",
            "ops",
            "Retry a dead-lettered job as a new job with the same kind, lane and payload (the dead \
             one stays failed; retrying it again returns the same new job)",
            "RetryView",
        )
    },
    Route {
        errors: &[400, 401, 403, 404, 409, 503],
        ..tenant(
            Post,
            "/ops/jobs/{job_id}/cancel",
            "ops",
            "Cancel a queued job (a chat job must be waiting in its lane); 409 names the status of \
             one that is not",
            "CancelView",
        )
    },
    tenant(
        Post,
        "/ops/lanes/{lane_id}/drain",
        "ops",
        "Cancel every waiting job of a lane; the running one finishes",
        "DrainView",
    ),
    // The dashboard (dashboard.rs): an HTML page, open because it carries no data (its script
    // calls the ops API, with the operator's key when AUTH_REQUIRED is on).
    Route {
        access: Access::Open,
        response: HTML_PAGE,
        errors: &[],
        ..tenant(
            Get,
            "/",
            "service",
            "The dashboard: queue depths, lanes, workers, permits, throughput, dead letters with \
             retry; refreshes itself every second",
            HTML_PAGE,
        )
    },
    // The process's own routes.
    Route {
        method: Get,
        path: "/openapi.json",
        scope: Scope::Root,
        access: Access::Open,
        tag: "service",
        summary: "This document",
        query: &[],
        request: None,
        response: "OpenApiDocument",
        success: &[200],
        errors: &[],
    },
    Route {
        method: Get,
        path: "/metrics",
        scope: Scope::Root,
        access: Access::Open,
        tag: "service",
        summary: "Job counters, queue depths and duration histograms of every running tenant, in the \
                  Prometheus text format (text/plain; version=0.0.4)",
        query: &[],
        request: None,
        response: "MetricsText",
        success: &[200],
        errors: &[],
    },
    // The admin API (admin.rs).
    Route {
        query: &[q("after", "string", "Tenants after this id (the previous page's next_after)."), LIMIT],
        ..admin(Get, "/admin/tenants", "List tenants, by id", "TenantPage")
    },
    Route {
        request: Some("TenantRequest"),
        success: &[200, 201],
        ..admin(
            Put,
            "/admin/tenants/{id}",
            "Create (201) or replace (200) a tenant; starts, restarts or stops only its runtime",
            "TenantView",
        )
    },
    admin(Delete, "/admin/tenants/{id}", "Disable a tenant: stop its runtime, keep its data", "TenantView"),
    Route {
        success: &[201],
        ..admin(
            Post,
            "/admin/tenants/{id}/keys",
            "Issue an API key for a tenant (shown once; stored hashed)",
            "IssuedKey",
        )
    },
    admin(Delete, "/admin/tenants/{id}/keys/{key_id}", "Revoke an API key", "KeyView"),
];

/// The full paths of `route` as served: `[path, /t/{tenant}path]` for a tenant route.
pub fn served_paths(route: &Route) -> Vec<String> {
    match route.scope {
        Scope::Root => vec![route.path.to_owned()],
        Scope::Tenant => vec![route.path.to_owned(), format!("/t/{{tenant}}{}", route.path)],
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::{Method, ROUTES, served_paths};

    /// `(method, path)` of every `.route("path", get(..).post(..))` in `source`.
    fn registered_routes(source: &str) -> Vec<(Method, String)> {
        let mut found = Vec::new();
        for (start, _) in source.match_indices(".route(") {
            let call = &source[start + ".route(".len()..];
            // The call's text, up to its closing parenthesis.
            let mut depth = 1usize;
            let mut end = call.len();
            for (i, c) in call.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let call = &call[..end];
            let Some(open) = call.find('"') else { continue };
            let Some(len) = call[open + 1..].find('"') else { continue };
            let path = &call[open + 1..open + 1 + len];
            let handlers = &call[open + 1 + len..];
            for method in [Method::Get, Method::Post, Method::Put, Method::Delete, Method::Patch] {
                let name = method.as_str();
                let called = handlers.match_indices(&format!("{name}(")).any(|(i, _)| {
                    handlers[..i].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
                });
                if called {
                    found.push((method, path.to_owned()));
                }
            }
        }
        found
    }

    #[test]
    fn the_route_scanner_sees_methods_chained_and_spread_over_lines() {
        let source = r#"
            Router::new()
                .route("/a", get(a))
                .route(
                    "/b/{id}",
                    put(put_b).delete(delete_b),
                )
                .route("/c", axum::routing::delete(c))
        "#;
        assert_eq!(
            registered_routes(source),
            vec![
                (Method::Get, "/a".to_owned()),
                (Method::Put, "/b/{id}".to_owned()),
                (Method::Delete, "/b/{id}".to_owned()),
                (Method::Delete, "/c".to_owned()),
            ]
        );
    }

    #[test]
    fn every_route_registered_in_the_sources_is_in_the_table() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut registered = Vec::new();
        for entry in std::fs::read_dir(&src).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                // This file's own test fixtures are not routes.
                let text = text.split("#[cfg(test)]").next().unwrap_or_default();
                registered.extend(registered_routes(text).into_iter().map(|r| (r, path.clone())));
            }
        }
        assert!(registered.len() >= 10, "the scanner found too few routes: {registered:?}");
        for ((method, path), file) in &registered {
            // A router nested under a prefix registers the tail of the served path.
            // One registered at the root with its full path (the dashboard's `/t/{tenant}/`) is
            // listed when that is one of the paths its row is served at.
            let listed = ROUTES.iter().any(|r| {
                r.method == *method
                    && (r.path.ends_with(path.as_str()) || served_paths(r).iter().any(|p| p == path))
            });
            assert!(
                listed,
                "{} {path} (registered in {}) is missing from routes::ROUTES: add its row there",
                method.as_str().to_uppercase(),
                file.display()
            );
        }
    }

    #[test]
    fn the_table_has_no_duplicate_routes() {
        let mut seen = BTreeSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{:?} {} is listed twice", r.method, r.path);
        }
    }
}
