//! The admin API and tenant auth through the real binary: the admin key, tenants created,
//! replaced and disabled at run time (only that tenant's runtime moves), their data kept apart
//! on disk and in Redis, `TENANT_DATA_BASE_DIR`, bearer keys per tenant, bad input on every admin
//! route, and the registry surviving a restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use laneway_tests::{LanewayProcess, poll_until, student_chat};
use redis_harness::RedisServer;
use reqwest::Method;
use serde_json::{Value, json};

use crate::redis_support::{as_env, redis_env};

const ADMIN_KEY: &str = "admin-key-for-the-scenarios-0123456789";
/// How long a job may take to finish.
const JOB_DEADLINE: Duration = Duration::from_secs(60);

/// Requests with any method and headers (the shared helpers only GET and POST).
#[derive(Debug, Clone)]
struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(server: &LanewayProcess) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Self { client, base: server.base_url().to_owned() }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// An admin call with the right key.
    async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.send(method, path, &[("x-admin-key", ADMIN_KEY)], body).await
    }

    async fn put_tenant(&self, id: &str, body: &Value) -> (u16, Value) {
        self.admin(Method::PUT, &format!("/admin/tenants/{id}"), Some(body)).await
    }

    async fn issue_key(&self, tenant: &str) -> (String, String) {
        let (status, body) = self.admin(Method::POST, &format!("/admin/tenants/{tenant}/keys"), None).await;
        assert_eq!(status, 201, "issue a key for {tenant}: {body}");
        (text(&body, "key_id").to_owned(), text(&body, "key").to_owned())
    }

    /// Submits a chat to `prefix` (with `headers`) and waits until it is done; its reply.
    async fn chat_done(
        &self,
        server: &LanewayProcess,
        prefix: &str,
        headers: &[(&str, &str)],
        who: &str,
    ) -> String {
        let body = student_chat(&format!("req-{who}"), who, &format!("hello from {who}"));
        let (status, accepted) =
            self.send(Method::POST, &format!("{prefix}/chat/start"), headers, Some(&body)).await;
        assert_eq!(status, 200, "chat on {prefix}: {accepted}\n{}", server.context());
        let job = text(&accepted, "job_id").to_owned();
        let view = poll_until(JOB_DEADLINE, || async {
            let (_, view) = self.send(Method::GET, &format!("{prefix}/jobs/{job}"), headers, None).await;
            (text(&view, "status") == "done").then_some(view)
        })
        .await
        .unwrap_or_else(|| panic!("chat {job} on {prefix} did not finish\n{}", server.context()));
        view.pointer("/result/reply").and_then(Value::as_str).unwrap_or_default().to_owned()
    }
}

fn text<'a>(body: &'a Value, name: &str) -> &'a str {
    body.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn enabled() -> Value {
    json!({"enabled": true, "limits": {}})
}

async fn serve(data: &Path, extra: &[(&str, &str)]) -> LanewayProcess {
    let mut env = vec![("TENANT_ADMIN_KEY", ADMIN_KEY), ("CHAT_LANE_DEBOUNCE_MS", "0")];
    env.extend_from_slice(extra);
    LanewayProcess::start(data, &env).await
}

/// Every file under `dir`, relative to it (logs left out).
fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else { continue };
        for entry in read.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    out
}

/// Log lines that are `event` about exactly `tenant` (`tenant=t1`, not `tenant=t10`).
fn log_events(server: &LanewayProcess, event: &str, tenant: &str) -> usize {
    let field = format!("tenant={tenant}");
    server
        .log_text()
        .lines()
        .filter(|l| l.contains(event) && l.split_whitespace().any(|w| w == field))
        .count()
}

/// A refused admin call: what it was, the answer, the status and `field` it must have.
type Case = (&'static str, (u16, Value), u16, Option<&'static str>);

fn assert_refused(
    server: &LanewayProcess,
    what: &str,
    answer: &(u16, Value),
    status: u16,
    field: Option<&str>,
) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{what}: {body}\n{}", server.context());
    assert!(!text(body, "error").is_empty() && !text(body, "detail").is_empty(), "{what}: {body}");
    if let Some(field) = field {
        assert_eq!(body.get("field").and_then(Value::as_str), Some(field), "{what}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_answer_401_without_the_admin_key_and_say_when_none_is_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unconfigured = LanewayProcess::start(&dir.path().join("a"), &[]).await;
    let http = Http::new(&unconfigured);
    for (method, path) in [
        (Method::GET, "/admin/tenants"),
        (Method::PUT, "/admin/tenants/t1"),
        (Method::DELETE, "/admin/tenants/t1"),
        (Method::POST, "/admin/tenants/t1/keys"),
        (Method::DELETE, "/admin/tenants/t1/keys/k1"),
    ] {
        let (status, body) =
            http.send(method.clone(), path, &[("x-admin-key", ADMIN_KEY)], Some(&enabled())).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert_eq!(body, json!({"error": "unauthorized", "detail": "admin key not configured"}));
    }

    let server = serve(&dir.path().join("b"), &[]).await;
    let http = Http::new(&server);
    for (headers, what) in [
        (vec![], "no key"),
        (vec![("x-admin-key", "wrong")], "a wrong key of another length"),
        (vec![("x-admin-key", &ADMIN_KEY[..ADMIN_KEY.len() - 1])], "a prefix of the key"),
        (vec![("x-admin-key", "admin-key-for-the-scenarios-0123456780")], "a wrong key of the same length"),
    ] {
        let answer = http.send(Method::PUT, "/admin/tenants/t1", &headers, Some(&enabled())).await;
        assert_refused(&server, what, &answer, 401, None);
        assert_eq!(text(&answer.1, "error"), "unauthorized");
    }
    let (status, page) = http.admin(Method::GET, "/admin/tenants", None).await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["tenants"].as_array().expect("tenants").iter().map(|t| text(t, "id")).collect();
    assert_eq!(ids, ["default"], "nothing was created by the refused requests");
    assert!(!server.data_dir().join("tenants/t1").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_tenants_serve_at_once_and_keep_their_files_in_disjoint_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let base = dir.path().join("tenant-data");
    let base_str = base.display().to_string();
    let server = serve(&data, &[("TENANT_DATA_BASE_DIR", &base_str)]).await;
    let http = Http::new(&server);
    assert_eq!(http.send(Method::GET, "/t/t1/healthz", &[], None).await.0, 404, "t1 is unknown before");

    let t1_dir = base.join("t1");
    let t2_dir = base.join("nested/t2");
    let (status, t1) =
        http.put_tenant("t1", &json!({"data_dir": t1_dir, "enabled": true, "limits": {"llm": 2}})).await;
    assert_eq!(status, 201, "{t1}\n{}", server.context());
    assert_eq!(t1["running"], json!(true));
    assert_eq!(t1["effective_limits"]["llm"], json!(2));
    let (status, t2) = http.put_tenant("t2", &json!({"data_dir": t2_dir, "enabled": true})).await;
    assert_eq!(status, 201, "{t2}");
    let (status, health) = http.send(Method::GET, "/t/t1/healthz", &[], None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(text(&health, "tenant"), "t1");

    let reply1 = http.chat_done(&server, "/t/t1", &[], "s1").await;
    let reply2 = http.chat_done(&server, "/t/t2", &[], "s2").await;
    assert!(reply1.contains("s1") && reply2.contains("s2"), "{reply1} / {reply2}");
    for (prefix, student) in [("/t/t1", "p1"), ("/t/t2", "p2")] {
        let body = json!({"request_id": format!("prof-{student}"), "student_id": student, "notes": ["n"]});
        let (status, job) =
            http.send(Method::POST, &format!("{prefix}/profile-updates"), &[], Some(&body)).await;
        assert_eq!(status, 200, "{job}");
        let job = text(&job, "job_id").to_owned();
        poll_until(JOB_DEADLINE, || async {
            let (_, v) = http.send(Method::GET, &format!("{prefix}/jobs/{job}"), &[], None).await;
            (text(&v, "status") == "done").then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("profile job {job} did not finish\n{}", server.context()));
    }

    let t1_files = files_under(&t1_dir);
    let t2_files = files_under(&t2_dir);
    assert!(t1_files.contains(Path::new("jobs.db")), "t1's store is in its dir: {t1_files:?}");
    assert!(t1_files.contains(Path::new("profiles/p1.json")), "{t1_files:?}");
    assert!(!t1_files.contains(Path::new("profiles/p2.json")), "{t1_files:?}");
    assert!(t2_files.contains(Path::new("jobs.db")), "{t2_files:?}");
    assert!(t2_files.contains(Path::new("profiles/p2.json")), "{t2_files:?}");
    assert!(!t2_files.contains(Path::new("profiles/p1.json")), "{t2_files:?}");
    assert!(!t1_dir.starts_with(&t2_dir) && !t2_dir.starts_with(&t1_dir));
    let tenants_in_data: BTreeSet<PathBuf> = files_under(&data.join("tenants"))
        .into_iter()
        .filter_map(|p| p.iter().next().map(PathBuf::from))
        .collect();
    assert_eq!(
        tenants_in_data,
        BTreeSet::from([PathBuf::from("default")]),
        "nothing of t1/t2 under DATA_DIR"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_two_created_tenants_keep_disjoint_keys() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let env = redis_env(&redis, &[("TENANT_ADMIN_KEY", ADMIN_KEY), ("CHAT_LANE_DEBOUNCE_MS", "0")]);
    let server = LanewayProcess::start(&dir.path().join("data"), &as_env(&env)).await;
    let http = Http::new(&server);
    for id in ["t1", "t2"] {
        let (status, body) = http.put_tenant(id, &enabled()).await;
        assert_eq!(status, 201, "{body}\n{}", server.context());
    }
    assert!(dir.path().join("data/_system/tenants.db").is_file(), "the registry is local even on Redis");
    let r1 = http.chat_done(&server, "/t/t1", &[], "s1").await;
    let r2 = http.chat_done(&server, "/t/t2", &[], "s2").await;
    assert!(r1.contains("s1") && r2.contains("s2"));

    let keys: Vec<String> = redis.command(&["KEYS", "*"]).lines().map(ToOwned::to_owned).collect();
    let of = |tag: &str| {
        keys.iter().filter(|k| k.starts_with(&format!("lw:{{{tag}}}:"))).cloned().collect::<Vec<_>>()
    };
    let (t1, t2) = (of("t1"), of("t2"));
    assert!(!t1.is_empty() && !t2.is_empty(), "both tenants wrote keys: {keys:?}");
    for key in &keys {
        let tags = ["t1", "t2", "default"].iter().filter(|t| key.contains(&format!("{{{t}}}"))).count();
        assert_eq!(tags, 1, "every key belongs to exactly one tenant: {key}");
    }
    assert!(t1.iter().all(|k| !k.contains("{t2}")) && t2.iter().all(|k| !k.contains("{t1}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_tenant_stops_its_workers_and_answers_404_while_other_tenants_keep_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = serve(&data, &[]).await;
    let http = Http::new(&server);
    for id in ["t1", "t2"] {
        assert_eq!(http.put_tenant(id, &enabled()).await.0, 201);
    }
    http.chat_done(&server, "/t/t1", &[], "before").await;

    let (status, view) = http.admin(Method::DELETE, "/admin/tenants/t1", None).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!((view["enabled"].clone(), view["running"].clone()), (json!(false), json!(false)));
    assert_eq!(
        log_events(&server, "tenant runtime stopped", "t1"),
        1,
        "t1's workers stopped\n{}",
        server.context()
    );
    assert_eq!(log_events(&server, "tenant runtime stopped", "t2"), 0);
    for (method, path) in [(Method::GET, "/t/t1/healthz"), (Method::POST, "/t/t1/chat/start")] {
        let body = student_chat("r-after", "s1", "anyone?");
        let answer = http.send(method, path, &[], Some(&body)).await;
        assert_refused(&server, path, &answer, 404, None);
    }
    let (status, health) = http.send(Method::GET, "/healthz", &[], None).await;
    assert_eq!(status, 200, "a disabled tenant does not make the process unhealthy: {health}");
    assert!(!health["tenants"].as_array().expect("tenants").contains(&json!("t1")), "{health}");
    let reply = http.chat_done(&server, "/t/t2", &[], "other").await;
    assert!(reply.contains("other"), "{reply}");
    assert!(data.join("tenants/t1/jobs.db").is_file(), "t1's data is kept");

    let (status, view) = http.put_tenant("t1", &enabled()).await;
    assert_eq!(status, 200, "enabled again: {view}");
    assert_eq!(http.send(Method::GET, "/t/t1/healthz", &[], None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_tenant_restarts_only_that_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(&dir.path().join("data"), &[("LANEWAY_TENANTS", "acme")]).await;
    let http = Http::new(&server);
    for id in ["t1", "t2"] {
        assert_eq!(http.put_tenant(id, &enabled()).await.0, 201);
    }
    let (status, view) =
        http.put_tenant("t1", &json!({"enabled": true, "limits": {"ocr": 1, "llm": 3}})).await;
    assert_eq!(status, 200, "a replace answers 200: {view}");
    assert_eq!(view["limits"], json!({"llm": 3, "llm_student": null, "llm_teacher": null, "ocr": 1}));
    assert_eq!(view["effective_limits"]["ocr"], json!(1));
    assert_eq!(view["running"], json!(true));
    assert_eq!(log_events(&server, "tenant runtime started", "t1"), 2, "t1 restarted\n{}", server.context());
    assert_eq!(log_events(&server, "tenant runtime stopped", "t1"), 1);
    for other in ["t2", "acme", "default"] {
        assert_eq!(log_events(&server, "tenant runtime started", other), 1, "{other} started once");
        assert_eq!(log_events(&server, "tenant runtime stopped", other), 0, "{other} never stopped");
    }
    http.chat_done(&server, "/t/t1", &[], "after-restart").await;
    http.chat_done(&server, "/t/t2", &[], "untouched").await;

    let (status, same) =
        http.put_tenant("t1", &json!({"enabled": true, "limits": {"ocr": 1, "llm": 3}})).await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(log_events(&server, "tenant runtime started", "t1"), 2, "the same content restarts nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_outside_tenant_data_base_dir_is_refused_naming_data_dir_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base");
    let outside = dir.path().join("outside");
    let base_str = base.display().to_string();
    let server = serve(&dir.path().join("data"), &[("TENANT_DATA_BASE_DIR", &base_str)]).await;
    let http = Http::new(&server);
    for (data_dir, what) in [
        (outside.join("t1").display().to_string(), "outside the base"),
        (format!("{base_str}/../outside/t1"), "a .. escape"),
        (String::new(), "empty"),
    ] {
        let answer = http.put_tenant("t1", &json!({"data_dir": data_dir, "enabled": true})).await;
        assert_refused(&server, what, &answer, 400, Some("data_dir"));
    }
    let answer = http.put_tenant("t1", &enabled()).await;
    assert_refused(
        &server,
        "the default DATA_DIR/tenants/t1 is outside the base",
        &answer,
        400,
        Some("data_dir"),
    );
    assert!(text(&answer.1, "detail").contains("TENANT_DATA_BASE_DIR"), "the rule is named: {}", answer.1);

    let (_, page) = http.admin(Method::GET, "/admin/tenants", None).await;
    assert_eq!(page["tenants"].as_array().expect("tenants").len(), 1, "only default: {page}");
    assert!(!outside.exists(), "nothing written outside the base");
    assert!(!dir.path().join("data/tenants/t1").exists());
    assert_eq!(http.send(Method::GET, "/t/t1/healthz", &[], None).await.0, 404);

    let (status, body) = http.put_tenant("t1", &json!({"data_dir": base.join("t1"), "enabled": true})).await;
    assert_eq!(status, 201, "inside the base: {body}");
    assert!(base.join("t1/jobs.db").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_keys_missing_wrong_tenant_revoked_and_valid_answer_401_403_401_and_200() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(&dir.path().join("data"), &[("AUTH_REQUIRED", "1")]).await;
    let http = Http::new(&server);
    for id in ["t1", "t2"] {
        assert_eq!(http.put_tenant(id, &enabled()).await.0, 201);
    }
    let (key1_id, key1) = http.issue_key("t1").await;
    let (_, key2) = http.issue_key("t2").await;
    let (_, default_key) = http.issue_key("default").await;
    let bearer = |k: &str| format!("Bearer {k}");
    let (b1, b2, bd) = (bearer(&key1), bearer(&key2), bearer(&default_key));

    let get = |headers: Vec<(&'static str, String)>, path: &'static str| {
        let http = http.clone();
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http.send(Method::GET, path, &headers, None).await
        }
    };
    let answer = get(vec![], "/t/t1/healthz").await;
    assert_refused(&server, "no key", &answer, 401, None);
    let answer = get(vec![("authorization", b2.clone())], "/t/t1/healthz").await;
    assert_refused(&server, "t2's key on t1", &answer, 403, None);
    let answer = get(vec![("authorization", "Bearer lwk_made-up".into())], "/t/t1/healthz").await;
    assert_refused(&server, "an unknown key", &answer, 401, None);
    let answer = get(vec![("authorization", format!("Basic {key1}"))], "/t/t1/healthz").await;
    assert_refused(&server, "not a bearer", &answer, 401, None);
    assert_eq!(get(vec![("authorization", b1.clone())], "/t/t1/healthz").await.0, 200, "t1's key on t1");
    assert_eq!(get(vec![("authorization", b2.clone())], "/t/t2/healthz").await.0, 200, "t2's key on t2");

    let answer = get(vec![], "/jobs/j-1").await;
    assert_refused(&server, "the default tenant's routes need its key too", &answer, 401, None);
    assert_eq!(get(vec![("authorization", b1.clone())], "/jobs/j-1").await.0, 403);
    assert_eq!(
        get(vec![("authorization", bd.clone())], "/jobs/j-1").await.0,
        404,
        "passes auth, no such job"
    );
    assert_eq!(get(vec![], "/healthz").await.0, 200, "the process's /healthz is open");
    assert_eq!(
        http.admin(Method::GET, "/admin/tenants", None).await.0,
        200,
        "admin routes need only X-Admin-Key"
    );
    let headers = [("authorization", b1.as_str())];
    let reply = http.chat_done(&server, "/t/t1", &headers, "authed").await;
    assert!(reply.contains("authed"));

    let (status, revoked) =
        http.admin(Method::DELETE, &format!("/admin/tenants/t1/keys/{key1_id}"), None).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at_ms"].is_u64(), "{revoked}");
    let answer = get(vec![("authorization", b1.clone())], "/t/t1/healthz").await;
    assert_refused(&server, "a revoked key", &answer, 401, None);
    assert_eq!(
        get(vec![("authorization", b2.clone())], "/t/t2/healthz").await.0,
        200,
        "other keys still work"
    );

    let log = server.log_text();
    for secret in [&key1, &key2, &default_key] {
        assert!(!log.contains(secret.as_str()), "a key appears in the log\n{}", server.context());
    }
    assert!(!log.contains(ADMIN_KEY), "the admin key appears in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_admin_route_is_refused_naming_the_field_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let elsewhere = dir.path().join("elsewhere");
    let server = serve(&data, &[]).await;
    let http = Http::new(&server);
    assert_eq!(http.put_tenant("t0", &enabled()).await.0, 201);

    let put = |id: &'static str, body: Value| {
        let http = http.clone();
        async move { http.put_tenant(id, &body).await }
    };
    let escape = format!("{}/../elsewhere/t1", data.display());
    let cases: Vec<Case> = vec![
        ("a bad tenant id", put("bad:id", enabled()).await, 400, Some("id")),
        ("enabled missing", put("t1", json!({"limits": {}})).await, 400, Some("enabled")),
        ("enabled not a bool", put("t1", json!({"enabled": "yes"})).await, 400, Some("enabled")),
        (
            "a zero limit",
            put("t1", json!({"enabled": true, "limits": {"llm": 0}})).await,
            400,
            Some("limits.llm"),
        ),
        (
            "a negative limit",
            put("t1", json!({"enabled": true, "limits": {"ocr": -1}})).await,
            400,
            Some("limits.ocr"),
        ),
        (
            "an unknown limit",
            put("t1", json!({"enabled": true, "limits": {"gpu": 1}})).await,
            400,
            Some("limits.gpu"),
        ),
        ("an unknown field", put("t1", json!({"enabled": true, "colour": 1})).await, 400, Some("colour")),
        (
            "an empty data_dir",
            put("t1", json!({"enabled": true, "data_dir": ""})).await,
            400,
            Some("data_dir"),
        ),
        (
            "a .. data_dir",
            put("t1", json!({"enabled": true, "data_dir": escape})).await,
            400,
            Some("data_dir"),
        ),
        (
            "data_dir inside another tenant's",
            put("t1", json!({"enabled": true, "data_dir": data.join("tenants/t0/x")})).await,
            400,
            Some("data_dir"),
        ),
        ("an env tenant", put("default", json!({"enabled": false})).await, 409, None),
        ("a zero page", http.admin(Method::GET, "/admin/tenants?limit=0", None).await, 400, Some("limit")),
        ("a word page", http.admin(Method::GET, "/admin/tenants?limit=ten", None).await, 400, Some("limit")),
        ("a bad cursor", http.admin(Method::GET, "/admin/tenants?after=a:b", None).await, 400, Some("after")),
        (
            "an unknown parameter",
            http.admin(Method::GET, "/admin/tenants?colour=1", None).await,
            400,
            Some("colour"),
        ),
        ("delete a bad id", http.admin(Method::DELETE, "/admin/tenants/bad:id", None).await, 400, Some("id")),
        (
            "delete an unknown tenant",
            http.admin(Method::DELETE, "/admin/tenants/nope", None).await,
            404,
            None,
        ),
        ("delete an env tenant", http.admin(Method::DELETE, "/admin/tenants/default", None).await, 409, None),
        (
            "a key for a bad id",
            http.admin(Method::POST, "/admin/tenants/bad:id/keys", None).await,
            400,
            Some("id"),
        ),
        (
            "a key for an unknown tenant",
            http.admin(Method::POST, "/admin/tenants/nope/keys", None).await,
            404,
            None,
        ),
        (
            "revoke a bad key id",
            http.admin(Method::DELETE, "/admin/tenants/t0/keys/bad!id", None).await,
            400,
            Some("key_id"),
        ),
        (
            "revoke a bad tenant id",
            http.admin(Method::DELETE, "/admin/tenants/a:b/keys/k1", None).await,
            400,
            Some("id"),
        ),
        (
            "revoke an unknown key",
            http.admin(Method::DELETE, "/admin/tenants/t0/keys/k00", None).await,
            404,
            None,
        ),
    ];
    for (what, answer, status, field) in &cases {
        assert_refused(&server, what, answer, *status, *field);
    }
    let malformed = http
        .client
        .put(format!("{}/admin/tenants/t1", http.base))
        .header("x-admin-key", ADMIN_KEY)
        .header("content-type", "application/json")
        .body("{\"enabled\": tru")
        .send()
        .await
        .expect("send");
    assert_eq!(malformed.status().as_u16(), 400, "malformed JSON");

    let (_, page) = http.admin(Method::GET, "/admin/tenants", None).await;
    let listed: Vec<(&str, bool)> = page["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| (text(t, "id"), t["enabled"].as_bool().unwrap_or_default()))
        .collect();
    assert_eq!(listed, [("default", true), ("t0", true)], "nothing was written by a refusal");
    let dirs: BTreeSet<String> = std::fs::read_dir(data.join("tenants"))
        .expect("tenants dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, BTreeSet::from(["default".to_owned(), "t0".to_owned()]));
    assert!(!elsewhere.exists());
    assert!(!data.join("tenants/t0/x").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_and_its_keys_survive_a_restart_of_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = serve(&data, &[("AUTH_REQUIRED", "1")]).await;
    let http = Http::new(&server);
    assert_eq!(http.put_tenant("t1", &json!({"enabled": true, "limits": {"llm": 2}})).await.0, 201);
    assert_eq!(http.put_tenant("t2", &json!({"enabled": false})).await.0, 201);
    let (_, key) = http.issue_key("t1").await;
    let auth = format!("Bearer {key}");
    http.chat_done(&server, "/t/t1", &[("authorization", &auth)], "before").await;
    assert!(server.terminate().await.success(), "graceful stop\n{}", server.context());

    let server = serve(&data, &[("AUTH_REQUIRED", "1")]).await;
    let http = Http::new(&server);
    let (status, health) = http.send(Method::GET, "/t/t1/healthz", &[("authorization", &auth)], None).await;
    assert_eq!(status, 200, "t1 served after the restart with its old key: {health}\n{}", server.context());
    assert_eq!(http.send(Method::GET, "/t/t2/healthz", &[("authorization", &auth)], None).await.0, 403);
    let (_, page) = http.admin(Method::GET, "/admin/tenants?limit=2", None).await;
    let first: Vec<&str> =
        page["tenants"].as_array().expect("tenants").iter().map(|t| text(t, "id")).collect();
    assert_eq!(first, ["default", "t1"], "{page}");
    assert_eq!(page["tenants"][1]["effective_limits"]["llm"], json!(2));
    assert_eq!(text(&page, "next_after"), "t1");
    let (_, rest) = http.admin(Method::GET, "/admin/tenants?limit=2&after=t1", None).await;
    assert_eq!(rest["tenants"][0]["id"], json!("t2"));
    assert_eq!(rest["tenants"][0]["enabled"], json!(false), "t2 is still disabled");
    assert_eq!(rest["next_after"], Value::Null);
    http.chat_done(&server, "/t/t1", &[("authorization", &auth)], "after").await;
}
