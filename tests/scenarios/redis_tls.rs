//! Redis over TLS (`rediss://`), end to end: a `redis-server` serving TLS with a throwaway CA
//! made by `openssl`, and `laneway` processes that trust that CA through `SSL_CERT_FILE` (set in
//! the child's environment only). A chat job submitted over TLS runs to `done` on a worker; a
//! certificate no trusted CA signed, and a plain-TCP port named by `rediss://`, are refused with
//! an answer that names `REDIS_URL` and says what failed, and no submit is accepted. A job also
//! runs to `done` on a Redis Cluster whose nodes serve TLS (`--tls-cluster yes`), named by its
//! `rediss://` seed URLs.

use std::time::{Duration, Instant};

use laneway_tests::{LanewayProcess, student_chat};
use redis_harness::{RedisCluster, RedisServer, TestCa};
use serde_json::Value;

use crate::redis_support::{as_env, text, wait_until_done};

/// The default tenant's keys.
const PREFIX: &str = "lw:{default}:";
/// A job of 50 ms on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The environment of a laneway process on Redis at `url`, plus `extra`.
fn env_for(url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("JOB_QUEUE_BACKEND".to_owned(), "redis".to_owned()),
        ("REDIS_URL".to_owned(), url.to_owned()),
        ("CHAT_LANE_DEBOUNCE_MS".to_owned(), "0".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

/// Submits one chat job and asserts that it is refused (never 2xx) with an answer that names
/// `REDIS_URL` and contains `what`; returns the answer.
async fn assert_submit_refused(api: &LanewayProcess, what: &str) -> Value {
    let (status, answer) = api.post_json("/chat/start", &student_chat("tls-refused-1", "s1", "hello")).await;
    assert!(!(200..300).contains(&status), "a submit was accepted ({status}): {answer}\n{}", api.context());
    let detail = answer.to_string();
    assert!(detail.contains("REDIS_URL: TLS handshake failed"), "{status} {detail}\n{}", api.context());
    assert!(detail.contains(what), "{status} {detail} does not say {what:?}\n{}", api.context());
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_job_submitted_over_rediss_runs_to_done_on_a_worker_trusting_the_ca_through_ssl_cert_file() {
    let ca = TestCa::generate("laneway scenario test CA");
    let redis = RedisServer::start_tls(&ca.issue_server_cert());
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let ca_file = ca.cert().to_string_lossy().into_owned();
    let env = env_for(&redis.tls_url(), &[("SSL_CERT_FILE", &ca_file), ("CHAT_RESPONDER_DELAY_MS", "50")]);
    let env = as_env(&env);
    let api = LanewayProcess::start_with_args(&data, &["--no-workers"], &env).await;
    let worker = LanewayProcess::worker(&data, &env).await;

    let message = "what is two times three, over TLS?";
    let (status, answer) = api.post_json("/chat/start", &student_chat("tls-1", "s1", message)).await;
    assert_eq!(status, 200, "submit over TLS refused: {answer}\n{}", api.context());
    let job = text(&answer, "job_id").to_owned();
    assert!(!job.is_empty(), "no job id in {answer}");

    let views = wait_until_done(&api, "", std::slice::from_ref(&job), DEADLINE, &[&api, &worker]).await;
    let reply = views[&job].pointer("/result/reply").and_then(Value::as_str).unwrap_or_default();
    assert!(reply.contains(message), "job {job} got another reply: {}", views[&job]);
    // The record is in this server, written through its TLS port (the only one laneway knows).
    // Its state field: `<status>|<epoch>|<attempt>|<updated>`.
    let state_in_redis = redis.command(&["HGET", &format!("{PREFIX}job:{job}"), "state"]);
    assert!(
        state_in_redis.starts_with("done|"),
        "job {job} in Redis: {state_in_redis}\n{}",
        worker.context()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_job_runs_to_done_on_a_redis_cluster_over_tls_named_by_its_rediss_seed_urls() {
    let ca = TestCa::generate("laneway scenario cluster CA");
    let cluster = tokio::task::block_in_place(|| RedisCluster::start_tls(&ca));
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = ca.cert().to_string_lossy().into_owned();
    let env = env_for(&cluster.tls_url(), &[("SSL_CERT_FILE", &ca_file), ("CHAT_RESPONDER_DELAY_MS", "50")]);
    let api = LanewayProcess::start(&dir.path().join("data"), &as_env(&env)).await;

    let message = "what is three times four, on a TLS cluster?";
    let (status, answer) = api.post_json("/chat/start", &student_chat("tls-cluster-1", "s1", message)).await;
    assert_eq!(status, 200, "submit to the TLS cluster refused: {answer}\n{}", api.context());
    let job = text(&answer, "job_id").to_owned();

    let views = wait_until_done(&api, "", std::slice::from_ref(&job), DEADLINE, &[&api]).await;
    let reply = views[&job].pointer("/result/reply").and_then(Value::as_str).unwrap_or_default();
    assert!(reply.contains(message), "job {job} got another reply: {}", views[&job]);
    let key = format!("{PREFIX}job:{job}");
    let owners: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| node.command(&["HGET", &key, "state"]))
        .filter(|state| !state.starts_with("(error) MOVED"))
        .map(|state| state.split('|').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(owners, ["done"], "job {job}'s status in the cluster\n{}", api.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_certificate_no_trusted_ca_signed_is_refused_naming_redis_url_and_no_submit_is_accepted() {
    let server_ca = TestCa::generate("laneway scenario server CA");
    let trusted_ca = TestCa::generate("laneway scenario other CA");
    let redis = RedisServer::start_tls(&server_ca.issue_server_cert());
    let dir = tempfile::tempdir().expect("temp dir");
    let trusted = trusted_ca.cert().to_string_lossy().into_owned();
    let env = env_for(&redis.tls_url(), &[("SSL_CERT_FILE", &trusted)]);
    let api = LanewayProcess::start(&dir.path().join("data"), &as_env(&env)).await;

    assert_submit_refused(&api, "certificate is not trusted").await;

    assert!(
        api.log_text().contains("certificate is not trusted"),
        "the log does not say why\n{}",
        api.context()
    );
    let jobs = redis.command(&["KEYS", &format!("{PREFIX}job:*")]);
    assert_eq!(jobs, "", "a job record reached Redis through an untrusted certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_to_a_plain_tcp_redis_port_is_refused_within_seconds_saying_it_answers_without_tls() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let env = env_for(&format!("rediss://127.0.0.1:{}/", redis.port()), &[]);
    let api = LanewayProcess::start(&dir.path().join("data"), &as_env(&env)).await;

    let started = Instant::now();
    assert_submit_refused(&api, "without TLS").await;
    let took = started.elapsed();

    // Two connection attempts of 2 s each, then a 500 ms check of the port; never a hang.
    assert!(took < Duration::from_secs(15), "the refusal took {took:?}\n{}", api.context());
    let jobs = redis.command(&["KEYS", &format!("{PREFIX}job:*")]);
    assert_eq!(jobs, "", "a job record reached the plain port");
}
