//! Bad input and tenant isolation over Redis, on an API-only `laneway serve --no-workers` serving
//! tenants `a` and `b`: ids that could inject a hash tag, a glob or a key separator are refused
//! before any Redis command is sent, a tenant sees neither the jobs nor the keys of another, and a
//! chat start that fails midway leaves its request id free for the retry.

use laneway_tests::{LanewayProcess, student_chat};
use redis_harness::RedisServer;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::redis_support::{as_env, redis_env, text};

async fn start(redis: &RedisServer) -> (TempDir, LanewayProcess) {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = redis_env(redis, &[("LANEWAY_TENANTS", "a,b"), ("CHAT_LANE_DEBOUNCE_MS", "0")]);
    let api =
        LanewayProcess::start_with_args(&dir.path().join("data"), &["--no-workers"], &as_env(&env)).await;
    (dir, api)
}

/// Commands Redis has processed so far (this INFO counts once it is answered).
fn commands_processed(redis: &RedisServer) -> u64 {
    let info = redis.command(&["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.trim().strip_prefix("total_commands_processed:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no total_commands_processed in INFO stats:\n{info}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_could_reach_into_redis_keys_are_refused_before_any_redis_command() {
    let redis = RedisServer::start();
    let (_dir, api) = start(&redis).await;

    // Nothing else talks to this Redis: two reads with nothing between differ by the first read.
    let quiet = commands_processed(&redis);
    assert_eq!(
        commands_processed(&redis),
        quiet + 1,
        "something other than this test sends commands to Redis; this test cannot tell who\n{}",
        api.context()
    );

    let long = "j".repeat(10 * 1024);
    let gets: Vec<String> = vec![
        "/jobs/a%7Bb%7D".into(),
        "/jobs/%7Bdefault%7D".into(),
        "/jobs/x%7D".into(),
        "/jobs/*".into(),
        "/jobs/job*".into(),
        format!("/jobs/{long}"),
        "/t/a/jobs/lw:%7Bb%7D:job:x".into(),
        "/t/a/jobs/*".into(),
        format!("/t/b/jobs/{long}"),
        "/chat/status?job_id=*".into(),
        "/chat/status?job_id=%7Ba%7D".into(),
        format!("/chat/status?job_id={long}"),
        "/t/a/chat/status?job_id=lw:%7Bb%7D:job:x".into(),
        "/t/a:b/jobs/x".into(),
        "/t/a:%7Bb%7D/jobs/x".into(),
        "/t/%7Bb%7D/jobs/x".into(),
        "/t/b:lane:x/chat/status?job_id=x".into(),
        "/t/a*/jobs/x".into(),
        "/t/*/chat/status?job_id=x".into(),
        format!("/t/{long}/jobs/x"),
        "/t/c/jobs/x".into(),
    ];
    let chat = |patch: Value| {
        let mut body = student_chat("bad-1", "s1", "hello");
        for (k, v) in patch.as_object().expect("an object patch") {
            body[k] = v.clone();
        }
        body
    };
    let posts: Vec<(&str, Value)> = vec![
        ("/t/a/chat/start", chat(json!({"request_id": "r{b}"}))),
        ("/t/a/chat/start", chat(json!({"request_id": "r*"}))),
        ("/t/a/chat/start", chat(json!({"request_id": long}))),
        ("/t/a/chat/start", chat(json!({"lane_id": "lane:{b}:x"}))),
        ("/t/a/chat/start", chat(json!({"lane_id": "*"}))),
        ("/t/a/chat/start", chat(json!({"lane_id": long}))),
        ("/t/a/chat/start", chat(json!({"student_id": "s}{"}))),
        ("/t/a/chat/start", chat(json!({"attachments": ["doc{b}"]}))),
        ("/t/a/chat/start", chat(json!({"attachments": [long]}))),
        ("/t/a:b/chat/start", chat(json!({}))),
        ("/t/%7Bb%7D/chat/start", chat(json!({}))),
        ("/t/b*/chat/start", chat(json!({}))),
    ];

    let before = commands_processed(&redis);
    let mut answers = Vec::new();
    for path in &gets {
        let (status, body) = api.get(path).await;
        answers.push((format!("GET {}", &path[..path.len().min(80)]), status, body));
    }
    for (path, body) in &posts {
        let (status, answer) = api.post_json(path, body).await;
        let shown = body.to_string();
        answers.push((format!("POST {path} {}", &shown[..shown.len().min(120)]), status, answer));
    }
    let after = commands_processed(&redis);

    for (request, status, body) in &answers {
        assert!(*status == 400 || *status == 404, "{request} was answered {status}, not 400 or 404: {body}");
        assert!(!text(body, "error").is_empty(), "{request}: the refusal has no error code: {body}");
    }
    assert_eq!(
        after,
        before + 1,
        "{} bad requests sent {} commands to Redis (beyond this test's INFO); each must be refused \
         before any Redis call\n{}",
        answers.len(),
        after.saturating_sub(before + 1),
        api.context()
    );
    let keys = redis.command(&["KEYS", "*"]);
    assert!(keys.is_empty(), "refused requests left keys behind: {keys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_neither_the_jobs_nor_the_keys_of_another() {
    let redis = RedisServer::start();
    let (_dir, api) = start(&redis).await;

    // The same request id in both tenants: two jobs, not one answered twice.
    let (status, in_a) =
        api.post_json("/t/a/chat/start", &student_chat("shared-request", "s1", "for a")).await;
    assert_eq!(status, 200, "{in_a}\n{}", api.context());
    let (status, in_b) =
        api.post_json("/t/b/chat/start", &student_chat("shared-request", "s1", "for b")).await;
    assert_eq!(status, 200, "{in_b}\n{}", api.context());
    let (job_a, job_b) = (text(&in_a, "job_id"), text(&in_b, "job_id"));
    assert!(!job_a.is_empty() && !job_b.is_empty(), "{in_a} {in_b}");
    assert_ne!(job_a, job_b, "tenant b's request id answered with tenant a's job");
    assert_eq!(in_b["lane_queue_size"], json!(1), "tenant b's lane counts tenant a's job: {in_b}");

    for (own, other, job) in [("a", "b", job_a), ("b", "a", job_b)] {
        let (status, view) = api.get(&format!("/t/{own}/jobs/{job}")).await;
        assert_eq!(status, 200, "tenant {own} cannot read its own job {job}: {view}");
        assert_eq!(text(&view, "status"), "queued", "{view}");
        for path in [format!("/t/{other}/jobs/{job}"), format!("/t/{other}/chat/status?job_id={job}")] {
            let (status, body) = api.get(&path).await;
            assert_eq!(status, 404, "tenant {other} reads tenant {own}'s job at {path}: {body}");
        }
        for path in [format!("/jobs/{job}"), format!("/chat/status?job_id={job}")] {
            let (status, body) = api.get(&path).await;
            assert_eq!(status, 404, "the default tenant reads tenant {own}'s job at {path}: {body}");
        }
    }

    // Read by this test only, never by the product: KEYS is fine on a test server.
    let keys = redis.command(&["KEYS", "*"]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    let foreign: Vec<&&str> =
        keys.iter().filter(|k| !k.starts_with("lw:{a}:") && !k.starts_with("lw:{b}:")).collect();
    assert!(foreign.is_empty(), "keys outside the tenants' prefixes: {foreign:?} (all: {keys:?})");
    for tenant in ["a", "b"] {
        let prefix = format!("lw:{{{tenant}}}:");
        let own = keys.iter().filter(|k| k.starts_with(&prefix)).count();
        assert!(own > 0, "tenant {tenant} has no keys under {prefix}: {keys:?}");
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&prefix) && k.ends_with(if tenant == "a" { job_a } else { job_b })),
            "tenant {tenant}'s job record is not under {prefix}: {keys:?}"
        );
    }
}

/// A chat start that fails after its request id was claimed frees the id again, so the client's
/// retry of the same request creates the job instead of being answered with one that was never
/// made. The failure here: the lane's waiting list holds a value of the wrong type, so reading the
/// lane (and submitting into it) fails with Redis's `WRONGTYPE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_start_that_fails_after_claiming_its_request_id_leaves_it_free_for_the_retry() {
    let redis = RedisServer::start();
    let (_dir, api) = start(&redis).await;
    let waiting = "lw:{a}:lane:student:s9:main:q";
    redis.command(&["SET", waiting, "not a list"]);
    let body = student_chat("retry-after-error", "s9", "hello");
    let (status, answer) = api.post_json("/t/a/chat/start", &body).await;
    assert!(status >= 500, "a lane Redis cannot read fails the start: {status} {answer}\n{}", api.context());
    assert_eq!(
        redis.command(&["EXISTS", "lw:{a}:idem:retry-after-error"]),
        "0",
        "the request id was freed; keys now: {}",
        redis.command(&["KEYS", "lw:{a}:*"])
    );

    redis.command(&["DEL", waiting]);
    let (status, answer) = api.post_json("/t/a/chat/start", &body).await;
    assert_eq!(status, 200, "the retry is a new start: {answer}\n{}", api.context());
    assert_eq!(answer["debounced"], json!(false), "{answer}");
    let job = answer["job_id"].as_str().expect("a job id");
    let (status, view) = api.get(&format!("/t/a/jobs/{job}")).await;
    assert_eq!(status, 200, "the job the retry names exists: {view}");
    assert_eq!(view["lane_id"], json!("student:s9:main"), "{view}");
}
