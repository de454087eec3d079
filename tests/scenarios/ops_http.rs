//! The operations API over HTTP on the real binary, at `/` and under `/t/{tenant}/`: lanes with
//! their active and waiting jobs, a waiting chat cancelled (and a running one refused), a lane
//! drained, queue depths, workers and permits, and bad query and path input naming its field. On
//! Redis, the worker listing shows the `laneway worker` processes from their registry.

use laneway_tests::{LanewayProcess, poll_until, student_chat};
use redis_harness::RedisServer;
use serde_json::{Value, json};

use crate::redis_support::{as_env, redis_env};

const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

fn job_id(answer: &(u16, Value)) -> String {
    assert_eq!(answer.0, 200, "{answer:?}");
    answer.1["job_id"].as_str().expect("job_id").to_owned()
}

fn field_of(answer: &(u16, Value)) -> Option<&str> {
    answer.1.get("field").and_then(Value::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_lanes_and_cancel_or_drain_waiting_jobs_over_http() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Chats never finish here: the responder is slowed to minutes.
    let server = LanewayProcess::start(
        &dir.path().join("data"),
        &[("LANEWAY_TENANTS", "t1"), ("CHAT_RESPONDER_DELAY_MS", "600000"), ("CHAT_LANE_DEBOUNCE_MS", "0")],
    )
    .await;
    for prefix in ["", "/t/t1"] {
        let tag = if prefix.is_empty() { "default" } else { "t1" };
        let chat = |id: &str, text: &str| student_chat(&format!("{tag}-{id}"), "s1", text);
        let running = job_id(&server.post_json(&format!("{prefix}/chat/start"), &chat("a", "first")).await);
        let doomed = job_id(&server.post_json(&format!("{prefix}/chat/start"), &chat("b", "second")).await);
        let behind = job_id(&server.post_json(&format!("{prefix}/chat/start"), &chat("c", "third")).await);

        let (status, lanes) = server.get(&format!("{prefix}/ops/lanes")).await;
        assert_eq!(status, 200, "{lanes}");
        assert_eq!(lanes["tenant"], tag);
        let lane = &lanes["lanes"][0];
        assert_eq!(lane["lane_id"], "student:s1:main");
        assert_eq!(lane["active"]["job_id"], running.as_str());
        assert!(lane["active"]["lease_deadline_ms"].as_u64().is_some_and(|d| d > 0), "{lane}");
        assert_eq!(
            lane["waiting"],
            json!([{"job_id": doomed, "position": 1}, {"job_id": behind, "position": 2}])
        );

        let cancelled = server.post_json(&format!("{prefix}/ops/jobs/{doomed}/cancel"), &json!({})).await;
        assert_eq!(cancelled.0, 200, "{cancelled:?}");
        assert_eq!(cancelled.1["status"], "cancelled");
        let (_, status_of) = server.get(&format!("{prefix}/chat/status?job_id={behind}")).await;
        assert_eq!(status_of["lane_queue_position"], 1, "the job behind moved up: {status_of}");

        // The head of the lane is not a waiting job: refused, and it stays.
        poll_until(PATIENCE, || async {
            let (_, job) = server.get(&format!("{prefix}/jobs/{running}")).await;
            (job["status"] == "processing").then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("the first chat never started\n{}", server.context()));
        let refused = server.post_json(&format!("{prefix}/ops/jobs/{running}/cancel"), &json!({})).await;
        assert_eq!(refused.0, 409, "{refused:?}");
        assert_eq!(refused.1["error"], "conflict");
        assert!(refused.1["detail"].as_str().is_some_and(|d| d.contains("processing")), "{refused:?}");

        let drained =
            server.post_json(&format!("{prefix}/ops/lanes/student:s1:main/drain"), &json!({})).await;
        assert_eq!(drained.0, 200, "{drained:?}");
        assert_eq!(drained.1["cancelled"], 1);
        assert_eq!(drained.1["job_ids"], json!([behind]));

        let (_, queues) = server.get(&format!("{prefix}/ops/queues")).await;
        let chat_counts =
            queues["kinds"].as_array().expect("kinds").iter().find(|k| k["kind"] == "chat").cloned();
        let chat_counts = chat_counts.expect("chat depths");
        assert_eq!(
            (chat_counts["processing"].as_u64(), chat_counts["cancelled"].as_u64()),
            (Some(1), Some(2))
        );
        assert_eq!(queues["backend"], "inline");
        assert_eq!(queues["memory"]["running"], 1);

        let (_, workers) = server.get(&format!("{prefix}/ops/workers")).await;
        assert_eq!(workers["workers"].as_array().map(Vec::len), Some(1), "{workers}");
        assert_eq!(workers["workers"][0]["pid"], server.pid());
        assert_eq!(workers["workers"][0]["in_flight"], 1);
        assert_eq!(workers["workers"][0]["state"], "alive");

        let (_, permits) = server.get(&format!("{prefix}/ops/permits")).await;
        let llm =
            permits["permits"].as_array().expect("permits").iter().find(|p| p["class"] == "llm").cloned();
        assert_eq!(llm.expect("llm")["in_use"], 1, "{permits}");

        let (_, dead) = server.get(&format!("{prefix}/ops/dead?kind=&limit=")).await;
        assert_eq!(
            (dead["total"].as_u64(), dead["jobs"].as_array().map(Vec::len)),
            (Some(0), Some(0)),
            "{dead}"
        );
    }
    // Bad input names its field and changes nothing.
    for (path, field) in [
        ("/ops/lanes?limit=1000", "limit"),
        ("/ops/lanes?limit=0", "limit"),
        ("/ops/lanes?after=%7Bx%7D", "after"),
        ("/ops/lanes?limt=5", "limt"),
        ("/ops/dead?kind=email", "kind"),
        ("/t/t1/ops/dead?offset=-1", "offset"),
    ] {
        let answer = server.get(path).await;
        assert_eq!((answer.0, field_of(&answer)), (400, Some(field)), "GET {path}: {answer:?}");
    }
    for (path, field) in [
        ("/ops/jobs/%7Bx%7D/retry", "job_id"),
        ("/t/t1/ops/jobs/a%20b/cancel", "job_id"),
        ("/ops/lanes/%7Bs1%7D/drain", "lane_id"),
    ] {
        let answer = server.post_json(path, &json!({})).await;
        assert_eq!((answer.0, field_of(&answer)), (400, Some(field)), "POST {path}: {answer:?}");
    }
    let unknown = server.post_json("/ops/jobs/j-nope/retry", &json!({})).await;
    assert_eq!(unknown.0, 404, "{unknown:?}");
    let (_, lanes) = server.get("/ops/lanes").await;
    assert_eq!(lanes["lanes"][0]["waiting"], json!([]), "refusals wrote nothing: {lanes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_the_worker_listing_shows_the_worker_processes_until_they_stop() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let env = redis_env(&redis, &[]);
    let env = as_env(&env);
    let api = LanewayProcess::start_with_args(&data, &["--no-workers"], &env).await;
    let (status, workers) = api.get("/ops/workers").await;
    assert_eq!(status, 200, "{workers}");
    assert_eq!(workers["backend"], "redis");
    assert_eq!(workers["workers"], json!([]), "an API-only process runs no workers");
    let mut worker = LanewayProcess::worker(&data, &env).await;
    let listed = poll_until(PATIENCE, || async {
        let (_, view) = api.get("/ops/workers").await;
        let list = view["workers"].as_array().cloned().unwrap_or_default();
        (list.len() == 1).then(|| list[0].clone())
    })
    .await
    .unwrap_or_else(|| panic!("the worker never registered\n{}\n{}", api.context(), worker.context()));
    assert_eq!(listed["pid"], worker.pid(), "{listed}");
    assert_eq!(listed["state"], "alive");
    assert!(
        listed["worker_id"].as_str().is_some_and(|id| id.contains(&format!(":{}:", worker.pid()))),
        "{listed}"
    );
    let (_, queues) = api.get("/ops/queues").await;
    assert_eq!((queues["backend"].as_str(), queues["memory"].is_null()), (Some("redis"), true), "{queues}");
    worker.terminate().await;
    let (_, after) = api.get("/ops/workers").await;
    assert_eq!(after["workers"], json!([]), "a stopped worker removes its entry: {after}");
}
