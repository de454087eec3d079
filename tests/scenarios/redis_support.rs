//! What the Redis scenarios share: the environment of a laneway process on a test Redis, readers
//! of JSON answers and of Redis replies, and waiting for chat jobs to finish.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use laneway_tests::{LanewayProcess, POLL_INTERVAL};
use redis_harness::RedisServer;
use serde_json::Value;

/// The environment of a laneway process on `redis`, plus `extra`.
pub fn redis_env(redis: &RedisServer, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env =
        vec![("JOB_QUEUE_BACKEND".to_owned(), "redis".to_owned()), ("REDIS_URL".to_owned(), redis.url())];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

/// `env` as the helpers of `laneway_tests` take it.
pub fn as_env(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

pub fn field<'a>(body: &'a Value, name: &str) -> &'a Value {
    body.get(name).unwrap_or(&Value::Null)
}

pub fn text<'a>(body: &'a Value, name: &str) -> &'a str {
    field(body, name).as_str().unwrap_or_default()
}

pub fn number(body: &Value, name: &str) -> u64 {
    field(body, name).as_u64().unwrap_or_else(|| panic!("{name} is not a number in {body}"))
}

/// A number inside a job view's `result` (`/result/started_at_ms`, ...).
pub fn result_number(view: &Value, pointer: &str) -> u64 {
    view.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {view}"))
}

/// A reply of `RedisServer::command` that is a flat list of pairs (`ZRANGE ... WITHSCORES`,
/// `HGETALL`), as (first, second) pairs.
pub fn pairs(reply: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = reply.lines().collect();
    lines.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].to_owned(), c[1].to_owned())).collect()
}

/// Polls `GET {prefix}/jobs/{id}` of every job in `jobs` until each is `done`, for at most
/// `deadline`; the views, by job id. Panics when a job is missing or ended otherwise, or at the
/// deadline, naming the unfinished jobs and quoting `logs` (the processes that run the jobs).
pub async fn wait_until_done(
    api: &LanewayProcess,
    prefix: &str,
    jobs: &[String],
    deadline: Duration,
    logs: &[&LanewayProcess],
) -> BTreeMap<String, Value> {
    let end = Instant::now() + deadline;
    let mut done: BTreeMap<String, Value> = BTreeMap::new();
    let mut waiting: BTreeSet<&str> = jobs.iter().map(String::as_str).collect();
    let context = || logs.iter().map(|p| p.context()).collect::<Vec<_>>().join("\n");
    loop {
        let mut still = BTreeSet::new();
        for &job in &waiting {
            let (status, view) = api.get(&format!("{prefix}/jobs/{job}")).await;
            assert_eq!(status, 200, "accepted job {job} is missing: {view}\n{}", api.context());
            match text(&view, "status") {
                "done" => {
                    done.insert(job.to_owned(), view);
                }
                "queued" | "processing" => {
                    still.insert(job);
                }
                other => panic!("job {job} ended {other}: {view}\n{}", context()),
            }
        }
        waiting = still;
        if waiting.is_empty() {
            return done;
        }
        if Instant::now() >= end {
            panic!(
                "{} of {} accepted jobs did not finish within {deadline:?}: {waiting:?}\n{}",
                waiting.len(),
                jobs.len(),
                context()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
