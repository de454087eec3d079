//! Redis restart under load: a `laneway serve` with workers takes a steady stream of chat jobs
//! while its Redis (AOF on, `appendfsync always`) is SIGKILLed and started again on the same port.
//! While Redis is down every submit is refused, never answered 200; every job answered 200,
//! before or after, ends `done` with its own reply.

use std::time::{Duration, Instant};

use laneway_tests::{LanewayProcess, student_chat};
use redis_harness::RedisServer;
use serde_json::Value;

use crate::redis_support::{as_env, number, redis_env, text, wait_until_done};

/// How long jobs are submitted before the crash, during the outage, and at least after it.
const PHASE: Duration = Duration::from_millis(1500);
/// Accepted jobs wanted after the restart, to show that submitting works again.
const AFTER_RESTART: usize = 20;
/// How long submits may keep failing after the restart before the test gives up.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);
/// A job interrupted by the crash waits for its 10 s lease; the rest run in 50 ms each.
const DEADLINE: Duration = Duration::from_secs(90);
/// Between two submits.
const PACE: Duration = Duration::from_millis(10);

/// Submits chat jobs, each in a lane of its own, and keeps what the client saw.
#[derive(Debug, Default)]
struct Producer {
    next: usize,
    /// Accepted: (job id, message).
    accepted: Vec<(String, String)>,
}

impl Producer {
    /// Submits one job; its status, and whether it was accepted.
    async fn submit(&mut self, api: &LanewayProcess) -> (u16, Value) {
        let i = self.next;
        self.next += 1;
        let message = format!("steady question {i}");
        let body = student_chat(&format!("restart-{i}"), &format!("r{i}"), &message);
        let (status, answer) = api.post_json("/chat/start", &body).await;
        if status == 200 {
            let job = text(&answer, "job_id").to_owned();
            assert!(!job.is_empty(), "a 200 without a job id: {answer}");
            self.accepted.push((job, message));
        }
        (status, answer)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_accepted_chat_job_is_lost_across_a_redis_restart_and_none_is_accepted_while_it_is_down() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let env = redis_env(
        &redis,
        &[
            ("CHAT_RESPONDER_DELAY_MS", "50"),
            ("CHAT_WORKER_POOL_SIZE", "4"),
            ("CHAT_JOB_CLAIM_TTL_SEC", "10"),
            ("CHAT_LANE_DEBOUNCE_MS", "0"),
        ],
    );
    let api = LanewayProcess::start(&dir.path().join("data"), &as_env(&env)).await;
    let mut producer = Producer::default();

    let start = Instant::now();
    while start.elapsed() < PHASE {
        let (status, answer) = producer.submit(&api).await;
        assert_eq!(status, 200, "submit refused while Redis runs: {answer}\n{}", api.context());
        tokio::time::sleep(PACE).await;
    }
    let before = producer.accepted.len();

    // With `appendfsync always` a SIGKILL loses nothing Redis acknowledged.
    redis.kill();
    let mut refused = Vec::new();
    let down = Instant::now();
    while down.elapsed() < PHASE {
        let (status, answer) = producer.submit(&api).await;
        assert!(
            !(200..300).contains(&status),
            "a submit was answered {status} while Redis was down: {answer}\n{}",
            api.context()
        );
        refused.push(status);
        tokio::time::sleep(PACE).await;
    }
    tokio::task::block_in_place(|| redis.restart());

    let up = Instant::now();
    let mut refused_after = 0;
    while up.elapsed() < PHASE || producer.accepted.len() < before + AFTER_RESTART {
        assert!(
            up.elapsed() < RECOVERY_DEADLINE,
            "only {} submits accepted within {RECOVERY_DEADLINE:?} of the restart ({refused_after} refused)\n{}",
            producer.accepted.len() - before,
            api.context()
        );
        let (status, _) = producer.submit(&api).await;
        refused_after += usize::from(status != 200);
        tokio::time::sleep(PACE).await;
    }

    let jobs: Vec<String> = producer.accepted.iter().map(|(job, _)| job.clone()).collect();
    let views = wait_until_done(&api, "", &jobs, DEADLINE, &[&api]).await;
    for (job, message) in &producer.accepted {
        let view = &views[job];
        let reply = view.pointer("/result/reply").and_then(Value::as_str).unwrap_or_default();
        assert!(reply.contains(message.as_str()), "job {job} got a reply to another message: {view}");
        let attempt = number(view, "attempt");
        assert!((1..=3).contains(&attempt), "job {job} took {attempt} attempts: {view}");
    }
    let statuses: std::collections::BTreeSet<u16> = refused.iter().copied().collect();
    println!(
        "redis restart: {} accepted before the crash, {} refused while Redis was down (statuses \
         {statuses:?}), {} accepted and {refused_after} refused after the restart; all {} accepted \
         jobs done",
        before,
        refused.len(),
        producer.accepted.len() - before,
        jobs.len()
    );
    assert!(!refused.is_empty(), "no submit was tried while Redis was down");
}
