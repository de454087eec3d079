//! A tenant's job metrics move as its jobs run: counters per kind and outcome, the wait and run
//! histograms, limiter waits, and the queue depths read from the store — over the in-test wiring
//! (memory stores, real inline runtime).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use app_core::api::{ChatStartRequest, UploadRequest};
use app_core::metrics::KindSnapshot;
use app_core::payloads::{ChatMessage, ChatPayload};
use app_core::responder::ChatResponder;
use app_core::{JobKind, Laneway, Mode, Settings, TenantMetrics};
use async_trait::async_trait;
use queue_core::conformance::eventually;
use queue_core::{HandlerError, SystemClock};

/// Answers, except `boom` (fails for good) and the first `flaky` (fails, then is retried).
#[derive(Debug, Default)]
struct ScriptedResponder {
    flaked: AtomicBool,
}

#[async_trait]
impl ChatResponder for ScriptedResponder {
    async fn reply(&self, chat: &ChatPayload) -> Result<String, HandlerError> {
        match chat.messages.last().map_or("", |m| m.content.as_str()) {
            "boom" => Err(HandlerError::permanent("boom")),
            "flaky" if !self.flaked.swap(true, Ordering::SeqCst) => Err(HandlerError::retryable("flaky")),
            text => Ok(format!("re: {text}")),
        }
    }
}

const PATIENCE: Duration = Duration::from_secs(20);

fn chat(request_id: &str, student: &str, text: &str) -> ChatStartRequest {
    ChatStartRequest {
        request_id: request_id.into(),
        role: "student".into(),
        student_id: Some(student.into()),
        teacher_id: None,
        session_id: None,
        lane_id: None,
        messages: vec![ChatMessage::new("user", text)],
        attachments: vec![],
    }
}

async fn tenant_metrics(app: &Laneway, tenant: &str) -> TenantMetrics {
    app.metrics().await.into_iter().find(|t| t.tenant.as_str() == tenant).expect("the tenant is reported")
}

fn kind(t: &TenantMetrics, kind: JobKind) -> KindSnapshot {
    t.jobs.kinds.iter().find(|(k, _)| *k == kind).map(|(_, s)| *s).expect("every kind is reported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histograms_move_as_jobs_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env: HashMap<String, String> = HashMap::from([
        ("DATA_DIR".into(), dir.path().display().to_string()),
        ("LANEWAY_TENANTS".into(), "t1".into()),
    ]);
    let settings = Settings::from_env(&|k| env.get(k).cloned()).expect("settings");
    let app = Laneway::start_with(
        settings,
        Mode::Test,
        Arc::new(ScriptedResponder::default()),
        Arc::new(SystemClock),
    )
    .await
    .expect("start");

    let before = tenant_metrics(&app, "default").await;
    assert_eq!(kind(&before, JobKind::Chat), KindSnapshot::default(), "nothing ran yet");

    let ok = app.chat_start(None, chat("m1", "s1", "hello")).await.expect("ok chat");
    let boom = app.chat_start(None, chat("m2", "s2", "boom")).await.expect("failing chat");
    let flaky = app.chat_start(None, chat("m3", "s3", "flaky")).await.expect("flaky chat");
    let upload = app
        .submit_upload(
            None,
            UploadRequest { request_id: None, filename: "hw.md".into(), content: "1. First?".into() },
        )
        .await
        .expect("upload");
    let expected =
        [(&ok.job_id, "done"), (&boom.job_id, "failed"), (&flaky.job_id, "done"), (&upload.job_id, "done")];
    for (id, status) in expected {
        eventually(&format!("job {id} ends {status}"), PATIENCE, || async {
            app.job(None, id.as_str()).await.expect("job").status == status
        })
        .await;
    }
    // The counters are bumped right after the store records the outcome: poll for the last one.
    eventually("the last outcome is counted", PATIENCE, || async {
        let c = kind(&tenant_metrics(&app, "default").await, JobKind::Chat);
        c.completed + c.dead_lettered == 3
    })
    .await;

    let after = tenant_metrics(&app, "default").await;
    let chat = kind(&after, JobKind::Chat);
    assert_eq!(chat.enqueued, 3);
    assert_eq!(chat.started, 4, "three jobs, one of them twice");
    assert_eq!((chat.completed, chat.retried, chat.dead_lettered, chat.failed), (2, 1, 1, 2));
    assert_eq!(chat.lane_wait.count, 3, "one wait per job: its first start");
    assert_eq!(chat.run.count, 4, "one run per attempt");
    assert!(chat.run.cumulative.windows(2).all(|w| w[0] <= w[1]));
    let up = kind(&after, JobKind::Upload);
    assert_eq!((up.enqueued, up.started, up.completed, up.failed), (1, 1, 1, 0));
    assert_eq!((up.lane_wait.count, up.run.count), (1, 1));
    assert!(after.jobs.limiter_waits >= 4, "every chat attempt takes an llm permit: {:?}", after.jobs);
    assert_eq!(after.jobs.limiter_wait.count, after.jobs.limiter_waits);
    assert_eq!(after.jobs.fenced, 0);

    let depth = |k: JobKind| after.depths.iter().find(|(x, _)| *x == k).map(|(_, c)| *c).expect("depth");
    assert_eq!((depth(JobKind::Chat).done, depth(JobKind::Chat).failed), (2, 1));
    assert_eq!(depth(JobKind::Upload).done, 1);

    let other = tenant_metrics(&app, "t1").await;
    assert_eq!(kind(&other, JobKind::Chat), KindSnapshot::default(), "tenants count apart");
    app.shutdown().await;
}
