//! `GET /metrics` and the job logs on the real binary: the counters and histograms move by what
//! the submitted jobs did, and with `LOG_FORMAT=json` every log line is JSON and the job events
//! carry their tenant, lane and job.

use std::collections::HashMap;
use std::time::Duration;

use laneway_tests::{LanewayProcess, poll_until, student_chat};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

/// Every sample of an exposition, by its series (`name{labels}`).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) =
                l.rsplit_once(' ').unwrap_or_else(|| panic!("a sample without a value: {l}"));
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("not a number in {l}")))
        })
        .collect()
}

async fn scrape(server: &LanewayProcess) -> HashMap<String, f64> {
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200, "{body}\n{}", server.context());
    samples(body.as_str().unwrap_or_else(|| panic!("/metrics is not text: {body}")))
}

fn value(s: &HashMap<String, f64>, series: &str) -> f64 {
    *s.get(series).unwrap_or_else(|| panic!("no sample {series}"))
}

async fn submit(server: &LanewayProcess, path: &str, body: &Value) -> String {
    let (status, answer) = server.post_json(path, body).await;
    assert_eq!(status, 200, "{answer}\n{}", server.context());
    answer["job_id"].as_str().expect("job_id").to_owned()
}

async fn wait_done(server: &LanewayProcess, job: &str) {
    let done = poll_until(PATIENCE, || async {
        let (_, record) = server.get(&format!("/jobs/{job}")).await;
        (record["status"] == "done").then_some(())
    })
    .await;
    assert!(done.is_some(), "job {job} did not finish\n{}", server.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_counters_and_histograms_move_as_jobs_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = LanewayProcess::start(&dir.path().join("data"), &[("LANEWAY_TENANTS", "t1")]).await;

    let response = reqwest::get(format!("{}/metrics", server.base_url())).await.expect("GET /metrics");
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = response.text().await.expect("body");
    for family in ["laneway_jobs_enqueued_total", "laneway_lane_wait_seconds", "laneway_queue_depth"] {
        assert!(text.contains(&format!("# TYPE {family} ")), "no TYPE line for {family}:\n{text}");
    }

    let before = scrape(&server).await;
    let chat_l = r#"{tenant="default",kind="chat"}"#;
    let upload_l = r#"{tenant="default",kind="upload"}"#;
    let series = |name: &str, labels: &str| format!("{name}{labels}");
    assert_eq!(value(&before, &series("laneway_jobs_enqueued_total", chat_l)), 0.0);

    let chats = [
        submit(&server, "/chat/start", &student_chat("m1", "s1", "What is a lane?")).await,
        submit(&server, "/chat/start", &student_chat("m2", "s2", "And a tenant?")).await,
    ];
    let upload =
        submit(&server, "/uploads", &json!({"filename": "hw.md", "content": "1. First?\n2. Second?"})).await;
    for job in chats.iter().chain([&upload]) {
        wait_done(&server, job).await;
    }
    // The counters move right after the store records each outcome: poll for the last one.
    let completed = series("laneway_jobs_completed_total", chat_l);
    let after = poll_until(PATIENCE, || async {
        let s = scrape(&server).await;
        (value(&s, &completed) >= 2.0 && value(&s, &series("laneway_jobs_completed_total", upload_l)) >= 1.0)
            .then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("the completions were not counted\n{}", server.context()));

    let moved = |name: &str, labels: &str| {
        let s = series(name, labels);
        value(&after, &s) - value(&before, &s)
    };
    for (name, chat, upload) in [
        ("laneway_jobs_enqueued_total", 2.0, 1.0),
        ("laneway_jobs_started_total", 2.0, 1.0),
        ("laneway_jobs_completed_total", 2.0, 1.0),
        ("laneway_jobs_failed_total", 0.0, 0.0),
        ("laneway_jobs_retried_total", 0.0, 0.0),
        ("laneway_jobs_dead_lettered_total", 0.0, 0.0),
        ("laneway_lane_wait_seconds_count", 2.0, 1.0),
        ("laneway_job_run_seconds_count", 2.0, 1.0),
    ] {
        assert_eq!(moved(name, chat_l), chat, "{name} chat");
        assert_eq!(moved(name, upload_l), upload, "{name} upload");
    }
    let inf = r#"{tenant="default",kind="chat",le="+Inf"}"#;
    assert_eq!(moved("laneway_job_run_seconds_bucket", inf), 2.0, "+Inf holds every observation");
    assert!(
        moved("laneway_limiter_waits_total", r#"{tenant="default"}"#) >= 2.0,
        "each chat takes an llm permit"
    );
    assert_eq!(value(&after, r#"laneway_queue_depth{tenant="default",kind="chat",state="done"}"#), 2.0);
    assert_eq!(value(&after, r#"laneway_queue_depth{tenant="default",kind="upload",state="done"}"#), 1.0);
    assert_eq!(value(&after, r#"laneway_fenced_completions_total{tenant="default"}"#), 0.0);
    assert_eq!(value(&after, r#"laneway_lease_expiries_total{tenant="default"}"#), 0.0);
    // The other tenant ran nothing.
    assert_eq!(value(&after, r#"laneway_jobs_enqueued_total{tenant="t1",kind="chat"}"#), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_tenant_lane_and_job_on_every_job_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        LanewayProcess::start(&dir.path().join("data"), &[("LANEWAY_TENANTS", "t1"), ("LOG_FORMAT", "json")])
            .await;
    let job = submit(&server, "/t/t1/chat/start", &student_chat("j1", "s7", "Log me")).await;
    let done = poll_until(PATIENCE, || async {
        let (_, record) = server.get(&format!("/t/t1/jobs/{job}")).await;
        (record["status"] == "done").then_some(())
    })
    .await;
    assert!(done.is_some(), "job {job} did not finish\n{}", server.context());

    let events_of_job = poll_until(PATIENCE, || async {
        let log = server.log_text();
        let lines: Vec<Value> = log
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}")))
            .collect();
        let events: Vec<String> = lines
            .iter()
            .filter(|e| e["fields"]["job"] == job.as_str())
            .filter_map(|e| {
                let f = &e["fields"];
                (f["tenant"] == "t1" && f["lane"] == "student:s7:main")
                    .then(|| f["message"].as_str().unwrap_or_default().to_owned())
            })
            .collect();
        events.iter().any(|m| m == "job completed").then_some(events)
    })
    .await
    .unwrap_or_else(|| panic!("no job events with tenant, lane and job fields\n{}", server.context()));
    for event in ["job enqueued", "job started", "job completed"] {
        assert!(events_of_job.iter().any(|m| m == event), "no `{event}` line for {job}: {events_of_job:?}");
    }
}
