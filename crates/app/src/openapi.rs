//! `GET /openapi.json`: an OpenAPI 3.1 document of every route, generated from the route table
//! (`routes.rs`), with hand-written JSON schemas of the bodies and the error shape.

use std::collections::BTreeSet;
use std::sync::Arc;

use app_core::Laneway;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::routes::{Access, HTML_PAGE, ROUTES, Route, Scope, served_paths};

/// The route serving the document, mounted once at the root.
pub fn routes() -> Router<Arc<Laneway>> {
    Router::new().route("/openapi.json", get(serve))
}

async fn serve() -> Json<Value> {
    Json(document())
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        for path in served_paths(route) {
            let item = paths.entry(path.clone()).or_insert_with(|| json!({}));
            item[route.method.as_str()] = operation(route, &path);
        }
    }
    let tags: BTreeSet<&str> = ROUTES.iter().map(|r| r.tag).collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Laneway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Multi-tenant job runtime with chat lanes. Every tenant route is served at `/` \
                for the default tenant (`TENANT_ID`) and under `/t/{tenant}/` for every tenant. \
                Errors are `{error, detail, field?}`; `field` names the offending input.",
        },
        "tags": tags.iter().map(|t| json!({"name": t, "description": tag_description(t)})).collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "tenantKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A key of the tenant (issued through the admin API); required only \
                        when AUTH_REQUIRED is on.",
                },
                "adminKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Admin-Key",
                    "description": "Must equal TENANT_ADMIN_KEY.",
                },
            },
        },
    })
}

fn tag_description(tag: &str) -> &'static str {
    match tag {
        "jobs" => "Submit jobs and read them back.",
        "ops" => "Operations: queue depths, lanes, workers, permits, dead letters; retry, cancel, drain.",
        "admin" => "Tenants and their API keys (X-Admin-Key).",
        _ => "The process itself.",
    }
}

fn operation_id(route: &Route, path: &str) -> String {
    let words: Vec<String> = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty() && *w != "t" && *w != "tenant")
        .map(ToOwned::to_owned)
        .collect();
    let prefix = if path.starts_with("/t/") { "tenant_" } else { "" };
    // The page at the root of a tenant is named for its tag.
    let name = if words.is_empty() { route.tag.to_owned() } else { words.join("_") };
    format!("{prefix}{}_{name}", route.method.as_str())
}

fn path_param_description(name: &str) -> &'static str {
    match name {
        "tenant" => "The tenant: [A-Za-z0-9][A-Za-z0-9_-]{0,63}.",
        "job_id" => "The job: 1-200 bytes of [A-Za-z0-9_.:@-].",
        "lane_id" => "The lane, e.g. student:s42:main: 1-200 bytes of [A-Za-z0-9_.:@-].",
        "id" => "The tenant id.",
        "key_id" => "The API key's id.",
        _ => "A path parameter.",
    }
}

fn operation(route: &Route, path: &str) -> Value {
    let mut parameters: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": path_param_description(name),
                "schema": {"type": "string"},
            })
        })
        .collect();
    parameters.extend(route.query.iter().map(|p| {
        json!({
            "name": p.name,
            "in": "query",
            "required": p.required,
            "description": p.description,
            "schema": {"type": p.schema},
        })
    }));
    let mut responses = Map::new();
    let media = match route.response {
        HTML_PAGE => "text/html",
        "MetricsText" => "text/plain",
        _ => "application/json",
    };
    for status in route.success {
        responses.insert(
            status.to_string(),
            json!({
                "description": if *status == 201 { "Created" } else { "OK" },
                "content": {media: {"schema": schema_ref(route.response)}},
            }),
        );
    }
    for status in route.errors {
        responses.insert(
            status.to_string(),
            json!({
                "description": error_description(*status),
                "content": {"application/json": {"schema": schema_ref("Error")}},
            }),
        );
    }
    let mut op = json!({
        "operationId": operation_id(route, path),
        "tags": [route.tag],
        "summary": route.summary,
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = route.request {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema_ref(body)}},
        });
    }
    let tenant_route = route.scope == Scope::Tenant;
    op["security"] = match route.access {
        Access::Open => json!([]),
        // Optional: only with AUTH_REQUIRED on.
        Access::TenantKey if tenant_route => json!([{}, {"tenantKey": []}]),
        Access::TenantKey => json!([{"tenantKey": []}]),
        Access::AdminKey => json!([{"adminKey": []}]),
    };
    op
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Bad input: `field` names the offending field when there is one",
        401 => "Missing, unknown or revoked key (or the admin key is not configured)",
        403 => "A key of another tenant",
        404 => "Unknown job, tenant or lane",
        409 => "Conflicts with the job's (or tenant's) state; `detail` names it",
        413 => "The body is over 4 MiB",
        415 => "The Content-Type is not application/json",
        429 => "The lane already has CHAT_LANE_MAX_QUEUE waiting jobs",
        503 => "A queue is full, or the tenant's runtime is not running",
        _ => "Error",
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn nullable(schema: &Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn object(properties: &Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

fn closed(properties: &Value, required: &[&str]) -> Value {
    let mut o = object(properties, required);
    o["additionalProperties"] = Value::Bool(false);
    o
}

/// The schemas of the bodies, by name.
#[allow(clippy::too_many_lines)] // One declaration per schema; splitting them would only scatter them.
pub fn schemas() -> Value {
    let s = json!({"type": "string"});
    let int = json!({"type": "integer", "minimum": 0});
    let boolean = json!({"type": "boolean"});
    let opt_s = json!({"type": ["string", "null"]});
    let opt_int = json!({"type": ["integer", "null"], "minimum": 0});
    let kind = schema_ref("JobKind");
    let status = schema_ref("JobStatus");
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let limits = json!({"type": ["integer", "null"], "minimum": 1});
    let entries = vec![
        (
            "Error",
            object(
                &json!({
                    "error": {"type": "string", "description": "A short code: bad_request, not_found, conflict, lane_full, not_ready, payload_too_large, unauthorized, forbidden, internal."},
                    "detail": {"type": "string", "description": "What is wrong, in words."},
                    "field": {"type": "string", "description": "The offending field, for bad input."},
                }),
                &["error", "detail"],
            ),
        ),
        (HTML_PAGE, json!({"type": "string", "description": "An HTML page (the dashboard)."})),
        ("JobKind", json!({"type": "string", "enum": ["upload", "exam", "profile_update", "chat"]})),
        (
            "JobStatus",
            json!({"type": "string", "enum": ["queued", "processing", "done", "failed", "cancelled"]}),
        ),
        (
            "Health",
            object(
                &json!({
                    "status": {"type": "string", "description": "ok, or degraded when a configured tenant is not running (root)."},
                    "backend": s,
                    "tenants": {"type": "array", "items": {"type": "string"}, "description": "Running tenants (root only)."},
                    "tenant": {"type": "string", "description": "The tenant (under /t/{tenant}/ only)."},
                }),
                &["status", "backend"],
            ),
        ),
        ("OpenApiDocument", json!({"type": "object", "description": "This OpenAPI 3.1 document."})),
        ("MetricsText", json!({"type": "string", "description": "Prometheus text exposition format 0.0.4."})),
        (
            "ChatMessage",
            closed(
                &json!({
                    "role": {"type": "string", "enum": ["user", "assistant", "system"]},
                    "content": {"type": "string", "maxLength": 32768},
                }),
                &["role", "content"],
            ),
        ),
        (
            "ChatStartRequest",
            closed(
                &json!({
                    "request_id": {"type": "string", "description": "Idempotency key: 1-200 bytes of [A-Za-z0-9_.:@-]."},
                    "role": {"type": "string", "description": "student, teacher or another role: 1-32 of [A-Za-z0-9_]."},
                    "student_id": {"type": "string", "description": "Required when role is student."},
                    "teacher_id": {"type": "string", "description": "Required when role is teacher."},
                    "session_id": s,
                    "lane_id": {"type": "string", "description": "An explicit lane; wins over the derived one."},
                    "messages": {"type": "array", "items": schema_ref("ChatMessage"), "minItems": 1, "maxItems": 200},
                    "attachments": strings,
                }),
                &["request_id", "role", "messages"],
            ),
        ),
        (
            "ChatStartResponse",
            object(
                &json!({
                    "job_id": s, "status": s, "lane_id": s,
                    "lane_queue_position": {"type": "integer", "minimum": 0, "description": "0 = running now; else the 1-based place among waiting jobs."},
                    "lane_queue_size": int, "lane_active": boolean,
                    "debounced": {"type": "boolean", "description": "Coalesced onto an earlier job with the same message."},
                }),
                &[
                    "job_id",
                    "status",
                    "lane_id",
                    "lane_queue_position",
                    "lane_queue_size",
                    "lane_active",
                    "debounced",
                ],
            ),
        ),
        (
            "ChatStatusResponse",
            object(
                &json!({
                    "job_id": s, "status": s, "lane_id": opt_s, "lane_queue_position": int,
                    "reply": {"type": "string", "description": "Once done."},
                    "error": {"type": "string", "description": "Once failed."},
                }),
                &["job_id", "status", "lane_id", "lane_queue_position"],
            ),
        ),
        (
            "UploadRequest",
            closed(
                &json!({
                    "request_id": s, "filename": s,
                    "content": {"type": "string", "description": "Text or Markdown with numbered questions; at most 2 MiB."},
                }),
                &["filename", "content"],
            ),
        ),
        (
            "ExamRequest",
            closed(
                &json!({
                    "request_id": s, "filename": s,
                    "csv": {"type": "string", "description": "Header student_id,q1,q2,... then one row per student."},
                }),
                &["filename", "csv"],
            ),
        ),
        (
            "ProfileUpdateRequest",
            closed(
                &json!({
                    "request_id": s, "student_id": s, "notes": strings,
                    "fields": {"type": "object", "description": "Set on the profile, overwriting earlier values."},
                }),
                &["student_id"],
            ),
        ),
        (
            "JobAccepted",
            object(&json!({"job_id": s, "status": s, "kind": kind}), &["job_id", "status", "kind"]),
        ),
        (
            "JobView",
            object(
                &json!({
                    "job_id": s, "kind": kind, "status": status, "lane_id": s, "attempt": int,
                    "created_at_ms": int, "updated_at_ms": int,
                    "result": {"description": "The handler's result, once done."},
                    "error": s,
                }),
                &["job_id", "kind", "status", "attempt", "created_at_ms", "updated_at_ms"],
            ),
        ),
        (
            "KindDepths",
            object(
                &json!({
                    "kind": kind, "queued": int, "processing": int, "done": int, "failed": int, "cancelled": int,
                }),
                &["kind", "queued", "processing", "done", "failed", "cancelled"],
            ),
        ),
        (
            "QueueDepths",
            object(
                &json!({
                    "upload": int, "exam": int, "profile_update": int,
                    "chat_ready": {"type": "integer", "minimum": 0, "description": "Lanes whose head job waits for a chat worker."},
                    "running": int,
                }),
                &["upload", "exam", "profile_update", "chat_ready", "running"],
            ),
        ),
        (
            "QueuesView",
            object(
                &json!({
                    "tenant": s, "backend": s,
                    "kinds": {"type": "array", "items": schema_ref("KindDepths")},
                    "memory": nullable(&schema_ref("QueueDepths")),
                }),
                &["tenant", "backend", "kinds", "memory"],
            ),
        ),
        (
            "ActiveJob",
            object(
                &json!({
                    "job_id": s, "epoch": int,
                    "lease_deadline_ms": {"type": "integer", "minimum": 0, "description": "When the lease runs out unless renewed."},
                }),
                &["job_id", "epoch", "lease_deadline_ms"],
            ),
        ),
        (
            "WaitingJob",
            object(
                &json!({"job_id": s, "position": {"type": "integer", "minimum": 1}}),
                &["job_id", "position"],
            ),
        ),
        (
            "LaneView",
            object(
                &json!({
                    "lane_id": s,
                    "active": nullable(&schema_ref("ActiveJob")),
                    "waiting": {"type": "array", "items": schema_ref("WaitingJob")},
                }),
                &["lane_id", "active", "waiting"],
            ),
        ),
        (
            "LanesView",
            object(
                &json!({
                    "tenant": s,
                    "lanes": {"type": "array", "items": schema_ref("LaneView")},
                    "next_after": opt_s,
                }),
                &["tenant", "lanes", "next_after"],
            ),
        ),
        (
            "WorkerView",
            object(
                &json!({
                    "worker_id": s, "host": s, "pid": int, "started_ms": int, "last_heartbeat_ms": int, "in_flight": int,
                    "state": {"type": "string", "enum": ["alive", "stale"]},
                }),
                &["worker_id", "host", "pid", "started_ms", "last_heartbeat_ms", "in_flight", "state"],
            ),
        ),
        (
            "WorkersView",
            object(
                &json!({
                    "tenant": s, "backend": s, "workers": {"type": "array", "items": schema_ref("WorkerView")},
                }),
                &["tenant", "backend", "workers"],
            ),
        ),
        (
            "PermitUsage",
            object(
                &json!({
                    "class": {"type": "string", "enum": ["ocr", "llm", "llm_student", "llm_teacher"]},
                    "in_use": int, "capacity": int,
                }),
                &["class", "in_use", "capacity"],
            ),
        ),
        (
            "PermitsView",
            object(
                &json!({
                    "tenant": s, "permits": {"type": "array", "items": schema_ref("PermitUsage")},
                }),
                &["tenant", "permits"],
            ),
        ),
        (
            "DeadJob",
            object(
                &json!({
                    "job_id": s, "kind": kind, "lane_id": opt_s, "attempt": int, "error": opt_s,
                    "created_at_ms": int, "updated_at_ms": int,
                }),
                &["job_id", "kind", "lane_id", "attempt", "error", "created_at_ms", "updated_at_ms"],
            ),
        ),
        (
            "DeadView",
            object(
                &json!({
                    "tenant": s, "kind": nullable(&kind), "total": int,
                    "jobs": {"type": "array", "items": schema_ref("DeadJob")},
                    "next_offset": opt_int,
                }),
                &["tenant", "kind", "total", "jobs", "next_offset"],
            ),
        ),
        (
            "RetryView",
            object(
                &json!({
                    "job_id": s, "retry_of": s, "kind": kind, "status": status, "lane_id": opt_s,
                }),
                &["job_id", "retry_of", "kind", "status", "lane_id"],
            ),
        ),
        (
            "CancelView",
            object(
                &json!({"job_id": s, "status": status, "lane_id": opt_s}),
                &["job_id", "status", "lane_id"],
            ),
        ),
        (
            "DrainView",
            object(
                &json!({
                    "lane_id": s, "cancelled": int, "job_ids": strings,
                }),
                &["lane_id", "cancelled", "job_ids"],
            ),
        ),
        (
            "TenantLimits",
            closed(
                &json!({
                    "llm": limits, "llm_student": limits, "llm_teacher": limits, "ocr": limits,
                }),
                &[],
            ),
        ),
        (
            "LimitCaps",
            object(
                &json!({
                    "ocr": int, "llm": int, "llm_student": int, "llm_teacher": int,
                }),
                &["ocr", "llm", "llm_student", "llm_teacher"],
            ),
        ),
        (
            "TenantRequest",
            closed(
                &json!({
                    "data_dir": {"type": "string", "description": "Must lie under TENANT_DATA_BASE_DIR when that is set."},
                    "enabled": boolean,
                    "limits": schema_ref("TenantLimits"),
                }),
                &["enabled"],
            ),
        ),
        (
            "TenantView",
            object(
                &json!({
                    "id": s, "source": {"type": "string", "enum": ["env", "registry"]},
                    "enabled": boolean, "running": boolean, "data_dir": s,
                    "limits": schema_ref("TenantLimits"), "effective_limits": schema_ref("LimitCaps"),
                    "created_at_ms": opt_int, "updated_at_ms": opt_int,
                }),
                &["id", "source", "enabled", "running", "data_dir", "limits", "effective_limits"],
            ),
        ),
        (
            "TenantPage",
            object(
                &json!({
                    "tenants": {"type": "array", "items": schema_ref("TenantView")},
                    "next_after": opt_s,
                }),
                &["tenants", "next_after"],
            ),
        ),
        (
            "IssuedKey",
            object(
                &json!({
                    "key_id": s, "tenant": s,
                    "key": {"type": "string", "description": "Shown this once; only its hash is stored."},
                    "created_at_ms": int,
                }),
                &["key_id", "tenant", "key", "created_at_ms"],
            ),
        ),
        (
            "KeyView",
            object(
                &json!({
                    "key_id": s, "tenant": s, "created_at_ms": int, "revoked_at_ms": opt_int,
                }),
                &["key_id", "tenant", "created_at_ms", "revoked_at_ms"],
            ),
        ),
    ];
    Value::Object(entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::{document, schemas};
    use crate::routes::{ROUTES, served_paths};

    #[test]
    fn every_route_in_the_table_is_in_the_document_at_every_path_it_is_served() {
        let doc = document();
        for route in ROUTES {
            for path in served_paths(route) {
                let op = &doc["paths"][&path][route.method.as_str()];
                assert!(op.is_object(), "{} {path} is not in openapi.json", route.method.as_str());
                assert!(op["responses"]["200"].is_object() || op["responses"]["201"].is_object());
            }
        }
        let documented: usize = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|item| item.as_object().map_or(0, serde_json::Map::len))
            .sum();
        let served: usize = ROUTES.iter().map(|r| served_paths(r).len()).sum();
        assert_eq!(documented, served, "openapi.json documents an operation the table does not list");
    }

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "$ref" {
                        out.push(v.as_str().unwrap_or_default().to_owned());
                    } else {
                        refs(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_schema_the_document_refers_to_exists() {
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20, "too few references: {all:?}");
        let schemas = schemas();
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("odd $ref {r}"));
            assert!(schemas[name].is_object(), "openapi.json refers to the missing schema {name}");
        }
    }

    #[test]
    fn every_path_parameter_is_declared_and_operation_ids_are_unique() {
        let doc = document();
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                assert!(ids.insert(op["operationId"].as_str().expect("id").to_owned()), "{method} {path}");
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .expect("parameters")
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let in_path: Vec<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                    .collect();
                assert_eq!(declared, in_path, "{method} {path}");
            }
        }
    }
}
