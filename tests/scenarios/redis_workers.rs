//! Worker death on Redis: an API-only `laneway serve --no-workers` and three `laneway worker`
//! processes share one Redis; the worker that has been running chat jobs from the start is
//! SIGKILLed mid-run. Every accepted job still ends `done` with its own reply, each lane runs in
//! submission order with no two runs overlapping, and exactly the jobs the dead worker held run
//! once more, on a live worker, after their lane's lease expired.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use laneway_tests::{LanewayProcess, now_ms, poll_until, student_chat};
use redis_harness::RedisServer;
use serde_json::Value;

use crate::redis_support::{as_env, field, number, pairs, redis_env, result_number, text, wait_until_done};

/// The responder's delay: long enough that a worker is always inside a job.
const DELAY_MS: u64 = 400;
/// The claim TTL (the product's minimum): how long a dead worker's lanes stay blocked.
const CLAIM_TTL_SEC: u64 = 10;
const LANES: usize = 6;
const PER_LANE: usize = 4;
/// The default tenant's keys.
const PREFIX: &str = "lw:{default}:";
/// A 10 s lease, 24 jobs of 400 ms on 4 live slots, and a loaded machine.
const DEADLINE: Duration = Duration::from_secs(90);

/// One accepted chat job, as the client saw it.
#[derive(Debug, Clone)]
struct Submitted {
    lane: usize,
    index: usize,
    job_id: String,
    lane_id: String,
    message: String,
}

/// A lane's active claim as Redis held it right after the kill.
#[derive(Debug, Clone)]
struct ActiveClaim {
    job: String,
    deadline_ms: u64,
}

fn active_claims(redis: &RedisServer) -> BTreeMap<String, ActiveClaim> {
    let leases = redis.command(&["ZRANGE", &format!("{PREFIX}leases"), "0", "-1"]);
    leases
        .lines()
        .filter(|l| !l.is_empty())
        .map(|lane| {
            let active: BTreeMap<String, String> =
                pairs(&redis.command(&["HGETALL", &format!("{PREFIX}lane:{lane}:active")]))
                    .into_iter()
                    .collect();
            let deadline_ms = active.get("deadline").and_then(|d| d.parse().ok()).unwrap_or(0);
            let job = active.get("job").cloned().unwrap_or_default();
            (lane.to_owned(), ActiveClaim { job, deadline_ms })
        })
        .collect()
}

/// Job ids named by the "expired lease reaped" lines of a log.
fn reaped_jobs(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|l| l.contains("expired lease reaped"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("job=")))
        .map(ToOwned::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_sigkilled_worker_run_again_on_the_others_after_its_lease_in_lane_order() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let (delay, ttl) = (DELAY_MS.to_string(), CLAIM_TTL_SEC.to_string());
    let env = redis_env(
        &redis,
        &[
            ("CHAT_RESPONDER_DELAY_MS", &delay),
            ("CHAT_WORKER_POOL_SIZE", "2"),
            ("CHAT_JOB_CLAIM_TTL_SEC", &ttl),
            ("CHAT_LANE_DEBOUNCE_MS", "0"),
            ("CHAT_LANE_MAX_QUEUE", "50"),
        ],
    );
    let env = as_env(&env);
    let api = LanewayProcess::start_with_args(&data, &["--no-workers"], &env).await;
    let mut first = LanewayProcess::worker(&data, &env).await;

    // Interleaved: every lane gets its first job, then every lane its second, ...
    let mut jobs: Vec<Submitted> = Vec::new();
    for index in 0..PER_LANE {
        for lane in 0..LANES {
            let message = format!("lane {lane} message {index}: what is {index} times {lane}?");
            let body = student_chat(&format!("death-{lane}-{index}"), &format!("s{lane}"), &message);
            let (status, answer) = api.post_json("/chat/start", &body).await;
            assert_eq!(status, 200, "submit {lane}/{index} refused: {answer}\n{}", api.context());
            assert_eq!(field(&answer, "debounced"), &Value::Bool(false), "{answer}");
            let job_id = text(&answer, "job_id").to_owned();
            assert!(!job_id.is_empty(), "no job id in {answer}");
            let lane_id = text(&answer, "lane_id").to_owned();
            jobs.push(Submitted { lane, index, job_id, lane_id, message });
        }
    }
    let ids: BTreeSet<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(ids.len(), jobs.len(), "two submits got the same job: {jobs:?}");

    // The first worker alone takes jobs; then two more join while it is still busy.
    let processing = {
        let (api, jobs) = (&api, &jobs);
        poll_until(DEADLINE, move || async move {
            for job in jobs {
                let (_, view) = api.get(&format!("/jobs/{}", job.job_id)).await;
                if text(&view, "status") == "processing" {
                    return Some(());
                }
            }
            None
        })
        .await
    };
    assert!(processing.is_some(), "the first worker took no job\n{}", first.context());
    let (second, third) =
        tokio::join!(LanewayProcess::worker(&data, &env), LanewayProcess::worker(&data, &env));

    let mut queued = 0;
    for job in &jobs {
        let (_, view) = api.get(&format!("/jobs/{}", job.job_id)).await;
        queued += usize::from(text(&view, "status") == "queued");
    }
    assert!(
        queued >= LANES,
        "only {queued} jobs still wait once three workers run: the machine is too slow for this \
         run to kill a worker mid-run\n{}",
        first.context()
    );
    first.kill();
    let killed_ms = now_ms();
    // Frozen until the reaper of a live worker takes them over: the lanes the dead worker held.
    let claims_at_kill = active_claims(&redis);
    let first_log = first.log_tail();

    let all: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    let views = wait_until_done(&api, "", &all, DEADLINE, &[&second, &third, &api]).await;

    let reaped: BTreeSet<String> =
        reaped_jobs(&second.log_text()).union(&reaped_jobs(&third.log_text())).cloned().collect();
    let mut rerun = BTreeSet::new();
    let mut runs: BTreeMap<usize, Vec<(usize, u64, u64)>> = BTreeMap::new();
    for job in &jobs {
        let view = &views[&job.job_id];
        let reply = view.pointer("/result/reply").and_then(Value::as_str).unwrap_or_default();
        assert!(reply.contains(&job.message), "job {job:?} got a reply to another message: {view}");
        let started = result_number(view, "/result/started_at_ms");
        let finished = result_number(view, "/result/finished_at_ms");
        assert!(started <= finished, "job {job:?} finished before it started: {view}");
        let attempt = number(view, "attempt");
        match attempt {
            1 => {}
            2 => {
                rerun.insert(job.job_id.clone());
                // It ran on the dead worker: at the kill its lane's claim named it, and the live
                // workers started it again only once that claim's lease had run out.
                let claim = claims_at_kill.get(&job.lane_id);
                assert!(
                    claim.is_some_and(|c| c.job == job.job_id),
                    "job {job:?} ran twice, but at the kill its lane's claim was {claim:?}: {view}"
                );
                let deadline = claim.map_or(0, |c| c.deadline_ms);
                assert!(
                    started >= deadline,
                    "job {job:?} ran again at {started}, before its lease ran out at {deadline} \
                     (killed at {killed_ms}): {view}"
                );
                assert!(
                    reaped.contains(&job.job_id),
                    "job {job:?} ran again but no live worker logged reaping its lease: reaped {reaped:?}"
                );
            }
            _ => panic!("job {job:?} ran {attempt} times, more than twice: {view}"),
        }
        runs.entry(job.lane).or_default().push((job.index, started, finished));
    }
    assert!(
        !rerun.is_empty(),
        "no job ran twice: the killed worker held no job at the kill (claims at the kill: \
         {claims_at_kill:?})\nits log:\n{first_log}"
    );
    assert_eq!(reaped, rerun, "the leases reaped are not exactly the jobs that ran again");

    println!(
        "worker death: {} jobs done; the killed worker held {} of them, run again after their \
         leases (deadlines {:?}, killed at {killed_ms})",
        jobs.len(),
        rerun.len(),
        rerun
            .iter()
            .filter_map(|job| claims_at_kill.values().find(|c| &c.job == job).map(|c| c.deadline_ms))
            .collect::<Vec<_>>()
    );

    // One at a time and in submission order (`runs` is in submission order).
    for (lane, runs) in &runs {
        for pair in runs.windows(2) {
            let ((a, _, a_finished), (b, b_started, _)) = (pair[0], pair[1]);
            assert!(
                b_started >= a_finished,
                "lane {lane}: job {b} started at {b_started}, before job {a} finished at \
                 {a_finished}: they overlapped or ran out of order; (index, started, finished) = {runs:?}"
            );
        }
    }
}
