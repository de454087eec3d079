//! Bad input at the HTTP API of the real binary: every refusal has the status that fits, an
//! `error` code and a `detail` (and a `field`, where the product names one) saying what is wrong,
//! and leaves nothing behind: no job, no idempotency key, no lane entry, no tenant directory.
//!
//! "Nothing behind" is checked through the API: after the refusals, each refused request's
//! `request_id` is sent again, valid, into the lane it aimed at, and must get a new job (a
//! leftover key would answer with an earlier job) alone in its lane (a leftover job would be in
//! the lane: accepted chats never finish here, the responder is slowed to minutes).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use laneway_tests::{LanewayProcess, poll_until, student_chat};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Tenants served: `default` at `/` and `t1` under `/t/t1/`.
const TENANT_PREFIXES: [&str; 2] = ["", "/t/t1"];

/// A process whose accepted chats stay in their lanes for the whole test.
async fn start() -> (TempDir, LanewayProcess) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = LanewayProcess::start(
        &dir.path().join("data"),
        &[("LANEWAY_TENANTS", "t1"), ("CHAT_RESPONDER_DELAY_MS", "600000"), ("CHAT_LANE_DEBOUNCE_MS", "0")],
    )
    .await;
    (dir, server)
}

/// What a refusal must look like.
#[derive(Debug, Clone)]
struct Refusal {
    status: u16,
    error: &'static str,
    /// What the answer's `field` must be.
    field: FieldRule,
    /// Words the `detail` must contain.
    detail: Vec<String>,
}

/// What the `field` of a refusal must be.
#[derive(Debug, Clone)]
enum FieldRule {
    /// No `field`: the problem is not one field's (a route, a tenant that does not exist, ...).
    Absent,
    /// Exactly this field.
    Is(String),
    /// Not checked: the product's choice is debatable, the `detail` is checked instead.
    Unpinned,
}

fn refusal(status: u16, error: &'static str, field: Option<&str>, detail: &[&str]) -> Refusal {
    let field = field.map_or(FieldRule::Absent, |f| FieldRule::Is(f.to_owned()));
    Refusal { status, error, field, detail: detail.iter().map(|d| (*d).to_owned()).collect() }
}

/// 400 naming `field`.
fn bad_field(field: &str, detail: &[&str]) -> Refusal {
    refusal(400, "bad_request", Some(field), detail)
}

/// 400 for a body that is JSON but not of the request's shape, naming the field serde names.
fn bad_shape(field: &str, detail: &[&str]) -> Refusal {
    bad_field(field, detail)
}

/// 400 for a body that is JSON but not of the request's shape, whatever `field` it names.
fn bad_shape_unpinned(detail: &[&str]) -> Refusal {
    Refusal { field: FieldRule::Unpinned, ..refusal(400, "bad_request", None, detail) }
}

fn assert_refused(server: &LanewayProcess, what: &str, answer: &(u16, Value), expected: &Refusal) {
    let (status, body) = answer;
    let context = || format!("{what}: got {status} {body}\n{}", server.context());
    assert_eq!(*status, expected.status, "wrong status; {}", context());
    assert_eq!(body.get("error").and_then(Value::as_str), Some(expected.error), "wrong error; {}", context());
    let detail = body.get("detail").and_then(Value::as_str).unwrap_or_default();
    assert!(!detail.trim().is_empty(), "no detail; {}", context());
    for word in &expected.detail {
        assert!(detail.contains(word.as_str()), "the detail does not say {word:?}; {}", context());
    }
    let field = body.get("field").and_then(Value::as_str);
    match &expected.field {
        FieldRule::Absent => assert_eq!(field, None, "a field where none fits; {}", context()),
        FieldRule::Is(name) => assert_eq!(field, Some(name.as_str()), "wrong field; {}", context()),
        FieldRule::Unpinned => {}
    }
}

/// A request body: JSON, or raw bytes with a content type.
#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

async fn post(server: &LanewayProcess, path: &str, body: &Body) -> (u16, Value) {
    match body {
        Body::Json(value) => server.post_json(path, value).await,
        Body::Raw(content_type, bytes) => server.post_raw(path, content_type, bytes.clone()).await,
    }
}

/// A refused chat start, and the valid request that must succeed afterwards as if the refused
/// one had never been sent: the same `request_id` (a fresh one when the refused id was itself
/// invalid or absent) in the lane of `student`.
#[derive(Debug, Clone)]
struct ChatCase {
    label: String,
    body: Body,
    expected: Refusal,
    request_id: String,
    student: String,
}

fn chat_case(label: &str, body: Body, expected: Refusal, request_id: &str, student: &str) -> ChatCase {
    ChatCase {
        label: label.to_owned(),
        body,
        expected,
        request_id: request_id.to_owned(),
        student: student.to_owned(),
    }
}

/// A valid chat body with `edit` applied.
fn edited_chat(
    request_id: &str,
    student: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Body {
    let mut body = student_chat(request_id, student, &format!("refused message of {request_id}"));
    edit(body.as_object_mut().expect("a chat body is an object"));
    Body::Json(body)
}

fn chat_cases() -> Vec<ChatCase> {
    let forbidden = [("braces", "{x}"), ("star", "a*"), ("space", "a b")];
    let mut cases = vec![
        chat_case(
            "malformed JSON",
            Body::Raw("application/json", br#"{"request_id": "bad-json", "role": "student", "#.to_vec()),
            refusal(400, "bad_request", None, &["JSON"]),
            "bad-json",
            "s-json",
        ),
        chat_case(
            "empty body",
            Body::Raw("application/json", Vec::new()),
            refusal(400, "bad_request", None, &["JSON"]),
            "bad-empty-body",
            "s-empty-body",
        ),
        chat_case(
            "not JSON content type",
            Body::Raw("text/plain", student_chat("bad-ctype", "s-ctype", "hello").to_string().into_bytes()),
            refusal(415, "bad_request", None, &["Content-Type"]),
            "bad-ctype",
            "s-ctype",
        ),
        chat_case(
            "a JSON array",
            Body::Json(json!([student_chat("bad-array", "s-array", "hello")])),
            bad_shape_unpinned(&["invalid type"]),
            "bad-array",
            "s-array",
        ),
        chat_case(
            "missing messages",
            edited_chat("bad-no-messages", "s-no-messages", |b| {
                b.remove("messages");
            }),
            bad_shape("messages", &["missing field `messages`"]),
            "bad-no-messages",
            "s-no-messages",
        ),
        chat_case(
            "missing request_id",
            edited_chat("unused", "s-no-request", |b| {
                b.remove("request_id");
            }),
            bad_shape("request_id", &["missing field `request_id`"]),
            "fresh-no-request",
            "s-no-request",
        ),
        chat_case(
            "empty messages",
            edited_chat("bad-empty-messages", "s-empty-messages", |b| {
                b.insert("messages".into(), json!([]));
            }),
            bad_field("messages", &["at least one message"]),
            "bad-empty-messages",
            "s-empty-messages",
        ),
        chat_case(
            "oversized message",
            edited_chat("bad-big-message", "s-big-message", |b| {
                b.insert("messages".into(), json!([{"role": "user", "content": "x".repeat(32 * 1024 + 1)}]));
            }),
            bad_field("messages[0].content", &["32769 bytes", "32768"]),
            "bad-big-message",
            "s-big-message",
        ),
        chat_case(
            "blank message",
            edited_chat("bad-blank-message", "s-blank-message", |b| {
                b.insert(
                    "messages".into(),
                    json!([{"role": "user", "content": "ok"}, {"role": "user", "content": " \n"}]),
                );
            }),
            bad_field("messages[1].content", &["must not be empty"]),
            "bad-blank-message",
            "s-blank-message",
        ),
        chat_case(
            "unknown message role",
            edited_chat("bad-message-role", "s-message-role", |b| {
                b.insert("messages".into(), json!([{"role": "robot", "content": "beep"}]));
            }),
            bad_field("messages[0].role", &["user, assistant or system"]),
            "bad-message-role",
            "s-message-role",
        ),
        chat_case(
            "10 kB request_id",
            edited_chat(&"r".repeat(10_000), "s-long-request", |_| {}),
            bad_field("request_id", &["10000 bytes"]),
            "fresh-long-request",
            "s-long-request",
        ),
        chat_case(
            "wrong type of messages",
            edited_chat("bad-type-messages", "s-type-messages", |b| {
                b.insert("messages".into(), json!("hello"));
            }),
            bad_shape("messages", &["messages", "invalid type"]),
            "bad-type-messages",
            "s-type-messages",
        ),
        chat_case(
            "wrong type of request_id",
            edited_chat("unused", "s-type-request", |b| {
                b.insert("request_id".into(), json!(42));
            }),
            bad_shape("request_id", &["request_id", "invalid type"]),
            "fresh-type-request",
            "s-type-request",
        ),
        chat_case(
            "unknown field",
            edited_chat("bad-unknown-field", "s-unknown-field", |b| {
                b.insert("colour".into(), json!("blue"));
            }),
            bad_shape("colour", &["unknown field `colour`"]),
            "bad-unknown-field",
            "s-unknown-field",
        ),
        chat_case(
            "unknown field in a message",
            edited_chat("bad-message-field", "s-message-field", |b| {
                b.insert("messages".into(), json!([{"role": "user", "content": "hi", "mood": "happy"}]));
            }),
            bad_shape_unpinned(&["messages[0]", "unknown field `mood`"]),
            "bad-message-field",
            "s-message-field",
        ),
        chat_case(
            "message without content",
            edited_chat("bad-message-content", "s-message-content", |b| {
                b.insert("messages".into(), json!([{"role": "user"}]));
            }),
            bad_shape_unpinned(&["messages[0]", "missing field `content`"]),
            "bad-message-content",
            "s-message-content",
        ),
        chat_case(
            "message content of the wrong type",
            edited_chat("bad-content-type", "s-content-type", |b| {
                b.insert("messages".into(), json!([{"role": "user", "content": 5}]));
            }),
            bad_shape("messages[0].content", &["invalid type"]),
            "bad-content-type",
            "s-content-type",
        ),
        chat_case(
            "student without student_id",
            edited_chat("bad-no-student", "unused", |b| {
                b.remove("student_id");
            }),
            bad_field("student_id", &["required when role is student"]),
            "bad-no-student",
            "s-no-student",
        ),
        chat_case(
            "teacher without teacher_id",
            edited_chat("bad-no-teacher", "unused", |b| {
                b.remove("student_id");
                b.insert("role".into(), json!("teacher"));
            }),
            bad_field("teacher_id", &["required when role is teacher"]),
            "bad-no-teacher",
            "s-no-teacher",
        ),
    ];
    for (name, value) in forbidden {
        cases.push(chat_case(
            &format!("request_id with {name}"),
            edited_chat(value, &format!("s-request-{name}"), |_| {}),
            bad_field("request_id", &["forbidden character"]),
            &format!("fresh-request-{name}"),
            &format!("s-request-{name}"),
        ));
        cases.push(chat_case(
            &format!("lane_id with {name}"),
            edited_chat(&format!("bad-lane-{name}"), &format!("s-lane-{name}"), |b| {
                b.insert("lane_id".into(), json!(value));
            }),
            bad_field("lane_id", &["forbidden character"]),
            &format!("bad-lane-{name}"),
            &format!("s-lane-{name}"),
        ));
        cases.push(chat_case(
            &format!("student_id with {name}"),
            edited_chat(&format!("bad-student-{name}"), value, |_| {}),
            bad_field("student_id", &["[A-Za-z0-9_.@-]"]),
            &format!("bad-student-{name}"),
            &format!("s-student-{name}"),
        ));
    }
    cases
}

/// Sends `student`'s valid chat with `request_id` and checks it is a new job, alone in its lane;
/// then sends it again and checks it is the same job. Returns the job id.
async fn assert_fresh_chat(
    server: &LanewayProcess,
    prefix: &str,
    request_id: &str,
    student: &str,
    seen: &mut BTreeSet<String>,
) -> String {
    let body = student_chat(request_id, student, &format!("valid message of {request_id}"));
    let path = format!("{prefix}/chat/start");
    let (status, answer) = server.post_json(&path, &body).await;
    let context = || format!("{path} {request_id} in the lane of {student}: {answer}\n{}", server.context());
    assert_eq!(status, 200, "a valid chat was refused; {}", context());
    assert_eq!(answer["status"], "queued", "{}", context());
    assert_eq!(answer["debounced"], false, "{}", context());
    assert_eq!(answer["lane_id"], format!("student:{student}:main"), "{}", context());
    assert_eq!(
        (&answer["lane_queue_size"], &answer["lane_queue_position"], &answer["lane_active"]),
        (&json!(1), &json!(0), &json!(true)),
        "the lane was not empty before this job: a refused request left a job in it; {}",
        context()
    );
    let job_id = answer["job_id"].as_str().unwrap_or_default().to_owned();
    assert!(
        seen.insert(job_id.clone()),
        "request {request_id} answered with an earlier job: a refused request left its key; {}",
        context()
    );
    let (status, again) = server.post_json(&path, &body).await;
    assert_eq!(
        (status, &again["job_id"]),
        (200, &json!(job_id)),
        "not idempotent: {again}\n{}",
        server.context()
    );
    job_id
}

/// The tenant directories under `DATA_DIR/tenants`.
fn tenant_dirs(data_dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(data_dir.join("tenants"))
        .expect("DATA_DIR/tenants exists")
        .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn assert_only_configured_tenants(server: &LanewayProcess) {
    let dirs = tenant_dirs(server.data_dir());
    let expected: BTreeSet<String> = ["default", "t1"].into_iter().map(str::to_owned).collect();
    assert_eq!(dirs, expected, "a refused request created a tenant directory\n{}", server.context());
}

#[tokio::test]
async fn chat_start_refuses_every_malformed_body_and_keeps_no_job_or_key() {
    let (_dir, server) = start().await;
    let cases = chat_cases();
    for prefix in TENANT_PREFIXES {
        for case in &cases {
            let answer = post(&server, &format!("{prefix}/chat/start"), &case.body).await;
            assert_refused(&server, &format!("{prefix}/chat/start, {}", case.label), &answer, &case.expected);
        }
    }
    // The same request ids in the two tenants are two jobs: keys are per tenant.
    let mut seen = BTreeSet::new();
    for prefix in TENANT_PREFIXES {
        for case in &cases {
            assert_fresh_chat(&server, prefix, &case.request_id, &case.student, &mut seen).await;
        }
    }
    assert_only_configured_tenants(&server);
}

#[tokio::test]
async fn unknown_and_malformed_tenants_are_refused_before_anything_is_written() {
    let (_dir, server) = start().await;
    let long = "t".repeat(65);
    let unknown = |name: &str| refusal(404, "not_found", None, &["unknown tenant", name]);
    let malformed = |detail: &str| refusal(400, "bad_request", Some("tenant_id"), &[detail]);
    let tenants: Vec<(String, Refusal)> = vec![
        ("nope".into(), unknown("nope")),
        ("T1".into(), unknown("T1")),
        ("%7Bx%7D".into(), malformed("forbidden character '{'")),
        ("a%2Ab".into(), malformed("forbidden character '*'")),
        ("a%20b".into(), malformed("forbidden character ' '")),
        ("a%2Fb".into(), malformed("forbidden character '/'")),
        ("-lead".into(), malformed("must start with a letter or digit")),
        (long.clone(), malformed("65 bytes long")),
    ];
    for (k, (tenant, expected)) in tenants.iter().enumerate() {
        let routes = [
            (
                "chat/start",
                Body::Json(student_chat(&format!("tenant-chat-{k}"), &format!("s-tenant-{k}"), "hi")),
            ),
            (
                "uploads",
                Body::Json(
                    json!({"request_id": format!("tenant-upload-{k}"), "filename": "a.md", "content": "# A"}),
                ),
            ),
            (
                "exams",
                Body::Json(json!({
                    "request_id": format!("tenant-exam-{k}"),
                    "filename": "e.csv",
                    "csv": "student_id,q1\ns1,1\n",
                })),
            ),
            (
                "profile-updates",
                Body::Json(
                    json!({"request_id": format!("tenant-profile-{k}"), "student_id": "s1", "notes": ["n"]}),
                ),
            ),
        ];
        for (route, body) in &routes {
            let path = format!("/t/{tenant}/{route}");
            let answer = post(&server, &path, body).await;
            assert_refused(&server, &path, &answer, expected);
        }
        for path in [
            format!("/t/{tenant}/healthz"),
            format!("/t/{tenant}/chat/status?job_id=j-1"),
            format!("/t/{tenant}/jobs/j-1"),
        ] {
            let answer = server.get(&path).await;
            assert_refused(&server, &path, &answer, expected);
        }
    }
    assert_only_configured_tenants(&server);
    let mut seen = BTreeSet::new();
    for prefix in TENANT_PREFIXES {
        for k in 0..tenants.len() {
            assert_fresh_chat(
                &server,
                prefix,
                &format!("tenant-chat-{k}"),
                &format!("s-tenant-{k}"),
                &mut seen,
            )
            .await;
            let body =
                json!({"request_id": format!("tenant-upload-{k}"), "filename": "a.md", "content": "# A"});
            assert_fresh_job(&server, &format!("{prefix}/uploads"), &body, "upload", &mut seen).await;
        }
    }
}

/// Sends a valid non-chat submit and checks it is a new job of `kind`; then sends it again and
/// checks it is the same job.
async fn assert_fresh_job(
    server: &LanewayProcess,
    path: &str,
    body: &Value,
    kind: &str,
    seen: &mut BTreeSet<String>,
) -> String {
    let (status, answer) = server.post_json(path, body).await;
    let context = || format!("{path} {body:.200}: {answer}\n{}", server.context());
    assert_eq!(status, 200, "a valid submit was refused; {}", context());
    assert_eq!((&answer["status"], &answer["kind"]), (&json!("queued"), &json!(kind)), "{}", context());
    let job_id = answer["job_id"].as_str().unwrap_or_default().to_owned();
    assert!(
        seen.insert(job_id.clone()),
        "answered with an earlier job: a refused request left its key; {}",
        context()
    );
    let (status, again) = server.post_json(path, body).await;
    assert_eq!(
        (status, &again["job_id"]),
        (200, &json!(job_id)),
        "not idempotent: {again}\n{}",
        server.context()
    );
    job_id
}

#[tokio::test]
async fn status_and_job_lookups_refuse_missing_malformed_and_unknown_ids() {
    let (_dir, server) = start().await;
    let mut seen = BTreeSet::new();
    let chat = assert_fresh_chat(&server, "", "lookup-chat", "s-lookup", &mut seen).await;
    let upload_body = json!({"request_id": "lookup-upload", "filename": "a.md", "content": "# A"});
    let upload = assert_fresh_job(&server, "/uploads", &upload_body, "upload", &mut seen).await;
    let long = "j".repeat(10_000);
    for prefix in TENANT_PREFIXES {
        let mut cases: Vec<(String, Refusal)> = vec![
            ("/chat/status".into(), bad_field("job_id", &["required"])),
            ("/chat/status?job_id=".into(), bad_field("job_id", &["is empty"])),
            ("/chat/status?job_id=%7Bx%7D".into(), bad_field("job_id", &["forbidden character '{'"])),
            ("/chat/status?job_id=a%2Ab".into(), bad_field("job_id", &["forbidden character '*'"])),
            ("/chat/status?job_id=a%20b".into(), bad_field("job_id", &["forbidden character ' '"])),
            (format!("/chat/status?job_id={long}"), bad_field("job_id", &["10000 bytes long"])),
            (
                "/chat/status?job_id=j-a&job_id=j-b".into(),
                refusal(400, "bad_request", None, &["query", "job_id"]),
            ),
            ("/chat/status?job_id=j-unknown".into(), refusal(404, "not_found", None, &["j-unknown"])),
            ("/jobs/j-unknown".into(), refusal(404, "not_found", None, &["j-unknown"])),
            ("/jobs/%7Bx%7D".into(), bad_field("job_id", &["forbidden character '{'"])),
            ("/jobs/a%20b".into(), bad_field("job_id", &["forbidden character ' '"])),
            (format!("/jobs/{long}"), bad_field("job_id", &["10000 bytes long"])),
            // An upload is not a chat job.
            (format!("/chat/status?job_id={upload}"), refusal(404, "not_found", None, &[upload.as_str()])),
        ];
        if !prefix.is_empty() {
            // Another tenant's jobs are unknown here.
            cases.push((
                format!("/chat/status?job_id={chat}"),
                refusal(404, "not_found", None, &[chat.as_str()]),
            ));
            cases.push((format!("/jobs/{chat}"), refusal(404, "not_found", None, &[chat.as_str()])));
            cases.push((format!("/jobs/{upload}"), refusal(404, "not_found", None, &[upload.as_str()])));
        }
        for (path, expected) in cases {
            let path = format!("{prefix}{path}");
            let answer = server.get(&path).await;
            assert_refused(&server, &format!("GET {path:.120}"), &answer, &expected);
        }
    }
    // The lookups of the default tenant's own jobs still answer.
    let (status, view) = server.get(&format!("/chat/status?job_id={chat}")).await;
    assert_eq!((status, &view["job_id"]), (200, &json!(chat)), "{view}\n{}", server.context());
    let (status, view) = server.get(&format!("/jobs/{upload}")).await;
    assert_eq!((status, &view["kind"]), (200, &json!("upload")), "{view}\n{}", server.context());
}

/// A refused document submit and the valid one that must then be a new job.
#[derive(Debug, Clone)]
struct DocumentCase {
    label: &'static str,
    route: &'static str,
    kind: &'static str,
    body: Value,
    expected: Refusal,
    valid: Value,
}

fn upload(request_id: &str) -> Value {
    json!({"request_id": request_id, "filename": "hw.md", "content": "# Homework\n1. Why?"})
}

fn exam(request_id: &str) -> Value {
    json!({"request_id": request_id, "filename": "e.csv", "csv": "student_id,q1\ns1,3\n"})
}

fn document_cases() -> Vec<DocumentCase> {
    let profile =
        |request_id: &str| json!({"request_id": request_id, "student_id": "s1", "notes": ["likes maths"]});
    let with = |mut body: Value, key: &str, value: Value| {
        body[key] = value;
        body
    };
    let without = |mut body: Value, key: &str| {
        body.as_object_mut().expect("object").remove(key);
        body
    };
    let case = |label, route, kind, body, expected, valid| DocumentCase {
        label,
        route,
        kind,
        body,
        expected,
        valid,
    };
    vec![
        case(
            "empty upload",
            "/uploads",
            "upload",
            with(upload("up-empty"), "content", json!("")),
            bad_field("content", &["must not be empty"]),
            upload("up-empty"),
        ),
        case(
            "blank upload",
            "/uploads",
            "upload",
            with(upload("up-blank"), "content", json!(" \n\t")),
            bad_field("content", &["must not be empty"]),
            upload("up-blank"),
        ),
        case(
            "oversized upload",
            "/uploads",
            "upload",
            with(upload("up-big"), "content", json!("x".repeat(2 * 1024 * 1024 + 1))),
            bad_field("content", &["2097153 bytes", "2097152"]),
            upload("up-big"),
        ),
        case(
            "file name with a slash",
            "/uploads",
            "upload",
            with(upload("up-slash"), "filename", json!("a/b.md")),
            bad_field("filename", &["path separators"]),
            upload("up-slash"),
        ),
        case(
            "file name climbing up",
            "/uploads",
            "upload",
            with(upload("up-dotdot"), "filename", json!("../../etc/passwd")),
            bad_field("filename", &["path separators"]),
            upload("up-dotdot"),
        ),
        case(
            "file name with a backslash",
            "/uploads",
            "upload",
            with(upload("up-backslash"), "filename", json!("..\\x.md")),
            bad_field("filename", &["path separators"]),
            upload("up-backslash"),
        ),
        case(
            "file name with a NUL",
            "/uploads",
            "upload",
            with(upload("up-nul"), "filename", json!("a\u{0}.md")),
            bad_field("filename", &["path separators"]),
            upload("up-nul"),
        ),
        case(
            "empty file name",
            "/uploads",
            "upload",
            with(upload("up-noname"), "filename", json!("")),
            bad_field("filename", &["must not be empty"]),
            upload("up-noname"),
        ),
        case(
            "long file name",
            "/uploads",
            "upload",
            with(upload("up-longname"), "filename", json!("f".repeat(256))),
            bad_field("filename", &["256 bytes"]),
            upload("up-longname"),
        ),
        case(
            "upload without content",
            "/uploads",
            "upload",
            without(upload("up-missing"), "content"),
            bad_shape("content", &["missing field `content`"]),
            upload("up-missing"),
        ),
        case(
            "upload with a bad request_id",
            "/uploads",
            "upload",
            upload("a b"),
            bad_field("request_id", &["forbidden character"]),
            upload("up-fresh"),
        ),
        case(
            "exam without csv",
            "/exams",
            "exam",
            without(exam("ex-missing"), "csv"),
            bad_shape("csv", &["missing field `csv`"]),
            exam("ex-missing"),
        ),
        case(
            "empty exam",
            "/exams",
            "exam",
            with(exam("ex-empty"), "csv", json!("")),
            bad_field("csv", &["must not be empty"]),
            exam("ex-empty"),
        ),
        case(
            "exam file name with a slash",
            "/exams",
            "exam",
            with(exam("ex-slash"), "filename", json!("x/e.csv")),
            bad_field("filename", &["path separators"]),
            exam("ex-slash"),
        ),
        case(
            "exam csv of the wrong type",
            "/exams",
            "exam",
            with(exam("ex-type"), "csv", json!(["a", "b"])),
            bad_shape("csv", &["csv", "invalid type"]),
            exam("ex-type"),
        ),
        case(
            "unsafe student_id",
            "/profile-updates",
            "profile_update",
            with(profile("pu-dotdot"), "student_id", json!("../etc")),
            bad_field("student_id", &["is refused"]),
            profile("pu-dotdot"),
        ),
        case(
            "student_id with a slash",
            "/profile-updates",
            "profile_update",
            with(profile("pu-slash"), "student_id", json!("a/b")),
            bad_field("student_id", &["is refused"]),
            profile("pu-slash"),
        ),
        case(
            "hidden student_id",
            "/profile-updates",
            "profile_update",
            with(profile("pu-hidden"), "student_id", json!(".profile")),
            bad_field("student_id", &["is refused"]),
            profile("pu-hidden"),
        ),
        case(
            "empty student_id",
            "/profile-updates",
            "profile_update",
            with(profile("pu-nostudent"), "student_id", json!("")),
            bad_field("student_id", &["is refused"]),
            profile("pu-nostudent"),
        ),
        case(
            "neither notes nor fields",
            "/profile-updates",
            "profile_update",
            without(profile("pu-nothing"), "notes"),
            bad_field("notes", &["at least one note or one field"]),
            profile("pu-nothing"),
        ),
        case(
            "too many notes",
            "/profile-updates",
            "profile_update",
            with(profile("pu-many"), "notes", json!(vec!["n"; 101])),
            bad_field("notes", &["101 notes"]),
            profile("pu-many"),
        ),
        case(
            "fields not an object",
            "/profile-updates",
            "profile_update",
            with(profile("pu-fields"), "fields", json!([1])),
            bad_shape("fields", &["fields", "invalid type"]),
            profile("pu-fields"),
        ),
    ]
}

#[tokio::test]
async fn uploads_exams_and_profile_updates_refuse_bad_documents_and_keep_no_key() {
    let (_dir, server) = start().await;
    let cases = document_cases();
    for prefix in TENANT_PREFIXES {
        for case in &cases {
            let path = format!("{prefix}{}", case.route);
            let answer = server.post_json(&path, &case.body).await;
            assert_refused(&server, &format!("{path}, {}", case.label), &answer, &case.expected);
        }
    }
    let mut seen = BTreeSet::new();
    for prefix in TENANT_PREFIXES {
        for case in &cases {
            assert_fresh_job(&server, &format!("{prefix}{}", case.route), &case.valid, case.kind, &mut seen)
                .await;
        }
    }
    assert_only_configured_tenants(&server);
}

#[tokio::test]
async fn a_body_over_the_4_mib_limit_is_refused_with_413_and_keeps_no_key() {
    let (_dir, server) = start().await;
    let huge = "x".repeat(4 * 1024 * 1024 + 1);
    let too_large = refusal(413, "payload_too_large", None, &["length limit"]);
    for prefix in TENANT_PREFIXES {
        let answer = server
            .post_json(
                &format!("{prefix}/uploads"),
                &json!({"request_id": "huge-upload", "filename": "a.md", "content": huge}),
            )
            .await;
        assert_refused(&server, &format!("{prefix}/uploads of 4 MiB"), &answer, &too_large);
        let answer = server
            .post_json(&format!("{prefix}/chat/start"), &student_chat("huge-chat", "s-huge", &huge))
            .await;
        assert_refused(&server, &format!("{prefix}/chat/start of 4 MiB"), &answer, &too_large);
    }
    let mut seen = BTreeSet::new();
    for prefix in TENANT_PREFIXES {
        let valid = json!({"request_id": "huge-upload", "filename": "a.md", "content": "# A"});
        assert_fresh_job(&server, &format!("{prefix}/uploads"), &valid, "upload", &mut seen).await;
        assert_fresh_chat(&server, prefix, "huge-chat", "s-huge", &mut seen).await;
    }
}

/// The slow responder of the lane-full scenario.
const FULL_DELAY_MS: u64 = 1000;

async fn wait_chat_done(server: &LanewayProcess, job_id: &str) -> Value {
    let done = poll_until(Duration::from_secs(30), move || async move {
        let (status, view) = server.get(&format!("/chat/status?job_id={job_id}")).await;
        assert_eq!(status, 200, "{view}\n{}", server.context());
        match view["status"].as_str() {
            Some("done") => Some(view),
            Some("queued" | "processing") => None,
            _ => panic!("chat job {job_id} ended badly: {view}\n{}", server.context()),
        }
    })
    .await;
    done.unwrap_or_else(|| panic!("chat job {job_id} did not finish in time\n{}", server.context()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lane_refuses_with_429_and_takes_the_same_request_once_it_drains() {
    let dir = tempfile::tempdir().expect("temp dir");
    let delay = FULL_DELAY_MS.to_string();
    let server = LanewayProcess::start(
        &dir.path().join("data"),
        &[
            ("CHAT_LANE_MAX_QUEUE", "1"),
            ("CHAT_RESPONDER_DELAY_MS", &delay),
            ("CHAT_LANE_DEBOUNCE_MS", "0"),
            ("CHAT_WORKER_POOL_SIZE", "16"),
            ("LLM_MAX_CONCURRENCY", "16"),
        ],
    )
    .await;
    let lane = "s-full";
    let mut seen = BTreeSet::new();
    let first = assert_fresh_chat(&server, "", "full-first", lane, &mut seen).await;

    // Eight at once into a lane with room for one waiting job: exactly one gets in.
    let mut burst = tokio::task::JoinSet::new();
    for k in 0..8 {
        let api = server.api();
        burst.spawn(async move {
            let request_id = format!("full-burst-{k}");
            let answer = api.post_json("/chat/start", &student_chat(&request_id, lane, &request_id)).await;
            (request_id, answer)
        });
    }
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    while let Some(joined) = burst.join_next().await {
        let (request_id, answer) = joined.expect("burst task");
        let answer = answer.unwrap_or_else(|e| panic!("{e}\n{}", server.context()));
        if answer.0 == 200 {
            accepted.push((request_id, answer.1));
        } else {
            refused.push((request_id, answer));
        }
    }
    assert_eq!(accepted.len(), 1, "accepted {accepted:?}, refused {refused:?}\n{}", server.context());
    let lane_full = refusal(429, "lane_full", None, &["lane full", "CHAT_LANE_MAX_QUEUE=1"]);
    for (request_id, answer) in &refused {
        assert_refused(&server, request_id, answer, &lane_full);
    }
    let (winner_request, winner_answer) = &accepted[0];
    assert_eq!(winner_answer["lane_queue_position"], 1, "{winner_answer}");
    let winner = winner_answer["job_id"].as_str().unwrap_or_default().to_owned();
    assert!(seen.insert(winner.clone()), "{winner_request} answered with an earlier job: {winner_answer}");

    let late = server.post_json("/chat/start", &student_chat("full-late", lane, "full-late")).await;
    assert_refused(&server, "the late submit", &late, &lane_full);

    // The refused keys are free: each refused request id is a new job elsewhere.
    for (k, (request_id, _)) in refused.iter().enumerate() {
        assert_fresh_chat(&server, "", request_id, &format!("s-elsewhere-{k}"), &mut seen).await;
    }

    // Once the first job is done, the winner runs and the lane has room: the late request is
    // taken as a new job, behind the winner.
    wait_chat_done(&server, &first).await;
    let (status, answer) =
        server.post_json("/chat/start", &student_chat("full-late", lane, "full-late")).await;
    assert_eq!(
        status,
        200,
        "the late request was refused after the lane drained: {answer}\n{}",
        server.context()
    );
    assert_eq!(answer["debounced"], false, "{answer}");
    assert_eq!(answer["lane_queue_position"], 1, "{answer}");
    let late = answer["job_id"].as_str().unwrap_or_default().to_owned();
    assert!(seen.insert(late.clone()), "the late request answered with an earlier job: {answer}");

    let mut finished = Vec::new();
    for (job, message) in [(&first, "full-first"), (&winner, winner_request.as_str()), (&late, "full-late")] {
        let view = wait_chat_done(&server, job).await;
        let reply = view["reply"].as_str().unwrap_or_default();
        assert!(reply.contains(message), "job {job} answered another message: {view}");
        let (_, record) = server.get(&format!("/jobs/{job}")).await;
        finished.push(record["updated_at_ms"].as_u64().unwrap_or_default());
    }
    assert!(
        finished.windows(2).all(|w| w[1] >= w[0] + FULL_DELAY_MS),
        "the lane's jobs overlapped or ran out of order: finished at {finished:?}\n{}",
        server.context()
    );
}
