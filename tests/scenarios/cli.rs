//! The `laneway` command line on the real binary: `enqueue` (with `--wait`, and a refusal),
//! `status` (tables and `--json`) and `tenants` against a started server, and `doctor` on good
//! and bad configurations, with Redis down and up.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use laneway_tests::{LanewayProcess, POLL_INTERVAL, free_loopback_addr, laneway_binary};
use redis_harness::RedisServer;
use serde_json::Value;

/// Longest a CLI call may run before the test gives up on it (a hang, not a slow machine).
const CALL_DEADLINE: Duration = Duration::from_secs(120);
const ADMIN_KEY: &str = "admin-key-for-the-cli-scenarios-0123456789";

/// Runs `laneway args...` with only `env` (and `PATH`) set, and waits for it to exit.
async fn laneway(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(laneway_binary());
    command.args(args).env_clear().kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let run = command.output();
    match tokio::time::timeout(CALL_DEADLINE, run).await {
        Ok(output) => output.unwrap_or_else(|e| panic!("cannot run laneway {args:?}: {e}")),
        Err(_) => panic!("laneway {args:?} did not exit within {CALL_DEADLINE:?}"),
    }
}

/// `laneway args...` against `server` (`--url` first).
async fn against(server: &LanewayProcess, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = Vec::with_capacity(args.len() + 2);
    all.extend_from_slice(args);
    all.extend_from_slice(&["--url", server.base_url()]);
    laneway(&all, env).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn shown(output: &Output) -> String {
    format!("status {}\n--- stdout\n{}--- stderr\n{}", output.status, stdout(output), stderr(output))
}

/// The job id `enqueue` printed first (`job <id> ...`).
fn printed_job_id(output: &Output) -> String {
    stdout(output)
        .lines()
        .find_map(|l| l.strip_prefix("job ")?.split_whitespace().next().map(ToOwned::to_owned))
        .unwrap_or_else(|| panic!("no job id printed\n{}", shown(output)))
}

/// The line of `doctor`'s output for `check` (its second column).
fn check_line(text: &str, check: &str) -> Option<String> {
    text.lines().find(|l| l.split_whitespace().nth(1) == Some(check)).map(ToOwned::to_owned)
}

fn dir_env(dir: &Path) -> String {
    dir.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_chat_with_wait_prints_the_reply_and_exits_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = LanewayProcess::start(&dir.path().join("data"), &[]).await;
    let out = against(
        &server,
        &["enqueue", "chat", "--student", "s1", "--wait", "hello", "from", "the", "cli"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}\n{}", shown(&out), server.context());
    let text = stdout(&out);
    assert!(text.contains("lane student:s1:main"), "{}", shown(&out));
    assert!(text.contains("hello from the cli"), "the reply echoes the message: {}", shown(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_upload_of_a_markdown_file_waits_for_its_questions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = LanewayProcess::start(&dir.path().join("data"), &[]).await;
    let file = dir.path().join("homework.md");
    std::fs::write(&file, "# Homework\n\n1. What is 2 + 2?\n2. Name a prime number.\n").expect("write");
    let out = against(&server, &["enqueue", "upload", &file.display().to_string(), "--wait"], &[]).await;
    assert!(out.status.success(), "{}\n{}", shown(&out), server.context());
    let text = stdout(&out);
    assert!(text.contains("kind upload"), "{}", shown(&out));
    assert!(text.contains("\"filename\": \"homework.md\""), "{}", shown(&out));
    assert!(text.contains("Name a prime number."), "{}", shown(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_enqueue_exits_non_zero_and_names_the_field_on_stderr() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = LanewayProcess::start(&dir.path().join("data"), &[]).await;
    let out = against(&server, &["enqueue", "chat", "--student", "not a valid id!", "hi"], &[]).await;
    assert!(!out.status.success(), "{}", shown(&out));
    assert!(stderr(&out).contains("student_id"), "the field is named: {}", shown(&out));
    assert!(stdout(&out).is_empty(), "nothing printed as a job: {}", shown(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_lane_of_a_waiting_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Chats never finish here: the responder is slowed to minutes, so the second one waits.
    let server = LanewayProcess::start(
        &dir.path().join("data"),
        &[("CHAT_RESPONDER_DELAY_MS", "600000"), ("CHAT_LANE_DEBOUNCE_MS", "0")],
    )
    .await;
    let first = against(&server, &["enqueue", "chat", "--student", "s7", "first"], &[]).await;
    assert!(first.status.success(), "{}", shown(&first));
    let second = against(&server, &["enqueue", "chat", "--student", "s7", "second"], &[]).await;
    assert!(second.status.success(), "{}", shown(&second));
    let waiting = printed_job_id(&second);
    // Poll with a deadline: the first chat may not be claimed yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let out = against(&server, &["status"], &[]).await;
        let text = stdout(&out);
        let line = text.lines().find(|l| l.starts_with("student:s7:main")).map(ToOwned::to_owned);
        match line {
            Some(line) if out.status.success() && line.contains(&waiting) => break line,
            _ if Instant::now() >= deadline => {
                panic!("status never showed {waiting} in lane student:s7:main\n{}", shown(&out))
            }
            _ => tokio::time::sleep(POLL_INTERVAL).await,
        }
    };
    assert!(line.contains(&format!("1:{waiting}")), "the waiting job has position 1: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_parses_and_has_queues_and_lanes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = LanewayProcess::start(&dir.path().join("data"), &[]).await;
    let out = against(&server, &["status", "--json"], &[]).await;
    assert!(out.status.success(), "{}", shown(&out));
    let parsed: Value =
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}\n{}", shown(&out)));
    assert!(parsed["queues"]["kinds"].is_array(), "{parsed}");
    assert!(parsed["lanes"]["lanes"].is_array(), "{parsed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_round_trip_through_the_admin_api() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = LanewayProcess::start(&dir.path().join("data"), &[("TENANT_ADMIN_KEY", ADMIN_KEY)]).await;
    let admin = [("TENANT_ADMIN_KEY", ADMIN_KEY)];

    let put = against(&server, &["tenants", "put", "t1", "--llm", "2"], &admin).await;
    assert!(put.status.success(), "{}\n{}", shown(&put), server.context());
    let view: Value = serde_json::from_str(&stdout(&put)).unwrap_or_else(|e| panic!("{e}\n{}", shown(&put)));
    assert_eq!(view["limits"]["llm"], 2, "{view}");

    let list = against(&server, &["tenants", "list"], &admin).await;
    assert!(list.status.success(), "{}", shown(&list));
    let row = stdout(&list).lines().find(|l| l.starts_with("t1 ")).map(ToOwned::to_owned);
    let row = row.unwrap_or_else(|| panic!("t1 not listed\n{}", shown(&list)));
    assert!(row.contains("true"), "t1 is enabled and running: {row}");

    let key = against(&server, &["tenants", "key", "t1"], &admin).await;
    assert!(key.status.success(), "{}", shown(&key));
    let issued: Value =
        serde_json::from_str(&stdout(&key)).unwrap_or_else(|e| panic!("{e}\n{}", shown(&key)));
    let key_id = issued["key_id"].as_str().expect("key_id").to_owned();
    let revoke = against(&server, &["tenants", "revoke", "t1", &key_id], &admin).await;
    assert!(revoke.status.success(), "{}", shown(&revoke));
    assert!(stdout(&revoke).contains("revoked_at_ms"), "{}", shown(&revoke));

    let disable = against(&server, &["tenants", "disable", "t1"], &admin).await;
    assert!(disable.status.success(), "{}", shown(&disable));
    let view: Value =
        serde_json::from_str(&stdout(&disable)).unwrap_or_else(|e| panic!("{e}\n{}", shown(&disable)));
    assert_eq!(view["enabled"], false, "{view}");

    // Without the admin key the CLI says what is missing and exits non-zero.
    let refused = against(&server, &["tenants", "list"], &[]).await;
    assert!(!refused.status.success(), "{}", shown(&refused));
    assert!(stderr(&refused).contains("admin key"), "{}", shown(&refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_on_a_good_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("fresh-data");
    let addr = free_loopback_addr().to_string();
    let out = laneway(&["doctor"], &[("DATA_DIR", &dir_env(&data)), ("LANEWAY_ADDR", &addr)]).await;
    assert!(out.status.success(), "{}", shown(&out));
    let text = stdout(&out);
    assert!(!text.contains("FAIL"), "{}", shown(&out));
    for check in ["settings", "data dir", "master key", "redis", "llm", "port"] {
        assert!(text.lines().any(|l| l.contains(check)), "no {check} line: {}", shown(&out));
    }
    assert!(data.is_dir(), "the data dir was created");
    assert_eq!(std::fs::read_dir(&data).expect("read data dir").count(), 0, "the probe file was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_in_plain_words_on_a_bad_setting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = laneway(
        &["doctor"],
        &[("DATA_DIR", &dir_env(dir.path())), ("CHAT_WORKER_POOL_SIZE", "abc"), ("LANEWAY_ADDR", "nowhere")],
    )
    .await;
    assert!(!out.status.success(), "{}", shown(&out));
    let text = stdout(&out);
    let fail = text.lines().find(|l| l.starts_with("FAIL") && l.contains("settings"));
    assert!(fail.is_some_and(|l| l.contains("2 bad settings")), "{}", shown(&out));
    assert!(text.contains("CHAT_WORKER_POOL_SIZE: expected an integer, got \"abc\""), "{}", shown(&out));
    assert!(text.contains("LANEWAY_ADDR"), "every problem is listed: {}", shown(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_says_redis_is_unreachable_when_its_port_is_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let closed = free_loopback_addr();
    let url = format!("redis://{closed}");
    let out = laneway(
        &["doctor"],
        &[("DATA_DIR", &dir_env(dir.path())), ("JOB_QUEUE_BACKEND", "redis"), ("REDIS_URL", &url)],
    )
    .await;
    assert!(!out.status.success(), "{}", shown(&out));
    let line = check_line(&stdout(&out), "redis");
    let line = line.unwrap_or_else(|| panic!("no redis line\n{}", shown(&out)));
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains("Redis unreachable"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_the_version_of_a_running_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = free_loopback_addr().to_string();
    let url = redis.url();
    let out = laneway(
        &["doctor"],
        &[
            ("DATA_DIR", &dir_env(dir.path())),
            ("JOB_QUEUE_BACKEND", "redis"),
            ("REDIS_URL", &url),
            ("LANEWAY_ADDR", &addr),
        ],
    )
    .await;
    assert!(out.status.success(), "{}\n{}", shown(&out), redis.log_tail(20));
    let version = redis.command(&["INFO", "server"]);
    let version = version
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no redis_version in INFO: {version}"))
        .to_owned();
    let line = check_line(&stdout(&out), "redis").unwrap_or_default();
    assert!(
        line.starts_with("ok") && line.contains(&format!("Redis {version} reachable")),
        "{}",
        shown(&out)
    );
}
