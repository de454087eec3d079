//! Crash recovery of the real binary: chat jobs accepted by a `laneway serve` that is SIGKILLed
//! mid-job all finish after a restart on the same `DATA_DIR`, each lane in submission order, and
//! the job that was running at the kill runs again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use laneway_tests::{LanewayProcess, now_ms, poll_until, student_chat};
use serde_json::Value;

/// The slow responder's delay: long enough to kill the process while a job runs.
const DELAY_MS: u64 = 300;
const LANES: usize = 4;
const PER_LANE: usize = 5;
/// Ample for 5 jobs of 300 ms per lane, on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

fn settings() -> Vec<(&'static str, String)> {
    vec![
        ("CHAT_RESPONDER_DELAY_MS", DELAY_MS.to_string()),
        ("CHAT_WORKER_POOL_SIZE", "4".into()),
        ("CHAT_LANE_MAX_QUEUE", "50".into()),
        ("CHAT_LANE_DEBOUNCE_MS", "0".into()),
    ]
}

/// One accepted chat job, as the client saw it.
#[derive(Debug, Clone)]
struct Submitted {
    lane: usize,
    index: usize,
    job_id: String,
    message: String,
}

fn field<'a>(body: &'a Value, name: &str) -> &'a Value {
    body.get(name).unwrap_or(&Value::Null)
}

fn text<'a>(body: &'a Value, name: &str) -> &'a str {
    field(body, name).as_str().unwrap_or_default()
}

fn number(body: &Value, name: &str) -> u64 {
    field(body, name).as_u64().unwrap_or_else(|| panic!("{name} is not a number in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_chat_job_survives_a_sigkill_in_lane_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let settings = settings();
    let env: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut first = LanewayProcess::start(&data, &env).await;

    // Interleaved: every lane gets its first job, then every lane its second, ...
    let mut jobs: Vec<Submitted> = Vec::new();
    for index in 0..PER_LANE {
        for lane in 0..LANES {
            let message = format!("lane {lane} message {index}: what is {index} times {lane}?");
            let body = student_chat(&format!("crash-{lane}-{index}"), &format!("s{lane}"), &message);
            let (status, answer) = first.post_json("/chat/start", &body).await;
            assert_eq!(status, 200, "submit {lane}/{index} refused: {answer}\n{}", first.context());
            assert_eq!(text(&answer, "lane_id"), format!("student:s{lane}:main"), "{answer}");
            assert_eq!(field(&answer, "debounced"), &Value::Bool(false), "{answer}");
            let job_id = text(&answer, "job_id").to_owned();
            assert!(!job_id.is_empty(), "no job id in {answer}");
            jobs.push(Submitted { lane, index, job_id, message });
        }
    }
    let ids: BTreeSet<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(ids.len(), jobs.len(), "two submits got the same job: {jobs:?}");

    // Kill while a job runs that started less than a third of its run ago (so it is certainly
    // still running at the kill), the job before it in its lane is done, and its lane's last job
    // still waits.
    let victim = {
        let (first, jobs) = (&first, &jobs);
        poll_until(DEADLINE, move || async move {
            for job in jobs.iter().filter(|j| j.index >= 1 && j.index + 1 < PER_LANE) {
                let (status, view) = first.get(&format!("/jobs/{}", job.job_id)).await;
                assert_eq!(status, 200, "job {} vanished: {view}\n{}", job.job_id, first.context());
                if text(&view, "status") != "processing" {
                    continue;
                }
                let started_ms = number(&view, "updated_at_ms");
                if now_ms().saturating_sub(started_ms) >= DELAY_MS / 3 {
                    continue;
                }
                let last = jobs.iter().find(|j| j.lane == job.lane && j.index + 1 == PER_LANE)?;
                let (_, last_view) = first.get(&format!("/chat/status?job_id={}", last.job_id)).await;
                if text(&last_view, "status") == "queued" {
                    return Some((job.clone(), started_ms));
                }
            }
            None
        })
        .await
    };
    let Some((victim, started_ms)) = victim else {
        panic!("no job was seen freshly processing with its lane still queued\n{}", first.context());
    };
    first.kill();
    let killed_ms = now_ms();
    assert!(
        killed_ms < started_ms + DELAY_MS,
        "the kill came {} ms after job {} started, later than its {DELAY_MS} ms run: the machine \
         stalled, so this run cannot tell whether the job was still running\n{}",
        killed_ms - started_ms,
        victim.job_id,
        first.context()
    );
    let first_log = first.log_tail();
    drop(first);

    let mut second = LanewayProcess::start(&data, &env).await;
    let replies = {
        let (second, jobs) = (&second, &jobs);
        poll_until(DEADLINE, move || async move {
            let mut replies = BTreeMap::new();
            for job in jobs {
                let (status, view) = second.get(&format!("/chat/status?job_id={}", job.job_id)).await;
                assert_eq!(
                    status,
                    200,
                    "accepted job {job:?} is missing after the restart: {view}\n{}",
                    second.context()
                );
                match text(&view, "status") {
                    "done" => {
                        replies.insert(job.job_id.clone(), text(&view, "reply").to_owned());
                    }
                    "queued" | "processing" => return None,
                    other => panic!("job {job:?} ended {other}: {view}\n{}", second.context()),
                }
            }
            Some(replies)
        })
        .await
    };
    let Some(replies) = replies else {
        panic!("not every accepted job finished within {DEADLINE:?} of the restart\n{}", second.context());
    };

    let mut finished: BTreeMap<usize, Vec<(usize, u64, u64)>> = BTreeMap::new();
    for job in &jobs {
        let (status, view) = second.get(&format!("/jobs/{}", job.job_id)).await;
        assert_eq!(status, 200, "job {job:?}: {view}\n{}", second.context());
        assert_eq!(text(&view, "status"), "done", "{view}");
        let reply = view.pointer("/result/reply").and_then(Value::as_str).unwrap_or_default();
        assert!(reply.contains(&job.message), "job {job:?} got a reply to another message: {reply:?}");
        assert_eq!(reply, replies[&job.job_id], "status and job views disagree on {job:?}");
        let (attempt, done_ms) = (number(&view, "attempt"), number(&view, "updated_at_ms"));
        // A job that finished before the kill must not run again; one running at the kill runs
        // once more; none runs a third time (the responder never fails).
        let expected = if done_ms < killed_ms { 1..=1 } else { 1..=2 };
        assert!(
            expected.contains(&attempt),
            "job {job:?} finished at {done_ms} (killed at {killed_ms}) after {attempt} attempts: {view}"
        );
        finished.entry(job.lane).or_default().push((job.index, done_ms, attempt));
    }

    let (status, view) = second.get(&format!("/jobs/{}", victim.job_id)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        number(&view, "attempt"),
        2,
        "job {victim:?} was running at the SIGKILL ({} ms into its {DELAY_MS} ms run) yet did not \
         run exactly once more: {view}\nlog before the kill:\n{first_log}\n{}",
        killed_ms - started_ms,
        second.context()
    );

    // One at a time and in submission order (`runs` is in submission order): a job finishes at
    // least one responder delay after the previous job of its lane finished, as it starts only
    // then.
    for (lane, runs) in &finished {
        for pair in runs.windows(2) {
            let ((a, a_done, _), (b, b_done, _)) = (pair[0], pair[1]);
            assert!(
                b_done >= a_done + DELAY_MS,
                "lane {lane}: job {b} finished at {b_done}, less than {DELAY_MS} ms after job {a} \
                 ({a_done}): they overlapped or ran out of order; (index, finished_ms, attempt) = \
                 {runs:?}\n{}",
                second.context()
            );
        }
    }

    let status = second.terminate().await;
    assert!(status.success(), "SIGTERM ended laneway with {status}\n{}", second.context());
}
